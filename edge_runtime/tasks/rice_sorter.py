"""Rice purity sorter: eject off-type and broken grains of a declared variety on a chute (model `rice_sorter`).

A frame shows grains on a dark plate. `segment` thresholds it, splits touching grains, measures each grain's
length from its contour (`cv2.minAreaRect`) and cuts every grain into one `(N, 3, S, S)` uint8 BGR batch: the
crop is centred on the grain, turned so that its long axis is horizontal, `crop_margin` x its length wide, and
masked to the grain, so a neighbour never leaks into it and the model needs no rotation invariance. Training
(`models/training/train_rice.py`) cuts its crops of the data set images with this very function, so training,
`evaluate` and the live line feed the model identical inputs. The model takes the uint8 batch as `x` (conversion
and normalisation live inside the graph) and returns the variety softmax `probs`.

A grain is ejected when the declared variety's probability is below `min_confidence` (off-type or doubtful), when
it is shorter than `broken_length_ratio` x the declared variety's median length (broken), or when it is part of a
blob that could not be split into single grains. The ejector channel of a grain is `floor(cx / width * channels)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from adapters.base import EdgeRuntimeError, Frame, Stats, StrictModel
from edge_runtime.inference import ModelRunner
from edge_runtime.tasks.base import InvalidInputs, per_class_metrics

__all__ = [
    "VARIETIES",
    "DataSetError",
    "Grains",
    "RiceSorterConfig",
    "RiceSorterTask",
    "SegmentParams",
    "evaluate",
    "read_class_folders",
    "segment",
]

log = logging.getLogger("edge_runtime.tasks.rice_sorter")

MODEL_NAME = "rice_sorter"
VARIETIES = ("Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag")
_MAX_MAP_ROWS = 30000  # cv2.remap refuses maps with >= 32767 rows: crop in chunks below that


class DataSetError(EdgeRuntimeError):
    """A class-folder directory is empty or names a variety the model does not know."""


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


class RiceSorterConfig(StrictModel):
    """The pipeline's `task:` for a rice chute camera."""

    kind: Literal["rice_sorter"] = Field(description="Task kind.")
    declared_variety: str = Field(description="Variety of the lot on the line; every other variety is ejected.")
    ejector_channels: int = Field(
        default=8, ge=1, description="Air-jet channels across the chute width; channel = floor(cx / width * n)."
    )
    min_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Keep a grain only when the declared variety's probability reaches this; raising it trades "
        "yield for purity. null uses the manifest's `thresholds.min_confidence`.",
    )
    broken_length_ratio: float = Field(
        default=0.7,
        gt=0.0,
        le=1.0,
        description="A grain shorter than this x the declared variety's median length is broken and ejected.",
    )
    scale_px_per_dataset_px: float = Field(
        default=1.0,
        gt=0.0,
        description="Camera pixels per pixel of the training photographs; scales the manifest's median grain "
        "length and area to this camera.",
    )
    threshold: int | None = Field(
        default=None,
        ge=1,
        le=254,
        description="Fixed grey level separating grains from the plate; null picks one per frame (Otsu, floored).",
    )
    min_area_px: int | None = Field(
        default=None, ge=1, description="Blobs smaller than this (camera px) are specks; null scales the manifest's."
    )
    split_area_ratio: float = Field(
        default=1.6,
        gt=1.0,
        description="A blob larger than this x the declared median area is split as touching grains.",
    )
    eject_merged: bool = Field(
        default=True, description="Eject blobs of touching grains that could not be split (they cannot be judged)."
    )


