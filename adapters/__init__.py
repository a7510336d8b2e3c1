"""Protocol adapters: one package per protocol (`modbus`, `opcua`, `mqtt`, `camera`), each split by role
(`config`, `source`, `sink`, `simulator`, and `codec`/`plan`/`probe` where it has them) and registering its kinds
once in its `__init__.py` (see `adapters.registry`). Leaves of the import graph: never import `edge_runtime`.

Shared pieces: `adapters.base` (value types `Reading`, `Frame`, `Result`; the `Source`/`Sink` protocols; the
error tree; the one JSON encoder), `adapters.supervise` (back-off, reconnecting supervisor, outage and burst
logs), `adapters.loopback` (free ports for simulated machines).
"""
