"""LED illumination drift: per-channel gain correction.

Physics (see `docs/cold.md`): LED light output rises as the junction cools, red AlInGaP far more than green and
blue InGaN: up to about +30 % on red at -30 degC, a few % on green and blue. A colour sorter judges exactly the
chroma this shifts.

The gains are estimated from three sources, best first, and fused by inverse variance on the log chroma ratios
log(R/G) and log(B/G) (the overall level is not identifiable from a frame and barely matters to the models):

1. a configured reference region of known colour (`OpticsCalibration.reference`): measured directly;
2. the frame's product chroma against the commissioning statistics (`ChromaStats`): a grey-world on the product,
   as reliable as the product's chroma is stable (its spread at commissioning is the measurement's variance);
3. the temperature prior (`LedPrior`, a polynomial per channel), with a variance proportional to its predicted drift.

Pixels whose observed channel was clipped (a +30 % red gain saturates bright grains) are filled from the other
channels with the commissioning per-pixel ratio, as the saturated value is only a lower bound.

Usage::

    led = IlluminationDrift(optics_calibration)
    out = led.apply(fog_result.image, ambient_c=-28.5, clipped=fog_result.clipped)
    out.gains_bgr, out.source
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.files import LedPrior, OpticsCalibration

__all__ = ["GainEstimate", "IlluminationDrift", "IlluminationResult", "frame_chroma", "led_prior_gains"]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

_NO_TEMPERATURE_SIGMA = 0.25  # log-ratio spread assumed when no temperature tag is available
_PRIOR_FLOOR = 0.01  # smallest prior spread: a datasheet curve is never exact


@dataclass(frozen=True, slots=True)
class GainEstimate:
    """Estimated per-channel gains (B, G, R) and where they came from."""

    gains_bgr: tuple[float, float, float]
    source: str  # "reference", "fused", "prior", "product" or "none"
    weight_frame: float  # share of the frame's own evidence in the red ratio (0: prior only)


@dataclass(frozen=True, slots=True)
class IlluminationResult:
    image: U8
    estimate: GainEstimate


def led_prior_gains(prior: LedPrior, ambient_c: float) -> npt.NDArray[np.float64]:
    """Gains (B, G, R) the temperature prior predicts at `ambient_c`."""
    dt = ambient_c - prior.reference_c
    out = np.ones(3)
    for i, coefs in enumerate((prior.blue, prior.green, prior.red)):
        out[i] = 1.0 + sum(c * dt ** (k + 1) for k, c in enumerate(coefs))
    return np.maximum(out, 0.05)


def frame_chroma(
    image: U8 | F32, foreground_min: float, clipped: npt.NDArray[np.bool_] | None = None
) -> tuple[float, float, int] | None:
    """(log(median R / median G), log(median B / median G), n pixels) over the foreground, or None without one.

    The foreground is every pixel whose grey level exceeds `foreground_min`, clipped ones included: a clipped
    channel is only a lower bound, and a median stays right as long as fewer than half of the pixels are clipped,
    where a mean over the unclipped pixels would be biased towards the less saturated ones. `clipped` is accepted
    for symmetry and only used to refuse a frame whose foreground is mostly clipped.
    """
    img = np.asarray(image, dtype=np.float32)
    grey = img.mean(axis=2)
    fg = grey > foreground_min
    n = int(fg.sum())
    if n < 50:
        return None
    if clipped is not None and float(clipped[fg][:, 1:].any(axis=1).mean()) > 0.5:
        return None  # the median of red or green is itself clipped
    b, g, r = (float(v) for v in np.median(img[fg], axis=0))
    if min(b, g, r) <= 1.0:
        return None
    return math.log(r / g), math.log(b / g), n


class IlluminationDrift:
    """Corrects LED channel-gain drift of BGR frames (after the veil is removed)."""

    def __init__(self, calibration: OpticsCalibration) -> None:
        self.calibration = calibration

    def estimate(
        self, image: U8, ambient_c: float | None, clipped: npt.NDArray[np.bool_] | None = None
    ) -> GainEstimate:
        cal = self.calibration
        if ambient_c is not None:
            prior = led_prior_gains(cal.led, ambient_c)
            log_prior = np.log(prior)
            rel = np.array([log_prior[2] - log_prior[1], log_prior[0] - log_prior[1]])  # log R/G, log B/G
            sig_p = np.maximum(cal.led.uncertainty * np.abs(rel), _PRIOR_FLOOR)
            green = float(prior[1])
        else:
            rel = np.zeros(2)
            sig_p = np.full(2, _NO_TEMPERATURE_SIGMA)
            green = 1.0
        if cal.reference is not None:
            measured = self._reference_gains(image)
            if measured is not None:
                return GainEstimate(tuple(float(v) for v in measured), "reference", 1.0)  # type: ignore[arg-type]
        ch = cal.chroma
        seen = frame_chroma(image, ch.foreground_min, clipped)
        if seen is None:
            src = "prior" if ambient_c is not None else "none"
            fused, w_frame = rel, 0.0
        else:
            meas = np.array([seen[0] - ch.log_rg_mean, seen[1] - ch.log_bg_mean])
            sig_m = np.maximum(np.array([ch.log_rg_std, ch.log_bg_std]), 0.005)
            wp, wm = 1.0 / sig_p**2, 1.0 / sig_m**2
            fused = (rel * wp + meas * wm) / (wp + wm)
            w_frame = float(wm[0] / (wp[0] + wm[0]))
            src = "fused" if ambient_c is not None else "product"
        gains = (green * math.exp(fused[1]), green, green * math.exp(fused[0]))
        return GainEstimate(gains, src, w_frame)

    def _reference_gains(self, image: U8) -> npt.NDArray[np.float64] | None:
        ref = self.calibration.reference
        assert ref is not None
        h, w = image.shape[:2]
        x0, y0 = int(ref.x * w), int(ref.y * h)
        x1, y1 = max(x0 + 1, int((ref.x + ref.w) * w)), max(y0 + 1, int((ref.y + ref.h) * h))
        patch = np.asarray(image[y0:y1, x0:x1], dtype=np.float64).reshape(-1, 3)
        if patch.size == 0 or (patch >= 250).any(axis=1).mean() > 0.5:
            return None
        seen = patch.mean(axis=0)
        return np.asarray(np.maximum(seen / np.maximum(np.asarray(ref.bgr), 1.0), 0.05), dtype=np.float64)

    def apply(
        self, image: U8, ambient_c: float | None, clipped: npt.NDArray[np.bool_] | None = None
    ) -> IlluminationResult:
        """Divide each channel by its estimated gain; fill clipped channels from the others."""
        est = self.estimate(image, ambient_c, clipped)
        gains = np.asarray(est.gains_bgr, dtype=np.float32)
        out = np.asarray(image, dtype=np.float32) / gains
        if clipped is not None and clipped.any():
            out = self._fill_clipped(out, clipped)
        return IlluminationResult(np.clip(out + 0.5, 0, 255).astype(np.uint8), est)

    def _fill_clipped(self, out: F32, clipped: npt.NDArray[np.bool_]) -> F32:
        """A clipped channel is at least its commissioning ratio times the pixel's level from unclipped channels."""
        ch = self.calibration.chroma
        ratio = np.array([ch.bg_pixel_median, 1.0, ch.rg_pixel_median], dtype=np.float32)  # channel / green
        rows = clipped.any(axis=2)
        px, cl = out[rows], clipped[rows]
        level_each = px / ratio
        free = ~cl
        n_free = free.sum(axis=1)
        level = np.where(
            n_free > 0,
            (level_each * free).sum(axis=1) / np.maximum(n_free, 1),
            level_each.max(axis=1),  # all clipped: the brightest lower bound
        )
        fill = np.maximum(px, level[:, None] * ratio)
        out[rows] = np.where(cl, fill, px)
        return out
