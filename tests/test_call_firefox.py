"""Firefox in the call: Debian's firefox-esr with two Chromiums in one sealed room.

Firefox (driven over WebDriver BiDi, tests/firefoxpage.py) takes the standard
RTCRtpScriptTransform path of e2ee-worker/attach.js, which detects the API, not the
browser. The page is the product's, unchanged. Each browser's
camera shows its own pattern of coloured blocks (peers/fakecam.py; for Firefox a canvas in
place of its built-in fake camera), so every viewer's tile of every sender is checked by
pixels against that sender's own picture, and not anyone else's. A Python participant
that encrypts with the Python reference of the frame format joins too: Firefox shows its
picture and it decrypts Firefox's; then it switches to a key it gave nobody, and Firefox
names it in the decrypt warning. A tap on the SFU proves Firefox's frames were forwarded
as ciphertext with the frame format's trailer, like Chromium's.

The second test is a network where Firefox's media cannot connect at all (its loopback
candidates turned off): the page must stop rejoining after a bounded number of sessions
and say why (web/js/reconnect.js), never loop or hang.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.links import serve
from peers.e2eebot import E2eeBot
from peers.fakecam import expected
from sfu import Sfu
from sfu.ice import IcePolicy
from sfu.participant import Participant
from sfu.rtp import RtpHeader
from tests.callpage import (
    PASSWORD,
    ROOM,
    inbound_audio,
    join,
    open_browser,
    sample,
    sees,
    snapshot,
    until,
)
from tests.conftest import BrowserFactory
from tests.firefoxpage import firefox
from tests.sfutap import SfuTap, analyse
from tests.test_call_browser import BOT_COLOR, bot_sees, shows_color

pytestmark = [pytest.mark.browser, pytest.mark.media]

NAMES = {1: "Ada", 2: "Grace", 3: "Firefox Fiona"}
FIREFOX_SEED = 3
# Firefox's own words for an ICE failure, which it reports as a page error; expected only
# where the test makes ICE fail.
ICE_FAILED = "WebRTC: ICE failed"


def publishers(sfu: Sfu) -> dict[int, tuple[str | None, str]]:
    """Subscriber SSRC → (publisher id, kind) of every slot the SFU sends."""
    return {s.ssrc: (s.publisher, s.kind) for p in sfu.participants.values() for s in p.slots}


def count_strays(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str, int, int]]:
    """Each publisher packet the SFU drops as ``unexpected_pt`` or ``unknown_ssrc``, by
    (participant, drop reason, payload type, SSRC): who sent what, if anything strays."""
    seen: Counter[tuple[str, str, int, int]] = Counter()
    pub_rtp = Participant._pub_rtp
    reasons = ("drop_unexpected_pt", "drop_unknown_ssrc")

    def counting(self: Participant, data: bytes) -> None:
        counters = self.stats.counters
        before = [counters[r] for r in reasons]
        pub_rtp(self, data)
        for reason, was in zip(reasons, before, strict=True):
            if counters[reason] != was:
                h = RtpHeader.parse(data)
                seen[(self.pid, reason, h.payload_type, h.ssrc)] += 1

    monkeypatch.setattr(Participant, "_pub_rtp", counting)
    return seen


async def test_firefox_and_two_chromiums_see_and_hear_each_other(
    chromium: BrowserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = SfuTap(monkeypatch)
    strays = count_strays(monkeypatch)
    async with serve() as srv, firefox(tmp_path) as fx:
        pages: dict[int, Any] = {seed: await open_browser(chromium, tmp_path, seed)
                                 for seed in NAMES if seed != FIREFOX_SEED}
        fox = await fx.new_page()
        await fox.pattern_camera(FIREFOX_SEED)
        pages[FIREFOX_SEED] = fox
        for seed, page in pages.items():
            await join(page, srv.http, NAMES[seed])
            await page.wait_for_selector("#room-view:not([hidden])")

        # Everyone sees two other named tiles with video, and one security code.
        ids: dict[int, str] = {}
        for seed, page in pages.items():
            snap = await until(
                page,
                "s => s.tiles.filter(t => t.id !== 'self' && t.width > 0 && t.name"
                " && t.name !== 'joining…').length === 2",
            )
            ids[seed] = snap["id"]
        fox_snap = await snapshot(fox)
        assert fox_snap["api"] == "script", fox_snap  # RTCRtpScriptTransform, no special page
        codes = {(await snapshot(p))["securityCode"] for p in pages.values()}
        assert len(codes) == 1 and "" not in codes, codes

        # Pixels: each viewer's tile of a sender shows that sender's own camera picture and
        # nobody else's; Firefox as receiver (of two Chromiums) and as sender (to both).
        local = {seed: await sample(page, "self") for seed, page in pages.items()}
        assert all(local.values()), local
        for viewer, page in pages.items():
            for sender in NAMES:
                if sender != viewer:
                    others = [local[o] for o in NAMES if o != sender]
                    await sees(page, pages[sender], ids[sender], others)  # type: ignore[arg-type]

        # Audio that decrypts to sound (both browsers' fake microphones make a tone).
        for seed, page in pages.items():
            audio: dict[str, float] = {}
            for _ in range(40):
                audio = await inbound_audio(page)
                if audio["packets"] > 50 and audio["energy"] > 0:
                    break
                await asyncio.sleep(0.25)
            assert audio["packets"] > 50 and audio["energy"] > 0, (NAMES[seed], audio)

        # What the browsers sent, all of it accounted for (the Python bot below is not held to
        # this: aiortc sends a few retransmissions on an SSRC its offer did not declare).
        stats = srv.sfu.stats()
        for counter in ("errors", "drop_unknown_ssrc", "drop_malformed_rtp",
                        "drop_malformed_rtcp", "drop_unexpected_pt"):
            assert stats.get(counter, 0) == 0, (counter, stats, strays, ids)

        # The Python participant: Firefox shows its picture (frames encrypted by e2ee/sframe.py),
        # and it decrypts and decodes Firefox's frames to Firefox's camera picture.
        bot = E2eeBot(srv.ws, ROOM, PASSWORD, "Python Bot", color=BOT_COLOR,
                      ice=IcePolicy("127.0.0.1", port_min=48000, port_max=48999))
        try:
            await bot.start()
            await until(fox, f"s => s.tiles.some(t => t.id === '{bot.id}' && t.width > 0"
                             " && t.name === 'Python Bot')")
            assert await shows_color(fox, bot.id, BOT_COLOR)
            assert await bot_sees(bot, ids[FIREFOX_SEED], expected(FIREFOX_SEED))
            sent_by = publishers(srv.sfu)  # while the bot's slots exist
            # A key nobody was given: Firefox says so on the bot's tile, by name.
            bot.encryptor.rotate()
            bot.encryptor.switch()
            await until(fox, f"s => s.tiles.some(t => t.id === '{bot.id}' && t.failure)")
            warning = await fox.inner_text(f"figure[data-id='{bot.id}'] .decrypt-warning")
            assert warning.startswith("Can't decrypt Python Bot's media"), warning
        finally:
            await bot.close()

        # The tap: what the SFU forwarded of Firefox's media is in the frame format (the
        # trailer names Firefox's sender index) and decodes to nobody's picture.
        sent_by.update(publishers(srv.sfu))
        fox_index = fox_snap["index"]
        fox_ssrcs = {ssrc for ssrc, (who, _) in sent_by.items() if who == ids[FIREFOX_SEED]}
        assert fox_ssrcs, sent_by
        cameras = [expected(seed) for seed in NAMES]
        # Firefox's frames reach the tap at its own pace (46-49 of them had by this point
        # in some runs on two cores): wait for enough of them, bounded.
        for _ in range(20):
            packets = list(tap.packets)
            report = await asyncio.to_thread(
                analyse, packets,
                lambda ssrc: sent_by[ssrc][1] if ssrc in fox_ssrcs else None, cameras)
            if report.video_frames > 50 and report.audio_frames > 50:
                break
            await asyncio.sleep(1)
        assert report.video_frames > 50 and report.key_frames > 0, report
        assert report.audio_frames > 50, report
        assert report.unparsable == 0, report
        assert report.senders == {fox_index}, (report.senders, fox_index)
        assert report.best_match > 40, report
        # … and so is everyone's.
        everyone = await asyncio.to_thread(
            analyse, packets, lambda ssrc: sent_by.get(ssrc, (None, None))[1], cameras)
        assert everyone.unparsable == 0, everyone
        assert fox_index in everyone.senders and len(everyone.senders) == 4, everyone.senders

        assert not [s for s in strays if s[0] == ids[FIREFOX_SEED]], (strays, ids)
        assert srv.sfu.stats().get("errors", 0) == 0, srv.sfu.stats()
        for page in pages.values():
            assert page.errors == [], page.errors


async def test_firefox_whose_media_cannot_connect_stops_rejoining_and_says_why(
    tmp_path: Path,
) -> None:
    """Without its loopback candidates Firefox has none at all here: every session joins
    (signaling is fine) and its PeerConnections fail at once. The page gives up after
    MEDIA_ATTEMPTS (web/js/reconnect.js) such sessions, in the room view with a banner
    saying why: no endless rejoining, no page stuck at the join form, no uncaught error."""
    off = {"media.peerconnection.ice.loopback": False}
    async with serve() as srv, firefox(tmp_path, prefs=off) as fx:
        page = await fx.new_page()
        await join(page, srv.http, "Unreachable")
        attempts = await page.evaluate(
            "async () => (await import('/js/reconnect.js')).MEDIA_ATTEMPTS")
        assert attempts == 5, attempts
        snap = await until(page, "s => s.joined && s.banner?.startsWith('Disconnected')", 60)
        assert "audio and video never got through" in snap["banner"], snap
        assert await page.evaluate("() => document.getElementById('status').textContent") == ""
        await asyncio.sleep(2.0)  # nothing more happens
        assert srv.sfu.stats().get("joins", 0) == attempts, srv.sfu.stats()
        last = await snapshot(page)
        assert last["banner"] == snap["banner"] and last["reconnects"] == attempts - 1, last
        room = srv.server.rooms.get(ROOM)
        assert room is None or not room.members, room.members  # the last session left too
        assert [e for e in page.errors if not e.startswith(ICE_FAILED)] == [], page.errors
