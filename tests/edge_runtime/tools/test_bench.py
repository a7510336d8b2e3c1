"""`edge-runtime bench`: the quick suite runs as a smoke check (no speed asserted) and writes a report that
validates against its schema; figures, the Markdown report with plots, --only and --compare."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from edge_runtime.cli import main
from edge_runtime.tools.bench import run_bench, select
from edge_runtime.tools.bench_report import side_by_side, write_markdown
from edge_runtime.tools.bench_schema import SCHEMA, BenchReport, figure, fingerprint

# CI runs the whole quick suite once, split over the smoke tests below: these four, each in a test that also checks
# its figures' baselines, and the rest in one run
SMOKED_ALONE = ("bench_modbus", "bench_mqtt", "bench_outbox", "bench_pipeline")
SMOKED_TOGETHER = ("bench_opcua", "bench_rice", "bench_rice_line", "bench_service", "bench_ui", "bench_weld")


def test_figure_takes_the_median_and_spread_and_the_ratio_to_its_baseline() -> None:
    f = figure("x.rate", "items/s", [30.0, 10.0, 20.0], baseline=("bare", [40.0, 60.0, 50.0]))
    assert (f.value, f.min, f.median, f.max, f.repeats) == (20.0, 10.0, 20.0, 30.0, 3)
    assert f.baseline is not None and f.baseline.value == 50.0
    assert f.ratio == 0.4
    with pytest.raises(ValueError):
        figure("empty", "s", [])


def test_fingerprint_names_the_machine_and_every_version() -> None:
    m = fingerprint()
    assert m.cores >= 1 and m.memory_mb > 0 and m.arch and m.cpu_model and m.os
    for dist in ("edge-runtime", "onnxruntime", "numpy", "opencv", "pymodbus"):
        assert m.versions[dist] not in ("", "absent"), dist
    assert "CPUExecutionProvider" in m.onnxruntime_providers


def test_only_selects_benchmarks_by_name() -> None:
    assert [s.stem for s in select(["modbus"])] == ["bench_modbus"]
    assert {s.stem for s in select(["rice"])} == {"bench_rice", "bench_rice_line"}
    assert len(select(None)) >= 6


def report_from(tmp_path: Path, name: str, scale: float) -> BenchReport:
    figures = [
        figure(
            f"m.batch{b}", "crops/s", [scale * b, scale * b * 1.1], baseline=("bare", [b * 1.2]), params={"batch": b}
        )
        for b in (1, 8, 64)
    ]
    figures.append(figure("lat", "ms", [5.0 / scale], higher_is_better=False))
    return BenchReport.model_validate(
        {
            "schema": SCHEMA,
            "started_utc": "2026-11-27T00:00:00Z",
            "quick": True,
            "wall_s": 1.0,
            "machine": fingerprint(),
            "benchmarks": {
                name: {
                    "status": "ok",
                    "wall_s": 1.0,
                    "result": {
                        "benchmark": name,
                        "figures": [f.model_dump() for f in figures],
                        "histograms": [{"name": "latency", "unit": "ms", "samples": [1.0, 2.0, 2.5, 3.0]}],
                    },
                }
            },
        }
    )


def test_markdown_report_has_the_summary_table_and_png_plots(tmp_path: Path) -> None:
    md = write_markdown(report_from(tmp_path, "bench_x", 1.0), tmp_path / "r.md")
    text = md.read_text()
    assert "| m.batch8 |" in text and "CPU:" in text
    pngs = sorted((tmp_path / "r-plots").glob("*.png"))
    assert [p.name for p in pngs] == ["bench_x-batch.png", "bench_x-latency.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(f"r-plots/{p.name}" in text for p in pngs)


def test_compare_prints_two_boxes_side_by_side_with_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = report_from(tmp_path, "bench_x", 1.0), report_from(tmp_path, "bench_x", 2.0)
    text = side_by_side(a, b, "a.json", "b.json", columns=160)
    lines = text.splitlines()
    assert lines[0].count("┌") == 2 and lines[-1].count("┘") == 2
    assert len({len(line) for line in lines}) == 1  # both boxes stay aligned
    assert "m.batch8: 8.4 crops/s" in text and "m.batch8: 16.8 crops/s (2.00x A, better)" in text
    assert "lat: 2.5 ms (0.50x A, better)" in text
    for path, report in (("a.json", a), ("b.json", b)):
        (tmp_path / path).write_text(report.model_dump_json(by_alias=True))
    assert main(["bench", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "B: b.json" in capsys.readouterr().out


def test_quick_suite_smoke_writes_a_valid_report(tmp_path: Path) -> None:
    """CI's smoke check of the quick suite, on the Modbus benchmark (a real pymodbus server; about 15 s)."""
    out = tmp_path / "reports" / "today" / "bench.json"  # folders that do not exist yet are made
    progress = io.StringIO()
    code = run_bench(quick=True, json_path=out, only=[SMOKED_ALONE[0]], progress=progress)
    assert code == 0, progress.getvalue()
    report = BenchReport.model_validate(json.loads(out.read_text()))
    run = report.benchmarks["bench_modbus"]
    assert run.status == "ok" and run.result is not None
    names = {f.name for f in run.result.figures}
    assert {
        "modbus.read_all.tags_per_s",
        "modbus.ingest.20ms.cpu_s_per_1k_tags",
        "modbus.service.10ms.late_reads",
    } <= names
    assert all(f.repeats >= 1 and f.min <= f.median <= f.max for f in run.result.figures)
    by_name = {f.name: f for f in run.result.figures}
    for paced in ("modbus.ingest.10ms.cpu_s_per_1k_tags", "modbus.service.10ms.cpu_s_per_1k_tags"):
        assert by_name[paced].ratio is not None  # beside bare pymodbus sending the same requests at the same pace
    assert "1/1 bench_modbus" in progress.getvalue() and "left" in progress.getvalue()
    assert "| modbus.read_all.tags_per_s |" in out.with_suffix(".md").read_text()


