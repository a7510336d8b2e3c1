"""Calibration files: strict, frozen pydantic models and their YAML form.

Three kinds, told apart by `kind` (a discriminated union, written out once in `CalibrationFile`):

- `optics`: what the blind fog and LED-gain estimates need, fitted by `calibration.fit.fit_optics` from frames taken at
  commissioning (normal temperature, clean lens): the clean frames' veil-estimator level, the chroma statistics of the
  product, an optional reference region, the airlight prior, the lens-fog alarm and heater thresholds, and the LED
  gain prior per channel as a polynomial in temperature.
- `sensor`: accelerometer sensitivity and offset versus temperature, one entry per stream glob (datasheet values or a
  fit from recordings at several temperatures).
- `baseline`: the healthy anomaly-score baseline conditioned on temperature and time since start.

`model_validate(dict)` on `CalibrationFile` (or `parse_calibration`) is the one entry point: a caller that wants
`FILE:LINE` errors (the runtime's line-numbered YAML loader) parses the text itself and hands the dict over, so every
check lives in the models and none in the loader. `dump_calibration` / `load_calibration` are the plain YAML helpers
for the fitting tools and tests.

Sign conventions (also in `docs/cold.md`): a temperature difference is always `dT = T - reference_c`; a sensor reads
`measured_g = true_g * s(T) + offset_g(T)` with `s(T) = 1 + sensitivity_tc_pct_per_k / 100 * dT` (or the
polynomial) and `offset_g(T) = offset_mg_per_k / 1000 * dT` (or the polynomial, in mg); an LED channel's gain is
`1 + sum_k c_k * dT**k`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

__all__ = [
    "BaselineCalibration",
    "BaselineCell",
    "CalibrationFile",
    "ChromaStats",
    "FogThresholds",
    "LedPrior",
    "OpticsCalibration",
    "Provenance",
    "ReferenceRegion",
    "SensorCalibration",
    "SensorEntry",
    "dump_calibration",
    "load_calibration",
    "parse_calibration",
]


class _Strict(BaseModel):
    """Unknown keys are errors, values are immutable (the same rules as the runtime's config models)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Provenance(_Strict):
    """Where a calibration came from and where it holds."""

    created: str = Field(description="ISO 8601 date (or date-time) the calibration was made.")
    data: str = Field(description="What it was fitted from: a data directory, a datasheet, a commissioning record.")
    valid_c: tuple[float, float] = Field(
        description="Ambient temperature range [lo, hi] in degC where the calibration holds; outside it results are "
        "marked `quality=uncertain`, never clamped."
    )
    n_samples: int = Field(default=0, ge=0, description="Frames, recordings or datasheet entries it was fitted from.")
    note: str = Field(default="", description="Free text: operator, site, instrument serials.")

    @model_validator(mode="after")
    def _range(self) -> Provenance:
        lo, hi = self.valid_c
        if not lo < hi:
            raise ValueError(f"valid_c must be [lo, hi] with lo < hi, got [{lo}, {hi}]")
        return self

    def covers(self, temperature_c: float) -> bool:
        """True when `temperature_c` lies inside `valid_c` (inclusive)."""
        lo, hi = self.valid_c
        return lo <= temperature_c <= hi

    @classmethod
    def today(cls, data: str, valid_c: tuple[float, float], n_samples: int = 0, note: str = "") -> Provenance:
        """Provenance stamped with today's date."""
        return cls(created=_dt.date.today().isoformat(), data=data, valid_c=valid_c, n_samples=n_samples, note=note)


class ReferenceRegion(_Strict):
    """A patch of the view whose true colour is known: an empty chute, a grey or white card."""

    x: float = Field(ge=0.0, lt=1.0, description="Left edge, as a fraction of the frame width.")
    y: float = Field(ge=0.0, lt=1.0, description="Top edge, as a fraction of the frame height.")
    w: float = Field(gt=0.0, le=1.0, description="Width, as a fraction of the frame width.")
    h: float = Field(gt=0.0, le=1.0, description="Height, as a fraction of the frame height.")
    bgr: tuple[float, float, float] = Field(description="Its mean B, G, R level at commissioning (0-255).")

    @model_validator(mode="after")
    def _inside(self) -> ReferenceRegion:
        if self.x + self.w > 1.0 + 1e-9 or self.y + self.h > 1.0 + 1e-9:
            raise ValueError("the reference region must lie inside the frame (x + w <= 1, y + h <= 1)")
        return self


class ChromaStats(_Strict):
    """Per-frame chroma of the product at commissioning: log(mean R / mean G) and log(mean B / mean G).

    Measured on the frame's foreground (pixels brighter than `foreground_min`, none clipped) after the veil is
    removed; `calibration.illumination.frame_chroma` is the one function that computes it, at commissioning and live.
    """

    foreground_min: float = Field(ge=0.0, le=255.0, description="Grey level above which a pixel is foreground.")
    log_rg_mean: float = Field(description="Mean over frames of log(mean R / mean G).")
    log_rg_std: float = Field(ge=0.0, description="Spread over frames of log(mean R / mean G).")
    log_bg_mean: float = Field(description="Mean over frames of log(mean B / mean G).")
    log_bg_std: float = Field(ge=0.0, description="Spread over frames of log(mean B / mean G).")
    rg_pixel_median: float = Field(gt=0.0, description="Median per-pixel R/G of the foreground (fills clipped red).")
    bg_pixel_median: float = Field(gt=0.0, description="Median per-pixel B/G of the foreground (fills clipped blue).")


class FogThresholds(_Strict):
    """Lens-health decisions on the estimated mean transmission."""

    alarm_below: float = Field(default=0.85, gt=0.0, le=1.0, description="Raise `lens_fog` below this transmission.")
    heater_on_below: float = Field(
        default=0.90, gt=0.0, le=1.0, description="Switch the lens heater on below this transmission."
    )
    heater_off_above: float = Field(
        default=0.97, gt=0.0, le=1.0, description="Switch it off again above this (hysteresis)."
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> FogThresholds:
        if self.heater_off_above <= self.heater_on_below:
            raise ValueError("heater_off_above must exceed heater_on_below (hysteresis)")
        return self


class LedPrior(_Strict):
    """LED channel gain versus temperature: gain_c(T) = 1 + sum_k coef_c[k] * (T - reference_c)**(k+1)."""

    reference_c: float = Field(default=20.0, description="Temperature (degC) at which every gain is 1.")
    blue: list[float] = Field(default=[-0.0008], description="Blue (InGaN) polynomial coefficients, per K, K^2, ...")
    green: list[float] = Field(default=[-0.001], description="Green (InGaN) polynomial coefficients, per K, K^2, ...")
    red: list[float] = Field(default=[-0.005], description="Red (AlInGaP) polynomial coefficients, per K, K^2, ...")
    uncertainty: float = Field(
        default=0.5,
        ge=0.0,
        description="Standard deviation of the prior as a fraction of its predicted drift (how much a datasheet "
        "curve is trusted against the frame's own evidence).",
    )


class OpticsCalibration(_Strict):
    """Commissioning statistics for the blind lens-fog and LED-gain compensation of one camera view."""

    kind: Literal["optics"] = Field(description="Calibration kind.")
    provenance: Provenance = Field(description="Date, data and valid temperature range.")
    full_scale: float = Field(default=255.0, gt=0.0, description="Pixel value of full scale (255 for 8-bit).")
    block_px: int = Field(default=8, ge=2, le=64, description="Block size (px) of the veil estimator's grid.")
    clean_veil_bgr: tuple[float, float, float] = Field(
        description="Veil-estimator output on clean commissioning frames (median over frames, per channel): the "
        "scene's own dark level, subtracted so a clean frame is left alone."
    )
    clean_veil_p90: float = Field(ge=0.0, description="90th percentile over frames of the clean veil level (grey).")
    chroma: ChromaStats = Field(description="Product chroma at commissioning, for the LED gain estimate.")
    reference: ReferenceRegion | None = Field(
        default=None, description="A region of known colour, when one is in view."
    )
    airlight_fraction: float = Field(
        default=0.85,
        ge=0.5,
        le=1.0,
        description="Prior airlight brightness as a fraction of full scale (condensation veils are 0.7-0.95).",
    )
    min_transmission: float = Field(
        default=0.3, gt=0.0, lt=1.0, description="Floor of the estimated transmission (limits noise gain)."
    )
    deblur_amount: float = Field(
        default=0.6,
        ge=0.0,
        le=2.0,
        description="Unsharp-mask amount applied where the lens is most fogged (scaled by 1 - t); 0 disables.",
    )
    deblur_sigma_px: float = Field(default=1.2, gt=0.0, le=5.0, description="Unsharp-mask Gaussian sigma (px).")
    fog: FogThresholds = Field(default_factory=FogThresholds, description="Lens-fog alarm and heater thresholds.")
    led: LedPrior = Field(default_factory=LedPrior, description="LED gain prior versus temperature.")


class SensorEntry(_Strict):
    """Temperature behaviour of the accelerometers whose stream names match `stream`."""

    stream: str = Field(description="Stream glob (fnmatch), e.g. `line1.*.vib_*`.")
    reference_c: float = Field(description="Temperature (degC) of the sensor's reference sensitivity (datasheet).")
    sensitivity_tc_pct_per_k: float = Field(
        description="Sensitivity change in % per K: s(T) = 1 + tc / 100 * (T - reference_c). Positive when the "
        "sensitivity falls below the reference temperature (piezoelectric)."
    )
    offset_mg_per_k: float = Field(description="DC offset in mg per K of (T - reference_c).")
    sensitivity_poly: list[float] | None = Field(
        default=None,
        description="Optional s(T) - 1 as a polynomial in (T - reference_c): coefficients per K, K^2, ...; "
        "replaces the linear coefficient when given.",
    )
    offset_poly_mg: list[float] | None = Field(
        default=None,
        description="Optional offset in mg as a polynomial in (T - reference_c): coefficients per K, K^2, ...; "
        "replaces the linear coefficient when given.",
    )


class SensorCalibration(_Strict):
    """Accelerometer sensitivity and offset versus temperature, per stream glob (first match wins)."""

    kind: Literal["sensor"] = Field(description="Calibration kind.")
    provenance: Provenance = Field(description="Date, data and valid temperature range.")
    sensors: list[SensorEntry] = Field(min_length=1, description="One entry per stream glob, first match wins.")


class BaselineCell(_Strict):
    """Healthy anomaly scores in one (temperature, time since start) cell."""

    temp_lo_c: float = Field(description="Lower temperature bound (degC, inclusive).")
    temp_hi_c: float = Field(description="Upper temperature bound (degC, exclusive).")
    minutes_lo: float = Field(ge=0.0, description="Lower bound of minutes since start (inclusive).")
    minutes_hi: float = Field(gt=0.0, description="Upper bound of minutes since start (exclusive).")
    n: int = Field(ge=0, description="Healthy windows in the cell.")
    score_q: float = Field(ge=0.0, le=1.0, description="The cell's `quantile` of healthy anomaly scores.")


class BaselineCalibration(_Strict):
    """Cold-start anomaly baseline: healthy score level by temperature and time since start.

    `threshold(T, m) = max(model_threshold, warm_q + excess(T, m) + margin)` where `excess` decays exponentially
    with minutes since start `m` (time constant `tau_min`) and grows linearly with how far `T` lies below
    `warm_above_c`: `excess = slope_per_k * max(0, warm_above_c - T) * exp(-m / tau_min)`. Cells hold the measured
    quantiles the parameters were fitted from (for audit).
    """

    kind: Literal["baseline"] = Field(description="Calibration kind.")
    provenance: Provenance = Field(description="Date, data and valid temperature range.")
    quantile: float = Field(default=0.99, gt=0.5, lt=1.0, description="Quantile of healthy scores the baseline tracks.")
    warm_q: float = Field(ge=0.0, le=1.0, description="Healthy score quantile once warm.")
    warm_above_c: float = Field(description="Ambient temperature (degC) above which no cold-start excess is expected.")
    slope_per_k: float = Field(ge=0.0, description="Excess score per K below `warm_above_c`, at start.")
    tau_min: float = Field(gt=0.0, description="Time constant (minutes) of the warm-up decay.")
    margin: float = Field(default=0.02, ge=0.0, le=1.0, description="Added to the baseline before judging a score.")
    cells: list[BaselineCell] = Field(default_factory=list, description="Measured cells behind the fit.")


CalibrationFile = Annotated[OpticsCalibration | SensorCalibration | BaselineCalibration, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[OpticsCalibration | SensorCalibration | BaselineCalibration] = TypeAdapter(CalibrationFile)


def parse_calibration(data: Any) -> OpticsCalibration | SensorCalibration | BaselineCalibration:
    """Validate a parsed YAML mapping (the one entry point; raises `pydantic.ValidationError`)."""
    return _ADAPTER.validate_python(data)


def dump_calibration(cal: OpticsCalibration | SensorCalibration | BaselineCalibration, path: Path | str) -> None:
    """Write a calibration file as YAML (block style, keys in model order)."""
    import yaml

    data = cal.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8")


def load_calibration(path: Path | str) -> OpticsCalibration | SensorCalibration | BaselineCalibration:
    """Read and validate a calibration file (plain YAML; the runtime's loader adds FILE:LINE to errors)."""
    import yaml

    return parse_calibration(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
