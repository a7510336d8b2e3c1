"""Train the `vibration_anomaly` model (WDCNN-like 1D CNN) on the CWRU drive-end recordings and export it.

Run from the repository root with the `train` extra:

    .venv/bin/python models/training/train_vibration.py                 # train, export, manifest, print metrics
    .venv/bin/python models/training/train_vibration.py --mode lolo     # leave-one-load-out check, prints figures
    .venv/bin/python models/training/train_vibration.py --write-excerpt # bundled excerpt from validation data

Windows come from `edge_runtime.tasks.vibration_anomaly.windows_of` (the pipeline's cut + FFT resample), so
training, `edge-runtime evaluate` and the live pipeline see identical inputs. Validation is split by recording;
the only healthy recording is split into a head (training) and a contiguous tail block (validation).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import yaml
from torch import nn

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge_runtime.dsp import windows_of  # noqa: E402
from edge_runtime.tools.datasets import Recording, read_recordings  # noqa: E402

LABELS = ["normal", "ball", "inner_race", "outer_race"]
PRE: dict[str, Any] = {"rate_hz": 12000, "window": 2048, "hop": 1024, "input_unit": "g", "channel": "drive_end"}
SPANS = (0.96, 0.98, 1.0, 1.02, 1.04)  # speed augmentation: 1720-1797 rpm is +-2.2 % around the middle
HOP_FAULT, HOP_NORMAL = 512, 32  # training hops (model samples); the scarce healthy data is cut densely
NORMAL_VAL_FRACTION = 0.25
ANOMALY_THRESHOLD = 0.5
CITATION = (
    "Case Western Reserve University Bearing Data Center (https://engineering.case.edu/bearingdatacenter); "
    "W.A. Smith, R.B. Randall, 'Rolling element bearing diagnostics using the Case Western Reserve University "
    "data: A benchmark study', Mechanical Systems and Signal Processing 64-65 (2015) 100-131."
)


class WindowNet(nn.Module):
    """Per-window standardisation in the graph, a wide strided first kernel (WDCNN), global pooling.

    The window's log RMS joins the pooled features: amplitude matters to a vibration engineer, but the
    classifier is trained with a 0.6-1.6x gain spread so that a drifting sensor sensitivity cannot flip it alone.
    """

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2 if stride == 1 else (k - stride) // 2),
                nn.BatchNorm1d(c_out),
                nn.ReLU(),
                nn.MaxPool1d(2),
            )

        self.features = nn.Sequential(
            block(1, 16, 64, stride=8),  # 2048 -> 256 -> 128
            block(16, 32, 3),  # 64
            block(32, 64, 3),  # 32
            block(64, 64, 3),  # 16
            block(64, 64, 3),  # 8
        )
        self.head = nn.Sequential(nn.Linear(65, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, len(LABELS)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        rms = torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + 1e-12).clamp(min=1e-3)
        z = self.features(centred / rms).mean(dim=-1)
        out: torch.Tensor = self.head(torch.cat([z, torch.log(rms[:, 0])], dim=1))
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(self.logits(x), dim=1)
        return probs, 1.0 - probs[:, 0]


# ---------------------------------------------------------------------------------------------------- data


def split(recs: Sequence[Recording]) -> tuple[list[Recording], list[Recording]]:
    """By recording: one recording per (rate, load, fault) goes to validation, rotating the fault size across
    loads so each size is still seen at other loads; the healthy recording is split head / tail block."""
    train: list[Recording] = []
    val: list[Recording] = []
    groups: dict[tuple[float, int, str], list[Recording]] = {}
    for r in recs:
        if r.fault == "normal":
            cut = int(len(r.signal) * (1 - NORMAL_VAL_FRACTION))
            train.append(_part(r, r.signal[:cut], "head"))
            val.append(_part(r, r.signal[cut:], "tail"))
        else:
            groups.setdefault((r.fs_hz, r.load_hp or 0, r.fault), []).append(r)
    for (_, load, fault), group in sorted(groups.items()):
        group.sort(key=lambda r: r.source)
        pick = (load + LABELS.index(fault)) % len(group)
        for i, r in enumerate(group):
            (val if i == pick else train).append(r)
    return train, val


def _part(r: Recording, signal: npt.NDArray[np.float32], tag: str) -> Recording:
    return Recording(f"{r.source}#{tag}", signal, r.fs_hz, r.fault, r.load_hp, r.rpm)


def train_windows(recs: Sequence[Recording]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    xs, ys = [], []
    for r in recs:
        hop = HOP_NORMAL if r.fault == "normal" else HOP_FAULT
        for span in SPANS:
            w = windows_of(r.signal, r.fs_hz, PRE, hop, span=span)
            xs.append(w)
            ys.append(np.full(len(w), LABELS.index(r.fault)))
    return np.concatenate(xs), np.concatenate(ys)


def eval_windows(
    recs: Sequence[Recording],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    xs, ys, loads = [], [], []
    for r in recs:
        w = windows_of(r.signal, r.fs_hz, PRE)
        xs.append(w)
        ys.append(np.full(len(w), LABELS.index(r.fault)))
        loads.append(np.full(len(w), r.load_hp or 0))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(loads)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Cold-weather sensor effects: sensitivity drift (gain), polarity, bias offset, broadband noise."""
    n = x.shape[0]
    gain = torch.exp(torch.empty(n, 1, 1).uniform_(np.log(0.6), np.log(1.6), generator=gen))
    sign = torch.where(torch.rand(n, 1, 1, generator=gen) < 0.5, -1.0, 1.0)
    offset = torch.empty(n, 1, 1).uniform_(-0.1, 0.1, generator=gen)
    rms = x.std(dim=-1, keepdim=True)
    snr = torch.empty(n, 1, 1).uniform_(0.0, 0.1, generator=gen)
    noise = torch.randn(x.shape, generator=gen) * (rms * snr + 0.002)
    return (x * gain + noise) * sign + offset


