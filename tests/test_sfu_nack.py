"""NACK → RTX (RFC 4585 §6.2.1, RFC 4588) under loss injected at the receiver."""

from __future__ import annotations

import asyncio

import pytest

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig

pytestmark = pytest.mark.media


async def test_lost_packets_are_retransmitted_as_rtx() -> None:
    sfu = Sfu(SfuConfig())
    a = MediaBot("a")
    # b loses every video packet whose sequence number ends in 3 (1 in 10), before
    # its application sees it, and NACKs the holes it finds
    b = MediaBot("b", audio=False, video=False,
                 loss=lambda kind, seq: kind == "video" and seq % 10 == 3)
    try:
        await a.join(sfu, "n")
        await b.join(sfu, "n")
        await a.publish()
        assert await b.wait_for(lambda: b.counters["injected_loss"] >= 10, timeout=15)
        await asyncio.sleep(1.0)
        await a.stop_media()
        await asyncio.sleep(0.5)
        r = b.stream("a", "video")
        assert r is not None
        assert b.counters["nacks_sent"] >= 10
        assert r.recovered >= 10
        assert r.recovered >= b.counters["injected_loss"] - 1  # the last hole may be unseen
        assert r.contiguous() and r.duplicates == 0
        got = r.ordered()
        sent = a.sent["video"]
        start = sent.index(got[0])
        assert sent[start : start + len(got)] == got  # retransmitted bytes are identical
        stats = sfu.stats()
        assert stats["nacks_received"] >= 10
        assert stats["rtx_sent"] >= r.recovered
    finally:
        await a.close()
        await b.close()
        await sfu.close()
