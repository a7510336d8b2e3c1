"""`edge-runtime evaluate rice_sorter`: variety accuracy and eject precision/recall on class-folder photographs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.tasks.rice_segment import SegmentParams, segment
from edge_runtime.tasks.rice_size import size_features
from edge_runtime.tasks.rice_sorter import MODEL_NAME, RiceSorterConfig, RiceSorterTask
from edge_runtime.tools.datasets import read_class_folders
from edge_runtime.tools.evaluate.metrics import per_class_metrics

__all__ = ["evaluate"]

log = logging.getLogger("edge_runtime.tools.evaluate")


def evaluate(
    data_dir: Path,
    *,
    variant: str | None = None,
    declared: str | None = None,
    degrade: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
    compensate: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.uint8]] | None = None,
    model_dir: Path | None = None,
    batch_size: int = 256,
    size_prior: bool = True,
    work_scale: int = 1,
) -> dict[str, Any]:
    """Variety accuracy of the shipped model on a class-folder directory of single-grain photographs.

    Each photograph goes through `segment` like a live frame (optionally after `degrade`, e.g. a cold-weather
    model, then `compensate`, the pipeline's compensation layers) and its largest grain is classified; a photograph
    where no grain is found counts as wrong (`n_unsegmented`). With `size_prior` (the default) the probabilities
    are weighed with the grain's size like the live task's, at scale 1: the directory holds data-set photographs,
    so there is no camera scale to confirm first (the live task's `ScaleCheck`). `work_scale` 2 finds the grains
    at half resolution, like the task's option of that name.
    With `declared`, the purity sorter's view: off-type grains are the positives and a grain is ejected by the
    task's off-type rule (declared probability below `min_confidence`); `eject_precision` and `eject_recall`
    follow. Whatever `declared`, `eject_by_declared_variety` gives the same two figures for every label in turn as
    the declared one (a lot of each variety sorted from the same photographs), so one run shows the worst lot.
    Broken-grain ejection is not part of them, as the photographs are labelled by variety, not by breakage:
    `n_broken_declared` counts declared-variety grains the length rule would also eject.
    A ratio without a denominator (a variety absent from the directory) is None, so the result stays valid JSON.
    """
    import cv2

    from edge_runtime.inference import load_model

    runner = load_model(model_dir if model_dir is not None else MODEL_NAME, variant=variant)
    labels = list(runner.manifest.labels)
    task = RiceSorterTask(
        RiceSorterConfig(
            kind="rice_sorter",
            declared_variety=declared or labels[0],
            size_prior=size_prior,
            work_scale=work_scale,  # the config refuses anything but 1 or 2
        ),
        runner,
    )
    items = read_class_folders(Path(data_dir), labels)
    s = task.params.crop_size
    truth = np.array([k for _, k in items], dtype=np.int64)
    probs_all = np.zeros((len(items), len(labels)), dtype=np.float32)
    size = np.zeros((len(items), 3), dtype=np.float64)  # length, width, area of each photograph's grain
    found = np.zeros(len(items), dtype=bool)
    # one grain each: no splitting
    params = SegmentParams.from_preprocessing(runner.manifest.preprocessing, work_scale=task.params.work_scale)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        crops = np.zeros((len(chunk), 3, s, s), dtype=np.uint8)
        for j, (path, _) in enumerate(chunk):
            raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if raw is None:
                log.warning("event=unreadable_image file=%s", path)
                continue
            img = np.asarray(raw, dtype=np.uint8)
            img = img if degrade is None else degrade(img)
            grains = segment(img if compensate is None else compensate(img), params)
            if len(grains):
                i = int(np.argmax(grains.area_px))
                crops[j], found[start + j] = grains.crops[i], True
                size[start + j] = grains.length_px[i], grains.width_px[i], grains.area_px[i]
        in_chunk = found[start : start + len(chunk)]
        probs_all[start : start + len(chunk)][in_chunk] = task.classify(crops[in_chunk])
    if task.size_prior is not None:  # data-set photographs are at scale 1 by construction: no check needed
        probs_all[found] = task.size_prior.weigh(
            probs_all[found], size_features(size[found, 0], size[found, 1], size[found, 2])
        )
    pred = np.where(found, probs_all.argmax(axis=1), -1)
    broken = found & (size[:, 0] < task.config.broken_length_ratio * task.median_length_px)
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
        "min_confidence": task.min_confidence,
        "size_prior_weight": None if task.size_prior is None else task.size_prior.weight,
        "work_scale": task.params.work_scale,
        "eject_by_declared_variety": {
            label: _eject(truth, ok, probs_all, k, task.min_confidence) for k, label in enumerate(labels)
        },
    }
    if declared is not None:
        result.update({"declared": declared, **_eject(truth, ok, probs_all, task.declared, task.min_confidence)})
        result["n_broken_declared"] = int((broken & ok & (truth == task.declared)).sum())
    return result


def _eject(
    truth: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_], probs: npt.NDArray[np.float32], k: int, min_conf: float
) -> dict[str, Any]:
    """Eject precision/recall of a lot declared as label `k`: off-type grains are the positives; a grain is ejected
    when its declared probability is below `min_conf`, or when it was not found (an unseen grain is not let
    through)."""
    off_type = truth != k
    ejected = ~ok | (probs[:, k] < min_conf)
    tp = int((off_type & ejected).sum())
    return {
        "eject_precision": tp / int(ejected.sum()) if ejected.any() else None,
        "eject_recall": tp / int(off_type.sum()) if off_type.any() else None,
        "n_off_type": int(off_type.sum()),
        "n_ejected": int(ejected.sum()),
    }
