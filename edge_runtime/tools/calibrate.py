"""`edge-runtime calibrate optics | sensor | baseline`: fit calibration files from commissioning data.

- optics: frames of the empty chute / reference patch and of normal product at the site's normal temperature, in
  any image layout (class folders, a flat folder, YOLO `images/`);
- sensor: an accelerometer's datasheet values (`--stream GLOB --reference-c C --sensitivity-tc-pct-per-k X
  --offset-mg-per-k Y`);
- baseline: healthy vibration recordings (cwru_bearing layout; optional `ambient_c` and `minutes_since_start`
  columns in `labels.csv`, else they count as warm and long started) scored by the shipped anomaly model.

Files are YAML with provenance, validated on the way out exactly as the runtime validates them on the way in.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.tools.datasets import DataSetError

__all__ = ["calibrate_baseline", "calibrate_optics", "calibrate_sensor", "write"]


def write(cal: Any, out: Path) -> Path:
    """Write a calibration file and read it back through the runtime's loader (FILE:LINE errors if it failed)."""
    from calibration.files import dump_calibration
    from edge_runtime.compensation import load_calibration_file

    out.parent.mkdir(parents=True, exist_ok=True)
    dump_calibration(cal, out)
    load_calibration_file(out, cal.kind)
    return out


def calibrate_optics(
    data: Path,
    out: Path,
    *,
    reference_c: float = 20.0,
    valid_c: tuple[float, float] = (-40.0, 40.0),
    reference: tuple[float, float, float, float] | None = None,
    max_frames: int = 1500,
) -> Path:
    from calibration.fit import fit_optics_dir

    try:
        cal = fit_optics_dir(data, max_frames=max_frames, reference_c=reference_c, valid_c=valid_c, reference=reference)
    except ValueError as exc:
        raise DataSetError(f"{data}: {exc}") from exc
    return write(cal, out)


def calibrate_sensor(
    stream: str,
    out: Path,
    *,
    reference_c: float,
    sensitivity_tc_pct_per_k: float,
    offset_mg_per_k: float,
    valid_c: tuple[float, float] = (-40.0, 60.0),
) -> Path:
    from calibration.fit import sensor_from_datasheet

    cal = sensor_from_datasheet(
        stream, reference_c, sensitivity_tc_pct_per_k, offset_mg_per_k, valid_c=valid_c, data="datasheet"
    )
    return write(cal, out)


def calibrate_baseline(
    data: Path, out: Path, *, ambient_c: float = 20.0, quantile: float = 0.99, warm_above_c: float = 10.0
) -> Path:
    """Anomaly scores of the healthy (`fault == normal`) recordings, with their temperature and warm-up time."""
    from calibration.cold_start import fit_baseline
    from edge_runtime.dsp import windows_of
    from edge_runtime.inference import load_model
    from edge_runtime.tools.datasets import read_recordings

    runner = load_model("vibration_anomaly")
    name = runner.manifest.inputs[0].name
    extra = _extra_columns(data / "labels.csv")
    scores: list[float] = []
    temps: list[float] = []
    minutes: list[float] = []
    for rec in read_recordings(data):
        if rec.fault != "normal":
            continue
        x = windows_of(rec.signal, rec.fs_hz, runner.manifest.preprocessing)
        if len(x) == 0:
            continue
        anomaly = runner.run({name: x[:, None, :]})["anomaly"].reshape(-1)
        row = extra.get(rec.source, {})
        t = float(row.get("ambient_c") or ambient_c)
        m0 = float(row.get("minutes_since_start") or 1e6)  # unknown: a machine that has long been running
        hop_min = float(runner.manifest.preprocessing["hop"]) / float(runner.manifest.preprocessing["rate_hz"]) / 60
        scores.extend(float(a) for a in anomaly)
        temps.extend([t] * len(anomaly))
        minutes.extend(m0 + hop_min * np.arange(len(anomaly)))
    if not scores:
        raise DataSetError(f"{data}: no healthy (`fault` normal) recording to fit a baseline from")
    cal = fit_baseline(scores, temps, minutes, data=str(data), quantile=quantile, warm_above_c=warm_above_c)
    return write(cal, out)


def _extra_columns(index: Path) -> dict[str, dict[str, str]]:
    if not index.is_file():
        return {}
    with index.open(newline="", encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh) if row.get("file")}
