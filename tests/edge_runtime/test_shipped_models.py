"""Every shipped model's manifest matches its ONNX files: sha256, input/output names, dtypes and shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import pytest
import yaml

from edge_runtime.paths import models_dir

MODELS = sorted(p.parent.name for p in models_dir().glob("*/model.yaml"))
_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT64: "int64"}


def files(name: str) -> list[tuple[Path, str]]:
    d = models_dir() / name
    m = yaml.safe_load((d / "model.yaml").read_text(encoding="utf-8"))
    return [(d / m["file"], m["sha256"]), *((d / v["file"], v["sha256"]) for v in m.get("variants", {}).values())]


@pytest.mark.parametrize("name", MODELS)
def test_manifest_sha256_and_signature_match_the_onnx_files(name: str) -> None:
    manifest = yaml.safe_load((models_dir() / name / "model.yaml").read_text(encoding="utf-8"))
    for path, sha in files(name):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path
        graph = onnx.load(str(path), load_external_data=False).graph
        for declared, actual in ((manifest["inputs"], graph.input), (manifest["outputs"], graph.output)):
            assert [t["name"] for t in declared] == [t.name for t in actual], path
            for spec, t in zip(declared, actual, strict=True):
                assert _DTYPES[t.type.tensor_type.elem_type] == spec["dtype"], (path, spec["name"])
                dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.type.tensor_type.shape.dim]
                assert len(dims) == len(spec["shape"]), (path, spec["name"])
                for got, want in zip(dims, spec["shape"], strict=True):
                    assert got == want if isinstance(want, int) else isinstance(got, str), (path, spec["name"])
