"""Loopback helpers for simulated machines (and the tests, benchmarks and demo that start them)."""

from __future__ import annotations

import random
import socket
from collections import deque
from pathlib import Path

__all__ = ["free_port"]

_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed: deque[int] = deque(maxlen=256)  # recently returned: a caller may not have bound them yet


def _ephemeral_range() -> tuple[int, int]:
    """The ports the OS hands out as client source ports (Linux's default when it cannot say)."""
    try:
        low, high = (int(v) for v in _PORT_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _bind(port: int) -> int | None:
    """The port a server socket got when binding `port` on 127.0.0.1 (0: the OS picks), None when taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
        return int(sock.getsockname()[1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server that binds it next.

    Taken outside the OS's ephemeral range when there is room below it: a port the OS picked there can be handed
    to the next outbound connection (a client of another simulated machine) before the server binds it, and the
    server then fails to start. Below the range only a server that binds the same port can take it. A port is not
    returned twice in a row of 256 calls (the callers of a test or the demo bind theirs later).
    """
    low, _ = _ephemeral_range()
    if low > 11024:
        rng = random.SystemRandom()
        for _ in range(50):
            port = rng.randrange(10000, low - 1000)
            if port not in _handed and _bind(port) is not None:
                _handed.append(port)
                return port
    picked = _bind(0)
    if picked is None:
        raise OSError("no TCP port free on 127.0.0.1")
    _handed.append(picked)
    return picked
