"""Weld inspection: find weld regions in a camera frame, classify them, reject the part when one is bad.

The model (`models/weld_inspector`) scores every cell of a 32x32 grid over the frame with
[background, bad_weld, good_weld, defect] probabilities. Post-processing here turns cells into regions:

- a cell is *foreground* when ``1 - p(background) >= foreground``; its class is the best of the three weld
  classes;
- each 8-connected group of foreground cells of one class is a region; its box is the group's cell extent in
  frame pixels, its score the mean probability of its class over its cells; regions smaller than
  ``min_region_cells`` or scoring below ``box_score`` are dropped;
- a frame is rejected when any `bad_weld` or `defect` region scores ``>= reject_score``; a model with a frame
  head (a second output `reject`: the probability that the part is to be rejected, trained on that decision
  directly) decides instead by ``reject >= frame_reject`` when the manifest (or config) sets that threshold,
  and the regions only give the reasons. A frame that
  cannot be inspected (wrong shape or dtype) is rejected too: on a reject line, not knowing is not a pass.

Offline scoring (`edge-runtime evaluate weld_inspector`) lives in `edge_runtime/tools/evaluate/weld_inspector.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from adapters.base import EdgeRuntimeError, Frame, Result, Stats
from edge_runtime.inference import ModelRunner
from edge_runtime.tasks import weld_decode
from edge_runtime.tasks.base import InvalidInputs, TaskConfigBase

__all__ = ["REJECT_LABELS", "WeldInspectorConfig", "WeldInspectorTask"]

REJECT_LABELS = frozenset({"bad_weld", "defect"})

F32 = npt.NDArray[np.float32]


class WeldInspectorConfig(TaskConfigBase):
    """Options of the `weld_inspector` task; a threshold left unset takes the model manifest's value."""

    kind: Literal["weld_inspector"] = Field(description="Task kind.")
    foreground: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Minimum 1 - p(background) for a cell to belong to a region."
    )
    box_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Minimum mean class probability of a region to report it."
    )
    reject_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="A bad_weld or defect region scoring at least this rejects."
    )
    min_region_cells: int | None = Field(
        default=None, ge=1, description="Smallest region, in grid cells (one cell = 1/32 of the frame side)."
    )
    region_min_score: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Evaluation only: mean foreground over a labelled box below which the box counts as missed.",
    )
    frame_reject: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Models with a frame head: reject the frame when its reject probability is at least this.",
    )
    nms_iou: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Box detectors (2.x): per-class NMS IoU threshold."
    )
    flip_average: bool | None = Field(
        default=None,
        description=(
            "Box detectors: also run each frame mirrored left-right and average the two passes (better boxes, "
            "twice the model's time per frame); unset: the manifest's `preprocessing.flip_average`."
        ),
    )


