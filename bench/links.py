"""``python -m bench.links``: what every participant of a real call sees when one
participant's link is bad.

N headless Chromiums (Debian's /usr/bin/chromium through Playwright, the flags of
peers/browser.py), each with its own moving, noisy camera (peers/fakecam.py
``write_moving_y4m``: a camera that needs the bandwidth a real one needs), join one
room on a server built the way ``sealroom serve`` builds it, in this process (so the
SFU's counters can be read). Once everyone decodes everyone, the case is applied for
``--seconds`` and every viewer's ``getStats()`` is sampled once a second:

* ``clean``: nothing is shaped (the reference);
* ``uplink-loss``: participant A's uplink loses ``--loss`` of its packets at random
  (bench/netshape.py ``drop_uplink``);
* ``downlink-limit``: participant C's downlink is limited to ``--kbit`` kbit/s
  (bench/netshape.py ``limit_downlink``);
* ``thumbnails`` (needs ``--simulcast``): nothing is shaped; each round first records a
  reference window with every tile large (the top layers forwarded), then makes every
  tile ``--thumbnail`` px high and, once every viewer receives every camera at that
  height or less, records the window. Per viewer the report compares the video it
  received with the sum of the other publishers' top-layer bitrates (their
  outbound-rtp of the top RID in the reference window) and its whole downlink (the
  sub PeerConnection's transport) with the reference window's.

Pages publish one camera encoding (``?simulcast=0``) unless ``--simulcast``
(``?simulcast=1``: the layers of web/js/media.js, three from a 960×540 camera up, so the
camera is then 960×540 unless ``--camera`` says otherwise: four Chromiums sending
1280×720 in three layers and decoding three each overloaded two cores until their
PeerConnections failed, measured). Every tile's ``<video>`` is
hidden (nothing painted) but given an explicit size, because its rendered height is what
the page asks the SFU for (``sfu-video-constraints``, docs/SFU.md "Browsers"): as tall as
the camera (the top layer) in every case but ``thumbnails``'s window.

Per (viewer ← sender) the report gives frames decoded, the median of the per-second
frame rates, freezes (W3C webrtc-stats ``freezeCount``/``totalFreezesDuration``),
packets lost / received, the received bitrate and the frame height; per viewer which
tiles the page shows as paused; and the difference of the SFU's counters
(``Sfu.counters.snapshot()``) over the window; per publisher what each simulcast layer
sent; for ``downlink-limit`` also the window without its first ``--onset`` seconds; with
``--in-process``, what the SFU believed of each subscriber once a second (its downlink
estimate, whether its link counted as congested, the layer it forwarded of each sender:
``sfu_view``). A page that lost its media and joined again is named in the report
(its figures across that are void). A markdown table goes to stdout, all of it as JSON
to ``--json``.

Shaping ``lo`` needs a network namespace of its own: outside one, the command runs
itself again under ``unshare -n`` with loopback up (as ./dev test does).

The helpers (serving, opening and joining browsers, sampling, windows) are what
tests/test_links_browser.py drives its calls with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.netshape import (
    Shaping,
    drop_uplink,
    in_private_net,
    limit_downlink,
    local_ports_by_pc,
)

# The browser flags, the camera and the shapers are the tests' own: the numbers this
# command reports and the tests' assertions come from the same calls.
from peers.browser import CHROMIUM, CHROMIUM_ARGS
from peers.fakecam import MOVING_FPS, write_moving_y4m

log = logging.getLogger(__name__)

ROOM = "links"
PASSWORD = "a bad link is not a reason to lose the call"
NAMES = "ABCDEFGH"
CASES = ("clean", "uplink-loss", "downlink-limit", "thumbnails")
NETNS_ENV = "SEALROOM_LINKS_NETNS"
"""Set in the re-executed command: never re-execute twice."""

Launch = Callable[..., Awaitable[Any]]
"""``ctx = await launch(extra_args=[...])``: a fresh Chromium profile (a Playwright
BrowserContext); tests pass their ``chromium`` fixture, the command its own."""


# --------------------------------------------------------------------------- server


class Loopback:
    """A server listening on 127.0.0.1:``port``: its HTTP and WebSocket addresses."""

    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Served(Loopback):
    """A server built the way ``sealroom serve`` builds it, listening on 127.0.0.1."""

    server: Any
    sfu: Any
    runner: Any
    port: int

    def counters(self) -> dict[str, int]:
        """The SFU's counters now (sfu/stats.py)."""
        snap: dict[str, int] = self.sfu.counters.snapshot()
        return dict(snap)


