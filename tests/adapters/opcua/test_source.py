"""OpcuaSource against real asyncua servers on free loopback ports: subscriptions, polling, recovery."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import AdapterError
from adapters.opcua.config import OpcuaConfig
from adapters.opcua.simulator import running_simulator
from adapters.opcua.source import OpcuaSource, _Binding, resolve_node_id
from adapters.supervise import check_sample
from tests.helpers import free_port, until

from .common import T0_NS, device, has_value, small_device, supervised


async def test_subscription_readings_carry_timestamp_quality_and_shape() -> None:
    port = free_port()
    cfg = small_device(port)
    async with running_simulator(cfg, port=port) as sim, supervised(OpcuaSource(cfg)) as got:
        await until(lambda: {r.stream for r in got} == {"cell.current", "cell.line"}, what="initial values")
        n = len(got)
        await sim.write("current", 181.5, source_t_ns=T0_NS)
        await sim.write("current", 0.0, status="UncertainLastUsableValue", source_t_ns=T0_NS + 1000)
        await sim.write("current", 0.0, status="BadSensorFailure", source_t_ns=T0_NS + 2000)
        await sim.write("line", np.linspace(20.0, 400.0, 32), source_t_ns=T0_NS + 3000)
        await until(lambda: len(got) >= n + 4, what="four changes")
    new = got[n:]
    current = [r for r in new if r.stream == "cell.current"]
    assert [r.quality for r in current] == ["good", "uncertain", "bad"]
    assert [r.t_ns for r in current] == [T0_NS, T0_NS + 1000, T0_NS + 2000]
    assert current[0].value.shape == () and float(current[0].value) == 181.5 and current[0].unit == "A"
    assert current[0].rate_hz is None
    (line,) = [r for r in new if r.stream == "cell.line"]
    assert line.value.shape == (32,) and line.rate_hz == 50.0 and line.t_ns == T0_NS + 3000
    np.testing.assert_allclose(line.value, np.linspace(20.0, 400.0, 32))


@pytest.mark.parametrize("queue_size", [1000, 1])
async def test_queue_size_keeps_every_change_between_publishes(queue_size: int) -> None:
    port = free_port()
    cfg = small_device(port, publishing_interval_ms=1000, queue_size=queue_size)
    async with running_simulator(cfg, port=port) as sim, supervised(OpcuaSource(cfg)) as got:
        await until(lambda: any(r.stream == "cell.current" for r in got), what="initial value")
        for i in range(50):
            await sim.write("current", float(i), source_t_ns=T0_NS + i * 1000)
        await until(lambda: any(r.stream == "cell.current" and float(r.value) == 49.0 for r in got), what="last")
    values = [float(r.value) for r in got if r.stream == "cell.current" and T0_NS <= r.t_ns < T0_NS + 50_000]
    if queue_size > 1:
        assert values == [float(i) for i in range(50)]
    else:  # the library default: changes between two publishes are silently lost
        assert len(values) < 50


async def test_poll_mode_reads_periodically() -> None:
    port = free_port()
    nodes = [{"name": "hall", "node_id": "ns=2;s=Cell.AmbientTemp", "unit": "degC", "mode": "poll"}]
    cfg = small_device(port, nodes=[{**nodes[0], "sampling_interval_ms": 50}])
    async with running_simulator(cfg, port=port) as sim, supervised(OpcuaSource(cfg)) as got:
        await sim.write("hall", -27.5, source_t_ns=T0_NS)
        await until(lambda: sum(float(r.value) == -27.5 for r in got) >= 3, what="three polls")
        await sim.write("hall", -28.0, status="UncertainSensorNotAccurate", source_t_ns=T0_NS + 5000)
        await until(lambda: any(float(r.value) == -28.0 for r in got), what="new value")
    last = next(r for r in got if float(r.value) == -28.0)
    assert last.stream == "cell.hall" and last.quality == "uncertain" and last.t_ns == T0_NS + 5000


async def test_unknown_node_does_not_stop_the_others() -> None:
    port = free_port()
    cfg = small_device(port)
    served = small_device(port, nodes=[cfg.nodes[0].model_dump()])  # the server lacks the array node
    source = OpcuaSource(cfg)
    async with running_simulator(served, port=port) as sim, supervised(source) as got:
        await sim.write("current", 12.0)
        await until(lambda: any(float(r.value) == 12.0 for r in got), what="known node")
    assert source.stats["node_errors"] == 1 and source.stats["reconnects"] == 0


async def test_recovers_within_5_s_of_server_restart() -> None:
    """A restarted server must not leave the gateway silent (the complaint against other collectors)."""
    port = free_port()
    cfg = device(port)
    source = OpcuaSource(cfg)
    async with supervised(source) as got:
        async with running_simulator(cfg, port=port, animate=True):
            await until(lambda: len({r.stream for r in got}) == len(cfg.nodes), what="all nodes before restart")
        # the old server is gone: the source notices and keeps retrying
        await until(lambda: source.stats["reconnects"] >= 2, what="dead server detected")
        async with running_simulator(cfg, port=port) as sim:
            await sim.write("current", 999.0)
            await until(has_value(got, 999.0), timeout_s=5.0, what="data within 5 s of the server being back")
            await until(lambda: sum(r.stream == "weld1.hall_temp" for r in got) >= 2, what="polled node after restart")


async def test_stream_fails_when_server_stops() -> None:
    port = free_port()
    cfg = small_device(port)
    source = OpcuaSource(cfg)
    async with running_simulator(cfg, port=port):
        await source.open()
        stream = source.stream()
        first = await asyncio.wait_for(anext(stream), 20)
        assert first.stream.startswith("cell.")
    try:
        with pytest.raises(AdapterError, match="connection lost"):
            async with asyncio.timeout(20):
                async for _ in stream:
                    pass
    finally:
        await source.close()


async def test_open_fails_cleanly_without_server() -> None:
    source = OpcuaSource(small_device(free_port(), timeout_s=2.0))
    with pytest.raises(AdapterError, match="cannot connect"):
        await source.open()
    await source.close()


def test_resolve_node_id_by_namespace_uri() -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:server", "urn:other", "urn:acme:cell"]
    assert resolve_node_id("nsu=urn:acme:cell;s=Weld.Current", namespaces) == "ns=3;s=Weld.Current"
    assert resolve_node_id("nsu=urn:acme:cell;i=1042", namespaces) == "ns=3;i=1042"
    assert resolve_node_id("ns=2;s=X", namespaces) == "ns=2;s=X"
    with pytest.raises(KeyError):
        resolve_node_id("nsu=urn:nope;s=X", namespaces)


_CELL_NS = "urn:acme:weld-cell"


def _by_uri(port: int) -> OpcuaConfig:
    """The author saw the cell's namespace at index 2; the config names it by URI instead."""
    return small_device(
        port,
        nodes=[{"name": "current", "node_id": f"nsu={_CELL_NS};s=Weld.Current", "sampling_interval_ms": 0}],
    )


