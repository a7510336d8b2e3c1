"""Vibration severity: RMS velocity in mm/s over 10 Hz-1 kHz and its zone (ISO 20816 / ISO 10816-1 style).

Acceleration in g is integrated in the frequency domain: ``V(f) = 9806.65 * A(f) / (j 2 pi f)`` (mm/s) for the bins
inside the band, all others zeroed, and the RMS follows from Parseval, so a DC offset (a cold sensor's, or gravity)
never enters and no time-domain drift accumulates. Zones: A (new machine) below `ab`, B (unrestricted operation)
below `bc`, C (restricted) below `cd`, D (damage) above. The default limits per machine class are ISO 10816-1's
(class I small machines up to 15 kW ... class IV large machines on soft foundations); a site sets its own.

Usage::

    v = velocity_rms_mm_s(block_g, fs_hz=12000.0)
    zone(v, ZONE_LIMITS["II"])  # "A" | "B" | "C" | "D"
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["G_MM_S2", "ZONE_LIMITS", "Zone", "velocity_rms_mm_s", "velocity_spectrum_rms", "zone"]

G_MM_S2 = 9806.65  # one g in mm/s^2
Zone = Literal["A", "B", "C", "D"]

ZONE_LIMITS: dict[str, tuple[float, float, float]] = {
    # machine class: (A/B, B/C, C/D) boundaries in mm/s RMS, ISO 10816-1 Annex B
    "I": (0.71, 1.8, 4.5),
    "II": (1.12, 2.8, 7.1),
    "III": (1.8, 4.5, 11.2),
    "IV": (2.8, 7.1, 18.0),
}


def velocity_spectrum_rms(
    accel_g: npt.ArrayLike, fs_hz: float, band_hz: tuple[float, float] = (10.0, 1000.0)
) -> npt.NDArray[np.float64]:
    """RMS velocity (mm/s) of each row of `accel_g` (shape (n,) or (k, n)), band-limited to `band_hz`."""
    x = np.asarray(accel_g, dtype=np.float64)
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    n = x.shape[-1]
    if n < 4:
        raise ValueError("need at least 4 samples")
    x = x - x.mean(axis=-1, keepdims=True)
    spec = np.fft.rfft(x, axis=-1)
    f = np.fft.rfftfreq(n, 1.0 / fs_hz)
    lo, hi = band_hz
    inside = (f >= lo) & (f <= min(hi, fs_hz / 2))
    inside[0] = False
    vel = np.zeros_like(spec)
    vel[:, inside] = spec[:, inside] * G_MM_S2 / (2j * np.pi * f[inside])
    # Parseval for a one-sided spectrum: double every bin but DC and (for even n) Nyquist
    weight = np.full(f.shape, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    power = (np.abs(vel) ** 2 * weight).sum(axis=-1) / n**2
    out = np.sqrt(power)
    return np.asarray(out[0:1] if squeeze else out, dtype=np.float64)


def velocity_rms_mm_s(accel_g: npt.ArrayLike, fs_hz: float, band_hz: tuple[float, float] = (10.0, 1000.0)) -> float:
    """RMS velocity (mm/s) of one block of acceleration in g."""
    return float(velocity_spectrum_rms(np.ravel(np.asarray(accel_g)), fs_hz, band_hz)[0])


def zone(velocity_mm_s: float, limits: tuple[float, float, float]) -> Zone:
    """Zone A/B/C/D of an RMS velocity against (A/B, B/C, C/D) limits in mm/s."""
    ab, bc, cd = limits
    if not ab < bc < cd:
        raise ValueError(f"zone limits must increase, got {limits}")
    if velocity_mm_s < ab:
        return "A"
    if velocity_mm_s < bc:
        return "B"
    if velocity_mm_s < cd:
        return "C"
    return "D"
