"""sfu/_fanout.c: the compiled per-subscriber loop writes what Slot.forward writes.

Each check runs the same publisher packets through two tracks: one whose slots have a
pointed ``Sender`` (the compiled path, real libsrtp, a real UDP socket on loopback) and
one whose slots have none (every packet through ``Slot.forward``). The subscriber-side
plaintext must be identical, packet for packet.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Iterator
from typing import Any

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from sfu import track as track_module
from sfu._fanout import Batch, Lane, Sender, fanout, skip
from sfu.outbox import Outbox
from sfu.peer import Negotiated
from sfu.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    RtpHeader,
    build_extensions,
    build_packet,
)
from sfu.srtp import Protector
from sfu.stats import Stats
from sfu.track import PublishedTrack, Slot
from sfu.vp8 import build_descriptor, rewrite_descriptor

KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt
PUB_SSRC = 0xCAFE
SUB_SSRC = 0x5000


class Peer:
    """A RawPeer's sending side: the general path protects with the same libsrtp
    session the compiled path uses (as RawPeer's _Outbound and Sender share it)."""

    def __init__(self, sock: socket.socket | None, dest: tuple[str, int]) -> None:
        self.up = True
        self.sent: list[bytes] = []  # plaintext of what the general path sent
        self.session = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self.protector = Protector(self.session)
        self.sender: Sender | None = None
        self.pair = object()
        self.nominated: dict[int, Any] = {1: self.pair}
        if sock is not None:
            self.sender = Sender()
            native = self.protector.native()
            assert native is not None
            self.sender.point(native[0], native[1], self.session, self.nominated, self.pair,
                              sock.fileno(), dest[0], dest[1])

    def send_rtp(self, data: bytes) -> bool:
        try:
            self.protector.protect(data)
        except pylibsrtp.Error:
            return False
        self.sent.append(data)
        return True


class Owner:
    def __init__(self, peer: Peer) -> None:
        self.pid = "p"
        self.sub = peer
        self.rtcp_ssrc = 1

    def send_rtcp(self, data: bytes) -> bool:
        return True


class Clock:
    """time.monotonic for sfu.track: both paths must see the same instants."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        self.now += 0.001
        return self.now


@pytest.fixture
def udp() -> Iterator[tuple[socket.socket, socket.socket]]:
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    into = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    into.bind(("127.0.0.1", 0))
    into.settimeout(2.0)
    yield out, into
    out.close()
    into.close()


def make_track(kind: str, subscribers: int, sock: socket.socket | None,
               dest: tuple[str, int], ext_ids: dict[str, int], batched: bool = False
               ) -> tuple[PublishedTrack, list[Slot], Stats]:
    stats = Stats()
    pub = PublishedTrack(Owner(Peer(None, dest)), kind, "0", stats, 512, 1.0,  # type: ignore[arg-type]
                         drop_silence=True, outbox=Outbox(stats) if batched else None)
    pub.ssrc = PUB_SSRC
    codec = "vp8" if kind == "video" else "opus"
    pub.set_pub(Negotiated(kind, "0", PUB_SSRC, 0, {codec: 96}, None,
                           {URI_MID: 1, URI_AUDIO_LEVEL: 2, URI_ABS_SEND_TIME: 3}))
    slots = []
    for i in range(subscribers):
        slot = Slot(Owner(Peer(sock, dest)), kind, None, stats)  # type: ignore[arg-type]
        slot.set_params(Negotiated(kind, str(10 + i), SUB_SSRC + i, 0, {codec: 100 + i},
                                   None, ext_ids))
        lane = slot.lane
        lane.last_out_seq, lane.last_out_ts, lane.last_out_time = 65530 - i, 7 + i, 999.0
        slot.attach(pub)
        slots.append(slot)
    return pub, slots, stats


def noise(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)  # the same for both paths of one check


def vp8(key: bool, seed: int = 0) -> bytes:
    # RFC 7741 §4.2 descriptor (X=0, S=1, PID=0), then RFC 6386 §9.1's frame tag (P=0 and
    # the start code for a key frame)
    tag = b"\x00\x00\x00\x9d\x01\x2a" if key else b"\x01\x00\x00"
    return b"\x10" + tag + noise(seed, 300)


def packets(kind: str) -> list[bytes]:
    """A run through the cases: start, in order, a gap, a duplicate, reordering within
    the run, from before the run, CSRCs, a marker, audio levels (one silent), ast."""
    out = []
    seqs = [100, 101, 102, 104, 103, 104, 99, 105, 106, 65535 & (106 + 3)]
    for n, seq in enumerate(seqs):
        exts: list[tuple[int, bytes]] = [(1, b"0")]
        if kind == "audio":
            exts.append((2, bytes([0x80 | (127 if n == 7 else 30 + n)])))
        if n % 3 == 0:
            exts.append((3, bytes([n, 2, 3])))
        payload = vp8(n == 0, n) if kind == "video" else noise(n, 80)
        csrcs = bytes.fromhex("0000111100002222") if n == 5 else b""
        out.append(build_packet(payload_type=96, sequence_number=seq, timestamp=3000 * seq,
                                ssrc=PUB_SSRC, marker=n % 4 == 3, extensions=
                                build_extensions(exts), payload=payload, csrcs=csrcs))
    return out


def count_general_path(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the packets that take the general path (``Slot.forward``) into the returned
    one-element list."""
    calls = [0]
    original = Slot.forward

    def counted(self: Slot, *args: Any) -> None:
        calls[0] += 1
        original(self, *args)

    monkeypatch.setattr(Slot, "forward", counted)
    return calls


def run(kind: str, compiled: bool, udp: tuple[socket.socket, socket.socket],
        ext_ids: dict[str, int], monkeypatch: pytest.MonkeyPatch, batched: bool = False
        ) -> tuple[list[list[bytes]], Stats, int]:
    monkeypatch.setattr(track_module, "time", Clock())
    out, into = udp
    pub, slots, stats = make_track(kind, 3, out if compiled else None, into.getsockname(),
                                   ext_ids, batched)
    general = count_general_path(monkeypatch)

    async def one_turn() -> None:
        """Every packet in one turn of an event loop, as uvloop hands out a frame: with an
        outbox each peer's packets wait in its run and leave in the flush after it."""
        for data in packets(kind):
            pub.on_rtp(RtpHeader.parse(data), data)
        if batched:
            assert pub.outbox is not None and pub.outbox.batch.pending
        await asyncio.sleep(0)

    asyncio.run(one_turn())
    if batched:
        assert pub.outbox is not None and not pub.outbox.batch.pending
        # the runs really were sent together: fewer sends than packets
        assert 0 < pub.outbox.batch.sends < pub.outbox.batch.packets
    rx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    wire: list[bytes] = []
    if compiled:
        expected = stats.forwarded_packets - sum(len(s.owner.sub.sent) for s in slots)
        for _ in range(expected):
            wire.append(rx.unprotect(into.recv(2048)))
    per_slot = []
    for slot in slots:
        mine = [p for p in wire if RtpHeader.parse(p).ssrc == slot.lane.ssrc]
        got = sorted(slot.owner.sub.sent + mine, key=lambda p: RtpHeader.parse(p).sequence_number)
        per_slot.append(got)
    return per_slot, stats, general[0]


IDS = {URI_MID: 4, URI_AUDIO_LEVEL: 5, URI_ABS_SEND_TIME: 6}


@pytest.mark.parametrize("batched", [False, True], ids=["sendto", "batched"])
@pytest.mark.parametrize("kind", ["video", "audio"])
def test_compiled_path_writes_what_the_general_path_writes(
        kind: str, batched: bool, udp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled, c_stats, c_general = run(kind, True, udp, IDS, monkeypatch, batched)
    general, g_stats, g_general = run(kind, False, udp, IDS, monkeypatch)
    assert compiled == general
    assert all(len(s) >= 6 for s in compiled)
    c_drops, g_drops = c_stats.snapshot(), g_stats.snapshot()
    assert c_drops["drop_before_run"] == g_drops["drop_before_run"] == 3
    if kind == "video":
        # a video duplicate is known by the upstream loss recovery (sfu/nackgen.py) and
        # dropped once, before any lane; the hole before it was asked for
        assert c_drops["drop_duplicate"] == g_drops["drop_duplicate"] == 1
        assert "drop_send_failed" not in c_drops and "drop_send_failed" not in g_drops
        assert c_drops["upstream_nacked"] == g_drops["upstream_nacked"] == 3  # 103, 107, 108
        assert c_drops["upstream_late"] == g_drops["upstream_late"] == 1
    else:
        # the duplicate reuses an out seq: libsrtp refuses it on both paths (RFC 3711 §3.3.2)
        assert c_drops["drop_send_failed"] == g_drops["drop_send_failed"] == 3
    # and the compiled path did the work: only each run's first packet and the packets
    # from before the run went to Slot.forward (one packet reaches no lane: audio's
    # silence, video's duplicate)
    assert g_general == 3 * (len(packets(kind)) - 1)
    assert c_general == 3 + 3
    first = RtpHeader.parse(compiled[0][1])
    assert first.ssrc == SUB_SSRC and first.payload_type == 100 and first.extensions[4] == b"10"


def test_two_byte_ids_take_the_general_path(udp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = {URI_MID: 15, URI_AUDIO_LEVEL: 5}  # id 15 cannot be one-byte (RFC 8285 §4.2)
    compiled, _, c_general = run("audio", True, udp, ids, monkeypatch)
    general, _, _ = run("audio", False, udp, ids, monkeypatch)
    assert compiled == general
    assert c_general == 3 * (len(packets("audio")) - 1)  # all but the silent one
    assert 15 in RtpHeader.parse(compiled[0][0]).extensions


def test_lanes_without_a_current_pair_come_back(udp: Any) -> None:
    out, into = udp
    peer = Peer(out, into.getsockname())
    assert peer.sender is not None and peer.sender.ready
    lane = Lane(peer.sender)
    lane.pt, lane.ssrc, lane.started = 100, 1, True
    lane.set_ext(b"\x40" + b"0", b"", b"", True)
    data = build_packet(payload_type=96, sequence_number=5, timestamp=1, ssrc=2,
                        marker=False, extensions=b"", payload=b"x" * 10)
    lane.last_in_seq = lane.resume_seq = 4
    tapped: list[bytes] = []
    peer.sender.tap = tapped.append  # what tests/sfutap.py sees: the packet before SRTP
    assert fanout([lane], data, 12, len(data), None, None, 1.0) == (1, 12 + 8 + 10, 0, 0, None, 0)
    rx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    assert tapped == [rx.unprotect(into.recv(2048))]
    peer.sender.tap = None
    assert lane.packets == 1 and lane.octets == 10 and lane.sent_as((5 - 0) & 0xFFFF) == 5
    peer.nominated[1] = object()  # aioice switched the pair: Slot.forward re-resolves
    assert not peer.sender.ready
    assert fanout([lane], data, 12, len(data), None, None, 1.0) == (0, 0, 0, 0, [0], 0)
    peer.nominated[1] = peer.pair
    lane.waiting_key = True  # Slot.forward gates on key frames and asks for one
    assert fanout([lane], data, 12, len(data), None, None, 1.0)[4] == [0]
    lane.waiting_key = False
    peer.sender.clear()  # DTLS went down
    assert not peer.sender.ready
    assert fanout([lane, Lane(None)], data, 12, len(data), None, None, 1.0)[4] == [0, 1]
    assert lane.packets == 1


@pytest.mark.parametrize("descriptor", [
    build_descriptor(start=True, picture_id=0x7FF0, tl0_pic_idx=250, tid=0),  # I (M), L, T
    build_descriptor(start=False, picture_id=3),  # I only
    bytes([0x90, 0xC0, 0x7E, 0xFF]),  # 7-bit PictureID, L
    bytes([0x90, 0x40, 0x09]),  # L only
    bytes([0x10]),  # no extension octet
    bytes([0x90, 0x80, 0x80]),  # truncated 15-bit PictureID: left alone
])
def test_simulcast_descriptor_rewrite_matches_python(udp: Any, descriptor: bytes) -> None:
    """A simulcast lane (``vp8``) advances PictureID and TL0PICIDX in its copy of the
    payload exactly as sfu/vp8.py rewrite_descriptor does; other lanes are untouched."""
    out, into = udp
    peer = Peer(out, into.getsockname())
    lanes = [Lane(peer.sender), Lane(peer.sender)]
    for i, lane in enumerate(lanes):
        lane.pt, lane.ssrc, lane.started = 100, 1 + i, True
        lane.last_in_seq = lane.resume_seq = 4
    lanes[0].vp8, lanes[0].picture_offset, lanes[0].tl0_offset = True, 0x7F00, 10
    payload = descriptor + b"\x01frame bytes"
    data = build_packet(payload_type=96, sequence_number=5, timestamp=1, ssrc=2,
                        marker=False, extensions=b"", payload=payload)
    tapped: list[bytes] = []
    peer.sender.tap = tapped.append  # type: ignore[union-attr]
    assert fanout(lanes, data, 12, len(data), None, None, 1.0)[0] == 2
    assert tapped[0][12:] == rewrite_descriptor(payload, 0x7F00, 10)
    assert tapped[1][12:] == payload
    drain(into)


def test_paused_lanes_skip_as_slot_skip_does(udp: Any) -> None:
    # last-N pauses most lanes of a large room: fanout skips them itself (no Slot.forward)
    out, into = udp
    peer = Peer(out, into.getsockname())
    lanes = [Lane(peer.sender), Lane(None)]
    for lane in lanes:
        lane.pt, lane.started, lane.active = 100, True, False
        lane.last_in_seq, lane.seq_offset = 10, 65535
    data = build_packet(payload_type=96, sequence_number=11, timestamp=1, ssrc=2,
                        marker=False, extensions=b"", payload=b"z")
    assert fanout(lanes, data, 12, len(data), None, None, 1.0) == (0, 0, 0, 2, None, 0)
    assert [(x.last_in_seq, x.seq_offset) for x in lanes] == [(11, 0), (11, 0)]
    skip(lanes, 11)  # not newer: nothing moves
    lanes[0].skip(12)
    assert [(x.last_in_seq, x.seq_offset) for x in lanes] == [(12, 1), (11, 0)]
    lanes[1].started = False
    skip(lanes, 13)  # a lane whose run has not started keeps its offsets
    assert [(x.last_in_seq, x.seq_offset) for x in lanes] == [(13, 2), (11, 0)]


def test_oversized_and_malformed_input_is_refused_not_overflowed(udp: Any) -> None:
    out, into = udp
    peer = Peer(out, into.getsockname())
    lane = Lane(peer.sender)
    lane.pt, lane.started = 100, True
    big = build_packet(payload_type=96, sequence_number=1, timestamp=1, ssrc=2, marker=False,
                       extensions=b"", payload=b"x" * 1400)
    # too long once SRTP's trailer is added: left to the general path, which reports it
    assert fanout([lane], big, 12, len(big), None, None, 1.0)[4] == [0]
    with pytest.raises(ValueError):
        fanout([lane], big, 12, len(big) + 1, None, None, 1.0)
    with pytest.raises(ValueError):
        fanout([lane], b"\x8f" + big[1:20], 12, 20, None, None, 1.0)  # 15 CSRCs claimed
    with pytest.raises(TypeError):
        fanout([lane], big, 12, len(big), "level", None, 1.0)
    with pytest.raises(ValueError):
        lane.set_ext(b"x" * 18, b"", b"", True)
    with pytest.raises(ValueError):
        peer.sender.point(1, 1, peer.session, {}, None, out.fileno(), "not-an-ip", 1)  # type: ignore[union-attr]


def test_extension_blocks_match_the_general_writer() -> None:
    lane = Lane()
    lane.set_ext(bytes([(4 << 4) | 1]) + b"12", bytes([5 << 4]), bytes([(6 << 4) | 2]), True)
    for level in (None, b"\x9e"):
        for ast in (None, b"\x01\x02\x03"):
            elements = [(4, b"12")]
            if level:
                elements.append((5, level))
            if ast:
                elements.append((6, ast))
            assert lane.extensions(level, ast) == build_extensions(elements)
    assert lane.extensions(b"\x01\x02", None) is None  # not the 1-byte level: general path
    bare = Lane()
    bare.set_ext(b"", b"", b"", True)
    assert bare.extensions(None, None) == b""


def test_sender_keeps_its_own_descriptor(udp: Any) -> None:
    out, into = udp
    peer = Peer(out, into.getsockname())
    lane = Lane(peer.sender)
    lane.pt, lane.started = 100, True
    out.close()  # aioice closed the socket: our duplicate still names the same socket
    data = build_packet(payload_type=96, sequence_number=1, timestamp=1, ssrc=2,
                        marker=False, extensions=b"", payload=b"y" * 10)
    assert fanout([lane], data, 12, len(data), None, None, 1.0)[0] == 1
    assert into.recv(2048)
    assert peer.sender is not None
    peer.sender.clear()


def pointed_lane(out: socket.socket, into: socket.socket) -> tuple[Peer, Lane]:
    peer = Peer(out, into.getsockname())
    lane = Lane(peer.sender)
    lane.pt, lane.ssrc, lane.started = 100, SUB_SSRC, True
    lane.set_ext(b"\x40" + b"0", b"", b"", True)
    return peer, lane


def sized(seq: int, size: int) -> bytes:
    return build_packet(payload_type=96, sequence_number=seq, timestamp=1, ssrc=2,
                        marker=False, extensions=b"", payload=bytes([seq & 0xFF]) * size)


def drain(into: socket.socket) -> list[bytes]:
    into.settimeout(0.2)
    out = []
    try:
        while True:
            out.append(into.recv(65536))
    except TimeoutError:
        return out
    finally:
        into.settimeout(2.0)


def test_a_run_leaves_as_separate_datagrams_in_order_and_splits_on_size(udp: Any) -> None:
    """UDP GSO (udp(7) UDP_SEGMENT): all segments but the last have one size, so a
    shorter packet ends its run and a longer one starts the next; the receiver gets
    the original datagrams, in the order they were staged."""
    out, into = udp
    peer, lane = pointed_lane(out, into)
    tapped: list[bytes] = []
    assert peer.sender is not None
    peer.sender.tap = tapped.append
    batch = Batch()
    sizes = [500, 500, 500, 400, 500, 500, 600]
    for i, size in enumerate(sizes):
        data = sized(10 + i, size)
        assert fanout([lane], data, 12, len(data), None, None, 1.0, batch)[:3] == (
            1, 12 + 8 + size, 0)
    # the run [500, 500, 500, 400] was closed by its short packet and left when the next
    # packet came; [500, 500] left when the longer 600 came; 600 waits for the flush
    assert (batch.sends, batch.packets) == (2, 6) and batch.pending
    assert len(drain(into)) == 6
    assert batch.flush() == 0
    assert (batch.sends, batch.packets, batch.pending) == (3, 7, False)
    assert len(drain(into)) == 1
    assert batch.flush() == 0 and batch.sends == 3  # nothing staged: nothing sent
    for i, size in enumerate(sizes):  # run the same packets again, read them all at the end
        data = sized(100 + i, size)
        fanout([lane], data, 12, len(data), None, None, 1.0, batch)
    batch.flush()
    rx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    wire = drain(into)
    assert [rx.unprotect(w) for w in wire] == tapped[len(sizes):]
    assert [len(p) for p in tapped[len(sizes):]] == [12 + 8 + n for n in sizes]


def test_a_socket_that_refuses_gso_gets_single_sends(udp: Any) -> None:
    """The kernel refuses UDP_SEGMENT on a socket without UDP checksums (EINVAL): that
    run goes out one datagram at a time and so does everything after it."""
    out, into = udp
    out.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK (asm-generic/socket.h)
    _peer, lane = pointed_lane(out, into)
    batch = Batch()
    for seq in (1, 2, 3):
        data = sized(seq, 300)
        fanout([lane], data, 12, len(data), None, None, 1.0, batch)
    assert batch.flush() == 0
    assert len(drain(into)) == 3
    data = sized(4, 300)
    assert fanout([lane], data, 12, len(data), None, None, 1.0, batch)[0] == 1
    assert not batch.pending  # sent at once, not staged
    assert len(drain(into)) == 1


def test_staged_packets_are_lost_and_counted_when_the_sender_goes(udp: Any) -> None:
    out, into = udp
    peer, lane = pointed_lane(out, into)
    assert peer.sender is not None
    batch = Batch()
    for seq in (1, 2):
        data = sized(seq, 200)
        fanout([lane], data, 12, len(data), None, None, 1.0, batch)
    peer.sender.clear()  # DTLS went down while they waited: never sent with a dead context
    assert batch.flush() == 2 and batch.failed == 2
    assert drain(into) == []


def test_a_lane_left_to_slot_forward_sends_its_run_first(udp: Any) -> None:
    """Slot.forward sends at once; whatever the peer has staged must not come after it."""
    out, into = udp
    _peer, lane = pointed_lane(out, into)
    batch = Batch()
    data = sized(1, 200)
    fanout([lane], data, 12, len(data), None, None, 1.0, batch)
    assert drain(into) == []
    lane.waiting_key = True
    data = sized(2, 200)
    assert fanout([lane], data, 12, len(data), None, None, 1.0, batch)[4] == [0]
    assert len(drain(into)) == 1  # the staged packet left before Slot.forward's
    assert batch.flush() == 0


def test_a_batch_of_the_wrong_type_is_refused(udp: Any) -> None:
    out, into = udp
    _, lane = pointed_lane(out, into)
    data = sized(1, 10)
    with pytest.raises(TypeError):
        fanout([lane], data, 12, len(data), None, None, 1.0, object())  # type: ignore[arg-type]


def test_compiled_fanout_to_ten(benchmark: Any, udp: Any) -> None:
    """The per-packet cost of the compiled loop for ten subscribers, real SRTP and sendto
    (pytest --benchmark-enable tests/test_fanout.py)."""
    out, into = udp
    into.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    lanes = []
    for i in range(10):
        lane = Lane(Peer(out, into.getsockname()).sender)
        lane.pt, lane.ssrc, lane.started = 100, SUB_SSRC + i, True
        lane.set_ext(b"\x40" + b"0", b"", b"", True)
        lanes.append(lane)
    payload = vp8(False) + os.urandom(800)
    seq = iter(range(1, 10**9))

    def forward() -> tuple[int, int, int, int, list[int] | None, int]:
        data = build_packet(payload_type=96, sequence_number=next(seq) & 0xFFFF, timestamp=1,
                            ssrc=2, marker=False, extensions=b"", payload=payload)
        return fanout(lanes, data, 12, len(data), None, None, 1.0)

    sent, _, failed, paused, slow, temporal = benchmark(forward)
    assert (sent, failed, paused, slow, temporal) == (10, 0, 0, None, 0)


# --- temporal layers (docs/SFU.md "Simulcast") ---------------------------------------------

L1T3 = (0, 2, 1, 2)  # TIDs of the pictures of an L1T3 cycle (as peers.mediabot)


class TemporalRun:
    """A simulcast slot on layer q of a two-layer track (q, f), fed pictures of two packets
    each while its temporal target changes, with uplink reordering (a late packet of a
    picture it forwards, one of a picture it drops) and a switch to f; every packet the
    slot sends, in the order sent (``sent``), from the compiled path (``Sender.tap``) or
    the general one."""

    def __init__(self, out: socket.socket | None, dest: tuple[str, int]) -> None:
        self.stats = Stats()
        self.track = PublishedTrack(Owner(Peer(None, dest)), "video", "0", self.stats,  # type: ignore[arg-type]
                                    512, 0.0)
        self.track.add_layers(["q", "f"])
        self.q, self.f = self.track.layers
        self.q.ssrc, self.f.ssrc = 0x1111, 0x2222
        self.track.set_pub(Negotiated("video", "0", 0, 0, {"vp8": 96}, 97, {URI_MID: 1}))
        self.peer = Peer(out, dest)
        if self.peer.sender is not None:
            self.peer.sender.tap = self.peer.sent.append  # compiled packets, pre-SRTP
        self.slot = Slot(Owner(self.peer), "video", None, self.stats)  # type: ignore[arg-type]
        self.slot.set_params(Negotiated("video", "5", 0x5000, 0x6000, {"vp8": 100}, 101,
                                        {URI_MID: 4}))
        self.slot.lane.last_out_seq, self.slot.lane.last_out_ts = 65520, 7  # wraps
        self.slot.attach(self.track)
        self.seq = {0x1111: 100, 0x2222: 9000}
        self.pic = {0x1111: 500, 0x2222: 20000}
        self.tl0 = {0x1111: 7, 0x2222: 200}
        self.frames = {0x1111: 0, 0x2222: 0}
        self.payloads: dict[tuple[int, int], bytes] = {}  # (layer ssrc, seq) -> payload
        self.held: list[bytes] = []  # packets held back (late)

    def picture(self, layer: PublishedTrack, key: bool = False, y: bool = False,
                hold: int | None = None) -> int:
        """One picture of two packets on ``layer``; ``hold``: that packet (0 or 1) is
        held back for ``release``. Returns its TID."""
        ssrc = layer.ssrc
        assert ssrc is not None
        if key:
            self.frames[ssrc] = 0
        tid = L1T3[self.frames[ssrc] % 4]
        self.frames[ssrc] += 1
        if tid == 0:
            self.tl0[ssrc] = (self.tl0[ssrc] + 1) & 0xFF
        self.pic[ssrc] = (self.pic[ssrc] + 1) & 0x7FFF
        body = vp8(key, self.pic[ssrc])[1:]
        for i in range(2):
            d = bytearray(build_descriptor(start=i == 0, picture_id=self.pic[ssrc],
                                           tl0_pic_idx=self.tl0[ssrc], tid=tid))
            if y:
                d[-1] |= 0x20  # the layer sync bit (RFC 7741 §4.2 Y)
            payload = bytes(d) + (body if i == 0 else noise(self.pic[ssrc], 200))
            seq = self.seq[ssrc] = (self.seq[ssrc] + 1) & 0xFFFF
            self.payloads[(ssrc, seq)] = payload
            data = build_packet(payload_type=96, sequence_number=seq,
                                timestamp=3000 * self.pic[ssrc], ssrc=ssrc, marker=i == 1,
                                extensions=b"", payload=payload)
            if hold == i:
                self.held.append(data)
            else:
                layer.on_rtp(RtpHeader.parse(data), data)
        return tid

    def release(self, layer: PublishedTrack) -> None:
        for data in self.held:
            layer.on_rtp(RtpHeader.parse(data), data)
        self.held.clear()

    def play(self) -> list[int]:
        """The script; returns the TID of each picture sent, in order (q's, then f's)."""
        q, f, slot = self.q, self.f, self.slot
        tids = [self.picture(q, key=True)]
        tids += [self.picture(q) for _ in range(3)]  # all of them: 2, 1, 2
        slot.set_temporal(0)  # from the next picture on, TID 0 only
        tids.append(self.picture(q, hold=1))  # TID 0, its second packet late
        tids.append(self.picture(q, hold=0))  # TID 2 (dropped), its first packet late
        tids.append(self.picture(q))  # TID 1: dropped
        self.release(q)  # the late ones: one is forwarded, one becomes padding
        tids += [self.picture(q) for _ in range(5)]  # 2 0 2 1 2
        slot.select(f, 1.0)  # the switch waits for f's key frame
        tids.append(self.picture(f))  # (f without a key frame: not yet)
        tids.append(self.picture(q))
        tids.append(self.picture(f, key=True))  # the switch: f from here, TID 0 only
        tids += [self.picture(f) for _ in range(3)]  # 2 1 2: dropped
        slot.set_temporal(None)  # all again, from a sync point on
        tids.append(self.picture(f))  # TID 0
        tids.append(self.picture(f))  # TID 2 without Y: still dropped
        tids.append(self.picture(f, y=True))  # TID 1 with Y: up to 1
        tids.append(self.picture(f))  # TID 2 without Y: dropped
        tids.append(self.picture(f, key=True))  # a key frame: every layer
        tids += [self.picture(f) for _ in range(3)]  # 2 1 2: all forwarded
        return tids


def run_temporal(out: socket.socket | None, dest: tuple[str, int],
                 monkeypatch: pytest.MonkeyPatch) -> tuple[TemporalRun, int]:
    monkeypatch.setattr(track_module, "time", Clock())
    t = TemporalRun(out, dest)
    general = count_general_path(monkeypatch)

    async def scenario() -> None:
        t.play()

    asyncio.run(scenario())
    return t, general[0]


def test_temporal_filter_compiled_matches_general(udp: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporal filter, its drop log and the late packets after drops: the compiled
    path sends what the general path sends, byte for byte, with the same counters, and
    leaves to Slot.forward only run starts, waits and the late packets."""
    out, into = udp
    compiled, c_general = run_temporal(out, into.getsockname(), monkeypatch)
    general, g_general = run_temporal(None, into.getsockname(), monkeypatch)
    drain(into)
    assert compiled.peer.sent == general.peer.sent
    assert len(general.peer.sent) > 20
    c, g = compiled.stats.snapshot(), general.stats.snapshot()
    for name in ("temporal_dropped", "temporal_padding", "temporal_switches_down",
                 "temporal_switches_up", "dropped"):
        assert c.get(name) == g.get(name), name
    # q: TID 2 (one packet; its other one came late), then 1, 2, 2, 1, 2; f: 2, 1, 2,
    # then the two TID 2 pictures without Y while waiting to go up
    assert c["temporal_dropped"] == 1 + 2 * 5 + 2 * 3 + 2 * 2
    assert compiled.slot.lane.temporal_dropped == c["temporal_dropped"]
    assert c["temporal_padding"] == 1
    # compiled: the first packet of each run, f's picture awaiting the key frame... and
    # the two late packets; the general path: every packet that reached the slot
    assert c_general < 10 < g_general
