from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from edge_runtime import yamlsrc
from edge_runtime.config import validate_file
from edge_runtime.yamlsrc import MAX_DEPTH, MAX_FILE_BYTES, MAX_TOTAL_VALUES, MAX_VALUES, load_located


def test_every_value_knows_its_line(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("service:\n  name: x\npipelines:\n  - id: a\n    inputs: [b]\n")
    located, errors = load_located(f)
    assert errors == []
    assert located.where[("service", "name")] == (f, 2)
    assert located.where[("pipelines", 0, "inputs", 0)] == (f, 5)
    assert located.locate(("pipelines", 0, "missing")) == (f, 4)


def test_env_and_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "MQTT_PASS").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("SITE", "harbin")
    f = tmp_path / "d.yaml"
    f.write_text("a: ${SITE}-1\nb: ${MQTT_PASS}\nc: ${NOPE}\n")
    located, errors = load_located(f)
    assert located.data["a"] == "harbin-1"
    assert located.data["b"] == "s3cret"
    assert len(errors) == 1 and errors[0].line == 3 and "NOPE" in errors[0].message


def test_profile_is_merged_under_the_entry_with_its_own_lines(tmp_path: Path) -> None:
    (tmp_path / "devices").mkdir()
    prof = tmp_path / "devices" / "p.yaml"
    prof.write_text("kind: modbus-tcp\nport: 502\ntags:\n  - name: t\n")
    f = tmp_path / "d.yaml"
    f.write_text("devices:\n  - id: m1\n    profile: devices/p.yaml\n    port: 1502\n")
    located, errors = load_located(f)
    assert errors == []
    dev = located.data["devices"][0]
    assert dev == {"id": "m1", "port": 1502, "kind": "modbus-tcp", "tags": [{"name": "t"}]}
    assert located.where[("devices", 0, "tags", 0, "name")] == (prof, 4)
    assert located.where[("devices", 0, "port")] == (f, 4)


