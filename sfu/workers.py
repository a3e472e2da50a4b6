"""SFU worker processes behind ``sealroom serve --workers N`` (docs/SFU.md, docs/DEPLOY.md).

One Python process runs one event loop on one core, so the media plane scales up the way
mediasoup's does: N child processes, each with its own uvloop event loop and one
:class:`sfu.Sfu`, and every room pinned to one of them. A room is placed on the least
loaded live worker (fewest participants) at its first join and stays there until it is
empty; every message of its participants goes to that worker, and what the worker sends
to a participant comes back to the parent and out through the ``send`` callback given at
join. The signaling server sees only :class:`SfuWorkers`, which implements the same
``MediaPlane`` protocol as ``Sfu`` (signaling/server.py).

IPC: one Unix stream socketpair per worker; a frame is a 4-byte big-endian length and a
UTF-8 JSON object with an ``op`` (JSON rather than pickle: a frame can be read by a
person, and decoding one never runs code). Parent → worker: ``start``, ``join``,
``handle``, ``leave``, ``stats``, ``close``; worker → parent: ``ready``, ``send``,
``stats``, ``closed``. Both ends write through a bounded queue and a writer task.

Failure handling: a worker that exits or breaks the framing is detected by the parent
(EOF on its socket); each of its participants gets ``sfu-error`` ``transport-failed``,
which the signaling server turns into ``member-left`` (``media-failed``) and close 1013,
exactly as for an ICE failure; the worker is restarted (with back-off if it keeps dying)
and meanwhile new rooms go to the live ones. A worker exits when its parent goes away
(EOF on the socket, also after SIGKILL of the parent), ignores SIGINT (Ctrl-C reaches
the whole process group; the parent stops the workers in order) and exits cleanly on
SIGTERM. Workers see SDP and ``sfu-*`` messages only, never signaling secrets, and log
with the parent's level and format (docs/DEPLOY.md, Logs) through the set-up function the
application names (``log_setup``, "module:function"; this package imports no application
code).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sfu import Sfu, SfuConfig
from sfu.looplag import LoopLag

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

FRAME_MAX = 1 << 20  # bytes of JSON in one frame; an SDP is at most 64 KiB (sfu.MAX_SDP)
QUEUE_MAX = 1024  # frames waiting to be written to the socket, on either end
PID_QUEUE_MAX = 64  # messages of one participant waiting inside a worker
MIN_PORTS = 2  # one participant needs two ICE sessions (publish, subscribe)
STATS_INTERVAL = 1.0  # seconds between the counters a worker pushes to the parent
START_TIMEOUT = 30.0  # a new worker must answer ``ready`` within this (imports aiortc)
CLOSE_TIMEOUT = 6.0  # a worker asked to close is killed after this
CHILD_CLOSE_TIMEOUT = 4.0  # the worker's own budget for Sfu.close()
PLACE_TIMEOUT = 10.0  # a join waits this long for a live worker when none is running
RESTART_MIN, RESTART_MAX = 0.2, 30.0  # restart back-off, seconds
STABLE_AFTER = 30.0  # a worker that lived this long resets the back-off
WORKER_LOST = "the media worker serving this room stopped"


class FrameError(Exception):
    """The other end broke the framing (too long, not JSON, no ``op``)."""


def encode(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > FRAME_MAX:
        raise FrameError(f"frame of {len(data)} bytes exceeds {FRAME_MAX}")
    return struct.pack("!I", len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None at a clean end of stream (between frames)."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError("stream ended inside a frame header") from None
    (size,) = struct.unpack("!I", head)
    if size > FRAME_MAX:
        raise FrameError(f"frame of {size} bytes exceeds {FRAME_MAX}")
    try:
        data = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError("stream ended inside a frame") from None
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise FrameError("frame is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise FrameError("frame is not an object with a string op")
    return obj


class Channel:
    """One end of a worker socket: frames in, frames out through a bounded queue."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.task = asyncio.get_running_loop().create_task(self._write())

    def post(self, obj: dict[str, Any]) -> bool:
        """Queue a frame; False if the queue is full (the other end stopped reading)."""
        try:
            frame = encode(obj)
        except (FrameError, TypeError, ValueError) as exc:
            log.warning("dropped %s frame: %s", obj.get("op"), exc)
            return False
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    async def read(self) -> dict[str, Any] | None:
        return await read_frame(self.reader)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                frame = await self.queue.get()
                if frame is None:
                    return
                self.writer.write(frame)
                await self.writer.drain()

    async def close(self, timeout: float = 1.0) -> None:
        """Flush what is queued (bounded by ``timeout``), then close the socket."""
        try:
            self.queue.put_nowait(None)
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except (asyncio.QueueFull, TimeoutError):
            self.task.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await asyncio.wait_for(self.writer.wait_closed(), timeout)


