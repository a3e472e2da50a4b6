"""Malformed RTP/RTCP is dropped and counted; it never crashes the SFU or disturbs others.

Two layers: garbage sent through a participant's real SRTP transport, and hypothesis
feeding the SFU's packet handlers directly while a real room keeps running.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig, rtcp
from sfu.rtp import build_packet

pytestmark = pytest.mark.media


def malformed_rtp(ssrcs: list[int], seq: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(7 structurally broken, 8 with an unnegotiated PT, 30 with unknown SSRCs)."""
    rnd = random.Random(7)
    good = build_packet(payload_type=127, sequence_number=1, timestamp=2, ssrc=ssrcs[0],
                        marker=False, extensions=b"", payload=b"\x10" + os.urandom(40))
    # header + almost nothing; fresh sequence numbers just ahead of the stream's, or
    # libsrtp's replay protection (RFC 3711 §3.3.2) refuses them
    wrong_pt = [good[:2] + struct.pack("!H", (seq + n) & 0xFFFF) + good[4:n]
                for n in range(12, 20)]
    out = [bytes([0x8F]) + good[1:]]  # CC=15 but no CSRCs
    out.append(bytes([0x90]) + good[1:12] + b"\xbe\xde\x7f\xff" + b"\x00" * 8)  # ext too long
    out.append(bytes([0x90]) + good[1:12] + b"\xbe\xde\x00\x01\x3f\x00\x00\x00")  # element overrun
    out.append(bytes([0x90]) + good[1:12] + b"\x10\x00\x00\x01\x05\x09\x00\x00")  # 2-byte overrun
    out.append(bytes([0xA0]) + good[1:-1] + b"\xff")  # padding longer than the packet
    out.append(bytes([0xA0]) + good[1:-1] + b"\x00")  # padding count zero
    out.append(bytes([0x40]) + good[1:])  # version 1
    unknown = [good[:8] + struct.pack("!I", rnd.getrandbits(32)) + good[12:] for _ in range(30)]
    return out, wrong_pt, unknown


def malformed_rtcp(ssrc: int) -> list[bytes]:
    pli = bytes(rtcp.Pli(1, ssrc))
    out = [pli[:2] + b"\x00\x09" + pli[4:]]  # length claims 40 bytes, has 12
    out.append(pli[:2] + b"\x00\x00" + pli[4:])  # length claims 4, trailing garbage header
    out.append(bytes([0x81, 200, 0, 1]) + b"\x00" * 4)  # SR with one report, truncated
    out.append(bytes([0x81, 205, 0, 1]) + b"\x00" * 4)  # NACK missing media SSRC
    out.append(bytes([0x8F, 206, 0, 4]) + b"\x00" * 8 + b"REMB\xff\x00\x00\x00")  # REMB lies
    out.append(bytes([0x84, 206, 0, 3]) + b"\x00" * 8 + b"\x00" * 4)  # FIR FCI cut
    out.append(bytes(rtcp.Pli(1, 0xDEADBEEF)))  # well-formed, unknown SSRC
    out.append(bytes(rtcp.Nack(1, 0xDEADBEEF, [1, 2, 3])))
    return out


def assert_intact(x: MediaBot, y: MediaBot) -> None:
    for sub, pub in ((x, y), (y, x)):
        for kind in ("audio", "video"):
            r = sub.stream(pub.pid, kind)
            assert r is not None and r.contiguous() and r.duplicates == 0
            got = r.ordered()
            sent = pub.sent[kind]
            start = sent.index(got[0])
            assert sent[start : start + len(got)] == got


