"""Cold-hall degradation tool: writes a copy of a data set as a -10 or -30 degC line would record it.

Physics and ranges (the same as `docs/cold.md`; every parameter is drawn at random per item within its range, scaled
by a severity ``s = clip((20 - T) / 50, 0, 1)``, so -30 degC is s = 1 and -10 degC is s = 0.6):

Images (rice class folders, weld YOLO layout), per image, in an order drawn at random:
- lens fog: ``observed = true * t + A * (1 - t)``; ``t`` is a smooth random field (a linear gradient plus two to four
  broad Gaussian bumps) rescaled to ``[t_lo, t_hi]`` with ``t_lo ~ U(1 - 0.5 s, 1 - 0.25 s)`` and
  ``t_hi ~ U(t_lo + 0.05, 1)``; airlight ``A ~ U(0.70, 0.95)`` of full scale, grey or tinted (+-6 % per channel,
  half of the images);
- droplet blur: Gaussian, sigma ``~ U(0.3, 2.0) * s`` px, before or after the veil;
- LED gains: red ``1 + U(0.20, 0.32) s``, green ``1 + U(0.0, 0.08) s``, blue ``1 + U(0.0, 0.05) s``, applied to the
  scene only (light on the product) or to the whole observed frame (veil included);
- sensor noise sigma 1.0 grey level, 8-bit rounding and clipping, JPEG quality 92 (like a camera's).
Vibration (`labels.csv` + `recordings/*.npz`), per data set one sensor (a datasheet):
- sensitivity ``s(T) = 1 + tc / 100 * (T - 20)``, ``tc ~ U(0.05, 0.30)`` %/K; offset ``o(T) = k (T - 20)`` mg,
  ``k ~ U(-1, 1)`` mg/K; both written to `sensor_datasheet.json` (what a datasheet states, for `calibrate sensor`);
- optional cold-start broadband vibration (`--cold-start`): white noise band-limited to 0.5-5 kHz with RMS
  ``0.08 g * s * exp(-m / 15 min)``, ``m ~ U(0, 60)`` minutes since start per recording (column
  `minutes_since_start` in labels.csv).

Usage::

    python benchmarks/cold_degrade.py rice ../shared/datasets/rice_grains /tmp/rice_m30 --ambient-c -30 --seed 1
    python benchmarks/cold_degrade.py weld ../shared/datasets/weld_photos /tmp/weld_m30 --ambient-c -30
    python benchmarks/cold_degrade.py vibration ../shared/datasets/cwru_bearing /tmp/vib_m30 --ambient-c -30

`--per-class N` keeps N images per class (rice) or N images (weld) for quick runs. The tool never writes into the
source directory and refuses an output directory inside the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
REFERENCE_C = 20.0


def severity(ambient_c: float) -> float:
    return float(np.clip((REFERENCE_C - ambient_c) / 50.0, 0.0, 1.0))


def smooth_field(h: int, w: int, rng: np.random.Generator, lo: float, hi: float) -> F32:
    """A smooth random field over the frame rescaled to [lo, hi]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x /= w
    y /= h
    ang = rng.uniform(0, 2 * np.pi)
    f = np.cos(ang) * x + np.sin(ang) * y
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(-0.2, 1.2, size=2)
        r = rng.uniform(0.25, 0.7)
        f += rng.uniform(-1.5, 1.5) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    f = (f - f.min()) / max(1e-6, float(f.max() - f.min()))
    return np.asarray(lo + (hi - lo) * f, dtype=np.float32)


