"""Join storms (docs/SFU.md "Join storms"): the idle clock starts only once media or RTCP
is due from a participant, and a subscriber's re-offers are coalesced during a burst.
Real aiortc peers (MediaBot) over loopback ICE/DTLS-SRTP."""

from __future__ import annotations

import asyncio
import time

import pytest

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig

pytestmark = pytest.mark.media


def failed(b: MediaBot) -> list[str]:
    """The messages of the transport-failed errors ``b`` received."""
    return [e.get("message", "") for e in b.errors if e.get("id") == "transport-failed"]


async def test_idle_clock_starts_once_media_is_due() -> None:
    """Connected but with nobody to send to: never idle. Once someone receives its
    tracks, a publisher that sends nothing is dead and reaped, as before."""
    sfu = Sfu(SfuConfig(idle_timeout=1.0, rtcp_interval=0.2))
    a = MediaBot("a")  # publishes, then never sends a packet (no media, no RTCP)
    b = MediaBot("b", audio=False, video=False)  # only receives; never sends either
    try:
        await a.join(sfu, "i")
        await a.publish()
        await a.stop_media()
        pa = sfu.participants["a"]
        assert await a.wait_for(lambda: pa.pub.up, timeout=15)
        await asyncio.sleep(2.5)  # > idle_timeout + a few watchdog ticks
        assert "a" in sfu.participants and not failed(a)
        assert pa.pub.received == 0 and pa.due_since is None and not pa.media_due()
        assert sfu.stats().get("transport_failures", 0) == 0

        # b receives a's tracks: a's media is due now, and a stays silent
        await b.join(sfu, "i")
        assert await b.wait_for(lambda: len(b.tracks) == 2, timeout=10)
        assert await a.wait_for(lambda: "a" not in sfu.participants, timeout=10)
        assert failed(a) == ["no media or RTCP received"]
        assert pa.due_since is not None
        # b was never sent anything (a sent nothing): nothing is due from b
        pb = sfu.participants["b"]
        assert pb.sub.up and pb.due_since is None
        await asyncio.sleep(2.5)
        assert "b" in sfu.participants and not failed(b)
        assert sfu.stats()["transport_failures"] == 1
    finally:
        for x in (a, b):
            await x.close()
        await sfu.close()


async def test_a_silent_receiver_is_reaped_once_sent_media() -> None:
    """A subscriber the SFU has sent media owes receiver reports (RFC 3550 §6.4.2);
    one that sends none for idle_timeout is dead. The publisher, which sends, stays."""
    sfu = Sfu(SfuConfig(idle_timeout=1.0, rtcp_interval=0.2))
    a = MediaBot("a")
    b = MediaBot("b", audio=False, video=False)  # no publish: it never sends RTCP
    try:
        await a.join(sfu, "j")
        await a.publish()
        await b.join(sfu, "j")
        assert await b.wait_for(lambda: b.stream("a", "video") is not None, timeout=15)
        assert await b.wait_for(lambda: "b" not in sfu.participants, timeout=10)
        assert failed(b) == ["no media or RTCP received"]
        await asyncio.sleep(1.5)
        assert "a" in sfu.participants and not failed(a)
    finally:
        for x in (a, b):
            await x.close()
        await sfu.close()


async def test_reoffers_are_coalesced_during_a_burst() -> None:
    """Six publishers join one after another: a subscriber that was there gets one sub
    offer with all twelve tracks, not one per publisher, and so does each publisher."""
    sfu = Sfu(SfuConfig(offer_quiet=3.0, offer_max_delay=30.0))
    s = MediaBot("s", audio=False, video=False)
    pubs = [MediaBot(f"p{i}") for i in range(6)]
    try:
        await s.join(sfu, "c")
        for p in pubs:  # each publish is handled before the next starts
            await p.join(sfu, "c")
            await p.publish()
        assert await s.wait_for(lambda: len(s.tracks) == 12, timeout=20)
        for p in pubs:
            assert await p.wait_for(lambda p=p: len(p.tracks) == 10, timeout=20)
        await asyncio.sleep(1.5)  # nothing else is offered afterwards
        assert s.sub_offers == 1 and sfu.participants["s"].sub_offers == 1
        assert [p.sub_offers for p in pubs] == [1] * 6
        assert sfu.stats()["sub_offers"] == 7
        assert all(b.message_errors == 0 for b in (s, *pubs))
        # and media flows on the coalesced m-lines
        assert await s.wait_for(lambda: all(s.stream(p.pid, "video") is not None
                                            for p in pubs), timeout=15)
    finally:
        for x in (s, *pubs):
            await x.close()
        await sfu.close()


async def test_coalescing_is_bounded_by_the_max_delay() -> None:
    """Changes that keep coming closer together than offer_quiet still reach the
    subscriber: its first offer leaves offer_max_delay after the first change, while the
    burst goes on, and the last offer has everything."""
    sfu = Sfu(SfuConfig(offer_quiet=0.8, offer_max_delay=1.0))
    s = MediaBot("s", audio=False, video=False)
    pubs = [MediaBot(f"p{i}") for i in range(7)]
    try:
        await s.join(sfu, "m")
        started = time.monotonic()
        for p in pubs:  # a change every 0.4 s for 2.4 s: never 0.8 s of quiet
            await p.join(sfu, "m")
            await p.publish()
            if p is not pubs[-1]:
                await asyncio.sleep(0.4)
        burst = time.monotonic() - started
        first = next((m for m in s.messages if m.get("type") == "sfu-offer"), None)
        assert first is not None, f"no offer during a {burst:.1f} s burst"
        assert 0 < len(first["tracks"]) < 14
        assert await s.wait_for(lambda: len(s.tracks) == 14, timeout=20)
        assert s.sub_offers >= 2
    finally:
        for x in (s, *pubs):
            await x.close()
        await sfu.close()


async def test_no_coalescing_offers_at_once() -> None:
    """offer_quiet = offer_max_delay = 0: the previous behaviour, an offer per change
    unless one is outstanding."""
    sfu = Sfu(SfuConfig(offer_quiet=0, offer_max_delay=0))
    a, b = MediaBot("a"), MediaBot("b", audio=False, video=False)
    try:
        await b.join(sfu, "z")
        await a.join(sfu, "z")
        await a.publish()
        # handled inline: the offer is already on its way when publish() returns
        assert sfu.participants["b"].sub_offers == 1
        assert await b.wait_for(lambda: len(b.tracks) == 2, timeout=10)
    finally:
        for x in (a, b):
            await x.close()
        await sfu.close()
