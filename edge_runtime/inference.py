"""onnxruntime session wrapper: a model is checked completely at start-up, never at the first frame.

`models/<name>/model.yaml` is the manifest; `load_model` verifies the file's sha256, compares every declared
input and output (name, dtype, shape) with the session, sets thread counts and runs one warm-up inference.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import Field, ValidationError, model_validator

from adapters.base import EdgeRuntimeError, StrictModel
from edge_runtime.paths import models_dir

__all__ = [
    "ModelError",
    "ModelManifest",
    "ModelRunner",
    "TensorSpec",
    "folder_fingerprint",
    "load_model",
    "resolve_model_dir",
]

log = logging.getLogger("edge_runtime.inference")

Dim = int | str  # an int is fixed; a string names a free dimension such as "batch"

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class ModelError(EdgeRuntimeError):
    """A model's file, checksum or tensor signature does not match its manifest."""


class TensorSpec(StrictModel):
    name: str = Field(description="Tensor name in the ONNX graph.")
    dtype: Literal["float32", "float16", "float64", "uint8", "int8", "int32", "int64", "bool"] = Field(
        description="Element type."
    )
    shape: list[Dim] = Field(description="Dimensions; a string is a free dimension (e.g. 'batch').")


class Variant(StrictModel):
    file: str = Field(description="ONNX file of this variant, relative to the model directory.")
    sha256: str = Field(description="Hex sha256 of the file.")
    notes: str = Field(default="", description="How the variant was made (e.g. int8 static quantization).")


class ModelManifest(StrictModel):
    """The contract of `models/<name>/model.yaml`."""

    name: str
    version: str
    file: str = Field(default="model.onnx", description="ONNX file relative to the model directory.")
    sha256: str = Field(description="Hex sha256 of `file`; a mismatch refuses the model at start-up.")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] = Field(default_factory=list, description="Class names, in output order.")
    thresholds: dict[str, float] = Field(default_factory=dict)
    preprocessing: dict[str, Any] = Field(default_factory=dict, description="Task-specific input parameters.")
    training: dict[str, Any] = Field(default_factory=dict, description="Data provenance, split, seed, script.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Held-out metrics from training.")
    variants: dict[str, Variant] = Field(default_factory=dict, description="Alternative files, e.g. int8.")
    default_variant: str = Field(
        default="fp32",
        description="What a pipeline, `evaluate` and `load_model` get when they name no variant: `fp32` (`file`) or "
        "one of `variants`; an int8 file where it holds the fp32 file's accuracy (its card gives both).",
    )

    @model_validator(mode="after")
    def _default_is_shipped(self) -> ModelManifest:
        if self.default_variant != "fp32" and self.default_variant not in self.variants:
            raise ValueError(
                f"default_variant '{self.default_variant}' is neither fp32 nor one of variants {sorted(self.variants)}"
            )
        return self

    def variant_or_default(self, variant: str | None) -> str:
        return self.default_variant if variant is None else variant

    def file_of(self, variant: str | None) -> tuple[str, str]:
        """The ONNX file and its sha256 for `variant` (None: the default); KeyError when the manifest has no such
        variant."""
        name = self.variant_or_default(variant)
        if name == "fp32":
            return self.file, self.sha256
        return self.variants[name].file, self.variants[name].sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(model_dir: Path) -> ModelManifest:
    path = model_dir / "model.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ModelManifest.model_validate(raw)
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: model manifest not found") from exc
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: invalid model manifest: {exc}") from exc
    except ValidationError as exc:  # one "field: why" per problem, not pydantic's dump of the whole manifest
        why = "; ".join(_field_error(e["loc"], e["msg"]) for e in exc.errors())
        raise ModelError(f"{path}: invalid model manifest: {why}") from exc


