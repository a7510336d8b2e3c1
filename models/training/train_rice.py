"""Train the `rice_sorter` grain-variety classifier and write `models/rice_sorter/` (fp32 + int8 ONNX, manifest).

Run from the repository root with the `train` extra::

    .venv/bin/python -m models.training.train_rice --data ../shared/datasets/rice_grains

Every crop the model sees is cut by `edge_runtime.tasks.rice_sorter.segment`, the function the live task and
`evaluate` use. Robustness comes from augmenting the whole photograph *before* segmentation, the way a cold line
changes it: any rotation and flip, camera scale 0.3-1x (a line camera sees grains smaller than the data set's
close-ups), illumination gain and colour-temperature drift, a haze veil and blur (lens fog), gamma and sensor noise.
Split: seeded, stratified 80/10/10 (train/val/test) over the images, which are independent grains.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
import torch
import yaml
from torch import nn

from edge_runtime.tasks.rice_segment import SegmentParams, segment
from edge_runtime.tasks.rice_sorter import VARIETIES
from edge_runtime.tools.datasets import split_class_folders
from edge_runtime.tools.evaluate.rice_sorter import evaluate
from models.training.quantize import quantize_int8, sha256_of

log = logging.getLogger("train_rice")

VERSION = "1.0.0"
PARAMS = SegmentParams(crop_size=32, threshold=None, min_threshold=40, open_px=3, min_area_px=200, crop_margin=1.15)
U8 = npt.NDArray[np.uint8]


def split_files(data_dir: Path, seed: int) -> dict[str, list[tuple[Path, int]]]:
    """Seeded stratified 80/10/10 split of (file, class index)."""
    return split_class_folders(data_dir, VARIETIES, seed)


def export_onnx(model: nn.Module, crop_size: int, out: Path) -> None:
    """The I/O contract of every rice model: uint8 `x` (batch, 3, S, S) in, `probs` (batch, 5) out."""
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(2, 3, crop_size, crop_size, dtype=torch.uint8),),
        str(out),
        input_names=["x"],
        output_names=["probs"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        opset_version=18,
        dynamo=True,
        external_data=False,
    )


def augment(img: npt.NDArray[Any], rng: np.random.Generator) -> U8:
    """One cold-line view of a data set photograph (see module docstring)."""
    pad = 60
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    if rng.random() < 0.5:
        img = img[:, ::-1]
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), 1.0)
    img = cv2.warpAffine(img, rot, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    scale = math.exp(rng.uniform(math.log(0.3), 0.0))
    if scale < 0.97:
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    x: npt.NDArray[Any] = img.astype(np.float32)
    gain = rng.uniform(0.55, 1.3) * rng.uniform(0.88, 1.12, size=3).astype(np.float32)
    x *= gain
    if rng.random() < 0.5:  # gamma of a cold sensor's response
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    if rng.random() < 0.5:  # lens fog: blur plus a veil of scattered light
        sigma = rng.uniform(0.3, 1.6)
        x = cv2.GaussianBlur(x, (0, 0), sigma)
        x = x * rng.uniform(0.8, 1.0) + rng.uniform(0, 30)
    if rng.random() < 0.5:
        x += rng.normal(0, rng.uniform(1, 5), size=x.shape).astype(np.float32)
    out: U8 = np.clip(x, 0, 255).astype(np.uint8)
    return out


def largest_grain(img: U8) -> tuple[U8, float, float] | None:
    """The crop, length and area of the biggest grain in a data set photograph (one grain each); None if none."""
    grains = segment(img, PARAMS)
    if len(grains) == 0:
        return None
    i = int(np.argmax(grains.area_px))
    return grains.crops[i], float(grains.length_px[i]), float(grains.area_px[i])


def _crops_of(task: tuple[Path, int, int, int]) -> tuple[int, list[tuple[U8, float, float] | None]]:
    """Worker: the clean crop and `copies` augmented crops of one image (augmentation seeded per image)."""
    path, k, copies, seed = task
    raw = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if raw is None:
        log.warning("event=unreadable file=%s", path)
        return k, []
    img = np.asarray(raw, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    return k, [largest_grain(img), *(largest_grain(augment(img, rng)) for _ in range(copies))]


def _init_worker(params: SegmentParams) -> None:
    global PARAMS
    PARAMS = params
    cv2.setNumThreads(1)


def build_crops(
    items: list[tuple[Path, int]], copies: int, rng: np.random.Generator, workers: int = 1
) -> tuple[U8, npt.NDArray[np.int64], U8, npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Clean crops (+ label, length, area) and `copies` augmented crops per image, in `workers` processes."""
    from multiprocessing import get_context

    clean, clean_y, aug, aug_y, geo = [], [], [], [], []
    t0 = time.perf_counter()
    seeds = rng.integers(0, 2**63 - 1, size=len(items))
    tasks = [(path, k, copies, int(sd)) for (path, k), sd in zip(items, seeds, strict=True)]
    with get_context("fork").Pool(workers, initializer=_init_worker, initargs=(PARAMS,)) as pool:
        for n, (k, got) in enumerate(pool.imap(_crops_of, tasks, chunksize=64)):
            if got and got[0] is not None:
                clean.append(got[0][0])
                clean_y.append(k)
                geo.append((k, got[0][1], got[0][2]))
            for g in got[1:]:
                if g is not None:
                    aug.append(g[0])
                    aug_y.append(k)
            if n % 2000 == 0:
                log.info("event=crops done=%d of=%d s=%.0f", n, len(items), time.perf_counter() - t0)
    s = PARAMS.crop_size
    empty = np.zeros((0, 3, s, s), np.uint8)
    return (
        np.stack(clean) if clean else empty,
        np.asarray(clean_y, np.int64),
        np.stack(aug) if aug else empty,
        np.asarray(aug_y, np.int64),
        np.asarray(geo, np.float64).reshape(-1, 3),
    )


