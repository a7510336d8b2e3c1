"""The Modbus polling source: one `Reading` per tag and poll, from a TCP device or an RTU line.

Reads are planned once (`adapters.modbus.plan`), so the hot path sends the planned requests and calls one
decoder per (dtype, order). Behaviour on a bad day is described in `adapters.modbus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import AdapterError, Quality, Reading, ScalarGroup, Stats, now_ns, scalar_readings
from adapters.modbus.client import (
    READ_METHOD,
    connect,
    decode_registers_as_arrays,
    exceptions,
    serial_client,
    tcp_client,
)
from adapters.modbus.config import ModbusDeviceConfig, ModbusRtuConfig, ModbusTcpConfig
from adapters.modbus.plan import BIT_TABLES, PlannedRead, plan_device
from adapters.supervise import Backoff, BurstLog, DecodeGuard

__all__ = ["ModbusSource", "next_poll"]

log = logging.getLogger("adapters.modbus")

_NAN = np.array(np.nan)


def decode_registers(read: PlannedRead, raw: npt.NDArray[Any], t_ns: int) -> ScalarGroup:
    """The readings of one response. A float that decodes to NaN or infinity is what the device sent for "no
    value" (a sensor fault word), so it is kept with quality `bad` rather than passed on as a good value."""
    out: list[Reading] = []
    for decode, streams, units in read.groups:
        values = decode(raw)
        n = len(streams)
        if len(values) != n:
            raise ValueError(f"decoded {len(values)} values for {n} tags")
        quality: list[Quality] = ["good"] * n
        if values.dtype.kind in "fc":
            finite = np.isfinite(values)
            if not finite.all():
                quality = ["good" if ok else "bad" for ok in finite.tolist()]
        out += scalar_readings(streams, t_ns, values, quality, units)
    return ScalarGroup(out, read.decoded_streams)


def next_poll(due: float, interval_s: float, now: float) -> tuple[float, bool]:
    """When a poll group that was due at `due` polls next, and whether this poll overran its period.

    An overrun (a slow device, a busy machine) polls again at once and counts the period from then: skipping the
    missed tick would leave the tags' data two periods old, and catching up would burst requests at the device.
    """
    nxt = due + interval_s
    return (now, True) if now > nxt else (nxt, False)


@dataclass(slots=True)
class _SlaveState:
    backoff: Backoff
    dead_until: float = 0.0
    failing: bool = False


