"""edge_runtime.paths: a checkout, an override, and a wheel installed without a checkout."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from edge_runtime import paths

REPO = Path(__file__).resolve().parents[2]


def test_checkout_is_the_root_here() -> None:
    assert paths.repo_root() == REPO
    assert (paths.models_dir() / "vibration_anomaly" / "model.yaml").is_file()


def test_override_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
    assert paths.models_dir() == tmp_path / "models"


def test_wheel_runs_without_a_checkout(tmp_path: Path) -> None:
    """Build the wheel, install it into a bare virtual environment (its dependencies borrowed from this one
    through a .pth line), and from outside the checkout: the models, device profiles and example configs come
    from `<venv>/share/edge-runtime`, a profile validates, and a shipped model loads with its checks."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("edge_runtime-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # numpy, onnxruntime, ... (appended)
    # --ignore-installed: without it pip uninstalls this environment's own (editable) edge-runtime first
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--ignore-installed",
            "--prefix",
            str(venv),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    share = venv / "share" / "edge-runtime"
    script = (
        "import edge_runtime, edge_runtime.paths as p, edge_runtime.inference as i;"
        "print(edge_runtime.__file__); print(p.models_dir()); print(i.load_model('vibration_anomaly').ident)"
    )
    out = subprocess.run([python, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    module, models, ident = out.splitlines()
    assert Path(module).is_relative_to(site), "the installed package, not the checkout"
    assert Path(models) == share / "models"
    assert ident.startswith("vibration_anomaly@")
    validate = subprocess.run(
        [python, "-m", "edge_runtime.cli", "validate", str(share / "configs" / "devices" / "plc_tcp.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    for shipped in ("configs/systemd/edge-runtime.service", "configs/grafana/edge-runtime.json", "benchmarks"):
        assert (share / shipped).exists(), shipped
