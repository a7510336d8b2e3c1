from __future__ import annotations

import numpy as np
import pytest

from calibration.severity import G_MM_S2, ZONE_LIMITS, velocity_rms_mm_s, velocity_spectrum_rms, zone


def test_sine_velocity_matches_closed_form() -> None:
    """a = A sin(2 pi f t) g  ->  v_rms = A g / (2 pi f) / sqrt(2)."""
    fs, f, amp = 12000.0, 100.0, 0.5
    t = np.arange(12000) / fs
    a = amp * np.sin(2 * np.pi * f * t)
    expected = amp * G_MM_S2 / (2 * np.pi * f) / np.sqrt(2)
    assert velocity_rms_mm_s(a, fs) == pytest.approx(expected, rel=1e-6)


def test_band_limits_and_dc() -> None:
    fs = 12000.0
    t = np.arange(12000) / fs
    out_of_band = 0.5 * np.sin(2 * np.pi * 3000 * t) + 0.2 * np.sin(2 * np.pi * 5 * t) + 0.07  # DC offset
    assert velocity_rms_mm_s(out_of_band, fs) < 1e-6


def test_rows_and_zones() -> None:
    fs = 48000.0
    t = np.arange(4800) / fs
    rows = np.stack([np.sin(2 * np.pi * 200 * t), 2 * np.sin(2 * np.pi * 200 * t)])
    v = velocity_spectrum_rms(rows, fs)
    assert v[1] == pytest.approx(2 * v[0])
    assert zone(0.5, ZONE_LIMITS["II"]) == "A"
    assert zone(2.0, ZONE_LIMITS["II"]) == "B"
    assert zone(5.0, ZONE_LIMITS["II"]) == "C"
    assert zone(7.1, ZONE_LIMITS["II"]) == "D"
    with pytest.raises(ValueError):
        zone(1.0, (2.0, 1.0, 3.0))
