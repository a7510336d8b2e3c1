"""Cold compensation in the pipeline: calibration files validated like configs, layers placed between windowing and
the task, lens health published and a lens heater switched through a real Modbus write-back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from adapters.base import Frame, Reading, Result, ScalarGroup
from adapters.camera.simulator import ChuteSimulator, ChuteSimulatorConfig
from adapters.loopback import free_port
from edge_runtime.compensation import Compensator, LensFogLayer, LensFogLayerConfig, SideInputs
from edge_runtime.config import validate_file
from edge_runtime.paths import shared_dataset
from edge_runtime.service import Service
from edge_runtime.tools import calibrate
from edge_runtime.yamlsrc import Problem
from tests import helpers
from tests.helpers import serving

until = partial(helpers.until, timeout_s=90.0)
U8 = npt.NDArray[np.uint8]


def num(result: Result, key: str) -> float:
    value = result.values[key]
    assert isinstance(value, float), f"{key}={value!r}"
    return value


def fog(image: U8, t_lo: float = 0.55, airlight: float = 0.85, red_gain: float = 1.25) -> U8:
    """A cold lens and cold LEDs: red light up, then a smooth veil (transmission t_lo..0.95 across the frame)."""
    img = image.astype(np.float32)
    img[..., 2] *= red_gain
    t = np.linspace(t_lo, 0.95, img.shape[1], dtype=np.float32)[None, :, None]
    out = img * t + airlight * 255.0 * (1.0 - t)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def chute_frames() -> list[U8]:
    data = shared_dataset("rice_grains")
    assert data is not None, "../shared/datasets/rice_grains is needed (the CI checkout has it beside the repo)"
    sim = ChuteSimulator(ChuteSimulatorConfig(data_dir=str(data), seed=3, grains_per_s=600))
    return [sim.next_frame()[0] for _ in range(24)]


@pytest.fixture(scope="module")
def optics_file(chute_frames: list[U8], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`calibrate optics` on clean commissioning frames (written as images, as an integrator would)."""
    import cv2

    folder = tmp_path_factory.mktemp("commissioning")
    for i, frame in enumerate(chute_frames[:16]):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), frame)
    return calibrate.calibrate_optics(folder, tmp_path_factory.mktemp("cal") / "optics.yaml", reference_c=20.0)


def test_calibrate_writes_a_file_the_runtime_reads_back(optics_file: Path) -> None:
    data = yaml.safe_load(optics_file.read_text())
    assert data["kind"] == "optics" and data["provenance"]["n_samples"] == 16
    lo, hi = data["provenance"]["valid_c"]
    assert lo < -30 < 20 < hi


def test_lens_fog_layer_sees_the_fog_and_switches_the_heater_with_hysteresis(
    chute_frames: list[U8], optics_file: Path
) -> None:
    from edge_runtime.compensation import load_calibration_file

    layer = LensFogLayer(
        LensFogLayerConfig(kind="lens_fog", calibration=str(optics_file), heater=True, estimate_every_s=0),
        load_calibration_file(optics_file, "optics"),
    )
    comp = Compensator([layer])

    def run(image: U8) -> Result:
        (result,) = comp.run(
            lambda items: [Result("", f.stream, f.t_ns, "keep") for f in items], [Frame("c", 1, image)]
        )
        return result

    clean = run(chute_frames[20])
    foggy = run(fog(chute_frames[20]))
    assert num(clean, "lens_transmission") > 0.93 and clean.values["lens_fog"] is False
    assert num(foggy, "lens_transmission") < 0.85 and foggy.values["lens_fog"] is True
    assert foggy.values["lens_heater"] is True and foggy.detail["compensation"] == ["lens_fog"]
    # hysteresis: a lightly fogged lens (between the on and off thresholds) keeps the heater on
    light = run(fog(chute_frames[21], t_lo=0.9, red_gain=1.0))
    assert layer.calibration.fog.heater_on_below <= num(light, "lens_transmission")
    assert light.values["lens_heater"] is True
    assert run(chute_frames[22]).values["lens_heater"] is False


