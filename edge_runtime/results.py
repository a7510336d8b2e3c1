"""The `Result` value type: what a pipeline produces for one input, as every sink and observer sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True, slots=True)
class Result:
    """One inference outcome. `seq` is strictly increasing per pipeline and survives restarts (the outbox
    allocates it); `fields` holds the task's own fields (`stream`, `label`/`scores`/`decision`, boxes, grains)."""

    pipeline: str
    seq: int
    t_ns: int  # of the input (first sample of a window, capture time of a frame)
    latency_ns: int  # from the pipeline receiving the input to the result being stored
    model: str  # name@version+sha256 prefix
    fields: Mapping[str, Any]

    @property
    def decision(self) -> Any:
        return self.fields.get("decision")

    def to_json(self) -> dict[str, Any]:
        """The wire form sinks deliver: a flat JSON object."""
        return {
            "pipeline": self.pipeline,
            "seq": self.seq,
            "t_ns": self.t_ns,
            "latency_ns": self.latency_ns,
            "model": self.model,
            **self.fields,
        }
