"""`edge-runtime bench`: the integrators' perf suite.

Runs every `benchmarks/bench_*.py` in its own process (a benchmark's threads and servers must not disturb the
next), each writing JSON with its ratios against a baseline measured side by side in the same run, and merges the
results into one report.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_runtime.paths import repo_root

__all__ = ["run_bench"]


def run_bench(*, quick: bool = False, json_path: Path | None = None, only: list[str] | None = None) -> int:
    bench_dir = repo_root() / "benchmarks"
    scripts = sorted(bench_dir.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(o in s.stem for o in only)]
    if not scripts:
        print(f"edge-runtime bench: no benchmarks found in {bench_dir}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"quick": quick, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="edge-runtime-bench-") as tmp:
        for script in scripts:
            out = Path(tmp) / f"{script.stem}.json"
            cmd = [sys.executable, str(script), "--json", str(out)] + (["--quick"] if quick else [])
            print(f"== {script.stem}: {' '.join(cmd[1:])}", flush=True)
            t0 = time.monotonic()
            proc = subprocess.run(cmd, cwd=repo_root(), check=False)
            if proc.returncode != 0 or not out.is_file():
                failed += 1
                report[script.stem] = {"error": f"exit code {proc.returncode}"}
                continue
            report[script.stem] = json.loads(out.read_text())
            report[script.stem]["wall_s"] = round(time.monotonic() - t0, 1)
    text = json.dumps(report, indent=2)
    if json_path is not None:
        json_path.write_text(text + "\n")
        print(f"wrote {json_path}")
    else:
        print(text)
    return 1 if failed else 0
