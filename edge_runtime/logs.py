"""Structured `key=value` logs on stdout, one line per event, readable by journald, Loki and a tired engineer."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["setup_logging"]


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        message = record.getMessage()
        if "=" not in message.split(" ", 1)[0]:
            message = f"msg={message!r}"
        line = f"ts={ts} level={record.levelname.lower()} logger={record.name} {message}"
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncua", "pymodbus", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
