"""int8 static quantization of a trained ONNX model with onnxruntime, from a calibration subset.

Used by the training scripts: `quantize_int8(fp32, int8, [{"x": batch}, ...])`, and by `requantize_weld.py`
with a recipe (calibration method, nodes kept in float, extra options). Needs onnx and onnxruntime only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CALIBRATE_METHODS = ("minmax", "entropy", "percentile", "distribution")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    calibration: Sequence[dict[str, npt.NDArray[Any]]],
    *,
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    nodes_to_exclude: Sequence[str] = (),
    op_types_to_quantize: Sequence[str] | None = None,
    extra_options: Mapping[str, Any] | None = None,
) -> str:
    """Write a QDQ int8 model calibrated on `calibration` feeds; returns its sha256.

    Defaults are the recipe every shipped int8 used until weld 2.1.1: MinMax ranges, all supported ops
    quantised. `nodes_to_exclude` (node names of the fp32 graph) stay in float; `calibrate_method` is one of
    `CALIBRATE_METHODS`; `extra_options` go to onnxruntime's `quantize_static` (e.g. `CalibPercentile`).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }
    if calibrate_method not in methods:
        raise ValueError(f"calibrate_method {calibrate_method!r}: one of {', '.join(CALIBRATE_METHODS)}")

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
            calibrate_method=methods[calibrate_method],
            nodes_to_exclude=list(nodes_to_exclude),
            op_types_to_quantize=None if op_types_to_quantize is None else list(op_types_to_quantize),
            extra_options=dict(extra_options or {}),
        )
    finally:
        prepared.unlink(missing_ok=True)
    return sha256_of(int8_path)
