"""Durable outbox: every result is in SQLite (WAL) before any sink sees it, and leaves only when a sink confirms.

One row per (sink, result): each sink acknowledges on its own, so a dead OPC UA client does not delay MQTT. All
rows share one `max_rows`: when a long outage fills it, `when_full` decides between blocking the pipelines
(nothing lost) and dropping the oldest undelivered rows (the line goes on; drops counted).
`seq` is allocated in the same transaction that stores the result, so it is strictly increasing per pipeline and
survives restarts.

Delivery is at-least-once, with this bound: each result is acknowledged (deleted) as soon as its sink confirms
it, before the next is sent, so a crash of the process (kill -9, OOM kill, a watchdog restart) re-sends at most
one result per sink: the one confirmed but not yet deleted. Acks are committed without an fsync (WAL, synchronous
NORMAL: durable across a process crash, one cheap write each), so after a power cut the acks of the last moments
may be undone too and a few more results are re-sent; a stored result is never lost either way. Re-sent results
carry the same `seq`: consumers de-duplicate on (`pipeline`, `seq`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from adapters.base import AdapterError, DeliveryError, EdgeRuntimeError, Result, Sink, dumps
from adapters.supervise import Backoff

__all__ = ["Outbox", "OutboxError", "PendingResult", "deliver_forever"]

log = logging.getLogger("edge_runtime.outbox")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seqs (pipeline TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seq_floor (floor INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pending_by_sink ON pending (sink, id);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    rejected_ns INTEGER NOT NULL,
    reason TEXT NOT NULL
);
"""

MAX_ATTEMPTS_UNEXPECTED = 10


class OutboxError(EdgeRuntimeError):
    """The outbox file cannot be created or opened (a path that is not writable); the service cannot start."""


@dataclass(frozen=True, slots=True)
class PendingResult:
    id: int
    result: Result
    created_ns: int = 0

    @property
    def pipeline(self) -> str:
        return self.result.pipeline

    @property
    def seq(self) -> int:
        return self.result.seq

    @property
    def payload(self) -> dict[str, Any]:
        """The wire form, as a sink delivers it."""
        return self.result.to_json()


