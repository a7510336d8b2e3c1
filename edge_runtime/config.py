"""The deployment file: one YAML document, strict pydantic models, every built-in kind in one explicit union.

Adding a protocol means one line in `DeviceConfig` (and `SinkConfig` if it has a sink); adding a task, one line in
`TaskConfig`. Validation never touches the network or a model file: an unreachable device fails when it opens.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from adapters.base import EdgeRuntimeError, StrictModel
from adapters.camera import CameraConfig
from adapters.modbus import ModbusRtuConfig, ModbusTcpConfig, ModbusWriteConfig
from adapters.mqtt import MqttConfig, MqttSinkConfig
from adapters.opcua import OpcuaConfig, OpcuaServerConfig
from edge_runtime.tasks.rice_sorter import RiceSorterConfig
from edge_runtime.tasks.vibration_anomaly import VibrationAnomalyConfig
from edge_runtime.tasks.weld_inspector import WeldInspectorConfig
from edge_runtime.yamlsrc import Located, SourceError, load_located

__all__ = [
    "BatchingConfig",
    "ConfigError",
    "Deployment",
    "DeviceConfig",
    "ModelRef",
    "OutboxConfig",
    "PipelineConfig",
    "ServiceConfig",
    "SinkConfig",
    "TaskConfig",
    "load_deployment",
    "validate_file",
]

DeviceConfig = Annotated[
    ModbusTcpConfig | ModbusRtuConfig | OpcuaConfig | MqttConfig | CameraConfig,
    Field(discriminator="kind"),
]
SinkConfig = Annotated[
    MqttSinkConfig | OpcuaServerConfig | ModbusWriteConfig,
    Field(discriminator="kind"),
]
TaskConfig = Annotated[
    VibrationAnomalyConfig | RiceSorterConfig | WeldInspectorConfig,
    Field(discriminator="kind"),
]


class ConfigError(EdgeRuntimeError):
    """A deployment file is invalid; `errors` holds every problem as `FILE:LINE: path: why`."""

    def __init__(self, errors: list[SourceError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class OutboxConfig(StrictModel):
    path: str = Field(
        default="outbox.sqlite",
        description="SQLite file of undelivered results (WAL mode); a relative path is relative to "
        "$STATE_DIRECTORY (systemd StateDirectory=) or else the working directory.",
    )
    max_rows: int = Field(default=100_000, gt=0, description="Undelivered rows (one per result and sink) kept at most.")
    when_full: Literal["block", "drop_oldest"] = Field(
        default="block",
        description="At max_rows: `block` the pipelines (nothing is lost, inputs back up and are counted where "
        "they drop) or `drop_oldest` undelivered rows (the line keeps its newest results; drops are counted).",
    )


class ServiceConfig(StrictModel):
    name: str = Field(default="edge-runtime", description="Service name, used in logs and metrics.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log threshold.")
    metrics_listen: str | None = Field(
        default="127.0.0.1:9464", description="host:port of the Prometheus metrics endpoint; null disables it."
    )
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable result buffer.")

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:9464 (or null to disable)")
        return v

    inference_workers: int = Field(
        default=1, ge=1, le=64, description="Worker threads for task pre/post-processing and inference."
    )


class ModelRef(StrictModel):
    name: str = Field(description="Directory under models/ (e.g. vibration_anomaly) or a path to one.")
    variant: str = Field(default="fp32", description="`fp32` or a variant the manifest lists (e.g. `int8`).")
    intra_op_threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads.")


class BatchingConfig(StrictModel):
    max_batch: int = Field(default=32, ge=1, le=4096, description="Most inputs per inference call.")
    max_wait_ms: float = Field(
        default=20.0, ge=0, description="Longest an input waits for a batch to fill before it runs anyway."
    )
    queue_size: int = Field(default=256, ge=1, description="Bounded input queue length of the pipeline.")
    when_full: Literal["block", "drop_oldest"] | None = Field(
        default=None,
        description="Input queue policy: `drop_oldest` (default for camera frames: the newest matters) or "
        "`block` (default for waveforms: back-pressure to the adapter). Drops are counted.",
    )


class PipelineConfig(StrictModel):
    id: str = Field(description="Pipeline name; results carry it and `seq` counts per pipeline.")
    inputs: list[str] = Field(
        min_length=1, description="Stream patterns (fnmatch, e.g. `gw1.*`) of the readings or frames to consume."
    )
    task: TaskConfig = Field(description="What to do with the model's outputs (discriminated on `kind`).")
    model: ModelRef = Field(description="The ONNX model under models/ and how to run it.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Micro-batching per model.")
    outputs: list[str] = Field(default_factory=list, description="Sink ids that receive every result.")


class Deployment(StrictModel):
    """Root of a deployment file."""

    service: ServiceConfig = Field(default_factory=ServiceConfig, description="Process-wide settings.")
    devices: list[DeviceConfig] = Field(
        default_factory=list,
        description="Machines, one entry each. An entry may say `profile: devices/<file>.yaml` to merge a device "
        "profile under it (the entry's own keys win).",
    )
    pipelines: list[PipelineConfig] = Field(default_factory=list, description="Inference pipelines.")
    sinks: list[SinkConfig] = Field(default_factory=list, description="Result destinations.")

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Deployment:
        if info.context and info.context.get("cross_checks") == "deferred":
            return self  # validate_file runs them itself, to point each problem at its own line
        problems = cross_check(self)
        if problems:
            raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {why}" for loc, why in problems))
        return self


def cross_check(d: Deployment) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that span objects: unique ids, references between sections, one owner per serial port."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for section, items in (("devices", d.devices), ("pipelines", d.pipelines), ("sinks", d.sinks)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.id in seen:
                problems.append(((section, i, "id"), f"duplicate id '{item.id}' (first at {section}.{seen[item.id]})"))
            seen.setdefault(item.id, i)
    sink_ids = {s.id for s in d.sinks}
    device_ids = {dev.id for dev in d.devices}
    # an MQTT subscription may name its streams without the device id (e.g. `line1.{topic_leaf}`)
    free_prefixes = [
        sub.stream.split(".", 1)[0]
        for dev in d.devices
        if isinstance(dev, MqttConfig)
        for sub in dev.subscriptions
        if not sub.stream.startswith("{id}")
    ]
    for i, p in enumerate(d.pipelines):
        for j, out in enumerate(p.outputs):
            if out not in sink_ids:
                problems.append((("pipelines", i, "outputs", j), f"unknown sink '{out}' (sinks: {sorted(sink_ids)})"))
        for j, pattern in enumerate(p.inputs):
            prefix = pattern.split(".", 1)[0]
            produced = [*device_ids, *(p if "{" not in p else "*" for p in free_prefixes)]
            if not any(fnmatch.fnmatchcase(name, prefix) or name == "*" for name in produced):
                problems.append(
                    (("pipelines", i, "inputs", j), f"'{pattern}' matches no device id (devices: {sorted(device_ids)})")
                )
    owners: dict[str, int] = {}
    for i, dev in enumerate(d.devices):
        if isinstance(dev, ModbusRtuConfig):
            if dev.serial_port in owners:
                problems.append(
                    (
                        ("devices", i, "serial_port"),
                        f"serial port '{dev.serial_port}' is already used by devices.{owners[dev.serial_port]}: "
                        "list all slaves of one line in one device",
                    )
                )
            owners.setdefault(dev.serial_port, i)
    return problems


def check_models(d: Deployment) -> list[tuple[tuple[str | int, ...], str]]:
    """That every pipeline's model exists with the named variant and suits its task: found by `validate`,
    not by `run` (file reads only; the sha256 and tensor checks stay at start-up, see inference.load_model)."""
    from edge_runtime.inference import ModelError, models_dir, read_manifest

    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, p in enumerate(d.pipelines):
        model_dir = Path(p.model.name)
        if not model_dir.is_dir():
            model_dir = models_dir() / p.model.name
        if not (model_dir / "model.yaml").is_file():
            known = sorted(x.name for x in models_dir().iterdir() if (x / "model.yaml").is_file())
            problems.append((("pipelines", i, "model", "name"), f"no model '{p.model.name}' (shipped: {known})"))
            continue
        try:
            manifest = read_manifest(model_dir)
        except ModelError as exc:
            problems.append((("pipelines", i, "model", "name"), str(exc)))
            continue
        if p.model.variant != "fp32" and p.model.variant not in manifest.variants:
            problems.append(
                (
                    ("pipelines", i, "model", "variant"),
                    f"model '{manifest.name}' has no variant '{p.model.variant}' "
                    f"(has: fp32{''.join(', ' + v for v in manifest.variants)})",
                )
            )
        if manifest.name != p.task.kind:
            problems.append(
                (("pipelines", i, "model", "name"), f"model '{manifest.name}' does not fit task '{p.task.kind}'")
            )
    return problems


def profile_dirs() -> tuple[Path, ...]:
    """Where `profile:` names are looked up after the deployment file's own directory."""
    repo_configs = Path(__file__).resolve().parent.parent / "configs"
    return (repo_configs,)


