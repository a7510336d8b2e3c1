"""Lens fog: blind per-frame estimate of the condensation veil and its inversion.

Physics (see `docs/cold.md`): a camera window colder than the hall's dew point fogs, and the frame is seen through
a veil, ``observed = true * t + A * (1 - t)`` per channel, with transmission ``t`` (about 0.5-1.0) varying smoothly
over the frame, airlight ``A`` bright (0.7-0.95 of full scale, grey or tinted) and a droplet blur of up to ~2 px.

Estimate, using only the frame and the commissioning statistics (`OpticsCalibration`):

1. The additive veil ``V_c(x) = A_c (1 - t(x))`` is smooth and never exceeds the frame. On a block grid
   (`block_px`), each block's per-channel minimum is an upper bound of the veil there. A robust smooth surface fitted
   with asymmetric weights keeps the blocks near the lower envelope (the empty plate, the scene's dark parts) and
   drops blocks filled by bright objects (a grain, a lit bead); a normalised convolution of the kept blocks then
   gives the veil map everywhere, interpolated under the objects. The clean frames' own level at commissioning
   (`clean_veil_bgr`) is subtracted, so a clean frame is left alone.
2. The airlight's tint is the veil's own tint (grey or coloured, and it includes any LED gain applied to the veil),
   its brightness the prior `airlight_fraction`: ``t(x) = 1 - mean_c V_c(x) / mean_c A_c``, floored at
   `min_transmission`. A wrong airlight prior only scales the recovered frame's brightness (grey), not its chroma.
3. Inversion ``J_c = (I_c - V_c) / t``, then a mild unsharp mask scaled by ``1 - t`` where the lens is fogged.

Usage::

    fog = LensFogCompensation(optics_calibration)
    out = fog.apply(frame_bgr)          # FogResult: image, transmission map, estimates
    out.estimate.transmission_mean      # publish as the lens-health metric
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.files import FogThresholds, OpticsCalibration

__all__ = ["FogEstimate", "FogResult", "LensFogCompensation", "LensHealth", "estimate_veil"]

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

CLIP_LEVEL = 250.0  # an observed channel at or above this (of 255) is treated as clipped
_GREEN_HEADROOM = 1.05  # defogged green may exceed full scale by this factor (green LED gain, noise)


@dataclass(frozen=True, slots=True)
class FogEstimate:
    """What the blind estimate found in one frame."""

    transmission_mean: float
    transmission_min: float
    airlight_bgr: tuple[float, float, float]  # in pixel units
    veil_mean_bgr: tuple[float, float, float]  # mean additive veil removed, pixel units


@dataclass(frozen=True, slots=True)
class FogResult:
    """A compensated frame, its transmission map and the estimates."""

    image: U8  # H x W x 3 BGR
    transmission: F32  # H x W
    clipped: npt.NDArray[np.bool_]  # H x W x 3: channels clipped in the observed frame (for the gain layer)
    estimate: FogEstimate


def _block_min(img: F32, block: int) -> tuple[F32, int, int]:
    """Per-channel minimum over non-overlapping blocks (edge blocks padded by replication)."""
    h, w = img.shape[:2]
    gh, gw = -(-h // block), -(-w // block)
    pad = np.pad(img, ((0, gh * block - h), (0, gw * block - w), (0, 0)), mode="edge")
    grid = pad.reshape(gh, block, gw, block, 3).min(axis=(1, 3))
    return np.ascontiguousarray(grid, dtype=np.float32), gh, gw


def _poly_design(gh: int, gw: int, degree: int) -> F32:
    y, x = np.mgrid[0:gh, 0:gw].astype(np.float32)
    x = (x + 0.5) / gw * 2 - 1
    y = (y + 0.5) / gh * 2 - 1
    cols = [x**i * y**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return np.stack([c.ravel() for c in cols], axis=1).astype(np.float32)


def estimate_veil(image: U8 | F32, block_px: int = 8, clean_bgr: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> F32:
    """The smooth additive veil V (H x W x 3, pixel units) of a frame, before any airlight assumption.

    Exposed on its own so commissioning (`fit.fit_optics`) measures clean frames with the very same estimator.
    """
    import cv2

    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    smooth = np.asarray(cv2.blur(img, (3, 3)), dtype=np.float32)  # JPEG and sensor noise would bias a block minimum low
    grid, gh, gw = _block_min(smooth, block_px)
    lum = grid.mean(axis=2).ravel()
    # robust low envelope: an asymmetric IRLS fit of a cubic surface; blocks far above it hold objects
    design = _poly_design(gh, gw, 3)
    # start from the darkest 40 % of blocks (the plate, the scene's shadows), then let the fit decide
    weight = (lum <= np.quantile(lum, 0.4)).astype(np.float32)
    fit = np.full_like(lum, float(np.median(lum)))
    for _ in range(5):
        sw = np.sqrt(weight)[:, None]
        coef, *_ = np.linalg.lstsq(design * sw, lum * sw[:, 0], rcond=None)
        fit = design @ coef
        resid = lum - fit
        kept = resid[weight > 0]
        scale = float(np.clip(1.4826 * np.median(np.abs(kept)), 1.5, 15.0)) if kept.size else 2.0
        weight = (resid < 3.0 * scale).astype(np.float32)
    keep = (weight > 0).astype(np.float32).reshape(gh, gw)
    # normalised convolution of the kept blocks: follows any smooth shape, fills under objects
    sigma = max(1.0, 0.08 * max(gh, gw))
    den = cv2.GaussianBlur(keep, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    veil_grid = np.empty_like(grid)
    fit_grid = fit.reshape(gh, gw)
    lum_grid = grid.mean(axis=2)
    for c in range(3):
        num = cv2.GaussianBlur(grid[..., c] * keep, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        # where no block was kept nearby, fall back on the fitted surface with this channel's share
        share = float((grid[..., c] * keep).sum() / max(1e-6, (lum_grid * keep).sum()))
        veil_grid[..., c] = np.where(den > 0.05, num / np.maximum(den, 1e-6), fit_grid * share)
    veil = cv2.resize(veil_grid, (w, h), interpolation=cv2.INTER_LINEAR)
    veil = np.maximum(veil - np.asarray(clean_bgr, dtype=np.float32), 0.0)
    return np.asarray(np.minimum(veil, img.max()), dtype=np.float32)


class LensFogCompensation:
    """Removes a lens-condensation veil from BGR frames, blind, with the commissioning statistics only."""

    def __init__(self, calibration: OpticsCalibration) -> None:
        self.calibration = calibration

    def estimate(self, image: U8) -> tuple[F32, F32, npt.NDArray[np.float32]]:
        """(veil H x W x 3, transmission H x W, airlight per channel) of one frame."""
        cal = self.calibration
        img = np.asarray(image, dtype=np.float32)
        veil = estimate_veil(img, cal.block_px, cal.clean_veil_bgr)
        tint = veil.reshape(-1, 3).mean(axis=0)
        if float(tint.mean()) > 1.0:
            tint = tint / float(tint.mean())
            # the brightest channel of the airlight cannot exceed full scale
            a_max = cal.full_scale / float(tint.max())
        else:
            tint = np.ones(3, dtype=np.float32)
            a_max = cal.full_scale
        a_mean = min(cal.airlight_fraction * cal.full_scale, a_max)
        a_mean = self._raise_airlight(img, veil, a_mean, a_max)
        airlight = (tint * a_mean).astype(np.float32)
        t = 1.0 - veil.mean(axis=2) / a_mean
        t = np.clip(t, cal.min_transmission, 1.0).astype(np.float32)
        return veil, t, airlight

    def _raise_airlight(self, img: F32, veil: F32, a_mean: float, a_max: float) -> float:
        """Raise the airlight prior when it would push the defogged green channel above full scale.

        t = 1 - v / A: too dark an airlight under-estimates t and over-brightens the frame until it clips. The
        green channel (the LEDs' most stable) of unclipped pixels may exceed full scale by at most `_GREEN_HEADROOM`
        at its 99.5th percentile; the smallest airlight (>= the prior, <= full scale) meeting that is used.
        """
        cal = self.calibration
        limit = cal.full_scale * _GREEN_HEADROOM
        v = veil.mean(axis=2)
        g = img[..., 1]
        ok = (img < CLIP_LEVEL * cal.full_scale / 255.0).all(axis=2) & (v > 1.0)
        if int(ok.sum()) < 100:
            return a_mean
        g_ok, v_ok, vg_ok = g[ok], v[ok], veil[..., 1][ok]

        def p995(a: float) -> float:
            t = np.clip(1.0 - v_ok / a, cal.min_transmission, 1.0)
            return float(np.percentile((g_ok - vg_ok) / t, 99.5))

        if p995(a_mean) <= limit:
            return a_mean
        if p995(a_max) > limit:
            return a_max
        lo, hi = a_mean, a_max
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if p995(mid) > limit:
                lo = mid
            else:
                hi = mid
        return hi

    def apply(self, image: U8, estimate: tuple[F32, F32, npt.NDArray[np.float32]] | None = None) -> FogResult:
        """Invert the veil and sharpen mildly where fogged; returns the frame and the estimates.

        `estimate` (from `estimate()` on an earlier frame of the same camera) skips the estimation: a veil changes
        over minutes, so a line re-estimates it every second or so and inverts every frame with it."""
        import cv2

        cal = self.calibration
        veil, t, airlight = self.estimate(image) if estimate is None else estimate
        img = np.asarray(image, dtype=np.float32)
        clipped = img >= CLIP_LEVEL * cal.full_scale / 255.0
        out = (img - veil) / t[..., None]
        fogged = 1.0 - t
        if cal.deblur_amount > 0 and float(fogged.max()) > 0.02:
            blurred = cv2.GaussianBlur(out, (0, 0), cal.deblur_sigma_px)
            amount = (cal.deblur_amount * np.clip(fogged / 0.5, 0.0, 1.0))[..., None]
            out = out + amount * (out - blurred)
        result = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        est = FogEstimate(
            transmission_mean=float(t.mean()),
            transmission_min=float(t.min()),
            airlight_bgr=(float(airlight[0]), float(airlight[1]), float(airlight[2])),
            veil_mean_bgr=tuple(float(v) for v in veil.reshape(-1, 3).mean(axis=0)),  # type: ignore[arg-type]
        )
        return FogResult(image=result, transmission=t, clipped=clipped, estimate=est)


class LensHealth:
    """Lens-fog alarm and lens-heater switching with hysteresis, from the estimated mean transmission.

    One instance per camera; `update(t)` returns (alarm, heater_on). The heater switches on below
    `heater_on_below` and off only above `heater_off_above`, so a transmission hovering at a threshold does not
    chatter the coil.
    """

    def __init__(self, thresholds: FogThresholds, heater_on: bool = False) -> None:
        self.thresholds = thresholds
        self.heater_on = heater_on

    def update(self, transmission_mean: float) -> tuple[bool, bool]:
        th = self.thresholds
        if transmission_mean < th.heater_on_below:
            self.heater_on = True
        elif transmission_mean > th.heater_off_above:
            self.heater_on = False
        return transmission_mean < th.alarm_below, self.heater_on
