"""Post-processing of the weld box detector (pure numpy): NMS, decoding raw outputs, the frame decision."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.tasks import weld_decode as wd

LABELS = ["bad_weld", "good_weld", "defect"]
BAD = ("bad_weld", "defect")


def test_box_iou_on_hand_made_boxes() -> None:
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [0, 0, 1, 2]], np.float32)
    np.testing.assert_allclose(wd.box_iou(a, b)[0], [1 / 7, 1.0, 0.0, 0.5], rtol=1e-6)
    assert wd.box_iou(a, np.zeros((0, 4), np.float32)).shape == (1, 0)


def test_nms_keeps_the_best_of_overlapping_boxes_and_distinct_ones() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9.5], [21, 21, 31, 31]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.3, 0.8], np.float32)
    assert wd.nms(boxes, scores, 0.5).tolist() == [1, 4]
    assert wd.nms(boxes, scores, 0.95).tolist() == [1, 4, 0, 2, 3]  # nothing overlaps that much except none
    assert wd.nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_decode_thresholds_then_suppresses_per_class() -> None:
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9]], np.float32)
    scores = np.array(
        [
            [0.9, 0.0, 0.7],  # bad weld, and a defect on the same box
            [0.8, 0.1, 0.0],  # duplicate bad weld
            [0.0, 0.04, 0.0],  # good weld below the threshold
        ],
        np.float32,
    )
    dets = wd.decode(scores, boxes, score_threshold=0.05, iou_threshold=0.5)
    assert dets.classes.tolist() == [0, 2, 1]  # per-class NMS: the defect survives the bad weld's box
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.1])
    np.testing.assert_allclose(dets.boxes[0], boxes[0])
    none = wd.decode(scores, boxes, score_threshold=0.95)
    assert len(none) == 0 and none.boxes.shape == (0, 4)
    assert len(wd.decode(scores, boxes, score_threshold=0.05, max_det=1)) == 1


def test_frame_decision_box_rule_and_frame_head() -> None:
    dets = wd.Detections(
        np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], np.float32),
        np.array([0.8, 0.4], np.float32),
        np.array([1, 2], np.int64),
    )
    assert wd.frame_score(dets, [0, 2]) == np.float32(0.4)
    assert wd.decide(dets, LABELS, BAD, reject_score=0.3) == ("reject", ["defect"])
    assert wd.decide(dets, LABELS, BAD, reject_score=0.5) == ("accept", [])
    # the frame head decides when its threshold is set; boxes give the reasons
    assert wd.decide(dets, LABELS, BAD, reject_score=0.3, frame_prob=0.2, frame_reject=0.5) == ("accept", [])
    assert wd.decide(dets, LABELS, BAD, reject_score=0.5, frame_prob=0.7, frame_reject=0.5) == (
        "reject",
        ["frame_score"],
    )


def test_to_dicts_gives_frame_pixels_clipped_to_the_frame() -> None:
    dets = wd.Detections(
        np.array([[-0.1, 0.25, 0.5, 0.75], [0.9, 0.9, 1.2, 1.0]], np.float32),
        np.array([0.9, 0.2], np.float32),
        np.array([0, 1], np.int64),
    )
    out = wd.to_dicts(dets, LABELS, 640, 480, min_score=0.5)
    assert out == [{"x": 0.0, "y": 120.0, "w": 320.0, "h": 240.0, "label": "bad_weld", "score": 0.9}]
    assert len(wd.to_dicts(dets, LABELS, 640, 480, min_score=0.1)) == 2


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 120), st.integers(0, 2**32 - 1), st.sampled_from([0.3, 0.5, 0.7]), st.booleans())
def test_nms_is_the_greedy_rule(n: int, seed: int, threshold: float, quantised: bool) -> None:
    """OpenCV's NMS against the rule written out: best first (ties: lower index), drop what overlaps a kept box by
    more than the threshold. Quantised scores (an int8 model's) tie often; zero scores are kept too."""
    rng = np.random.default_rng(seed)
    centres, sizes = rng.uniform(0, 1, (n, 2)), rng.uniform(0.0, 0.3, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if quantised:
        scores = (np.round(scores * 8) / 8).astype(np.float32)
    expected: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(wd.box_iou(boxes[i], boxes[k])[0, 0] <= threshold for k in expected):
            expected.append(int(i))
    assert wd.nms(boxes, scores, threshold).tolist() == expected


def test_merge_flipped_maps_the_mirrored_pass_back_and_averages() -> None:
    rng = np.random.default_rng(3)
    rows, cols, n = 3, 4, 2
    scores = rng.random((n, rows * cols, 3), dtype=np.float32)
    x0, y0 = rng.random((n, rows * cols), dtype=np.float32) * 0.5, rng.random((n, rows * cols), dtype=np.float32) * 0.5
    boxes = np.stack([x0, y0, x0 + 0.3, y0 + 0.2], axis=-1)
    # what an ideally mirror-symmetric network gives for the mirrored frames: columns reversed, x from the right
    m_scores = scores.reshape(n, rows, cols, 3)[:, :, ::-1].reshape(n, rows * cols, 3)
    m_boxes = boxes.reshape(n, rows, cols, 4)[:, :, ::-1].reshape(n, rows * cols, 4)
    m_boxes = np.stack([1 - m_boxes[..., 2], m_boxes[..., 1], 1 - m_boxes[..., 0], m_boxes[..., 3]], axis=-1)
    s, b = wd.merge_flipped(np.concatenate([scores, m_scores]), np.concatenate([boxes, m_boxes]), (rows, cols))
    np.testing.assert_allclose(s, scores, atol=1e-6)
    np.testing.assert_allclose(b, boxes, atol=1e-6)
    # a mirrored pass that disagrees is averaged in: location (0, 0) of the frame is the mirror's (0, cols - 1)
    m_scores[0, cols - 1, 1] = scores[0, 0, 1] + 0.5
    s, _ = wd.merge_flipped(np.concatenate([scores, m_scores]), np.concatenate([boxes, m_boxes]), (rows, cols))
    assert s[0, 0, 1] == pytest.approx(scores[0, 0, 1] + 0.25)
    with pytest.raises(ValueError, match="grid"):
        wd.merge_flipped(scores, boxes, (rows, cols + 1))
    with pytest.raises(ValueError, match="grid"):
        wd.merge_flipped(scores[:1], boxes[:1], (rows, cols))
