"""Low-temperature compensation in the pipeline: the layers a pipeline's `compensation:` lists, between windowing
and the task.

Each layer is a thin wrapper around a pure-math layer of `calibration/` and its calibration file:

- `lens_fog` (frames): removes the condensation veil blindly (`calibration.lens_fog`), publishes the estimated lens
  transmission on every result (`lens_transmission`), raises `lens_fog` below the file's alarm threshold and, when
  `heater: true`, switches a `lens_heater` field with hysteresis (map it to a coil with a `modbus-write` action);
- `led_drift` (frames): corrects LED channel-gain drift (`calibration.illumination`) from a reference region, the
  product's commissioning chroma and the temperature prior;
- `sensor_drift` (waveform windows): divides by the accelerometer's sensitivity at the time-aligned temperature and
  removes its offset (`calibration.sensor_drift`);
- `cold_start` (vibration results): judges the anomaly score against the healthy baseline at that temperature and
  time since the machine started (`calibration.cold_start`), so a cold start does not raise a false alarm;
- `weld_thermal` (weld results): heat input and cooling time t8/5 from the weld cell's own tags (EN 1011-2,
  `calibration.weld_thermal`), `preheat_required` when t8/5 leaves the procedure's band.

Temperatures and process tags are side inputs: the service routes the scalar readings a layer names to its
pipeline (`SideInputs`), and each window or frame is compensated with the reading at its own time. A temperature
outside the calibration's valid range marks the result `quality=uncertain` (the correction is still applied, never
silently clamped); a missing temperature does too. `calibration/` raises plain `ValueError`s (it imports nothing of
the runtime); a calibration that does not fit its pipeline surfaces as `CalibrationError`.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import Field, ValidationError, model_validator

from adapters.base import EdgeRuntimeError, Frame, Reading, Result, Scalar, StrictModel

if TYPE_CHECKING:
    from calibration.files import BaselineCalibration, OpticsCalibration, SensorCalibration
    from edge_runtime.tasks.base import Window

__all__ = [
    "CALIBRATION_KIND",
    "LAYER_INPUTS",
    "CalibrationError",
    "CompensationConfig",
    "Layer",
    "Note",
    "SideInputs",
    "build_layers",
    "load_calibration_file",
]


class CalibrationError(EdgeRuntimeError):
    """A calibration file is invalid or does not fit its pipeline (wrong kind, unknown stream)."""


# --------------------------------------------------------------------------------------------------- config


class _LayerConfig(StrictModel):
    calibration: str = Field(
        description="Calibration file (YAML, from `edge-runtime calibrate`); relative to the deployment file."
    )
    temperature: str | None = Field(
        default=None,
        description="Stream of the ambient temperature tag (degC) from any device, e.g. `plc1.hall_temp`; "
        "each input is compensated with the reading at its own time.",
    )


class LensFogLayerConfig(_LayerConfig):
    """Blind removal of lens condensation; lens health on every result."""

    kind: Literal["lens_fog"] = Field(description="Layer kind.")
    estimate_every_s: float = Field(
        default=1.0,
        ge=0.0,
        le=3600.0,
        description="Re-estimate the veil at most this often (s); frames in between are inverted with the last "
        "estimate. Condensation changes over minutes; 0 estimates on every frame.",
    )
    heater: bool = Field(
        default=False,
        description="Publish `lens_heater` (true/false with the calibration's hysteresis) on every result, for a "
        "`modbus-write` action `{field: lens_heater, table: coil, mode: value}` driving the lens heater.",
    )


class LedDriftLayerConfig(_LayerConfig):
    """LED channel-gain drift of the illumination."""

    kind: Literal["led_drift"] = Field(description="Layer kind.")


class _TemperatureLayerConfig(_LayerConfig):
    temperature: str = Field(  # required here, optional for the optics layers
        min_length=1, description="Stream of the temperature tag (degC) the correction depends on; required."
    )


class SensorDriftLayerConfig(_TemperatureLayerConfig):
    """Accelerometer sensitivity and offset versus temperature (at the sensor)."""

    kind: Literal["sensor_drift"] = Field(description="Layer kind.")


class ColdStartLayerConfig(_TemperatureLayerConfig):
    """Anomaly alarms judged against the healthy baseline at the ambient temperature and time since start."""

    kind: Literal["cold_start"] = Field(description="Layer kind.")
    idle_rms_g: float = Field(
        default=0.02,
        ge=0.0,
        le=100.0,
        description="A window below this RMS (g) means the machine stands still; the next one above it is a start.",
    )


class PyrometerConfig(StrictModel):
    """A line-scan pyrometer on the seam behind the torch: one temperature profile per scan."""

    stream: str = Field(description="Stream of the profile (an array reading, first point nearest the torch).")
    spacing_mm: float = Field(gt=0.0, le=1000.0, description="Distance along the seam between profile points (mm).")
    emissivity: float = Field(gt=0.0, le=1.0, description="The seam's true emissivity (oxidised steel ~0.8).")
    emissivity_set: float = Field(default=1.0, gt=0.0, le=1.0, description="Emissivity set in the pyrometer.")
    mode: Literal["broadband", "spectral"] = Field(default="broadband", description="Pyrometer type.")
    wavelength_um: float = Field(default=1.0, gt=0.0, le=20.0, description="Spectral pyrometers: wavelength (um).")


class WeldThermalLayerConfig(StrictModel):
    """Cooling time t8/5 of each weld from the cell's tags (EN 1011-2), beside the visual verdict."""

    kind: Literal["weld_thermal"] = Field(description="Layer kind.")
    current: str = Field(description="Stream of the welding current (A).")
    voltage: str = Field(description="Stream of the arc voltage (V).")
    travel_speed: str = Field(description="Stream of the travel speed (mm/s).")
    temperature: str = Field(description="Stream of the preheat or ambient temperature of the plate (degC).")
    thickness_mm: float = Field(gt=0.0, le=500.0, description="Plate thickness (mm), from the welding procedure.")
    efficiency: float = Field(
        default=0.8, gt=0.0, le=1.0, description="Thermal efficiency k of the process (EN 1011-2: MAG 0.8)."
    )
    joint_factor_2d: float = Field(default=0.9, gt=0.0, le=2.0, description="Shape factor F2 (2-D heat flow).")
    joint_factor_3d: float = Field(default=0.9, gt=0.0, le=2.0, description="Shape factor F3 (3-D heat flow).")
    t85_min_s: float = Field(gt=0.0, le=1000.0, description="Shortest t8/5 the procedure allows (s).")
    t85_max_s: float = Field(gt=0.0, le=1000.0, description="Longest t8/5 the procedure allows (s).")
    pyrometer: PyrometerConfig | None = Field(
        default=None,
        description="Where a pyrometer reads the seam behind the torch, t8/5 is measured from its cooling curve "
        "(corrected for emissivity and the cold hall's reflection) and the computed value is the fallback.",
    )
    average_s: float = Field(
        default=4.0,
        gt=0.0,
        le=600.0,
        description="Current, voltage and travel speed are averaged over the arc-on readings of this many seconds "
        "before each frame (about one bead).",
    )

    @model_validator(mode="after")
    def _band(self) -> WeldThermalLayerConfig:
        if self.t85_min_s >= self.t85_max_s:
            raise ValueError("t85_min_s must be below t85_max_s")
        return self


