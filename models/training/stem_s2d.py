"""Rewrite a QDQ int8 model's stem, a 3x3 stride-2 convolution on the few input channels, as SpaceToDepth(2)
followed by a 2x2 stride-1 convolution on four times the channels: the same integer arithmetic, so the same outputs.

Why: onnxruntime's int8 convolution packs its input per kernel tap, and with 3 input channels a 3x3 tap carries 3
bytes: on the rice network this one layer took half of the model's time. After SpaceToDepth a 2x2 tap carries 12
contiguous bytes and the layer runs about 1.5x faster (the extra zero weights are cheaper than the packing).
Output (i, j) of the 3x3 stride-2 convolution with padding 1 reads input rows 2i-1 .. 2i+1, that is the second row
of block i-1 and both rows of block i of the 2 x 2 blocks (with TensorFlow's "same" padding, 0 before and 1 after:
rows 2i .. 2i+2, blocks i and i+1); each tap's int8 weight moves to the 2x2 kernel's slot for its block and to the
SpaceToDepth channel for its place in the block, the slots no tap reaches hold the weight's zero point (0 after
dequantisation), and the per-output-channel scales stay. SpaceToDepth goes in front of the input's QuantizeLinear
(per-tensor: it commutes).

    python -m models.training.stem_s2d models/rice_sorter/model.int8.onnx [--out FILE] [--check N]

Needs onnx and onnxruntime only. Refuses a graph whose stem is not that pattern, and writes nothing unless the
rewritten model gives the same probabilities as the original on `--check` random inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["max_difference", "rewrite_checked", "rewrite_stem"]


def _node_producing(graph: Any, name: str) -> Any:
    return next((n for n in graph.node if name in n.output), None)


def _readers(graph: Any, name: str) -> list[Any]:
    """The nodes reading tensor `name`, plus None for each graph output of that name."""
    return [n for n in graph.node if name in n.input] + [None for o in graph.output if o.name == name]


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _name(node: Any) -> str:
    """A node's name for messages: its own, or its first output's when the exporter left it unnamed."""
    return str(node.name or node.output[0])


def _check_stem(stem: Any) -> tuple[int, int]:
    """The stem's padding (top, left); ValueError unless it is a dense 3x3 stride-2 Conv with padding 1 or (0, 1)."""
    a = _attrs(stem)
    if (
        list(a.get("kernel_shape", [])) != [3, 3]
        or list(a.get("strides", [1, 1])) != [2, 2]
        or list(a.get("pads", [0, 0, 0, 0])) not in ([1, 1, 1, 1], [0, 0, 1, 1])
        or int(a.get("group", 1)) != 1
        or list(a.get("dilations", [1, 1])) != [1, 1]
    ):
        raise ValueError(f"the first Conv ({_name(stem)}) is not 3x3, stride 2, padding 1 or (0, 1), dense: {a}")
    top, left = (int(v) for v in a["pads"][:2])
    return top, left


def _rewrite_weight(graph: Any, inits: dict[str, Any], stem: Any, top: int, left: int, done: set[str]) -> None:
    """The stem's int8 weight moved into the 2x2 kernel over SpaceToDepth's channels (once per weight: stems may
    share one, whose name then is in `done`), and its attributes changed."""
    from onnx import helper, numpy_helper

    dq_w = _node_producing(graph, stem.input[1])
    if dq_w is None or dq_w.op_type != "DequantizeLinear":
        raise ValueError(f"the first Conv ({_name(stem)}) is not between DequantizeLinear nodes (not a QDQ model)")
    weight = inits.get(dq_w.input[0])
    if weight is None:
        raise ValueError(f"the first Conv's weight ({dq_w.input[0]}) is not an initializer")
    kept = [attr for attr in stem.attribute if attr.name not in ("kernel_shape", "strides", "pads")]
    stem.ClearField("attribute")
    stem.attribute.extend(kept)
    stem.attribute.extend(
        [
            helper.make_attribute("kernel_shape", [2, 2]),
            helper.make_attribute("strides", [1, 1]),
            helper.make_attribute("pads", [top, left, 1 - top, 1 - left]),
        ]
    )
    if weight.name in done:
        return
    done.add(weight.name)
    w = numpy_helper.to_array(weight)
    out_ch, in_ch = w.shape[:2]
    # the slots no tap reaches hold the weight's zero point (a weight of 0 after dequantisation)
    zero = np.zeros(1, dtype=w.dtype)
    if len(dq_w.input) > 2 and dq_w.input[2]:
        if dq_w.input[2] not in inits:
            raise ValueError(f"the first Conv's weight zero point ({dq_w.input[2]}) is not an initializer")
        zero = numpy_helper.to_array(inits[dq_w.input[2]]).reshape(-1)
        if zero.size not in (1, out_ch) or (zero.size > 1 and int(_attrs(dq_w).get("axis", 1)) != 0):
            raise ValueError("the first Conv's weight is quantised along another axis than its output channels")
    w2 = np.empty((out_ch, 4 * in_ch, 2, 2), dtype=w.dtype)
    w2[...] = zero.reshape(-1, 1, 1, 1)
    # a tap at offset r = ky - top from row 2i: block i + r // 2 (kernel slot r // 2 + top), row r % 2 in it;
    # ONNX SpaceToDepth (DCR) puts row dy, column dx, channel c at channel (dy * 2 + dx) * C + c
    for ky in range(3):
        for kx in range(3):
            by, dy = divmod(ky - top, 2)
            bx, dx = divmod(kx - left, 2)
            w2[:, (dy * 2 + dx) * in_ch : (dy * 2 + dx + 1) * in_ch, by + top, bx + left] = w[:, :, ky, kx]
    weight.CopyFrom(numpy_helper.from_array(w2, weight.name))


