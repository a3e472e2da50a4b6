"""The load generator's Python side (bench/gen.py): the pacing thread and the windows'
reports. Its compiled receive path has tests of its own (test_bench_receive.py)."""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import pytest

from bench.gen import SWITCH_INTERVAL, OutStream, Pacer, Tally
from bench.media import MAGIC, PROBE, rtp_header


def _probed(sid: int, seq: int, sent: int) -> bytes:
    return rtp_header(96, seq, 0, 1, False, b"") + b"\x10" + PROBE.pack(MAGIC, sid, seq, sent)


def test_tally_reports_what_was_sent_beside_what_was_received() -> None:
    """A window's report joins the pacer's side (Python) and the receivers' side (C)."""
    tally = Tally(4, 8)
    tally.open(1, 1_000, 2_000)
    tally.on_sent(7, 1_500, 3)
    tally.on_sent(7, 2_500, 5)  # after the window
    tally.on_lag(1_500, 0.006)
    for receiver in (2, 3):
        tally.counts.record(receiver, _probed(7, 1, 1_500), 1_600)
    tally.counts.record(3, _probed(6, 1, 1_500), 1_600)
    report = tally.take(1)
    assert report is not None
    assert report["sent"] == {7: 3}
    assert report["received"] == {7: 2, 6: 1}
    assert report["pairs"] == {(2 << 16) | 7: 1, (3 << 16) | 7: 1, (3 << 16) | 6: 1}
    assert report["hist"] == {0: 3} and report["late"] == 1 and report["lag_max_ms"] == 6.0
    assert tally.windows == [] and tally.take(1) is None


def _audio_spec() -> Any:
    from bench.scenarios import build
    return next(spec for _, spec in build("meeting", 2, 0, 1).members[0].streams()
                if spec.kind == "audio")


def test_pacer_keeps_sending_while_the_loop_thread_is_busy() -> None:
    """The reason the pacer is a thread: frames go out on time while the receiving
    thread runs Python flat out (here: a busy loop that never blocks)."""
    tally = Tally(2, 4)
    stream = OutStream(1, _audio_spec(), tally)  # 50 packets/s
    stamps: list[int] = []

    def send(packet: bytes) -> None:
        i = packet.find(MAGIC)
        assert i > 0 and PROBE.unpack_from(packet, i)[1] == 1
        stamps.append(time.monotonic_ns())

    stream.send = send
    pacer = Pacer([stream])
    pacer.start()
    try:
        busy_from = time.monotonic_ns()
        busy_until = busy_from + 400_000_000
        spins = 0
        while time.monotonic_ns() < busy_until:  # holds the GIL but for forced switches
            spins += 1
    finally:
        pacer.stop()
    assert not pacer._thread.is_alive()
    during = [t for t in stamps if busy_from + 50_000_000 < t < busy_until - 50_000_000]
    assert len(during) >= 5, (len(stamps), len(during))  # ~15 were due in those 300 ms
    assert stream.count == len(stamps)
    after = len(stamps)
    time.sleep(0.1)
    assert len(stamps) == after  # stopped means stopped
    assert sys.getswitchinterval() > SWITCH_INTERVAL  # and the interpreter is as it was


def test_a_key_frame_request_gets_one_key_frame() -> None:
    """PLIs are counted by the loop's thread and served by the pacer's (bench/gen.py)."""
    from bench.gen import Participant
    from bench.scenarios import build
    tally = Tally(2, 4)
    me = Participant(build("meeting", 2, 0, 1).members[0], tally)
    video = next(s for s in me.streams if s.spec.kind == "video")
    sent: list[bytes] = []
    video.send = sent.append

    def frame_is_key() -> bool:
        sent.clear()
        video.fire(time.monotonic(), time.monotonic())
        return any(b"\x9d\x01\x2a" in p for p in sent)  # RFC 6386 §9.1 key frame start code

    assert frame_is_key()  # the first frame
    assert not frame_is_key()
    pli = bytes([0x81, 206, 0, 2]) + (1).to_bytes(4, "big") + video.ssrc.to_bytes(4, "big")
    me.on_pub_rtcp(pli)
    me.on_pub_rtcp(pli)  # two requests before the pacer runs: one key frame serves both
    assert tally.plis == 2
    assert frame_is_key()
    assert not frame_is_key()


