"""Screen sharing in the SFU, with Python bots over ICE/DTLS-SRTP (docs/SFU.md "Screen
sharing"): a pub offer names its screen share's MID, subscribers are told which MID is a
screen, the room takes at most ``max_screens`` of them, last-N never pauses one, and a
publisher ends one by offering its m-line inactive."""

from __future__ import annotations

import pytest

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig

pytestmark = pytest.mark.media


def sources(bot: MediaBot) -> dict[str, str]:
    """What the bot's latest sub offer says each publisher's video is."""
    return {t["participant"]: t.get("source", "camera") for t in bot.tracks.values()
            if t["kind"] == "video"}


async def test_screen_share_named_limited_never_last_n_paused_and_ended() -> None:
    sfu_ = Sfu(SfuConfig(last_n=1))
    b = MediaBot("b")
    c = MediaBot("c")
    a = MediaBot("a")
    a.offer_fields = {"screen": "1"}  # aiortc's offer: audio MID 0, video MID 1
    bots = (b, c, a)
    try:
        for bot in bots:  # a joins last: last-N (1) would show b only c's video
            await bot.join(sfu_, "s")
            await bot.publish()
        assert await b.wait_for(lambda: sources(b) == {"a": "screen", "c": "camera"}, timeout=15)
        pa = sfu_.participants["a"]
        assert pa.screen_mid == "1" and pa.is_screen(pa.tracks["1"])
        # last-N gives b one camera (c's, the most recent in the order) and a's screen too
        assert await b.wait_for(lambda: b.stream("a", "video") is not None
                                and b.stream("c", "video") is not None, timeout=15)
        slots = {s.publisher: s for s in sfu_.participants["b"].slots if s.kind == "video"}
        assert slots["a"].lastn_ok and slots["c"].lastn_ok
        # while last-N does pause a camera: a gets b's (first in the order), not c's
        slots = {s.publisher: s for s in sfu_.participants["a"].slots if s.kind == "video"}
        assert slots["b"].lastn_ok and not slots["c"].lastn_ok

        # one screen share per room: c's is refused, nothing else changes
        await c.reoffer(screen="1")
        assert await c.wait_for(lambda: any(e["id"] == "screen-limit" for e in c.errors))
        assert sfu_.participants["c"].screen_mid is None
        assert sfu_.stats()["error_screen-limit"] == 1
        # bad values are documented errors
        await c.reoffer(screen=5)
        await c.reoffer(screen="7")
        assert await c.wait_for(lambda: [e["id"] for e in c.errors][-2:] ==
                                ["bad-message", "bad-message"]), c.errors

        # a ends its share: its video m-line inactive; the track leaves every subscriber
        video = next(t for t in a.pub.pc.getTransceivers() if t.kind == "video")
        video.direction = "inactive"
        await a.reoffer()
        assert await b.wait_for(lambda: "a" not in sources(b), timeout=10)
        assert "1" not in pa.tracks and pa.screen_mid is None
        assert await c.wait_for(lambda: "a" not in sources(c), timeout=10)
        # and c may share now
        await c.reoffer(screen="1")
        assert await b.wait_for(lambda: sources(b).get("c") == "screen", timeout=10)
    finally:
        for bot in bots:
            await bot.close()
        await sfu_.close()
