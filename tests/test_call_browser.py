"""The whole product in real Chromium: people meet in a sealed room and see each other.

Three headless Chromiums, each with its own fake camera (a distinct pattern of coloured
blocks, peers/fakecam.py), open the page served by the server that ``sealroom serve``
builds (same argument parser, same config functions, SFU included, in this process so
that a tap can be put inside the SFU). They join through the join form. Every browser
must then show the other two's pictures — checked by pixels against the sender's own
pattern, not by "frames decoded", because a viewer without keys decodes key frames as
noise — and receive their audio. A Python bot that encrypts real VP8 with the Python
reference of the frame format joins too, and the browsers show its picture. A tap on
the SFU's sends proves it forwarded only ciphertext.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest

from bench.links import serve
from peers.browser import ARTIFACTS
from peers.e2eebot import E2eeBot
from peers.fakecam import block_diff, expected
from sfu import Sfu
from sfu.ice import IcePolicy
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
from tests.sfutap import SfuTap, analyse, analyse_frames, encode_vp8, vp8_pictures

pytestmark = [pytest.mark.browser, pytest.mark.media]


BOT_COLOR = (200, 30, 60)


def slot_kinds(sfu: Sfu) -> dict[int, str]:
    """The kind of media on each SSRC the SFU sends to subscribers."""
    return {s.ssrc: s.kind for p in sfu.participants.values() for s in p.slots}


async def shows_color(page: Any, tile: str, color: tuple[int, int, int]) -> bool:
    """The tile's picture below the bot's moving bar (top fifth) is `color`, within VP8's
    and the colour conversion's error."""
    for _ in range(60):
        got = await sample(page, tile)
        if got is not None:
            lower = got[16 * 3 * 3 :]  # rows 3…11 of 16 × 12
            means = [sum(lower[c::3]) / (len(lower) / 3) for c in range(3)]
            if all(abs(m - want) < 25 for m, want in zip(means, color, strict=True)):
                return True
        await asyncio.sleep(0.25)
    return False


async def bot_sees(bot: E2eeBot, participant: str, camera: list[int]) -> bool:
    """The bot decrypts (its keys came from the browser's KeyManager) and decodes the
    browser's frames to that browser's camera picture; it asks for key frames meanwhile."""
    assert bot.media is not None
    for _ in range(20):
        # Only the newest run from the last key frame (the clear P bit tells, FORMAT.md): the
        # bot, the SFU and this check share one event loop, and decoding everything received
        # so far would stall it long enough for ICE consent checks to expire.
        frames = bot.received_frames(participant, "video")
        keys = [i for i, f in enumerate(frames) if f and f[0] & 1 == 0]
        frames = frames[keys[-1] :][:30] if keys else []
        plain = [f for f in bot.decrypt(participant, "video", frames, copy.deepcopy(bot.decryptor))
                 if isinstance(f, bytes)]
        pictures = await asyncio.to_thread(vp8_pictures, plain)
        if pictures and block_diff(pictures[-1], camera) < 25:
            return True
        await bot.media.request_keyframe(participant)
        await asyncio.sleep(1.0)
    return False


