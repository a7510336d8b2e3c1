"""MQTT (v5, paho-mqtt 2.x): a source of readings (device kind `mqtt`), a result sink (sink kind `mqtt`) and a
simulated vibration gateway.

Modules: `config` (pydantic models), `codec` (payload decoders and encoders), `connection` (the paho client on
its own thread), `source` (`MqttSource`), `sink` (`MqttSink`), `simulator` (the gateway and `simulate`). Only
`config` loads with the registry; paho is imported when a component opens.

Payloads a subscription decodes (its `codec`):

- `json`: a bare number (`21.5`), or a document
  `{"value": number | [numbers], "t_ns": int | "ts": float seconds, "rate_hz": float, "quality": str, "unit": str}`.
  A list is a waveform block and needs a rate (from the document or the subscription's `rate_hz`).
- `f32le`: the raw block of little-endian float32 samples, nothing else in the payload. The block's metadata
  travels in MQTT 5 user properties: `rate_hz` (sample rate) and `t0_ns` (UTC epoch ns of the first sample).
  Without `rate_hz` the subscription's `rate_hz` applies; without `t0_ns` the block is taken to end on arrival.
  Properties instead of a header keep the payload a plain array any tool can write (`numpy.tobytes()`), and
  keep metadata readable in broker tools; the one design, see docs/mqtt.md.

A payload that cannot be decoded is counted (`malformed`), logged once per burst and skipped.

Connection loss: paho's own network thread reconnects with exponential back-off (`reconnect_min_s` ..
`reconnect_max_s`) and `on_connect` subscribes again, so `MqttSource.stream()` does not end on an outage; it
counts `disconnects`. `MqttSink.deliver()` refuses at once while disconnected and otherwise waits for the
broker's PUBACK (QoS 1) or PUBCOMP (QoS 2), so a result is never acknowledged before the broker holds it.
A publish that timed out may still reach the broker after a reconnect: delivery is at-least-once, consumers
de-duplicate by (`pipeline`, `seq`).
"""

from __future__ import annotations

from adapters.mqtt.config import MqttConfig, MqttSinkConfig
from adapters.registry import Kind

__all__ = ["KINDS"]

KINDS = (
    Kind(
        "mqtt",
        "device",
        MqttConfig,
        component="adapters.mqtt.source:MqttSource",
        simulator="adapters.mqtt.simulator:simulate",
    ),
    Kind("mqtt", "sink", MqttSinkConfig, component="adapters.mqtt.sink:MqttSink"),
)
