"""Builders shared by the camera tests: a small, fast simulated chute and a camera that reads to the end."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from adapters.base import Frame
from adapters.camera.config import CameraConfig
from adapters.camera.simulator import ChuteSimulatorConfig
from adapters.camera.source import CameraSource
from tests.helpers import until

REPO = Path(__file__).resolve().parents[3]
DATA = REPO.parent / "shared" / "datasets" / "rice_grains"

wait_for = partial(until, timeout_s=30.0)


def small_chute(**overrides: object) -> ChuteSimulatorConfig:
    """A small, fast chute: few images per variety, small frames."""
    options: dict[str, object] = {
        "data_dir": str(DATA),
        "width": 320,
        "height": 240,
        "grains_per_s": 100.0,
        "fps": 25.0,
        "images_per_variety": 40,
        "touching_share": 0.0,
        "seed": 11,
    }
    options.update(overrides)
    return ChuteSimulatorConfig.model_validate(options)


def camera(source: int | str, **overrides: object) -> CameraSource:
    return CameraSource(CameraConfig.model_validate({"kind": "camera", "id": "cam1", "source": source, **overrides}))


async def collect(source: CameraSource, limit: int = 10_000) -> list[Frame]:
    """Open, read until the stream ends (or `limit` frames), close."""
    frames: list[Frame] = []
    await source.open()
    try:
        async for frame in source.stream():
            frames.append(frame)
            if len(frames) >= limit:
                break
    finally:
        await source.close()
    return frames
