"""sfu.rtcp: SR/RR (RFC 3550 §6.4), NACK/PLI (RFC 4585 §6), FIR (RFC 5104), REMB, transport-wide
congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1)."""

from __future__ import annotations

import random
import struct
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtcp import (
    RTPFB,
    Fir,
    Nack,
    Other,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    SenderReport,
    TransportFeedback,
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
    kinds = (SenderReport, ReceiverReport, Pli, Fir, Nack, Remb, TransportFeedback, Other)
    assert packets and all(isinstance(p, kinds) for p in packets)


@given(st.integers(0, 2**40), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=40))
def test_remb_and_nack_round_trip(bitrate: int, lost: list[int]) -> None:
    (remb,) = parse_compound(bytes(Remb(1, bitrate, [2])))
    assert isinstance(remb, Remb) and remb.bitrate <= bitrate
    assert bitrate - remb.bitrate <= bitrate >> 17  # 18-bit mantissa precision
    (nack,) = parse_compound(bytes(Nack(1, 2, lost)))
    assert isinstance(nack, Nack) and sorted(set(nack.lost)) == sorted(set(lost))


@st.composite
def twcc_feedbacks(draw: st.DrawFn) -> TransportFeedback:
    """Runs of lost, small-delta and large-or-negative-delta packets (times in 250 µs)."""
    base = draw(st.integers(0, 0xFFFF))
    reference = draw(st.integers(-(1 << 23), (1 << 23) - 1))
    runs = draw(st.lists(st.tuples(st.sampled_from(["lost", "small", "large"]),
                                   st.integers(1, 30)), min_size=1, max_size=12))
    arrivals: list[tuple[int, int | None]] = []
    t = reference * 64_000
    for kind, n in runs:
        for _ in range(n):
            seq = (base + len(arrivals)) & 0xFFFF
            if kind == "lost":
                arrivals.append((seq, None))
                continue
            ticks = draw(st.integers(0, 255) if kind == "small" else st.integers(-32768, 32767))
            t += ticks * 250
            arrivals.append((seq, t))
    return TransportFeedback(draw(st.integers(0, 0xFFFFFFFF)), draw(st.integers(0, 0xFFFFFFFF)),
                             base, reference, draw(st.integers(0, 255)), arrivals)


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
        st.builds(bytes, twcc_feedbacks()),
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
        elif isinstance(p, TransportFeedback):
            assert 1 <= len(p.arrivals) <= TransportFeedback.MAX_PACKETS
            assert all(0 <= s <= 0xFFFF for s, _ in p.arrivals)


@given(st.sets(st.integers(0, 0xFFFF), min_size=1, max_size=3000))
def test_nack_of_many_holes_round_trips(lost: set[int]) -> None:
    """Packing is one pass over the sorted numbers (a NACK of thousands is cheap)."""
    (nack,) = parse_compound(bytes(Nack(1, 2, list(lost))))
    assert isinstance(nack, Nack) and set(nack.lost) == lost and len(nack.lost) == len(lost)


# --- transport-wide congestion control feedback (draft-holmer-...-01 §3.1) -------------------


def _twcc(arrivals: list[tuple[int, int | None]], base: int = 0, reference: int = 0,
          fb_count: int = 0) -> TransportFeedback:
    return TransportFeedback(0x11111111, 0x22222222, base, reference, fb_count, arrivals)


def _roundtrip(fb: TransportFeedback) -> TransportFeedback:
    data = bytes(fb)
    assert data[0] == 0x80 | 15 and data[1] == 205 and len(data) % 4 == 0
    (got,) = parse_compound(data)
    assert isinstance(got, TransportFeedback)
    assert (got.sender_ssrc, got.media_ssrc, got.base_seq, got.reference_time, got.fb_count,
            got.arrivals) == (fb.sender_ssrc, fb.media_ssrc, fb.base_seq, fb.reference_time,
                              fb.fb_count, fb.arrivals)
    assert bytes(got) == data
    return got


def _timeline(base: int, start: int, deltas_us: list[int | None]) -> list[tuple[int, int | None]]:
    """Arrivals for packets base, base+1, ... given each one's delta (None: not received)."""
    out: list[tuple[int, int | None]] = []
    t = start
    for i, d in enumerate(deltas_us):
        if d is None:
            out.append(((base + i) & 0xFFFF, None))
        else:
            t += d
            out.append(((base + i) & 0xFFFF, t))
    return out


