"""The pipeline's compensation layers as plain functions, for `edge-runtime evaluate --calibration FILE`.

Offline evaluation compensates exactly as a line does: the same `calibration/` layers with the same calibration
file, given only the data and the temperature tag's value (`--ambient-c`), never how the data were degraded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.compensation import CalibrationError, load_calibration_file

__all__ = ["compensation_for"]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


def compensation_for(model: str, calibration: Path, ambient_c: float | None) -> Callable[..., Any]:
    """image -> image for the vision models (lens fog, then LED drift); (signal, fs_hz) -> signal for vibration."""
    if model == "vibration_anomaly":
        return _sensor(calibration, ambient_c)
    return _optics(calibration, ambient_c)


def _optics(path: Path, ambient_c: float | None) -> Callable[[U8], U8]:
    from calibration.illumination import IlluminationDrift
    from calibration.lens_fog import LensFogCompensation

    cal = load_calibration_file(path, "optics")
    fog, led = LensFogCompensation(cal), IlluminationDrift(cal)

    def compensate(image: U8) -> U8:
        defogged = fog.apply(image)
        return led.apply(defogged.image, ambient_c, defogged.clipped).image

    return compensate


def _sensor(path: Path, ambient_c: float | None) -> Callable[[F32, float], F32]:
    from calibration.sensor_drift import SensitivityDrift

    cal = load_calibration_file(path, "sensor")
    if ambient_c is None:
        raise CalibrationError("sensor compensation needs the sensor's temperature: pass --ambient-c")
    drift = SensitivityDrift(cal)
    stream = cal.sensors[0].stream  # a data set has no stream names: the file's first entry applies

    def compensate(signal: F32, fs_hz: float) -> F32:
        return drift.apply(signal, ambient_c, stream).samples

    return compensate
