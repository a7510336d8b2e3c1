from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from adapters.base import DeliveryError, EdgeRuntimeError, Result, Stats
from adapters.supervise import Backoff
from edge_runtime.outbox import Outbox, OutboxError, deliver_forever
from tests import helpers


def res(pipeline: str, detail: Mapping[str, Any]) -> Result:
    """A result as a task builds it (no seq yet), carrying the test's fields in `detail`."""
    return Result(pipeline=pipeline, stream="s1", t_ns=1, decision="ok", detail=dict(detail))


class RecordingSink:
    """A sink that confirms or refuses on command, to exercise the outbox's bookkeeping."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = Stats()
        self.up = True
        self.got: list[dict[str, Any]] = []

    async def open(self) -> None:
        pass

    async def deliver(self, result: Result) -> None:
        if not self.up:
            raise DeliveryError("down")
        self.got.append(result.to_json())

    async def close(self) -> None:
        pass


until = partial(helpers.until, timeout_s=10.0)
ROOT = Path(__file__).resolve().parents[2]


async def test_seq_is_strictly_increasing_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    await box.open()
    seqs = [(await box.put(res("vib", {"x": i}), ["s"])).seq for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert (await box.put(res("rice", {}), ["s"])).seq == 1
    await box.close()
    box = Outbox(path)
    await box.open()
    assert box.pending_rows == 6
    assert (await box.put(res("vib", {}), ["s"])).seq == 6
    pending = await box.pending("s")
    assert [(p.pipeline, p.seq) for p in pending][:2] == [("vib", 1), ("vib", 2)]
    assert pending[0].result == res("vib", {"x": 0}).with_(seq=1)  # the same typed object comes back
    await box.close()


async def test_rows_leave_only_when_the_sink_confirms(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    sink = RecordingSink("mqtt")
    sink.up = False
    task = asyncio.create_task(deliver_forever(box, sink, backoff=Backoff(initial_s=0.01, max_s=0.05)))
    for i in range(10):
        await box.put(res("vib", {"i": i}), ["mqtt"])
    await until(lambda: sink.stats["delivery_failures"] >= 2)
    assert box.pending_rows == 10 and sink.got == []
    sink.up = True
    await until(lambda: box.pending_rows == 0)
    assert [r["i"] for r in sink.got] == list(range(10))
    assert [r["seq"] for r in sink.got] == list(range(1, 11))
    task.cancel()
    await box.close()


async def test_each_sink_acknowledges_on_its_own(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    fast, dead = RecordingSink("fast"), RecordingSink("dead")
    dead.up = False
    tasks = [
        asyncio.create_task(deliver_forever(box, s, backoff=Backoff(initial_s=0.01, max_s=0.05))) for s in (fast, dead)
    ]
    for i in range(4):
        await box.put(res("p", {"i": i}), ["fast", "dead"])
    await until(lambda: len(fast.got) == 4 and box.pending_rows == 4)  # acknowledged after the batch
    await asyncio.sleep(0.1)
    assert box.pending_rows == 4 and dead.got == []  # the dead sink's copies stay
    for t in tasks:
        t.cancel()
    await box.close()


async def test_full_outbox_blocks_the_producer_instead_of_losing(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_rows=3)
    await box.open()
    for i in range(3):
        await box.put(res("p", {"i": i}), ["s"])
    blocked = asyncio.create_task(box.put(res("p", {"i": 3}), ["s"]))
    await asyncio.sleep(0.2)
    assert not blocked.done()
    first = await box.pending("s", 1)
    await box.ack([first[0].id])
    assert (await asyncio.wait_for(blocked, 5)).seq == 4
    assert box.pending_rows == 3
    await box.close()


async def test_numpy_values_are_stored_as_plain_json(tmp_path: Path) -> None:
    import numpy as np

    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    await box.put(res("p", {"score": np.float32(0.5), "v": np.arange(3)}), ["s"])
    (row,) = await box.pending("s")
    assert row.payload["score"] == 0.5 and row.payload["v"] == [0, 1, 2]
    await box.close()


class RefusingSink(RecordingSink):
    """Refuses results whose `bad` field is set, as a write-back refuses an address outside its allow-list."""

    async def deliver(self, result: Result) -> None:
        if result.detail.get("bad"):
            raise EdgeRuntimeError("address 9999 is not writable")
        if result.detail.get("bug"):
            raise KeyError("surprise")
        await super().deliver(result)


async def test_a_permanently_refused_result_is_parked_not_retried_for_ever(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    sink = RefusingSink("plc")
    task = asyncio.create_task(deliver_forever(box, sink, backoff=Backoff(initial_s=0.01, max_s=0.02)))
    await box.put(res("p", {"i": 0}), ["plc"])
    await box.put(res("p", {"i": 1, "bad": True}), ["plc"])
    await box.put(res("p", {"i": 2, "bug": True}), ["plc"])
    await box.put(res("p", {"i": 3}), ["plc"])
    await until(lambda: box.pending_rows == 0)
    assert [r["i"] for r in sink.got] == [0, 3]
    assert sink.stats["rejected"] == 2
    assert sink.stats["delivery_failures"] >= 4  # the unexpected error was retried before it was parked
    assert await box.rejected_count() == 2
    task.cancel()
    await box.close()


async def test_rows_of_a_removed_sink_are_parked_at_open(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_rows=5)
    await box.open()
    for i in range(5):
        await box.put(res("p", {"i": i}), ["old_sink"])
    await box.close()
    box = Outbox(path, max_rows=5)
    await box.open(sinks=["new_sink"])
    assert box.pending_rows == 0 and await box.rejected_count() == 5
    assert (await asyncio.wait_for(box.put(res("p", {"i": 5}), ["new_sink"]), 5)).seq == 6  # not blocked by the orphans
    await box.close()


async def test_stale_results_are_not_delivered_but_kept(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    sink = RecordingSink("plc")
    sink.up = False
    task = asyncio.create_task(deliver_forever(box, sink, max_age_s=0.3, backoff=Backoff(initial_s=0.05, max_s=0.05)))
    await box.put(res("rice", {"eject_channels": [3]}), ["plc"])
    await asyncio.sleep(0.5)  # the device is unreachable longer than the pulse is useful
    sink.up = True
    await box.put(res("rice", {"eject_channels": [4]}), ["plc"])
    await until(lambda: box.pending_rows == 0)
    assert [r["eject_channels"] for r in sink.got] == [[4]]
    assert sink.stats["expired"] == 1 and await box.rejected_count() == 1
    task.cancel()
    await box.close()


async def test_a_sink_that_keeps_failing_is_handed_back_for_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    sink = RecordingSink("mqtt")
    sink.up = False
    await box.put(res("p", {}), ["mqtt"])
    await asyncio.wait_for(deliver_forever(box, sink, reopen_after=3, backoff=Backoff(initial_s=0.01, max_s=0.01)), 10)
    assert sink.stats["delivery_failures"] == 3 and box.pending_rows == 1
    await box.close()


async def test_values_json_cannot_hold_are_stored_readably(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    await box.put(res("p", {"tags": {"b", "a"}, "raw": b"\x01\xff", "odd": object}), ["s"])
    (row,) = await box.pending("s")
    assert row.payload["tags"] == ["a", "b"] and row.payload["raw"] == "01ff" and "object" in row.payload["odd"]
    await box.close()


async def test_a_micro_batch_is_stored_in_order_in_one_go(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    assert [r.seq for r in await box.put_many("p", [res("p", {"i": i}) for i in range(5)], ["a", "b"])] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert [r.seq for r in await box.put_many("p", [res("p", {"i": 5})], ["a", "b"])] == [6]
    assert box.pending_rows == 12
    rows = await box.pending("b")
    assert [(r.seq, r.payload["i"]) for r in rows] == [(i + 1, i) for i in range(6)]
    await box.close()


async def test_drop_oldest_keeps_the_newest_results_and_counts_the_rest(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_rows=4, when_full="drop_oldest")
    await box.open()
    for i in range(10):
        await asyncio.wait_for(box.put(res("p", {"i": i}), ["s"]), 5)  # never blocks
    assert box.pending_rows == 4 and box.dropped == 6
    assert [r.payload["i"] for r in await box.pending("s")] == [6, 7, 8, 9]
    await box.close()


async def test_rows_dropped_during_a_delivery_are_not_counted_twice(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_rows=3, when_full="drop_oldest")
    await box.open()
    for i in range(3):
        await box.put(res("p", {"i": i}), ["s"])
    in_flight = await box.pending("s")  # a sink is delivering these three...
    await box.put(res("p", {"i": 3}), ["s"])  # ...while the oldest is dropped to make room
    await box.ack([r.id for r in in_flight])
    assert box.pending_rows == 1
    assert [r.payload["i"] for r in await box.pending("s")] == [3]
    await box.close()


async def test_backlog_counts_each_sinks_rows_and_dates_its_oldest(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    await box.open()
    assert await box.backlog() == {}
    first = time.time_ns()
    await box.put_many("vib", [res("vib", {"x": i}) for i in range(3)], ["mqtt", "plc"])
    later = time.time_ns()
    await box.put(res("vib", {"x": 3}), ["mqtt"])
    backlog = await box.backlog()
    assert {sink: n for sink, (n, _) in backlog.items()} == {"mqtt": 4, "plc": 3}
    assert all(oldest is not None and first <= oldest <= later for _, oldest in backlog.values())
    await box.ack([p.id for p in await box.pending("plc")])
    assert {sink: n for sink, (n, _) in (await box.backlog()).items()} == {"mqtt": 4}
    await box.close()


async def test_a_corrupt_outbox_is_quarantined_and_a_new_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not a database (a power cut mid-write, a wrong path) no longer stops the service for good:
    it is renamed aside for inspection, a clear line says where, and seq keeps increasing past the old file's."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    await box.open()
    old_seq = (await box.put(res("vib", {}), ["s"])).seq
    await box.close()
    path.write_bytes(b"this is not a database" * 100)
    caplog.set_level(logging.ERROR, logger="edge_runtime.outbox")
    box = Outbox(path)
    await box.open()
    new_seq = (await box.put(res("vib", {}), ["s"])).seq
    await box.close()
    aside = list(tmp_path.glob("o.sqlite.corrupt-*"))  # noqa: ASYNC240 (a test's tmp dir)
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert new_seq > old_seq  # consumers that de-duplicate by seq do not drop the new results
    assert any("event=outbox_quarantined" in m and aside[0].name in m for m in caplog.messages)


async def test_an_unwritable_outbox_path_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    box = Outbox(blocker / "sub" / "o.sqlite")  # a directory cannot be made under a file
    with pytest.raises(OutboxError, match=r"outbox .*file/sub/o\.sqlite"):
        await box.open()
    await box.close()


async def test_a_kill_9_mid_drain_re_sends_at_most_one_result_per_sink(tmp_path: Path) -> None:
    """A real child process drains 400 results into a file sink and is killed with SIGKILL mid-drain; a second
    one finishes. Every result arrives, and at most one (the one delivered but not yet acknowledged) twice."""
    import sys

    path, out = tmp_path / "o.sqlite", tmp_path / "delivered.txt"
    box = Outbox(path)
    await box.open()
    await box.put_many("vib", [res("vib", {"i": i}) for i in range(400)], ["s"])
    await box.close()
    args = ["-m", "tests.helpers.drain_child", str(path), str(out), "0.005"]
    root = str(ROOT)

    def delivered() -> int:
        return len(out.read_text().split()) if out.exists() else 0

    for kill_after in (150, 290):
        child = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=root)
        try:
            await until(partial(lambda n: delivered() >= n, kill_after), what="mid-drain")
        finally:
            child.kill()  # SIGKILL: no clean-up in the child
            await asyncio.wait_for(child.wait(), 30)
    last = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=root)
    assert await asyncio.wait_for(last.wait(), 120) == 0
    seqs = [int(x) for x in out.read_text().split()]
    assert sorted(set(seqs)) == list(range(1, 401))  # nothing lost
    resent = len(seqs) - 400
    assert 0 <= resent <= 2, f"{resent} results re-sent after two kill -9 (bound: one per crash per sink)"
