"""The rest of a meeting with Firefox in it: screen sharing, hands and reactions, files and
a camera switch between Debian's firefox-esr (tests/firefoxpage.py) and one Chromium.

The page is the product's, unchanged for Firefox; each feature is driven through the same
``window.sealroom.call`` methods the toolbar uses, both ways:

* a screen share (a canvas capture, as in tests/test_screenshare_browser.py) from Firefox is
  seen in the Chromium page's presenter tile by pixels, and Chromium's in Firefox's;
  stopping removes the tile on the other side;
* a raised hand (list and tile badge) and a reaction (over the sender's tile) arrive both
  ways;
* a 2 MB file generated in the page arrives byte-identical both ways: the receiving page's
  download link is read back and hashed, and compared with the SHA-256 Python computes of
  the same bytes;
* Firefox's camera is switched in the call (``Call.setDevice``): the Chromium page keeps
  decoding it, its microphone re-selected keeps Chromium hearing it, and the SFU sees no
  new pub offer and no new sub offer.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.links import serve
from sfu.participant import Participant
from tests.callpage import inbound_audio, join, open_browser, sample, until
from tests.conftest import BrowserFactory
from tests.firefoxpage import firefox
from tests.test_screenshare_browser import LEFT, RIGHT, SHARE

pytestmark = [pytest.mark.browser, pytest.mark.media, pytest.mark.timeout(240)]

FIREFOX_SEED, CHROMIUM_SEED = 3, 1
FILE_BYTES = 2 * 1000 * 1000

# The same bytes in the page and in Python: byte i is (i * 31 + seed) mod 251.
MAKE_FILE = """([size, seed, name]) => {
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (i * 31 + seed) % 251;
    window.sealroom.call.sendFile('*', new File([data], name,
        { type: 'application/octet-stream' })).catch((e) => { window.sendError = String(e); });
    return null;
}"""

# SHA-256 of what the page offers as the received file's download (its blob URL).
DOWNLOADED = """async (name) => {
    const link = [...document.querySelectorAll('#files a.download')]
        .find((a) => a.download === name);
    if (!link) return null;
    const data = await (await fetch(link.href)).arrayBuffer();
    const digest = await crypto.subtle.digest('SHA-256', data);
    return { size: data.byteLength,
             sha256: [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0'))
                 .join('') };
}"""

# Frames the page decoded of `who`'s camera (its sub PC's inbound-rtp video).
FRAMES_FROM = """async (who) => {
    const m = window.sealroom.call.media;
    let n = 0;
    const mids = [...m.active]
        .filter(([, i]) => i.participant === who && i.kind === 'video' && i.source !== 'screen')
        .map(([mid]) => mid);
    (await m.sub.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video' && mids.includes(r.mid))
            n += r.framesDecoded ?? 0;
    });
    return n;
}"""


def file_bytes(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


def colors(pair: tuple[int, int, int]) -> str:
    return ",".join(map(str, pair))


async def two_pages(chromium: BrowserFactory, tmp_path: Path, url: str, fx: Any) -> tuple[
        Any, Any, str, str]:
    """Firefox ("Fiona") and Chromium ("Ada") in the call, each showing the other's camera."""
    fox = await fx.new_page()
    await fox.pattern_camera(FIREFOX_SEED)
    ada = await open_browser(chromium, tmp_path, CHROMIUM_SEED)
    for page, name in ((fox, "Fiona"), (ada, "Ada")):
        await join(page, url, name)
        await page.wait_for_selector("#room-view:not([hidden])")
    ids: dict[str, str] = {}
    for page, other in ((ada, "Fiona"), (fox, "Ada")):
        snap = await until(page, "s => s.tiles.some(t => t.id !== 'self' && t.width > 0"
                                 f" && t.name === '{other}')")
        ids[other] = next(t["id"] for t in snap["tiles"] if t["name"] == other)
    fox_id, ada_id = ids["Fiona"], ids["Ada"]
    return fox, ada, fox_id, ada_id


async def frames_rise(page: Any, who: str, by: int, seconds: float = 15) -> tuple[int, int]:
    """Decoded frames of `who` on `page` rise by more than `by` (bounded wait)."""
    start = now = int(await page.evaluate(FRAMES_FROM, who))
    for _ in range(int(seconds * 4)):
        await asyncio.sleep(0.25)
        now = int(await page.evaluate(FRAMES_FROM, who))
        if now > start + by:
            break
    return start, now


