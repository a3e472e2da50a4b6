"""The whole product in real Chromium: people meet in a sealed room and see each other.

Three headless Chromiums, each with its own fake camera (a distinct pattern of coloured
blocks, tests/fakecam.py), open the page served by the server that ``sealroom serve``
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
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from sealroom.cli import build_parser, config_from_args, sfu_config_from_args
from sfu import Sfu
from signaling.server import SignalingServer
from tests.browser import ARTIFACTS
from tests.callpage import inbound_audio, join, open_browser, sample, sees, snapshot, until
from tests.conftest import BrowserFactory

pytestmark = [pytest.mark.browser, pytest.mark.media]


class Served:
    """A server built the way ``sealroom serve`` builds it, listening on 127.0.0.1."""

    def __init__(self, server: SignalingServer, sfu: Sfu, runner: web.AppRunner, port: int) -> None:
        self.server, self.sfu, self.runner, self.port = server, sfu, runner, port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/ws"


@contextlib.asynccontextmanager
async def serve(*flags: str) -> AsyncIterator[Served]:
    args = build_parser().parse_args(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--media-host", "127.0.0.1", *flags]
    )
    sfu = Sfu(sfu_config_from_args(args))
    server = SignalingServer(config_from_args(args), sfu)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Served(server, sfu, runner, runner.addresses[0][1])
    finally:
        await runner.cleanup()
        await sfu.close()


async def test_three_browsers_see_and_hear_each_other(
    chromium: BrowserFactory, tmp_path: Path
) -> None:
    names = {1: "Ada", 2: "Grace", 3: "Katherine"}
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

        # Leave: the camera and microphone tracks stop, the others drop the tile.
        await pages[3].click("#leave")
        snap = await until(
            pages[3], "s => !s.joined && s.localTracks.every(t => t.state === 'ended')"
        )
        assert {t["kind"] for t in snap["localTracks"]} == {"audio", "video"}
        await until(pages[1], f"s => !s.tiles.some(t => t.id === '{ids[3]}')")
        for page in pages.values():
            assert page.errors == [], page.errors
