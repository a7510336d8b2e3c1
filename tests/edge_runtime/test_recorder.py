"""The flight recorder: a live deployment recorded while its pipeline runs, replayed at maximal and recorded speed
with the same results; the file format's guarantees (lossless, bounded chunks, readable when cut short)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adapters.base import Frame, Reading, Result, Sample
from edge_runtime.config import load_deployment
from edge_runtime.recorder import (
    FORMAT,
    Recorder,
    Recording,
    RecordingError,
    compare_results,
    deterministic,
    device_resolver,
    header_for,
    replay,
)
from edge_runtime.service import Service
from tests.edge_runtime.test_service import gateway
from tests.helpers import serving, until
from tests.helpers.mosquitto import Mosquitto

VIBRATION_SITE = """\
service:
  metrics_listen: null
  ui_listen: null
  outbox: {{path: {outbox}}}
devices:
  - id: gw1
    kind: mqtt
    port: {port}
    subscriptions:
      - {{topic: "plant/line1/+/vib", codec: f32le, stream: "{{id}}.{{levels[2]}}"}}
pipelines:
  - id: vibration
    inputs: ["gw1.*"]
    task: {{kind: vibration_anomaly}}
    model: {{name: vibration_anomaly}}
    batching: {{max_batch: 16, max_wait_ms: 20}}
"""


def _by_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((deterministic(r) for r in rows), key=lambda r: (r["pipeline"], r["stream"], r["t_ns"]))


async def _replay(path: Path, speed: Any) -> list[dict[str, Any]]:
    got: list[Result] = []
    summary = await replay(path, speed=speed, on_result=got.append)
    assert summary["results"] == {"vibration": len(got)}
    assert summary["samples"] > 0 and not summary["truncated"]
    return [r.to_json() for r in got]


async def test_replay_gives_the_live_results_at_max_and_recorded_speed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A real gateway simulator publishes real recordings over a real broker; the service runs the vibration
    pipeline live while the recorder takes every routed sample. Replaying the file twice at maximal speed and once
    at the recorded pace gives exactly the live results (labels, scores, decisions, values, t_ns). Well defined
    here: the waveform pipeline never drops (`block`), windows depend only on the blocks and their stamps, and the
    model's output for a window does not depend on which batch it ran in (at maximal speed the batches are fewer
    and larger than live ones)."""
    site = tmp_path / "site.yaml"
    site.write_text(VIBRATION_SITE.format(outbox=tmp_path / "outbox.sqlite", port=mosquitto.port))
    deployment = load_deployment(site)
    out = tmp_path / "line.erec"
    recorder = Recorder(out, header_for(site, deployment), device_of=device_resolver(deployment), chunk_bytes=64 << 10)
    service = Service(deployment, base_dir=tmp_path, config_dir=tmp_path)
    service.sample_observers.append(recorder.add_batch)
    async with serving(service) as live:
        async with gateway(mosquitto.port, speed=2.0):
            await until(lambda: len(live) >= 60, timeout_s=60, what="60 live results")
        await until(service.drained, timeout_s=60, what="the live pipeline to finish what it took")
    trailer = recorder.close("stop")
    live_rows = [r.to_json() for r in live]
    live_batches = service.pipelines[0].stats["batches"]

    recording = Recording(out)
    assert recording.header["format"] == FORMAT
    assert "vibration_anomaly" in recording.header["config"]["text"]
    recorded = list(recording)
    assert not recording.truncated and recording.trailer is not None
    assert len(recorded) == trailer["samples"] == service.stats["samples"] > 0
    assert trailer["devices"] == {"gw1": len(recorded)}
    assert all(isinstance(r.sample, Reading) and r.sample.rate_hz for r in recorded)

    fast_1 = await _replay(out, "max")
    fast_2 = await _replay(out, "max")
    t0 = time.monotonic()
    paced = await _replay(out, "recorded")
    span_s = (recorded[-1].rx_ns - recorded[0].rx_ns) / 1e9
    assert time.monotonic() - t0 >= 0.9 * span_s, "recorded speed keeps the recorded pace"

    assert len(live_rows) >= 60
    assert _by_key(fast_1) == _by_key(live_rows)
    assert _by_key(fast_2) == _by_key(live_rows)
    assert _by_key(paced) == _by_key(live_rows)
    assert compare_results(live_rows, fast_1)["identical"]
    assert {r["label"] for r in live_rows} - {None}, "the results carry labels"
    assert live_batches > 0


