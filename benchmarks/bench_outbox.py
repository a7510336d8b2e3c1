"""Outbox: durable results/s of `Outbox.put_many` in micro-batches of 1, 16 and 64, and delivery acks/s, each side by
side with bare sqlite3 doing the same writes with the same durability.

Store: each micro-batch is one transaction (one fsync: WAL, synchronous=FULL) holding a vibration result for two
sinks (two rows) and its `seq` update, as the pipeline stores them. The baseline is sqlite3 alone on its own file
in the same directory: the same PRAGMAs, the same transaction (read and update the pipeline's last seq, insert the
rows with an already encoded payload), no event loop, no executor, no `Result` objects. Ack: what `deliver_forever`
does per sink, fetch the next 64 pending rows, then delete them one at a time (one transaction each, synchronous
NORMAL); the baseline runs the same statements. Rounds alternate outbox and baseline, so other load hits both
alike; the ratio is the figure that travels between machines. The file system decides the fsync cost: pass
`--dir` to measure where the outbox lives on the box (`service.outbox.path`).

    .venv/bin/python benchmarks/bench_outbox.py --json /tmp/bench_outbox.json [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters.base import Result, dumps
from edge_runtime.outbox import Outbox
from edge_runtime.tools.bench_schema import Figure, figure, write_result

BATCHES = (1, 16, 64)
SINKS = ["results", "scada"]
RESULT = Result(
    "vibration",
    "gw1.m3.vib",
    1_790_000_000_000_000_000,
    "alarm",
    label="inner_race",
    score=0.93,
    values={"anomaly_score": 0.88},
    detail={"scores": {"normal": 0.02, "ball": 0.03, "inner_race": 0.93, "outer_race": 0.02}},
    latency_ns=4_200_000,
    model="vibration_anomaly@1.2.0+3f9a01c2",
)
BASELINE = "bare sqlite3, same rows and PRAGMAs"


async def outbox_store(path: Path, batch: int, seconds: float) -> tuple[float, int]:
    """Results/s stored by `put_many` in micro-batches of `batch`, and how many (the ack phase delivers them)."""
    box = Outbox(path, max_rows=100_000_000)
    await box.open()
    results = [RESULT] * batch
    try:
        await box.put_many("vibration", results, SINKS)  # warm-up: the file, the statements' cache
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += len(await box.put_many("vibration", results, SINKS))
        rate = n / (time.perf_counter() - t0)
    finally:
        await box.close()
    return rate, n + batch


async def outbox_ack(path: Path, seconds: float) -> float:
    """Acks/s (one row each) as `deliver_forever` makes them: fetch 64 pending, ack one by one."""
    box = Outbox(path, max_rows=100_000_000)
    await box.open(sinks=SINKS)
    try:
        n, t0 = 0, time.perf_counter()
        for sink in SINKS:
            while time.perf_counter() - t0 < seconds / len(SINKS) * (SINKS.index(sink) + 1):
                items = await box.pending(sink, 64)
                if not items:
                    break
                for item in items:
                    await box.ack([item.id])
                n += len(items)
        rate = n / (time.perf_counter() - t0)
    finally:
        await box.close()
    return rate


def _bare_connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS seqs (pipeline TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, "
        "pipeline TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL, created_ns INTEGER NOT NULL, "
        "attempts INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS pending_by_sink ON pending (sink, id)")
    return db


def bare_store(path: Path, batch: int, seconds: float) -> float:
    """The baseline of `outbox_store`: the same transaction per micro-batch, straight on one connection."""
    db = _bare_connect(path)
    payload = dumps(RESULT.to_row())

    def put() -> int:
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT last_seq FROM seqs WHERE pipeline = ?", ("vibration",)).fetchone()
        first = (row[0] if row else 0) + 1
        db.execute(
            "INSERT INTO seqs (pipeline, last_seq) VALUES (?, ?) "
            "ON CONFLICT(pipeline) DO UPDATE SET last_seq = excluded.last_seq",
            ("vibration", first + batch - 1),
        )
        now = time.time_ns()
        db.executemany(
            "INSERT INTO pending (sink, pipeline, seq, payload, created_ns) VALUES (?, ?, ?, ?, ?)",
            [(sink, "vibration", seq, payload, now) for seq in range(first, first + batch) for sink in SINKS],
        )
        db.execute("COMMIT")
        return batch

    try:
        put()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += put()
        return n / (time.perf_counter() - t0)
    finally:
        db.close()


def bare_ack(path: Path, seconds: float) -> float:
    """The baseline of `outbox_ack`: the same SELECT and one DELETE transaction per row, synchronous NORMAL."""
    db = _bare_connect(path)
    db.execute("PRAGMA synchronous=NORMAL")
    try:
        n, t0 = 0, time.perf_counter()
        for i, sink in enumerate(SINKS):
            while time.perf_counter() - t0 < seconds / len(SINKS) * (i + 1):
                rows = db.execute(
                    "SELECT id, pipeline, seq, payload, created_ns FROM pending WHERE sink = ? ORDER BY id LIMIT ?",
                    (sink, 64),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("DELETE FROM pending WHERE id IN (?)", (row[0],))
                    db.execute("COMMIT")
                n += len(rows)
        return n / (time.perf_counter() - t0)
    finally:
        db.close()


def file_system(directory: Path) -> str:
    """The file system type and device of `directory` (fsync costs differ by orders of magnitude)."""
    try:
        out = subprocess.run(
            ["df", "--output=fstype,source", str(directory)], capture_output=True, text=True, check=True
        ).stdout.split()
        return " ".join(out[2:4])
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (outbox, baseline)")
    ap.add_argument("--dir", type=Path, default=None, help="where the files go (default: the temporary directory)")
    ap.add_argument("--quick", action="store_true", help="short run (CI smoke)")
    args = ap.parse_args()
    seconds, rounds = (0.3, 2) if args.quick else (args.seconds, args.rounds)

    store: dict[int, dict[str, list[float]]] = {b: {"outbox": [], "bare": []} for b in BATCHES}
    ack: dict[str, list[float]] = {"outbox": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="edge-runtime-bench-outbox-", dir=args.dir) as tmp:
        base = Path(tmp)
        for r in range(rounds):
            for batch in BATCHES:
                ours, bare = base / f"outbox-{r}-{batch}.sqlite", base / f"bare-{r}-{batch}.sqlite"
                rate, _ = asyncio.run(outbox_store(ours, batch, seconds))
                store[batch]["outbox"].append(rate)
                store[batch]["bare"].append(bare_store(bare, batch, seconds))
                if batch == BATCHES[-1]:  # the largest files: rows enough for the ack phase
                    ack["outbox"].append(asyncio.run(outbox_ack(ours, seconds)))
                    ack["bare"].append(bare_ack(bare, seconds))
                for path in (ours, bare):
                    for suffix in ("", "-wal", "-shm"):
                        path.with_name(path.name + suffix).unlink(missing_ok=True)
        fs = file_system(base)
    figures: list[Figure] = [
        figure(
            f"outbox.store.batch{b}",
            "results/s",
            store[b]["outbox"],
            baseline=(BASELINE, store[b]["bare"]),
            params={"batch": b, "sinks": len(SINKS)},
        )
        for b in BATCHES
    ]
    figures.append(figure("outbox.ack.acks_per_s", "acks/s", ack["outbox"], baseline=(BASELINE, ack["bare"])))
    details: dict[str, Any] = {
        "sinks_per_result": len(SINKS),
        "payload_bytes": len(dumps(RESULT.to_row())),
        "file_system": fs,
        "store": "one transaction per micro-batch, WAL, synchronous=FULL",
        "ack": "fetch 64 pending, one DELETE transaction per row, synchronous=NORMAL",
        "seconds_per_measurement": seconds,
    }
    write_result(args.json, "bench_outbox", figures, details=details)


if __name__ == "__main__":
    main()
