"""Train `weld_inspector`: a small fully-convolutional grid model with a frame head, from scratch.

The model reads a uint8 BGR image (resized to 256x256, NHWC, no other preprocessing: the cast, scaling and
layout change are inside the graph) and returns per-cell class probabilities on a 32x32 grid (one cell = 8x8
input pixels): [background, bad_weld, good_weld, defect], and `reject`, the probability that the part is to be
rejected, from a frame head on the pooled deepest features and the pooled per-cell bad evidence (trained on
that decision directly, since the line acts on it). Cell targets are painted from the YOLO boxes, larger boxes
first so that a `defect` box nested in a `bad_weld` box keeps its own class; a cell's target is the share of
its area each class covers (soft labels), so small boxes still leave a mark.

The split is by `sources.csv` (a video's frames and a photo's Roboflow copies are near-duplicates): one whole
video and a quarter of the photo sources are held out for validation; a further 20 % of the training photo
sources are held out of the fit to tune the thresholds on sources the model has not seen. Evaluation of the
exported fp32 and int8 files goes through `edge_runtime.tasks.weld_inspector.evaluate`, the same code as
`edge-runtime evaluate`.

Run from the repo root (the `train` extra; two torch threads, ~20 min). `--out` defaults to the shipped
directory; the held-out run's figures are the validation metrics::

    .venv/bin/python models/training/train_weld.py --lr 6e-3 --epochs 400 --max-minutes 18
    .venv/bin/python models/training/train_weld.py --all-sources   # optional final fit, keeps held-out figures
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantize import quantize_int8, sha256_of  # noqa: E402

LABELS = ["bad_weld", "good_weld", "defect"]
INPUT = 256
STRIDE = 8
GRID = INPUT // STRIDE
CACHE = 384  # images are cached at this size; crops are taken from it
VAL_VIDEOS = ("SampleV1_2_mp4",)
VAL_PHOTO_SHARE = 0.25


# ---------------------------------------------------------------- data


def read_boxes(path: Path) -> np.ndarray:
    """YOLO label file -> (n, 5) float32 [class, x0, y0, x1, y1] normalised."""
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    out = np.zeros((len(rows), 5), np.float32)
    for i, (c, cx, cy, w, h) in enumerate(rows):
        cxf, cyf, wf, hf = float(cx), float(cy), float(w), float(h)
        out[i] = (int(c), cxf - wf / 2, cyf - hf / 2, cxf + wf / 2, cyf + hf / 2)
    return out


def split_sources(data: Path, seed: int) -> tuple[list[str], list[str], dict[str, str]]:
    with (data / "sources.csv").open() as fh:
        src = {r["image"]: r["source"] for r in csv.DictReader(fh)}
    photos = sorted({s for s in src.values() if not s.endswith("_mp4")})
    rng = np.random.default_rng(seed)
    val_photos = set(rng.choice(photos, size=round(len(photos) * VAL_PHOTO_SHARE), replace=False).tolist())
    val_sources = val_photos | set(VAL_VIDEOS)
    train = sorted(k for k, s in src.items() if s not in val_sources)
    val = sorted(k for k, s in src.items() if s in val_sources)
    return train, val, src


def imread(path: Path) -> npt.NDArray[np.uint8]:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"{path}: cannot decode image")
    return np.asarray(img, dtype=np.uint8)


def load_images(data: Path, names: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    imgs = np.zeros((len(names), CACHE, CACHE, 3), np.uint8)
    boxes = []
    for i, n in enumerate(names):
        imgs[i] = cv2.resize(imread(data / "images" / n), (CACHE, CACHE), interpolation=cv2.INTER_AREA)
        boxes.append(read_boxes(data / "labels" / (Path(n).stem + ".txt")))
    return imgs, boxes


def augment(
    img: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, size: int = INPUT
) -> tuple[np.ndarray, np.ndarray]:
    """Random zoom/crop/pad, flips, quarter turns, colour and blur/noise; returns a size x size image and boxes."""
    # geometry: output pixel = s * source_normalised * size + t
    zoom = float(np.exp(rng.uniform(np.log(0.75), np.log(1.6))))
    s = size * zoom
    span = size - s  # negative when zoomed in
    tx, ty = (rng.uniform(min(0, span), max(0, span)) for _ in range(2))
    m = np.array([[s / CACHE, 0, tx], [0, s / CACHE, ty]], np.float32)
    border = tuple(int(v) for v in rng.integers(0, 256, 3))
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=border)
    b = boxes.copy()
    b[:, [1, 3]] = b[:, [1, 3]] * s + tx
    b[:, [2, 4]] = b[:, [2, 4]] * s + ty
    area0 = (b[:, 3] - b[:, 1]) * (b[:, 4] - b[:, 2])
    b[:, 1:] = np.clip(b[:, 1:], 0, size)
    area1 = (b[:, 3] - b[:, 1]) * (b[:, 4] - b[:, 2])
    b = b[(area1 > 0.35 * np.maximum(area0, 1e-6)) & (area1 > 4)]
    if rng.random() < 0.5:
        out = out[:, ::-1]
        b[:, [1, 3]] = size - b[:, [3, 1]]
    if rng.random() < 0.3:
        out = out[::-1]
        b[:, [2, 4]] = size - b[:, [4, 2]]
    if rng.random() < 0.3:  # transpose: welds run in any direction
        out = out.transpose(1, 0, 2)
        b = b[:, [0, 2, 1, 4, 3]]
    out = np.ascontiguousarray(out).astype(np.float32)
    # photometric
    if rng.random() < 0.15:
        g = out.mean(axis=2, keepdims=True)
        out = np.repeat(g, 3, axis=2)
    else:
        out *= rng.uniform(0.8, 1.2, size=3).astype(np.float32)  # colour cast / white balance
    alpha = rng.uniform(0.6, 1.4)
    beta = rng.uniform(-40, 40)
    mean = out.mean()
    out = (out - mean) * alpha + mean + beta
    if rng.random() < 0.15:  # fog / glare: blend towards a flat grey
        w = rng.uniform(0.2, 0.5)
        out = out * (1 - w) + w * rng.uniform(120, 230)
    if rng.random() < 0.25:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.25:
        out += rng.normal(0, rng.uniform(2, 12), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), b


def plain(img: np.ndarray, boxes: np.ndarray, size: int = INPUT) -> tuple[np.ndarray, np.ndarray]:
    out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    b = boxes.copy()
    b[:, 1:] *= size
    return out, b


def targets(boxes: np.ndarray) -> np.ndarray:
    """Soft per-cell targets (4, GRID, GRID): painted largest box first, so nested boxes keep their class."""
    paint = np.zeros((INPUT, INPUT), np.int64)  # 0 background, 1+c class c
    order = np.argsort(-(boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2]))
    for c, x0, y0, x1, y1 in boxes[order]:
        xa, ya = round(float(x0)), round(float(y0))
        xb, yb = max(round(float(x1)), xa + 1), max(round(float(y1)), ya + 1)
        paint[ya:yb, xa:xb] = int(c) + 1
    onehot = np.eye(4, dtype=np.float32)[paint]  # (H, W, 4)
    t = onehot.reshape(GRID, STRIDE, GRID, STRIDE, 4).mean(axis=(1, 3)).transpose(2, 0, 1)
    # a box smaller than a cell still owns the cell holding its centre
    for c, x0, y0, x1, y1 in boxes[order]:
        gx = min(int((x0 + x1) / 2 // STRIDE), GRID - 1)
        gy = min(int((y0 + y1) / 2 // STRIDE), GRID - 1)
        if t[int(c) + 1, gy, gx] < 0.5:
            t[:, gy, gx] = 0
            t[int(c) + 1, gy, gx] = 1
    return np.ascontiguousarray(t)


# ---------------------------------------------------------------- model


def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DwSep(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, residual when shapes match."""

    def __init__(self, cin: int, cout: int, s: int = 1) -> None:
        super().__init__()
        self.dw = cbr(cin, cin, 3, s, groups=cin)
        self.pw = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.res = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return torch.relu(y + x if self.res else y)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsampling as a fixed depthwise transposed convolution: identical values, and unlike ONNX
    Resize it keeps the symbolic batch dimension through onnxruntime's shape inference (int8 pre-processing)."""
    ones = torch.ones(x.shape[1], 1, 2, 2, dtype=x.dtype)
    return nn.functional.conv_transpose2d(x, ones, stride=2, groups=x.shape[1])


