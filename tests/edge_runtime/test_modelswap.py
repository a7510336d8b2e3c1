"""Model swap while the line runs: the vibration gateway streams real recordings over a real mosquitto, and new
versions of the model appear in its folder (or in a reload). A broken or disagreeing version is refused and the
running model stays; a good one takes over after its shadow run; the plant sees every `seq` once throughout."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.config import Deployment
from edge_runtime.inference import read_manifest
from edge_runtime.paths import models_dir
from edge_runtime.service import Service
from tests import helpers
from tests.edge_runtime.test_metrics import running
from tests.edge_runtime.test_service import deployment, drain, gateway, subscriber
from tests.helpers.mosquitto import Mosquitto

until = partial(helpers.until, timeout_s=90.0)
SHADOW = 24


@pytest.fixture
def plant() -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


def _model_copy(tmp_path: Path, name: str = "vib") -> Path:
    folder = tmp_path / name
    shutil.copytree(models_dir() / "vibration_anomaly", folder)
    return folder


def _edit_manifest(folder: Path, **changes: Any) -> None:
    manifest = yaml.safe_load((folder / "model.yaml").read_text())
    manifest.update(changes)
    tmp = folder / "model.yaml.new"
    tmp.write_text(yaml.safe_dump(manifest, sort_keys=False))
    tmp.replace(folder / "model.yaml")  # as the docs say: the manifest last, whole


def _deployment(mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path, folder: Path) -> Deployment:
    d = deployment(mosquitto.port, plant.port, tmp_path / "outbox.sqlite").model_dump(mode="json")
    d["service"]["model_watch_s"] = 0.1
    d["pipelines"][0]["model"] = {"name": str(folder), "shadow_inputs": SHADOW, "min_agreement": 0.8}
    return Deployment.model_validate(d)


async def test_new_versions_in_the_model_folder(
    mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _model_copy(tmp_path)
    labels = read_manifest(folder).labels
    service = Service(_deployment(mosquitto, plant, tmp_path, folder))
    stop = asyncio.Event()
    received: list[dict[str, Any]] = []
    with subscriber(plant.port, "edge/vibration/result") as got:
        runner = asyncio.create_task(service.run(stop))
        await service.started.wait()
        pipeline = service.pipelines[0]
        old = pipeline.model_ident
        async with gateway(mosquitto.port):
            await until(lambda: drain(got, received) >= 5, what="results of the shipped version")

            _edit_manifest(folder, version="9.0.0", sha256="0" * 64)  # a copy not yet whole: refused at its checks
            await until(lambda: pipeline.stats["model_swaps_refused"] == 1, what="the bad checksum refused")
            assert "does not match the manifest" in caplog.text and pipeline.model_ident == old

            _edit_manifest(folder, version="9.0.1", sha256=read_manifest(models_dir() / "vibration_anomaly").sha256,
                           labels=labels[::-1])  # fmt: skip
            await until(lambda: pipeline.stats["model_swaps_refused"] == 2, what="the reordered labels refused")
            assert "agreement 0.000" in caplog.text and pipeline.model_ident == old

            _edit_manifest(folder, version="9.1.0", labels=labels)
            await until(lambda: pipeline.stats["model_swaps"] == 1, what="the good version swapped in")
            assert "@9.1.0" in pipeline.model_ident

            def new_results() -> int:
                drain(got, received)  # results the old model made before the swap may still be on their way
                return sum("@9.1.0" in r["model"] for r in received)

            await until(lambda: new_results() >= 5, what="results of the new version")
        stop.set()
        await runner
    models = [r["model"] for r in received]
    first_new = next(i for i, m in enumerate(models) if "@9.1.0" in m)
    assert set(models[:first_new]) == {old} and all("@9.1.0" in m for m in models[first_new:])
    seqs = [r["seq"] for r in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gap, no reuse across the swaps"
    assert pipeline.stats["batch_errors"] == 0 and "9.0.1" not in "".join(models)


async def test_a_reload_with_another_model_shadows_it_first(
    mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`model:` changed in a reload: the pipeline is kept (not rebuilt) and the new model is shadowed, then
    swapped; a reload naming a model that fails its checks is refused as a whole."""
    folder = _model_copy(tmp_path)
    newer = _model_copy(tmp_path, "vib-newer")
    _edit_manifest(newer, version="3.0.0")
    base = _deployment(mosquitto, plant, tmp_path, folder)
    site = tmp_path / "site.yaml"
    raw = base.model_dump(mode="json", exclude_unset=True)
    service = Service(base)
    async with running(service), gateway(mosquitto.port):
        pipeline = service.pipelines[0]
        await until(lambda: pipeline.stats["inputs"] >= 5, what="results before the reload")

        raw["pipelines"][0]["model"]["name"] = str(tmp_path / "missing")
        site.write_text(yaml.safe_dump(raw))
        assert not await service.reload_file(site)
        assert pipeline.shadow is None and service.pipelines == [pipeline]

        raw["pipelines"][0]["model"]["name"] = str(newer)
        site.write_text(yaml.safe_dump(raw))
        assert await service.reload_file(site)
        assert service.pipelines == [pipeline], "the pipeline is kept, not rebuilt"
        assert pipeline.shadow is not None and "@3.0.0" in pipeline.shadow.ident
        await until(lambda: pipeline.stats["model_swaps"] == 1, what="the reloaded model swapped in")
    assert "@3.0.0" in pipeline.model_ident and "event=model_swapped" in caplog.text
    assert service.stats["reloads"] == 1 and service.stats["reloads_rejected"] == 1


async def test_a_reload_naming_the_default_variant_shadows_nothing(
    mosquitto: Mosquitto, plant: Mosquitto, tmp_path: Path
) -> None:
    """A config that names the variant it already ran by default (unset -> `fp32` here) changes no file: the
    reload keeps the pipeline and its model, and does not report a shadow run."""
    folder = _model_copy(tmp_path)
    base = _deployment(mosquitto, plant, tmp_path, folder)
    assert base.pipelines[0].model.variant is None and read_manifest(folder).default_variant == "fp32"
    raw = base.model_dump(mode="json", exclude_unset=True)
    service = Service(base)
    async with running(service):
        pipeline = service.pipelines[0]
        raw["pipelines"][0]["model"]["variant"] = "fp32"
        changed = await service.reload(Deployment.model_validate(raw))
        assert changed["shadowing"] == [] and f"pipeline:{pipeline.id}" in changed["kept"]
        assert service.pipelines == [pipeline] and pipeline.shadow is None