def test_the_veil_is_estimated_once_a_second_and_every_frame_inverted_with_it(
    chute_frames: list[U8], optics_file: Path
) -> None:
    from edge_runtime.compensation import load_calibration_file

    cal = load_calibration_file(optics_file, "optics")
    comp = Compensator([LensFogLayer(LensFogLayerConfig(kind="lens_fog", calibration=str(optics_file)), cal)])

    def transmission(image: U8, t_ns: int) -> float:
        task = lambda items: [Result("", f.stream, f.t_ns, "keep") for f in items]  # noqa: E731
        (result,) = comp.run(task, [Frame("c", t_ns, image)])
        return num(result, "lens_transmission")

    assert transmission(chute_frames[20], 0) > 0.93
    assert transmission(fog(chute_frames[20]), 500_000_000) > 0.93  # within the second: the clean estimate holds
    assert transmission(fog(chute_frames[20]), 1_000_000_000) < 0.85  # a second later the fog is seen


def test_side_inputs_give_each_input_the_reading_at_its_time() -> None:
    side = SideInputs(["plc.hall"])
    for t, v in ((100, 5.0), (200, -10.0), (300, -20.0)):
        side.push(Reading("plc.hall", t, np.array(v)))
    side.push(Reading("plc.hall", 400, np.array(99.0), quality="bad"))  # a bad reading is not a temperature
    assert side.at("plc.hall", 250) == -10.0 and side.at("plc.hall", 50) == 5.0 and side.at("plc.hall", 999) == -20.0
    assert side.at("other", 250) is None and side.at(None, 250) is None


def _deployment(frames_dir: Path, optics: Path, ports: dict[str, int], temperature: str) -> dict[str, Any]:
    return {
        "service": {"metrics_listen": None, "outbox": {"path": "outbox.sqlite"}},
        "devices": [
            {"id": "chute", "kind": "camera", "source": str(frames_dir), "fps": 20, "loop": True},
            {
                "id": "weld1",
                "profile": "devices/weld_cell_opcua.yaml",
                "endpoint": f"opc.tcp://127.0.0.1:{ports['ua']}",
            },
        ],
        "pipelines": [
            {
                "id": "rice",
                "inputs": ["chute.*"],
                "task": {"kind": "rice_sorter", "declared_variety": "Basmati", "scale_px_per_dataset_px": 0.35},
                "model": {"name": "rice_sorter"},
                "batching": {"max_batch": 2, "max_wait_ms": 5, "queue_size": 4},
                "outputs": ["plc"],
                "compensation": [
                    {"kind": "lens_fog", "calibration": str(optics), "heater": True},
                    {"kind": "led_drift", "calibration": str(optics), "temperature": temperature},
                ],
            }
        ],
        "sinks": [
            {
                "id": "plc",
                "kind": "modbus-write",
                "connection": {"transport": "tcp", "host": "127.0.0.1", "port": ports["plc"]},
                "writable": [{"table": "coil", "start": 200, "end": 200}],
                "actions": [{"field": "lens_heater", "table": "coil", "address": 200, "mode": "value"}],
            }
        ],
    }


async def test_a_fogged_chute_is_compensated_and_its_heater_switched_on_through_a_real_plc(
    chute_frames: list[U8], optics_file: Path, tmp_path: Path
) -> None:
    import cv2

    from adapters.modbus.config import ModbusTcpConfig
    from adapters.modbus.simulator import SimulatedMachine
    from adapters.opcua.config import OpcuaConfig
    from adapters.opcua.simulator import running_simulator
    from edge_runtime.config import load_device_profile, profile_dirs

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for i, frame in enumerate(chute_frames[16:20]):
        cv2.imwrite(str(frames_dir / f"f{i}.png"), fog(frame))
    ports = {"ua": free_port(), "plc": free_port()}
    cell = load_device_profile(profile_dirs()[0] / "devices" / "weld_cell_opcua.yaml")
    assert isinstance(cell, OpcuaConfig)
    plc = SimulatedMachine(
        ModbusTcpConfig.model_validate(
            {
                "kind": "modbus-tcp",
                "id": "plc",
                "tags": [{"name": "heater", "table": "coil", "address": 200, "dtype": "bool"}],
            }
        ),
        vary=False,
    )
    await plc.start(ports["plc"])
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(_deployment(frames_dir, optics_file, ports, "weld1.hall_temp")))
    deployment, errors = validate_file(cfg)
    assert deployment is not None, errors
    service = Service(deployment, base_dir=tmp_path, config_dir=tmp_path)
    try:
        async with running_simulator(cell, port=ports["ua"], animate=True), serving(service) as seen:
            await until(lambda: any(r.quality == "good" for r in seen), what="a result with the hall temperature")
            await until(lambda: service.sinks["plc"].stats["acknowledged"] > 0, what="heater write")
            heater = await plc.read("coil", 200)
    finally:
        await plc.stop()
    good = next(r for r in seen if r.quality == "good")
    assert good.detail["compensation"] == ["lens_fog", "led_drift"]
    assert num(good, "lens_transmission") < 0.85 and good.values["lens_fog"] is True
    assert num(good, "led_gain_r") > 1.05  # the cold red LED was seen
    assert heater == [True]
    # before the first temperature reading arrived a result is only `uncertain`, never silently good
    assert all(r.quality == "uncertain" for r in seen[: seen.index(good)])


