"""Post-processing of the `weld_inspector` box detector (2.x): raw outputs -> boxes -> frame decision.

The detector's ONNX graph already decodes its anchor-free head, so per frame it gives, for each of A locations,
`scores` (A, C) = per-class confidence in 0..1 and `boxes` (A, 4) = x0, y0, x1, y1 normalised to the frame, plus
optionally `reject`, a frame head's probability that the part is to be rejected. Here:

- `decode`: keep (location, class) pairs scoring ``>= score_threshold``, best ``pre_nms`` of them, then per-class
  non-maximum suppression (`nms`) at ``iou_threshold``, at most ``max_det`` boxes, best first;
- `merge_flipped`: with ``flip_average`` on, each frame also runs mirrored left-right, and the two passes are
  averaged location by location in the frame's coordinates (test-time augmentation; the network was trained on
  mirrored views);
- `frame_score`: the highest score of a box of a reject class (bad_weld, defect), 0 without one;
- `decide`: the frame decision the line acts on. With ``frame_reject`` set (and a frame head output) the head
  decides: reject when ``reject >= frame_reject``; otherwise the box rule: reject when a reject-class box scores
  ``>= reject_score``. Reasons are the reject classes of the boxes at or above ``reject_score`` (or
  ``frame_score`` when the head rejects without such a box).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Detections", "box_iou", "decide", "decode", "frame_score", "merge_flipped", "nms", "to_dicts"]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Detections:
    """Boxes of one frame, best first: `boxes` (n, 4) x0, y0, x1, y1 (normalised), `scores` (n,), `classes` (n,)."""

    boxes: F32
    scores: F32
    classes: I64

    def __len__(self) -> int:
        return len(self.scores)


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> F32:
    """Pairwise IoU of (n, 4) and (m, 4) xyxy boxes -> (n, m)."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.asarray(inter / np.maximum(union, 1e-12), dtype=np.float32)


def nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float) -> I64:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first (ties: the lower index). A box
    is dropped when its IoU with a better kept box is > `iou_threshold`. OpenCV's `dnn.NMSBoxes` does it (a tenth
    to a fiftieth of a numpy loop's time: the greedy loop in numpy cost the weld task as much as its int8 model)."""
    import cv2

    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not s.size:
        return np.zeros(0, dtype=np.int64)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    # NMSBoxes keeps scores > its threshold, which must be >= 0: shift every score above 0, order unchanged
    shifted = s - s.min() + 1.0
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), shifted.tolist(), 0.0, float(iou_threshold))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def decode(
    scores: npt.ArrayLike,
    boxes: npt.ArrayLike,
    *,
    score_threshold: float,
    iou_threshold: float = 0.5,
    pre_nms: int = 1000,
    max_det: int = 100,
) -> Detections:
    """One frame's raw outputs (`scores` (A, C), `boxes` (A, 4)) -> per-class NMS detections, best first."""
    s = np.asarray(scores, dtype=np.float32)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    loc, cls = np.nonzero(s >= score_threshold)
    sc = s[loc, cls]
    if sc.size > pre_nms:
        top = np.argpartition(-sc, pre_nms - 1)[:pre_nms]
        loc, cls, sc = loc[top], cls[top], sc[top]
    out_b: list[F32] = []
    out_s: list[F32] = []
    out_c: list[I64] = []
    for c in np.unique(cls):
        m = cls == c
        cb, cs = b[loc[m]], sc[m]
        k = nms(cb, cs, iou_threshold)
        out_b.append(cb[k])
        out_s.append(cs[k])
        out_c.append(np.full(len(k), c, dtype=np.int64))
    if not out_s:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    all_s = np.concatenate(out_s)
    order = np.argsort(-all_s, kind="stable")[:max_det]
    return Detections(np.concatenate(out_b)[order], all_s[order], np.concatenate(out_c)[order])


def merge_flipped(scores: F32, boxes: F32, grid: tuple[int, int]) -> tuple[F32, F32]:
    """Average the passes of n frames and of the same n frames mirrored left-right (stacked in that order).

    `scores` (2n, A, C) and `boxes` (2n, A, 4) over a row-major `grid` (rows, columns) of A locations. A mirrored
    pass's location (r, c) is the frame's (r, columns - 1 - c), and its box (x0, y0, x1, y1) is the frame's
    (1 - x1, y0, 1 - x0, y1). Returns (n, A, C) and (n, A, 4)."""
    n2, a, c = scores.shape
    rows, cols = grid
    if n2 % 2 or a != rows * cols:
        raise ValueError(f"merge_flipped: {n2} passes of {a} locations do not fit a {rows}x{cols} grid twice")
    n = n2 // 2
    s_m = scores[n:].reshape(n, rows, cols, c)[:, :, ::-1].reshape(n, a, c)
    b_m = boxes[n:].reshape(n, rows, cols, 4)[:, :, ::-1].reshape(n, a, 4)
    b_m = np.stack([1.0 - b_m[..., 2], b_m[..., 1], 1.0 - b_m[..., 0], b_m[..., 3]], axis=-1)
    return (
        np.asarray((scores[:n] + s_m) * 0.5, dtype=np.float32),
        np.asarray((boxes[:n] + b_m) * 0.5, dtype=np.float32),
    )


def frame_score(dets: Detections, reject_classes: Iterable[int]) -> float:
    """Highest score among boxes of the reject classes (0.0 without one)."""
    m = np.isin(dets.classes, np.fromiter(reject_classes, dtype=np.int64))
    return float(dets.scores[m].max()) if m.any() else 0.0


def decide(
    dets: Detections,
    labels: Sequence[str],
    reject_labels: Iterable[str],
    *,
    reject_score: float,
    frame_prob: float | None = None,
    frame_reject: float | None = None,
) -> tuple[str, list[str]]:
    """("accept" | "reject", reasons); see the module docstring."""
    bad = {labels.index(n) for n in reject_labels if n in labels}
    reasons = sorted(
        {labels[int(c)] for c, s in zip(dets.classes, dets.scores, strict=True) if c in bad and s >= reject_score}
    )
    if frame_prob is None or frame_reject is None:
        return ("reject" if reasons else "accept"), reasons
    if frame_prob >= frame_reject:
        return "reject", reasons or ["frame_score"]
    return "accept", []


def to_dicts(
    dets: Detections, labels: Sequence[str], width: float, height: float, *, min_score: float, decimals: int | None = 1
) -> list[dict[str, float | str]]:
    """Boxes scoring >= `min_score` as result dicts (x, y, w, h in frame pixels, label, score)."""

    def rnd(v: float) -> float:
        return v if decimals is None else round(v, decimals)

    out: list[dict[str, float | str]] = []
    for (x0, y0, x1, y1), s, c in zip(dets.boxes, dets.scores, dets.classes, strict=True):
        if s < min_score:
            continue
        x0, x1 = max(float(x0), 0.0) * width, min(float(x1), 1.0) * width
        y0, y1 = max(float(y0), 0.0) * height, min(float(y1), 1.0) * height
        out.append(
            {
                "x": rnd(x0),
                "y": rnd(y0),
                "w": rnd(max(x1 - x0, 0.0)),
                "h": rnd(max(y1 - y0, 0.0)),
                "label": labels[int(c)],
                "score": round(float(s), 4),
            }
        )
    return out
