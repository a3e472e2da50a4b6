"""The signaling server: aiohttp, static web client, and the ``/ws`` WebSocket.

The server is a relay and a doorman that cannot read the room (DESIGN.md, sealed
signaling). Every client message goes through :meth:`SignalingServer._dispatch`,
which turns any :class:`SignalingError` into the documented ``error`` message or
close code (docs/PROTOCOL.md) and never lets an exception escape a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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
from signaling.fields import get_b64, get_int, get_object, get_room, get_str
from signaling.ratelimit import FailureWindow, TokenBucket
from signaling.roomcrypto import KdfParams, WeakKdfParams, b64, verify_join
from signaling.rooms import Member, Room, RoomRegistry

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
WEB_DIR = ROOT / "web"
WORKER_DIR = ROOT / "e2ee-worker"

# Types only the server may send (DESIGN.md item 9): a client sending one is closed.
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
        "sfu-error",
        "sfu-left",
    }
)
MAX_SEALED_CT = 48 * 1024  # ciphertext bytes of one sealed relay message


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
        frame = json.dumps({"v": PROTOCOL_VERSION, **msg}, separators=(",", ":"))
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
        # Checked before the upgrade (DESIGN.md item 9): a page from another site
        # cannot even open the socket.
        if not self.origin_allowed(request, origin):
            self.stats["errors.bad-origin"] += 1
            log.warning("refused upgrade: origin not allowed ip=%s", ip)
            return self.refuse(ErrorId.BAD_ORIGIN)
        if self.per_ip[ip] >= self.cfg.max_connections_per_ip:
            self.stats["errors.too-many-connections"] += 1
            return self.refuse(ErrorId.TOO_MANY_CONNECTIONS)
        assert origin is not None
        ws = web.WebSocketResponse(
            max_msg_size=self.cfg.max_message, heartbeat=self.cfg.heartbeat, autoping=True
        )
        await ws.prepare(request)
        self.per_ip[ip] += 1
        self.stats["connections"] += 1
        conn = Connection(ws, ip, origin, self.cfg)
        conn.post(conn.new_challenge())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._dispatch(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self._fail(conn, SignalingError(ErrorId.BINARY_FRAME), None)
                elif msg.type == WSMsgType.ERROR:
                    # aiohttp reports an over-long frame here and closes with 1009.
                    self.stats["errors.too-big"] += 1
                    log.info("closed: message too big ip=%s", ip)
                if conn.closing:
                    break
        finally:
            await self._drop(conn, reason="closed")
            await conn.shutdown()
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
        return ws

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
            try:
                msg = json.loads(data)
            except (ValueError, RecursionError):
                raise SignalingError(ErrorId.BAD_JSON) from None
            if not isinstance(msg, dict):
                raise SignalingError(ErrorId.BAD_JSON)
            raw_type = msg.get("type")
            mtype = raw_type if isinstance(raw_type, str) and len(raw_type) <= 32 else None
            if msg.get("v") != PROTOCOL_VERSION:
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
        if conn.room is not None:
            raise SignalingError(ErrorId.ALREADY_JOINED)
        name = get_room(msg)
        sig = get_b64(msg, "sig", size=64)
        if self.fail_ip.blocked(conn.ip) or self.fail_room.blocked(name):
            raise SignalingError(ErrorId.TOO_MANY_ATTEMPTS)
        # Every attempt consumes the challenge: the next one needs a fresh nonce.
        nonce = conn.nonce
        conn.post(conn.new_challenge())
        room = self.rooms.get(name)
        if room is None:
            create = msg.get("create")
            if create is None:
                raise SignalingError(ErrorId.NO_SUCH_ROOM)
            create = get_object(msg, "create")
            try:
                kdf = KdfParams.from_json(create.get("kdf"))
            except WeakKdfParams:
                raise SignalingError(ErrorId.WEAK_KDF) from None
            except (ValueError, TypeError):
                raise SignalingError(ErrorId.BAD_MESSAGE, "create.kdf is malformed") from None
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

    async def _media_failed(self, conn: Connection) -> None:
        await self._drop(conn, reason="media-failed")
        await conn.close_with(ErrorId.MEDIA_FAILED)

    @staticmethod
    def _member_json(member: Member) -> dict[str, Any]:
        return {"id": member.pid, "index": member.index}

    async def on_seal(self, conn: Connection, msg: dict[str, Any]) -> None:
        room, pid = self._require_member(conn)
        sender = msg.get("from")
        if sender is not None and sender != pid:
            raise SignalingError(ErrorId.SPOOFED_FROM)
        to = get_str(msg, "to", max_len=32)
        if to != "*" and (to == pid or to not in room.members):
            raise SignalingError(ErrorId.UNKNOWN_RECIPIENT)
        epoch = get_int(msg, "epoch", hi=0xFFFFFFFF)
        seq = get_int(msg, "seq")
        get_b64(msg, "nonce", size=12)
        ct = get_b64(msg, "ct", max_size=MAX_SEALED_CT)
        if len(ct) < 16:
            raise SignalingError(ErrorId.BAD_MESSAGE, "ct is shorter than a GCM tag")
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
        seconds = 120 if "seconds" not in msg else get_int(msg, "seconds", 1)
        seconds = min(seconds, int(self.cfg.max_allow_joining))
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
        if isinstance(msg.get("t"), int | float) and not isinstance(msg.get("t"), bool):
            reply["t"] = msg["t"]
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
