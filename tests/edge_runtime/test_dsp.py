from __future__ import annotations

import numpy as np

from edge_runtime.dsp import resample_windows, source_window_length


def test_window_length_at_source_rate() -> None:
    assert source_window_length(2048, 12_000, 48_000) == 8192
    assert source_window_length(2048, 12_000, 12_000) == 2048


def test_downsampling_keeps_a_tone_away_from_the_edges() -> None:
    t = np.arange(8192) / 48_000
    x = np.sin(2 * np.pi * 1000 * t)
    y = resample_windows(np.stack([x, 2 * x]), 2048)
    ref = np.sin(2 * np.pi * 1000 * np.arange(2048) / 12_000)
    assert y.shape == (2, 2048) and y.dtype == np.float32
    assert np.abs(y[0, 64:-64] - ref[64:-64]).max() < 0.01
    assert np.allclose(y[1], 2 * y[0], atol=1e-5)


def test_removes_content_above_the_new_nyquist() -> None:
    t = np.arange(8192) / 48_000
    alias = np.sin(2 * np.pi * 10_000 * t)  # above 6 kHz: must vanish, not fold back
    y = resample_windows(alias, 2048)
    assert np.abs(y[64:-64]).max() < 0.02


def test_same_length_is_identity() -> None:
    x = np.random.default_rng(0).normal(size=(3, 100))
    assert np.allclose(resample_windows(x, 100), x, atol=1e-6)
