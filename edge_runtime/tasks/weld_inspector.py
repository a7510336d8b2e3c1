"""Weld inspection: find weld regions in a camera frame, classify them, reject the part when one is bad.

The model (`models/weld_inspector`) scores every cell of a 32x32 grid over the frame with
[background, bad_weld, good_weld, defect] probabilities. Post-processing here turns cells into regions:

- a cell is *foreground* when ``1 - p(background) >= foreground``; its class is the best of the three weld
  classes;
- each 8-connected group of foreground cells of one class is a region; its box is the group's cell extent in
  frame pixels, its score the mean probability of its class over its cells; regions smaller than
  ``min_region_cells`` or scoring below ``box_score`` are dropped;
- a frame is rejected when any `bad_weld` or `defect` region scores ``>= reject_score``; a model with a frame
  head (a second output `reject`: the probability that the part is to be rejected, trained on that decision
  directly) decides instead by ``reject >= frame_reject`` when the manifest (or config) sets that threshold,
  and the regions only give the reasons. A frame that
  cannot be inspected (wrong shape or dtype) is rejected too: on a reject line, not knowing is not a pass.

`evaluate` scores a YOLO-layout directory. The model's *call for a ground-truth box* is read from the cells the
box covers (cells whose centre lies inside it, or the cell holding its centre for a box smaller than a cell):
when their mean foreground probability is below ``region_min_score`` the box is *missed* (counted wrong),
otherwise the call is the weld class with the highest mean probability over those cells.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import Field

from adapters.base import EdgeRuntimeError, Frame, Stats, StrictModel
from edge_runtime.inference import ModelRunner, load_model
from edge_runtime.tasks import detection_metrics, weld_decode
from edge_runtime.tasks.base import InvalidInputs

__all__ = ["WeldDataError", "WeldInspectorConfig", "WeldInspectorTask", "evaluate", "read_yolo_labels"]

log = logging.getLogger("edge_runtime.tasks.weld_inspector")

REJECT_LABELS = frozenset({"bad_weld", "defect"})
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

F32 = npt.NDArray[np.float32]


class WeldDataError(EdgeRuntimeError):
    """An evaluation directory is not in YOLO layout or names classes the model does not know."""


class WeldInspectorConfig(StrictModel):
    """Options of the `weld_inspector` task; a threshold left unset takes the model manifest's value."""

    kind: Literal["weld_inspector"] = Field(description="Task kind.")
    foreground: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Minimum 1 - p(background) for a cell to belong to a region."
    )
    box_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Minimum mean class probability of a region to report it."
    )
    reject_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="A bad_weld or defect region scoring at least this rejects."
    )
    min_region_cells: int | None = Field(
        default=None, ge=1, description="Smallest region, in grid cells (one cell = 1/32 of the frame side)."
    )
    region_min_score: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Evaluation only: mean foreground over a labelled box below which the box counts as missed.",
    )
    frame_reject: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Models with a frame head: reject the frame when its reject probability is at least this.",
    )
    nms_iou: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Box detectors (2.x): per-class NMS IoU threshold."
    )


