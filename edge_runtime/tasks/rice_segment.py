"""Rice grain segmentation: find the grains of a frame on a dark plate and cut them into one model-ready batch.

`segment` thresholds the frame, splits touching grains, measures each grain's length from its contour
(`cv2.minAreaRect`) and cuts every grain into one `(N, 3, S, S)` uint8 BGR batch: the crop is centred on the grain,
turned so that its long axis is horizontal, `crop_margin` x its length wide, and masked to the grain, so a
neighbour never leaks into it and the model needs no rotation invariance. The live task
(`edge_runtime.tasks.rice_sorter`), offline evaluation and training (`models/training/train_rice.py`) all cut
their crops with this one function, so the model sees identical inputs everywhere.
"""

from __future__ import annotations

import functools
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
    work_scale: int = 1  # find and measure grains at 1/work_scale of the frame's resolution (1 or 2); colour: full

    def __post_init__(self) -> None:
        if self.work_scale not in (1, 2):
            raise ValueError(f"work_scale must be 1 or 2, not {self.work_scale}")

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
            "work_scale",
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


def _outer_contour(labels: npt.NDArray[Any], label: int, x: int = 0, y: int = 0, w: int = 0, h: int = 0) -> Any:
    """One label's outer contour, traced alone inside its box (x, y, w, h; the whole label image when w is 0), in
    the label image's coordinates: for the blobs the frame's one contour pass does not give."""
    import cv2

    if w == 0:
        h, w = labels.shape[:2]
    blob = (labels[y : y + h, x : x + w] == label).view(np.uint8)
    found, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
    return max(found, key=cv2.contourArea)


def _solidity(contour: npt.NDArray[np.int32]) -> float:
    """Area over convex-hull area of one blob: a single grain is convex, touching grains leave notches."""
    import cv2

    hull = float(cv2.contourArea(cv2.convexHull(contour)))
    return float(cv2.contourArea(contour)) / hull if hull > 0 else 1.0


