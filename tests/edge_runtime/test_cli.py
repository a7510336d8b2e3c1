from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.cli import main
from edge_runtime.paths import repo_root

EXAMPLE = repo_root() / "configs" / "vibration_line.yaml"


def test_validate_ok_exits_0(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PASSWORD", "x")
    assert main(["validate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "ok (1 devices, 1 pipelines, 2 sinks)" in out
    assert re.search(
        r"pipeline vibration: vibration_anomaly [0-9.]+, variant fp32 \(model\.onnx, the manifest's default\)", out
    )


def test_validate_names_the_file_each_pipeline_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """A pipeline without `variant` runs the manifest's default_variant, which a new model version may change."""
    assert main(["validate", str(repo_root() / "configs" / "mixed_plant.yaml")]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"pipeline weld: weld_inspector [0-9.]+, variant int8 \(model\.int8\.onnx, the manifest's default\)", out
    )
    assert main(["validate", str(repo_root() / "configs" / "rice_line.yaml")]) == 0
    assert re.search(
        r"pipeline rice: rice_sorter [0-9.]+, variant int8 \(model\.int8\.onnx\)\n", capsys.readouterr().out
    )


def test_validate_bad_exits_2_with_file_line_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("service:\n  log_level: loud\n")
    assert main(["validate", str(bad)]) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"{bad}:2: service.log_level: Input should be 'debug', 'info', 'warning' or 'error'"
    ]


def test_validate_plan_prints_the_modbus_read_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("devices:\n  - id: plc1\n    profile: devices/plc_tcp.yaml\n")
    assert main(["validate", str(site), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "plc1 (modbus-tcp)" in out and "requests" in out


@pytest.mark.parametrize("profile", sorted((repo_root() / "configs" / "devices").glob("*.yaml")), ids=lambda p: p.stem)
def test_validate_accepts_a_device_profile_alone(profile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(profile)]) == 0
    assert f"{profile}: ok (device profile, kind " in capsys.readouterr().out


def test_validate_profile_errors_name_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "drive.yaml"
    bad.write_text("kind: modbus-tcp\nport: 502\npoll_interval_ms: -5\ntags: []\n")
    assert main(["validate", str(bad)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{bad}:3: poll_interval_ms: Input should be greater than or equal to 10"]


def test_schema_is_json_with_the_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    text = json.dumps(schema)
    for kind in ("modbus-tcp", "modbus-rtu", "opcua", "mqtt", "camera", "opcua-server", "modbus-write"):
        assert f'"{kind}"' in text


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2
    assert "the following arguments are required: config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "no_such_model", "--data", "."])
    assert exc.value.code == 2


def test_evaluate_flip_average_is_a_weld_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "rice_sorter", "--data", str(tmp_path), "--flip-average", "on"]) == 2
    assert "--flip-average is a weld_inspector option" in capsys.readouterr().err


def test_evaluate_size_prior_is_a_rice_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "vibration_anomaly", "--data", str(tmp_path), "--size-prior", "off"]) == 2
    assert "--size-prior is a rice_sorter option" in capsys.readouterr().err


def test_evaluate_work_scale_is_a_rice_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "weld_inspector", "--data", str(tmp_path), "--work-scale", "2"]) == 2
    assert "--work-scale is a rice_sorter option" in capsys.readouterr().err


def test_evaluate_refuses_a_missing_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "vibration_anomaly", "--data", "/nonexistent/dir"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_console_script_help_lists_every_command() -> None:
    exe = shutil.which("edge-runtime", path=str(Path(sys.executable).parent))
    assert exe is not None, "the console script is installed with the package"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    listed = set(re.findall(r"^    ([a-z][a-z-]+)(?: |$)", out, re.M))  # argparse's command list, one per line
    assert listed >= {
        "run",
        "validate",
        "schema",
        "demo",
        "evaluate",
        "simulate",
        "probe-order",
        "bench",
        "record",
        "replay",
    }, out


