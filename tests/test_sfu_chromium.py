"""Real Chromium through the SFU: web/js/signaling.js joins, web/js/media.js publishes the
fake camera and microphone and receives the others, end-to-end encrypted by the worker.

Two pages exchange audio and video through the in-process SFU behind the signaling
server; a third case puts a Python ``MediaBot`` and a page in one room. The page is
tests/pages/sfu-call.html, served under the signaling server's own origin (the
WebSocket's origin check) by a Playwright route.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from peers.client import SignalingClient
from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig
from sfu.ice import IcePolicy
from tests.conftest import BrowserFactory, RunningServer

pytestmark = pytest.mark.browser

PAGE = Path(__file__).resolve().parent / "pages" / "sfu-call.html"
PASSWORD = "chromium through the sfu"
BOT_ICE = IcePolicy("127.0.0.1", port_min=54000, port_max=54999)


async def open_page(chromium: BrowserFactory, srv: RunningServer) -> Any:
    # A page fulfilled by a Playwright route has no IP address space, so Chromium's
    # Local Network Access checks would refuse its WebSocket to 127.0.0.1.
    ctx = await chromium(extra_args=["--disable-features=LocalNetworkAccessChecks"])
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: print(f"[page {len(errors)}] {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)

    async def serve(route: Any) -> None:
        await route.fulfill(path=str(PAGE), content_type="text/html")

    await page.route("**/tests/pages/sfu-call.html", serve)
    await page.goto(f"{srv.http}/tests/pages/sfu-call.html")
    await page.wait_for_function("window.ready === true", timeout=10_000)
    page.errors = errors
    return page


async def wait_report(page: Any, done: Callable[[dict[str, Any]], bool],
                      seconds: float) -> dict[str, Any]:
    """Poll the page's report until ``done`` holds (bounded: 4 polls a second)."""
    report: dict[str, Any] = {}
    for _ in range(int(seconds * 4)):
        report = await page.evaluate("report()")
        if done(report):
            break
        await asyncio.sleep(0.25)
    return report


def receives(report: dict[str, Any], who: str, frames: int = 20, samples: int = 48000) -> bool:
    got = report["inbound"].get(who, {})
    video, audio = got.get("video", {}), got.get("audio", {})
    return (video.get("framesDecoded", 0) > frames and audio.get("packetsReceived", 0) > 50
            and audio.get("totalSamplesReceived", 0) > samples)


def mean_abs_diff(a: list[int], b: list[int]) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


@pytest.mark.parametrize("api", ["script", "streams"])
async def test_two_chromium_pages_exchange_encrypted_media(
    chromium: BrowserFactory, signaling: Callable[..., Awaitable[RunningServer]], api: str
) -> None:
    sfu = Sfu(SfuConfig(port_min=45000, port_max=45999))
    srv = await signaling(media=sfu)
    pages = [await open_page(chromium, srv) for _ in range(2)]
    try:
        infos = [await p.evaluate("(a) => join(a)", {"room": "call", "password": PASSWORD,
                                                       "encrypt": True, "api": api})
                 for p in pages]
        ids = [i["id"] for i in infos]
        assert all(i["api"] == api for i in infos), infos
        # Each page installs the other's key (the key exchange's job in the real client).
        await pages[0].evaluate("([p, k]) => addKey(p, k)", [ids[1], infos[1]["key"]])
        await pages[1].evaluate("([p, k]) => addKey(p, k)", [ids[0], infos[0]["key"]])
        for p in pages:
            await p.evaluate("publish()")
        reports = [await wait_report(p, lambda r, o=other: receives(r, o)
                                     and r["worker"]["decrypted"] > 100
                                     and r["worker"]["encrypted"] > 100, 40)
                   for p, other in zip(pages, reversed(ids), strict=True)]
        for report, other in zip(reports, reversed(ids), strict=True):
            assert receives(report, other), report
            worker = report["worker"]
            assert worker["encrypted"] > 100, report
            assert worker["decrypted"] > 100, report
            assert worker["dropped"] == {}, report
            assert report["failures"] == [], report
            tracks = [e for e in report["events"] if e["type"] == "track"]
            assert {(e["participant"], e["kind"]) for e in tracks} == {(other, "audio"),
                                                                       (other, "video")}
            assert len({e["streamId"] for e in tracks}) == 1  # one stream per participant
            assert not [e for e in report["events"] if e["type"] == "failed"], report
        # The decrypted picture is the other page's camera picture (fake device pattern).
        best = None
        for _ in range(40):
            sample = await pages[1].evaluate("(p) => sample(p)", ids[0])
            if sample["local"] and sample["remote"]:
                diff = mean_abs_diff(sample["local"], sample["remote"])
                best = diff if best is None else min(best, diff)
                if best < 12:
                    break
            await asyncio.sleep(0.25)
        assert best is not None and best < 12, best
        # Chromium groups a publisher's tracks by the msid stream id: the participant id.
        sub_sdp = await pages[1].evaluate("subSdp()")
        assert sub_sdp.count(f"a=msid:{ids[0]} ") == 2, sub_sdp
        stats = sfu.stats()
        assert stats.get("errors", 0) == 0, stats
        assert stats.get("drop_unknown_ssrc", 0) == 0, stats
        assert stats.get("drop_malformed_rtp", 0) == 0, stats
        assert stats.get("drop_malformed_rtcp", 0) == 0, stats
        for p in pages:
            assert p.errors == []
    finally:
        for p in pages:
            await p.evaluate("leave()")


