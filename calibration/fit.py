"""Fitting behind `edge-runtime calibrate optics | sensor | baseline` (arrays in, calibration models out).

The CLI reads the commissioning data (images, recordings) and hands arrays to these functions; `fit_optics_dir` is
the one convenience that walks an image directory itself (class folders, a flat folder, or a YOLO `images/`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.cold_start import fit_baseline
from calibration.files import (
    ChromaStats,
    LedPrior,
    OpticsCalibration,
    Provenance,
    ReferenceRegion,
    SensorCalibration,
    SensorEntry,
)
from calibration.illumination import frame_chroma
from calibration.lens_fog import estimate_veil

__all__ = [
    "fit_baseline",
    "fit_optics",
    "fit_optics_dir",
    "fit_sensor_from_recordings",
    "image_files",
    "sensor_from_datasheet",
]

U8 = npt.NDArray[np.uint8]
_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def fit_optics(
    frames: Iterable[U8],
    *,
    data: str,
    reference_c: float = 20.0,
    valid_c: tuple[float, float] = (-40.0, 40.0),
    block_px: int = 8,
    reference: tuple[float, float, float, float] | None = None,
    led: LedPrior | None = None,
    airlight_fraction: float = 0.85,
) -> OpticsCalibration:
    """Commissioning statistics from clean frames at normal temperature.

    `reference` is an optional (x, y, w, h) region, as fractions of the frame, of known colour (its commissioning
    colour is measured here). `reference_c` is the commissioning temperature, where the LED gains are 1.
    """
    import cv2

    veils: list[npt.NDArray[np.float64]] = []
    greys: list[float] = []
    kept: list[U8] = []
    ref_levels: list[npt.NDArray[np.float64]] = []
    for frame in frames:
        img = np.asarray(frame, dtype=np.uint8)
        veil = estimate_veil(img, block_px)
        veils.append(veil.reshape(-1, 3).mean(axis=0).astype(np.float64))
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        otsu, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        greys.append(float(otsu))
        kept.append(img)
        if reference is not None:
            h, w = img.shape[:2]
            x, y, rw, rh = reference
            patch = img[int(y * h) : max(int(y * h) + 1, int((y + rh) * h)), int(x * w) : max(1, int((x + rw) * w))]
            ref_levels.append(patch.reshape(-1, 3).mean(axis=0))
    if not kept:
        raise ValueError("fit_optics: no frames")
    veil_arr = np.stack(veils)
    clean = np.median(veil_arr, axis=0)
    foreground_min = max(40.0, float(np.median(greys)) * 0.5)
    logs, rg_px, bg_px = [], [], []
    for img in kept:
        seen = frame_chroma(img, foreground_min, img >= 250)
        if seen is not None:
            logs.append(seen[:2])
        fg = (img.mean(axis=2) > foreground_min) & ~(img >= 250).any(axis=2)
        if fg.sum() >= 50:
            px = img[fg].astype(np.float64) + 0.5
            rg_px.append(float(np.median(px[:, 2] / px[:, 1])))
            bg_px.append(float(np.median(px[:, 0] / px[:, 1])))
    if not logs:
        raise ValueError("fit_optics: no frame has a foreground to take product chroma from")
    la = np.asarray(logs)
    chroma = ChromaStats(
        foreground_min=round(foreground_min, 2),
        log_rg_mean=float(la[:, 0].mean()),
        log_rg_std=float(la[:, 0].std()),
        log_bg_mean=float(la[:, 1].mean()),
        log_bg_std=float(la[:, 1].std()),
        rg_pixel_median=float(np.median(rg_px)) if rg_px else math.exp(float(la[:, 0].mean())),
        bg_pixel_median=float(np.median(bg_px)) if bg_px else math.exp(float(la[:, 1].mean())),
    )
    region = None
    if reference is not None:
        level = np.mean(ref_levels, axis=0)
        region = ReferenceRegion(
            x=reference[0],
            y=reference[1],
            w=reference[2],
            h=reference[3],
            bgr=(float(level[0]), float(level[1]), float(level[2])),
        )
    prior = led if led is not None else LedPrior(reference_c=reference_c)
    return OpticsCalibration(
        kind="optics",
        provenance=Provenance.today(data, valid_c, n_samples=len(kept), note=f"commissioning at {reference_c} degC"),
        block_px=block_px,
        clean_veil_bgr=(float(clean[0]), float(clean[1]), float(clean[2])),
        clean_veil_p90=float(np.percentile(veil_arr.mean(axis=1), 90)),
        chroma=chroma,
        reference=region,
        airlight_fraction=airlight_fraction,
        led=prior,
    )


def image_files(data_dir: Path) -> list[Path]:
    """Images of a commissioning directory: class folders, a flat folder, or a YOLO `images/` folder."""
    data_dir = Path(data_dir)
    root = data_dir / "images" if (data_dir / "images").is_dir() else data_dir
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())


def fit_optics_dir(data_dir: Path, *, max_frames: int = 1500, seed: int = 0, **options: object) -> OpticsCalibration:
    """`fit_optics` on (an evenly drawn sample of at most `max_frames` of) a directory's images."""
    import cv2

    files = image_files(data_dir)
    if not files:
        raise ValueError(f"{data_dir}: no images")
    if len(files) > max_frames:
        rng = np.random.default_rng(seed)
        files = [files[i] for i in sorted(rng.choice(len(files), max_frames, replace=False))]

    def frames() -> Iterable[U8]:
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is not None:
                yield np.asarray(img, dtype=np.uint8)

    return fit_optics(frames(), data=str(data_dir), **options)  # type: ignore[arg-type]