class ModbusSource:
    """Polls a Modbus TCP device or RTU line and yields one `Reading` per tag and poll (a `BatchSource`: the
    service takes the readings of each response as one list).

    Stats: ``reads``, ``readings``, ``modbus_exceptions``, ``timeouts``, ``skipped_dead``, ``overruns``,
    ``late_reads`` (a request answered, with data or an exception response, more than two of its poll periods after
    its previous answer: a stalled device, network or machine, or the first answer after an outage).
    """

    def __init__(self, config: ModbusDeviceConfig, *, coalesce: bool = True) -> None:
        self.config = config
        self.name = config.id
        self.stats = Stats()
        self._groups = plan_device(config, coalesce=coalesce)
        self._client: Any = None
        self._connecting = False
        self._slaves: dict[int, _SlaveState] = {}
        self._failing: set[tuple[int, str, int]] = set()
        self._consecutive_timeouts = 0
        # decode_registers stamps t_ns itself and gives NaN/infinite values quality `bad`: check_sample's conditions
        self._guard = DecodeGuard(
            "modbus_undecodable", self.stats, "malformed", checked_by_decoder=True, device=self.name
        )
        self._errors: tuple[type[Exception], type[Exception]] | None = None
        # when each planned read was last answered (monotonic ns, by id: the reads live as long as the source), for
        # `late_reads`: data older than two poll periods
        self._answered_ns: dict[int, int] = {}
        self._late = BurstLog("modbus_data_late", self.stats, "late_reads")
        self._timeout_log = BurstLog("modbus_timeout")  # counted in stats["timeouts"] by _on_timeout
        # exported from the start at 0: Prometheus's increase() misses a counter's first step if the series is new
        for key in ("late_reads", "overruns", "timeouts", "modbus_exceptions"):
            self.stats[key] = 0

    @property
    def requests_per_cycle(self) -> int:
        """Requests one poll of every group sends (the planner's figure of merit)."""
        return sum(len(g.reads) for g in self._groups)

    async def open(self) -> None:
        cfg = self.config
        self._errors = exceptions()
        if isinstance(cfg, ModbusTcpConfig):
            client, what = tcp_client(cfg.host, cfg.port, cfg.timeout_s), f"{cfg.host}:{cfg.port}"
        else:
            client = serial_client(cfg.serial_port, cfg.baudrate, cfg.parity, cfg.stopbits, cfg.timeout_s)
            what = cfg.serial_port
        decode_registers_as_arrays(client)
        self._client, self._connecting = client, True
        try:
            await connect(client, what, cfg.timeout_s + 5.0, self.name)
        except BaseException:
            client.close()  # a failure or a cancel half-way leaves nothing open
            raise
        finally:
            self._connecting = False
        if self._client is not client:
            # aborted while connecting (a stop, whose cancel follows at once): abort() left the connect alone, as
            # pymodbus ignores a close before its connection is up, so the connection goes now
            client.close()
            await asyncio.get_running_loop().create_future()
        backoff_s = cfg.dead_backoff_s if isinstance(cfg, ModbusRtuConfig) else 1.0
        backoff_max = cfg.dead_backoff_max_s if isinstance(cfg, ModbusRtuConfig) else 30.0
        self._slaves = {dev: _SlaveState(Backoff(backoff_s, backoff_max)) for dev, _, _ in cfg.slaves()}
        self._consecutive_timeouts = 0

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        """Drop the connection now, without waiting for anything: the service calls it before it cancels the
        source's task at a stop, so an answer already on its way is never read (pymodbus would log it as an answer
        without a request). A poll, or a connect, that comes after it waits for that cancel. `close` does the same."""
        if self._client is not None:
            if not self._connecting:  # open() closes a client that is still connecting, once it is up
                self._client.close()
            self._client = None

    async def stream(self) -> AsyncGenerator[Reading, None]:
        async with contextlib.aclosing(self.batches()) as batches:
            async for batch in batches:
                for reading in batch:
                    yield reading

    async def batches(self) -> AsyncGenerator[ScalarGroup, None]:
        """The readings of one planned request at a time (they share one timestamp; a `ScalarGroup`), paced by the
        poll plan."""
        if self._client is None:
            raise AdapterError(f"{self.name}: polled before open() (or after close, or a request cancelled)")
        loop = asyncio.get_running_loop()
        due = [(loop.time(), i) for i in range(len(self._groups))]
        heapq.heapify(due)
        while due:
            at, i = heapq.heappop(due)
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            group = self._groups[i]
            late_ns = int(2e9 * group.interval_s)
            for read in group.reads:
                before = self._answered_ns.get(id(read))
                batch = await self._poll(read)
                after = self._answered_ns.get(id(read))
                if before is not None and after is not None and after - before > late_ns:
                    self._late(gap_ms=round((after - before) / 1e6), period_ms=round(group.interval_s * 1e3),
                               device=self.name, table=read.request.table, start=read.request.start)  # fmt: skip
                yield batch
            at, overran = next_poll(at, group.interval_s, loop.time())
            self.stats["overruns"] += overran
            heapq.heappush(due, (at, i))

    async def read_all(self) -> list[Reading]:
        """Poll every request of every group once, now (one-shot reads and benchmarks; `stream` paces itself)."""
        if self._client is None:
            raise AdapterError(f"{self.name}: read_all() before open() (or after close, or a request cancelled)")
        out: list[Reading] = []
        for group in self._groups:
            for read in group.reads:
                out.extend(await self._poll(read))
        return out

    def _bad(self, read: PlannedRead, t_ns: int) -> ScalarGroup:
        """Every tag of the read marked bad, in the order a good response lists them (set by set)."""
        readings = [
            Reading(s, t_ns, _NAN, "bad", u)
            for _, streams, units in read.groups
            for s, u in zip(streams, units, strict=True)
        ]
        return ScalarGroup(readings, read.decoded_streams)

    async def _poll(self, read: PlannedRead) -> ScalarGroup:
        assert self._errors is not None
        connection_lost, no_response = self._errors
        if self._client is None:
            # aborted: a stop, whose cancel follows at once. Polling on would fail and be reported as an outage
            # (a reconnect counted, a warning logged) at every stop that lands between two requests of a cycle
            await asyncio.get_running_loop().create_future()
        slave = self._slaves[read.device_id]
        loop = asyncio.get_running_loop()
        if slave.dead_until > loop.time():
            self.stats["skipped_dead"] += 1
            return self._bad(read, now_ns())
        req = read.request
        method = getattr(self._client, READ_METHOD[req.table])
        self.stats["reads"] += 1
        try:
            # pymodbus bounds the request itself (one timeout, retries=0: client.py; every await of its execute is
            # timed in 3.16); no outer guard, whose timer per request cost ~5 % of the source's CPU (docs/bench.md)
            response = await method(req.start, count=req.count, device_id=read.device_id)
        except asyncio.CancelledError:
            # stopped mid-request: the answer may still come, and pymodbus would log it as one without a request
            # (a warning that reads like a fault at every stop); half-way through a request the connection is of
            # no further use, so it goes now, before the answer can arrive
            self.abort()
            raise
        except connection_lost as exc:
            raise AdapterError(f"{self.name}: connection lost: {exc}") from exc
        except (no_response, TimeoutError) as exc:
            return self._on_timeout(read, slave, loop.time(), exc)
        t_ns = now_ns()
        self._consecutive_timeouts = 0
        if slave.failing:
            slave.failing = False
            slave.backoff.reset()
            log.info("event=modbus_slave_back device=%s slave=%d", self.name, read.device_id)
        self._answered_ns[id(read)] = time.monotonic_ns()  # not t_ns: a clock step (NTP at boot) is not late data
        key = (read.device_id, req.table, req.start)
        if response.isError():
            self.stats["modbus_exceptions"] += 1
            if key not in self._failing:
                self._failing.add(key)
                log.warning(
                    "event=modbus_exception device=%s slave=%d table=%s start=%d count=%d code=%d",
                    self.name,
                    read.device_id,
                    req.table,
                    req.start,
                    req.count,
                    int(getattr(response, "exception_code", 0)),
                )
            return self._bad(read, t_ns)
        if key in self._failing:
            self._failing.discard(key)
            log.info("event=modbus_exception_cleared device=%s table=%s start=%d", self.name, req.table, req.start)
        if req.table in BIT_TABLES:
            raw: npt.NDArray[Any] = np.asarray(response.bits[: req.count], dtype=np.bool_)  # arrays (client.py)
        else:
            raw = np.asarray(response.registers, dtype=np.uint16)  # big-endian to native: one byte swap
        if raw.shape[0] < req.count:
            self.stats["short_responses"] += 1
            return self._bad(read, t_ns)
        out = self._guard(decode_registers, read, raw, t_ns, start=req.start)
        if out is None:  # counted in stats["malformed"]; the tags show bad quality instead of a wrong value
            return self._bad(read, t_ns)
        self.stats["readings"] += len(out)
        return out

    def _on_timeout(self, read: PlannedRead, slave: _SlaveState, now: float, exc: Exception) -> ScalarGroup:
        self.stats["timeouts"] += 1
        if isinstance(self.config, ModbusTcpConfig):
            self._consecutive_timeouts += 1
            self._timeout_log(
                device=self.name,
                slave=read.device_id,
                table=read.request.table,
                start=read.request.start,
                timeout_s=self.config.timeout_s,
            )
            wait = f"no answer from slave {read.device_id} within {self.config.timeout_s} s"
            if not getattr(self._client, "connected", False):
                raise AdapterError(f"{self.name}: connection closed during a request ({wait}): {exc}") from exc
            if self._consecutive_timeouts >= 3:
                raise AdapterError(f"{self.name}: device not answering, 3 requests in a row ({wait}): {exc}") from exc
        else:
            # a silent slave on a shared line: park it so the others keep their poll rate
            slave.dead_until = now + slave.backoff.next_delay()
            if not slave.failing:
                slave.failing = True
                log.warning("event=modbus_slave_silent device=%s slave=%d", self.name, read.device_id)
        return self._bad(read, now_ns())
