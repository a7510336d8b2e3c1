"""`edge-runtime evaluate vibration_anomaly`: per-window fault-type and detection accuracy on cwru_bearing layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.severity import velocity_spectrum_rms
from edge_runtime.dsp import windows_of
from edge_runtime.tasks.vibration_anomaly import MODEL_NAME, VibrationAnomalyConfig, VibrationAnomalyTask
from edge_runtime.tools.datasets import DataSetError, read_recordings
from edge_runtime.tools.evaluate.metrics import per_class_metrics

__all__ = ["evaluate"]


def evaluate(
    data_dir: Path,
    *,
    variant: str | None = None,
    hop: int | None = None,
    degrade: Callable[[npt.NDArray[np.float32], float], npt.NDArray[np.float32]] | None = None,
    compensate: Callable[[npt.NDArray[np.float32], float], npt.NDArray[np.float32]] | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Per-window accuracy of the shipped model on a labelled directory in the cwru_bearing layout.

    `degrade(signal, fs_hz)` is applied to each raw recording before windowing (a cold-weather sensor model, for
    instance). Classes absent from the directory get `n: 0`; recordings with a label the model does not know are
    an error. Returns `accuracy` (fault type), `detection_accuracy` (normal vs any fault, by the alarm threshold),
    `n`, `per_class`, `confusion`, `per_load` and `per_rate`, and the severity: `velocity_rms_mm_s` (mean over
    windows, 10-1000 Hz) and per recording (`per_recording`). `compensate(signal, fs_hz)` (the pipeline's sensor
    compensation) runs after `degrade`.
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
    velocity_parts: list[npt.NDArray[np.float64]] = []
    per_recording: dict[str, dict[str, Any]] = {}
    for rec in recordings:
        signal = rec.signal if degrade is None else degrade(rec.signal, rec.fs_hz)
        if compensate is not None:
            signal = compensate(signal, rec.fs_hz)
        x = windows_of(signal, rec.fs_hz, pre, hop)
        v = velocity_spectrum_rms(x, float(pre["rate_hz"])) if len(x) else np.zeros(0)
        velocity_parts.append(v)
        per_recording[rec.source] = {"fault": rec.fault, "windows": len(x), "velocity_rms_mm_s": float(v.mean())}
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
        "velocity_rms_mm_s": float(np.concatenate(velocity_parts).mean()) if velocity_parts else float("nan"),
        "per_recording": per_recording,
        "per_class": per_class_metrics(labels, matrix),
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
        "per_load": {("unknown" if k < 0 else str(k)): _acc(loads == k) for k in sorted(set(loads.tolist()))},
        "per_rate": {str(k): _acc(rates == k) for k in sorted(set(rates.tolist()))},
    }