@contextlib.asynccontextmanager
async def serve(*flags: str) -> AsyncIterator[Served]:
    """``sealroom serve`` in this process: same parser, same config functions, SFU
    included (as tests/test_call_browser.py ``serve``)."""
    from aiohttp import web

    from sealroom.cli import build_parser, config_from_args, sfu_config_from_args
    from sealroom.metrics import Metrics
    from sfu import Sfu
    from signaling.server import SignalingServer

    args = build_parser().parse_args(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--media-host", "127.0.0.1", *flags]
    )
    sfu = Sfu(sfu_config_from_args(args))
    server = SignalingServer(config_from_args(args), sfu, metrics=Metrics)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Served(server, sfu, runner, runner.addresses[0][1])
    finally:
        await runner.cleanup()
        await sfu.close()


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """after − before, for every counter that moved."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    return {k: v for k, v in sorted(out.items()) if v}


# ---------------------------------------------------------------------- participants


@dataclass
class Participant:
    """One browser in the call."""

    name: str
    seed: int
    page: Any
    id: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


async def open_participant(
    launch: Launch, tmp: Path, seed: int, name: str, camera_seconds: float = 4.0,
    camera: tuple[int, int] = (640, 480), camera_fps: int = MOVING_FPS,
) -> Participant:
    """A fresh Chromium whose camera is a moving, noisy clip of pattern `seed`, size
    `camera` (width, height) and `camera_fps` frames a second, with its sound muted
    (``--mute-audio``: two cores play nobody's audio; it is still received and
    decoded)."""
    width, height = camera
    cam = await asyncio.to_thread(
        write_moving_y4m, tmp / f"moving-{seed}-{width}x{height}-{camera_fps}.y4m", seed,
        width, height, camera_fps, camera_seconds,
    )
    ctx = await launch(extra_args=[f"--use-file-for-fake-video-capture={cam}", "--mute-audio"])
    page = await ctx.new_page()
    p = Participant(name, seed, page)
    page.on("pageerror", lambda e: p.errors.append(str(e)))
    page.on("console", lambda m: p.console.append(f"{m.type}: {m.text}"))
    page.set_default_timeout(30_000)
    return p


HIDE_VIDEO = "video { visibility: hidden !important; }"
"""Two cores cannot paint N browsers' grids: the tiles' <video> elements are hidden, so
no frame is composited. Decoding goes on (the page's MediaStreams stay attached to the
elements; framesDecoded is what the report counts). A hidden element keeps its layout
box, so tiles.js still measures it and the page still tells the SFU its height: see
``set_tiles``."""

TILES_JS = """(h) => {
  let style = document.getElementById('links-tiles');
  if (!style) {
    style = document.createElement('style');
    style.id = 'links-tiles';
    document.head.append(style);
  }
  style.textContent = h === null ? '' : `.tile video { height: ${h}px !important;`
    + ` width: ${Math.round((h * 16) / 9)}px !important; }`;
  return [...document.querySelectorAll('.tile:not(.self) video')].map((v) => v.clientHeight);
}"""


async def set_tiles(p: Participant, height: int | None) -> None:
    """Give every tile's (hidden) ``<video>`` a layout box `height` px high and 16:9 wide,
    whatever the grid would give it (None: the grid's own size again).

    Why: tiles.js reports each remote tile's rendered height, in device pixels, to the SFU
    (``sfu-video-constraints``), and the SFU forwards no simulcast layer taller than that
    (docs/SFU.md "Simulcast"). The grid's own tiles depend on the window and on how many
    people are in the call (a 2 × 2 grid in Playwright's 1280×720 window: ~350 lines
    after ``object-fit: cover``), so a case says what it means. With a 16:9 box the
    shown height is `height` for any 16:9 or 4:3 picture (tiles.js ``#measure``: the
    larger of the box's height and width × the picture's aspect). The element stays
    ``visibility: hidden``: its box takes part in layout, nothing is painted; the tile
    clips it (``overflow: hidden``)."""
    got = await p.page.evaluate(TILES_JS, height)
    if height is not None:
        assert all(h == height for h in got), f"{p.name}'s tiles are {got} px, not {height}"


async def join(p: Participant, url: str, room: str = ROOM, password: str = PASSWORD,
               simulcast: bool = False, tile_height: int | None = None) -> None:
    """Open the room link, join through the form, wait for the room view; hide videos
    and, with `tile_height`, give every tile that height (``set_tiles``).

    ``?simulcast=0`` (the default): each page publishes one camera encoding (docs/SFU.md
    "Browsers"); the uplink-loss and downlink-limit figures without ``--simulcast``
    (BENCHMARKS.md) measure what one full-rate camera per publisher does to a link.
    ``simulcast``: ``?simulcast=1``, the page's layers (as many as the camera's size
    allows)."""
    await p.page.goto(f"{url}/r/{room}?simulcast={int(simulcast)}")
    await p.page.fill("#password", password)
    await p.page.fill("#name", p.name)
    await p.page.click("#join")
    await p.page.wait_for_selector("#room-view:not([hidden])")
    await p.page.add_style_tag(content=HIDE_VIDEO)
    hidden = await p.page.evaluate(
        "getComputedStyle(document.querySelector('video')).visibility")
    assert hidden == "hidden", f"{p.name}'s videos are still painted ({hidden})"
    if tile_height is not None:
        await set_tiles(p, tile_height)
    for _ in range(40):  # bounded: the id comes with the server's `joined`
        snap = await snapshot(p)
        if snap.get("id"):
            p.id = str(snap["id"])
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{p.name} joined but the page has no id: {snap}")


async def snapshot(p: Participant) -> dict[str, Any]:
    """The page's ``window.sealroom.snapshot()`` (web/js/app.js)."""
    snap: dict[str, Any] = await p.page.evaluate("window.sealroom.snapshot()")
    return snap


# --------------------------------------------------------------------------- samples

STATS_JS = """async () => {
  const media = window.sealroom.call?.media;
  if (!media) return null;
  const { pub, sub } = await media.stats();
  const owner = new Map();  // track id or MID → publisher id
  for (const t of media.sub?.getTransceivers() ?? []) {
    const info = media.active.get(t.mid) ?? media.tracks.get(t.mid);
    if (!info || info.kind !== 'video') continue;
    owner.set(`mid:${t.mid}`, info.participant);
    if (t.receiver.track) owner.set(`track:${t.receiver.track.id}`, info.participant);
  }
  const inbound = {};
  sub?.forEach((r) => {
    if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
    const who = owner.get(`mid:${r.mid}`) ?? owner.get(`track:${r.trackIdentifier}`);
    if (!who) return;
    inbound[who] = {
      framesDecoded: r.framesDecoded ?? 0, framesReceived: r.framesReceived ?? 0,
      framesDropped: r.framesDropped ?? 0, keyFramesDecoded: r.keyFramesDecoded ?? 0,
      packetsLost: r.packetsLost ?? 0, packetsReceived: r.packetsReceived ?? 0,
      bytesReceived: r.bytesReceived ?? 0, freezeCount: r.freezeCount ?? 0,
      totalFreezesDuration: r.totalFreezesDuration ?? 0, frameHeight: r.frameHeight ?? 0,
      nackCount: r.nackCount ?? 0, pliCount: r.pliCount ?? 0, firCount: r.firCount ?? 0,
      jitterBufferDelay: r.jitterBufferDelay ?? 0,
      jitterBufferEmittedCount: r.jitterBufferEmittedCount ?? 0, timestamp: r.timestamp,
    };
  });
  // The camera's encodings (one, or a simulcast layer per RID): each on its own, and
  // summed (frameHeight: the tallest; the reason: the top layer's).
  let outbound = null;
  const layers = {};
  pub?.forEach((r) => {
    if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
    const one = {
      bytesSent: r.bytesSent ?? 0, packetsSent: r.packetsSent ?? 0,
      retransmittedPacketsSent: r.retransmittedPacketsSent ?? 0,
      nackCount: r.nackCount ?? 0, pliCount: r.pliCount ?? 0,
      framesEncoded: r.framesEncoded ?? 0, keyFramesEncoded: r.keyFramesEncoded ?? 0,
      frameHeight: r.frameHeight ?? 0, targetBitrate: r.targetBitrate ?? 0,
      qualityLimitationReason: r.qualityLimitationReason ?? null,
      active: r.active ?? null, timestamp: r.timestamp,
    };
    if (r.rid) layers[r.rid] = one;
    if (outbound === null) { outbound = { ...one }; return; }
    for (const k of ['bytesSent', 'packetsSent', 'retransmittedPacketsSent', 'nackCount',
                     'pliCount', 'framesEncoded', 'keyFramesEncoded', 'targetBitrate'])
      outbound[k] += one[k];
    if (one.frameHeight >= outbound.frameHeight) {
      outbound.frameHeight = one.frameHeight;
      outbound.qualityLimitationReason = one.qualityLimitationReason;
    }
  });
  let available = null;
  let downlink = null;  // the sub PC's whole downlink: bytes of every packet received
  sub?.forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded')
      available = r.availableIncomingBitrate ?? null;
    // RTCTransportStats.bytesReceived (W3C webrtc-stats): one BUNDLE transport per PC
    if (r.type === 'transport')
      downlink = { bytesReceived: r.bytesReceived ?? 0, timestamp: r.timestamp };
  });
  const paused = {};
  for (const t of window.sealroom.snapshot().tiles) {
    if (t.id !== 'self') paused[t.id] = t.paused ?? null;
  }
  return { inbound, outbound, layers, paused, available, downlink };
}"""


