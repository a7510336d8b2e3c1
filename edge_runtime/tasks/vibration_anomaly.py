"""Bearing fault classification and anomaly alarm on drive-end vibration windows (model `vibration_anomaly`).

The model takes raw acceleration in g at its own rate (manifest `preprocessing.rate_hz`, `window` samples) and
returns the fault-class softmax `probs` and an `anomaly` score in [0, 1]; normalisation lives inside the graph.
`read_recordings`, `windows_of` and `evaluate` read the `labels.csv` + `recordings/*.npz` layout of
`../shared/datasets/cwru_bearing`; training (`models/training/train_vibration.py`) cuts its windows with the same
`windows_of`, so training, evaluation and the live pipeline feed the model identical inputs.
"""

from __future__ import annotations

import collections
import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from adapters.base import EdgeRuntimeError, Stats, StrictModel
from edge_runtime.dsp import cut_windows, source_window_length
from edge_runtime.inference import ModelRunner
from edge_runtime.tasks.base import InvalidInputs, Window, per_class_metrics

__all__ = [
    "DataSetError",
    "Recording",
    "VibrationAnomalyConfig",
    "VibrationAnomalyTask",
    "evaluate",
    "load_excerpt",
    "read_recordings",
    "windows_of",
]

log = logging.getLogger("edge_runtime.tasks.vibration_anomaly")

MODEL_NAME = "vibration_anomaly"
EXCERPT = "cwru_excerpt.npz"


class DataSetError(EdgeRuntimeError):
    """A labelled recording directory is missing its index, a needed column, or a recording."""


class VibrationAnomalyConfig(StrictModel):
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

    @model_validator(mode="after")
    def _debounce(self) -> VibrationAnomalyConfig:
        if self.alarm_k > self.alarm_n:
            raise ValueError(f"alarm_k ({self.alarm_k}) cannot exceed alarm_n ({self.alarm_n})")
        return self


@dataclass(frozen=True, slots=True)
class Recording:
    """One labelled drive-end recording: raw samples in g at `fs_hz`."""

    source: str
    signal: npt.NDArray[np.float32]
    fs_hz: float
    fault: str
    load_hp: int | None = None
    rpm: float | None = None


def _model_geometry(preprocessing: Mapping[str, Any]) -> tuple[int, float, int]:
    return int(preprocessing["window"]), float(preprocessing["rate_hz"]), int(preprocessing["hop"])


def windows_of(
    signal: npt.NDArray[Any],
    fs_hz: float,
    preprocessing: Mapping[str, Any],
    hop: int | None = None,
    *,
    span: float = 1.0,
) -> npt.NDArray[np.float32]:
    """Cut `signal` into model windows, shape (n, window), exactly as the live pipeline does.

    Windows start every `hop` model samples (default: the manifest's `hop`); each cuts
    `source_window_length(window, rate_hz, fs_hz)` source samples and resamples them with
    `dsp.resample_windows` (both through `dsp.cut_windows`). `span` != 1 cuts a longer or shorter stretch
    (a speed change, for training only).
    """
    window, rate_hz, default_hop = _model_geometry(preprocessing)
    hop = default_hop if hop is None else hop
    if hop < 1:
        raise ValueError(f"hop must be >= 1 model sample, got {hop}")
    n_src = source_window_length(window, rate_hz, fs_hz * span)
    hop_src = max(1, round(hop * fs_hz / rate_hz))
    return cut_windows(np.asarray(signal, dtype=np.float32).ravel(), n_src, hop_src, window)


def _optional_float(value: str | float | None) -> float | None:
    """A missing, empty or NaN cell is None."""
    if value is None or value == "":
        return None
    number = float(value)
    return None if np.isnan(number) else number


