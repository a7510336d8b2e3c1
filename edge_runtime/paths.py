"""Where the product's files are: the one place that knows the layout of a checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["DATA_ENV", "configs_dir", "installed_data_dir", "models_dir", "repo_root", "shared_dataset"]

DATA_ENV = "EDGE_RUNTIME_DATA"


def installed_data_dir() -> Path:
    """Where a wheel puts `models/`, `configs/` and `benchmarks/` (pyproject's data-files): `<venv>/share/...`."""
    return Path(sys.prefix) / "share" / "edge-runtime"


def repo_root() -> Path:
    """The tree that holds `models/`, `configs/` and `benchmarks/`: `$EDGE_RUNTIME_DATA` if set, else the
    checkout this package runs from, else the installed data directory (a wheel in a virtual environment)."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "models").is_dir():
        return checkout
    return installed_data_dir()


def models_dir() -> Path:
    return repo_root() / "models"


def configs_dir() -> Path:
    return repo_root() / "configs"


def shared_dataset(name: str) -> Path | None:
    """`../shared/datasets/<name>` beside the checkout or the working directory; data sets are read in place."""
    for base in (repo_root().parent, Path.cwd().parent, Path.cwd()):
        candidate = base / "shared" / "datasets" / name
        if candidate.is_dir():
            return candidate
    return None