CACHE_NAMES = (
    "tr_x",
    "tr_y",
    "tr_ax",
    "tr_ay",
    "tr_geo",
    "va_x",
    "va_y",
    "va_ax",
    "va_ay",
    "te_x",
    "te_y",
    "te_ax",
    "te_ay",
)


def load_crop_cache(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The arrays of a `--crop-cache` file (train/val/test clean and augmented crops, labels, training geometry)."""
    with np.load(path) as z:
        return {k: z[k] for k in CACHE_NAMES}


LAYERS_1_0 = "16:2,32:2,64:2,64:1"  # the 1.0.0 network


def parse_layers(spec: str) -> list[tuple[int, int]]:
    """ "16:2,32:2" -> [(16, 2), (32, 2)]: output channels and stride of each 3x3 conv block."""
    return [(int(a), int(b)) for a, b in (part.split(":") for part in spec.split(","))]


class RiceNet(nn.Module):
    """3x3 conv blocks (conv, BN, ReLU; channels and strides from `layers`, 1.0.0: 16/2, 32/2, 64/2, 64/1) on
    S x S crops, global average pool, linear.

    Takes uint8 BGR (N, 3, S, S) and normalises inside the graph, so the runtime only cuts crops. With `tta`, the
    exported graph averages the softmax of the crop and its horizontal flip (head and tail of a grain are
    indistinguishable to the segmenter), at twice the cost.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float], std: list[float], layers: str = LAYERS_1_0, tta: bool = False) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        c = 3
        for out, stride in parse_layers(layers):
            blocks += [nn.Conv2d(c, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c, len(VARIETIES))
        self.tta = tta
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        out: torch.Tensor = self.head(self.features(x).mean(dim=(2, 3)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tta:
            return 0.5 * (torch.softmax(self.logits(x), dim=1) + torch.softmax(self.logits(x.flip(3)), dim=1))
        return torch.softmax(self.logits(x), dim=1)


class Classifier(Protocol):
    """What `accuracy` needs of a network: logits of uint8 crops (RiceNet, or train_rice_lite0's LiteRice)."""

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...

    def eval(self) -> Any: ...


def accuracy(model: Classifier, x: U8, y: npt.NDArray[np.int64]) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model.logits(torch.from_numpy(x[i : i + 512])).argmax(1) for i in range(0, len(x), 512)])
    return float((pred.numpy() == y).mean()) if len(y) else float("nan")


def jitter(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-crop noise of the segmenter and the light, cheap enough for every batch: a few degrees of rotation, a few
    per cent of scale (the minAreaRect's angle and length wobble), a pixel of shift, +-15 % gain with +-6 % colour
    drift. The masked background stays 0, as `segment()` leaves it."""
    n = xb.shape[0]
    u = torch.rand(n, 6, generator=gen)
    ang = (u[:, 0] - 0.5) * math.radians(10.0)
    sc = 1.0 + (u[:, 1] - 0.5) * 0.16
    cos, sin = torch.cos(ang) * sc, torch.sin(ang) * sc
    shift = (u[:, 2:4] - 0.5) * (4.0 / xb.shape[-1])
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(xb.shape), align_corners=False)
    out = nn.functional.grid_sample(xb.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gain = (0.85 + 0.3 * u[:, 4:5]) * (0.94 + 0.12 * torch.rand(n, 3, generator=gen))
    return (out * gain[:, :, None, None]).clamp(0.0, 255.0)


def random_flips(xb: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Head and tail of a grain are indistinguishable to the segmenter: flip each crop both ways at random."""
    flip_h = torch.from_numpy(rng.random(len(xb)) < 0.5)
    flip_v = torch.from_numpy(rng.random(len(xb)) < 0.5)
    xb = torch.where(flip_h[:, None, None, None], xb.flip(3), xb)
    return torch.where(flip_v[:, None, None, None], xb.flip(2), xb)


def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """One step of the weights' moving average (decay ramped up over the first steps); buffers copied."""
    with torch.no_grad():
        d = min(decay, (1.0 + step) / (10.0 + step))
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.mul_(d).add_(pm.detach(), alpha=1.0 - d)
        for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
            be.copy_(bm)


def calibration_feeds(x: U8, seed: int, n_batches: int = 40, batch: int = 32) -> list[dict[str, U8]]:
    """Seeded int8 calibration batches of training crops, as quantize_int8 takes them."""
    idx = np.random.default_rng(seed).permutation(len(x))[: batch * n_batches]
    return [{"x": x[idx[i : i + batch]]} for i in range(0, len(idx), batch)]


def channel_stats(x: U8, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 crops in [0, 1], summed chunk by chunk in float64: a float
    copy of the whole set would take 6.6 GB at 96 px (60,000 crops)."""
    total = np.zeros(x.shape[1], np.float64)
    square = np.zeros(x.shape[1], np.float64)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        square += (part * part).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = total / n
    std = np.sqrt(np.maximum(square / n - mean * mean, 0.0))
    return mean.tolist(), std.tolist()


def lr_at(progress: float, lr: float, warm: float = 0.1) -> float:
    """One-cycle shape over `progress` in [0, 1]: linear warm-up from lr/25, then cosine down to lr/1e4."""
    if progress < warm:
        return lr / 25.0 + (lr - lr / 25.0) * progress / warm
    t = min(1.0, (progress - warm) / (1.0 - warm))
    return lr / 1e4 + 0.5 * (lr - lr / 1e4) * (1.0 + math.cos(math.pi * t))


def train(
    x: U8,
    y: npt.NDArray[np.int64],
    val: list[tuple[U8, npt.NDArray[np.int64]]],
    epochs: int,
    seed: int,
    layers: str = LAYERS_1_0,
    lr: float = 3e-3,
    budget_s: float = 0.0,
    crop_jitter: bool = False,
    ema_decay: float = 0.0,
    checkpoint: Path | None = None,
) -> tuple[RiceNet, list[dict[str, float]]]:
    """AdamW with a one-cycle learning rate; the epoch with the best validation (clean + augmented) is kept.

    With `budget_s`, the schedule runs on elapsed time instead of steps, so training ends annealed inside the
    budget however loaded the machine is (`epochs` is then an upper bound). With `ema_decay`, an exponential moving
    average of the weights is what gets validated and kept."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = channel_stats(x)
    model = RiceNet(mean, std, layers)
    ema = RiceNet(mean, std, layers) if ema_decay > 0 else model
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batch = 128
    per_epoch = len(x) // batch
    steps = epochs * per_epoch
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, Any]] | None = None
    started, step, done = time.perf_counter(), 0, False
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        t0, total, n_batches = time.perf_counter(), 0.0, 0
        for i in range(per_epoch):
            elapsed = time.perf_counter() - started
            progress = elapsed / budget_s if budget_s > 0 else step / steps
            if progress >= 1.0:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(progress, lr)
            idx = order[i * batch : (i + 1) * batch]
            xb = random_flips(torch.from_numpy(x[idx]), rng)
            if crop_jitter:
                xb = jitter(xb, gen)
            loss = loss_fn(model.logits(xb), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not model:
                ema_update(ema, model, ema_decay, step)
            step += 1
            n_batches += 1
            total += float(loss.detach())
        if n_batches == 0:
            break
        accs = [accuracy(ema, vx, vy) for vx, vy in val]
        row = {"epoch": epoch + 1, "loss": total / n_batches, "val_clean": accs[0], "val_aug": accs[1]}
        history.append(row)
        log.info(
            "event=epoch %s s=%.0f lr=%.2e",
            " ".join(f"{k}={v:.4f}" for k, v in row.items()),
            time.perf_counter() - t0,
            opt.param_groups[0]["lr"],
        )
        score = accs[0] + accs[1]
        if best is None or score >= best[0]:
            best = (score, {k: v.clone() for k, v in ema.state_dict().items()})
            if checkpoint is not None:
                torch.save(best[1], checkpoint)
        if done:
            break
    assert best is not None
    ema.load_state_dict(best[1])
    ema.eval()
    return ema, history


def onnx_probs(path: Path, x: U8) -> npt.NDArray[np.float32]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["probs"], {"x": x[i : i + 512]})[0] for i in range(0, len(x), 512)])


