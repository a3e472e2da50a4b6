"""Active speaker from RFC 6464 audio levels, and last-N video selection."""

from __future__ import annotations

import asyncio

import pytest

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig

pytestmark = pytest.mark.media


def count(b: MediaBot, pid: str, kind: str) -> int:
    r = b.stream(pid, kind)
    return len(r.payloads) if r else 0


async def room(sfu: Sfu, levels: dict[str, int]) -> list[MediaBot]:
    bots = [MediaBot(pid, level=level) for pid, level in levels.items()]
    for b in bots:
        await b.join(sfu, "s")
        await b.publish()
    return bots


async def test_speaker_events_follow_the_loudest() -> None:
    sfu = Sfu(SfuConfig(speaker_interval=0.1, speaker_window=0.5))
    a, b, c = await room(sfu, {"a": 127, "b": 20, "c": 127})
    try:
        for x in (a, b, c):
            assert await x.wait_for(lambda x=x: any(s["participant"] == "b"
                                                    for s in x.speakers), timeout=10)
        assert a.speakers[0]["level"] <= 20
        b.level, c.level = 127, 10  # b falls silent, c speaks
        for x in (a, b, c):
            assert await x.wait_for(lambda x=x: x.speakers[-1]["participant"] == "c",
                                    timeout=10)
        assert sfu.stats()["speaker_changes"] == 2
        assert all(s["participant"] in ("b", "c") for s in a.speakers)
    finally:
        for x in (a, b, c):
            await x.close()
        await sfu.close()


async def test_last_n_selects_recent_speakers() -> None:
    sfu = Sfu(SfuConfig(last_n=1, speaker_interval=0.1, speaker_window=0.5, pli_interval=0.2))
    a, b, c = await room(sfu, {"a": 100, "b": 100, "c": 100})  # quiet, not silent
    try:
        # nobody spoke yet: each subscriber gets video from one publisher only (join order)
        assert await a.wait_for(lambda: count(a, "b", "video") > 10, timeout=15)
        await asyncio.sleep(0.5)
        assert count(a, "c", "video") == 0
        assert count(a, "c", "audio") > 10  # audio is never cut by last-N
        # c speaks: a and b switch to c's video, and stop getting the other one
        c.level = 5
        assert await a.wait_for(lambda: count(a, "c", "video") > 10, timeout=10)
        assert await b.wait_for(lambda: count(b, "c", "video") > 10, timeout=10)
        frozen = count(a, "b", "video")
        await asyncio.sleep(0.5)
        assert count(a, "b", "video") == frozen
        # c's own view: the other recent speaker (order: c, a, b → for c: a)
        assert await c.wait_for(lambda: count(c, "a", "video") > 10, timeout=10)
        r = a.stream("b", "video")
        assert r is not None and r.contiguous()  # pauses leave no sequence hole
        assert sfu.stats()["last_n_switches"] >= 2
    finally:
        for x in (a, b, c):
            await x.close()
        await sfu.close()


async def test_silence_is_not_forwarded_and_leaves_no_hole() -> None:
    """RFC 6464 level 127 (digital silence: a muted or silent microphone) is dropped for
    everyone; when the sender speaks again its stream goes on without a sequence hole."""
    sfu = Sfu(SfuConfig())
    a, b = await room(sfu, {"a": 127, "b": 90})
    try:
        assert await a.wait_for(lambda: count(a, "b", "audio") > 20, timeout=15)
        assert count(b, "a", "audio") == 0  # a's silence never reached b
        assert sfu.stats()["drop_silence"] > 20
        a.level = 30
        assert await b.wait_for(lambda: count(b, "a", "audio") > 10, timeout=10)
        a.level = 127
        await asyncio.sleep(0.5)
        during = count(b, "a", "audio")
        await asyncio.sleep(0.5)
        assert count(b, "a", "audio") == during  # silent again: nothing forwarded
        a.level = 30
        assert await b.wait_for(lambda: count(b, "a", "audio") > during + 10, timeout=10)
        r = b.stream("a", "audio")
        assert r is not None and r.contiguous()  # the silence left no sequence gap
        assert r.duplicates == 0
    finally:
        for x in (a, b):
            await x.close()
        await sfu.close()
