"""``python -m bench.faults``: what a call goes through when a process dies.

Real headless Chromiums (the flags of peers/browser.py, moving noisy cameras and muted
sound as bench/links.py opens them) hold calls on a server built the way ``sealroom
serve`` builds it, in this process (so the SFU and its workers can be read and killed).
Each case kills something, then waits (bounded) for the call to settle and reports what
every page saw and when, in seconds after the kill:

* ``worker-kill``: ``--workers 2``, room ``alpha`` (A, B) and room ``beta`` (C, D) on
  different workers; the worker serving ``alpha`` gets SIGKILL. A and B are told
  (``sfu-error`` or the socket's close: ``connection`` ``reconnecting``), rejoin by
  themselves (web/js/call.js) and decode each other again; the table gives, per viewer,
  when each step of that happened (told, new participant id, rejoined, the peer's
  ``member-joined``, its hello verified, its media key installed, its video track, first
  decoded frame, first audible audio). C and D must not notice: the report gives their
  frames decoded, lowest per-second frame rate, longest stall, freezes and packets lost
  (getStats) over the whole window, their connection events (none expected), and the
  ``beta`` worker's counters, CPU time and event-loop lag over the window.
* ``browser-kill``: one room of three; C's Chromium (the browser process) gets SIGKILL.
  The kernel closes its sockets, so the server sees the WebSocket end at once. Reported
  for A and B: ``member-left`` for C, C's tile gone, the switch to a new media-key
  generation (``sendGeneration``), and that A and B still decode each other after it.
* ``browser-stop``: as ``browser-kill`` but C's Chromium (all its processes) gets
  SIGSTOP: nothing closes, nothing is sent, as when a machine vanishes from the network.
  The SFU's ``idle_timeout`` (docs/SFU.md, "Lifetime and cleanup") is then what notices;
  this case measures the documented bound's main term (docs/SFU.md, "Faults").

Every wait is bounded (``--timeout``); the command stops by itself and always closes the
browsers it started. Loopback only: outside a private network namespace the command runs
itself again under ``unshare -n`` with ``lo`` up (as bench/links.py does). A markdown
table goes to stdout, everything as JSON to ``--json``.

The helpers (serving with workers, the in-page recorder, finding and killing a
Chromium's processes) are what tests/test_faults_browser.py drives its calls with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.links import (
    Launch,
    Loopback,
    Participant,
    Sample,
    counter_delta,
    everyone_receives,
    join,
    launcher,
    open_participant,
    pair_window,
    record,
    sample_all,
)
from bench.netshape import in_private_net

log = logging.getLogger(__name__)

PASSWORD = "a crash is not a reason to lose the call"
ROOMS = ("alpha", "beta")
CASES = ("worker-kill", "browser-kill", "browser-stop")
NETNS_ENV = "SEALROOM_FAULTS_NETNS"
TAG = "--sealroom-fault-tag="
"""A switch Chromium ignores, given to each browser so its processes can be found."""


# --------------------------------------------------------------------------- server


@dataclass
class Served(Loopback):
    """A server built the way ``sealroom serve`` builds it (``--workers`` included),
    listening on 127.0.0.1; ``media`` is the ``Sfu`` or the ``SfuWorkers``."""

    server: Any
    media: Any
    runner: Any
    port: int

    def counters(self) -> dict[str, int]:
        """The media plane's counters now (summed over workers)."""
        snap: dict[str, int] = self.media.stats()
        return dict(snap)


@contextlib.asynccontextmanager
async def serve(workers: int = 1, *flags: str) -> AsyncIterator[Served]:
    """``sealroom serve --workers N`` in this process (sealroom/cli.py ``serve``: the same
    parser, config functions and media plane), stopped afterwards."""
    from aiohttp import web

    from sealroom.cli import build_parser, config_from_args, sfu_config_from_args
    from sealroom.metrics import Metrics
    from sfu import Sfu
    from sfu.workers import SfuWorkers
    from signaling.server import SignalingServer

    args = build_parser().parse_args(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--media-host", "127.0.0.1",
         "--workers", str(workers), *flags]
    )
    cfg = config_from_args(args)
    sfu_cfg = sfu_config_from_args(args)
    media: Any
    if args.workers > 1:
        media = SfuWorkers(sfu_cfg, args.workers, log_level=cfg.log_level)
        await media.start()
    else:
        media = Sfu(sfu_cfg)
    try:
        server = SignalingServer(cfg, media, metrics=Metrics)
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            yield Served(server, media, runner, runner.addresses[0][1])
        finally:
            await runner.cleanup()
    finally:
        await media.close()  # idempotent: the server's shutdown normally did it


