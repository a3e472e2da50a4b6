"""sfu.track: what bench.fuzz found there (docs/BENCHMARKS.md "Hostile media traffic"),
and a simulcast slot's switch and rewrite, packet by packet."""

from __future__ import annotations

import asyncio
import itertools
import random

from peers.mediabot import vp8_frame
from sfu import rtcp
from sfu._fanout import Lane
from sfu.peer import Negotiated
from sfu.rtp import URI_AUDIO_LEVEL, URI_MID, RtpHeader, build_packet
from sfu.stats import Stats
from sfu.track import NACK_CHUNK, PublishedTrack, Slot, drop_in_seq, drop_shift
from sfu.vp8 import Vp8Descriptor, build_descriptor
from tests.test_fanout import PUB_SSRC, Owner, Peer, TemporalRun, make_track


class RtcpOwner:
    """A participant that records the RTCP sent to its publisher."""

    def __init__(self) -> None:
        self.pid = "p"
        self.rtcp_ssrc = 1
        self.rtcp: list[bytes] = []

    def send_rtcp(self, data: bytes) -> bool:
        self.rtcp.append(data)
        return True


def test_nacks_to_a_publisher_fit_one_datagram_each() -> None:
    owner = RtcpOwner()
    track = PublishedTrack(owner, "video", "0", Stats(), 512, 1.0)  # type: ignore[arg-type]
    track.ssrc = PUB_SSRC
    wanted = list(range(0, 1400, 2))  # 700 holes, every other packet: no BLP sharing
    track._send_nack(wanted)
    assert len(owner.rtcp) == -(-len(wanted) // NACK_CHUNK) == 3
    asked: list[int] = []
    for data in owner.rtcp:
        assert len(data) <= 12 + 4 * NACK_CHUNK  # header + sender/media SSRC + FCI
        (nack,) = rtcp.parse_compound(data)
        assert isinstance(nack, rtcp.Nack) and nack.media_ssrc == PUB_SSRC
        asked += nack.lost
    assert asked == wanted
    assert track.stats.snapshot()["upstream_nacks_sent"] == 3


def test_an_audio_level_that_is_not_one_octet_is_not_forwarded() -> None:
    """RFC 6464 §3: one octet. A 4-byte "level" (two-byte form, RFC 8285 §4.3) from a
    publisher reaches no subscriber; the packet does, counted."""
    ext_ids = {URI_MID: 1, URI_AUDIO_LEVEL: 2}
    track, (slot,), stats = make_track("audio", 1, None, ("127.0.0.1", 9), ext_ids)
    peer = slot.owner.sub
    for i, level in enumerate((b"\x01\x02\x03\x04", b"\x9e")):
        body = bytes([2, len(level)]) + level  # id 2 = the publisher's level id
        body += b"\x00" * (-len(body) % 4)
        ext = b"\x10\x00" + (len(body) // 4).to_bytes(2, "big") + body
        data = build_packet(payload_type=96, sequence_number=100 + i, timestamp=960 * i,
                            ssrc=PUB_SSRC, marker=False, extensions=ext, payload=b"opus")
        track.on_rtp(RtpHeader.parse(data), data)
    sent = [RtpHeader.parse(p) for p in peer.sent]  # type: ignore[attr-defined]
    assert len(sent) == 2
    assert 2 not in sent[0].extensions  # the subscriber's level id: nothing forwarded
    assert sent[1].extensions.get(2) == b"\x9e"  # a good level is
    assert stats.snapshot()["bad_audio_level"] == 1


def test_simulcast_switch_rewrites_one_stream_and_answers_nacks_per_layer() -> None:
    """A simulcast slot forwards one layer; a switch waits for the target layer's key
    frame, and the subscriber's sequence numbers, PictureIDs and TL0PICIDX go on as one
    stream. A NACK for a packet of either run is answered from that run's layer with the
    descriptor as it was first sent (docs/SFU.md "Simulcast")."""
    async def scenario() -> None:
        stats = Stats()
        owner = RtcpOwner()
        track = PublishedTrack(owner, "video", "0", stats, 512, 0.0)  # type: ignore[arg-type]
        track.add_layers(["q", "f"])
        q, f = track.layers
        q.ssrc, f.ssrc = 0x1111, 0x2222
        q.rtx_ssrc = 0x1112
        track.set_pub(Negotiated("video", "0", 0, 0, {"vp8": 96}, 97, {URI_MID: 1}))
        slot = Slot(Owner(Peer(None, ("127.0.0.1", 9))), "video", None, stats)  # type: ignore[arg-type]
        slot.set_params(Negotiated("video", "5", 0x5000, 0x6000, {"vp8": 100}, 101,
                                   {URI_MID: 4}))
        slot.attach(track)
        assert slot.source is q and slot.lane.vp8
        sent_by: dict[tuple[int, int], bytes] = {}  # (layer ssrc, seq) -> payload

        def send(layer: PublishedTrack, seq: int, pic: int, tl0: int, tid: int,
                 key: bool, lost: bool = False) -> None:
            payload = build_descriptor(start=True, picture_id=pic, tl0_pic_idx=tl0,
                                       tid=tid) + vp8_frame(key, 30, 320 if layer is q
                                                            else 1280, 180)
            assert layer.ssrc is not None
            data = build_packet(payload_type=96, sequence_number=seq, timestamp=3000 * seq,
                                ssrc=layer.ssrc, marker=True, extensions=b"",
                                payload=payload)
            sent_by[(layer.ssrc, seq)] = payload
            if not lost:
                layer.on_rtp(RtpHeader.parse(data), data)

        # the layers number their pictures from unrelated starts, as Chromium's can
        send(q, 100, 500, 7, 0, True)
        send(f, 9000, 20000, 200, 0, True)
        send(q, 101, 501, 7, 2, False)
        send(f, 9001, 20001, 200, 2, False)
        slot.select(f, 1.0)  # running on q: wait for a key frame of f
        assert slot.source is q and slot in f.switching
        assert owner.rtcp  # a PLI for f's SSRC
        (pli,) = rtcp.parse_compound(owner.rtcp[-1])
        assert isinstance(pli, rtcp.Pli) and pli.media_ssrc == f.ssrc
        send(q, 102, 502, 7, 1, False, lost=True)  # lost on the uplink: a hole, NACKed
        send(q, 103, 503, 8, 0, False)  # still q
        send(f, 9002, 20002, 200, 1, False)  # a delta of f: not yet
        send(f, 9003, 20003, 201, 0, True)  # f's key frame: the switch
        send(q, 104, 504, 8, 2, False)  # q no longer reaches the slot
        # q's repair of 102 (RFC 4588 §4) comes after the switch: it fills the slot's hole
        rtx = build_packet(payload_type=97, sequence_number=7, timestamp=3000 * 102,
                           ssrc=0x1112, marker=True, extensions=b"",
                           payload=(102).to_bytes(2, "big") + sent_by[(0x1111, 102)])
        q.on_rtx(RtpHeader.parse(rtx), rtx)
        send(f, 9004, 20004, 201, 2, False)
        peer = slot.owner.sub
        assert stats.snapshot()["simulcast_late_repairs"] == 1
        base = RtpHeader.parse(peer.sent[0]).sequence_number  # type: ignore[attr-defined]
        wire = sorted(peer.sent,  # type: ignore[attr-defined]
                      key=lambda p: (RtpHeader.parse(p).sequence_number - base) & 0xFFFF)
        out = [RtpHeader.parse(p) for p in wire]
        payloads = [p[h.payload_offset :] for p, h in zip(wire, out, strict=True)]
        seqs = [h.sequence_number for h in out]
        assert len(out) == 6
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert all(h.ssrc == 0x5000 for h in out)
        ts = [h.timestamp for h in out]
        assert all((b - a) & 0xFFFFFFFF < 0x80000000 for a, b in itertools.pairwise(ts))
        descs = [Vp8Descriptor.parse(p) for p in payloads]
        pics = [d.picture_id for d in descs]
        assert pics == [(pics[0] + i) & 0x7FFF for i in range(6)]
        tl0 = descs[0].tl0_pic_idx
        assert tl0 is not None
        assert [d.tl0_pic_idx for d in descs] == [tl0] * 3 + [(tl0 + 1) & 0xFF] + \
            [(tl0 + 2) & 0xFF] * 2
        assert [d.tid for d in descs] == [0, 2, 1, 0, 0, 2]
        # the frames are q's 100..103, then f's 9003, 9004: byte for byte after the descriptor
        origin = [(0x1111, 100), (0x1111, 101), (0x1111, 102), (0x1111, 103), (0x2222, 9003),
                  (0x2222, 9004)]
        for p, d, key in zip(payloads, descs, origin, strict=True):
            assert p[d.size :] == sent_by[key][d.size :]
        assert stats.snapshot()["simulcast_switches_up"] == 1
        assert (f.height, q.height) == (180, 180)
        # NACKs for a q packet and an f packet: each from its own layer's cache, rewritten
        # as first sent
        peer.sent.clear()  # type: ignore[attr-defined]
        slot.retransmit([seqs[1], seqs[2], seqs[5]])
        resent = [RtpHeader.parse(p) for p in peer.sent]  # type: ignore[attr-defined]
        assert [(h.ssrc, h.payload_type) for h in resent] == [(0x6000, 101)] * 3
        for p, h, i in zip(peer.sent, resent, (1, 2, 5), strict=True):  # type: ignore[attr-defined]
            # RFC 4588 §4: the original sequence number, then the payload as first sent
            assert p[h.payload_offset : h.payload_offset + 2] == seqs[i].to_bytes(2, "big")
            assert p[h.payload_offset + 2 :] == payloads[i]
            assert h.timestamp == out[i].timestamp

    asyncio.run(scenario())


def test_temporal_filter_keeps_one_stream_and_answers_nacks_after_drops() -> None:
    """A simulcast slot with a temporal target (docs/SFU.md "Simulcast"): pictures above
    it are not sent, the subscriber's sequence numbers and PictureIDs stay contiguous,
    TL0PICIDX is untouched, a step up waits for a layer sync (Y) or a key frame, a late
    packet finds its place (a packet of a dropped picture becomes padding), and NACKs
    after drops, before and after a switch, get the packet sent at that sequence number."""
    t = TemporalRun(None, ("127.0.0.1", 9))

    async def scenario() -> None:
        t.play()

    asyncio.run(scenario())
    sent = t.peer.sent
    base = RtpHeader.parse(sent[0]).sequence_number
    wire = sorted(sent, key=lambda p: (RtpHeader.parse(p).sequence_number - base) & 0xFFFF)
    out = [RtpHeader.parse(p) for p in wire]
    seqs = [h.sequence_number for h in out]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))  # no hole
    assert seqs[0] == 65521 and seqs[-1] < 100  # it wrapped
    padding = [h for h in out if h.payload_offset == h.payload_end]
    assert len(padding) == 1 and padding[0].padding and not padding[0].marker
    media = [(p, h) for p, h in zip(wire, out, strict=True) if h.payload_end > h.payload_offset]
    descs = [Vp8Descriptor.parse(p[h.payload_offset : h.payload_end]) for p, h in media]
    starts = [d for d in descs if d.start_of_partition]
    # the pictures forwarded, by TID: q's 0 2 1 2, then TID 0 only (q's and, after the
    # switch, f's), then up to 1 at the TID 1 picture with Y, and everything after f's
    # next key frame
    assert [d.tid for d in starts] == [0, 2, 1, 2, 0, 0, 0, 0, 0, 1, 0, 2, 1, 2]
    pics = [d.picture_id for d in starts]
    assert pics == [(pics[0] + i) & 0x7FFF for i in range(len(pics))]  # no PictureID gap
    tl0 = [d.tl0_pic_idx for d in starts]
    for (a, _), (b, db) in itertools.pairwise(zip(tl0, starts, strict=True)):
        assert a is not None and b == (a + (1 if db.tid == 0 else 0)) & 0xFF
    # every media packet is one the publisher sent, after its descriptor
    bodies = {p[Vp8Descriptor.parse(p).size :]: k for k, p in t.payloads.items()}
    origin = []
    for (p, h), d in zip(media, descs, strict=True):
        key = bodies[p[h.payload_offset + d.size : h.payload_end]]
        assert t.payloads[key][d.size :] == p[h.payload_offset + d.size : h.payload_end]
        origin.append(key)
    assert len(set(origin)) == len(origin)
    snap = t.stats.snapshot()
    assert snap["temporal_dropped"] == 21 and snap["temporal_padding"] == 1
    assert snap["temporal_switches_down"] == 1 and snap["temporal_switches_up"] == 1
    assert t.slot.lane.max_tid == 255  # the key frame ended the wait: no filter again
    # NACKs: q's late packet and the padding (the first run, closed since the switch),
    # a q packet after drops, f's TID 1 picture after drops, f's last packet
    late = next(i for i, (p, h) in enumerate(media) if origin[i] == (0x1111, 110))
    q_after = next(i for i, k in enumerate(origin) if k[0] == 0x1111 and k[1] > 120)
    f_sync = next(i for i, d in enumerate(descs) if d.tid == 1 and origin[i][0] == 0x2222)
    asked = [media[late][1].sequence_number, padding[0].sequence_number,
             media[q_after][1].sequence_number, media[f_sync][1].sequence_number,
             media[-1][1].sequence_number]
    t.peer.sent.clear()
    t.slot.retransmit(asked)
    resent = [RtpHeader.parse(p) for p in t.peer.sent]
    assert [(h.ssrc, h.payload_type) for h in resent] == [(0x6000, 101)] * 5
    expected = [media[late], (b"", padding[0]), media[q_after], media[f_sync], media[-1]]
    for p, h, seq, (orig, oh) in zip(t.peer.sent, resent, asked, expected, strict=True):
        # RFC 4588 §4: the original sequence number, then the payload as sent (none
        # for the padding: the receiver restores an empty packet, padding again)
        assert p[h.payload_offset : h.payload_offset + 2] == seq.to_bytes(2, "big")
        assert p[h.payload_offset + 2 : h.payload_end] == orig[oh.payload_offset : oh.payload_end]
        assert h.timestamp == oh.timestamp


