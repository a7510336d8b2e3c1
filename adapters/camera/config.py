"""Camera configuration: what a deployment may say about a camera, validated without opening it.

Simulator settings are not part of this schema: a simulated chute is served over HTTP by
`adapters.camera.simulator` and a deployment points `source:` at its URL, as it would at a real camera.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from adapters.base import DeviceConfigBase

__all__ = ["IMAGE_SUFFIXES", "CameraConfig"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})  # what a folder source reads


class CameraConfig(DeviceConfigBase):
    """A camera: a V4L2 device, a network stream, a recording or a folder of images."""

    # A device profile leaves `source` to the deployment (`configs/devices/chute_camera.yaml`); a profile validated
    # on its own, for `edge-runtime simulate`, gets these (the chute simulator never reads the source).
    PROFILE_DEFAULTS: ClassVar[Mapping[str, Any]] = {"source": 0}

    kind: Literal["camera"] = Field(description="Device kind.")
    id: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Device id; frames are published on the stream `<id>.image`.",
    )
    source: int | str = Field(
        description="A device index (0) or path (/dev/video0), an rtsp:// or http(s):// URL, a video file, or a "
        "folder of images (read in sorted name order).",
    )
    fps: float | None = Field(
        None,
        gt=0.0,
        le=1000.0,
        description="Files and folders: playback rate (default: the file's own rate, 10 for folders). Devices and "
        "URLs: an upper bound, faster frames are skipped.",
    )
    loop: bool = Field(False, description="Files and folders: start again at the end instead of ending the stream.")
    width: int | None = Field(None, gt=0, le=16384, description="Devices: requested frame width in pixels.")
    height: int | None = Field(None, gt=0, le=16384, description="Devices: requested frame height in pixels.")
    reconnect: bool = Field(
        True,
        description="Devices and URLs: a failed read means a lost stream, raised so the supervisor reopens it; "
        "false ends the stream instead (a finite network source).",
    )
    timeout_s: float = Field(10.0, gt=0.0, le=300.0, description="URLs: open and read timeout.")
    buffer_frames: int = Field(
        2, ge=1, le=64, description="Frames held for a slow consumer; beyond this the oldest are dropped and counted."
    )