def _split_blob(
    labels: npt.NDArray[Any], box: npt.NDArray[np.int32], label: int, next_id: int, expected_area: float
) -> list[tuple[int, int, int, int, int, int]]:
    """Split one blob of touching grains at the necks of its distance transform; returns the pieces.

    Seeds are the cores of the distance map above a fraction of its maximum; the fraction giving the seed count
    closest to area / expected area is used. Returns [] when no fraction gives two seeds (the blob stays merged).
    Each piece is (new label, x, y, w, h, area) in frame pixels.
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
    pieces = []
    for k in range(n_seeds):
        piece = inside & (owner == k)
        if piece.any():
            roi[piece] = next_id + k
            ys, xs = np.nonzero(piece)
            x0, y0 = int(xs.min()), int(ys.min())
            pieces.append((next_id + k, x + x0, y + y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1, len(xs)))
    return pieces


def _label(mask: npt.NDArray[np.uint8]) -> tuple[int, npt.NDArray[np.uint16] | npt.NDArray[np.int32], Any]:
    """Number of labels, the label image and each label's pixel count (8-connected blobs, raster order).

    uint16 labels counted with one histogram take 0.75x the CPU of OpenCV's labelling with statistics, whose
    per-pixel bounding-box updates cost more than the labelling itself; the boxes come from the contours instead.
    Grana's block-based scan gives the same labels as the default (Spaghetti) at 40 % of its CPU time with
    statistics (OpenCV 5.0, 640x480 chute frames). A frame of more than 65,535 blobs takes int32 labels.
    """
    import cv2

    try:
        n, labels = cv2.connectedComponentsWithAlgorithm(mask, 8, cv2.CV_16U, cv2.CCL_GRANA)
    except cv2.error:  # too many blobs for uint16
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_GRANA)
        return int(n), np.asarray(labels, dtype=np.int32), np.asarray(stats[:, cv2.CC_STAT_AREA], dtype=np.int64)
    # float32 bin counts are exact up to 2**24 pixels per blob (numpy's bincount over the blob pixels alone: the
    # same CPU at work_scale 2, 1.5x at 1)
    counts = cv2.calcHist([labels], [0], None, [n], [0, n]).ravel()
    return int(n), np.asarray(labels, dtype=np.uint16), counts.astype(np.int64)


def segment(frame_bgr: npt.NDArray[np.uint8], params: SegmentParams) -> Grains:
    """Find the grains of one BGR frame on a dark plate and cut them into one model-ready batch.

    Hot path (one call per frame): one labelling pass and one outer-contour pass serve every blob;
    Python touches each grain only to fit its rectangle, and only touching grains are traced one by one.
    With `work_scale` 2 the threshold, labels, contours and rectangles work on the frame's grey image halved by
    pixel averaging (a quarter of the pixels: 0.7x the frame's CPU on 48 chute grains); the geometry is returned in
    frame pixels and the colour is still sampled from the full-resolution frame.
    """
    import cv2

    k = params.work_scale
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    if k > 1:
        h, w = gray.shape[0] // k, gray.shape[1] // k
        if h == 0 or w == 0:  # thinner than one working pixel: nothing to find, and cv2.resize would refuse it
            return Grains.empty(
                params.crop_size, float(params.min_threshold if params.threshold is None else params.threshold)
            )
        # the exact k x k mean (an odd frame gives up its last row or column): resizing 641 to 320 px would weigh
        # fractional areas and move every working pixel off the k*i .. k*i + k-1 the geometry is mapped back with
        gray = cv2.resize(gray[: h * k, : w * k], (w, h), interpolation=cv2.INTER_AREA)
    if params.threshold is None:
        otsu, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        thr = max(float(otsu), float(params.min_threshold))
        if thr != otsu:
            _, mask = cv2.threshold(gray, thr, 255, cv2.THRESH_BINARY)
    else:
        thr = float(params.threshold)
        _, mask = cv2.threshold(gray, thr, 255, cv2.THRESH_BINARY)
    # at half resolution the averaging already dims 1-px dust and bridges; a 3-px opening there would be 6 px
    open_px = params.open_px // k
    if open_px > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_px, open_px))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    n, labels, area = _label(np.asarray(mask, dtype=np.uint8))
    # areas, and the limits they meet, in working pixels; the result reports frame pixels
    px = k * k
    keep = area * px >= params.min_area_px
    keep[0] = False
    ids: list[int] = np.flatnonzero(keep).tolist()
    if not ids:
        return Grains.empty(params.crop_size, thr)
    # every blob's outer contour in one pass, before splitting relabels anything; a blob's label is the label of
    # its contour's first point (blobs are 8-connected components, so each has exactly one outer contour). Straight
    # runs are compressed to their ends: the hull, the area and the first point are unchanged, and `minAreaRect`
    # takes half the time on half the points
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # every contour's points in one array: first points and boxes for all blobs in a few numpy calls
    counts = np.fromiter(map(len, contours), dtype=np.int64, count=len(contours))
    starts = np.cumsum(counts) - counts
    points = np.concatenate(contours).reshape(-1, 2)
    contour_label = labels[points[starts, 1], points[starts, 0]].astype(np.int64)
    contour_of: dict[int, Any] = dict(zip(contour_label.tolist(), contours, strict=True))
    # x, y, w, h, area per label; a blob's box is its outer contour's (the extreme pixels lie on that contour),
    # as `cv2.boundingRect` gives it: the extremes, sides counted in pixels
    low = np.minimum.reduceat(points, starts, axis=0)
    high = np.maximum.reduceat(points, starts, axis=0)
    stats = np.zeros((n, 5), dtype=np.int32)
    stats[:, 4] = area
    boxed = keep[contour_label]
    stats[contour_label[boxed], :2] = low[boxed]
    stats[contour_label[boxed], 2:4] = high[boxed] - low[boxed] + 1
    # a blob lying in another's hole (a grain inside a curled straw) has no outer contour in that pass: traced alone
    traced = np.zeros(n, dtype=bool)
    traced[contour_label] = True
    for label in np.flatnonzero(keep & ~traced).tolist():
        contour_of[label] = _outer_contour(labels, label)
        stats[label, :4] = cv2.boundingRect(contour_of[label])
    merged_ids: set[int] = set()
    next_label = n
    pieces: dict[int, tuple[int, int, int, int, int]] = {}
    if params.expected_area_px:
        expected = params.expected_area_px / px
        limit = params.split_area_ratio * expected
        next_id = n
        # a big convex blob is one big grain (an off-type variety), not a clump: it is classified, not cut
        large = np.flatnonzero(keep & (area > limit)).tolist()  # the few blobs worth a look, in label order
        clumps = [i for i in large if area[i] > 2 * limit or _solidity(contour_of[i]) < params.single_solidity]
        if labels.dtype == np.uint16 and n + int(area[clumps].sum()) > 2**16 - 1:
            labels = labels.astype(np.int32)  # room for every piece's new label (a piece has at least one pixel)
        for label in clumps:
            new = _split_blob(labels, stats[label, :4], label, next_id, expected)
            next_id = max((p[0] for p in new), default=next_id) + 1
            next_label = next_id
            if not new:
                merged_ids.add(label)
                continue
            ids.remove(label)
            for piece, *box_area in new:
                if box_area[4] * px >= params.min_area_px:
                    ids.append(piece)
                    pieces[piece] = (box_area[0], box_area[1], box_area[2], box_area[3], box_area[4])
                    if box_area[4] > limit:
                        merged_ids.add(piece)
    if not ids:
        return Grains.empty(params.crop_size, thr)
    id_array = np.asarray(ids, dtype=np.int64)
    geo = _geometry(labels, stats, id_array, n, contour_of, pieces)
    if k > 1:
        # working pixel i covers frame pixels k*i .. k*i + k-1: centres map to k*c + (k-1)/2, and a length between
        # pixel centres gains the (k-1) frame pixels between the outermost working centres and the outermost pixels
        geo[:, 0:4] *= k
        geo[:, 4] *= px
        geo[:, 5:7] = geo[:, 5:7] * k + (k - 1) / 2
        geo[:, 7:9] = geo[:, 7:9] * k + (k - 1)
    crops = _crop(frame_bgr, labels, id_array, geo, params, max(n, next_label), n)
    return Grains(
        crops=crops,
        boxes=geo[:, 0:4].astype(np.int32),
        centers=geo[:, 5:7].astype(np.float32),
        length_px=geo[:, 7].astype(np.float32),
        width_px=geo[:, 8].astype(np.float32),
        area_px=geo[:, 4].astype(np.int32),
        merged=np.isin(id_array, list(merged_ids)) if merged_ids else np.zeros(len(ids), dtype=bool),
        threshold=thr,
    )


def _geometry(
    labels: npt.NDArray[Any],
    stats: npt.NDArray[np.int32],
    ids: npt.NDArray[np.int64],
    n_orig: int,
    contour_of: Mapping[int, Any],
    pieces: Mapping[int, tuple[int, int, int, int, int]],
) -> npt.NDArray[np.float64]:
    """Per grain: bbox x, y, w, h, area, centre x, y, length, width, long-axis angle (rad), from its contour.

    A blob found by the labelling takes its box and area from the stats and its contour from the frame's one
    `findContours` pass; only the pieces of a split blob are traced one by one, inside their own box. The long
    axis follows `cv2.boxPoints`' corner order (edge 0 = corner 1 - corner 0), vectorised: edge 0 is
    h x (sin a, -cos a), edge 1 is w x (cos a, sin a), and of two equal sides edge 0 counts as the long one.
    """
    import cv2

    out = np.zeros((len(ids), 10), dtype=np.float64)
    original = ids < n_orig
    out[original, :5] = stats[ids[original], :5]
    # the frame's contours by label; a split piece's label (n_orig and up) has none: traced below
    contours: list[Any] = list(map(contour_of.get, ids.tolist()))
    for row in np.flatnonzero(~original).tolist():
        label = int(ids[row])
        x, y, w, h, area = pieces[label]
        out[row, :5] = (x, y, w, h, area)
        contours[row] = _outer_contour(labels, label, x, y, w, h)
    # cx, cy, w, h, angle (deg) of each minimum-area rectangle, gathered into one array at the end
    rects = np.array(
        [(cx, cy, w, h, angle) for (cx, cy), (w, h), angle in map(cv2.minAreaRect, contours)], dtype=np.float64
    ).reshape(-1, 5)
    a = np.deg2rad(rects[:, 4])
    width, height = rects[:, 2], rects[:, 3]
    out[:, 5:7] = rects[:, 0:2]
    out[:, 7] = np.maximum(width, height)
    out[:, 8] = np.minimum(width, height)
    out[:, 9] = np.where(height >= width, np.arctan2(-np.cos(a), np.sin(a)), np.arctan2(np.sin(a), np.cos(a)))
    return out


@functools.cache
def _centres(s: int) -> npt.NDArray[np.float32]:
    """Pixel centres of an s-pixel crop side on the unit interval centred at 0 (cached, shared: read-only)."""
    t = ((np.arange(s, dtype=np.float32) + 0.5) / s - 0.5).astype(np.float32)
    t.setflags(write=False)
    return t


def _row_maps(
    rows: npt.NDArray[np.float32], grain: npt.NDArray[np.int64], row: npt.NDArray[np.int64], s: int
) -> npt.NDArray[np.float32]:
    """x and y sampling maps (2, rows, s) of the given crop rows, from each grain's (2, 3) affine matrix.

    A crop row's map is the matrix applied to the pixel centres u (across the row) at one v: an outer product
    plus a constant per row, built for the sampled rows only. The sums are done in the order a matrix product
    over (u, v, 1) takes them, so the maps are bit for bit those of the full (rows x grid) product, at half
    the CPU of that product and its row selection.
    """
    t = _centres(s)
    # the u term is one row per grain, gathered for each of its crop rows (`np.take`: half the CPU of indexing)
    maps: npt.NDArray[np.float32] = np.take(rows[:, :, 0, None] * t, grain, axis=1)
    v_term = np.take(rows[:, :, 1], grain, axis=1)
    v_term *= t[row]
    maps += v_term[:, :, None]
    maps += np.take(rows[:, :, 2], grain, axis=1)[:, :, None]
    return maps


def _crop(
    frame: npt.NDArray[np.uint8],
    labels: npt.NDArray[Any],
    ids: npt.NDArray[np.int64],
    geo: npt.NDArray[np.float64],
    params: SegmentParams,
    n_labels: int,
    n_orig: int,
) -> npt.NDArray[np.uint8]:
    """Rotated, masked square crops of every grain in one `cv2.remap` call per chunk of a frame's crop rows.

    The frame is first halved (`cv2.pyrDown`) while the median crop would shrink by more than 2x, so the bilinear
    sampling does not alias grain texture. The colour is sampled from a BGRA copy: OpenCV's bilinear remap has a
    vectorised path for four channels, which costs 0.6x of the three-channel one on 48 chute grains (same values).
    Only the rows a grain can reach are sampled (`_band_rows`: 0.94x the CPU of the whole rice task on chute
    frames), and only their maps are built (`_row_maps`); the label image's maps, at another scale, are those
    maps rescaled.
    """
    import cv2

    s = params.crop_size
    side = np.maximum(geo[:, 7], 2.0) * params.crop_margin
    # only the crop rows that can hold the grain are sampled (30-50 % of them on chute frames); every
    # other row is masked out whatever it samples, so it stays zero without being read
    grain, row = _band_rows(geo, ids, n_orig, side, s, params.work_scale)
    total = len(grain)
    out = np.zeros((len(ids), 3, s, s), dtype=np.uint8)
    if total == 0:  # every object too thin to reach the middle of a crop row (a straw, a thread): blank crops
        return out
    # the median as np.median takes it (the mean of the two middle values), at a tenth of its cost on 50 values
    ordered = np.sort(side)
    median = 0.5 * (ordered[(len(side) - 1) // 2] + ordered[len(side) // 2])
    levels = 0
    while median / 2**levels > 2 * s:
        levels += 1
    src = frame
    for _ in range(levels):
        src = np.asarray(cv2.pyrDown(src), dtype=np.uint8)
    src = np.asarray(cv2.cvtColor(src, cv2.COLOR_BGR2BGRA), dtype=np.uint8)
    n = len(ids)
    # frame x = cx + u * side * cos - v * side * sin, y = cy + u * side * sin + v * side * cos; an image at 1/f of
    # the frame's resolution samples at (frame + 0.5) / f - 0.5
    f_colour, f_label = 2**levels, params.work_scale
    cos, sin = np.cos(geo[:, 9]) * side, np.sin(geo[:, 9]) * side
    rows = np.empty((2, n, 3))  # every grain's x row, then every grain's y row, in frame pixels
    rows[0, :, 0], rows[0, :, 1], rows[0, :, 2] = cos, -sin, geo[:, 5]
    rows[1, :, 0], rows[1, :, 1], rows[1, :, 2] = sin, cos, geo[:, 6]
    if f_colour > 1:
        rows /= f_colour
        rows[:, :, 2] += 0.5 / f_colour - 0.5
    colour = _row_maps(rows.astype(np.float32), grain, row, s)
    # a grain's own label, grown by one working pixel so the dim rim the threshold cut off stays in its crop; the
    # narrowest type that holds every label (uint16 dilates in half the time of float32, uint8 samples faster
    # still), float32 still holds any label a frame up to 8192x8192 can have
    label_type = np.uint8 if n_labels <= 2**8 else np.uint16 if n_labels <= 2**16 else np.float32
    grown = cv2.dilate(labels.astype(label_type, copy=False), np.ones((3, 3), np.uint8))
    label = colour
    if f_label != f_colour:  # the label image's maps are the colour maps moved to its scale
        ratio = f_colour / f_label
        label = colour * np.float32(ratio)
        label += np.float32(0.5 * ratio - 0.5)
    colour_x, colour_y = colour
    label_x, label_y = label
    crops = np.empty((total, s, 4), dtype=np.uint8)
    owner = np.empty((total, s), dtype=label_type)
    for a in range(0, total, _MAX_MAP_ROWS):
        b = min(total, a + _MAX_MAP_ROWS)
        crops[a:b] = cv2.remap(
            src, colour_x[a:b], colour_y[a:b], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
        )
        owner[a:b] = cv2.remap(
            grown, label_x[a:b], label_y[a:b], cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
    mine = (owner == ids[grain, None].astype(label_type)).view(np.uint8)
    masked = cv2.copyTo(crops, mine, np.zeros((total, s, 4), dtype=np.uint8))
    planes = cv2.split(masked)
    # each sampled row goes to its place in every colour plane of (N, 3, S, S); rows seen as single s-byte items,
    # so one `np.put` per colour moves them (half the CPU of assigning to indexed rows)
    row_item = np.dtype((np.void, s))
    by_row = out.reshape(n * 3 * s, s).view(row_item).ravel()
    dest = grain * (3 * s) + row  # the row's place in the first colour plane
    for c in range(3):
        np.put(by_row, dest + c * s, planes[c].view(row_item).ravel())
    return out


def _band_rows(
    geo: npt.NDArray[np.float64],
    ids: npt.NDArray[np.int64],
    n_orig: int,
    side: npt.NDArray[np.float64],
    s: int,
    work_scale: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(grain, crop row) of every crop row that may hold a pixel of its grain.

    A grain's pixels lie inside its minimum-area rectangle, which the crop is centred on and turned with; its own
    label reaches one working pixel further (the dilation) and is sampled nearest, half a pixel more. Rows farther
    from the long axis than half the rectangle's width plus that reach are masked out entirely. The pieces of a split
    blob may have parts outside the contour their rectangle was fitted to, so they keep every row.
    """
    reach = 3.0 * work_scale  # frame px: dilation (sqrt 2 working px) + nearest sampling (sqrt 2 / 2) + rounding
    half_rows = (geo[:, 8] / 2 + reach) * s / side
    half_rows[ids >= n_orig] = s
    first = np.clip(np.ceil(s / 2 - 0.5 - half_rows), 0, s).astype(np.int64)
    end = np.clip(np.floor(s / 2 - 0.5 + half_rows) + 1, 0, s).astype(np.int64)
    count = np.maximum(end - first, 0)
    grain = np.repeat(np.arange(len(ids), dtype=np.int64), count)
    start = np.cumsum(count) - count
    row = np.arange(len(grain), dtype=np.int64) - np.repeat(start - first, count)
    return grain, row
