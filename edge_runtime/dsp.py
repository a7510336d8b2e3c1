"""Signal helpers shared by training, evaluation and the live pipeline, so all three see identical inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["cut_windows", "resample_windows", "source_window_length", "windows_of"]


def source_window_length(window: int, model_rate_hz: float, source_rate_hz: float) -> int:
    """Samples to cut at the source rate so that, resampled, they span exactly `window` model samples."""
    return round(window * source_rate_hz / model_rate_hz)


def resample_windows(x: npt.NDArray[Any], n_out: int) -> npt.NDArray[np.float32]:
    """Resample the last axis to `n_out` samples by spectrum truncation or zero-padding.

    Ideal low-pass for downsampling (48 kHz -> 12 kHz has no aliasing), exact for windows, vectorised over a
    batch. Per-window resampling keeps the pipeline stateless across blocks of any length.
    """
    n_in = x.shape[-1]
    if n_in == n_out:  # a copy: windows must not alias a ring buffer that is about to be overwritten
        return np.array(x, dtype=np.float32, copy=True)
    spec = np.fft.rfft(np.asarray(x, dtype=np.float64), axis=-1)
    keep = n_out // 2 + 1
    if spec.shape[-1] >= keep:
        spec = spec[..., :keep]
    else:
        pad = [(0, 0)] * (spec.ndim - 1) + [(0, keep - spec.shape[-1])]
        spec = np.pad(spec, pad)
    out: npt.NDArray[np.float64] = np.fft.irfft(spec, n=n_out, axis=-1) * (n_out / n_in)
    return out.astype(np.float32)


def cut_windows(x: npt.NDArray[np.float32], n_src: int, hop_src: int, window: int) -> npt.NDArray[np.float32]:
    """Every window of `n_src` source samples starting each `hop_src`, resampled to `window` samples: the one
    cut that training, `evaluate` and the live ring buffers share, shape (n, window)."""
    if x.size < n_src:
        return np.empty((0, window), dtype=np.float32)
    return resample_windows(np.lib.stride_tricks.sliding_window_view(x, n_src)[::hop_src], window)


def _model_geometry(preprocessing: Mapping[str, Any]) -> tuple[int, float, int]:
    return int(preprocessing["window"]), float(preprocessing["rate_hz"]), int(preprocessing["hop"])


def windows_of(
    signal: npt.NDArray[Any],
    fs_hz: float,
    preprocessing: Mapping[str, Any],
    hop: int | None = None,
    *,
    span: float = 1.0,
) -> npt.NDArray[np.float32]:
    """Cut `signal` into model windows, shape (n, window), exactly as the live pipeline does.

    Windows start every `hop` model samples (default: the manifest's `hop`); each cuts
    `source_window_length(window, rate_hz, fs_hz)` source samples and resamples them with
    `dsp.resample_windows` (both through `dsp.cut_windows`). `span` != 1 cuts a longer or shorter stretch
    (a speed change, for training only).
    """
    window, rate_hz, default_hop = _model_geometry(preprocessing)
    hop = default_hop if hop is None else hop
    if hop < 1:
        raise ValueError(f"hop must be >= 1 model sample, got {hop}")
    n_src = source_window_length(window, rate_hz, fs_hz * span)
    hop_src = max(1, round(hop * fs_hz / rate_hz))
    return cut_windows(np.asarray(signal, dtype=np.float32).ravel(), n_src, hop_src, window)