def onnx_accuracy(path: Path, x: U8, y: npt.NDArray[np.int64]) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    pred = np.concatenate([sess.run(["probs"], {"x": x[i : i + 512]})[0].argmax(1) for i in range(0, len(x), 512)])
    return float((pred == y).mean())


def evaluate_split(
    out_dir: Path, items: list[tuple[Path, int]], variant: str, declared: str | None = None
) -> dict[str, Any]:
    """`evaluate` (the runtime's own path, from JPEG to decision) on a symlinked class-folder copy of a split."""
    with tempfile.TemporaryDirectory() as tmp:
        for path, k in items:
            link = Path(tmp) / VARIETIES[k] / path.name
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(path.resolve())
        return evaluate(Path(tmp), variant=variant, model_dir=out_dir, declared=declared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/rice_grains"))
    ap.add_argument("--out", type=Path, default=Path("models/rice_sorter"))
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--copies", type=int, default=4, help="augmented crops per training image")
    ap.add_argument("--seed", type=int, default=20240611, help="split and augmentation seed (keep it: same test set)")
    ap.add_argument("--train-seed", type=int, default=None, help="initialisation/batch-order seed (default: --seed)")
    ap.add_argument("--limit", type=int, default=0, help="images per split, for a smoke run (0: all)")
    ap.add_argument("--crop-size", type=int, default=32, help="crop side S (model input S x S)")
    ap.add_argument("--layers", default=LAYERS_1_0, help="conv blocks as channels:stride,...")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--tta", action="store_true", help="export with the flip average inside the graph")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--workers", type=int, default=1, help="processes cutting the crops")
    ap.add_argument("--version", default=VERSION)
    ap.add_argument("--crop-cache", type=Path, default=None, help="npz of built crops: reused when present")
    ap.add_argument("--budget-min", type=float, default=0.0, help="training time budget (schedule runs on time)")
    ap.add_argument("--jitter", action="store_true", help="per-batch crop jitter (angle, scale, shift, gain)")
    ap.add_argument("--ema", type=float, default=0.0, help="weight moving-average decay (0: off)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="state dict of the best epoch so far")
    ap.add_argument("--resume", type=Path, default=None, help="skip training: export this state dict")
    ap.add_argument("--crops-only", action="store_true", help="cut the crops into --crop-cache and stop")
    ap.add_argument(
        "--no-test", action="store_true", help="export without test-split figures (score the test split once, later)"
    )
    ap.add_argument(
        "--link-splits", type=Path, default=None, help="write DIR/{train,val,test}/<variety>/ symlinks and stop"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    global PARAMS
    PARAMS = dataclasses.replace(PARAMS, crop_size=args.crop_size)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    parts = split_files(args.data, args.seed)
    if args.link_splits is not None:
        for part, items in parts.items():
            for path, k in items:
                link = args.link_splits / part / VARIETIES[k] / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(path.resolve())
        return
    if args.limit:
        parts = {k: [v[i] for i in rng.permutation(len(v))[: args.limit]] for k, v in parts.items()}
    names = CACHE_NAMES
    if args.crop_cache is not None and args.crop_cache.is_file():
        cached = load_crop_cache(args.crop_cache)
        tr_x, tr_y, tr_ax, tr_ay, tr_geo, va_x, va_y, va_ax, va_ay, te_x, te_y, te_ax, te_ay = (
            cached[k] for k in names
        )
        log.info("event=crops_cached file=%s", args.crop_cache)
    else:
        tr_x, tr_y, tr_ax, tr_ay, tr_geo = build_crops(parts["train"], args.copies, rng, args.workers)
        va_x, va_y, va_ax, va_ay, _ = build_crops(parts["val"], 1, rng, args.workers)
        te_x, te_y, te_ax, te_ay, _ = build_crops(parts["test"], 1, rng, args.workers)
        if args.crop_cache is not None:
            arrays = (tr_x, tr_y, tr_ax, tr_ay, tr_geo, va_x, va_y, va_ax, va_ay, te_x, te_y, te_ax, te_ay)
            cache: dict[str, Any] = dict(zip(names, arrays, strict=True))
            np.savez(args.crop_cache, **cache)
    log.info("event=crops_ready train=%d aug=%d s=%.0f", len(tr_x), len(tr_ax), time.perf_counter() - started)
    if args.crops_only:
        return
    x = np.concatenate([tr_x, tr_ax])
    y = np.concatenate([tr_y, tr_ay])
    val = [(va_x, va_y), (va_ax, va_ay)]
    if args.resume is not None:
        state = torch.load(args.resume)
        model = RiceNet(
            state["mean"].flatten().div(255.0).tolist(), state["std"].flatten().div(255.0).tolist(), args.layers
        )
        model.load_state_dict(state)
        model.eval()
        history = [{"epoch": 0, "val_clean": accuracy(model, *val[0]), "val_aug": accuracy(model, *val[1])}]
    else:
        model, history = train(
            x,
            y,
            val,
            args.epochs,
            args.seed if args.train_seed is None else args.train_seed,
            args.layers,
            args.lr,
            args.budget_min * 60.0,
            args.jitter,
            args.ema,
            args.checkpoint,
        )
    model.tta = args.tta

    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), Path(tempfile.gettempdir()) / "rice_sorter_state.pt")
    fp32 = args.out / "model.onnx"
    int8 = args.out / "model.int8.onnx"
    export_onnx(model, PARAMS.crop_size, fp32)
    calibration = calibration_feeds(x, args.seed + 1)
    int8_sha = quantize_int8(fp32, int8, calibration)

    median_length = {v: float(np.median(tr_geo[tr_geo[:, 0] == k, 1])) for k, v in enumerate(VARIETIES)}
    median_area = {v: float(np.median(tr_geo[tr_geo[:, 0] == k, 2])) for k, v in enumerate(VARIETIES)}
    crops_metrics = {
        variant: {
            "val_clean": onnx_accuracy(path, va_x, va_y),
            "val_augmented": onnx_accuracy(path, va_ax, va_ay),
            **(
                {}
                if args.no_test
                else {
                    "test_clean": onnx_accuracy(path, te_x, te_y),
                    "test_augmented": onnx_accuracy(path, te_ax, te_ay),
                }
            ),
        }
        for variant, path in (("fp32", fp32), ("int8", int8))
    }
    manifest: dict[str, Any] = {
        "name": "rice_sorter",
        "version": args.version,
        "file": fp32.name,
        "sha256": sha256_of(fp32),
        "inputs": [{"name": "x", "dtype": "uint8", "shape": ["batch", 3, PARAMS.crop_size, PARAMS.crop_size]}],
        "outputs": [{"name": "probs", "dtype": "float32", "shape": ["batch", len(VARIETIES)]}],
        "labels": list(VARIETIES),
        "thresholds": {"min_confidence": 0.5, "broken_length_ratio": 0.7},
        "preprocessing": {
            "input": "uint8 BGR crops (N, 3, S, S) from edge_runtime.tasks.rice_sorter.segment; long axis "
            "horizontal; the graph converts to float and normalises with mean/std below",
            "crop_size": PARAMS.crop_size,
            "threshold": PARAMS.threshold,
            "min_threshold": PARAMS.min_threshold,
            "open_px": PARAMS.open_px,
            "min_area_px": PARAMS.min_area_px,
            "crop_margin": PARAMS.crop_margin,
            "split_area_ratio": PARAMS.split_area_ratio,
            "single_solidity": PARAMS.single_solidity,
            "mean_bgr": [round(float(v), 5) for v in model.mean.flatten() / 255.0],
            "std_bgr": [round(float(v), 5) for v in model.std.flatten() / 255.0],
            "scale": "pixels of the data set photographs (250x250 px, one grain each)",
            "median_length_px": {k: round(v, 2) for k, v in median_length.items()},
            "median_area_px": {k: round(v, 1) for k, v in median_area.items()},
        },
        "training": {
            "data": "../shared/datasets/rice_grains (Rice Image Dataset subset, 5 x 3000 images)",
            "citation": "Koklu, M., Cinar, I., & Taspinar, Y. S. (2021). Classification of rice varieties with "
            "deep learning methods. Computers and Electronics in Agriculture, 187, 106285.",
            "license": "CC0-1.0 (as listed by the authors)",
            "split": "seeded stratified 80/10/10 over images (train/val/test), per variety",
            "seed": args.seed,
            "train_seed": args.seed if args.train_seed is None else args.train_seed,
            "n_train_images": len(parts["train"]),
            "n_val_images": len(parts["val"]),
            "n_test_images": len(parts["test"]),
            "augmented_copies": args.copies,
            "epochs": len(history),
            "time_budget_min": args.budget_min,
            "crop_jitter": args.jitter,
            "ema_decay": args.ema,
            "crop_size": args.crop_size,
            "layers": args.layers,
            "lr": args.lr,
            "test_time_flip_average_in_graph": args.tta,
            "torch_threads": args.threads,
            "script": "models/training/train_rice.py",
            "history": [{k: round(v, 4) for k, v in h.items()} for h in history],
            "wall_time_s": None,
        },
        "metrics": {"crops": crops_metrics},
        "variants": {
            "int8": {
                "file": int8.name,
                "sha256": int8_sha,
                "notes": "onnxruntime static QDQ int8 (per-channel weights, uint8 activations), calibrated on "
                f"{sum(len(feed['x']) for feed in calibration)} training crops (clean and augmented)",
            }
        },
    }
    manifest_path = args.out / "model.yaml"
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    for variant in () if args.no_test else ("fp32", "int8"):
        res = evaluate_split(args.out, parts["test"], variant)
        manifest["metrics"][f"test_evaluate_{variant}"] = {
            "accuracy": round(res["accuracy"], 4),
            "n": res["n"],
            "n_unsegmented": res["n_unsegmented"],
            "confusion": res["confusion"],
        }
        # purity sorting per declared variety, from the clean test crops (the same crops `evaluate` cuts: the
        # same segment() on the same photographs; `evaluate(declared=...)` gives these figures one variety a run)
        path = fp32 if variant == "fp32" else int8
        probs = onnx_probs(path, te_x)
        eject = {}
        for k, variety in enumerate(VARIETIES):
            off_type = te_y != k
            ejected = probs[:, k] < manifest["thresholds"]["min_confidence"]
            tp = int((off_type & ejected).sum())
            eject[variety] = {
                "eject_precision": round(tp / max(int(ejected.sum()), 1), 4),
                "eject_recall": round(tp / max(int(off_type.sum()), 1), 4),
            }
        manifest["metrics"][f"test_evaluate_{variant}"]["eject_by_declared_variety"] = eject
        log.info("event=evaluated variant=%s accuracy=%.4f eject=%s", variant, res["accuracy"], eject)
    manifest["training"]["wall_time_s"] = round(time.perf_counter() - started)
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    print(json.dumps(manifest["metrics"], indent=1))


if __name__ == "__main__":
    main()