@dataclass
class Sample:
    """One viewer's stats at one instant (``t``: seconds on the monotonic clock)."""

    t: float
    inbound: dict[str, dict[str, float]]
    outbound: dict[str, Any] | None
    paused: dict[str, str | None]
    available_incoming: float | None = None
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The own camera's outbound-rtp per RID (simulcast; empty for one encoding)."""
    downlink: dict[str, float] | None = None
    """The sub PC's transport: ``bytesReceived`` (every packet, headers, audio, RTCP,
    padding), ``timestamp``."""


async def sample(p: Participant) -> Sample:
    """The viewer's inbound video per publisher id, its own outbound video, and the tiles
    its page shows as paused (snapshot field ``paused``; None where absent)."""
    got = await p.page.evaluate(STATS_JS)
    t = time.monotonic()
    if got is None:
        return Sample(t, {}, None, {})
    return Sample(t, got["inbound"], got["outbound"], got["paused"], got.get("available"),
                  got.get("layers") or {}, got.get("downlink"))


async def sample_all(parts: Sequence[Participant]) -> dict[str, Sample]:
    """Every participant's sample, taken together."""
    got = await asyncio.gather(*(sample(p) for p in parts))
    return {p.name: s for p, s in zip(parts, got, strict=True)}


@dataclass
class PairWindow:
    """What a viewer received from one sender between two samples."""

    viewer: str
    sender: str
    seconds: float
    frames_decoded: int
    median_fps: float
    min_fps: float
    freezes: int
    freeze_seconds: float
    packets_lost: int
    packets_received: int
    kbit: float
    frame_height: int
    nacks: int
    plis: int
    paused: str | None
    min_height: int = 0
    """The lowest frameHeight sampled in the window (0 only if nothing was)."""
    max_height: int = 0
    """The tallest frameHeight sampled in the window."""

    @property
    def loss(self) -> float:
        total = self.packets_lost + self.packets_received
        return self.packets_lost / total if total > 0 else 0.0


def pair_window(
    samples: Sequence[dict[str, Sample]], viewer: str, sender: str, sender_id: str,
    start: int = 0, end: int | None = None,
) -> PairWindow:
    """The viewer ← sender figures over ``samples[start:end]`` (one dict of samples per
    second). Frame rates are per interval between consecutive samples; a missing inbound
    stream counts as nothing received."""
    window = list(samples[start:end])
    if len(window) < 2:
        raise ValueError("a window needs at least two samples")

    def get(s: dict[str, Sample], key: str) -> float:
        return float(s[viewer].inbound.get(sender_id, {}).get(key, 0))

    def when(s: dict[str, Sample]) -> float:
        # The stats' own time (W3C webrtc-stats RTCStats.timestamp, ms): on a busy machine
        # page.evaluate returns a variable while after getStats() took its snapshot.
        stamp = get(s, "timestamp")
        return stamp / 1000 if stamp > 0 else s[viewer].t

    first, last = window[0], window[-1]
    dt = when(last) - when(first) if get(first, "timestamp") > 0 else \
        last[viewer].t - first[viewer].t
    rates = []
    for a, b in itertools.pairwise(window):
        both = get(a, "timestamp") > 0 and get(b, "timestamp") > 0
        span = when(b) - when(a) if both else b[viewer].t - a[viewer].t
        if span > 0:
            rates.append((get(b, "framesDecoded") - get(a, "framesDecoded")) / span)
    diff = {k: get(last, k) - get(first, k) for k in (
        "framesDecoded", "freezeCount", "totalFreezesDuration", "packetsLost",
        "packetsReceived", "bytesReceived", "nackCount", "pliCount")}
    return PairWindow(
        viewer=viewer, sender=sender, seconds=round(dt, 2),
        frames_decoded=int(diff["framesDecoded"]),
        median_fps=round(statistics.median(rates), 1) if rates else 0.0,
        min_fps=round(min(rates), 1) if rates else 0.0,
        freezes=int(diff["freezeCount"]), freeze_seconds=round(diff["totalFreezesDuration"], 2),
        packets_lost=int(diff["packetsLost"]), packets_received=int(diff["packetsReceived"]),
        kbit=round(diff["bytesReceived"] * 8 / dt / 1000, 1) if dt > 0 else 0.0,
        frame_height=int(get(last, "frameHeight")),
        nacks=int(diff["nackCount"]), plis=int(diff["pliCount"]),
        paused=last[viewer].paused.get(sender_id),
        min_height=int(min((h for s in window if (h := get(s, "frameHeight")) > 0),
                           default=0)),
        max_height=int(max(get(s, "frameHeight") for s in window)),
    )


def windows(
    samples: Sequence[dict[str, Sample]], parts: Sequence[Participant],
    start: int = 0, end: int | None = None,
) -> list[PairWindow]:
    """pair_window for every viewer ← sender pair."""
    return [pair_window(samples, v.name, s.name, s.id, start, end)
            for v in parts for s in parts if s is not v]