def _samples() -> list[Sample]:
    rng = np.random.default_rng(7)
    out: list[Sample] = []
    for i in range(40):
        t = 1_700_000_000_000_000_000 + i * 10_000_000
        out.append(Reading("plc.temp", t, np.asarray(20.0 + i, dtype=np.float32), "good", "degC"))
        out.append(Reading("plc.count", t, np.asarray(i, dtype=np.int32), "uncertain"))
        out.append(Reading("gw.vib", t, rng.normal(size=256).astype(np.float32), rate_hz=12_000.0))
        out.append(Reading("plc.recipe", t, np.asarray(f"lot-{i}"), "good"))
        if i % 8 == 0:
            img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            out.append(Frame("cam.image", t, img, {"exposure_us": 800.0, "source": "cam"}))
    return out


def _same(a: Sample, b: Sample) -> bool:
    if type(a) is not type(b) or a.stream != b.stream or a.t_ns != b.t_ns:
        return False
    if isinstance(a, Frame) and isinstance(b, Frame):
        return a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image) and dict(a.meta) == dict(b.meta)
    assert isinstance(a, Reading) and isinstance(b, Reading)
    return (
        a.value.dtype == b.value.dtype
        and a.value.shape == b.value.shape
        and np.array_equal(a.value, b.value)
        and (a.quality, a.unit, a.rate_hz) == (b.quality, b.unit, b.rate_hz)
    )


def _write(path: Path, samples: list[Sample], **kwargs: Any) -> dict[str, Any]:
    rec = Recorder(path, {"format": FORMAT}, device_of=lambda s: s.split(".")[0], **kwargs)
    for s in samples:
        rec.add(s)
    return rec.close("test")


def test_samples_come_back_bit_for_bit_with_their_devices(tmp_path: Path) -> None:
    samples = _samples()
    trailer = _write(tmp_path / "r.erec", samples)
    recording = Recording(tmp_path / "r.erec")
    back = list(recording)
    assert len(back) == len(samples) == trailer["samples"]
    assert all(_same(a, b.sample) for a, b in zip(samples, back, strict=True))
    assert [b.device for b in back] == [s.stream.split(".")[0] for s in samples]
    assert all(b.sample.image.flags.writeable for b in back if isinstance(b.sample, Frame))
    assert recording.trailer is not None and recording.trailer["devices"]["cam"] == 5
    assert recording.summary()["complete"]


