"""Detection metrics for `weld_inspector` (pure numpy): AP50 per class, mAP50, box calls, reject precision/recall.

- `average_precision`: per-class AP at an IoU threshold (0.5), all-point interpolated (VOC 2010+ / COCO-style
  area under the monotone precision envelope), detections sorted by score, each ground-truth box matched at most
  once (greedy, best IoU among unmatched boxes); a class without ground truth has AP None. `mean_ap` averages
  the classes that have ground truth.
- `box_calls`: the model's call for each ground-truth box: the class of the highest-scoring detection overlapping
  it with IoU >= 0.5 (any class), or -1 (missed) when none does. `box_accuracy` = calls equal to the truth.
- `reject_curve`: precision and recall of "reject" over frame-score thresholds, so an integrator can choose an
  operating point; `binary_report` gives precision/recall/accuracy and the confusion at one threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.tasks.weld_decode import Detections, box_iou, frame_score

__all__ = [
    "average_precision",
    "binary_report",
    "box_calls",
    "class_table",
    "cxcywh_to_xyxy",
    "mean_ap",
    "reject_curve",
    "summarise",
]

F32 = npt.NDArray[np.float32]


def cxcywh_to_xyxy(b: npt.ArrayLike) -> F32:
    """(n, 4) centre-x, centre-y, w, h -> x0, y0, x1, y1."""
    a = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], axis=1)


def average_precision(
    preds: Sequence[tuple[int, int, float, npt.ArrayLike]],
    truths: Sequence[tuple[int, int, npt.ArrayLike]],
    n_classes: int,
    iou_threshold: float = 0.5,
) -> dict[int, float | None]:
    """Per-class AP. `preds`: (frame, class, score, xyxy); `truths`: (frame, class, xyxy)."""
    out: dict[int, float | None] = {}
    for c in range(n_classes):
        gt: dict[int, list[npt.ArrayLike]] = {}
        for f, k, box in truths:
            if k == c:
                gt.setdefault(f, []).append(box)
        gt_arr = {f: np.asarray(v, dtype=np.float32).reshape(-1, 4) for f, v in gt.items()}
        n_gt = sum(len(v) for v in gt_arr.values())
        if n_gt == 0:
            out[c] = None
            continue
        used = {f: np.zeros(len(v), bool) for f, v in gt_arr.items()}
        mine = sorted((p for p in preds if p[1] == c), key=lambda p: -p[2])
        tp = np.zeros(len(mine))
        for i, (f, _, _, box) in enumerate(mine):
            if f not in gt_arr:
                continue
            iou = box_iou(np.asarray(box, dtype=np.float32), gt_arr[f])[0]
            iou[used[f]] = -1.0
            j = int(np.argmax(iou))
            if iou[j] >= iou_threshold:
                used[f][j] = True
                tp[i] = 1.0
        recall = np.concatenate([[0.0], np.cumsum(tp) / n_gt])
        precision = np.concatenate([[1.0], np.cumsum(tp) / np.arange(1, len(tp) + 1)])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        out[c] = round(float(np.sum(np.diff(recall) * precision[1:])), 4)
    return out


def mean_ap(ap: dict[int, float | None]) -> float | None:
    known = [v for v in ap.values() if v is not None]
    return round(float(np.mean(known)), 4) if known else None


def box_calls(
    det_boxes: npt.ArrayLike,
    det_classes: npt.ArrayLike,
    det_scores: npt.ArrayLike,
    gt_boxes: npt.ArrayLike,
    iou_threshold: float = 0.5,
) -> npt.NDArray[np.int64]:
    """Class call per ground-truth box (xyxy): best-scoring detection with IoU >= threshold, else -1."""
    gt = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    calls = np.full(len(gt), -1, dtype=np.int64)
    db = np.asarray(det_boxes, dtype=np.float32).reshape(-1, 4)
    if len(gt) == 0 or len(db) == 0:
        return calls
    dc = np.asarray(det_classes, dtype=np.int64).reshape(-1)
    ds = np.asarray(det_scores, dtype=np.float32).reshape(-1)
    iou = box_iou(gt, db)
    for k in range(len(gt)):
        hit = np.nonzero(iou[k] >= iou_threshold)[0]
        if hit.size:
            calls[k] = int(dc[hit[np.argmax(ds[hit])]])
    return calls


def binary_report(scores: npt.ArrayLike, truth: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """Reject decision `score >= threshold` against `truth` (True = to reject)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(truth, dtype=bool).reshape(-1)
    pred = s >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    return {
        "threshold": round(float(threshold), 4),
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "accuracy": round((tp + tn) / max(len(y), 1), 4),
        "confusion": [[tn, fp], [fn, tp]],  # rows truth accept/reject, columns decision accept/reject
    }