class WeldNet(nn.Module):
    """Stride-32 backbone with one top-down merge back to stride 8, and a frame head on the pooled stride-32
    features that scores "this part is to be rejected" directly (the line acts on that decision)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return round(c * width / 8) * 8

        c2, c4, c8, c16, c32, p = ch(16), ch(32), ch(64), ch(96), ch(160), ch(64)
        self.register_buffer("mean", torch.tensor([0.45, 0.45, 0.45]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1) * 255)
        self.s2 = cbr(3, c2, 3, 2)
        self.s4 = nn.Sequential(cbr(c2, c4, 3, 2), DwSep(c4, c4))
        self.s8 = nn.Sequential(DwSep(c4, c8, 2), DwSep(c8, c8), DwSep(c8, c8))
        self.s16 = nn.Sequential(DwSep(c8, c16, 2), DwSep(c16, c16), DwSep(c16, c16), DwSep(c16, c16))
        self.s32 = nn.Sequential(DwSep(c16, c32, 2), DwSep(c32, c32), DwSep(c32, c32))
        self.lat8 = cbr(c8, p, 1)
        self.lat16 = cbr(c16, p, 1)
        self.lat32 = cbr(c32, p, 1)
        self.head = nn.Sequential(DwSep(p, p), DwSep(p, p), nn.Conv2d(p, 4, 1))
        # frame head: mean and max of the stride-32 features, plus the max per-cell reject evidence
        self.frame = nn.Sequential(nn.Linear(2 * c32 + 2, 64), nn.ReLU(inplace=True), nn.Linear(64, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cell logits (n, 4, G, G), frame reject logit (n,))."""
        cells, pooled = self.features(x)
        frame: torch.Tensor = self.frame(pooled).squeeze(1)
        return cells, frame

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cell logits, pooled features the frame head reads)."""
        x = (x.permute(0, 3, 1, 2).float() - self.mean) / self.std
        f8 = self.s8(self.s4(self.s2(x)))
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat32(f32)
        p = up2(p) + self.lat16(f16)
        p = up2(p) + self.lat8(f8)
        cells: torch.Tensor = self.head(p)
        prob = torch.softmax(cells, dim=1)
        bad = prob[:, 1:2] + prob[:, 3:4]  # bad_weld + defect per cell
        # whole-map pooling as fixed-kernel pools (the input size is fixed): unlike Reduce* + Concat, onnxruntime's
        # symbolic shape inference (int8 pre-processing) follows them
        k32, k8 = f32.shape[-1], bad.shape[-1]
        fn = nn.functional
        pooled = torch.cat(
            [fn.avg_pool2d(f32, k32), fn.max_pool2d(f32, k32), fn.max_pool2d(bad, k8), fn.avg_pool2d(bad, k8)], dim=1
        ).flatten(1)
        return cells, pooled


class Exported(nn.Module):
    """What ships: uint8 NHWC BGR in; per-cell softmax probabilities and the frame reject probability out."""

    def __init__(self, net: WeldNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cells, frame = self.net(x)
        return torch.softmax(cells, dim=1), torch.sigmoid(frame)


# ---------------------------------------------------------------- training


def make_batch(
    idx: np.ndarray, imgs: np.ndarray, boxes: list[np.ndarray], rng: np.random.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (n, 256, 256, 3) uint8, cell targets (n, 4, G, G) and frame targets (n,): 1 = reject (a bad_weld
    or defect box is in the, possibly cropped, view)."""
    xs, ts, fs = [], [], []
    for i in idx:
        im, b = augment(imgs[i], boxes[i], rng) if rng is not None else plain(imgs[i], boxes[i])
        xs.append(im)
        ts.append(targets(b))
        fs.append(float(np.isin(b[:, 0], (0, 2)).any()))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)), torch.tensor(fs, dtype=torch.float32)