# --- uplink loss (--uplink-loss): withholding, the NACK cache, RTX ------------------------


def _lossy(share: float, seed: int = 7, rtx: bool = True) -> tuple[Any, Any, list[bytes]]:
    """Participant 0 of a 2-person meeting withholding ``share`` of its video; its video
    stream sends into the returned list and answers NACKs at once (no pacer thread)."""
    from bench.gen import Participant, UplinkLoss
    from bench.scenarios import build

    scenario = build("meeting", 2, 0, 1)
    tally = Tally(scenario.total, 4 * scenario.total)
    me = Participant(scenario.members[0], tally,
                     UplinkLoss(share, seed, scenario.withheld_base))
    video = next(s for s in me.streams if s.spec.kind == "video")
    audio = next(s for s in me.streams if s.spec.kind == "audio")
    assert audio.uplink is None and video.uplink is not None  # only video is withheld
    video.ssrc, video.pt, video.seq = 0x11223344, 96, 65530  # the seq wraps below
    video.ext = b"\xbe\xde\x00\x01\x10\x31\x00\x00"  # RFC 8285 §4.2: MID "1"
    if rtx:
        video.uplink.rtx_pt, video.uplink.rtx_ssrc, video.uplink.rtx_seq = 97, 0x55667788, 9
    sent: list[bytes] = []
    video.send = sent.append
    me.resend = lambda stream, kept: stream.resend(kept)
    return me, video, sent


def _probe_sid(packet: bytes) -> int:
    i = packet.find(MAGIC)
    return int(PROBE.unpack_from(packet, i)[1])


def test_withholding_is_deterministic_and_takes_its_share() -> None:
    from bench.gen import Uplink, UplinkLoss

    loss = UplinkLoss(0.03, 1, 40)
    a, b, other = Uplink(loss, 3), Uplink(loss, 3), Uplink(loss, 5)
    first = [x for _ in range(20_000) for x in a.withhold(2)]
    # the same seed and stream withhold the same packets, however the frames are cut
    assert first == b.withhold(40_000)
    assert first != other.withhold(40_000)  # each stream its own pattern
    assert first != Uplink(UplinkLoss(0.03, 2, 40), 3).withhold(40_000)  # and each seed
    assert sum(first) / len(first) == pytest.approx(0.03, abs=0.004)  # 40 000 draws
    assert a.shadow == 43 and a.cache == [None] * len(a.cache)


def test_withheld_packets_leave_holes_and_are_counted() -> None:
    me, video, sent = _lossy(0.25)
    tally = me.tally
    tally.open(1, 0, 2**62)
    start = video.seq
    for _ in range(200):
        video.fire(time.monotonic(), time.monotonic())
    report = tally.take(1)
    assert report is not None
    withheld = report["withheld"][video.sid]
    assert withheld + report["sent"][video.sid] == 400 == video.count
    assert len(sent) == 400 - withheld and withheld / 400 == pytest.approx(0.25, abs=0.07)
    # the sequence numbers sent have holes exactly where packets were withheld
    seqs = [int.from_bytes(p[2:4], "big") for p in sent]
    holes = {(start + i) & 0xFFFF for i in range(1, 401)} - set(seqs)
    assert len(holes) == withheld
    base = 2 * 2  # Scenario.withheld_base of a 2-person meeting
    for seq in holes:  # each one is kept, marked withheld, its probe on the withheld id
        kept = video.uplink.lookup(seq)
        assert kept is not None and kept[0] == seq and kept[3]
        assert _probe_sid(kept[2]) == video.sid + base
    for packet in sent:  # and what was sent is kept too, as sent
        kept = video.uplink.lookup(int.from_bytes(packet[2:4], "big"))
        assert kept is not None and kept[2] == packet and not kept[3]
        assert _probe_sid(packet) == video.sid
    assert report["nacked"] == {} and report["resent"] == {}


