"""The read planner (adapters.modbus.plan): pure request merging, device plans and the plan report."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from adapters.modbus.config import ModbusRtuConfig, ModbusTcpConfig
from adapters.modbus.plan import AddressSpan, ReadRequest, plan_device, plan_reads, plan_report, to_engineering

from .common import DEVICES


def _spans(*items: tuple[str, int, int]) -> list[AddressSpan]:
    return [AddressSpan(i, table, address, width) for i, (table, address, width) in enumerate(items)]


def test_contiguous_registers_merge_into_one_request() -> None:
    spans = _spans(("holding", 0, 2), ("holding", 2, 1), ("holding", 3, 4))
    assert plan_reads(spans) == [ReadRequest("holding", 0, 7, (0, 1, 2))]


def test_gap_within_limit_is_read_through_and_larger_gap_splits() -> None:
    spans = _spans(("holding", 0, 1), ("holding", 5, 1), ("holding", 20, 1))
    assert plan_reads(spans, max_gap=4) == [
        ReadRequest("holding", 0, 6, (0, 1)),
        ReadRequest("holding", 20, 1, (2,)),
    ]
    assert len(plan_reads(spans, max_gap=0)) == 3
    assert len(plan_reads(spans, max_gap=14)) == 1


def test_split_at_125_registers() -> None:
    spans = [AddressSpan(i, "input", 2 * i, 2) for i in range(100)]  # 200 registers back to back
    reqs = plan_reads(spans)
    assert [r.count for r in reqs] == [124, 76]
    assert all(r.count <= 125 for r in reqs)
    assert sorted(k for r in reqs for k in r.keys) == list(range(100))


def test_bits_split_at_2000_and_gap_counts_in_bits() -> None:
    spans = [AddressSpan(i, "coil", i * 10, 1) for i in range(300)]  # spans 0..2990
    reqs = plan_reads(spans, max_gap=1)  # 16 bits of gap allowed
    assert [r.count for r in reqs] == [1991, 991]
    assert plan_reads(spans, max_gap=0)[0].count == 1


def test_tables_never_merge() -> None:
    spans = _spans(("holding", 0, 1), ("input", 1, 1), ("coil", 0, 1), ("discrete", 1, 1))
    assert len(plan_reads(spans)) == 4


def test_forbidden_address_in_a_gap_splits_the_request() -> None:
    spans = _spans(("holding", 0, 2), ("holding", 4, 2))
    assert len(plan_reads(spans, max_gap=10)) == 1
    reqs = plan_reads(spans, max_gap=10, forbidden=[("holding", 3, 3)])
    assert reqs == [ReadRequest("holding", 0, 2, (0,)), ReadRequest("holding", 4, 2, (1,))]
    # a forbidden range in another table changes nothing
    assert len(plan_reads(spans, forbidden=[("input", 3, 3)])) == 1


def test_tag_on_a_forbidden_address_is_refused() -> None:
    with pytest.raises(ValueError, match="forbidden"):
        plan_reads(_spans(("holding", 2, 2)), forbidden=[("holding", 3, 9)])


def test_overlapping_tags_share_registers() -> None:
    spans = _spans(("holding", 4, 1), ("holding", 4, 1), ("holding", 3, 2))
    assert plan_reads(spans) == [ReadRequest("holding", 3, 2, (2, 0, 1))]


def test_without_coalescing_every_tag_is_a_request() -> None:
    spans = _spans(("holding", 0, 2), ("holding", 2, 1), ("holding", 3, 4))
    assert len(plan_reads(spans, coalesce=False)) == 3


@given(
    items=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 4)), min_size=1, max_size=60),
    forbidden=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 5)), max_size=5),
    max_gap=st.integers(0, 30),
    max_registers=st.integers(4, 125),
)
def test_plan_covers_every_tag_and_never_reads_forbidden(
    items: list[tuple[int, int]], forbidden: list[tuple[int, int]], max_gap: int, max_registers: int
) -> None:
    ranges = [("holding", a, a + n) for a, n in forbidden]
    spans = [
        AddressSpan(i, "holding", a, w)
        for i, (a, w) in enumerate(items)
        if not any(lo <= a + w - 1 and a <= hi for _, lo, hi in ranges)
    ]
    reqs = plan_reads(spans, max_gap=max_gap, max_registers=max_registers, forbidden=ranges)
    assert sorted(k for r in reqs for k in r.keys) == sorted(s.key for s in spans)
    by_key = {s.key: s for s in spans}
    for r in reqs:
        assert r.count <= max_registers
        assert not any(lo <= r.end and r.start <= hi for _, lo, hi in ranges)
        for k in r.keys:
            assert r.start <= by_key[k].address and by_key[k].end <= r.end
    assert len(reqs) <= len(spans)


def test_plan_report_lists_requests_tags_and_forbidden() -> None:
    cfg = ModbusTcpConfig.model_validate(
        {
            "kind": "modbus-tcp",
            "id": "press1",
            "poll_groups": {"fast": 100},
            "forbidden": [{"table": "holding", "start": 3}],
            "tags": [
                {"name": "a", "address": 0, "dtype": "float32"},
                {"name": "b", "address": 2, "dtype": "uint16"},
                {"name": "c", "address": 4, "dtype": "uint16"},
                {"name": "run", "address": 10, "dtype": "bit", "bit": 0, "group": "fast"},
            ],
        }
    )
    text = plan_report(cfg)
    assert text.splitlines()[0].startswith("press1 (modbus-tcp): 4 tags in 3 requests")
    assert "every 100 ms:" in text
    assert "holding 0..2 (3 registers): a, b" in text
    assert "holding 4..4 (1 registers): c" in text
    assert "never read: holding 3..3" in text


def test_profiles_plan_into_fewer_requests_than_tags() -> None:
    drive = ModbusRtuConfig.model_validate(yaml.safe_load((DEVICES / "old_drive_rtu.yaml").read_text()))
    plc = ModbusTcpConfig.model_validate(yaml.safe_load((DEVICES / "plc_tcp.yaml").read_text()))
    for cfg in (drive, plc):
        report = plan_report(cfg)
        assert "never read" in report
        n_requests = sum(len(g.reads) for g in plan_device(cfg))
        assert n_requests < len(cfg.tags)


def test_a_signalling_nan_register_pair_becomes_nan_without_a_warning() -> None:
    """The widening cast of a float32 signalling NaN sets the invalid flag; the value is NaN (quality bad
    downstream) and nothing is printed to the service's stderr."""
    raw = np.array([0x7F800001, 0x3FC00000], dtype=np.uint32).view(np.float32)  # sNaN, 1.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_engineering(raw, np.array([2.0, 2.0]), np.array([1.0, 1.0]))
    assert np.isnan(out[0]) and out[1] == 4.0
