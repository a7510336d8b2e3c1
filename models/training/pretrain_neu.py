"""Fine-tune EfficientNet-Lite0's blocks 5-14 on NEU steel surfaces, as an initialisation for the weld detector.

The network is `train_weld_det.WeldDet`'s backbone built from the ImageNet weights: the stem and blocks 0-4 stay
frozen exactly as in the weld run (`--cache-upto 5`, their ImageNet batch statistics), and their stride-8 output is
cached once per view (float16), as the weld script does. Blocks 5-14 and a linear 6-way head on the average-pooled
stride-32 features are then trained on the cache. Images: grey (stored as 3 equal channels) -> BGR uint8,
resized to the weld input (320) with INTER_AREA, the weld graph's normalisation (`WeldDet.normalise`); views are the
image turned by the dihedral group (flips and quarter turns). 20 % of every class is held out to report accuracy.
Writes `{"blocks": {"5": state_dict, ..., "14": state_dict}, ...}` for `train_weld_det.py --init-blocks`.

    /work/tv/bin/python models/training/pretrain_neu.py --out /tmp/neu_blocks.pt --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_weld as tw
import train_weld_det as twd

FROZEN = 5  # stem + blocks[:5] frozen, as train_weld_det's --cache-upto 5
LAST = 15  # blocks[FROZEN:LAST] are trained and saved


def d4(img: np.ndarray, k: int) -> np.ndarray:
    """The k-th element (0..7) of the dihedral group of the square: k % 4 quarter turns, then a mirror if k >= 4."""
    out = np.rot90(img, k % 4)
    if k >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


Part = tuple[np.ndarray, np.ndarray]  # images (n, size, size, 3) uint8 BGR, class indices (n,)


def load_neu(root: Path, size: int, held_share: float, seed: int) -> tuple[list[str], dict[str, Part]]:
    """Per class a seeded `held_share` of the images is held out. Returns classes and {part: (images, labels)}."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[np.ndarray], list[int]]] = {"train": ([], []), "held": ([], [])}
    for c, name in enumerate(classes):
        files = sorted((root / name).glob("*.jpg"))
        order = rng.permutation(len(files))
        n_held = round(held_share * len(files))
        for j, i in enumerate(order):
            # 3 equal channels for a grey jpeg
            img = np.asarray(cv2.resize(tw.imread(files[i]), (size, size), interpolation=cv2.INTER_AREA), np.uint8)
            part = "held" if j < n_held else "train"
            parts[part][0].append(img)
            parts[part][1].append(c)
    return classes, {k: (np.stack(v[0]), np.array(v[1])) for k, v in parts.items()}


