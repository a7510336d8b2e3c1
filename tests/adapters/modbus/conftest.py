"""Fixtures of the Modbus tests: a virtual RS-485 line."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def serial_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two connected pseudo-terminals (a virtual RS-485 line): the device end and the client end."""
    socat = shutil.which("socat") or "/usr/bin/socat"
    a, b = tmp_path / "dev", tmp_path / "client"
    proc = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not (a.exists() and b.exists()):
        assert proc.poll() is None, "socat exited"
        assert time.monotonic() < deadline, "socat did not create the pty pair"
        time.sleep(0.02)
    try:
        yield str(a), str(b)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
