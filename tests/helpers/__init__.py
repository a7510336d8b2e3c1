"""Test helpers shared by every test module: real servers on loopback, never mocks."""

from __future__ import annotations

from adapters.base import free_port

__all__ = ["free_port"]
