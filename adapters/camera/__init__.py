"""Cameras: OpenCV capture of devices, RTSP/HTTP URLs, video files and image folders; and the simulated rice chute.

Modules, by role:

- `config`: `CameraConfig` (only this module loads with the registry, so `validate` never imports OpenCV);
- `source`: `CameraSource`, any OpenCV-readable feed as `Frame`s on the stream `<id>.image`. Capture runs in one
  thread per camera behind a small drop-oldest buffer: a slow consumer sees the newest frames, never a growing
  backlog, and every frame it missed is counted; a lost device or URL stream raises `AdapterError` so the
  supervisor reopens it;
- `simulator`: `ChuteSimulator` composes real single-grain photographs (`../shared/datasets/rice_grains`) onto a
  chute plate with the truth of every grain, and `MjpegServer` serves frames as an HTTP MJPEG network camera;
  `simulate` (`edge-runtime simulate configs/devices/chute_camera.yaml --port P`) serves the chute at
  `http://127.0.0.1:P/stream.mjpg`, which a deployment names as its camera's `source:`.
"""

from __future__ import annotations

from adapters.camera.config import CameraConfig
from adapters.registry import Kind

__all__ = ["KINDS"]

KINDS = (
    Kind(
        "camera",
        "device",
        CameraConfig,
        "adapters.camera.source:CameraSource",
        simulator="adapters.camera.simulator:simulate",
    ),
)