async def test_chromium_page_receives_a_media_bot(
    chromium: BrowserFactory, signaling: Callable[..., Awaitable[RunningServer]]
) -> None:
    sfu = Sfu(SfuConfig(port_min=46000, port_max=46999))
    srv = await signaling(media=sfu)
    client = await SignalingClient.connect(srv.ws)
    await client.join("bots", PASSWORD)
    assert client.id is not None
    bot = MediaBot(client.id, signal=client.send, ice=BOT_ICE)
    await client.set_media_handler(bot.on_message)
    page = await open_page(chromium, srv)
    try:
        await bot.publish()
        info = await page.evaluate("(a) => join(a)", {"room": "bots", "password": PASSWORD,
                                                       "encrypt": False})
        await page.evaluate("publish()")
        report = await wait_report(
            page, lambda r: r["inbound"].get(client.id, {}).get("video", {})
            .get("packetsReceived", 0) > 50, 40)
        got = report["inbound"].get(client.id, {})
        assert got.get("video", {}).get("packetsReceived", 0) > 50, report
        assert got.get("audio", {}).get("packetsReceived", 0) > 50, report
        # ... and the bot receives the page's audio and video.
        assert await bot.wait_for(lambda: len(bot.received) == 2, timeout=30), bot.received
        assert {t["participant"] for t in bot.tracks.values()} == {info["id"]}
        assert page.errors == []
    finally:
        await page.evaluate("leave()")
        await bot.close()
        await client.close()


async def bot_member(srv: RunningServer, room: str) -> tuple[SignalingClient, MediaBot]:
    client = await SignalingClient.connect(srv.ws)
    await client.join(room, PASSWORD)
    assert client.id is not None
    bot = MediaBot(client.id, signal=client.send, ice=BOT_ICE)
    await client.set_media_handler(bot.on_message)
    await bot.publish()
    return client, bot


def track_events(report: dict[str, Any], kind: str, who: str) -> list[dict[str, Any]]:
    return [e for e in report["events"] if e["type"] == kind and e.get("participant") == who]


async def test_chromium_page_follows_publishers_coming_and_going(
    chromium: BrowserFactory, signaling: Callable[..., Awaitable[RunningServer]]
) -> None:
    """Sub re-offers: a departed publisher's MIDs end and are never given to anyone else;
    a later publisher gets new MIDs and its media arrives on them."""
    sfu = Sfu(SfuConfig(port_min=47000, port_max=47999))
    srv = await signaling(media=sfu)
    page = await open_page(chromium, srv)
    members: list[tuple[SignalingClient, MediaBot]] = []
    try:
        await page.evaluate("(a) => join(a)", {"room": "churn", "password": PASSWORD,
                                               "encrypt": False})
        await page.evaluate("publish()")
        members.append(await bot_member(srv, "churn"))
        first = members[0][0].id
        assert first is not None
        report = await wait_report(page, lambda r: r["inbound"].get(first, {}).get(
            "video", {}).get("packetsReceived", 0) > 20, 40)
        assert len(track_events(report, "track", first)) == 2, report
        first_mids = {e["mid"] for e in track_events(report, "track", first)}
        client, bot = members.pop()
        await bot.close()
        await client.close()
        report = await wait_report(page, lambda r: len(track_events(r, "track-ended", first)) == 2,
                                   20)
        assert {e["mid"] for e in track_events(report, "track-ended", first)} == first_mids
        assert track_events(report, "left", first), report
        members.append(await bot_member(srv, "churn"))
        second = members[0][0].id
        assert second is not None
        report = await wait_report(page, lambda r: all(
            r["inbound"].get(second, {}).get(k, {}).get("packetsReceived", 0) > 20
            for k in ("audio", "video")), 40)
        started = track_events(report, "track", second)
        assert len(started) == 2, report
        assert not {e["mid"] for e in started} & first_mids  # MIDs are never reused
        for kind in ("audio", "video"):
            assert report["inbound"][second][kind]["packetsReceived"] > 20, report
        assert not [e for e in report["events"] if e["type"] == "failed"], report
        # An sfu-error reaches the app as 'failed' (it reconnects).
        await page.evaluate("state.signaling.send({type: 'sfu-offer', pc: 'sub', sdp: 'v=0'})")
        report = await wait_report(page, lambda r: any(e["type"] == "failed"
                                                       for e in r["events"]), 10)
        failed = [e for e in report["events"] if e["type"] == "failed"]
        assert [e["reason"].split(":")[0] for e in failed] == ["bad-message"], report
        assert page.errors == []
    finally:
        await page.evaluate("leave()")
        for client, bot in members:
            await bot.close()
            await client.close()
