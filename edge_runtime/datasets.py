"""Where the shared data sets live: `../shared/datasets/<name>` beside the checkout (CI and developers) or
beside the working directory. Data sets are read in place, never copied into the repository."""

from __future__ import annotations

from pathlib import Path

__all__ = ["repo_root", "shared_dataset"]


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def shared_dataset(name: str) -> Path | None:
    for base in (repo_root().parent, Path.cwd().parent, Path.cwd()):
        candidate = base / "shared" / "datasets" / name
        if candidate.is_dir():
            return candidate
    return None
