"""`edge-runtime bench`: the integrators' perf suite.

Runs every `benchmarks/bench_*.py` in its own process (a benchmark's threads and servers must not disturb the
next); each measures its figures side by side with their baselines and writes a `BenchmarkResult`
(`edge_runtime.tools.bench_schema`). The runner shows a progress bar (benchmark in progress, time left), adds the
machine fingerprint, writes one JSON report and a Markdown report with plots beside it
(`edge_runtime.tools.bench_report`), and compares two reports side by side (`--compare A.json B.json`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from edge_runtime.paths import repo_root
from edge_runtime.tools.bench_schema import SCHEMA, BenchmarkResult, BenchmarkRun, BenchReport, fingerprint

__all__ = ["ESTIMATE_S", "RECORDING_SUITES", "run_bench", "select"]

# seconds each benchmark takes (quick, full) on a 2-core x86-64 box: the progress bar's time left
ESTIMATE_S: dict[str, tuple[float, float]] = {
    "bench_modbus": (8, 40),
    "bench_mqtt": (8, 50),
    "bench_outbox": (7, 45),
    "bench_opcua": (20, 35),
    "bench_pipeline": (12, 50),
    "bench_rice": (15, 60),
    "bench_rice_line": (15, 45),
    "bench_service": (30, 130),
    "bench_weld": (27, 90),
    "bench_ui": (25, 100),
}
_DEFAULT_ESTIMATE = (10.0, 40.0)

# the end-to-end suites, which take `--recording FILE` (edge_runtime.tools.bench_recording): with it they run on a
# flight recording's frames and waveforms instead of synthetic ones; the other suites do not use line data
RECORDING_SUITES = frozenset({"bench_pipeline", "bench_rice", "bench_rice_line", "bench_weld"})


def edge_runtime_command() -> list[str]:
    """The `edge-runtime` command of this interpreter's environment (benchmarks start the service with it)."""
    script = Path(sys.executable).with_name("edge-runtime")
    found = str(script) if script.exists() else shutil.which("edge-runtime")
    return (
        [found] if found else [sys.executable, "-c", "import sys; from edge_runtime.cli import main; sys.exit(main())"]
    )


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc), for benchmarks that run the service or a peer."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_process(what: str, check: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Until `check()` holds; RuntimeError naming `what` when `proc` exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited (code {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout_s:g} s")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM (the service drains and exits), then SIGKILL if it has not exited within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def select(only: list[str] | None) -> list[Path]:
    """The benchmark scripts, or those whose name contains one of `only` (`--only rice` runs both rice ones)."""
    scripts = sorted((repo_root() / "benchmarks").glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(o in s.stem for o in only)]
    return scripts


