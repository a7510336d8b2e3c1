"""Model swap while running: a new version in a pipeline's model folder, or another `model:` after a reload, is
loaded and verified, run in shadow (edge_runtime.shadow) and swapped in by the pipeline without a stop.

The folder is polled (`service.model_watch_s`) by name, size and modification time of its manifest and ONNX files:
cheap, and it works on every file system a gateway has (inotify does not see files replaced over NFS or by some
copy tools). A copy in progress is seen as several changes; each is tried, and the sha256 check refuses the ones
that are not whole, so the last one, complete, is the one that runs in shadow. Install a version by copying the
ONNX files first and the manifest last, or by renaming a complete folder into place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from edge_runtime.config import ModelRef, PipelineConfig
from edge_runtime.inference import ModelError, ModelRunner, folder_fingerprint, load_model
from edge_runtime.pipeline import Pipeline
from edge_runtime.shadow import Shadow, Verdict
from edge_runtime.tasks.base import Task

__all__ = ["ModelWatch", "RunnerKey", "load_candidate", "runner_key"]

log = logging.getLogger("edge_runtime.modelswap")

Fingerprint = tuple[tuple[str, int, int], ...]
RunnerKey = tuple[str, str | None, int]  # the variant as the config names it (None: the manifest default)


def runner_key(ref: ModelRef) -> RunnerKey:
    return (ref.name, ref.variant, ref.intra_op_threads)


def load_candidate(ref: ModelRef) -> ModelRunner:
    """Always from the files (never a cached session): the point is to see what is in the folder now."""
    return load_model(ref.name, variant=ref.variant, intra_op_threads=ref.intra_op_threads)


class ModelWatch:
    """Per pipeline, the model folder's fingerprint last acted on, and the shadow runs it starts."""

    def __init__(
        self,
        make_task: Callable[[PipelineConfig, ModelRunner], Task],
        on_swapped: Callable[[RunnerKey, ModelRunner], None],
    ) -> None:
        self._make_task = make_task
        self._on_swapped = on_swapped
        self._seen: dict[str, Fingerprint] = {}

    def note(self, pipeline_id: str, ref: ModelRef) -> None:
        """The folder as it is when the pipeline's model was (re)loaded: changes are counted from here."""
        self._seen[pipeline_id] = folder_fingerprint(ref.name)

    async def poll(self, pairs: Iterable[tuple[Pipeline, PipelineConfig]]) -> None:
        loaded: dict[RunnerKey, ModelRunner | ModelError] = {}  # pipelines sharing a folder load it once
        for pipeline, cfg in pairs:
            fingerprint = await asyncio.to_thread(folder_fingerprint, cfg.model.name)
            if self._seen.get(pipeline.id) == fingerprint:
                continue
            first = pipeline.id not in self._seen
            self._seen[pipeline.id] = fingerprint
            if first:
                continue
            key = runner_key(cfg.model)
            if key not in loaded:
                try:
                    loaded[key] = await asyncio.to_thread(load_candidate, cfg.model)
                except ModelError as exc:
                    loaded[key] = exc
            got = loaded[key]
            if isinstance(got, ModelError):
                pipeline.stats["model_swaps_refused"] += 1
                log.error(
                    "event=model_swap_refused pipeline=%s folder=%s running=%s stays: %s",
                    pipeline.id,
                    cfg.model.name,
                    pipeline.model_ident,
                    got,
                )
                continue
            self.offer(pipeline, cfg, got)

    def offer(self, pipeline: Pipeline, cfg: PipelineConfig, runner: ModelRunner) -> bool:
        """Shadow `runner` in `pipeline`, unless it is what already runs or is already in shadow there; whether
        it is in shadow now (False: it is the running model, e.g. an unset variant now named as the default)."""
        if pipeline.shadow is not None and pipeline.shadow.ident == runner.ident:
            return True
        if runner.ident == pipeline.model_ident:
            pipeline.cancel_shadow("the folder holds the running version again")
            return False
        key = runner_key(cfg.model)

        def settled(_: Pipeline, __: Shadow, verdict: Verdict) -> None:
            if verdict.swap:
                self._on_swapped(key, runner)

        shadow = Shadow(self._make_task(cfg, runner), runner.ident, cfg.model.shadow_inputs, cfg.model.min_agreement)
        pipeline.start_shadow(shadow, on_verdict=settled)
        return True

    async def run(self, interval_s: float, pairs: Callable[[], list[tuple[Pipeline, PipelineConfig]]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll(pairs())
            except Exception as exc:  # the watch must never take the service down; the running models stay
                log.error("event=model_watch_failed error=%r", exc)
