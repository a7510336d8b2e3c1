"""The simulated chute (real grain photographs, known truth) and its HTTP MJPEG camera, read back through OpenCV."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from adapters.base import AdapterError, Frame, Sample
from adapters.camera.config import CameraConfig
from adapters.camera.simulator import (
    ChuteSimulator,
    ChuteSimulatorConfig,
    GrainTruth,
    MjpegServer,
    serve_chute,
    simulate,
    truth_json,
)
from adapters.loopback import free_port
from adapters.supervise import Backoff, supervise

from .common import DATA, camera, collect, small_chute, wait_for


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


def truth_rows(truth: list[GrainTruth]) -> list[list[object]]:
    return [[g.x, g.y, g.w, g.h, g.variety, int(g.broken), int(g.off_type)] for g in truth]


def test_truth_json_and_truth_csv_describe_every_grain(tmp_path: Path) -> None:
    truths = ChuteSimulator(small_chute(seed=21)).write_frames(tmp_path, 3)
    replay = ChuteSimulator(small_chute(seed=21))
    with (tmp_path / "truth.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, truth in enumerate(truths):
        image, expected = replay.next_frame()
        assert truth == expected and json.loads(truth_json(truth)) == truth_rows(expected)
        assert np.array_equal(np.asarray(cv2.imread(str(tmp_path / f"frame_{i:06d}.png"))), image)  # PNG: lossless
        in_file = [r for r in rows if r["file"] == f"frame_{i:06d}.png"]
        assert [(int(r["x"]), int(r["y"]), r["variety"]) for r in in_file] == [(g.x, g.y, g.variety) for g in truth]


async def test_chute_over_mjpeg_matches_the_simulator() -> None:
    """The chute as a network camera: every frame read back is one the simulator made, in order."""
    chute = small_chute(seed=21)
    sim = ChuteSimulator(chute)
    served: list[tuple[npt.NDArray[np.uint8], list[GrainTruth]]] = []

    def next_image() -> npt.NDArray[np.uint8]:
        served.append(sim.next_frame())
        return served[-1][0]

    server = MjpegServer(next_image, fps=100.0)
    await server.start()
    try:
        frames = await collect(camera(server.url, timeout_s=3.0, buffer_frames=8), limit=3)
    finally:
        await server.stop()
    replay = ChuteSimulator(chute)
    replayed = [replay.next_frame() for _ in served]
    matched: list[int] = []
    for frame in frames:
        errors = [np.abs(frame.image.astype(np.int16) - image).mean() for image, _ in served]
        best = int(np.argmin(errors))
        assert errors[best] < 4.0  # MJPEG is lossy, but the same frame
        matched.append(best)
        assert np.array_equal(served[best][0], replayed[best][0])  # the same seed gives the same frames ...
        assert truth_rows(served[best][1]) == truth_rows(replayed[best][1])  # ... and the same truth
    assert matched == sorted(set(matched))


async def test_serve_chute_is_a_camera_a_deployment_can_name() -> None:
    async with serve_chute(small_chute(), fps=30.0) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/stream.mjpg" and server.port > 0
        frames = await collect(camera(server.url, timeout_s=3.0), limit=2)
    assert len(frames) == 2 and frames[0].image.shape == (240, 320, 3)


async def test_simulate_serves_the_profile_chute_as_a_network_camera() -> None:
    port = free_port()
    config = CameraConfig.model_validate({"kind": "camera", "id": "chute1", "source": 0, "fps": 30.0})
    stop = asyncio.Event()
    task = asyncio.create_task(simulate(config, port=str(port), stop=stop, chute=small_chute()))
    frames: list[Sample] = []

    async def emit(sample: Sample) -> None:
        frames.append(sample)

    # the server listens shortly after the task starts: the supervisor's reopens bridge the gap
    source = camera(f"http://127.0.0.1:{port}/stream.mjpg", timeout_s=3.0)
    reader = asyncio.create_task(supervise(source, emit, Backoff(initial_s=0.05, max_s=0.2)))
    try:
        await wait_for(lambda: len(frames) >= 3, what="frames from the simulated camera")
    finally:
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        stop.set()
        await asyncio.wait_for(task, 10)
    assert isinstance(frames[0], Frame)
    assert len(frames) >= 3 and frames[0].image.shape == (240, 320, 3)
    with pytest.raises(ValueError, match="not a TCP port number"):
        await simulate(config, port="/dev/video0", stop=stop)


def test_default_data_set_is_found_from_the_working_directory_or_beside_the_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`simulate` uses the defaults: `../shared/datasets/rice_grains` works from anywhere, not only the repo."""
    if not DATA.is_dir():
        pytest.skip("../shared/datasets/rice_grains is not here")
    monkeypatch.chdir(tmp_path)
    sim = ChuteSimulator(ChuteSimulatorConfig())
    assert sim.data_dir.resolve() == DATA.resolve() and "Basmati" in sim.varieties