# ------------------------------------------------------------------------ processes


def tagged(launch: Launch, tag: str) -> Launch:
    """``launch`` with ``--sealroom-fault-tag=<tag>`` added: Chromium ignores the switch,
    and it marks that browser's main process (``browser_pid``)."""

    async def tagged_launch(extra_args: list[str] | None = None, **kwargs: Any) -> Any:
        return await launch(extra_args=[*(extra_args or []), TAG + tag], **kwargs)

    return tagged_launch


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid …: comm may hold spaces and parentheses, so split after the last ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def browser_pid(tag: str) -> int:
    """The main process of the Chromium started with ``tagged(…, tag)`` (the one without
    ``--type=``: renderers, the GPU and network services are its children)."""
    found = [pid for pid in _pids()
             if TAG + tag in (cmd := _cmdline(pid))
             and not any(a.startswith("--type=") for a in cmd)]
    if len(found) != 1:
        raise RuntimeError(f"expected one Chromium tagged {tag!r}, found {found}")
    return found[0]


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants now (from /proc; bounded by the process count)."""
    parents = {pid: _ppid(pid) for pid in _pids()}
    tree, frontier = [root], [root]
    for _ in range(len(parents)):
        if not frontier:
            break
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree += frontier
    return tree


def signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# ------------------------------------------------------------------------- recorder

RECORDER_JS = """() => {
  if (window.__faults) return true;
  const call = window.sealroom.call;
  const rec = { events: [], firstDecoded: {}, firstAudio: {}, ticks: 0 };
  window.__faults = rec;
  const push = (type, extra) => rec.events.push({ t: Date.now(), type, ...extra });
  for (const type of ['connection', 'member', 'name', 'track', 'track-ended']) {
    call.addEventListener(type, ({ detail }) => push(type, {
      id: detail.id ?? detail.participant ?? null, kind: detail.kind ?? null,
      state: detail.state ?? null, joined: detail.joined ?? null, reason: detail.reason ?? null,
    }));
  }
  let keys = null, id = call.id, generation = call.sendGeneration, tiles = null, busy = false;
  const pcs = {};
  const tick = async () => {
    rec.ticks++;
    if (call.keys && call.keys !== keys) {
      keys = call.keys;
      keys.addEventListener('key-installed', ({ detail }) => push('key-installed', {
        id: detail.participant, generation: detail.generation, step: detail.step }));
    }
    if (call.id !== id) { id = call.id; push('id', { id }); }
    if (call.sendGeneration !== generation) {
      generation = call.sendGeneration;
      push('generation', { generation });
    }
    const media = call.media;
    for (const pc of ['pub', 'sub']) {
      const state = media?.[pc]?.connectionState ?? null;
      if (state !== (pcs[pc] ?? null)) { pcs[pc] = state; push('pc', { pc, state }); }
    }
    const shown = window.sealroom.snapshot().tiles.filter((t) => t.id !== 'self')
      .map((t) => t.id).sort().join(',');
    if (shown !== tiles) { tiles = shown; push('tiles', { tiles: shown }); }
    if (!media?.sub) return;
    const owner = new Map();
    for (const t of media.sub.getTransceivers()) {
      const info = media.active.get(t.mid) ?? media.tracks.get(t.mid);
      if (info) owner.set(t.mid, info.participant);
    }
    const report = await media.sub.getStats();
    const now = Date.now();
    report.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const who = owner.get(r.mid);
      if (!who) return;
      if (r.kind === 'video' && (r.framesDecoded ?? 0) > 0 && !(who in rec.firstDecoded))
        rec.firstDecoded[who] = now;
      if (r.kind === 'audio' && (r.totalAudioEnergy ?? 0) > 0 && !(who in rec.firstAudio))
        rec.firstAudio[who] = now;
    });
  };
  rec.timer = setInterval(() => {
    if (busy) return;
    busy = true;
    tick().catch(() => {}).finally(() => { busy = false; });
  }, 100);
  return true;
}"""
"""Installed in a joined page: records, with Date.now() (ms), the Call's events
(web/js/call.js), the KeyManager's ``key-installed``, changes of the page's id, send
generation, PeerConnection states and shown tiles, and per participant id the first
getStats poll (every 100 ms) that saw a decoded video frame / audio with energy."""


@dataclass
class Record:
    """What a page's recorder saw (times in ms since the epoch, as Date.now())."""

    events: list[dict[str, Any]]
    first_decoded: dict[str, float]
    first_audio: dict[str, float]

    def first(self, type_: str, **match: Any) -> float | None:
        """Time of the first event of ``type_`` whose fields match."""
        for e in self.events:
            if e["type"] == type_ and all(e.get(k) == v for k, v in match.items()):
                return float(e["t"])
        return None

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == type_]