CompensationConfig = Annotated[
    LensFogLayerConfig | LedDriftLayerConfig | SensorDriftLayerConfig | ColdStartLayerConfig | WeldThermalLayerConfig,
    Field(discriminator="kind"),
]

# what each layer corrects (frames or waveform windows), and the calibration file kind it reads
LAYER_INPUTS: dict[str, Literal["frames", "windows"]] = {
    "lens_fog": "frames",
    "led_drift": "frames",
    "sensor_drift": "windows",
    "cold_start": "windows",
    "weld_thermal": "frames",
}
CALIBRATION_KIND = {"lens_fog": "optics", "led_drift": "optics", "sensor_drift": "sensor", "cold_start": "baseline"}


def load_calibration_file(path: Path, expect: str | None = None) -> Any:
    """A calibration file, validated like a config (`FILE:LINE: path: why` errors in `ConfigError`)."""
    from calibration.files import parse_calibration
    from edge_runtime.config import ConfigError, errors_from
    from edge_runtime.yamlsrc import Problem, load_located

    located, errors = load_located(path)
    if errors:
        raise ConfigError(errors)
    try:
        cal = parse_calibration(located.data)
    except ValidationError as exc:
        raise ConfigError(errors_from(exc, located)) from exc
    if expect is not None and cal.kind != expect:
        raise ConfigError([Problem(path, 1, "kind", f"a {expect} calibration is needed here, not {cal.kind}")])
    return cal