def test_missing_profile_and_bad_yaml_are_reported_with_lines(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("devices:\n  - id: m1\n    profile: nope.yaml\n")
    _, errors = load_located(f)
    assert [(e.line, e.path) for e in errors] == [(3, "devices.0.profile")]
    g = tmp_path / "g.yaml"
    g.write_text("a: [1, 2\nb: 3\n")
    _, errors = load_located(g)
    assert len(errors) == 1 and errors[0].file == g


def test_what_yaml_allows_but_a_deployment_must_not_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("base: &b {port: 1}\nsink:\n  <<: *b\n  port: 1883\n  port: 1884\nx: !env HOME\n")
    _, errors = load_located(f)
    assert [(e.line, e.path, e.message.split(":")[0]) for e in errors] == [
        (3, "sink", "YAML merge keys (<<) are not supported"),
        (5, "sink.port", "duplicate key (first at line 4)"),
        (6, "x", "cannot read this value"),
    ]


def test_a_file_that_is_not_utf8_is_an_error_with_a_hint(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_bytes("# 哈尔滨 一号线\nservice: {}\n".encode("gbk"))
    _, errors = load_located(f)
    assert [(e.line, e.message) for e in errors] == [(1, "not UTF-8 text: save the file as UTF-8")]


def test_substituted_values_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PASS", "s3cr{et")
    f = tmp_path / "d.yaml"
    f.write_text("url: rtsp://admin:${CAM_PASS}@cam\n")
    located, errors = load_located(f)
    assert errors == [] and "s3cr{et" in located.data["url"]
    assert located.redact(f"bad url {located.data['url']}") == "bad url rtsp://admin:***@cam"


# --- hostile or broken files (issue 9): one clear `FILE:LINE: path: why`, never a traceback or a hang -------------


def _validate(file: Path) -> list[str]:
    """`edge-runtime validate`'s code path: the printed lines."""
    deployment, errors = validate_file(file)
    assert deployment is None
    return [str(e) for e in errors]


def _bomb(key: str = "lol", indent: str = "") -> str:
    """A billion laughs: 9 levels of 9 aliases each, 9**9 = 387 million values once expanded."""
    lines = [f'{indent}l0: &l0 ["{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}", "{key}"]']
    for i in range(1, 10):
        lines.append(f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("char", "code"), [("\x00", "U+0000"), ("\x07", "U+0007"), ("\x1b", "U+001B")])
def test_a_control_character_is_located_not_a_traceback(tmp_path: Path, char: str, code: str) -> None:
    f = tmp_path / "d.yaml"
    f.write_text(f"service:\n  name: line{char}1\n")
    assert _validate(f) == [f"{f}:2: <file>: control character {code} at column 13: remove it"]


def test_a_control_character_in_a_profile_points_at_the_profile(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("kind: modbus-tcp\n\nhost: plc\x00\n")
    f = tmp_path / "d.yaml"
    f.write_text("devices:\n  - id: m1\n    profile: p.yaml\n")
    assert _validate(f) == [f"{tmp_path / 'p.yaml'}:3: <file>: control character U+0000 at column 10: remove it"]


def test_a_recursive_anchor_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("service: {}\npipelines: &r [*r]\n")
    assert _validate(f) == [f"{f}:2: <yaml>: alias *r is inside its own anchor (a recursive anchor)"]
    f.write_text("a: &m\n  b:\n    c: *m\n")
    assert _validate(f) == [f"{f}:3: <yaml>: alias *m is inside its own anchor (a recursive anchor)"]


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_refused(tmp_path: Path, style: str) -> None:
    f = tmp_path / "d.yaml"
    if style == "flow":
        f.write_text("service: " + "[" * 600 + "]" * 600 + "\n")
    else:
        f.write_text("".join(f"{'  ' * i}k{i}:\n" for i in range(600)) + "  " * 600 + "x: 1\n")
    [line] = _validate(f)
    assert line.endswith(f"<yaml>: nested deeper than {MAX_DEPTH} levels")


def test_nesting_made_deep_by_aliases_is_refused(tmp_path: Path) -> None:
    deep = "[" * 40 + "1" + "]" * 40
    f = tmp_path / "d.yaml"
    f.write_text(f"a: &a {deep}\nb: {'[' * 40}*a{']' * 40}\n")
    [line] = _validate(f)
    assert line.startswith(f"{f}:1: b.0.0.") and line.endswith(f"nested deeper than {MAX_DEPTH} levels")


@pytest.mark.timeout(120)  # a hang guard; the CPU-time bound inside is the real check
@pytest.mark.parametrize("where", ["root", "service", "profile"])
def test_an_alias_bomb_fails_fast(tmp_path: Path, where: str) -> None:
    f = tmp_path / "d.yaml"
    if where == "root":
        f.write_text(_bomb())
        bad = f
    elif where == "service":
        f.write_text("service:\n" + _bomb(indent="  "))
        bad = f
    else:
        bad = tmp_path / "p.yaml"
        bad.write_text("kind: modbus-tcp\n" + _bomb())
        f.write_text("devices:\n  - id: m1\n    profile: p.yaml\n")
    started = time.process_time()
    [line] = _validate(f)
    assert time.process_time() - started < 5
    assert line.startswith(f"{bad}:")
    assert line.endswith(f"more than {MAX_VALUES} values (a value reached through an alias counts at each use)")


@pytest.mark.timeout(120)  # a hang guard; the CPU-time bound inside is the real check
def test_a_long_list_is_quick(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("devices:\n" + "  - 1\n" * 90_000)  # 540 kB, under both limits
    started = time.process_time()
    located, errors = load_located(f)
    # the loader was the slow part (every scalar parsed twice, in Python): 30 s here on a loaded 2-core machine,
    # about 1.5 s there now
    assert time.process_time() - started < 5
    assert errors == [] and len(located.data["devices"]) == 90_000
    f.write_text("devices: [" + "1, " * 150_000 + "]\n")  # 450 kB, over MAX_VALUES
    assert _validate(f) == [
        f"{f}:1: devices.99998: more than {MAX_VALUES} values (a value reached through an alias counts at each use)"
    ]


@pytest.mark.timeout(120)  # a hang guard; the CPU-time bound inside is the real check
def test_a_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    with f.open("w") as fh:
        fh.write("devices:\n")
        fh.writelines("  - {id: m, kind: mqtt}\n" for _ in range(2_000_000))  # 50 MB
    started = time.process_time()
    assert _validate(f) == [f"{f}:1: <file>: larger than {MAX_FILE_BYTES // 1024**2} MiB: is this a config file?"]
    assert time.process_time() - started < 2


def test_a_credential_that_is_not_utf8_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "MQTT_PASS").write_bytes("pässwort".encode("latin-1"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.delenv("MQTT_PASS", raising=False)
    f = tmp_path / "d.yaml"
    f.write_text("sinks:\n  - id: out\n    kind: mqtt\n    password: ${MQTT_PASS}\n")
    assert _validate(f) == [
        f"{f}:4: sinks.0.password: ${{MQTT_PASS}}: $CREDENTIALS_DIRECTORY/MQTT_PASS is not UTF-8 text"
    ]


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2024-13-45", "cannot read this value as timestamp: month must be in 1..12"),
        ("!!int x", "cannot read this value as int: invalid literal for int() with base 10: 'x'"),
        ("!!float x", "cannot read this value as float: could not convert string to float: 'x'"),
        ("!!int", "cannot read this value as int: string index out of range"),
        ("1" * 5000, "cannot read this value as int: Exceeds the limit (4300 digits) for integer string conversion"),
    ],
)
def test_a_scalar_yaml_cannot_build_is_an_error(tmp_path: Path, value: str, why: str) -> None:
    f = tmp_path / "d.yaml"
    f.write_text(f"service:\n  name: {value}\n")
    [line] = _validate(f)
    assert line.startswith(f"{f}:2: service.name: {why}")


def test_control_characters_in_keys_cannot_forge_output_lines(tmp_path: Path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text('service:\n  "x\\nd.yaml:1: forged\\u001b[2J": 1\n')
    [line] = _validate(f)
    assert line == f"{f}:2: service.x\\nd.yaml:1: forged\\x1b[2J: Extra inputs are not permitted"


@pytest.mark.parametrize("secret", ["Z", "ab", "a'", "q7"])
def test_short_secrets_are_redacted_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("S", secret)
    token = re.compile(f"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")
    f = tmp_path / "d.yaml"
    f.write_text(  # pydantic's errors: a validator quotes a whole value back; an error next to a secret
        "devices:\n"
        "  - id: gw1\n    kind: mqtt\n    subscriptions:\n      - topic: plant/+/vib\n"
        '        stream: "{id}.${S}{"\n'
        "  - id: m1\n    kind: modbus-tcp\n    host: ${S}\n    port: 0\n"
    )
    got = "\n".join(_validate(f))
    assert token.search(got) is None, got
    assert (
        "bad stream template " in got and "{id}.***{" in got and "Input should be greater than or equal to 1" in got
    ), got
    f.write_text(  # the cross-checks' errors quote ids back
        "devices:\n"
        "  - {id: '${S}', kind: mqtt, subscriptions: [{topic: a, stream: x}]}\n"
        "  - {id: '${S}', kind: mqtt, subscriptions: [{topic: b, stream: y}]}\n"
        "pipelines:\n"
        "  - {id: p, inputs: ['${S}.*'], task: {kind: vibration_anomaly},\n"
        "     model: {name: vibration_anomaly}, outputs: ['${S}']}\n"
    )
    got = "\n".join(_validate(f))
    assert token.search(got) is None, got
    assert "duplicate id '***'" in got and "unknown sink '***' (sinks: [])" in got, got
    f.write_text("devices:\n  - profile: ${S}\n")  # the profile lookup quotes the name back (found by the fuzz test)
    assert _validate(f) == [f"{f}:2: devices.0.profile: device profile '***' not found"]


def test_a_short_secret_does_not_mangle_other_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S", "a")
    f = tmp_path / "d.yaml"
    f.write_text("service:\n  name: ${S}\n  log_level: loud\n")
    assert _validate(f) == [f"{f}:3: service.log_level: Input should be 'debug', 'info', 'warning' or 'error'"]
    located, _ = load_located(f)
    assert located.redact("a name like a") == "*** name like ***"  # with no location: every token
    assert located.redact("a name like a", ("service", "log_level")) == "a name like a"
    assert located.redact("a name like a", ("service", "name")) == "*** name like ***"


@pytest.mark.timeout(120)  # a hang guard; the CPU-time bound inside is the real check
def test_without_libyaml_the_same_limits_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML built without libyaml falls back to its Python parser: slower, but bounded the same way."""
    monkeypatch.setattr(yamlsrc, "_LOADER", yaml.SafeLoader)
    f = tmp_path / "d.yaml"
    for text, why in [
        ("a: " + "[" * 200 + "]" * 200 + "\n", f"<yaml>: nested deeper than {MAX_DEPTH} levels"),
        ("pipelines: &r [*r]\n", "<yaml>: alias *r is inside its own anchor (a recursive anchor)"),
        ("a: b\x07\n", "<file>: control character U+0007 at column 5: remove it"),
        (_bomb(), f"more than {MAX_VALUES} values (a value reached through an alias counts at each use)"),
    ]:
        f.write_text(text)
        [line] = _validate(f)
        assert line.endswith(why), line
    f.write_text("service: {name: a}\n")
    assert validate_file(f)[1] == []


@pytest.mark.timeout(120)  # a hang guard; the CPU-time bound inside is the real check
def test_a_profile_multiplied_by_aliases_fails_fast(tmp_path: Path) -> None:
    """Each device entry merges its own copy of the profile, so 3,000 aliases of one entry would build 3,000
    copies (an anchor bomb through `profile:`, which hung validate); all files of a load share one budget."""
    (tmp_path / "p.yaml").write_text(
        "kind: modbus-tcp\ntags:\n" + "".join(f"  - {{name: t{i}, table: holding, address: {i}}}\n" for i in range(400))
    )
    f = tmp_path / "d.yaml"
    f.write_text("x: &d {id: m, profile: p.yaml}\ndevices: [" + ", ".join(["*d"] * 3000) + "]\n")
    started = time.process_time()
    [line] = _validate(f)
    assert time.process_time() - started < 10
    assert line.startswith(f"{tmp_path / 'p.yaml'}:") and line.endswith(
        f"more than {MAX_TOTAL_VALUES} values in the deployment and its profiles together "
        "(a profile counts once per device that uses it)"
    )


def test_a_broken_profile_used_by_many_devices_is_reported_once(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("kind: [modbus-tcp\n")
    (tmp_path / "list.yaml").write_text("- kind: modbus-tcp\n")
    f = tmp_path / "d.yaml"
    f.write_text(
        "devices:\n"
        + "".join(f"  - {{id: m{i}, profile: p.yaml}}\n" for i in range(5))
        + "".join(f"  - {{id: n{i}, profile: list.yaml}}\n" for i in range(5))
    )
    assert [line.split(": ", 1)[0] for line in _validate(f)] == [
        f"{tmp_path / 'p.yaml'}:2",
        f"{tmp_path / 'list.yaml'}:1",
    ]


@pytest.mark.timeout(120)  # a hang guard; the CPU-time bound inside is the real check
def test_many_substitutions_and_many_errors_stay_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 uses of an aliased `${S}` value, each an error: redaction was rebuilt per error from every
    substitution (20,000 x 20,000), more than a minute; its tables are now built once."""
    monkeypatch.setenv("S", "ab")
    f = tmp_path / "d.yaml"
    f.write_text('x: &s "${S}-${S}"\ndevices: [' + ", ".join(["*s"] * 20_000) + "]\n")
    started = time.process_time()
    lines = _validate(f)
    assert time.process_time() - started < 10
    assert len(lines) == 20_001 and not any("ab" in line.split(": ", 2)[2] for line in lines)  # and x: extra