def loss_fn(
    net: WeldNet, x: torch.Tensor, t: torch.Tensor, f: torch.Tensor, cls_w: torch.Tensor, frame_w: float
) -> torch.Tensor:
    """Class-weighted soft cross-entropy over cells plus the frame head's binary cross-entropy."""
    cells, frame = net(x)
    logp = torch.log_softmax(cells, dim=1)
    cell_loss = -(t * logp * cls_w.view(1, 4, 1, 1)).sum(1).mean()
    return cell_loss + frame_w * nn.functional.binary_cross_entropy_with_logits(frame, f)


def split_tuning(train_names: list[str], src: dict[str, str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold a seeded share of the training *photo* sources out of the fit, to tune thresholds on unseen sources."""
    photos = sorted({src[n] for n in train_names if not src[n].endswith("_mp4")})
    rng = np.random.default_rng(seed + 11)
    tune = set(rng.choice(photos, size=round(len(photos) * share), replace=False).tolist())
    return [n for n in train_names if src[n] not in tune], [n for n in train_names if src[n] in tune]


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    data = Path(args.data)
    train_names, val_names, src = split_sources(data, args.seed)
    if args.all_sources:  # the shipped fit: same recipe, every source (validation figures come from the split run)
        train_names = sorted(train_names + val_names)
    fit_names, tune_names = split_tuning(train_names, src, args.tune_share, args.seed)
    t0 = time.time()
    tr_imgs, tr_boxes = load_images(data, fit_names)
    va_imgs, va_boxes = load_images(data, val_names)
    print(
        f"loaded fit={len(fit_names)} tune={len(tune_names)} val={len(val_names)} in {time.time() - t0:.0f}s",
        flush=True,
    )
    # sample sources evenly-ish: a 167-frame video must not drown a one-photo source
    counts = Counter(src[n] for n in fit_names)
    w = np.array([1.0 / np.sqrt(counts[src[n]]) for n in fit_names])
    w /= w.sum()

    prev_steps = 0
    if args.resume:  # continue a run: its weights, a fresh optimiser, this run's (lower) schedule
        prev = torch.load(args.resume, weights_only=False)
        if prev["fit_names"] != fit_names:
            raise SystemExit(f"{args.resume}: fitted on other images than this split (seed or --tune-share differ)")
        net = prev["net"]
        prev_steps = int(prev["steps"])
        rng = np.random.default_rng(args.seed + prev_steps)  # new augmentation draws, not a replay
    else:
        net = WeldNet(args.width)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"params={n_params}", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = max(1, len(fit_names) // args.batch)
    total = args.epochs * steps_per_epoch
    budget_s = args.max_minutes * 60
    cls_w = torch.tensor([0.5, 1.5, 1.2, 2.0])  # background is most cells; defects are small and matter most
    history = []
    t_start = time.time()
    step = 0
    done = False

    def next_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return make_batch(rng.choice(len(fit_names), size=args.batch, p=w), tr_imgs, tr_boxes, rng)

    # augmentation (OpenCV/numpy, GIL mostly released) of the next batch overlaps the current step
    pool = ThreadPoolExecutor(max_workers=1)
    pending = pool.submit(next_batch)
    for epoch in range(args.epochs):
        net.train()
        losses = []
        for _ in range(steps_per_epoch):
            # warm-up then cosine on progress; progress is the larger of steps done and time used, so a slow
            # (shared) machine still ends annealed inside the wall-time budget
            progress = max(step / total, (time.time() - t_start) / budget_s)
            if progress >= 1.0:
                done = True
                break
            warm = min(1.0, progress / 0.04)
            for g in opt.param_groups:
                g["lr"] = args.lr * (0.02 + 0.98 * warm * 0.5 * (1 + np.cos(np.pi * progress)))
            x, t, f = pending.result()
            pending = pool.submit(next_batch)
            loss = loss_fn(net, x, t, f, cls_w, args.frame_weight)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
            losses.append(loss.item())
        msg = {
            "epoch": epoch,
            "steps": step,
            "loss": float(np.mean(losses or [np.nan])),
            "lr": opt.param_groups[0]["lr"],
        }
        msg["elapsed_s"] = round(time.time() - t_start)
        if epoch % 10 == 9 or epoch == args.epochs - 1 or done:
            msg["val_loss"] = val_loss(net, va_imgs, va_boxes, cls_w, args.frame_weight)
        history.append(msg)
        print(json.dumps(msg), flush=True)
        if done:
            print("time budget reached: schedule ended on time", flush=True)
            break
    pending.result()
    pool.shutdown()
    return {
        "net": net,
        "train_names": train_names,
        "fit_names": fit_names,
        "tune_names": tune_names,
        "val_names": val_names,
        "src": src,
        "tr_imgs": tr_imgs,
        "n_params": n_params,
        "steps": prev_steps + step,
        "resumed_steps": step if args.resume else 0,
        "history": history,
        "train_s": round(time.time() - t_start),
    }


def refit_frame_head(net: WeldNet, res: dict[str, Any], args: argparse.Namespace) -> list[dict[str, float]]:
    """Re-initialise and train only the frame head on the frozen model (augmented fit images): with the joint
    loss at a high learning rate the head can collapse to the prior (a constant output)."""
    data = Path(args.data)
    fit = res["fit_names"]
    imgs, boxes = res["tr_imgs"], [read_boxes(data / "labels" / (Path(n).stem + ".txt")) for n in fit]
    src = res["src"]
    counts = Counter(src[n] for n in fit)
    w = np.array([1.0 / np.sqrt(counts[src[n]]) for n in fit])
    w /= w.sum()
    rng = np.random.default_rng(args.seed + 5)
    torch.manual_seed(args.seed + 5)
    for m in net.frame:
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    net.eval()
    opt = torch.optim.AdamW(net.frame.parameters(), lr=1e-3, weight_decay=1e-3)
    t0 = time.time()
    budget = args.refit_head_minutes * 60
    log: list[dict[str, float]] = []
    losses: list[float] = []
    step = 0
    while (el := time.time() - t0) < budget:
        for g in opt.param_groups:
            g["lr"] = 1e-3 * 0.5 * (1 + np.cos(np.pi * el / budget))
        x, _, f = make_batch(rng.choice(len(fit), size=32, p=w), imgs, boxes, rng)
        with torch.no_grad():
            _, pooled = net.features(x)
        loss = nn.functional.binary_cross_entropy_with_logits(net.frame(pooled).squeeze(1), f)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            log.append({"head_step": step, "loss": float(np.mean(losses)), "elapsed_s": round(el)})
            print(json.dumps(log[-1]), flush=True)
            losses = []
    return log


@torch.no_grad()
def val_loss(net: WeldNet, imgs: np.ndarray, boxes: list[np.ndarray], cls_w: torch.Tensor, frame_w: float) -> float:
    net.eval()
    out = []
    for i in range(0, len(imgs), 64):
        x, t, f = make_batch(np.arange(i, min(i + 64, len(imgs))), imgs, boxes, None)
        out.append(float(loss_fn(net, x, t, f, cls_w, frame_w)) * len(x))
    net.train()
    return sum(out) / len(imgs)


# ---------------------------------------------------------------- export and evaluation


def link_split(data: Path, names: list[str], dest: Path) -> None:
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    for n in names:
        os.symlink((data / "images" / n).resolve(), dest / "images" / n)
        lab = data / "labels" / (Path(n).stem + ".txt")
        os.symlink(lab.resolve(), dest / "labels" / lab.name)


def write_manifest(out: Path, meta: dict[str, Any]) -> None:
    (out / "model.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, width=110), encoding="utf-8")


def neu_check(model_dir: Path, neu: Path, variant: str) -> dict[str, Any]:
    """NEU steel surfaces (no welds, every image a defect class): how often the model raises a reject."""
    from adapters.base import Frame
    from edge_runtime.inference import load_model
    from edge_runtime.tasks.weld_inspector import WeldInspectorConfig, WeldInspectorTask

    task = WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector"), load_model(model_dir, variant=variant))
    per: dict[str, float] = {}
    n_tot = n_rej = 0
    for cdir in sorted(p for p in neu.iterdir() if p.is_dir()):
        files = sorted(cdir.glob("*.jpg"))
        rej = 0
        for i in range(0, len(files), 16):
            frames = [Frame(cdir.name, 0, imread(f)) for f in files[i : i + 16]]
            rej += sum(r["decision"] == "reject" for r in task.process(frames))
        per[cdir.name] = round(rej / len(files), 4)
        n_tot += len(files)
        n_rej += rej
    return {"n": n_tot, "reject_rate": round(n_rej / n_tot, 4), "reject_rate_per_class": per}


def tune_thresholds(
    model_dir: Path, data: Path, names: list[str], reject_prior: float
) -> tuple[dict[str, float], dict[str, Any]]:
    """Pick decision thresholds on `names`: training-side images of sources held out of the fit (so the model is
    as unsure there as on new sources) and never the validation split. Returns (thresholds, figures there).

    `frame_reject` maximises frame accuracy (the figure the line runs on; ties go to balanced accuracy) at the
    training set's share of frames to reject (`reject_prior`): the tuning sources are photos only, whose share
    differs from the videos';
    `reject_score`, `min_region_cells` and `foreground` (the region rule, which draws the boxes and gives the
    reasons) maximise the same figure for that rule. `frame_reject` is kept only when the frame head beats the
    region rule there; without it the task decides by the region rule. `region_min_score` maximises box accuracy.
    """
    from edge_runtime.inference import load_model
    from edge_runtime.tasks.weld_inspector import WeldInspectorConfig, WeldInspectorTask
    from edge_runtime.tools.datasets import read_yolo_labels
    from edge_runtime.tools.evaluate.weld_inspector import box_calls

    runner = load_model(model_dir, variant="fp32")
    base = WeldInspectorTask(WeldInspectorConfig(kind="weld_inspector"), runner)
    parts = [base.infer([imread(data / "images" / n) for n in names[i : i + 16]]) for i in range(0, len(names), 16)]
    probs = np.concatenate([pr for pr, _ in parts])
    frame = np.concatenate([fr for _, fr in parts if fr is not None])
    gts = [read_yolo_labels(data / "labels" / (Path(n).stem + ".txt")) for n in names]
    y = np.array([bool({0, 2} & set(g[:, 0].astype(int).tolist())) for g in gts])

    def balanced(pred: np.ndarray) -> float:
        return float(0.5 * (pred[y].mean() + (~pred[~y]).mean()))

    def at_prior(pred: np.ndarray) -> float:
        return float(reject_prior * pred[y].mean() + (1 - reject_prior) * (~pred[~y]).mean())

    best_frame = (-1.0, -1.0, 0.5)
    for fr in np.round(np.arange(0.05, 0.96, 0.025), 3):
        pred = frame >= fr
        key = (at_prior(pred), balanced(pred))
        if key > best_frame[:2]:
            best_frame = (*key, float(fr))
    best: tuple[tuple[float, float], dict[str, float]] = ((-1.0, -1.0), {})
    for fg in (0.4, 0.5, 0.6):
        for rs in (0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7):
            for mc in (1, 2, 3, 4):
                cfg = WeldInspectorConfig(
                    kind="weld_inspector", foreground=fg, box_score=0.3, reject_score=rs, min_region_cells=mc
                )
                task = WeldInspectorTask(cfg, runner)
                pred = np.array([task.decide(task.regions(p, 1.0, 1.0))[0] == "reject" for p in probs])
                if (at_prior(pred), balanced(pred)) > best[0]:
                    best = (
                        (at_prior(pred), balanced(pred)),
                        {"foreground": fg, "box_score": 0.3, "reject_score": rs, "min_region_cells": mc},
                    )
    chosen = dict(best[1])
    best_box = (-1.0, 0.3)
    for rms in (0.2, 0.3, 0.4, 0.5):
        ok = n = 0
        for p, g in zip(probs, gts, strict=True):
            ok += int((box_calls(p, g, rms) == g[:, 0].astype(int)).sum())
            n += len(g)
        if ok / n > best_box[0]:
            best_box = (ok / n, rms)
    chosen["region_min_score"] = best_box[1]
    # the frame head decides only where it beats the region rule on these unseen sources
    use_head = best_frame[:2] > best[0]
    if use_head:
        chosen["frame_reject"] = best_frame[2]
    figures = {
        "n_images": len(names),
        "reject_share": round(float(y.mean()), 4),
        "reject_prior": round(reject_prior, 4),
        "frame_head_accuracy_at_prior": round(best_frame[0], 4),
        "frame_head_balanced_accuracy": round(best_frame[1], 4),
        "frame_head_threshold": best_frame[2],
        "region_rule_accuracy_at_prior": round(best[0][0], 4),
        "region_rule_balanced_accuracy": round(best[0][1], 4),
        "decision_by": "frame head" if use_head else "region rule",
        "box_accuracy": round(best_box[0], 4),
    }
    print(f"tuned on {len(names)} held-out training images: {figures} -> {chosen}", flush=True)
    return chosen, figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/datasets/weld_photos"))
    ap.add_argument("--neu", default=str(ROOT.parent / "shared/datasets/steel_surface"))
    ap.add_argument("--out", default=str(ROOT / "models/weld_inspector"))
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=6e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-minutes", type=float, default=18.0)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--width", type=float, default=1.5, help="channel multiplier of the backbone")
    ap.add_argument("--frame-weight", type=float, default=0.5, help="weight of the frame head's loss")
    ap.add_argument("--refit-head-minutes", type=float, default=3.0, help="then train only a re-initialised frame head")
    ap.add_argument("--tune-share", type=float, default=0.2, help="share of training photo sources kept for tuning")
    ap.add_argument("--checkpoint", default="/tmp/weld_inspector.pt", help="torch weights written after training")
    ap.add_argument("--from-checkpoint", action="store_true", help="skip training, export the saved weights")
    ap.add_argument(
        "--resume", default="", help="continue training the weights of this checkpoint (same split) with --lr"
    )
    ap.add_argument("--version", default="1.2.0", help="model version written to model.yaml")
    ap.add_argument(
        "--all-sources",
        action="store_true",
        help="final fit on every source; keeps the source-held-out metrics of the previous split run in --out",
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held_out: dict[str, Any] = {}
    if args.all_sources:
        prev = yaml.safe_load((out / "model.yaml").read_text()) if (out / "model.yaml").is_file() else {}
        if "val_fp32" not in prev.get("metrics", {}):
            ap.error("--all-sources needs a split run's model.yaml in --out first (its held-out metrics are kept)")
        held_out = {
            "note": "same recipe and seed trained without the validation sources; these are its figures",
            "split_model_sha256": prev["sha256"],
            "split_model_int8_sha256": prev["variants"]["int8"]["sha256"],
            "thresholds": prev["thresholds"],
            **{k: prev["metrics"][k] for k in ("val_fp32", "val_int8")},
        }
    data = Path(args.data)

    if args.from_checkpoint:
        res = torch.load(args.checkpoint, weights_only=False)
    else:
        res = train(args)
        torch.save(res, args.checkpoint)
    net: WeldNet = res["net"]
    if args.refit_head_minutes > 0:
        res["history"].extend(refit_frame_head(net, res, args))
        res["head_refit_minutes"] = args.refit_head_minutes
        torch.save(res, args.checkpoint + ".head")
    net.eval()
    exp = Exported(net).eval()
    fp32 = out / "model.onnx"
    example = torch.zeros(2, INPUT, INPUT, 3, dtype=torch.uint8)
    torch.onnx.export(
        exp,
        (example,),
        str(fp32),
        input_names=["x"],
        output_names=["scores", "reject"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
        opset_version=18,
        dynamo=True,
        external_data=False,
    )
    # calibration: 96 plain training images (no augmentation), in batches of 8
    crng = np.random.default_rng(args.seed + 1)
    cal_idx = crng.choice(len(res["fit_names"]), size=96, replace=False)
    cal_imgs = np.stack([cv2.resize(res["tr_imgs"][i], (INPUT, INPUT), interpolation=cv2.INTER_AREA) for i in cal_idx])
    calibration = [{"x": cal_imgs[i : i + 8]} for i in range(0, len(cal_imgs), 8)]
    int8 = out / "model.int8.onnx"
    int8_sha = quantize_int8(fp32, int8, calibration)

    train_sources = sorted({res["src"][n] for n in res["train_names"]})
    val_sources = sorted({res["src"][n] for n in res["val_names"]})
    meta: dict[str, Any] = {
        "name": "weld_inspector",
        "version": args.version,
        "file": "model.onnx",
        "sha256": sha256_of(fp32),
        "inputs": [{"name": "x", "dtype": "uint8", "shape": ["batch", INPUT, INPUT, 3]}],
        "outputs": [
            {"name": "scores", "dtype": "float32", "shape": ["batch", 4, GRID, GRID]},
            {"name": "reject", "dtype": "float32", "shape": ["batch"]},
        ],
        "labels": LABELS,
        "thresholds": {
            "foreground": 0.5,
            "box_score": 0.5,
            "reject_score": 0.5,
            "min_region_cells": 2,
            "region_min_score": 0.3,
            "frame_reject": 0.5,
        },
        "preprocessing": {
            "input_size": INPUT,
            "channel_order": "bgr",
            "layout": "nhwc",
            "dtype": "uint8",
            "resize": "linear",
            "grid": GRID,
            "stride": STRIDE,
            "output_channels": ["background", *LABELS],
            "note": "cast, mean/std scaling and NHWC->NCHW are inside the graph; only resize outside; "
            "output `reject` is the frame head's reject probability",
        },
        "training": {
            "script": "models/training/train_weld.py",
            "data": "../shared/datasets/weld_photos (Welding Defect - Object Detection, Kaggle v1, Roboflow export)",
            "split": "by sources.csv source (video or photo), never by image",
            "val_sources": {"videos": list(VAL_VIDEOS), "photo_share": VAL_PHOTO_SHARE, "seed": args.seed},
            "n_train_sources": len(train_sources),
            "n_val_sources": len(val_sources),
            "n_train_images": len(res["train_names"]),
            "n_fit_images": len(res["fit_names"]),
            "n_tune_images": len(res["tune_names"]),
            "n_tune_sources": len({res["src"][n] for n in res["tune_names"]}),
            "tune_photo_share": args.tune_share,
            "steps": res["steps"],
            "width": args.width,
            "frame_weight": args.frame_weight,
            "n_val_images": len(res["val_names"]),
            "epochs_run": len(res["history"]),
            "batch": args.batch,
            "lr": args.lr,
            "seed": args.seed,
            "params": res["n_params"],
            "train_wall_s": res["train_s"],
            "torch_threads": args.threads,
            "pretraining": "none (from scratch)",
            "frame_head_refit_minutes": res.get("head_refit_minutes", 0.0),
            "resumed_steps": res.get("resumed_steps", 0),
            "fit": "all sources (final)" if args.all_sources else "training sources only (split run)",
        },
        "metrics": {},
        "variants": {
            "int8": {
                "file": "model.int8.onnx",
                "sha256": int8_sha,
                "notes": "onnxruntime static QDQ int8 (per-channel weights, uint8 activations), "
                "calibrated on 96 un-augmented training images",
            }
        },
    }
    write_manifest(out, meta)
    prior = float(
        np.mean(
            [
                np.isin(read_boxes(data / "labels" / (Path(n).stem + ".txt"))[:, 0], (0, 2)).any()
                for n in res["train_names"]
            ]
        )
    )
    meta["thresholds"], tuned_on = tune_thresholds(out, data, res["tune_names"], prior)
    meta["training"]["thresholds"] = (
        "tuned on the training-side sources held out of the fit (tune_thresholds), never on validation"
    )
    meta["training"]["tuning_figures"] = tuned_on
    write_manifest(out, meta)

    from edge_runtime.tools.evaluate.weld_inspector import evaluate

    metrics: dict[str, Any] = {"source_held_out": held_out} if args.all_sources else {}
    prefix = "val_sources_seen_in_training_" if args.all_sources else "val_"
    with tempfile.TemporaryDirectory() as tmp:
        link_split(data, res["val_names"], Path(tmp) / "val")
        for variant in ("fp32", "int8"):
            metrics[prefix + variant] = evaluate(Path(tmp) / "val", variant=variant, model=out)
            print(variant, json.dumps(metrics[prefix + variant]), flush=True)
    if args.neu and Path(args.neu).is_dir():
        metrics["neu_steel_surface_fp32"] = neu_check(out, Path(args.neu), "fp32")
        print("neu", json.dumps(metrics["neu_steel_surface_fp32"]), flush=True)
    meta["metrics"] = metrics
    write_manifest(out, meta)
    (out / "train_log.json").write_text(json.dumps(res["history"], indent=1))
    with (out / "split.json").open("w") as fh:
        json.dump(
            {
                "all_sources_in_training": args.all_sources,
                "train_sources": train_sources,
                "tune_sources": sorted({res["src"][n] for n in res["tune_names"]}),
                "val_sources": val_sources,
            },
            fh,
            indent=0,
        )


if __name__ == "__main__":
    main()
