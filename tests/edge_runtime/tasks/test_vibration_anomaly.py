from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from edge_runtime.dsp import resample_windows, windows_of
from edge_runtime.inference import ModelError, ModelRunner, load_model
from edge_runtime.paths import models_dir
from edge_runtime.tasks.base import Window
from edge_runtime.tasks.vibration_anomaly import VibrationAnomalyConfig, VibrationAnomalyTask
from edge_runtime.tools.datasets import DataSetError, Recording, load_excerpt, read_recordings
from edge_runtime.tools.evaluate.vibration_anomaly import evaluate
from tests.helpers import wire

LABELS = ["normal", "ball", "inner_race", "outer_race"]


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return load_model("vibration_anomaly")


@pytest.fixture(scope="module")
def task(runner: ModelRunner) -> VibrationAnomalyTask:
    return VibrationAnomalyTask(VibrationAnomalyConfig(kind="vibration_anomaly"), runner)


@pytest.fixture(scope="module")
def excerpt() -> list[Recording]:
    return load_excerpt()


def _windows(x: npt.NDArray[np.float32], stream: str = "line1.motor1.vib_de") -> list[Window]:
    return [Window(stream, i * 1000, w, 12000.0) for i, w in enumerate(x)]


def test_shipped_model_matches_its_contract(runner: ModelRunner) -> None:
    m = runner.manifest
    assert m.name == "vibration_anomaly"
    assert m.labels == LABELS
    assert 0.0 < m.thresholds["anomaly"] < 1.0
    assert {k: m.preprocessing[k] for k in ("rate_hz", "window", "hop")} == {
        "rate_hz": 12000,
        "window": 2048,
        "hop": 1024,
    }
    assert [o.name for o in m.outputs] == ["probs", "anomaly"]
    assert "Case Western Reserve" in m.training["citation"]
    assert (models_dir() / "vibration_anomaly" / "model.onnx").stat().st_size < 5_000_000


def test_excerpt_has_every_class(excerpt: list[Recording]) -> None:
    assert sorted({r.fault for r in excerpt}) == sorted(LABELS)
    assert {r.fs_hz for r in excerpt} == {12000.0, 48000.0}
    assert all(r.signal.dtype == np.float32 and np.isfinite(r.signal).all() for r in excerpt)


def test_process_classifies_real_windows(task: VibrationAnomalyTask, excerpt: list[Recording]) -> None:
    pre = task.runner.manifest.preprocessing
    for rec in excerpt:
        x = windows_of(rec.signal, rec.fs_hz, pre, hop=256)
        assert len(x) >= 10
        results = wire(task.process(_windows(x)))
        assert len(results) == len(x)
        hits = np.mean([r["label"] == rec.fault for r in results])
        assert hits >= 0.8, (rec.source, hits)
        want = "ok" if rec.fault == "normal" else "alarm"
        assert np.mean([r["decision"] == want for r in results]) >= 0.8, rec.source
        first = results[0]
        assert first["stream"] == "line1.motor1.vib_de"
        assert list(first["scores"]) == LABELS
        assert math.isclose(sum(first["scores"].values()), 1.0, rel_tol=1e-4)
        assert 0.0 <= first["anomaly_score"] <= 1.0


