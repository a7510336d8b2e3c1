"""The int8 stem rewrite keeps a QDQ model's outputs, and refuses a stem it does not know."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.training.stem_s2d import max_difference, rewrite_stem


def _float_model(stride: int = 2) -> onnx.ModelProto:
    """Conv 3x3 (3 -> 8 channels) + ReLU, Conv 3x3 stride 2 (8 -> 16), global average pool: a rice-like stem."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(np.array([[[[50.0]], [[52.0]], [[51.0]]]], np.float32), "mean"),
        numpy_helper.from_array(np.array([[[[90.0]], [[87.0]], [[86.0]]]], np.float32), "std"),
        numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b0"),
        numpy_helper.from_array(rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b1"),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["xf", "mean"], ["xs"]),
        helper.make_node("Div", ["xs", "std"], ["xn"]),
        helper.make_node("Conv", ["xn", "w0", "b0"], ["c0"], kernel_shape=[3, 3], strides=[stride] * 2, pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "stem",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _quantized(model: onnx.ModelProto, feeds: list[dict[str, Any]], uint8_weights: bool = False) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.left = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.left, None)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, str(src))
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if uint8_weights else QuantType.QInt8,
        )
        return onnx.load(str(dst))


def _feeds(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.integers(0, 256, (16, 3, 16, 16), dtype=np.uint8)} for _ in range(n)]


def test_rewritten_stem_gives_the_same_outputs() -> None:
    q = _quantized(_float_model(), _feeds(4, 0))
    rewritten = rewrite_stem(q)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "SpaceToDepth" in ops and "SpaceToDepth" not in [n.op_type for n in q.graph.node]
    stem = next(n for n in rewritten.graph.node if n.op_type == "Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in stem.attribute}
    assert list(attrs["kernel_shape"]) == [2, 2] and list(attrs["strides"]) == [1, 1]
    # integer arithmetic unchanged: the dequantised outputs agree to float rounding on inputs not calibrated on
    assert max_difference(q.SerializeToString(), rewritten.SerializeToString(), _feeds(3, 7)) < 1e-5
    # and the rewrite is not a no-op that happens to agree: a wrong weight placement changes the outputs
    broken = onnx.ModelProto.FromString(rewritten.SerializeToString())
    weight = next(t for t in broken.graph.initializer if numpy_helper.to_array(t).shape == (8, 12, 2, 2))
    w = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(np.flip(w, axis=3).copy(), weight.name))
    assert max_difference(q.SerializeToString(), broken.SerializeToString(), _feeds(1, 7)) > 1e-3


def test_stem_that_is_not_a_3x3_stride_2_conv_is_refused() -> None:
    with pytest.raises(ValueError, match="stride 2"):
        rewrite_stem(_quantized(_float_model(stride=1), _feeds(2, 0)))
    with pytest.raises(ValueError, match="QDQ"):
        rewrite_stem(_float_model())


def test_unreached_slots_hold_the_weight_zero_point() -> None:
    # uint8 weights are asymmetric: an integer 0 would dequantise to -zero_point x scale, not to 0
    q = _quantized(_float_model(), _feeds(4, 0), uint8_weights=True)
    zero_point = next(t for t in q.graph.initializer if t.name == "w0_zero_point")
    assert numpy_helper.to_array(zero_point).any(), "the weights have zero points other than 0"
    rewritten = rewrite_stem(q)
    assert max_difference(q.SerializeToString(), rewritten.SerializeToString(), _feeds(2, 7)) < 1e-5


def test_stem_whose_quantised_input_is_read_elsewhere_is_refused() -> None:
    # the normalised input also feeds a shortcut (2x2 average pool, 1x1 conv) added to the stem's output:
    # the quantizer shares one QuantizeLinear/DequantizeLinear pair between the two readers
    model = _float_model()
    rng = np.random.default_rng(3)
    model.graph.initializer.append(numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 1, 1)).astype(np.float32), "ws"))
    nodes = list(model.graph.node)
    relu = next(n for n in nodes if n.op_type == "Relu" and n.input[0] == "c0")
    relu.input[0] = "c0s"
    shortcut = [
        helper.make_node("AveragePool", ["xn"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "ws"], ["sc"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["c0", "sc"], ["c0s"]),
    ]
    at = nodes.index(relu)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes[:at] + shortcut + nodes[at:])
    with pytest.raises(ValueError, match="read by other nodes"):
        rewrite_stem(_quantized(model, _feeds(2, 0)))


@pytest.mark.parametrize("shared_weight", [False, True])
def test_stems_of_an_averaged_pair_share_one_space_to_depth(shared_weight: bool) -> None:
    """Two networks reading the one normalised input (the default rice graph averages two): both stems are
    rewritten behind a single SpaceToDepth, and the outputs stay the same; a weight both stems read is moved once."""
    model = _float_model()
    rng = np.random.default_rng(5)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w0b"),
            numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b0b"),
        ]
    )
    nodes = list(model.graph.node)
    weight = "w0" if shared_weight else "w0b"
    second = [
        helper.make_node("Conv", ["xn", weight, "b0b"], ["c0b"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", ["c0b"], ["r0b"]),
        helper.make_node("Add", ["r0", "r0b"], ["r0sum"]),
    ]
    conv1 = next(n for n in nodes if n.input[0] == "r0")
    conv1.input[0] = "r0sum"
    at = nodes.index(conv1)
    model.graph.ClearField("node")
    model.graph.node.extend(nodes[:at] + second + nodes[at:])
    quantized = _quantized(model, _feeds(4, 0))
    rewritten = rewrite_stem(quantized)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("SpaceToDepth") == 1
    # the quantizer fuses each stem with its ReLU: they write r0 and r0b
    stems = [n for n in rewritten.graph.node if n.op_type == "Conv" and n.output[0] in ("c0", "c0b", "r0", "r0b")]
    assert len(stems) == 2
    for stem in stems:
        assert [list(a.ints) for a in stem.attribute if a.name == "kernel_shape"] == [[2, 2]]
    diff = max_difference(quantized.SerializeToString(), rewritten.SerializeToString(), _feeds(4, 9))
    assert diff < 1e-5
