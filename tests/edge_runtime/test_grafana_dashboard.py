"""configs/grafana/edge-runtime.json queries only metrics the service exports (edge_runtime/metrics.py)."""

from __future__ import annotations

import json
import re
from typing import Any

from edge_runtime.paths import repo_root

DASHBOARD = repo_root() / "configs" / "grafana" / "edge-runtime.json"
_FAMILY = re.compile(r"edge_runtime_[a-z0-9_]+")


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    out = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for panel in dashboard["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    return out


def _exported() -> set[str]:
    """Every family `render()` can write: its fixed names, and `<role>_<key>_total` for each counter key the
    code increments (`stats["key"] +=` anywhere in the runtime and the adapters)."""
    metrics_py = (repo_root() / "edge_runtime" / "metrics.py").read_text()
    fixed = {f"edge_runtime_{m}" for m in re.findall(r'\{_P\}_([a-z_]+)"', metrics_py)}
    fixed |= {f"edge_runtime_{m}_total" for m in re.findall(r'counters\.append\(\("([a-z_]+)"', metrics_py)}
    histograms = {f"edge_runtime_{m}" for m in re.findall(r'HistogramMetricFamily\(\s*f"\{_P\}_([a-z_]+)"', metrics_py)}
    fixed |= {f"{h}_{part}" for h in histograms for part in ("bucket", "sum", "count")}
    keys: set[str] = set()
    for py in [*(repo_root() / "edge_runtime").rglob("*.py"), *(repo_root() / "adapters").rglob("*.py")]:
        keys |= set(re.findall(r'stats\["([a-z_]+)"\] \+=', py.read_text()))
        keys |= set(re.findall(r'BurstLog\("[a-z_]+", self\.stats, "([a-z_]+)"\)', py.read_text()))
    roles = {f"edge_runtime_{role}_{key}_total" for role in ("pipeline", "source", "sink") for key in keys}
    return fixed | roles


def test_dashboard_is_valid_and_uses_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "edge-runtime"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # a name pattern (the per-queue `<queue>_dropped` counters) is not one family: checked apart
    exprs = [re.sub(r'__name__=~"[^"]*"', "", e) for e in _exprs(dashboard)]
    used = {m for e in exprs for m in _FAMILY.findall(e)}
    assert used, "the dashboard queries nothing"
    assert used <= _exported(), f"not exported: {sorted(used - _exported())}"
    # the four views the plant asked for
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("throughput", "latency", "delivered", "outbox", "readings"):
        assert topic in titles
