"""The signaling server: aiohttp, static web client, and the ``/ws`` WebSocket.

The server is a relay and a doorman that cannot read the room. Every client message goes
through :meth:`SignalingServer._dispatch`, which turns any :class:`SignalingError` into the
documented ``error`` message or close code (docs/PROTOCOL.md) and never lets an exception
escape a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from aiohttp import WSCloseCode, WSMsgType, web

from cluster.errors import ClusterUnavailable
from cluster.roomstore import RoomRecord
from e2ee.roomcrypto import (
    ExcessiveKdfParams,
    KdfParams,
    WeakKdfParams,
    b64,
    unb64,
    verify_join,
)
from signaling import resume, turn
from signaling.bridge import RelayedSocket
from signaling.config import ServerConfig
from signaling.errors import SPECS, ErrorId, SignalingError
from signaling.fields import bad, get_b64, get_int, get_object, get_room, get_str
from signaling.logsafe import safe
from signaling.ratelimit import AddressBuckets, GuessLimits, TokenBucket, address_key
from signaling.resume import Credential
from signaling.rooms import REUSE_GRACE, Member, Room, RoomRegistry
from signaling.static import web_dir, worker_dir

if TYPE_CHECKING:  # with --redis only (sealroom/cli.py): this module never imports redis
    from cluster.cluster import Cluster

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
WEB_DIR = web_dir()  # the wheel's copy when installed, else the checkout's (static.py)
WORKER_DIR = worker_dir()

# Types only the server may send (docs/PROTOCOL.md, Other messages): a client sending one
# is closed.
SERVER_ONLY_TYPES = frozenset(
    {
        "challenge",
        "joined",
        "member-joined",
        "member-left",
        "sealed",
        "lock",
        "error",
        "pong",
        "speaker",
        "stream-state",
        "sfu-error",
        "sfu-left",
        "sfu-layers",
        "going-away",
        "resume",
    }
)
# Seconds of refill an address owes after a socket of it was closed for the address's
# message rate: meanwhile its new sockets get HTTP 429 (docs/PROTOCOL.md "Transport").
ADDRESS_PENALTY = 1.0
MAX_SEALED_CT = 48 * 1024  # decoded ciphertext bytes of one sealed relay message, tag included
MIN_SEALED_CT = 16  # the GCM tag alone


def _refuse_constant(name: str) -> Any:
    """json.loads accepts NaN, Infinity and -Infinity, which are not JSON (RFC 8259 §6)."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number too large for a double (1e999) would parse as infinity: refuse it."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def parse_message(data: str) -> dict[str, Any]:
    """One client frame → a JSON object, finite numbers only; else ``bad-json``."""
    try:
        msg = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise SignalingError(ErrorId.BAD_JSON) from None
    if not isinstance(msg, dict):
        raise SignalingError(ErrorId.BAD_JSON)
    return msg


def encode_message(msg: dict[str, Any]) -> str:
    """A server message on the wire: compact JSON, never a non-finite number."""
    return json.dumps({"v": PROTOCOL_VERSION, **msg}, separators=(",", ":"), allow_nan=False)


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (encoded only when it is not ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _host_name(host: str) -> str | None:
    """The name of a Host header (RFC 9110 §7.2: uri-host [":" port]), lower case, no
    trailing dot; an IPv6 literal without its brackets. None if it is not well formed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name
    name, sep, port = host.partition(":")
    if sep and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def served_host_names(cfg: ServerConfig) -> frozenset[str] | None:
    """Host names this server answers for; None when ``allowed_hosts`` holds ``*``.

    IP literals are always served (DNS rebinding needs a name the attacker controls), and
    so are ``localhost``, ``cfg.host`` and the hosts of ``cfg.allowed_origins``.
    """
    if "*" in cfg.allowed_hosts:
        return None
    names = {"localhost", cfg.host, *cfg.allowed_hosts}
    for origin in cfg.allowed_origins:
        names.add(urlsplit(origin).hostname or "")
    out = {n for n in (_host_name(name) for name in names if name) if n}
    return frozenset(out)


def host_allowed(host: str, names: frozenset[str] | None) -> bool:
    name = _host_name(host)
    if name is None:
        return False
    return names is None or name in names or _is_ip(name)


class CappedWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocketResponse with the close reason ``too-big`` on an over-long message.

    aiohttp's reader (``_websocket/reader_py.py`` and its C twin) refuses a frame when
    ``payload length >= max_msg_size - already buffered fragments``: the limit passed to it is
    exclusive, so the server passes ``max_message + 1``. It refuses before buffering the payload
    and then closes from ``receive()`` with ``close(code=1009)`` and an empty reason; this
    override puts the error id there (RFC 6455 §7.4.1: 1009, message too big).
    """

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = ErrorId.TOO_BIG.value.encode()
        return await super().close(code=code, message=message, drain=drain)


class Socket(Protocol):
    """What a Connection writes to: aiohttp's WebSocketResponse, or a socket bridged from
    another node (signaling/bridge.py RelayedSocket)."""

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"",
                    drain: bool = True) -> bool: ...


