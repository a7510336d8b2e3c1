from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.fit import fit_optics_dir, image_files
from tests.calibration.conftest import grain_scene


def _write(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.mark.parametrize("layout", ["classes", "flat", "yolo"])
def test_fit_optics_dir_reads_every_layout(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    for i in range(12):
        name = {"classes": f"{'ab'[i % 2]}/{i}.png", "flat": f"{i}.png", "yolo": f"images/{i}.png"}[layout]
        _write(tmp_path / name, grain_scene(rng))
    assert len(image_files(tmp_path)) == 12
    cal = fit_optics_dir(tmp_path, max_frames=8, reference_c=15.0, valid_c=(-35.0, 35.0))
    assert cal.provenance.n_samples == 8
    assert cal.provenance.valid_c == (-35.0, 35.0)
    assert cal.led.reference_c == 15.0
    assert max(cal.clean_veil_bgr) < 3.0  # a black plate
    assert abs(cal.chroma.log_rg_mean - np.log(0.99)) < 0.03


def test_fit_optics_with_reference_region(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(4):
        img = grain_scene(rng)
        img[:16, :16] = (100, 110, 120)
        _write(tmp_path / f"{i}.png", img)
    cal = fit_optics_dir(tmp_path, reference=(0.0, 0.0, 0.1, 0.1))
    assert cal.reference is not None
    assert np.allclose(cal.reference.bgr, (100, 110, 120), atol=1.0)


def test_fit_optics_needs_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        fit_optics_dir(tmp_path)
