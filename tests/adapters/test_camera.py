"""Camera adapter and simulated chute: real OpenCV, real files, a real HTTP MJPEG server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import yaml
from pydantic import ValidationError

from adapters.base import AdapterError, Backoff, Frame, Sample, Source, supervise
from adapters.camera import (
    CameraConfig,
    CameraSource,
    ChuteSimulator,
    ChuteSimulatorConfig,
    GrainTruth,
    MjpegServer,
    classify_source,
    redact,
    simulate,
)
from tests.helpers import until

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "datasets" / "rice_grains"


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


wait_for = partial(until, timeout_s=30.0)


# ---------------------------------------------------------------------------------------------------------------
# Configuration


def test_profile_validates_and_defaults_to_the_simulator() -> None:
    profile = yaml.safe_load((REPO / "configs" / "devices" / "chute_camera.yaml").read_text())
    config = CameraConfig.model_validate({**profile, "id": "chute1"})
    assert config.source == "chute-sim"
    assert config.chute is not None and config.chute.variety == "Basmati"
    real = CameraConfig.model_validate({**profile, "id": "chute1", "source": "rtsp://u:p@10.0.4.31:554/ch1"})
    assert classify_source(real.source) == "url"


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        CameraConfig.model_validate({"kind": "camera", "id": "c", "source": 0, "exposure": 3})
    with pytest.raises(ValidationError):
        CameraConfig.model_validate({"kind": "camera", "id": "c", "source": 0, "buffer_frames": 0})
    with pytest.raises(ValidationError):
        ChuteSimulatorConfig(off_type_share=1.5)


def test_every_field_is_described() -> None:
    for model in (CameraConfig, ChuteSimulatorConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_classify_and_redact(tmp_path: Path) -> None:
    assert classify_source(0) == classify_source("2") == classify_source("/dev/video1") == "device"
    assert classify_source("rtsp://10.0.0.5/stream") == "url"
    assert classify_source("chute-sim") == "chute-sim"
    assert classify_source(str(tmp_path)) == "folder"
    assert classify_source(str(tmp_path / "line.avi")) == "file"
    assert redact("rtsp://admin:secret@10.0.0.5:554/ch1") == "rtsp://***@10.0.0.5:554/ch1"
    assert redact("http://10.0.0.5/x") == "http://10.0.0.5/x"


def test_camera_source_implements_the_source_protocol() -> None:
    assert isinstance(camera("chute-sim"), Source)


# ---------------------------------------------------------------------------------------------------------------
# Simulated chute


def test_simulator_is_deterministic_for_a_seed() -> None:
    a, b = ChuteSimulator(small_chute(seed=5)), ChuteSimulator(small_chute(seed=5))
    other = ChuteSimulator(small_chute(seed=6))
    for _ in range(3):
        (image_a, truth_a), (image_b, truth_b) = a.next_frame(), b.next_frame()
        assert np.array_equal(image_a, image_b)
        assert truth_a == truth_b
    assert not np.array_equal(a.next_frame()[0], other.next_frame()[0])


def test_simulator_frames_are_bgr_of_the_configured_size() -> None:
    image, truth = ChuteSimulator(small_chute()).next_frame()
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert all(isinstance(g, GrainTruth) for g in truth)


def test_truth_boxes_hold_the_bright_grains_and_nothing_else_is_bright() -> None:
    sim = ChuteSimulator(small_chute(broken_share=0.2, off_type_share=0.2, background_noise=2.0))
    boxes = 0
    for _ in range(12):
        image, truth = sim.next_frame()
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.int32)
        covered = np.zeros(gray.shape, dtype=bool)
        for g in truth:
            assert g.x >= 0 and g.x + g.w <= 320 and g.y >= 0 and g.y + g.h <= 240
            box = gray[g.y : g.y + g.h, g.x : g.x + g.w]
            assert box.max() > 40 + 100, g  # grain pixels, well above the plate
            ys, xs = np.nonzero(box > 100)  # the box is tight around the bright grain
            assert ys.min() <= 3 and xs.min() <= 3 and ys.max() >= g.h - 4 and xs.max() >= g.w - 4, g
            covered[g.y : g.y + g.h, g.x : g.x + g.w] = True
            boxes += 1
        outside = gray[~covered]
        assert outside.max() < 40 + 30  # only plate outside the boxes: no grain without a truth box
    assert boxes >= 25 and sim.stats["grains_unplaced"] == 0


def test_off_type_share_and_labels() -> None:
    sim = ChuteSimulator(small_chute(off_type_share=0.2, grains_per_s=400.0, width=480, height=360))
    grains = [g for _ in range(40) for g in sim.next_frame()[1]]
    assert len(grains) > 400
    share = np.mean([g.off_type for g in grains])
    assert 0.13 < share < 0.27  # 0.2 +- ~4 standard errors
    assert all((g.variety != "Basmati") == g.off_type for g in grains)
    assert {g.variety for g in grains if g.off_type} <= {"Arborio", "Ipsala", "Jasmine", "Karacadag"}


def measured_length(image: npt.NDArray[np.uint8], g: GrainTruth) -> float:
    """Long side of the minimum-area rectangle around the bright blob in a truth box."""
    gray = cv2.cvtColor(image[g.y : g.y + g.h, g.x : g.x + g.w], cv2.COLOR_BGR2GRAY)
    points = cv2.findNonZero((gray > 100).astype(np.uint8))
    (_, _), (w, h), _ = cv2.minAreaRect(points)
    return float(max(w, h))


def test_broken_grains_are_shorter_than_the_median_whole_grain() -> None:
    sim = ChuteSimulator(small_chute(broken_share=0.3, off_type_share=0.0, grains_per_s=250.0))
    whole: list[float] = []
    broken: list[float] = []
    for _ in range(15):
        image, truth = sim.next_frame()
        for g in truth:
            length = measured_length(image, g)
            assert abs(length - g.length_px) < 0.2 * g.length_px + 3  # the truth length is what the image shows
            (broken if g.broken else whole).append(length)
    assert len(broken) >= 10 and len(whole) >= 30
    median_whole = float(np.median(whole))
    assert max(broken) < median_whole
    assert np.median(broken) < 0.75 * median_whole


def test_touching_pairs_share_their_border_only_when_asked() -> None:
    def touching_pairs(share: float) -> int:
        sim = ChuteSimulator(small_chute(touching_share=share, grains_per_s=200.0))
        pairs = 0
        for _ in range(10):
            truth = sim.next_frame()[1]
            for a, b in itertools.pairwise(truth):
                pairs += a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h
        return pairs

    assert touching_pairs(0.0) == 0
    assert touching_pairs(0.5) >= 5


def test_missing_data_set_or_variety_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="not found"):
        ChuteSimulator(small_chute(data_dir=str(tmp_path / "nowhere")))
    with pytest.raises(AdapterError, match="variety"):
        ChuteSimulator(small_chute(variety="Carnaroli"))


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


async def test_chute_sim_source_carries_truth_and_matches_the_simulator() -> None:
    chute = small_chute(seed=21)
    source = camera("chute-sim", fps=100.0, buffer_frames=8, chute=chute.model_dump())
    frames = await collect(source, limit=3)
    sim = ChuteSimulator(chute)
    produced = 0
    for frame in frames:
        while True:  # the replay skips any frame a slow consumer let the buffer drop
            image, truth = sim.next_frame()
            produced += 1
            if produced - 1 == frame.meta["frame_index"]:
                break
        assert np.array_equal(frame.image, image)
        rows = json.loads(str(frame.meta["truth"]))
        assert rows == [[g.x, g.y, g.w, g.h, g.variety, int(g.broken), int(g.off_type)] for g in truth]
        assert frame.meta["grains"] == len(truth)


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


async def test_simulate_serves_the_profile_chute_as_a_network_camera() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = CameraConfig.model_validate(
        {"kind": "camera", "id": "chute1", "source": "chute-sim", "fps": 30.0, "chute": small_chute().model_dump()}
    )
    task = asyncio.create_task(simulate(config, port=port))
    try:
        source = camera(f"http://127.0.0.1:{port}/stream.mjpg", timeout_s=3.0)
        for _ in range(100):  # the server starts listening shortly after the task starts
            try:
                frames = await collect(source, limit=3)
                break
            except AdapterError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("simulated camera never answered")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(frames) == 3 and frames[0].image.shape == (240, 320, 3)
    with pytest.raises(AdapterError, match="only source"):
        await simulate(CameraConfig(kind="camera", id="c", source=0), port=port)
