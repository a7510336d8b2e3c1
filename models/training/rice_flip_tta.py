"""Wrap a trained `rice_sorter` ONNX graph so it averages the softmax of each crop and its mirror images.

No retraining: the crops from `segment()` have the grain's long axis horizontal and head/tail (and the two flanks)
are indistinguishable to the segmenter, so the 1.0.0 network was trained with random horizontal and vertical
flips; averaging over them at inference removes part of the orientation noise. The I/O contract is unchanged:
input `x` uint8 (N, 3, S, S) BGR crops, output `probs` float32 (N, 5). Cost: one inference per view.

    .venv/bin/python models/training/rice_flip_tta.py --src /tmp/rice_old/model.onnx --out /tmp/rice_tta/model.onnx \
        --views h        # h: crop + horizontal flip (2x); hv: + vertical flip and both (4x)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def wrap(src: Path, out: Path, views: str) -> None:
    m = onnx.load(str(src))
    g = m.graph
    (inp,) = [i.name for i in g.input]
    (outp,) = [o.name for o in g.output]
    inner_in, inner_out = inp + "__views", outp + "__views"
    for node in g.node:
        node.input[:] = [inner_in if n == inp else n for n in node.input]
        node.output[:] = [inner_out if n == outp else n for n in node.output]
    flips = {"h": [(3,)], "hv": [(3,), (2,), (2, 3)]}[views]
    pre: list[onnx.NodeProto] = []
    names = [inp]
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), "tta_start"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).min], np.int64), "tta_end"),
        numpy_helper.from_array(np.array([-1], np.int64), "tta_step"),
        numpy_helper.from_array(np.array([-1, -1], np.int64), "tta_steps2"),
        numpy_helper.from_array(np.array([-1, -1], np.int64), "tta_starts2"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).min] * 2, np.int64), "tta_ends2"),
        numpy_helper.from_array(np.array([1 + len(flips), -1, 5], np.int64), "tta_shape"),
        numpy_helper.from_array(np.array([0], np.int64), "tta_axis0"),
    ]
    for k, axes in enumerate(flips):
        name = f"tta_flip{k}"
        ax = f"tta_axes{k}"
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), ax))
        if len(axes) == 1:
            pre.append(helper.make_node("Slice", [inp, "tta_start", "tta_end", ax, "tta_step"], [name]))
        else:
            pre.append(helper.make_node("Slice", [inp, "tta_starts2", "tta_ends2", ax, "tta_steps2"], [name]))
        names.append(name)
    pre.append(helper.make_node("Concat", names, [inner_in], axis=0))
    post = [
        helper.make_node("Reshape", [inner_out, "tta_shape"], ["tta_stack"]),
        helper.make_node("ReduceMean", ["tta_stack", "tta_axis0"], [outp], keepdims=0),
    ]
    used = {i for n in pre + post for i in n.input}
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(t for t in inits if t.name in used)
    del g.value_info[:]
    out_vi = g.output[0]
    out_vi.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(m)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--views", choices=["h", "hv"], default="h")
    args = ap.parse_args()
    wrap(args.src, args.out, args.views)


if __name__ == "__main__":
    main()