# ---------------------------------------------------------------------------------------------------- training


def fit(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], *, epochs: int, per_class: int, seed: int) -> WindowNet:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = WindowNet()
    steps_per_epoch = (per_class * len(LABELS) + 127) // 128
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    by_class = [np.flatnonzero(y == c) for c in range(len(LABELS))]
    xt = torch.from_numpy(x)
    for epoch in range(epochs):
        model.train()
        idx = np.concatenate([rng.choice(ix, per_class) for ix in by_class if len(ix)])
        rng.shuffle(idx)
        t0, total, hits = time.perf_counter(), 0.0, 0
        for s in range(0, len(idx), 128):
            b = torch.from_numpy(idx[s : s + 128])
            xb = augment(xt[b].unsqueeze(1), gen)
            yb = torch.from_numpy(y[idx[s : s + 128]])
            logits = model.logits(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            hits += int((logits.argmax(1) == yb).sum())
        print(
            f"epoch {epoch + 1}/{epochs} loss={total / len(idx):.4f} train_acc={hits / len(idx):.4f} "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    model.eval()
    return model


def predict(model: WindowNet, x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    probs, anomaly = [], []
    with torch.no_grad():
        for s in range(0, len(x), 512):
            p, a = model(torch.from_numpy(x[s : s + 512]).unsqueeze(1))
            probs.append(p.numpy())
            anomaly.append(a.numpy())
    return np.concatenate(probs), np.concatenate(anomaly)


def metrics(
    probs: npt.NDArray[np.float32],
    anomaly: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    loads: npt.NDArray[np.int64],
) -> dict[str, Any]:
    pred = probs.argmax(1)
    matrix = np.zeros((len(LABELS), len(LABELS)), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)
    alarm = anomaly >= ANOMALY_THRESHOLD
    per_class = {
        lab: {
            "n": int(matrix[i].sum()),
            "recall": round(float(matrix[i, i] / max(1, matrix[i].sum())), 4),
            "precision": round(float(matrix[i, i] / max(1, matrix[:, i].sum())), 4),
        }
        for i, lab in enumerate(LABELS)
    }
    normal = y == 0
    return {
        "n": len(y),
        "accuracy": round(float((pred == y).mean()), 4),
        "detection_accuracy": round(float((alarm == ~normal).mean()), 4),
        "false_alarm_rate": round(float(alarm[normal].mean()), 4) if normal.any() else None,
        "missed_fault_rate": round(float((~alarm[~normal]).mean()), 4) if (~normal).any() else None,
        "per_load_accuracy": {int(k): round(float((pred == y)[loads == k].mean()), 4) for k in np.unique(loads)},
        "per_class": per_class,
        "confusion": {"labels": LABELS, "matrix": matrix.tolist()},
    }


# ---------------------------------------------------------------------------------------------------- export


def export(model: WindowNet, path: Path, check: npt.NDArray[np.float32]) -> None:
    import onnx
    import onnxruntime as ort

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(check[:4]).unsqueeze(1)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["x"],
        output_names=["probs", "anomaly"],
        dynamic_shapes={"x": {0: batch}},
        opset_version=18,
        dynamo=True,
        external_data=False,
    )
    graph = onnx.load(str(path))
    for value in [*graph.graph.input, *graph.graph.output]:  # name the free axis "batch" whatever the exporter did
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    for node in graph.graph.node:  # exporter stack traces hold absolute paths and line numbers: not reproducible
        node.ClearField("metadata_props")
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    sample = check[:: max(1, len(check) // 300)][:300]
    got_p, got_a = sess.run(["probs", "anomaly"], {"x": sample[:, None, :]})
    want_p, want_a = predict(model, sample)
    err = max(float(np.abs(got_p - want_p).max()), float(np.abs(got_a - want_a).max()))
    print(f"onnxruntime vs torch: max abs diff {err:.2e} over {len(sample)} windows")
    if err > 1e-4:
        raise SystemExit(f"exported model disagrees with torch (max abs diff {err})")


def run_onnx(path: Path, x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    probs, anomaly = [], []
    for s in range(0, len(x), 256):
        p, a = sess.run(["probs", "anomaly"], {"x": x[s : s + 256, None, :]})
        probs.append(p)
        anomaly.append(a)
    return np.concatenate(probs), np.concatenate(anomaly)


def drift_metrics(
    onnx_path: Path,
    val: list[Recording],
    xv: npt.NDArray[np.float32],
    yv: npt.NDArray[np.int64],
    lv: npt.NDArray[np.int64],
) -> dict[str, Any]:
    """Validation figures under a sensitivity drift (gain, +0.02 g bias) and a 3 % speed change."""
    out: dict[str, Any] = {}
    for gain in (0.7, 1.4):
        m = metrics(*run_onnx(onnx_path, xv * gain + 0.02), yv, lv)
        out[f"gain_{gain}"] = {k: m[k] for k in ("accuracy", "detection_accuracy", "false_alarm_rate")}
    xs, ys, ls = [], [], []
    for r in val:
        w = windows_of(r.signal, r.fs_hz, PRE, span=0.97)
        xs.append(w)
        ys.append(np.full(len(w), LABELS.index(r.fault)))
        ls.append(np.full(len(w), r.load_hp or 0))
    m = metrics(*run_onnx(onnx_path, np.concatenate(xs)), np.concatenate(ys), np.concatenate(ls))
    out["speed_0.97"] = {k: m[k] for k in ("accuracy", "detection_accuracy", "false_alarm_rate")}
    return out


def windows_per_second(path: Path, x: npt.NDArray[np.float32], batch: int = 64) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(x[:batch, None, :])}
    sess.run(None, feed)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 3.0:
        sess.run(None, feed)
        n += batch
    return n / (time.perf_counter() - t0)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(out: Path, val_metrics: dict[str, Any], args: argparse.Namespace, val: list[Recording]) -> None:
    onnx_path = out / "model.onnx"
    manifest = {
        "name": "vibration_anomaly",
        "version": "1.0.0",
        "file": "model.onnx",
        "sha256": sha256_of(onnx_path),
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 1, PRE["window"]]}],
        "outputs": [
            {"name": "probs", "dtype": "float32", "shape": ["batch", len(LABELS)]},
            {"name": "anomaly", "dtype": "float32", "shape": ["batch"]},
        ],
        "labels": LABELS,
        "thresholds": {"anomaly": ANOMALY_THRESHOLD},
        "preprocessing": {
            **PRE,
            "resample": "edge_runtime.dsp.resample_windows (FFT) of round(window * fs / rate_hz) source samples",
            "normalisation": "in graph: per-window mean removal and RMS scaling; log RMS is a feature",
        },
        "training": {
            "data": "../shared/datasets/cwru_bearing (drive-end channel `de`, g; 12 kHz loads 0-2 hp, 48 kHz 0 hp)",
            "citation": CITATION,
            "split": (
                "by recording: one recording per (rate, load, fault) held out for validation, fault size rotating "
                "across loads; exception: the only healthy recording (normal_0_97_head, 48 kHz) is split into "
                f"its first {1 - NORMAL_VAL_FRACTION:.0%} (training) and its last {NORMAL_VAL_FRACTION:.0%} "
                "(validation) as contiguous time blocks"
            ),
            "validation_recordings": sorted(r.source for r in val),
            "augmentation": "speed span 0.96-1.04, gain 0.6-1.6x, polarity, offset +-0.1 g, noise up to -20 dB",
            "seed": args.seed,
            "epochs": args.epochs,
            "script": "models/training/train_vibration.py",
            "framework": f"torch {torch.__version__} (CPU, 1 thread)",
        },
        "metrics": {"validation": val_metrics},
    }

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text = yaml.dump(manifest, Dumper=_NoAliases, sort_keys=False, width=120)
    (out / "model.yaml").write_text(
        "# Written by models/training/train_vibration.py; see CARD.md. Do not edit by hand.\n" + text, encoding="utf-8"
    )


def write_excerpt(val: list[Recording], path: Path) -> None:
    """A few seconds per class from validation recordings (unseen by the model) for installs without data."""
    chosen: list[tuple[Recording, float]] = []
    for fault in LABELS:
        if fault == "normal":
            r = next(r for r in val if r.fault == "normal")
            chosen.append((r, 2.5))
        else:
            r = next(r for r in val if r.fault == fault and r.fs_hz == 12000 and r.load_hp == 1)
            chosen.append((r, 3.0))
    chosen.append((next(r for r in val if r.fault == "inner_race" and r.fs_hz == 48000), 1.0))
    arrays: dict[str, Any] = {"count": np.array(len(chosen))}
    for i, (r, seconds) in enumerate(chosen):
        arrays[f"signal_{i}"] = r.signal[: int(seconds * r.fs_hz)].astype(np.float16)
    arrays["source"] = np.array([r.source for r, _ in chosen])
    arrays["fs_hz"] = np.array([r.fs_hz for r, _ in chosen])
    arrays["fault"] = np.array([r.fault for r, _ in chosen])
    arrays["load_hp"] = np.array([r.load_hp or 0 for r, _ in chosen])
    arrays["rpm"] = np.array([r.rpm or 0.0 for r, _ in chosen])
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): {[(r.source, s) for r, s in chosen]}")


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "cwru_bearing")
    p.add_argument("--out", type=Path, default=REPO / "models" / "vibration_anomaly")
    p.add_argument("--mode", choices=["final", "lolo"], default="final")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--per-class", type=int, default=3000, help="windows drawn per class per epoch")
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--write-excerpt", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()

    recs = read_recordings(args.data)
    train, val = split(recs)
    if args.write_excerpt:
        write_excerpt(val, REPO / "edge_runtime" / "data" / "cwru_excerpt.npz")
        return

    if args.mode == "lolo":
        results = {}
        for held in (0, 1, 2):
            tr = [r for r in recs if r.fault != "normal" and r.load_hp != held]
            te = [r for r in recs if r.fault != "normal" and r.load_hp == held]
            normal_train, normal_test = split([r for r in recs if r.fault == "normal"])
            tr += normal_train
            te += normal_test
            x, y = train_windows(tr)
            model = fit(x, y, epochs=args.epochs, per_class=args.per_class, seed=args.seed)
            xv, yv, lv = eval_windows(te)
            results[f"held_out_load_{held}hp"] = metrics(*predict(model, xv), yv, lv)
            print(f"LOLO held-out {held} hp:", json.dumps(results[f"held_out_load_{held}hp"]), flush=True)
        print(json.dumps(results, indent=1))
        print(f"wall time {time.perf_counter() - t_start:.0f}s")
        return

    print(f"train recordings {len(train)}, validation {len(val)}: {sorted(r.source for r in val)}")
    x, y = train_windows(train)
    print(f"train windows {len(x)} per class {np.bincount(y).tolist()}", flush=True)
    model = fit(x, y, epochs=args.epochs, per_class=args.per_class, seed=args.seed)
    xv, yv, lv = eval_windows(val)
    onnx_path = args.out / "model.onnx"
    export(model, onnx_path, xv)
    val_metrics = metrics(*run_onnx(onnx_path, xv), yv, lv)
    tail = next(r for r in val if r.fault == "normal")
    dense = windows_of(tail.signal, tail.fs_hz, PRE, 128)
    val_metrics["normal_tail_hop128"] = {
        "n": len(dense),
        "false_alarm_rate": round(float((run_onnx(onnx_path, dense)[1] >= ANOMALY_THRESHOLD).mean()), 4),
    }
    val_metrics["sensor_drift"] = drift_metrics(onnx_path, val, xv, yv, lv)
    val_metrics["windows_per_s_batch64_1thread"] = round(windows_per_second(onnx_path, xv))
    val_metrics["model_bytes"] = onnx_path.stat().st_size
    val_metrics["parameters"] = sum(p.numel() for p in model.parameters())
    print("validation (onnxruntime):", json.dumps(val_metrics, indent=1))
    write_manifest(args.out, val_metrics, args, val)
    print(f"wrote {args.out}/model.onnx, model.yaml; wall time {time.perf_counter() - t_start:.0f}s")


if __name__ == "__main__":
    main()