async def test_three_browsers_see_and_hear_each_other(
    chromium: BrowserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {1: "Ada", 2: "Grace", 3: "Katherine"}
    tap = SfuTap(monkeypatch)
    async with serve() as srv:
        pages = {seed: await open_browser(chromium, tmp_path, seed) for seed in names}
        # The join page, before anyone is in: saved for the README.
        first = pages[1]
        await first.goto(f"{srv.http}/")
        ARTIFACTS.mkdir(exist_ok=True)
        await first.screenshot(path=str(ARTIFACTS / "join-page.png"))
        for seed, page in pages.items():
            await join(page, srv.http, names[seed])
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
        codes = {(await snapshot(p))["securityCode"] for p in pages.values()}
        assert len(codes) == 1 and "" not in codes, codes

        # Pixels: each viewer's tile of a sender shows that sender's own camera picture,
        # and not the picture of anybody else.
        local = {seed: await sample(page, "self") for seed, page in pages.items()}
        for viewer, page in pages.items():
            for sender in names:
                if sender != viewer:
                    others = [local[o] for o in names if o != sender]
                    await sees(page, pages[sender], ids[sender], others)  # type: ignore[arg-type]

        # Names on tiles, and audio that decrypts to sound (the fake microphone beeps).
        for seed, page in pages.items():
            shown = {t["id"]: t["name"] for t in (await snapshot(page))["tiles"]}
            for other in names:
                if other != seed:
                    assert shown[ids[other]] == names[other]
            audio: dict[str, float] = {}
            for _ in range(40):
                audio = await inbound_audio(page)
                if audio["packets"] > 50 and audio["energy"] > 0:
                    break
                await asyncio.sleep(0.25)
            assert audio["packets"] > 50 and audio["energy"] > 0, audio

        await pages[1].screenshot(path=str(ARTIFACTS / "call-3.png"))

        # A Python participant encrypting real VP8 with the Python reference of the frame
        # format (e2ee/sframe.py) and the Python twin of the key exchange joins: every
        # browser shows its picture, and it decrypts a browser's (cross-implementation).
        bot = E2eeBot(srv.ws, ROOM, PASSWORD, "Python Bot", color=BOT_COLOR,
                      ice=IcePolicy("127.0.0.1", port_min=48000, port_max=48999))
        try:
            await bot.start()
            for page in pages.values():
                await until(page, f"s => s.tiles.some(t => t.id === '{bot.id}' && t.width > 0"
                                  " && t.name === 'Python Bot')")
                assert await shows_color(page, bot.id, BOT_COLOR)
            assert await bot_sees(bot, ids[1], expected(1))
            kinds = slot_kinds(srv.sfu)  # while the bot's slots exist
            # The bot switches to a key it gave nobody: every page says, by name, that its
            # frames do not decrypt.
            bot.encryptor.rotate()
            bot.encryptor.switch()
            for page in pages.values():
                await until(page, f"s => s.tiles.some(t => t.id === '{bot.id}' && t.failure)")
            warning = await pages[1].inner_text(f"figure[data-id='{bot.id}'] .decrypt-warning")
            assert warning.startswith("Can't decrypt Python Bot's media"), warning
        finally:
            await bot.close()

        # The tap: everything the SFU forwarded is in the frame format (trailer with the
        # senders' KIDs) and no VP8 decode of it gives back any camera's picture — while
        # the same check on plain VP8 of a camera picture does (the control).
        kinds.update(slot_kinds(srv.sfu))
        indices = {(await snapshot(p))["index"] for p in pages.values()}
        indices.add(bot.client.index)  # type: ignore[union-attr]
        cameras = [expected(seed) for seed in names]
        report = await asyncio.to_thread(analyse, list(tap.packets), kinds.get, cameras)
        assert report.video_frames > 50 and report.key_frames > 0, report
        assert report.audio_frames > 50, report
        assert report.unparsable == 0, report
        assert report.senders == indices, (report.senders, indices)
        assert report.best_match > 40, report
        control = analyse_frames(encode_vp8(cameras[0]), cameras)
        assert control.decoded > 0 and control.best_match < 25, control

        # Leave: the camera and microphone tracks stop, the others drop the tile.
        await pages[3].click("#leave")
        snap = await until(
            pages[3], "s => !s.joined && s.localTracks.every(t => t.state === 'ended')"
        )
        assert {t["kind"] for t in snap["localTracks"]} == {"audio", "video"}
        await until(pages[1], f"s => !s.tiles.some(t => t.id === '{ids[3]}')")
        # Those who stay rotate their keys (generation 1, then 2 after the bot's leave…) and
        # still see each other with the new keys.
        for seed in (1, 2):
            await until(pages[seed], "s => s.sendGeneration >= 1")
        await asyncio.sleep(1.0)  # frames under the new keys are on screen
        await sees(pages[1], pages[2], ids[2], [local[1]])  # type: ignore[list-item]
        await sees(pages[2], pages[1], ids[1], [local[2]])  # type: ignore[list-item]
        for page in pages.values():
            assert page.errors == [], page.errors
