"""The rice segmentation as it was before issue 11 (commit 59c9be1), kept verbatim as the reference that
`test_rice_segment.py` compares the faster `edge_runtime.tasks.rice_segment` against: same grains, same crops."""

# ruff: noqa
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Grains", "SegmentParams", "segment"]

_MAX_MAP_ROWS = 30000  # cv2.remap refuses maps with >= 32767 rows: crop in chunks below that


@dataclass(frozen=True, slots=True)
class SegmentParams:
    """How grains are found and cut; the manifest's `preprocessing` holds the values the model was trained with."""

    crop_size: int = 32
    threshold: int | None = None  # grey level separating grain from plate; None: Otsu per frame
    min_threshold: int = 40  # floor under Otsu, so an empty (all dark) frame yields no grains
    open_px: int = 3  # morphological opening kernel, removes dust and 1-px bridges
    min_area_px: int = 200  # smaller blobs are specks, not grains
    crop_margin: float = 1.15  # crop side as a multiple of the grain's length
    expected_area_px: float | None = None  # one grain's area at this scale; enables splitting of touching grains
    split_area_ratio: float = 1.6  # a blob above this x expected area may be several grains ...
    single_solidity: float = 0.94  # ... unless it is this convex (area / hull area; one grain >= 0.95, pairs < 0.95)

    @classmethod
    def from_preprocessing(cls, pre: Mapping[str, Any], **overrides: Any) -> SegmentParams:
        keys = (
            "crop_size",
            "threshold",
            "min_threshold",
            "open_px",
            "min_area_px",
            "crop_margin",
            "split_area_ratio",
            "single_solidity",
        )
        values = {k: pre[k] for k in keys if k in pre}
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Grains:
    """Every grain of one frame, as arrays (one row per grain)."""

    crops: npt.NDArray[np.uint8]  # (N, 3, S, S) BGR, long axis horizontal, background zero
    boxes: npt.NDArray[np.int32]  # (N, 4) x, y, w, h of the axis-aligned bounding box in frame pixels
    centers: npt.NDArray[np.float32]  # (N, 2) x, y of the minimum-area rectangle's centre
    length_px: npt.NDArray[np.float32]  # (N,) long side of the minimum-area rectangle
    width_px: npt.NDArray[np.float32]  # (N,) short side
    area_px: npt.NDArray[np.int32]  # (N,)
    merged: npt.NDArray[np.bool_]  # (N,) blob still too large for one grain after splitting
    threshold: float

    def __len__(self) -> int:
        return int(self.length_px.shape[0])

    @classmethod
    def empty(cls, crop_size: int, threshold: float) -> Grains:
        f = np.zeros(0, dtype=np.float32)
        return cls(
            crops=np.zeros((0, 3, crop_size, crop_size), dtype=np.uint8),
            boxes=np.zeros((0, 4), dtype=np.int32),
            centers=np.zeros((0, 2), dtype=np.float32),
            length_px=f,
            width_px=f,
            area_px=np.zeros(0, dtype=np.int32),
            merged=np.zeros(0, dtype=bool),
            threshold=threshold,
        )


def _solidity(labels: npt.NDArray[np.int32], box: npt.NDArray[np.int32], label: int) -> float:
    """Area over convex-hull area of one blob: a single grain is convex, touching grains leave notches."""
    import cv2

    x, y, w, h = (int(v) for v in box)
    blob = (labels[y : y + h, x : x + w] == label).astype(np.uint8)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    hull = float(cv2.contourArea(cv2.convexHull(contour)))
    return float(cv2.contourArea(contour)) / hull if hull > 0 else 1.0


def _split_blob(
    labels: npt.NDArray[np.int32], box: npt.NDArray[np.int32], label: int, next_id: int, expected_area: float
) -> list[int]:
    """Split one blob of touching grains at the necks of its distance transform; returns the new label ids.

    Seeds are the cores of the distance map above a fraction of its maximum; the fraction giving the seed count
    closest to area / expected area is used. Returns [] when no fraction gives two seeds (the blob stays merged).
    """
    import cv2

    x, y, w, h = (int(v) for v in box)
    roi = labels[y : y + h, x : x + w]
    blob = (roi == label).astype(np.uint8)
    dist = cv2.distanceTransform(blob, cv2.DIST_L2, 5)
    want = max(2, round(float(blob.sum()) / expected_area))
    best: tuple[int, npt.NDArray[np.int32]] | None = None
    for frac in (0.7, 0.6, 0.5, 0.4, 0.3):
        n_seeds, seeds = cv2.connectedComponents((dist >= frac * dist.max()).astype(np.uint8))
        n_seeds -= 1
        if n_seeds >= 2 and (best is None or abs(n_seeds - want) < abs(best[0] - want)):
            best = (n_seeds, seeds)
    if best is None:
        return []
    n_seeds, seeds = best
    # every blob pixel goes to the nearest seed core: a Voronoi cut through the necks between grains
    dists = np.stack([cv2.distanceTransform((seeds != k + 1).astype(np.uint8), cv2.DIST_L2, 5) for k in range(n_seeds)])
    owner = dists.argmin(axis=0)
    inside = blob.astype(bool)
    new_ids = []
    for k in range(n_seeds):
        piece = inside & (owner == k)
        if piece.any():
            roi[piece] = next_id + k
            new_ids.append(next_id + k)
    return new_ids