def test_run_refuses_a_tampered_model_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "vibration_anomaly"
    shutil.copytree(repo_root() / "models" / "vibration_anomaly", model)
    raw = bytearray((model / "model.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0x55
    (model / "model.onnx").write_bytes(bytes(raw))
    site = tmp_path / "site.yaml"
    site.write_text(
        "service: {metrics_listen: null}\n"
        "devices: [{id: gw1, kind: mqtt, subscriptions: [{topic: a/b, codec: f32le}]}]\n"
        f"pipelines: [{{id: v, inputs: ['gw1.*'], task: {{kind: vibration_anomaly}}, model: {{name: '{model}'}}}}]\n"
    )
    assert main(["run", str(site)]) == 3
    assert "sha256" in capsys.readouterr().err


def test_run_with_an_unwritable_outbox_exits_2_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    outbox = tmp_path / "file" / "outbox.sqlite"
    site = tmp_path / "site.yaml"
    site.write_text(
        f"service: {{metrics_listen: null, outbox: {{path: '{outbox}'}}}}\n"
        "devices: [{id: gw1, kind: mqtt, subscriptions: [{topic: a/b, codec: f32le}]}]\n"
        "pipelines: [{id: v, inputs: ['gw1.*'], task: {kind: vibration_anomaly}, model: {name: vibration_anomaly}}]\n"
    )
    assert main(["run", str(site)]) == 2
    assert str(outbox) in capsys.readouterr().err


def test_evaluate_json_last_line_is_strict_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A held-out directory with one class only: per-class ratios of absent classes are null, never NaN."""
    import numpy as np

    from edge_runtime.tools.datasets import load_excerpt

    rec = next(r for r in load_excerpt() if r.fault == "outer_race")
    (tmp_path / "recordings").mkdir()
    np.savez(tmp_path / "recordings" / "a.npz", de=rec.signal, fs_hz=np.array(rec.fs_hz))
    (tmp_path / "labels.csv").write_text(f"file,fs_hz,fault\nrecordings/a.npz,{rec.fs_hz},outer_race\n")
    assert main(["evaluate", "vibration_anomaly", "--data", str(tmp_path), "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    report = json.loads(last, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert {"accuracy", "detection_accuracy", "n", "per_class", "confusion"} <= set(report)
    assert report["n"] == sum(row["n"] for row in report["per_class"].values()) > 0
    assert report["per_class"]["ball"]["recall"] is None


def test_simulate_serves_a_profile_that_the_adapter_reads(tmp_path: Path) -> None:
    """`edge-runtime simulate` as an integrator runs it, read back by our own Modbus source."""
    import asyncio
    import signal
    import time

    from adapters.base import Reading
    from adapters.loopback import free_port
    from adapters.modbus.config import ModbusTcpConfig
    from adapters.modbus.source import ModbusSource

    port = free_port()
    exe = shutil.which("edge-runtime", path=str(Path(sys.executable).parent))
    assert exe is not None
    profile = repo_root() / "configs" / "devices" / "plc_tcp.yaml"
    proc = subprocess.Popen([exe, "simulate", str(profile), "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        config = ModbusTcpConfig.model_validate(
            {
                "kind": "modbus-tcp",
                "id": "plc1",
                "port": port,
                "tags": [{"name": "oil_temp", "table": "holding", "address": 8, "dtype": "float32"}],
            }
        )

        async def read_one() -> float:
            source = ModbusSource(config)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await source.open()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
            try:
                async for reading in source.stream():
                    if isinstance(reading, Reading) and reading.quality == "good":
                        return float(reading.value)
                raise AssertionError("stream ended")
            finally:
                await source.close()

        value = asyncio.run(read_one())
        assert -40.0 < value < 150.0, f"oil temperature {value} is not plausible"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_record_stops_cleanly_on_sigterm_and_replay_compares_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`record` as systemd or Ctrl-C stops it (SIGTERM: a complete file, exit 0); `replay` of that file writes
    JSONL, and a second replay `--against` the first reports them identical."""
    import signal
    import time

    from edge_runtime.recorder import Recording
    from tests.edge_runtime.test_recorder import rice_site

    site = rice_site(tmp_path, fps=20.0)
    out = tmp_path / "line.erec"
    exe = shutil.which("edge-runtime", path=str(Path(sys.executable).parent))
    assert exe is not None
    proc = subprocess.Popen(
        [exe, "record", str(site), "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (out.is_file() and out.stat().st_size > 1_000_000):  # header plus a chunk of frames
            assert proc.poll() is None and time.monotonic() < deadline, "record wrote no frames"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "stopped by stop" in stdout
    recording = Recording(out)
    n = len(list(recording))
    assert n > 0 and recording.trailer is not None and recording.trailer["devices"] == {"chute": n}

    assert main(["replay", str(out), "--info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] and info["samples"] == n and info["devices"] == {"chute": n}
    first = tmp_path / "a.jsonl"
    assert main(["replay", str(out), "--out", str(first)]) == 0
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == n and all(r["pipeline"] == "rice" and r["decision"] in ("eject", "keep") for r in rows)
    capsys.readouterr()
    assert main(["replay", str(out), "--speed", "3", "--against", str(first)]) == 0
    printed = capsys.readouterr().out
    assert '"identical": true' in printed and f'"matched": {n}' in printed
    assert main(["replay", str(out), "--speed", "0"]) == 2
    assert main(["replay", str(tmp_path / "a.jsonl")]) == 2  # not a recording: one line, exit 2
    assert "not an edge-runtime recording" in capsys.readouterr().err