def test_a_nack_for_a_withheld_packet_is_answered_with_rtx() -> None:
    """RFC 4588 §4: RTX SSRC and payload type, the RTX stream's next sequence number, the
    original timestamp, marker and extensions, payload = original seq + original payload."""
    from sfu import rtcp

    me, video, sent = _lossy(1.0)  # every packet withheld
    tally = me.tally
    tally.open(1, 0, 2**62)
    video.fire(time.monotonic(), time.monotonic())
    assert sent == []
    seqs = [(65530 + i) & 0xFFFF for i in (1, 2)]
    originals = [video.uplink.lookup(s)[2] for s in seqs]
    nack = bytes(rtcp.Nack(0xABCD, video.ssrc, [seqs[1], seqs[0], 1234]))
    me.on_pub_rtcp(bytes(rtcp.ReceiverReport(0xABCD)) + nack)  # a compound, as servers send
    assert len(sent) == 2
    for packet, original, want_seq in zip(sent, originals, (10, 11), strict=True):
        assert packet[0] == original[0]  # V=2, X as the original, no padding, no CSRC
        assert packet[1] == (original[1] & 0x80) | 97  # marker kept, RTX payload type
        assert int.from_bytes(packet[2:4], "big") == want_seq  # 10, 11: after rtx_seq 9
        assert packet[4:8] == original[4:8]  # the original timestamp
        assert packet[8:12] == (0x55667788).to_bytes(4, "big")
        head = 12 + len(video.ext)
        assert packet[12:head] == original[12:head] == video.ext
        assert packet[head : head + 2] == original[2:4]  # OSN
        assert packet[head + 2 :] == original[head:]
        assert _probe_sid(packet) == video.sid + 4  # a withheld packet's probe id
    assert (tally.nacks, tally.nacked, tally.nack_misses) == (1, 3, 1)  # 1234: not kept
    report = tally.take(1)
    assert report is not None
    assert report["nacked"] == {video.sid: 2} and report["resent"] == {video.sid: 2}
    assert report["withheld"] == {video.sid: 2}


def test_without_rtx_the_packet_is_sent_again_as_it_was() -> None:
    from sfu import rtcp

    me, video, sent = _lossy(1.0, rtx=False)
    video.fire(time.monotonic(), time.monotonic())
    seq = (65530 + 2) & 0xFFFF
    me.on_pub_rtcp(bytes(rtcp.Nack(1, video.ssrc, [seq])))
    assert sent == [video.uplink.lookup(seq)[2]]
    me.on_pub_rtcp(bytes(rtcp.Nack(1, 0x999, [seq])))  # another SSRC: not ours to answer
    me.on_pub_rtcp(b"\x80\xcd\x00")  # malformed: counted, not fatal
    assert len(sent) == 1 and me.tally.nack_misses == 1 and me.tally.rtcp_malformed == 1


def test_the_cache_is_bounded() -> None:
    from bench.gen import CACHE

    _, video, _ = _lossy(0.5)
    for _ in range(CACHE):  # 2 packets a frame: twice the cache
        video.fire(time.monotonic(), time.monotonic())
    newest = video.seq
    assert video.uplink.lookup(newest) is not None
    assert video.uplink.lookup((newest - CACHE + 1) & 0xFFFF) is not None
    assert video.uplink.lookup((newest - CACHE) & 0xFFFF) is None  # overwritten
    assert len(video.uplink.cache) == CACHE


def test_without_uplink_loss_nothing_is_kept_or_withheld() -> None:
    from bench.gen import Participant
    from bench.scenarios import build

    tally = Tally(2, 4)
    me = Participant(build("meeting", 2, 0, 1).members[0], tally)
    assert all(s.uplink is None for s in me.streams) and me.resend is None
    video = next(s for s in me.streams if s.spec.kind == "video")
    sent: list[bytes] = []
    video.send = sent.append
    tally.open(1, 0, 2**62)
    video.fire(time.monotonic(), time.monotonic())
    assert len(sent) == 2
    report = tally.take(1)
    assert report is not None and report["withheld"] == {} and report["sent"] == {video.sid: 2}


