"""The e2ee worker in real Chromium: fake-camera video is encrypted by one worker,
sent over a loopback RTCPeerConnection pair, decrypted by another worker, and the
picture that arrives is compared pixel by pixel with the camera's. A receiver with
the wrong key or no key must never show it. Both encoded-transform APIs are run:
RTCRtpScriptTransform and Chromium's createEncodedStreams()."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import BrowserFactory

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.browser


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """Serve /e2ee-worker/ and /tests/pages/ on 127.0.0.1, port chosen by the OS."""
    app = web.Application()
    app.router.add_static("/e2ee-worker/", ROOT / "e2ee-worker")
    app.router.add_static("/tests/pages/", ROOT / "tests" / "pages")
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def mean_abs_diff(a: list[int], b: list[int]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def spread(a: list[int]) -> float:
    mean = sum(a) / len(a)
    return sum(abs(x - mean) for x in a) / len(a)


async def open_page(chromium: BrowserFactory, site: str) -> Any:
    ctx = await chromium()
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{site}/tests/pages/e2ee_loopback.html")
    await page.wait_for_function("typeof window.runLoopback === 'function'", timeout=10_000)
    page.errors = errors
    return page


async def run(page: Any, api: str, receiver_key: str) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        "(a) => runLoopback(a)", {"api": api, "receiverKey": receiver_key}
    )
    return result


async def wait_stats(page: Any, done: str, seconds: float) -> dict[str, Any]:
    """Poll the page's stats until the JS predicate `done(s)` holds (bounded)."""
    stats: dict[str, Any] = {}
    for _ in range(int(seconds * 4)):
        stats = await page.evaluate("stats()")
        if await page.evaluate(f"(s) => ({done})(s)", stats):
            break
        await asyncio.sleep(0.25)
    return stats


@pytest.mark.parametrize("api", ["script", "streams"])
async def test_receiver_with_key_sees_the_camera(
    chromium: BrowserFactory, site: str, api: str
) -> None:
    page = await open_page(chromium, site)
    info = await run(page, api, "right")
    assert info["api"] == api
    stats = await wait_stats(
        page, "s => s.bob.decrypted > 40 && (s.inbound.video?.framesDecoded ?? 0) > 20", 20
    )
    assert stats["alice"]["encrypted"] > 40, stats
    assert stats["bob"]["decrypted"] > 40, stats
    assert stats["inbound"]["video"]["framesDecoded"] > 20, stats
    assert stats["inbound"]["audio"]["packets"] > 20, stats
    # Pixels: the remote picture is the local camera picture, a little later.
    best = None
    for _ in range(40):
        sample = await page.evaluate("sample()")
        if sample["local"] and sample["remote"]:
            local, remote = sample["local"], sample["remote"]
            assert spread(local) > 10, "the fake camera picture has no structure"
            assert spread(remote) > 10, "the remote picture is flat"
            diff = mean_abs_diff(local, remote)
            best = diff if best is None else min(best, diff)
            if best < 12:
                break
        await asyncio.sleep(0.25)
    print(f"{api}: best local/remote mean abs diff {best}")
    assert best is not None and best < 12, best
    assert page.errors == []


@pytest.mark.parametrize(("api", "receiver_key"), [("script", "wrong"), ("streams", "none")])
async def test_receiver_without_key_never_shows_it(
    chromium: BrowserFactory, site: str, api: str, receiver_key: str
) -> None:
    page = await open_page(chromium, site)
    await run(page, api, receiver_key)
    stats = await wait_stats(
        page, "s => (s.inbound.video?.packets ?? 0) > 100 && s.alice.encrypted > 60", 20
    )
    assert stats["inbound"]["video"]["packets"] > 100, stats  # media did arrive
    assert stats["bob"]["decrypted"] == 0, stats
    assert stats["inbound"]["video"].get("framesDecoded", 0) == 0, stats
    assert stats["remoteVideo"] == 0, stats  # the <video> never got a frame
    reasons = {r for f in stats["failures"] for r in f["reasons"]}
    expected = "auth-failed" if receiver_key == "wrong" else "unknown-kid"
    assert expected in reasons, stats
    assert all(f["participant"] == "alice" for f in stats["failures"])
    for _ in range(4):
        sample = await page.evaluate("sample()")
        assert sample["remote"] is None
        await asyncio.sleep(0.25)


async def test_receiver_without_worker_sees_no_picture(chromium: BrowserFactory, site: str) -> None:
    """No worker on the receiving side: the decoder gets the encrypted frames. VP8
    key frames still "decode" (their header is clear), but never into the camera's
    picture."""
    page = await open_page(chromium, site)
    await run(page, "script", "plain")
    stats = await wait_stats(page, "s => (s.inbound.video?.packets ?? 0) > 150", 20)
    assert stats["inbound"]["video"]["packets"] > 150, stats
    assert stats["alice"]["encrypted"] > 60, stats
    diffs = []
    for _ in range(12):
        sample = await page.evaluate("sample()")
        if sample["local"] and sample["remote"]:
            diffs.append(mean_abs_diff(sample["local"], sample["remote"]))
        await asyncio.sleep(0.25)
    print(
        f"plain receiver: decoded {stats['inbound']['video'].get('framesDecoded')}, diffs {diffs}"
    )
    assert all(d > 20 for d in diffs), diffs
