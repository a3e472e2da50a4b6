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
  (bench/netshape.py ``limit_downlink``).

Per (viewer ← sender) the report gives frames decoded, the median of the per-second
frame rates, freezes (W3C webrtc-stats ``freezeCount``/``totalFreezesDuration``),
packets lost / received, the received bitrate and the frame height; per viewer which
tiles the page shows as paused; and the difference of the SFU's counters
(``Sfu.counters.snapshot()``) over the window. A markdown table goes to stdout, all of
it as JSON to ``--json``.

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
from peers.fakecam import write_moving_y4m

log = logging.getLogger(__name__)

ROOM = "links"
PASSWORD = "a bad link is not a reason to lose the call"
NAMES = "ABCDEFGH"
CASES = ("clean", "uplink-loss", "downlink-limit")
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
    launch: Launch, tmp: Path, seed: int, name: str, camera_seconds: float = 4.0
) -> Participant:
    """A fresh Chromium whose camera is a moving, noisy clip of pattern `seed`, with its
    sound muted (``--mute-audio``: two cores play nobody's audio; it is still received
    and decoded)."""
    cam = await asyncio.to_thread(
        write_moving_y4m, tmp / f"moving-{seed}.y4m", seed, seconds=camera_seconds
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
elements; framesDecoded is what the report counts)."""


async def join(p: Participant, url: str, room: str = ROOM, password: str = PASSWORD) -> None:
    """Open the room link, join through the form, wait for the room view; hide videos.

    ``?simulcast=0``: each page publishes one camera encoding (docs/SFU.md "Browsers").
    These cases and their figures (BENCHMARKS.md) measure what one full-rate camera per
    publisher does to a link; with simulcast the SFU forwards each small tile a small
    layer (240 lines at ~360 kbit/s here, measured) and a downlink limit sized for one
    full camera never bites."""
    await p.page.goto(f"{url}/r/{room}?simulcast=0")
    await p.page.fill("#password", password)
    await p.page.fill("#name", p.name)
    await p.page.click("#join")
    await p.page.wait_for_selector("#room-view:not([hidden])")
    await p.page.add_style_tag(content=HIDE_VIDEO)
    hidden = await p.page.evaluate(
        "getComputedStyle(document.querySelector('video')).visibility")
    assert hidden == "hidden", f"{p.name}'s videos are still painted ({hidden})"
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
  let outbound = null;
  pub?.forEach((r) => {
    if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
    outbound = {
      bytesSent: r.bytesSent ?? 0, packetsSent: r.packetsSent ?? 0,
      retransmittedPacketsSent: r.retransmittedPacketsSent ?? 0,
      nackCount: r.nackCount ?? 0, pliCount: r.pliCount ?? 0,
      framesEncoded: r.framesEncoded ?? 0, keyFramesEncoded: r.keyFramesEncoded ?? 0,
      frameHeight: r.frameHeight ?? 0, targetBitrate: r.targetBitrate ?? 0,
      qualityLimitationReason: r.qualityLimitationReason ?? null,
    };
  });
  let available = null;
  sub?.forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded')
      available = r.availableIncomingBitrate ?? null;
  });
  const paused = {};
  for (const t of window.sealroom.snapshot().tiles) {
    if (t.id !== 'self') paused[t.id] = t.paused ?? null;
  }
  return { inbound, outbound, paused, available };
}"""


@dataclass
class Sample:
    """One viewer's stats at one instant (``t``: seconds on the monotonic clock)."""

    t: float
    inbound: dict[str, dict[str, float]]
    outbound: dict[str, Any] | None
    paused: dict[str, str | None]
    available_incoming: float | None = None


async def sample(p: Participant) -> Sample:
    """The viewer's inbound video per publisher id, its own outbound video, and the tiles
    its page shows as paused (snapshot field ``paused``; None where absent)."""
    got = await p.page.evaluate(STATS_JS)
    t = time.monotonic()
    if got is None:
        return Sample(t, {}, None, {})
    return Sample(t, got["inbound"], got["outbound"], got["paused"], got.get("available"))


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
    if case == "clean":
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
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


