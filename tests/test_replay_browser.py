"""A hostile SFU replays recorded encrypted video, in real Chromium: nothing is shown.

Two headless Chromiums (Alice, Bob) meet in a sealed room through a real ``sealroom``
server (SFU in this process) on the real page, E2EE on. The SFU is made hostile
(tests/sfutap.py): it can rewrite everything outside the encrypted frame, so what it
replays looks to Bob's browser like new packets of Alice's video — sequence numbers
continuing Bob's stream, fresh advancing RTP timestamps, a fresh abs-send-time, the VP8
descriptor's PictureID/TL0PICIDX continuing (RFC 7741 §4.2) — sent through the SFU's own
send path (SRTP with Bob's context). Only the frame layer can stop it: its replay window
(FORMAT.md §6, "Replay window": one window of 1024 counters per sender and generation).

1. R, the replay: the SFU records what it forwards to Bob from Alice's video, from a key
   frame on; Bob decrypts and decodes those frames.
2. W, the control: the SFU withholds Alice's next frames from Bob (dropping them with
   no gap in Bob's sequence numbers, as it drops silence) from a key frame on, keeping
   what Alice sent. Bob has never seen them.
3. Alice's camera stops: nothing fresh comes from her any more.
4. The SFU injects R into Bob's stream at the recorded pace. Bob's worker must see every
   injected frame and drop each one as ``replay`` — which shows the packets got through
   SRTP, Chromium's RTP layer and its packet buffer (which assembled them into frames and
   handed them to the transform) rather than being thrown away there as old — and Bob's
   decoder must decode nothing of Alice's; the page says "replayed frames" on her tile.
   The counters the SFU can read from the frames' trailers show R lies inside the window
   (fewer than 1024 counters below the newest frame Bob got from Alice): it is dropped
   because those counters were seen, not because they are too old.
5. The control: the SFU injects W, rewritten the same way through the same path. Those
   counters were never seen, so the worker decrypts them and Bob decodes them — the
   rewriting and the injection are good enough for a picture to reach the screen when
   the frame layer lets a frame through.
6. The SFU injects W once more: the same frames, now seen, are all dropped as ``replay``
   and nothing more is decoded.

What is measured: Bob's worker counters (``getCounters``: ``dropped.replay`` must grow by
exactly the number of injected frames, no other drop reason may appear) and the
inbound-rtp stats of Alice's video on Bob's subscriber PeerConnection (``packetsReceived``
must grow by the number of injected packets; ``framesDecoded`` and ``keyFramesDecoded``
must not grow for R or W's second injection, and must grow by exactly W's frames for the
control). ``framesReceived`` is not a sign that the RTP layer took the packets: Chromium
counts a frame there only once it comes back from the transform (it stays 0 for R).
Alice's camera is Chromium's own test pattern, so frames span several RTP packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from sealroom.cli import build_parser, config_from_args, sfu_config_from_args
from sealroom.metrics import Metrics
from sfu import Sfu
from sfu.rtp import RtpHeader, build_packet
from sfu.track import PublishedTrack, Slot
from signaling.server import SignalingServer
from tests.callpage import join, open_browser, until
from tests.conftest import BrowserFactory
from tests.sfutap import (
    SfuTap,
    descriptor_ids,
    frame_body,
    frame_ctr,
    frame_is_key,
    rewrite_descriptor,
    whole_frames,
)

REPLAY_WINDOW = 1024  # FORMAT.md §6, "Replay window"
RECORD_FRAMES = 15  # frames of Alice's camera in R (from a key frame on)
WITHHOLD_FRAMES = 10  # in W
# Nobody here needs to see a picture: only decoder statistics are read. Not painting
# videos saves CPU on a small machine.
HIDE_VIDEO = "video { display: none !important; }"


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[tuple[Sfu, str]]:
    """A server built the way ``sealroom serve`` builds it (as tests/test_call_browser.py
    does), on 127.0.0.1: yields its SFU and its http:// address."""
    args = build_parser().parse_args(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--media-host", "127.0.0.1"]
    )
    sfu = Sfu(sfu_config_from_args(args))
    server = SignalingServer(config_from_args(args), sfu, metrics=Metrics)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield sfu, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await sfu.close()