def test_the_pacer_sends_a_queued_retransmission_at_once() -> None:
    """A NACK is answered from the pacer's thread (the only one that protects with the
    publishing session) without waiting for the next frame to fall due."""
    from bench.gen import Uplink, UplinkLoss
    from bench.media import StreamSpec

    tally = Tally(2, 8)
    stream = OutStream(1, StreamSpec("video", 50_000, 0.5), tally)  # a frame every 2 s
    stream.uplink = Uplink(UplinkLoss(1.0, 1, 4), 1)
    stamps: list[tuple[int, bytes]] = []
    stream.send = lambda packet: stamps.append((time.monotonic_ns(), packet))
    stream.first_due = lambda now: now  # type: ignore[method-assign]
    pacer = Pacer([stream], repair=True)
    pacer.start()
    try:
        deadline = time.monotonic() + 2.0
        while stream.count == 0 and time.monotonic() < deadline:  # the first frame, withheld
            time.sleep(0.005)
        assert stream.count > 0 and stamps == []
        kept = stream.uplink.lookup(stream.seq)
        assert kept is not None
        asked = time.monotonic_ns()
        pacer.resend(stream, kept)
        while not stamps and time.monotonic() < deadline:
            time.sleep(0.001)
    finally:
        pacer.stop()
    assert not pacer._thread.is_alive()
    assert [p for _, p in stamps] == [kept[2]]  # no RTX negotiated: the packet again
    assert stamps[0][0] - asked < 100_000_000  # well before the next frame (2 s)


def test_rtx_packet_rfc4588() -> None:
    """RFC 4588 §4 from any RTP packet: CSRCs and an extension block stay in the header,
    the OSN goes first in the payload."""
    from bench.media import rtx_packet

    csrc = (0xC0FFEE).to_bytes(4, "big")
    ext = b"\xbe\xde\x00\x02" + bytes(range(8))
    original = bytes([0x90 | 1, 0x80 | 96]) + (0x1234).to_bytes(2, "big") + \
        (0xDEADBEEF).to_bytes(4, "big") + (7).to_bytes(4, "big") + csrc + ext + b"payload"
    out = rtx_packet(original, 97, 0x10001, 0xAABBCCDD)  # the RTX sequence wraps to 1
    assert out == (bytes([0x91, 0x80 | 97]) + (1).to_bytes(2, "big")
                   + (0xDEADBEEF).to_bytes(4, "big") + (0xAABBCCDD).to_bytes(4, "big")
                   + csrc + ext + b"\x12\x34" + b"payload")
    plain = rtp_header(96, 5, 6, 7, False, b"") + b"x"
    assert rtx_packet(plain, 98, 3, 9)[1] == 98 and rtx_packet(plain, 98, 3, 9)[12:] == \
        b"\x00\x05x"
    for bad in (b"\x80" * 11, bytes([0xA0]) + plain[1:], bytes([0x90]) + plain[1:12]):
        with pytest.raises(ValueError):
            rtx_packet(bad, 97, 1, 1)


# --- simulcast layers -----------------------------------------------------------------------


def _layers() -> tuple[Any, list[OutStream], list[list[bytes]]]:
    """Participant 0 of a simulcast room: its three layer streams, each sending into its
    own list, their MID+RID extension set as bench/rtc.py sets it."""
    from bench.gen import Participant
    from bench.scenarios import build

    scenario = build("simulcast", 3)
    me = Participant(scenario.members[0], Tally(scenario.total, scenario.withheld_base))
    layers = [s for s in me.streams if s.spec.kind == "video"]
    sent: list[list[bytes]] = [[] for _ in layers]
    for s, out in zip(layers, sent, strict=True):
        s.send = out.append
        s.ext = b"\xbe\xde\x00\x01\x10\x31" + bytes([0xC0 | 0, ord(s.spec.rid or "?")])
    return me, layers, sent


