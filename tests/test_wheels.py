"""Every runtime dependency installs on the arm64 image from wheels alone (no compiler in the image, no sdist).

`pip download --only-binary=:all:` resolves the pinned ranges of pyproject.toml for the image's platform
(Debian bookworm: glibc 2.36, so manylinux_2_28 and older) and Python (3.11), into a temporary folder.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from edge_runtime.paths import repo_root

PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")


def test_every_runtime_dependency_has_an_aarch64_wheel_for_python_3_11(tmp_path: Path) -> None:
    project = tomllib.loads((repo_root() / "pyproject.toml").read_text())["project"]
    deps: list[str] = project["dependencies"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(tmp_path)]
    cmd += [arg for p in PLATFORMS for arg in ("--platform", p)]
    cmd += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *deps]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"no aarch64 wheel for some runtime dependency:\n{proc.stderr[-3000:]}"
    wheels = sorted(p.name for p in tmp_path.glob("*.whl"))
    for dep in ("onnxruntime", "numpy", "opencv_python_headless", "pymodbus", "asyncua", "pydantic_core"):
        assert any(w.lower().startswith(dep.lower() + "-") for w in wheels), (dep, wheels)
    native = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert native and all("aarch64" in w for w in native), native