class Outbox:
    """All SQLite work runs on one dedicated thread: the event loop never waits on fsync."""

    def __init__(
        self, path: Path | str, *, max_rows: int = 100_000, when_full: Literal["block", "drop_oldest"] = "block"
    ) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.when_full = when_full
        self.dropped = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._rows = 0
        self._seq_floor = 0  # > 0 after a corrupt file was quarantined: new seqs start above every old one
        self._space = asyncio.Condition()
        self._new: dict[str, asyncio.Event] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------
    async def open(self, sinks: Sequence[str] | None = None) -> None:
        """Open (creating) the file. With `sinks`, rows left for sinks no longer deployed are parked in `rejected`,
        so they neither count against `max_rows` nor wait for ever."""
        await self._call(self._open_sync, None if sinks is None else list(sinks))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a result (and its seq) reported stored is on disk even after a power cut; with NORMAL the last
            # commits could vanish and seq would repeat after the reboot.
            db.execute("PRAGMA synchronous=FULL")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _quarantine(self, exc: sqlite3.DatabaseError) -> None:
        """Rename a corrupt file (and its WAL) aside with a UTC timestamp, for inspection; a new one starts with
        seqs above any the old file can have handed out (microseconds since the epoch)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = self.path.with_name(self.path.name + suffix)
            if part.exists():
                part.rename(aside.with_name(aside.name + suffix))
        self._seq_floor = time.time_ns() // 1000
        log.error(
            "event=outbox_quarantined path=%s moved_to=%s error=%r action=new_outbox seq_floor=%d "
            "(undelivered results in the old file are not sent; inspect it with sqlite3)",
            self.path,
            aside.name,
            exc,
            self._seq_floor,
        )

    def _open_sync(self, sinks: list[str] | None) -> None:
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = self._connect()
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
                self._quarantine(exc)
                db = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"outbox {self.path}: cannot create or open it ({exc}); check service.outbox.path and that the "
                "service's user may write to its directory"
            ) from exc
        if self._seq_floor:
            db.execute("INSERT INTO seq_floor (floor) VALUES (?)", (self._seq_floor,))
        row = db.execute("SELECT MAX(floor) FROM seq_floor").fetchone()
        self._seq_floor = int(row[0]) if row and row[0] is not None else 0
        self._db = db
        if sinks is not None:
            marks = ",".join("?" * len(sinks))
            orphans = db.execute(f"SELECT sink, COUNT(*) FROM pending WHERE sink NOT IN ({marks}) GROUP BY sink", sinks)
            for sink, count in orphans.fetchall():
                log.warning("event=outbox_orphans sink=%s rows=%d action=moved_to_rejected", sink, count)
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT INTO rejected (id, sink, pipeline, seq, payload, created_ns, rejected_ns, reason) "
                    "SELECT id, sink, pipeline, seq, payload, created_ns, ?, 'sink removed from the deployment' "
                    "FROM pending WHERE sink = ?",
                    (time.time_ns(), sink),
                )
                db.execute("DELETE FROM pending WHERE sink = ?", (sink,))
                db.execute("COMMIT")
        self._rows = int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
        if self._rows:
            log.info("event=outbox_recovered path=%s pending=%d", self.path, self._rows)

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    # ---- producer side ---------------------------------------------------------------------------------------
    @property
    def pending_rows(self) -> int:
        return self._rows

    def event_for(self, sink: str) -> asyncio.Event:
        return self._new.setdefault(sink, asyncio.Event())

    async def put(self, result: Result, sinks: Sequence[str]) -> Result:
        """Store one result for every sink and return it with its `seq` (see `put_many`)."""
        (stored,) = await self.put_many(result.pipeline, [result], sinks)
        return stored

    async def put_many(self, pipeline: str, results: Sequence[Result], sinks: Sequence[str]) -> list[Result]:
        """Store a micro-batch of one pipeline's results in one transaction (one fsync) and return them with their
        `seq`s, in order.

        Blocks (policy `block`: back-pressure, no loss) while the outbox is full, and retries while SQLite fails
        (a locked file, a full disk): both are logged once per episode, never raised into the pipeline.
        """
        rows = len(results) * len(sinks)

        def has_room() -> bool:
            return self._rows + rows <= self.max_rows or self._rows == 0

        if not has_room() and self.when_full == "drop_oldest":
            excess = self._rows + rows - self.max_rows
            dropped: int = await self._call(self._drop_oldest_sync, excess)
            self._rows -= dropped
            if self.dropped == 0 or (self.dropped + dropped) // 10_000 > self.dropped // 10_000:
                log.warning("event=outbox_dropped_oldest dropped_total=%d max_rows=%d", self.dropped + dropped,
                            self.max_rows)  # fmt: skip
            self.dropped += dropped
        if not has_room():
            log.warning("event=outbox_full pending=%d max_rows=%d pipeline=%s", self._rows, self.max_rows, pipeline)
            async with self._space:
                await self._space.wait_for(has_room)
            log.info("event=outbox_has_room pending=%d pipeline=%s", self._rows, pipeline)
        delay, failing = 0.1, False
        batch = [r.with_(pipeline=pipeline) if r.pipeline != pipeline else r for r in results]
        while True:
            try:
                stored: list[Result] = await self._call(self._put_sync, pipeline, batch, list(sinks))
                break
            except sqlite3.Error as exc:
                if not failing:
                    log.error("event=outbox_write_failed path=%s error=%r (retrying; pipeline %s waits)",
                              self.path, exc, pipeline)  # fmt: skip
                    failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if failing:
            log.warning("event=outbox_write_recovered path=%s", self.path)
        self._rows += rows
        for sink in sinks:
            self.event_for(sink).set()
        return stored

    def _drop_oldest_sync(self, n: int) -> int:
        db = self._conn()
        cur = db.execute("DELETE FROM pending WHERE id IN (SELECT id FROM pending ORDER BY id LIMIT ?)", (n,))
        return int(cur.rowcount)

    def _put_sync(self, pipeline: str, results: list[Result], sinks: list[str]) -> list[Result]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT last_seq FROM seqs WHERE pipeline = ?", (pipeline,)).fetchone()
            first = max(row[0] if row else 0, self._seq_floor) + 1
            seqs = list(range(first, first + len(results)))
            db.execute(
                "INSERT INTO seqs (pipeline, last_seq) VALUES (?, ?) "
                "ON CONFLICT(pipeline) DO UPDATE SET last_seq = excluded.last_seq",
                (pipeline, seqs[-1] if seqs else first - 1),
            )
            now = time.time_ns()
            stored = [r.with_(seq=seq) for seq, r in zip(seqs, results, strict=True)]
            db.executemany(
                "INSERT INTO pending (sink, pipeline, seq, payload, created_ns) VALUES (?, ?, ?, ?, ?)",
                [
                    (sink, pipeline, r.seq, payload, now)
                    for r in stored
                    for payload in (dumps(r.to_row()),)
                    for sink in sinks
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return stored

    # ---- consumer side ---------------------------------------------------------------------------------------
    async def pending(self, sink: str, limit: int = 64) -> list[PendingResult]:
        rows = await self._call(self._pending_sync, sink, limit)
        return [PendingResult(r[0], Result.from_row(json.loads(r[3])), r[4]) for r in rows]

    def _pending_sync(self, sink: str, limit: int) -> list[tuple[int, str, int, str, int]]:
        cur = self._conn().execute(
            "SELECT id, pipeline, seq, payload, created_ns FROM pending WHERE sink = ? ORDER BY id LIMIT ?",
            (sink, limit),
        )
        return list(cur.fetchall())

    async def backlog(self) -> dict[str, tuple[int, int | None]]:
        """Per sink: undelivered rows and when the oldest was stored (epoch ns), for the operator page."""
        rows = await self._call(self._backlog_sync)
        return {sink: (int(n), oldest) for sink, n, oldest in rows}

    def _backlog_sync(self) -> list[tuple[str, int, int | None]]:
        cur = self._conn().execute(
            "SELECT sink, COUNT(*), (SELECT created_ns FROM pending q WHERE q.sink = p.sink ORDER BY id LIMIT 1) "
            "FROM pending p GROUP BY sink"
        )
        return list(cur.fetchall())

    async def ack(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        deleted: int = await self._call(self._ack_sync, list(ids))
        self._rows -= deleted  # rows dropped meanwhile are not counted twice
        async with self._space:
            self._space.notify_all()

    def _ack_sync(self, ids: list[int]) -> int:
        db = self._conn()
        # An ack that a power cut undoes only re-sends a result, so it skips the fsync (module docstring); a
        # result's own store keeps synchronous=FULL.
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                deleted = db.execute(f"DELETE FROM pending WHERE id IN ({','.join('?' * len(ids))})", ids).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.execute("PRAGMA synchronous=FULL")
        return int(deleted)

    async def reject(self, ident: int, reason: str) -> None:
        """Move a result a sink refuses for good into `rejected` (kept for inspection, never retried)."""
        deleted: int = await self._call(self._reject_sync, ident, reason)
        self._rows -= deleted
        async with self._space:
            self._space.notify_all()

    def _reject_sync(self, ident: int, reason: str) -> int:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO rejected (id, sink, pipeline, seq, payload, created_ns, rejected_ns, reason) "
                "SELECT id, sink, pipeline, seq, payload, created_ns, ?, ? FROM pending WHERE id = ?",
                (time.time_ns(), reason[:500], ident),
            )
            deleted = db.execute("DELETE FROM pending WHERE id = ?", (ident,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(deleted)

    async def rejected_count(self) -> int:
        row = await self._call(lambda: self._conn().execute("SELECT COUNT(*) FROM rejected").fetchone())
        return int(row[0])

    async def note_attempt(self, ident: int) -> int:
        row = await self._call(
            lambda: (
                self._conn()
                .execute("UPDATE pending SET attempts = attempts + 1 WHERE id = ? RETURNING attempts", (ident,))
                .fetchone()
            )
        )
        return int(row[0]) if row else 0

    async def last_seq(self, pipeline: str) -> int:
        row = await self._call(
            lambda: self._conn().execute("SELECT last_seq FROM seqs WHERE pipeline = ?", (pipeline,)).fetchone()
        )
        return int(row[0]) if row else 0


async def deliver_forever(
    outbox: Outbox,
    sink: Sink,
    *,
    batch: int = 64,
    backoff: Backoff | None = None,
    deliver_timeout_s: float = 30.0,
    max_age_s: float | None = None,
    reopen_after: int | None = None,
) -> None:
    """Hand a sink its pending results in order; on failure keep them and retry with back-off.

    Transient failures (`AdapterError`, timeouts, OS errors) are retried; after `reopen_after` failed attempts in a
    row the function returns so that the caller closes and reopens the sink (a client whose connection is gone
    for good). A refusal (any other `EdgeRuntimeError`, e.g. a write outside the allow-list) parks that result
    in `rejected`; so does a result older than `max_age_s` (a stale ejector pulse must not fire).
    """
    backoff = backoff or Backoff(initial_s=0.2, max_s=10.0)
    new = outbox.event_for(sink.name)
    failing, consecutive, expired_streak = False, 0, 0
    while True:
        new.clear()
        try:
            items = await outbox.pending(sink.name, batch)
        except sqlite3.Error as exc:
            log.error("event=outbox_read_failed sink=%s error=%r", sink.name, exc)
            await asyncio.sleep(backoff.next_delay())
            continue
        if not items:
            await new.wait()
            continue
        try:
            for item in items:
                if max_age_s is not None and time.time_ns() - item.created_ns > max_age_s * 1e9:
                    sink.stats["expired"] += 1
                    if expired_streak == 0:
                        log.warning("event=results_expired sink=%s max_age_s=%g first_seq=%d pipeline=%s",
                                    sink.name, max_age_s, item.seq, item.pipeline)  # fmt: skip
                    expired_streak += 1
                    await outbox.reject(item.id, f"expired: older than max_age_s={max_age_s:g}")
                    continue
                expired_streak = 0
                try:
                    await asyncio.wait_for(sink.deliver(item.result), deliver_timeout_s)
                except (AdapterError, TimeoutError, OSError):
                    raise
                except EdgeRuntimeError as exc:  # refused for good (e.g. a write outside the allow-list)
                    await _reject(outbox, sink, item, exc)
                    continue
                except Exception as exc:  # a bug or an unforeseen library error: retry a while, then park it
                    if await outbox.note_attempt(item.id) < MAX_ATTEMPTS_UNEXPECTED:
                        raise DeliveryError(f"unexpected {exc!r}") from exc
                    await _reject(outbox, sink, item, exc)
                    continue
                await outbox.ack([item.id])  # before the next is sent: a crash re-sends at most this one
                sink.stats["acknowledged"] += 1
            if failing:
                log.warning("event=sink_recovered sink=%s", sink.name)
                failing = False
            consecutive = 0
            backoff.reset()
        except (AdapterError, TimeoutError, OSError) as exc:
            sink.stats["delivery_failures"] += 1
            consecutive += 1
            if not failing:  # once per outage, not once per retry
                log.warning("event=sink_failed sink=%s error=%r (results wait in the outbox)", sink.name, exc)
                failing = True
            if reopen_after is not None and consecutive >= reopen_after:
                return
            await asyncio.sleep(backoff.next_delay())
            continue
        except sqlite3.Error as exc:
            log.error("event=outbox_update_failed sink=%s error=%r", sink.name, exc)
            await asyncio.sleep(backoff.next_delay())
            continue


async def _reject(outbox: Outbox, sink: Sink, item: PendingResult, exc: Exception) -> None:
    sink.stats["rejected"] += 1
    log.error(
        "event=result_rejected sink=%s pipeline=%s seq=%d error=%r (kept in the outbox's rejected table)",
        sink.name,
        item.pipeline,
        item.seq,
        exc,
    )
    await outbox.reject(item.id, repr(exc))
