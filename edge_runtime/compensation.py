"""Low-temperature compensation in the pipeline: between windowing and the task, each pipeline runs the layers its
config lists (`compensation:`), each a thin wrapper around a pure-math layer of `calibration/` and its calibration
file. `calibration/` raises plain `ValueError`s (it imports nothing of the runtime); they surface here as
`CalibrationError`, which names the pipeline, the layer and the file.
"""

from __future__ import annotations

from adapters.base import EdgeRuntimeError

__all__ = ["CalibrationError"]


class CalibrationError(EdgeRuntimeError):
    """A calibration file does not fit its pipeline (wrong kind, unknown stream, missing temperature tag)."""
