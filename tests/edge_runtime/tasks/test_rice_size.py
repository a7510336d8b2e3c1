"""The rice size prior: the shipped fit on real photographs, the weighing, a broken manifest, and the scale check
on chute frames from the simulator (real grain photographs at a known camera scale)."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from adapters.base import EdgeRuntimeError, Frame
from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.tasks.rice_segment import SegmentParams, segment
from edge_runtime.tasks.rice_size import ScaleCheck, SizePrior, size_features
from edge_runtime.tasks.rice_sorter import VARIETIES, RiceSorterConfig, RiceSorterTask
from edge_runtime.tools.evaluate.rice_sorter import evaluate
from tests.edge_runtime.tasks.test_rice_sorter import DATA

SIM_SCALE = ChuteSimulatorConfig.model_fields["grain_scale"].default


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return load_model("rice_sorter", variant="int8")


def shipped_prior(runner: ModelRunner) -> SizePrior:
    prior = SizePrior.from_manifest(runner.manifest.preprocessing, VARIETIES, "rice_sorter")
    assert prior is not None
    return prior


def test_the_shipped_prior_tells_varieties_apart_by_size_alone(runner: ModelRunner) -> None:
    prior = shipped_prior(runner)
    params = SegmentParams.from_preprocessing(runner.manifest.preprocessing)
    feats, truth = [], []
    for k, variety in enumerate(VARIETIES):
        for i in range(2900, 2920):  # photographs from the end of each folder
            path = DATA / variety / f"{variety.lower()}_{i:05d}.jpg"
            grains = segment(np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), dtype=np.uint8), params)
            j = int(np.argmax(grains.area_px))
            feats.append(
                size_features(grains.length_px[j : j + 1], grains.width_px[j : j + 1], grains.area_px[j : j + 1])
            )
            truth.append(k)
    by_size = prior.log_likelihood(np.concatenate(feats)).argmax(axis=1)
    assert (by_size == np.array(truth)).mean() >= 0.85, "size alone scores 96 % on the test split"
    assert 0.0 < prior.weight <= 1.0


def test_weighing_tips_a_doubtful_grain_towards_the_variety_of_its_size(runner: ModelRunner) -> None:
    prior = shipped_prior(runner)
    b, j = VARIETIES.index("Basmati"), VARIETIES.index("Jasmine")
    doubtful = np.zeros((2, 5), dtype=np.float32)
    doubtful[:, [b, j]] = 0.5
    sizes = np.exp(prior.mean[[b, j]])  # a typical Basmati and a typical Jasmine, in data-set pixels
    weighed = prior.weigh(doubtful, size_features(sizes[:, 0], sizes[:, 1], sizes[:, 2]))
    assert weighed[0].argmax() == b and weighed[1].argmax() == j
    np.testing.assert_allclose(weighed.sum(axis=1), 1.0, rtol=1e-5)
    # at another camera scale the same grains measure in camera pixels divided by that scale
    camera = sizes * np.array([0.35, 0.35, 0.35**2])
    again = prior.weigh(doubtful, size_features(camera[:, 0], camera[:, 1], camera[:, 2], scale=0.35))
    np.testing.assert_allclose(again, weighed, rtol=1e-5)
    off = SizePrior(prior.mean, prior.std, 0.0)
    assert off.weigh(doubtful, size_features(sizes[:, 0], sizes[:, 1], sizes[:, 2])) is doubtful


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["mean"].pop("Ipsala"), "Ipsala"),
        (lambda p: p["std"]["Basmati"].__setitem__(1, 0.0), "std"),
        (lambda p: p.__setitem__("weight", 50), "weight"),
        (lambda p: p.__setitem__("features", ["log_length"]), "features"),
        (lambda p: p["mean"].__setitem__("Arborio", [1.0, 2.0]), "three numbers"),
    ],
)
def test_a_broken_size_prior_is_refused_at_start_naming_it(runner: ModelRunner, change: Any, message: str) -> None:
    pre = copy.deepcopy(runner.manifest.preprocessing)
    change(pre["size_prior"])
    with pytest.raises(EdgeRuntimeError, match=f"my/model.yaml: preprocessing.size_prior: .*{message}"):
        SizePrior.from_manifest(pre, VARIETIES, "my/model.yaml")
    assert SizePrior.from_manifest({}, VARIETIES, "x") is None, "a model without a prior is a valid model"


def test_scale_check_confirms_at_5_percent_and_revokes_beyond_8() -> None:
    check = ScaleCheck(math.log(150.0), min_grains=100)
    check.update(np.log(np.full(99, 150.0)))
    assert not check.ok and check.ratio is None, "not confirmed before 100 grains"
    check.update([math.log(151.0), math.nan])  # a grain without a size is no evidence
    assert check.ok and check.ratio == pytest.approx(1.0, rel=0.01)
    steps = [(1.06, True), (1.10, False), (1.06, False), (1.0, True)]  # hysteresis: no flapping near the edge
    for ratio, ok in steps:
        check.update(np.log(np.full(2000, 150.0 * ratio)))
        assert check.ok is ok and check.ratio == pytest.approx(ratio, rel=1e-3)


def test_a_scale_near_the_edge_does_not_switch_the_prior_frame_by_frame() -> None:
    rng = np.random.default_rng(0)
    for true_ratio in (1.045, 1.05, 1.055):
        check, switches, was = ScaleCheck(0.0), 0, False
        for _ in range(2000):  # 80 s at 25 frames/s, 40 grains of the declared variety a frame, Jasmine's spread
            check.update(rng.normal(math.log(true_ratio), 0.136, size=40))
            switches += check.ok != was
            was = check.ok
        assert switches <= 1, f"{switches} switches at a true ratio of {true_ratio}"


def chute_frames(n: int, variety: str = "Basmati") -> list[Frame]:
    sim = ChuteSimulator(ChuteSimulatorConfig(seed=3, grains_per_s=1250, fps=25, variety=variety))
    return [Frame("chute.image", i, sim.next_frame()[0]) for i in range(n)]


def sorter(runner: ModelRunner, **kw: Any) -> RiceSorterTask:
    config = RiceSorterConfig.model_validate({"kind": "rice_sorter", "declared_variety": "Basmati", **kw})
    return RiceSorterTask(config, runner)


def test_the_prior_applies_once_the_grains_confirm_the_scale(
    runner: ModelRunner, caplog: pytest.LogCaptureFixture
) -> None:
    frames = chute_frames(6)
    task = sorter(runner, scale_px_per_dataset_px=SIM_SCALE)
    with caplog.at_level(logging.INFO):
        results = task.process(frames[:3]) + task.process(frames[3:])
    n = sum(len(r.detail["grains"]) for r in results)
    assert task.scale_check is not None and task.scale_check.ok
    assert 0 < task.stats["size_prior_off"] < n / 2, "only the first grains go without the prior"
    assert "event=rice_scale_ok" in caplog.text and "rice_scale_mismatch" not in caplog.text
    plain = sorter(runner, scale_px_per_dataset_px=SIM_SCALE, size_prior=False)
    scores = [g["score"] for r in results for g in r.detail["grains"]]
    plain_scores = [g["score"] for r in plain.process(frames) for g in r.detail["grains"]]
    assert len(scores) == len(plain_scores) and scores != plain_scores, "the prior changes the probabilities"


def test_a_wrong_camera_scale_leaves_the_prior_out_and_says_so(
    runner: ModelRunner, caplog: pytest.LogCaptureFixture
) -> None:
    frames = chute_frames(6)
    wrong = sorter(runner, scale_px_per_dataset_px=SIM_SCALE * 1.15)
    plain = sorter(runner, scale_px_per_dataset_px=SIM_SCALE * 1.15, size_prior=False)
    results = wrong.process(frames)
    assert wrong.scale_check is not None and not wrong.scale_check.ok
    assert wrong.scale_check.ratio == pytest.approx(1 / 1.15, rel=0.04)
    assert wrong.stats["size_prior_off"] == sum(len(r.detail["grains"]) for r in results)
    assert "event=rice_scale_mismatch" in caplog.text and "set scale_px_per_dataset_px" in caplog.text
    assert [r.detail for r in results] == [r.detail for r in plain.process(frames)], "the network alone decides"


def test_evaluate_weighs_data_set_photographs_at_scale_1(tmp_path: Path, runner: ModelRunner) -> None:
    for variety, n in (("Basmati", 4), ("Jasmine", 4)):
        (tmp_path / variety).mkdir()
        for i in range(n):
            name = f"{variety.lower()}_{1000 + i:05d}.jpg"
            (tmp_path / variety / name).symlink_to(DATA / variety / name)
    on, off = evaluate(tmp_path, variant="int8"), evaluate(tmp_path, variant="int8", size_prior=False)
    assert on["size_prior_weight"] == shipped_prior(runner).weight and off["size_prior_weight"] is None
    assert on["n"] == off["n"] == 8, "a handful of photographs is enough: nothing to confirm at scale 1"