def segment(frame_bgr: npt.NDArray[np.uint8], params: SegmentParams) -> Grains:
    """Find the grains of one BGR frame on a dark plate and cut them into one model-ready batch."""
    import cv2

    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    if params.threshold is None:
        otsu, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        thr = max(float(otsu), float(params.min_threshold))
    else:
        thr = float(params.threshold)
    _, mask = cv2.threshold(gray, thr, 255, cv2.THRESH_BINARY)
    if params.open_px > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (params.open_px, params.open_px))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    n, cc_labels, cc_stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    labels = np.asarray(cc_labels, dtype=np.int32)
    stats = np.asarray(cc_stats, dtype=np.int32)
    area = stats[:, cv2.CC_STAT_AREA]
    ids = [int(i) for i in np.flatnonzero(area >= params.min_area_px) if i > 0]
    merged_ids: set[int] = set()
    if params.expected_area_px:
        limit = params.split_area_ratio * params.expected_area_px
        next_id = n
        # a big convex blob is one big grain (an off-type variety), not a clump: it is classified, not cut
        clumps = [
            i
            for i in ids
            if area[i] > limit and (area[i] > 2 * limit or _solidity(labels, stats[i, :4], i) < params.single_solidity)
        ]
        for label in clumps:
            new = _split_blob(labels, stats[label, :4], label, next_id, params.expected_area_px)
            next_id = max(new, default=next_id) + 1
            if not new:
                merged_ids.add(label)
                continue
            ids.remove(label)
            for piece in new:
                piece_area = int((labels == piece).sum())
                if piece_area >= params.min_area_px:
                    ids.append(piece)
                    if piece_area > limit:
                        merged_ids.add(piece)
    if not ids:
        return Grains.empty(params.crop_size, thr)
    geo = _geometry(labels, stats, np.asarray(ids, dtype=np.int64), n)
    crops = _crop(frame_bgr, labels, np.asarray(ids, dtype=np.int64), geo, params)
    return Grains(
        crops=crops,
        boxes=geo[:, 0:4].astype(np.int32),
        centers=geo[:, 5:7].astype(np.float32),
        length_px=geo[:, 7].astype(np.float32),
        width_px=geo[:, 8].astype(np.float32),
        area_px=geo[:, 4].astype(np.int32),
        merged=np.array([i in merged_ids for i in ids], dtype=bool),
        threshold=thr,
    )


def _geometry(
    labels: npt.NDArray[np.int32], stats: npt.NDArray[np.int32], ids: npt.NDArray[np.int64], n_orig: int
) -> npt.NDArray[np.float64]:
    """Per grain: bbox x, y, w, h, area, centre x, y, length, width, long-axis angle (rad), from its contour."""
    import cv2

    out = np.zeros((len(ids), 10), dtype=np.float64)
    for row, label in enumerate(ids):
        if label < n_orig:
            x, y, w, h = (int(v) for v in stats[label, :4])
        else:  # a piece of a split blob: its box lies inside its parent's, find it from the pixels
            ys, xs = np.nonzero(labels == label)
            x, y, w, h = int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1
        blob = (labels[y : y + h, x : x + w] == label).astype(np.uint8)
        contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(contours, key=cv2.contourArea)
        (cx, cy), _, _ = rect = cv2.minAreaRect(contour)
        corners = cv2.boxPoints(rect)
        edges = np.diff(np.vstack([corners, corners[:1]]), axis=0)[:2]
        lengths = np.hypot(edges[:, 0], edges[:, 1])
        long = int(np.argmax(lengths))
        angle = float(np.arctan2(edges[long, 1], edges[long, 0]))
        out[row] = (x, y, w, h, blob.sum(), cx + x, cy + y, lengths.max(), lengths.min(), angle)
    return out


def _crop(
    frame: npt.NDArray[np.uint8],
    labels: npt.NDArray[np.int32],
    ids: npt.NDArray[np.int64],
    geo: npt.NDArray[np.float64],
    params: SegmentParams,
) -> npt.NDArray[np.uint8]:
    """Rotated, masked square crops of every grain in one `cv2.remap` call per chunk of a frame's grains.

    The frame is first halved (`cv2.pyrDown`) while the median crop would shrink by more than 2x, so the bilinear
    sampling does not alias grain texture.
    """
    import cv2

    s = params.crop_size
    side = np.maximum(geo[:, 7], 2.0) * params.crop_margin
    levels = 0
    while np.median(side) / 2**levels > 2 * s:
        levels += 1
    src = frame
    for _ in range(levels):
        src = np.asarray(cv2.pyrDown(src), dtype=np.uint8)
    t = (np.arange(s, dtype=np.float64) + 0.5) / s - 0.5
    u = t[None, None, :] * side[:, None, None]  # along the long axis: columns
    v = t[None, :, None] * side[:, None, None]  # across: rows
    cos = np.cos(geo[:, 9])[:, None, None]
    sin = np.sin(geo[:, 9])[:, None, None]
    map_x = geo[:, 5, None, None] + u * cos - v * sin
    map_y = geo[:, 6, None, None] + u * sin + v * cos
    scale = 2.0**-levels
    # a grain's own label, grown by one pixel so the dim rim the threshold cut off stays in its crop
    grown = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8))
    n = len(ids)
    crops = np.empty((n, s, s, 3), dtype=np.uint8)
    owner = np.empty((n, s, s), dtype=np.float32)
    step = max(1, _MAX_MAP_ROWS // s)
    for a in range(0, n, step):
        b = min(n, a + step)
        mx = map_x[a:b].reshape(-1, s).astype(np.float32)
        my = map_y[a:b].reshape(-1, s).astype(np.float32)
        crops[a:b] = cv2.remap(
            src,
            (mx + 0.5) * scale - 0.5,
            (my + 0.5) * scale - 0.5,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        ).reshape(b - a, s, s, 3)
        owner[a:b] = cv2.remap(grown, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(
            b - a, s, s
        )
    crops *= (owner == ids[:, None, None].astype(np.float32))[..., None]
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))
