"""Log lines: valid logfmt whatever the values hold, and `<N>` journald priorities when stdout is the journal."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.logs import KeyValueFormatter, logfmt_value, setup_logging, stream_is_journal

_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader (as Loki's or a Go logfmt decoder reads): the whole line must be `key=value` pairs."""
    out: dict[str, str] = {}
    pos = 0
    for m in _PAIR.finditer(line):
        assert line[pos : m.start()].strip() == "", f"not logfmt at {pos}: {line!r}"
        key, value = m[1], m[2]
        if value.startswith('"'):
            value = re.sub(
                r"\\(u[0-9a-f]{4}|.)",
                lambda e: chr(int(e[1][1:], 16)) if e[1].startswith("u") else _UNESCAPE[e[1]],
                value[1:-1],
            )
        out[key] = value
        pos = m.end()
    assert line[pos:].strip() == "", f"not logfmt at {pos}: {line!r}"
    return out


def _record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("edge_runtime.test", level, __file__, 1, msg, args or None, None)


def _format(msg: str, *args: object, journal: bool = False, level: int = logging.WARNING) -> str:
    return KeyValueFormatter(journal=journal).format(_record(msg, *args, level=level))


def test_values_with_spaces_quotes_and_newlines_stay_one_value() -> None:
    line = _format(
        "event=sink_failed sink=%s error=%r path=%s empty=%s n=%d",
        "mqtt 1",
        ConnectionError('broker "down"\nretrying'),
        "C:\\outbox",
        "",
        3,
    )
    assert "\n" not in line
    fields = parse_logfmt(line)
    assert fields["event"] == "sink_failed" and fields["n"] == "3"
    assert fields["sink"] == "mqtt 1"
    assert fields["error"] == repr(ConnectionError('broker "down"\nretrying'))
    assert fields["path"] == "C:\\outbox" and fields["empty"] == ""
    assert fields["level"] == "warning" and fields["logger"] == "edge_runtime.test"
    assert ' sink="mqtt 1" ' in line  # plain tokens stay bare, others are double-quoted


def test_a_value_cannot_forge_a_key() -> None:
    fields = parse_logfmt(_format("event=x topic=%s", "a level=error forged=1"))
    assert fields["topic"] == "a level=error forged=1" and "forged" not in fields and fields["level"] == "warning"


def test_free_text_and_exceptions_are_quoted_values() -> None:
    assert parse_logfmt(_format("broker %s is down", "mqtt 1"))["msg"] == "broker mqtt 1 is down"
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "event=boom", None, __import__("sys").exc_info())
    line = KeyValueFormatter().format(record)
    assert "\n" not in line and "ValueError: bad\nthing" in parse_logfmt(line)["exc"]


def test_widths_and_percent_signs_and_bad_formats() -> None:
    assert parse_logfmt(_format("event=x width=%*d pct=%d%%", 5, 42, 7))["width"] == "   42"
    with pytest.raises(TypeError):  # too few arguments: logging's own error (its handler reports it), as before
        _format("event=x a=%s b=%s", 1)
    assert parse_logfmt(_format("event=x pct=%d%% of=%s", 7, "all"))["pct"] == "7%"


@settings(max_examples=200, deadline=None)
@given(value=st.text(), key=st.sampled_from(["error", "topic", "unit"]))
def test_any_value_round_trips(value: str, key: str) -> None:
    line = _format(f"event=fuzz {key}=%s after=1", value)
    assert "\n" not in line and "\r" not in line
    fields = parse_logfmt(line)
    assert fields[key] == value and fields["after"] == "1" and fields["event"] == "fuzz"
    assert logfmt_value(value) in line


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3), (logging.CRITICAL, 2)],
)
def test_journal_lines_carry_the_syslog_priority(level: int, priority: int) -> None:
    line = _format("event=x", journal=True, level=level)
    assert line.startswith(f"<{priority}>ts=")
    assert not _format("event=x", level=level).startswith("<")


@pytest.fixture
def journal_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.TextIOWrapper]:
    with (tmp_path / "journal").open("w") as fh:
        st = os.fstat(fh.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        yield fh
    logging.getLogger().handlers.clear()


def test_setup_logging_prefixes_only_when_stdout_is_the_journal(
    journal_file: io.TextIOWrapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stream_is_journal(journal_file)
    setup_logging("info", journal_file)
    logging.getLogger("edge_runtime.x").warning("event=sink_failed sink=%s", "a b")
    logging.getLogger("edge_runtime.x").info("event=ok")
    journal_file.flush()
    lines = Path(journal_file.name).read_text().splitlines()
    assert [line[:3] for line in lines] == ["<4>", "<6>"]
    assert parse_logfmt(lines[0][3:])["sink"] == "a b"
    with (tmp_path / "other").open("w") as other:  # a redirected child inherits the variable, not the stream
        assert not stream_is_journal(other)
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not stream_is_journal(journal_file)
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not stream_is_journal(journal_file) and not stream_is_journal(io.StringIO())
