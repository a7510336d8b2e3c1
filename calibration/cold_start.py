"""Cold-start anomaly baseline: judge a score against healthy scores at the same temperature and warm-up time.

A bearing started cold runs with stiff grease and more broadband vibration until it warms up, and an anomaly model
trained on warm machines scores it higher. The baseline (`BaselineCalibration`) models the healthy score quantile as

    q(T, m) = warm_q + slope_per_k * max(0, warm_above_c - T) * exp(-m / tau_min)

(T ambient degC, m minutes since the machine started), fitted from healthy recordings tagged with both; a window
alarms when its score reaches `max(model_threshold, q(T, m) + margin)`. Warm, the model's own threshold rules; cold
and just started, the bar rises by the measured healthy excess and decays back as the machine warms. A real fault
scores far above a healthy machine's excess and still alarms (see `docs/cold.md` for what supports this form).

Usage::

    base = ColdStartBaseline(baseline_calibration)
    alarm = base.judge(score, ambient_c=-25.0, minutes_since_start=4.0, model_threshold=0.5)
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from calibration.files import BaselineCalibration, BaselineCell, Provenance

__all__ = ["ColdStartBaseline", "fit_baseline"]

_T_EDGES = (-60.0, -30.0, -20.0, -10.0, 0.0, 10.0, 60.0)
_M_EDGES = (0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 1e9)


class ColdStartBaseline:
    """The healthy-score bar at a temperature and a time since start."""

    def __init__(self, calibration: BaselineCalibration) -> None:
        self.calibration = calibration

    def expected(self, ambient_c: float, minutes_since_start: float | None) -> float:
        """Healthy score quantile q(T, m); an unknown start time is taken as a fresh start (the cautious bar)."""
        cal = self.calibration
        m = 0.0 if minutes_since_start is None else max(0.0, minutes_since_start)
        excess = cal.slope_per_k * max(0.0, cal.warm_above_c - ambient_c) * math.exp(-m / cal.tau_min)
        return min(1.0, cal.warm_q + excess)

    def threshold(self, ambient_c: float, minutes_since_start: float | None, model_threshold: float) -> float:
        """The score at which a window alarms."""
        return max(model_threshold, min(1.0, self.expected(ambient_c, minutes_since_start) + self.calibration.margin))

    def judge(self, score: float, ambient_c: float, minutes_since_start: float | None, model_threshold: float) -> bool:
        """True when the score is an alarm against the baseline."""
        return score >= self.threshold(ambient_c, minutes_since_start, model_threshold)

    def covers(self, ambient_c: float) -> bool:
        return self.calibration.provenance.covers(ambient_c)


def fit_baseline(
    scores: npt.ArrayLike,
    ambient_c: npt.ArrayLike,
    minutes_since_start: npt.ArrayLike,
    *,
    data: str,
    quantile: float = 0.99,
    warm_above_c: float = 10.0,
    margin: float = 0.02,
) -> BaselineCalibration:
    """Fit the baseline from healthy windows' anomaly scores with their temperature and minutes since start.

    `warm_q` is the quantile of windows that are warm (T >= warm_above_c) or long started (m >= 80 min); `slope_per_k`
    and `tau_min` are fitted by least squares to the per-cell quantile excess (cells of 10 K x warm-up bins), the
    time constant by a grid search over 2-120 minutes. With no cold data the excess is zero (slope 0).
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(ambient_c, dtype=np.float64)
    m = np.asarray(minutes_since_start, dtype=np.float64)
    if not (s.shape == t.shape == m.shape) or s.size == 0:
        raise ValueError("fit_baseline: scores, ambient_c and minutes_since_start must be equal, non-empty lengths")
    warm = (t >= warm_above_c) | (m >= 80.0)
    warm_q = float(np.quantile(s[warm], quantile)) if warm.sum() >= 20 else float(np.quantile(s, 0.5))
    cells: list[BaselineCell] = []
    xs, ys, ms = [], [], []
    for tl, th in itertools.pairwise(_T_EDGES):
        for ml, mh in itertools.pairwise(_M_EDGES):
            sel = (t >= tl) & (t < th) & (m >= ml) & (m < mh)
            n = int(sel.sum())
            if n < 20:
                continue
            q = float(np.quantile(s[sel], quantile))
            cells.append(BaselineCell(temp_lo_c=tl, temp_hi_c=th, minutes_lo=ml, minutes_hi=mh, n=n, score_q=q))
            xs.append(max(0.0, warm_above_c - float(np.median(t[sel]))))
            ms.append(float(np.median(m[sel])))
            ys.append(q - warm_q)
    slope, tau = 0.0, 15.0
    x_arr, m_arr, y_arr = np.asarray(xs), np.asarray(ms), np.asarray(ys)
    cold = x_arr > 0
    if cold.sum() >= 2:
        best = math.inf
        for cand in np.geomspace(2.0, 120.0, 40):
            basis = x_arr[cold] * np.exp(-m_arr[cold] / cand)
            denom = float(basis @ basis)
            if denom <= 0:
                continue
            k = max(0.0, float(basis @ y_arr[cold]) / denom)
            err = float(np.sum((y_arr[cold] - k * basis) ** 2))
            if err < best:
                best, slope, tau = err, k, float(cand)
    lo = float(min(t.min(), warm_above_c - 1.0))
    hi = float(max(t.max(), lo + 1.0))
    return BaselineCalibration(
        kind="baseline",
        provenance=Provenance.today(data, (lo, hi), int(s.size)),
        quantile=quantile,
        warm_q=warm_q,
        warm_above_c=warm_above_c,
        slope_per_k=slope,
        tau_min=tau,
        margin=margin,
        cells=cells,
    )
