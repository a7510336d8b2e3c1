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
