"""A mosquitto broker as a child process on a free 127.0.0.1 port: the demo's broker and the tests'.

`stop()` and `start()` keep the same port, so a test can cut the broker and bring it back to check that
clients reconnect. A missing mosquitto binary is a set-up error: `make demo` and `make test` install it.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from adapters.base import EdgeRuntimeError
from adapters.loopback import free_port

__all__ = ["Mosquitto", "MosquittoError", "find_mosquitto"]


class MosquittoError(EdgeRuntimeError):
    """The broker could not be found or started."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise MosquittoError(
            "mosquitto is not installed: run `make test` or `make demo` (they install mosquitto with apt) "
            "or `apt-get install mosquitto`"
        )
    return found


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """One broker process; anonymous, no persistence, listening on 127.0.0.1 only.

    Example::

        with Mosquitto() as broker:
            client.connect("127.0.0.1", broker.port)
            broker.stop()   # outage
            broker.start()  # same port again
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout_s: float = 15.0,
        listener_options: Sequence[str] = (),
        allow_anonymous: bool = True,
        password_file: Path | None = None,
    ) -> None:
        """`listener_options` are mosquitto.conf lines for the listener (e.g. `certfile ...`, `require_certificate
        true`); `password_file` is a file written by `mosquitto_passwd`."""
        self.binary = find_mosquitto()
        self.port = port if port is not None else free_port()
        self.start_timeout_s = start_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="edge-mosquitto-"))
        self.config_file = self._dir / "mosquitto.conf"
        self.log_file = self._dir / "mosquitto.log"
        self.config_file.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + "".join(f"{line}\n" for line in listener_options)
            + f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
            + (f"password_file {password_file}\n" if password_file is not None else "")
            # started by root, mosquitto drops to user `mosquitto`, who cannot read a test's certificates
            + f"user {getpass.getuser()}\n"
            + "persistence false\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the broker and wait until the port accepts connections (retries if the port is still held)."""
        if self.running:
            return
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            with self.log_file.open("ab") as stderr:
                self._proc = subprocess.Popen(
                    [self.binary, "-c", str(self.config_file)], stdout=subprocess.DEVNULL, stderr=stderr
                )
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _accepts(self.port):
                    return
                time.sleep(0.05)
            # exited (e.g. the port is in TIME_WAIT after a restart) or never accepted: retry until the deadline
            self._kill()
            if time.monotonic() >= deadline:
                log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
                raise MosquittoError(f"mosquitto did not start on 127.0.0.1:{self.port}: {log[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the broker; its clients see the connection drop. The port stays reserved for `start()`."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    def close(self) -> None:
        """Stop the broker and remove its temporary directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