async def test_nsu_node_ids_follow_the_namespace_across_a_renumbering_restart_and_unknown_uris_fail() -> None:
    """Index 3 at first, index 4 after a server update that registered one more namespace first; the old
    index then holds a decoy variable with the same string id, so a stale index would read -1."""
    port = free_port()
    cfg = _by_uri(port)
    source = OpcuaSource(cfg)
    async with supervised(source) as got:
        async with running_simulator(cfg, port=port, namespaces_before=["urn:other:a"]) as sim:
            assert (await sim.server.get_namespace_array()).index(_CELL_NS) == 3
            await sim.write("current", 42.0)
            await until(has_value(got, 42.0), what="value through ns=3")
        await until(lambda: source.stats["reconnects"] >= 2, what="server gone")
        async with running_simulator(cfg, port=port, namespaces_before=["urn:other:a", "urn:other:b"]) as sim:
            assert (await sim.server.get_namespace_array()).index(_CELL_NS) == 4
            await sim.server.nodes.objects.add_variable("ns=3;s=Weld.Current", "decoy", -1.0)
            await sim.write("current", 7.0)
            await until(has_value(got, 7.0), what="value through ns=4 after the restart")
            # a URI the server does not have: open fails and names it, with the namespaces it does have
            wrong = small_device(port, nodes=[{"name": "current", "node_id": "nsu=urn:not-here;s=Weld.Current"}])
            stray = OpcuaSource(wrong)
            with pytest.raises(AdapterError, match=r"namespace 'urn:not-here' is not on .*urn:acme:weld-cell"):
                await stray.open()
            await stray.close()
    assert not has_value(got, -1.0)()


# ------------------------------------------------------------------------------------------------ fuzz

_VARIANTS = st.one_of(
    st.tuples(st.floats(), st.just("Double")),
    st.tuples(st.integers(-(2**63), 2**63 - 1), st.just("Int64")),
    st.tuples(st.text(max_size=20), st.just("String")),
    st.tuples(st.binary(max_size=20), st.just("ByteString")),
    st.tuples(st.booleans(), st.just("Boolean")),
    st.tuples(st.lists(st.floats(), max_size=20), st.just("Double")),
    st.tuples(st.lists(st.lists(st.floats(), min_size=2, max_size=2), max_size=4), st.just("Double")),
    st.tuples(st.lists(st.text(max_size=4), max_size=5), st.just("String")),
    st.tuples(st.none(), st.just("Null")),
)


@settings(max_examples=200, deadline=None)
@given(
    _VARIANTS,
    st.booleans(),
    st.none() | st.datetimes(),
    st.sampled_from([0, 0x40000000, 0x80000000, 0x808D0000]),
)
def test_fuzz_any_variant_becomes_a_sane_reading_or_is_counted(
    variant: tuple[object, str], is_array: bool, source_ts: object, status: int
) -> None:
    from asyncua import ua

    value, vtype = variant
    source = OpcuaSource(small_device(4840))
    binding = _Binding("cell.x", "A", is_array, 50.0 if is_array else None)
    dv = ua.DataValue(
        Value=ua.Variant(value, getattr(ua.VariantType, vtype)),
        StatusCode_=ua.StatusCode(status),
        SourceTimestamp=source_ts,
    )
    source._accept(binding, dv)
    queued = [source._queue.get_nowait() for _ in range(source._queue.qsize())]
    assert len(queued) + source.stats["malformed"] == 1
    for r in queued:
        assert r is not None and check_sample(r) is r


def test_unset_device_clock_is_stamped_on_arrival() -> None:
    import datetime

    from asyncua import ua

    source = OpcuaSource(small_device(4840))
    dv = ua.DataValue(Value=ua.Variant(1.5, ua.VariantType.Double), SourceTimestamp=datetime.datetime(1601, 1, 1))
    source._accept(_Binding("cell.x", "A", False, None), dv)
    r = source._queue.get_nowait()
    assert r is not None and r.quality == "good" and r.t_ns > 1_700_000_000 * 10**9
