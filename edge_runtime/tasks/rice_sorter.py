"""Rice purity sorter: eject off-type and broken grains of a declared variety on a chute (model `rice_sorter`).

A frame shows grains on a dark plate; `edge_runtime.tasks.rice_segment.segment` finds and crops them. The model
takes the uint8 crop batch as `x` (conversion and normalisation live inside the graph) and returns the variety
softmax `probs`.

A grain is ejected when the declared variety's probability is below `min_confidence` (off-type or doubtful), when
it is shorter than `broken_length_ratio` x the declared variety's median length (broken), or when it is part of a
blob that could not be split into single grains. The ejector channel of a grain is `floor(cx / width * channels)`.
Where the manifest has a size prior (`edge_runtime.tasks.rice_size`), the probabilities are weighed with each
grain's size at the configured camera scale before any decision, and the scale is checked against the grains.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from adapters.base import EdgeRuntimeError, Frame, Result, Stats
from adapters.supervise import BurstLog
from edge_runtime.inference import ModelRunner
from edge_runtime.tasks.base import InvalidInputs, TaskConfigBase
from edge_runtime.tasks.rice_segment import Grains, SegmentParams, segment
from edge_runtime.tasks.rice_size import ScaleCheck, SizePrior, size_features

log = logging.getLogger("edge_runtime.tasks.rice_sorter")

__all__ = ["MODEL_NAME", "VARIETIES", "RiceSorterConfig", "RiceSorterTask"]

MODEL_NAME = "rice_sorter"
VARIETIES = ("Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag")
# `work_scale: 2` was measured without extra loss down to the shortest variety's median grain at 40 px (Karacadag at
# the simulator's scale 0.35); at 34 and 28 px it lost up to 3 more validation photographs of 1,500
HALF_RES_MIN_LENGTH_PX = 35


class RiceSorterConfig(TaskConfigBase):
    """The pipeline's `task:` for a rice chute camera."""

    kind: Literal["rice_sorter"] = Field(description="Task kind.")
    declared_variety: str = Field(description="Variety of the lot on the line; every other variety is ejected.")
    ejector_channels: int = Field(
        default=8, ge=1, description="Air-jet channels across the chute width; channel = floor(cx / width * n)."
    )
    min_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Keep a grain only when the declared variety's probability reaches this; raising it trades "
        "yield for purity. null uses the manifest's `thresholds.min_confidence`.",
    )
    broken_length_ratio: float = Field(
        default=0.7,
        gt=0.0,
        le=1.0,
        description="A grain shorter than this x the declared variety's median length is broken and ejected.",
    )
    scale_px_per_dataset_px: float = Field(
        default=1.0,
        gt=0.0,
        description="Camera pixels per pixel of the training photographs; scales the manifest's median grain "
        "length and area, and the size prior, to this camera.",
    )
    size_prior: bool = Field(
        default=True,
        description="Weigh the variety probabilities with each grain's size (the manifest's `size_prior`). It "
        "needs scale_px_per_dataset_px right within 5 %: it applies once the first 100 grains of the declared "
        "variety confirm the scale, and is off, with a warning, while they show another. false: the network alone.",
    )
    threshold: int | None = Field(
        default=None,
        ge=1,
        le=254,
        description="Fixed grey level separating grains from the plate; null picks one per frame (Otsu, floored).",
    )
    min_area_px: int | None = Field(
        default=None, ge=1, description="Blobs smaller than this (camera px) are specks; null scales the manifest's."
    )
    split_area_ratio: float = Field(
        default=1.6,
        gt=1.0,
        description="A blob larger than this x the declared median area is split as touching grains.",
    )
    work_scale: Literal[1, 2] = Field(
        default=1,
        description="2: find and measure the grains at half the frame's resolution (the colour is still cut at full "
        "resolution), for about 0.75x of the segmentation's CPU; the shipped models were trained on full-resolution "
        "cuts and lose up to 0.2 point of validation accuracy that way (models/rice_sorter/CARD.md). Meant for "
        "grains of 35 px and longer; with shorter ones the task warns at start-up.",
    )
    eject_merged: bool = Field(
        default=True, description="Eject blobs of touching grains that could not be split (they cannot be judged)."
    )
    crops_per_call: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Most grain crops per model call: a batch of frames (hundreds of grains) runs in chunks of "
        "this. Small chunks keep the network's activations in the CPU cache: 32 gives the int8 network 8 % more "
        "crops per CPU second than 192 (benchmarks/bench_rice.py).",
    )


