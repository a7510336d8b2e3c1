"""Accelerometer drift: sensitivity and DC offset versus temperature, removed per block of samples.

Physics (see `docs/cold.md`): a piezoelectric accelerometer's sensitivity falls by a fraction of a percent per kelvin
below its reference temperature and a small DC offset appears. With ``dT = T - reference_c`` the sensor reads

    measured_g = true_g * s(T) + offset_g(T),   s(T) = 1 + tc / 100 * dT,   offset_g(T) = k_mg / 1000 * dT

(or the polynomials of the calibration file), so ``true_g = (measured_g - offset_g(T)) / s(T)``. The temperature is
the time-aligned reading of a temperature tag (the pipeline aligns streams); a reading outside the calibration's
valid range is still corrected with the model (extrapolated) but reported `in_range=False`, so the pipeline marks the
result `quality=uncertain` instead of clamping silently.

Usage::

    drift = SensitivityDrift(sensor_calibration)
    out = drift.apply(block_g, temperature_c=-27.0, stream="line1.motor3.vib_x")
    out.samples, out.sensitivity, out.offset_g, out.in_range
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.files import SensorCalibration, SensorEntry

__all__ = ["DriftResult", "SensitivityDrift", "offset_g", "relative_sensitivity"]

F32 = npt.NDArray[np.float32]


def relative_sensitivity(entry: SensorEntry, temperature_c: float) -> float:
    """s(T): sensitivity at `temperature_c` over the reference sensitivity."""
    dt = temperature_c - entry.reference_c
    if entry.sensitivity_poly is not None:
        return 1.0 + sum(c * dt ** (k + 1) for k, c in enumerate(entry.sensitivity_poly))
    return 1.0 + entry.sensitivity_tc_pct_per_k / 100.0 * dt


def offset_g(entry: SensorEntry, temperature_c: float) -> float:
    """DC offset in g at `temperature_c`."""
    dt = temperature_c - entry.reference_c
    if entry.offset_poly_mg is not None:
        return sum(c * dt ** (k + 1) for k, c in enumerate(entry.offset_poly_mg)) / 1000.0
    return entry.offset_mg_per_k * dt / 1000.0


@dataclass(frozen=True, slots=True)
class DriftResult:
    samples: F32  # corrected block, g
    sensitivity: float  # s(T) divided out
    offset_g: float  # offset removed, g
    in_range: bool  # T inside the calibration's valid_c
    matched: bool  # a calibration entry matched the stream (False: samples returned unchanged)


class SensitivityDrift:
    """Removes temperature-dependent sensitivity and offset from accelerometer blocks."""

    def __init__(self, calibration: SensorCalibration) -> None:
        self.calibration = calibration
        self._cache: dict[str, SensorEntry | None] = {}

    def entry_for(self, stream: str) -> SensorEntry | None:
        """The first entry whose glob matches `stream` (cached per stream name)."""
        if stream not in self._cache:
            self._cache[stream] = next(
                (e for e in self.calibration.sensors if fnmatch.fnmatchcase(stream, e.stream)), None
            )
        return self._cache[stream]

    def apply(self, samples_g: npt.ArrayLike, temperature_c: float, stream: str = "") -> DriftResult:
        """Correct one block (any shape, in g) with the temperature at the block's time."""
        x = np.asarray(samples_g, dtype=np.float32)
        in_range = self.calibration.provenance.covers(temperature_c)
        entry = self.entry_for(stream) if stream else self.calibration.sensors[0]
        if entry is None or not np.isfinite(temperature_c):
            return DriftResult(x, 1.0, 0.0, in_range and entry is not None, False)
        s = relative_sensitivity(entry, temperature_c)
        if s <= 0.05:
            raise ValueError(f"sensitivity model gives s={s:.3f} at {temperature_c} degC for {entry.stream}")
        o = offset_g(entry, temperature_c)
        out = ((x - np.float32(o)) / np.float32(s)).astype(np.float32)
        return DriftResult(out, s, o, in_range, True)
