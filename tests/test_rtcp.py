"""sfu.rtcp: SR/RR (RFC 3550 §6.4), NACK/PLI (RFC 4585 §6), FIR (RFC 5104), REMB."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtcp import (
    Fir,
    Nack,
    Other,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    SenderReport,
    ntp_now,
    parse_compound,
)


def test_compound_round_trip() -> None:
    block = ReportBlock(7, fraction_lost=12, cumulative_lost=-3, highest_sequence=70000,
                        jitter=9, lsr=0x11223344, dlsr=65536)
    data = (bytes(SenderReport(1, ntp_now(1.7e9), 1234, 10, 2000, [block]))
            + bytes(ReceiverReport(2, [block])) + bytes(Pli(3, 4))
            + bytes(Fir(5, [(6, 7), (8, 9)])) + bytes(Nack(10, 11, [100, 101, 116, 117, 200]))
            + bytes(Remb(12, 1_500_000, [13, 14])))
    sr, rr, pli, fir, nack, remb = parse_compound(data)
    assert isinstance(sr, SenderReport) and (sr.ssrc, sr.rtp_timestamp, sr.packets,
                                             sr.octets) == (1, 1234, 10, 2000)
    assert sr.ntp >> 32 == int(1.7e9) + 2208988800
    assert isinstance(rr, ReceiverReport)
    got = rr.reports[0]
    assert (got.ssrc, got.fraction_lost, got.cumulative_lost, got.highest_sequence, got.jitter,
            got.lsr, got.dlsr) == (7, 12, -3, 70000, 9, 0x11223344, 65536)
    assert isinstance(pli, Pli) and (pli.sender_ssrc, pli.media_ssrc) == (3, 4)
    assert isinstance(fir, Fir) and fir.entries == [(6, 7), (8, 9)]
    assert isinstance(nack, Nack) and sorted(nack.lost) == [100, 101, 116, 117, 200]
    assert isinstance(remb, Remb) and remb.ssrcs == [13, 14]
    assert abs(remb.bitrate - 1_500_000) / 1_500_000 < 0.001


def test_nack_packs_bitmask() -> None:
    data = bytes(Nack(1, 2, [65535, 0, 15]))  # wraps: one FCI entry covers all
    assert len(data) == 16
    (nack,) = parse_compound(data)
    assert isinstance(nack, Nack) and sorted(nack.lost) == [0, 15, 65535]


def test_unknown_types_are_skipped() -> None:
    sdes = bytes([0x81, 202, 0, 1]) + b"\x00\x00\x00\x01"
    packets = parse_compound(sdes + bytes(Pli(1, 2)))
    assert isinstance(packets[0], Other) and isinstance(packets[1], Pli)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9",
        bytes(Pli(1, 2))[:-1],
        b"\x81\xce\x00\x09" + bytes(12),  # length runs past the datagram
        b"\x41\xc9\x00\x01" + bytes(4),  # version 1
        b"\x81\xc8\x00\x01" + bytes(4),  # SR too short for its report block
        b"\x81\xcd\x00\x01" + bytes(4),  # feedback without media SSRC
        b"\x84\xce\x00\x03" + bytes(12),  # FIR entry cut
        b"\x8f\xce\x00\x04" + bytes(8) + b"REMB\x05\x00\x00\x00",  # REMB claims 5 SSRCs
        b"\xa1\xc9\x00\x01" + b"\x00\x00\x00\x09",  # padding longer than the body
    ],
)
def test_lying_or_truncated_packets_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_compound(data)


@given(st.binary(max_size=120))
def test_parse_never_fails_otherwise(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except ValueError:
        return
    kinds = (SenderReport, ReceiverReport, Pli, Fir, Nack, Remb, Other)
    assert packets and all(isinstance(p, kinds) for p in packets)


@given(st.integers(0, 2**40), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40))
def test_remb_and_nack_round_trip(bitrate: int, lost: list[int]) -> None:
    (remb,) = parse_compound(bytes(Remb(1, bitrate, [2])))
    assert isinstance(remb, Remb) and remb.bitrate <= bitrate
    assert bitrate - remb.bitrate <= bitrate >> 17  # 18-bit mantissa precision
    (nack,) = parse_compound(bytes(Nack(1, 2, lost)))
    assert isinstance(nack, Nack) and sorted(set(nack.lost)) == sorted(set(lost))


@st.composite
def mutated_compounds(draw: st.DrawFn) -> bytes:
    """A valid compound of the packets the SFU reads, then one lie: a length field, a
    report count, a padding count, a cut, a bit flip."""
    ssrc = st.integers(0, 0xFFFFFFFF)
    block = st.builds(ReportBlock, ssrc)
    one = st.one_of(
        st.builds(lambda s, b: bytes(SenderReport(s, 1, 2, 3, 4, b)), ssrc,
                  st.lists(block, max_size=3)),
        st.builds(lambda s, b: bytes(ReceiverReport(s, b)), ssrc, st.lists(block, max_size=3)),
        st.builds(lambda s, m: bytes(Pli(s, m)), ssrc, ssrc),
        st.builds(lambda s, e: bytes(Fir(s, e)), ssrc,
                  st.lists(st.tuples(ssrc, st.integers(0, 255)), min_size=1, max_size=3)),
        st.builds(lambda s, m, lost: bytes(Nack(s, m, lost)), ssrc, ssrc,
                  st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=30)),
        st.builds(lambda s, r, ss: bytes(Remb(s, r, ss)), ssrc, st.integers(0, 2**40),
                  st.lists(ssrc, max_size=4)),
    )
    packets = [bytearray(p) for p in draw(st.lists(one, min_size=1, max_size=4))]
    i = draw(st.integers(0, len(packets) - 1))
    p = packets[i]
    kind = draw(st.sampled_from(["length", "count", "pad", "cut", "flip", "none"]))
    if kind == "length":
        p[2:4] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    elif kind == "count":
        p[0] = (p[0] & 0xE0) | draw(st.integers(0, 31))
    elif kind == "pad":
        p[0] |= 0x20
        p[-1] = draw(st.integers(0, 255))
    elif kind == "flip":
        j = draw(st.integers(0, len(p) - 1))
        p[j] ^= 1 << draw(st.integers(0, 7))
    data = b"".join(packets)
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    return data


@given(mutated_compounds())
def test_mutated_compounds_parse_consistently_or_are_refused(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except ValueError:
        return
    for p in packets:
        if isinstance(p, SenderReport | ReceiverReport):
            assert len(p.reports) <= 31
        elif isinstance(p, Nack):
            assert all(0 <= s <= 0xFFFF for s in p.lost)
        elif isinstance(p, Remb):
            assert p.bitrate >= 0 and len(p.ssrcs) <= 255
        elif isinstance(p, Fir):
            assert all(0 <= n <= 255 for _, n in p.entries)


@given(st.sets(st.integers(0, 0xFFFF), min_size=1, max_size=3000))
def test_nack_of_many_holes_round_trips(lost: set[int]) -> None:
    """Packing is one pass over the sorted numbers (a NACK of thousands is cheap)."""
    (nack,) = parse_compound(bytes(Nack(1, 2, list(lost))))
    assert isinstance(nack, Nack) and set(nack.lost) == lost and len(nack.lost) == len(lost)