async def test_screen_shares_both_ways_between_firefox_and_chromium(
    chromium: BrowserFactory, tmp_path: Path
) -> None:
    async with serve() as srv, firefox(tmp_path) as fx:
        fox, ada, fox_id, ada_id = await two_pages(chromium, tmp_path, srv.http, fx)
        for sharer, viewer, sharer_id, halves in ((fox, ada, fox_id, (LEFT, RIGHT)),
                                                  (ada, fox, ada_id, (RIGHT, LEFT))):
            refused = await sharer.evaluate(SHARE, [colors(halves[0]), colors(halves[1])])
            assert refused is None, refused
            screen = f"{sharer_id}:screen"
            snap = await until(viewer, f"s => s.tiles.some(t => t.id === '{screen}'"
                                       " && t.width > 0 && t.screen)")
            tile = next(t for t in snap["tiles"] if t["id"] == screen)
            assert tile["tracks"] == ["video"], tile
            assert tile["name"].endswith("'s screen"), tile
            # each share has its own halves: a stale picture of the first cannot pass
            assert await shows(viewer, screen, *halves), halves
            await until(sharer, "s => s.tiles.some(t => t.id === 'self:screen' && t.screen)")
            # the sharer's camera goes on next to it
            await frames_rise(viewer, sharer_id, 10)
            await sharer.evaluate("window.sealroom.call.stopScreenShare()")
            await until(viewer, f"s => !s.tiles.some(t => t.id === '{screen}')")
            await until(sharer, "s => !s.tiles.some(t => t.id === 'self:screen')")
            assert not any(p.is_screen(t) for p in srv.sfu.participants.values()
                           for t in p.tracks.values())
        assert srv.sfu.stats().get("errors", 0) == 0, srv.sfu.stats()
        for page in (fox, ada):
            assert page.errors == [], page.errors


async def shows(page: Any, tile: str, left: tuple[int, int, int],
                right: tuple[int, int, int]) -> bool:
    """The tile shows `left` | `right` within 15 s."""
    for _ in range(60):
        got = await sample(page, tile)
        if got is not None and halves_match(got, left, right):
            return True
        await asyncio.sleep(0.25)
    return False


def halves_match(got: list[int], left_color: tuple[int, int, int],
                 right_color: tuple[int, int, int]) -> bool:
    """The same test as test_screenshare_browser.shows_halves on one 16 × 12 sample."""
    rows = [got[r * 48 : (r + 1) * 48] for r in range(3, 12)]
    left = [px for row in rows for px in row[3 : 6 * 3]]
    right = [px for row in rows for px in row[10 * 3 : 15 * 3]]
    for half, color in ((left, left_color), (right, right_color)):
        means = [sum(half[c::3]) / (len(half) / 3) for c in range(3)]
        if not all(abs(m - w) < 50 for m, w in zip(means, color, strict=True)):
            return False
    return True


async def test_hands_reactions_and_files_both_ways_between_firefox_and_chromium(
    chromium: BrowserFactory, tmp_path: Path
) -> None:
    async with serve() as srv, firefox(tmp_path) as fx:
        fox, ada, fox_id, ada_id = await two_pages(chromium, tmp_path, srv.http, fx)
        for sender, receiver, sender_id in ((fox, ada, fox_id), (ada, fox, ada_id)):
            # a hand: first in the receiver's list, the badge on the sender's tile
            assert await sender.evaluate("window.sealroom.call.raiseHand(true)") is True
            await until(sender, "s => s.handRaised && s.hands.join() === 'self'")
            await until(receiver, f"s => s.hands.join() === '{sender_id}'"
                                  f" && s.tiles.some(t => t.id === '{sender_id}' && t.hand === 1)")
            assert await sender.evaluate("window.sealroom.call.raiseHand(false)") is True
            await until(receiver, f"s => s.hands.length === 0 && !s.tiles.some("
                                  f"t => t.id === '{sender_id}' && t.hand)")
            # a reaction, shown over the sender's tile
            for emoji in ("🎉", "👍"):
                assert await sender.evaluate(f"window.sealroom.call.react('{emoji}')") is True
                await until(receiver, f"s => s.tiles.some(t => t.id === '{sender_id}'"
                                      f" && t.reaction === '{emoji}')", seconds=5)

        # files: Firefox → Chromium, then Chromium → Firefox, each byte-identical
        for n, (sender, receiver, sender_id) in enumerate(((fox, ada, fox_id),
                                                           (ada, fox, ada_id))):
            name, seed = f"from-{n}.bin", 7 + n
            want = hashlib.sha256(file_bytes(FILE_BYTES, seed)).hexdigest()
            await sender.evaluate(MAKE_FILE, [FILE_BYTES, seed, name])
            done = (f"s => s.files.some(f => f.name === '{name}'"
                    " && f.state !== 'active')")
            got = next(f for f in (await until(receiver, done, 90))["files"]
                       if f["name"] == name)
            sent = next(f for f in (await until(sender, done, 30))["files"]
                        if f["name"] == name)
            assert got["state"] == "done" and sent["state"] == "done", (got, sent)
            assert got["sha256"] == want == sent["sha256"], (got, sent, want)
            assert got["peer"] == sender_id and got["size"] == FILE_BYTES, got
            downloaded = await receiver.evaluate(DOWNLOADED, name)
            assert downloaded == {"size": FILE_BYTES, "sha256": want}, downloaded
            assert await sender.evaluate("window.sendError ?? null") is None
        assert srv.sfu.stats().get("errors", 0) == 0, srv.sfu.stats()
        for page in (fox, ada):
            assert page.errors == [], page.errors