def cache_views(
    net: twd.WeldDet, imgs: np.ndarray, labels: np.ndarray, ks: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-8 features (float16) of the frozen trunk for the views `ks[i]` (D4 elements) of every image i."""
    feats: list[torch.Tensor] = []
    labs: list[int] = []
    jobs = [(i, k) for i in range(len(imgs)) for k in ks[i]]
    with torch.no_grad():
        for j in range(0, len(jobs), 32):
            chunk = jobs[j : j + 32]
            x = torch.from_numpy(np.stack([d4(imgs[i], k) for i, k in chunk]))
            feats.append(net.trunk(x, FROZEN).half())
            labs.extend(int(labels[i]) for i, _ in chunk)
    return torch.cat(feats), torch.tensor(labs)


class Classifier(nn.Module):
    def __init__(self, net: twd.WeldDet, n_classes: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(net.blocks[FROZEN:LAST]))
        self.fc = nn.Linear(192, n_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = f.float().contiguous(memory_format=torch.channels_last)
        for b in self.blocks:
            x = b(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def accuracy(model: Classifier, feats: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[list[int]]]:
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(feats), 64):
            preds.append(model(feats[i : i + 64]).argmax(1))
    p = torch.cat(preds)
    n = int(labels.max()) + 1
    conf = [[int(((labels == a) & (p == b)).sum()) for b in range(n)] for a in range(n)]
    return float((p == labels).float().mean()), conf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/work/shared/datasets/steel_surface")
    ap.add_argument("--out", required=True, help="state dicts of blocks 5-14 (for train_weld_det --init-blocks)")
    ap.add_argument("--input", type=int, default=320)
    ap.add_argument("--views", type=int, default=2, help="D4 views per training image (the first unturned)")
    ap.add_argument("--held-share", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3, help="head lr; blocks get lr x --backbone-lr-mult")
    ap.add_argument("--backbone-lr-mult", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    twd.configure(args.input)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    classes, parts = load_neu(Path(args.data), args.input, args.held_share, args.seed)
    tr_imgs, tr_lab = parts["train"]
    he_imgs, he_lab = parts["held"]
    print(f"NEU {classes}: train {len(tr_imgs)}, held out {len(he_imgs)}, {time.time() - t0:.0f}s", flush=True)
    net = twd.WeldDet(freeze_upto=FROZEN).eval()  # ImageNet weights; the trunk runs in eval mode (frozen BN)
    net = net.to(memory_format=torch.channels_last)
    ks = [[0, *rng.choice(np.arange(1, 8), size=args.views - 1, replace=False).tolist()] for _ in tr_imgs]
    f_tr, y_tr = cache_views(net, tr_imgs, tr_lab, ks)
    f_he, y_he = cache_views(net, he_imgs, he_lab, [[0]] * len(he_imgs))
    print(f"cached {len(f_tr)} training views, {len(f_he)} held-out, {time.time() - t0:.0f}s", flush=True)
    model = Classifier(net, len(classes)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(
        [
            {"params": model.blocks.parameters(), "lr_mult": args.backbone_lr_mult},
            {"params": model.fc.parameters(), "lr_mult": 1.0},
        ],
        lr=args.lr,
        weight_decay=1e-4,
    )
    acc0, _ = accuracy(model, f_he, y_he)  # ImageNet blocks, untrained head: chance level, a sanity check
    steps_per_epoch = len(f_tr) // args.batch
    total = steps_per_epoch * args.epochs
    step = 0
    t1 = time.time()
    history = []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.from_numpy(rng.permutation(len(f_tr)))
        losses = []
        for s in range(steps_per_epoch):
            progress = step / total
            warm = min(1.0, progress / 0.03)
            for g in opt.param_groups:
                g["lr"] = args.lr * g["lr_mult"] * (0.01 + 0.99 * warm * 0.5 * (1 + np.cos(np.pi * progress)))
            idx = perm[s * args.batch : (s + 1) * args.batch]
            loss = F.cross_entropy(model(f_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            step += 1
            losses.append(loss.item())
        acc, conf = accuracy(model, f_he, y_he)
        msg = {"epoch": epoch, "loss": round(float(np.mean(losses)), 4), "held_accuracy": round(acc, 4)}
        msg["elapsed_s"] = round(time.time() - t1)
        history.append(msg)
        print(json.dumps(msg), flush=True)
    acc, conf = accuracy(model, f_he, y_he)
    blocks = {
        str(FROZEN + i): {k: v.detach().clone().contiguous() for k, v in b.state_dict().items()}
        for i, b in enumerate(model.blocks)
    }
    meta = {
        "classes": classes,
        "n_train_images": len(tr_imgs),
        "n_held_images": len(he_imgs),
        "views": args.views,
        "held_accuracy": round(acc, 4),
        "held_accuracy_before": round(acc0, 4),
        "held_confusion": conf,
        "history": history,
        "train_s": round(time.time() - t1),
        "args": vars(args),
    }
    torch.save({"blocks": blocks, "frozen_upto": FROZEN, "meta": meta}, args.out)
    print(json.dumps({k: v for k, v in meta.items() if k != "history"}), flush=True)


if __name__ == "__main__":
    main()
