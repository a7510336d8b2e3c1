"""Modbus polling: tags/s with the read planner vs one request per tag, paced ingest (tags/s, CPU-s per 1k tags and
data age at a 20 and 10 ms poll), the service's ingest at a 10 ms poll, and write-back latency p50/p99.

A 500-tag profile (holding, input, coils, discrete inputs; mixed dtypes and byte orders, small holes and one
forbidden block, as a real PLC map has) is served by a real pymodbus TCP server in a child process on loopback.
The planner and the one-request-per-tag baseline poll it in alternating rounds in this process, so load from
elsewhere hits both alike; the figure that travels between machines is their ratio. Write-back latency is the
time `ModbusWriteSink.deliver` takes until the device acknowledged (one holding register and one coil).
Paced ingest runs `ModbusSource.batches()` (what the service takes: one list of readings per response) at the poll
period and counts the CPU time of this process only (the server is another process); data age is the largest gap
between two good readings of one tag, which must stay under two poll periods. At 10 ms (the shortest poll a profile
may set) the 500 tags ask for 50k tags/s. Its baseline, in the same rounds, is stock pymodbus sending the same
planned requests at the same pace and keeping the lists its response classes decode (no tags, no readings): the
ratio of CPU per tag is the runtime's cost over the library's. The service figure runs
`edge-runtime run` with this device alone (operator page and metrics on, as a plant runs it) and divides the
service process's CPU (from /proc) by the readings its own metrics counted.

    .venv/bin/python benchmarks/bench_modbus.py --json /tmp/bench_modbus.json [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from adapters.base import Result, now_ns
from adapters.loopback import free_port
from adapters.modbus.client import READ_METHOD, connect, tcp_client
from adapters.modbus.config import ModbusTcpConfig, ModbusWriteConfig
from adapters.modbus.plan import plan_device, plan_report
from adapters.modbus.simulator import SimulatedMachine
from adapters.modbus.sink import ModbusWriteSink
from adapters.modbus.source import ModbusSource, next_poll
from edge_runtime import heap
from edge_runtime.tools.bench import edge_runtime_command, process_cpu_s, stop_process, wait_for_process
from edge_runtime.tools.bench_schema import figure, write_result

KINDS: list[dict[str, Any]] = [
    {"dtype": "float32", "byte_order": "ABCD", "unit": "bar"},
    {"dtype": "float32", "byte_order": "CDAB", "unit": "A"},
    {"dtype": "int16", "scale": 0.1, "unit": "degC"},
    {"dtype": "uint32", "byte_order": "CDAB", "unit": "pcs"},
    {"dtype": "uint16", "unit": "%"},
]


def profile(port: int, n_tags: int = 500) -> ModbusTcpConfig:
    """`n_tags` tags: 60 % holding, 20 % input registers, 20 % coils/discrete inputs, with holes every 10 tags."""
    tags: list[dict[str, Any]] = []
    address = {"holding": 0, "input": 0, "coil": 0, "discrete": 0}
    for i in range(n_tags):
        table = "holding" if i % 10 < 6 else "input" if i % 10 < 8 else "coil" if i % 2 else "discrete"
        if table in ("coil", "discrete"):
            tag = {"name": f"t{i}", "table": table, "address": address[table], "dtype": "bool"}
            address[table] += 1 + (i % 7 == 0) * 5
        else:
            if table == "holding" and address[table] == 200:
                address[table] = 210  # skip the forbidden block
            kind = KINDS[i % len(KINDS)]
            tag = {"name": f"t{i}", "table": table, "address": address[table], **kind}
            width = 2 if kind["dtype"] in ("float32", "uint32") else 1
            address[table] += width + (3 if i % 10 == 0 else 0)
        tags.append(tag)
    return ModbusTcpConfig.model_validate(
        {
            "kind": "modbus-tcp",
            "id": "bench",
            "port": port,
            "timeout_s": 2.0,
            "forbidden": [{"table": "holding", "start": 200, "end": 209}],
            "writable": [{"table": "holding", "start": 60000, "end": 60001}, {"table": "coil", "start": 60000}],
            "tags": tags,
        }
    )


def _serve(config_json: str, port: int) -> None:
    """Child process: serve the profile, with fixed values, until terminated.

    Fixed, because the simulator recomputes every value in Python each 0.2 s tick (5.5 ms for these 500 tags) and
    answers nothing meanwhile, which a PLC does not: with varying values 4 % of the 10 ms polls overran and the worst
    data age measured the simulator (24 ms against 15 ms with fixed values, same client)."""

    # pymodbus logs every answer to a client that went away (each run's source closing) as an error with the frames
    # in hex: noise in the report's output, not a finding
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    async def serve() -> None:
        machine = SimulatedMachine(ModbusTcpConfig.model_validate_json(config_json), vary=False)
        await machine.start(port)
        await asyncio.Event().wait()

    asyncio.run(serve())


def wait_port(port: int, server: multiprocessing.process.BaseProcess, timeout_s: float = 600.0) -> None:
    """Until the simulator listens. Its spawned interpreter starts in seconds on a gateway but takes over 30 s
    under emulation (the arm64 image's `make image-arm64`), so the server dying fails this; the deadline only
    ends a hang."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if not server.is_alive():
                died = f"the Modbus simulator exited with code {server.exitcode} before listening"
                raise RuntimeError(died) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def poll_rates(config: ModbusTcpConfig, seconds: float, rounds: int) -> dict[str, Any]:
    sources = {"planner": ModbusSource(config), "per_tag": ModbusSource(config, coalesce=False)}
    totals = {name: {"readings": 0, "bad": 0, "seconds": 0.0} for name in sources}
    for source in sources.values():
        await source.open()
        await source.read_all()  # warm-up
    try:
        for _ in range(rounds):
            for name, source in sources.items():
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < seconds / rounds:
                    readings = await source.read_all()
                    totals[name]["readings"] += len(readings)
                    totals[name]["bad"] += sum(r.quality != "good" for r in readings)
                totals[name]["seconds"] += time.perf_counter() - t0
    finally:
        for source in sources.values():
            await source.close()
    out: dict[str, Any] = {}
    for name, source in sources.items():
        t = totals[name]
        out[name] = {
            "requests_per_cycle": source.requests_per_cycle,
            "tags_per_s": round(t["readings"] / t["seconds"], 1),
            "bad_readings": t["bad"],
            "seconds": round(t["seconds"], 2),
        }
    out["ratio"] = round(out["planner"]["tags_per_s"] / out["per_tag"]["tags_per_s"], 2)
    return out


async def paced_ingest(config: ModbusTcpConfig, poll_ms: int, seconds: float) -> dict[str, float]:
    """Tags/s, CPU-s per 1k tags and worst data age (in poll periods) of the source at `poll_ms`, taken as the
    service takes it (`batches()`: one list per response). The readings of one response share a time stamp, so a
    tag's data age is its response's gap while all of its tags read good."""
    cfg = ModbusTcpConfig.model_validate({**config.model_dump(), "poll_interval_ms": poll_ms})
    source = ModbusSource(cfg)
    await source.open()
    heap.settle()  # as the service does before it polls: start-up's objects leave the collector's full passes
    last: dict[str, int] = {}
    worst_gap_ns = 0
    n = 0
    try:
        batches = source.batches()
        for _ in range(source.requests_per_cycle):  # warm-up: one full cycle
            await anext(batches)
        w0, c0 = time.perf_counter(), time.process_time()
        async for batch in batches:
            good = sum(r.quality == "good" for r in batch)
            key, t_ns = batch[0].stream, batch[0].t_ns
            if good == len(batch):
                prev = last.get(key)
                if prev is not None:
                    worst_gap_ns = max(worst_gap_ns, t_ns - prev)
                last[key] = t_ns
            else:
                last.pop(key, None)
            n += good
            if time.perf_counter() - w0 >= seconds:
                break
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        await batches.aclose()
    finally:
        await source.close()
    return {
        "tags_per_s": n / wall,
        "cpu_s_per_1k_tags": cpu / max(1, n) * 1000,
        "max_age_polls": worst_gap_ns / 1e6 / poll_ms,
        "overruns": float(source.stats["overruns"]),
        "late_reads": float(source.stats["late_reads"]),
    }


async def bare_paced(config: ModbusTcpConfig, poll_ms: int, seconds: float) -> dict[str, float]:
    """The baseline of `paced_ingest`: stock pymodbus (its own client and response classes, which decode every
    register and bit into a Python list) sending the source's planned requests at the same pace, one after another,
    and keeping those lists (no tags, no readings). Tags/s and CPU-s per 1k tags count the tags the requests cover."""
    cfg = ModbusTcpConfig.model_validate({**config.model_dump(), "poll_interval_ms": poll_ms})
    groups = plan_device(cfg)
    if len(groups) != 1:  # the pacing below is one interval's
        raise ValueError(f"the bare baseline paces one poll group, the profile has {len(groups)}")
    reads = groups[0].reads
    tags = [sum(len(streams) for _, streams, _ in read.groups) for read in reads]
    client = tcp_client("127.0.0.1", cfg.port, cfg.timeout_s)
    await connect(client, f"127.0.0.1:{cfg.port}", cfg.timeout_s)
    heap.settle()
    loop = asyncio.get_running_loop()
    interval = poll_ms / 1000
    n = 0
    try:
        calls = [(getattr(client, READ_METHOD[r.request.table]), r.request, r.device_id) for r in reads]
        for method, req, device_id in calls:  # warm-up: one full cycle
            await method(req.start, count=req.count, device_id=device_id)
        w0, c0 = time.perf_counter(), time.process_time()
        at = loop.time()
        while time.perf_counter() - w0 < seconds:
            for (method, req, device_id), k in zip(calls, tags, strict=True):
                response = await method(req.start, count=req.count, device_id=device_id)
                if not response.isError():
                    n += k
            at, _ = next_poll(at, interval, loop.time())
            await asyncio.sleep(max(0.0, at - loop.time()))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        client.close()
    return {"tags_per_s": n / wall, "cpu_s_per_1k_tags": cpu / max(1, n) * 1000}


def _counters(metrics_port: int, *names: str) -> list[float]:
    """The source's counters from one scrape: a scrape costs the service a few ms of CPU beside its polls (3.5 ms
    with these 500 tags, formatted in a thread that still holds the GIL), so one per snapshot."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out = []
    for name in names:
        found = re.search(rf'edge_runtime_source_{name}_total\{{source="bench"\}} ([0-9.e+]+)', text)
        out.append(float(found.group(1)) if found else 0.0)
    return out


def service_ingest(config: ModbusTcpConfig, poll_ms: int, seconds: float, workdir: Path) -> dict[str, float]:
    """`edge-runtime run` with this device alone, as a plant runs it (operator page and metrics on): CPU of the
    service process per 1k readings its own metrics counted, and its late reads (data older than two poll periods),
    over `seconds` once it polls."""
    metrics = free_port()
    device = {**config.model_dump(mode="json", exclude_defaults=True), "host": "127.0.0.1", "port": config.port}
    device["poll_interval_ms"] = poll_ms
    deployment = {
        "service": {
            "name": "bench-modbus",
            "metrics_listen": f"127.0.0.1:{metrics}",
            "ui_listen": f"127.0.0.1:{free_port()}",
            "outbox": {"path": str(workdir / f"outbox-{poll_ms}.sqlite")},
        },
        "devices": [device],
    }
    path = workdir / f"modbus-{poll_ms}ms.yaml"
    path.write_text(json.dumps(deployment))  # JSON is YAML
    with (workdir / "service.log").open("ab") as log:
        proc = subprocess.Popen([*edge_runtime_command(), "run", str(path)], stdout=log, stderr=subprocess.STDOUT)

    def polled_a_cycle() -> bool:
        with contextlib.suppress(OSError):  # the metrics endpoint is not up yet
            return _counters(metrics, "readings")[0] >= 2 * len(config.tags)
        return False

    def snapshot() -> tuple[float, float, float, float, float]:
        readings, overruns, late = _counters(metrics, "readings", "overruns", "late_reads")
        return readings, overruns, late, process_cpu_s(proc.pid), time.monotonic()

    try:
        # a gateway starts in seconds; emulation takes far longer
        wait_for_process(f"polling (see {workdir / 'service.log'})", polled_a_cycle, 600, proc)
        r0, o0, l0, c0, t0 = snapshot()
        time.sleep(seconds)
        r1, o1, l1, c1, t1 = snapshot()
    finally:
        stop_process(proc)
    return {"tags_per_s": (r1 - r0) / (t1 - t0), "cpu_s_per_1k_tags": (c1 - c0) / max(1.0, r1 - r0) * 1000,
            "overruns": o1 - o0, "late_reads": l1 - l0}  # fmt: skip


async def write_latency(port: int, n: int) -> dict[str, float]:
    sink = ModbusWriteSink(
        ModbusWriteConfig.model_validate(
            {
                "kind": "modbus-write",
                "connection": {"transport": "tcp", "port": port},
                # the figure is the latency; under emulation on a busy machine one write outlasted the 1 s default
                "timeout_s": 10.0,
                "writable": [{"table": "holding", "start": 60000, "end": 60001}, {"table": "coil", "start": 60000}],
                "actions": [
                    {"field": "anomaly_score", "table": "holding", "address": 60000, "dtype": "uint16", "scale": 1000},
                    {"field": "decision", "equals": "alarm", "table": "coil", "address": 60000},
                ],
            }
        )
    )
    await sink.open()
    try:
        for i in range(n):
            decision = "alarm" if i % 2 else "ok"
            values = {"anomaly_score": (i % 100) / 100}
            await sink.deliver(
                Result(pipeline="bench", stream="bench", t_ns=now_ns(), decision=decision, values=values)
            )
    finally:
        await sink.close()
    return {k: round(v, 3) for k, v in sink.latency_ms().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--seconds", type=float, default=6.0, help="polling time per mode")
    ap.add_argument("--writes", type=int, default=1000, help="write-back deliveries timed")
    ap.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    args = ap.parse_args()
    seconds, writes = (1.0, 100) if args.quick else (args.seconds, args.writes)

    port = free_port()
    config = profile(port)
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(config.model_dump_json(), port))
    server.start()
    rounds = 2 if args.quick else 4
    paced: dict[int, list[dict[str, float]]] = {20: [], 10: []}
    bare: dict[int, list[dict[str, float]]] = {20: [], 10: []}
    service: list[dict[str, float]] = []
    bare_service: list[dict[str, float]] = []
    try:
        wait_port(port, server)
        polling = [asyncio.run(poll_rates(config, seconds / rounds, rounds=1)) for _ in range(rounds)]
        for _ in range(rounds):
            for poll_ms in paced:
                paced[poll_ms].append(asyncio.run(paced_ingest(config, poll_ms, seconds / rounds)))
                bare[poll_ms].append(asyncio.run(bare_paced(config, poll_ms, seconds / rounds)))
        with tempfile.TemporaryDirectory(prefix="bench-modbus-") as tmp:
            for _ in range(rounds):  # each service run beside a bare run of its own
                service.append(service_ingest(config, 10, 2 * seconds / rounds, Path(tmp)))
                bare_service.append(asyncio.run(bare_paced(config, 10, 2 * seconds / rounds)))
        latency = asyncio.run(write_latency(port, writes))
    finally:
        server.terminate()
        server.join(10)
    figures = [
        figure(
            "modbus.read_all.tags_per_s",
            "tags/s",
            [p["planner"]["tags_per_s"] for p in polling],
            baseline=("one request per tag", [p["per_tag"]["tags_per_s"] for p in polling]),
        )
    ]
    floor = "stock pymodbus, same requests and pace, registers as lists, no tags"
    for poll_ms, runs in paced.items():
        figures += [
            figure(
                f"modbus.ingest.{poll_ms}ms.tags_per_s",
                "tags/s",
                [r["tags_per_s"] for r in runs],
                baseline=(floor, [r["tags_per_s"] for r in bare[poll_ms]]),
            ),
            figure(
                f"modbus.ingest.{poll_ms}ms.cpu_s_per_1k_tags",
                "CPU-s/1k tags",
                [r["cpu_s_per_1k_tags"] for r in runs],
                baseline=(floor, [r["cpu_s_per_1k_tags"] for r in bare[poll_ms]]),
                higher_is_better=False,
            ),
            figure(
                f"modbus.ingest.{poll_ms}ms.max_age",
                "poll periods",
                [r["max_age_polls"] for r in runs],
                higher_is_better=False,
            ),
        ]
    figures += [
        figure("modbus.service.10ms.tags_per_s", "tags/s", [r["tags_per_s"] for r in service]),
        figure(
            "modbus.service.10ms.cpu_s_per_1k_tags",
            "CPU-s/1k tags",
            [r["cpu_s_per_1k_tags"] for r in service],
            baseline=(floor, [r["cpu_s_per_1k_tags"] for r in bare_service]),
            higher_is_better=False,
        ),
        # requests answered more than two poll periods after their previous answer (the service's own counter)
        figure("modbus.service.10ms.late_reads", "reads", [r["late_reads"] for r in service], higher_is_better=False),
    ]
    figures += [figure(f"modbus.write_back.{k}", "ms", [latency[k]], higher_is_better=False) for k in ("p50", "p99")]
    write_result(
        args.json,
        "bench_modbus",
        figures,
        details={
            "tags": len(config.tags),
            "server": "pymodbus TCP simulator, child process, 127.0.0.1",
            "plan": plan_report(config).splitlines()[0],
            "requests_per_cycle": polling[0]["planner"]["requests_per_cycle"],
            "overruns": {ms: sum(r["overruns"] for r in runs) for ms, runs in paced.items()},
            "service_overruns_10ms": sum(r["overruns"] for r in service),
            # requests answered more than two poll periods after their previous answer (data that old)
            "late_reads": {ms: sum(r["late_reads"] for r in runs) for ms, runs in paced.items()},
            "service_late_reads_10ms": sum(r["late_reads"] for r in service),
        },
    )


if __name__ == "__main__":
    main()
