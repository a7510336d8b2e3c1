"""The rice sorter on frames composed from real data set photographs pasted on a dark plate at known places."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from adapters.base import Frame
from edge_runtime.inference import ModelError, ModelRunner, load_model
from edge_runtime.paths import models_dir
from edge_runtime.tasks.rice_segment import SegmentParams, segment
from edge_runtime.tasks.rice_sorter import VARIETIES, RiceSorterConfig, RiceSorterTask
from edge_runtime.tools.datasets import DataSetError
from edge_runtime.tools.evaluate.rice_sorter import evaluate
from tests.helpers import wire

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "rice_grains"
U8 = npt.NDArray[np.uint8]


def grain(variety: str, index: int) -> U8:
    img = cv2.imread(str(DATA / variety / f"{variety.lower()}_{index:05d}.jpg"), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img, dtype=np.uint8)


def horizontal(img: U8) -> U8:
    """The photograph turned so that its grain's long axis is horizontal, grain centred, on a square canvas."""
    g = segment(img, SegmentParams())
    assert len(g) == 1
    cx, cy = (float(v) for v in g.centers[0])
    side = 300
    x, y, w, h = (int(v) for v in g.boxes[0])
    crop = img[y : y + h, x : x + w]
    # the angle of the long axis, from the grain's own rotated crop geometry: fit it again on the pixels
    mask = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) > g.threshold
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.vstack([xs, ys]).astype(np.float64))
    _, evecs = np.linalg.eigh(cov)
    angle = float(np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1])))
    rot = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    rot[:, 2] += np.array([side / 2 - cx, side / 2 - cy])
    return np.asarray(cv2.warpAffine(img, rot, (side, side), borderValue=(0, 0, 0)), dtype=np.uint8)


def paste(frame: U8, img: U8, cx: int, cy: int) -> None:
    """Lay a grain photograph on the plate centred at (cx, cy); black never covers a neighbour (maximum)."""
    h, w = img.shape[:2]
    y0, x0 = cy - h // 2, cx - w // 2
    region = frame[y0 : y0 + h, x0 : x0 + w]
    np.maximum(region, img, out=region)