async def record(
    parts: Sequence[Participant], seconds: float, interval: float = 1.0,
    until: Callable[[list[dict[str, Sample]]], bool] | None = None,
) -> list[dict[str, Sample]]:
    """Sample everyone every `interval` seconds for `seconds` (bounded by count), or
    until `until(samples)` holds."""
    out: list[dict[str, Sample]] = []
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / interval) + 2):
        out.append(await sample_all(parts))
        if (until is not None and until(out)) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    return out


async def everyone_receives(
    parts: Sequence[Participant], seconds: float = 60, fps: float = 5, strict: bool = True
) -> list[dict[str, Sample]]:
    """Wait (bounded) until every viewer decodes every other participant at `fps` or more
    over the last two seconds; the samples. When that never happens: AssertionError with
    what each viewer gets (`strict`, the tests), or a warning (the command, which then
    measures and reports the call as it is)."""
    def ok(samples: list[dict[str, Sample]]) -> bool:
        if len(samples) < 3:
            return False
        return all(w.median_fps >= fps and w.min_fps > 0
                   for w in windows(samples, parts, start=-3))

    samples = await record(parts, seconds, until=ok)
    if not ok(samples):
        last = windows(samples, parts, start=-3) if len(samples) >= 3 else []
        message = (f"not everyone receives everyone after {seconds} s: {describe(last)}")
        if strict:
            raise AssertionError(
                message + "\n" + "\n".join(f"{p.name}: {p.console[-10:]}" for p in parts))
        log.warning("%s", message)
    return samples


async def read_ports(parts: Sequence[Participant]) -> None:
    """Fill each participant's ``ports`` ({"pub": …, "sub": …}, bench/netshape.py)."""
    for p in parts:
        p.ports = await local_ports_by_pc(p.page)


# ----------------------------------------------------------------------------- cases


@contextlib.contextmanager
def apply_case(
    case: str, parts: Sequence[Participant], loss: float, kbit: int
) -> Iterator[tuple[str | None, Shaping | None]]:
    """Shape the link the case names: (whose link, the shaping), or (None, None)."""
    if case in ("clean", "thumbnails"):
        yield None, None
    elif case == "uplink-loss":
        target = parts[0]
        with drop_uplink(target.ports.values(), loss) as shaping:
            yield target.name, shaping
    elif case == "downlink-limit":
        target = parts[2 if len(parts) > 2 else -1]
        with limit_downlink(target.ports.values(), kbit) as shaping:
            yield target.name, shaping
    else:
        raise ValueError(f"unknown case {case!r}")


@dataclass
class Options:
    case: str = "clean"
    seconds: float = 60
    rounds: int = 2
    participants: int = 4
    loss: float = 0.03
    kbit: int = 1500
    settle: float = 15
    json: str | None = None
    in_process: bool = False
    simulcast: bool = False
    camera: tuple[int, int] = (640, 480)
    camera_fps: int = MOVING_FPS
    thumbnail: int = 180
    reference: float = 20
    onset: float = 15
    bwe: str = "remb"  # the server's --bwe: each subscriber's downlink estimate

    @property
    def large(self) -> int:
        """The tiles' height outside ``thumbnails``'s window: the camera's (top layer)."""
        return self.camera[1]


@dataclass
class Round:
    round: int
    case: str
    target: str | None
    ports: dict[str, dict[str, int]]
    ready_at_start: bool
    """Everyone decoded everyone (≥ 5 fps) in the two seconds before the case began."""
    shaper: dict[str, Any] | None
    pairs: list[dict[str, Any]]
    paused: dict[str, dict[str, str | None]]
    sfu: dict[str, int]
    publishers: dict[str, dict[str, Any]]
    tile_height: int = 0
    """The tiles' height (px) in the window."""
    viewers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per viewer: video received, its whole downlink; for ``thumbnails`` also the
    reference window's and the ratios (``thumbnail_ratios``)."""
    reference: list[dict[str, Any]] | None = None
    """``thumbnails``: the pairs of the reference window (large tiles)."""
    sfu_view: dict[str, dict[str, Any]] | None = None
    """``--in-process``: per subscriber, what the SFU believed over the window
    (``summarize_view``)."""
    rejoined: list[str] = field(default_factory=list)
    """Participants whose page had a new id at the end of the window: it lost its media
    and joined again (web/js/call.js), so its counters over the window mean nothing."""
    rejoined_before: list[str] = field(default_factory=list)
    """Participants that had joined again since the previous window (or the call's
    start); the window measures their new session."""
    settled: list[dict[str, Any]] | None = None
    """``downlink-limit``: the pairs of the window without its first ``onset`` seconds
    (the seconds before the SFU saw the link congested and it had drained)."""
    onset: float = 0
    settled_shaper: dict[str, Any] | None = None
    """``downlink-limit``: the shaper's counters over ``settled``'s span: what the
    link itself dropped (media, padding and RTCP alike) once the onset was over."""


async def _stats_after(seconds: float, shaping: Any) -> Any:
    await asyncio.sleep(seconds)
    return shaping.stats()


async def launcher(stack: contextlib.AsyncExitStack, tmp: Path) -> Launch:
    """Chromium contexts for the command (the tests use their ``chromium`` fixture)."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: ./dev setup installs it")
    pw = await stack.enter_async_context(async_playwright())
    count = 0

    async def launch(extra_args: list[str] | None = None, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp / f"profile-{count}"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS + (extra_args or []), **kwargs,
        )
        stack.push_async_callback(ctx.close)
        return ctx

    return launch


class ServedProcess:
    """``sealroom serve`` as its own process, read through its ``/metrics``.

    The command's default: in one process with Playwright, the SFU's loop also parses
    every getStats answer of every page, and on two cores a four-browser call then
    measured the harness as much as the SFU.
    """

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def counters(self) -> dict[str, int]:
        """The SFU's counters, from the Prometheus text (sealroom/metrics.py names)."""
        import urllib.request

        from sealroom.metrics import PREFIX, SFU_COUNTERS

        names = {PREFIX + metric + "_total": key for key, (metric, _) in SFU_COUNTERS.items()}
        with urllib.request.urlopen(f"{self.http}/metrics", timeout=10) as r:  # loopback
            text = r.read().decode()
        out: dict[str, int] = {}
        dropped = PREFIX + 'sfu_dropped_packets_total{reason="'
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            if name in names:
                out[names[name]] = int(float(value))
            elif name.startswith(dropped):
                out["drop_" + name[len(dropped):-2]] = int(float(value))
        return out


