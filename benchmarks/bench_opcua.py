"""OPC UA subscriptions: notifications/s the source receives from a server changing N nodes as fast as it can.

A real asyncua server in a child process writes every node in turn, as fast as it can, for a fixed time; this
process reads it with `OpcuaSource` (one subscription, sampling interval 0, the configured server-side queue) and
counts the readings. The baseline is the server's own write rate in the same run: the figure that travels between
machines is received/written (1.0 = no change lost). `--queue-size 1` shows what asyncua's default queue loses.

    .venv/bin/python benchmarks/bench_opcua.py --json /tmp/bench_opcua.json [--nodes 10] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from adapters.base import Reading
from adapters.loopback import free_port
from adapters.opcua.config import OpcuaConfig, OpcuaNode
from adapters.opcua.simulator import running_simulator
from adapters.opcua.source import OpcuaSource


def config(port: int, nodes: int, queue_size: int) -> OpcuaConfig:
    return OpcuaConfig(
        kind="opcua",
        id="bench",
        endpoint=f"opc.tcp://127.0.0.1:{port}",
        publishing_interval_ms=50,
        queue_size=queue_size,
        buffer_size=1_000_000,
        nodes=[OpcuaNode(name=f"n{i}", node_id=f"ns=2;s=Bench.N{i}", sampling_interval_ms=0) for i in range(nodes)],
    )


async def _serve(
    cfg: OpcuaConfig, port: int, seconds: float, ready: MpEvent, go: MpEvent, done: MpEvent, out: Synchronized[int]
) -> None:
    from asyncua import ua

    async with running_simulator(cfg, port=port) as sim:
        nodeids = [sim.nodes[n.name].nodeid for n in cfg.nodes]
        ready.set()
        while not go.is_set():
            await asyncio.sleep(0.01)
        written, value, t_end = 0, 1.0, time.monotonic() + seconds
        while time.monotonic() < t_end:
            for nodeid in nodeids:
                await sim.server.write_attribute_value(nodeid, ua.DataValue(ua.Variant(value, ua.VariantType.Double)))
            written += len(nodeids)
            value += 1.0
            await asyncio.sleep(0)  # let the server answer publish requests
        out.value = written
        while not done.is_set():  # keep serving while the client drains
            await asyncio.sleep(0.05)


def _server_main(
    cfg_json: str, port: int, seconds: float, ready: MpEvent, go: MpEvent, done: MpEvent, out: Synchronized[int]
) -> None:
    asyncio.run(_serve(OpcuaConfig.model_validate_json(cfg_json), port, seconds, ready, go, done, out))


async def run(nodes: int, seconds: float, queue_size: int) -> dict[str, Any]:
    port = free_port()
    cfg = config(port, nodes, queue_size)
    ctx = multiprocessing.get_context("spawn")
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    out: Synchronized[int] = ctx.Value("q", -1)
    proc = ctx.Process(target=_server_main, args=(cfg.model_dump_json(), port, seconds, ready, go, done, out))
    proc.start()
    source = OpcuaSource(cfg)
    try:
        await asyncio.to_thread(ready.wait, 60)
        await source.open()
        received = 0

        async def consume() -> None:
            nonlocal received
            async for r in source.stream():
                if isinstance(r, Reading) and float(r.value) >= 1.0:  # initial values are 0
                    received += 1

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(1.0)  # initial notifications in
        go.set()
        t0 = time.monotonic()
        while out.value < 0:
            await asyncio.sleep(0.05)
        written = int(out.value)
        t_write = time.monotonic() - t0
        last, still = -1, 0.0
        while still < 1.0:  # drained: nothing new for 1 s
            await asyncio.sleep(0.1)
            still = still + 0.1 if received == last else 0.0
            last = received
        t_recv = time.monotonic() - t0 - still
        consumer.cancel()
    finally:
        done.set()
        await source.close()
        await asyncio.to_thread(proc.join, 30)
    return {
        "nodes": nodes,
        "queue_size": queue_size,
        "seconds": seconds,
        "written": written,
        "received": received,
        "written_per_s": written / t_write,
        "received_per_s": received / t_recv,
        "received_written_ratio": received / written if written else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10, help="nodes the server changes")
    ap.add_argument("--seconds", type=float, default=5.0, help="how long the server writes")
    ap.add_argument("--queue-size", type=int, default=1000, help="server-side queue per monitored item")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--quick", action="store_true", help="short run (2 s), as `edge-runtime bench --quick` asks")
    args = ap.parse_args()
    seconds = min(args.seconds, 2.0) if args.quick else args.seconds
    figures = asyncio.run(run(args.nodes, seconds, args.queue_size))
    figures["machine"] = {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