async def install(p: Participant) -> None:
    await p.page.evaluate(RECORDER_JS)


async def read(p: Participant) -> Record:
    got: dict[str, Any] = await p.page.evaluate(
        "() => ({ events: window.__faults.events, firstDecoded: window.__faults.firstDecoded,"
        " firstAudio: window.__faults.firstAudio })")
    return Record(got["events"], got["firstDecoded"], got["firstAudio"])


async def page_id(p: Participant) -> str | None:
    got = await p.page.evaluate("window.sealroom.call?.id ?? null")
    return str(got) if got else None


def since(t: float | None, t0_ms: float) -> float | None:
    """Seconds from the fault (``t0_ms``) to ``t``, or None."""
    return None if t is None else round((t - t0_ms) / 1000, 2)


async def wait_for(check: Any, seconds: float, interval: float = 0.25) -> bool:
    """Poll the coroutine function ``check`` until it returns true, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / interval) + 2):
        if await check():
            return True
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval)
    return False


async def open_call(launch: Launch, tmp: Path, names: Sequence[str], seeds: Sequence[int],
                    url: str, room: str) -> list[Participant]:
    """Tagged browsers named ``names``, joined to ``room``, recorders installed."""
    parts = []
    for name, seed in zip(names, seeds, strict=True):
        p = await open_participant(tagged(launch, name), tmp, seed, name)
        parts.append(p)
    for p in parts:
        await join(p, url, room=room, password=PASSWORD)
        await install(p)
    return parts


# ----------------------------------------------------------------------- worker-kill


@dataclass
class Steps:
    """One rejoining viewer: seconds after the kill until each step, None = not seen."""

    viewer: str
    peer: str
    closed: float | None = None  # told: 'connection' reconnecting (media failed / socket closed)
    new_id: float | None = None  # its page has a new participant id (joined again)
    rejoined: float | None = None  # Call.start() done: keys started, publishing
    peer_joined: float | None = None  # the peer's new id is a member
    peer_hello: float | None = None  # the peer's hello verified ('name')
    peer_key: float | None = None  # the peer's media key installed
    peer_track: float | None = None  # the peer's video track ('track')
    decoded: float | None = None  # first decoded video frame of the peer's new session
    audio: float | None = None  # first audio with energy from the peer's new session


@dataclass
class Untouched:
    """A viewer of the room whose worker survived, over the whole window."""

    viewer: str
    sender: str
    seconds: float
    frames_decoded: int
    min_fps: float
    median_fps: float
    freezes: int
    packets_lost: int
    packets_received: int
    connection_events: int  # 'connection' events, 'id' changes, PC state changes
    longest_stall: float  # longest run of sample intervals without a decoded frame, s


@dataclass
class WorkerKill:
    round: int
    killed_worker: int
    killed_pid: int
    worker_back: float | None  # seconds until a new process of that worker was ready
    alpha_worker_after: int | None
    beta_worker: int | None
    recovered: bool
    recovery: float | None  # the slowest viewer's first decoded frame of its peer
    steps: list[Steps]
    untouched: list[Untouched]
    beta_worker_drops: dict[str, int]  # and key-frame counters; alpha's too if it moved in
    beta_worker_busy: dict[str, float]  # CPU seconds and loop lag of that worker, the window
    restarts: int
    timelines: dict[str, list[str]]  # every recorded event of A and B, seconds after the kill
    argon2id: list[float] = field(default_factory=list)  # one derivation in A's, B's page


def _steps(viewer: Participant, peer_new: str, rec: Record, t0: float, peer: str) -> Steps:
    after = [e for e in rec.events if e["t"] >= t0]
    r = Record(after, rec.first_decoded, rec.first_audio)
    return Steps(
        viewer=viewer.name, peer=peer,
        closed=since(r.first("connection", state="reconnecting"), t0),
        new_id=since(next((e["t"] for e in r.of("id") if e["id"]), None), t0),
        rejoined=since(r.first("connection", state="connected"), t0),
        peer_joined=since(r.first("member", id=peer_new, joined=True), t0),
        peer_hello=since(r.first("name", id=peer_new), t0),
        peer_key=since(r.first("key-installed", id=peer_new), t0),
        peer_track=since(r.first("track", id=peer_new, kind="video"), t0),
        decoded=since(rec.first_decoded.get(peer_new), t0),
        audio=since(rec.first_audio.get(peer_new), t0),
    )


UNTOUCHED_WINDOW = 7.0  # seconds the other room is watched after a kill, at least


def untouched_window(samples: Sequence[dict[str, Sample]], viewer: Participant,
                     sender: Participant, rec: Record, t0: float) -> Untouched:
    w = pair_window(samples, viewer.name, sender.name, sender.id)
    moved = [e for e in rec.events if e["t"] >= t0 and e["type"] in ("connection", "id", "pc")]
    stall = longest = 0.0
    for i in range(1, len(samples)):
        step = pair_window(samples, viewer.name, sender.name, sender.id, i - 1, i + 1)
        stall = stall + step.seconds if step.frames_decoded == 0 else 0.0
        longest = max(longest, stall)
    return Untouched(viewer.name, sender.name, w.seconds, w.frames_decoded, w.min_fps,
                     w.median_fps, w.freezes, w.packets_lost, w.packets_received, len(moved),
                     round(longest, 2))


async def kill_worker_round(srv: Served, alpha: Sequence[Participant],
                            beta: Sequence[Participant], number: int,
                            timeout: float) -> WorkerKill:
    """SIGKILL the worker of room alpha; wait (≤ ``timeout``) until A and B decode each
    other's new sessions while sampling C and D once a second."""
    pool = srv.media
    index = pool.worker_of(ROOMS[0])
    beta_index = pool.worker_of(ROOMS[1])
    if index is None or index == beta_index:
        raise RuntimeError(f"rooms are not on two workers: alpha {index}, beta {beta_index}")
    old = pool.workers[index]
    beta_before = dict(pool.workers[beta_index].counters)
    gauges_before = dict(pool.workers[beta_index].gauges)
    a, b = alpha
    t0 = time.time() * 1000
    m0 = time.monotonic()
    os.kill(old.pid, signal.SIGKILL)
    log.info("round %d: killed sfu worker %d (pid %d)", number, index, old.pid)

    back: list[float] = []

    async def worker_back() -> None:
        for _ in range(int(timeout * 20)):
            w = pool.workers[index]
            if w is not old and w.alive:
                back.append(time.monotonic() - m0)
                return
            await asyncio.sleep(0.05)

    watcher = asyncio.get_running_loop().create_task(worker_back())

    async def recovered() -> bool:
        ids = [await page_id(a), await page_id(b)]
        if None in ids or ids == [a.id, b.id]:
            return False
        recs = [await read(a), await read(b)]
        return ids[1] in recs[0].first_decoded and ids[0] in recs[1].first_decoded

    # C and D sampled about once a second all along; A and B checked in between.
    beta_samples: list[dict[str, Sample]] = []
    ok = False
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout) + 2):
        beta_samples.append(await sample_all(beta))
        if await recovered():
            ok = True
            break
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(1.0)
    # ... and a little after the recovery: at least 3 samples more, and the other room
    # watched for at least UNTOUCHED_WINDOW seconds in all (a fast recovery is no reason to
    # watch it less)
    for i in range(int(UNTOUCHED_WINDOW) + 3):
        if i >= 3 and time.monotonic() - m0 >= UNTOUCHED_WINDOW:
            break
        await asyncio.sleep(1.0)
        beta_samples.append(await sample_all(beta))
    if not watcher.done():
        await asyncio.wait({watcher}, timeout=5.0)
        watcher.cancel()

    new_a, new_b = await page_id(a), await page_id(b)
    rec_a, rec_b, rec_c, rec_d = [await read(p) for p in (a, b, *beta)]
    steps = [_steps(a, new_b or "", rec_a, t0, b.name), _steps(b, new_a or "", rec_b, t0, a.name)]
    c, d = beta
    untouched = [untouched_window(beta_samples, c, d, rec_c, t0),
                 untouched_window(beta_samples, d, c, rec_d, t0)]
    beta_w = pool.workers[beta_index]
    drops = {k: v for k, v in counter_delta(beta_before, dict(beta_w.counters)).items()
             if k.startswith(("drop_", "error", "transport_failures", "keyframe_requests",
                              "plis_", "pli_received"))}
    gauges = dict(beta_w.gauges)
    lag = gauges.get("loop_lag_max", 0.0)
    busy = {
        # The worker's own figures (pushed every second): CPU it used over the window, and
        # its event loop's longest lateness if that grew during the window (else 0).
        "cpu_seconds": round(gauges.get("cpu_seconds", 0.0)
                             - gauges_before.get("cpu_seconds", 0.0), 2),
        "loop_lag_max": round(lag if lag > gauges_before.get("loop_lag_max", 0.0) else 0.0, 3),
    }
    decoded = [s.decoded for s in steps if s.decoded is not None]
    for p, new in ((a, new_a), (b, new_b)):
        if new:
            p.id = new
    return WorkerKill(
        round=number, killed_worker=index, killed_pid=old.pid, beta_worker_busy=busy,
        worker_back=round(back[0], 2) if back else None,
        alpha_worker_after=pool.worker_of(ROOMS[0]), beta_worker=beta_index,
        recovered=ok, recovery=max(decoded) if ok and len(decoded) == len(steps) else None,
        steps=steps, untouched=untouched, beta_worker_drops=drops,
        restarts=pool.workers[index].restarts,
        timelines={p.name: timeline(rec, t0) for p, rec in ((a, rec_a), (b, rec_b))},
    )