async def test_a_camera_switch_in_firefox_keeps_chromium_decoding_without_renegotiation(
    chromium: BrowserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Firefox ESR's fake capture (media.navigator.streams.fake) lists one camera, so the
    switch re-selects it by its deviceId: ``Call.setDevice`` asks for a new track and puts
    it in the sender that already encrypts, like a switch to another camera. (The page's
    camera is tests/firefoxpage.py's canvas in place of the fake one: every getUserMedia
    gives a new canvas track, so the new track is a new source, never the old one.)"""
    pub_offers: Counter[str] = Counter()
    on_pub_offer = Participant.on_pub_offer

    async def counting(self: Participant, sdp: str, screen: str | None = None) -> None:
        pub_offers[self.pid] += 1
        await on_pub_offer(self, sdp, screen)

    monkeypatch.setattr(Participant, "on_pub_offer", counting)
    async with serve() as srv, firefox(tmp_path) as fx:
        fox, ada, fox_id, _ = await two_pages(chromium, tmp_path, srv.http, fx)
        cameras = await fox.evaluate(
            "async () => (await navigator.mediaDevices.enumerateDevices())"
            ".filter(d => d.kind === 'videoinput').map(d => d.deviceId)")
        assert len(cameras) >= 1 and all(cameras), cameras
        start, now = await frames_rise(ada, fox_id, 20)
        assert now > start + 20, (start, now)
        await asyncio.sleep(1.0)  # let the sub PCs settle (no offer is still on its way)
        offers = (dict(pub_offers), srv.sfu.stats().get("sub_offers", 0))
        before = await fox.evaluate("window.sealroom.call.stream.getVideoTracks()[0].id")

        for camera in (cameras[-1], cameras[0]):
            await fox.evaluate("(id) => window.sealroom.call.setDevice('video', id)", camera)
            track = await fox.evaluate(
                "window.sealroom.call.stream.getVideoTracks().map(t => [t.id, t.readyState])")
            assert len(track) == 1 and track[0][0] != before and track[0][1] == "live", track
            before = track[0][0]
            # the sender encrypts the new track: Chromium keeps decoding Firefox's camera
            start, now = await frames_rise(ada, fox_id, 20)
            assert now > start + 20, (start, now)
        await until(ada, f"s => s.tiles.some(t => t.id === '{fox_id}' && t.width > 0"
                         " && !t.failure)")
        # the microphone too (one fake microphone: re-selected), and Chromium hears it on
        microphones = await fox.evaluate(
            "async () => (await navigator.mediaDevices.enumerateDevices())"
            ".filter(d => d.kind === 'audioinput').map(d => d.deviceId)")
        assert len(microphones) >= 1 and all(microphones), microphones
        before = await fox.evaluate("window.sealroom.call.stream.getAudioTracks()[0].id")
        await fox.evaluate("(id) => window.sealroom.call.setDevice('audio', id)", microphones[0])
        track = await fox.evaluate(
            "window.sealroom.call.stream.getAudioTracks().map(t => [t.id, t.readyState])")
        assert len(track) == 1 and track[0][0] != before and track[0][1] == "live", track
        heard = await inbound_audio(ada)
        for _ in range(40):
            await asyncio.sleep(0.25)
            now_heard = await inbound_audio(ada)
            if now_heard["packets"] > heard["packets"] + 50 \
                    and now_heard["energy"] > heard["energy"]:
                break
        assert now_heard["packets"] > heard["packets"] + 50, (heard, now_heard)
        assert now_heard["energy"] > heard["energy"], (heard, now_heard)
        # nothing renegotiated: no pub offer from anyone, no sub offer to anyone
        assert (dict(pub_offers), srv.sfu.stats().get("sub_offers", 0)) == offers
        assert srv.sfu.stats().get("errors", 0) == 0, srv.sfu.stats()
        for page in (fox, ada):
            assert page.errors == [], page.errors
