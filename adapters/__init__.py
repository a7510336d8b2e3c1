"""Protocol adapters: one module per protocol (`modbus`, `opcua`, `mqtt`, `camera`), each with its source,
its sink where it has one, and its simulated machines. Leaves of the import graph: never import `edge_runtime`."""

from adapters.base import (
    AdapterError,
    Backoff,
    DeliveryError,
    EdgeRuntimeError,
    Frame,
    Quality,
    Reading,
    Sample,
    Sink,
    Source,
    Stats,
    StrictModel,
    now_ns,
    supervise,
)

__all__ = [
    "AdapterError",
    "Backoff",
    "DeliveryError",
    "EdgeRuntimeError",
    "Frame",
    "Quality",
    "Reading",
    "Sample",
    "Sink",
    "Source",
    "Stats",
    "StrictModel",
    "now_ns",
    "supervise",
]