def test_a_layer_sends_l1t3_descriptors_and_its_picture_size() -> None:
    """RFC 7741 §4.2 with TL0PICIDX and TID (0, 2, 1, 2, …, TL0PICIDX counting TID 0),
    a key frame first with the layer's own width and height (RFC 6386 §9.1)."""
    from sfu.vp8 import Vp8Descriptor

    _, layers, sent = _layers()
    assert [s.layered for s in layers] == [True] * 3 and len({s.ssrc for s in layers}) == 3
    for s, out in zip(layers, sent, strict=True):
        for _ in range(6):
            s.fire(time.monotonic(), time.monotonic())
        assert len(out) == 6 * s.spec.packets_per_frame()
        firsts = [p for p in out if Vp8Descriptor.parse(p[20:]).start_of_partition]
        assert len(firsts) == 6
        ds = [Vp8Descriptor.parse(p[20:]) for p in firsts]
        assert [d.tid for d in ds] == [0, 2, 1, 2, 0, 2]
        tl0 = [d.tl0_pic_idx for d in ds]
        assert tl0[1:4] == [tl0[0]] * 3 and tl0[4] == (tl0[0] + 1) & 0xFF
        pics = [d.picture_id for d in ds]
        assert [(b - a) & 0x7FFF for a, b in itertools.pairwise(pics)] == [1] * 5
        key = firsts[0][20 + ds[0].size :]
        assert key[0] & 0x01 == 0 and key[3:6] == b"\x9d\x01\x2a"  # a key frame
        assert int.from_bytes(key[6:8], "little") == s.spec.width
        assert int.from_bytes(key[8:10], "little") == s.spec.height
        assert all(firsts[k][20 + ds[k].size] & 0x01 for k in range(1, 6))  # then deltas
        assert all(p[12:20] == s.ext for p in out)  # MID + RID on every packet so far


def test_a_layer_keeps_mid_and_rid_until_a_report_names_it() -> None:
    from sfu import rtcp

    me, layers, sent = _layers()
    q, h, f = layers
    me.on_pub_rtcp(bytes(rtcp.ReceiverReport(9, [rtcp.ReportBlock(q.ssrc),
                                                  rtcp.ReportBlock(0x1234)])))
    for s in layers:
        s.fire(time.monotonic(), time.monotonic())
    assert sent[0][-1][0] == 0x80 and sent[0][-1][12] == 0x90  # no extension: descriptor
    assert sent[1][-1][0] == 0x90 and sent[2][-1][0] == 0x90  # still MID + RID
    me.on_pub_rtcp(bytes(rtcp.ReceiverReport(9, [rtcp.ReportBlock(f.ssrc)])))
    f.fire(time.monotonic(), time.monotonic())
    assert sent[2][-1][0] == 0x80 and h.ext != b"" and h.acked is False


def test_a_pli_for_one_layer_makes_a_key_frame_on_that_layer_only() -> None:
    me, layers, sent = _layers()
    for s in layers:  # the first frames are key frames
        s.fire(time.monotonic(), time.monotonic())

    def keys() -> list[bool]:
        for out in sent:
            out.clear()
        for s in layers:
            s.fire(time.monotonic(), time.monotonic())
        return [b"\x9d\x01\x2a" in out[0] for out in sent]

    assert keys() == [False, False, False]
    h = layers[1]
    me.on_pub_rtcp(bytes([0x81, 206, 0, 2]) + (1).to_bytes(4, "big") + h.ssrc.to_bytes(4, "big"))
    assert keys() == [False, True, False]
    fir = bytes([0x84, 206, 0, 4]) + (1).to_bytes(4, "big") + bytes(4) + \
        layers[2].ssrc.to_bytes(4, "big") + bytes([7, 0, 0, 0])  # RFC 5104 §4.3.1
    me.on_pub_rtcp(fir)
    assert keys() == [False, False, True]
    # a PLI for an SSRC that is none of the layers makes no key frame (one of audio's)
    me.on_pub_rtcp(bytes([0x81, 206, 0, 2]) + (1).to_bytes(4, "big") + (5).to_bytes(4, "big"))
    assert keys() == [False, False, False] and me.tally.plis == 3
