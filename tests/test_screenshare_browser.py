"""Screen sharing in real Chromium (docs/SFU.md "Screen sharing").

Ada shares a "screen" (a canvas capture: a picture of two colour halves with a moving
square, which is what headless Chromium can share without a picker) next to her camera.
Grace sees it in a presenter tile, by pixels, while Ada's camera goes on in its own tile.
The SFU allows one screen share per room: Grace's attempt meanwhile is refused with
``screen-limit`` and her call goes on. When Ada stops, the tile is gone on Grace's page and
Grace can share. A tap inside the SFU sees every frame of the screen track too as
ciphertext in the frame format, nothing a VP8 decoder turns into the shared picture.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.links import serve
from sfu import Sfu
from tests.callpage import join_both, open_browser, sample, two_in_a_call, until
from tests.conftest import BrowserFactory
from tests.sfutap import SfuTap, analyse

pytestmark = [pytest.mark.browser, pytest.mark.media]

LEFT, RIGHT = (230, 40, 200), (40, 200, 230)  # the shared picture's two halves

SHARE = """async ([left, right]) => {
    const canvas = document.createElement('canvas');
    canvas.width = 640; canvas.height = 360;
    const ctx = canvas.getContext('2d');
    let x = 0;
    const draw = () => {
        ctx.fillStyle = `rgb(${left})`; ctx.fillRect(0, 0, 320, 360);
        ctx.fillStyle = `rgb(${right})`; ctx.fillRect(320, 0, 320, 360);
        ctx.fillStyle = '#fff'; ctx.fillRect(x, 0, 40, 24);  // moving: frames keep coming
        x = (x + 8) % 600;
    };
    draw();
    window.screenTimer = setInterval(draw, 66);
    const track = canvas.captureStream(15).getVideoTracks()[0];
    try {
        await window.sealroom.call.startScreenShare(track);
        return null;
    } catch (err) {
        clearInterval(window.screenTimer);
        return String(err.message ?? err);
    }
}"""


async def shows_halves(page: Any, tile: str) -> bool:
    """The tile shows the shared picture: left columns LEFT, right columns RIGHT (below
    the moving square), within VP8's and the colour conversions' error (a canvas capture
    comes out more saturated: (230, 40, 200) is shown as (227, 0, 204))."""
    for _ in range(60):
        got = await sample(page, tile)
        if got is not None:
            rows = [got[r * 48 : (r + 1) * 48] for r in range(3, 12)]  # 16 × 12 RGB
            left = [px for row in rows for px in row[3 : 6 * 3]]  # columns 1…5
            right = [px for row in rows for px in row[10 * 3 : 15 * 3]]  # columns 10…14
            ok = True
            for half, color in ((left, LEFT), (right, RIGHT)):
                means = [sum(half[c::3]) / (len(half) / 3) for c in range(3)]
                ok = ok and all(abs(m - w) < 50 for m, w in zip(means, color, strict=True))
            if ok:
                return True
        await asyncio.sleep(0.25)
    return False


def screen_ssrcs(sfu: Sfu) -> dict[int, str]:
    """The SSRCs on which the SFU sends someone's screen share."""
    return {s.ssrc: "video" for p in sfu.participants.values() for s in p.slots
            if s.track is not None and s.track.owner.is_screen(s.track)}


