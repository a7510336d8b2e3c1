"""Export an average of several trained `rice_sorter` networks as one ONNX graph (same I/O contract as one).

The members share the crop size and input normalisation contract (uint8 BGR (N, 3, S, S) in, softmax (N, 5) out);
the graph averages their softmax outputs. Cost: the sum of the members' costs. State dicts come from
`train_rice.py --checkpoint`.

    .venv/bin/python -m models.training.rice_ensemble --crop-size 48 --layers 16:2,24:2,48:2,96:2 \\
        --members /tmp/a.pt /tmp/b.pt --out /tmp/rice_ens/model.ensemble.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import cast

import torch
from torch import nn

from models.training.train_rice import RiceNet, export_onnx


class RiceEnsemble(nn.Module):
    """Mean of the members' softmax outputs."""

    def __init__(self, members: list[RiceNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = [torch.softmax(cast(RiceNet, m).logits(x), dim=1) for m in self.members]
        return torch.stack(probs).mean(dim=0)


def load_member(path: Path, layers: str) -> RiceNet:
    state = torch.load(path)
    mean = (state["mean"].flatten() / 255.0).tolist()
    std = (state["std"].flatten() / 255.0).tolist()
    net = RiceNet(mean, std, layers)
    net.load_state_dict(state)
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=Path, nargs="+", required=True, help="state dicts (train_rice --checkpoint)")
    ap.add_argument("--layers", required=True, help="conv blocks of every member, as in train_rice --layers")
    ap.add_argument("--crop-size", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    export_onnx(RiceEnsemble([load_member(p, args.layers) for p in args.members]).eval(), args.crop_size, args.out)


if __name__ == "__main__":
    main()