@contextlib.asynccontextmanager
async def call(launch: Launch, tmp: Path, n: int, *flags: str, strict: bool = True,
               process: bool = False) -> AsyncIterator[tuple[Any, list[Participant]]]:
    """A server and `n` joined participants (A, B, C, …) who all decode each other (or,
    not `strict`, who had 60 s to). `process`: the server runs as its own process."""
    server = serve_process(*flags) if process else serve(*flags)
    async with server as srv:
        parts = [await open_participant(launch, tmp, seed, NAMES[seed - 1])
                 for seed in range(1, n + 1)]
        for p in parts:
            await join(p, srv.http)
        await everyone_receives(parts, strict=strict)
        await read_ports(parts)
        yield srv, parts


async def measure(opts: Options, launch: Launch, tmp: Path) -> list[Round]:
    rounds: list[Round] = []
    async with call(launch, tmp, opts.participants, strict=False,
                    process=not opts.in_process) as (srv, parts):
        for r in range(1, opts.rounds + 1):
            if r > 1:
                await asyncio.sleep(opts.settle)
            # Round 1: `call` waited for the call to come up (60 s at most). Later rounds:
            # the links were let go `settle` seconds ago; the window starts when everyone
            # decodes everyone again, or after 45 s more (the report says which).
            pre = await everyone_receives(parts, seconds=45 if r > 1 else 5, strict=False)
            ready = all(w.median_fps >= 5 and w.min_fps > 0
                        for w in windows(pre, parts, start=-3))
            await read_ports(parts)  # an ICE restart would move them
            before = srv.counters()
            with apply_case(opts.case, parts, opts.loss, opts.kbit) as (target, shaping):
                samples = await record(parts, opts.seconds)
                shaper = shaping.stats() if shaping is not None else None
            after = srv.counters()
            pairs = windows(samples, parts)
            last = samples[-1]
            rounds.append(Round(
                round=r, case=opts.case, target=target,
                ports={p.name: dict(p.ports) for p in parts},
                ready_at_start=ready,
                shaper=asdict(shaper) if shaper is not None else None,
                pairs=[asdict(w) | {"loss": round(w.loss, 4)} for w in pairs],
                paused={p.name: {s.name: last[p.name].paused.get(s.id)
                                 for s in parts if s is not p} for p in parts},
                sfu=counter_delta(before, after),
                publishers={p.name: _publisher(samples, p.name) for p in parts},
            ))
    return rounds


def _publisher(samples: Sequence[dict[str, Sample]], name: str) -> dict[str, Any]:
    """What a participant's own publisher PC sent over the window."""
    first, last = samples[0][name].outbound or {}, samples[-1][name].outbound or {}
    dt = samples[-1][name].t - samples[0][name].t
    sent = last.get("bytesSent", 0) - first.get("bytesSent", 0)
    return {
        "kbit": round(sent * 8 / dt / 1000, 1) if dt > 0 else 0.0,
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
)


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
        lines += [f"### {r.case}{where}, round {r.round}{shaper}", "",
                  "| viewer ← sender | frames | median fps | freezes (s) | lost / received"
                  " | kbit/s | height | paused |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for w in r.pairs:
            lines.append(
                f"| {w['viewer']} ← {w['sender']} | {w['frames_decoded']} | {w['median_fps']}"
                f" | {w['freezes']} ({w['freeze_seconds']}) | {w['packets_lost']} /"
                f" {w['packets_received']} | {w['kbit']} | {w['frame_height']}"
                f" | {w['paused'] or ''} |"
            )
        pubs = ", ".join(f"{k} {v['kbit']} kbit/s ({v['frame_height']}p, "
                         f"{v['retransmitted']} rtx)" for k, v in r.publishers.items())
        sfu = ", ".join(f"{k} {r.sfu[k]}" for k in SFU_COUNTERS if k in r.sfu)
        lines += ["", f"publishers: {pubs}", f"SFU: {sfu or '(none of the loss/budget counters)'}"
                  f"; forwarded {r.sfu.get('forwarded_packets', 0)} packets", ""]
    return "\n".join(lines)


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
    a = ap.parse_args(argv)
    if not 2 <= a.participants <= len(NAMES):
        ap.error(f"--participants is 2…{len(NAMES)}")
    if a.case == "downlink-limit" and a.participants < 3:
        ap.error("downlink-limit shapes participant C: --participants 3 or more")
    if not 0 <= a.loss <= 1 or a.kbit < 8 or a.seconds < 2 or not 1 <= a.rounds <= 20:
        ap.error("--loss is 0…1, --kbit ≥ 8, --seconds ≥ 2, --rounds 1…20")
    return Options(a.case, a.seconds, a.rounds, a.participants, a.loss, a.kbit, a.settle,
                   a.json, a.in_process)


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