def split_ports(port_min: int, port_max: int, n: int) -> list[tuple[int, int]]:
    """Give each of ``n`` workers its own sub-range of ``port_min..port_max``.

    0/0 (any port) stays 0/0 for everyone: the kernel then never hands one port to two
    processes. The last worker takes the remainder of an uneven split.
    """
    if n < 1:
        raise ValueError("at least one worker")
    if port_min == 0 and port_max == 0:
        return [(0, 0)] * n
    per = (port_max - port_min + 1) // n
    if per < MIN_PORTS:
        raise ValueError(f"UDP port range {port_min}-{port_max} is too small for {n} workers: "
                         f"each needs at least {MIN_PORTS} ports")
    ranges = [(port_min + i * per, port_min + (i + 1) * per - 1) for i in range(n)]
    ranges[-1] = (ranges[-1][0], port_max)
    return ranges


def worker_count(requested: int) -> int:
    """``--workers``: N as given, or 0 = one per CPU core this process may run on."""
    if requested < 0:
        raise ValueError("--workers is 0 (one per core) or a positive number")
    if requested == 0:
        return len(os.sched_getaffinity(0)) or 1
    return requested


# -- parent side -------------------------------------------------------------------------


@dataclass
class Worker:
    """One worker process as the parent sees it; a restart makes a new ``Worker``."""

    index: int
    ports: tuple[int, int]
    restarts: int = 0
    proc: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    reader: asyncio.Task[None] | None = None
    alive: bool = False
    started: float = 0.0
    rooms: Counter[str] = field(default_factory=Counter)  # participants per room
    counters: dict[str, int] = field(default_factory=dict)  # last snapshot it pushed
    gauges: dict[str, float] = field(default_factory=dict)
    fresh: asyncio.Event = field(default_factory=asyncio.Event)  # set at every snapshot

    @property
    def load(self) -> int:
        return sum(self.rooms.values())

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def post(self, obj: dict[str, Any]) -> bool:
        return self.alive and self.channel is not None and self.channel.post(obj)


@dataclass
class Member:
    worker: Worker
    room: str
    send: Send


@dataclass(frozen=True)
class WorkerStats:
    """What /metrics shows per worker (label ``worker``)."""

    index: int
    alive: bool
    restarts: int
    counters: dict[str, int]
    gauges: dict[str, float]


