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
from adapters.base import Result, dumps
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
