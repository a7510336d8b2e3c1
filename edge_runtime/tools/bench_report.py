"""The bench report for people: Markdown with a summary table and PNG plots, and two reports side by side.

matplotlib (the `bench` extra) is imported only when plots are drawn, with the Agg backend, so a gateway without
a display (or without the extra: the report then says so) still gets the Markdown and the JSON.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path

from edge_runtime.tools.bench_schema import BenchReport, Figure, Histogram, Machine

__all__ = ["machine_lines", "side_by_side", "summary_rows", "write_markdown"]


def machine_lines(m: Machine) -> list[str]:
    v = m.versions
    return [
        f"CPU: {m.cpu_model}, {m.cores} cores, {m.arch}, {m.memory_mb} MB",
        f"OS: {m.os}",
        f"Python {m.python}, edge-runtime {v.get('edge-runtime')}",
        f"onnxruntime {v.get('onnxruntime')} ({', '.join(m.onnxruntime_providers)})",
        f"numpy {v.get('numpy')}, OpenCV {v.get('opencv')}, pymodbus {v.get('pymodbus')}",
    ]


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def summary_rows(report: BenchReport) -> list[tuple[str, str, str, str, str]]:
    """(figure, value unit, min..max over n, baseline, ratio) for every figure of every benchmark."""
    rows = []
    for run in report.benchmarks.values():
        if run.result is None:
            continue
        for f in run.result.figures:
            base = f"{_fmt(f.baseline.value)} ({f.baseline.name})" if f.baseline else ""
            ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
            spread = f"{_fmt(f.min)}..{_fmt(f.max)} (n={f.repeats})"
            rows.append((f.name, f"{_fmt(f.value)} {f.unit}", spread, base, ratio))
    return rows


def _plot_batches(figures: list[Figure], path: Path) -> bool:
    """Throughput vs batch: one line per series (figures whose params hold a batch), baselines dashed."""
    series: dict[str, list[Figure]] = defaultdict(list)
    for f in figures:
        if "batch" in f.params:
            series[f.name.rsplit(".batch", 1)[0]].append(f)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, items in sorted(series.items()):
        items.sort(key=lambda f: float(f.params["batch"]))
        xs = [float(f.params["batch"]) for f in items]
        line = ax.plot(xs, [f.value for f in items], marker="o", label=name)[0]
        if all(f.baseline for f in items):
            ax.plot(
                xs,
                [f.baseline.value for f in items if f.baseline],
                linestyle="--",
                color=line.get_color(),
                label=f"{name} baseline",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel(items[0].unit)
    ax.set_title("throughput vs batch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_histogram(h: Histogram, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(h.samples, bins=50)
    ax.set_xlabel(h.unit)
    ax.set_ylabel("count")
    ax.set_title(h.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_markdown(report: BenchReport, path: Path) -> Path:
    """`path` (.md) with the fingerprint, the summary table and per-benchmark plots in `<stem>-plots/`."""
    lines = [f"# edge-runtime bench{' --quick' if report.quick else ''}, {report.started_utc}", ""]
    lines += [f"- {line}" for line in machine_lines(report.machine)]
    if report.recording:
        lines.append(f"- end-to-end suites on the flight recording `{report.recording}` (not synthetic inputs)")
    lines += ["", "## Summary", "", "| figure | value | min..max | baseline | ratio |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(report)]
    plots = path.with_name(path.stem + "-plots")
    try:
        import matplotlib  # noqa: F401

        can_plot = True
    except ImportError:
        can_plot = False
        lines += ["", "_No plots: matplotlib is not installed (`pip install 'edge-runtime[bench]'`)._"]
    for name, run in report.benchmarks.items():
        lines += ["", f"## {name} ({run.status}, {run.wall_s:.0f} s)", ""]
        if run.result is None:
            lines.append(f"Failed: `{(run.error or '')[-500:]}`")
            continue
        if can_plot:
            plots.mkdir(exist_ok=True)
            png = plots / f"{name}-batch.png"
            if _plot_batches(run.result.figures, png):
                lines.append(f"![throughput vs batch]({plots.name}/{png.name})")
            for h in run.result.histograms:
                png = plots / f"{name}-{h.name.replace('/', '_')}.png"
                _plot_histogram(h, png)
                lines.append(f"![{h.name}]({plots.name}/{png.name})")
        if run.result.details:
            lines += ["", "<details><summary>details</summary>", "", "```"]
            lines += [f"{k}: {v}" for k, v in run.result.details.items()]
            lines += ["```", "</details>"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _box(title: str, body: list[str], width: int) -> list[str]:
    inner = width - 4
    out = ["┌" + "─" * (width - 2) + "┐", f"│ {title[:inner]:<{inner}} │", "├" + "─" * (width - 2) + "┤"]
    for line in body:
        for part in textwrap.wrap(line, inner) or [""]:
            out.append(f"│ {part:<{inner}} │")
    out.append("└" + "─" * (width - 2) + "┘")
    return out


def side_by_side(a: BenchReport, b: BenchReport, name_a: str, name_b: str, columns: int = 160) -> str:
    """Two boxes, A left and B right: fingerprint, then every figure; B's figures carry their ratio to A's."""
    width = max(40, (columns - 2) // 2)
    figs_a = {f.name: f for run in a.benchmarks.values() if run.result for f in run.result.figures}
    figs_b = {f.name: f for run in b.benchmarks.values() if run.result for f in run.result.figures}
    names = sorted(set(figs_a) | set(figs_b))
    body_a = [*machine_lines(a.machine), ""]
    body_b = [*machine_lines(b.machine), ""]
    for n in names:
        fa, fb = figs_a.get(n), figs_b.get(n)
        body_a.append(f"{n}: {_fmt(fa.value)} {fa.unit}" if fa else f"{n}: -")
        if fb and fa and fa.value:
            r = fb.value / fa.value
            better = (r > 1) == fb.higher_is_better
            body_b.append(f"{n}: {_fmt(fb.value)} {fb.unit} ({r:.2f}x A{', better' if better and r != 1 else ''})")
        else:
            body_b.append(f"{n}: {_fmt(fb.value)} {fb.unit}" if fb else f"{n}: -")
    # keep rows aligned: wrap both sides to the same number of lines per entry
    inner = width - 4
    rows_a: list[str] = []
    rows_b: list[str] = []
    for la, lb in zip(body_a, body_b, strict=True):
        wa, wb = textwrap.wrap(la, inner) or [""], textwrap.wrap(lb, inner) or [""]
        depth = max(len(wa), len(wb))
        rows_a += wa + [""] * (depth - len(wa))
        rows_b += wb + [""] * (depth - len(wb))
    box_a = _box(f"A: {name_a} ({a.started_utc})", rows_a, width)
    box_b = _box(f"B: {name_b} ({b.started_utc})", rows_b, width)
    return "\n".join(f"{la}  {lb}" for la, lb in zip(box_a, box_b, strict=True))