class SfuWorkers:
    """The media plane as N worker processes; a drop-in ``MediaPlane`` for the server."""

    def __init__(self, config: SfuConfig, workers: int, *, log_level: str = "info",
                 log_format: str = "text", log_setup: str = "") -> None:
        self.config = config
        self.log_level = log_level
        self.log_format = log_format
        self.log_setup = log_setup  # "module:function(level, fmt)" run in each worker
        ranges = split_ports(config.port_min, config.port_max, workers)
        self.workers: list[Worker] = [Worker(i, r) for i, r in enumerate(ranges)]
        self.members: dict[str, Member] = {}
        self.rooms: dict[str, Worker] = {}  # placement: room -> its worker
        self.retired: Counter[str] = Counter()  # counters of workers that have exited
        self.own: Counter[str] = Counter()  # errors the parent answers itself
        self.closing = False
        self._live = asyncio.Event()  # set whenever a worker comes up
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; raises (after stopping them all) if one does not come up."""
        try:
            await asyncio.gather(*(self._spawn(w) for w in self.workers))
        except BaseException:
            await self.close()
            raise

    async def _spawn(self, w: Worker) -> None:
        cfg = dataclasses.replace(self.config, port_min=w.ports[0], port_max=w.ports[1])
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.proc = await asyncio.create_subprocess_exec(
                # -P: not the working directory first on sys.path (a stray ./sfu there
                # would shadow ours); the parent found its modules without it.
                sys.executable, "-P", "-m", "sfu.workers", "--fd", str(child.fileno()),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent)
            w.channel = Channel(reader, writer)
            w.channel.post({"op": "start", "index": w.index, "config": dataclasses.asdict(cfg),
                            "log_level": self.log_level, "log_format": self.log_format,
                            "log_setup": self.log_setup})
            hello = await asyncio.wait_for(w.channel.read(), START_TIMEOUT)
            if hello is None or hello.get("op") != "ready":
                raise FrameError(f"expected ready, got {hello and hello.get('op')!r}")
        except BaseException as exc:  # also cancelled (close() during a restart): no orphan
            if w.channel is None:
                parent.close()
            await asyncio.shield(self._reap(w, kill=True))
            if isinstance(exc, FrameError | TimeoutError | OSError):
                raise RuntimeError(f"sfu worker {w.index} did not start: {exc}") from None
            raise
        w.alive = True
        w.started = time.monotonic()
        w.reader = asyncio.get_running_loop().create_task(self._read(w))
        self._live.set()
        log.info("sfu worker %d running: pid %d, UDP ports %s", w.index, w.proc.pid,
                 "any" if w.ports == (0, 0) else f"{w.ports[0]}-{w.ports[1]}")

    async def _reap(self, w: Worker, kill: bool) -> None:
        """Make sure the process is gone and waited for (no zombies), and its socket closed."""
        if w.proc is not None:
            if kill and w.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
            try:
                await asyncio.wait_for(w.proc.wait(), CLOSE_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
                await w.proc.wait()
        if w.channel is not None:
            await w.channel.close(timeout=0.5)

    async def _read(self, w: Worker) -> None:
        assert w.channel is not None
        try:
            while True:
                frame = await w.channel.read()
                if frame is None:
                    break
                op = frame["op"]
                if op == "send":
                    await self._deliver(w, frame)
                elif op == "stats":
                    counters, gauges = frame.get("counters"), frame.get("gauges")
                    if isinstance(counters, dict) and isinstance(gauges, dict):
                        w.counters = {str(k): int(v) for k, v in counters.items()}
                        w.gauges = {str(k): float(v) for k, v in gauges.items()}
                        w.fresh.set()
                elif op == "closed":
                    break
        except (FrameError, ConnectionError, TypeError, ValueError) as exc:
            log.error("sfu worker %d: broken channel: %s", w.index, exc)
        finally:
            if not self.closing:
                await self._lost(w)

    async def _deliver(self, w: Worker, frame: dict[str, Any]) -> None:
        pid, msg = frame.get("pid"), frame.get("msg")
        member = self.members.get(pid) if isinstance(pid, str) else None
        if member is None or member.worker is not w or not isinstance(msg, dict):
            return  # left meanwhile: the in-process Sfu would not send to it either
        try:
            await member.send(msg)
        except Exception:
            log.exception("delivering %s to %s", msg.get("type"), pid)

    async def _lost(self, w: Worker) -> None:
        """A worker died: fail its participants, forget its rooms, start a new one."""
        if not w.alive:
            return
        w.alive = False
        self.retired.update(w.counters)  # counters stay monotonic across restarts
        w.counters, w.gauges = {}, {}
        lost = [(pid, m) for pid, m in self.members.items() if m.worker is w]
        self.own["worker_exits"] += 1
        for pid, _ in lost:
            del self.members[pid]
        for room in [r for r, owner in self.rooms.items() if owner is w]:
            del self.rooms[room]
        w.rooms.clear()
        for pid, m in lost:
            self.own["transport_failures"] += 1
            self.own["errors"] += 1
            self.own["error_transport-failed"] += 1
            try:
                await m.send({"type": "sfu-error", "id": "transport-failed",
                              "message": WORKER_LOST})
            except Exception:
                log.exception("telling %s its worker is gone", pid)
        # Reaped only now: the participants' rejoin does not wait for the process's end
        # (docs/SFU.md "Faults": every step between the crash and the rejoin counts).
        await self._reap(w, kill=True)
        code = w.proc.returncode if w.proc is not None else None
        log.error("sfu worker %d (pid %s) exited with code %s; %d participants lose media",
                  w.index, w.pid, code, len(lost))
        if not self.closing:
            lived = time.monotonic() - w.started
            self._spawn_task(self._restart(w, quick=lived < STABLE_AFTER))

    def _spawn_task(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, old: Worker, quick: bool) -> None:
        delay = RESTART_MIN * (2 ** min(old.restarts, 8) if quick else 1)
        while not self.closing:
            await asyncio.sleep(min(delay, RESTART_MAX))
            if self.closing:
                return
            new = Worker(old.index, old.ports, restarts=old.restarts + 1)
            self.workers[old.index] = new
            try:
                await self._spawn(new)
            except Exception as exc:
                log.error("restarting sfu worker %d failed: %s", old.index, exc)
                delay *= 2
                continue
            log.info("sfu worker %d restarted (restart #%d)", new.index, new.restarts)
            return

    def _wedged(self, w: Worker) -> None:
        """Its queue is full: the worker stopped reading. Kill it; ``_lost`` follows."""
        if w.alive and w.proc is not None and w.proc.returncode is None:
            log.error("sfu worker %d does not read its messages: killing it", w.index)
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()

    async def close(self) -> None:
        """Stop every worker: ask, wait up to CLOSE_TIMEOUT, then kill. Idempotent."""
        if self.closing:
            return
        self.closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._stop(w) for w in self.workers))
        self.members.clear()
        self.rooms.clear()

    async def _stop(self, w: Worker) -> None:
        if w.proc is None:
            return
        if w.channel is not None:
            w.channel.post({"op": "close"})
        try:
            await asyncio.wait_for(w.proc.wait(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("sfu worker %d did not stop in %.0f s: killing it", w.index,
                        CLOSE_TIMEOUT)
        await self._reap(w, kill=True)
        if w.reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.reader, 1.0)
        if w.alive:
            w.alive = False
            self.retired.update(w.counters)
            w.counters = {}

    # -- MediaPlane -----------------------------------------------------------------------

    async def join(self, room: str, pid: str, send: Send) -> None:
        if pid in self.members:
            await self.leave(pid)
        w = self.rooms.get(room)
        if w is None or not w.alive:
            w = await self._place()
            if w is None:
                self.own["errors"] += 1
                self.own["error_transport-failed"] += 1
                await send({"type": "sfu-error", "id": "transport-failed",
                            "message": "no media worker is running"})
                return
            placed = self.rooms.get(room)  # another join may have placed it meanwhile
            if placed is not None and placed.alive:
                w = placed
            else:
                self.rooms[room] = w
        self.members[pid] = Member(w, room, send)
        w.rooms[room] += 1
        if not w.post({"op": "join", "room": room, "pid": pid}):
            self._wedged(w)

    def accepting(self) -> bool:
        """At least one worker is alive to take a room (for /healthz/ready)."""
        return not self.closing and any(w.alive for w in self.workers)

    async def _place(self) -> Worker | None:
        """The live worker with the fewest participants (lowest index on a tie)."""
        deadline = time.monotonic() + PLACE_TIMEOUT
        while not self.closing:
            live = [w for w in self.workers if w.alive]
            if live:
                return min(live, key=lambda w: (w.load, w.index))
            self._live.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._live.wait(), remaining)
        return None

    async def handle(self, pid: str, msg: dict[str, Any]) -> None:
        member = self.members.get(pid)
        if member is None or not member.worker.alive:
            # As Sfu.handle: counted, and nobody to answer.
            self.own["errors"] += 1
            self.own["error_not-joined"] += 1
            return
        if not member.worker.post({"op": "handle", "pid": pid, "msg": msg}):
            self._wedged(member.worker)

    async def leave(self, pid: str) -> None:
        member = self.members.pop(pid, None)
        if member is None:
            return
        w, room = member.worker, member.room
        w.rooms[room] -= 1
        if w.rooms[room] <= 0:
            del w.rooms[room]
            if self.rooms.get(room) is w:
                del self.rooms[room]
        if w.alive and not w.post({"op": "leave", "pid": pid}):
            self._wedged(w)

    # -- numbers --------------------------------------------------------------------------

    def worker_of(self, room: str) -> int | None:
        """Index of the worker a room is pinned to, if it has media sessions."""
        w = self.rooms.get(room)
        return w.index if w is not None else None

    def stats(self) -> dict[str, int]:
        """Sfu.stats() summed over the workers (as last pushed, at most 1 s old)."""
        total: Counter[str] = Counter(self.retired)
        total.update(self.own)
        for w in self.workers:
            total.update(w.counters)
        return dict(total)

    def gauges(self) -> dict[str, int]:
        """Rooms, participants, publishers, … of the live workers (Sfu.gauges)."""
        total: Counter[str] = Counter()
        for w in self.workers:
            if w.alive:
                total.update({k: int(v) for k, v in w.gauges.items() if k in GAUGE_KEYS})
        return {k: total.get(k, 0) for k in GAUGE_KEYS}

    def worker_stats(self) -> list[WorkerStats]:
        return [WorkerStats(w.index, w.alive, w.restarts, dict(w.counters), dict(w.gauges))
                for w in self.workers]

    async def refresh(self, timeout: float = 2.0) -> None:
        """Ask every live worker for its counters now and wait (bounded) for the answers.

        A worker answers when it reads the request: messages sent before it may still be
        in progress in that worker's participant tasks."""
        live = [w for w in self.workers if w.alive]
        for w in live:
            w.fresh.clear()
            w.post({"op": "stats"})
        waits = [asyncio.wait_for(w.fresh.wait(), timeout) for w in live]
        await asyncio.gather(*waits, return_exceptions=True)


