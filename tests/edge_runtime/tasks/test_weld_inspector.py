"""weld_inspector: the shipped model on real weld photographs, post-processing on known maps, evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from adapters.base import EdgeRuntimeError, Frame
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.paths import models_dir
from edge_runtime.tasks import weld_decode as wd
from edge_runtime.tasks.weld_inspector import WeldInspectorConfig, WeldInspectorTask
from edge_runtime.tools.datasets import DataSetError
from edge_runtime.tools.evaluate.weld_inspector import box_calls, evaluate
from tests.helpers import wire

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "datasets" / "weld_photos"
MODEL_DIR = models_dir() / "weld_inspector"
LABELS = ["bad_weld", "good_weld", "defect"]

# validation-side frames whose labels leave no doubt: one large cracked weld, or only good welds
CLEAR_REJECT = [
    "cd175ee2-e199412f-weld-cracking-aluminum_jpg.rf.d785c4703f8b2bd2bea9077090751b2a.jpg",
    "e7eb4067-1fa85ced-c20_jpg.rf.45e33e716598a57826f30ae27728ec26.jpg",
]
CLEAR_ACCEPT = [
    "mig-good-welds_10_jpeg_jpg.rf.b35c10d98c3d3b194b87a6a11e8d5204.jpg",
    "good_weld_vid628_jpeg_jpg.rf.11522af8f907da1a1c37b49b9b582846.jpg",
]


def val_images() -> list[str]:
    """Images of the validation sources of the split run (models/weld_inspector/split.json)."""
    val_sources = set(json.loads((MODEL_DIR / "split.json").read_text())["val_sources"])
    with (DATA / "sources.csv").open() as fh:
        return sorted(r["image"] for r in csv.DictReader(fh) if r["source"] in val_sources)


def read(name: str) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(DATA / "images" / name), cv2.IMREAD_COLOR)
    assert img is not None, name
    return np.asarray(img, dtype=np.uint8)


def label_lines(name: str) -> list[str]:
    return [ln for ln in (DATA / "labels" / (Path(name).stem + ".txt")).read_text().splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def task() -> WeldInspectorTask:
    return WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector"), load_model("weld_inspector"))


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_model_loads_with_declared_signature(variant: str) -> None:
    runner = load_model("weld_inspector", variant=variant)
    assert runner.manifest.labels == LABELS
    assert [i.name for i in runner.session.get_inputs()] == ["x"]
    assert [o.name for o in runner.session.get_outputs()] == ["scores", "boxes", "reject"]
    size = int(runner.manifest.preprocessing["input_size"])
    n_loc = runner.manifest.outputs[0].shape[1]
    assert isinstance(n_loc, int) and n_loc == (size // int(runner.manifest.preprocessing["stride"])) ** 2
    out = runner.run({"x": np.zeros((3, size, size, 3), np.uint8)})
    assert out["scores"].shape == (3, n_loc, 3) and ((out["scores"] >= 0) & (out["scores"] <= 1)).all()
    assert out["boxes"].shape == (3, n_loc, 4)
    assert (out["boxes"][..., 2:] >= out["boxes"][..., :2] - 0.01).all()  # x1 >= x0, y1 >= y0 (int8: a step)
    assert out["reject"].shape == (3,) and ((out["reject"] >= 0) & (out["reject"] <= 1)).all()
    assert (variant == "int8") == ("-int8+" in runner.ident)


def test_config_takes_manifest_thresholds_unless_set(task: WeldInspectorTask) -> None:
    th = task.runner.manifest.thresholds
    assert task.detector
    assert task.reject_score == th["reject_score"] and task.nms_iou == th["nms_iou"]
    assert task.box_score == th["box_score"]
    assert task.frame_reject == th.get("frame_reject")
    own = WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector", reject_score=0.99), task.runner)
    assert own.reject_score == 0.99 and own.nms_iou == th["nms_iou"]
    assert (
        WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector", frame_reject=0.2), task.runner).frame_reject == 0.2
    )
    with pytest.raises(ValidationError):
        WeldInspectorConfig.model_validate({"kind": "weld_inspector", "reject_scor": 0.5})
    with pytest.raises(ValidationError):
        WeldInspectorConfig(kind="weld_inspector", foreground=1.5)


def test_process_real_frames_gives_boxes_inside_frame(task: WeldInspectorTask) -> None:
    names = val_images()[::23][:6]
    images = [read(n) for n in names]
    images[1] = np.ascontiguousarray(cv2.resize(images[1], (800, 480)), dtype=np.uint8)  # not the training size
    frames = [Frame(f"cam{i}", i, img) for i, img in enumerate(images)]
    results = wire(task.process(frames))
    assert len(results) == len(frames)
    dets, frame_scores = task.detect(images)
    assert frame_scores is not None and frame_scores.shape == (len(frames),)
    n_boxes = 0
    for frame, res, frame_score, det in zip(frames, results, frame_scores, dets, strict=True):
        h, w = frame.image.shape[:2]
        assert res["stream"] == frame.stream
        assert res["decision"] in ("accept", "reject")
        for b in res["boxes"]:
            assert b["label"] in LABELS
            assert 0.0 <= b["score"] <= 1.0 and b["score"] >= task.box_score
            assert b["w"] > 0 and b["h"] > 0
            assert b["x"] >= 0 and b["x"] + b["w"] <= w + 0.5
            assert b["y"] >= 0 and b["y"] + b["h"] <= h + 0.5
        assert len(res["boxes"]) == int((det.scores >= task.box_score).sum())
        rejecting = {
            LABELS[int(c)] for c, s in zip(det.classes, det.scores, strict=True) if c != 1 and s >= task.reject_score
        }
        if task.frame_reject is not None:  # the frame head decides
            assert (res["decision"] == "reject") == bool(frame_score >= task.frame_reject)
        else:  # the box rule decides
            assert (res["decision"] == "reject") == bool(rejecting)
        if res["decision"] == "reject":
            assert res["reject_reasons"] == (sorted(rejecting) or ["frame_score"])
        else:
            assert res["reject_reasons"] == []
        n_boxes += len(res["boxes"])
    assert n_boxes > 0  # real weld photographs: the model finds welds somewhere


def test_flip_average_is_the_mean_of_the_frame_and_its_mirror_in_frame_coordinates(task: WeldInspectorTask) -> None:
    """The mirrored pass, mapped back by hand here (reversed columns of the grid, x taken from the other side),
    averaged with the plain pass: the decoded boxes and frame score are what the task reports with the option on."""
    images = [read(n) for n in val_images()[5:8]]
    flipped = WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector", flip_average=True), task.runner)
    plain = WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector", flip_average=False), task.runner)
    assert flipped.flip_average and not plain.flip_average and flipped.grid == (40, 40)
    size = task.size

    def raw(imgs: list[npt.NDArray[np.uint8]]) -> dict[str, npt.NDArray[np.float32]]:
        batch = np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_LINEAR) for i in imgs])
        return task.runner.run({"x": batch})

    a = raw(images)
    b = raw([np.ascontiguousarray(i[:, ::-1]) for i in images])  # mirrored before resizing: the same pixels
    g = 40
    b_scores = b["scores"].reshape(len(images), g, g, 3)[:, :, ::-1].reshape(len(images), g * g, 3)
    b_boxes = b["boxes"].reshape(len(images), g, g, 4)[:, :, ::-1].reshape(len(images), g * g, 4)
    b_boxes = b_boxes[..., [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + np.array([1, 0, 1, 0], np.float32)
    # the mapping is the network's own: where the plain pass is sure of something, the mapped mirror's boxes lie far
    # closer to the plain pass's than the same boxes with x flipped but the grid columns not reversed
    sure = a["scores"].max(-1) > 0.2
    unmapped = b["boxes"][..., [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + np.array([1, 0, 1, 0], np.float32)
    assert sure.sum() > 20
    assert np.abs(a["boxes"] - b_boxes)[sure].mean() < 0.5 * np.abs(a["boxes"] - unmapped)[sure].mean()
    want_scores = (a["scores"] + b_scores) / 2
    want_boxes = (a["boxes"] + b_boxes) / 2
    dets, frame = flipped.detect(images)
    assert frame is not None
    np.testing.assert_allclose(frame, (a["reject"] + b["reject"]) / 2, atol=1e-6)
    for j, det in enumerate(dets):
        want = wd.decode(want_scores[j], want_boxes[j], score_threshold=task.box_score, iou_threshold=task.nms_iou)
        assert len(det) == len(want) > 0
        np.testing.assert_allclose(det.scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(det.boxes, want.boxes, atol=1e-5)
        assert (det.classes == want.classes).all()
    plain_dets, _ = plain.detect(images)
    assert any(len(p) != len(d) or not np.allclose(p.scores, d.scores) for p, d in zip(plain_dets, dets, strict=True))


def test_flip_average_is_refused_for_a_model_without_one_grid(task: WeldInspectorTask) -> None:
    manifest = task.runner.manifest
    odd = manifest.model_copy(
        update={"preprocessing": {k: v for k, v in manifest.preprocessing.items() if k != "stride"}}
    )
    runner = ModelRunner(odd, task.runner.session, task.runner.variant, task.runner.sha256)
    with pytest.raises(EdgeRuntimeError, match="no single grid of locations to mirror"):
        WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector", flip_average=True), runner)
    assert not WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector", flip_average=False), runner).flip_average


def test_process_rejects_and_counts_an_uninspectable_frame(task: WeldInspectorTask) -> None:
    good = read(val_images()[0])
    before = task.stats["invalid_frames"]
    frames = [Frame("a", 0, good), Frame("b", 0, np.zeros((64, 64), np.uint8)), Frame("c", 0, good)]
    results = wire(task.process(frames))
    fields = ("stream", "boxes", "decision", "reject_reasons")
    assert {k: results[1][k] for k in fields} == {
        "stream": "b",
        "boxes": [],
        "decision": "reject",
        "reject_reasons": ["invalid_frame"],
    }
    assert results[0] == results[2] | {"stream": "a"} and results[2]["stream"] == "c"
    assert task.stats["invalid_frames"] == before + 1


def test_clear_real_frames_get_the_right_decision(task: WeldInspectorTask) -> None:
    frames = [Frame(n, 0, read(n)) for n in CLEAR_REJECT + CLEAR_ACCEPT]
    results = wire(task.process(frames))
    decisions = [r["decision"] for r in results]
    assert decisions == ["reject"] * len(CLEAR_REJECT) + ["accept"] * len(CLEAR_ACCEPT)
    assert all(r["boxes"][0]["label"] == "good_weld" for r in results[len(CLEAR_REJECT) :])
    for n in CLEAR_REJECT:
        assert {ln.split()[0] for ln in label_lines(n)} & {"0", "2"}
    for n in CLEAR_ACCEPT:
        assert {ln.split()[0] for ln in label_lines(n)} == {"1"}


def test_box_calls_read_the_cells_a_box_covers() -> None:
    probs = np.zeros((4, 32, 32), np.float32)
    probs[0] = 1.0
    probs[:, 0:16, 0:16] = np.array([0.1, 0.2, 0.1, 0.6])[:, None, None]  # defect, top-left quarter
    probs[:, 16:32, 16:32] = np.array([0.2, 0.1, 0.7, 0.0])[:, None, None]  # good weld, bottom-right quarter
    gt = np.array(
        [
            [2, 0.25, 0.25, 0.3, 0.3],  # inside the defect area
            [1, 0.75, 0.75, 0.2, 0.4],  # inside the good-weld area
            [0, 0.75, 0.25, 0.2, 0.2],  # on background: missed
            [1, 0.751, 0.751, 0.001, 0.001],  # smaller than a cell: the cell holding its centre
        ]
    )
    assert box_calls(probs, gt, 0.3).tolist() == [2, 1, -1, 1]


def make_yolo_dir(root: Path, names: list[str], data_yaml: str | None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for n in names:
        (root / "images" / n).symlink_to(DATA / "images" / n)
        lab = DATA / "labels" / (Path(n).stem + ".txt")
        (root / "labels" / lab.name).symlink_to(lab)
    if data_yaml is not None:
        (root / "data.yaml").write_text(data_yaml)
    return root


def test_evaluate_counts_are_consistent(tmp_path: Path) -> None:
    names = val_images()[5::19][:7]
    data = make_yolo_dir(tmp_path / "set", names, (DATA / "data.yaml").read_text())
    n_lines = sum(len(label_lines(n)) for n in names)
    res = evaluate(data, variant="fp32")
    assert "-" not in res["model"].split("+")[0]  # the fp32 file; without --variant evaluate takes int8 (below)
    assert res["n_frames"] == res["n"] == len(names)
    assert res["n_boxes"] == n_lines
    matrix = np.array(res["confusion"]["matrix"])
    assert res["confusion"]["labels"] == LABELS and res["confusion"]["columns"] == [*LABELS, "missed"]
    assert matrix.shape == (3, 4) and matrix.sum() == n_lines
    assert sum(c["n"] for c in res["per_class"].values()) == n_lines
    assert [c["missed"] for c in res["per_class"].values()] == matrix[:, 3].tolist()
    assert res["box_accuracy"] == round(np.trace(matrix[:, :3]) / n_lines, 4)
    assert np.array(res["frame_confusion"]["matrix"]).sum() == len(names)
    assert 0.0 <= res["frame_accuracy"] <= 1.0
    assert res["flip_average"] is bool(load_model("weld_inspector").manifest.preprocessing.get("flip_average"))
    int8 = evaluate(data, config=WeldInspectorConfig(kind="weld_inspector", flip_average=False))  # the default
    assert int8["n_boxes"] == n_lines and "-int8+" in int8["model"] and int8["flip_average"] is False


def test_evaluate_without_data_yaml_and_with_unknown_classes(tmp_path: Path) -> None:
    names = val_images()[:3]
    plain = evaluate(make_yolo_dir(tmp_path / "plain", names, None))
    assert plain["n_boxes"] == sum(len(label_lines(n)) for n in names)
    odd = make_yolo_dir(tmp_path / "odd", names, "names: ['crack', 'good_weld', 'defect']\n")
    with pytest.raises(DataSetError, match="crack"):
        evaluate(odd)
    with pytest.raises(DataSetError, match="images"):
        evaluate(tmp_path / "missing")