def degrade_image(
    img: U8,
    ambient_c: float,
    rng: np.random.Generator,
    *,
    gain_first: bool | None = None,
    blur_first: bool | None = None,
    tinted: bool | None = None,
) -> tuple[U8, dict[str, Any]]:
    """One frame through a cold lens and cold LEDs; returns the frame and the parameters drawn.

    The order of effects and the airlight's tint are drawn at random unless forced (robustness checks).
    """
    import cv2

    s = severity(ambient_c)
    h, w = img.shape[:2]
    x = img.astype(np.float32)
    t_lo = rng.uniform(1 - 0.5 * s, 1 - 0.25 * s)
    t_hi = rng.uniform(min(1.0, t_lo + 0.05), 1.0)
    t = smooth_field(h, w, rng, t_lo, t_hi)[..., None]
    a = rng.uniform(0.70, 0.95) * 255.0
    tint_draw = bool(rng.random() < 0.5)
    tint = rng.uniform(0.94, 1.06, size=3) if (tint_draw if tinted is None else tinted) else np.ones(3)
    airlight = np.minimum(a * tint, 255.0).astype(np.float32)
    gains = np.array(
        [1 + rng.uniform(0.0, 0.05) * s, 1 + rng.uniform(0.0, 0.08) * s, 1 + rng.uniform(0.20, 0.32) * s],
        dtype=np.float32,
    )  # B, G, R
    sigma = rng.uniform(0.3, 2.0) * s
    gain_draw, blur_draw = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    gain_first = gain_draw if gain_first is None else gain_first
    blur_first = blur_draw if blur_first is None else blur_first
    if gain_first:
        x = x * gains
    if blur_first and sigma > 0.05:
        x = np.asarray(cv2.GaussianBlur(x, (0, 0), sigma), dtype=np.float32)
    x = x * t + airlight * (1 - t)
    if not blur_first and sigma > 0.05:
        x = np.asarray(cv2.GaussianBlur(x, (0, 0), sigma), dtype=np.float32)
    if not gain_first:
        x = x * gains
    x = x + rng.normal(0.0, 1.0, size=x.shape).astype(np.float32)
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    params = {
        "t_lo": round(float(t_lo), 3),
        "t_hi": round(float(t_hi), 3),
        "t_mean": round(float(t.mean()), 3),
        "airlight_bgr": [round(float(v), 1) for v in airlight],
        "gains_bgr": [round(float(v), 3) for v in gains],
        "blur_sigma": round(float(sigma), 2),
        "gain_first": gain_first,
        "blur_first": blur_first,
    }
    return out, params


def _write_jpeg(path: Path, img: U8) -> None:
    import cv2

    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f"cannot write {path}")


def _check_out(out: Path, src: Path) -> None:
    out = out.resolve()
    repo = Path(__file__).resolve().parents[1]
    if out == src.resolve() or src.resolve() in out.parents or repo in out.parents:
        raise SystemExit(f"refusing to write {out}: inside the source data set or the repository")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def degrade_rice(src: Path, out: Path, ambient_c: float, seed: int, per_class: int | None) -> None:
    import cv2

    _check_out(out, src)
    rng = np.random.default_rng(seed)
    log = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
        if per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), min(per_class, len(files)), replace=False))]
        (out / folder.name).mkdir()
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            deg, params = degrade_image(np.asarray(img, dtype=np.uint8), ambient_c, rng)
            _write_jpeg(out / folder.name / (f.stem + ".jpg"), deg)
            log.append({"file": f"{folder.name}/{f.stem}.jpg", **params})
    _write_log(out, ambient_c, seed, log)


