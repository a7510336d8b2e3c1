"""`edge-runtime bench --recording FILE`: the end-to-end suites take their inputs from a flight recording (the
line's own frames and waveforms) instead of synthetic ones.

A suite asks for the samples its task would see: those whose stream matches the inputs of a recorded pipeline of
that task (`rice_sorter`, `weld_inspector`, `vibration_anomaly`). A recording without such a pipeline gives none,
and the suite says in its details that it fell back to synthetic inputs, so no figure claims line data it lacks.
"""

from __future__ import annotations

import argparse
import fnmatch
from pathlib import Path
from typing import Any

from adapters.base import Frame, Reading
from edge_runtime.recorder import Recording

__all__ = ["add_recording_option", "recorded_inputs"]


def add_recording_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recording", type=Path, default=None, help="take the inputs from this flight recording (edge-runtime record)"
    )


def recorded_inputs(path: Path, task: str, limit: int) -> tuple[list[Frame] | list[Reading], dict[str, Any]]:
    """Up to `limit` samples of the recording that a `task` pipeline of the recorded config consumes, in recorded
    order (frames for frame tasks, good waveform blocks for `vibration_anomaly`), and a description for the
    suite's details."""
    recording = Recording(path)
    patterns = [
        pattern
        for p in (recording.header.get("replay") or {}).get("pipelines") or []
        if (p.get("task") or {}).get("kind") == task
        for pattern in p.get("inputs") or []
    ]
    frames: list[Frame] = []
    blocks: list[Reading] = []
    streams: set[str] = set()
    waveform = task == "vibration_anomaly"
    for rec in recording if patterns else ():
        sample = rec.sample
        if not any(fnmatch.fnmatchcase(sample.stream, p) for p in patterns):
            continue
        if waveform and isinstance(sample, Reading) and sample.value.ndim == 1 and sample.rate_hz:
            blocks.append(sample)
        elif not waveform and isinstance(sample, Frame):
            frames.append(sample)
        else:
            continue
        streams.add(sample.stream)
        if len(frames) + len(blocks) >= limit:
            break
    n = len(frames) + len(blocks)
    about: dict[str, Any] = {
        "recording": str(path),
        "recorded_utc": recording.header.get("started_utc"),
        "samples": n,
        "streams": sorted(streams),
        "data": "recording" if n else f"synthetic (the recording holds no {task} inputs)",
    }
    return (blocks if waveform else frames), about