def test_quick_mqtt_and_outbox_suites_measure_every_figure_beside_its_baseline(tmp_path: Path) -> None:
    """The MQTT (real mosquitto, mosquitto_sub as the floor) and outbox suites in their quick form (about 15 s): every
    figure has repeats and a baseline measured in the same run; no speed is asserted."""
    out = tmp_path / "bench.json"
    progress = io.StringIO()
    code = run_bench(quick=True, json_path=out, only=list(SMOKED_ALONE[1:3]), progress=progress)
    assert code == 0, progress.getvalue()
    report = BenchReport.model_validate(json.loads(out.read_text()))
    names = set()
    for bench in ("bench_mqtt", "bench_outbox"):
        run = report.benchmarks[bench]
        assert run.status == "ok" and run.result is not None, run.error
        for f in run.result.figures:
            assert f.baseline is not None and f.ratio is not None and f.repeats >= 2, f.name
            names.add(f.name)
    assert {"mqtt.scalar.cpu_s_per_1k_msgs", "mqtt.waveform.msgs_per_s", "outbox.store.batch64"} <= names
    received = {f.name: f.value for f in report.benchmarks["bench_mqtt"].result.figures}  # type: ignore[union-attr]
    assert received["mqtt.scalar.received"] > 0 and received["mqtt.waveform.received"] > 0


def test_every_benchmark_script_writes_figures() -> None:
    """No suite is left free-form: each script builds its figures with the schema's helpers."""
    for script in select(None):
        text = script.read_text()
        assert "write_result(" in text and "figure(" in text, script.name


def test_quick_vibration_suite_measures_every_figure_beside_its_baseline(tmp_path: Path) -> None:
    """The vibration pipeline suite in its quick form (about 10 s): end to end, task and windowing figures, each with
    repeats and a baseline from the same run."""
    out = tmp_path / "bench.json"
    progress = io.StringIO()
    assert run_bench(quick=True, json_path=out, only=[SMOKED_ALONE[3]], progress=progress) == 0, progress.getvalue()
    run = BenchReport.model_validate(json.loads(out.read_text())).benchmarks["bench_pipeline"]
    assert run.status == "ok" and run.result is not None, run.error
    for f in run.result.figures:
        assert f.baseline is not None and f.ratio is not None and f.repeats >= 2 and f.value > 0, f.name
    names = {f.name for f in run.result.figures}
    assert {"vibration.e2e.windows_per_cpu_s", "vibration.task.batch32", "vibration.windowing.48k"} <= names


