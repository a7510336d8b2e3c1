from __future__ import annotations

import numpy as np

from calibration.files import LedPrior, OpticsCalibration, ReferenceRegion
from calibration.illumination import IlluminationDrift, frame_chroma, led_prior_gains
from tests.calibration.conftest import grain_scene


def _gain(img: np.ndarray, gains_bgr: tuple[float, float, float]) -> np.ndarray:
    out = np.clip(img.astype(np.float32) * np.asarray(gains_bgr, np.float32) + 0.5, 0, 255)
    return np.asarray(out, dtype=np.uint8)


def test_prior_gains() -> None:
    cal_prior = LedPrior()
    g = led_prior_gains(cal_prior, -30.0)
    assert 1.2 < g[2] < 1.3 and g[0] < 1.06 and g[1] < 1.06
    assert np.allclose(led_prior_gains(cal_prior, 20.0), 1.0)


def test_recovers_red_gain_from_the_product(grain_calibration: OpticsCalibration) -> None:
    """Known truth: red +18 % (not the prior's +25 %): the estimate lands within 3 % of the truth."""
    led = IlluminationDrift(grain_calibration)
    errs = []
    for seed in range(8):
        clean = np.asarray(grain_scene(np.random.default_rng(100 + seed)) * 0.85, np.uint8)  # no clipping
        est = led.estimate(_gain(clean, (1.02, 1.04, 1.18)), ambient_c=-30.0)
        errs.append(est.gains_bgr[2] / est.gains_bgr[1] - 1.18 / 1.04)
    assert max(abs(e) for e in errs) < 0.03 * 1.18 / 1.04


def test_clipped_red_is_filled(grain_calibration: OpticsCalibration) -> None:
    clean = grain_scene(np.random.default_rng(21))
    observed = _gain(clean, (1.0, 1.0, 1.3))
    clipped = observed >= 250
    assert clipped[..., 2].any()
    out = IlluminationDrift(grain_calibration).apply(observed, -30.0, clipped)
    grain = clean.mean(axis=2) > 100
    seen = frame_chroma(out.image, 50.0)
    truth = frame_chroma(clean, 50.0)
    assert seen is not None and truth is not None and grain.any()
    assert abs(seen[0] - truth[0]) < 0.04


def test_reference_region_measures_gains(grain_calibration: OpticsCalibration) -> None:
    img = grain_scene(np.random.default_rng(4))
    img[:16, :16] = (120, 120, 120)
    cal = grain_calibration.model_copy(
        update={"reference": ReferenceRegion(x=0.0, y=0.0, w=0.1, h=0.1, bgr=(120.0, 120.0, 120.0))}
    )
    est = IlluminationDrift(cal).estimate(_gain(img, (1.03, 1.05, 1.27)), ambient_c=None)
    assert est.source == "reference"
    assert np.allclose(est.gains_bgr, (1.03, 1.05, 1.27), atol=0.01)


def test_no_temperature_and_no_product_is_identity(grain_calibration: OpticsCalibration) -> None:
    dark = np.zeros((64, 64, 3), np.uint8)
    out = IlluminationDrift(grain_calibration).apply(dark, None)
    assert out.estimate.source == "none"
    assert np.array_equal(out.image, dark)
