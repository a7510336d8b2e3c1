"""Payload codecs: how a subscription's messages become values, and how the simulated gateway encodes blocks.

A decoder is chosen once per subscription at start-up (a closure over its defaults), so the hot path only calls
it. Decoders raise `MalformedPayloadError` on input they recognise as bad; whatever else hostile input makes
them raise, the source's `DecodeGuard` counts and skips the message, so the stream never ends on a payload.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from adapters.base import EdgeRuntimeError, Quality, dumps
from adapters.mqtt.config import MqttSubscription

__all__ = [
    "Decoded",
    "Decoder",
    "MalformedPayloadError",
    "decode_f32le",
    "decoder_for",
    "encode_f32le",
    "encode_json_block",
]

_QUALITIES: frozenset[str] = frozenset({"good", "uncertain", "bad"})


class MalformedPayloadError(EdgeRuntimeError, ValueError):
    """A payload this subscription cannot decode; counted, never raised out of the stream."""


def encode_f32le(samples: npt.ArrayLike) -> bytes:
    """The `f32le` payload of a block: its samples as little-endian float32, nothing else."""
    return np.ascontiguousarray(samples, dtype="<f4").tobytes()


def decode_f32le(payload: bytes | bytearray) -> npt.NDArray[np.float32]:
    """Samples of an `f32le` payload (a writable native float32 array); ValueError if not whole floats."""
    if not payload or len(payload) % 4:
        raise MalformedPayloadError(f"f32le payload of {len(payload)} bytes is not a whole number of float32")
    return np.frombuffer(payload, dtype="<f4").astype(np.float32)


def encode_json_block(samples: npt.ArrayLike, *, rate_hz: float, t0_ns: int, unit: str = "") -> bytes:
    """The `json` document of a waveform block (what a gateway without MQTT 5 properties would send)."""
    doc: dict[str, Any] = {"value": np.asarray(samples), "t_ns": t0_ns, "rate_hz": rate_hz}
    if unit:
        doc["unit"] = unit
    return dumps(doc).encode()


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedPayloadError(f"{what} is not a number: {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError) as exc:
        raise MalformedPayloadError(f"{what} is not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise MalformedPayloadError(f"{what} is not finite: {value!r}")
    return number


def _rate(value: Any) -> float:
    rate_hz = _as_float(value, "rate_hz")
    if not rate_hz > 0:
        raise MalformedPayloadError(f"rate_hz must be > 0, got {rate_hz}")
    return rate_hz


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded message, before the source names its stream."""

    t_ns: int
    value: npt.NDArray[Any]
    rate_hz: float | None
    quality: Quality
    unit: str


Decoder = Callable[[bytes, Mapping[str, str], int], Decoded]  # (payload, user properties, arrival ns)


def _json_decoder(sub: MqttSubscription) -> Decoder:
    def decode(payload: bytes, props: Mapping[str, str], recv_ns: int) -> Decoded:
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedPayloadError(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            doc = {"value": doc}
        raw = doc.get("value")
        quality = doc.get("quality", "good")
        if quality not in ("good", "uncertain", "bad"):  # a tuple: an unhashable quality compares unequal
            raise MalformedPayloadError(f"quality {quality!r} is not one of {sorted(_QUALITIES)}")
        unit = doc.get("unit", sub.unit)
        if not isinstance(unit, str):
            raise MalformedPayloadError(f"unit is not a string: {unit!r}")
        if "t_ns" in doc:
            t_raw = doc["t_ns"]
            if isinstance(t_raw, bool) or not isinstance(t_raw, int):
                raise MalformedPayloadError(f"t_ns is not an integer: {t_raw!r}")
            t_ns = t_raw
        elif "ts" in doc:
            t_ns = round(_as_float(doc["ts"], "ts") * 1e9)
        else:
            t_ns = recv_ns
        if isinstance(raw, list):
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw):
                raise MalformedPayloadError("value list holds something other than numbers (null, text, lists)")
            try:
                value = np.asarray(raw, dtype=np.float64)
            except (TypeError, ValueError, OverflowError) as exc:
                raise MalformedPayloadError(f"value list is not numeric: {exc}") from exc
            if value.ndim != 1 or value.size == 0:
                raise MalformedPayloadError(f"value list must be a non-empty flat list, got shape {value.shape}")
            rate = doc.get("rate_hz", sub.rate_hz)
            if rate is None:
                raise MalformedPayloadError("a waveform block needs rate_hz (in the document or the subscription)")
            return Decoded(t_ns, value, _rate(rate), quality, unit)
        if raw is None:
            raise MalformedPayloadError("no value")
        if isinstance(raw, str):
            raise MalformedPayloadError(f"value is not a number: {raw!r}")
        return Decoded(t_ns, np.asarray(_as_float(raw, "value"), dtype=np.float64), None, quality, unit)

    return decode


def _f32le_decoder(sub: MqttSubscription) -> Decoder:
    def decode(payload: bytes, props: Mapping[str, str], recv_ns: int) -> Decoded:
        samples = decode_f32le(payload)
        rate = props.get("rate_hz", sub.rate_hz)
        if rate is None:
            raise MalformedPayloadError("f32le block without a rate_hz user property and no subscription rate_hz")
        rate_hz = _rate(rate)
        if "t0_ns" in props:
            try:
                t_ns = int(props["t0_ns"])
            except ValueError as exc:
                raise MalformedPayloadError(f"t0_ns is not an integer: {props['t0_ns']!r}") from exc
        else:  # the gateway sent the block when its last sample arrived
            t_ns = recv_ns - round(samples.size / rate_hz * 1e9)
        return Decoded(t_ns, samples, rate_hz, "good", props.get("unit", sub.unit))

    return decode


_DECODERS: dict[str, Callable[[MqttSubscription], Decoder]] = {"json": _json_decoder, "f32le": _f32le_decoder}


def decoder_for(sub: MqttSubscription) -> Decoder:
    """The decoder of a subscription's `codec`, bound to its defaults (`unit`, `rate_hz`)."""
    return _DECODERS[sub.codec](sub)