async def test_a_screen_share_is_seen_encrypted_limited_and_stopped(
    chromium: BrowserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = SfuTap(monkeypatch)
    async with serve() as srv:
        ada = await open_browser(chromium, tmp_path, 1)
        grace = await open_browser(chromium, tmp_path, 2)
        ada_id, grace_id = await two_in_a_call(srv.http, ada, grace)
        assert await ada.is_enabled("#screen")

        assert await ada.evaluate(SHARE, [",".join(map(str, LEFT)), ",".join(map(str, RIGHT))]) \
            is None
        screen = f"{ada_id}:screen"
        snap = await until(grace, f"s => s.tiles.some(t => t.id === '{screen}' && t.width > 0"
                                  " && t.screen)")
        tile = next(t for t in snap["tiles"] if t["id"] == screen)
        assert tile["name"] == "Ada's screen" and tile["tracks"] == ["video"], tile
        assert await shows_halves(grace, screen)
        # Ada's camera goes on in its own tile; Ada sees her own share as a tile too
        assert any(t["id"] == ada_id and t["width"] > 0 and not t["screen"]
                   for t in snap["tiles"])
        await until(ada, "s => s.tiles.some(t => t.id === 'self:screen' && t.screen)")
        assert await ada.inner_text("#screen") == "Stop sharing"
        assert await grace.evaluate("document.getElementById('grid').classList"
                                    ".contains('presenting')")
        track = next(t for p in srv.sfu.participants.values() for t in p.tracks.values()
                     if p.is_screen(t))
        assert track.owner.pid == ada_id and track.kind == "video"

        # One screen share per room: Grace's is refused, her call goes on
        refused = await grace.evaluate(SHARE, ["0,0,0", "255,255,255"])
        assert refused is not None and refused.startswith("screen-limit"), refused
        assert srv.sfu.stats()["error_screen-limit"] == 1
        await asyncio.sleep(1.0)
        snap = await until(grace, f"s => s.tiles.some(t => t.id === '{screen}' && t.width > 0)")
        assert not any(t["id"] == "self:screen" for t in snap["tiles"])
        assert await shows_halves(grace, screen)
        kinds = screen_ssrcs(srv.sfu)
        assert len(kinds) == 1

        # Ada stops: the tile goes away on Grace's page, the SFU forgets the track
        await ada.evaluate("window.sealroom.call.stopScreenShare()")
        await until(grace, f"s => !s.tiles.some(t => t.id === '{screen}')")
        await until(ada, "s => !s.tiles.some(t => t.id === 'self:screen')")
        assert not any(p.is_screen(t) for p in srv.sfu.participants.values()
                       for t in p.tracks.values())
        assert not await grace.evaluate("document.getElementById('grid').classList"
                                        ".contains('presenting')")
        # and Grace may share now
        assert await grace.evaluate(SHARE, [",".join(map(str, RIGHT)), ",".join(map(str, LEFT))]) \
            is None
        await until(ada, f"s => s.tiles.some(t => t.id === '{grace_id}:screen' && t.width > 0)")
        await until(ada, f"s => s.tiles.some(t => t.id === '{grace_id}' && t.width > 0)")
        kinds.update(screen_ssrcs(srv.sfu))
        for page in (ada, grace):
            assert page.errors == [], page.errors

    # The tap: both screen shares went through the SFU as ciphertext with the trailer
    # of their sender, nothing libvpx turns into the shared picture.
    pictures = [[c for _ in range(16 * 12) for c in color] for color in (LEFT, RIGHT)]
    report = await asyncio.to_thread(analyse, list(tap.packets), kinds.get, pictures)
    # (the tap keeps only the slots alive when they were read: Ada's share to Grace
    # until it stopped, Grace's to Ada for the test's last seconds)
    assert report.video_frames > 10 and report.key_frames > 0, report
    assert report.unparsable == 0, report
    assert len(report.senders) == 2, report
    assert report.best_match > 40, report


async def test_a_page_that_joined_without_camera_and_microphone_shares_its_screen(
    chromium: BrowserFactory, tmp_path: Path
) -> None:
    """Camera and microphone blocked (getUserMedia refused, as a browser does when the
    user says no): Ada joins without them, so she publishes nothing and has no pub
    PeerConnection. Her screen share gets one first (camera and microphone m-lines empty)
    and Grace sees the share by pixels; stopping removes it."""
    async with serve() as srv:
        ada = await open_browser(chromium, tmp_path, 1)
        await ada.add_init_script(
            "navigator.mediaDevices.getUserMedia = async () => {"
            " throw new DOMException('Permission denied', 'NotAllowedError'); };")
        grace = await open_browser(chromium, tmp_path, 2)
        await join_both(srv.http, ada, grace)
        snap = await until(ada, "s => !!s.id")
        ada_id = snap["id"]
        await until(ada, "s => s.tiles.some(t => t.id !== 'self' && t.width > 0)")
        assert await ada.evaluate("window.sealroom.call.media.pub === null")
        assert not srv.sfu.participants[ada_id].tracks

        assert await ada.evaluate(SHARE, [",".join(map(str, LEFT)), ",".join(map(str, RIGHT))]) \
            is None
        screen = f"{ada_id}:screen"
        await until(grace, f"s => s.tiles.some(t => t.id === '{screen}' && t.width > 0"
                           " && t.screen)")
        assert await shows_halves(grace, screen)
        tracks = srv.sfu.participants[ada_id].tracks.values()
        assert [t.kind for t in tracks if srv.sfu.participants[ada_id].is_screen(t)] == ["video"]

        await ada.evaluate("window.sealroom.call.stopScreenShare()")
        await until(grace, f"s => !s.tiles.some(t => t.id === '{screen}')")
        for page in (ada, grace):
            assert page.errors == [], page.errors
