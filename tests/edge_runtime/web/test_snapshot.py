"""The page's snapshot from the service's observer hooks: spectra, frames, rice figures, ages and rates."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from adapters.base import Frame, Reading, Result, Scalar, ScalarGroup
from edge_runtime.config import Deployment
from edge_runtime.service import Service
from edge_runtime.web import snapshot
from edge_runtime.web.snapshot import LiveView, downscale_jpeg, spectrum_db


def test_a_tone_peaks_in_its_band_of_the_spectrum() -> None:
    rate, f0 = 12_000.0, 1_500.0
    t = np.arange(2048) / rate
    noise = np.random.default_rng(0).normal(0, 0.01, t.size)
    db, top_hz = spectrum_db(np.sin(2 * np.pi * f0 * t) + 0.3 + noise, rate, bins=256)
    assert top_hz == 6_000.0 and len(db) == 256
    assert int(np.argmax(db)) == round(f0 / (top_hz / 256))
    assert max(db) - float(np.median(db)) > 30


def test_frames_are_downscaled_for_the_page() -> None:
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[100:200, 100:300] = (0, 0, 255)
    url = downscale_jpeg(image, width=320)
    assert url.startswith("data:image/jpeg;base64,")

    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape == (240, 320, 3)
    assert decoded[75, 100, 2] > 200 and decoded[75, 100, 0] < 60  # the red patch, halved


@pytest.fixture
def view(tmp_path: Path) -> LiveView:
    deployment = Deployment.model_validate(
        {
            "service": {"ui_listen": None, "outbox": {"path": str(tmp_path / "o.sqlite")}},
            "devices": [{"id": "chute", "kind": "camera", "source": str(tmp_path)}],
            "pipelines": [
                {
                    "id": "rice",
                    "inputs": ["chute.*"],
                    "task": {"kind": "rice_sorter", "declared_variety": "Basmati"},
                    "model": {"name": "rice_sorter"},
                    "outputs": [],
                }
            ],
        }
    )
    return LiveView(Service(deployment))


def grain(variety: str, eject: bool) -> dict[str, object]:
    return {"x": 10, "y": 20, "w": 30, "h": 8, "variety": variety, "eject": eject, "broken": False}


def rice_result(seq: int, t_ns: int, grains: list[dict[str, object]]) -> Result:
    return Result(
        pipeline="rice", stream="chute.image", t_ns=t_ns, decision="keep", seq=seq, detail={"grains": grains},
        values={"n_grains": len(grains), "lens_transmission": 0.8},
    )  # fmt: skip


def test_rice_purity_and_ejects_per_variety_run_over_every_frame(view: LiveView) -> None:
    image = np.full((120, 160, 3), 90, dtype=np.uint8)
    view.on_sample(Frame("chute.image", 1_000, image))
    view.on_sample(Frame("chute.image", 2_000, image))
    view.on_result(rice_result(1, 1_000, [grain("Basmati", False), grain("Basmati", False), grain("Jasmine", True)]))
    view.on_result(rice_result(2, 2_000, [grain("Basmati", True)]))
    assert view._jpeg == {}, "the hooks never encode a frame"
    snap = view.render(view.gather({}))
    (rice,) = snap["rice"]
    assert rice["seq"] == 2 and len(rice["grains"]) == 1 and rice["grains"][0]["eject"] is True
    assert rice["purity"] == pytest.approx(3 / 4) and rice["frames"] == 2
    assert rice["varieties"] == [
        {"variety": "Basmati", "grains": 3, "ejected": 1},
        {"variety": "Jasmine", "grains": 1, "ejected": 1},
    ]
    assert rice["lens_transmission"] == 0.8
    assert (rice["width"], rice["height"]) == (160, 120) and rice["frame"].startswith("data:image/jpeg")
    encoded = view._jpeg["rice"][1]
    view.render(view.gather({}))
    assert view._jpeg["rice"][1] is encoded, "a result's frame is encoded once, however often it is shown"


def test_a_result_whose_frame_is_gone_shows_no_frame_rather_than_another(view: LiveView) -> None:
    view.on_sample(Frame("chute.image", 1_000, np.zeros((8, 8, 3), np.uint8)))
    view.on_result(rice_result(1, 5_000, [grain("Basmati", False)]))
    (rice,) = view.render(view.gather({}))["rice"]
    assert rice["frame"] == "" and len(rice["grains"]) == 1


def test_a_device_shows_its_error_counters_and_not_its_throughput(view: LiveView) -> None:
    stats = {"readings": 500, "reads": 10, "late_reads": 2, "overruns": 1, "timeouts": 3, "reconnects": 0}
    device = view._device("plc", "modbus-tcp", ["plc"], stats, {}, 0)
    assert device["errors"] == {"late_reads": 2, "overruns": 1, "timeouts": 3, "reconnects": 0}


def test_devices_show_their_last_reading_and_tags_their_trend(view: LiveView) -> None:
    snap = view.render(view.gather({}))  # before the service has built its sources, every device is listed
    assert snap["devices"] == [{"id": "chute", "kind": "camera", "state": "waiting", "age_s": None, "errors": {}}]
    reading = Reading("chute.temp", 0, np.array(-21.5, dtype=np.float32), unit="degC")
    view.on_sample(reading)
    view.service.latest["chute.temp"] = reading
    snap = view.render(view.gather({}))
    (machine,) = snap["machines"]
    assert machine["value"] == -21.5 and machine["unit"] == "degC" and machine["spark"] == [-21.5]
    assert machine["age_s"] > 1e6, "stamped at epoch 0, so very old"
    (device,) = snap["devices"]
    assert device["state"] == "receiving" and device["age_s"] is not None and device["age_s"] < 5


def test_frames_are_let_go_once_a_later_result_is_in(view: LiveView) -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    for t in (1_000, 2_000, 3_000, 4_000):
        view.on_sample(Frame("chute.image", t, image))
    view.on_result(rice_result(1, 2_000, [grain("Basmati", False)]))  # the 1_000 frame was dropped by the queue
    assert [f.t_ns for f in view.frames["chute.image"]] == [3_000, 4_000], "only frames still awaiting a result"
    assert view.shown["rice"].t_ns == 2_000
    assert view.render(view.gather({}))["rice"][0]["width"] == 8


def vib_result(t_ns: int, score: float) -> Result:
    values: dict[str, Scalar] = {
        "anomaly_score": score,
        "anomaly_threshold": 0.7,
        "velocity_rms_mm_s": 3.1,
        "severity_zone": "B",
    }
    return Result(pipeline="vib", stream="gw1.pump.vib", t_ns=t_ns, decision="ok", values=values, quality="uncertain")


def test_the_anomaly_history_keeps_the_spike_of_each_half_second(tmp_path: Path) -> None:
    deployment = Deployment.model_validate(
        {
            "service": {"ui_listen": None, "outbox": {"path": str(tmp_path / "o.sqlite")}},
            "devices": [
                {"id": "gw1", "kind": "mqtt", "port": 1883, "subscriptions": [{"topic": "v", "codec": "f32le"}]}
            ],
            "pipelines": [
                {"id": "vib", "inputs": ["gw1.*"], "task": {"kind": "vibration_anomaly"},
                 "model": {"name": "vibration_anomaly"}, "outputs": []}
            ],
        }
    )  # fmt: skip
    view = LiveView(Service(deployment))
    second = 1_000_000_000
    for i, score in enumerate([0.1, 0.9, 0.2, 0.1]):  # four windows within 0.4 s
        view.on_result(vib_result(100 * second + i * second // 10, score))
    view.on_result(vib_result(101 * second, 0.3))
    assert list(view.anomaly["gw1.pump.vib"]) == [(100 * second, 0.9), (101 * second, 0.3)]
    (vib,) = view.render(view.gather({}))["vibration"]  # the result's own threshold (a cold start raises it)
    assert (vib["threshold"], vib["velocity_rms_mm_s"], vib["zone"], vib["quality"]) == (0.7, 3.1, "B", "uncertain")


def test_a_sample_the_view_cannot_read_is_counted_never_raised(view: LiveView) -> None:
    odd = Reading("chute.odd", 0, None)  # type: ignore[arg-type]  # not an array: the routing path must go on
    view.on_sample(odd)
    view.on_sample(odd)
    assert view.errors == 2


def test_a_group_of_scalars_takes_sparkline_points_twice_a_second_and_is_always_seen(
    view: LiveView, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_700_000_000_000_000_000]
    monkeypatch.setattr(snapshot, "time", SimpleNamespace(time_ns=lambda: clock[0], monotonic=time.monotonic))
    group = [Reading(f"plc.t{i}", 0, np.array(float(i))) for i in range(3)]
    view.on_samples(group)
    clock[0] += 100_000_000  # 0.1 s later: no new point, but every tag was seen now (a Modbus group names its tags)
    view.on_samples(ScalarGroup([r._replace(value=r.value + 10) for r in group], [r.stream for r in group]))
    assert [list(view.history[r.stream]) for r in group] == [[(clock[0] - 100_000_000, float(i))] for i in range(3)]
    assert all(view.seen_ns[r.stream] == clock[0] for r in group)
    clock[0] += 500_000_000  # the next half second: one more point each
    view.on_samples([r._replace(value=r.value + 20) for r in group])
    assert [[v for _, v in view.history[r.stream]] for r in group] == [[i, i + 20] for i in range(3)]
    frames = [Frame("chute.image", i, np.zeros((4, 4, 3), np.uint8)) for i in range(2)]
    view.on_samples(frames[:1])
    view.on_samples(frames[1:])  # frames are never skipped: the page shows the one a result names
    assert list(view.frames["chute.image"]) == frames


def test_a_publisher_inventing_streams_cannot_grow_the_page(tmp_path: Path) -> None:
    """Every per-stream map of the page is bounded by `max_streams`, like the service's own; evictions are counted."""
    deployment = Deployment.model_validate(
        {
            "service": {"ui_listen": None, "max_streams": 100, "outbox": {"path": str(tmp_path / "o.sqlite")}},
            "devices": [{"id": "chute", "kind": "camera", "source": str(tmp_path)}],
        }
    )
    view = LiveView(Service(deployment))
    for i in range(300):
        view.on_samples([Reading(f"gw.junk{i}", 0, np.array(float(i)))])
        view.on_samples([Reading(f"gw.wave{i}", 0, np.zeros(8), rate_hz=1e3)])
        view.on_sample(Frame(f"cam{i}.image", 0, np.zeros((2, 2, 3), np.uint8)))
    sizes = [len(m) for m in (view.seen_ns, view.history, view.blocks, view.frames, view._quiet_until)]
    assert sizes == [100, 100, 100, 100, 100]
    assert "gw.junk299" in view.history and "gw.junk0" not in view.history
    assert view.service.stats["ui_streams_evicted"] > 0
