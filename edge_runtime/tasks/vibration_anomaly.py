"""Bearing fault classification and anomaly alarm on drive-end vibration windows (model `vibration_anomaly`).

The model takes raw acceleration in g at its own rate (manifest `preprocessing.rate_hz`, `window` samples) and
returns the fault-class softmax `probs` and an `anomaly` score in [0, 1]; normalisation lives inside the graph.
The pipeline cuts windows with `edge_runtime.dsp.cut_windows`; training and offline evaluation cut theirs with
`edge_runtime.dsp.windows_of` (the same function underneath), so every path feeds the model identical inputs.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from adapters.base import EdgeRuntimeError, Result, Stats
from calibration.severity import ZONE_LIMITS, velocity_spectrum_rms, zone
from edge_runtime.inference import ModelRunner
from edge_runtime.streams import StreamMap
from edge_runtime.tasks.base import InvalidInputs, TaskConfigBase, Window

__all__ = ["MODEL_NAME", "VibrationAnomalyConfig", "VibrationAnomalyTask"]

MODEL_NAME = "vibration_anomaly"


class VibrationAnomalyConfig(TaskConfigBase):
    """The pipeline's `task:` for bearing vibration windows."""

    kind: Literal["vibration_anomaly"] = Field(description="Task kind.")
    anomaly_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Alarm when the anomaly score reaches this value; null uses the manifest's `thresholds.anomaly`.",
    )
    min_rms_g: float = Field(
        default=0.0,
        ge=0.0,
        description="Windows whose RMS (after removing the mean) is below this are reported as `idle` without "
        "an alarm: a stopped machine or an unplugged sensor is not a bearing fault. 0 disables the check.",
    )
    alarm_k: int = Field(
        default=1,
        ge=1,
        description="Debounce: `decision` is `alarm` only when at least `alarm_k` of the stream's last `alarm_n` "
        "windows reached the threshold (1 of 1: every window decides alone). A single noisy window from a "
        "forklift passing should not stop a line.",
    )
    alarm_n: int = Field(default=1, ge=1, le=1000, description="Debounce window length, in windows per stream.")
    machine_class: Literal["I", "II", "III", "IV"] = Field(
        default="II",
        description="ISO 10816-1 / 20816-1 machine class for the severity zone: I small (< 15 kW), II medium "
        "(15-75 kW, or up to 300 kW on special foundations), III large on rigid foundations, IV large on soft ones.",
    )
    zone_limits_mm_s: tuple[float, float, float] | None = Field(
        default=None,
        description="Velocity RMS limits A/B, B/C, C/D in mm/s; overrides the machine class's limits.",
    )

    @model_validator(mode="after")
    def _debounce(self) -> VibrationAnomalyConfig:
        if self.alarm_k > self.alarm_n:
            raise ValueError(f"alarm_k ({self.alarm_k}) cannot exceed alarm_n ({self.alarm_n})")
        limits = self.zone_limits_mm_s
        if limits is not None and not 0 < limits[0] < limits[1] < limits[2]:
            raise ValueError("zone_limits_mm_s must be increasing positive A/B, B/C, C/D limits")
        return self

    def zone_limits(self) -> tuple[float, float, float]:
        return self.zone_limits_mm_s or ZONE_LIMITS[self.machine_class]


class VibrationAnomalyTask:
    """Classifies each window's bearing state and raises an alarm when the anomaly score reaches the threshold."""

    def __init__(self, config: VibrationAnomalyConfig, runner: ModelRunner) -> None:
        manifest = runner.manifest
        self.name = MODEL_NAME
        self.config = config
        self.runner = runner
        self.stats = Stats()
        self.labels = list(manifest.labels)
        self.window = int(manifest.preprocessing["window"])
        self.rate_hz = float(manifest.preprocessing["rate_hz"])
        self.zones = config.zone_limits()
        self.input_name = manifest.inputs[0].name
        if config.anomaly_threshold is not None:
            self.threshold = config.anomaly_threshold
        elif "anomaly" in manifest.thresholds:
            self.threshold = manifest.thresholds["anomaly"]
        else:
            raise EdgeRuntimeError(f"model {runner.ident}: no `thresholds.anomaly` and no anomaly_threshold set")
        self._invalid = InvalidInputs(self.stats, "invalid_windows", runner.ident)
        # per stream: last alarm_n over-threshold flags; bounded (the pipeline sets the limit to max_streams)
        self.stream_state: StreamMap[str, collections.deque[bool]] = StreamMap()

    def _debounced(self, stream: str, over: bool) -> bool:
        recent = self.stream_state.get(stream)
        if recent is None:
            recent = collections.deque(maxlen=self.config.alarm_n)
            self.stream_state[stream] = recent
        recent.append(over)
        return sum(recent) >= self.config.alarm_k

    def process(self, items: Sequence[Window]) -> list[Result]:
        """One result per window, in order; a malformed window gives `decision: invalid`, never an error."""
        if not items:
            return []
        ok = np.array([w.samples.shape == (self.window,) for w in items], dtype=bool)
        batch = np.zeros((len(items), 1, self.window), dtype=np.float32)
        if ok.any():
            batch[ok, 0] = np.stack([w.samples for w, good in zip(items, ok, strict=True) if good])
        ok &= np.isfinite(batch).all(axis=(1, 2))
        batch[~ok] = 0.0
        self._invalid.record(int((~ok).sum()), len(items))
        out = self.runner.run({self.input_name: batch})
        probs, anomaly = out["probs"], out["anomaly"]
        centred = batch[:, 0] - batch[:, 0].mean(axis=1, keepdims=True)
        idle = np.sqrt((centred * centred).mean(axis=1)) < self.config.min_rms_g
        velocity = velocity_spectrum_rms(batch[:, 0], self.rate_hz)
        top = probs.argmax(axis=1)
        results: list[Result] = []
        for i, w in enumerate(items):
            if not ok[i]:
                results.append(
                    Result(
                        pipeline="",
                        stream=w.stream,
                        t_ns=w.t_ns,
                        decision="invalid",
                        values={"anomaly_score": None},
                        detail={"scores": {}},
                    )
                )
                continue
            over = bool(anomaly[i] >= self.threshold) and not idle[i]
            alarm = self._debounced(w.stream, over)
            decision = "idle" if idle[i] else ("alarm" if alarm else "ok")
            results.append(
                Result(
                    pipeline="",
                    stream=w.stream,
                    t_ns=w.t_ns,
                    decision=decision,
                    label=self.labels[top[i]],
                    score=float(probs[i, top[i]]),
                    values={
                        "anomaly_score": float(anomaly[i]),
                        "anomaly_threshold": float(self.threshold),
                        "velocity_rms_mm_s": round(float(velocity[i]), 4),
                        "severity_zone": zone(float(velocity[i]), self.zones),
                    },
                    detail={"scores": {lab: float(p) for lab, p in zip(self.labels, probs[i], strict=True)}},
                )
            )
        return results
