"""Tasks: one module per model, each a config (`kind:` = the model name) and a `Task` (see `tasks.base`).

`TASKS` is the one list of task kinds: the deployment's `task:` union, the service's factory and the CLI's
`evaluate` choices derive from it. Task classes load when a pipeline is built; evaluation modules (tooling) only
for `edge-runtime evaluate`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union, cast

from pydantic import Field

from edge_runtime.tasks.base import TaskConfigBase
from edge_runtime.tasks.rice_sorter import RiceSorterConfig
from edge_runtime.tasks.vibration_anomaly import VibrationAnomalyConfig
from edge_runtime.tasks.weld_inspector import WeldInspectorConfig

if TYPE_CHECKING:
    from edge_runtime.inference import ModelRunner
    from edge_runtime.tasks.base import Task

__all__ = ["TASKS", "TaskKind", "evaluator", "find_task", "make_task", "task_union"]


@dataclass(frozen=True, slots=True)
class TaskKind:
    name: str  # the `kind:` and the shipped model's name
    config: type[TaskConfigBase]
    task: str  # "module:Class", built as Class(config, runner)
    evaluate: str  # "module:function" of the offline evaluation (tooling)


TASKS: tuple[TaskKind, ...] = (
    TaskKind(
        "vibration_anomaly",
        VibrationAnomalyConfig,
        "edge_runtime.tasks.vibration_anomaly:VibrationAnomalyTask",
        "edge_runtime.tools.evaluate.vibration_anomaly:evaluate",
    ),
    TaskKind(
        "rice_sorter",
        RiceSorterConfig,
        "edge_runtime.tasks.rice_sorter:RiceSorterTask",
        "edge_runtime.tools.evaluate.rice_sorter:evaluate",
    ),
    TaskKind(
        "weld_inspector",
        WeldInspectorConfig,
        "edge_runtime.tasks.weld_inspector:WeldInspectorTask",
        "edge_runtime.tools.evaluate.weld_inspector:evaluate",
    ),
)


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def find_task(name: str) -> TaskKind:
    for kind in TASKS:
        if kind.name == name:
            return kind
    raise KeyError(f"no task {name!r} (known: {[k.name for k in TASKS]})")


def task_union() -> Any:
    return Annotated[Union[tuple(k.config for k in TASKS)], Field(discriminator="kind")]  # noqa: UP007


def make_task(config: TaskConfigBase, runner: ModelRunner) -> Task:
    return cast("Task", _load(find_task(config.kind).task)(config, runner))


def evaluator(name: str) -> Any:
    return _load(find_task(name).evaluate)
