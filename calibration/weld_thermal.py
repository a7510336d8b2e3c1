"""Weld thermal cycle: EN 1011-2 heat input and cooling time t8/5, and t8/5 measured by a pyrometer.

In a cold hall a weld cools faster: the cooling time from 800 to 500 degC (t8/5) shortens, the heat-affected zone
hardens and cold cracking follows. Two paths:

Computed (EN 1011-1 / EN 1011-2 Annex D), from the weld cell's tags:
- heat input ``Q = k * U * I * 60 / (v * 1000)`` kJ/mm (U volt, I ampere, v travel speed in mm/min, k process
  efficiency: 1.0 SAW, 0.8 MMA/MIG/MAG/FCAW, 0.6 TIG/plasma);
- 3-D heat flow (thick plate): ``t8/5 = (6700 - 5 T0) Q (1/(500 - T0) - 1/(800 - T0)) F3``;
- 2-D heat flow (thin plate, d mm): ``t8/5 = (4300 - 4.3 T0) 1e5 Q^2/d^2 ((1/(500 - T0))^2 - (1/(800 - T0))^2) F2``;
- transition thickness where both agree (F2 = F3):
  ``d_t = sqrt((4300 - 4.3 T0) / (6700 - 5 T0) * 1e5 * Q * (1/(500 - T0) + 1/(800 - T0)))``; d >= d_t is 3-D.
T0 is the plate's initial (ambient or preheat) temperature in degC; F2, F3 joint shape factors (1 for a bead on plate).

Measured: a pyrometer behind the torch reads an indicated temperature assuming emissivity `eps_set`; the seam's
true emissivity `eps` is lower and the cold hall's radiation is reflected, so the indicated value is corrected first:
- broadband (total radiation): ``eps_set T_ind^4 = eps T^4 + (1 - eps) T_amb^4`` (kelvin);
- spectral at wavelength lambda (Wien): ``eps_set W(T_ind) = eps W(T) + (1 - eps) W(T_amb)``,
  ``W(T) = exp(-c2 / (lambda T))``, c2 = 14388 um K;
then t8/5 is the time between the cooling curve's crossings of 800 and 500 degC after its peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "PROCESS_EFFICIENCY",
    "CoolingResult",
    "ThermalVerdict",
    "correct_pyrometer",
    "heat_input_kj_mm",
    "judge_t85",
    "preheat_for_t85",
    "t85_2d",
    "t85_3d",
    "t85_from_curve",
    "t85_s",
    "transition_thickness_mm",
]

C2_UM_K = 14388.0
PROCESS_EFFICIENCY: dict[str, float] = {"saw": 1.0, "mma": 0.8, "mig": 0.8, "mag": 0.8, "fcaw": 0.8, "tig": 0.6}


def heat_input_kj_mm(voltage_v: float, current_a: float, travel_mm_min: float, efficiency: float) -> float:
    """Heat input Q in kJ/mm (EN 1011-1): k * U * I * 60 / (v * 1000)."""
    if travel_mm_min <= 0:
        raise ValueError("travel speed must be positive")
    return efficiency * voltage_v * current_a * 60.0 / (travel_mm_min * 1000.0)


def _check_t0(t0_c: float) -> None:
    if not t0_c < 500.0:
        raise ValueError(f"initial temperature {t0_c} degC must be below 500 degC")


def t85_3d(q_kj_mm: float, t0_c: float, f3: float = 1.0) -> float:
    """t8/5 (s) for 3-D heat flow (thick plate)."""
    _check_t0(t0_c)
    return (6700.0 - 5.0 * t0_c) * q_kj_mm * (1.0 / (500.0 - t0_c) - 1.0 / (800.0 - t0_c)) * f3


def t85_2d(q_kj_mm: float, t0_c: float, thickness_mm: float, f2: float = 1.0) -> float:
    """t8/5 (s) for 2-D heat flow (thin plate of `thickness_mm`)."""
    _check_t0(t0_c)
    a, b = 1.0 / (500.0 - t0_c), 1.0 / (800.0 - t0_c)
    return (4300.0 - 4.3 * t0_c) * 1e5 * q_kj_mm**2 / thickness_mm**2 * (a * a - b * b) * f2


def transition_thickness_mm(q_kj_mm: float, t0_c: float) -> float:
    """Plate thickness (mm) at which the 2-D and 3-D relations give the same t8/5 (F2 = F3)."""
    _check_t0(t0_c)
    ratio = (4300.0 - 4.3 * t0_c) / (6700.0 - 5.0 * t0_c)
    return math.sqrt(ratio * 1e5 * q_kj_mm * (1.0 / (500.0 - t0_c) + 1.0 / (800.0 - t0_c)))


def t85_s(
    q_kj_mm: float, t0_c: float, thickness_mm: float, f2: float = 1.0, f3: float = 1.0
) -> tuple[float, Literal["2d", "3d"]]:
    """t8/5 (s) and the heat-flow regime chosen by the transition thickness."""
    if thickness_mm >= transition_thickness_mm(q_kj_mm, t0_c):
        return t85_3d(q_kj_mm, t0_c, f3), "3d"
    return t85_2d(q_kj_mm, t0_c, thickness_mm, f2), "2d"


def preheat_for_t85(
    target_s: float, q_kj_mm: float, thickness_mm: float, f2: float = 1.0, f3: float = 1.0, t0_c: float = -60.0
) -> float | None:
    """Lowest initial temperature (degC, >= t0_c) giving t8/5 >= target_s, by bisection; None above 400 degC."""
    if t85_s(q_kj_mm, t0_c, thickness_mm, f2, f3)[0] >= target_s:
        return t0_c
    lo, hi = t0_c, 400.0
    if t85_s(q_kj_mm, hi, thickness_mm, f2, f3)[0] < target_s:
        return None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if t85_s(q_kj_mm, mid, thickness_mm, f2, f3)[0] >= target_s:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True, slots=True)
class ThermalVerdict:
    t85_s: float
    regime: str  # "2d", "3d" or "measured"
    heat_input_kj_mm: float | None
    preheat_required: bool
    too_slow: bool  # t8/5 above the band: too much heat (toughness), not a preheat matter
    preheat_to_c: float | None  # initial temperature that brings t8/5 back to the band's lower edge


def judge_t85(
    t85: float,
    band_s: tuple[float, float],
    *,
    regime: str,
    q_kj_mm: float | None = None,
    thickness_mm: float | None = None,
    f2: float = 1.0,
    f3: float = 1.0,
) -> ThermalVerdict:
    """Flag `preheat_required` when t8/5 falls below the procedure's band (lo, hi) in seconds."""
    lo, hi = band_s
    need = t85 < lo
    to_c = None
    if need and q_kj_mm is not None and thickness_mm is not None:
        to_c = preheat_for_t85(lo, q_kj_mm, thickness_mm, f2, f3)
    return ThermalVerdict(t85, regime, q_kj_mm, need, t85 > hi, to_c)


