"""The layering rules of docs/architecture.md, checked on the source: leaves stay leaves, the runtime stays lean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str, *, full: bool = False) -> dict[str, set[str]]:
    """Package names (or full module names) each module of `package` imports (absolute imports, at any depth)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names if full else {n.split(".")[0] for n in names}
    return out


@pytest.mark.parametrize(("leaf", "forbidden"), [("adapters", {"edge_runtime", "calibration"}),
                                                  ("calibration", {"edge_runtime", "adapters"})])  # fmt: skip
def test_leaves_never_import_the_runtime_or_each_other(leaf: str, forbidden: set[str]) -> None:
    offenders = {f: sorted(names & forbidden) for f, names in _imports(leaf).items() if names & forbidden}
    assert offenders == {}


def test_the_runtime_never_imports_tooling_or_torch() -> None:
    # cli.py dispatches commands and imports each command's tooling lazily; the next test checks that
    runtime = {
        f: n
        for f, n in _imports("edge_runtime", full=True).items()
        if not f.startswith("edge_runtime/tools/") and f != "edge_runtime/cli.py"
    }
    offenders = {f: sorted(m for m in n if m.startswith(("edge_runtime.tools", "torch"))) for f, n in runtime.items()}
    assert {f: m for f, m in offenders.items() if m} == {}


def test_a_running_service_loads_no_tooling_and_no_protocol_library_it_does_not_use() -> None:
    code = (
        "import sys; import edge_runtime.service, edge_runtime.cli, edge_runtime.config; "
        "heavy = ('edge_runtime.tools', 'torch', 'pymodbus', 'asyncua', 'paho'); "
        "bad = [m for m in sys.modules if m.startswith(heavy)]; "
        "print(','.join(sorted(bad)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""
