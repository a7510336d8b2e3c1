"""Structured logfmt lines on stdout, one line per event, readable by journald, Loki and a tired engineer.

Call sites write `log.warning("event=sink_failed sink=%s error=%r", name, exc)`: each argument that fills a
`key=` is quoted as logfmt wants (`error="ConnectionError('broker down')"`, with `\\"`, `\\\\`, `\\n` escaped),
so a value with spaces, quotes or a line break stays one value on one line. Under systemd (stdout is the journal
stream named by `$JOURNAL_STREAM`) each line starts with its syslog priority, `<4>` for a warning and so on, which
journald strips and keeps as PRIORITY= (so `journalctl -p warning` works).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, TextIO

__all__ = ["KeyValueFormatter", "logfmt_value", "setup_logging", "stream_is_journal", "syslog_priority"]

# printf conversions of %-style log messages (the flags, width and precision forms logging accepts)
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[#0+ -]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
_BARE = re.compile(r'[^\s"=\\\x00-\x1f\x7f-\x9f\u2028\u2029]+')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def logfmt_value(value: str) -> str:
    """`value` as a logfmt value: bare when it is one plain token, else double-quoted with escapes."""
    if _BARE.fullmatch(value):
        return value
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", value) + '"'


def _one_line(text: str) -> str:
    """Free text (outside a `key=`) kept on one line: control characters escaped, nothing quoted."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", text)


def syslog_priority(levelno: int) -> int:
    """The sd-daemon/syslog priority of a logging level: 2 crit, 3 err, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def stream_is_journal(stream: TextIO) -> bool:
    """Whether `stream` is the journal stream systemd connected (`$JOURNAL_STREAM` is `device:inode` of it; a
    child whose output was redirected inherits the variable but not the stream, so both are compared)."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):  # not set, malformed, or a stream without a file descriptor
        return False


class KeyValueFormatter(logging.Formatter):
    """One logfmt line per record; `journal=True` prefixes the `<N>` priority journald reads."""

    def __init__(self, *, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        message = _message(record)
        if "=" not in message.split(" ", 1)[0]:
            message = f"msg={logfmt_value(record.getMessage())}"
        line = f"ts={ts} level={record.levelname.lower()} logger={logfmt_value(record.name)} {message}"
        if record.exc_info:
            line += " exc=" + logfmt_value(self.formatException(record.exc_info))
        if self.journal:
            line = f"<{syslog_priority(record.levelno)}>{line}"
        return line


def _message(record: logging.LogRecord) -> str:
    """The record's message with each argument that follows `key=` quoted as a logfmt value."""
    args: Any = record.args
    if not isinstance(record.msg, str) or not args or not isinstance(args, tuple):
        return _one_line(record.getMessage())
    out: list[str] = []
    rest = list(args)
    end = 0
    try:
        for conversion in _CONVERSION.finditer(record.msg):
            literal = record.msg[end : conversion.start()]
            out.append(_one_line(literal))
            end = conversion.end()
            spec = conversion[0]
            if spec == "%%":
                out.append("%")
                continue
            if spec.startswith("%("):
                raise ValueError("a mapping key with positional arguments")
            taken = spec.count("*") + 1  # `%*d` takes the width from the arguments too
            if len(rest) < taken:
                raise ValueError("fewer arguments than conversions")
            text = spec % tuple(rest[:taken])
            del rest[:taken]
            out.append(logfmt_value(text) if literal.endswith("=") else _one_line(text))
        if rest:
            raise ValueError("more arguments than conversions")
    except (ValueError, TypeError, IndexError):  # let logging's own formatting say what is wrong
        return _one_line(record.getMessage())
    out.append(_one_line(record.msg[end:]))
    return "".join(out)


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    handler = logging.StreamHandler(out)
    handler.setFormatter(KeyValueFormatter(journal=stream_is_journal(out)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("asyncua", "pymodbus", "paho"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