def test_twcc_all_received_is_one_run_length_chunk() -> None:
    fb = _twcc(_timeline(100, 0, [5000] * 50), base=100, fb_count=7)
    data = bytes(fb)
    assert data[20:22] == bytes([0x20, 50])  # T=0, symbol 1, run 50
    assert len(data) == 4 + 8 + 8 + 2 + 50  # one byte per delta, already 32-bit aligned
    _roundtrip(fb)


def test_twcc_all_lost() -> None:
    fb = _twcc([((65000 + i) & 0xFFFF, None) for i in range(1000)], base=65000, reference=-5)
    data = bytes(fb)
    assert data[20:22] == (1000).to_bytes(2, "big")  # T=0, symbol 0, run 1000
    assert len(data) == 24
    got = _roundtrip(fb)
    assert got.arrivals[-1] == ((65000 + 999) & 0xFFFF, None)  # wrapped past 65535


def test_twcc_mixed_negative_and_large_deltas() -> None:
    deltas: list[int | None] = [250, None, 0, -250, 63_750, 64_000, None, None, 1_000_000,
                                -8_192_000, 8_191_750, 750, None, 250]
    fb = _twcc(_timeline(65530, 1234 * 64_000, deltas), base=65530, reference=1234,
               fb_count=255)
    got = _roundtrip(fb)
    assert [t for _, t in got.arrivals][:6] == [78_976_250, None, 78_976_250, 78_976_000,
                                                79_039_750, 79_103_750]


def test_twcc_first_delta_is_relative_to_reference_time() -> None:
    fb = _twcc([(0, 100 * 64_000 - 250), (1, 100 * 64_000)], reference=100)
    data = bytes(fb)
    assert data[20:22] == bytes([0xE4, 0x00])  # two-bit vector: 10 (negative), 01
    assert data[22:25] == b"\xff\xff\x01"  # -1 tick (2 bytes), then +1 tick (1 byte)
    got = _roundtrip(fb)
    assert got.arrivals == [(0, 6_399_750), (1, 6_400_000)]


def test_twcc_large_gaps_and_long_runs() -> None:
    """Thousands lost in a row, then deltas near ±8.192 s and a long run of small ones."""
    deltas: list[int | None] = ([None] * 5000 + [8_000_000] + [250] * 3000 + [None] * 3
                                + [-8_000_000] + [100_000] * 20 + [0, None, 300_000])
    assert len(deltas) <= TransportFeedback.MAX_PACKETS
    fb = _twcc(_timeline(1, -(1 << 23) * 64_000, deltas), base=1, reference=-(1 << 23))
    assert len(bytes(fb)) < 24 + 2 * 10 + 3000 + 3 * 25  # runs stay run length chunks
    _roundtrip(fb)
    _roundtrip(_twcc(_timeline(0, 0, [250] * TransportFeedback.MAX_PACKETS)))
    _roundtrip(_twcc([(i, None) for i in range(TransportFeedback.MAX_PACKETS)]))


def test_twcc_encoder_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError):
        bytes(_twcc([]))
    with pytest.raises(ValueError):  # one packet over our bound
        bytes(_twcc([(i, None) for i in range(TransportFeedback.MAX_PACKETS + 1)]))
    with pytest.raises(ValueError):  # 8191.75 ms is the largest delta; 8192 ms is not
        bytes(_twcc([(0, 8_192_000)]))
    with pytest.raises(ValueError):  # -8192.25 ms
        bytes(_twcc([(0, -8_192_250)]))
    bytes(_twcc([(0, 8_191_750), (1, 8_191_750 - 8_192_000)]))  # both extremes fit
    with pytest.raises(ValueError):  # sequence numbers must run on from base_seq
        bytes(_twcc([(5, 0), (7, 0)], base=5))
    with pytest.raises(ValueError):  # reference time is 24 bits signed
        bytes(_twcc([(0, None)], reference=1 << 23))


def test_twcc_rounds_to_250us_like_libwebrtc() -> None:
    """libwebrtc's AddReceivedPacket rounds each delta to the nearest tick, ties away from
    zero, and carries the rounded time on (so errors do not add up)."""
    fb = _twcc([(0, 124), (1, 375), (2, 376), (3, 0), (4, -125)])
    (got,) = parse_compound(bytes(fb))
    assert isinstance(got, TransportFeedback)
    assert got.arrivals == [(0, 0), (1, 500), (2, 500), (3, 0), (4, -250)]