async def test_garbage_through_srtp_is_dropped_and_counted() -> None:
    sfu = Sfu(SfuConfig())
    a, b, m = MediaBot("a"), MediaBot("b"), MediaBot("m")
    try:
        for x in (a, b, m):
            await x.join(sfu, "f")
            await x.publish()
        assert await a.wait_for(lambda: all(len(x.received) == 4 for x in (a, b, m)), 20)
        await m.stop_media()
        ssrc = m._pub_params["video"].ssrc
        target = b.ssrc_of("a", "video")
        assert target is not None
        broken, wrong_pt, unknown = malformed_rtp([ssrc], m._seq["video"])
        # broken headers: libsrtp refuses to protect or unprotect most of them, so they are
        # handed to the SFU's RTP handler as the SRTP layer would hand them over
        pm = sfu.participants["m"]
        for packet in broken:
            pm._pub_rtp(packet)
        sent = 0
        for packet in wrong_pt + unknown:  # these travel through the real SRTP transport
            sent += await m.pub.send(packet)
        for packet in malformed_rtcp(target):
            await m.sub.send(packet)
            await m.pub.send(packet)
        assert sent == 38
        await asyncio.sleep(0.5)
        stats = sfu.stats()
        assert stats["drop_malformed_rtp"] == 7
        assert stats["drop_unexpected_pt"] == 8
        assert stats["drop_unknown_ssrc"] == 30
        assert stats["drop_malformed_rtcp"] >= 6
        assert stats["drop_rtcp_unknown_ssrc"] >= 2
        assert stats.get("drop_handler_error", 0) == 0
        n = len(b.stream("a", "video").payloads)  # type: ignore[union-attr]
        assert await b.wait_for(lambda: len(b.stream("a", "video").payloads) > n + 10, 5)  # type: ignore[union-attr]
        await a.stop_media()
        await b.stop_media()
        await asyncio.sleep(0.3)
        assert_intact(a, b)
        assert set(sfu.participants) == {"a", "b", "m"}
    finally:
        for x in (a, b, m):
            await x.close()
        await sfu.close()


def rtp_strategy(ssrcs: list[int]) -> st.SearchStrategy[bytes]:
    header = st.builds(
        lambda first, pt, seq, ts, ssrc, rest: bytes([first, pt]) + struct.pack(
            "!HII", seq, ts, ssrc) + rest,
        st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF), st.sampled_from(ssrcs) | st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=64),
    )
    return header | st.binary(max_size=80)


def rtcp_strategy(ssrcs: list[int]) -> st.SearchStrategy[bytes]:
    one = st.builds(
        lambda first, pt, length, ssrc, rest: bytes([first, pt]) + struct.pack(
            "!HII", length, 1, ssrc) + rest,
        st.integers(0x80, 0xBF), st.integers(192, 210), st.integers(0, 0xFFFF),
        st.sampled_from(ssrcs) | st.integers(0, 0xFFFFFFFF), st.binary(max_size=48),
    )
    return st.lists(one, min_size=1, max_size=3).map(b"".join) | st.binary(max_size=80)


def test_fuzzed_packets_into_the_handlers() -> None:
    loop = asyncio.new_event_loop()
    run: Callable[[Coroutine[Any, Any, Any]], Any] = loop.run_until_complete
    sfu = Sfu(SfuConfig())
    a, b, m = (loop.run_until_complete(_bot(sfu, pid)) for pid in ("a", "b", "m"))
    try:
        assert run(a.wait_for(lambda: all(len(x.received) == 4 for x in (a, b, m)), 20))
        run(m.stop_media())
        pm = sfu.participants["m"]
        ssrcs = [t.ssrc for t in pm.tracks.values() if t.ssrc is not None]
        ssrcs += [s.ssrc for s in pm.slots]

        @settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(rtp=rtp_strategy(ssrcs), feedback=rtcp_strategy(ssrcs))
        def feed(rtp: bytes, feedback: bytes) -> None:
            pm._pub_rtp(rtp)  # the handlers are plain functions: an exception fails here
            pm._pub_rtcp(feedback)
            pm._sub_rtcp(feedback)
            run(asyncio.sleep(0))  # let what they scheduled (PLI timers) run

        feed()
        assert sfu.stats()["dropped"] > 0
        assert sfu.stats().get("drop_handler_error", 0) == 0
        run(asyncio.sleep(0.5))
        for x in (a, b):
            run(x.stop_media())
        run(asyncio.sleep(0.3))
        assert_intact(a, b)
    finally:
        for x in (a, b, m):
            run(x.close())
        run(sfu.close())
        loop.close()


async def _bot(sfu: Sfu, pid: str) -> MediaBot:
    bot = MediaBot(pid)
    await bot.join(sfu, "h")
    await bot.publish()
    return bot
