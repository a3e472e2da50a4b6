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