def test_twcc_pion_example4_with_rtcp_padding() -> None:
    """pion/rtcp transport_layer_cc_test.go TestTransportLayerCC_Unmarshal "example4": P set,
    3 padding octets; one run length chunk of 7 small deltas."""
    data = bytes([0xaf, 0xcd, 0x00, 0x07, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb,
                  0x00, 0x04, 0x00, 0x07, 0x10, 0x63, 0x6e, 0x01, 0x20, 0x07, 0x4c, 0x24,
                  0x24, 0x10, 0x0c, 0x0c, 0x10, 0x00, 0x00, 0x03])
    (fb,) = parse_compound(data)
    assert isinstance(fb, TransportFeedback)
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_seq, fb.reference_time, fb.fb_count) == (
        4195875351, 423483579, 4, 1074030, 1)
    deltas = [19000, 9000, 9000, 4000, 3000, 3000, 4000]
    times = list(accumulate(deltas, initial=1074030 * 64_000))[1:]
    assert fb.arrivals == list(zip(range(4, 11), times, strict=True))
    assert [t for _, t in fb.arrivals][-1] == 68_737_971_000


def test_twcc_pion_example6_vector_then_overlong_run() -> None:
    """pion/rtcp transport_layer_cc_test.go TestTransportLayerCC_Unmarshal "example6": a
    two-bit vector (5 small, 1 lost, 1 large), then a run of 48 lost of which the status count
    (9) leaves 2; 19 FCI bytes after the one RTCP padding octet."""
    data = bytes([0xaf, 0xcd, 0x00, 0x07, 0x9b, 0x74, 0xf6, 0x1f, 0x93, 0x71, 0xdc, 0xbc,
                  0x85, 0x3c, 0x00, 0x09, 0x63, 0xf9, 0x16, 0xb3, 0xd5, 0x52, 0x00, 0x30,
                  0x9b, 0xaa, 0x6a, 0xaa, 0x7b, 0x01, 0x09, 0x01])
    (fb,) = parse_compound(data)
    assert isinstance(fb, TransportFeedback)
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_seq, fb.reference_time, fb.fb_count) == (
        2608133663, 2473712828, 34108, 6551830, 179)
    assert fb.arrivals == _timeline(34108, 6551830 * 64_000, [
        38750, 42500, 26500, 42500, 30750, None, 66250, None, None])


def test_twcc_draft_chunk_examples() -> None:
    """§3.1.4 example 1 (0x9F1C: 1 lost, 5 received, 3 lost, 3 received, 2 lost) then
    §3.1.3 example 1 (0x00DD: a run of 221 not received); 8 one-byte deltas. Sequence
    numbers wrap."""
    fci = struct.pack("!HH3sB", 65530, 14 + 221, (-2).to_bytes(3, "big", signed=True), 9)
    fci += bytes([0x9F, 0x1C, 0x00, 0xDD]) + bytes(range(1, 9))
    fb = TransportFeedback.parse(1, 2, fci)
    assert fb.reference_time == -2 and fb.fb_count == 9
    pattern = "01111100011100"
    ticks = iter(range(1, 9))
    deltas = [next(ticks) * 250 if c == "1" else None for c in pattern] + [None] * 221
    assert fb.arrivals == _timeline(65530, -128_000, deltas)
    _roundtrip(fb)


@pytest.mark.parametrize(
    "fci",
    [
        b"",
        bytes(7),
        bytes(8),  # pion "example7": status count 0
        struct.pack("!HH4x", 0, TransportFeedback.MAX_PACKETS + 1) + b"\x00\x01" * 8,
        struct.pack("!HH4x", 0, 3) + b"\x20\x03" + b"\x01\x02",  # 3 small deltas, 2 sent
        struct.pack("!HH4x", 0, 2) + b"\x40\x02" + b"\x01\x02\x03",  # 2 large, 1.5 sent
        struct.pack("!HH4x", 0, 20) + b"\x00\x0a",  # chunks cover 10 of 20
        struct.pack("!HH4x", 0, 24) + b"\x60\x18",  # §3.1.3 example 2: symbol 11, reserved
        struct.pack("!HH4x", 0, 7) + b"\xcd\x50" + b"\x01" * 3,  # §3.1.4 example 2: 11 too
        struct.pack("!HH4x", 0, 1) + b"\x00\x00" + b"\x20\x01",  # empty run: no progress
        struct.pack("!HH4x", 0, 1) + b"\x20\x01" + b"\x05" + b"\x00\x00\x00\x00",  # 4 pad
        struct.pack("!HH4x", 0, 1) + b"\x20\x01" + b"\x05\x00\x07",  # non-zero padding
    ],
)
def test_twcc_malformed_fci_is_refused(fci: bytes) -> None:
    with pytest.raises(ValueError):
        TransportFeedback.parse(1, 2, fci)