def test_48k_path_agrees_with_12k_path(task: VibrationAnomalyTask, excerpt: list[Recording]) -> None:
    """A 48 kHz recording cut at the source rate gives the same classes as the same signal brought to 12 kHz."""
    pre = task.runner.manifest.preprocessing
    for rec in (r for r in excerpt if r.fs_hz == 48000.0):
        direct = windows_of(rec.signal, rec.fs_hz, pre, hop=512)
        whole_12k = resample_windows(rec.signal[None, :], len(rec.signal) // 4)[0]
        via_12k = windows_of(whole_12k, 12000.0, pre, hop=512)
        n = min(len(direct), len(via_12k))
        assert n >= 5
        a = [r["label"] for r in wire(task.process(_windows(direct[:n])))]
        b = [r["label"] for r in wire(task.process(_windows(via_12k[:n])))]
        assert np.mean([x == y for x, y in zip(a, b, strict=True)]) >= 0.9, rec.source
        assert np.mean([x == rec.fault for x in a]) >= 0.8, rec.source


def test_windows_of_cuts_at_source_rate() -> None:
    pre = {"rate_hz": 12000, "window": 2048, "hop": 1024}
    hz = 20 * 12000 / 2048  # whole cycles per window, so the FFT resampling is exact
    sig = np.sin(np.arange(48000 * 2) * 2 * np.pi * hz / 48000).astype(np.float32)
    x = windows_of(sig, 48000.0, pre)
    assert x.shape == ((len(sig) - 8192) // 4096 + 1, 2048)
    ref = np.sin(np.arange(2048) * 2 * np.pi * hz / 12000)
    assert np.allclose(x[0], ref, atol=1e-3)
    assert windows_of(sig[:8000], 48000.0, pre).shape == (0, 2048)


def test_malformed_windows_are_counted_not_raised(task: VibrationAnomalyTask, excerpt: list[Recording]) -> None:
    good = windows_of(excerpt[1].signal, excerpt[1].fs_hz, task.runner.manifest.preprocessing)[:2]
    nan = good[0].copy()
    nan[5] = np.nan
    items = [*_windows(good), Window("s", 0, np.zeros(100, np.float32), 12000.0), Window("s", 0, nan, 12000.0)]
    before = task.stats["invalid_windows"]
    results = wire(task.process(items))
    assert [r["decision"] for r in results][2:] == ["invalid", "invalid"]
    assert results[0]["label"] == "ball"
    assert task.stats["invalid_windows"] == before + 2
    assert wire(task.process([])) == []


def test_threshold_override_and_strict_config(runner: ModelRunner, excerpt: list[Recording]) -> None:
    never = VibrationAnomalyTask(VibrationAnomalyConfig(kind="vibration_anomaly", anomaly_threshold=1.0), runner)
    x = windows_of(excerpt[3].signal, excerpt[3].fs_hz, runner.manifest.preprocessing)[:4]
    assert all(r["decision"] == "ok" for r in wire(never.process(_windows(x))))
    idle = VibrationAnomalyTask(VibrationAnomalyConfig(kind="vibration_anomaly", min_rms_g=100.0), runner)
    assert all(r["decision"] == "idle" for r in wire(idle.process(_windows(x))))
    with pytest.raises(ValidationError):
        VibrationAnomalyConfig.model_validate({"kind": "vibration_anomaly", "threshold": 0.3})
    with pytest.raises(ValidationError):
        VibrationAnomalyConfig(kind="vibration_anomaly", anomaly_threshold=1.5)


def _write_layout(root: Path, recs: list[Recording], columns: list[str]) -> None:
    (root / "recordings").mkdir(parents=True)
    with (root / "labels.csv").open("w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=columns)
        out.writeheader()
        for i, r in enumerate(recs):
            name = f"recordings/rec{i}.npz"
            np.savez(root / name, de=r.signal, fs_hz=np.array(r.fs_hz))
            row = {"file": name, "fs_hz": r.fs_hz, "fault": r.fault, "load_hp": r.load_hp, "rpm": r.rpm}
            out.writerow({k: row[k] for k in columns})


def test_evaluate_on_a_directory_in_the_cwru_layout(tmp_path: Path, excerpt: list[Recording]) -> None:
    # no rpm column, and only three of the four classes: a held-out directory may look like this
    recs = [r for r in excerpt if r.fault != "inner_race"]
    _write_layout(tmp_path, recs, ["file", "fs_hz", "load_hp", "fault"])
    assert [r.fault for r in read_recordings(tmp_path)] == [r.fault for r in recs]
    report = evaluate(tmp_path, hop=512)
    n = report["n"]
    assert n == sum(c["n"] for c in report["per_class"].values())
    assert report["per_class"]["inner_race"]["n"] == 0
    matrix = np.array(report["confusion"]["matrix"])
    assert report["confusion"]["labels"] == LABELS
    assert matrix.sum() == n and matrix.shape == (4, 4)
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / n)
    assert sum(v["n"] for v in report["per_load"].values()) == n
    assert set(report["per_load"]) == {"0", "1"}
    assert sum(v["n"] for v in report["per_rate"].values()) == n
    assert report["accuracy"] >= 0.8 and report["detection_accuracy"] >= 0.8
    assert report["model"].startswith("vibration_anomaly@")


def test_evaluate_applies_a_degradation(tmp_path: Path, excerpt: list[Recording]) -> None:
    _write_layout(tmp_path, excerpt[1:2], ["file", "fs_hz", "fault"])
    full = evaluate(tmp_path)
    half = evaluate(tmp_path, degrade=lambda x, fs: x[: len(x) // 2])
    assert set(full["per_load"]) == {"unknown"}  # no load_hp column
    assert 0 < half["n"] < full["n"]


def test_read_recordings_reports_missing_pieces(tmp_path: Path) -> None:
    with pytest.raises(DataSetError, match=r"labels\.csv"):
        read_recordings(tmp_path)
    (tmp_path / "labels.csv").write_text("file,fault\nrecordings/missing.npz,ball\n")
    with pytest.raises(DataSetError, match=r"missing\.npz"):
        read_recordings(tmp_path)


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "vibration_anomaly"
    shutil.copytree(models_dir() / "vibration_anomaly", model_dir)
    load_model(model_dir)  # the intact copy loads
    data = bytearray((model_dir / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (model_dir / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_model(model_dir)


def test_debounce_needs_k_of_the_last_n_windows_per_stream(runner: ModelRunner, excerpt: list[Recording]) -> None:
    fault = next(r for r in excerpt if r.fault == "outer_race")
    normal = next(r for r in excerpt if r.fault == "normal")
    pre = runner.manifest.preprocessing
    bad = windows_of(fault.signal, fault.fs_hz, pre)[:3]
    good = windows_of(normal.signal, normal.fs_hz, pre)[:3]
    task = VibrationAnomalyTask(VibrationAnomalyConfig(kind="vibration_anomaly", alarm_k=2, alarm_n=3), runner)
    # one faulty window among good ones does not alarm; the second within three does
    seq = [good[0], bad[0], good[1], bad[1]]
    decisions = [r["decision"] for r in wire(task.process(_windows(np.stack(seq), stream="m1")))]
    assert decisions == ["ok", "ok", "ok", "alarm"]
    # streams are debounced apart: another stream's first fault does not alarm
    assert wire(task.process(_windows(bad[2:3], stream="m2")))[0]["decision"] == "ok"
    with pytest.raises(ValidationError, match="alarm_k"):
        VibrationAnomalyConfig(kind="vibration_anomaly", alarm_k=4, alarm_n=3)
