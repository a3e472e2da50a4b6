"""Simulcast from the page, in real Chromium (docs/SFU.md "Simulcast", "Browsers").

One page publishes its camera as three layers (web/js/media.js ``SIMULCAST_LAYERS``), every
frame of every layer encrypted by the same E2EE worker; another page watches it. The
viewer's tile of the publisher is made small and then big again: the page tells the SFU
its rendered height (``sfu-video-constraints``, from tiles.js's ResizeObserver), and the
resolution the viewer receives (inbound-rtp ``frameHeight``) follows, down and up, with
the picture still the publisher's camera and no frame failing to decrypt on any switch.
A tap inside the SFU sees what each layer brings in and what the viewer is sent: every
frame of every layer is ciphertext with the frame format's trailer, under one frame
counter (no nonce used twice across layers, e2ee-worker/FORMAT.md §7), and nothing any
VP8 decoder could turn into a camera picture.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from bench.links import serve
from e2ee.sframe import EncryptedFrame, KeyId
from peers.fakecam import expected, write_moving_y4m
from sfu.rtp import RtpHeader
from sfu.track import PublishedTrack
from tests.callpage import open_browser, sees, two_in_a_call, until, video_stats
from tests.conftest import BrowserFactory
from tests.sfutap import SfuTap, _frames, analyse, analyse_frames, encode_vp8

pytestmark = [pytest.mark.browser, pytest.mark.media]

# The publisher's camera: 960×540 is the smallest size at which Chromium sends three VP8
# simulcast layers (web/js/media.js layersFor): 240×135, 480×270 and 960×540.
WIDTH, HEIGHT = 960, 540


async def received_height(page: Any, want: Any, seconds: float = 30) -> int:
    """Poll the viewer's inbound video frameHeight until `want(height)` holds (bounded);
    returns the last height seen."""
    height = 0
    for _ in range(int(seconds * 4)):
        stats = await video_stats(page, "sub")
        heights = [int(r.get("frameHeight", 0)) for r in stats if r.get("frameHeight")]
        height = max(heights, default=0)
        if want(height):
            return height
        await asyncio.sleep(0.25)
    raise AssertionError(f"received frameHeight {height} never satisfied the condition")


async def sending(page: Any, want: Any = None, seconds: float = 30) -> dict[str, bool]:
    """The publisher's layers by RID and whether each is active (outbound-rtp ``active``);
    with `want`, polled until `want(layers)` holds (bounded)."""
    layers: dict[str, bool] = {}
    for _ in range(int(seconds * 4)):
        layers = {str(r.get("rid")): bool(r.get("active"))
                  for r in await video_stats(page, "pub")}
        if want is None or want(layers):
            return layers
        await asyncio.sleep(0.25)
    raise AssertionError(f"the publisher's layers {layers} never satisfied the condition")


async def frames_decoded(page: Any) -> int:
    return sum(int(r.get("framesDecoded", 0)) for r in await video_stats(page, "sub"))


async def set_tile_height(page: Any, tile: str, css: str) -> None:
    """Make the viewer's video of `tile` `css` high and as wide as the camera's 16:9 needs
    (''= the grid's own size)."""
    await page.evaluate(
        """([id, h]) => {
            const video = document.querySelector(`figure[data-id="${id}"] video`);
            video.style.height = h;
            video.style.width = h ? `${(parseFloat(h) * 16) / 9}px` : '';
        }""",
        [tile, css],
    )


async def test_tile_size_picks_the_layer_under_e2ee(
    chromium: BrowserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = SfuTap(monkeypatch)
    # Ingress: every packet each simulcast layer brings into the SFU, by RID.
    ingress: dict[str, list[bytes]] = defaultdict(list)
    forward = PublishedTrack.on_rtp

    def on_rtp(track: PublishedTrack, h: RtpHeader, data: bytes) -> None:
        if track.rid:
            ingress[track.rid].append(bytes(data))
        forward(track, h, data)

    monkeypatch.setattr(PublishedTrack, "on_rtp", on_rtp)

    camera = await asyncio.to_thread(
        write_moving_y4m, tmp_path / "camera-1.y4m", 1, WIDTH, HEIGHT, 15, 2.0
    )
    async with serve() as srv:
        publisher = await open_browser(chromium, tmp_path, 1, camera=camera)
        viewer = await open_browser(chromium, tmp_path, 2)
        ada, _ = await two_in_a_call(srv.http, publisher, viewer)

        # The publisher sends three layers, lowest first, each at its own size.
        layers: list[dict[str, Any]] = []
        for _ in range(80):
            layers = await video_stats(publisher, "pub")
            if len([r for r in layers if r.get("frameHeight")]) == 3:
                break
            await asyncio.sleep(0.25)
        sizes = {r.get("rid"): r.get("frameHeight") for r in layers}
        assert sizes == {"q": HEIGHT // 4, "h": HEIGHT // 2, "f": HEIGHT}, layers

        # Decrypt failures from now on (the first frames before the keys came are normal).
        await viewer.evaluate(
            """() => { window.failures = [];
                 window.sealroom.call.addEventListener('decrypt-failure',
                   ({ detail }) => window.failures.push(detail)); }"""
        )
        others = [expected(2)]

        # The grid's tile is taller than the camera: the top layer.
        await received_height(viewer, lambda h: h == HEIGHT)
        await sees(viewer, publisher, ada, others)
        # Small tile: the SFU forwards the lowest layer.
        await set_tile_height(viewer, ada, "40px")
        await received_height(viewer, lambda h: h == HEIGHT // 4)
        decoded = await frames_decoded(viewer)
        await sees(viewer, publisher, ada, others)
        # Dynacast: nobody needs the two upper layers; after the SFU's pause delay the
        # publisher stops encoding them (its outbound-rtp shows them inactive).
        assert await sending(publisher) == {"q": True, "h": True, "f": True}
        await sending(publisher, lambda a: a == {"q": True, "h": False, "f": False})
        await sees(viewer, publisher, ada, others)
        # Middle: a tile 300 px high gets the 270-line layer, not the top one (restarted
        # at once for it; the top one stays off).
        await set_tile_height(viewer, ada, "300px")
        await sending(publisher, lambda a: a == {"q": True, "h": True, "f": False})
        await received_height(viewer, lambda h: h == HEIGHT // 2)
        # Big again: back to the top layer, the picture still the camera's.
        await set_tile_height(viewer, ada, "")
        await sending(publisher, lambda a: a == {"q": True, "h": True, "f": True})
        await received_height(viewer, lambda h: h == HEIGHT)
        assert await frames_decoded(viewer) > decoded
        await sees(viewer, publisher, ada, others)
        # And down from the top to the middle.
        await set_tile_height(viewer, ada, "300px")
        await received_height(viewer, lambda h: h == HEIGHT // 2)
        await sees(viewer, publisher, ada, others)

        assert await viewer.evaluate("window.failures") == []
        snap = await until(viewer, f"s => s.tiles.some(t => t.id === '{ada}')")
        assert all(t["failure"] is None for t in snap["tiles"]), snap["tiles"]
        stats = srv.sfu.stats()
        assert stats["simulcast_switches_down"] >= 2, stats
        assert stats["simulcast_switches_up"] >= 2, stats
        assert stats["video_constraints"] >= 4, stats
        assert stats["dynacast_pauses"] >= 2 and stats["dynacast_resumes"] >= 2, stats
        assert stats.get("error_unknown_mid", 0) == 0, stats
        for page in (publisher, viewer):
            assert page.errors == [], page.errors

        # The tap. Ingress: each layer's frames carry the trailer of the publisher's
        # sender index, and all layers share one counter: no CTR twice.
        index = await publisher.evaluate("window.sealroom.snapshot().index")
        counters: list[int] = []
        for rid in ("q", "h", "f"):
            packets = [RtpHeader.parse(d) for d in ingress[rid]]
            stream = [(h.sequence_number, h.timestamp, h.marker, d[h.payload_offset:h.payload_end])
                      for h, d in zip(packets, ingress[rid], strict=True)]
            frames = _frames(stream)
            assert len(frames) > 10, (rid, len(frames))
            report = analyse_frames(frames, [expected(1), expected(2)])
            assert report.best_match > 40, (rid, report)
            for frame in frames:
                parsed = EncryptedFrame.parse("video", frame)  # raises without a trailer
                assert KeyId.parse(parsed.kid).sender == index, (rid, parsed.kid)
                counters.append(parsed.ctr)
        assert len(counters) == len(set(counters)), "a frame counter was used twice"
        # Egress: what the viewer was sent across the switches is all ciphertext.
        kinds = {s.ssrc: s.kind for p in srv.sfu.participants.values() for s in p.slots}
        report = await asyncio.to_thread(analyse, list(tap.packets), kinds.get, [expected(1)])
        assert report.video_frames > 50 and report.key_frames >= 4, report
        assert report.unparsable == 0, report
        assert index in report.senders, (index, report.senders)
        assert report.best_match > 40, report
        control = analyse_frames(encode_vp8(expected(1)), [expected(1)])
        assert control.decoded > 0 and control.best_match < 25, control
