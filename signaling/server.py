"""The signaling server: aiohttp, static web client, and the ``/ws`` WebSocket.

The server is a relay and a doorman that cannot read the room. Every client message goes
through :meth:`SignalingServer._dispatch`, which turns any :class:`SignalingError` into the
documented ``error`` message or close code (docs/PROTOCOL.md) and never lets an exception
escape a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from sealroom.metrics import CONTENT_TYPE, Metrics
from signaling import turn
from signaling.config import ServerConfig
from signaling.errors import SPECS, ErrorId, SignalingError
from signaling.fields import bad, get_b64, get_int, get_object, get_room, get_str
from signaling.ratelimit import FailureWindow, TokenBucket
from signaling.roomcrypto import (
    ExcessiveKdfParams,
    KdfParams,
    WeakKdfParams,
    b64,
    verify_join,
)
from signaling.rooms import Member, Room, RoomRegistry

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"
WORKER_DIR = ROOT / "e2ee-worker"

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
    }
)
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


class Connection:
    """One WebSocket: its admission challenge, rate limit, room and outbox."""

    def __init__(self, ws: web.WebSocketResponse, ip: str, origin: str, cfg: ServerConfig) -> None:
        self.ws = ws
        self.ip = ip
        self.origin = origin
        self.conn_id = secrets.token_urlsafe(12)
        self.nonce = secrets.token_bytes(32)
        self.bucket = TokenBucket(cfg.rate, cfg.burst)
        self.pid: str | None = None
        self.room: Room | None = None
        self.last_seq = -1
        self.closing = False
        # A bounded outbox with its own writer: a client that stops reading fills
        # only its own queue and is closed, and never stalls a room's broadcast.
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=cfg.outbox)
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def new_challenge(self) -> dict[str, Any]:
        self.nonce = secrets.token_bytes(32)
        return {"type": "challenge", "conn": self.conn_id, "nonce": b64(self.nonce)}

    def post(self, msg: dict[str, Any]) -> None:
        if self.closing:
            return
        frame = encode_message(msg)
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            asyncio.get_running_loop().create_task(self.close_with(ErrorId.SLOW_CONSUMER))

    async def _write(self) -> None:
        while True:
            frame = await self.outbox.get()
            if frame is None:
                return
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return

    async def close_with(self, error_id: ErrorId) -> None:
        if self.closing:
            return
        self.closing = True
        # Flush what is queued (the error message that explains the close), briefly;
        # a client too slow to take it is closed at once.
        try:
            self.outbox.put_nowait(None)
            await asyncio.wait_for(asyncio.shield(self.writer), 1.0)
        except (asyncio.QueueFull, TimeoutError):
            self.writer.cancel()
        code = SPECS[error_id].close_code or WSCloseCode.OK
        await self.ws.close(code=code, message=error_id.value.encode())

    async def shutdown(self) -> None:
        self.closing = True
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)
        try:
            await asyncio.wait_for(self.writer, 2.0)
        except (TimeoutError, asyncio.CancelledError):
            self.writer.cancel()


class SignalingServer:
    def __init__(self, cfg: ServerConfig, media: MediaPlane | None = None) -> None:
        self.cfg = cfg
        self.media = media
        self.rooms = RoomRegistry(
            max_members=cfg.max_members,
            max_rooms_per_ip=cfg.max_rooms_per_ip,
            lock_after=cfg.lock_after,
            empty_ttl=cfg.empty_ttl,
        )
        self.conns: dict[str, Connection] = {}  # by participant id, once admitted
        self.per_ip: Counter[str] = Counter()
        self.fail_ip = FailureWindow(cfg.fail_limit_ip, cfg.fail_window)
        self.fail_room = FailureWindow(cfg.fail_limit_room, cfg.fail_window)
        self.stats: Counter[str] = Counter()
        self.metrics = Metrics(self)
        self.ready = False  # accepting: between app startup and shutdown (/healthz/ready)
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
        app = web.Application()
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
        self.metrics.lag.start()
        self.ready = True

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.metrics.lag.stop()

    async def healthz_live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "live"}, headers={"Cache-Control": "no-store"})

    async def healthz_ready(self, request: web.Request) -> web.Response:
        # Not ready while shutting down, or while no SFU worker is alive (all of them
        # died and are being restarted): a join would only wait for one.
        media_ok = self.media is None or self.media.accepting()
        ready = self.ready and media_ok
        body: dict[str, Any] = {"status": "ready" if ready else "not-ready",
                                "sfu": self.media is not None}
        if self.ready and not media_ok:
            body["reason"] = "no-live-sfu-worker"
        return web.json_response(body, status=200 if ready else 503,
                                 headers={"Cache-Control": "no-store"})

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format 0.0.4; no room names, ids or addresses in it."""
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
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
            log.warning("refused upgrade: origin not allowed ip=%s", ip)
            return self.refuse(ErrorId.BAD_ORIGIN)
        if self.per_ip[ip] >= self.cfg.max_connections_per_ip:
            self.stats["errors.too-many-connections"] += 1
            return self.refuse(ErrorId.TOO_MANY_CONNECTIONS)
        assert origin is not None
        # aiohttp's limit is exclusive (CappedWebSocketResponse): + 1 admits max_message itself.
        ws = CappedWebSocketResponse(
            max_msg_size=self.cfg.max_message + 1, heartbeat=self.cfg.heartbeat, autoping=True
        )
        await ws.prepare(request)
        self.per_ip[ip] += 1
        self.stats["connections"] += 1
        conn = Connection(ws, ip, origin, self.cfg)
        conn.post(conn.new_challenge())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if utf8_length(msg.data) > self.cfg.max_message:
                        # Only a permessage-deflate message can get here: aiohttp checks the
                        # compressed length first and lets one byte more through after
                        # inflating. Closed like the reader does, without an error message.
                        await self._too_big(conn)
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
                        log.info("closed: websocket error code=%s ip=%s", code, ip)
                if conn.closing:
                    break
        finally:
            await self._drop(conn, reason="closed")
            await conn.shutdown()
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
        return ws

    def _count_too_big(self, conn: Connection) -> None:
        self.stats["errors.too-big"] += 1
        self.stats["closes.too-big"] += 1
        log.info("closed: message too big ip=%s", conn.ip)

    async def _too_big(self, conn: Connection) -> None:
        self._count_too_big(conn)
        await conn.close_with(ErrorId.TOO_BIG)

    async def _on_shutdown(self, app: web.Application) -> None:
        self.ready = False
        for conn in list(self.conns.values()):
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server-shutdown")
        self.rooms.close()
        if self.media is not None:
            await self.media.close()

    # -- dispatch -----------------------------------------------------------------------

    async def _dispatch(self, conn: Connection, data: str) -> None:
        if self.wire_tap is not None:
            self.wire_tap.append(data)
        self.stats["messages"] += 1
        if not conn.bucket.take():
            await self._fail(conn, SignalingError(ErrorId.RATE_LIMITED), None)
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
            log.exception("handler failed type=%s", mtype)
            await self._fail(conn, SignalingError(ErrorId.SERVER_ERROR), mtype)

    async def _fail(self, conn: Connection, err: SignalingError, ref: str | None) -> None:
        self.stats[f"errors.{err.id.value}"] += 1
        log.info("error id=%s ip=%s ref=%s", err.id.value, conn.ip, ref)
        conn.post({"type": "error", "id": err.id.value, "message": err.message, "ref": ref})
        if err.fatal:
            self.stats[f"closes.{err.id.value}"] += 1
            await conn.close_with(err.id)

    def members_of(self, room: Room) -> list[Connection]:
        return [c for pid in room.members if (c := self.conns.get(pid)) is not None]

    def broadcast(self, room: Room, msg: dict[str, Any], exclude: str | None = None) -> None:
        for conn in self.members_of(room):
            if conn.pid != exclude:
                conn.post(msg)

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
        reply: dict[str, Any] = {"type": "room-info", "room": name, "exists": room is not None}
        if room is not None:
            reply["kdf"] = room.kdf
            reply["lock"] = room.lock_state(self.cfg.lock_after, self.rooms.clock())
        conn.post(reply)

    async def on_join(self, conn: Connection, msg: dict[str, Any]) -> None:
        # Every join message consumes the challenge, whatever becomes of it: the first answer
        # is always a fresh challenge, then `joined` or the error.
        nonce = conn.nonce
        conn.post(conn.new_challenge())
        if conn.room is not None:
            raise SignalingError(ErrorId.ALREADY_JOINED)
        name = get_room(msg)
        sig = get_b64(msg, "sig", size=64)
        if self.fail_ip.blocked(conn.ip) or self.fail_room.blocked(name):
            raise SignalingError(ErrorId.TOO_MANY_ATTEMPTS)
        room = self.rooms.get(name)
        if room is None:
            if "create" not in msg:
                raise SignalingError(ErrorId.NO_SUCH_ROOM)
            create = get_object(msg, "create")
            kdf = self._creation_kdf(create)
            adm_pk = get_b64(create, "adm_pk", size=32)
            # Proof of possession: the creator signs like any joiner, so a room can
            # only be made with a key its maker holds.
            if not verify_join(adm_pk, sig, conn.origin, name, nonce, conn.conn_id):
                raise SignalingError(ErrorId.BAD_MESSAGE, "sig does not verify under adm_pk")
            room = self.rooms.create(name, kdf.to_json(), adm_pk, conn.ip)
        elif not verify_join(room.adm_pk, sig, conn.origin, name, nonce, conn.conn_id):
            self.fail_ip.fail(conn.ip)
            self.fail_room.fail(name)
            self.stats["admission_failures"] += 1
            log.info("wrong password room=%s ip=%s", name, conn.ip)
            raise SignalingError(ErrorId.WRONG_PASSWORD)
        pid = "p" + secrets.token_hex(6)
        member = self.rooms.admit(room, pid, conn.ip)
        conn.pid, conn.room = pid, room
        self.conns[pid] = conn
        self.stats["joins"] += 1
        log.info("joined room=%s pid=%s index=%d", name, pid, member.index)
        others = [self._member_json(m) for m in room.members.values() if m.pid != pid]
        conn.post(
            {
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
        )
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
        log.info("allow joining room=%s pid=%s seconds=%d", room.name, pid, seconds)
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
        self._require_member(conn)
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
        member = self.rooms.remove(room, pid)
        if member is not None:
            log.info("left room=%s pid=%s reason=%s", room.name, pid, reason)
            self.broadcast(
                room, {"type": "member-left", "reason": reason, **self._member_json(member)}
            )
        if self.media is not None:
            try:
                await self.media.leave(pid)
            except Exception:
                log.exception("media leave failed pid=%s", pid)