def timeline(rec: Record, t0: float) -> list[str]:
    """The recorder's events after ``t0`` as short lines (for the JSON report)."""
    out = []
    for e in rec.events:
        if e["t"] >= t0:
            fields = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "type")
                              and v is not None)
            out.append(f"{since(e['t'], t0):.2f} {e['type']} {fields}")
    return out


async def place_apart(srv: Served, alpha: Sequence[Participant], timeout: float) -> None:
    """Put room alpha back on a worker of its own: its pages leave (about:blank), and
    once the room is gone from its worker and every worker is up they join again (the
    least loaded worker, an empty one, takes it)."""
    pool = srv.media
    for p in alpha:
        await p.page.goto("about:blank")

    async def ready() -> bool:
        return pool.worker_of(ROOMS[0]) is None and all(w.alive for w in pool.workers)

    if not await wait_for(ready, timeout):
        raise RuntimeError("room alpha did not empty, or a worker did not come back")
    for p in alpha:
        await join(p, srv.http, room=ROOMS[0], password=PASSWORD)
        await install(p)
    await everyone_receives(alpha)


async def worker_kill(launch: Launch, tmp: Path, rounds: int, settle: float,
                      timeout: float) -> list[WorkerKill]:
    out: list[WorkerKill] = []
    async with serve(2, "--log-level", "warning") as srv:
        alpha = await open_call(launch, tmp, "AB", (1, 2), srv.http, ROOMS[0])
        beta = await open_call(launch, tmp, "CD", (3, 4), srv.http, ROOMS[1])
        for group in (alpha, beta):
            await everyone_receives(group)
        for r in range(1, rounds + 1):
            if r > 1:
                await asyncio.sleep(settle)
                if srv.media.worker_of(ROOMS[0]) == srv.media.worker_of(ROOMS[1]):
                    await place_apart(srv, alpha, timeout)
                for group in (alpha, beta):
                    await everyone_receives(group)
            out.append(await kill_worker_round(srv, alpha, beta, r, timeout))
        kdf = [await argon2id_seconds(p) for p in alpha]
        log.warning("Argon2id of a rejoin, measured in the pages: %s s", kdf)
        for k in out:
            k.argon2id = kdf
    return out