class _Progress:
    """One status line: a bar over the suite's estimated time, the benchmark in progress and the time left."""

    def __init__(self, scripts: list[Path], quick: bool, out: TextIO) -> None:
        self.estimates = [ESTIMATE_S.get(s.stem, _DEFAULT_ESTIMATE)[0 if quick else 1] for s in scripts]
        self.names = [s.stem for s in scripts]
        self.out = out
        self.tty = out.isatty()
        self.index = 0
        self.started = time.monotonic()
        self.done_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        total = sum(self.estimates)
        done_est = sum(self.estimates[: self.index]) + min(elapsed, self.estimates[self.index])
        left = max(0.0, sum(self.estimates[self.index :]) - elapsed)
        width = 24
        filled = int(width * min(1.0, done_est / total)) if total else width
        bar = "#" * filled + "-" * (width - filled)
        name = self.names[self.index]
        return f"[{bar}] {self.index + 1}/{len(self.names)} {name}  {elapsed:4.0f} s  ~{left:3.0f} s left"

    def start(self, index: int) -> None:
        self.index = index
        self.started = time.monotonic()
        if self.tty:
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        else:
            print(self.line(), file=self.out, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            print("\r" + self.line(), end="", file=self.out, flush=True)

    def finish(self, status: str) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        wall = time.monotonic() - self.started
        print(("\r" if self.tty else "") + f"{self.line()}  {status} in {wall:.0f} s", file=self.out, flush=True)


def command(script: Path, out: Path, quick: bool, recording: Path | None = None) -> list[str]:
    """A benchmark's command line: `--recording` goes to the end-to-end suites only."""
    cmd = [sys.executable, str(script), "--json", str(out)] + (["--quick"] if quick else [])
    if recording is not None and script.stem in RECORDING_SUITES:
        cmd += ["--recording", str(recording.resolve())]
    return cmd


def _run_one(script: Path, out: Path, log: Path, quick: bool, recording: Path | None = None) -> BenchmarkRun:
    cmd = command(script, out, quick, recording)
    t0 = time.monotonic()
    with log.open("w") as log_file:
        proc = subprocess.run(cmd, cwd=repo_root(), stdout=log_file, stderr=subprocess.STDOUT, check=False)
    wall = round(time.monotonic() - t0, 1)
    if proc.returncode != 0 or not out.is_file():
        tail = log.read_text(errors="replace").splitlines()[-15:]
        return BenchmarkRun(status="failed", wall_s=wall, error=f"exit code {proc.returncode}: " + " | ".join(tail))
    text = out.read_text()
    try:
        result = BenchmarkResult.model_validate_json(text)
    except ValidationError as exc:
        raw = json.loads(text) if text.lstrip().startswith("{") else None
        if not isinstance(raw, dict) or "figures" in raw:
            return BenchmarkRun(status="failed", wall_s=wall, error=f"invalid result: {exc}")
        # a benchmark not yet converted to figures: its JSON is kept as details, and the report says so
        raw["note"] = "free-form output: no figures with repeats and baselines yet"
        result = BenchmarkResult(benchmark=script.stem, figures=[], details=raw)
    return BenchmarkRun(status="ok", wall_s=wall, result=result)


def run_bench(
    *,
    quick: bool = False,
    json_path: Path | None = None,
    only: list[str] | None = None,
    progress: TextIO | None = None,
    recording: Path | None = None,
) -> int:
    """Run the suite, write the JSON report (and the Markdown report with plots beside it); 0 when all passed."""
    from edge_runtime.tools.bench_report import write_markdown

    scripts = select(only)
    if recording is not None:
        from edge_runtime.recorder import Recording

        Recording(recording)  # not a recording: one clear error now, not one per suite
    if not scripts:
        print(f"edge-runtime bench: no benchmark matches {only} in {repo_root() / 'benchmarks'}", file=sys.stderr)
        return 2
    if json_path is not None:
        # before minutes of benchmarks, not after: a report that cannot be written is refused at once
        try:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            with json_path.open("a", encoding="utf-8"):
                pass
        except OSError as exc:
            print(f"edge-runtime bench: cannot write the report to {json_path}: {exc}", file=sys.stderr)
            return 2
    out = progress or sys.stderr
    bar = _Progress(scripts, quick, out)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.monotonic()
    runs: dict[str, BenchmarkRun] = {}
    with tempfile.TemporaryDirectory(prefix="edge-runtime-bench-") as tmp:
        for i, script in enumerate(scripts):
            bar.start(i)
            run = _run_one(
                script, Path(tmp) / f"{script.stem}.json", Path(tmp) / f"{script.stem}.log", quick, recording
            )
            bar.finish(run.status)
            if run.error:
                print(f"  {script.stem}: {run.error[-2000:]}", file=out, flush=True)
            runs[script.stem] = run
    report = BenchReport.model_validate(
        {
            "schema": SCHEMA,
            "started_utc": started,
            "quick": quick,
            "wall_s": round(time.monotonic() - t0, 1),
            "machine": fingerprint(),
            "recording": None if recording is None else str(recording),
            "benchmarks": runs,
        }
    )
    text = report.model_dump_json(indent=1, by_alias=True)
    if json_path is not None:
        json_path.write_text(text + "\n", encoding="utf-8")
        md = write_markdown(report, json_path.with_suffix(".md"))
        print(f"wrote {json_path} and {md}", file=out)
    else:
        print(text)
    return 1 if any(r.status != "ok" for r in runs.values()) else 0


def load_report(path: Path) -> BenchReport:
    data: Any = json.loads(path.read_text(encoding="utf-8"))
    return BenchReport.model_validate(data)


def compare(a: Path, b: Path, width: int | None = None) -> int:
    from edge_runtime.tools.bench_report import side_by_side

    cols = width or os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else width or 160
    print(side_by_side(load_report(a), load_report(b), a.name, b.name, cols))
    return 0
