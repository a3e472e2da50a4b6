"""sfu.rtp: RTP header parsing/building (RFC 3550 §5.1) and extensions (RFC 8285)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp import (
    RtpHeader,
    audio_level,
    build_extensions,
    build_packet,
    is_rtcp,
    parse_extensions,
    seq_newer,
)


def test_round_trip_with_one_byte_extensions() -> None:
    ext = build_extensions([(1, b"3"), (2, b"\x9e")])
    assert ext[:2] == b"\xbe\xde" and len(ext) % 4 == 0
    data = build_packet(payload_type=111, sequence_number=65535, timestamp=0xFFFFFFFF,
                        ssrc=0x01020304, marker=True, extensions=ext, payload=b"opus!")
    h = RtpHeader.parse(data)
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc, h.marker) == (
        111, 65535, 0xFFFFFFFF, 0x01020304, True)
    assert h.extensions == {1: b"3", 2: b"\x9e"}
    assert data[h.payload_offset : h.payload_end] == b"opus!"
    assert audio_level(h.extensions[2]) == (True, 30)


def test_two_byte_form_when_values_are_long() -> None:
    ext = build_extensions([(1, b"x" * 20)])
    assert ext[:2] == b"\x10\x00"
    data = build_packet(payload_type=96, sequence_number=1, timestamp=1, ssrc=1, marker=False,
                        extensions=ext, payload=b"p")
    assert RtpHeader.parse(data).extensions == {1: b"x" * 20}


def test_padding_and_csrcs() -> None:
    body = build_packet(payload_type=96, sequence_number=1, timestamp=1, ssrc=1, marker=False,
                        extensions=b"", payload=b"abc", csrcs=struct.pack("!II", 5, 6))
    padded = bytes([body[0] | 0x20]) + body[1:] + b"\x00\x00\x03"
    h = RtpHeader.parse(padded)
    assert h.csrcs == struct.pack("!II", 5, 6)
    assert padded[h.payload_offset : h.payload_end] == b"abc"


def test_one_byte_padding_and_reserved_id() -> None:
    assert parse_extensions(0xBEDE, b"\x00\x00\x10\xaa") == {1: b"\xaa"}
    assert parse_extensions(0xBEDE, b"\xf0\x10\xaa\x00") == {}  # id 15 ends processing
    assert parse_extensions(0x1234, b"\x10\xaa") == {}  # unknown profile: ignored


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80" * 11,
        b"\x40" + b"\x00" * 11,  # version 1
        b"\x8f" + b"\x00" * 20,  # 15 CSRCs announced
        b"\x90\x00" + b"\x00" * 10 + b"\xbe\xde\x00\x05",  # extension longer than packet
        b"\x90\x00" + b"\x00" * 10 + b"\xbe\xde\x00\x01\x3f\x00\x00\x00",  # element overrun
        b"\xa0\x00" + b"\x00" * 10 + b"\x00",  # zero padding count
        b"\xa0\x00" + b"\x00" * 10 + b"\xff",  # padding longer than packet
        b"\x80\xc8" + b"\x00" * 10,  # PT 72: RTCP range
    ],
)
def test_malformed_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        RtpHeader.parse(data)


def test_sequence_arithmetic_and_demux() -> None:
    assert seq_newer(1, 65535) and not seq_newer(65535, 1) and not seq_newer(5, 5)
    assert is_rtcp(b"\x80\xc8") and not is_rtcp(b"\x80\x60")


@given(st.binary(max_size=200))
def test_parse_never_fails_otherwise(data: bytes) -> None:
    try:
        h = RtpHeader.parse(data)
    except ValueError:
        return
    assert 12 <= h.payload_offset <= h.payload_end <= len(data)


@given(st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)),
                max_size=6, unique_by=lambda e: e[0]),
       st.binary(max_size=50), st.integers(0, 127), st.integers(0, 0xFFFF))
def test_build_parse_round_trip(elements: list[tuple[int, bytes]], payload: bytes, pt: int,
                                seq: int) -> None:
    if 72 <= pt <= 76:
        pt = 96
    data = build_packet(payload_type=pt, sequence_number=seq, timestamp=7, ssrc=9, marker=False,
                        extensions=build_extensions(elements), payload=payload)
    h = RtpHeader.parse(data)
    assert h.extensions == dict(elements)
    assert data[h.payload_offset : h.payload_end] == payload
    assert (h.payload_type, h.sequence_number) == (pt, seq)


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    """A valid packet (CSRCs, RFC 8285 extensions in either form, padding), then one of the
    mutations bench.fuzz sends: a bit flip, a cut, a lying CSRC count, extension length or
    padding count."""
    elements = draw(st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=20)),
                             max_size=4, unique_by=lambda e: e[0]))
    csrcs = draw(st.binary(max_size=60).map(lambda b: b[: len(b) // 4 * 4]))
    data = bytearray(build_packet(payload_type=96, sequence_number=draw(st.integers(0, 0xFFFF)),
                                  timestamp=1, ssrc=2, marker=False, csrcs=csrcs,
                                  extensions=build_extensions(elements),
                                  payload=draw(st.binary(max_size=40))))
    if draw(st.booleans()):
        pad = draw(st.integers(1, 20))
        data[0] |= 0x20
        data += bytes(pad - 1) + bytes([pad])
    kind = draw(st.sampled_from(["flip", "cut", "cc", "ext", "pad", "none"]))
    if kind == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "cc":
        data[0] = (data[0] & 0xF0) | draw(st.integers(0, 15))
    elif kind == "ext" and data[0] & 0x10:
        at = 12 + 4 * (data[0] & 0x0F) + 2
        data[at : at + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    elif kind == "pad":
        data[0] |= 0x20
        data[-1] = draw(st.integers(0, 255))
    return bytes(data)


@given(mutated_packets())
def test_mutated_packets_parse_consistently_or_are_refused(data: bytes) -> None:
    try:
        h = RtpHeader.parse(data)
    except ValueError:
        return
    assert 12 + len(h.csrcs) <= h.payload_offset <= h.payload_end <= len(data)
    assert len(h.csrcs) == 4 * (data[0] & 0x0F)
    assert all(1 <= i <= 255 and len(v) <= 255 for i, v in h.extensions.items())
    if h.padding:  # RFC 3550 §5.1: the last octet counts the padding, itself included
        assert h.payload_end == len(data) - data[-1]
