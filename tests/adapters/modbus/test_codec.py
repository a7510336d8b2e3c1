"""Round trips and known vectors of the Modbus register codec (adapters.modbus.codec)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.modbus.codec import (
    NUMERIC_DTYPES,
    ORDERS,
    decode_bits,
    decoder,
    decoder_at,
    encode,
    encode_string,
    raw_limits,
    register_count,
)

NUMERIC = sorted(NUMERIC_DTYPES)


def _values(dtype: str) -> st.SearchStrategy[list[float]]:
    if dtype.startswith("float"):
        floats = st.floats(width=32, allow_nan=False) if dtype == "float32" else st.floats(allow_nan=False)
        return st.lists(floats, min_size=1, max_size=20)
    info = np.iinfo(NUMERIC_DTYPES[dtype])
    return st.lists(st.integers(int(info.min), int(info.max)), min_size=1, max_size=20)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", NUMERIC)
@given(data=st.data())
def test_numeric_round_trip(dtype: str, order: str, data: st.DataObject) -> None:
    values = data.draw(_values(dtype))
    gap = data.draw(st.integers(0, 3))
    width = register_count(dtype)
    regs = encode(dtype, order, np.array(values, dtype=NUMERIC_DTYPES[dtype]))
    assert regs.shape == (len(values), width)
    # lay the values out in one response with holes between them, as a merged read would
    stride = width + gap
    block = np.full(len(values) * stride + 1, 0xBEEF, dtype=np.uint16)
    offsets = np.arange(len(values), dtype=np.intp) * stride + 1
    for i, off in enumerate(offsets):
        block[off : off + width] = regs[i]
    expected = np.array(values, dtype=NUMERIC_DTYPES[dtype].replace(">", "="))
    # the same values through the per-call decoder and through the one the read plan builds (offsets fixed)
    for decoded in (decoder(dtype, order)(block, offsets), decoder_at(dtype, order, offsets)(block)):
        assert decoded.dtype == expected.dtype
        np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("order", ORDERS)
def test_nan_and_inf_survive(order: str) -> None:
    values = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)
    regs = encode("float32", order, values).reshape(-1)
    out = decoder("float32", order)(regs, np.array([0, 2, 4, 6]))
    assert np.array_equal(out.view(np.uint32), values.view(np.uint32))
    fixed = decoder_at("float32", order, np.array([0, 2, 4, 6]))(regs)
    assert np.array_equal(fixed.view(np.uint32), values.view(np.uint32))


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x42F6, 0xE979]),
        ("CDAB", [0xE979, 0x42F6]),
        ("BADC", [0xF642, 0x79E9]),
        ("DCBA", [0x79E9, 0xF642]),
    ],
)
def test_float32_known_vectors(order: str, words: list[int]) -> None:
    """123.456f is 0x42F6E979: the four orders as device manuals print them."""
    assert struct.pack(">f", 123.456).hex() == "42f6e979"
    regs = np.array(words, dtype=np.uint16)
    assert decoder("float32", order)(regs, np.array([0]))[0] == np.float32(123.456)
    assert encode("float32", order, [123.456])[0].tolist() == words


def test_int64_word_swap_reverses_all_words() -> None:
    value = 0x0102030405060708
    assert encode("int64", "ABCD", [value])[0].tolist() == [0x0102, 0x0304, 0x0506, 0x0708]
    assert encode("int64", "CDAB", [value])[0].tolist() == [0x0708, 0x0506, 0x0304, 0x0102]
    assert encode("int64", "DCBA", [value])[0].tolist() == [0x0807, 0x0605, 0x0403, 0x0201]
    assert encode("int64", "BADC", [value])[0].tolist() == [0x0201, 0x0403, 0x0605, 0x0807]


def test_sixteen_bit_ignores_word_order() -> None:
    regs = np.array([0xFF38], dtype=np.uint16)  # -200 as int16
    assert decoder("int16", "ABCD")(regs, np.array([0]))[0] == -200
    assert decoder("int16", "CDAB")(regs, np.array([0]))[0] == -200
    assert decoder("int16", "BADC")(regs, np.array([0]))[0] == np.int16(np.uint16(0x38FF).view(np.int16))


@given(bits=st.lists(st.booleans(), min_size=16, max_size=16))
def test_bits_of_a_status_word(bits: list[bool]) -> None:
    word = sum(1 << i for i, b in enumerate(bits) if b)
    regs = np.array([0, word], dtype=np.uint16)
    out = decode_bits(regs, np.ones(16, dtype=np.intp), np.arange(16, dtype=np.uint16))
    assert out.tolist() == bits


@pytest.mark.parametrize("order", ORDERS)
@given(text=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=10))
def test_string_round_trip(order: str, text: str) -> None:
    regs = encode_string(text, order, 5)
    assert regs.shape == (5,)
    assert decoder("string", order, 5)(regs, np.array([0]))[0] == text


def test_raw_limits_cast_safely() -> None:
    for dtype in NUMERIC:
        lo, hi = raw_limits(dtype)
        wire = np.dtype(NUMERIC_DTYPES[dtype])
        assert np.array([lo, hi]).astype(wire).astype(np.float64).tolist() == [lo, hi]


def test_register_counts() -> None:
    assert [register_count(d) for d in ("bool", "bit", "int16", "float32", "int64", "float64")] == [1, 1, 1, 2, 4, 4]
    assert register_count("string", 7) == 7
    with pytest.raises(ValueError, match="length"):
        register_count("string")
    with pytest.raises(ValueError, match="order"):
        decoder("float32", "XYZW")