def test_validate_checks_calibration_files_and_tags(optics_file: Path, tmp_path: Path) -> None:
    ports = {"ua": 4840, "plc": 502}
    data = _deployment(tmp_path, optics_file, ports, "weld1.no_such_tag")
    data["service"]["site_temperature_c"] = [-45, 35]
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    _, errors = validate_file(cfg)
    assert [e.path for e in errors] == ["pipelines.0.compensation.1.temperature"]

    data = _deployment(tmp_path, tmp_path / "missing.yaml", ports, "weld1.hall_temp")
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    _, errors = validate_file(cfg)
    assert {e.path for e in errors} == {
        "pipelines.0.compensation.0.calibration",
        "pipelines.0.compensation.1.calibration",
    }
    assert "edge-runtime calibrate" in errors[0].message

    bad = tmp_path / "bad.yaml"
    lines = optics_file.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, start=1) if text.startswith("block_px:"))
    lines[line - 1] = "block_px: 1000"
    bad.write_text("\n".join(lines) + "\n")
    data = _deployment(tmp_path, bad, ports, "weld1.hall_temp")
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    _, errors = validate_file(cfg)
    assert errors and all(e.file == bad and e.path == "block_px" for e in errors)
    assert errors[0].line == line  # FILE:LINE inside the calibration file itself

    data = _deployment(tmp_path, optics_file, ports, "weld1.hall_temp")
    data["service"]["site_temperature_c"] = [-45, 35]
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    warnings: list[Problem] = []
    deployment, errors = validate_file(cfg, warnings)
    assert deployment is not None and errors == []
    assert warnings and "site sees -45..35" in warnings[0].message


def test_a_layer_on_the_wrong_kind_of_input_is_refused(optics_file: Path, tmp_path: Path) -> None:
    data = {
        "devices": [
            {"id": "gw", "kind": "mqtt", "subscriptions": [{"topic": "a/#", "codec": "f32le", "rate_hz": 12000}]}
        ],
        "pipelines": [
            {
                "id": "vib",
                "inputs": ["gw.*"],
                "task": {"kind": "vibration_anomaly"},
                "model": {"name": "vibration_anomaly"},
                "compensation": [{"kind": "lens_fog", "calibration": str(optics_file)}],
            }
        ],
    }
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    deployment, errors = validate_file(cfg)
    assert deployment is None and [e.path for e in errors] == ["pipelines.0.compensation.0.kind"]


def _baseline(tmp_path: Path) -> Path:
    from calibration.files import BaselineCalibration, Provenance, dump_calibration

    cal = BaselineCalibration(
        kind="baseline",
        provenance=Provenance(created="2026-11-27", data="test", valid_c=(-40.0, 40.0)),
        warm_q=0.3,
        warm_above_c=10.0,
        slope_per_k=0.012,  # at -30 degC, just started: 0.3 + 0.48 = 0.78 healthy bar
        tau_min=15.0,
        margin=0.02,
    )
    dump_calibration(cal, tmp_path / "baseline.yaml")
    return tmp_path / "baseline.yaml"


