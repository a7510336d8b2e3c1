"""Synthetic scenes with known truth for the calibration layers."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from calibration.files import OpticsCalibration
from calibration.fit import fit_optics


def grain_scene(rng: np.random.Generator, size: int = 160) -> npt.NDArray[np.uint8]:
    """One bright ellipse ("grain") on a near-black plate, BGR."""
    import cv2

    img = np.zeros((size, size, 3), np.float32)
    centre = (int(rng.integers(size // 3, 2 * size // 3)), int(rng.integers(size // 3, 2 * size // 3)))
    axes = (int(rng.integers(size // 5, size // 3)), int(rng.integers(size // 12, size // 8)))
    level = float(rng.uniform(200, 225))  # like rice: the level varies, the chroma barely (about 1 %)
    colour = (level * float(rng.normal(1.03, 0.01)), level, level * float(rng.normal(0.99, 0.01)))
    cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    img += rng.normal(0, 2.0, img.shape).astype(np.float32) * (img > 0)
    img += 0.6
    return np.clip(img, 0, 255).astype(np.uint8)


def smooth_t(size: int, lo: float, hi: float) -> npt.NDArray[np.float32]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    f = 0.6 * x + 0.4 * y + 0.5 * np.exp(-((x - 0.3) ** 2 + (y - 0.7) ** 2) / 0.1)
    f = (f - f.min()) / (f.max() - f.min())
    return np.asarray(lo + (hi - lo) * f, dtype=np.float32)


@pytest.fixture(scope="session")
def grain_calibration() -> OpticsCalibration:
    rng = np.random.default_rng(0)
    return fit_optics((grain_scene(rng) for _ in range(40)), data="synthetic grains")