class MediaPlane(Protocol):
    """What the signaling server needs of the SFU (sfu.Sfu implements it)."""

    async def join(
        self, room: str, pid: str, send: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None: ...

    async def handle(self, pid: str, msg: dict[str, Any]) -> None: ...

    async def leave(self, pid: str) -> None: ...

    async def close(self) -> None: ...

    def accepting(self) -> bool:
        """Whether a join now would get media (e.g. at least one SFU worker is alive)."""
        ...


class MetricsExporter(Protocol):
    """What serves ``/metrics`` (sealroom/metrics.py ``Metrics``). The application hands
    the server a factory that takes the server; this package imports no exporter."""

    content_type: str

    def render(self) -> bytes:
        """The body of one scrape."""
        ...

    def start(self) -> None:
        """Called once the event loop runs (app startup)."""
        ...

    async def stop(self) -> None:
        """Called at app cleanup."""
        ...


class Backlog:
    """The server's accounting of bytes queued for sockets and not yet handed to the kernel.

    A frame counts from ``post`` until ``send_str`` returns for it (so a frame waiting for a
    reader that does not read counts); a frame broadcast to many sockets is one string in
    memory but counts once per socket. ``peak`` is the largest ``total`` seen.
    """

    __slots__ = ("peak", "total")

    def __init__(self) -> None:
        self.total = 0
        self.peak = 0

    def add(self, size: int) -> None:
        self.total += size
        if self.total > self.peak:
            self.peak = self.total


class Connection:
    """One WebSocket: its admission challenge, rate limit, room and outbox."""

    def __init__(self, ws: Socket, ip: str, origin: str, cfg: ServerConfig,
                 *, transport: asyncio.Transport | None = None,
                 backlog: Backlog | None = None, stats: Counter[str] | None = None) -> None:
        self.ws = ws
        self.ip = ip
        self.ip_key = address_key(ip)  # what the per-address limits count
        self.origin = origin
        self.cfg = cfg
        self.transport = transport
        self.backlog = backlog if backlog is not None else Backlog()
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.conn_id = secrets.token_urlsafe(12)
        self.nonce = secrets.token_bytes(32)
        self.bucket = TokenBucket(cfg.rate, cfg.burst)
        self.pid: str | None = None
        self.room: Room | None = None
        self.last_seq = -1
        self.closing = False
        self.slow = False  # closing as a slow consumer (counted once)
        self.closer: asyncio.Task[None] | None = None
        # Several nodes (docs/DEPLOY.md): on the entrance, the node this socket is bridged
        # to; on the host, the entrance node a bridged socket comes from.
        self.bridge: str | None = None
        self.via: str | None = None
        # A bounded outbox with its own writer: a client that stops reading fills only its
        # own queue, bounded in messages and in bytes, and is closed; it never stalls a
        # room's broadcast. `queued` is this socket's share of the backlog.
        self.queued = 0
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=cfg.outbox)
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def new_challenge(self) -> dict[str, Any]:
        self.nonce = secrets.token_bytes(32)
        return {"type": "challenge", "conn": self.conn_id, "nonce": b64(self.nonce)}

    def post(self, msg: dict[str, Any]) -> None:
        self.post_frame(encode_message(msg))

    def post_frame(self, frame: str) -> None:
        """Queue one encoded message (``encode_message``: ASCII, so len() is its bytes)."""
        if self.closing or self.slow:
            return
        size = len(frame)
        if self.queued + size > self.cfg.outbox_bytes or self.outbox.full():
            self._slow("outbox full")
            return
        self.outbox.put_nowait(frame)
        self.queued += size
        self.backlog.add(size)

    def _release(self, size: int) -> None:
        self.queued -= size
        self.backlog.total -= size

    def _slow(self, why: str) -> None:
        """Close a socket that does not take its messages: 1013 ``slow-consumer``."""
        if self.closing or self.slow:
            return
        self.slow = True
        self.stats["errors.slow-consumer"] += 1
        self.stats["closes.slow-consumer"] += 1
        log.info("closed: slow consumer (%s) ip=%s queued=%d", why, safe(self.ip), self.queued)
        # Kept: the loop holds only a weak reference to a task.
        self.closer = asyncio.get_running_loop().create_task(
            self.close_with(ErrorId.SLOW_CONSUMER))

    async def _write(self) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                if frame is None:
                    return
                try:
                    # aiohttp writes the whole frame to the transport and then waits for
                    # the transport to drain below its high-water mark: the wait is where
                    # a socket that does not read shows, and it is bounded.
                    async with asyncio.timeout(self.cfg.drain_timeout):
                        await self.ws.send_str(frame)
                except TimeoutError:
                    self._slow(f"nothing taken for {self.cfg.drain_timeout:g} s")
                    return
                except (ConnectionError, RuntimeError):
                    return
                finally:
                    self._release(len(frame))
        finally:
            self._discard_queue()

    def _discard_queue(self) -> None:
        """Forget what will never be sent (the writer has stopped): its bytes are freed."""
        while not self.outbox.empty():
            frame = self.outbox.get_nowait()
            if frame is not None:
                self._release(len(frame))

    def _abort_if_stuck(self) -> None:
        """Reset a connection whose transport still holds bytes the peer has not taken."""
        # No isinstance check: uvloop's transports are not asyncio.Transport subclasses.
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > 0:
            self.stats["ws_resets"] += 1
            transport.abort()

    async def close_with(self, error_id: ErrorId) -> None:
        code = SPECS[error_id].close_code or WSCloseCode.OK
        await self.close_as(code, error_id.value)

    async def close_as(self, code: int, reason: str) -> None:
        """Flush what is queued, then close with ``code`` and ``reason``."""
        if self.closing:
            return
        self.closing = True
        # Flush what is queued (the error message that explains the close), briefly;
        # a client too slow to take it is closed at once.
        try:
            self.outbox.put_nowait(None)
            await asyncio.wait_for(asyncio.shield(self.writer), self.cfg.close_grace)
        except (asyncio.QueueFull, TimeoutError):
            self.writer.cancel()
        # A peer that does not take even the close frame within close_grace is reset:
        # otherwise close() would wait on the transport's drain, or leave a transport
        # closing with unsent bytes, for as long as the peer keeps not reading.
        asyncio.get_running_loop().call_later(self.cfg.close_grace, self._abort_if_stuck)
        await self.ws.close(code=code, message=reason.encode())

    async def shutdown(self) -> None:
        self.closing = True
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)
        try:
            await asyncio.wait_for(self.writer, 2.0)
        except (TimeoutError, asyncio.CancelledError):
            self.writer.cancel()
        # A socket aiohttp closed itself (no pong) may still hold unsent bytes: reset it
        # then, or it would stay open for as long as the peer keeps not reading.
        asyncio.get_running_loop().call_later(self.cfg.close_grace, self._abort_if_stuck)


