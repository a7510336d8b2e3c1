"""The camera source: real OpenCV on real files, folders and an HTTP MJPEG camera on loopback."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import AdapterError, Frame, Sample
from adapters.camera.simulator import ChuteSimulator, MjpegServer
from adapters.camera.source import classify_source, decode_image, redact
from adapters.supervise import Backoff, DecodeGuard, supervise

from .common import camera, collect, small_chute, wait_for


def test_classify_and_redact(tmp_path: Path) -> None:
    assert classify_source(0) == classify_source("2") == classify_source("/dev/video1") == "device"
    assert classify_source("rtsp://10.0.0.5/stream") == "url"
    assert classify_source("chute-sim") == "file"  # no simulator hides behind a name any more
    assert classify_source(str(tmp_path)) == "folder"
    assert classify_source(str(tmp_path / "line.avi")) == "file"
    assert redact("rtsp://admin:secret@10.0.0.5:554/ch1") == "rtsp://***@10.0.0.5:554/ch1"
    assert redact("http://10.0.0.5/x") == "http://10.0.0.5/x"


# ---------------------------------------------------------------------------------------------------------------
# Folder and file sources


async def test_folder_source_reads_sorted_skips_corrupt_and_ends(tmp_path: Path) -> None:
    sim = ChuteSimulator(small_chute())
    truths = sim.write_frames(tmp_path, 6)
    assert len(truths) == 6 and (tmp_path / "truth.csv").is_file()
    (tmp_path / "frame_000002x.png").write_bytes(b"\x89PNG not really an image")
    source = camera(str(tmp_path), fps=500.0, buffer_frames=16)  # room for all: none dropped
    frames = await collect(source)
    names = [str(f.meta["source"]) for f in frames]
    assert names == [f"frame_{i:06d}.png" for i in range(6)]
    assert source.stats["frames_unreadable"] == 1 and source.stats["frames_dropped"] == 0
    for i, frame in enumerate(frames):
        assert frame.stream == "cam1.image"
        assert frame.meta["frame_index"] == i
        assert np.array_equal(frame.image, np.asarray(cv2.imread(str(tmp_path / names[i]))))  # PNG: lossless round trip
    assert all(a.t_ns < b.t_ns for a, b in itertools.pairwise(frames))


async def test_folder_source_is_paced_at_fps(tmp_path: Path) -> None:
    ChuteSimulator(small_chute(width=96, height=64)).write_frames(tmp_path, 3)
    source = camera(str(tmp_path), fps=20.0, loop=True)
    loop = asyncio.get_running_loop()
    frames: list[Frame] = []
    start = loop.time()
    await source.open()
    try:
        async for frame in source.stream():
            frames.append(frame)
            if len(frames) == 8:
                break
    finally:
        await source.close()
    elapsed = loop.time() - start
    # unpaced, 8 frames of 96x64 take milliseconds; at 20 fps the 8th is due 0.35 s after the first (a frame
    # late by more than a period is followed by at most one more without waiting)
    assert len(frames) <= 20.0 * elapsed + 2
    assert [f.meta["source"] for f in frames[:4]] == [*(f"frame_{i:06d}.png" for i in range(3)), "frame_000000.png"]


async def test_folder_with_no_images_fails_to_open(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(AdapterError, match="no images"):
        await camera(str(tmp_path)).open()


async def test_video_file_round_trip(tmp_path: Path) -> None:
    sim = ChuteSimulator(small_chute())
    path = tmp_path / "chute.avi"
    truths = sim.write_video(path, 12)
    assert len(truths) == 12
    frames = await collect(camera(str(path), fps=500.0, buffer_frames=16))
    assert len(frames) == 12
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    replay = ChuteSimulator(small_chute())
    first, _ = replay.next_frame()
    assert np.abs(frames[0].image.astype(np.int16) - first).mean() < 4.0  # MJPEG is lossy, but the same frame


async def test_missing_file_and_device_fail_to_open(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="no such file"):
        await camera(str(tmp_path / "missing.avi")).open()
    with pytest.raises(AdapterError, match="cannot open"):
        await camera("/dev/video99").open()


async def test_slow_consumer_gets_the_newest_frames_and_drops_are_counted(tmp_path: Path) -> None:
    total = 40
    ChuteSimulator(small_chute(width=96, height=64, grains_per_s=0.0)).write_frames(tmp_path, total)
    source = camera(str(tmp_path), fps=1000.0, buffer_frames=2)
    received: list[int] = []
    await source.open()
    try:
        stream = source.stream()
        received.append(int((await anext(stream)).meta["frame_index"]))
        # a consumer busy elsewhere while the producer runs to the end of the folder
        await wait_for(lambda: source.stats["frames_dropped"] >= total - 3 - received[0])
        async for frame in stream:
            received.append(int(frame.meta["frame_index"]))
    finally:
        await source.close()
    assert source.stats["frames_dropped"] > 0
    assert source.stats["frames_dropped"] + len(received) == total
    assert received[-2:] == [total - 2, total - 1]  # the newest survive, the oldest were dropped
    assert received == sorted(set(received))


# ---------------------------------------------------------------------------------------------------------------
# Reconnect under supervise


async def test_url_stream_lost_is_reopened_by_supervise() -> None:
    sim = ChuteSimulator(small_chute(width=160, height=120))
    server = MjpegServer(lambda: sim.next_frame()[0], fps=30.0)
    await server.start()
    port = server.port
    source = camera(server.url, timeout_s=3.0)
    frames: list[Sample] = []

    async def emit(sample: Sample) -> None:
        frames.append(sample)

    task = asyncio.create_task(supervise(source, emit, Backoff(initial_s=0.05, max_s=0.2)))
    try:
        await wait_for(lambda: len(frames) >= 3)
        assert isinstance(frames[0], Frame) and frames[0].image.shape == (120, 160, 3)
        await server.stop()  # the camera loses power
        await wait_for(lambda: source.stats["reconnects"] >= 2)  # the lost stream, then at least one refused open
        seen = len(frames)
        server = MjpegServer(lambda: sim.next_frame()[0], fps=30.0, port=port)
        await server.start()  # power is back
        await wait_for(lambda: len(frames) >= seen + 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.stop()
    assert source.stats["reconnects"] >= 2


async def test_looping_file_that_vanishes_and_returns_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "line.avi"
    ChuteSimulator(small_chute(width=96, height=64)).write_video(path, 4)
    source = camera(str(path), fps=100.0, loop=True)
    frames: list[Sample] = []

    async def emit(sample: Sample) -> None:
        frames.append(sample)

    task = asyncio.create_task(supervise(source, emit, Backoff(initial_s=0.05, max_s=0.2)))
    try:
        await wait_for(lambda: len(frames) >= 6)  # past the first loop
        path.rename(tmp_path / "away.avi")
        await wait_for(lambda: source.stats["reconnects"] >= 2)
        seen = len(frames)
        (tmp_path / "away.avi").rename(path)
        await wait_for(lambda: len(frames) >= seen + 3)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert source.stats["reconnects"] >= 2


# ---------------------------------------------------------------------------------------------------------------
# Image bytes under fuzz


def _corrupted(seed_image: bytes) -> st.SearchStrategy[bytes]:
    """Real encodings cut short, bit-flipped or prefixed: what a half-written or damaged file holds."""
    cut = st.integers(0, len(seed_image)).map(lambda n: seed_image[:n])
    flips = st.lists(st.tuples(st.integers(0, len(seed_image) - 1), st.integers(0, 255)), min_size=1, max_size=8)
    flipped = flips.map(lambda fs: bytes(_flip(bytearray(seed_image), fs)))
    return st.one_of(st.binary(max_size=512), cut, flipped)


def _flip(data: bytearray, flips: list[tuple[int, int]]) -> bytearray:
    for at, byte in flips:
        data[at] = byte
    return data


_IMAGES = {
    ext: cv2.imencode(ext, np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8))[1].tobytes()
    for ext in (".png", ".jpg", ".bmp", ".tiff")
}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(_IMAGES)).flatmap(lambda ext: _corrupted(_IMAGES[ext])))
def test_fuzz_image_bytes_decode_to_bgr_or_are_counted(data: bytes) -> None:
    stats: Counter[str] = Counter()
    guard = DecodeGuard("image_unreadable", stats, "frames_unreadable")
    image = guard(decode_image, data)
    if image is None:
        assert stats["frames_unreadable"] == 1
    else:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and image.size > 0
