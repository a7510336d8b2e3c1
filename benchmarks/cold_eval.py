"""Nominal / cold / compensated table for docs/cold.md, with the current CLI, in one command.

For each data set and ambient temperature:
1. nominal: ``edge-runtime evaluate MODEL --data SRC --json`` on the clean set (or a subsample of it);
2. commissioning: the optics calibration is fitted on the clean set (`calibration.fit.fit_optics_dir`, what
   ``edge-runtime calibrate optics --data SRC`` will run); the sensor calibration is written from the degraded set's
   `sensor_datasheet.json` (what ``calibrate sensor --stream ... --reference-c ... --sensitivity-tc-pct-per-k ...
   --offset-mg-per-k ...`` writes);
3. cold: `benchmarks/cold_degrade.py` writes a degraded copy under the work directory; evaluate it;
4. compensated: every frame (recording) of the cold copy goes through the layers knowing only the frame, the
   calibration and the temperature tag: for images inside `evaluate --ambient-c T --calibration FILE` (the
   product's path; the layers' mean estimates are computed here for the summary), for vibration recordings
   written to a second copy that is evaluated.

Vibration also gets the velocity RMS (10 Hz-1 kHz, mm/s, mean over 1 s blocks and recordings), computed here with
`calibration.severity`, the function behind `evaluate --json`'s `velocity_rms_mm_s`.

    .venv/bin/python benchmarks/cold_eval.py --work /tmp/cold_eval --per-class 300 --temps -10 -30
    .venv/bin/python benchmarks/cold_eval.py --only vibration

Prints a Markdown table and writes `table.json` in the work directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cold_degrade

from calibration.files import OpticsCalibration, dump_calibration
from calibration.fit import fit_optics_dir, image_files, sensor_from_datasheet
from calibration.illumination import IlluminationDrift
from calibration.lens_fog import LensFogCompensation
from calibration.sensor_drift import SensitivityDrift
from calibration.severity import velocity_spectrum_rms

ROOT = Path(__file__).resolve().parents[1]
U8 = npt.NDArray[np.uint8]
DATASETS = ROOT.parent / "shared" / "datasets"
CLI = str(ROOT / ".venv" / "bin" / "edge-runtime")


def evaluate(model: str, data: Path, *extra: str, variant: str) -> dict[str, Any]:
    """The product's `evaluate --json` (last line of stdout); `extra` e.g. `--ambient-c -30 --calibration FILE`."""
    out = subprocess.run(
        [CLI, "evaluate", model, "--data", str(data), "--variant", variant, "--json", *extra],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"evaluate {model} {data} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def subsample_images(kind: str, src: Path, dst: Path, n: int | None, seed: int) -> Path:
    """A symlinked subsample (n per class for rice, n images for welds) so the nominal run sees the same images."""
    if not n:
        return src
    if dst.exists():
        return dst
    rng = np.random.default_rng(seed)
    if kind == "rice":
        for folder in sorted(p for p in src.iterdir() if p.is_dir()):
            files = sorted(folder.iterdir())
            (dst / folder.name).mkdir(parents=True)
            for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False)):
                (dst / folder.name / files[i].name).symlink_to(files[i])
    else:
        files = sorted((src / "images").iterdir())
        (dst / "images").mkdir(parents=True)
        (dst / "labels").mkdir()
        for name in ("data.yaml", "sources.csv"):
            (dst / name).symlink_to(src / name)
        for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False)):
            f = files[i]
            (dst / "images" / f.name).symlink_to(f)
            label = src / "labels" / (f.stem + ".txt")
            if label.exists():
                (dst / "labels" / label.name).symlink_to(label)
    return dst


def compensation_estimates(src: Path, cal: OpticsCalibration, ambient_c: float) -> dict[str, float]:
    """Mean estimates of both optics layers over the images of `src`, for the table's summary. The compensated
    figure itself comes from `evaluate --calibration` (the product's path), so no compensated copy is written."""
    import cv2

    fog, led = LensFogCompensation(cal), IlluminationDrift(cal)
    t_means, red = [], []
    for f in image_files(src):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        r = fog.apply(np.asarray(img, dtype=np.uint8))
        g = led.apply(r.image, ambient_c, r.clipped)
        t_means.append(r.estimate.transmission_mean)
        red.append(g.estimate.gains_bgr[2] / g.estimate.gains_bgr[1])
    return {"transmission_mean": float(np.mean(t_means)), "red_over_green_gain": float(np.mean(red))}