class WeldInspectorTask:
    """Frames in, per-frame boxes and an accept/reject decision out; one batched inference per call."""

    name = "weld_inspector"

    def __init__(self, config: WeldInspectorConfig, runner: ModelRunner) -> None:
        manifest = runner.manifest
        th = manifest.thresholds

        def pick(value: float | None, key: str) -> float:
            if value is not None:
                return float(value)
            if key not in th:
                raise EdgeRuntimeError(f"weld_inspector: manifest of {runner.ident} has no threshold '{key}'")
            return float(th[key])

        self.config = config
        self.runner = runner
        self.stats = Stats()
        self.labels: list[str] = list(manifest.labels)
        # a box detector (2.x) has a `boxes` output; its post-processing is edge_runtime.tasks.weld_decode
        self.detector = any(o.name == "boxes" for o in manifest.outputs)
        self.box_score = pick(config.box_score, "box_score")
        self.reject_score = pick(config.reject_score, "reject_score")
        if self.detector:
            self.nms_iou = pick(config.nms_iou, "nms_iou")
            self.ap_min_score = float(th.get("ap_min_score", 0.05))
        else:
            self.foreground = pick(config.foreground, "foreground")
            self.min_region_cells = round(pick(config.min_region_cells, "min_region_cells"))
            self.region_min_score = pick(config.region_min_score, "region_min_score")
        spec = manifest.inputs[0]
        self.input_name = spec.name
        self.scores_name = manifest.outputs[0].name
        # the optional frame head: an output named `reject`, shape (batch,)
        self.frame_name = next((o.name for o in manifest.outputs if o.name == "reject"), None)
        # a manifest without `frame_reject` ships the head unused (it did not beat the region rule when tuned)
        use_head = self.frame_name is not None and (config.frame_reject is not None or "frame_reject" in th)
        self.frame_reject = pick(config.frame_reject, "frame_reject") if use_head else None
        self.size = int(manifest.preprocessing.get("input_size", spec.shape[1]))
        flip = config.flip_average
        self.flip_average = bool(manifest.preprocessing.get("flip_average", False) if flip is None else flip)
        self.grid = (0, 0)
        if self.flip_average:
            # the mirrored pass is averaged location by location: the locations must be one known grid
            stride = int(manifest.preprocessing.get("stride", 0))
            locations = (
                next((o.shape[1] for o in manifest.outputs if o.name == "scores"), None) if self.detector else None
            )
            if not stride or self.size % stride or locations != (self.size // stride) ** 2:
                origin = "the task config" if flip is not None else "the manifest (preprocessing.flip_average)"
                raise EdgeRuntimeError(
                    f"weld_inspector: flip_average is on ({origin}) but {runner.ident} has no single grid of "
                    f"locations to mirror (stride {stride or 'unset'}, input {self.size} px, {locations or 'no'} "
                    f"`scores` locations); set `flip_average: false` in the task config to run it single pass"
                )
            self.grid = (self.size // stride, self.size // stride)
        self._invalid = InvalidInputs(self.stats, "invalid_frames", runner.ident)

    # ------------------------------------------------------------------ inference

    def _valid(self, image: Any) -> bool:
        return (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.shape[0] >= 8
            and image.shape[1] >= 8
        )

    def model_input(
        self, images: Sequence[npt.NDArray[np.uint8]], *, mirrored: bool | None = None
    ) -> npt.NDArray[np.uint8]:
        """The tensor the model runs on: each image resized into one preallocated batch, followed (`mirrored`,
        by default `flip_average`) by the same images mirrored left-right, for one inference call."""
        import cv2

        n = len(images)
        mirrored = self.flip_average if mirrored is None else mirrored
        batch = np.empty((2 * n if mirrored else n, self.size, self.size, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            cv2.resize(img, (self.size, self.size), dst=batch[i], interpolation=cv2.INTER_LINEAR)
        if mirrored:
            batch[n:] = batch[:n, :, ::-1]
        return batch

    def infer(self, images: Sequence[npt.NDArray[np.uint8]]) -> tuple[F32, F32 | None]:
        """Per-cell probabilities (n, 4, G, G) and, with a frame head, frame reject probabilities (n,) for valid
        BGR images (grid models: `flip_average` is refused for them)."""
        out = self.runner.run({self.input_name: self.model_input(images)})
        frame = None if self.frame_name is None else np.asarray(out[self.frame_name], dtype=np.float32).reshape(-1)
        return np.asarray(out[self.scores_name], dtype=np.float32), frame

    def detect(
        self, images: Sequence[npt.NDArray[np.uint8]], score_threshold: float | None = None
    ) -> tuple[list[weld_decode.Detections], F32 | None]:
        """Box detectors: per-frame NMS detections (normalised xyxy) and frame reject probabilities."""
        n = len(images)
        out = self.runner.run({self.input_name: self.model_input(images)})
        scores = np.asarray(out["scores"], dtype=np.float32)
        boxes = np.asarray(out["boxes"], dtype=np.float32)
        frame = None if self.frame_name is None else np.asarray(out[self.frame_name], dtype=np.float32).reshape(-1)
        if self.flip_average:
            scores, boxes = weld_decode.merge_flipped(scores, boxes, self.grid)
            frame = None if frame is None else (frame[:n] + frame[n:]) * np.float32(0.5)
        thr = self.box_score if score_threshold is None else score_threshold
        dets = [
            weld_decode.decode(s, b, score_threshold=thr, iou_threshold=self.nms_iou)
            for s, b in zip(scores, boxes, strict=True)
        ]
        return dets, frame

    def scores(self, images: Sequence[npt.NDArray[np.uint8]]) -> F32:
        """Per-cell probabilities (n, 4, G, G) only."""
        return self.infer(images)[0]

    def regions(self, probs: F32, width: float, height: float, *, decimals: int | None = 1) -> list[dict[str, Any]]:
        """Connected same-class foreground cells of one frame's (4, G, G) map, as boxes in frame pixels
        (rounded to `decimals`; `None` keeps full precision, as evaluation in normalised units needs)."""
        import cv2

        def rnd(v: float) -> float:
            return v if decimals is None else round(v, decimals)

        grid_h, grid_w = probs.shape[1:]
        fg = 1.0 - probs[0]
        cls = np.argmax(probs[1:], axis=0)
        sx, sy = width / grid_w, height / grid_h
        boxes: list[dict[str, Any]] = []
        for c, label in enumerate(self.labels):
            mask = ((fg >= self.foreground) & (cls == c)).astype(np.uint8)
            if not mask.any():
                continue
            n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            mean = np.bincount(comp.ravel(), weights=probs[c + 1].ravel(), minlength=n) / np.maximum(
                stats[:, cv2.CC_STAT_AREA], 1
            )
            for k in range(1, n):
                x, y, w, h, area = (int(v) for v in stats[k])
                if area < self.min_region_cells or mean[k] < self.box_score:
                    continue
                boxes.append(
                    {
                        "x": rnd(x * sx),
                        "y": rnd(y * sy),
                        "w": rnd(w * sx),
                        "h": rnd(h * sy),
                        "label": label,
                        "score": round(float(mean[k]), 4),
                    }
                )
        boxes.sort(key=lambda b: -b["score"])
        return boxes

    def decide(self, boxes: list[dict[str, Any]], frame_score: float | None = None) -> tuple[str, list[str]]:
        """Decision and reasons. Without a frame score (no frame head): reject on any bad region. With one, the
        frame head decides; the reasons are the bad regions found, or `frame_score` when it found none."""
        reasons = sorted({b["label"] for b in boxes if b["label"] in REJECT_LABELS and b["score"] >= self.reject_score})
        if frame_score is None or self.frame_reject is None:
            return ("reject" if reasons else "accept"), reasons
        if frame_score >= self.frame_reject:
            return "reject", reasons or ["frame_score"]
        return "accept", []

    def process(self, frames: Sequence[Frame]) -> list[Result]:
        """One result per frame, in order: `decision` accept/reject, `boxes` and `reject_reasons` in `detail`."""
        ok = [i for i, f in enumerate(frames) if self._valid(f.image)]
        results = [
            Result(
                pipeline="",
                stream=f.stream,
                t_ns=f.t_ns,
                decision="reject",
                detail={"boxes": [], "reject_reasons": ["invalid_frame"]},
            )
            for f in frames
        ]
        detail = ""
        if len(ok) < len(frames):
            bad = next(f for i, f in enumerate(frames) if i not in set(ok))
            shape, dtype = getattr(bad.image, "shape", None), getattr(bad.image, "dtype", None)
            detail = f" stream={bad.stream} shape={shape} dtype={dtype}"
        self._invalid.record(len(frames) - len(ok), len(frames), detail)
        if not ok:
            return results
        images = [frames[i].image for i in ok]
        if self.detector:
            dets, frame = self.detect(images)
        else:
            probs, frame = self.infer(images)
        for j, i in enumerate(ok):
            h, w = frames[i].image.shape[:2]
            frame_score = None if frame is None else float(frame[j])
            if self.detector:
                boxes = weld_decode.to_dicts(dets[j], self.labels, w, h, min_score=self.box_score)
                decision, reasons = weld_decode.decide(
                    dets[j],
                    self.labels,
                    REJECT_LABELS,
                    reject_score=self.reject_score,
                    frame_prob=frame_score,
                    frame_reject=self.frame_reject,
                )
            else:
                boxes = self.regions(probs[j], w, h)
                decision, reasons = self.decide(boxes, frame_score)
            results[i] = Result(
                pipeline="",
                stream=frames[i].stream,
                t_ns=frames[i].t_ns,
                decision=decision,
                score=frame_score,
                values={"n_boxes": len(boxes)},
                detail={"boxes": boxes, "reject_reasons": reasons},
            )
        self.stats["frames"] += len(ok)
        return results
