"""The bench report's data model (documented in docs/bench.md), the figure helper benchmarks use, and the machine
fingerprint.

A benchmark script (`benchmarks/bench_*.py`) measures each figure over several repeats, side by side with its
baseline (bare onnxruntime, one request per tag, `mosquitto_sub`, ...), and writes one `BenchmarkResult` as JSON with
`write_result`; the runner (`edge_runtime.tools.bench`) adds the fingerprint and merges them into one `BenchReport`.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA",
    "Baseline",
    "BenchReport",
    "BenchmarkResult",
    "Figure",
    "Histogram",
    "Machine",
    "figure",
    "fingerprint",
    "histogram",
    "write_result",
]

SCHEMA = "edge-runtime-bench/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Baseline(_Strict):
    """What a figure is compared with, measured in the same run, interleaved with it."""

    name: str = Field(description="What the baseline is, e.g. 'bare onnxruntime, same crops'.")
    value: float = Field(description="Median over the repeats, in the figure's unit.")
    min: float
    median: float
    max: float


class Figure(_Strict):
    """One measured quantity: the median of its repeats and its spread, and its ratio to the baseline."""

    name: str = Field(description="Stable identifier, e.g. 'rice.task.grains_per_s.fp32'.")
    value: float = Field(description="Median over the repeats.")
    unit: str = Field(description="Unit, e.g. 'grains/s', 'ms', 'CPU-s/1k tags', 'MB'.")
    min: float
    median: float
    max: float
    repeats: int = Field(ge=1)
    higher_is_better: bool = Field(description="True for rates, False for latencies and costs.")
    baseline: Baseline | None = None
    ratio: float | None = Field(default=None, description="value / baseline.value; null without a baseline.")
    params: dict[str, str | int | float] = Field(
        default_factory=dict, description="What varies between figures of one series, e.g. {'batch': 32}."
    )


class Histogram(_Strict):
    """A latency distribution for the report's histogram plots (at most 5,000 samples kept)."""

    name: str
    unit: str
    samples: list[float]


class BenchmarkResult(_Strict):
    """What one benchmark script writes."""

    benchmark: str = Field(description="Script stem, e.g. 'bench_rice'.")
    figures: list[Figure]
    histograms: list[Histogram] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict, description="Free-form context (model ids, sizes).")


class BenchmarkRun(_Strict):
    """One benchmark inside a report: its result, or why it failed."""

    status: Literal["ok", "failed"]
    wall_s: float
    error: str | None = None
    result: BenchmarkResult | None = None


class Machine(_Strict):
    """The machine fingerprint: what a figure can only be compared under."""

    cpu_model: str
    cores: int = Field(description="Logical CPUs the process may run on.")
    arch: str
    memory_mb: int
    os: str
    python: str
    versions: dict[str, str] = Field(description="edge-runtime, onnxruntime, numpy, opencv, pymodbus, ...")
    onnxruntime_providers: list[str]


class BenchReport(_Strict):
    """The whole report `edge-runtime bench --json FILE` writes."""

    schema_: Literal["edge-runtime-bench/1"] = Field(alias="schema")
    started_utc: str
    quick: bool
    wall_s: float
    machine: Machine
    recording: str | None = None  # `--recording FILE`: the end-to-end suites ran on this flight recording
    benchmarks: dict[str, BenchmarkRun]


def _summary(samples: Sequence[float]) -> tuple[float, float, float]:
    if not samples:
        raise ValueError("a figure needs at least one sample")
    return float(min(samples)), float(statistics.median(samples)), float(max(samples))


def figure(
    name: str,
    unit: str,
    samples: Sequence[float],
    *,
    baseline: tuple[str, Sequence[float]] | None = None,
    higher_is_better: bool = True,
    params: Mapping[str, str | int | float] | None = None,
    digits: int = 4,
) -> Figure:
    """A figure from its repeats (and its baseline's, measured interleaved with it)."""
    lo, med, hi = _summary(samples)

    def sig(x: float) -> float:
        return float(f"{x:.{digits}g}")

    base = None
    ratio = None
    if baseline is not None:
        blo, bmed, bhi = _summary(baseline[1])
        base = Baseline(name=baseline[0], value=sig(bmed), min=sig(blo), median=sig(bmed), max=sig(bhi))
        ratio = round(med / bmed, 3) if bmed else None
    return Figure(
        name=name,
        value=sig(med),
        unit=unit,
        min=sig(lo),
        median=sig(med),
        max=sig(hi),
        repeats=len(samples),
        higher_is_better=higher_is_better,
        baseline=base,
        ratio=ratio,
        params=dict(params or {}),
    )


def histogram(name: str, unit: str, samples: Sequence[float], keep: int = 5000) -> Histogram:
    step = max(1, len(samples) // keep)
    return Histogram(name=name, unit=unit, samples=[round(float(s), 4) for s in list(samples)[::step]])


def write_result(
    path: Path | None,
    benchmark: str,
    figures: Sequence[Figure],
    *,
    histograms: Sequence[Histogram] = (),
    details: Mapping[str, Any] | None = None,
) -> BenchmarkResult:
    """Write a benchmark's result (validated) as JSON to `path` and print a one-line-per-figure summary."""
    result = BenchmarkResult(
        benchmark=benchmark, figures=list(figures), histograms=list(histograms), details=dict(details or {})
    )
    for f in result.figures:
        ratio = f" ({f.ratio:.2f}x {f.baseline.name})" if f.baseline and f.ratio is not None else ""
        print(f"{f.name}: {f.value:g} {f.unit} [{f.min:g}..{f.max:g}, n={f.repeats}]{ratio}", flush=True)
    if path is not None:
        path.write_text(result.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return 0


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def fingerprint() -> Machine:
    """CPU model, cores, architecture, memory, OS, and the versions of everything a figure depends on."""
    import onnxruntime

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    return Machine(
        cpu_model=_cpu_model(),
        cores=cores,
        arch=platform.machine(),
        memory_mb=_memory_mb(),
        os=_os_name(),
        python=platform.python_version(),
        versions={
            "edge-runtime": _version("edge-runtime"),
            "onnxruntime": _version("onnxruntime"),
            "numpy": _version("numpy"),
            "opencv": _version("opencv-python-headless"),
            "pymodbus": _version("pymodbus"),
            "asyncua": _version("asyncua"),
            "paho-mqtt": _version("paho-mqtt"),
        },
        onnxruntime_providers=list(onnxruntime.get_available_providers()),
    )
