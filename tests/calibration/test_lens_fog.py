from __future__ import annotations

import numpy as np

from calibration.files import FogThresholds, OpticsCalibration
from calibration.lens_fog import LensFogCompensation, LensHealth, estimate_veil
from tests.calibration.conftest import grain_scene, smooth_t


def _fog(clean: np.ndarray, t: np.ndarray, airlight: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(airlight, np.float32)
    out = np.clip(clean.astype(np.float32) * t[..., None] + a * (1 - t[..., None]) + 0.5, 0, 255)
    return np.asarray(out, dtype=np.uint8)


def test_clean_frame_is_left_alone(grain_calibration: OpticsCalibration) -> None:
    clean = grain_scene(np.random.default_rng(5))
    out = LensFogCompensation(grain_calibration).apply(clean)
    assert out.estimate.transmission_min > 0.98
    assert np.abs(out.image.astype(int) - clean).max() <= 2


def test_recovers_veil_and_transmission(grain_calibration: OpticsCalibration) -> None:
    """Known truth: t in [0.55, 0.95], grey airlight 0.85 of full scale (the prior)."""
    rng = np.random.default_rng(7)
    clean = grain_scene(rng)
    t = smooth_t(clean.shape[0], 0.55, 0.95)
    fogged = _fog(clean, t, (216.75, 216.75, 216.75))
    out = LensFogCompensation(grain_calibration).apply(fogged)
    # transmission within 0.02 on average and 0.07 everywhere (the frame's corners are extrapolated)
    assert float(np.abs(out.transmission - t).mean()) < 0.02
    assert np.abs(out.transmission - t).max() < 0.07
    assert abs(out.estimate.transmission_mean - float(t.mean())) < 0.02
    # the plate is black again and the grain's colour back within a few grey levels
    grain = clean.mean(axis=2) > 100
    err = np.abs(out.image.astype(float) - clean.astype(float))
    assert float(np.median(err[~grain])) < 4.0
    assert float(np.median(err[grain])) < 8.0


def test_wrong_airlight_only_scales(grain_calibration: OpticsCalibration) -> None:
    """A tinted airlight other than the prior: the chroma of the grain survives (only the level is off)."""
    rng = np.random.default_rng(11)
    clean = grain_scene(rng)
    t = smooth_t(clean.shape[0], 0.5, 0.9)
    fogged = _fog(clean, t, (180.0, 190.0, 200.0))
    out = LensFogCompensation(grain_calibration).apply(fogged)
    grain = clean.mean(axis=2) > 100
    ratio_true = clean[grain].astype(float).mean(axis=0)
    ratio_out = out.image[grain].astype(float).mean(axis=0)
    chroma_true = ratio_true / ratio_true[1]
    chroma_out = ratio_out / ratio_out[1]
    assert np.abs(chroma_out - chroma_true).max() < 0.03


def test_estimate_veil_is_smooth_under_objects() -> None:
    rng = np.random.default_rng(3)
    clean = grain_scene(rng)
    t = smooth_t(clean.shape[0], 0.6, 0.9)
    fogged = _fog(clean, t, (200.0, 200.0, 200.0))
    veil = estimate_veil(fogged, 8)
    truth = 200.0 * (1 - t)
    assert np.abs(veil.mean(axis=2) - truth).max() < 10.0


def test_lens_health_hysteresis() -> None:
    health = LensHealth(FogThresholds(alarm_below=0.85, heater_on_below=0.9, heater_off_above=0.97))
    seen = [health.update(t) for t in (0.99, 0.92, 0.89, 0.84, 0.93, 0.96, 0.98, 0.95)]
    assert seen == [
        (False, False),
        (False, False),
        (False, True),
        (True, True),
        (False, True),
        (False, True),
        (False, False),
        (False, False),
    ]