def test_a_cold_start_does_not_alarm_while_a_real_fault_still_does(tmp_path: Path) -> None:
    from edge_runtime.compensation import ColdStartLayer, ColdStartLayerConfig, load_calibration_file
    from edge_runtime.tasks.base import Window

    path = _baseline(tmp_path)
    layer = ColdStartLayer(
        ColdStartLayerConfig(kind="cold_start", calibration=str(path), temperature="plc.hall"),
        load_calibration_file(path, "baseline"),
    )
    comp = Compensator([layer])
    minute = 60_000_000_000
    rng = np.random.default_rng(0)

    def judge(score: float, t_ns: int, hall_c: float) -> Result:
        comp.push(Reading("plc.hall", t_ns, np.array(hall_c)))
        w = Window("m1", t_ns, rng.normal(0, 0.5, 2048).astype(np.float32), 12000.0)

        def task(items: list[Window]) -> list[Result]:  # alarms at the model's own threshold, 0.5
            values: dict[str, Any] = {"anomaly_score": score, "anomaly_threshold": 0.5}
            return [Result("", x.stream, x.t_ns, "alarm" if score >= 0.5 else "ok", values=values) for x in items]

        (result,) = comp.run(task, [w])
        return result

    assert judge(0.65, 0, -30.0).decision == "ok"  # stiff grease at start: healthy excess, no alarm
    assert judge(0.95, minute, -30.0).decision == "alarm"  # a real fault stands far above the cold excess
    assert judge(0.65, 120 * minute, -30.0).decision == "alarm"  # two hours later the machine is warm: alarm
    warm = judge(0.65, 121 * minute, 20.0)
    assert warm.decision == "alarm" and warm.values["anomaly_threshold"] == 0.5


