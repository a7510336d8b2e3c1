"""OPC UA subscriptions: notifications/s the source receives from a server changing N nodes as fast as it can.

A real asyncua server in a child process writes every node in turn, as fast as it can, for a fixed time per burst;
this process reads it with `OpcuaSource` (one subscription, sampling interval 0, the configured server-side queue)
and counts the readings until nothing new arrives for 1 s. The baseline is the server's own write rate in the same
burst: received/s over written/s, and received over written (1.0 = no change lost), are the figures that travel
between machines. Bursts repeat against the same server and subscription. `--queue-size 1` shows what asyncua's
default queue loses.

    .venv/bin/python benchmarks/bench_opcua.py --json /tmp/bench_opcua.json [--quick] [--nodes 10] [--seconds 5]
        [--bursts 3] [--queue-size 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

from adapters.base import Reading
from adapters.loopback import free_port
from adapters.opcua.config import OpcuaConfig, OpcuaNode
from adapters.opcua.simulator import running_simulator
from adapters.opcua.source import OpcuaSource
from edge_runtime.tools.bench_schema import figure, write_result

WRITTEN = "the server's writes, same burst"


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


async def _serve(cfg: OpcuaConfig, port: int, ready: MpEvent, conn: Connection) -> None:
    """Serve until told to stop; each burst request (seconds) is answered with how many values were written."""
    from asyncua import ua

    async with running_simulator(cfg, port=port) as sim:
        nodeids = [sim.nodes[n.name].nodeid for n in cfg.nodes]
        ready.set()
        value = 1.0
        while (seconds := await asyncio.to_thread(conn.recv)) is not None:
            written, t_end = 0, time.monotonic() + float(seconds)
            while time.monotonic() < t_end:
                for nodeid in nodeids:
                    await sim.server.write_attribute_value(
                        nodeid, ua.DataValue(ua.Variant(value, ua.VariantType.Double))
                    )
                written += len(nodeids)
                value += 1.0
                await asyncio.sleep(0)  # let the server answer publish requests
            conn.send(written)


def _server_main(cfg_json: str, port: int, ready: MpEvent, conn: Connection) -> None:
    asyncio.run(_serve(OpcuaConfig.model_validate_json(cfg_json), port, ready, conn))


def wait_ready(ready: MpEvent, server: BaseProcess, timeout_s: float = 600.0) -> None:
    """Until the server has its nodes. Its spawned interpreter imports asyncua and builds the address space in
    seconds on a gateway but took over a minute under emulation on a busy machine (`make image-arm64`), so the
    server dying fails this; the deadline only ends a hang."""
    deadline = time.monotonic() + timeout_s
    while not ready.wait(0.5):
        if not server.is_alive():
            raise RuntimeError(f"the OPC UA simulator exited with code {server.exitcode} before serving")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the OPC UA simulator did not serve within {timeout_s:.0f} s")


async def run(nodes: int, seconds: float, queue_size: int, bursts: int) -> list[dict[str, Any]]:
    port = free_port()
    cfg = config(port, nodes, queue_size)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    mine, theirs = ctx.Pipe()
    proc = ctx.Process(target=_server_main, args=(cfg.model_dump_json(), port, ready, theirs))
    proc.start()
    source = OpcuaSource(cfg)
    out: list[dict[str, Any]] = []
    consumer: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(wait_ready, ready, proc)
        await source.open()
        received = 0

        async def consume() -> None:
            nonlocal received
            async for r in source.stream():
                if isinstance(r, Reading) and float(r.value) >= 1.0:  # initial values are 0
                    received += 1

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(1.0)  # initial notifications in
        for _ in range(bursts):
            start, t0, c0 = received, time.monotonic(), time.process_time()
            mine.send(seconds)
            written = int(await asyncio.to_thread(mine.recv))
            t_write = time.monotonic() - t0
            last, still = -1, 0.0
            while still < 1.0:  # drained: nothing new for 1 s
                await asyncio.sleep(0.1)
                still = still + 0.1 if received == last else 0.0
                last = received
            t_recv = time.monotonic() - t0 - still
            got = received - start
            cpu = time.process_time() - c0
            out.append(
                {
                    "written": written,
                    "received": got,
                    "written_per_s": written / t_write,
                    "received_per_s": got / t_recv,
                    "client_cpu_s_per_1k": 1e3 * cpu / got if got else None,
                }
            )
    finally:
        if consumer is not None:
            consumer.cancel()
        mine.send(None)
        await source.close()
        await asyncio.to_thread(proc.join, 30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10, help="nodes the server changes")
    ap.add_argument("--seconds", type=float, default=5.0, help="how long the server writes per burst")
    ap.add_argument("--bursts", type=int, default=None, help="repeats (default 3; quick 2)")
    ap.add_argument("--queue-size", type=int, default=1000, help="server-side queue per monitored item")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--quick", action="store_true", help="short bursts (2 s), as `edge-runtime bench --quick` asks")
    args = ap.parse_args()
    seconds = min(args.seconds, 2.0) if args.quick else args.seconds
    bursts = max(2, args.bursts or (2 if args.quick else 3))
    runs = asyncio.run(run(args.nodes, seconds, args.queue_size, bursts))
    params: dict[str, str | int | float] = {"nodes": args.nodes, "queue_size": args.queue_size}
    write_result(
        args.json,
        "bench_opcua",
        [
            figure(
                "opcua.notifications_per_s",
                "notifications/s",
                [r["received_per_s"] for r in runs],
                baseline=(WRITTEN, [r["written_per_s"] for r in runs]),
                params=params,
            ),
            figure(
                "opcua.received",
                "notifications",
                [r["received"] for r in runs],
                baseline=(WRITTEN, [r["written"] for r in runs]),
                params=params,
            ),
        ],
        details={
            "nodes": args.nodes,
            "queue_size": args.queue_size,
            "seconds_per_burst": seconds,
            "bursts": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in runs],
            "note": "received over written is the share of changes delivered; client CPU counts this process only",
        },
    )


if __name__ == "__main__":
    main()