def rewrite_stem(model: Any) -> Any:
    """A copy of `model` (onnx.ModelProto) with its stem rewritten; ValueError when the stem is not a QDQ 3x3
    stride-2 convolution with padding 1 (or 0 before and 1 after) on the graph's input, its quantised input is read
    by anything but such stems, or the input's height or width is odd.

    Several stems may read the one quantised input (the networks of an averaged ensemble share their
    normalisation): each is rewritten, behind one SpaceToDepth."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    stem = next((n for n in graph.node if n.op_type == "Conv"), None)
    if stem is None:
        raise ValueError("no Conv in the graph")
    inp = graph.input[0].type.tensor_type.shape.dim
    if len(inp) == 4 and any(d.HasField("dim_value") and d.dim_value % 2 for d in inp[2:]):
        raise ValueError("the input's height and width must be even for SpaceToDepth(2)")
    pads = _check_stem(stem)
    dq_x = _node_producing(graph, stem.input[0])
    if dq_x is None or dq_x.op_type != "DequantizeLinear":
        raise ValueError(f"the first Conv ({_name(stem)}) is not between DequantizeLinear nodes (not a QDQ model)")
    q_x = _node_producing(graph, dq_x.input[0])
    if q_x is None or q_x.op_type != "QuantizeLinear":
        raise ValueError(f"the first Conv's input ({dq_x.input[0]}) does not come from a QuantizeLinear")
    # the quantised input and its dequantised copies change shape: nothing but stems of the same padding may read them
    dqs = _readers(graph, q_x.output[0])
    stems = [
        r for dq in dqs if dq is not None and dq.op_type == "DequantizeLinear" for r in _readers(graph, dq.output[0])
    ]
    if any(dq is None or dq.op_type != "DequantizeLinear" for dq in dqs) or any(
        r is None or r.op_type != "Conv" or r.input[0] not in {dq.output[0] for dq in dqs} for r in stems
    ):
        raise ValueError(f"the first Conv's quantised input ({dq_x.input[0]}) is also read by other nodes")
    for other in stems:
        try:
            other_pads = _check_stem(other)
        except ValueError:
            raise ValueError(
                f"the first Conv's quantised input ({dq_x.input[0]}) is also read by other nodes ({_name(other)}: "
                "not a 3x3 stride-2 stem)"
            ) from None
        if other_pads != pads:
            raise ValueError(f"the stems {_name(stem)} and {_name(other)} read the input with different padding")
    for scale_or_zero in q_x.input[1:]:
        if scale_or_zero in inits and numpy_helper.to_array(inits[scale_or_zero]).size != 1:
            raise ValueError("the stem's input is quantised per channel; SpaceToDepth would not commute with it")
    done: set[str] = set()
    for each in stems:
        _rewrite_weight(graph, inits, each, *pads, done)
    # in front of the input's quantizer, on float: onnxruntime's SpaceToDepth on the uint8 graph input (before the
    # cast and the normalisation) moves a quarter of the bytes but ran 5 % slower in all
    s2d_out = f"{q_x.input[0]}_space_to_depth"
    s2d = helper.make_node("SpaceToDepth", [q_x.input[0]], [s2d_out], name=f"{_name(stem)}_space_to_depth", blocksize=2)
    q_x.input[0] = s2d_out
    # the graph's nodes are in topological order: SpaceToDepth goes just before the QuantizeLinear it feeds
    # (appending copies the messages, so every edit above is done first)
    nodes = list(graph.node)
    graph.ClearField("node")
    for node in nodes:
        if node is q_x:
            graph.node.append(s2d)
        graph.node.append(node)
    # value_info of the rewired tensors would now be wrong; onnxruntime infers shapes itself
    graph.ClearField("value_info")
    onnx.checker.check_model(model)
    return model


def rewrite_checked(model: Any, n_inputs: int = 512) -> tuple[Any, float]:
    """`rewrite_stem`, then the largest difference of the two models' outputs on `n_inputs` random uint8 inputs
    (seeded, in batches of 64); ValueError unless it gives the same outputs."""
    rewritten = rewrite_stem(model)
    graph_input = model.graph.input[0]
    shape = [64, *(d.dim_value or 1 for d in graph_input.type.tensor_type.shape.dim[1:])]
    rng = np.random.default_rng(0)
    feeds = [
        {graph_input.name: rng.integers(0, 256, size=shape, dtype=np.uint8)} for _ in range(max(1, n_inputs // 64))
    ]
    diff = max_difference(model.SerializeToString(), rewritten.SerializeToString(), feeds)
    if diff > 1e-5:
        raise ValueError(f"the rewritten model changed the outputs by {diff:.3g} on {len(feeds) * 64} random inputs")
    return rewritten, diff


def max_difference(a: bytes, b: bytes, feeds: list[dict[str, npt.NDArray[Any]]]) -> float:
    """Largest absolute difference between the two serialised models' first outputs on `feeds` (1 thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sa = ort.InferenceSession(a, opts, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(b, opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for feed in feeds:
        worst = max(worst, float(np.abs(sa.run(None, feed)[0] - sb.run(None, feed)[0]).max()))
    return worst


def main() -> None:
    import onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, help="where to write (default: over the model)")
    ap.add_argument("--check", type=int, default=512, help="random uint8 inputs the outputs are compared on")
    args = ap.parse_args()
    try:
        rewritten, diff = rewrite_checked(onnx.load(str(args.model)), args.check)
    except ValueError as exc:
        raise SystemExit(f"{exc}; nothing written") from None
    print(f"largest output difference on {max(1, args.check // 64) * 64} random inputs: {diff:.3g}")
    out = args.out or args.model
    onnx.save(rewritten, str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