ARGON2ID_JS = """async () => {
  const m = await import('/js/roomcrypto.js');
  const params = m.KdfParams.generate();
  const t = performance.now();
  const key = await m.passwordKey('a password', params);
  key.fill(0);
  return (performance.now() - t) / 1000;
}"""
"""One Argon2id of the room's default cost in the page (what every rejoin pays before its
join message: web/js/signaling.js derives the room keys again)."""


async def argon2id_seconds(p: Participant) -> float:
    return round(float(await p.page.evaluate(ARGON2ID_JS)), 2)


# ---------------------------------------------------------------------- browser-kill


def departure_bound(sfu: Any = None, server: Any = None) -> float:
    """Seconds from a participant's death to the others' switch to a new media key, at
    worst, for a participant with media through the SFU (docs/SFU.md "Faults").

    Noticing: whichever comes first of the SFU's watchdog (``idle_timeout`` with no
    packet on either PeerConnection, measured at watchdog ticks ``rtcp_interval`` apart:
    ``idle_timeout + 2 × rtcp_interval``; then ``transport-failed`` → ``member-left``) and
    the signaling heartbeat (aiohttp pings ``heartbeat`` s after the last message and gives
    up ``heartbeat / 2`` s later, each deadline rounded up to a whole second). A closed socket (a
    killed process on a live host) is noticed at once. Then the rotation (PROTOCOL.md
    "Media keys"): due ``DEBOUNCE`` after the leave, switched when every remaining member
    acked or after ``SWITCH_TIMEOUT``.
    """
    from e2ee.mediakeys import DEBOUNCE, SWITCH_TIMEOUT
    from sfu import SfuConfig
    from signaling.config import ServerConfig

    sfu = sfu if sfu is not None else SfuConfig()
    server = server if server is not None else ServerConfig()
    media = float(sfu.idle_timeout + 2 * sfu.rtcp_interval)
    # aiohttp rounds each deadline over 5 s up to a whole second (calculate_timeout_when)
    heartbeat = float(server.heartbeat + 1 + server.heartbeat / 2 + 1)
    return min(media, heartbeat) + DEBOUNCE + SWITCH_TIMEOUT


