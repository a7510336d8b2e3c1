"""Fixtures shared by the whole suite: real servers on free 127.0.0.1 ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.mosquitto import Mosquitto


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A started mosquitto broker on a free loopback port; `stop()`/`start()` keep the port (outage tests)."""
    with Mosquitto() as broker:
        yield broker