@contextlib.asynccontextmanager
async def serve_process(*flags: str) -> AsyncIterator[ServedProcess]:
    """``sealroom serve`` on a free loopback port, stopped (SIGTERM, then SIGKILL) after."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-c", "from sealroom.cli import main; raise SystemExit(main())",
           "serve", "--host", "127.0.0.1", "--port", str(port), "--media-host", "127.0.0.1",
           *flags]
    # SEALROOM_LINKS_SERVER_LOG=path keeps the server's log (debugging a run)
    log_path = os.environ.get("SEALROOM_LINKS_SERVER_LOG")
    log: Any = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        for _ in range(100):  # 10 s at most
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"sealroom serve exited with {proc.returncode}") from None
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError("sealroom serve did not answer /healthz within 10 s")
        yield ServedProcess(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if log is not subprocess.DEVNULL:
            log.close()


@contextlib.asynccontextmanager
async def call(launch: Launch, tmp: Path, n: int, *flags: str, strict: bool = True,
               process: bool = False, simulcast: bool = False,
               camera: tuple[int, int] = (640, 480), tile_height: int | None = None,
               camera_seconds: float = 4.0, camera_fps: int = MOVING_FPS,
               ) -> AsyncIterator[tuple[Any, list[Participant]]]:
    """A server and `n` joined participants (A, B, C, …) who all decode each other (or,
    not `strict`, who had 60 s to). `process`: the server runs as its own process;
    `simulcast`, `camera` (width, height), `tile_height`: see ``join`` and
    ``open_participant``."""
    server = serve_process(*flags) if process else serve(*flags)
    async with server as srv:
        parts = [await open_participant(launch, tmp, seed, NAMES[seed - 1], camera_seconds,
                                        camera, camera_fps)
                 for seed in range(1, n + 1)]
        for p in parts:
            await join(p, srv.http, simulcast=simulcast, tile_height=tile_height)
        await everyone_receives(parts, strict=strict)
        await read_ports(parts)
        yield srv, parts


def sfu_view(srv: Any, parts: Sequence[Participant]) -> dict[str, dict[str, Any]] | None:
    """What the SFU thinks of each subscriber now, when it runs in this process
    (``--in-process``; None otherwise): its downlink estimate (kbit/s, the REMB it
    believes, sfu/allocator.py ``DownlinkBudget.known``), whether its link counts as
    congested (loss), and the RID it forwards of each sender's video (None: one
    encoding, or nothing; "paused" when paused for bandwidth)."""
    sfu = getattr(srv, "sfu", None)
    if sfu is None:
        return None
    names = {p.id: p.name for p in parts}
    now = time.monotonic()
    out: dict[str, dict[str, Any]] = {}
    for pid, part in list(sfu.participants.items()):
        if pid not in names:
            continue
        estimate = part.budget.known(now)
        layers: dict[str, str | None] = {}
        for slot in part.slots:
            if slot.kind != "video" or slot.track is None or slot.publisher not in names:
                continue
            source = getattr(slot, "source", None)
            layers[names[slot.publisher]] = ("paused" if not slot.fits
                                             else getattr(source, "rid", None))
        out[names[pid]] = {
            "estimate_kbit": None if estimate is None else round(estimate / 1000),
            "congested": part.budget.congested(now), "layers": layers,
        }
    return out


async def watch_sfu(srv: Any, parts: Sequence[Participant], seconds: float,
                    into: list[dict[str, dict[str, Any]]]) -> None:
    """``sfu_view`` once a second into `into`, for `seconds` at most (bounded)."""
    for _ in range(int(seconds) + 1):
        view = sfu_view(srv, parts)
        if view is None:
            return
        into.append(view)
        await asyncio.sleep(1)


def summarize_view(views: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per subscriber over a window of ``sfu_view``s: the estimate's min / median / max
    (kbit/s), the seconds its link counted as congested, and how often it was forwarded
    each RID of each sender (``{sender: {rid: seconds}}``)."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({n for v in views for n in v}):
        seen = [v[name] for v in views if name in v]
        est = [x["estimate_kbit"] for x in seen if x["estimate_kbit"] is not None]
        layers: dict[str, dict[str, int]] = {}
        for x in seen:
            for sender, rid in x["layers"].items():
                counts = layers.setdefault(sender, {})
                counts[str(rid)] = counts.get(str(rid), 0) + 1
        out[name] = {
            "estimate_kbit": [min(est), round(statistics.median(est)), max(est)] if est else None,
            "congested_s": sum(1 for x in seen if x["congested"]),
            "layers": layers,
        }
    return out


async def rejoins(parts: Sequence[Participant]) -> list[str]:
    """The participants whose page has another id than at its join (it lost its media
    and joined again); their ``id`` is updated (and their ports re-read by the caller's
    next ``read_ports``)."""
    out = []
    for p in parts:
        now = str((await snapshot(p)).get("id") or "")
        if now and now != p.id:
            out.append(p.name)
            p.id = now
    return out


async def tiles_everywhere(parts: Sequence[Participant], height: int | None) -> None:
    """``set_tiles`` on every page."""
    for p in parts:
        await set_tiles(p, height)


async def heights_reach(
    parts: Sequence[Participant], want: Callable[[int], bool], seconds: float = 30,
) -> list[dict[str, Sample]]:
    """Sample (bounded by `seconds`) until every viewer receives every other participant
    at a frameHeight for which `want` holds and decodes it (frames in the last second);
    the samples (the caller checks the last ones: this never raises)."""
    def ok(samples: list[dict[str, Sample]]) -> bool:
        if len(samples) < 2:
            return False
        last = windows(samples, parts, start=-2)
        return all(want(w.frame_height) and w.frames_decoded > 0 for w in last)

    return await record(parts, seconds, until=ok)


def viewer_downlinks(
    samples: Sequence[dict[str, Sample]], parts: Sequence[Participant],
    pairs: Sequence[PairWindow],
) -> dict[str, dict[str, Any]]:
    """Per viewer: the video it received (kbit/s, the sum over senders of inbound-rtp
    payload bytes) and its whole downlink (kbit/s, the sub PC's transport: every byte of
    every packet) over the samples."""
    out: dict[str, dict[str, Any]] = {}
    for p in parts:
        first, last = samples[0][p.name].downlink, samples[-1][p.name].downlink
        link = 0.0
        if first and last and last["timestamp"] > first["timestamp"]:
            link = ((last["bytesReceived"] - first["bytesReceived"]) * 8
                    / (last["timestamp"] - first["timestamp"]))  # bits/ms = kbit/s
        out[p.name] = {
            "video_kbit": round(sum(w.kbit for w in pairs if w.viewer == p.name), 1),
            "downlink_kbit": round(link, 1),
        }
    return out


def thumbnail_ratios(
    viewers: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]],
    publishers: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """``thumbnails``: each viewer's window figures with what forwarding the top layers
    would be. ``top_kbit``: the sum of the other publishers' top-layer bitrates (their
    outbound-rtp of the top RID, payload bytes, in the reference window), to compare
    with ``video_kbit`` (inbound-rtp payload bytes, the same measure); ``ref_downlink``:
    the viewer's whole downlink in the reference window (top layers forwarded)."""
    out: dict[str, dict[str, Any]] = {}
    for name, v in viewers.items():
        tops = [pub["top_kbit"] for who, pub in publishers.items() if who != name]
        top = round(sum(tops), 1)
        ref = reference[name]["downlink_kbit"]
        out[name] = v | {
            "top_kbit": top,
            "ref_video_kbit": reference[name]["video_kbit"],
            "ref_downlink_kbit": ref,
            "video_ratio": round(v["video_kbit"] / top, 3) if top > 0 else None,
            "downlink_ratio": round(v["downlink_kbit"] / ref, 3) if ref > 0 else None,
        }
    return out


