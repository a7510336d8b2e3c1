"""Test helpers shared by every test module: real servers on loopback, never mocks."""

from __future__ import annotations

from edge_runtime.broker import free_port

__all__ = ["free_port"]
