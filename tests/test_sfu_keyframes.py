"""Key frames: PLI/FIR forwarding and throttling, gating for a late joiner, sfu-keyframe."""

from __future__ import annotations

import asyncio

import pytest

from peers.mediabot import MediaBot, vp8_frame
from sfu import Sfu, SfuConfig, rtcp
from sfu.vp8 import is_keyframe

pytestmark = pytest.mark.media


async def setup(sfu: Sfu, *names: str) -> list[MediaBot]:
    bots = [MediaBot(n) for n in names]
    for b in bots:
        await b.join(sfu, "k")
        await b.publish()
    return bots


def video_from(b: MediaBot, pid: str) -> int:
    r = b.stream(pid, "video")
    return len(r.payloads) if r else 0


async def test_pli_forwarded_and_throttled() -> None:
    sfu = Sfu(SfuConfig(pli_interval=1.0))
    a, b = await setup(sfu, "a", "b")
    try:
        assert await b.wait_for(lambda: video_from(b, "a") > 10, timeout=15)
        await asyncio.sleep(1.2)  # let any join-time PLI window pass
        before = a.counters["pli_received"]
        for _ in range(10):  # a PLI burst from the subscriber, within one interval
            assert await b.request_keyframe("a")
            await asyncio.sleep(0.03)
        await asyncio.sleep(1.5)
        forwarded = a.counters["pli_received"] - before
        assert 1 <= forwarded <= 2  # one now, at most one deferred to the end of the window
        assert sfu.stats()["plis_throttled"] >= 7
        assert sfu.stats()["pli_received"] >= 10
        # after the window, a single PLI goes straight through
        await asyncio.sleep(1.1)
        before = a.counters["pli_received"]
        assert await b.request_keyframe("a")
        assert await a.wait_for(lambda: a.counters["pli_received"] == before + 1, timeout=0.5)
        # FIR (RFC 5104) is forwarded upstream as a PLI
        await asyncio.sleep(1.1)
        ssrc = b.ssrc_of("a", "video")
        assert ssrc is not None
        before = a.counters["pli_received"]
        assert await b.sub.send(bytes(rtcp.Fir(1, [(ssrc, 1)])))
        assert await a.wait_for(lambda: a.counters["pli_received"] == before + 1, timeout=0.5)
        assert sfu.stats()["fir_received"] == 1
        # the client's own key-frame request (after an E2EE key rotation)
        await asyncio.sleep(1.1)
        before = a.counters["pli_received"]
        await sfu.handle("a", {"type": "sfu-keyframe"})
        assert await a.wait_for(lambda: a.counters["pli_received"] == before + 1, timeout=0.5)
    finally:
        for bot in (a, b):
            await bot.close()
        await sfu.close()


async def test_late_joiner_waits_for_a_key_frame() -> None:
    sfu = Sfu(SfuConfig(pli_interval=0.5))
    a, b = await setup(sfu, "a", "b")
    c = MediaBot("c", video=False, audio=False)
    try:
        assert await b.wait_for(lambda: video_from(b, "a") > 20, timeout=15)
        plis = a.counters["pli_received"]
        keys = a.counters["keyframes_sent"]
        await c.join(sfu, "k")  # joins late, publishes nothing
        assert await c.wait_for(lambda: video_from(c, "a") > 20, timeout=15)
        assert a.counters["pli_received"] > plis  # the SFU asked a for a key frame
        assert a.counters["keyframes_sent"] > keys
        r = c.stream("a", "video")
        assert r is not None
        first = r.ordered()
        assert is_keyframe(first[0])  # nothing before the key frame reached c
        assert sfu.stats()["drop_await_keyframe"] >= 1  # deltas were held back
        assert r.contiguous()  # ... and no hole in its sequence numbers
        sent = a.sent["video"]
        start = sent.index(first[0])
        assert sent[start : start + len(first)] == first
        # b's stream was not disturbed by c's arrival
        rb = b.stream("a", "video")
        assert rb is not None and rb.contiguous() and rb.duplicates == 0
    finally:
        for bot in (a, b, c):
            await bot.close()
        await sfu.close()


async def test_a_late_joiners_key_frame_repaired_upstream_reaches_it_whole() -> None:
    """The first packet of the key frame a late joiner waits for is lost on the uplink:
    the packets after it arrive first and are held back (no key frame yet), then the
    repair starts the joiner's run. What was held back follows it from the cache, so the
    joiner gets the whole key frame with no hole, without having to NACK for it."""
    armed = False
    withhold: list[bool] = []

    def frames(key: bool) -> bytes:
        if key and armed and not withhold:
            withhold.append(True)  # this key frame's first packet goes missing
        return vp8_frame(key, 3000)  # three packets per frame

    def lost(seq: int) -> bool:
        if withhold and withhold[-1]:
            withhold[-1] = False
            return True
        return False

    sfu = Sfu(SfuConfig(pli_interval=0.5))
    a = MediaBot("a", audio=False, uplink_loss=lost, video_frames=frames)
    b = MediaBot("b", audio=False, video=False)
    c = MediaBot("c", audio=False, video=False, nack=False)  # only the SFU's repair counts
    try:
        for bot in (a, b):
            await bot.join(sfu, "k")
        await a.publish()
        assert await b.wait_for(lambda: video_from(b, "a") > 20, timeout=15)
        armed = True
        await c.join(sfu, "k")
        assert await c.wait_for(lambda: video_from(c, "a") > 30, timeout=15)
        assert withhold == [False] and a.counters["uplink_withheld"] == 1
        assert sfu.stats()["upstream_recovered"] == 1
        r = c.stream("a", "video")
        assert r is not None
        got = r.ordered()
        assert is_keyframe(got[0])
        assert r.contiguous(), "c has a hole where the packets held back for it were"
        sent = a.sent["video"]
        start = sent.index(got[0])
        assert sent[start : start + len(got)] == got
    finally:
        for bot in (a, b, c):
            await bot.close()
        await sfu.close()
