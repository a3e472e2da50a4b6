"""Driving the sealroom page (web/) in Chromium: join, read what it shows, compare pixels.

Shared by the browser tests that hold a call (plain, over TLS, through TURN).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from peers.fakecam import block_diff, write_y4m
from tests.conftest import BrowserFactory

PASSWORD = "correct horse battery staple, shared out of band"
ROOM = "standup"


async def open_browser(
    chromium: BrowserFactory, tmp: Path, seed: int, extra_args: tuple[str, ...] = (),
    camera: Path | None = None,
) -> Any:
    """A fresh Chromium whose fake camera shows pattern `seed` (peers/fakecam.py), or the
    Y4M clip `camera`."""
    cam = camera if camera is not None else write_y4m(tmp / f"camera-{seed}.y4m", seed)
    ctx = await chromium(extra_args=[f"--use-file-for-fake-video-capture={cam}", *extra_args])
    page = await ctx.new_page()
    page.errors = []
    page.console = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
    page.set_default_timeout(30_000)
    return page


async def join(
    page: Any, url: str, name: str, password: str = PASSWORD, query: str = ""
) -> None:
    """Open the room link and join through the form."""
    await page.goto(f"{url}/r/{ROOM}{query}")
    assert await page.input_value("#room") == ROOM  # the room link fills the form
    await page.fill("#password", password)
    await page.fill("#name", name)
    await page.click("#join")


async def join_both(url: str, ada: Any, grace: Any) -> None:
    """Ada, then Grace, join through the form and reach the room view."""
    for name, page in (("Ada", ada), ("Grace", grace)):
        await join(page, url, name)
        await page.wait_for_selector("#room-view:not([hidden])")


async def two_in_a_call(url: str, ada: Any, grace: Any) -> tuple[str, str]:
    """Ada and Grace join and each shows the other's camera; their participant ids."""
    await join_both(url, ada, grace)
    snap = await until(ada, "s => s.tiles.some(t => t.id !== 'self' && t.width > 0)")
    ada_id = snap["id"]
    snap = await until(grace, f"s => s.tiles.some(t => t.id === '{ada_id}' && t.width > 0)")
    return ada_id, snap["id"]


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
    console = "\n".join(page.console[-40:])
    raise AssertionError(f"timed out waiting for {predicate}: {snap}\nconsole:\n{console}")


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




async def sees(page: Any, sender_page: Any, sender_id: str, others: list[list[int]]) -> float:
    """How closely `page`'s tile of `sender_id` matches the sender's own camera picture;
    asserts it matches, and matches it better than any picture in `others`."""
    local = await sample(sender_page, "self")
    assert local is not None, "the sender shows no camera picture"
    diff = await best_match(page, sender_id, local)
    assert diff < 25, diff
    for other in others:
        assert diff < block_diff(local, other) / 2, (diff, block_diff(local, other))
    return diff


async def selected_candidate_types(page: Any) -> dict[str, str | None]:
    """The local candidate type ('host', 'relay', …) of each PeerConnection's selected pair."""
    types: dict[str, str | None] = await page.evaluate(
        """async () => {
            const out = {};
            const reports = await window.sealroom.call.media.stats();
            for (const [pc, report] of Object.entries(reports)) {
              out[pc] = null;
              report?.forEach((r) => {
                if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
                const pair = report.get(r.selectedCandidatePairId);
                out[pc] = report.get(pair?.localCandidateId)?.candidateType ?? null;
              });
            }
            return out;
        }"""
    )
    return types


async def video_stats(page: Any, pc: str) -> list[dict[str, Any]]:
    """The video outbound-rtp (`pc` 'pub': one per simulcast layer) or inbound-rtp ('sub')
    records of the page's PeerConnection `pc`, as getStats gives them."""
    got: list[dict[str, Any]] = await page.evaluate(
        """async (which) => {
            const report = (await window.sealroom.call.media.stats())[which];
            const type = which === 'pub' ? 'outbound-rtp' : 'inbound-rtp';
            const out = [];
            report?.forEach((r) => { if (r.type === type && r.kind === 'video') out.push(r); });
            return out;
        }""",
        pc,
    )
    return got