def sensor_from_datasheet(
    stream: str,
    reference_c: float,
    sensitivity_tc_pct_per_k: float,
    offset_mg_per_k: float,
    *,
    valid_c: tuple[float, float] = (-40.0, 60.0),
    data: str = "datasheet",
) -> SensorCalibration:
    """A sensor calibration from a datasheet's linear coefficients (`calibrate sensor --stream ...`)."""
    entry = SensorEntry(
        stream=stream,
        reference_c=reference_c,
        sensitivity_tc_pct_per_k=sensitivity_tc_pct_per_k,
        offset_mg_per_k=offset_mg_per_k,
    )
    return SensorCalibration(kind="sensor", provenance=Provenance.today(data, valid_c, 1), sensors=[entry])


def fit_sensor_from_recordings(
    stream: str,
    temperatures_c: Sequence[float],
    measured_rms_g: Sequence[float],
    measured_mean_g: Sequence[float],
    *,
    reference_c: float,
    reference_rms_g: float,
    reference_mean_g: float = 0.0,
    degree: int = 2,
    data: str = "recordings",
) -> SensorCalibration:
    """Fit s(T) and offset(T) polynomials from a reference excitation recorded at several temperatures.

    At each temperature the sensor sees the same excitation (a shaker or a reference accelerometer's known level):
    `measured_rms / reference_rms` is s(T), `measured_mean - reference_mean` the offset. Polynomials in
    (T - reference_c) without a constant term (s = 1, offset = 0 at the reference) are fitted by least squares.
    """
    t = np.asarray(temperatures_c, dtype=np.float64) - reference_c
    deg = max(1, min(degree, len(t) - 1))
    design = np.stack([t ** (k + 1) for k in range(deg)], axis=1)
    s = np.asarray(measured_rms_g, dtype=np.float64) / reference_rms_g - 1.0
    o = (np.asarray(measured_mean_g, dtype=np.float64) - reference_mean_g) * 1000.0
    s_coef, *_ = np.linalg.lstsq(design, s, rcond=None)
    o_coef, *_ = np.linalg.lstsq(design, o, rcond=None)
    entry = SensorEntry(
        stream=stream,
        reference_c=reference_c,
        sensitivity_tc_pct_per_k=float(s_coef[0] * 100.0),
        offset_mg_per_k=float(o_coef[0]),
        sensitivity_poly=[float(c) for c in s_coef],
        offset_poly_mg=[float(c) for c in o_coef],
    )
    lo, hi = float(np.min(temperatures_c)), float(np.max(temperatures_c))
    return SensorCalibration(
        kind="sensor",
        provenance=Provenance.today(data, (lo, hi) if lo < hi else (lo - 1, hi + 1), len(t)),
        sensors=[entry],
    )