def velocity_table(data: Path) -> dict[str, float]:
    """Mean velocity RMS (mm/s, 10 Hz-1 kHz) over 1 s blocks, per recording."""
    out: dict[str, float] = {}
    with (data / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            with np.load(data / row["file"]) as npz:
                x = np.asarray(npz["de"], dtype=np.float64)
            fs = float(row["fs_hz"])
            n = int(fs)
            blocks = x[: len(x) // n * n].reshape(-1, n)
            out[row["file"]] = float(velocity_spectrum_rms(blocks, fs).mean())
    return out


def compensate_vibration(src: Path, dst: Path, cal_path: Path) -> None:
    """SensitivityDrift on every recording with its temperature tag (labels.csv `ambient_c`)."""
    import shutil

    from calibration.files import load_calibration

    cal = load_calibration(cal_path)
    assert cal.kind == "sensor"
    drift = SensitivityDrift(cal)
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "recordings").mkdir(parents=True)
    shutil.copy(src / "labels.csv", dst / "labels.csv")
    with (src / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            with np.load(src / row["file"]) as npz:
                arrays = {k: npz[k] for k in npz.files}
            temp = float(row["ambient_c"])
            for key in ("de", "fe"):
                if key in arrays:
                    arrays[key] = drift.apply(arrays[key], temp, f"cwru.{key}").samples
            np.savez(dst / row["file"], **arrays)


def run_images(kind: str, model: str, args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    name = {"rice": "rice_grains", "weld": "weld_photos"}[kind]
    work: Path = args.work
    src = subsample_images(kind, DATASETS / name, work / f"{kind}_clean", args.per_class, args.seed)
    nominal = evaluate(model, src, variant=args.variant)
    cal_path = work / f"{kind}_optics.yaml"
    t0 = time.time()
    # commissioning exactly as an integrator does it: `edge-runtime calibrate optics` on the clean set
    subprocess.run(
        [CLI, "calibrate", "optics", "--data", str(DATASETS / name), "--out", str(cal_path), "--max-frames",
         str(args.commissioning_frames)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    from calibration.files import load_calibration

    cal = load_calibration(cal_path)
    assert isinstance(cal, OpticsCalibration)
    print(f"# {kind}: optics calibration fitted in {time.time() - t0:.0f} s -> {cal_path}", flush=True)
    for temp in args.temps:
        tag = f"{kind}_m{abs(int(temp))}" if temp < 0 else f"{kind}_p{int(temp)}"
        cold_dir = work / tag
        if kind == "rice":
            cold_degrade.degrade_rice(src, cold_dir, temp, args.seed * 1000 + abs(int(temp)), None)
        else:
            cold_degrade.degrade_weld(src, cold_dir, temp, args.seed * 1000 + abs(int(temp)), None)
        cold = evaluate(model, cold_dir, variant=args.variant)
        est = compensation_estimates(cold_dir, cal, temp)
        # the compensated figure is the product's own path: evaluate with the calibration and the temperature tag
        comp = evaluate(model, cold_dir, "--ambient-c", str(temp), "--calibration", str(cal_path), variant=args.variant)
        keys = ["accuracy"] if kind == "rice" else ["frame_accuracy", "box_accuracy", "map50"]
        for key in keys:
            rows.append(
                {
                    "set": kind,
                    "metric": key,
                    "ambient_c": temp,
                    "n": nominal["n"],
                    "nominal": nominal[key],
                    "cold": cold[key],
                    "compensated": comp[key],
                    **est,
                }
            )
            print(json.dumps(rows[-1]), flush=True)


def run_vibration(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    work: Path = args.work
    src = DATASETS / "cwru_bearing"
    nominal = evaluate("vibration_anomaly", src, variant="fp32")
    v_nom = velocity_table(src)
    for temp in args.temps:
        for cold_start in (False, True):
            tag = f"vib_m{abs(int(temp))}" + ("_coldstart" if cold_start else "")
            cold_dir, comp_dir = work / tag, work / f"{tag}_comp"
            cold_degrade.degrade_vibration(src, cold_dir, temp, args.seed * 1000 + abs(int(temp)), None, cold_start)
            sheet = json.loads((cold_dir / "sensor_datasheet.json").read_text(encoding="utf-8"))
            cal_path = work / f"{tag}_sensor.yaml"
            dump_calibration(
                sensor_from_datasheet(
                    "cwru.*", sheet["reference_c"], sheet["sensitivity_tc_pct_per_k"], sheet["offset_mg_per_k"]
                ),
                cal_path,
            )
            compensate_vibration(cold_dir, comp_dir, cal_path)
            cold = evaluate("vibration_anomaly", cold_dir, variant="fp32")
            comp = evaluate("vibration_anomaly", comp_dir, variant="fp32")
            v_cold, v_comp = velocity_table(cold_dir), velocity_table(comp_dir)
            rel_cold = np.array([v_cold[k] / v_nom[k] - 1 for k in v_nom])
            rel_comp = np.array([v_comp[k] / v_nom[k] - 1 for k in v_nom])
            base = {"set": "vibration" + (" + cold start" if cold_start else ""), "ambient_c": temp, "n": nominal["n"]}
            for key in ("accuracy", "detection_accuracy"):
                rows.append(
                    {**base, "metric": key, "nominal": nominal[key], "cold": cold[key], "compensated": comp[key]}
                )
                print(json.dumps(rows[-1]), flush=True)
            rows.append(
                {
                    **base,
                    "metric": "velocity_rms_mm_s",
                    "nominal": float(np.mean(list(v_nom.values()))),
                    "cold": float(np.mean(list(v_cold.values()))),
                    "compensated": float(np.mean(list(v_comp.values()))),
                    "max_rel_err_cold": float(np.abs(rel_cold).max()),
                    "max_rel_err_compensated": float(np.abs(rel_comp).max()),
                    "datasheet": sheet,
                }
            )
            print(json.dumps(rows[-1]), flush=True)


def run_robustness(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Rice at the coldest temperature with the order of effects and the airlight's tint forced, one case at a time.

    In process, through the task's own `evaluate(degrade=...)` (the function behind the CLI): each image is degraded,
    JPEG-encoded like a camera's, and compensated, knowing only the frame, the calibration and the temperature.
    """
    import cv2

    from edge_runtime.tools.evaluate import rice_sorter

    work: Path = args.work
    src = subsample_images("rice", DATASETS / "rice_grains", work / "rice_robust", args.robust_per_class, args.seed)
    cal_path = work / "rice_optics.yaml"
    from calibration.files import load_calibration

    cal = load_calibration(cal_path) if cal_path.exists() else fit_optics_dir(DATASETS / "rice_grains", max_frames=600)
    assert isinstance(cal, OpticsCalibration)
    fog, led = LensFogCompensation(cal), IlluminationDrift(cal)
    temp = min(args.temps)
    nominal = rice_sorter.evaluate(src, variant=args.variant)["accuracy"]

    def make_cold(gain_first: bool, blur_first: bool, tinted: bool) -> Callable[[U8], U8]:
        rng = np.random.default_rng(args.seed)  # every case and both runs draw the same parameters

        def cold(img: U8) -> U8:
            out, _ = cold_degrade.degrade_image(
                img, temp, rng, gain_first=gain_first, blur_first=blur_first, tinted=tinted
            )
            _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 92])
            return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)

        return cold

    for gain_first in (True, False):
        for blur_first in (True, False):
            for tinted in (False, True):
                acc_cold = rice_sorter.evaluate(
                    src, variant=args.variant, degrade=make_cold(gain_first, blur_first, tinted)
                )["accuracy"]
                cold = make_cold(gain_first, blur_first, tinted)

                def comp(img: U8, cold: Callable[[U8], U8] = cold) -> U8:
                    r = fog.apply(cold(img))
                    return led.apply(r.image, temp, r.clipped).image

                acc_comp = rice_sorter.evaluate(src, variant=args.variant, degrade=comp)["accuracy"]
                case = (
                    f"gain {'before' if gain_first else 'after'} fog, blur {'before' if blur_first else 'after'} "
                    f"veil, {'tinted' if tinted else 'grey'} airlight"
                )
                rows.append(
                    {
                        "set": "rice robustness",
                        "metric": case,
                        "ambient_c": temp,
                        "n": 5 * args.robust_per_class,
                        "nominal": nominal,
                        "cold": acc_cold,
                        "compensated": acc_comp,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any, metric: str) -> str:
        if v is None:
            return "-"
        return f"{v:.4f}" if metric == "velocity_rms_mm_s" else f"{100 * v:.2f} %"

    lines = [
        "| set | metric | ambient | n | nominal | cold | compensated | compensated - nominal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metric"]
        if m == "velocity_rms_mm_s":
            worst = 100 * r["max_rel_err_compensated"]
            delta = f"{100 * (r['compensated'] / r['nominal'] - 1):+.2f} % (worst recording {worst:.2f} %)"
        elif r["nominal"] is None or r["compensated"] is None:
            delta = "-"
        else:
            delta = f"{100 * (r['compensated'] - r['nominal']):+.2f} pp"
        lines.append(
            f"| {r['set']} | {m} | {r['ambient_c']:g} degC | {r['n']} | {fmt(r['nominal'], m)} | "
            f"{fmt(r['cold'], m)} | {fmt(r['compensated'], m)} | {delta} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/cold_eval"))
    ap.add_argument("--temps", type=float, nargs="+", default=[-10.0, -30.0])
    ap.add_argument("--per-class", type=int, default=300, help="rice images per variety, weld images (0: all)")
    ap.add_argument("--commissioning-frames", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--variant",
        default="fp32",
        help="the rice and weld models' variant (default fp32: the files docs/cold.md was measured with; the "
        "manifests' default is int8 since rice 1.3.1 / weld 2.3.1)",
    )
    ap.add_argument("--only", choices=["rice", "weld", "vibration", "robustness"], nargs="*", default=None)
    ap.add_argument("--robust-per-class", type=int, default=100, help="rice images per variety, robustness cases")
    args = ap.parse_args(argv)
    if ROOT in args.work.resolve().parents:
        raise SystemExit("--work must lie outside the repository")
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    only = set(args.only or ["rice", "weld", "vibration", "robustness"])
    rows: list[dict[str, Any]] = []
    if "rice" in only:
        run_images("rice", "rice_sorter", args, rows)
    if "vibration" in only:
        run_vibration(args, rows)
    if "weld" in only:
        run_images("weld", "weld_inspector", args, rows)
    if "robustness" in only:
        run_robustness(args, rows)
    (args.work / "table.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