async def open_builtin_camera(chromium: BrowserFactory) -> Any:
    """A fresh Chromium whose fake camera is Chromium's own 640×480 test pattern, not a
    peers/fakecam.py file: its frames are bigger (several RTP packets each, key frames
    included), so the replay exercises Chromium's reassembly of multi-packet frames."""
    ctx = await chromium()
    page = await ctx.new_page()
    page.errors, page.console = [], []  # as tests/callpage.py open_browser
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
    page.set_default_timeout(30_000)
    return page


async def poll(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """Await `check()` (sync or async) until it returns something truthy (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.1)


def slot_of(sfu: Sfu, subscriber: str, publisher: str, kind: str) -> Slot | None:
    """The subscriber's negotiated slot showing the publisher's `kind` track."""
    p = sfu.participants.get(subscriber)
    for slot in p.slots if p is not None else []:
        if slot.publisher == publisher and slot.kind == kind and slot.track is not None \
                and slot.params is not None:
            return slot
    return None


async def worker_counters(page: Any) -> dict[str, Any]:
    """The page's E2EE worker counters (FORMAT.md §8 getCounters)."""
    counters: dict[str, Any] = await page.evaluate(
        "() => window.sealroom.call.e2ee.counters()"
    )
    return counters


async def inbound_video(page: Any, ssrc: int) -> dict[str, int]:
    """inbound-rtp stats of one SSRC on the page's subscriber PeerConnection."""
    stats: dict[str, int] = await page.evaluate(
        """async (ssrc) => {
            const { sub } = await window.sealroom.call.media.stats();
            let out = {};
            sub?.forEach((r) => {
              if (r.type === 'inbound-rtp' && r.ssrc === ssrc) {
                out = {};
                for (const k of ['packetsReceived', 'framesReceived', 'framesDecoded',
                                 'keyFramesDecoded', 'framesDropped', 'nackCount', 'pliCount']) {
                  out[k] = r[k] ?? 0;
                }
              }
            });
            return out;
        }""",
        ssrc,
    )
    return stats


async def bob_state(page: Any, ssrc: int) -> tuple[dict[str, Any], dict[str, int]]:
    return await worker_counters(page), await inbound_video(page, ssrc)


def replays(counters: dict[str, Any]) -> int:
    return int(counters["dropped"].get("replay", 0))


def other_drops(counters: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in counters["dropped"].items() if k != "replay"}


def highest_ctr(packets: list[bytes], video_ssrc: int, audio_ssrc: int) -> int:
    """The newest frame counter among the frames the SFU sent on these SSRCs, read from
    the trailers without a key (what a curious SFU sees, FORMAT.md §9)."""
    ctrs = []
    for data in packets:
        h = RtpHeader.parse(data)
        payload = data[h.payload_offset : h.payload_end]
        if h.ssrc == audio_ssrc and payload:
            ctrs.append(frame_ctr("audio", payload))
    video = [p for p in packets if RtpHeader.parse(p).ssrc == video_ssrc]
    ctrs += [frame_ctr("video", frame_body(f)) for f in whole_frames(video)]
    return max(ctrs)


def test_descriptor_rewrite_keeps_everything_but_the_ids() -> None:
    """The injection's VP8 descriptor rewrite (RFC 7741 §4.2), on the forms Chromium does
    not send here: 7-bit PictureID, TL0PICIDX with and without the TID octet, no X."""
    frame = b"\x9d\x01\x2a encrypted bytes"

    def packet(descriptor: bytes) -> bytes:
        return build_packet(payload_type=96, sequence_number=1, timestamp=2, ssrc=3,
                            marker=True, extensions=b"", payload=descriptor + frame)

    cases = [  # descriptor, ids before, ids asked, descriptor after
        (bytes([0x90, 0x80, 0x85, 0x01]), (0x0501, None), (0x7FFF + 2, 9),
         bytes([0x90, 0x80, 0x80, 0x01])),
        (bytes([0x90, 0x80, 0x11]), (0x11, None), (0x80 + 5, None), bytes([0x90, 0x80, 0x05])),
        (bytes([0x90, 0xC0, 0x80, 0x07, 0x30]), (7, 0x30), (8, 0x131),
         bytes([0x90, 0xC0, 0x80, 0x08, 0x31])),
        (bytes([0x90, 0xE0, 0x12, 0x40, 0xA0]), (0x12, 0x40), (0x13, 0x41),
         bytes([0x90, 0xE0, 0x13, 0x41, 0xA0])),
        (bytes([0x10]), (None, None), (5, 6), bytes([0x10])),
    ]
    for descriptor, before, (picture_id, tl0), after in cases:
        assert descriptor_ids(packet(descriptor)) == before, descriptor.hex()
        assert rewrite_descriptor(descriptor + frame, picture_id, tl0) == after + frame


@pytest.mark.browser
@pytest.mark.media
async def test_replayed_video_frames_reach_the_worker_and_are_not_shown(
    chromium: BrowserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = SfuTap(monkeypatch)
    async with serve() as (sfu, url):
        alice = await open_builtin_camera(chromium)
        bob = await open_browser(chromium, tmp_path, 2)
        # One camera encoding (?simulcast=0, docs/SFU.md "Browsers"): the tap withholds and
        # replays one published track's frames, and a simulcast m-line's track receives
        # nothing itself (its layers do).
        for page, name in ((alice, "Alice"), (bob, "Bob")):
            await join(page, url, name, query="?simulcast=0")
            await page.wait_for_selector("#room-view:not([hidden])")
            await page.add_style_tag(content=HIDE_VIDEO)
        a_id = (await until(alice, "s => s.id !== null"))["id"]
        b_id = (await until(bob, "s => s.id !== null"))["id"]
        await bob.click("#camera")  # Bob's video is not needed: Alice need not decode it

        # Bob decodes Alice's video through the SFU.
        slot = await poll(lambda: slot_of(sfu, b_id, a_id, "video"), 30, "Bob's slot of Alice")
        audio_slot = await poll(lambda: slot_of(sfu, b_id, a_id, "audio"), 30, "audio slot")
        await poll(lambda: _decoded_more_than(bob, slot.ssrc, 10), 30, "Bob decoding Alice")
        track = slot.track
        assert track is not None

        # 1. R: what the SFU forwards to Bob, from a key frame on.
        recording = tap.record(slot.ssrc)
        track.request_keyframe("replay-test")
        await poll(lambda: len(whole_frames(recording)) >= RECORD_FRAMES, 15, "recording R")
        replayed = whole_frames(tap.stop_recording(slot.ssrc))

        # 2. W: Alice's next frames, withheld from Bob, from a key frame on.
        withheld = tap.withhold(slot)
        track.request_keyframe("replay-test")
        await poll(lambda: len(whole_frames(withheld)) >= WITHHOLD_FRAMES, 15, "withholding W")

        # 3. Alice's camera stops; once nothing has come from it for a while, the SFU
        # stops withholding (there is nothing left to forward).
        await alice.click("#camera")
        await poll(lambda: alice.evaluate("() => !window.sealroom.call.cameraOn"), 10,
                   "Alice's camera off")
        await poll(_quiet(track), 10, "Alice's video to stop")
        control = whole_frames(tap.release(slot))
        assert frame_is_key(replayed[0]) and frame_is_key(control[0])
        assert len(replayed) >= RECORD_FRAMES and len(control) >= WITHHOLD_FRAMES

        # Inside the window: the newest counter Bob can have from Alice is fewer than 1024
        # ahead of every replayed frame's, so only "seen already" can reject them.
        newest = highest_ctr(list(tap.packets), slot.ssrc, audio_slot.ssrc)
        replayed_ctrs = [frame_ctr("video", frame_body(f)) for f in replayed]
        control_ctrs = [frame_ctr("video", frame_body(f)) for f in control]
        assert newest - min(replayed_ctrs) < REPLAY_WINDOW, (newest, replayed_ctrs)
        assert newest - min(control_ctrs) < REPLAY_WINDOW, (newest, control_ctrs)
        assert not set(control_ctrs) & set(replayed_ctrs)

        # 4. The replay.
        counters0, video0 = await bob_state(bob, slot.ssrc)
        injected = await tap.inject(slot, replayed)
        assert injected.frames == len(replayed)
        await poll(lambda: _replays_at_least(bob, replays(counters0) + injected.frames), 10,
                   "Bob's worker to drop the replay")
        await asyncio.sleep(1.0)  # anything decodable would have been decoded by now
        counters1, video1 = await bob_state(bob, slot.ssrc)
        report = _report("replay", injected, counters0, counters1, video0, video1)
        reports = [f"window: newest counter {newest}, replayed {min(replayed_ctrs)}.."
                   f"{max(replayed_ctrs)}, withheld {min(control_ctrs)}..{max(control_ctrs)};"
                   f" packets per frame: replayed {[len(f) for f in replayed]},"
                   f" withheld {[len(f) for f in control]}", report]
        assert replays(counters1) - replays(counters0) == injected.frames, report
        assert counters1["frames"] - counters0["frames"] >= injected.frames, report
        assert other_drops(counters1) == other_drops(counters0), report
        assert video1["packetsReceived"] - video0["packetsReceived"] >= injected.packets, report
        assert video1["framesDecoded"] == video0["framesDecoded"], report
        assert video1["keyFramesDecoded"] == video0["keyFramesDecoded"], report
        # and the page says so on Alice's tile (tiles.js: reason "replay")
        await until(bob, f"s => s.tiles.some(t => t.id === '{a_id}'"
                         " && t.failure === 'replayed frames')", 5)

        # 5. The control: frames Bob never saw, rewritten and injected the same way.
        injected = await tap.inject(slot, control)
        await poll(lambda: _decoded_more_than(bob, slot.ssrc, video1["framesDecoded"]
                                              + injected.frames - 1), 10,
                   "Bob decoding the withheld frames")
        await asyncio.sleep(0.5)
        counters2, video2 = await bob_state(bob, slot.ssrc)
        report = _report("control", injected, counters1, counters2, video1, video2)
        reports.append(report)
        assert video2["framesDecoded"] - video1["framesDecoded"] == injected.frames, report
        assert video2["keyFramesDecoded"] - video1["keyFramesDecoded"] >= 1, report
        assert counters2["decrypted"] - counters1["decrypted"] >= injected.frames, report
        assert replays(counters2) == replays(counters1), report
        assert other_drops(counters2) == other_drops(counters1), report

        # 6. The same frames again: now seen, all dropped, nothing decoded.
        injected = await tap.inject(slot, control)
        await poll(lambda: _replays_at_least(bob, replays(counters2) + injected.frames), 10,
                   "Bob's worker to drop the second injection")
        await asyncio.sleep(1.0)
        counters3, video3 = await bob_state(bob, slot.ssrc)
        report = _report("again", injected, counters2, counters3, video2, video3)
        reports.append(report)
        assert replays(counters3) - replays(counters2) == injected.frames, report
        assert other_drops(counters3) == other_drops(counters2), report
        assert video3["packetsReceived"] - video2["packetsReceived"] >= injected.packets, report
        assert video3["framesDecoded"] == video2["framesDecoded"], report
        print("\n".join(reports))  # shown with pytest -s

        for page in (alice, bob):
            assert page.errors == [], page.errors


async def _decoded_more_than(page: Any, ssrc: int, frames: int) -> bool:
    return int((await inbound_video(page, ssrc)).get("framesDecoded", 0)) > frames


async def _replays_at_least(page: Any, count: int) -> bool:
    return replays(await worker_counters(page)) >= count


def _quiet(track: PublishedTrack, seconds: float = 0.6) -> Callable[[], bool]:
    """A check that holds once the track has received nothing for `seconds`."""
    count, since = track.received, time.monotonic()

    def check() -> bool:
        nonlocal count, since
        if track.received != count:
            count, since = track.received, time.monotonic()
        return time.monotonic() - since >= seconds

    return check


def _report(phase: str, injected: Any, c0: dict[str, Any], c1: dict[str, Any],
            v0: dict[str, int], v1: dict[str, int]) -> str:
    worker = {k: c1[k] - c0[k] for k in ("frames", "decrypted")}
    drops = {k: c1["dropped"].get(k, 0) - c0["dropped"].get(k, 0) for k in c1["dropped"]}
    video = {k: v1.get(k, 0) - v0.get(k, 0) for k in v1}
    return (f"{phase}: injected {injected}; worker +{worker}, dropped +{drops};"
            f" inbound video +{video}")

