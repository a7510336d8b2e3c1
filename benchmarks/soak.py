"""Soak: the demo load (`edge-runtime demo`) for N minutes, with RSS and open files sampled over time.

Not part of `make test`. The demo runs the service and its simulated machines in one process (plus a mosquitto
child), so the figures are of that process: growth after warm-up is what a leak would show. Writes JSON with every
sample and the growth of RSS and open files between the end of warm-up and the end of the run.

    python benchmarks/soak.py --minutes 60 [--warmup-minutes 5] [--every-s 10] [--json soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def summary(samples: list[dict[str, float]], warmup_s: float) -> dict[str, Any]:
    """Growth from the first sample after warm-up to the mean of the last tenth of the run."""
    after = [s for s in samples if s["t_s"] >= warmup_s]
    if len(after) < 2:
        return {"error": "run shorter than warm-up: no growth figure"}
    tail = after[-max(1, len(after) // 10) :]
    start_rss, end_rss = after[0]["rss_kib"], sum(s["rss_kib"] for s in tail) / len(tail)
    return {
        "warmup_s": warmup_s,
        "measured_s": after[-1]["t_s"] - after[0]["t_s"],
        "rss_kib_after_warmup": start_rss,
        "rss_kib_end": end_rss,
        "rss_kib_max": max(s["rss_kib"] for s in after),
        "rss_growth_pct": 100.0 * (end_rss - start_rss) / start_rss if start_rss else None,
        "open_files_after_warmup": after[0]["open_files"],
        "open_files_end": after[-1]["open_files"],
        "open_files_max": max(s["open_files"] for s in after),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    parser.add_argument("--every-s", type=float, default=10.0)
    parser.add_argument("--json", default="soak.json")
    args = parser.parse_args()
    seconds = args.minutes * 60
    exe = Path(sys.executable).with_name("edge-runtime")
    child = subprocess.Popen(
        [str(exe), "demo", "--seconds", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    try:
        while child.poll() is None:
            t = time.monotonic() - t0
            rss = rss_kib(child.pid)
            if rss:
                samples.append({"t_s": round(t, 1), "rss_kib": rss, "open_files": open_files(child.pid)})
                Path(args.json).write_text(json.dumps({"samples": samples}, indent=1))
            time.sleep(args.every_s)
    finally:
        if child.poll() is None:
            child.terminate()
        _, err = child.communicate(timeout=120)
    report = {
        "command": " ".join(sys.argv),
        "minutes": args.minutes,
        "exit_code": child.returncode,
        "stderr_tail": err.decode(errors="replace")[-2000:],
        "summary": summary(samples, args.warmup_minutes * 60),
        "samples": samples,
    }
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    return 0 if child.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