@dataclass
class Departure:
    """A remaining participant after another's browser died: seconds after the fault."""

    viewer: str
    member_left: float | None
    reason: str | None
    tile_gone: float | None
    rotated: float | None  # its send generation went up (the switch, PROTOCOL.md)
    generation_before: int
    generation_after: int
    keeps_decoding: bool  # still decodes the other remaining participant after the switch


@dataclass
class BrowserFault:
    case: str
    round: int
    victim: str
    processes: int
    done: bool
    departures: list[Departure]
    sfu: dict[str, int]


async def decodes(viewer: Participant, sender: Participant, seconds: float = 3.0) -> bool:
    """``viewer`` decodes frames of ``sender`` (≥ 5 fps over ``seconds``)."""
    samples = await record([viewer, sender], seconds)
    return pair_window(samples, viewer.name, sender.name, sender.id).median_fps >= 5


async def browser_fault(launch: Launch, tmp: Path, case: str, timeout: float,
                        number: int = 1) -> BrowserFault:
    """One room of three; C's browser is killed (or stopped); what A and B see."""
    async with serve(1, "--log-level", "warning") as srv:
        parts = await open_call(launch, tmp, "ABC", (1, 2, 3), srv.http, ROOMS[0])
        await everyone_receives(parts)
        a, b, c = parts
        gens = {p.name: int(await p.page.evaluate("window.sealroom.call.sendGeneration"))
                for p in (a, b)}
        before = srv.counters()
        main = browser_pid(c.name)
        tree = process_tree(main)
        exited = asyncio.Event()
        c.page.context.on("close", lambda _: exited.set())
        t0 = time.time() * 1000
        if case == "browser-kill":
            signal_all([main], signal.SIGKILL)
        else:
            signal_all(tree, signal.SIGSTOP)
        try:
            async def settled() -> bool:
                for p in (a, b):
                    rec = await read(p)
                    t = [e for e in rec.events if e["t"] >= t0]
                    r = Record(t, {}, {})
                    if (r.first("member", id=c.id, joined=False) is None
                            or not r.of("generation")
                            or c.id in (r.of("tiles") or [{"tiles": c.id}])[-1]["tiles"]):
                        return False
                return True

            done = await wait_for(settled, timeout)
            deps = []
            for viewer, other in ((a, b), (b, a)):
                rec = await read(viewer)
                r = Record([e for e in rec.events if e["t"] >= t0], {}, {})
                left = next((e for e in r.of("member")
                             if e["id"] == c.id and e["joined"] is False), None)
                gone = next((e["t"] for e in r.of("tiles") if c.id not in e["tiles"]), None)
                after = int(await viewer.page.evaluate("window.sealroom.call.sendGeneration"))
                deps.append(Departure(
                    viewer=viewer.name,
                    member_left=since(left["t"], t0) if left else None,
                    reason=left["reason"] if left else None,
                    tile_gone=since(gone, t0),
                    rotated=since(r.first("generation"), t0),
                    generation_before=gens[viewer.name], generation_after=after,
                    keeps_decoding=await decodes(viewer, other),
                ))
            return BrowserFault(case, number, c.name, len(tree), done, deps,
                                counter_delta(before, srv.counters()))
        finally:
            signal_all(tree, signal.SIGKILL)  # stopped ones too: nothing is left behind
            # Let Playwright see that browser go before anyone closes its context (closing
            # a context whose browser is dying fails; one already closed is a no-op).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), 15.0)


