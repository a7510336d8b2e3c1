from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from edge_runtime.inference import ModelError, load_model


def _write_model(tmp: Path, manifest_overrides: dict[str, Any] | None = None, factor: float = 2.0) -> Path:
    """A real two-output ONNX graph (scale by `factor` and sum) with a manifest that matches it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch", 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [factor])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("ReduceSum", ["x", "axes"], ["s"])],
        "tiny",
        [x],
        [y, s],
        initializer=[two, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    d = tmp / "tiny"
    d.mkdir()
    onnx.save(model, d / "model.onnx")
    manifest: dict[str, Any] = {
        "name": "tiny",
        "version": "1.0.0",
        "sha256": hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest(),
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
        "outputs": [
            {"name": "y", "dtype": "float32", "shape": ["batch", 4]},
            {"name": "s", "dtype": "float32", "shape": ["batch", 1]},
        ],
    }
    manifest.update(manifest_overrides or {})
    (d / "model.yaml").write_text(yaml.safe_dump(manifest))
    return d


def test_a_matching_model_loads_and_runs(tmp_path: Path) -> None:
    runner = load_model(_write_model(tmp_path))
    out = runner.run({"x": np.ones((3, 4), np.float32)})
    assert out["y"].shape == (3, 4) and float(out["y"][0, 0]) == 2.0
    assert out["s"][:, 0].tolist() == [4.0, 4.0, 4.0]
    assert runner.ident.startswith("tiny@1.0.0+") and len(runner.ident) == len("tiny@1.0.0+") + 12


def test_a_changed_file_is_refused_by_checksum(tmp_path: Path) -> None:
    d = _write_model(tmp_path)
    raw = bytearray((d / "model.onnx").read_bytes())
    raw[-1] ^= 0xFF
    (d / "model.onnx").write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="sha256"):
        load_model(d)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 5]}]}, "shape"),
        ({"inputs": [{"name": "x", "dtype": "uint8", "shape": ["batch", 4]}]}, "uint8"),
        ({"inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 4]}]}, "names"),
        ({"outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}]}, "names"),
        (
            {
                "outputs": [
                    {"name": "y", "dtype": "float32", "shape": [4]},
                    {"name": "s", "dtype": "float32", "shape": ["batch", 1]},
                ]
            },
            "shape",
        ),
    ],
)
def test_a_signature_mismatch_is_refused_at_start_up(tmp_path: Path, override: dict[str, Any], needle: str) -> None:
    with pytest.raises(ModelError, match=needle):
        load_model(_write_model(tmp_path, override))


def test_missing_variant_and_bad_manifest_name_the_file(tmp_path: Path) -> None:
    d = _write_model(tmp_path)
    with pytest.raises(ModelError, match="no variant 'int8'"):
        load_model(d, variant="int8")
    (d / "model.yaml").write_text("name: tiny\n")
    with pytest.raises(ModelError, match=r"model\.yaml: invalid model manifest: version: Field required; sha256"):
        load_model(d)


def test_default_variant_is_what_a_caller_gets_without_naming_one(tmp_path: Path) -> None:
    d = _write_model(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    q = _write_model(other, factor=3.0) / "model.onnx"  # another graph: the outputs tell which file ran
    (d / "model.q.onnx").write_bytes(q.read_bytes())
    q_sha = hashlib.sha256(q.read_bytes()).hexdigest()
    manifest = yaml.safe_load((d / "model.yaml").read_text())
    manifest["variants"] = {"q": {"file": "model.q.onnx", "sha256": q_sha}}
    (d / "model.yaml").write_text(yaml.safe_dump(manifest))
    x = {"x": np.ones((1, 4), np.float32)}

    def scale(runner: Any) -> float:
        return float(runner.run(x)["y"][0, 0])

    assert scale(load_model(d)) == 2.0 and load_model(d).variant == "fp32"  # unset: fp32, as before the field
    manifest["default_variant"] = "q"
    (d / "model.yaml").write_text(yaml.safe_dump(manifest))
    runner = load_model(d)
    assert runner.variant == "q" and "-q+" in runner.ident and runner.sha256 == q_sha and scale(runner) == 3.0
    fp32 = load_model(d, variant="fp32")  # still reachable by name
    assert fp32.ident.startswith("tiny@1.0.0+") and scale(fp32) == 2.0
    manifest["default_variant"] = "int8"  # a default the manifest does not ship is refused, naming the file
    (d / "model.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(
        ModelError,
        match=r"model\.yaml: invalid model manifest: default_variant 'int8' is neither fp32 nor one of variants "
        r"\['q'\]$",
    ):
        load_model(d, variant="fp32")
