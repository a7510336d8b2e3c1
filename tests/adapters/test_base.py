from __future__ import annotations

import inspect
import json
import logging
import math
from types import ModuleType

import numpy as np
import pytest

import adapters.base
import adapters.loopback
import adapters.registry
import adapters.supervise
from adapters.base import Reading, Result, ScalarGroup, dumps, scalar_readings, stream_names
from adapters.supervise import OutageLog


@pytest.mark.parametrize("module", [adapters.base, adapters.supervise, adapters.loopback, adapters.registry])
def test_public_api_is_explicit_and_complete(module: ModuleType) -> None:
    exported = set(module.__all__)
    defined = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }
    assert defined <= exported, f"public but not exported: {sorted(defined - exported)}"
    assert all(hasattr(module, name) for name in exported)


def test_one_encoder_writes_nan_and_numpy_as_plain_json() -> None:
    text = dumps({"a": math.nan, "b": np.float32(0.5), "c": np.arange(2), "d": math.inf})
    assert json.loads(text) == {"a": None, "b": 0.5, "c": [0, 1], "d": None}


def test_a_result_survives_its_stored_form_unchanged() -> None:
    r = Result("p", "s", 5, "ok", label="x", score=0.25, values={"v": 1.5}, detail={"boxes": [1]}, seq=3)
    assert Result.from_row(json.loads(dumps(r.to_row()))) == r
    assert r.to_json()["v"] == 1.5 and r.to_json()["boxes"] == [1] and r.to_json()["seq"] == 3


def test_an_outage_is_logged_when_it_starts_and_ends_not_per_attempt(caplog: pytest.LogCaptureFixture) -> None:
    outage = OutageLog("sink", "plc1", remind_every_s=3600)
    with caplog.at_level(logging.INFO, logger="adapters"):
        outage.ok()
        for _ in range(50):
            outage.failed(ConnectionError("refused"))
        outage.ok()
    events = [r.getMessage().split()[0] for r in caplog.records if r.levelno >= logging.INFO]
    assert events == ["event=sink_open", "event=sink_failed", "event=sink_recovered"]
    assert "attempts=50" in caplog.records[-1].getMessage()


def test_scalar_readings_equal_readings_built_one_by_one_and_share_the_array() -> None:
    values = np.array([1.5, np.nan, 3.0], dtype=np.float32)
    out = scalar_readings(["d.a", "d.b", "d.c"], 7, values, ["good", "bad", "good"], ["bar", "", "A"])
    expected = [Reading("d.a", 7, values[0, ...], "good", "bar"), Reading("d.b", 7, values[1, ...], "bad", "")]
    expected.append(Reading("d.c", 7, values[2, ...], "good", "A"))
    for got, want in zip(out, expected, strict=True):
        assert type(got) is Reading and got[:2] + got[3:] == want[:2] + want[3:]  # all but the value
        assert got.value.shape == () and got.value.dtype == np.float32
        assert np.array_equal(got.value, want.value, equal_nan=True)
        assert np.shares_memory(got.value, values)  # views, not copies
    with pytest.raises(ValueError):  # a stream without a value is a decoder bug, never a silent drop
        scalar_readings(["d.a", "d.b"], 7, values[:1], ["good", "good"], ["", ""])


def test_a_scalar_group_names_its_streams_and_cannot_be_edited() -> None:
    readings = scalar_readings(["d.a", "d.b"], 7, np.array([1, 2]), ["good", "good"], ["", ""])
    group = ScalarGroup(readings, ["d.a", "d.b"])
    assert list(group) == readings and stream_names(group) is group.streams == ("d.a", "d.b")
    assert stream_names(readings) == ["d.a", "d.b"]  # any other sequence: read from the samples
    assert type(group[:1]) is tuple  # a slice no longer claims the names
    with pytest.raises(AttributeError):  # readings and names cannot drift apart
        group.append(readings[0])  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="2 readings with 1 stream names"):
        ScalarGroup(readings, ["d.a"])