def test_quick_suite_smoke_runs_every_other_benchmark_to_a_valid_report(tmp_path: Path) -> None:
    """The rest of the quick suite (rice, rice line, weld, OPC UA, start-up and memory, operator page; about 2 min):
    each completes and writes finite figures with their spread, including the goals' headline figures; no speed is
    asserted."""
    out = tmp_path / "bench.json"
    progress = io.StringIO()
    assert run_bench(quick=True, json_path=out, only=list(SMOKED_TOGETHER), progress=progress) == 0, progress.getvalue()
    report = BenchReport.model_validate(json.loads(out.read_text()))
    names = set()
    for bench in SMOKED_TOGETHER:
        run = report.benchmarks[bench]
        assert run.status == "ok" and run.result is not None and run.result.figures, (bench, run.error)
        for f in run.result.figures:
            assert math.isfinite(f.value) and f.repeats >= 1 and f.min <= f.median <= f.max, f.name
            names.add(f.name)
    assert {
        "rice.e2e.pair_int8.work_scale2.grains_per_cpu_s",
        "rice_line.pair_int8.half_load.capture_to_eject_p99",
        "weld.e2e.int8.batch1.frames_per_s",
        "opcua.notifications_per_s",
        "service.startup.ready_s",
        "service.rss.peak_mb",
        "ui.results_per_s.page_open",
    } <= names
    for f in report.benchmarks["bench_rice"].result.figures:  # type: ignore[union-attr]
        assert f.baseline is not None and f.ratio is not None, f.name  # bare onnxruntime on the same inputs
    for f in report.benchmarks["bench_rice_line"].result.figures:  # type: ignore[union-attr]
        assert f.baseline is not None, f.name  # bare onnxruntime, the camera's rate, the task alone on one frame
    assert "bench_weld" in out.with_suffix(".md").read_text()


def test_the_smoke_tests_run_every_benchmark() -> None:
    """A new benchmark script must join one of the smoke runs, so CI keeps running the whole quick suite."""
    assert {s.stem for s in select(None)} == set(SMOKED_ALONE) | set(SMOKED_TOGETHER)


def test_unknown_only_name_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", "no_such_bench"]) == 2
    assert "no benchmark matches" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_is_refused_before_any_benchmark_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("")
    assert main(["bench", "--quick", "--only", "bench_modbus", "--json", str(tmp_path / "a-file" / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report to" in err and "bench_modbus" not in err


def test_a_recording_goes_to_the_end_to_end_suites_only(tmp_path: Path) -> None:
    from edge_runtime.tools.bench import RECORDING_SUITES, command

    rec = tmp_path / "line.erec"
    by_name = {s.stem: command(s, tmp_path / "o.json", True, rec) for s in select(None)}
    assert set(by_name) >= RECORDING_SUITES
    for name, cmd in by_name.items():
        assert ("--recording" in cmd) == (name in RECORDING_SUITES), name
    assert by_name["bench_rice"][-2:] == ["--recording", str(rec.resolve())]


def test_recorded_inputs_are_the_samples_a_recorded_pipeline_of_the_task_takes(tmp_path: Path) -> None:
    import numpy as np

    from adapters.base import Frame, Reading
    from edge_runtime.recorder import FORMAT, Recorder
    from edge_runtime.tools.bench_recording import recorded_inputs

    pipelines = [
        {"id": "vib", "inputs": ["gw1.*"], "task": {"kind": "vibration_anomaly"}, "model": {"name": "x"}},
        {"id": "rice", "inputs": ["chute.*"], "task": {"kind": "rice_sorter"}, "model": {"name": "y"}},
    ]
    path = tmp_path / "line.erec"
    rec = Recorder(path, {"format": FORMAT, "replay": {"pipelines": pipelines}})
    block = np.arange(1200, dtype=np.float32)
    for i in range(5):
        rec.add(Reading("gw1.m1", i, block, rate_hz=12_000.0))
        rec.add(Reading("gw2.m1", i, block, rate_hz=12_000.0))  # no pipeline takes it
        rec.add(Reading("gw1.temp", i, np.asarray(20.0)))  # a scalar: not a waveform block
        rec.add(Frame("chute.image", i, np.zeros((4, 4, 3), dtype=np.uint8)))
    rec.close()
    blocks, about = recorded_inputs(path, "vibration_anomaly", 100)
    assert [b.stream for b in blocks] == ["gw1.m1"] * 5 and about["data"] == "recording"
    frames, _ = recorded_inputs(path, "rice_sorter", 3)
    assert len(frames) == 3 and all(isinstance(f, Frame) for f in frames)
    none, about = recorded_inputs(path, "weld_inspector", 10)
    assert none == [] and about["data"].startswith("synthetic")


def test_bench_refuses_a_file_that_is_not_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.erec"
    junk.write_text("not a recording")
    assert main(["bench", "--quick", "--only", "rice", "--recording", str(junk)]) == 2
    assert "not an edge-runtime recording" in capsys.readouterr().err