def test_a_recording_cut_short_reads_up_to_its_last_complete_chunk(tmp_path: Path) -> None:
    """A power cut leaves a file ending anywhere: every complete chunk is still read, nothing raises."""
    samples = _samples()
    path = tmp_path / "r.erec"
    _write(path, samples, chunk_bytes=2048, max_buffer_bytes=2048)
    whole = path.read_bytes()
    recording = Recording(path)
    chunk_ends = []  # file offsets where each chunk ends, and how many samples the file holds up to there
    n = 0
    for _kind, _raw, records in recording.chunks():
        n += records
        chunk_ends.append(n)
    assert len(chunk_ends) > 5 and n == len(samples)
    for cut in (len(whole) - 1, len(whole) // 2, len(whole) // 3 + 7, 200):
        cut_path = tmp_path / f"cut{cut}.erec"
        cut_path.write_bytes(whole[:cut])
        partial = Recording(cut_path)
        back = list(partial)
        assert partial.truncated and partial.trailer is None
        assert len(back) in chunk_ends
        assert len(back) == len(samples) if cut == len(whole) - 1 else len(back) < len(samples)  # trailer cut
        assert all(_same(a, b.sample) for a, b in zip(samples, back, strict=False))
        assert not partial.summary()["complete"]
    damaged = bytearray(whole)
    damaged[len(whole) // 2] ^= 0xFF
    (tmp_path / "damaged.erec").write_bytes(bytes(damaged))
    bad = Recording(tmp_path / "damaged.erec")
    assert 0 < len(list(bad)) < len(samples) and bad.truncated


def test_chunks_stay_bounded_whatever_the_recording_length(tmp_path: Path) -> None:
    """Memory is bounded by the chunk buffer: no chunk holds more than the buffer limit plus one sample."""
    frame = Frame("cam.image", 0, np.zeros((120, 160, 3), dtype=np.uint8))  # 57.6 kB raw
    path = tmp_path / "r.erec"
    _write(path, [frame] * 200, chunk_bytes=100_000, max_buffer_bytes=200_000)
    sizes = [len(raw) for kind, raw, _ in Recording(path).chunks() if kind == b"S"]
    assert sum(sizes) > 200 * frame.image.nbytes
    assert max(sizes) <= 200_000 + frame.image.nbytes + 1_000


def test_not_a_recording_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.erec"
    junk.write_bytes(b"hello world, no recording here")
    with pytest.raises(RecordingError, match="not an edge-runtime recording"):
        Recording(junk)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_an_unwritable_recording_is_one_clear_error() -> None:
    with pytest.raises(RecordingError, match="cannot write /dev/full"):
        Recorder(Path("/dev/full"), {"format": FORMAT})


def test_compare_results_names_what_changed() -> None:
    a = [{"pipeline": "p", "stream": "s", "t_ns": t, "decision": "ok", "label": "normal", "score": 0.9} for t in (1, 2)]
    b = [dict(a[0], seq=5, latency_ns=9), dict(a[1], decision="alarm", label="ball", score=0.4)]
    b.append({"pipeline": "p", "stream": "s", "t_ns": 3, "decision": "ok"})
    report = compare_results(a, b)
    row = report["pipelines"]["p"]
    assert not report["identical"]
    assert (row["matched"], row["equal"], row["only_b"], row["decision_agreement"]) == (2, 1, 1, 0.5)
    assert row["decisions"] == {"ok->ok": 1, "ok->alarm": 1}
    assert row["score_mean_abs_diff"] == pytest.approx(0.25)
    assert compare_results(a, [dict(r, seq=1) for r in a])["identical"]


async def test_record_runs_the_sources_only_and_stops_after_seconds(tmp_path: Path) -> None:
    """`record` uses the service's source path with no pipeline, sink or live outbox; a camera folder stands in
    for the line's camera."""
    import cv2

    from edge_runtime.recorder import record

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    live = tmp_path / "live"
    live.mkdir()
    site = tmp_path / "site.yaml"
    site.write_text(
        VIBRATION_SITE.split("devices:")[0].format(outbox=live / "outbox.sqlite")
        + f"devices:\n  - {{id: cam, kind: camera, source: {frames}, fps: 50, loop: true}}\n"
    )
    stop = asyncio.Event()
    seen: list[Recorder] = []
    task = asyncio.create_task(record(site, tmp_path / "r.erec", stop=stop, on_start=seen.append))
    await until(lambda: bool(seen) and seen[0].frames >= 10, what="10 recorded frames")
    stop.set()
    trailer = await task
    assert trailer["stopped_by"] == "stop" and trailer["devices"]["cam"] == trailer["frames"] >= 10
    back = list(Recording(tmp_path / "r.erec"))
    assert len(back) == trailer["samples"]
    assert {b.sample.image.shape for b in back if isinstance(b.sample, Frame)} == {(32, 48, 3)}
    assert _listing(live) == [], "the deployment's own outbox is never opened"


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


RICE_SITE = """\
service: {{metrics_listen: null, ui_listen: null, outbox: {{path: {outbox}}}}}
devices:
  - {{id: chute, kind: camera, source: {frames}, fps: {fps}, loop: true}}
pipelines:
  - id: rice
    inputs: ["chute.*"]
    task: {{kind: rice_sorter, declared_variety: Basmati, ejector_channels: 16, scale_px_per_dataset_px: 0.35,
            size_prior: {prior}}}
    model: {{name: rice_sorter}}
    batching: {{max_batch: 4, max_wait_ms: 0, queue_size: 2, when_full: drop_oldest}}
"""


def rice_site(tmp_path: Path, fps: float, *, prior: bool = True, name: str = "site.yaml") -> Path:
    from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig

    frames = tmp_path / "frames"
    if not frames.exists():
        ChuteSimulator(ChuteSimulatorConfig(seed=3, grains_per_s=1250.0, fps=25.0)).write_frames(frames, 4)
        (frames / "truth.csv").unlink()
    site = tmp_path / name
    site.write_text(
        RICE_SITE.format(outbox=tmp_path / "outbox.sqlite", frames=frames, fps=fps, prior=str(prior).lower())
    )
    return site


async def test_a_camera_line_replays_every_frame_and_agrees_where_live_kept_up(tmp_path: Path) -> None:
    """Frames through the rice pipeline with its production policy `drop_oldest`: which frames live inference
    skips depends on timing, so live results are a subset. Replay never drops (`block`), so it decides every
    recorded frame, and for each frame live did decide, the decision, grains and scores are the same.

    Live runs without the size prior: the prior waits until the grains seen so far confirm the camera scale, so
    whether it weighs a frame depends on which earlier frames live inference skipped. Replayed twice with the
    prior, the results are identical, the prior included."""
    site = rice_site(tmp_path, fps=40.0, prior=False)
    deployment = load_deployment(site)
    out = tmp_path / "chute.erec"
    header = header_for(site, deployment)
    # the config names no variant: the header pins the one the live pipeline runs (the manifest's default now)
    assert deployment.pipelines[0].model.variant is None
    assert header["replay"]["pipelines"][0]["model"]["variant"] == "pair_int8"
    recorder = Recorder(out, header, device_of=device_resolver(deployment))
    service = Service(deployment, base_dir=tmp_path, config_dir=tmp_path)
    service.sample_observers.append(recorder.add_batch)
    async with serving(service) as live:
        await until(lambda: len(live) >= 12, timeout_s=60, what="12 live rice results")
    assert all("-pair_int8+" in r.model for r in live)
    trailer = recorder.close("stop")
    got: list[Result] = []
    summary = await replay(out, on_result=got.append)
    assert summary["samples"] == trailer["frames"] == service.stats["samples"]
    assert len(got) == trailer["frames"], "replay decides every recorded frame"
    assert {r.model for r in got} == {r.model for r in live}
    replayed = {r.t_ns: deterministic(r.to_json()) for r in got}
    assert len(replayed) == len(got)
    live_rows = [deterministic(r.to_json()) for r in live]
    assert len(live_rows) >= 12 and all(row == replayed[row["t_ns"]] for row in live_rows)
    assert service.pipelines[0].stats["input_dropped"] == len(got) - len(live_rows)
    assert any(row.get("grains") for row in live_rows)

    with_prior = rice_site(tmp_path, fps=40.0, prior=True, name="prior.yaml")
    runs: list[list[Result]] = [[], []]
    for run in runs:
        await replay(out, config=with_prior, on_result=run.append)
    first, second = ([deterministic(r.to_json()) for r in run] for run in runs)
    assert len(first) == len(got) and first == second
    assert first != [replayed[row["t_ns"]] for row in first], "the prior changed some scores, so it was on"


def test_replay_restores_the_recorded_calibration_and_takes_another_config(tmp_path: Path) -> None:
    """The recorded deployment's calibration files travel in the recording (the originals are gone when it is
    replayed); `--config` replays the same samples through another deployment, here without the compensation,
    and the comparison names what changed."""
    import yaml

    from edge_runtime.tools import calibrate
    from edge_runtime.tools.datasets import load_excerpt

    sensor = calibrate.calibrate_sensor(
        "gw1.*", tmp_path / "sensor.yaml", reference_c=20.0, sensitivity_tc_pct_per_k=0.3, offset_mg_per_k=0.5
    )
    pipeline = {
        "id": "vib",
        "inputs": ["gw1.*.vib"],
        "task": {"kind": "vibration_anomaly"},
        "model": {"name": "vibration_anomaly"},
        "compensation": [{"kind": "sensor_drift", "calibration": sensor.name, "temperature": "gw1.hall_temp"}],
    }
    site = {
        "service": {"metrics_listen": None, "ui_listen": None},
        "devices": [{"id": "gw1", "kind": "mqtt", "port": 1883, "subscriptions": [{"topic": "p/#", "codec": "f32le"}]}],
        "pipelines": [pipeline],
    }
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site, sort_keys=False))
    plain = tmp_path / "other" / "plain.yaml"
    plain.parent.mkdir()
    plain.write_text(yaml.safe_dump({**site, "pipelines": [{**pipeline, "compensation": []}]}, sort_keys=False))
    deployment = load_deployment(tmp_path / "site.yaml")
    out = tmp_path / "cold.erec"
    recorder = Recorder(out, header_for(tmp_path / "site.yaml", deployment), device_of=device_resolver(deployment))
    rec = load_excerpt()[0]
    t0, n = 1_700_000_000_000_000_000, int(rec.fs_hz) // 10
    recorder.add(Reading("gw1.hall_temp", t0 - 10**9, np.asarray(-25.0), "good", "degC"))
    for i in range(20):
        block = rec.signal[i * n : (i + 1) * n].astype(np.float32)
        recorder.add(Reading("gw1.m1.vib", t0 + round(i * n * 1e9 / rec.fs_hz), block, rate_hz=rec.fs_hz))
    recorder.close()
    sensor.unlink()  # replay must use the copy in the recording

    compensated: list[Result] = []
    asyncio.run(replay(out, on_result=compensated.append))
    assert len(compensated) >= 5
    assert all(r.detail.get("compensation") == ["sensor_drift"] for r in compensated)
    uncompensated: list[Result] = []
    summary = asyncio.run(replay(out, config=plain, on_result=uncompensated.append))
    assert summary["config"] == str(plain) and summary["results"] == {"vib": len(compensated)}
    assert all("compensation" not in r.detail for r in uncompensated)
    report = compare_results([r.to_json() for r in compensated], [r.to_json() for r in uncompensated])
    row = report["pipelines"]["vib"]
    assert not report["identical"] and row["matched"] == len(compensated) and row["equal"] == 0
