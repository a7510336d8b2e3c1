"""Detection metrics on hand-made boxes: AP50, box calls, reject precision/recall."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.tasks.weld_decode import Detections
from edge_runtime.tools.evaluate import detection_metrics as dm

A = np.array([0.0, 0.0, 0.4, 0.4], np.float32)
B = np.array([0.5, 0.5, 0.9, 0.9], np.float32)
NEAR_A = np.array([0.02, 0.0, 0.42, 0.4], np.float32)  # IoU with A about 0.9


def test_ap_perfect_missing_and_false_positive_ranking() -> None:
    truths = [(0, 0, A), (1, 0, B), (1, 1, A)]
    perfect = [(0, 0, 0.9, NEAR_A), (1, 0, 0.8, B), (1, 1, 0.7, A)]
    assert dm.average_precision(perfect, truths, 3) == {0: 1.0, 1: 1.0, 2: None}
    # a false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1; the monotone envelope
    # lifts the first to 2/3, so AP = 2/3
    fp_first = [(0, 0, 0.95, B), *perfect]
    ap = dm.average_precision(fp_first, truths, 3)
    assert ap[0] == pytest.approx(2 / 3, abs=1e-4)
    # ranked last instead it costs nothing
    assert dm.average_precision([*perfect, (0, 0, 0.1, B)], truths, 3)[0] == 1.0
    # a duplicate of a matched box is a false positive; a missed box caps recall
    ap = dm.average_precision([(0, 0, 0.9, A), (0, 0, 0.8, A)], truths, 3)
    assert ap[0] == pytest.approx(0.5, abs=1e-4) and ap[1] == 0.0
    assert dm.mean_ap({0: 0.5, 1: 1.0, 2: None}) == 0.75 and dm.mean_ap({0: None}) is None


def test_ap_needs_iou_of_one_half() -> None:
    shifted = np.array([0.2, 0.0, 0.6, 0.4], np.float32)  # IoU with A = 1/3
    assert dm.average_precision([(0, 0, 0.9, shifted)], [(0, 0, A)], 1) == {0: 0.0}


def test_box_calls_take_the_best_overlapping_detection() -> None:
    gt = np.stack([A, B, np.array([0.0, 0.6, 0.2, 0.8], np.float32)])
    boxes = np.stack([NEAR_A, A, B])
    calls = dm.box_calls(boxes, [2, 0, 1], [0.6, 0.9, 0.5], gt)
    assert calls.tolist() == [0, 1, -1]
    assert dm.box_calls(np.zeros((0, 4)), [], [], gt).tolist() == [-1, -1, -1]
    np.testing.assert_allclose(dm.cxcywh_to_xyxy([[0.2, 0.2, 0.4, 0.4]])[0], A)


def test_reject_precision_recall_and_curve() -> None:
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.1])
    truth = np.array([True, True, True, False, False])
    r = dm.binary_report(scores, truth, 0.5)
    assert r["precision"] == pytest.approx(2 / 3, abs=1e-4) and r["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["confusion"] == [[1, 1], [1, 2]] and r["accuracy"] == 0.6
    curve = dm.reject_curve(scores, truth)
    assert len(curve) == 19 and curve[0]["threshold"] == 0.05 and curve[-1]["threshold"] == 0.95
    recalls = [c["recall"] for c in curve]
    assert recalls == sorted(recalls, reverse=True)  # recall never grows with the threshold
    assert dm.binary_report(scores, truth, 0.99)["precision"] is None


def test_summarise_counts_boxes_and_frames() -> None:
    dets = [
        Detections(np.stack([NEAR_A]), np.array([0.9], np.float32), np.array([0])),
        Detections(np.stack([B]), np.array([0.7], np.float32), np.array([1])),
    ]
    truths = [(np.array([0]), np.stack([A])), (np.array([1, 2]), np.stack([B, A]))]
    th = {"box_score": 0.3, "reject_score": 0.5, "nms_iou": 0.5}
    res = dm.summarise(dets, truths, None, ["bad_weld", "good_weld", "defect"], ["bad_weld", "defect"], th)
    assert res["n_frames"] == 2 and res["n_boxes"] == 3
    assert res["confusion"]["matrix"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    assert res["box_accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    # frame 0 truly rejected and rejected; frame 1 has a defect (reject) but only a good box: passed
    assert res["frame_confusion"]["matrix"] == [[0, 0], [1, 1]] and res["frame_accuracy"] == 0.5
    assert res["per_class"]["bad_weld"]["ap50"] == 1.0 and res["per_class"]["defect"]["ap50"] == 0.0
    assert res["map50"] == pytest.approx(2 / 3, abs=1e-4)
    assert res["reject"]["recall"] == 0.5 and res["reject"]["precision"] == 1.0
