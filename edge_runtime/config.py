"""The deployment file: one YAML document, strict pydantic models, discriminated unions on `kind`.

The device and sink unions are derived from the protocol registry (`adapters.registry`: one package per
protocol), the task union from `edge_runtime.tasks.TASKS`; nothing here names a protocol. Validation never touches
the network: an unreachable device fails when it opens. It does read each pipeline's model manifest
(`check_models`), so a missing model or variant is a `validate` error; the sha256 and tensor checks stay at
start-up (`inference.load_model`).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from adapters import registry
from adapters.base import DeviceConfigBase, EdgeRuntimeError, SinkConfigBase, StrictModel
from adapters.types import QueueSize, check_host
from edge_runtime.compensation import CompensationConfig
from edge_runtime.paths import configs_dir
from edge_runtime.streams import DEFAULT_MAX_STREAMS
from edge_runtime.tasks import task_union
from edge_runtime.tasks.base import TaskConfigBase
from edge_runtime.yamlsrc import Located, Problem, load_located

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

if TYPE_CHECKING:  # the unions are built at run time from the registries; to mypy they are their base classes
    DeviceConfig = DeviceConfigBase
    SinkConfig = SinkConfigBase
    TaskConfig = TaskConfigBase
else:
    DeviceConfig = registry.config_union("device")
    SinkConfig = registry.config_union("sink")
    TaskConfig = task_union()


class ConfigError(EdgeRuntimeError):
    """A deployment file is invalid; `errors` holds every problem as `FILE:LINE: path: why`."""

    def __init__(self, errors: list[Problem]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class OutboxConfig(StrictModel):
    path: str = Field(
        default="outbox.sqlite",
        description="SQLite file of undelivered results (WAL mode); a relative path is relative to "
        "$STATE_DIRECTORY (systemd StateDirectory=) or else the working directory.",
    )
    max_rows: QueueSize = Field(default=100_000, description="Undelivered rows (one per result and sink) kept at most.")
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
    ui_listen: str | None = Field(
        default="127.0.0.1:8080",
        description="host:port of the read-only operator page (edge_runtime.web); null disables it. Bound beyond "
        "loopback, it requires the token in $CREDENTIALS_DIRECTORY/UI_TOKEN (systemd LoadCredential=).",
    )
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable result buffer.")

    @field_validator("metrics_listen", "ui_listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:9464 (or null to disable)")
        check_host(host)
        return v

    inference_workers: int = Field(
        default=1, ge=1, le=64, description="Worker threads for task pre/post-processing and inference."
    )
    site_temperature_c: tuple[float, float] | None = Field(
        default=None,
        description="Ambient range [lo, hi] degC the site sees over a year (e.g. [-35, 35]); `validate` warns when "
        "a compensation layer's calibration is not valid over all of it.",
    )
    progress_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="Longest inputs may wait with no result stored before the service counts as stalled: "
        "/healthz answers 503 and the systemd watchdog is no longer petted (so systemd restarts it).",
    )
    max_streams: int = Field(
        default=DEFAULT_MAX_STREAMS,
        ge=1,
        le=1_000_000,
        strict=True,
        description="Most streams whose state (routes, latest reading, ring buffer, debounce) is kept; the least "
        "recently seen stream is evicted beyond it and counted (`*_evicted_total`), so a flood of new topics "
        "costs bounded memory.",
    )
    opencv_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Threads OpenCV may use inside one call (segmentation, resize, warps) in frame pipelines. 1 "
        "keeps a frame's work on its inference worker's core, as the perf suite measures it; raise it for large "
        "frames on a gateway with idle cores.",
    )
    model_watch_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="How often each pipeline's model folder is checked for a new version (file sizes and times; "
        "0 disables). A new version is verified, run in shadow and swapped in (see the pipeline's `model`).",
    )


class ModelRef(StrictModel):
    name: str = Field(description="Directory under models/ (e.g. vibration_anomaly) or a path to one.")
    variant: str | None = Field(
        default=None,
        description="`fp32` or a variant the manifest lists (e.g. `int8`); unset: the manifest's `default_variant` "
        "(int8 where it holds the fp32 accuracy).",
    )
    intra_op_threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads.")
    shadow_inputs: int = Field(
        default=200,
        ge=0,
        le=1_000_000,
        description="A new version of this model (a changed folder, or another `model` after a reload) first runs "
        "in shadow on this many live inputs, its decisions compared with the running model's; 0 swaps it in "
        "right after its checks (sha256, shapes, warm-up).",
    )
    min_agreement: float = Field(
        default=0.9,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Share of the shadow inputs on which the candidate must give the running model's decision and "
        "label; below it the running model stays and the log says why.",
    )

    def same_model(self, other: ModelRef) -> bool:
        """The same files and session settings: only the swap settings differ."""
        return (self.name, self.variant, self.intra_op_threads) == (other.name, other.variant, other.intra_op_threads)


class BatchingConfig(StrictModel):
    max_batch: int = Field(default=32, ge=1, le=4096, description="Most inputs per inference call.")
    max_wait_ms: float = Field(
        default=20.0, ge=0, description="Longest an input waits for a batch to fill before it runs anyway."
    )
    queue_size: QueueSize = Field(default=256, description="Bounded input queue length of the pipeline.")
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
    compensation: list[CompensationConfig] = Field(
        default_factory=list,
        description="Low-temperature compensation layers, run in order between windowing and the task "
        "(`lens_fog`, `led_drift`, `sensor_drift`, `cold_start`, `weld_thermal`; see docs/cold.md).",
    )


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
    sections: dict[str, list[str]] = {
        "devices": [x.id for x in d.devices],
        "pipelines": [x.id for x in d.pipelines],
        "sinks": [x.id for x in d.sinks],
    }
    for section, ids in sections.items():
        seen: dict[str, int] = {}
        for i, ident in enumerate(ids):
            if ident in seen:
                problems.append(((section, i, "id"), f"duplicate id '{ident}' (first at {section}.{seen[ident]})"))
            seen.setdefault(ident, i)
    sink_ids = {s.id for s in d.sinks}
    device_ids = {dev.id for dev in d.devices}
    # a device may name streams outside its id (an MQTT subscription's `line1.{topic_leaf}`)
    produced = sorted({prefix for dev in d.devices for prefix in dev.stream_prefixes()})
    exact = set(produced)
    matched: dict[str, bool] = {}  # prefix -> matches a device (thousands of inputs share a few prefixes)

    def matches(prefix: str) -> bool:
        if prefix not in matched:
            matched[prefix] = (
                prefix in exact or "*" in exact or any(fnmatch.fnmatchcase(name, prefix) for name in produced)
            )
        return matched[prefix]

    for i, p in enumerate(d.pipelines):
        for j, out in enumerate(p.outputs):
            if out not in sink_ids:
                problems.append((("pipelines", i, "outputs", j), f"unknown sink '{out}' (sinks: {sorted(sink_ids)})"))
        for j, pattern in enumerate(p.inputs):
            if not matches(pattern.split(".", 1)[0]):
                problems.append(
                    (("pipelines", i, "inputs", j), f"'{pattern}' matches no device id (devices: {sorted(device_ids)})")
                )
    forbidden = [(i, block) for i, dev in enumerate(d.devices) for block in dev.forbidden_blocks()]
    for i, sink in enumerate(d.sinks):
        for write in sink.written_blocks():
            for j, block in ((j, b) for j, b in forbidden if b.meets(write)):
                problems.append(
                    (
                        ("sinks", i, *_path(write.field)),
                        f"writes {write.table} {write.first}..{write.last} on {write.endpoint}, which "
                        f"devices.{j} ({d.devices[j].id}) declares forbidden ({block.field}: {block.table} "
                        f"{block.first}..{block.last})",
                    )
                )
    owners: dict[str, int] = {}
    for i, dev in enumerate(d.devices):
        for res in dev.exclusive_resources():
            if res.name in owners:
                problems.append(
                    (("devices", i, res.field), f"{res.name} is already used by devices.{owners[res.name]}: {res.hint}")
                )
            owners.setdefault(res.name, i)
    return problems


def _path(field: str) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in field.split("."))


def check_models(d: Deployment) -> list[tuple[tuple[str | int, ...], str]]:
    """That every pipeline's model exists with the named variant and suits its task: found by `validate`,
    not by `run` (file reads only; the sha256 and tensor checks stay at start-up, see inference.load_model)."""
    from edge_runtime.inference import ModelError, read_manifest
    from edge_runtime.paths import models_dir

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
        if p.model.variant not in (None, "fp32", *manifest.variants):
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
    return (configs_dir(),)


def errors_from(exc: ValidationError, located: Located) -> list[Problem]:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = _data_loc(tuple(err["loc"]), located.data)
        if err["type"] == "union_tag_invalid":
            loc = (*loc, "kind")
        file, line = located.locate(loc)
        path = ".".join(str(p) for p in loc) or "<root>"
        out.append(Problem(file, line, path, located.redact(err["msg"], loc)))
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


_WINDOW_TASKS = frozenset({"vibration_anomaly"})  # tasks fed waveform windows; the others take frames


def _known_stream(d: Deployment, stream: str) -> bool:
    for dev in d.devices:
        names = dev.stream_names()
        if names is not None and stream in names:
            return True
        if names is None and any(fnmatch.fnmatchcase(stream.split(".", 1)[0], p) for p in dev.stream_prefixes()):
            return True
    return False


def check_compensation(
    d: Deployment, base_dir: Path
) -> tuple[list[tuple[tuple[str | int, ...], str]], list[Problem], list[tuple[tuple[str | int, ...], str]]]:
    """Compensation layers: calibration files load and are of the right kind, layers fit their pipeline's inputs,
    the tags they name exist. Returns (problems at deployment paths, errors inside calibration files, warnings)."""
    from edge_runtime.compensation import CALIBRATION_KIND, LAYER_INPUTS, load_calibration_file

    problems: list[tuple[tuple[str | int, ...], str]] = []
    file_errors: list[Problem] = []
    warnings: list[tuple[tuple[str | int, ...], str]] = []
    site = d.service.site_temperature_c
    for i, p in enumerate(d.pipelines):
        waveform = p.task.kind in _WINDOW_TASKS
        for j, layer in enumerate(p.compensation):
            at: tuple[str | int, ...] = ("pipelines", i, "compensation", j)
            if (LAYER_INPUTS[layer.kind] == "windows") != waveform:
                problems.append((
                    (*at, "kind"),
                    f"{layer.kind} works on {LAYER_INPUTS[layer.kind]}, but task {p.task.kind} takes "
                    f"{'windows' if waveform else 'frames'}",
                ))  # fmt: skip
            pyrometer = getattr(layer, "pyrometer", None)
            for key, stream in [
                *((k, getattr(layer, k, None)) for k in ("temperature", "current", "voltage", "travel_speed")),
                ("pyrometer.stream", pyrometer.stream if pyrometer is not None else None),
            ]:
                if stream and not _known_stream(d, stream):
                    problems.append(((*at, *key.split(".")), f"stream '{stream}' is not produced by any device"))
            cal_path = getattr(layer, "calibration", None)
            if cal_path is None:
                continue
            path = Path(cal_path) if Path(cal_path).is_absolute() else base_dir / cal_path
            if not path.is_file():
                problems.append(
                    ((*at, "calibration"), f"no calibration file {path} (make one: edge-runtime calibrate)")
                )
                continue
            try:
                cal = load_calibration_file(path, CALIBRATION_KIND[layer.kind])
            except ConfigError as exc:
                file_errors.extend(exc.errors)
                continue
            lo, hi = cal.provenance.valid_c
            if site is not None and not (lo <= site[0] and site[1] <= hi):
                warnings.append((
                    (*at, "calibration"),
                    f"{path.name} is valid for {lo:g}..{hi:g} degC, the site sees {site[0]:g}..{site[1]:g} degC: "
                    "results outside it are marked uncertain",
                ))  # fmt: skip
    return problems, file_errors, warnings


def validate_file(path: Path | str, warnings: list[Problem] | None = None) -> tuple[Deployment | None, list[Problem]]:
    """Parse and validate; returns the deployment or every error found (never raises for bad content).
    Warnings (valid but worth a look) are appended to `warnings` when given."""
    file = Path(path)
    located, errors = load_located(file, profile_dirs=profile_dirs())
    if errors:
        return None, errors
    if not isinstance(located.data, dict):
        return None, [Problem(file, 1, "<root>", "a deployment file must be a mapping")]
    try:
        deployment = Deployment.model_validate(located.data, context={"cross_checks": "deferred"})
    except ValidationError as exc:
        return None, errors_from(exc, located)
    comp_problems, file_errors, comp_warnings = check_compensation(deployment, file.parent)
    problems = cross_check(deployment) + check_models(deployment) + comp_problems
    if warnings is not None:
        warnings.extend(
            Problem(*located.locate(loc), ".".join(map(str, loc)), f"warning: {located.redact(why, loc)}")
            for loc, why in comp_warnings
        )
    if problems or file_errors:
        errors = [
            Problem(*located.locate(loc), ".".join(map(str, loc)), located.redact(why, loc)) for loc, why in problems
        ]
        return None, sorted(errors + file_errors, key=lambda e: (str(e.file), e.line))
    return deployment, []


def load_deployment(path: Path | str) -> Deployment:
    deployment, errors = validate_file(path)
    if deployment is None:
        raise ConfigError(errors)
    return deployment


_DEPLOYMENT_KEYS = frozenset({"service", "devices", "pipelines", "sinks"})


def is_device_profile(path: Path | str) -> bool:
    """A file with a top-level `kind` and no deployment section is a device profile (`validate` checks both)."""
    located, errors = load_located(Path(path))
    data = located.data
    return not errors and isinstance(data, dict) and "kind" in data and not _DEPLOYMENT_KEYS & data.keys()


def load_device_profile(path: Path | str) -> DeviceConfigBase:
    """A device profile on its own (for `simulate`): validated as a device config with default connection."""
    from pydantic import TypeAdapter

    file = Path(path)
    located, errors = load_located(file)
    if errors:
        raise ConfigError(errors)
    data = dict(located.data) if isinstance(located.data, dict) else located.data
    if isinstance(data, dict):
        kind = next((k for k in registry.kinds() if k.role == "device" and k.name == data.get("kind")), None)
        defaults = (
            kind.config.PROFILE_DEFAULTS if kind is not None and issubclass(kind.config, DeviceConfigBase) else {}
        )
        data = {"id": file.stem, **defaults, **data}
    try:
        device: DeviceConfigBase = TypeAdapter(DeviceConfig).validate_python(data)
        return device
    except ValidationError as exc:
        raise ConfigError(errors_from(exc, located)) from exc
