"""Fixtures shared by the whole suite: real servers on free 127.0.0.1 ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.helpers.mosquitto import Mosquitto

# Property tests run on a shared, loaded 2-core machine: a per-example time limit would fail them for the machine's
# load, not for the code. They stay bounded by their example counts.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A started mosquitto broker on a free loopback port; `stop()`/`start()` keep the port (outage tests)."""
    with Mosquitto() as broker:
        yield broker
