from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.yamlsrc import load_located


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
