"""The registry of protocol kinds: every `kind:` a deployment may name, and what builds it.

Each protocol is one package under `adapters/` whose `__init__.py` declares `KINDS`, a tuple of `Kind`s. The
config unions (`edge_runtime.config`), the service's factories, `edge-runtime simulate` and the CLI's choices are
all derived from here, so adding a protocol is one new package and nothing else::

    # adapters/s7/__init__.py
    from adapters.registry import Kind
    from adapters.s7.config import S7Config

    KINDS = (Kind("s7", "device", S7Config, source="adapters.s7.source:S7Source",
                  simulator="adapters.s7.simulator:simulate"),)

Only config modules (pydantic) load with the registry; a source, sink or simulator module, and with it its
protocol library, is imported when that component is built, so `validate` stays fast.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union, cast

from pydantic import Field

from adapters.base import DeviceConfigBase, Sink, SinkConfigBase, Source

__all__ = [
    "Kind",
    "Simulate",
    "config_union",
    "find",
    "kinds",
    "make_sink",
    "make_source",
    "plan_report",
    "run_simulator",
    "simulator",
]

Role = Literal["device", "sink"]
Simulate = Callable[..., Awaitable[None]]  # simulate(config, *, port: str | None, stop: asyncio.Event)


@dataclass(frozen=True, slots=True)
class Kind:
    """One `kind:` value: its config model and where its component, simulator and plan report live."""

    name: str
    role: Role
    config: type[DeviceConfigBase] | type[SinkConfigBase]
    component: str  # "module:Class" of the Source or Sink, built as Class(config)
    simulator: str | None = None  # "module:function": async simulate(config, *, port, stop)
    report: str | None = None  # "module:function": report(config) -> str, for `validate --plan`


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@cache
def kinds() -> tuple[Kind, ...]:
    """Every registered kind, protocol packages in name order (so the JSON schema is stable)."""
    import adapters

    found: list[Kind] = []
    for info in sorted(pkgutil.iter_modules(adapters.__path__), key=lambda m: m.name):
        if info.ispkg:
            module = importlib.import_module(f"adapters.{info.name}")
            found.extend(getattr(module, "KINDS", ()))
    for role in ("device", "sink"):
        role_names = [k.name for k in found if k.role == role]
        dupes = {n for n in role_names if role_names.count(n) > 1}
        if dupes:
            raise RuntimeError(f"adapters: {role} kind(s) registered twice: {sorted(dupes)}")
    return tuple(found)


def find(role: Role, name: str) -> Kind:
    for k in kinds():
        if k.role == role and k.name == name:
            return k
    raise KeyError(f"no {role} kind {name!r} (known: {sorted(k.name for k in kinds() if k.role == role)})")


def config_union(role: Role) -> Any:
    """The discriminated union (on `kind`) of every config model of a role, for pydantic."""
    models = tuple(k.config for k in kinds() if k.role == role)
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007 (a runtime tuple of models)


def make_source(config: DeviceConfigBase) -> Source:
    return cast(Source, _load(find("device", config.kind).component)(config))


def make_sink(config: SinkConfigBase) -> Sink:
    return cast(Sink, _load(find("sink", config.kind).component)(config))


def simulator(config: DeviceConfigBase) -> Simulate | None:
    ref = find("device", config.kind).simulator
    return cast(Simulate, _load(ref)) if ref else None


def plan_report(config: DeviceConfigBase) -> str | None:
    ref = find("device", config.kind).report
    return cast(Callable[[DeviceConfigBase], str], _load(ref))(config) if ref else None


async def run_simulator(config: DeviceConfigBase, *, port: str | None, stop: asyncio.Event) -> None:
    sim = simulator(config)
    if sim is None:
        raise KeyError(f"device kind {config.kind!r} has no simulator")
    await sim(config, port=port, stop=stop)
