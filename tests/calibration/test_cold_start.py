from __future__ import annotations

import numpy as np

from calibration.cold_start import ColdStartBaseline, fit_baseline


def _healthy(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Known truth: warm scores ~0.1, cold-start excess 0.01 per K below 10 degC decaying with tau 15 min."""
    temp = rng.uniform(-30, 25, n)
    minutes = rng.uniform(0, 120, n)
    excess = 0.01 * np.maximum(0, 10 - temp) * np.exp(-minutes / 15.0)
    scores = np.clip(0.1 + excess + rng.normal(0, 0.02, n), 0, 1)
    return scores, temp, minutes


def test_fit_recovers_the_cold_start_excess() -> None:
    scores, temp, minutes = _healthy(np.random.default_rng(0), 20000)
    cal = fit_baseline(scores, temp, minutes, data="synthetic")
    assert 0.13 < cal.warm_q < 0.17
    assert 0.006 < cal.slope_per_k < 0.014
    assert 8.0 < cal.tau_min < 25.0


def test_cold_start_does_not_alarm_but_a_fault_does() -> None:
    rng = np.random.default_rng(1)
    scores, temp, minutes = _healthy(rng, 20000)
    base = ColdStartBaseline(fit_baseline(scores, temp, minutes, data="synthetic"))
    model_threshold = 0.3
    # a cold start at -30 degC, 2 minutes in: healthy score 0.1 + 0.4 * exp(-2/15) ~ 0.45
    healthy_cold = 0.1 + 0.01 * 40 * np.exp(-2 / 15)
    assert healthy_cold > model_threshold  # the bare model would alarm
    assert not base.judge(healthy_cold, -30.0, 2.0, model_threshold)
    assert base.judge(0.9, -30.0, 2.0, model_threshold)  # a bearing fault still alarms
    # warm: the model's own threshold rules
    assert base.threshold(20.0, 100.0, model_threshold) == model_threshold


def test_no_cold_data_means_no_excess() -> None:
    rng = np.random.default_rng(2)
    scores = rng.uniform(0, 0.2, 500)
    cal = fit_baseline(scores, np.full(500, 20.0), rng.uniform(0, 100, 500), data="warm only")
    assert cal.slope_per_k == 0.0
    assert ColdStartBaseline(cal).threshold(-30.0, 0.0, 0.5) == 0.5