class ModelRunner:
    """A verified onnxruntime session. `run` is thread-safe (onnxruntime sessions are) and CPU-bound."""

    def __init__(self, manifest: ModelManifest, session: Any, variant: str, sha256: str) -> None:
        self.manifest = manifest
        self.session = session
        self.variant = variant
        self.sha256 = sha256
        self._output_names = [o.name for o in manifest.outputs]

    @property
    def ident(self) -> str:
        """`name@version+sha256prefix`, the `model` field of every Result."""
        suffix = "" if self.variant == "fp32" else f"-{self.variant}"
        return f"{self.manifest.name}@{self.manifest.version}{suffix}+{self.sha256[:12]}"

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        outs = self.session.run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, outs, strict=True))


def _check_signature(kind: str, declared: list[TensorSpec], actual: list[Any], path: Path) -> None:
    by_name = {a.name: a for a in actual}
    if sorted(by_name) != sorted(d.name for d in declared):
        raise ModelError(
            f"{path}: {kind} names {sorted(by_name)} do not match the manifest's {[d.name for d in declared]}"
        )
    for spec in declared:
        node = by_name[spec.name]
        dtype = _ORT_DTYPES.get(node.type, node.type)
        if dtype != spec.dtype:
            raise ModelError(f"{path}: {kind} '{spec.name}' is {dtype}, the manifest says {spec.dtype}")
        shape = list(node.shape)
        if len(shape) != len(spec.shape):
            raise ModelError(f"{path}: {kind} '{spec.name}' has shape {shape}, the manifest says {spec.shape}")
        for got, want in zip(shape, spec.shape, strict=True):
            if isinstance(want, int) and got != want:
                raise ModelError(f"{path}: {kind} '{spec.name}' has shape {shape}, the manifest says {spec.shape}")


def _warmup_feed(manifest: ModelManifest) -> dict[str, npt.NDArray[Any]]:
    feed = {}
    for spec in manifest.inputs:
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        feed[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype))
    return feed


def resolve_model_dir(name_or_dir: str | Path) -> Path:
    """A path to a model folder, or a name under models/."""
    model_dir = Path(name_or_dir)
    return model_dir if model_dir.is_dir() else models_dir() / str(name_or_dir)


def folder_fingerprint(name_or_dir: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of the manifest and ONNX files: a cheap poll that notices a new version
    being copied in (each step of a copy changes it, and load_model's sha256 check decides whether it is whole)."""
    model_dir = resolve_model_dir(name_or_dir)
    found = []
    try:
        for entry in os.scandir(model_dir):
            if entry.name == "model.yaml" or entry.name.endswith(".onnx"):
                with contextlib.suppress(OSError):  # removed while listed
                    st = entry.stat()
                    found.append((entry.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(found))


def _field_error(loc: tuple[int | str, ...], msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    return f"{'.'.join(str(p) for p in loc)}: {msg}" if loc else msg


def load_model(
    name_or_dir: str | Path,
    *,
    variant: str | None = None,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
) -> ModelRunner:
    """Open and verify a model (`variant` None: the manifest's `default_variant`); raises ModelError with the file
    and the mismatch when anything is off."""
    import onnxruntime as ort

    model_dir = resolve_model_dir(name_or_dir)
    manifest = read_manifest(model_dir)
    variant = manifest.variant_or_default(variant)
    try:
        file, want_sha = manifest.file_of(variant)
    except KeyError:
        raise ModelError(
            f"{model_dir / 'model.yaml'}: no variant '{variant}' (has: fp32, {', '.join(manifest.variants)})"
        ) from None
    path = model_dir / file
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    got_sha = _sha256(path)
    if got_sha != want_sha:
        raise ModelError(f"{path}: sha256 {got_sha[:16]}... does not match the manifest's {want_sha[:16]}...")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
        raise ModelError(f"{path}: onnxruntime cannot load the model: {exc}") from exc
    _check_signature("input", manifest.inputs, session.get_inputs(), path)
    _check_signature("output", manifest.outputs, session.get_outputs(), path)
    runner = ModelRunner(manifest, session, variant, got_sha)
    t0 = time.perf_counter()
    runner.run(_warmup_feed(manifest))
    log.info(
        "event=model_loaded model=%s threads=%d warmup_ms=%.1f",
        runner.ident,
        intra_op_threads,
        (time.perf_counter() - t0) * 1e3,
    )
    return runner
