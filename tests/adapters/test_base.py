from __future__ import annotations

import logging

import pytest

import adapters
import adapters.base
from adapters.base import OutageLog


def test_public_api_is_explicit_and_complete() -> None:
    assert sorted(adapters.__all__) == sorted(adapters.base.__all__)
    for name in adapters.__all__:
        assert getattr(adapters, name) is getattr(adapters.base, name)


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
