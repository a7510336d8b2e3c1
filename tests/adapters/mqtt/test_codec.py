"""Payload codecs (adapters.mqtt.codec): property tests of the f32le block format and the JSON document, and a
fuzz test of the whole decode path of the source (codec, stream name, sanity check) under hostile payloads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from adapters.mqtt.codec import MalformedPayloadError, decode_f32le, decoder_for, encode_f32le, encode_json_block
from adapters.mqtt.config import MqttConfig, MqttSubscription
from adapters.mqtt.source import MqttSource, _Message
from adapters.supervise import check_sample


@given(arrays(np.float32, st.integers(1, 4096)))
def test_f32le_round_trip(samples: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    payload = encode_f32le(samples)
    assert len(payload) == 4 * samples.size
    out = decode_f32le(payload)
    assert out.dtype == np.float32
    assert out.flags.writeable
    np.testing.assert_array_equal(out.view(np.uint32), samples.view(np.uint32))  # bit-exact, NaNs included


@given(st.binary(min_size=0, max_size=64).filter(lambda b: len(b) % 4 != 0 or not b))
def test_f32le_rejects_partial_floats(payload: bytes) -> None:
    with pytest.raises(ValueError):
        decode_f32le(payload)


@given(arrays(np.float32, st.integers(1, 512), elements=st.floats(-100, 100, width=32)), st.integers(0, 2**62))
def test_json_block_is_what_the_json_decoder_reads(samples: np.ndarray[Any, np.dtype[np.float32]], t0: int) -> None:
    """The simulated gateway's JSON documents and the source's decoder agree on the format."""
    decode = decoder_for(MqttSubscription(topic="a", unit="m/s2"))
    d = decode(encode_json_block(samples, rate_hz=12_000.0, t0_ns=t0, unit="g"), {}, 0)
    assert (d.t_ns, d.rate_hz, d.unit, d.quality) == (t0, 12_000.0, "g", "good")
    np.testing.assert_array_equal(d.value, samples.astype(np.float64))


def test_f32le_properties_override_the_subscription() -> None:
    decode = decoder_for(MqttSubscription(topic="a", codec="f32le", rate_hz=100, unit="g"))
    d = decode(encode_f32le([1.0, 2.0]), {"rate_hz": "2000", "t0_ns": "5", "unit": "mg"}, 10**9)
    assert (d.t_ns, d.rate_hz, d.unit) == (5, 2000.0, "mg")
    d = decode(encode_f32le([1.0, 2.0]), {}, 10**9)
    assert (d.t_ns, d.rate_hz, d.unit) == (10**9 - 20_000_000, 100.0, "g")  # ends on arrival
    with pytest.raises(MalformedPayloadError, match="t0_ns"):
        decode(encode_f32le([1.0]), {"t0_ns": "soon"}, 0)


_JSON_ATOMS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_JSON = st.recursive(
    _JSON_ATOMS, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner)
)
_KEYS = st.sampled_from(["value", "quality", "unit", "t_ns", "ts", "rate_hz"])


def _payloads() -> st.SearchStrategy[bytes]:
    import json

    docs = st.dictionaries(_KEYS, _JSON, max_size=6).map(lambda d: json.dumps(d).encode())
    deep = st.integers(1, 200_000).map(lambda n: b"[" * n)
    return st.one_of(st.binary(max_size=256), _JSON.map(lambda v: json.dumps(v).encode()), docs, deep)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["json", "f32le"]),
    _payloads(),
    st.dictionaries(st.sampled_from(["rate_hz", "t0_ns", "unit"]), st.text(max_size=12), max_size=3),
)
def test_fuzz_no_payload_escapes_the_source_and_every_refusal_is_counted(
    codec: str, payload: bytes, user_props: dict[str, str]
) -> None:
    """Any payload in either codec either becomes a sane Reading or is counted in stats["malformed"]."""
    source = MqttSource(
        MqttConfig.model_validate({"kind": "mqtt", "id": "gw", "subscriptions": [{"topic": "t/#", "codec": codec}]})
    )
    msg = _Message(0, "t/x", payload, user_props, 1_700_000_000_000_000_000)
    reading = source._guard(source._decode, msg)
    if reading is None:
        assert source.stats["malformed"] == 1
    else:
        assert source.stats["malformed"] == 0
        assert check_sample(reading) is reading
        assert reading.value.dtype.kind == "f"
