"""`edge-runtime` command line. Usage errors exit 2 with a message; heavy modules load per command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime import __version__

if TYPE_CHECKING:
    from edge_runtime.config import Deployment

__all__ = ["main"]

EPILOG = "Docs: README.md and docs/ in the source tree. Logs are key=value lines on stdout."


def _validate_profile(args: argparse.Namespace) -> int:
    from adapters.registry import plan_report
    from edge_runtime.config import ConfigError, load_device_profile

    try:
        device = load_device_profile(args.config)
    except ConfigError as exc:
        for err in exc.errors:
            print(err)
        print(f"{args.config}: {len(exc.errors)} error(s)", file=sys.stderr)
        return 2
    print(f"{args.config}: ok (device profile, kind {device.kind})")
    report = plan_report(device) if args.plan else None
    if report is not None:
        print(report)
    return 0


def _print_models(deployment: Deployment) -> None:
    """Which file each pipeline will run: a pipeline without `variant` takes the manifest's default, which a new
    model version may change, so `validate` says it."""
    from edge_runtime.inference import ModelError, read_manifest, resolve_model_dir

    for p in deployment.pipelines:
        try:  # validate_file has read it already; a folder changed since is refused at start-up, as ever
            manifest = read_manifest(resolve_model_dir(p.model.name))
            variant = manifest.variant_or_default(p.model.variant)
            file = manifest.file_of(variant)[0]
        except (ModelError, KeyError):
            continue
        how = "" if p.model.variant else ", the manifest's default"
        print(f"  pipeline {p.id}: {manifest.name} {manifest.version}, variant {variant} ({file}{how})")


def _cmd_validate(args: argparse.Namespace) -> int:
    from edge_runtime.config import is_device_profile, validate_file
    from edge_runtime.yamlsrc import Problem

    if is_device_profile(args.config):
        return _validate_profile(args)
    warnings: list[Problem] = []
    deployment, errors = validate_file(args.config, warnings)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if deployment is None:
        for err in errors:
            print(err)
        print(f"{args.config}: {len(errors)} error(s)", file=sys.stderr)
        return 2
    print(
        f"{args.config}: ok ({len(deployment.devices)} devices, {len(deployment.pipelines)} pipelines, "
        f"{len(deployment.sinks)} sinks)"
    )
    _print_models(deployment)
    if args.plan:
        from adapters.registry import plan_report

        for device in deployment.devices:
            report = plan_report(device)
            if report is not None:
                print(report)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from edge_runtime.config import Deployment

    print(json.dumps(Deployment.model_json_schema(), indent=2))
    return 0


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def _cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.config import ConfigError, load_deployment
    from edge_runtime.inference import ModelError
    from edge_runtime.logs import setup_logging
    from edge_runtime.service import Service

    try:
        deployment = load_deployment(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(deployment.service.log_level)
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    service = Service(deployment, base_dir=Path(state) if state else Path.cwd(), config_dir=Path(args.config).parent)
    try:
        service.load()
    except ModelError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 3

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        reloads: set[asyncio.Task[bool]] = set()  # held until done (the loop keeps only weak references)

        def reload() -> None:  # SIGHUP (`systemctl reload`): validated first, applied without a stop
            task = asyncio.get_running_loop().create_task(service.reload_file(args.config))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
        await service.run(stop)

    from edge_runtime.outbox import OutboxError

    try:
        asyncio.run(main())
    except OutboxError as exc:  # an unwritable outbox path: a config fault, so exit 2 (no restart loop)
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the service's task group failed: say what, once, in the log's format
        causes = exc.exceptions if isinstance(exc, BaseExceptionGroup) else [exc]
        for cause in causes:
            logging.getLogger("edge_runtime.service").critical("event=service_failed error=%r", cause)
        return 1
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from edge_runtime.config import ConfigError, load_deployment
    from edge_runtime.logs import setup_logging
    from edge_runtime.recorder import record

    try:
        level = load_deployment(args.config).service.log_level
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(level)

    async def main() -> dict[str, Any]:
        stop = asyncio.Event()
        _install_stop(stop)
        return await record(Path(args.config), Path(args.out), seconds=args.seconds, stop=stop)

    trailer = asyncio.run(main())
    if trailer["error"]:
        print(f"edge-runtime record: writing {args.out} failed: {trailer['error']} (kept up to there)", file=sys.stderr)
        return 1
    devices = ", ".join(f"{d or '?'} {n}" for d, n in sorted(trailer["devices"].items())) or "none"
    print(
        f"wrote {args.out}: {trailer['samples']} samples ({devices}), {trailer['file_bytes'] / 1e6:.1f} MB "
        f"({trailer['raw_bytes'] / max(1, trailer['file_bytes']):.1f}x compressed), stopped by {trailer['stopped_by']}"
    )
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from adapters.base import Result, dumps
    from edge_runtime.logs import setup_logging
    from edge_runtime.recorder import Recording, compare_results, parse_speed, replay

    try:
        speed = parse_speed(args.speed)
    except ValueError as exc:
        print(f"edge-runtime replay: {exc}", file=sys.stderr)
        return 2
    if args.info:
        print(json.dumps(Recording(Path(args.recording)).summary(), indent=1))
        return 0
    setup_logging("warning")
    baseline: list[dict[str, Any]] = []
    if args.against:
        with Path(args.against).open(encoding="utf-8") as f:
            baseline = [json.loads(line) for line in f if line.strip()]
    mine: list[dict[str, Any]] = []
    with contextlib.ExitStack() as files:
        out = files.enter_context(Path(args.out).open("w", encoding="utf-8")) if args.out else None

        def on_result(result: Result) -> None:
            row = result.to_json()
            if out is not None:
                out.write(dumps(row) + "\n")
            if args.against:
                mine.append(row)

        summary = asyncio.run(
            replay(
                Path(args.recording),
                config=Path(args.config) if args.config else None,
                speed=speed,
                on_result=on_result,
            )
        )
    print(json.dumps(summary, indent=1))
    if args.against:
        print(json.dumps({"against": args.against, **compare_results(baseline, mine)}, indent=1))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge_runtime.tools.demo import run_demo

    return run_demo(seconds=args.seconds, data_dir=args.data)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f} %"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from edge_runtime.tasks import evaluator

    data = Path(args.data)
    if not data.is_dir():
        print(f"edge-runtime evaluate: --data {data}: not a directory", file=sys.stderr)
        return 2
    options: dict[str, Any] = {"declared": args.declared} if args.declared else {}
    if args.size_prior == "off":
        if args.model != "rice_sorter":
            print("edge-runtime evaluate: --size-prior is a rice_sorter option", file=sys.stderr)
            return 2
        options["size_prior"] = False
    if args.work_scale is not None:
        if args.model != "rice_sorter":
            print("edge-runtime evaluate: --work-scale is a rice_sorter option", file=sys.stderr)
            return 2
        options["work_scale"] = args.work_scale
    if args.flip_average is not None:
        if args.model != "weld_inspector":
            print("edge-runtime evaluate: --flip-average is a weld_inspector option", file=sys.stderr)
            return 2
        from edge_runtime.tasks.weld_inspector import WeldInspectorConfig

        options["config"] = WeldInspectorConfig(kind="weld_inspector", flip_average=args.flip_average == "on")
    compensate = args.compensation == "on" or (args.compensation is None and args.calibration is not None)
    if compensate:
        from edge_runtime.tools.evaluate.cold import compensation_for

        if args.calibration is None:
            print("edge-runtime evaluate: --compensation on needs --calibration FILE", file=sys.stderr)
            return 2
        options["compensate"] = compensation_for(args.model, Path(args.calibration), args.ambient_c)
    report = evaluator(args.model)(data, variant=args.variant, **options)
    report["compensation"] = {"applied": compensate, "calibration": args.calibration, "ambient_c": args.ambient_c}
    if args.json:
        from adapters.base import dumps

        print(dumps(report))  # JSON has no NaN: an undefined ratio is written as null
    else:
        for key, value in report.items():
            if key not in ("confusion", "per_class", "per_recording", "eject_by_declared_variety"):
                print(f"{key}: {value}")
        print("per_class:")
        for label, row in report.get("per_class", {}).items():
            print(f"  {label}: {row}")
        eject = report.get("eject_by_declared_variety")
        if eject:
            print("eject precision / recall of off-type grains, per declared variety:")
            for label, row in eject.items():
                p, r = row["eject_precision"], row["eject_recall"]
                print(f"  {label}: {_pct(p)} / {_pct(r)} ({row['n_ejected']} ejected, {row['n_off_type']} off-type)")
        confusion = report.get("confusion")
        if confusion:
            print("confusion (rows = truth, columns = prediction):")
            print("  " + " " * 11 + " ".join(f"{c[:10]:>10}" for c in confusion["labels"]))  # over the counts
            for label, row in zip(confusion["labels"], confusion["matrix"], strict=False):
                print(f"  {label[:10]:>10} " + " ".join(f"{v:>10}" for v in row))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from edge_runtime.tools import calibrate

    out = Path(args.out)
    valid = tuple(args.valid_c) if args.valid_c else None
    if args.what == "optics":
        parts = [float(v) for v in args.reference.split(",")] if args.reference else None
        if parts is not None and len(parts) != 4:
            print("edge-runtime calibrate: --reference takes x,y,w,h (fractions of the frame)", file=sys.stderr)
            return 2
        ref = None if parts is None else (parts[0], parts[1], parts[2], parts[3])
        path = calibrate.calibrate_optics(
            Path(args.data),
            out,
            reference_c=args.reference_c if args.reference_c is not None else 20.0,
            valid_c=valid or (-40.0, 40.0),
            reference=ref,
            max_frames=args.max_frames,
        )
    elif args.what == "sensor":
        missing = [
            flag
            for flag, value in (
                ("--stream", args.stream),
                ("--reference-c", args.reference_c),
                ("--sensitivity-tc-pct-per-k", args.sensitivity_tc_pct_per_k),
                ("--offset-mg-per-k", args.offset_mg_per_k),
            )
            if value is None
        ]
        if missing:
            print(f"edge-runtime calibrate sensor: needs {', '.join(missing)}", file=sys.stderr)
            return 2
        path = calibrate.calibrate_sensor(
            args.stream,
            out,
            reference_c=args.reference_c,
            sensitivity_tc_pct_per_k=args.sensitivity_tc_pct_per_k,
            offset_mg_per_k=args.offset_mg_per_k,
            valid_c=valid or (-40.0, 60.0),
        )
    else:
        path = calibrate.calibrate_baseline(
            Path(args.data), out, ambient_c=args.reference_c if args.reference_c is not None else 20.0
        )
    print(f"wrote {path}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from edge_runtime.tools.simulate import run_simulator

    return run_simulator(Path(args.profile), port=args.port)


def _cmd_probe_order(args: argparse.Namespace) -> int:
    from adapters.modbus.probe import probe_order

    lines = asyncio.run(
        probe_order(args.host, args.port, args.device_id, args.table, args.register, args.expect, args.tolerance)
    )
    for line in lines:
        print(line)
    if not lines:
        print(f"no dtype/order decodes register {args.register} to {args.expect}", file=sys.stderr)
        return 1
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from edge_runtime.tools.bench import compare, run_bench

    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]))
    return run_bench(
        quick=args.quick,
        json_path=Path(args.json) if args.json else None,
        only=args.only,
        recording=Path(args.recording) if args.recording else None,
    )


def build_parser() -> argparse.ArgumentParser:
    from edge_runtime.tasks import TASKS

    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Edge AI inference runtime for factory equipment: adapters -> pipeline -> ONNX -> outbox -> sinks.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run a deployment as a service (foreground; systemd Type=notify)")
    p.add_argument("config", help="deployment YAML file")
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser(
        "validate",
        help="check a deployment file or a device profile; exit 0 if valid, 2 with FILE:LINE: path: why lines if not",
    )
    p.add_argument("config", help="deployment YAML file, or a device profile (a file with a top-level `kind`)")
    p.add_argument("--plan", action="store_true", help="also print the Modbus read plan of every Modbus device")
    p.set_defaults(fn=_cmd_validate)

    p = sub.add_parser("schema", help="print the JSON schema of the deployment file")
    p.set_defaults(fn=_cmd_schema)

    p = sub.add_parser(
        "demo",
        help="run the embedded demo: simulated machines on loopback, live results, a summary at the end",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="how long to run (default 30)")
    p.add_argument(
        "--data", default=None, help="CWRU-layout directory to replay (default ../shared/datasets/cwru_bearing)"
    )
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser("evaluate", help="accuracy of a shipped model on a labelled data directory")
    p.add_argument("model", choices=[k.name for k in TASKS], help="model name")
    p.add_argument("--data", required=True, help="data directory in the layout of the model's data set")
    p.add_argument(
        "--variant",
        help="model variant: fp32 or one the manifest lists (int8, ...); default: the manifest's default_variant",
    )
    p.add_argument("--declared", default=None, help="rice_sorter: the lot's declared variety (eject precision/recall)")
    p.add_argument(
        "--size-prior",
        choices=["on", "off"],
        default="on",
        help="rice_sorter: weigh the probabilities with grain size like the live task (default on)",
    )
    p.add_argument(
        "--work-scale",
        type=int,
        choices=[1, 2],
        default=None,
        help="rice_sorter: 2 finds the grains at half resolution, like the task's work_scale (default 1)",
    )
    p.add_argument(
        "--flip-average",
        choices=["on", "off"],
        default=None,
        help="weld_inspector: also run each frame mirrored and average the passes (default: the manifest's choice)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--ambient-c", type=float, default=None, help="the temperature tag's value while --data was taken")
    p.add_argument("--calibration", default=None, help="calibration file (from `calibrate`) for the compensation")
    p.add_argument(
        "--compensation",
        choices=["on", "off"],
        default=None,
        help="apply the compensation layers (default: on when --calibration is given)",
    )
    p.set_defaults(fn=_cmd_evaluate)

    p = sub.add_parser("calibrate", help="fit a calibration file (optics, sensor, baseline) for cold compensation")
    p.add_argument("what", choices=["optics", "sensor", "baseline"], help="which calibration")
    p.add_argument("--out", required=True, help="calibration YAML to write")
    p.add_argument("--data", default=None, help="optics: commissioning images; baseline: healthy recordings")
    p.add_argument("--stream", default=None, help="sensor: stream glob the entry applies to, e.g. 'line1.*.vib'")
    p.add_argument(
        "--reference-c",
        type=float,
        default=None,
        help="sensor: the datasheet's reference temperature; optics: the commissioning temperature (default 20); "
        "baseline: the recordings' ambient temperature when labels.csv has no ambient_c column",
    )
    p.add_argument("--sensitivity-tc-pct-per-k", type=float, default=None, help="sensor: sensitivity change, %%/K")
    p.add_argument("--offset-mg-per-k", type=float, default=None, help="sensor: DC offset change, mg/K")
    p.add_argument("--valid-c", type=float, nargs=2, default=None, metavar=("LO", "HI"), help="valid range, degC")
    p.add_argument("--reference", default=None, help="optics: x,y,w,h of a region of known colour (fractions)")
    p.add_argument("--max-frames", type=int, default=1500, help="optics: frames sampled from --data")
    p.set_defaults(fn=_cmd_calibrate)

    p = sub.add_parser("simulate", help="serve a device profile as a simulated machine on loopback")
    p.add_argument("profile", help="device profile YAML (configs/devices/*.yaml)")
    p.add_argument("--port", default=None, help="TCP port (Modbus TCP, OPC UA, MQTT broker) or serial device (RTU)")
    p.set_defaults(fn=_cmd_simulate)

    p = sub.add_parser(
        "probe-order", help="find which dtype and byte/word order decode a Modbus register to a known value"
    )
    p.add_argument("host", help="Modbus TCP host")
    p.add_argument("--port", type=int, default=502, help="TCP port (default 502)")
    p.add_argument("--device-id", type=int, default=1, help="unit id (default 1)")
    p.add_argument("--table", choices=["holding", "input"], default="holding", help="register table")
    p.add_argument("--register", type=int, required=True, help="first register address (0-based)")
    p.add_argument("--expect", type=float, required=True, help="the value shown on the machine's panel")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-3,
        help="accepted difference, relative to --expect (absolute below 1); default 0.001",
    )
    p.set_defaults(fn=_cmd_probe_order)

    p = sub.add_parser(
        "record", help="record every reading and frame of a deployment's devices to a file (for replay and bench)"
    )
    p.add_argument("config", help="deployment YAML file (its devices are run; pipelines and sinks are not)")
    p.add_argument("--out", required=True, help="recording file to write")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C or SIGTERM)")
    p.set_defaults(fn=_cmd_record)

    p = sub.add_parser(
        "replay", help="feed a recording through a deployment's pipelines (never its sinks) and report the results"
    )
    p.add_argument("recording", help="file written by `edge-runtime record`")
    p.add_argument("--config", default=None, help="replay through this deployment's pipelines (default: the recorded)")
    p.add_argument("--speed", default="max", help="`max` (default), `recorded`, or a factor of the recorded pace")
    p.add_argument("--out", default=None, help="write every result as one JSON line to this file")
    p.add_argument("--against", default=None, help="compare with the results of an earlier replay (its --out file)")
    p.add_argument("--info", action="store_true", help="print what the recording holds (counts, span) and exit")
    p.set_defaults(fn=_cmd_replay)

    p = sub.add_parser("bench", help="the integrators' perf suite (ratios against baselines, JSON)")
    p.add_argument("--quick", action="store_true", help="short runs")
    p.add_argument("--json", default=None, help="write the JSON report here (and FILE.md with plots beside it)")
    p.add_argument("--only", action="append", metavar="NAME", help="run the benchmarks whose name contains NAME")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print two reports side by side")
    p.add_argument(
        "--recording",
        default=None,
        metavar="FILE",
        help="run the end-to-end suites on this flight recording (edge-runtime record) instead of synthetic inputs",
    )
    p.set_defaults(fn=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from adapters.base import EdgeRuntimeError
    from edge_runtime.inference import ModelError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except KeyboardInterrupt:
        return 130
    except ModelError as exc:
        print(f"edge-runtime {args.command}: {exc}", file=sys.stderr)
        return 3
    except EdgeRuntimeError as exc:  # bad data directory, unreachable device, ...: one clear line, no traceback
        print(f"edge-runtime {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `edge-runtime schema | head`
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
