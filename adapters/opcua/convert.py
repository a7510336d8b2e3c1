"""Conversions between OPC UA values and the product's: timestamps (UTC epoch ns) and status codes (quality)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.base import Quality

__all__ = ["EPOCH", "dt_to_ns", "ns_to_dt", "status_quality"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def dt_to_ns(dt: datetime) -> int:
    """asyncua hands out naive UTC datetimes (100 ns ticks rounded to microseconds)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return ((dt - EPOCH) // _US) * 1000


def ns_to_dt(t_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=t_ns // 1000)


def status_quality(status: Any) -> Quality:
    """A StatusCode's severity: Good -> good, Uncertain -> uncertain, Bad -> bad."""
    if status.is_good():
        return "good"
    if status.is_uncertain():
        return "uncertain"
    return "bad"
