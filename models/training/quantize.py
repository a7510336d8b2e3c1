"""int8 static quantization of a trained ONNX model with onnxruntime, from a calibration subset.

Used by the training scripts: `quantize_int8(fp32, int8, [{"x": batch}, ...])`. Run with the `train` extra.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: Sequence[dict[str, npt.NDArray[Any]]],
    *,
    per_channel: bool = True,
) -> str:
    """Write a QDQ int8 model calibrated on `calibration` feeds; returns its sha256."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it: Iterator[dict[str, npt.NDArray[Any]]] = iter(calibration)

        def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
            feed = next(self._it, None)
            return None if feed is None else {k: np.ascontiguousarray(v) for k, v in feed.items()}

    prepared = int8_path.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared))
    try:
        quantize_static(
            str(prepared),
            str(int8_path),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return sha256_of(int8_path)
