"""Fuzzing `edge-runtime validate`: random bytes, YAML-ish text and random nested configs, in a deployment file and
in a device profile. Whatever the input, validate exits 0 or 2 and prints only `FILE:LINE: path: why` lines (no
traceback, no hang), and a value substituted from `${...}` never shows. (`run` loads through the same
validate_file and raises ConfigError with these errors.) Bounded for CI: about 5 s of CPU in all."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.cli import main

FUZZ = settings(
    max_examples=80,
    # an example takes milliseconds (a capped alias bomb 0.3 s of CPU); wall-clock deadlines fail on a loaded CI
    # machine, so slow paths are caught by the CPU-time bounds of test_yamlsrc.py and hangs by pytest-timeout
    deadline=None,
    # capsys is read (and so emptied) by every example; the environment fixture is the same for all of them
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# words that steer random text towards what the loader and the models act on
TOKENS = [
    *("service:", "devices:", "pipelines:", "sinks:", "outbox:", "name:", "id:", "kind:", "host:", "port:", "tags:"),
    *("profile: p.yaml", "profile: nope.yaml", "mqtt", "modbus-tcp", "opcua", "camera", "inputs:", "outputs:"),
    *("task:", "model:", "vibration_anomaly", "subscriptions:", "topic:", "stream:", "{id}.x", "log_level:"),
    *("\n", "\n  ", "\n    ", "  ", "- ", ": ", ", ", "[", "]", "{", "}", "? ", "&a ", "&b ", "*a", "*b", "<<: "),
    *("!!int ", "!!str ", "!!binary ", "!!set ", "!!omap ", "!env ", "!!python/object:os.system ", "%YAML 1.1\n"),
    *("---\n", "...\n", "|\n", ">-\n", "#", "'", '"', "\\", "\\x00", "\\u2028", "${S}", "${NOPE}", "${S}${S}", "~"),
    *("1", "-1", "0x1f", "1e400", ".inf", ".nan", "2024-13-45", "2001-12-14t21:59:43.10-05:00", "9" * 60, "yes"),
    *("\x00", "\x07", "\x1b", "\t", "\r", "\x85", "\ufeff", "\u2028", "é", "\ud7ff", "\U0001f600"),
]
# the secret is made of letters no literal text here contains, so a token of them in the output can only be a leak
SECRET_LETTERS = "QJVXZ"
plain_text = st.text(alphabet=st.characters(exclude_characters=SECRET_LETTERS), max_size=8)
yamlish = st.lists(st.sampled_from(TOKENS) | plain_text, max_size=60).map("".join)

KEYS = ["service", "devices", "pipelines", "sinks", "id", "kind", "name", "host", "port", "tags", "profile", "x"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["mqtt", "modbus-tcp", "opcua", "camera", "${S}", "x${S}y", "${NOPE}", "p.yaml", "{id}.${S}"])
    | plain_text
)
configs = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | plain_text, inner, max_size=5),
    max_leaves=25,
)
secrets = st.text(alphabet=SECRET_LETTERS, min_size=1, max_size=6)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def _check(deploy: Path, capsys: pytest.CaptureFixture[str], secret: str | None = None) -> None:
    """validate's code path, as the command runs it: exit 0 or 2, and only well-formed error lines."""
    if secret is not None:
        os.environ["S"] = secret
    try:
        code = main(["validate", str(deploy)])
        out = capsys.readouterr().out
        assert code in (0, 2), out
        lines = out.splitlines()
        if code == 2:
            assert lines, "exit 2 without an error line"
            pattern = re.compile(rf"^{re.escape(str(deploy.parent))}/[dp]\.yaml:\d+: [^\n]*: .+$")
            for line in lines:
                assert pattern.match(line), line
        if secret is not None:
            # the FILE:LINE prefix and the path are not values; everything after is checked
            for line in lines:
                message = line.split(": ", 2)[-1]
                assert re.search(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", message) is None, line
                assert len(secret) < 3 or secret not in message, line  # 3+ characters: not even inside a word
    finally:
        os.environ.pop("S", None)


@FUZZ
@given(data=st.binary(max_size=400), in_profile=st.booleans())
def test_random_bytes(workdir: Path, capsys: pytest.CaptureFixture[str], data: bytes, in_profile: bool) -> None:
    deploy, profile = workdir / "d.yaml", workdir / "p.yaml"
    if in_profile:
        deploy.write_text("devices:\n  - id: m1\n    profile: p.yaml\n")
        profile.write_bytes(data)
    else:
        deploy.write_bytes(data)
    _check(deploy, capsys)


@FUZZ
@given(text=yamlish, in_profile=st.booleans(), secret=secrets)
def test_yamlish_text(
    workdir: Path, capsys: pytest.CaptureFixture[str], text: str, in_profile: bool, secret: str
) -> None:
    deploy, profile = workdir / "d.yaml", workdir / "p.yaml"
    if in_profile:
        deploy.write_text("devices:\n  - id: m1\n    profile: p.yaml\n")
        profile.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        deploy.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check(deploy, capsys, secret)


@FUZZ
@given(config=configs, profile=configs, secret=secrets)
def test_random_nested_configs(
    workdir: Path, capsys: pytest.CaptureFixture[str], config: Any, profile: Any, secret: str
) -> None:
    deploy = workdir / "d.yaml"
    (workdir / "p.yaml").write_text(yaml.safe_dump(profile, allow_unicode=True))
    if isinstance(config, dict) and isinstance(config.get("devices"), list):
        config["devices"].append({"id": "m1", "profile": "p.yaml"})
    deploy.write_text(yaml.safe_dump(config, allow_unicode=True))
    _check(deploy, capsys, secret)


@settings(FUZZ, max_examples=20)  # the big cases cost the whole value budget: 0.1-0.3 s each
@given(
    section=st.sampled_from(["", "service", "devices", "pipelines"]),
    depth=st.integers(1, 3000),
    alias_fan=st.integers(1, 12),
    alias_levels=st.integers(0, 12),
)
def test_nesting_and_aliases(
    workdir: Path, capsys: pytest.CaptureFixture[str], section: str, depth: int, alias_fan: int, alias_levels: int
) -> None:
    """Deep nesting and alias fan-out of any size: refused in milliseconds, never a RecursionError or a hang."""
    lines = [f"a0: &a0 {'[' * depth}1{']' * depth}"]
    for i in range(1, alias_levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * alias_fan)}]")
    body = "\n".join(lines) + "\n"
    if section:
        body = f"{section}:\n" + "".join(f"  {line}\n" for line in body.splitlines())
    deploy = workdir / "d.yaml"
    deploy.write_text(body)
    _check(deploy, capsys)