def correct_pyrometer(
    indicated_c: npt.ArrayLike,
    *,
    emissivity: float,
    ambient_c: float,
    emissivity_set: float = 1.0,
    mode: Literal["broadband", "spectral"] = "broadband",
    wavelength_um: float = 1.0,
) -> npt.NDArray[np.float64]:
    """True surface temperature (degC) from a pyrometer's indicated reading, for emissivity and ambient reflection."""
    if not 0.0 < emissivity <= 1.0 or not 0.0 < emissivity_set <= 1.0:
        raise ValueError("emissivities must lie in (0, 1]")
    t_ind = np.asarray(indicated_c, dtype=np.float64) + 273.15
    t_amb = ambient_c + 273.15
    if mode == "broadband":
        rad = (emissivity_set * t_ind**4 - (1.0 - emissivity) * t_amb**4) / emissivity
        return np.asarray(np.power(np.maximum(rad, 0.0), 0.25) - 273.15, dtype=np.float64)
    c = C2_UM_K / wavelength_um
    w = (emissivity_set * np.exp(-c / t_ind) - (1.0 - emissivity) * math.exp(-c / t_amb)) / emissivity
    return np.asarray(-c / np.log(np.maximum(w, 1e-300)) - 273.15, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class CoolingResult:
    t85_s: float | None  # None when the curve does not cross both 800 and 500 degC after its peak
    t800_s: float | None
    t500_s: float | None
    peak_c: float


def _crossing(t: npt.NDArray[np.float64], y: npt.NDArray[np.float64], level: float, start: int) -> float | None:
    below = np.flatnonzero(y[start:] < level)
    if below.size == 0:
        return None
    j = start + int(below[0])
    if j == 0 or y[j - 1] < level:
        return float(t[j])
    return float(t[j - 1] + (level - y[j - 1]) * (t[j] - t[j - 1]) / (y[j] - y[j - 1]))


def t85_from_curve(times_s: npt.ArrayLike, temps_c: npt.ArrayLike) -> CoolingResult:
    """t8/5 of a (corrected) cooling curve: first downward crossings of 800 and 500 degC after the peak."""
    t = np.asarray(times_s, dtype=np.float64)
    y = np.asarray(temps_c, dtype=np.float64)
    if t.shape != y.shape or t.size < 2:
        raise ValueError("times and temperatures must be equal-length arrays of at least 2 samples")
    peak = int(np.argmax(y))
    t8 = _crossing(t, y, 800.0, peak) if y[peak] >= 800.0 else None
    t5 = _crossing(t, y, 500.0, peak) if t8 is not None else None
    return CoolingResult(None if t8 is None or t5 is None else t5 - t8, t8, t5, float(y[peak]))
