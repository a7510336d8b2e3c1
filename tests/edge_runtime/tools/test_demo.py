"""`edge-runtime demo` end to end, short: every machine and model on loopback, results delivered."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from adapters.base import Frame
from edge_runtime.cli import main
from edge_runtime.paths import models_dir, shared_dataset
from edge_runtime.tools import demo


def _figure(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in demo output:\n{text[-3000:]}"
    return int(match.group(1))


@pytest.mark.timeout(360)  # a hang guard: 30-50 s on a quiet 2-core box, 145 s seen at load 7
def test_demo_runs_every_line_and_delivers_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--seconds", "8"]) == 0
    out = capsys.readouterr().out
    assert _figure(r"vibration: (\d+) windows", out) > 0
    assert _figure(r"rice: +(\d+) frames", out) > 0
    assert _figure(r"weld: +(\d+) frames", out) > 0
    assert _figure(r"sink ejectors +acknowledged (\d+)", out) > 0
    assert _figure(r"outbox: (\d+) results left undelivered", out) == 0
    assert re.search(r"plc1|line_speed=", out), "the Modbus PLC's readings are shown"
    assert "current=" in out, "the OPC UA weld cell's readings are shown"
    assert "heatsink_temp=" in out, "the RS-485 drive's readings (Modbus RTU over a pty pair) are shown"
    snap = re.search(r"cold snap: hall down to ([-+\d.]+) degC; lowest lens transmission ([\d.]+)", out)
    assert snap is not None, out[-3000:]
    assert float(snap.group(1)) < 0 and float(snap.group(2)) < 0.9, "the chute camera fogged in the cold snap"
    assert re.search(r"operator page: http://127\.0\.0\.1:\d+/", out), "the demo prints the page's address"


@pytest.mark.timeout(360)  # the same hang guard: the demo's start and drain take > 120 s at load 7
def test_demo_without_the_shared_data_replays_the_bundled_excerpt(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "shared_dataset", lambda name: None)
    assert demo.run_demo(seconds=4) == 0
    out = capsys.readouterr().out
    assert "replaying the bundled excerpt" in out
    assert _figure(r"vibration: (\d+) windows", out) > 0
    assert "rice chute is left out" in out


def test_weld_camera_alternates_good_and_bad_welds_across_sources(tmp_path: Path) -> None:
    n = demo._weld_images(tmp_path / "weld", n=24)
    assert n == 24
    links = sorted((tmp_path / "weld").iterdir())
    assert [p.name[:4] for p in links] == [f"{i:03d}-" for i in range(24)]
    data = shared_dataset("weld_photos")
    assert data is not None
    photos = [p.resolve() for p in links]
    assert all(p.parent == (data / "images").resolve() for p in photos)
    rejects = [demo._weld_rejects(data / "labels" / f"{p.stem}.txt") for p in photos]
    assert rejects == [True, False] * 12, "bad and good welds alternate, by their labels"
    with (data / "sources.csv").open(newline="") as fh:
        source = {row["image"]: row["source"] for row in csv.DictReader(fh)}
    val = set(json.loads((models_dir() / "weld_inspector" / "split.json").read_text())["val_sources"])
    assert {source[p.name] for p in photos} <= val, "only the model's held-out sources"
    assert len({source[p.name] for p in photos}) >= 20, "each kind cycles through its sources"


def test_board_finds_a_weld_frame_s_label_through_the_camera_folder_s_link(tmp_path: Path) -> None:
    # the camera reports the link's name ("000-<photo>.jpg"); the label is named after the photograph it points to
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    links = tmp_path / "weld_images"
    links.mkdir()
    labels = {"good": "1 0.5 0.5 0.2 0.2", "bad": "1 0.5 0.5 0.2 0.2\n2 0.1 0.1 0.1 0.1"}  # 2: a defect
    for i, (photo, label) in enumerate(labels.items()):
        (tmp_path / "images" / f"{photo}.jpg").write_bytes(b"")
        (tmp_path / "labels" / f"{photo}.txt").write_text(label + "\n")
        (links / f"{i:03d}-{photo}.jpg").symlink_to(tmp_path / "images" / f"{photo}.jpg")
    board = demo.Board(truth={}, weld_labels=tmp_path / "labels", weld_images=links)
    image = np.zeros((2, 2, 3), np.uint8)
    for t_ns, name in enumerate(("000-good.jpg", "001-bad.jpg", "002-unlinked.jpg")):
        board.on_sample(Frame("weldcam", t_ns, image, {"source": name}))
    assert board.weld_truth == {0: "accept", 1: "reject"}