async def test_a_cold_accelerometer_is_corrected_to_the_nominal_velocity(tmp_path: Path) -> None:
    """Sensitivity 9 % low and a DC offset at -25 degC: the served severity is within 2 % of the warm one."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from adapters.mqtt.simulator import GatewayStream, VibrationGatewayConfig, VibrationGatewaySimulator, Waveform
    from calibration.severity import velocity_spectrum_rms
    from edge_runtime.dsp import windows_of
    from edge_runtime.inference import load_model
    from edge_runtime.tools.datasets import load_excerpt
    from tests.helpers.mosquitto import Mosquitto

    rec = next(r for r in load_excerpt() if r.fault == "outer_race" and r.fs_hz == 12000)
    hall, ref, tc, k_mg = -25.0, 20.0, 0.2, 0.5
    s = 1 + tc / 100 * (hall - ref)
    cold = (rec.signal * s + k_mg / 1000 * (hall - ref)).astype(np.float32)
    pre = load_model("vibration_anomaly").manifest.preprocessing
    nominal = float(velocity_spectrum_rms(windows_of(rec.signal, rec.fs_hz, pre), 12000.0).mean())
    raw = float(velocity_spectrum_rms(windows_of(cold, rec.fs_hz, pre), 12000.0).mean())
    assert raw < 0.93 * nominal  # uncorrected, maintenance would read 9 % low
    sensor = calibrate.calibrate_sensor(
        "gw1.*", tmp_path / "sensor.yaml", reference_c=ref, sensitivity_tc_pct_per_k=tc, offset_mg_per_k=k_mg
    )
    with Mosquitto() as broker:
        data = {
            "service": {"metrics_listen": None, "outbox": {"path": "o.sqlite"}},
            "devices": [
                {
                    "id": "gw1",
                    "kind": "mqtt",
                    "port": broker.port,
                    "subscriptions": [
                        {
                            "topic": "plant/+/+/vib",
                            "codec": "f32le",
                            "stream": "{id}.{levels[2]}.vib",
                            "rate_hz": 12000,
                        },
                        {"topic": "plant/hall/temp", "codec": "json", "stream": "{id}.hall_temp", "qos": 1},
                    ],
                }
            ],
            "pipelines": [
                {
                    "id": "vib",
                    "inputs": ["gw1.*.vib"],
                    "task": {"kind": "vibration_anomaly"},
                    "model": {"name": "vibration_anomaly"},
                    "compensation": [
                        {"kind": "sensor_drift", "calibration": str(sensor), "temperature": "gw1.hall_temp"}
                    ],
                }
            ],
        }
        cfg = tmp_path / "site.yaml"
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        deployment, errors = validate_file(cfg)
        assert deployment is not None, errors
        service = Service(deployment, base_dir=tmp_path, config_dir=tmp_path)
        publisher = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        publisher.publish("plant/hall/temp", str(hall), qos=1, retain=True).wait_for_publish(10)
        gateway = VibrationGatewaySimulator(
            VibrationGatewayConfig(id="gw-sim", port=broker.port, streams=[GatewayStream(stream="m1")]),
            {"m1": Waveform(cold, rec.fs_hz)},
        )
        try:
            async with serving(service) as seen:
                await until(service.connected, what="the gateway subscription")
                await gateway.open()
                feeder = asyncio.create_task(gateway.run())
                await until(lambda: sum(r.quality == "good" for r in seen) >= 12, what="a dozen compensated windows")
                feeder.cancel()
        finally:
            await gateway.close()
            publisher.loop_stop()
    good = [r for r in seen if r.quality == "good"]
    assert all(r.detail["compensation"] == ["sensor_drift"] for r in good)
    served = float(np.mean([num(r, "velocity_rms_mm_s") for r in good]))
    assert abs(served - nominal) / nominal < 0.02, (served, nominal, raw)
    assert num(good[0], "sensor_sensitivity") == pytest.approx(s, abs=1e-4)


async def test_the_weld_cell_calls_for_preheat_in_a_cold_hall_and_not_in_a_warm_one(tmp_path: Path) -> None:
    """The simulated weld cell at -30 degC, then +20 degC: t8/5 from its own tags, preheat flagged only cold."""
    import shutil

    from adapters.opcua.config import OpcuaConfig
    from adapters.opcua.simulator import running_simulator
    from edge_runtime.config import load_device_profile, profile_dirs

    photos = shared_dataset("weld_photos")
    assert photos is not None, "../shared/datasets/weld_photos is needed (the CI checkout has it beside the repo)"
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted((photos / "images").glob("*.jpg"))[:2]:
        shutil.copy(path, frames / path.name)
    port = free_port()
    cell = load_device_profile(profile_dirs()[0] / "devices" / "weld_cell_opcua.yaml")
    assert isinstance(cell, OpcuaConfig)
    data = {
        "service": {"metrics_listen": None, "outbox": {"path": "o.sqlite"}},
        "devices": [
            {"id": "cam", "kind": "camera", "source": str(frames), "fps": 5, "loop": True},
            {"id": "weld1", "profile": "devices/weld_cell_opcua.yaml", "endpoint": f"opc.tcp://127.0.0.1:{port}"},
        ],
        "pipelines": [
            {
                "id": "weld",
                "inputs": ["cam.*"],
                "task": {"kind": "weld_inspector"},
                "model": {"name": "weld_inspector"},
                "batching": {"max_batch": 1, "queue_size": 2},
                "compensation": [
                    {
                        "kind": "weld_thermal",
                        "current": "weld1.current",
                        "voltage": "weld1.voltage",
                        "travel_speed": "weld1.travel_speed",
                        "temperature": "weld1.hall_temp",
                        "thickness_mm": 6,
                        "t85_min_s": 8.2,
                        "t85_max_s": 25,
                    }
                ],
            }
        ],
    }
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    deployment, errors = validate_file(cfg)
    assert deployment is not None, errors
    service = Service(deployment, base_dir=tmp_path, config_dir=tmp_path)
    hold = {"hall_temp": -30.0}
    async with running_simulator(cell, port=port, animate=True, hold=hold) as sim, serving(service) as seen:
        await until(lambda: any("t85_s" in r.values for r in seen), what="a weld judged at -30 degC")
        cold = next(r for r in seen if "t85_s" in r.values)
        sim.hold("hall_temp", 20.0)
        n = len(seen)
        await until(
            lambda: any("t85_s" in r.values and num(r, "t85_s") > num(cold, "t85_s") + 0.5 for r in seen[n:]),
            what="a weld judged at +20 degC (the hall temperature is polled every 5 s)",
        )
        warm = next(r for r in seen[n:] if "t85_s" in r.values and num(r, "t85_s") > num(cold, "t85_s") + 0.5)
    assert cold.values["preheat_required"] is True and num(cold, "t85_s") < 8.2, cold.values
    assert warm.values["preheat_required"] is False and 8.2 <= num(warm, "t85_s") <= 25
    assert 0.4 < num(cold, "heat_input_kj_mm") < 0.8  # ~24 V x 180 A at 6 mm/s, k 0.8
    assert cold.decision in ("accept", "reject")  # the visual verdict stands beside the thermal one


def test_a_pyrometer_profile_gives_the_measured_t85_and_the_computed_one_is_kept_beside_it() -> None:
    from edge_runtime.compensation import WeldThermalLayer, WeldThermalLayerConfig

    layer = WeldThermalLayer(
        WeldThermalLayerConfig.model_validate(
            {
                "kind": "weld_thermal",
                "current": "w.current",
                "voltage": "w.voltage",
                "travel_speed": "w.speed",
                "temperature": "w.hall",
                "thickness_mm": 6,
                "t85_min_s": 8.2,
                "t85_max_s": 25,
                "average_s": 2,
                "pyrometer": {"stream": "w.line", "spacing_mm": 2.0, "emissivity": 1.0},
            }
        )
    )
    comp = Compensator([layer])
    second = 1_000_000_000
    for i in range(30):  # 3 s of arc at 10 readings/s
        t = i * second // 10
        for stream, value in (("w.current", 180.0), ("w.voltage", 24.0), ("w.speed", 6.0), ("w.hall", -30.0)):
            comp.push(Reading(stream, t, np.array(value)))
    # a profile behind the torch at 6 mm/s, points 2 mm (1/3 s) apart: T(t) = 1400 - 120 t degC, so 800 degC at
    # 5 s and 500 degC at 7.5 s: a measured t8/5 of 2.5 s
    times = np.arange(64) * 2.0 / 6.0
    comp.push(Reading("w.line", 3 * second, (1400.0 - 120.0 * times).astype(np.float32)))
    (result,) = comp.run(
        lambda items: [Result("", f.stream, f.t_ns, "accept") for f in items],
        [Frame("cam", 3 * second, np.zeros((8, 8, 3), np.uint8))],
    )
    assert result.values["heat_flow"] == "measured"
    assert num(result, "t85_s") == pytest.approx(2.5, abs=0.05)  # (800 - 500) / 120 degC/s
    assert num(result, "t85_computed_s") > 5  # the EN 1011-2 estimate stays beside the measurement
    assert result.values["preheat_required"] is True


@pytest.mark.parametrize("named", [False, True], ids=["list", "scalar_group"])
async def test_a_group_of_readings_reaches_side_inputs_latest_values_and_survives_a_reload(
    optics_file: Path, tmp_path: Path, named: bool
) -> None:
    """A Modbus response arrives as one group (`Service._route_batch`): its one compensation tag must reach the
    pipeline's side inputs, every scalar the latest-value map, also once routes are cached and after a reload.
    The Modbus source's groups name their streams (`ScalarGroup`), which the router takes instead of reading each
    sample; a plain list (another batch source) must end the same."""
    ports = {"ua": 4840, "plc": 502}
    cfg = tmp_path / "site.yaml"
    cfg.write_text(yaml.safe_dump(_deployment(tmp_path, optics_file, ports, "weld1.hall_temp")))
    deployment, errors = validate_file(cfg)
    assert deployment is not None, errors
    service = Service(deployment, base_dir=tmp_path, config_dir=tmp_path)
    service.load()

    def group(t: int, hall: float) -> Sequence[Reading]:
        readings = [
            Reading("weld1.current", t, np.array(180.0)),
            Reading("weld1.hall_temp", t, np.array(hall)),
            Reading("plc.speed", t, np.array(3.0)),
        ]
        return ScalarGroup(readings, [r.stream for r in readings]) if named else readings

    (rice,) = service.pipelines
    await service._route_batch(group(100, -12.0))
    await service._route_batch(group(200, -14.0))  # routes cached by now
    assert rice.compensator.side.at("weld1.hall_temp", 150) == -12.0
    assert rice.compensator.side.at("weld1.hall_temp", 250) == -14.0
    assert {s: float(r.value) for s, r in service.latest.items()} == {
        "weld1.current": 180.0,
        "weld1.hall_temp": -14.0,
        "plc.speed": 3.0,
    }
    # least recently used first, as each sample was set in turn (what decides which stream a flood evicts)
    assert list(service.latest) == list(service._routes) == ["weld1.current", "weld1.hall_temp", "plc.speed"]
    assert service.stats["samples"] == 6
    service._routes.clear()  # what a reload does when it swaps the pipelines: routes are derived again
    await service._route_batch(group(300, -16.0))
    assert rice.compensator.side.at("weld1.hall_temp", 350) == -16.0
    assert service.stats["samples"] == 9