# --------------------------------------------------------------------------------------------------- side inputs


class SideInputs:
    """The recent history of the scalar tags the layers read, so each input is compensated with the value at its
    own time (the latest reading at or before it, or the first after it when none is older). Bounded per stream."""

    def __init__(self, streams: Sequence[str], depth: int = 512) -> None:
        self.streams = tuple(dict.fromkeys(streams))
        self._history: dict[str, collections.deque[tuple[int, float]]] = {
            s: collections.deque(maxlen=depth) for s in self.streams
        }
        self.profiles: dict[str, tuple[int, npt.NDArray[np.float64]]] = {}

    def wants(self, stream: str) -> bool:
        return stream in self._history

    def push(self, reading: Reading) -> None:
        history = self._history.get(reading.stream)
        if history is None or reading.quality == "bad":
            return
        if reading.value.ndim == 1:  # a profile (a pyrometer's line scan): its latest copy is what layers read
            self.profiles[reading.stream] = (reading.t_ns, np.asarray(reading.value, dtype=np.float64))
            return
        if reading.value.ndim != 0:
            return
        try:
            value = float(reading.value)
        except (TypeError, ValueError):
            return
        if math.isfinite(value):
            history.append((reading.t_ns, value))

    def mean_active(self, stream: str, t_ns: int, span_ns: int) -> float | None:
        """Mean of the positive readings in (t_ns - span_ns, t_ns]: the arc-on average of a welding current,
        voltage or travel speed over the last bead (a bead's heat input is its mean arc power, not an instant)."""
        history = self._history.get(stream)
        if not history:
            return None
        inside = [(t, v) for t, v in history if t_ns - span_ns < t <= t_ns and v > 0]
        if not inside or inside[-1][0] - inside[0][0] < span_ns // 2:
            return None  # less than half a bead seen: an average of a few samples would mislead
        return sum(v for _, v in inside) / len(inside)

    def at(self, stream: str | None, t_ns: int) -> float | None:
        if stream is None:
            return None
        history = self._history.get(stream)
        if not history:
            return None
        best = None
        for t, v in reversed(history):
            best = v
            if t <= t_ns:
                break
        return best


# --------------------------------------------------------------------------------------------------- layers


@dataclass(slots=True)
class Note:
    """What the layers did to one input: scalar estimates for `Result.values`, the layers applied, the quality."""

    values: dict[str, Scalar] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)  # why the result is only `uncertain`


class Layer(Protocol):
    kind: str

    def streams(self) -> list[str]: ...

    def before(self, items: list[Any], notes: list[Note], side: SideInputs) -> list[Any]: ...

    def after(self, items: Sequence[Any], results: list[Result], notes: list[Note], side: SideInputs) -> None: ...


Gauge = tuple[str, dict[str, str], float]  # metric name, labels, value


def _check_range(note: Note, kind: str, provenance: Any, temp: float | None) -> None:
    if temp is None:
        note.uncertain.append(f"{kind}: no temperature reading")
    elif not provenance.covers(temp):
        lo, hi = provenance.valid_c
        note.uncertain.append(f"{kind}: {temp:.1f} degC outside the calibration's {lo:g}..{hi:g} degC")


class _OpticsLayer:
    def __init__(self, config: LensFogLayerConfig | LedDriftLayerConfig, calibration: OpticsCalibration) -> None:
        self.kind: str = config.kind
        self.config = config
        self.calibration = calibration

    def streams(self) -> list[str]:
        return [self.config.temperature] if self.config.temperature else []

    def after(self, items: Sequence[Any], results: list[Result], notes: list[Note], side: SideInputs) -> None:
        return None