async def measure(opts: Options, launch: Launch, tmp: Path) -> list[Round]:
    rounds: list[Round] = []
    thumbs = opts.case == "thumbnails"
    async with call(launch, tmp, opts.participants, "--bwe", opts.bwe, strict=False,
                    process=not opts.in_process, simulcast=opts.simulcast,
                    camera=opts.camera, tile_height=opts.large,
                    camera_fps=opts.camera_fps) as (srv, parts):
        for r in range(1, opts.rounds + 1):
            if r > 1:
                if thumbs:
                    await tiles_everywhere(parts, opts.large)
                await asyncio.sleep(opts.settle)
            # A page that lost its media before the window joined again with a new id
            # and new PeerConnections: measure what it has now.
            early = await rejoins(parts)
            reference: list[dict[str, Sample]] | None = None
            if thumbs:
                # Large tiles: every camera on its top layer, then the reference window.
                await heights_reach(parts, lambda h: h >= opts.large, seconds=45)
                reference = await record(parts, opts.reference)
                await tiles_everywhere(parts, opts.thumbnail)
                await heights_reach(parts, lambda h: 0 < h <= opts.thumbnail, seconds=45)
            # Round 1: `call` waited for the call to come up (60 s at most). Later rounds:
            # the links were let go `settle` seconds ago; the window starts when everyone
            # decodes everyone again, or after 45 s more (the report says which).
            pre = await everyone_receives(parts, seconds=45 if r > 1 else 5, strict=False)
            ready = all(w.median_fps >= 5 and w.min_fps > 0
                        for w in windows(pre, parts, start=-3))
            await read_ports(parts)  # an ICE restart would move them
            before = srv.counters()
            with apply_case(opts.case, parts, opts.loss, opts.kbit) as (target, shaping):
                views: list[dict[str, dict[str, Any]]] = []
                watcher = asyncio.ensure_future(watch_sfu(srv, parts, opts.seconds, views))
                # the shaper's counters ``onset`` seconds into the window
                onset_task = (asyncio.ensure_future(_stats_after(opts.onset, shaping))
                              if shaping is not None and opts.case == "downlink-limit"
                              else None)
                try:
                    samples = await record(parts, opts.seconds)
                finally:
                    watcher.cancel()
                at_onset = None
                if onset_task is not None:
                    if onset_task.done() and not onset_task.cancelled():
                        at_onset = onset_task.result()
                    onset_task.cancel()
                shaper = shaping.stats() if shaping is not None else None
            after = srv.counters()
            rejoined = await rejoins(parts)
            pairs = windows(samples, parts)
            last = samples[-1]
            publishers = {p.name: _publisher(samples if reference is None else reference,
                                             p.name) for p in parts}
            viewers = viewer_downlinks(samples, parts, pairs)
            ref_pairs = settled = None
            if opts.case == "downlink-limit" and len(samples) > opts.onset + 2:
                settled = [asdict(w) | {"loss": round(w.loss, 4)}
                           for w in windows(samples, parts, start=int(opts.onset))]
            if reference is not None:
                ref_windows = windows(reference, parts)
                ref_pairs = [asdict(w) | {"loss": round(w.loss, 4)} for w in ref_windows]
                viewers = thumbnail_ratios(
                    viewers, viewer_downlinks(reference, parts, ref_windows), publishers)
            rounds.append(Round(
                round=r, case=opts.case, target=target,
                ports={p.name: dict(p.ports) for p in parts},
                ready_at_start=ready,
                shaper=asdict(shaper) if shaper is not None else None,
                settled_shaper=(asdict(shaper.minus(at_onset))
                                if shaper is not None and at_onset is not None
                                and settled is not None else None),
                pairs=[asdict(w) | {"loss": round(w.loss, 4)} for w in pairs],
                paused={p.name: {s.name: last[p.name].paused.get(s.id)
                                 for s in parts if s is not p} for p in parts},
                sfu=counter_delta(before, after),
                publishers=publishers,
                tile_height=opts.thumbnail if thumbs else opts.large,
                viewers=viewers,
                reference=ref_pairs,
                rejoined=rejoined,
                rejoined_before=early,
                sfu_view=summarize_view(views) if views else None,
                settled=settled,
                onset=opts.onset if settled is not None else 0,
            ))
    return rounds


