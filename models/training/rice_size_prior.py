"""Fit the `rice_sorter` size prior and write it into the shipped manifest (no retraining, no torch).

Per variety, the mean and spread of log length, log width and log area of the grains `segment()` finds on the
training split's photographs (clean, data-set pixels); the weight of the prior is the one that gives the best
accuracy on the validation split over every shipped variant (ties: the smaller weight, less reliance on the camera
scale). The test split is only reported. See `edge_runtime/tasks/rice_size.py` for how the task uses it.

    .venv/bin/python -m models.training.rice_size_prior --data ../shared/datasets/rice_grains [--write]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import yaml

from edge_runtime.inference import load_model, read_manifest
from edge_runtime.paths import models_dir
from edge_runtime.tasks.rice_segment import SegmentParams, segment
from edge_runtime.tasks.rice_size import FEATURES, SizePrior, size_features
from edge_runtime.tools.datasets import split_class_folders

WEIGHTS = [round(0.05 * i, 2) for i in range(11)]


def measure(
    items: list[tuple[Path, int]], params: SegmentParams
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Size features, crop and label of the largest grain of each photograph (as `evaluate` takes it)."""
    s = params.crop_size
    feats = np.full((len(items), 3), np.nan, dtype=np.float64)  # NaN: no grain found (left out of the fit)
    crops = np.zeros((len(items), 3, s, s), dtype=np.uint8)
    for j, (path, _) in enumerate(items):
        grains = segment(np.asarray(cv2.imread(str(path), cv2.IMREAD_COLOR), dtype=np.uint8), params)
        if len(grains):
            i = int(np.argmax(grains.area_px))
            feats[j] = size_features(grains.length_px[i : i + 1], grains.width_px[i : i + 1], grains.area_px[i : i + 1])
            crops[j] = grains.crops[i]
    return feats, crops, np.array([k for _, k in items], dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=20240611, help="the split seed of the model's training")
    ap.add_argument("--model", type=Path, default=models_dir() / "rice_sorter")
    ap.add_argument("--write", action="store_true", help="write preprocessing.size_prior into the manifest")
    ap.add_argument("--robust", action="store_true", help="median and MAD per variety instead of mean and std")
    args = ap.parse_args()
    manifest = read_manifest(args.model)
    labels = list(manifest.labels)
    params = SegmentParams.from_preprocessing(manifest.preprocessing)
    parts = split_class_folders(args.data, labels, args.seed)
    train_f, _, train_y = measure(parts["train"], params)
    found = np.isfinite(train_f).all(axis=1)
    per_class = [train_f[found & (train_y == k)] for k in range(len(labels))]
    if args.robust:  # median and scaled MAD: a variety's tail of odd grains does not widen its Gaussian
        mean = np.stack([np.median(f, axis=0) for f in per_class])
        std = np.stack([1.4826 * np.median(np.abs(f - m), axis=0) for f, m in zip(per_class, mean, strict=True)])
    else:
        mean = np.stack([f.mean(axis=0) for f in per_class])
        std = np.stack([f.std(axis=0) for f in per_class])
    variants = ["fp32", *manifest.variants]
    probs: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
    truth: dict[str, npt.NDArray[np.int64]] = {}
    feats: dict[str, npt.NDArray[np.float64]] = {}
    runners = {v: load_model(args.model, variant=v) for v in variants}
    for part in ("val", "test"):
        feats[part], crops, truth[part] = measure(parts[part], params)
        for v, runner in runners.items():
            probs[v, part] = np.concatenate(
                [runner.run({"x": crops[i : i + 256]})["probs"] for i in range(0, len(crops), 256)]
            )

    def accuracy(v: str, part: str, weight: float) -> float:
        prior = SizePrior(mean=mean, std=std, weight=weight)
        return float((prior.weigh(probs[v, part], feats[part]).argmax(axis=1) == truth[part]).mean())

    table = {w: {(v, p): accuracy(v, p, w) for v in variants for p in ("val", "test")} for w in WEIGHTS}
    print("weight " + " ".join(f"{v}/{p:>4}" for v in variants for p in ("val", "test")))
    for w, row in table.items():
        print(f"{w:6.2f} " + " ".join(f"{100 * row[v, p]:9.2f}" for v in variants for p in ("val", "test")))
    best = max(WEIGHTS, key=lambda w: (sum(table[w][v, "val"] for v in variants), -w))
    print(f"chosen weight {best} (validation)")
    if not args.write:
        return
    path = args.model / "model.yaml"
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    raw["preprocessing"]["size_prior"] = {
        "features": list(FEATURES),
        "units": "data-set pixels (divide camera pixels by scale_px_per_dataset_px)",
        "mean": {label: [round(float(x), 5) for x in mean[k]] for k, label in enumerate(labels)},
        "std": {label: [round(float(x), 5) for x in std[k]] for k, label in enumerate(labels)},
        "weight": best,
        "fit": f"models/training/rice_size_prior.py: training split ({len(train_y)} photographs, largest grain), "
        "weight by validation accuracy over every variant",
    }
    raw.setdefault("metrics", {})["size_prior"] = {
        "weight": best,
        **{f"{v}_{p}_accuracy": round(table[best][v, p], 4) for v in variants for p in ("val", "test")},
        **{f"{v}_{p}_accuracy_without": round(table[0.0][v, p], 4) for v in variants for p in ("val", "test")},
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