class RiceSorterTask:
    """Classifies every grain of a batch of frames in one model call and decides which ejector channels fire."""

    def __init__(self, config: RiceSorterConfig, runner: ModelRunner) -> None:
        manifest = runner.manifest
        self.name = MODEL_NAME
        self.config = config
        self.runner = runner
        self.stats = Stats()
        self.labels = list(manifest.labels)
        if config.declared_variety not in self.labels:
            raise EdgeRuntimeError(
                f"model {runner.ident}: declared_variety '{config.declared_variety}' is not one of {self.labels}"
            )
        self.declared = self.labels.index(config.declared_variety)
        pre = manifest.preprocessing
        scale = config.scale_px_per_dataset_px
        self.median_length_px = float(pre["median_length_px"][config.declared_variety]) * scale
        median_area = float(pre["median_area_px"][config.declared_variety]) * scale * scale
        overrides: dict[str, Any] = {"expected_area_px": median_area, "split_area_ratio": config.split_area_ratio}
        overrides["threshold"] = config.threshold
        overrides["min_area_px"] = (
            config.min_area_px if config.min_area_px is not None else max(1, round(pre["min_area_px"] * scale**2))
        )
        self.params = SegmentParams.from_preprocessing(pre, **overrides)
        if config.min_confidence is not None:
            self.min_confidence = config.min_confidence
        else:
            self.min_confidence = float(manifest.thresholds.get("min_confidence", 0.5))
        self.input_name = manifest.inputs[0].name
        self._invalid = InvalidInputs(self.stats, "invalid_frames", runner.ident)

    def classify(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Variety probabilities (N, n_labels) for a crop batch; an empty batch does not call the model."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        probs: npt.NDArray[np.float32] = self.runner.run({self.input_name: crops})["probs"]
        return probs

    def decide(
        self, grains: Grains, probs: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Per grain: off-type, broken, eject."""
        off_type = probs[:, self.declared] < self.min_confidence
        broken = grains.length_px < self.config.broken_length_ratio * self.median_length_px
        eject = off_type | broken
        if self.config.eject_merged:
            eject |= grains.merged
        return off_type, broken, eject

    def process(self, items: Sequence[Frame]) -> list[dict[str, Any]]:
        """One result dict per frame, in order; an unreadable frame gives `decision: invalid`, never an error."""
        if not items:
            return []
        found: list[Grains | None] = []
        n_bad = 0
        for frame in items:
            img = frame.image
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.size == 0:
                found.append(None)
                n_bad += 1
                continue
            found.append(segment(img, self.params))
        self._invalid.record(n_bad, len(items))
        crops = [g.crops for g in found if g is not None and len(g)]
        s = self.params.crop_size
        probs = self.classify(np.concatenate(crops) if crops else np.zeros((0, 3, s, s), dtype=np.uint8))
        results: list[dict[str, Any]] = []
        start = 0
        for frame, grains in zip(items, found, strict=True):
            if grains is None:
                results.append({"stream": frame.stream, "n_grains": 0, "grains": [], "eject_channels": [],
                                "decision": "invalid", "counts": {}})  # fmt: skip
                continue
            p = probs[start : start + len(grains)]
            start += len(grains)
            results.append(self._frame_result(frame, grains, p))
        return results

    def _frame_result(self, frame: Frame, grains: Grains, probs: npt.NDArray[np.float32]) -> dict[str, Any]:
        width = frame.image.shape[1]
        n_ch = self.config.ejector_channels
        channel = np.clip((grains.centers[:, 0] / width * n_ch).astype(np.int64), 0, n_ch - 1)
        top = probs.argmax(axis=1)
        _, broken, eject = self.decide(grains, probs)
        counts = np.bincount(top, minlength=len(self.labels))
        rows = [
            {
                "x": int(b[0]),
                "y": int(b[1]),
                "w": int(b[2]),
                "h": int(b[3]),
                "variety": self.labels[t],
                "score": round(float(probs[i, t]), 4),
                "declared_score": round(float(probs[i, self.declared]), 4),
                "length_px": round(float(grains.length_px[i]), 1),
                "broken": bool(broken[i]),
                "merged": bool(grains.merged[i]),
                "eject": bool(eject[i]),
                "channel": int(channel[i]),
            }
            for i, (b, t) in enumerate(zip(grains.boxes, top, strict=True))
        ]
        return {
            "stream": frame.stream,
            "n_grains": len(grains),
            "grains": rows,
            "eject_channels": sorted({int(c) for c in channel[eject]}),
            "decision": "eject" if bool(eject.any()) else "keep",
            "counts": {lab: int(c) for lab, c in zip(self.labels, counts, strict=True)},
            "n_broken": int(broken.sum()),
            "n_merged": int(grains.merged.sum()),
        }


def read_class_folders(data_dir: Path, labels: Sequence[str]) -> list[tuple[Path, int]]:
    """(image, class index) of a `<variety>/*.jpg|png` directory; a folder naming an unknown variety is an error."""
    data_dir = Path(data_dir)
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
    unknown = [p.name for p in folders if p.name not in labels]
    if unknown:
        raise DataSetError(f"{data_dir}: folders {unknown} are not among the model's varieties {list(labels)}")
    items = [
        (f, labels.index(p.name))
        for p in folders
        for f in sorted(p.iterdir())
        if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"}
    ]
    if not items:
        raise DataSetError(f"{data_dir}: no images in <variety>/ folders")
    return items


def evaluate(
    data_dir: Path,
    *,
    variant: str = "fp32",
    declared: str | None = None,
    degrade: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
    model_dir: Path | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Variety accuracy of the shipped model on a class-folder directory of single-grain photographs.

    Each photograph goes through `segment` like a live frame (optionally after `degrade`, e.g. a cold-weather
    model) and its largest grain is classified; a photograph where no grain is found counts as wrong
    (`n_unsegmented`). With `declared`, the purity sorter's view: off-type grains are the positives and a grain is
    ejected by the task's off-type rule (declared probability below `min_confidence`); `eject_precision` and
    `eject_recall` follow. Broken-grain ejection is not part of them, as the photographs are labelled by variety,
    not by breakage: `n_broken_declared` counts declared-variety grains the length rule would also eject.
    A ratio without a denominator (a variety absent from the directory) is None, so the result stays valid JSON.
    """
    import cv2

    from edge_runtime.inference import load_model

    runner = load_model(model_dir if model_dir is not None else MODEL_NAME, variant=variant)
    labels = list(runner.manifest.labels)
    task = RiceSorterTask(
        RiceSorterConfig(kind="rice_sorter", declared_variety=declared or labels[0]),
        runner,
    )
    items = read_class_folders(Path(data_dir), labels)
    s = task.params.crop_size
    truth = np.array([k for _, k in items], dtype=np.int64)
    pred = np.full(len(items), -1, dtype=np.int64)
    p_declared = np.zeros(len(items), dtype=np.float32)
    broken = np.zeros(len(items), dtype=bool)
    params = SegmentParams.from_preprocessing(runner.manifest.preprocessing)  # one grain each: no splitting
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        crops = np.zeros((len(chunk), 3, s, s), dtype=np.uint8)
        lengths = np.zeros(len(chunk), dtype=np.float32)
        found = np.zeros(len(chunk), dtype=bool)
        for j, (path, _) in enumerate(chunk):
            raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if raw is None:
                log.warning("event=unreadable_image file=%s", path)
                continue
            img = np.asarray(raw, dtype=np.uint8)
            grains = segment(img if degrade is None else degrade(img), params)
            if len(grains):
                i = int(np.argmax(grains.area_px))
                crops[j], lengths[j], found[j] = grains.crops[i], grains.length_px[i], True
        probs = task.classify(crops[found])
        idx = np.flatnonzero(found) + start
        pred[idx] = probs.argmax(axis=1)
        p_declared[idx] = probs[:, task.declared]
        broken[idx] = lengths[found] < task.config.broken_length_ratio * task.median_length_px
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    ok = pred >= 0
    np.add.at(matrix, (truth[ok], pred[ok]), 1)
    n = len(items)
    result: dict[str, Any] = {
        "model": runner.ident,
        "n": n,
        "n_unsegmented": int((~ok).sum()),
        "accuracy": float((pred == truth).mean()),
        "per_class": per_class_metrics(labels, matrix),
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
    }
    if declared is not None:
        off_type = truth != task.declared
        ejected = ~ok | (p_declared < task.min_confidence)  # an unseen grain is not let through
        tp = int((off_type & ejected).sum())
        result.update(
            {
                "declared": declared,
                "min_confidence": task.min_confidence,
                "eject_precision": tp / int(ejected.sum()) if ejected.any() else None,
                "eject_recall": tp / int(off_type.sum()) if off_type.any() else None,
                "n_off_type": int(off_type.sum()),
                "n_ejected": int(ejected.sum()),
                "n_broken_declared": int((broken & ok & ~off_type).sum()),
            }
        )
    return result
