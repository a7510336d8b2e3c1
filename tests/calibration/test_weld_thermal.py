"""The worked values are derived by hand in docs/cold.md (section "Worked values")."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.weld_thermal import (
    correct_pyrometer,
    heat_input_kj_mm,
    judge_t85,
    preheat_for_t85,
    t85_2d,
    t85_3d,
    t85_from_curve,
    t85_s,
    transition_thickness_mm,
)

Q = 1.0  # 25 V, 250 A, 300 mm/min, k = 0.8


def test_heat_input() -> None:
    assert heat_input_kj_mm(25.0, 250.0, 300.0, 0.8) == pytest.approx(1.0)


def test_t85_worked_values() -> None:
    assert t85_3d(Q, 20.0) == pytest.approx(5.288, abs=1e-3)
    assert t85_2d(Q, 20.0, 10.0) == pytest.approx(11.364, abs=1e-3)
    assert transition_thickness_mm(Q, 20.0) == pytest.approx(14.66, abs=0.01)
    assert t85_3d(Q, -30.0) == pytest.approx(4.672, abs=1e-3)
    assert t85_2d(Q, -30.0, 10.0) == pytest.approx(9.338, abs=1e-3)
    assert transition_thickness_mm(Q, -30.0) == pytest.approx(14.14, abs=0.01)


def test_regime_and_continuity() -> None:
    assert t85_s(Q, 20.0, 10.0)[1] == "2d"
    assert t85_s(Q, 20.0, 20.0)[1] == "3d"
    d = transition_thickness_mm(Q, 0.0)
    assert t85_2d(Q, 0.0, d) == pytest.approx(t85_3d(Q, 0.0), rel=1e-9)


def test_preheat_flag_and_temperature() -> None:
    cold = t85_s(Q, -30.0, 10.0)[0]
    verdict = judge_t85(cold, (10.0, 25.0), regime="2d", q_kj_mm=Q, thickness_mm=10.0)
    assert verdict.preheat_required and not verdict.too_slow
    assert verdict.preheat_to_c == pytest.approx(-12.0, abs=0.1)
    assert verdict.preheat_to_c is not None
    assert t85_s(Q, verdict.preheat_to_c, 10.0)[0] == pytest.approx(10.0, abs=1e-6)
    warm = judge_t85(t85_s(Q, 20.0, 10.0)[0], (10.0, 25.0), regime="2d")
    assert not warm.preheat_required
    assert preheat_for_t85(1.0, Q, 10.0) == -60.0


def test_pyrometer_correction_worked_values() -> None:
    assert correct_pyrometer([700.0], emissivity=0.8, ambient_c=-30.0)[0] == pytest.approx(755.6, abs=0.1)
    spectral = correct_pyrometer([700.0], emissivity=0.8, ambient_c=-30.0, mode="spectral", wavelength_um=1.0)
    assert spectral[0] == pytest.approx(714.9, abs=0.1)
    assert correct_pyrometer([650.0], emissivity=1.0, ambient_c=-30.0)[0] == pytest.approx(650.0)


def test_t85_from_a_corrected_cooling_curve() -> None:
    """A synthetic exponential cooling curve read by a pyrometer at eps_set = 1 on a seam of eps = 0.7."""
    t = np.linspace(0, 60, 6001)
    true = 20 + 1480 * np.exp(-t / 12.0)  # true surface temperature, degC
    tk, amb = true + 273.15, -30.0 + 273.15
    indicated = (0.7 * tk**4 + 0.3 * amb**4) ** 0.25 - 273.15  # what the pyrometer shows
    expected = 12.0 * np.log((800 - 20) / (500 - 20))
    raw = t85_from_curve(t, indicated).t85_s
    fixed = t85_from_curve(t, correct_pyrometer(indicated, emissivity=0.7, ambient_c=-30.0)).t85_s
    assert raw is not None and fixed is not None
    assert fixed == pytest.approx(expected, abs=0.02)
    assert abs(raw - expected) > 0.15  # uncorrected, the reading is wrong
    assert t85_from_curve(t, np.full_like(t, 600.0)).t85_s is None