def read_recordings(data_dir: Path) -> list[Recording]:
    """Read a `labels.csv` + `recordings/*.npz` directory (the cwru_bearing layout).

    Needs the columns `file` and `fault` (or a `fault` array in each npz) and the rate from `fs_hz` (column or
    array); `load_hp` and `rpm` are optional. The signal is the npz's `de` array.
    """
    index = Path(data_dir) / "labels.csv"
    try:
        with index.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise DataSetError(f"{index}: not found (expected the cwru_bearing layout)") from exc
    recordings = []
    for line, row in enumerate(rows, start=2):
        if not row.get("file"):
            raise DataSetError(f"{index}:{line}: no `file` column or empty file name")
        path = index.parent / row["file"]
        try:
            with np.load(path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise DataSetError(f"{index}:{line}: cannot read {path}: {exc}") from exc
        fs = _optional_float(row.get("fs_hz")) or (float(arrays["fs_hz"]) if "fs_hz" in arrays else None)
        fault = row.get("fault") or (str(arrays["fault"]) if "fault" in arrays else None)
        if fs is None or fault is None or "de" not in arrays:
            raise DataSetError(f"{index}:{line}: {row['file']} needs fs_hz, fault and a `de` array")
        load = _optional_float(row.get("load_hp"))
        recordings.append(
            Recording(
                source=row["file"],
                signal=np.asarray(arrays["de"], dtype=np.float32).ravel(),
                fs_hz=fs,
                fault=fault,
                load_hp=None if load is None else int(load),
                rpm=_optional_float(row.get("rpm")),
            )
        )
    return recordings


def load_excerpt() -> list[Recording]:
    """The bundled excerpt (a few seconds per class, see `edge_runtime/data/README.md`) for installs without data."""
    ref = resources.files("edge_runtime") / "data" / EXCERPT
    with resources.as_file(ref) as path, np.load(path) as npz:
        n = int(npz["count"])
        return [
            Recording(
                source=str(npz["source"][i]),
                signal=npz[f"signal_{i}"].astype(np.float32),
                fs_hz=float(npz["fs_hz"][i]),
                fault=str(npz["fault"][i]),
                load_hp=int(npz["load_hp"][i]),
                rpm=_optional_float(float(npz["rpm"][i])),
            )
            for i in range(n)
        ]


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
        self.input_name = manifest.inputs[0].name
        if config.anomaly_threshold is not None:
            self.threshold = config.anomaly_threshold
        elif "anomaly" in manifest.thresholds:
            self.threshold = manifest.thresholds["anomaly"]
        else:
            raise EdgeRuntimeError(f"model {runner.ident}: no `thresholds.anomaly` and no anomaly_threshold set")
        self._invalid = InvalidInputs(self.stats, "invalid_windows", runner.ident)
        self._recent: dict[str, collections.deque[bool]] = {}  # per stream: last alarm_n over-threshold flags

    def _debounced(self, stream: str, over: bool) -> bool:
        recent = self._recent.get(stream)
        if recent is None:
            recent = self._recent[stream] = collections.deque(maxlen=self.config.alarm_n)
        recent.append(over)
        return sum(recent) >= self.config.alarm_k

    def process(self, items: Sequence[Window]) -> list[dict[str, Any]]:
        """One result dict per window, in order; a malformed window gives `decision: invalid`, never an error."""
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
        top = probs.argmax(axis=1)
        results: list[dict[str, Any]] = []
        for i, w in enumerate(items):
            if not ok[i]:
                results.append(dict(stream=w.stream, label=None, scores={}, anomaly_score=None, decision="invalid"))
                continue
            over = bool(anomaly[i] >= self.threshold) and not idle[i]
            alarm = self._debounced(w.stream, over)
            decision = "idle" if idle[i] else ("alarm" if alarm else "ok")
            results.append(
                {
                    "stream": w.stream,
                    "label": self.labels[top[i]],
                    "scores": {lab: float(p) for lab, p in zip(self.labels, probs[i], strict=True)},
                    "anomaly_score": float(anomaly[i]),
                    "decision": decision,
                }
            )
        return results


def evaluate(
    data_dir: Path,
    *,
    variant: str = "fp32",
    hop: int | None = None,
    degrade: Callable[[npt.NDArray[np.float32], float], npt.NDArray[np.float32]] | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Per-window accuracy of the shipped model on a labelled directory in the cwru_bearing layout.

    `degrade(signal, fs_hz)` is applied to each raw recording before windowing (a cold-weather sensor model, for
    instance). Classes absent from the directory get `n: 0`; recordings with a label the model does not know are
    an error. Returns `accuracy` (fault type), `detection_accuracy` (normal vs any fault, by the alarm threshold),
    `n`, `per_class`, `confusion`, `per_load` and `per_rate`.
    """
    from edge_runtime.inference import load_model

    runner = load_model(MODEL_NAME, variant=variant)
    task = VibrationAnomalyTask(VibrationAnomalyConfig(kind="vibration_anomaly"), runner)
    labels = task.labels
    recordings = read_recordings(Path(data_dir))
    unknown = sorted({r.fault for r in recordings} - set(labels))
    if unknown:
        raise DataSetError(f"{data_dir}: faults {unknown} are not among the model's labels {labels}")
    pre = runner.manifest.preprocessing
    truth_parts, pred_parts, alarm_parts, load_parts, rate_parts = [], [], [], [], []
    for rec in recordings:
        signal = rec.signal if degrade is None else degrade(rec.signal, rec.fs_hz)
        x = windows_of(signal, rec.fs_hz, pre, hop)
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            out = runner.run({task.input_name: chunk[:, None, :]})
            pred_parts.append(out["probs"].argmax(axis=1))
            alarm_parts.append(out["anomaly"] >= task.threshold)
        truth_parts.append(np.full(len(x), labels.index(rec.fault)))
        load_parts.append(np.full(len(x), -1 if rec.load_hp is None else rec.load_hp))
        rate_parts.append(np.full(len(x), int(rec.fs_hz)))
    truth = np.concatenate(truth_parts) if truth_parts else np.empty(0, dtype=np.int64)
    pred = np.concatenate(pred_parts) if pred_parts else np.empty(0, dtype=np.int64)
    alarm = np.concatenate(alarm_parts) if alarm_parts else np.empty(0, dtype=bool)
    loads = np.concatenate(load_parts) if load_parts else np.empty(0, dtype=np.int64)
    rates = np.concatenate(rate_parts) if rate_parts else np.empty(0, dtype=np.int64)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    normal = labels.index("normal")
    n = int(truth.size)

    def _acc(mask: npt.NDArray[np.bool_]) -> dict[str, float | int]:
        m = int(mask.sum())
        return {
            "n": m,
            "accuracy": float((truth[mask] == pred[mask]).mean()) if m else float("nan"),
            "detection_accuracy": float((alarm[mask] == (truth[mask] != normal)).mean()) if m else float("nan"),
        }

    everything = _acc(np.ones(n, dtype=bool))
    return {
        "model": runner.ident,
        "n": n,
        "accuracy": everything["accuracy"],
        "detection_accuracy": everything["detection_accuracy"],
        "anomaly_threshold": task.threshold,
        "per_class": per_class_metrics(labels, matrix),
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
        "per_load": {("unknown" if k < 0 else str(k)): _acc(loads == k) for k in sorted(set(loads.tolist()))},
        "per_rate": {str(k): _acc(rates == k) for k in sorted(set(rates.tolist()))},
    }
