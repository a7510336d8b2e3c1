"""Readers of the labelled data-set layouts that `evaluate`, the benchmarks and training use (never the service).

- class folders (`rice_grains/<variety>/*.jpg`): `read_class_folders`;
- recordings (`cwru_bearing/labels.csv` + `recordings/*.npz`): `read_recordings`, and `load_excerpt` for the
  bundled excerpt when the data set is absent;
- YOLO (`weld_photos/images`, `labels`, `data.yaml`): `read_yolo_labels`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from adapters.base import EdgeRuntimeError

__all__ = ["DataSetError", "Recording", "load_excerpt", "read_class_folders", "read_recordings", "read_yolo_labels"]

EXCERPT = "cwru_excerpt.npz"


class DataSetError(EdgeRuntimeError):
    """A labelled data directory is unusable: missing index or column, unreadable file, unknown class."""


@dataclass(frozen=True, slots=True)
class Recording:
    """One labelled drive-end recording: raw samples in g at `fs_hz`."""

    source: str
    signal: npt.NDArray[np.float32]
    fs_hz: float
    fault: str
    load_hp: int | None = None
    rpm: float | None = None


def _optional_float(value: str | float | None) -> float | None:
    """A missing, empty or NaN cell is None."""
    if value is None or value == "":
        return None
    number = float(value)
    return None if np.isnan(number) else number


def read_recordings(data_dir: Path) -> list[Recording]:
    """Read a `labels.csv` + `recordings/*.npz` directory (the cwru_bearing layout).

    Needs the columns `file` and `fault` (or a `fault` array in each npz) and the rate from `fs_hz` (column or
    array); `load_hp` and `rpm` are optional. The signal is the npz's `de` array.
    """
    index = Path(data_dir) / "labels.csv"
    try:
        with index.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise DataSetError(f"{index}: not found (expected the cwru_bearing layout)") from exc
    recordings = []
    for line, row in enumerate(rows, start=2):
        if not row.get("file"):
            raise DataSetError(f"{index}:{line}: no `file` column or empty file name")
        path = index.parent / row["file"]
        try:
            with np.load(path) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise DataSetError(f"{index}:{line}: cannot read {path}: {exc}") from exc
        fs = _optional_float(row.get("fs_hz")) or (float(arrays["fs_hz"]) if "fs_hz" in arrays else None)
        fault = row.get("fault") or (str(arrays["fault"]) if "fault" in arrays else None)
        if fs is None or fault is None or "de" not in arrays:
            raise DataSetError(f"{index}:{line}: {row['file']} needs fs_hz, fault and a `de` array")
        load = _optional_float(row.get("load_hp"))
        recordings.append(
            Recording(
                source=row["file"],
                signal=np.asarray(arrays["de"], dtype=np.float32).ravel(),
                fs_hz=fs,
                fault=fault,
                load_hp=None if load is None else int(load),
                rpm=_optional_float(row.get("rpm")),
            )
        )
    return recordings


def load_excerpt() -> list[Recording]:
    """The bundled excerpt (a few seconds per class, see `edge_runtime/data/README.md`) for installs without data."""
    ref = resources.files("edge_runtime") / "data" / EXCERPT
    with resources.as_file(ref) as path, np.load(path) as npz:
        n = int(npz["count"])
        return [
            Recording(
                source=str(npz["source"][i]),
                signal=npz[f"signal_{i}"].astype(np.float32),
                fs_hz=float(npz["fs_hz"][i]),
                fault=str(npz["fault"][i]),
                load_hp=int(npz["load_hp"][i]),
                rpm=_optional_float(float(npz["rpm"][i])),
            )
            for i in range(n)
        ]


def read_class_folders(data_dir: Path, labels: Sequence[str]) -> list[tuple[Path, int]]:
    """(image, class index) of a `<variety>/*.jpg|png` directory; a folder naming an unknown variety is an error."""
    data_dir = Path(data_dir)
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
    unknown = [p.name for p in folders if p.name not in labels]
    if unknown:
        raise DataSetError(f"{data_dir}: folders {unknown} are not among the model's varieties {list(labels)}")
    items = [
        (f, labels.index(p.name))
        for p in folders
        for f in sorted(p.iterdir())
        if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"}
    ]
    if not items:
        raise DataSetError(f"{data_dir}: no images in <variety>/ folders")
    return items


def split_class_folders(data_dir: Path, labels: Sequence[str], seed: int) -> dict[str, list[tuple[Path, int]]]:
    """Seeded split, stratified per class, 80/10/10 over `<label>/*.jpg` (train/val/test): the rice split that
    training, the size prior's fit and the model card share."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[Path, int]]] = {"train": [], "val": [], "test": []}
    for k, variety in enumerate(labels):
        files = sorted((data_dir / variety).glob("*.jpg"))
        order = rng.permutation(len(files))
        n_val = n_test = len(files) // 10
        for j, idx in enumerate(order):
            part = "val" if j < n_val else "test" if j < n_val + n_test else "train"
            out[part].append((files[idx], k))
    return out


def read_yolo_labels(path: Path) -> npt.NDArray[np.float64]:
    """A YOLO label file as (n, 5) [class, cx, cy, w, h] (normalised); a missing file is an empty frame."""
    if not path.is_file():
        return np.zeros((0, 5))
    rows = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        arr = np.array([[float(v) for v in r[:5]] for r in rows], dtype=np.float64).reshape(-1, 5)
    except ValueError as exc:
        raise DataSetError(f"{path}: not a YOLO label file: {exc}") from exc
    return arr
