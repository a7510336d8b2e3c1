"""The package's boundaries: a leaf that never imports the runtime or the adapters, with explicit public names."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULES = [
    "calibration.files",
    "calibration.lens_fog",
    "calibration.illumination",
    "calibration.sensor_drift",
    "calibration.severity",
    "calibration.cold_start",
    "calibration.weld_thermal",
    "calibration.fit",
]


@pytest.mark.parametrize("name", MODULES)
def test_public_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, name
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.{public}"


def test_never_imports_runtime_or_adapters() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('edge_runtime', 'adapters', 'asyncio'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
