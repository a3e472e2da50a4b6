"""Upstream loss recovery: the SFU NACKs publishers (RFC 4585 §6.2.1) and forwards the
RTX repairs (RFC 4588) to every subscriber, in each one's rewritten sequence."""

from __future__ import annotations

import asyncio
import time

import pytest

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig

pytestmark = pytest.mark.media


def withheld(seq: int) -> bool:
    """One video packet in 12, as a lossy uplink would lose them (deterministic)."""
    return seq % 12 == 5


async def test_uplink_loss_is_repaired_for_every_subscriber() -> None:
    sfu = Sfu(SfuConfig())
    a = MediaBot("a", uplink_loss=withheld)
    # the subscribers never NACK: whatever reaches them came through the SFU's own repair
    subs = [MediaBot(pid, audio=False, video=False, nack=False) for pid in ("b", "c")]
    try:
        await a.join(sfu, "u")
        for s in subs:
            await s.join(sfu, "u")
        await a.publish()
        assert await a.wait_for(lambda: a.counters["uplink_withheld"] >= 15, timeout=20)
        await asyncio.sleep(1.0)
        await a.stop_media()
        await asyncio.sleep(0.5)
        stats = sfu.stats()
        lost = a.counters["uplink_withheld"]
        assert stats["upstream_nacked"] >= lost - 1  # the last hole may not be seen yet
        assert a.counters["retransmitted"] >= lost - 1
        assert stats["upstream_recovered"] >= lost - 1
        assert stats.get("upstream_unrepaired", 0) == 0
        sent = a.sent["video"]
        for s in subs:
            r = s.stream("a", "video")
            assert r is not None and r.contiguous(), f"{s.pid} has holes"
            got = r.ordered()
            start = sent.index(got[0])
            # every packet, the repaired ones included, byte for byte, in order
            assert sent[start : start + len(got)] == got
            assert len(got) >= lost * 10
    finally:
        for bot in (a, *subs):
            await bot.close()
        await sfu.close()


async def test_a_hole_that_is_never_repaired_ends_in_one_throttled_key_frame_request() -> None:
    sfu = Sfu(SfuConfig(pli_interval=1.0))
    a = MediaBot("a", audio=False, uplink_loss=withheld, answer_nacks=False)
    b = MediaBot("b", audio=False, video=False, nack=False)
    try:
        await a.join(sfu, "u")
        await b.join(sfu, "u")
        started = time.monotonic()
        await a.publish()
        assert await a.wait_for(lambda: a.counters["uplink_withheld"] >= 12, timeout=20)
        await asyncio.sleep(1.5)  # longer than the generator's give-up age (1 s)
        stats = sfu.stats()
        # every hole is asked for a few times, then given up on
        assert a.counters["nacked"] > a.counters["uplink_withheld"]
        assert stats["upstream_unrepaired"] >= 6
        assert stats["keyframe_requests_upstream_loss"] >= 1
        # many holes, few PLIs: the throttle lets one through per pli_interval
        elapsed = time.monotonic() - started
        assert stats["upstream_unrepaired"] > elapsed / sfu.config.pli_interval + 1
        assert a.counters["pli_received"] <= elapsed / sfu.config.pli_interval + 1
    finally:
        await a.close()
        await b.close()
        await sfu.close()