def degrade_weld(src: Path, out: Path, ambient_c: float, seed: int, per_class: int | None) -> None:
    import cv2

    _check_out(out, src)
    rng = np.random.default_rng(seed)
    (out / "images").mkdir()
    (out / "labels").mkdir()
    for name in ("data.yaml", "sources.csv"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    files = sorted(f for f in (src / "images").iterdir() if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if per_class:
        files = [files[i] for i in sorted(rng.choice(len(files), min(per_class, len(files)), replace=False))]
    log = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        deg, params = degrade_image(np.asarray(img, dtype=np.uint8), ambient_c, rng)
        _write_jpeg(out / "images" / (f.stem + ".jpg"), deg)
        label = src / "labels" / (f.stem + ".txt")
        if label.exists():
            shutil.copy(label, out / "labels" / label.name)
        log.append({"file": f"images/{f.stem}.jpg", **params})
    _write_log(out, ambient_c, seed, log)


def bandlimited_noise(n: int, fs_hz: float, lo_hz: float, hi_hz: float, rng: np.random.Generator) -> F32:
    """Unit-RMS white noise restricted to [lo_hz, hi_hz] (FFT mask)."""
    spec = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1.0 / fs_hz)
    spec[(f < lo_hz) | (f > hi_hz)] = 0
    x = np.fft.irfft(spec, n)
    return (x / max(1e-12, float(np.sqrt(np.mean(x * x))))).astype(np.float32)


def degrade_vibration(
    src: Path, out: Path, ambient_c: float, seed: int, per_class: int | None, cold_start: bool
) -> None:
    _check_out(out, src)
    rng = np.random.default_rng(seed)
    s_coef = float(rng.uniform(0.05, 0.30))  # %/K
    o_coef = float(rng.uniform(-1.0, 1.0))  # mg/K
    dt = ambient_c - REFERENCE_C
    sens = 1.0 + s_coef / 100.0 * dt
    offset_g = o_coef * dt / 1000.0
    with (src / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if per_class:
        by_fault: dict[str, list[dict[str, str]]] = {}
        for r in rows:
            by_fault.setdefault(r["fault"], []).append(r)
        rows = [r for group in by_fault.values() for r in group[:per_class]]
    (out / "recordings").mkdir()
    fields = [*rows[0].keys(), "ambient_c", "minutes_since_start"]
    for r in rows:
        with np.load(src / r["file"]) as npz:
            arrays = {k: npz[k] for k in npz.files}
        fs = float(r.get("fs_hz") or arrays["fs_hz"])
        minutes = float(rng.uniform(0.0, 60.0))
        for key in ("de", "fe"):
            if key not in arrays:
                continue
            x = np.asarray(arrays[key], dtype=np.float32).ravel()
            if cold_start:
                amp = 0.08 * severity(ambient_c) * np.exp(-minutes / 15.0)
                x = x + amp * bandlimited_noise(len(x), fs, 500.0, min(5000.0, 0.45 * fs), rng)
            arrays[key] = (x * sens + offset_g).astype(np.float32)
        target = out / r["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, **arrays)
        r["ambient_c"] = str(ambient_c)
        r["minutes_since_start"] = f"{minutes:.1f}" if cold_start else ""
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    datasheet = {"reference_c": REFERENCE_C, "sensitivity_tc_pct_per_k": s_coef, "offset_mg_per_k": o_coef}
    (out / "sensor_datasheet.json").write_text(json.dumps(datasheet, indent=1), encoding="utf-8")
    _write_log(out, ambient_c, seed, [{"sensitivity": sens, "offset_g": offset_g, "cold_start": cold_start}])


def _write_log(out: Path, ambient_c: float, seed: int, items: list[dict[str, Any]]) -> None:
    # the parameters drawn, for audit only: the compensation never reads this file
    path = out.parent / f"{out.name}.degrade.json"
    path.write_text(json.dumps({"ambient_c": ambient_c, "seed": seed, "items": items}), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["rice", "weld", "vibration"])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--ambient-c", type=float, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-class", type=int, default=None, help="subsample: N items per class (weld: N images)")
    ap.add_argument("--cold-start", action="store_true", help="vibration: add the cold-start broadband vibration")
    args = ap.parse_args(argv)
    if args.kind == "rice":
        degrade_rice(args.src, args.out, args.ambient_c, args.seed, args.per_class)
    elif args.kind == "weld":
        degrade_weld(args.src, args.out, args.ambient_c, args.seed, args.per_class)
    else:
        degrade_vibration(args.src, args.out, args.ambient_c, args.seed, args.per_class, args.cold_start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
