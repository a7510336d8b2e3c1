"""Quantize a rice_sorter graph to int8 with the shipped int8 variant's recipe, then rewrite its stems.

The recipe is `train_rice.py`'s: onnxruntime static QDQ (per-channel int8 weights, uint8 activations, MinMax),
calibrated on the 1,280 training crops `calibration_feeds` draws with the training seed + 1 from the crop cache
(clean and augmented), then `stem_s2d` (every stem behind one SpaceToDepth; refused unless the outputs stay the
same). Run on `model.fast.onnx` it writes the shipped `model.int8.onnx` byte for byte (the same sha256); on
`model.onnx`, the averaged pair, the shipped `model.pair_int8.onnx` (1.3.0). Needs the `train` extra (torch, for
`train_rice`'s crop cache helpers).

    python -m models.training.rice_int8 models/rice_sorter/model.onnx --crop-cache /tmp/rice_crops48.npz \\
        --out models/rice_sorter/model.pair_int8.onnx
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    import onnx

    from models.training.quantize import quantize_int8, sha256_of
    from models.training.stem_s2d import rewrite_checked
    from models.training.train_rice import calibration_feeds, load_crop_cache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="fp32 rice_sorter graph")
    ap.add_argument("--crop-cache", type=Path, required=True, help="train_rice --crop-cache file of the same crops")
    ap.add_argument("--seed", type=int, default=20240611, help="train_rice's --seed (calibration draws with seed + 1)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cache = load_crop_cache(args.crop_cache)
    calibration = calibration_feeds(np.concatenate([cache["tr_x"], cache["tr_ax"]]), args.seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        qdq = Path(tmp) / "qdq.onnx"
        quantize_int8(args.model, qdq, calibration)
        quantized = onnx.load(str(qdq))
    try:
        rewritten, diff = rewrite_checked(quantized)
    except ValueError as exc:
        raise SystemExit(f"{exc}; nothing written") from None
    onnx.save(rewritten, str(args.out))
    print(f"wrote {args.out} sha256 {sha256_of(args.out)} (stem rewrite: largest difference {diff:.3g})")


if __name__ == "__main__":
    main()
