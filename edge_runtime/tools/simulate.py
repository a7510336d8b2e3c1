"""`edge-runtime simulate PROFILE`: serve a device profile as a simulated machine on loopback.

The profile's protocol package provides the simulator (`adapters.registry`): Modbus TCP/RTU and OPC UA profiles
become servers with the profile's registers or nodes, a camera profile an HTTP MJPEG stream of the simulated rice
chute, an MQTT profile a publisher to the broker at `--port` (see each package's `simulator` module for exactly
what it publishes). Runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

__all__ = ["run_simulator"]


def run_simulator(profile: Path, *, port: str | None = None) -> int:
    from adapters.registry import run_simulator as simulate
    from adapters.registry import simulator
    from edge_runtime.config import ConfigError, load_device_profile
    from edge_runtime.logs import setup_logging

    setup_logging("info")
    try:
        config = load_device_profile(profile)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if simulator(config) is None:
        print(f"edge-runtime simulate: device kind {config.kind!r} has no simulator", file=sys.stderr)
        return 2

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await simulate(config, port=port, stop=stop)

    try:
        asyncio.run(serve())
    except ValueError as exc:  # e.g. a serial device given where a TCP port is expected
        print(f"edge-runtime simulate: {exc}", file=sys.stderr)
        return 2
    return 0
