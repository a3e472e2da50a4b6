"""Rooms of 3 and 8 real aiortc participants through the SFU over loopback ICE/DTLS-SRTP."""

from __future__ import annotations

import asyncio
import gc
import re
import threading
from typing import Any

import av
import pytest

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig
from sfu.ice import IcePolicy
from sfu.vp8 import is_keyframe

pytestmark = pytest.mark.media

SFU_PORTS = (41000, 41999)
BOT_PORTS = IcePolicy("127.0.0.1", port_min=52000, port_max=52999)


async def start_room(sfu: Sfu, n: int, room: str = "r") -> list[MediaBot]:
    bots = [MediaBot(f"p{i}", ice=BOT_PORTS) for i in range(n)]
    for b in bots:
        await b.join(sfu, room)
    for b in bots:
        await b.publish()
    return bots


def decoder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "decoder" in t.name or "encoder" in t.name]


def codec_contexts() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, av.codec.context.CodecContext))


def assert_delivered(bots: list[MediaBot], min_audio: int, min_video: int) -> None:
    """Every participant got every other one's audio and video exactly once, byte-identical."""
    for sub in bots:
        assert sub.counters["unknown_mid"] == 0
        assert sub.counters["ssrc_mismatch"] == 0
        assert sub.counters["pt_mismatch"] == 0
        for pub in bots:
            if pub is sub:
                assert sub.stream(pub.pid, "audio") is None
                continue
            for kind, minimum in (("audio", min_audio), ("video", min_video)):
                r = sub.stream(pub.pid, kind)
                assert r is not None, f"{sub.pid} got no {kind} from {pub.pid}"
                got = r.ordered()
                assert r.duplicates == 0
                assert r.contiguous(), f"{sub.pid}: hole in {kind} from {pub.pid}"
                assert len(got) >= minimum
                sent = pub.sent[kind]
                start = sent.index(got[0])
                assert sent[start : start + len(got)] == got  # byte-identical, in order
                if kind == "video":
                    assert is_keyframe(got[0])  # gated until a key frame


async def run_room(n: int, seconds: float) -> None:
    sfu = Sfu(SfuConfig(port_min=SFU_PORTS[0], port_max=SFU_PORTS[1]))
    contexts_before = codec_contexts()
    bots = await start_room(sfu, n)
    try:
        assert await bots[0].wait_for(
            lambda: all(len(b.received) == 2 * (n - 1) for b in bots), timeout=30)
        # every slot past its first key frame (sub offers are coalesced, so all of a room's
        # slots start together and most wait for one throttled PLI round, docs/SFU.md)
        assert await bots[0].wait_for(lambda: all(
            (r := b.stream(p.pid, "video")) is not None and len(r.payloads) > 0
            for b in bots for p in bots if p is not b), timeout=30)
        start = sfu.stats()
        threads_seen: set[str] = set()
        for _ in range(int(seconds / 0.1)):
            threads_seen.update(decoder_threads())
            await asyncio.sleep(0.1)
        for b in bots:
            await b.stop_media()
        await asyncio.sleep(0.5)
        assert_delivered(bots, min_audio=int(seconds * 25), min_video=int(seconds * 10))
        # never decodes: no codec thread, no codec context, aiortc receivers never started
        assert threads_seen == set()
        assert codec_contexts() == contexts_before
        for p in sfu.participants.values():
            for peer in (p.pub, p.sub):
                for t in peer.pc.getTransceivers():
                    ice = t.receiver.transport.transport.iceGatherer._connection
                    assert ice.stun_server is None and ice.turn_server is None  # no public STUN
                    assert t.receiver._RTCRtpReceiver__decoder_thread is None
                    assert not t.receiver._RTCRtpReceiver__started
                    assert not t.sender._RTCRtpSender__started
        # no key-frame storm on encrypted-looking VP8: PLIs only around joins
        for b in bots:
            assert b.counters["pli_received"] <= n
        stats = sfu.stats()
        assert stats.get("plis_sent", 0) <= 2 * n
        # the compiled fan-out did the forwarding once every slot had its first key frame:
        # Slot.forward saw only each run's first packets (sfu/_fanout.c)
        forwarded = stats["forwarded_packets"] - start.get("forwarded_packets", 0)
        general = stats.get("general_path", 0) - start.get("general_path", 0)
        assert forwarded > 10 * general
        assert stats.get("drop_malformed_rtp", 0) == 0
        expected = {b.pid for b in bots}
        assert set(sfu.participants) == expected
        # participants only ever see the SFU's candidates
        check_candidates(bots)
        # sender reports translated into each subscriber's SSRC space (RFC 3550 §7.2)
        for sub in bots:
            for pub in bots:
                if pub is sub:
                    continue
                ssrc = sub.ssrc_of(pub.pid, "video")
                assert ssrc is not None and sub.sender_reports.get(ssrc)
                stream = sub.stream(pub.pid, "video")
                assert stream is not None
                last_ts = stream.timestamps[max(stream.timestamps)]
                sr = sub.sender_reports[ssrc][-1]
                assert abs(((sr.rtp_timestamp - last_ts + (1 << 31)) % (1 << 32)) - (1 << 31)) \
                    < 3 * 90000
        # receiver reports and REMB reach publishers
        for b in bots:
            assert b.counters["rr_received"] >= 1
            assert b.remb and all(0 < x <= sfu.config.max_video_bitrate for x in b.remb)
    finally:
        for b in bots:
            await b.close()
        await sfu.close()


def check_candidates(bots: list[MediaBot]) -> None:
    bot_ports = set()
    for b in bots:
        for peer in (b.pub, b.sub):
            for line in peer.pc.localDescription.sdp.splitlines():
                if line.startswith("a=candidate"):
                    bot_ports.add(int(line.split()[5]))
    assert bot_ports and all(52000 <= p <= 52999 for p in bot_ports)
    for b in bots:
        remote = [m["sdp"] for m in b.messages if m.get("type") in ("sfu-offer", "sfu-answer")]
        assert remote
        for sdp in remote:
            candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate")]
            assert candidates
            for line in candidates:
                parts = line.split()
                assert parts[4] == "127.0.0.1" and parts[7] == "host"
                port = int(parts[5])
                assert SFU_PORTS[0] <= port <= SFU_PORTS[1]
                assert port not in bot_ports
            assert not re.search(r"raddr|srflx|relay", sdp)


async def test_room_of_3() -> None:
    await run_room(3, seconds=2.0)


async def test_room_of_8() -> None:
    await run_room(8, seconds=2.0)


async def test_announced_address_is_what_clients_see() -> None:
    sfu = Sfu(SfuConfig(announced_host="192.0.2.7"))
    seen: list[dict[str, Any]] = []
    bots = [MediaBot("a"), MediaBot("b")]
    try:
        for b in bots:
            await b.join(sfu, "x")
        await bots[0].publish()
        assert await bots[1].wait_for(lambda: bots[1].sub_offers >= 1, timeout=10)
        seen = [m for b in bots for m in b.messages if m.get("type") in ("sfu-offer",
                                                                          "sfu-answer")]
        assert seen
        for m in seen:
            hosts = {line.split()[4] for line in m["sdp"].splitlines()
                     if line.startswith("a=candidate")}
            assert hosts == {"192.0.2.7"}
    finally:
        for b in bots:
            await b.close()
        await sfu.close()