class LensFogLayer(_OpticsLayer):
    def __init__(self, config: LensFogLayerConfig, calibration: OpticsCalibration) -> None:
        from calibration.lens_fog import LensFogCompensation, LensHealth

        super().__init__(config, calibration)
        self._health_of: type[LensHealth] = LensHealth
        self.heater_config = config.heater
        self._fog = LensFogCompensation(calibration)
        self._health: dict[
            str, Any
        ] = {}  # per camera stream (calibration.lens_fog.LensHealth): fog alarm and heater hysteresis
        self.every_ns = int(config.estimate_every_s * 1e9)
        self.transmission: dict[str, float] = {}  # stream -> latest estimate, for /metrics
        self._estimate: dict[str, tuple[int, tuple[int, ...], Any]] = {}  # stream -> (t_ns, shape, estimate)

    def before(self, items: list[Frame], notes: list[Note], side: SideInputs) -> list[Frame]:
        out = []
        for frame, note in zip(items, notes, strict=True):
            last = self._estimate.get(frame.stream)
            if last is None or last[1] != frame.image.shape or abs(frame.t_ns - last[0]) >= self.every_ns:
                if len(self._estimate) >= 256:  # bounded: cameras, not topics
                    self._estimate.pop(next(iter(self._estimate)))
                last = (frame.t_ns, frame.image.shape, self._fog.estimate(frame.image))
                self._estimate[frame.stream] = last
            result = self._fog.apply(frame.image, last[2])
            t = result.estimate.transmission_mean
            self.transmission[frame.stream] = t
            health = self._health.get(frame.stream)
            if health is None:
                if len(self._health) >= 256:  # bounded: cameras, not topics
                    self._health.pop(next(iter(self._health)))
                health = self._health[frame.stream] = self._health_of(self.calibration.fog)
            alarm, heater = health.update(t)
            note.values["lens_transmission"] = round(t, 4)
            note.values["lens_fog"] = alarm
            if self.heater_config:
                note.values["lens_heater"] = heater
            note.applied.append(self.kind)
            if self.config.temperature:
                temp = side.at(self.config.temperature, frame.t_ns)
                if temp is not None and not self.calibration.provenance.covers(temp):
                    _check_range(note, self.kind, self.calibration.provenance, temp)
            out.append(Frame(frame.stream, frame.t_ns, result.image, frame.meta))
        return out

    def heater_states(self) -> dict[str, bool]:
        return {stream: h.heater_on for stream, h in self._health.items()}


class LedDriftLayer(_OpticsLayer):
    def __init__(self, config: LedDriftLayerConfig, calibration: OpticsCalibration) -> None:
        from calibration.illumination import IlluminationDrift

        super().__init__(config, calibration)
        self._led = IlluminationDrift(calibration)

    def before(self, items: list[Frame], notes: list[Note], side: SideInputs) -> list[Frame]:
        out = []
        for frame, note in zip(items, notes, strict=True):
            temp = side.at(self.config.temperature, frame.t_ns)
            result = self._led.apply(frame.image, temp)
            b, g, r = result.estimate.gains_bgr
            note.values.update({"led_gain_b": round(b, 4), "led_gain_g": round(g, 4), "led_gain_r": round(r, 4)})
            note.applied.append(self.kind)
            if self.config.temperature:
                _check_range(note, self.kind, self.calibration.provenance, temp)
            out.append(Frame(frame.stream, frame.t_ns, result.image, frame.meta))
        return out


class SensorDriftLayer:
    def __init__(self, config: SensorDriftLayerConfig, calibration: SensorCalibration) -> None:
        from calibration.sensor_drift import SensitivityDrift

        self.kind: str = config.kind
        self.config = config
        self.calibration = calibration
        self._drift = SensitivityDrift(calibration)

    def streams(self) -> list[str]:
        return [self.config.temperature] if self.config.temperature else []

    def before(self, items: list[Window], notes: list[Note], side: SideInputs) -> list[Window]:
        from edge_runtime.tasks.base import Window

        out = []
        for w, note in zip(items, notes, strict=True):
            temp = side.at(self.config.temperature, w.t_ns)
            _check_range(note, self.kind, self.calibration.provenance, temp)
            if temp is None or self._drift.entry_for(w.stream) is None:
                out.append(w)
                continue
            drift = self._drift.apply(w.samples, temp, w.stream)
            note.values["sensor_temperature_c"] = round(temp, 2)
            note.values["sensor_sensitivity"] = round(drift.sensitivity, 5)
            note.applied.append(self.kind)
            out.append(Window(w.stream, w.t_ns, drift.samples, w.source_rate_hz))
        return out

    def after(self, items: Sequence[Any], results: list[Result], notes: list[Note], side: SideInputs) -> None:
        return None


