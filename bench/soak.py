"""Soak: many signaling sockets and a few calls against a real ``sealroom serve`` process.

``python -m bench.soak --sockets 200 --rooms 40 --media-rooms 5 --minutes 10`` starts
``sealroom serve`` (its own process, loopback only, a temporary ``--state-dir``), opens
``--sockets`` WebSockets spread round-robin over ``--rooms`` rooms and joins each with the
room's password (docs/PROTOCOL.md: the real admission, sealed signaling). In the first
``--media-rooms`` rooms every member is also a media participant (``MediaBot`` over the
same socket, real ICE/DTLS-SRTP with the server's SFU): ``--publishers`` of them send
Opus and VP8-shaped packets (``MediaBot``), the others only receive, counting packets on
the compiled fast path (``bench.fuzz.FuzzPeer``), and send an empty RR every second, as
a browser's receiver does, so the SFU does not take them for dead. Every
``--chat-interval`` seconds one member of each room seals a message to everyone.

Every ``--interval`` seconds it samples the server's resident memory (``VmRSS``) and
open file descriptors (``/proc/<pid>/fd``), over the process and its children, the
sockets still open and the media packets the bots received; at the end it reports the
figures at the end of the warm-up (``--warmup``) and at the end, the growth between them
and its least-squares slope per minute over the samples after the warm-up, and every
line of the server's log at level ERROR or above (and any traceback). Bounded: the run
lasts ``--minutes`` (or ``--seconds``), every wait has a timeout, and the server is
stopped (SIGTERM, then SIGKILL) at the end.

Each room's members connect from their own loopback address (127.0.x.y): the server
limits rooms created per address (``max_rooms_per_ip``), as it should, and all of these
clients would otherwise be one address. The room password's key derivation (Argon2id,
docs/SECURITY.md) is done once per room in this process, not once per socket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from peers import client as signaling_client
from peers.client import SignalingClient, origin_of
from peers.mediabot import MediaBot
from sfu.ice import IcePolicy

from . import procstat
from .fuzz import FuzzPeer

logger = logging.getLogger("bench.soak")

ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")
RR_EMPTY = b"\x80\xc9\x00\x01"  # RFC 3550 §6.4.2 receiver report, RC = 0 (+ our SSRC)


@dataclass
class Options:
    sockets: int = 200
    rooms: int = 40
    media_rooms: int = 5
    publishers: int = 1  # per media room
    seconds: float = 600.0
    interval: float = 5.0
    warmup: float = 60.0
    chat_interval: float = 10.0
    fps: int = 10
    connect_concurrency: int = 8
    log_level: str = "info"
    nice: int = 0  # niceness of the server and of this process (negative: root)
    server_log: str = ""  # keep the server's log here (else a temporary file)


@dataclass
class Member:
    room: int
    client: SignalingClient
    position: int = 0  # among the room's members, in joining order
    bot: MediaBot | None = None  # a publisher
    receiver: FuzzPeer | None = None  # a subscriber
    heard: int = 0  # the receiver's RTP packets counted so far


@dataclass
class Sample:
    t: float  # seconds since the soak started
    rss: int  # bytes, the server process and its children
    fds: int
    sockets_open: int
    media_packets: int  # received by the bots since the previous sample
    log_errors: int
    client_lag: float  # this process's worst event-loop lag since the previous sample (s)

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 1), "rss_mb": round(self.rss / 2**20, 2), "fds": self.fds,
                "sockets_open": self.sockets_open, "media_packets": self.media_packets,
                "log_errors": self.log_errors, "client_lag_ms": round(self.client_lag * 1000)}


@dataclass
class Server:
    """``sealroom serve`` in its own process, its log in a file."""

    port: int
    log: Path
    state: tempfile.TemporaryDirectory[str]
    proc: asyncio.subprocess.Process | None = None
    exit_code: int | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, log_level: str, nice: int = 0) -> None:
        cmd = [sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--media-host", "127.0.0.1",
               "--state-dir", self.state.name, "--log-level", log_level, *self.extra]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        with open(self.log, "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)
        url = f"http://127.0.0.1:{self.port}/healthz/ready"
        deadline = time.monotonic() + 30.0
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"sealroom serve exited ({self.proc.returncode}): "
                                       f"{self.log.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise TimeoutError("sealroom serve was not ready within 30 s")

    def errors(self) -> list[str]:
        """Lines of the server's log at ERROR or above, and tracebacks."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if ERROR_LINE.search(line)]

    def count(self, text: str) -> int:
        """Lines of the server's log that contain ``text``."""
        try:
            return sum(text in line for line in self.log.read_text(errors="replace").splitlines())
        except OSError:
            return 0

    async def metrics(self) -> dict[str, float]:
        """A few counters of ``/metrics`` (Prometheus text format)."""
        wanted = ("sealroom_ws_connections_total", "sealroom_joins_total",
                  "sealroom_sfu_joins_total", "sealroom_sfu_leaves_total",
                  "sealroom_sfu_transport_failures_total", "sealroom_sfu_errors_total",
                  "sealroom_sfu_forwarded_packets_total", "sealroom_sealed_relayed_total")
        out: dict[str, float] = {}
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            text = await r.text()
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in wanted:
                out[name] = float(value)
        return out

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            self.exit_code = None if proc is None else proc.returncode
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            self.exit_code = await asyncio.wait_for(proc.wait(), 30.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            self.exit_code = await asyncio.wait_for(proc.wait(), 5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def room_address(room: int) -> str:
    """Each room's members connect from an address of their own (module docstring)."""
    return f"127.0.{1 + room // 250}.{1 + room % 250}"


async def connect(url: str, local: str) -> SignalingClient:
    """``SignalingClient.connect`` from the loopback address ``local``."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(local, 0)))
    try:
        ws = await session.ws_connect(url, origin=origin_of(url), heartbeat=20,
                                      max_msg_size=1 << 20)
        c = SignalingClient(session, ws, origin_of(url))
        await asyncio.wait_for(c.challenged.wait(), 10)
    except BaseException:
        await session.close()
        raise
    return c


def rss_and_fds(pid: int) -> tuple[int, int]:
    """Resident bytes and open descriptors of ``pid`` and its descendants (/proc)."""
    rss = procstat.tree_rss_bytes(pid)
    fds = 0
    for p in procstat.tree(pid):
        with contextlib.suppress(OSError):
            fds += len(os.listdir(f"/proc/{p}/fd"))
    return rss, fds


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return None
    return 60.0 * sum((t - mx) * (v - my) for t, v in points) / var


class Soak:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.members: list[Member] = []
        self.samples: list[Sample] = []
        self.failures: list[str] = []
        self._worst_lag = 0.0
        self._state = tempfile.TemporaryDirectory(prefix="soak-state-")
        log = Path(opts.server_log) if opts.server_log else Path(self._state.name) / "server.log"
        self.server = Server(free_port(), log, self._state)

    async def join_all(self) -> None:
        o = self.opts
        url = f"ws://127.0.0.1:{self.server.port}/ws"
        gate = asyncio.Semaphore(o.connect_concurrency)
        creators: dict[int, asyncio.Event] = {}

        async def one(i: int) -> Member | None:
            room = i % o.rooms
            first = i < o.rooms  # the room's first member creates it; the others wait
            ready = creators.setdefault(room, asyncio.Event())
            if not first:
                await asyncio.wait_for(ready.wait(), 120)
            async with gate:
                try:
                    c = await connect(url, room_address(room))
                    await asyncio.wait_for(c.join(f"soak-{room}", f"password-{room}"), 60)
                except Exception as exc:
                    self.failures.append(f"socket {i} (room {room}): {type(exc).__name__}: "
                                         f"{exc}")
                    return None
                finally:
                    if first:
                        ready.set()
            m = Member(room, c, position=i // o.rooms)
            if room < o.media_rooms:
                await self.start_media(m)
            return m

        # The signaling-only rooms first, then the media rooms, whose members become
        # media participants as they join: a transport must connect within the SFU's
        # ``connect_timeout`` of its join, and then keep sending (``idle_timeout``).
        quiet = [i for i in range(o.sockets) if i % o.rooms >= o.media_rooms]
        media = [i for i in range(o.sockets) if i % o.rooms < o.media_rooms]
        for group in (quiet, media):
            joined = await asyncio.gather(*(one(i) for i in group))
            self.members += [m for m in joined if m is not None]

    async def start_media(self, m: Member) -> None:
        """Make ``m`` a media participant: the first ``publishers`` of a room publish
        (``MediaBot``), the others receive on the compiled fast path (``FuzzPeer``, which
        counts what arrives and sends nothing unless asked): one Python process plays
        every participant, and aioice gives an ICE consent check 0.5 s (RFC 7675), so
        this process's event loop must not fall behind."""
        o = self.opts
        assert m.client.id is not None
        if m.position < o.publishers:
            bot = MediaBot(m.client.id, signal=m.client.send, ice=IcePolicy("127.0.0.1"),
                           fps=o.fps)
            await m.client.set_media_handler(bot.on_message)
            await bot.publish()
            m.bot = bot
        else:
            peer = FuzzPeer(m.client.id, IcePolicy("127.0.0.1"))
            peer.attach(m.client.send)
            await m.client.set_media_handler(peer.on_message)
            m.receiver = peer

    def _harvest(self) -> int:
        """Media packets the bots received since the last call; what they recorded is
        dropped (a soak of minutes would otherwise fill this process with payloads)."""
        total = 0
        for m in self.members:
            if m.receiver is not None:
                now = m.receiver.counters["sub_rtp_in"]
                total += now - m.heard
                m.heard = now
            bot = m.bot
            if bot is None:
                continue
            for r in bot.received.values():
                total += len(r.payloads)
                r.payloads.clear()
                r.timestamps.clear()
            for sent in bot.sent.values():
                sent.clear()
            bot.sender_reports.clear()
            bot.messages.clear()
        return total

    async def _keepalive(self) -> None:
        """An empty RR per second from every receiving bot (bounded by the soak's task)."""
        while True:
            await asyncio.sleep(1.0)
            for m in self.members:
                if m.receiver is not None and m.receiver.sub.up:
                    m.receiver.sub.send_rtcp(RR_EMPTY + (0x50AC0000 + m.room).to_bytes(4, "big"))

    async def _chat(self) -> None:
        """One sealed message to everybody per room every ``chat_interval`` seconds; every
        client's inbox is emptied (nothing reads it here)."""
        n = 0
        while True:
            await asyncio.sleep(self.opts.chat_interval)
            n += 1
            seen: set[int] = set()
            for m in self.members:
                m.client.drain()
                if m.room not in seen and not m.client.ws.closed:
                    seen.add(m.room)
                    with contextlib.suppress(Exception):
                        await m.client.seal("*", {"type": "chat", "n": n})

    async def _lag(self) -> None:
        """This process's event-loop lag (a 50 ms sleep that wakes late): the clients' ICE
        consent answers (RFC 7675) wait behind it, and aioice gives a consent check 0.5 s."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.05)
            self._worst_lag = max(self._worst_lag, time.monotonic() - t - 0.05)

    def sample(self, t: float, media: int) -> Sample:
        rss, fds = rss_and_fds(self.server.pid)
        s = Sample(t, rss, fds, sum(1 for m in self.members if not m.client.ws.closed), media,
                   len(self.server.errors()), self._worst_lag)
        self._worst_lag = 0.0
        self.samples.append(s)
        return s

    async def run(self) -> dict[str, Any]:
        o = self.opts
        report: dict[str, Any] = {"options": o.__dict__.copy(), "port": self.server.port}
        tasks: list[asyncio.Future[None]] = []
        # the room password's key derivation, once per room (module docstring)
        derive = getattr(signaling_client, "password_key")  # noqa: B009
        setattr(signaling_client, "password_key",  # noqa: B010
                functools.lru_cache(maxsize=1024)(derive))
        try:
            await self.server.start(o.log_level, o.nice)
            if o.nice:
                os.nice(o.nice)  # after the server started: it has its own
            t0 = time.monotonic()
            tasks = [asyncio.ensure_future(self._keepalive()),
                     asyncio.ensure_future(self._chat()), asyncio.ensure_future(self._lag())]
            await self.join_all()
            report["join_seconds"] = round(time.monotonic() - t0, 1)
            report["joined"] = len(self.members)
            report["join_failures"] = self.failures
            start = time.monotonic()
            end = start + o.seconds
            self._harvest()
            while time.monotonic() < end:
                await asyncio.sleep(max(0.0, min(o.interval, end - time.monotonic())))
                s = self.sample(time.monotonic() - start, self._harvest())
                logger.info("t=%.0f s rss=%.1f MB fds=%d sockets=%d media=%d errors=%d "
                            "lag=%.0f ms", s.t, s.rss / 2**20, s.fds, s.sockets_open,
                            s.media_packets, s.log_errors, s.client_lag * 1000)
                if self.server.proc is not None and self.server.proc.returncode is not None:
                    self.failures.append(f"server exited ({self.server.proc.returncode})")
                    break
            report["metrics"] = await self.server.metrics()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.close_members()
            await self.server.stop()
            setattr(signaling_client, "password_key", derive)  # noqa: B010
        report.update(self.summary())
        report["server_exit_code"] = self.server.exit_code
        report["errors"] = self.server.errors()[:50]
        report["media_failed_leaves"] = self.server.count("reason=media-failed")
        self._state.cleanup()
        return report

    async def close_members(self) -> None:
        for m in self.members:
            if m.bot is not None:
                with contextlib.suppress(Exception):
                    await m.bot.close()
            if m.receiver is not None:
                with contextlib.suppress(Exception):
                    await m.receiver.close()
            with contextlib.suppress(Exception):
                await m.client.close()

    def summary(self) -> dict[str, Any]:
        """Figures at the end of the warm-up and at the end, growth and slope."""
        o = self.opts
        samples = self.samples
        out: dict[str, Any] = {"samples": [s.to_json() for s in samples]}
        if not samples:
            return out
        after = [s for s in samples if s.t >= o.warmup] or samples[-1:]
        w, last = after[0], samples[-1]
        out.update({
            "warm_at_s": round(w.t, 1), "end_at_s": round(last.t, 1),
            "rss_mb_warm": round(w.rss / 2**20, 1), "rss_mb_end": round(last.rss / 2**20, 1),
            "rss_growth_mb": round((last.rss - w.rss) / 2**20, 2),
            "rss_slope_mb_per_min": _round(slope_per_minute([(s.t, s.rss / 2**20)
                                                             for s in after])),
            "fds_warm": w.fds, "fds_end": last.fds, "fds_growth": last.fds - w.fds,
            "fds_max": max(s.fds for s in after), "fds_min": min(s.fds for s in after),
            "sockets_open_end": last.sockets_open,
            "media_packets_last_interval": last.media_packets,
            "media_intervals_without_packets": sum(1 for s in samples if s.media_packets == 0)
            if o.media_rooms else None,
            "client_lag_ms_max": round(max(s.client_lag for s in samples) * 1000),
        })
        return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def print_report(r: dict[str, Any]) -> None:
    keys = ("joined", "join_seconds", "warm_at_s", "end_at_s", "rss_mb_warm", "rss_mb_end",
            "rss_growth_mb", "rss_slope_mb_per_min", "fds_warm", "fds_end", "fds_growth",
            "fds_min", "fds_max", "sockets_open_end", "media_packets_last_interval",
            "media_intervals_without_packets", "media_failed_leaves", "client_lag_ms_max",
            "server_exit_code")
    for k in keys:
        print(f"{k}: {r.get(k)}")
    print("metrics:", json.dumps(r.get("metrics", {}), sort_keys=True))
    print(f"join failures: {len(r.get('join_failures', []))}")
    errors = r.get("errors", [])
    print(f"ERROR lines in the server's log: {len(errors)}")
    for line in errors[:10]:
        print("  " + line)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--sockets", type=int, default=200)
    p.add_argument("--rooms", type=int, default=40)
    p.add_argument("--media-rooms", type=int, default=5)
    p.add_argument("--publishers", type=int, default=1, help="per media room")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=0.0, help="instead of --minutes")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    p.add_argument("--chat-interval", type=float, default=10.0)
    p.add_argument("--fps", type=int, default=10, help="video frames/s of a publisher")
    p.add_argument("--server-log-level", default="info")
    p.add_argument("--server-log", default="", help="keep the server's log in this file")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the server and of this process (negative: root; on a "
                        "machine shared with other benchmarks)")
    p.add_argument("--json", default="", help="write the full report here")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc", "peers", "signaling"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    opts = Options(sockets=args.sockets, rooms=args.rooms, media_rooms=args.media_rooms,
                   publishers=args.publishers,
                   seconds=args.seconds or args.minutes * 60.0, interval=args.interval,
                   warmup=args.warmup, chat_interval=args.chat_interval, fps=args.fps,
                   log_level=args.server_log_level, nice=args.nice,
                   server_log=args.server_log)
    report = asyncio.run(Soak(opts).run())
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print_report(report)


if __name__ == "__main__":
    main()
