"""Rebuild weld_inspector's int8 file from the shipped fp32 ONNX, without torch (issue 10: int8 within 1 point).

The recipe (`RECIPE`) was chosen on the tuning sources of `split.json` by fidelity to fp32 (never on validation);
the calibration images come from the fit sources only. Run from the repo root with the `test` extra (onnx and
onnxruntime) plus `sympy` (onnxruntime's quantisation pre-processing imports it; the `train` extra has it):

    .venv/bin/python models/training/requantize_weld.py --out models/weld_inspector/model.int8.onnx
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantize import quantize_int8  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "weld_photos"
MODEL_DIR = ROOT / "models" / "weld_inspector"
INPUT = 320
CACHE = 384  # train_weld_det.py's image cache size: its calibration images were resized through it
SEED = 7  # the training seed; its export drew the calibration subset with default_rng(SEED + 1)


@dataclass(frozen=True)
class Recipe:
    """How the int8 file is made: which fit images calibrate it, with what method, what stays in float."""

    calibrate_method: str = "minmax"
    n_images: int | None = 96  # None: every fit image
    resize: str = "train"  # "train": 640 -> 384 -> 320 INTER_AREA (2.1.0); "runtime": 640 -> 320 INTER_LINEAR
    float_before: str | None = None  # every node before the first convolution of this module stays in float
    float_from: tuple[str, ...] = ()  # these convolutions and every node computed from them stay in float
    nodes_to_exclude: tuple[str, ...] = ()  # further nodes kept in float, by name
    extra_options: dict[str, Any] = field(default_factory=dict)


RECIPE_2_1_0 = Recipe()
# 2.1.1: the input normalisation, stem and blocks 0-4 (strides 2-8, where most of the int8 error arose) and the
# heads' last convolutions with everything computed from them (scores, boxes, frame head, `reject`) stay in float.
RECIPE = Recipe(float_before="net.blocks.5", float_from=("net.cls", "net.ctr", "net.reg"))
_CONVS = ("Conv", "ConvTranspose", "Gemm")


def float_nodes(fp32: Path, recipe: Recipe) -> list[str]:
    """Names of the fp32 graph's nodes the recipe keeps in float (the graph's nodes are in module order)."""
    import onnx

    nodes = onnx.load(str(fp32), load_external_data=False).graph.node
    keep: list[str] = list(recipe.nodes_to_exclude)
    if recipe.float_before is not None:
        for n in nodes:
            if n.op_type in _CONVS and n.input[1].startswith(recipe.float_before + "."):
                break
            keep.append(n.name)
        else:
            raise ValueError(f"{fp32}: no convolution of {recipe.float_before}")
    derived: set[str] = set()
    for n in nodes:
        head = n.op_type in _CONVS and any(n.input[1].startswith(m + ".") for m in recipe.float_from)
        if head or derived.intersection(n.input):
            derived.update(n.output)
            if n.name not in keep:
                keep.append(n.name)
    return keep


def fit_names(data: Path, split: Path) -> list[str]:
    """The fit images (train_sources minus tune_sources), sorted as train_weld_det.py loads them."""
    with (data / "sources.csv").open() as fh:
        src = {r["image"]: r["source"] for r in csv.DictReader(fh)}
    sp = json.loads(split.read_text())
    train, tune = set(sp["train_sources"]), set(sp["tune_sources"])
    return [n for n in sorted(src) if src[n] in train and src[n] not in tune]


def input_side(fp32: Path) -> int:
    """The model's input side in pixels (`x` is uint8 [batch, side, side, 3])."""
    import onnx

    dims = onnx.load(str(fp32), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[1].dim_value) or INPUT


def load(path: Path, resize: str, side: int = INPUT, cache: int = CACHE) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"{path}: cannot decode image")
    if resize == "train":
        img = cv2.resize(img, (cache, cache), interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA), dtype=np.uint8)
    if resize == "runtime":
        return np.asarray(cv2.resize(img, (side, side), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    raise ValueError(f"resize {resize!r}: 'train' or 'runtime'")


def calibration_images(
    data: Path, names: list[str], recipe: Recipe, side: int = INPUT, cache: int = CACHE
) -> npt.NDArray[np.uint8]:
    """The recipe's calibration batch; with 96 images, the same subset as train_weld_det.py's export."""
    if recipe.n_images is None or recipe.n_images >= len(names):
        idx = np.arange(len(names))
    else:
        idx = np.random.default_rng(SEED + 1).choice(len(names), size=recipe.n_images, replace=False)
    return np.stack([load(data / "images" / names[i], recipe.resize, side, cache) for i in idx])


def build(
    fp32: Path,
    int8: Path,
    recipe: Recipe,
    data: Path = DATA,
    split: Path = MODEL_DIR / "split.json",
    cache: int = CACHE,
) -> str:
    """Write the int8 file for `recipe` (calibrated at the model's own input side); returns its sha256."""
    cal = calibration_images(data, fit_names(data, split), recipe, input_side(fp32), cache)
    return quantize_int8(
        fp32,
        int8,
        [{"x": cal[i : i + 8]} for i in range(0, len(cal), 8)],
        calibrate_method=recipe.calibrate_method,
        nodes_to_exclude=float_nodes(fp32, recipe),
        extra_options=recipe.extra_options,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fp32", type=Path, default=MODEL_DIR / "model.onnx")
    ap.add_argument("--out", type=Path, default=Path("/tmp/weld_int8/model.int8.onnx"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--split", type=Path, default=MODEL_DIR / "split.json")
    ap.add_argument("--recipe", choices=("2.1.1", "2.1.0"), default="2.1.1", help="2.1.0: the previous int8 file")
    ap.add_argument(
        "--image-cache", type=int, default=CACHE, help="the training run's --image-cache (2.x up to 2.3: 384)"
    )
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    recipe = RECIPE if args.recipe == "2.1.1" else RECIPE_2_1_0
    sha = build(args.fp32, args.out, recipe, args.data, args.split, args.image_cache)
    print(f"{args.out}: sha256 {sha}, {args.out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