class ColdStartLayer:
    def __init__(self, config: ColdStartLayerConfig, calibration: BaselineCalibration) -> None:
        from calibration.cold_start import ColdStartBaseline

        self.kind: str = config.kind
        self.config = config
        self.calibration = calibration
        self._baseline = ColdStartBaseline(calibration)
        self._started: dict[str, int] = {}  # per stream: t_ns of the first running window after standing still
        self.max_streams = 10_000

    def streams(self) -> list[str]:
        return [self.config.temperature] if self.config.temperature else []

    def before(self, items: list[Window], notes: list[Note], side: SideInputs) -> list[Window]:
        for w in items:
            x = w.samples - float(np.mean(w.samples))
            running = float(np.sqrt(np.mean(x * x))) >= self.config.idle_rms_g
            if not running:
                self._started.pop(w.stream, None)
            elif w.stream not in self._started:
                if len(self._started) >= self.max_streams:
                    self._started.pop(next(iter(self._started)))
                self._started[w.stream] = w.t_ns
        return items

    def after(self, items: Sequence[Window], results: list[Result], notes: list[Note], side: SideInputs) -> None:
        for i, (w, note) in enumerate(zip(items, notes, strict=True)):
            r = results[i]
            score = r.values.get("anomaly_score")
            threshold = r.values.get("anomaly_threshold")
            if not isinstance(score, float) or not isinstance(threshold, float) or r.decision not in ("ok", "alarm"):
                continue
            temp = side.at(self.config.temperature, w.t_ns)
            _check_range(note, self.kind, self.calibration.provenance, temp)
            if temp is None:
                continue
            start = self._started.get(w.stream, w.t_ns)
            minutes = (w.t_ns - start) / 60e9
            bar = self._baseline.threshold(temp, minutes, threshold)
            note.values["anomaly_threshold"] = round(bar, 4)
            note.values["minutes_since_start"] = round(minutes, 2)
            note.applied.append(self.kind)
            if r.decision == "alarm" and score < bar:
                results[i] = r.with_(decision="ok")


class WeldThermalLayer:
    def __init__(self, config: WeldThermalLayerConfig) -> None:
        self.kind: str = config.kind
        self.config = config

    def streams(self) -> list[str]:
        c = self.config
        return [c.current, c.voltage, c.travel_speed, c.temperature, *([c.pyrometer.stream] if c.pyrometer else [])]

    def before(self, items: list[Frame], notes: list[Note], side: SideInputs) -> list[Frame]:
        return items

    def after(self, items: Sequence[Frame], results: list[Result], notes: list[Note], side: SideInputs) -> None:
        from calibration import weld_thermal as wt

        c = self.config
        for frame, note in zip(items, notes, strict=True):
            span = int(c.average_s * 1e9)
            arc = [side.mean_active(s, frame.t_ns, span) for s in (c.current, c.voltage, c.travel_speed)]
            temp = side.at(c.temperature, frame.t_ns)
            if temp is None:
                note.uncertain.append("weld_thermal: no plate temperature reading yet")
                continue
            if any(v is None for v in arc):
                continue  # no arc in the last bead's time: nothing to judge
            current, voltage, speed = (float(v) for v in arc if v is not None)
            q = wt.heat_input_kj_mm(voltage, current, speed * 60.0, c.efficiency)
            t85, computed_regime = wt.t85_s(q, temp, c.thickness_mm, f2=c.joint_factor_2d, f3=c.joint_factor_3d)
            regime: str = computed_regime
            measured = self._measured_t85(side, speed, temp)
            if measured is not None:
                note.values["t85_computed_s"] = round(t85, 2)
                t85, regime = measured, "measured"
            verdict = wt.judge_t85(
                t85,
                (c.t85_min_s, c.t85_max_s),
                regime=regime,
                q_kj_mm=q,
                thickness_mm=c.thickness_mm,
                f2=c.joint_factor_2d,
                f3=c.joint_factor_3d,
            )
            note.values.update(
                {
                    "heat_input_kj_mm": round(q, 4),
                    "t85_s": round(t85, 2),
                    "heat_flow": regime,
                    "preheat_required": verdict.preheat_required,
                    "preheat_to_c": None if verdict.preheat_to_c is None else round(verdict.preheat_to_c, 1),
                    "thermal_ok": not (verdict.preheat_required or verdict.too_slow),
                }
            )
            note.applied.append(self.kind)

    def _measured_t85(self, side: SideInputs, speed_mm_s: float, ambient_c: float) -> float | None:
        """t8/5 from the pyrometer's latest profile: distance behind the torch / travel speed is the time since the
        arc passed; None when there is no profile or it does not cross 800 and 500 degC (a cool seam, arc off)."""
        from calibration import weld_thermal as wt

        py = self.config.pyrometer
        if py is None or py.stream not in side.profiles:
            return None
        _, line = side.profiles[py.stream]
        true_c = wt.correct_pyrometer(
            line,
            emissivity=py.emissivity,
            ambient_c=ambient_c,
            emissivity_set=py.emissivity_set,
            mode=py.mode,
            wavelength_um=py.wavelength_um,
        )
        times = np.arange(line.size, dtype=np.float64) * py.spacing_mm / speed_mm_s
        return wt.t85_from_curve(times, true_c).t85_s


