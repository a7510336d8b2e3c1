"""`free_port`: ports a server can bind, outside the range the OS hands to outbound connections."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from adapters import loopback


def test_ports_are_bindable_distinct_and_below_the_ephemeral_range() -> None:
    low, _ = loopback._ephemeral_range()
    ports = [loopback.free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    if low > 11024:
        assert all(10000 <= p < low for p in ports)
    for port in ports[:10]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", port))
            server.listen()


def test_a_taken_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listening server's port fails the bind check when the draw hits it; the next draw is returned."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", loopback.free_port()))
        server.listen()
        taken = server.getsockname()[1]
        loopback._handed.clear()  # only the bind check stands between the draw and the taken port
        low, _ = loopback._ephemeral_range()
        if low <= 11024:
            pytest.fail(f"this machine's ephemeral range starts at {low}: free_port cannot draw below it")
        draws: Iterator[int] = iter([taken, taken, 10000 if taken != 10000 else 10001])

        class Draws:
            def randrange(self, start: int, stop: int) -> int:
                return next(draws)

        monkeypatch.setattr(random, "SystemRandom", Draws)
        assert loopback.free_port() in (10000, 10001)
