"""`edge-runtime simulate PROFILE`: serve a device profile as a simulated machine on loopback.

Modbus TCP/RTU and OPC UA profiles become servers; a camera profile with `source: chute-sim` becomes an HTTP
MJPEG camera; an MQTT (vibration gateway) profile becomes a publisher of real bearing recordings to the broker at
`--port`. Runs until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

__all__ = ["run_simulator"]


def run_simulator(profile: Path, *, port: str | None = None) -> int:
    from adapters.camera import CameraConfig
    from adapters.modbus import ModbusRtuConfig, ModbusTcpConfig
    from adapters.mqtt import MqttConfig
    from adapters.opcua import OpcuaConfig
    from edge_runtime.config import ConfigError, load_device_profile
    from edge_runtime.logs import setup_logging

    setup_logging("info")
    try:
        config = load_device_profile(profile)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    def tcp_port() -> int | None:
        if port is None:
            return None
        if not port.isdigit():
            raise SystemExit(f"edge-runtime simulate: --port {port!r} must be a TCP port number for this profile")
        return int(port)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if isinstance(config, ModbusTcpConfig):
            from adapters.modbus import simulate as modbus_sim

            await modbus_sim(config, port=tcp_port(), stop=stop)
        elif isinstance(config, ModbusRtuConfig):
            from adapters.modbus import simulate as modbus_sim

            await modbus_sim(config, port=port, stop=stop)
        elif isinstance(config, OpcuaConfig):
            from adapters.opcua import simulate as opcua_sim

            await opcua_sim(config, port=tcp_port(), stop=stop)
        elif isinstance(config, CameraConfig):
            from adapters.camera import simulate as camera_sim

            task = asyncio.create_task(camera_sim(config, port=tcp_port() or 8080))
            await stop.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif isinstance(config, MqttConfig):
            await _gateway(config, tcp_port() or config.port, stop)

    asyncio.run(serve())
    return 0


async def _gateway(config: object, port: int, stop: asyncio.Event) -> None:
    from adapters.mqtt import GatewayStream, VibrationGatewayConfig, simulate_gateway
    from edge_runtime.datasets import shared_dataset
    from edge_runtime.demo import DEMO_RECORDINGS

    data = shared_dataset("cwru_bearing")
    if data is None:
        raise SystemExit("edge-runtime simulate: ../shared/datasets/cwru_bearing is not here; nothing to replay")
    gateway = VibrationGatewayConfig(
        id="sim-gateway",
        port=port,
        data_dir=data,
        streams=[GatewayStream(stream=s, file=f) for s, (f, _) in DEMO_RECORDINGS.items()],
    )
    task = asyncio.create_task(simulate_gateway(gateway))
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
