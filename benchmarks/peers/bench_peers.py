"""Peer comparison: the same 500-register map read by Node-RED 4.1 + node-red-contrib-modbus 5.23 and by
edge-runtime's Modbus source, one after the other against one pymodbus server, at a 20 ms and a 10 ms poll.

Node-RED gets exactly edge-runtime's planned requests (one `modbus-read` node per request, same table, start, count
and poll period) and a function node per read that counts the tags it carries; it does not decode dtypes or byte
orders (it would need one buffer-parser node per tag), so its CPU figure is a floor. edge-runtime runs
`ModbusSource.batches()` (decoded, timestamped `Reading`s, one list per response, as the service takes them) in
this process; the server holds fixed values (`bench_modbus._serve`). CPU time is the reader's process only
(Node-RED: its node process from /proc; edge-runtime: this process), never the server's. Needs `make peers`.

    .venv/bin/python benchmarks/peers/bench_peers.py [--seconds 10] [--rounds 3] [--json bench-peers.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_modbus import _serve, paced_ingest, profile, wait_port  # type: ignore[import-not-found,unused-ignore]  # noqa: E402

from adapters.loopback import free_port  # noqa: E402
from adapters.modbus.config import ModbusTcpConfig  # noqa: E402
from adapters.modbus.plan import plan_device  # noqa: E402
from edge_runtime.tools.bench import process_cpu_s  # noqa: E402
from edge_runtime.tools.bench_schema import figure, write_result  # noqa: E402

NODE_RED = HERE / "node_modules" / ".bin" / "node-red"
DATA_TYPE = {"holding": "HoldingRegister", "input": "InputRegister", "coil": "Coil", "discrete": "Input"}


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("node-red", "node-red-contrib-modbus"):
        out[pkg] = json.loads((HERE / "node_modules" / pkg / "package.json").read_text())["version"]
    out["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return out


def flow(config: ModbusTcpConfig, poll_ms: int) -> list[dict[str, Any]]:
    """A tab with the client, one read node per planned request, a counter per read and GET /count."""
    nodes: list[dict[str, Any]] = [
        {"id": "tab", "type": "tab", "label": "bench"},
        {
            "id": "client",
            "type": "modbus-client",
            "name": "bench",
            "clienttype": "tcp",
            "bufferCommands": True,
            "stateLogEnabled": False,
            "queueLogEnabled": False,
            "tcpHost": "127.0.0.1",
            "tcpPort": str(config.port),
            "tcpType": "DEFAULT",
            "unit_id": 1,
            "commandDelay": 1,
            "clientTimeout": 2000,
            "reconnectOnTimeout": True,
            "reconnectTimeout": 2000,
            "parallelUnitIdsAllowed": True,
        },
        {"id": "http", "type": "http in", "z": "tab", "url": "/count", "method": "get", "wires": [["report"]]},
        {
            "id": "report",
            "type": "function",
            "z": "tab",
            "func": "msg.payload = {tags: global.get('tags') || 0, reads: global.get('reads') || 0}; return msg;",
            "wires": [["resp"]],
        },
        {"id": "resp", "type": "http response", "z": "tab", "wires": []},
    ]
    for group in plan_device(config):
        for i, read in enumerate(group.reads):
            req = read.request
            nid = f"r{req.table}{req.start}_{i}"
            nodes.append(
                {
                    "id": nid,
                    "type": "modbus-read",
                    "z": "tab",
                    "name": f"read {req.table} {req.start}+{req.count}",
                    "topic": "",
                    "showStatusActivities": False,
                    "logIOActivities": False,
                    "showErrors": False,
                    "unitid": "",
                    "dataType": DATA_TYPE[req.table],
                    "adr": str(req.start),
                    "quantity": str(req.count),
                    "rate": str(poll_ms),
                    "rateUnit": "ms",
                    "delayOnStart": False,
                    "startDelayTime": "",
                    "server": "client",
                    "useIOFile": False,
                    "ioFile": "",
                    "useIOForPayload": False,
                    "wires": [[f"c{nid}"], []],
                }
            )
            nodes.append(
                {
                    "id": f"c{nid}",
                    "type": "function",
                    "z": "tab",
                    "func": f"global.set('tags', (global.get('tags') || 0) + {len(read.streams)}); "
                    "global.set('reads', (global.get('reads') || 0) + 1); return null;",
                    "wires": [],
                }
            )
    return nodes


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as resp:
        return int(json.loads(resp.read())["tags"])


def node_red_rounds(config: ModbusTcpConfig, poll_ms: int, seconds: float, rounds: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        ui = free_port()
        (Path(tmp) / "flows.json").write_text(json.dumps(flow(config, poll_ms)))
        (Path(tmp) / "settings.js").write_text(
            f"module.exports = {{uiHost: '127.0.0.1', uiPort: {ui}, flowFile: 'flows.json', httpAdminRoot: false, "
            "logging: {console: {level: 'warn'}}};\n"
        )
        log = (Path(tmp) / "node-red.log").open("w")
        proc = subprocess.Popen(
            [str(NODE_RED), "-u", tmp, "-s", str(Path(tmp) / "settings.js")], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 90
            while True:  # up and polling
                try:
                    if count(ui) > 0:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    tail = (Path(tmp) / "node-red.log").read_text()[-3000:]
                    raise RuntimeError(f"Node-RED did not start polling within 90 s; its log:\n{tail}")
                time.sleep(0.2)
            time.sleep(2.0)  # warm-up: connection established, JIT settled
            out = []
            for _ in range(rounds):
                n0, c0, w0 = count(ui), process_cpu_s(proc.pid), time.perf_counter()
                time.sleep(seconds)
                n1, c1, w1 = count(ui), process_cpu_s(proc.pid), time.perf_counter()
                n = n1 - n0
                out.append(
                    {
                        "tags_per_s": n / (w1 - w0),
                        "cpu_s_per_1k_tags": (c1 - c0) / max(1, n) * 1000,
                        "rss_mb": rss_mb(proc.pid),
                    }
                )
            return out
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring window per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not NODE_RED.is_file():
        raise SystemExit(f"{NODE_RED} missing: run `make peers` (npm install of Node-RED and contrib-modbus)")
    port = free_port()
    config = profile(port)
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(config.model_dump_json(), port))
    server.start()
    figures = []
    details: dict[str, Any] = {"versions": versions(), "tags": len(config.tags)}
    try:
        wait_port(port, server)
        for poll_ms in (20, 10):
            peer = node_red_rounds(config, poll_ms, args.seconds, args.rounds)
            ours = [asyncio.run(paced_ingest(config, poll_ms, args.seconds)) for _ in range(args.rounds)]
            import resource

            details[f"rss_mb_{poll_ms}ms"] = {
                "node-red": round(max(r["rss_mb"] for r in peer), 1),
                "edge-runtime": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
            name = f"Node-RED {details['versions']['node-red']} + contrib-modbus"
            figures += [
                figure(
                    f"peers.{poll_ms}ms.tags_per_s",
                    "tags/s",
                    [r["tags_per_s"] for r in ours],
                    baseline=(name, [r["tags_per_s"] for r in peer]),
                ),
                figure(
                    f"peers.{poll_ms}ms.cpu_s_per_1k_tags",
                    "CPU-s/1k tags",
                    [r["cpu_s_per_1k_tags"] for r in ours],
                    baseline=(name, [r["cpu_s_per_1k_tags"] for r in peer]),
                    higher_is_better=False,
                ),
                figure(
                    f"peers.{poll_ms}ms.max_age",
                    "poll periods",
                    [r["max_age_polls"] for r in ours],
                    higher_is_better=False,
                ),
            ]
    finally:
        server.terminate()
        server.join(10)
    write_result(args.json, "bench_peers", figures, details=details)


if __name__ == "__main__":
    main()
