"""`edge-runtime evaluate weld_inspector`: box and frame accuracy and AP50 on a YOLO-layout directory.

The model's *call for a ground-truth box* is read from the cells the box covers (cells whose centre lies inside
it, or the cell holding its centre for a box smaller than a cell): when their mean foreground probability is below
``region_min_score`` the box is *missed* (counted wrong), otherwise the call is the weld class with the highest
mean probability over those cells.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import yaml

from edge_runtime.inference import load_model
from edge_runtime.tasks import weld_decode
from edge_runtime.tasks.weld_inspector import F32, REJECT_LABELS, WeldInspectorConfig, WeldInspectorTask
from edge_runtime.tools.datasets import DataSetError, read_yolo_labels
from edge_runtime.tools.evaluate import detection_metrics

__all__ = ["average_precision_50", "box_calls", "evaluate"]

log = logging.getLogger("edge_runtime.tools.evaluate")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


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
        raise DataSetError(f"{meta}: classes {unknown} are not among the model's labels {labels}")
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


def average_precision_50(
    preds: list[tuple[int, int, float, F32]], truths: list[tuple[int, int, F32]], n_classes: int
) -> dict[int, float | None]:
    """Per-class AP at IoU 0.5 (all-point interpolation; `detection_metrics.average_precision`), rounded for the
    report. `preds`: (frame, class, score, xyxy); `truths`: (frame, class, xyxy). No ground truth: None."""
    ap = detection_metrics.average_precision(preds, truths, n_classes, iou_threshold=0.5)
    return {c: None if v is None else round(v, 4) for c, v in ap.items()}


def evaluate(
    data_dir: Path,
    *,
    variant: str | None = None,
    model: str | Path = "weld_inspector",
    config: WeldInspectorConfig | None = None,
    degrade: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
    compensate: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Box and frame accuracy on a YOLO-layout directory (`images/`, `labels/`, optional `data.yaml`).

    `degrade` is applied to every image before the model (e.g. a cold-weather degradation), then `compensate`
    (the pipeline's compensation layers). Returns `n`,
    `n_frames`, `n_boxes`, `box_accuracy`, `frame_accuracy`, `per_class`, `confusion` (rows: true labels;
    columns: the labels then `missed`), `frame_confusion` and the thresholds used.
    """

    data_dir = Path(data_dir)
    image_dir = data_dir / "images"
    if not image_dir.is_dir():
        raise DataSetError(f"{data_dir}: no images/ directory (YOLO layout expected)")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise DataSetError(f"{image_dir}: no images")
    runner = load_model(model, variant=variant)
    task = WeldInspectorTask(config or WeldInspectorConfig(kind="weld_inspector"), runner)
    labels = task.labels
    cmap = _class_map(data_dir, labels)
    if task.detector:
        return _evaluate_detector(task, files, data_dir, cmap, degrade, compensate, batch_size)
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
        images = _load(chunk, degrade, compensate)
        probs, frame = task.infer(images)
        for j, (p, pr) in enumerate(zip(chunk, probs, strict=True)):
            gt = read_yolo_labels(data_dir / "labels" / (p.stem + ".txt"))
            if len(gt) and (gt[:, 0].max() >= len(cmap) or gt[:, 0].min() < 0):
                raise DataSetError(f"{p}: class index out of range for {len(cmap)} classes")
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
    per_class = detection_metrics.class_table(confusion, labels, ap)
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


def _load(
    files: list[Path],
    degrade: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None,
    compensate: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None,
) -> list[npt.NDArray[np.uint8]]:
    """Decode images as the camera would deliver them: degraded (a cold-weather model) and then compensated."""
    import cv2

    images = []
    for p in files:
        img = cast("npt.NDArray[np.uint8] | None", cv2.imread(str(p), cv2.IMREAD_COLOR))
        if img is None:
            raise DataSetError(f"{p}: cannot decode image")
        img = degrade(img) if degrade is not None else img
        images.append(compensate(img) if compensate is not None else img)
    return images


def _evaluate_detector(
    task: WeldInspectorTask,
    files: list[Path],
    data_dir: Path,
    cmap: npt.NDArray[np.int64],
    degrade: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None,
    compensate: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None,
    batch_size: int,
) -> dict[str, Any]:
    """`evaluate` for box detectors (2.x): metrics in `detection_metrics.summarise`."""

    dets: list[weld_decode.Detections] = []
    truths: list[tuple[npt.NDArray[np.int64], F32]] = []
    probs: list[float] = []
    t0 = time.perf_counter()
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = _load(chunk, degrade, compensate)
        d, frame = task.detect(images, score_threshold=min(task.ap_min_score, task.box_score))
        dets.extend(d)
        probs.extend([] if frame is None else frame.tolist())
        for p in chunk:
            gt = read_yolo_labels(data_dir / "labels" / (p.stem + ".txt"))
            if len(gt) and (gt[:, 0].max() >= len(cmap) or gt[:, 0].min() < 0):
                raise DataSetError(f"{p}: class index out of range for {len(cmap)} classes")
            truths.append((cmap[gt[:, 0].astype(np.int64)], detection_metrics.cxcywh_to_xyxy(gt[:, 1:5])))
    th = {"box_score": task.box_score, "nms_iou": task.nms_iou, "reject_score": task.reject_score}
    th["ap_min_score"] = task.ap_min_score
    if task.frame_reject is not None:
        th["frame_reject"] = task.frame_reject
    result = detection_metrics.summarise(
        dets, truths, probs if task.frame_name is not None else None, task.labels, sorted(REJECT_LABELS), th
    )
    seconds = round(time.perf_counter() - t0, 2)
    return {"model": task.runner.ident, "flip_average": task.flip_average, **result, "seconds": seconds}