class RiceSorterTask:
    """Classifies every grain of a batch of frames (in model calls of `crops_per_call` crops) and decides which ejector
    channels fire."""

    def __init__(self, config: RiceSorterConfig, runner: ModelRunner) -> None:
        manifest = runner.manifest
        self.name = MODEL_NAME
        self.config = config
        self.runner = runner
        self.stats = Stats()
        self.labels = list(manifest.labels)
        if config.declared_variety not in self.labels:
            raise EdgeRuntimeError(
                f"model {runner.ident}: declared_variety '{config.declared_variety}' is not one of {self.labels}"
            )
        self.declared = self.labels.index(config.declared_variety)
        pre = manifest.preprocessing
        scale = config.scale_px_per_dataset_px
        self.median_length_px = float(pre["median_length_px"][config.declared_variety]) * scale
        median_area = float(pre["median_area_px"][config.declared_variety]) * scale * scale
        overrides: dict[str, Any] = {"expected_area_px": median_area, "split_area_ratio": config.split_area_ratio}
        overrides["threshold"] = config.threshold
        overrides["work_scale"] = config.work_scale
        overrides["min_area_px"] = (
            config.min_area_px if config.min_area_px is not None else max(1, round(pre["min_area_px"] * scale**2))
        )
        self.params = SegmentParams.from_preprocessing(pre, **overrides)
        shortest = min(float(v) for v in pre["median_length_px"].values()) * scale
        if config.work_scale > 1 and shortest < HALF_RES_MIN_LENGTH_PX:
            log.warning(
                "event=rice_work_scale_small_grains model=%s work_scale=%d shortest_median_length_px=%.0f: grains "
                "under %d px lose shape at half resolution (validation accuracy falls further); use work_scale 1",
                runner.ident,
                config.work_scale,
                shortest,
                HALF_RES_MIN_LENGTH_PX,
            )
        if config.min_confidence is not None:
            self.min_confidence = config.min_confidence
        else:
            self.min_confidence = float(manifest.thresholds.get("min_confidence", 0.5))
        self.input_name = manifest.inputs[0].name
        prior = SizePrior.from_manifest(pre, self.labels, runner.ident) if config.size_prior else None
        self.size_prior = prior
        # against the median length (of the training photographs, like the measure): a variety's lengths are skewed
        median_log_length = math.log(float(pre["median_length_px"][config.declared_variety]))
        self.scale_check = None if prior is None else ScaleCheck(median_log_length)
        self._invalid = InvalidInputs(self.stats, "invalid_frames", runner.ident)
        self._failed = BurstLog("rice_segment_failed", self.stats, "segment_errors")
        self.stats["segment_errors"] = 0  # exported at 0 from the start: an alert sees its first step

    def classify(self, crops: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Variety probabilities (N, n_labels) for a crop batch, in model calls of `crops_per_call` crops; an empty
        batch does not call the model."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        step = self.config.crops_per_call
        parts = [self.runner.run({self.input_name: crops[a : a + step]})["probs"] for a in range(0, len(crops), step)]
        probs: npt.NDArray[np.float32] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return probs

    def weigh(
        self,
        probs: npt.NDArray[np.float32],
        features: npt.NDArray[np.float64],
        merged: npt.NDArray[np.bool_],
        weighed: npt.NDArray[np.float32],
    ) -> npt.NDArray[np.float32]:
        """One frame's probabilities: `weighed` (the network's weighed with the grains' sizes, the size prior) once
        the grains confirm the camera scale, else `probs`; unsplit clumps say nothing about the scale and are left
        out of that. Frame by frame, so the frame that confirms the scale is the first one weighed."""
        check = self.scale_check
        if check is None or len(probs) == 0:
            return probs
        scale = self.config.scale_px_per_dataset_px
        was = check.ok, check.ratio is not None
        check.update(features[(probs.argmax(axis=1) == self.declared) & ~merged, 0])
        measured = scale * (check.ratio or 1.0)
        if check.ratio is not None and (check.ok, True) != was:
            if check.ok:
                log.info("event=rice_scale_ok model=%s configured_scale=%g measured_scale=%.3g: size prior on",
                         self.runner.ident, scale, measured)  # fmt: skip
            else:
                log.warning(
                    "event=rice_scale_mismatch model=%s declared=%s configured_scale=%g measured_scale=%.3g: the "
                    "size prior is off and the broken-grain length is wrong; set scale_px_per_dataset_px",
                    self.runner.ident,
                    self.config.declared_variety,
                    scale,
                    measured,
                )
        if not check.ok:
            self.stats["size_prior_off"] += len(probs)
            return probs
        return weighed

    def decide(
        self, grains: Grains, probs: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Per grain: off-type, broken, eject."""
        off_type = probs[:, self.declared] < self.min_confidence
        broken = grains.length_px < self.config.broken_length_ratio * self.median_length_px
        eject = off_type | broken
        if self.config.eject_merged:
            eject |= grains.merged
        return off_type, broken, eject

    def process(self, items: Sequence[Frame]) -> list[Result]:
        """One result per frame, in order; an unreadable frame gives `decision: invalid`, never an error. So does a
        frame the segmentation fails on (counted in `segment_errors`, logged with the error once per burst): the
        other frames of the batch keep their decisions rather than the whole batch failing."""
        if not items:
            return []
        found: list[Grains | None] = []
        n_bad = 0
        for frame in items:
            img = frame.image
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or img.size == 0:
                found.append(None)
                n_bad += 1
                continue
            try:
                found.append(segment(img, self.params))
            except Exception as exc:  # a frame that triggers a segmentation bug costs that frame only
                found.append(None)
                self._failed(model=self.runner.ident, stream=frame.stream, t_ns=frame.t_ns, error=repr(exc)[:200])
                log.debug("event=rice_segment_failed stream=%s t_ns=%d", frame.stream, frame.t_ns, exc_info=True)
        self._invalid.record(n_bad, len(items))
        crops = [g.crops for g in found if g is not None and len(g)]
        s = self.params.crop_size
        probs = self.classify(np.concatenate(crops) if crops else np.zeros((0, 3, s, s), dtype=np.uint8))
        # the size prior's arithmetic for every grain of the batch at once (row by row, so the same numbers as
        # frame by frame); which frames take it is decided frame by frame in `weigh`
        features = weighed = None
        if self.size_prior is not None and len(probs):
            sized = [g for g in found if g is not None]
            features = size_features(
                np.concatenate([g.length_px for g in sized]),
                np.concatenate([g.width_px for g in sized]),
                np.concatenate([g.area_px for g in sized]),
                self.config.scale_px_per_dataset_px,
            )
            weighed = self.size_prior.weigh(probs, features)
        results: list[Result] = []
        start = 0
        for frame, grains in zip(items, found, strict=True):
            if grains is None:
                results.append(
                    Result(
                        pipeline="",
                        stream=frame.stream,
                        t_ns=frame.t_ns,
                        decision="invalid",
                        values={"n_grains": 0},
                        detail={"grains": [], "eject_channels": [], "counts": {}},
                    )
                )
                continue
            end = start + len(grains)
            p = probs[start:end]
            if features is not None and weighed is not None:
                p = self.weigh(p, features[start:end], grains.merged, weighed[start:end])
            start = end
            results.append(self._frame_result(frame, grains, p))
        return results

    def _frame_result(self, frame: Frame, grains: Grains, probs: npt.NDArray[np.float32]) -> Result:
        width = frame.image.shape[1]
        n_ch = self.config.ejector_channels
        channel = np.clip((grains.centers[:, 0] / width * n_ch).astype(np.int64), 0, n_ch - 1)
        top = probs.argmax(axis=1)
        _, broken, eject = self.decide(grains, probs)
        counts = np.bincount(top, minlength=len(self.labels))
        # one rounding and one tolist() per column instead of a conversion per grain and field (float64 first, so
        # the rounded values are the shortest decimals, as Python's round gives them)
        labels = self.labels
        p64 = probs.astype(np.float64)
        rows = [
            {
                "x": b[0],
                "y": b[1],
                "w": b[2],
                "h": b[3],
                "variety": labels[t],
                "score": score,
                "declared_score": declared,
                "length_px": length,
                "broken": br,
                "merged": mg,
                "eject": ej,
                "channel": ch,
            }
            for b, t, score, declared, length, br, mg, ej, ch in zip(
                grains.boxes.tolist(),
                top.tolist(),
                np.round(p64[np.arange(len(top)), top], 4).tolist(),
                np.round(p64[:, self.declared], 4).tolist(),
                np.round(grains.length_px.astype(np.float64), 1).tolist(),
                broken.tolist(),
                grains.merged.tolist(),
                eject.tolist(),
                channel.tolist(),
                strict=True,
            )
        ]
        return Result(
            pipeline="",
            stream=frame.stream,
            t_ns=frame.t_ns,
            decision="eject" if bool(eject.any()) else "keep",
            values={
                "n_grains": len(grains),
                "n_ejected": int(eject.sum()),
                "n_broken": int(broken.sum()),
                "n_merged": int(grains.merged.sum()),
            },
            detail={
                "grains": rows,
                "eject_channels": sorted({int(c) for c in channel[eject]}),
                "counts": {lab: int(c) for lab, c in zip(self.labels, counts, strict=True)},
            },
        )
