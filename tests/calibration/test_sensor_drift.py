from __future__ import annotations

import numpy as np
import pytest

from calibration.files import Provenance, SensorCalibration, SensorEntry
from calibration.fit import fit_sensor_from_recordings, sensor_from_datasheet
from calibration.sensor_drift import SensitivityDrift, relative_sensitivity
from calibration.severity import velocity_rms_mm_s


def _tone(fs: float = 12000.0, n: int = 12000) -> np.ndarray:
    t = np.arange(n) / fs
    return (0.3 * np.sin(2 * np.pi * 160.0 * t) + 0.1 * np.sin(2 * np.pi * 530.0 * t)).astype(np.float32)


def test_datasheet_recovers_true_signal() -> None:
    cal = sensor_from_datasheet("line1.*.vib_*", 20.0, 0.2, 0.8, valid_c=(-30.0, 60.0))
    true = _tone()
    s = 1 + 0.2 / 100 * (-30 - 20)  # 0.9
    measured = true * s + 0.8 * (-50) / 1000
    out = SensitivityDrift(cal).apply(measured, -30.0, "line1.m3.vib_x")
    assert out.matched and out.in_range
    assert out.sensitivity == pytest.approx(0.9)
    assert out.offset_g == pytest.approx(-0.04)
    assert np.abs(out.samples - true).max() < 1e-5
    v_true = velocity_rms_mm_s(true, 12000.0)
    assert velocity_rms_mm_s(out.samples, 12000.0) == pytest.approx(v_true, rel=1e-4)
    assert velocity_rms_mm_s(measured, 12000.0) == pytest.approx(v_true * 0.9, rel=1e-4)


def test_out_of_range_is_reported_not_clamped() -> None:
    cal = sensor_from_datasheet("*", 20.0, 0.1, 0.0, valid_c=(-20.0, 60.0))
    out = SensitivityDrift(cal).apply(np.ones(10), -35.0, "a")
    assert not out.in_range
    assert out.sensitivity == pytest.approx(1 + 0.1 / 100 * -55)  # extrapolated, not clamped at -20


def test_unmatched_stream_is_unchanged() -> None:
    cal = sensor_from_datasheet("line2.*", 20.0, 0.1, 0.0)
    out = SensitivityDrift(cal).apply(np.ones(4), -10.0, "line1.x")
    assert not out.matched
    assert np.array_equal(out.samples, np.ones(4, np.float32))


def test_polynomial_overrides_linear() -> None:
    entry = SensorEntry(
        stream="*", reference_c=25.0, sensitivity_tc_pct_per_k=9.0, offset_mg_per_k=0.0, sensitivity_poly=[0.001, 1e-5]
    )
    assert relative_sensitivity(entry, 5.0) == pytest.approx(1 - 0.02 + 0.004)
    cal = SensorCalibration(kind="sensor", provenance=Provenance.today("t", (-40.0, 60.0)), sensors=[entry])
    assert SensitivityDrift(cal).apply(np.ones(3), 5.0, "x").sensitivity == pytest.approx(0.984)


def test_fit_from_recordings_at_several_temperatures() -> None:
    temps = [-30.0, -10.0, 0.0, 20.0, 40.0]
    truth = [1 + 0.0015 * (t - 20) + 2e-6 * (t - 20) ** 2 for t in temps]
    cal = fit_sensor_from_recordings(
        "*", temps, [0.5 * s for s in truth], [0.0004 * (t - 20) for t in temps], reference_c=20.0, reference_rms_g=0.5
    )
    drift = SensitivityDrift(cal)
    for t, s in zip(temps, truth, strict=True):
        assert drift.apply(np.ones(2), t, "x").sensitivity == pytest.approx(s, rel=1e-6)
    assert cal.sensors[0].offset_mg_per_k == pytest.approx(0.4, rel=1e-6)