def test_twcc_reserved_symbol_in_pion_example2_is_refused() -> None:
    """pion/rtcp "example2" reads the second chunk (0xF0FF) as 2-bit symbols 11, which the
    draft (§3.1.1) reserves and libwebrtc refuses; so do we, whole datagram."""
    data = bytes([0xaf, 0xcd, 0x00, 0x06, 0xfa, 0x17, 0xfa, 0x17, 0x19, 0x3d, 0xd8, 0xbb,
                  0x01, 0x74, 0x00, 0x0e, 0x45, 0xb1, 0x5a, 0x40, 0xd8, 0x00, 0xf0, 0xff,
                  0xd0, 0x00, 0x00, 0x03])
    with pytest.raises(ValueError):
        parse_compound(data)


def test_twcc_every_truncation_parses_or_raises_value_error() -> None:
    deltas: list[int | None] = [250, None, -250, 70_000, None, None, 0] + [500] * 30 + [None]
    data = bytes(_twcc(_timeline(7, 0, deltas), base=7))
    fci = data[12:]
    outcomes = set()
    for k in range(len(fci) + 1):
        try:
            fb = TransportFeedback.parse(1, 2, fci[:k])
        except ValueError:
            outcomes.add("refused")
            continue
        outcomes.add("parsed")
        assert len(fb.arrivals) == len(deltas)
    assert outcomes == {"refused", "parsed"}  # the cut zero padding still parses


def test_twcc_huge_status_count_is_refused_quickly() -> None:
    fci = struct.pack("!HH4x", 0, 0xFFFF) + b"\x1f\xff" * 8
    with pytest.raises(ValueError, match="too large"):
        TransportFeedback.parse(1, 2, fci)


def test_twcc_in_a_compound_after_a_receiver_report() -> None:
    rr = ReceiverReport(9, [ReportBlock(22, fraction_lost=3, highest_sequence=500)])
    fb = _twcc(_timeline(300, 77 * 64_000, [1000, None, 2000, -500]), base=300, reference=77)
    first, second = parse_compound(bytes(rr) + bytes(fb) + bytes(Pli(1, 2)))[:2]
    assert isinstance(first, ReceiverReport) and first.reports[0].ssrc == 22
    assert isinstance(second, TransportFeedback)
    assert second.arrivals == [(300, 4_929_000), (301, None), (302, 4_931_000),
                               (303, 4_930_500)]


@given(twcc_feedbacks())
def test_twcc_round_trips(fb: TransportFeedback) -> None:
    _roundtrip(fb)


@given(st.binary(max_size=80))
def test_twcc_parse_of_any_fci_raises_only_value_error(fci: bytes) -> None:
    try:
        fb = TransportFeedback.parse(1, 2, fci)
    except ValueError:
        return
    assert 1 <= len(fb.arrivals) <= TransportFeedback.MAX_PACKETS
    assert bytes(TransportFeedback.parse(1, 2, bytes(fb)[12:])) == bytes(fb)


def test_twcc_seeded_random_round_trips() -> None:
    rng = random.Random(20240611)
    for _ in range(200):
        base = rng.randrange(1 << 16)
        reference = rng.randrange(-(1 << 23), 1 << 23)
        deltas: list[int | None] = []
        for _ in range(rng.randrange(1, 60)):
            kind = rng.random()
            run = rng.randrange(1, 40)
            if kind < 0.3:
                deltas += [None] * run
            elif kind < 0.8:
                deltas += [rng.randrange(256) * 250 for _ in range(run)]
            else:
                deltas += [rng.randrange(-32768, 32768) * 250 for _ in range(run)]
        deltas = deltas[: TransportFeedback.MAX_PACKETS]
        _roundtrip(_twcc(_timeline(base, reference * 64_000, deltas), base, reference,
                         rng.randrange(256)))


def test_transport_feedback_parsed_only_when_asked_and_bounded() -> None:
    """parse_compound(data, twcc_max): 0 leaves a transport feedback unparsed (Other:
    a peer never offered transport-cc costs nothing), and a report of more packets than
    twcc_max is malformed."""
    fb = bytes(TransportFeedback(1, 2, 100, 0, 0, [(100 + i, 250 * i) for i in range(40)]))
    (parsed,) = parse_compound(fb)
    assert isinstance(parsed, TransportFeedback) and len(parsed.arrivals) == 40
    (other,) = parse_compound(fb, 0)
    assert isinstance(other, Other) and other.packet_type == RTPFB and other.count == 15
    assert len(parse_compound(fb, 40)[0].arrivals) == 40  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        parse_compound(fb, 39)