def reject_curve(
    scores: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike | None = None
) -> list[dict[str, Any]]:
    """Reject precision/recall/accuracy over thresholds (default 0.05, 0.10, ... 0.95)."""
    ts = np.round(np.arange(0.05, 0.951, 0.05), 4) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    return [{k: v for k, v in binary_report(scores, truth, float(t)).items() if k != "confusion"} for t in ts]


def class_table(
    confusion: npt.NDArray[np.int64], labels: Sequence[str], ap: dict[int, float | None]
) -> dict[str, dict[str, Any]]:
    """Per class: labelled boxes, boxes called right, boxes missed (the confusion's last column), accuracy, AP50."""
    n_cls = len(labels)
    correct = np.diag(confusion[:, :n_cls])
    return {
        name: {
            "n": int(confusion[i].sum()),
            "correct": int(correct[i]),
            "missed": int(confusion[i, n_cls]),
            "accuracy": round(float(correct[i] / confusion[i].sum()), 4) if confusion[i].sum() else None,
            "ap50": ap[i],
        }
        for i, name in enumerate(labels)
    }


def summarise(
    dets: Sequence[Detections],
    truths: Sequence[tuple[npt.NDArray[np.int64], F32]],
    frame_probs: Sequence[float] | None,
    labels: Sequence[str],
    reject_labels: Sequence[str],
    thresholds: dict[str, float],
) -> dict[str, Any]:
    """The `evaluate --json` figures of a box detector over frames.

    `dets`: per-frame detections down to the AP score floor (`thresholds["ap_min_score"]`); `truths`: per frame
    (label indices, xyxy boxes), both normalised to the frame; `frame_probs`: the frame head's reject
    probabilities (or None). Operating thresholds: `box_score` (boxes reported, box calls), `reject_score` (box
    rule), `frame_reject` (frame head decides when present). Returns map50, per-class AP50 and box accuracy,
    the box confusion, frame accuracy and confusion, reject precision/recall at the operating point and the
    reject curve over thresholds of the score that decides.
    """
    n_cls = len(labels)
    bad = [labels.index(n) for n in reject_labels if n in labels]
    box_score, reject_score = thresholds["box_score"], thresholds["reject_score"]
    frame_reject = thresholds.get("frame_reject")
    use_head = frame_reject is not None and frame_probs is not None
    confusion = np.zeros((n_cls, n_cls + 1), dtype=np.int64)
    preds: list[tuple[int, int, float, F32]] = []
    gts: list[tuple[int, int, F32]] = []
    y = np.zeros(len(dets), dtype=bool)
    decide_score = np.zeros(len(dets))
    for f, (d, (cls, boxes)) in enumerate(zip(dets, truths, strict=True)):
        keep = d.scores >= box_score
        calls = box_calls(d.boxes[keep], d.classes[keep], d.scores[keep], boxes)
        np.add.at(confusion, (cls, np.where(calls < 0, n_cls, calls)), 1)
        preds.extend((f, int(c), float(s), b) for b, s, c in zip(d.boxes, d.scores, d.classes, strict=True))
        gts.extend((f, int(c), b) for c, b in zip(cls, boxes, strict=True))
        y[f] = bool(np.isin(cls, bad).any())
        decide_score[f] = float(frame_probs[f]) if use_head and frame_probs is not None else frame_score(d, bad)
    op = float(frame_reject) if use_head and frame_reject is not None else reject_score
    ap = average_precision(preds, gts, n_cls)
    correct = np.diag(confusion[:, :n_cls])
    n_boxes = int(confusion.sum())
    at_op = binary_report(decide_score, y, op)
    per_class = class_table(confusion, labels, ap)
    return {
        "n": len(dets),
        "n_frames": len(dets),
        "n_boxes": n_boxes,
        "box_accuracy": round(float(correct.sum() / n_boxes), 4) if n_boxes else None,
        "frame_accuracy": at_op["accuracy"],
        "map50": mean_ap(ap),
        "per_class": per_class,
        "confusion": {"labels": list(labels), "columns": [*labels, "missed"], "matrix": confusion.tolist()},
        "frame_confusion": {"labels": ["accept", "reject"], "matrix": at_op["confusion"]},
        "reject": {
            "decided_by": "frame head (reject >= frame_reject)" if use_head else "box rule (bad box >= reject_score)",
            "precision": at_op["precision"],
            "recall": at_op["recall"],
            "threshold": op,
            "curve": reject_curve(decide_score, y),
        },
        "baselines": {
            "reject_every_frame_frame_accuracy": round(float(y.mean()), 4) if len(y) else None,
        },
        "thresholds": dict(thresholds),
    }