def build_layers(configs: Sequence[Any], base_dir: Path, pipeline: str, waveform: bool) -> list[Layer]:
    """Layers of one pipeline, calibration files loaded and checked (raises ConfigError / CalibrationError)."""
    layers: list[Layer] = []
    for i, cfg in enumerate(configs):
        where = f"pipeline {pipeline}: compensation.{i} ({cfg.kind})"
        if (LAYER_INPUTS[cfg.kind] == "windows") != waveform:
            raise CalibrationError(f"{where}: works on {LAYER_INPUTS[cfg.kind]}, not on this pipeline's inputs")
        if isinstance(cfg, WeldThermalLayerConfig):
            layers.append(WeldThermalLayer(cfg))
            continue
        path = Path(cfg.calibration)
        cal = load_calibration_file(path if path.is_absolute() else base_dir / path, CALIBRATION_KIND[cfg.kind])
        if isinstance(cfg, LensFogLayerConfig):
            layers.append(LensFogLayer(cfg, cal))
        elif isinstance(cfg, LedDriftLayerConfig):
            layers.append(LedDriftLayer(cfg, cal))
        elif isinstance(cfg, SensorDriftLayerConfig):
            layers.append(SensorDriftLayer(cfg, cal))
        elif isinstance(cfg, ColdStartLayerConfig):
            layers.append(ColdStartLayer(cfg, cal))
    return layers


class Compensator:
    """Runs a pipeline's layers around its task, in the pipeline's worker thread."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)
        self.side = SideInputs([s for layer in self.layers for s in layer.streams()])
        self.seconds = 0.0  # time spent in the layers (metrics)

    def wants(self, stream: str) -> bool:
        return self.side.wants(stream)

    def gauges(self) -> list[Gauge]:
        """Lens health for /metrics: transmission per camera stream, the heater's state, the alarm."""
        out: list[Gauge] = []
        for layer in self.layers:
            if isinstance(layer, LensFogLayer):
                alarm = layer.calibration.fog.alarm_below
                for stream, t in layer.transmission.items():
                    out.append(("lens_transmission", {"stream": stream}, t))
                    out.append(("lens_fog", {"stream": stream}, float(t < alarm)))
                if layer.heater_config:
                    for stream, health in layer.heater_states().items():
                        out.append(("lens_heater_on", {"stream": stream}, float(health)))
        return out

    def push(self, reading: Reading) -> None:
        self.side.push(reading)

    def run(self, task_process: Any, items: list[Any]) -> list[Result]:
        if not self.layers:
            results: list[Result] = task_process(items)
            return results
        t0 = time.perf_counter()
        notes = [Note() for _ in items]
        for layer in self.layers:
            items = layer.before(items, notes, self.side)
        t1 = time.perf_counter()
        results = list(task_process(items))
        t2 = time.perf_counter()
        if len(results) == len(items):
            for layer in self.layers:
                layer.after(items, results, notes, self.side)
            results = [_annotate(r, n) for r, n in zip(results, notes, strict=True)]
        self.seconds += (t1 - t0) + (time.perf_counter() - t2)
        return results


def _annotate(result: Result, note: Note) -> Result:
    values = {**result.values, **note.values}
    detail: Mapping[str, Any] = result.detail
    if note.applied:
        detail = {**detail, "compensation": note.applied}
    if note.uncertain:
        detail = {**detail, "uncertain": note.uncertain}
    quality = "uncertain" if note.uncertain and result.quality == "good" else result.quality
    return result.with_(values=values, detail=detail, quality=quality)