def test_the_drop_log_maps_both_ways_and_is_bounded() -> None:
    """``drop_shift`` and ``drop_in_seq`` invert a lane's drops (docs/SFU.md "Simulcast"):
    every packet kept, in order or late, has the out seq it was (or would be) sent as, and
    each out seq leads back to it, across a wrap; beyond the bounded log, neither guesses."""
    rng = random.Random(7)
    lane = Lane()
    lane.started = True
    lane.last_in_seq = lane.resume_seq = seq = 65400
    lane.seq_offset = 1000
    outs = {seq: (seq - 1000) & 0xFFFF}
    for _ in range(300):
        seq = (seq + 1) & 0xFFFF
        if rng.random() < 0.4:
            lane.skip(seq)  # dropped: later packets move down by one
        else:
            lane.last_in_seq = seq
            outs[seq] = (seq - lane.seq_offset) & 0xFFFF
    assert 100 < lane.dropped < 256  # all of them in the log
    log = lane.drop_log()
    assert len(log) == lane.dropped
    assert sorted((o - outs[65400]) & 0xFFFF for o in outs.values()) == list(range(len(outs)))
    for s, o in outs.items():
        shift = drop_shift(log, lane.dropped, s, None)
        assert shift is not None and not shift[2]
        assert (s - (lane.seq_offset - shift[0])) & 0xFFFF == o
        assert drop_in_seq(log, lane.dropped, o, lane.seq_offset) == s
    for _ in range(200):  # more drops than the log holds: the oldest are forgotten
        seq = (seq + 1) & 0xFFFF
        lane.skip(seq)
    log = lane.drop_log()
    assert len(log) == 256 < lane.dropped
    assert drop_shift(log, lane.dropped, 65401, None) is None
    assert drop_in_seq(log, lane.dropped, outs[65400], lane.seq_offset) == -1


def test_peak_bitrate_is_the_highest_of_the_last_intervals() -> None:
    """What an upgrade to a layer is judged on (docs/SFU.md "Simulcast"): one slow
    interval of its publisher does not make the layer look cheap for PEAK_INTERVALS."""
    from sfu.track import PEAK_INTERVALS

    track = PublishedTrack(RtcpOwner(), "video", "0", Stats(), 512, 1.0)  # type: ignore[arg-type]
    now = track._rate_mark[1]
    for rate in (2_000_000, 360_000):  # a full interval, then one the publisher stalled in
        track.octets += rate // 8
        now += 1.0
        track.measure(now)
    assert track.bitrate == 360_000 and track.peak_bitrate == 2_000_000
    for _ in range(PEAK_INTERVALS - 1):  # the full interval ages out
        track.octets += 360_000 // 8
        now += 1.0
        track.measure(now)
    assert track.peak_bitrate == 360_000