GAUGE_KEYS = ("rooms", "participants", "publishers", "subscribers", "published_tracks")


# -- worker side -------------------------------------------------------------------------


class WorkerProcess:
    """Inside a worker: one Sfu, one task per participant so each one's messages keep
    their order (as the server's per-connection dispatch does) without one slow
    negotiation holding up the others."""

    def __init__(self, index: int, sfu: Sfu, channel: Channel) -> None:
        self.index = index
        self.sfu = sfu
        self.channel = channel
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.lag = LoopLag()
        self.stop = asyncio.Event()
        self.dropped = 0  # frames to the parent dropped on a full queue

    async def run(self) -> None:
        self.lag.start()
        loop = asyncio.get_running_loop()
        ticker = loop.create_task(self._ticker())
        reader = loop.create_task(self._read())
        stopper = loop.create_task(self.stop.wait())
        await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (ticker, reader, stopper):
            task.cancel()
        await asyncio.gather(ticker, reader, stopper, return_exceptions=True)
        # Let each participant finish what it is doing (cancelling a negotiation or a
        # leave half-way leaves aiortc in a bad state), bounded; Sfu.close() does the rest.
        pending = [*self.tasks.values(), *self.background]
        for queue in list(self.queues.values()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait({"op": "stop"})
        if pending:
            await asyncio.wait(pending, timeout=CHILD_CLOSE_TIMEOUT / 2)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            await asyncio.wait_for(self.sfu.close(), CHILD_CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("Sfu.close() took over %.0f s", CHILD_CLOSE_TIMEOUT)
        await self.lag.stop()
        self._post_stats()
        self.channel.post({"op": "closed"})
        await self.channel.close(timeout=1.0)
        log.info("stopped")

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.channel.read()
                if frame is None:
                    log.info("parent went away: stopping")
                    return
                op = frame["op"]
                if op in ("join", "handle", "leave") and isinstance(frame.get("pid"), str):
                    self._route(frame["pid"], frame)
                elif op == "stats":
                    self._post_stats()
                elif op == "close":
                    return
                else:
                    log.warning("unexpected op %.40r", op)
        except (FrameError, ConnectionError) as exc:
            log.error("broken channel: %s", exc)

    def _route(self, pid: str, frame: dict[str, Any]) -> None:
        op = frame["op"]
        queue = self.queues.get(pid)
        if queue is None:
            if op == "leave":
                return
            if op == "handle":  # not joined: Sfu.handle counts it, as in process
                self._background(self.sfu.handle(pid, frame.get("msg")))  # type: ignore[arg-type]
                return
            queue = self.queues[pid] = asyncio.Queue(maxsize=PID_QUEUE_MAX)
            self.tasks[pid] = asyncio.get_running_loop().create_task(self._serve(pid, queue))
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            if op == "leave":  # it must get through: drop what is pending instead
                self.tasks.pop(pid).cancel()
                del self.queues[pid]
                self._background(self.sfu.leave(pid))
                return
            log.warning("%s has %d messages pending; dropping its media", pid, PID_QUEUE_MAX)
            self._background(self._send(pid, {"type": "sfu-error", "id": "transport-failed",
                                              "message": "media worker overloaded"}))

    def _background(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _serve(self, pid: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        async def send(msg: dict[str, Any]) -> None:
            await self._send(pid, msg)

        try:
            while True:
                frame = await queue.get()
                op = frame["op"]
                try:
                    if op == "join" and isinstance(frame.get("room"), str):
                        await self.sfu.join(frame["room"], pid, send)
                    elif op == "handle":
                        await self.sfu.handle(pid, frame.get("msg"))  # type: ignore[arg-type]
                    elif op == "leave":
                        await self.sfu.leave(pid)
                        return
                    elif op == "stop":  # the worker is closing; Sfu.close() leaves it
                        return
                except Exception:
                    log.exception("%s for %s", op, pid)
        finally:
            if self.queues.get(pid) is queue:
                del self.queues[pid]
                self.tasks.pop(pid, None)

    async def _send(self, pid: str, msg: dict[str, Any]) -> None:
        if not self.channel.post({"op": "send", "pid": pid, "msg": msg}):
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1st, 2nd, 4th, …: no log flood
                log.warning("parent not reading: %d messages to participants dropped",
                            self.dropped)

    def _post_stats(self) -> None:
        gauges: dict[str, float] = dict(self.sfu.gauges())
        gauges["cpu_seconds"] = time.process_time()
        gauges["loop_lag_max"] = self.lag.max
        gauges["loop_lag_last"] = self.lag.last
        self.channel.post({"op": "stats", "counters": self.sfu.stats(), "gauges": gauges})

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self._post_stats()


class _Tag(logging.Filter):
    """Prefix every record of a worker with ``sfu-worker[i]`` (one stderr for all)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.prefix = f"sfu-worker[{index}] "

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_sealroom_tagged", False):
            record.msg = self.prefix + str(record.msg)
            setattr(record, "_sealroom_tagged", True)  # noqa: B010 - a LogRecord attribute
        return True


def setup_logging(setup: str, level: str, fmt: str) -> None:
    """Configure a worker's logging: the application's ``module:function(level, fmt)`` if
    named, else the standard library's default handler at ``level``."""
    if setup:
        module, _, name = setup.partition(":")
        getattr(importlib.import_module(module), name)(level, fmt)
    else:
        logging.basicConfig(level=level.upper())


async def _child(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    channel = Channel(reader, writer)
    start = await channel.read()
    if start is None or start["op"] != "start":
        raise SystemExit("sfu.workers: expected a start frame from the parent")
    index = int(start["index"])
    setup_logging(str(start.get("log_setup", "")), str(start.get("log_level", "info")),
                  str(start.get("log_format", "text")))
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Tag(index))
    known = {f.name for f in dataclasses.fields(SfuConfig)}
    config = SfuConfig(**{k: v for k, v in dict(start["config"]).items() if k in known})
    worker = WorkerProcess(index, Sfu(config), channel)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.stop.set)
    channel.post({"op": "ready", "pid": os.getpid()})
    log.info("ready (pid %d)", os.getpid())
    await worker.run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a worker process; only ``SfuWorkers`` starts it."""
    parser = argparse.ArgumentParser(prog="python -m sfu.workers")
    parser.add_argument("--fd", type=int, required=True, help="the socket to the parent")
    args = parser.parse_args(argv)
    # Ctrl-C signals the whole process group: the parent stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_child(args.fd))
    else:
        uvloop.run(_child(args.fd))
    return 0


if __name__ == "__main__":
    # Run as the module itself, so its logger is "sfu.workers", not "__main__".
    from sfu import workers

    raise SystemExit(workers.main())
