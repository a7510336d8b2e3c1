"""Where the product's files are: the one place that knows the layout of a checkout."""

from __future__ import annotations

from pathlib import Path

__all__ = ["configs_dir", "models_dir", "repo_root", "shared_dataset"]


def repo_root() -> Path:
    """The checkout (or installed tree) that holds `models/`, `configs/` and `benchmarks/`."""
    return Path(__file__).resolve().parent.parent


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