class WeldInspectorTask:
    """Frames in, per-frame boxes and an accept/reject decision out; one batched inference per call."""

    name = "weld_inspector"

    def __init__(self, config: WeldInspectorConfig, runner: ModelRunner) -> None:
        manifest = runner.manifest
        th = manifest.thresholds

        def pick(value: float | None, key: str) -> float:
            if value is not None:
                return float(value)
            if key not in th:
                raise EdgeRuntimeError(f"weld_inspector: manifest of {runner.ident} has no threshold '{key}'")
            return float(th[key])

        self.config = config
        self.runner = runner
        self.stats = Stats()
        self.labels: list[str] = list(manifest.labels)
        # a box detector (2.x) has a `boxes` output; its post-processing is edge_runtime.tasks.weld_decode
        self.detector = any(o.name == "boxes" for o in manifest.outputs)
        self.box_score = pick(config.box_score, "box_score")
        self.reject_score = pick(config.reject_score, "reject_score")
        if self.detector:
            self.nms_iou = pick(config.nms_iou, "nms_iou")
            self.ap_min_score = float(th.get("ap_min_score", 0.05))
        else:
            self.foreground = pick(config.foreground, "foreground")
            self.min_region_cells = round(pick(config.min_region_cells, "min_region_cells"))
            self.region_min_score = pick(config.region_min_score, "region_min_score")
        spec = manifest.inputs[0]
        self.input_name = spec.name
        self.scores_name = manifest.outputs[0].name
        # the optional frame head: an output named `reject`, shape (batch,)
        self.frame_name = next((o.name for o in manifest.outputs if o.name == "reject"), None)
        # a manifest without `frame_reject` ships the head unused (it did not beat the region rule when tuned)
        use_head = self.frame_name is not None and (config.frame_reject is not None or "frame_reject" in th)
        self.frame_reject = pick(config.frame_reject, "frame_reject") if use_head else None
        self.size = int(manifest.preprocessing.get("input_size", spec.shape[1]))
        self._invalid = InvalidInputs(self.stats, "invalid_frames", runner.ident)

    # ------------------------------------------------------------------ inference

    def _valid(self, image: Any) -> bool:
        return (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.shape[0] >= 8
            and image.shape[1] >= 8
        )

    def infer(self, images: Sequence[npt.NDArray[np.uint8]]) -> tuple[F32, F32 | None]:
        """Per-cell probabilities (n, 4, G, G) and, with a frame head, frame reject probabilities (n,) for valid
        BGR images, resized in one preallocated batch."""
        import cv2

        batch = np.empty((len(images), self.size, self.size, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            cv2.resize(img, (self.size, self.size), dst=batch[i], interpolation=cv2.INTER_LINEAR)
        out = self.runner.run({self.input_name: batch})
        frame = None if self.frame_name is None else np.asarray(out[self.frame_name], dtype=np.float32).reshape(-1)
        return np.asarray(out[self.scores_name], dtype=np.float32), frame

    def detect(
        self, images: Sequence[npt.NDArray[np.uint8]], score_threshold: float | None = None
    ) -> tuple[list[weld_decode.Detections], F32 | None]:
        """Box detectors: per-frame NMS detections (normalised xyxy) and frame reject probabilities."""
        import cv2

        batch = np.empty((len(images), self.size, self.size, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            cv2.resize(img, (self.size, self.size), dst=batch[i], interpolation=cv2.INTER_LINEAR)
        out = self.runner.run({self.input_name: batch})
        thr = self.box_score if score_threshold is None else score_threshold
        dets = [
            weld_decode.decode(s, b, score_threshold=thr, iou_threshold=self.nms_iou)
            for s, b in zip(out["scores"], out["boxes"], strict=True)
        ]
        frame = None if self.frame_name is None else np.asarray(out[self.frame_name], dtype=np.float32).reshape(-1)
        return dets, frame

    def scores(self, images: Sequence[npt.NDArray[np.uint8]]) -> F32:
        """Per-cell probabilities (n, 4, G, G) only."""
        return self.infer(images)[0]

    def regions(self, probs: F32, width: float, height: float, *, decimals: int | None = 1) -> list[dict[str, Any]]:
        """Connected same-class foreground cells of one frame's (4, G, G) map, as boxes in frame pixels
        (rounded to `decimals`; `None` keeps full precision, as evaluation in normalised units needs)."""
        import cv2

        def rnd(v: float) -> float:
            return v if decimals is None else round(v, decimals)

        grid_h, grid_w = probs.shape[1:]
        fg = 1.0 - probs[0]
        cls = np.argmax(probs[1:], axis=0)
        sx, sy = width / grid_w, height / grid_h
        boxes: list[dict[str, Any]] = []
        for c, label in enumerate(self.labels):
            mask = ((fg >= self.foreground) & (cls == c)).astype(np.uint8)
            if not mask.any():
                continue
            n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            mean = np.bincount(comp.ravel(), weights=probs[c + 1].ravel(), minlength=n) / np.maximum(
                stats[:, cv2.CC_STAT_AREA], 1
            )
            for k in range(1, n):
                x, y, w, h, area = (int(v) for v in stats[k])
                if area < self.min_region_cells or mean[k] < self.box_score:
                    continue
                boxes.append(
                    {
                        "x": rnd(x * sx),
                        "y": rnd(y * sy),
                        "w": rnd(w * sx),
                        "h": rnd(h * sy),
                        "label": label,
                        "score": round(float(mean[k]), 4),
                    }
                )
        boxes.sort(key=lambda b: -b["score"])
        return boxes

    def decide(self, boxes: list[dict[str, Any]], frame_score: float | None = None) -> tuple[str, list[str]]:
        """Decision and reasons. Without a frame score (no frame head): reject on any bad region. With one, the
        frame head decides; the reasons are the bad regions found, or `frame_score` when it found none."""
        reasons = sorted({b["label"] for b in boxes if b["label"] in REJECT_LABELS and b["score"] >= self.reject_score})
        if frame_score is None or self.frame_reject is None:
            return ("reject" if reasons else "accept"), reasons
        if frame_score >= self.frame_reject:
            return "reject", reasons or ["frame_score"]
        return "accept", []

    def process(self, frames: Sequence[Frame]) -> list[dict[str, Any]]:
        """One result dict per frame, in order: `stream`, `boxes`, `decision`, `reject_reasons`."""
        ok = [i for i, f in enumerate(frames) if self._valid(f.image)]
        results: list[dict[str, Any]] = [
            {"stream": f.stream, "boxes": [], "decision": "reject", "reject_reasons": ["invalid_frame"]} for f in frames
        ]
        detail = ""
        if len(ok) < len(frames):
            bad = next(f for i, f in enumerate(frames) if i not in set(ok))
            shape, dtype = getattr(bad.image, "shape", None), getattr(bad.image, "dtype", None)
            detail = f" stream={bad.stream} shape={shape} dtype={dtype}"
        self._invalid.record(len(frames) - len(ok), len(frames), detail)
        if not ok:
            return results
        if self.detector:
            dets, fprob = self.detect([frames[i].image for i in ok])
            for j, i in enumerate(ok):
                h, w = frames[i].image.shape[:2]
                fp = None if fprob is None else float(fprob[j])
                decision, reasons = weld_decode.decide(
                    dets[j],
                    self.labels,
                    REJECT_LABELS,
                    reject_score=self.reject_score,
                    frame_prob=fp,
                    frame_reject=self.frame_reject,
                )
                boxes = weld_decode.to_dicts(dets[j], self.labels, w, h, min_score=self.box_score)
                results[i] = {
                    "stream": frames[i].stream,
                    "boxes": boxes,
                    "decision": decision,
                    "reject_reasons": reasons,
                }
            self.stats["frames"] += len(ok)
            return results
        probs, frame = self.infer([frames[i].image for i in ok])
        for j, i in enumerate(ok):
            h, w = frames[i].image.shape[:2]
            boxes = self.regions(probs[j], w, h)
            decision, reasons = self.decide(boxes, None if frame is None else float(frame[j]))
            results[i] = {"stream": frames[i].stream, "boxes": boxes, "decision": decision, "reject_reasons": reasons}
        self.stats["frames"] += len(ok)
        return results


# ---------------------------------------------------------------------- evaluation


def read_yolo_labels(path: Path) -> npt.NDArray[np.float64]:
    """A YOLO label file as (n, 5) [class, cx, cy, w, h] (normalised); a missing file is an empty frame."""
    if not path.is_file():
        return np.zeros((0, 5))
    rows = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        arr = np.array([[float(v) for v in r[:5]] for r in rows], dtype=np.float64).reshape(-1, 5)
    except ValueError as exc:
        raise WeldDataError(f"{path}: not a YOLO label file: {exc}") from exc
    return arr


def _class_map(data_dir: Path, labels: list[str]) -> npt.NDArray[np.int64]:
    """Data-set class index -> model label index, by name when data.yaml names the classes."""
    meta = data_dir / "data.yaml"
    if not meta.is_file():
        return np.arange(len(labels))
    names = yaml.safe_load(meta.read_text(encoding="utf-8")).get("names", labels)
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise WeldDataError(f"{meta}: classes {unknown} are not among the model's labels {labels}")
    return np.array([labels.index(n) for n in names], dtype=np.int64)


def box_calls(probs: F32, gt: npt.NDArray[np.float64], region_min_score: float) -> npt.NDArray[np.int64]:
    """The model's call for each ground-truth box (label index, or -1 when missed); see the module docstring."""
    grid_h, grid_w = probs.shape[1:]
    centres_x = (np.arange(grid_w) + 0.5) / grid_w
    centres_y = (np.arange(grid_h) + 0.5) / grid_h
    calls = np.full(len(gt), -1, dtype=np.int64)
    for k, (_, cx, cy, w, h) in enumerate(gt):
        xs = (centres_x >= cx - w / 2) & (centres_x <= cx + w / 2)
        ys = (centres_y >= cy - h / 2) & (centres_y <= cy + h / 2)
        if not xs.any():
            xs[min(int(cx * grid_w), grid_w - 1)] = True
        if not ys.any():
            ys[min(int(cy * grid_h), grid_h - 1)] = True
        cells = probs[:, ys][:, :, xs].reshape(probs.shape[0], -1).mean(axis=1)
        if 1.0 - cells[0] >= region_min_score:
            calls[k] = int(np.argmax(cells[1:]))
    return calls


def _iou(box: F32, others: F32) -> F32:
    """IoU of one xyxy box against (n, 4) xyxy boxes."""
    lo = np.maximum(box[:2], others[:, :2])
    hi = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(others[:, 2:] - others[:, :2], axis=1)
    return np.asarray(inter / np.maximum(area - inter, 1e-9), dtype=np.float32)


def average_precision_50(
    preds: list[tuple[int, int, float, F32]], truths: list[tuple[int, int, F32]], n_classes: int
) -> dict[int, float | None]:
    """Per-class AP at IoU 0.5 (all-point interpolation). `preds`: (frame, class, score, xyxy); `truths`:
    (frame, class, xyxy). A class without ground truth has AP None."""
    out: dict[int, float | None] = {}
    for c in range(n_classes):
        gt_by_frame: dict[int, F32] = {}
        for f, k, box in truths:
            if k == c:
                gt_by_frame[f] = np.vstack([gt_by_frame[f], box]) if f in gt_by_frame else box[None]
        n_gt = sum(len(v) for v in gt_by_frame.values())
        if n_gt == 0:
            out[c] = None
            continue
        used = {f: np.zeros(len(v), bool) for f, v in gt_by_frame.items()}
        mine = sorted((p for p in preds if p[1] == c), key=lambda p: -p[2])
        tp = np.zeros(len(mine))
        for i, (f, _, _, box) in enumerate(mine):
            if f not in gt_by_frame:
                continue
            iou = _iou(box, gt_by_frame[f])
            iou[used[f]] = 0.0
            j = int(np.argmax(iou))
            if iou[j] >= 0.5:
                used[f][j] = True
                tp[i] = 1.0
        recall = np.concatenate([[0.0], np.cumsum(tp) / n_gt])
        precision = np.concatenate([[1.0], np.cumsum(tp) / np.arange(1, len(tp) + 1)])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        out[c] = round(float(np.sum(np.diff(recall) * precision[1:])), 4)
    return out


def evaluate(
    data_dir: Path,
    *,
    variant: str = "fp32",
    model: str | Path = "weld_inspector",
    config: WeldInspectorConfig | None = None,
    degrade: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Box and frame accuracy on a YOLO-layout directory (`images/`, `labels/`, optional `data.yaml`).

    `degrade` is applied to every image before the model (e.g. a cold-weather degradation). Returns `n`,
    `n_frames`, `n_boxes`, `box_accuracy`, `frame_accuracy`, `per_class`, `confusion` (rows: true labels;
    columns: the labels then `missed`), `frame_confusion` and the thresholds used.
    """
    import cv2

    data_dir = Path(data_dir)
    image_dir = data_dir / "images"
    if not image_dir.is_dir():
        raise WeldDataError(f"{data_dir}: no images/ directory (YOLO layout expected)")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise WeldDataError(f"{image_dir}: no images")
    runner = load_model(model, variant=variant)
    task = WeldInspectorTask(config or WeldInspectorConfig(kind="weld_inspector"), runner)
    labels = task.labels
    cmap = _class_map(data_dir, labels)
    if task.detector:
        return _evaluate_detector(task, files, data_dir, cmap, degrade, batch_size)
    n_cls = len(labels)
    confusion = np.zeros((n_cls, n_cls + 1), dtype=np.int64)  # last column: missed
    frame_conf = np.zeros((2, 2), dtype=np.int64)  # rows truth accept/reject, columns predicted accept/reject
    reject_idx = {labels.index(n) for n in REJECT_LABELS if n in labels}
    preds: list[tuple[int, int, float, F32]] = []
    truths: list[tuple[int, int, F32]] = []
    frame_no = 0
    t0 = time.perf_counter()
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = []
        for p in chunk:
            img = cast("npt.NDArray[np.uint8] | None", cv2.imread(str(p), cv2.IMREAD_COLOR))
            if img is None:
                raise WeldDataError(f"{p}: cannot decode image")
            images.append(degrade(img) if degrade is not None else img)
        probs, frame = task.infer(images)
        for j, (p, pr) in enumerate(zip(chunk, probs, strict=True)):
            gt = read_yolo_labels(data_dir / "labels" / (p.stem + ".txt"))
            if len(gt) and (gt[:, 0].max() >= len(cmap) or gt[:, 0].min() < 0):
                raise WeldDataError(f"{p}: class index out of range for {len(cmap)} classes")
            truth = cmap[gt[:, 0].astype(np.int64)]
            calls = box_calls(pr, gt, task.region_min_score)
            np.add.at(confusion, (truth, np.where(calls < 0, n_cls, calls)), 1)
            boxes = task.regions(pr, 1.0, 1.0, decimals=None)  # normalised, like the labels
            decision, _ = task.decide(boxes, None if frame is None else float(frame[j]))
            true_reject = bool(set(truth.tolist()) & reject_idx)
            frame_conf[int(true_reject), int(decision == "reject")] += 1
            for b in boxes:
                xyxy = np.array([b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]], np.float32)
                preds.append((frame_no, labels.index(b["label"]), b["score"], xyxy))
            for k, (_, cx, cy, w, h) in zip(truth, gt, strict=True):
                truths.append(
                    (frame_no, int(k), np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32))
                )
            frame_no += 1
    ap = average_precision_50(preds, truths, n_cls)
    ap_known = [v for v in ap.values() if v is not None]
    n_boxes = int(confusion.sum())
    correct = np.diag(confusion[:, :n_cls])
    per_class = {
        name: {
            "n": int(confusion[i].sum()),
            "correct": int(correct[i]),
            "missed": int(confusion[i, n_cls]),
            "accuracy": round(float(correct[i] / confusion[i].sum()), 4) if confusion[i].sum() else None,
            "ap50": ap[i],
        }
        for i, name in enumerate(labels)
    }
    n_frames = int(frame_conf.sum())
    result = {
        "model": runner.ident,
        "n": n_frames,
        "n_frames": n_frames,
        "n_boxes": n_boxes,
        "box_accuracy": round(float(correct.sum() / n_boxes), 4) if n_boxes else None,
        "frame_accuracy": round(float(np.trace(frame_conf) / n_frames), 4),
        "per_class": per_class,
        "confusion": {"labels": labels, "columns": [*labels, "missed"], "matrix": confusion.tolist()},
        "frame_confusion": {"labels": ["accept", "reject"], "matrix": frame_conf.tolist()},
        "map50": round(float(np.mean(ap_known)), 4) if ap_known else None,
        "thresholds": {
            "foreground": task.foreground,
            "box_score": task.box_score,
            "reject_score": task.reject_score,
            "min_region_cells": task.min_region_cells,
            "region_min_score": task.region_min_score,
            **({} if task.frame_reject is None else {"frame_reject": task.frame_reject}),
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return result


def _evaluate_detector(
    task: WeldInspectorTask,
    files: list[Path],
    data_dir: Path,
    cmap: npt.NDArray[np.int64],
    degrade: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None,
    batch_size: int,
) -> dict[str, Any]:
    """`evaluate` for box detectors (2.x): metrics in `detection_metrics.summarise`."""
    import cv2

    dets: list[weld_decode.Detections] = []
    truths: list[tuple[npt.NDArray[np.int64], F32]] = []
    probs: list[float] = []
    t0 = time.perf_counter()
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = []
        for p in chunk:
            img = cast("npt.NDArray[np.uint8] | None", cv2.imread(str(p), cv2.IMREAD_COLOR))
            if img is None:
                raise WeldDataError(f"{p}: cannot decode image")
            images.append(degrade(img) if degrade is not None else img)
        d, frame = task.detect(images, score_threshold=min(task.ap_min_score, task.box_score))
        dets.extend(d)
        probs.extend([] if frame is None else frame.tolist())
        for p in chunk:
            gt = read_yolo_labels(data_dir / "labels" / (p.stem + ".txt"))
            if len(gt) and (gt[:, 0].max() >= len(cmap) or gt[:, 0].min() < 0):
                raise WeldDataError(f"{p}: class index out of range for {len(cmap)} classes")
            truths.append((cmap[gt[:, 0].astype(np.int64)], detection_metrics.cxcywh_to_xyxy(gt[:, 1:5])))
    th = {"box_score": task.box_score, "nms_iou": task.nms_iou, "reject_score": task.reject_score}
    th["ap_min_score"] = task.ap_min_score
    if task.frame_reject is not None:
        th["frame_reject"] = task.frame_reject
    result = detection_metrics.summarise(
        dets, truths, probs if task.frame_name is not None else None, task.labels, sorted(REJECT_LABELS), th
    )
    return {"model": task.runner.ident, **result, "seconds": round(time.perf_counter() - t0, 2)}