def _publisher(samples: Sequence[dict[str, Sample]], name: str) -> dict[str, Any]:
    """What a participant's own publisher PC sent over the samples' span: the camera's
    encodings together, and per simulcast RID (``layers``: kbit/s, frame height, the
    encoder's frames per second); ``top_kbit``: the top layer's kbit/s, the encoding
    that carries the most bits (all of it for one encoding; its frameHeight can read 0
    or less than the camera's while Chromium's CPU adaptation drops or shrinks it).
    Payload bytes (outbound-rtp ``bytesSent``), as inbound-rtp's ``bytesReceived`` counts
    them."""
    first, last = samples[0][name].outbound or {}, samples[-1][name].outbound or {}
    dt = samples[-1][name].t - samples[0][name].t
    sent = last.get("bytesSent", 0) - first.get("bytesSent", 0)
    layers: dict[str, dict[str, Any]] = {}
    for rid, end in samples[-1][name].layers.items():
        start = samples[0][name].layers.get(rid, {})
        span = (end.get("timestamp", 0) - start.get("timestamp", 0)) / 1000
        if span <= 0:
            continue
        layers[rid] = {
            "kbit": round((end["bytesSent"] - start.get("bytesSent", 0)) * 8 / span / 1000, 1),
            "frame_height": end.get("frameHeight", 0),
            "fps": round((end["framesEncoded"] - start.get("framesEncoded", 0)) / span, 1),
            "quality_limitation": end.get("qualityLimitationReason"),
        }
    top = max(layers.values(), key=lambda x: x["kbit"], default=None)
    kbit = round(sent * 8 / dt / 1000, 1) if dt > 0 else 0.0
    return {
        "layers": layers,
        "top_kbit": top["kbit"] if top is not None else kbit,
        "kbit": kbit,
        "retransmitted": last.get("retransmittedPacketsSent", 0)
        - first.get("retransmittedPacketsSent", 0),
        "nacks_received": last.get("nackCount", 0) - first.get("nackCount", 0),
        "plis_received": last.get("pliCount", 0) - first.get("pliCount", 0),
        "frame_height": last.get("frameHeight", 0),
        "quality_limitation": last.get("qualityLimitationReason"),
    }


def describe(pairs: Sequence[PairWindow]) -> str:
    """One line per pair, for assertion messages and logs."""
    return "; ".join(
        f"{w.viewer}←{w.sender}: {w.frames_decoded} frames, {w.median_fps} fps (min"
        f" {w.min_fps}), {w.freezes} freezes {w.freeze_seconds} s, lost {w.packets_lost}/"
        f"{w.packets_received}, {w.kbit} kbit/s, {w.frame_height}p, paused {w.paused}"
        for w in pairs
    )


# ---------------------------------------------------------------------------- report

SFU_COUNTERS = (
    "upstream_nacks_sent", "upstream_nacked", "upstream_recovered", "upstream_late",
    "upstream_unrepaired", "rtx_received", "nack_misses", "keyframe_requests_upstream_loss",
    "bwe_pauses", "bwe_resumes", "probes_sent", "drop_rtx_budget",
    "simulcast_switches_up", "simulcast_switches_down", "keyframe_requests_layer_switch",
    "temporal_switches_up", "temporal_switches_down",
)