# ---------------------------------------------------------------------------- report


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def worker_table(rounds: Sequence[WorkerKill]) -> str:
    lines = []
    for r in rounds:
        lines += [
            f"### worker-kill, round {r.round}: worker {r.killed_worker} (pid {r.killed_pid})"
            f" killed; back after {_s(r.worker_back)} s; alpha now on worker"
            f" {r.alpha_worker_after}, beta on {r.beta_worker}",
            "",
            "| viewer ← peer | told | new id | rejoined | peer member | peer hello"
            " | peer key | peer track | decoded | audio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in r.steps:
            lines.append(
                f"| {s.viewer} ← {s.peer} | {_s(s.closed)} | {_s(s.new_id)} | {_s(s.rejoined)}"
                f" | {_s(s.peer_joined)} | {_s(s.peer_hello)} | {_s(s.peer_key)}"
                f" | {_s(s.peer_track)} | {_s(s.decoded)} | {_s(s.audio)} |")
        lines += ["", f"recovered: {r.recovered}, recovery (slowest first decoded frame)"
                  f" {_s(r.recovery)} s", "",
                  "| untouched viewer ← sender | seconds | frames | min fps | median fps"
                  " | longest stall (s) | freezes | lost / received | connection events |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for u in r.untouched:
            lines.append(
                f"| {u.viewer} ← {u.sender} | {u.seconds} | {u.frames_decoded} | {u.min_fps}"
                f" | {u.median_fps} | {u.longest_stall} | {u.freezes}"
                f" | {u.packets_lost} / {u.packets_received} | {u.connection_events} |")
        lines += ["", f"beta's worker, counters that moved: {r.beta_worker_drops or 'none'}",
                  f"beta's worker over the window: {r.beta_worker_busy}",
                  f"Argon2id in A's and B's pages after the rounds: {r.argon2id} s", ""]
    return "\n".join(lines)


def browser_table(results: Sequence[BrowserFault]) -> str:
    lines = []
    for r in results:
        lines += [f"### {r.case}, round {r.round}: {r.victim}'s Chromium ({r.processes}"
                  f" processes); settled: {r.done}", "",
                  "| viewer | member-left (reason) | tile gone | new key generation"
                  " | generation | still decodes the other |",
                  "|---|---:|---:|---:|---:|---|"]
        for d in r.departures:
            lines.append(
                f"| {d.viewer} | {_s(d.member_left)} ({d.reason}) | {_s(d.tile_gone)}"
                f" | {_s(d.rotated)} | {d.generation_before} → {d.generation_after}"
                f" | {d.keeps_decoding} |")
        keys = ("leaves", "transport_failures", "errors")
        lines += ["", "SFU: " + ", ".join(f"{k} {r.sfu.get(k, 0)}" for k in keys), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- CLI


@dataclass
class Options:
    case: str = "worker-kill"
    rounds: int = 1
    settle: float = 10.0
    timeout: float = 60.0
    json: str | None = None


def parse(argv: Sequence[str]) -> Options:
    ap = argparse.ArgumentParser(prog="python -m bench.faults",
                                 description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--case", choices=CASES, default="worker-kill")
    ap.add_argument("--rounds", type=int, default=1,
                    help="faults in a row (worker-kill: one call; browser cases: a call each)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds between rounds")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="longest wait for the call to settle after a fault, seconds")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args(argv)
    if not 1 <= a.rounds <= 10 or not 5 <= a.timeout <= 300 or not 0 <= a.settle <= 120:
        ap.error("--rounds is 1…10, --timeout 5…300, --settle 0…120")
    return Options(a.case, a.rounds, a.settle, a.timeout, a.json)


def reexec_in_private_net(argv: Sequence[str]) -> int | None:
    """Run again under ``unshare -n`` (or ``-rn``) with lo up; None if already private."""
    if in_private_net() or os.environ.get(NETNS_ENV):
        return None
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SystemExit("unshare (util-linux) is needed for a loopback-only namespace")
    env = dict(os.environ, **{NETNS_ENV: "1"})
    for flags in ("-n", "-rn"):
        if subprocess.run([unshare, flags, "true"], capture_output=True, check=False
                          ).returncode == 0:
            cmd = [unshare, flags, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "_",
                   sys.executable, "-m", "bench.faults", *argv]
            return subprocess.run(cmd, env=env, check=False).returncode
    raise SystemExit("cannot create a network namespace (need root or user namespaces)")


async def run(opts: Options) -> tuple[list[WorkerKill], list[BrowserFault]]:
    kills: list[WorkerKill] = []
    faults: list[BrowserFault] = []
    with tempfile.TemporaryDirectory(prefix="sealroom-faults-") as tmp:
        if opts.case == "worker-kill":
            async with contextlib.AsyncExitStack() as stack:
                launch = await launcher(stack, Path(tmp))
                kills = await worker_kill(launch, Path(tmp), opts.rounds, opts.settle,
                                          opts.timeout)
        else:
            for r in range(1, opts.rounds + 1):
                if r > 1:
                    await asyncio.sleep(opts.settle)
                here = Path(tmp) / f"round-{r}"
                here.mkdir()
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        launch = await launcher(stack, here)
                        faults.append(await browser_fault(launch, here, opts.case,
                                                          opts.timeout, r))
                except Exception as exc:  # closing the dead browser's context, say
                    if len(faults) < r:
                        raise
                    log.warning("round %d: after the measurement: %s", r, exc)
    return kills, faults


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    opts = parse(args)
    code = reexec_in_private_net(args)
    if code is not None:
        return code
    command = shlex.join(["python", "-m", "bench.faults", *args])
    started = time.time()
    kills, faults = asyncio.run(run(opts))
    print(f"`{command}` ({os.cpu_count()} CPUs)\n")
    print(worker_table(kills) if kills else browser_table(faults))
    if opts.json:
        report = {"command": command, "started": started, "cpus": os.cpu_count(),
                  "worker_kill": [asdict(k) for k in kills],
                  "browser": [asdict(f) for f in faults]}
        Path(opts.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