def plate(h: int = 360, w: int = 1200, seed: int = 0) -> U8:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 12, size=(h, w, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def runner() -> ModelRunner:
    return load_model("rice_sorter")


def make_task(runner: ModelRunner, declared: str = "Arborio", channels: int = 4, **kw: object) -> RiceSorterTask:
    cfg = RiceSorterConfig.model_validate(
        {"kind": "rice_sorter", "declared_variety": declared, "ejector_channels": channels, **kw}
    )
    return RiceSorterTask(cfg, runner)


def test_shipped_model_and_int8_variant_load(runner: ModelRunner) -> None:
    # the default (a config without `variant`) is the pair in int8: it holds the fp32 pair's accuracy (CARD.md)
    assert runner.variant == "pair_int8" and runner.sha256 == runner.manifest.variants["pair_int8"].sha256
    int8 = load_model("rice_sorter", variant="int8")
    fp32 = load_model("rice_sorter", variant="fp32")
    assert fp32.manifest.labels == list(VARIETIES)
    assert fp32.ident.startswith("rice_sorter@") and "-" not in fp32.ident.split("+")[0] and "-int8+" in int8.ident
    params = SegmentParams.from_preprocessing(runner.manifest.preprocessing)  # the crop size it was trained on
    x = np.stack([segment(grain(v, 7), params).crops[0] for v in VARIETIES])
    assert x.shape[2:] == tuple(runner.manifest.inputs[0].shape[2:])
    p32, p8 = fp32.run({"x": x})["probs"], int8.run({"x": x})["probs"]
    assert p32.shape == p8.shape == (5, 5)
    fast = load_model("rice_sorter", variant="fast")  # the single network, on the same crops as the default
    assert "-fast+" in fast.ident and fast.run({"x": x})["probs"].shape == (5, 5)
    np.testing.assert_allclose(p32.sum(axis=1), 1.0, atol=1e-4)
    # the default pair in int8 gives the pair's probabilities to within quantisation error
    pair8 = runner.run({"x": x})["probs"]
    np.testing.assert_array_equal(pair8.argmax(axis=1), p32.argmax(axis=1))
    assert float(np.abs(pair8 - p32).max()) < 0.05
    pre = runner.manifest.preprocessing
    assert set(pre["median_length_px"]) == set(VARIETIES)
    assert pre["median_length_px"]["Basmati"] > pre["median_length_px"]["Karacadag"]


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    for name in ("model.yaml", "model.onnx", "model.int8.onnx"):
        (tmp_path / name).write_bytes((models_dir() / "rice_sorter" / name).read_bytes())
    blob = bytearray((tmp_path / "model.onnx").read_bytes())
    blob[-1] ^= 0xFF
    (tmp_path / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256"):
        load_model(tmp_path, variant="fp32")


def test_segment_finds_pasted_grains_and_maps_channels(runner: ModelRunner) -> None:
    frame = plate()
    centres = [150, 450, 750, 1050]  # width 1200, 4 channels of 300 px
    for i, cx in enumerate(centres):
        paste(frame, horizontal(grain("Arborio", 20 + i)), cx, 180)
    grains = segment(frame, SegmentParams())
    assert len(grains) == 4
    order = np.argsort(grains.centers[:, 0])
    np.testing.assert_allclose(grains.centers[order, 0], centres, atol=6)
    np.testing.assert_allclose(grains.centers[:, 1], 180, atol=6)
    assert grains.crops.shape == (4, 3, 32, 32) and grains.crops.dtype == np.uint8
    result = wire(make_task(runner).process([Frame("chute", 1, frame)]))[0]
    assert result["n_grains"] == 4
    assert sorted(g["channel"] for g in result["grains"]) == [0, 1, 2, 3]
    for g in result["grains"]:
        assert g["channel"] == int((g["x"] + g["w"] / 2) // 300)


def test_touching_grains_are_split() -> None:
    frame = plate(seed=1)
    a, b = horizontal(grain("Arborio", 31)), horizontal(grain("Arborio", 32))
    la = float(segment(a, SegmentParams()).length_px[0])
    lb = float(segment(b, SegmentParams()).length_px[0])
    gap = int((la + lb) / 2) - 6  # tips overlap by a few pixels: one blob on the plate
    paste(frame, a, 400, 180)
    paste(frame, b, 400 + gap, 180)
    unsplit = segment(frame, SegmentParams())
    assert len(unsplit) == 1  # without an expected area the blob is one object
    area = float(segment(a, SegmentParams()).area_px[0])
    grains = segment(frame, SegmentParams(expected_area_px=area))
    assert len(grains) == 2
    assert not grains.merged.any()
    np.testing.assert_allclose(sorted(grains.length_px), sorted([la, lb]), rtol=0.15)


def test_grains_side_by_side_are_split_or_flagged_and_ejected(runner: ModelRunner) -> None:
    """Long grains touching along their flanks have no neck to cut: such a blob must be flagged, never passed."""
    task = make_task(runner, "Basmati")
    for i in range(3):
        frame = plate(h=500, seed=i)
        a, b = horizontal(grain("Basmati", 60 + i)), horizontal(grain("Basmati", 70 + i))
        wa = float(segment(a, SegmentParams()).width_px[0])
        wb = float(segment(b, SegmentParams()).width_px[0])
        paste(frame, a, 400, 180)
        paste(frame, b, 400, 180 + int((wa + wb) / 2) - 4)
        result = wire(task.process([Frame("chute", i, frame)]))[0]
        assert result["n_grains"] in (1, 2)
        if result["n_grains"] == 1:  # not split: flagged as a clump, or judged as one fat grain, and ejected
            assert result["grains"][0]["eject"]


def test_large_single_off_type_grain_is_not_cut(runner: ModelRunner) -> None:
    """An Ipsala grain is twice a Karacadag's area: it must be judged as one grain, not split into two halves."""
    frame = plate(seed=6)
    paste(frame, horizontal(grain("Ipsala", 80)), 300, 180)
    paste(frame, horizontal(grain("Karacadag", 80)), 900, 180)
    task = make_task(runner, "Karacadag", channels=2)
    expected = task.params.expected_area_px
    assert expected is not None
    assert segment(horizontal(grain("Ipsala", 80)), SegmentParams()).area_px[0] > 1.6 * expected
    result = wire(task.process([Frame("chute", 1, frame)]))[0]
    by_channel = {g["channel"]: g for g in result["grains"]}
    assert result["n_grains"] == 2 and result["n_merged"] == 0
    assert by_channel[0]["variety"] == "Ipsala" and by_channel[0]["eject"]
    assert by_channel[1]["variety"] == "Karacadag" and not by_channel[1]["eject"]


def test_empty_frame_keeps(runner: ModelRunner) -> None:
    result = wire(make_task(runner).process([Frame("chute", 1, plate(seed=2))]))[0]
    assert result["n_grains"] == 0
    assert result["grains"] == [] and result["eject_channels"] == []
    assert result["decision"] == "keep"


def test_broken_grain_is_ejected(runner: ModelRunner) -> None:
    whole = horizontal(grain("Arborio", 40))
    half = whole.copy()
    half[:, 150:] = 0  # the grain is centred at x = 150: keep one half
    frame = plate(seed=3)
    paste(frame, whole, 300, 180)
    paste(frame, half, 900, 180)
    result = wire(make_task(runner, "Arborio", channels=2).process([Frame("chute", 1, frame)]))[0]
    by_channel = {g["channel"]: g for g in result["grains"]}
    assert result["n_grains"] == 2
    assert by_channel[1]["broken"] and by_channel[1]["eject"]
    assert not by_channel[0]["broken"]
    assert 1 in result["eject_channels"]


def test_off_type_is_ejected_and_declared_kept(runner: ModelRunner) -> None:
    frame = plate(seed=4)
    paste(frame, horizontal(grain("Arborio", 50)), 300, 180)
    paste(frame, horizontal(grain("Basmati", 50)), 900, 180)
    task = make_task(runner, "Arborio", channels=2)
    result = wire(task.process([Frame("chute", 1, frame), Frame("chute", 2, plate(seed=5))]))
    assert [r["n_grains"] for r in result] == [2, 0]
    by_channel = {g["channel"]: g for g in result[0]["grains"]}
    assert by_channel[0]["variety"] == "Arborio" and not by_channel[0]["eject"]
    assert by_channel[1]["variety"] == "Basmati" and by_channel[1]["eject"]
    assert result[0]["eject_channels"] == [1] and result[0]["decision"] == "eject"
    assert result[0]["counts"]["Arborio"] == 1 and result[0]["counts"]["Basmati"] == 1
    assert result[1]["decision"] == "keep"


def test_grains_of_a_frame_batch_run_in_chunks_with_the_same_results(
    runner: ModelRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = []
    for k in range(3):
        frame = plate(seed=10 + k)
        for i, cx in enumerate((150, 450, 750, 1050)):
            paste(frame, horizontal(grain(VARIETIES[(i + k) % 5], 60 + 4 * k + i)), cx, 180)
        frames.append(Frame("chute", k, frame))
    calls: list[int] = []
    run = runner.run

    def counted(inputs: dict[str, npt.NDArray[np.uint8]]) -> dict[str, npt.NDArray[np.float32]]:
        calls.append(len(inputs["x"]))
        return run(inputs)

    monkeypatch.setattr(runner, "run", counted)
    whole = wire(make_task(runner, "Arborio", size_prior=False).process(frames))
    assert calls == [12]
    calls.clear()
    chunked = wire(make_task(runner, "Arborio", size_prior=False, crops_per_call=5).process(frames))
    assert calls == [5, 5, 2]
    assert [r["n_grains"] for r in chunked] == [4, 4, 4]
    for a, b in zip(whole, chunked, strict=True):
        assert [g["variety"] for g in a["grains"]] == [g["variety"] for g in b["grains"]]
        np.testing.assert_allclose([g["score"] for g in a["grains"]], [g["score"] for g in b["grains"]], atol=2e-4)
        assert a["eject_channels"] == b["eject_channels"]


def test_a_batch_weighs_the_size_prior_as_frame_by_frame(runner: ModelRunner) -> None:
    """The prior's arithmetic runs once per batch, yet which frames take it is decided frame by frame: batches with
    an invalid frame among them give the results of one frame at a time, across the frame that confirms the scale."""
    from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig

    sim = ChuteSimulator(ChuteSimulatorConfig(seed=4, grains_per_s=1250, fps=25))
    frames = [Frame("chute", k, sim.next_frame()[0]) for k in range(10)]
    frames.insert(5, Frame("chute", 99, np.zeros((4, 4), dtype=np.uint8)))  # invalid, mid-batch
    batched = make_task(runner, "Basmati", scale_px_per_dataset_px=0.35)
    single = make_task(runner, "Basmati", scale_px_per_dataset_px=0.35)
    by_batch = [r for a in range(0, len(frames), 4) for r in wire(batched.process(frames[a : a + 4]))]
    one_by_one = [r for f in frames for r in wire(single.process([f]))]
    assert by_batch == one_by_one
    assert batched.stats == single.stats
    assert batched.scale_check is not None and batched.scale_check.ok  # the prior came on during the stream ...
    assert 0 < batched.stats["size_prior_off"] < sum(r["n_grains"] for r in by_batch)  # ... not from the start


def test_malformed_frame_is_invalid_not_an_error(runner: ModelRunner) -> None:
    task = make_task(runner)
    bad = np.zeros((10, 10), dtype=np.uint8)
    result = wire(task.process([Frame("chute", 1, bad)]))
    assert result[0]["decision"] == "invalid"
    assert task.stats["invalid_frames"] == 1


def test_a_frame_the_segmentation_fails_on_is_invalid_and_the_batch_goes_on(
    runner: ModelRunner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A segmentation bug triggered by one frame costs that frame (`invalid`, counted, logged with the error), not
    the batch: the other frames get the decisions they get without the failure, size prior on."""
    from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig
    from edge_runtime.tasks import rice_sorter

    sim = ChuteSimulator(ChuteSimulatorConfig(seed=4, grains_per_s=1250, fps=25))
    frames = [Frame("chute", k, sim.next_frame()[0]) for k in range(12)]
    warm, batch = frames[:8], frames[8:]
    reference, failing = (make_task(runner, "Basmati", scale_px_per_dataset_px=0.35) for _ in range(2))
    for task in (reference, failing):
        for a in range(0, len(warm), 4):
            task.process(warm[a : a + 4])
    assert reference.scale_check is not None and reference.scale_check.ok  # the weighed path runs below
    expected = wire(reference.process(batch))

    def fails_on_the_third(img: U8, params: SegmentParams) -> object:
        if img is batch[2].image:
            raise ValueError("a frame this code cannot cut")
        return segment(img, params)

    monkeypatch.setattr(rice_sorter, "segment", fails_on_the_third)
    got = wire(failing.process(batch))
    assert got[2]["decision"] == "invalid" and got[2]["n_grains"] == 0 < expected[2]["n_grains"]
    assert [got[k] for k in (0, 1, 3)] == [expected[k] for k in (0, 1, 3)]
    assert failing.stats["segment_errors"] == 1 and reference.stats["segment_errors"] == 0
    assert "rice_segment_failed" in caplog.text and "a frame this code cannot cut" in caplog.text


def test_config_rejects_unknown_variety_and_options(runner: ModelRunner) -> None:
    with pytest.raises(ValidationError):
        RiceSorterConfig.model_validate({"kind": "rice_sorter", "declared_variety": "Arborio", "speed": 1})
    with pytest.raises(Exception, match="declared_variety"):
        make_task(runner, "Carnaroli")


def test_half_resolution_is_a_config_option_that_warns_on_small_grains(
    runner: ModelRunner, caplog: pytest.LogCaptureFixture
) -> None:
    frame = plate(seed=6)
    for i, cx in enumerate((150, 450, 750, 1050)):
        paste(frame, horizontal(grain("Arborio", 70 + i)), cx, 180)
    full = wire(make_task(runner).process([Frame("chute", 1, frame)]))[0]
    with caplog.at_level("WARNING", logger="edge_runtime.tasks.rice_sorter"):
        task = make_task(runner, work_scale=2)
    assert task.params.work_scale == 2 and not caplog.records  # data-set photographs: grains of 110-200 px
    half = wire(task.process([Frame("chute", 1, frame)]))[0]
    assert half["n_grains"] == full["n_grains"] == 4
    assert [g["channel"] for g in half["grains"]] == [g["channel"] for g in full["grains"]]
    assert [g["variety"] for g in half["grains"]] == [g["variety"] for g in full["grains"]]
    with caplog.at_level("WARNING", logger="edge_runtime.tasks.rice_sorter"):
        make_task(runner, work_scale=2, scale_px_per_dataset_px=0.25)  # Karacadag's median grain: 29 px
    assert "event=rice_work_scale_small_grains" in caplog.text
    with pytest.raises(ValidationError):
        RiceSorterConfig.model_validate({"kind": "rice_sorter", "declared_variety": "Arborio", "work_scale": 4})


def test_evaluate_on_a_small_class_folder_dir(tmp_path: Path) -> None:
    for variety in ("Arborio", "Basmati", "Jasmine"):
        (tmp_path / variety).mkdir()
        for i in range(7):
            name = f"{variety.lower()}_{100 + i:05d}.jpg"
            (tmp_path / variety / name).symlink_to(DATA / variety / name)
    (tmp_path / "Arborio" / "blank.png").write_bytes(cv2.imencode(".png", plate(250, 250))[1].tobytes())
    res = evaluate(tmp_path, declared="Arborio")
    assert res["n"] == 22 and res["n_unsegmented"] == 1
    matrix = np.array(res["confusion"]["matrix"])
    assert res["confusion"]["labels"] == list(VARIETIES)
    assert matrix.sum() == res["n"] - res["n_unsegmented"]
    assert [res["per_class"][v]["n"] for v in ("Arborio", "Basmati", "Jasmine")] == [7, 7, 7]
    assert res["per_class"]["Ipsala"]["n"] == 0
    assert res["per_class"]["Ipsala"]["recall"] is None
    json.dumps(res, allow_nan=False)
    assert 0.0 <= res["accuracy"] <= 21 / 22
    assert res["accuracy"] == pytest.approx(np.trace(matrix) / 22)
    assert 0.0 <= res["eject_precision"] <= 1.0 and 0.0 <= res["eject_recall"] <= 1.0
    assert res["n_off_type"] == 14
    # the table covers every label as the declared one; the declared one's row is the figures above
    table = res["eject_by_declared_variety"]
    assert list(table) == list(VARIETIES)
    assert {k: table["Arborio"][k] for k in ("eject_precision", "eject_recall", "n_off_type", "n_ejected")} == {
        k: res[k] for k in ("eject_precision", "eject_recall", "n_off_type", "n_ejected")
    }
    assert [table[v]["n_off_type"] for v in VARIETIES] == [14, 15, 22, 15, 22]
    assert table["Ipsala"]["eject_recall"] is not None and table["Ipsala"]["n_ejected"] >= 1  # the blank at least
    half = evaluate(tmp_path, declared="Arborio", work_scale=2)
    assert half["work_scale"] == 2 and res["work_scale"] == 1
    assert half["n"] == 22 and half["n_unsegmented"] == 1 and half["accuracy"] >= res["accuracy"] - 2 / 22
    int8 = evaluate(tmp_path, variant="int8")
    assert int8["n"] == 22 and "eject_recall" not in int8 and "declared" not in int8
    assert list(int8["eject_by_declared_variety"]) == list(VARIETIES)


def test_evaluate_refuses_unknown_variety_folder(tmp_path: Path) -> None:
    (tmp_path / "Carnaroli").mkdir()
    with pytest.raises(DataSetError, match="Carnaroli"):
        evaluate(tmp_path)