class SignalingServer:
    def __init__(self, cfg: ServerConfig, media: MediaPlane | None = None, *,
                 metrics: Callable[[SignalingServer], MetricsExporter] | None = None,
                 cluster: Cluster | None = None) -> None:
        self.cfg = cfg
        self.media = media
        # Several nodes (--redis, docs/DEPLOY.md "Several nodes"); None: this process is
        # the whole deployment, and nothing below touches Redis.
        self.cluster = cluster
        # Entrance side: this node's sockets bridged to a room's host, by sid (conn_id).
        self.bridges: dict[str, Connection] = {}
        # Host side: sockets bridged here from an entrance, by (entrance, sid), with the
        # queue of their frames (handled in order, one task per socket).
        self.relayed: dict[tuple[str, str], tuple[Connection, asyncio.Queue[str | None]]] = {}
        self.rooms = RoomRegistry(
            max_members=cfg.max_members,
            max_rooms_per_ip=cfg.max_rooms_per_ip,
            lock_after=cfg.lock_after,
            empty_ttl=cfg.empty_ttl,
        )
        if cluster is not None:
            self.rooms.on_expire = self._room_expired
        self.conns: dict[str, Connection] = {}  # by participant id, once admitted
        self.per_ip: Counter[str] = Counter()
        # Wrong passwords per address and per room (signaling/ratelimit.py GuessLimits).
        self.guesses = GuessLimits(cfg.fail_limit_ip, cfg.fail_limit_room, cfg.fail_window)
        # Messages per address over all its sockets, surviving reconnects.
        self.addr_buckets = AddressBuckets(cfg.rate_ip, cfg.burst_ip)
        self.backlog = Backlog()  # bytes queued for all sockets (slow readers)
        self.host_names = served_host_names(cfg)  # None: any Host (allowed_hosts "*")
        self.stats: Counter[str] = Counter()
        # None: /metrics answers 404 (an embedding without an exporter)
        self.metrics = metrics(self) if metrics is not None else None
        self.ready = False  # accepting: between app startup and shutdown (/healthz/ready)
        # Set by drain() (SIGTERM): joins refused, every socket told `going-away`.
        self.draining = False
        self._drained: asyncio.Task[None] | None = None
        self.sockets: set[Connection] = set()  # every open /ws, admitted or not
        # docs/PROTOCOL.md "Resuming": the server's own MAC key (state_dir/resume.key) and
        # each member's resume_pk of this membership.
        self.resume_key = resume.load_key(Path(cfg.state_dir) if cfg.state_dir else None)
        self.resume_pks: dict[str, bytes] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Test instrumentation: when a list, every text frame the server receives is
        # appended, so tests can search what reached the server for secrets.
        self.wire_tap: list[str] | None = None
        self.handlers: dict[str, Callable[[Connection, dict[str, Any]], Awaitable[None]]] = {
            "room-info": self.on_room_info,
            "join": self.on_join,
            "seal": self.on_seal,
            "allow-joining": self.on_allow_joining,
            "turn": self.on_turn,
            "ping": self.on_ping,
            "leave": self.on_leave,
        }

    # -- HTTP ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._host_guard])
        app.router.add_get("/ws", self.handle_ws)
        # Kubernetes-style probes: live = the process answers; ready = it accepts calls.
        app.router.add_get("/healthz", self.healthz_ready)
        app.router.add_get("/healthz/live", self.healthz_live)
        app.router.add_get("/healthz/ready", self.healthz_ready)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/", self.index)
        app.router.add_get("/r/{room}", self.index)
        if WORKER_DIR.is_dir():
            app.router.add_static("/e2ee-worker/", WORKER_DIR, follow_symlinks=False)
        if WEB_DIR.is_dir():
            app.router.add_static("/", WEB_DIR, follow_symlinks=False)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        if self.metrics is not None:
            self.metrics.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_resume())
        if self.cluster is not None:
            await self.cluster.start(self)
        self.ready = True

    async def _on_cleanup(self, app: web.Application) -> None:
        if self.metrics is not None:
            await self.metrics.stop()

    async def healthz_live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "live"}, headers={"Cache-Control": "no-store"})

    async def healthz_ready(self, request: web.Request) -> web.Response:
        # Not ready while shutting down, or while no SFU worker is alive (all of them
        # died and are being restarted): a join would only wait for one.
        media_ok = self.media is None or self.media.accepting()
        ready = self.ready and media_ok and not self.draining
        body: dict[str, Any] = {"status": "ready" if ready else "not-ready",
                                "sfu": self.media is not None}
        if self.draining:
            body["reason"] = "shutting-down"
        elif self.ready and not media_ok:
            body["reason"] = "no-live-sfu-worker"
        return web.json_response(body, status=200 if ready else 503,
                                 headers={"Cache-Control": "no-store"})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format 0.0.4; no room names, ids or addresses in it."""
        if self.metrics is None:
            raise web.HTTPNotFound()
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": self.metrics.content_type,
                                                "Cache-Control": "no-store"})

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    def _proxied(self, request: web.Request) -> bool:
        return bool(self.cfg.trusted_proxies) and request.remote in self.cfg.trusted_proxies

    def client_ip(self, request: web.Request) -> str:
        """The client's address; behind a trusted proxy, from X-Forwarded-For.

        Rightmost address not itself a trusted proxy: every hop appends, so only the
        entries our own proxies added can be believed (MDN, X-Forwarded-For, Security).
        """
        remote = request.remote or "?"
        if not self._proxied(request):
            return remote
        hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", []))
                .split(",") if h.strip()]
        for hop in reversed(hops):
            if hop not in self.cfg.trusted_proxies:
                return hop[:64]
        return remote

    @web.middleware
    async def _host_guard(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Every request names a host this server serves (DNS rebinding, docs/SECURITY.md).

        A page of ``http://evil.example:8080`` whose name was made to resolve to this
        server would otherwise be same-origin with it: its Host and Origin agree.
        """
        host = request.headers.get("Host")
        if host is not None and not host_allowed(host, self.host_names):
            self.stats["errors.bad-host"] += 1
            log.warning("refused request: host not served host=%s ip=%s", safe(host),
                        safe(self.client_ip(request)))
            return self.refuse(ErrorId.BAD_HOST)
        return await handler(request)

    def origin_allowed(self, request: web.Request, origin: str | None) -> bool:
        if not origin:
            return False
        scheme = request.scheme
        if self._proxied(request):  # TLS ends at the proxy: it tells us the scheme
            forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
            scheme = forwarded if forwarded in ("http", "https") else scheme
        own = f"{scheme}://{request.host}"
        return origin == own or origin in self.cfg.allowed_origins

    @staticmethod
    def refuse(error_id: ErrorId) -> web.Response:
        spec = SPECS[error_id]
        body = {
            "v": PROTOCOL_VERSION,
            "type": "error",
            "id": error_id.value,
            "message": spec.message,
        }
        return web.json_response(body, status=spec.http_status or 400)

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        ip = self.client_ip(request)
        origin = request.headers.get("Origin")
        # Checked before the upgrade: a page from another site cannot even open the socket.
        if not self.origin_allowed(request, origin):
            self.stats["errors.bad-origin"] += 1
            log.warning("refused upgrade: origin not allowed ip=%s", safe(ip))
            return self.refuse(ErrorId.BAD_ORIGIN)
        if self.per_ip[ip] >= self.cfg.max_connections_per_ip:
            self.stats["errors.too-many-connections"] += 1
            return self.refuse(ErrorId.TOO_MANY_CONNECTIONS)
        if self.addr_buckets.exhausted(address_key(ip)):
            # Reconnecting to flood: refused before the upgrade, the cheapest answer.
            self.stats["errors.rate-limited"] += 1
            self.stats["rate_limited.upgrade"] += 1
            return self.refuse(ErrorId.RATE_LIMITED)
        assert origin is not None
        # aiohttp's limit is exclusive (CappedWebSocketResponse): + 1 admits max_message itself.
        ws = CappedWebSocketResponse(
            max_msg_size=self.cfg.max_message + 1, heartbeat=self.cfg.heartbeat, autoping=True
        )
        await ws.prepare(request)
        self.per_ip[ip] += 1
        self.stats["connections"] += 1
        conn = Connection(ws, ip, origin, self.cfg, transport=request.transport,
                          backlog=self.backlog, stats=self.stats)
        conn.post(conn.new_challenge())
        self.sockets.add(conn)
        if self.draining:  # connected during the drain: told at once, closed with the rest
            conn.post(self._going_away())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if utf8_length(msg.data) > self.cfg.max_message:
                        # Only a permessage-deflate message can get here: aiohttp checks the
                        # compressed length first and lets one byte more through after
                        # inflating. Closed like the reader does, without an error message.
                        await self._too_big(conn)
                    elif conn.bridge is not None:
                        await self._bridge_frame(conn, msg.data)
                    else:
                        await self._dispatch(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._fail(conn, SignalingError(ErrorId.BINARY_FRAME), None)
                elif msg.type == WSMsgType.ERROR:
                    # aiohttp has closed the socket already (CappedWebSocketResponse).
                    code = getattr(msg.data, "code", None)
                    if code == WSCloseCode.MESSAGE_TOO_BIG:
                        self._count_too_big(conn)
                    else:
                        log.info("closed: websocket error code=%s ip=%s", code, safe(ip))
                if conn.closing:
                    break
        finally:
            self.sockets.discard(conn)
            if conn.bridge is not None:
                await self._bridge_gone(conn)
            await self._drop(conn, reason="closed")
            await conn.shutdown()
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
        return ws

    def _count_too_big(self, conn: Connection) -> None:
        self.stats["errors.too-big"] += 1
        self.stats["closes.too-big"] += 1
        log.info("closed: message too big ip=%s", safe(conn.ip))

    async def _too_big(self, conn: Connection) -> None:
        self._count_too_big(conn)
        await conn.close_with(ErrorId.TOO_BIG)

    def _going_away(self) -> dict[str, Any]:
        return {"type": "going-away", "reason": "restart", "retry_after": self.cfg.retry_after}

    def drain(self, grace: float) -> asyncio.Task[None]:
        """Graceful shutdown, steps 1–3 (docs/DEPLOY.md "Stopping and restarting"); idempotent.

        At once: not ready (503), joins refused (``shutting-down``), every socket sent
        ``going-away``. Then up to ``grace`` s (less once every client has gone) for
        balancers to notice and clients to leave by themselves; then every socket still
        open is closed with 1001 ``going-away`` (RFC 6455 §7.4.1), each within 2 s.
        """
        if self._drained is None:
            self.ready = False
            self.draining = True
            log.info("draining: %d sockets told going-away, grace %.1f s",
                     len(self.sockets), grace)
            for conn in list(self.sockets):
                conn.post(self._going_away())
            if self.cluster is not None:  # no new room here; this node's rooms placed again
                self._spawn(self.cluster.leave())
            self._drained = asyncio.get_running_loop().create_task(self._drain(grace))
        return self._drained

    async def _drain(self, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.sockets and loop.time() < deadline:  # bounded by grace
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

        async def close(conn: Connection) -> None:
            conn.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                conn.outbox.put_nowait(None)  # flush what is queued (the going-away) first
            if not conn.writer.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(conn.writer), 1.0)
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(
                    conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"going-away"), 1.0)

        await asyncio.gather(*(close(c) for c in list(self.sockets)))

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        await self.drain(0.0)
        for _, queue in list(self.relayed.values()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self.rooms.close()
        if self.media is not None:
            await self.media.close()
        if self.cluster is not None:
            await self.cluster.close()

    # -- dispatch -----------------------------------------------------------------------

    async def _dispatch(self, conn: Connection, data: str) -> None:
        if self.wire_tap is not None:
            self.wire_tap.append(data)
        self.stats["messages"] += 1
        if not conn.bucket.take():
            await self._fail(conn, SignalingError(ErrorId.RATE_LIMITED), None)
            return
        if not self.addr_buckets.take(conn.ip_key):
            # The address's budget over all its sockets: reconnecting does not renew it, and
            # for ADDRESS_PENALTY s the address's new sockets are refused before the upgrade.
            self.addr_buckets.penalize(conn.ip_key, ADDRESS_PENALTY)
            self.stats["rate_limited.address"] += 1
            await self._fail(conn, SignalingError(ErrorId.RATE_LIMITED, "from your address"),
                             None)
            return
        mtype: str | None = None
        try:
            msg = parse_message(data)
            raw_type = msg.get("type")
            mtype = raw_type if isinstance(raw_type, str) and len(raw_type) <= 32 else None
            # Exactly the JSON integer 2: not true, 2.0 or "2" (True == 1 and 2.0 == 2 in Python).
            version = msg.get("v")
            if type(version) is not int or version != PROTOCOL_VERSION:
                raise SignalingError(ErrorId.UNSUPPORTED_VERSION)
            if mtype is None:
                raise SignalingError(ErrorId.BAD_MESSAGE, "type must be a string")
            if mtype in SERVER_ONLY_TYPES:
                raise SignalingError(ErrorId.SERVER_ONLY_TYPE, mtype)
            handler = self.handlers.get(mtype)
            if handler is not None:
                await handler(conn, msg)
            elif mtype.startswith("sfu-"):
                await self.on_sfu(conn, msg)
            else:
                raise SignalingError(ErrorId.UNKNOWN_TYPE, mtype)
        except SignalingError as err:
            await self._fail(conn, err, mtype)
        except Exception:
            # A bug, not the client's fault: log without the message (it may be
            # anything), count it, and close only this connection.
            log.exception("handler failed type=%s", safe(mtype))
            await self._fail(conn, SignalingError(ErrorId.SERVER_ERROR), mtype)

    async def _fail(self, conn: Connection, err: SignalingError, ref: str | None) -> None:
        self.stats[f"errors.{err.id.value}"] += 1
        log.info("error id=%s ip=%s ref=%s", err.id.value, safe(conn.ip), safe(ref))
        conn.post({"type": "error", "id": err.id.value, "message": err.message, "ref": ref})
        if err.fatal:
            self.stats[f"closes.{err.id.value}"] += 1
            await conn.close_with(err.id)

    def members_of(self, room: Room) -> list[Connection]:
        return [c for pid in room.members if (c := self.conns.get(pid)) is not None]

    def broadcast(self, room: Room, msg: dict[str, Any], exclude: str | None = None) -> None:
        frame = encode_message(msg)  # once: every member's outbox holds the same string
        for conn in self.members_of(room):
            if conn.pid != exclude:
                conn.post_frame(frame)

    def ice_servers(self, pid: str) -> list[dict[str, object]]:
        if not self.cfg.turn_enabled:
            return []
        assert self.cfg.turn_secret is not None
        cred = turn.mint(self.cfg.turn_urls, self.cfg.turn_secret, pid, self.cfg.turn_ttl)
        return [cred.ice_server()]

    # -- handlers -----------------------------------------------------------------------

    async def on_room_info(self, conn: Connection, msg: dict[str, Any]) -> None:
        name = get_room(msg)
        room = self.rooms.get(name)
        if room is None and self.cluster is not None:  # hosted elsewhere, or gone
            room = await self._stored_room(name)
        reply: dict[str, Any] = {"type": "room-info", "room": name, "exists": room is not None}
        if room is not None:
            reply["kdf"] = room.kdf
            reply["lock"] = room.lock_state(self.cfg.lock_after, self.rooms.clock())
        conn.post(reply)

    async def on_join(self, conn: Connection, msg: dict[str, Any]) -> None:
        if self.cluster is not None and conn.room is None and not self.draining:
            # Several nodes: the room's host admits; a room hosted elsewhere gets this
            # socket bridged there, join included (docs/DEPLOY.md "Several nodes").
            host = await self._host_of(conn, msg)
            if host is not None and host != self.cluster.node_id:
                await self._bridge_open(conn, host, msg)
                return
        # Every join message consumes the challenge, whatever becomes of it: the first answer
        # is always a fresh challenge, then `joined` or the error.
        nonce = conn.nonce
        conn.post(conn.new_challenge())
        if self.draining:
            raise SignalingError(ErrorId.SHUTTING_DOWN)
        if conn.room is not None:
            raise SignalingError(ErrorId.ALREADY_JOINED)
        name = get_room(msg)
        sig = get_b64(msg, "sig", size=64)
        # docs/PROTOCOL.md "Resuming": the joiner's key for this membership, in the transcript.
        resume_pk = get_b64(msg, "resume_pk", size=32) if "resume_pk" in msg else None
        # Strict per address; a room under attack stays open to addresses that have not
        # guessed wrong (GuessLimits; docs/SECURITY.md "Online guessing").
        if self.guesses.refused(conn.ip_key, name):
            raise SignalingError(ErrorId.TOO_MANY_ATTEMPTS)
        signed = (conn.origin, name, nonce, conn.conn_id, resume_pk)
        cred = self._resume_credential(conn, msg, name, signed) if "resume" in msg else None
        room = self.rooms.get(name)
        if room is None and self.cluster is not None:
            record = await self._cluster_call(self.cluster.record(name))
            # A join of the same room may have made it while this one waited on Redis.
            room = self.rooms.get(name)
            if room is None and record is not None:  # created here before, or on its
                room = self.rooms.adopt(name, record.kdf, record.adm_pk,  # former host
                                        record.created_at, record.open_until,
                                        record.opened_by)
        created = False
        if room is None and cred is not None:
            # The room record is gone (restart, expiry): it comes back as the credential
            # says, lock state included. The admission signature must verify under the
            # credential's adm_pk (the member still knows the password).
            if not verify_join(cred.adm_pk, sig, *signed):
                self._wrong_password(conn, name)
            room = self.rooms.restore(name, cred.kdf.to_json(), cred.adm_pk, cred.created_at,
                                      cred.locked, conn.ip)
            created = True
        elif room is None:
            if "create" not in msg:
                raise SignalingError(ErrorId.NO_SUCH_ROOM)
            create = get_object(msg, "create")
            kdf = self._creation_kdf(create)
            adm_pk = get_b64(create, "adm_pk", size=32)
            # Proof of possession: the creator signs like any joiner, so a room can
            # only be made with a key its maker holds.
            if not verify_join(adm_pk, sig, *signed):
                raise SignalingError(ErrorId.BAD_MESSAGE, "sig does not verify under adm_pk")
            # Locked when the previous process stopped: only a member's credential brings
            # it back (docs/PROTOCOL.md "Resuming", locked names).
            if self.rooms.name_locked(name):
                raise SignalingError(ErrorId.ROOM_LOCKED)
            room = self.rooms.create(name, kdf.to_json(), adm_pk, conn.ip)
            created = True
        elif cred is not None and (cred.adm_pk != room.adm_pk or cred.kdf.to_json() != room.kdf):
            self._count_failure(conn, name)
            raise SignalingError(ErrorId.BAD_RESUME, "issued for another room of that name")
        elif not verify_join(room.adm_pk, sig, *signed):
            self._wrong_password(conn, name)
        pid = "p" + secrets.token_hex(6)
        member = self.rooms.admit(room, pid, conn.ip, resumed=cred is not None,
                                  index_floor=cred.index if cred is not None else 0)
        if created and self.cluster is not None:
            await self._store_created(room)
        if cred is not None:
            # Used: refused from REUSE_GRACE s on (a `joined` lost on the way can be retried
            # with it until then; docs/PROTOCOL.md "Resuming").
            self.rooms.revoke(cred.resume_pk, cred.expires, after=REUSE_GRACE)
            self.stats["resumes"] += 1
        conn.pid, conn.room = pid, room
        self.conns[pid] = conn
        self.stats["joins"] += 1
        log.info("joined room=%s pid=%s index=%d resumed=%s", safe(name), pid, member.index,
                 cred is not None)
        others = [self._member_json(m) for m in room.members.values() if m.pid != pid]
        joined: dict[str, Any] = {
            "type": "joined",
            "room": name,
            "id": pid,
            "index": member.index,
            "members": others,
            "kdf": room.kdf,
            "lock": room.lock_state(self.cfg.lock_after, self.rooms.clock()),
            "ice_servers": self.ice_servers(pid),
            "sfu": self.media is not None,
        }
        if resume_pk is not None:
            self.resume_pks[pid] = resume_pk
            joined["resume"] = self._issue_resume(conn)
        conn.post(joined)
        self.broadcast(room, {"type": "member-joined", **self._member_json(member)}, exclude=pid)
        if self.media is not None:

            async def send(out: dict[str, Any], conn: Connection = conn) -> None:
                conn.post(out)
                if out.get("type") == "sfu-error" and out.get("id") == "transport-failed":
                    # The SFU has released this participant's media (ICE/DTLS timeout).
                    # Take it out of the room too, so membership and media agree; the
                    # client reconnects and joins again.
                    # In a task of its own: the SFU calls us from the participant's
                    # cleanup, which must not wait on (or be cancelled with) our leave.
                    task = asyncio.get_running_loop().create_task(self._media_failed(conn))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

            await self.media.join(name, pid, send)

    def _count_failure(self, conn: Connection, name: str) -> None:
        """A failed attempt towards too-many-attempts (docs/PROTOCOL.md, step 6)."""
        self.guesses.failed(conn.ip_key, name)

    def _wrong_password(self, conn: Connection, name: str) -> None:
        self._count_failure(conn, name)
        self.stats["admission_failures"] += 1
        log.info("wrong password room=%s ip=%s", safe(name), safe(conn.ip))
        raise SignalingError(ErrorId.WRONG_PASSWORD)

    def _resume_credential(self, conn: Connection, msg: dict[str, Any], name: str,
                           signed: tuple[str, str, bytes, str, bytes | None]) -> Credential:
        """``join.resume`` checked (docs/PROTOCOL.md "Resuming"): a credential this server
        issued for this room, not expired, not used or revoked, and ``sig`` by the
        credential's ``resume_pk`` over this join's transcript."""
        obj = get_object(msg, "resume")
        if signed[4] is None:  # the resumed membership gets a key of its own, in the transcript
            raise bad("resume_pk", "required with resume")
        raw = get_b64(obj, "cred", min_size=resume.TAG_SIZE + 1, max_size=resume.MAX_CREDENTIAL)
        rsig = get_b64(obj, "sig", size=64)
        try:
            cred = resume.open_credential(self.resume_key, raw)
        except resume.BadCredential as exc:
            self._count_failure(conn, name)
            raise SignalingError(ErrorId.BAD_RESUME, str(exc)) from None
        if cred.room != name:
            self._count_failure(conn, name)
            raise SignalingError(ErrorId.BAD_RESUME, "issued for another room")
        if cred.expires <= self.rooms.clock():
            raise SignalingError(ErrorId.RESUME_EXPIRED)
        if self.rooms.is_revoked(cred.resume_pk):
            self._count_failure(conn, name)
            raise SignalingError(ErrorId.BAD_RESUME, "already used, or its member left")
        if not verify_join(cred.resume_pk, rsig, *signed):
            self._count_failure(conn, name)
            raise SignalingError(ErrorId.BAD_RESUME, "sig does not verify under resume_pk")
        return cred

    def _issue_resume(self, conn: Connection) -> dict[str, Any]:
        """A fresh credential for the member on ``conn``: expires ``empty_ttl`` from now."""
        room, pid = conn.room, conn.pid
        assert room is not None and pid is not None
        now = self.rooms.clock()
        expires = math.ceil(now + self.cfg.empty_ttl)
        cred = resume.Credential(
            room=room.name, kdf=KdfParams.from_json(room.kdf), adm_pk=room.adm_pk,
            created_at=room.created_at, locked=room.locked(self.cfg.lock_after, now),
            index=room.members[pid].index, resume_pk=self.resume_pks[pid], expires=expires,
        )
        return {"cred": b64(resume.issue(self.resume_key, cred)), "expires": expires}

    async def _refresh_resume(self) -> None:
        """Every member's credential again, every ``empty_ttl / 3`` s: a member that has
        been in for hours can still resume ``empty_ttl`` after it was last seen."""
        period = max(1.0, self.cfg.empty_ttl / 3)
        while True:  # the server's life; cancelled at shutdown
            await asyncio.sleep(period)
            for pid, conn in list(self.conns.items()):
                if pid in self.resume_pks and conn.room is not None and not conn.closing:
                    conn.post({"type": "resume", **self._issue_resume(conn)})

    def load_locked_rooms(self) -> None:
        """Names locked at the previous process's shutdown (cli, before listening)."""
        if self.cfg.state_dir is None:
            return
        left = resume.load_locked(Path(self.cfg.state_dir), self.rooms.clock())
        self.rooms.locked_names.update(left.locked)
        self.rooms.revoked.update(left.revoked)
        if left.locked:
            log.info("%d room names locked at the previous shutdown", len(left.locked))

    def save_locked_rooms(self) -> None:
        """At SIGTERM: names of locked rooms (and revoked resume keys) for the next process."""
        if self.cfg.state_dir is None:
            return
        now = self.rooms.clock()
        revoked = {pk: e for pk, e in self.rooms.revoked.items() if e[1] > now}
        try:
            path = resume.save_locked(Path(self.cfg.state_dir), resume.Shutdown(
                self.rooms.locked_snapshot(), revoked))
        except OSError as exc:
            log.error("could not write the locked room names: %s", exc)
            return
        log.info("locked room names written to %s", path)

    @staticmethod
    def _creation_kdf(create: dict[str, Any]) -> KdfParams:
        """``create.kdf``: exactly alg, ops, mem and a 16-byte salt, within the limits."""
        try:
            return KdfParams.from_json(create.get("kdf"))
        except WeakKdfParams:
            raise SignalingError(ErrorId.WEAK_KDF) from None
        except ExcessiveKdfParams:
            raise SignalingError(ErrorId.EXCESSIVE_KDF) from None
        except (ValueError, TypeError):
            raise bad("create.kdf", "must be {alg, ops, mem, salt (16 bytes)}") from None

    async def _media_failed(self, conn: Connection) -> None:
        await self._drop(conn, reason="media-failed")
        await conn.close_with(ErrorId.MEDIA_FAILED)

    @staticmethod
    def _member_json(member: Member) -> dict[str, Any]:
        return {"id": member.pid, "index": member.index}

    async def on_seal(self, conn: Connection, msg: dict[str, Any]) -> None:
        room, pid = self._require_member(conn)
        if "from" in msg and msg["from"] != pid:  # null, a number, someone else: all refused
            raise SignalingError(ErrorId.SPOOFED_FROM)
        to = get_str(msg, "to", max_len=32)
        if to != "*" and (to == pid or to not in room.members):
            raise SignalingError(ErrorId.UNKNOWN_RECIPIENT)
        epoch = get_int(msg, "epoch", hi=0xFFFFFFFF)
        seq = get_int(msg, "seq")
        get_b64(msg, "nonce", size=12)
        get_b64(msg, "ct", min_size=MIN_SEALED_CT, max_size=MAX_SEALED_CT)
        # The receivers' replay check is the one that counts (seq is inside the AAD);
        # the server refuses non-increasing seq too so replays cost nobody anything.
        if seq <= conn.last_seq:
            raise SignalingError(ErrorId.REPLAY)
        conn.last_seq = seq
        out = {
            "type": "sealed",
            "from": pid,  # stamped from the authenticated socket, never from the input
            "to": to,
            "epoch": epoch,
            "seq": seq,
            "nonce": msg["nonce"],
            "ct": msg["ct"],
        }
        self.stats["sealed_relayed"] += 1
        if to == "*":
            self.broadcast(room, out, exclude=pid)
        else:
            self.conns[to].post(out)

    async def on_allow_joining(self, conn: Connection, msg: dict[str, Any]) -> None:
        room, pid = self._require_member(conn)
        longest = int(self.cfg.max_allow_joining)
        seconds = 120 if "seconds" not in msg else get_int(msg, "seconds", 1, longest)
        self.rooms.allow_joining(room, pid, seconds)
        log.info("allow joining room=%s pid=%s seconds=%d", safe(room.name), pid, seconds)
        if self.cluster is not None:  # the record every node reads (room-info)
            self._spawn(self._store_lock(room))
        state = room.lock_state(self.cfg.lock_after, self.rooms.clock())
        self.broadcast(room, {"type": "lock", **state})

    async def on_turn(self, conn: Connection, msg: dict[str, Any]) -> None:
        _, pid = self._require_member(conn)
        if not self.cfg.turn_enabled:
            raise SignalingError(ErrorId.NO_TURN)
        conn.post({"type": "turn", "ice_servers": self.ice_servers(pid)})

    async def on_ping(self, conn: Connection, msg: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong"}
        if "t" in msg:
            t = msg["t"]
            # parse_message already refused NaN and infinities; bool is an int in Python.
            finite = isinstance(t, int) or (isinstance(t, float) and math.isfinite(t))
            if isinstance(t, bool) or not finite:
                raise bad("t", "must be a finite number")
            reply["t"] = t
        conn.post(reply)

    async def on_leave(self, conn: Connection, msg: dict[str, Any]) -> None:
        _, pid = self._require_member(conn)
        pk = self.resume_pks.get(pid)
        if pk is not None:  # left for good: its credential cannot bring it back
            self.rooms.revoke(pk, self.rooms.clock() + self.cfg.empty_ttl)
        await self._drop(conn, reason="left")
        conn.closing = True
        await conn.ws.close(code=WSCloseCode.OK, message=b"left")

    async def on_sfu(self, conn: Connection, msg: dict[str, Any]) -> None:
        if self.media is None:
            raise SignalingError(ErrorId.SFU_UNAVAILABLE)
        _, pid = self._require_member(conn)
        await self.media.handle(pid, msg)

    def _require_member(self, conn: Connection) -> tuple[Room, str]:
        if conn.room is None or conn.pid is None:
            raise SignalingError(ErrorId.NOT_JOINED)
        return conn.room, conn.pid

    async def _drop(self, conn: Connection, reason: str) -> None:
        room, pid = conn.room, conn.pid
        if room is None or pid is None:
            return
        conn.room = None
        self.conns.pop(pid, None)
        self.resume_pks.pop(pid, None)
        member = self.rooms.remove(room, pid)
        if member is not None:
            log.info("left room=%s pid=%s reason=%s", safe(room.name), pid, reason)
            self.broadcast(
                room, {"type": "member-left", "reason": reason, **self._member_json(member)}
            )
        if self.media is not None:
            try:
                await self.media.leave(pid)
            except Exception:
                log.exception("media leave failed pid=%s", pid)

    # -- several nodes (--redis; docs/DEPLOY.md "Several nodes") -------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:
                log.exception("background task failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cluster_call(self, aw: Awaitable[Any]) -> Any:
        """A call on Redis whose failure refuses what the client asked: cluster-unavailable."""
        try:
            return await aw
        except ClusterUnavailable as exc:
            log.warning("cluster unavailable: %s", exc)
            raise SignalingError(ErrorId.CLUSTER_UNAVAILABLE) from None

    async def _host_of(self, conn: Connection, msg: dict[str, Any]) -> str | None:
        """The node hosting the joined room, placed now if it has none; None when the join
        names no valid room (the usual path refuses it)."""
        assert self.cluster is not None
        try:
            name = get_room(msg)
        except SignalingError:
            return None
        try:
            host = await self.cluster.host_of(name)
        except ClusterUnavailable as exc:
            log.warning("cluster unavailable: %s", exc)
            conn.post(conn.new_challenge())  # every join is answered by a challenge first
            raise SignalingError(ErrorId.CLUSTER_UNAVAILABLE) from None
        if host != self.cluster.node_id and conn.via is not None:
            # Bridged here, but the room is another node's now: a socket is bridged once.
            conn.post(conn.new_challenge())
            raise SignalingError(ErrorId.CLUSTER_UNAVAILABLE, "the room moved to another node")
        return host

    @staticmethod
    def _record_of(room: Room) -> RoomRecord:
        return RoomRecord(kdf=room.kdf, adm_pk=room.adm_pk, created_at=room.created_at,
                          open_until=room.open_until, opened_by=room.opened_by)

    async def _stored_room(self, name: str) -> Room | None:
        """The room as its record in Redis says (not kept here: its host keeps it)."""
        assert self.cluster is not None
        record = await self._cluster_call(self.cluster.record(name))
        if record is None:
            return None
        return Room(name, record.kdf, record.adm_pk, created_at=record.created_at,
                    creator_ip="", open_until=record.open_until, opened_by=record.opened_by)

    async def _store_created(self, room: Room) -> None:
        assert self.cluster is not None
        try:
            if not await self.cluster.create(room.name, self._record_of(room)):
                log.warning("room record already in Redis room=%s", safe(room.name))
        except ClusterUnavailable as exc:  # the renewal writes it once Redis answers
            log.warning("room record not written yet room=%s: %s", safe(room.name), exc)

    async def _store_lock(self, room: Room) -> None:
        assert self.cluster is not None
        try:
            await self.cluster.save(room.name, self._record_of(room))
        except ClusterUnavailable as exc:
            log.warning("room record not written yet room=%s: %s", safe(room.name), exc)

    def _room_expired(self, room: Room) -> None:
        if self.cluster is not None:
            self._spawn(self._forget(room.name))

    async def _forget(self, name: str) -> None:
        assert self.cluster is not None
        with contextlib.suppress(ClusterUnavailable):  # else its keys expire by themselves
            await self.cluster.forget(name)

    # What the cluster calls back (cluster.cluster.Hooks).

    def cluster_load(self) -> int:
        return len(self.conns)

    def hosted_records(self) -> list[tuple[str, RoomRecord]]:
        return [(room.name, self._record_of(room)) for room in self.rooms.rooms.values()]

    def bridged_nodes(self) -> set[str]:
        entrances = {entrance for entrance, _ in self.relayed}
        return entrances | {c.bridge for c in self.bridges.values() if c.bridge is not None}

    def nodes_gone(self, node_ids: set[str]) -> None:
        """Nodes whose lease expired: sockets bridged to them are closed (relay-lost) and
        sessions bridged from them end, as if their socket closed."""
        for conn in list(self.bridges.values()):
            if conn.bridge in node_ids:
                self._spawn(self._bridge_lost(conn))
        for (entrance, _), (_, queue) in list(self.relayed.items()):
            if entrance in node_ids:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

    def rooms_lost(self, rooms: list[str]) -> None:
        """Rooms another node hosts now (this one was cut off from Redis for longer than a
        lease): forgotten here at once, without touching the other node's keys, and their
        members here closed with relay-lost, so they rejoin there."""
        for name in rooms:
            room = self.rooms.get(name)
            if room is None:
                continue
            log.warning("room placed on another node meanwhile room=%s", safe(name))
            # Not this node's any more: room-info and joins here ask Redis from now on.
            del self.rooms.rooms[name]
            if room.expiry is not None:
                room.expiry.cancel()
                room.expiry = None
            for conn in self.members_of(room):
                self._spawn(self._fail(conn, SignalingError(ErrorId.RELAY_LOST), None))

    def relay_received(self, msg: dict[str, Any]) -> None:
        op, sid, node = msg["op"], msg["sid"], msg["from"]
        if op == "open":
            self._relay_open(node, sid, msg)
        elif op == "frame" and (node, sid) in self.relayed:  # client → host
            data = msg.get("data")
            if isinstance(data, str):
                self._relay_queue(node, sid, data)
        elif op == "gone" and (node, sid) in self.relayed:
            self._relay_queue(node, sid, None)
        elif op == "frame" and sid in self.bridges:  # host → client
            conn = self.bridges[sid]
            data = msg.get("data")
            if conn.bridge == node and isinstance(data, str):
                conn.post_frame(data)
        elif op == "close" and sid in self.bridges:
            conn = self.bridges[sid]
            code, reason = msg.get("code"), msg.get("reason")
            if conn.bridge == node and type(code) is int and isinstance(reason, str):
                del self.bridges[sid]
                conn.bridge = None
                self._spawn(conn.close_as(code, reason[:120]))
        else:
            self.stats["relay_unknown"] += 1  # a socket already gone, or not a relay op

    # Entrance side: this node's socket, its room hosted elsewhere.

    async def _bridge_open(self, conn: Connection, host: str, msg: dict[str, Any]) -> None:
        """Bridge ``conn`` to ``host`` and hand it the join with the socket's admission
        context (its conn id, the nonce it must sign, its origin and address)."""
        assert self.cluster is not None
        sid = conn.conn_id
        conn.bridge = host
        self.bridges[sid] = conn
        try:
            await self.cluster.send(host, {
                "op": "open", "sid": sid, "nonce": b64(conn.nonce), "origin": conn.origin,
                "ip": conn.ip, "data": json.dumps(msg, separators=(",", ":")),
            })
        except ClusterUnavailable as exc:
            log.warning("cluster unavailable: %s", exc)
            self.bridges.pop(sid, None)
            conn.bridge = None
            conn.post(conn.new_challenge())
            raise SignalingError(ErrorId.CLUSTER_UNAVAILABLE) from None
        self.stats["bridged"] += 1
        log.info("bridged to node=%s room=%s ip=%s", safe(host), safe(msg.get("room")),
                 safe(conn.ip))

    async def _bridge_frame(self, conn: Connection, data: str) -> None:
        """A client frame of a bridged socket: to the host as it came (the host parses,
        limits and answers it); this socket's own rate limit still applies here."""
        assert self.cluster is not None and conn.bridge is not None
        if self.wire_tap is not None:
            self.wire_tap.append(data)
        if not conn.bucket.take():
            await self._fail(conn, SignalingError(ErrorId.RATE_LIMITED), None)
            return
        try:
            await self.cluster.send(conn.bridge, {"op": "frame", "sid": conn.conn_id,
                                                  "data": data})
        except ClusterUnavailable as exc:
            log.warning("relay to node=%s failed: %s", safe(conn.bridge), exc)
            await self._bridge_lost(conn)

    async def _bridge_lost(self, conn: Connection) -> None:
        if self.bridges.pop(conn.conn_id, None) is None:
            return
        conn.bridge = None
        await self._fail(conn, SignalingError(ErrorId.RELAY_LOST), None)

    async def _bridge_gone(self, conn: Connection) -> None:
        """The client's socket closed: the host ends its session."""
        assert self.cluster is not None and conn.bridge is not None
        host, conn.bridge = conn.bridge, None
        self.bridges.pop(conn.conn_id, None)
        with contextlib.suppress(ClusterUnavailable):  # else the host notices our lease
            await self.cluster.send(host, {"op": "gone", "sid": conn.conn_id})

    # Host side: a socket bridged here from an entrance.

    def _relay_open(self, entrance: str, sid: str, msg: dict[str, Any]) -> None:
        assert self.cluster is not None
        cluster = self.cluster
        origin, ip, data = msg.get("origin"), msg.get("ip"), msg.get("data")
        nonce = msg.get("nonce")
        try:
            raw_nonce = unb64(nonce) if isinstance(nonce, str) else b""
        except ValueError:
            raw_nonce = b""
        if ((entrance, sid) in self.relayed or len(sid) > 64 or len(raw_nonce) != 32
                or not isinstance(origin, str) or not isinstance(ip, str)
                or not isinstance(data, str)):
            self.stats["relay_unknown"] += 1
            return
        key = (entrance, sid)

        async def send(out: dict[str, Any]) -> None:
            await cluster.send(entrance, out)

        def ended() -> None:
            self._relay_queue(entrance, sid, None)

        conn = Connection(RelayedSocket(sid, send, ended), ip[:64], origin[:256], self.cfg,
                          backlog=self.backlog, stats=self.stats)
        conn.conn_id, conn.nonce, conn.via = sid, raw_nonce, entrance
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=self.cfg.outbox)
        self.relayed[key] = (conn, queue)
        self.sockets.add(conn)
        if self.draining:
            conn.post(self._going_away())
        queue.put_nowait(data)
        task = asyncio.get_running_loop().create_task(self._relayed_session(key, conn, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.stats["relayed_sessions"] += 1

    def _relay_queue(self, entrance: str, sid: str, data: str | None) -> None:
        entry = self.relayed.get((entrance, sid))
        if entry is None:
            return
        conn, queue = entry
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:  # the session does not keep up: ended like a slow reader
            conn._slow("relayed frames not handled")
            with contextlib.suppress(asyncio.QueueFull):
                queue.get_nowait()
                queue.put_nowait(None)

    async def _relayed_session(self, key: tuple[str, str], conn: Connection,
                               queue: asyncio.Queue[str | None]) -> None:
        """The bridged socket's frames, in order, through the same dispatch as a socket of
        this node's own; ends when the entrance says it is gone, the socket was closed
        here, or the entrance's lease expired."""
        try:
            while not conn.closing:
                data = await queue.get()
                if data is None:
                    break
                await self._dispatch(conn, data)
        finally:
            self.relayed.pop(key, None)
            self.sockets.discard(conn)
            await self._drop(conn, reason="closed")
            await conn.shutdown()