def _errors_from(exc: ValidationError, located: Located) -> list[SourceError]:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = _data_loc(tuple(err["loc"]), located.data)
        if err["type"] == "union_tag_invalid":
            loc = (*loc, "kind")
        file, line = located.locate(loc)
        path = ".".join(str(p) for p in loc) or "<root>"
        out.append(SourceError(file, line, path, located.redact(err["msg"])))
    return out


def _data_loc(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...]:
    """Drop the union tags pydantic inserts (e.g. `modbus-tcp`) so the path matches the YAML."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("kind") == part:
            continue
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
        out.append(part)
    return tuple(out)


def validate_file(path: Path | str) -> tuple[Deployment | None, list[SourceError]]:
    """Parse and validate; returns the deployment or every error found (never raises for bad content)."""
    file = Path(path)
    located, errors = load_located(file, profile_dirs=profile_dirs())
    if errors:
        return None, errors
    if not isinstance(located.data, dict):
        return None, [SourceError(file, 1, "<root>", "a deployment file must be a mapping")]
    try:
        deployment = Deployment.model_validate(located.data, context={"cross_checks": "deferred"})
    except ValidationError as exc:
        return None, _errors_from(exc, located)
    problems = cross_check(deployment) + check_models(deployment)
    if problems:
        errors = [SourceError(*located.locate(loc), ".".join(map(str, loc)), why) for loc, why in problems]
        return None, sorted(errors, key=lambda e: (str(e.file), e.line))
    return deployment, []


def load_deployment(path: Path | str) -> Deployment:
    deployment, errors = validate_file(path)
    if deployment is None:
        raise ConfigError(errors)
    return deployment


def load_device_profile(path: Path | str) -> Any:
    """A device profile on its own (for `simulate`): validated as a device config with default connection."""
    from pydantic import TypeAdapter

    file = Path(path)
    located, errors = load_located(file)
    if errors:
        raise ConfigError(errors)
    data = dict(located.data) if isinstance(located.data, dict) else located.data
    if isinstance(data, dict):
        data.setdefault("id", file.stem)
    try:
        return TypeAdapter(DeviceConfig).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_errors_from(exc, located)) from exc
