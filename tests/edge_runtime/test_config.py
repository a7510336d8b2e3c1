"""Deployment files: every example validates; every golden bad case gives its exact `FILE:LINE: path: why` lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.mqtt.config import MqttSinkConfig
from edge_runtime.config import Deployment, load_deployment, validate_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "configs").glob("*.yaml"))
CASES = sorted(p for p in (Path(__file__).parent / "testcases").iterdir() if p.is_dir())


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_deployments_are_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_PASSWORD", "example")
    monkeypatch.setenv("OPCUA_PASSWORD", "example")
    deployment, errors = validate_file(path)
    assert errors == [], "\n".join(map(str, errors))
    assert deployment is not None and deployment.pipelines


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_cases(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(case)
    monkeypatch.setenv("GOLDEN_SECRET", "hunter2")
    _, errors = validate_file(Path("config.yaml"))
    got = [str(e) for e in errors]
    want = (case / "expected.txt").read_text().splitlines()
    assert got == want
    assert not any("hunter2" in line for line in got)


def test_the_schema_describes_every_field() -> None:
    schema = Deployment.model_json_schema()
    text = json.dumps(schema)
    assert '"discriminator"' in text
    missing = []
    for name, definition in schema.get("$defs", {}).items():
        for field, spec in definition.get("properties", {}).items():
            if "description" not in spec and field != "kind":
                missing.append(f"{name}.{field}")
    assert missing == []


def test_secrets_stay_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_PASS", "hunter2")
    f = tmp_path / "d.yaml"
    f.write_text("sinks:\n  - id: out\n    kind: mqtt\n    password: ${BROKER_PASS}\n")
    deployment = load_deployment(f)
    sink = deployment.sinks[0]
    assert isinstance(sink, MqttSinkConfig)
    assert "hunter2" not in repr(deployment) and "hunter2" not in deployment.model_dump_json()
    assert sink.password is not None and sink.password.get_secret_value() == "hunter2"