def pair_rows(pairs: Sequence[dict[str, Any]]) -> list[str]:
    """The per (viewer ← sender) table; height: the last frameHeight sampled, and the
    lowest in the window when it differs."""
    lines = ["| viewer ← sender | frames | median fps | freezes (s) | lost / received"
             " | loss | kbit/s | height | paused |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for w in pairs:
        low = w.get("min_height", 0)
        height = f"{w['frame_height']}" + (f" (≥ {low})" if low and low != w["frame_height"]
                                           else "")
        lines.append(
            f"| {w['viewer']} ← {w['sender']} | {w['frames_decoded']} | {w['median_fps']}"
            f" | {w['freezes']} ({w['freeze_seconds']}) | {w['packets_lost']} /"
            f" {w['packets_received']} | {100 * w.get('loss', 0):.1f} % | {w['kbit']}"
            f" | {height} | {w['paused'] or ''} |"
        )
    return lines


def table(rounds: Sequence[Round]) -> str:
    """The markdown table of the report."""
    lines = []
    for r in rounds:
        where = f" on {r.target}'s link" if r.target else ""
        shaper = ""
        if r.shaper:
            shaper = f"; shaper: {r.shaper['drops']} dropped"
        if not r.ready_at_start:
            shaper += " (not everyone decoded everyone when the window began)"
        if r.rejoined:
            shaper += f" (**{', '.join(r.rejoined)} lost media and rejoined**: void)"
        if r.rejoined_before:
            shaper += f" ({', '.join(r.rejoined_before)} had rejoined before the window)"
        tiles = f", tiles {r.tile_height} px" if r.tile_height else ""
        lines += [f"### {r.case}{where}, round {r.round}{tiles}{shaper}", ""]
        if r.reference is not None:
            lines += ["Reference window (tiles as tall as the camera):", "",
                      *pair_rows(r.reference), "", "The window:", ""]
        lines += pair_rows(r.pairs)
        if r.settled is not None:
            dropped = ""
            if r.settled_shaper:
                q = r.settled_shaper
                share = q["drops"] / max(1, q["packets"] + q["drops"])
                dropped = (f" (the shaper dropped {q['drops']} of {q['packets'] + q['drops']}"
                           f" packets, {share:.1%})")
            lines += ["", f"The same window without its first {r.onset:g} s{dropped}:", "",
                      *pair_rows(r.settled)]
        pubs = ", ".join(
            f"{k} {v['kbit']} kbit/s ({v['frame_height']}p, {v['retransmitted']} rtx"
            + "".join(f"; {rid} {x['kbit']} kbit/s {x['frame_height']}p {x['fps']} fps"
                      for rid, x in v.get("layers", {}).items())
            + ")" for k, v in r.publishers.items())
        sfu = ", ".join(f"{k} {r.sfu[k]}" for k in SFU_COUNTERS if k in r.sfu)
        lines += ["", f"publishers{' (reference window)' if r.reference else ''}: {pubs}",
                  f"SFU: {sfu or '(none of the loss/budget counters)'}"
                  f"; forwarded {r.sfu.get('forwarded_packets', 0)} packets", ""]
        if r.sfu_view:
            lines += ["| subscriber | SFU's estimate kbit/s (min / median / max) | congested s"
                      " | layers forwarded (seconds) |", "|---|---|---:|---|"]
            for name, v in r.sfu_view.items():
                est = v["estimate_kbit"]
                layers = "; ".join(
                    f"{sender}: " + ", ".join(f"{rid} {n}" for rid, n in sorted(counts.items()))
                    for sender, counts in sorted(v["layers"].items()))
                lines.append(f"| {name} | {' / '.join(map(str, est)) if est else '-'}"
                             f" | {v['congested_s']} | {layers} |")
            lines.append("")
        if r.viewers:
            ratios = r.reference is not None
            lines += ["| viewer | video received kbit/s | whole downlink kbit/s"
                      + (" | others' top layers kbit/s | video / top layers"
                         " | reference downlink kbit/s | downlink / reference |"
                         if ratios else " |"),
                      "|---|---:|---:" + ("|---:|---:|---:|---:|" if ratios else "|")]
            for name, v in r.viewers.items():
                row = f"| {name} | {v['video_kbit']} | {v['downlink_kbit']}"
                if ratios:
                    row += (f" | {v['top_kbit']} | {_pct(v['video_ratio'])}"
                            f" | {v['ref_downlink_kbit']} | {_pct(v['downlink_ratio'])}")
                lines.append(row + " |")
            lines.append("")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


# ------------------------------------------------------------------------------- CLI


def parse(argv: Sequence[str]) -> Options:
    ap = argparse.ArgumentParser(prog="python -m bench.links", description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=CASES, default="clean")
    ap.add_argument("--seconds", type=float, default=60, help="length of each window")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--participants", type=int, default=4)
    ap.add_argument("--loss", type=float, default=0.03, help="uplink-loss: share dropped")
    ap.add_argument("--kbit", type=int, default=1500, help="downlink-limit: kbit/s")
    ap.add_argument("--settle", type=float, default=15, help="pause between rounds, seconds")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--in-process", action="store_true",
                    help="run the server in this process (as the tests do), not its own")
    ap.add_argument("--simulcast", action="store_true",
                    help="pages publish simulcast layers (?simulcast=1), not one encoding")
    ap.add_argument("--camera", metavar="WxH",
                    help="fake camera size (default 640x480; with --simulcast 960x540, the"
                    " smallest from which Chromium sends three layers)")
    ap.add_argument("--camera-fps", type=int, default=MOVING_FPS,
                    help=f"fake camera frame rate (default {MOVING_FPS})")
    ap.add_argument("--thumbnail", type=int, default=180,
                    help="thumbnails: the tiles' height in the window, px")
    ap.add_argument("--reference", type=float, default=20,
                    help="thumbnails: the reference window with large tiles, seconds")
    ap.add_argument("--bwe", choices=("remb", "transport-cc"), default="remb",
                    help="the server's --bwe: each subscriber's downlink estimate from its "
                    "REMB or the SFU's own from transport-wide feedback")
    ap.add_argument("--onset", type=float, default=15,
                    help="downlink-limit: also report the window without its first seconds")
    a = ap.parse_args(argv)
    if not 2 <= a.participants <= len(NAMES):
        ap.error(f"--participants is 2…{len(NAMES)}")
    if a.case == "downlink-limit" and a.participants < 3:
        ap.error("downlink-limit shapes participant C: --participants 3 or more")
    if not 0 <= a.loss <= 1 or a.kbit < 8 or a.seconds < 2 or not 1 <= a.rounds <= 20:
        ap.error("--loss is 0…1, --kbit ≥ 8, --seconds ≥ 2, --rounds 1…20")
    camera = a.camera or ("960x540" if a.simulcast else "640x480")
    try:
        width, height = (int(x) for x in camera.lower().split("x"))
    except ValueError:
        ap.error(f"--camera {camera!r} is not WxH")
    if not (64 <= width <= 3840 and 64 <= height <= 2160 and width % 2 == 0
            and height % 2 == 0):
        ap.error("--camera is 64x64…3840x2160, even sizes (4:2:0)")
    if not 1 <= a.camera_fps <= 60:
        ap.error("--camera-fps is 1…60")
    if a.case == "thumbnails" and not a.simulcast:
        ap.error("thumbnails compares simulcast layers: add --simulcast")
    if not 16 <= a.thumbnail < height or a.reference < 2 or a.onset < 0:
        ap.error("--thumbnail is 16 px … below the camera's height, --reference ≥ 2,"
                 " --onset ≥ 0")
    return Options(a.case, a.seconds, a.rounds, a.participants, a.loss, a.kbit, a.settle,
                   a.json, a.in_process, a.simulcast, (width, height), a.camera_fps,
                   a.thumbnail, a.reference, a.onset, a.bwe)


def reexec_in_private_net(argv: Sequence[str]) -> int | None:
    """Run this command again in a network namespace of its own with lo up (as ./dev's
    in_private_net: ``unshare -n``, or ``unshare -rn`` for a user); None if already in
    one. The exit code of the child otherwise."""
    if in_private_net() or os.environ.get(NETNS_ENV):
        return None
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SystemExit("unshare (util-linux) is needed to shape loopback privately")
    inner = [sys.executable, "-m", "bench.links", *argv]
    env = dict(os.environ, **{NETNS_ENV: "1"})
    for flags in ("-n", "-rn"):
        if subprocess.run([unshare, flags, "true"], capture_output=True, check=False
                          ).returncode == 0:
            cmd = [unshare, flags, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "_",
                   *inner]
            return subprocess.run(cmd, env=env, check=False).returncode
    raise SystemExit("cannot create a network namespace (need root or user namespaces)")


async def run(opts: Options, command: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sealroom-links-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            launch = await launcher(stack, Path(tmp))
            started = time.time()
            rounds = await measure(opts, launch, Path(tmp))
    return {
        "command": command,
        "options": asdict(opts),
        "started": started,
        "chromium": _chromium_version(),
        "cpus": os.cpu_count(),
        "rounds": [asdict(r) for r in rounds],
    }


def _chromium_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
    return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    opts = parse(args)
    code = reexec_in_private_net(args)
    if code is not None:
        return code
    command = shlex.join(["python", "-m", "bench.links", *args])
    report = asyncio.run(run(opts, command))
    rounds = [Round(**r) for r in report["rounds"]]
    print(f"`{command}` ({report['chromium']}, {report['cpus']} CPUs)\n")
    print(table(rounds))
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
