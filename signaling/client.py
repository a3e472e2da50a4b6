"""A Python signaling client: join with a password, seal/open, send/receive events.

Tests, bots and the benchmark use it; it is also a second implementation of
docs/PROTOCOL.md beside the browser's web/js/signaling.js. The password and every
key derived from it stay in this object; only the admission signature and sealed
envelopes go to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from signaling.roomcrypto import (
    DEFAULT_KDF,
    EnvelopeHeader,
    InvalidEnvelope,
    KdfParams,
    ReplayGuard,
    RoomKeys,
    b64,
    open_envelope,
    password_key,
    room_keys,
    seal,
    sign_join,
    unb64,
)

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1


class ServerError(Exception):
    """The server answered with a typed ``error`` (docs/PROTOCOL.md, Errors)."""

    def __init__(self, error_id: str, message: str) -> None:
        super().__init__(f"{error_id}: {message}")
        self.id = error_id
        self.message = message


@dataclass(frozen=True)
class Sealed:
    """An authenticated, opened envelope from another member."""

    sender: str
    to: str
    epoch: int
    seq: int
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


class SignalingClient:
    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, origin: str
    ) -> None:
        self.session = session
        self.ws = ws
        self.origin = origin
        self.conn: str | None = None
        self.nonce: bytes | None = None
        self.challenged = asyncio.Event()
        self.room: str | None = None
        self.id: str | None = None
        self.index: int | None = None
        self.members: dict[str, int] = {}  # participant id → sender index
        self.keys: RoomKeys | None = None
        self.epoch = 0
        self.seq = 0
        self.replay = ReplayGuard()
        self.rejected: Counter[str] = Counter()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.inbox: asyncio.Queue[dict[str, Any] | Sealed] = asyncio.Queue()
        # Messages of the media plane (sfu-*, speaker) go to a handler, e.g. a MediaBot;
        # until one is set they are kept, so an early SFU offer is not lost.
        self._media_handler: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self._media_backlog: list[dict[str, Any]] = []
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, origin: str | None = None) -> SignalingClient:
        session = aiohttp.ClientSession()
        origin = origin or origin_of(url)
        try:
            ws = await session.ws_connect(url, origin=origin, heartbeat=20, max_msg_size=1 << 20)
        except BaseException:
            await session.close()
            raise
        client = cls(session, ws, origin)
        await asyncio.wait_for(client.challenged.wait(), 10)
        return client

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.reader, 5)
        await self.session.close()

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- wire -----------------------------------------------------------------------------

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps({"v": PROTOCOL_VERSION, **msg}))

    async def send_raw(self, data: str | bytes) -> None:
        """Send anything at all (tests use it for malformed input)."""
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                msg = json.loads(frame.data)
                mtype = msg.get("type")
                if mtype == "challenge":
                    self.conn = msg["conn"]
                    self.nonce = unb64(msg["nonce"])
                    self.challenged.set()
                    continue
                if mtype == "sealed":
                    opened = self._open(msg)
                    if opened is not None:
                        self.inbox.put_nowait(opened)
                    continue
                if isinstance(mtype, str) and (mtype.startswith("sfu-") or mtype == "speaker"):
                    if self._media_handler is None:
                        self._media_backlog.append(msg)
                    else:
                        await self._media_handler(msg)
                    continue
                if mtype == "member-joined":
                    self.members[msg["id"]] = msg["index"]
                elif mtype == "member-left":
                    self.members.pop(msg["id"], None)
                self.inbox.put_nowait(msg)
        finally:
            self.close_code = self.ws.close_code
            reason = self.ws.close_message if hasattr(self.ws, "close_message") else None
            self.close_reason = reason if isinstance(reason, str) else None
            self.inbox.put_nowait({"type": "closed", "code": self.close_code})

    def _open(self, msg: dict[str, Any]) -> Sealed | None:
        """Authenticate and open an envelope; count and drop anything else."""
        if self.keys is None or self.room is None or self.id is None:
            self.rejected["not-joined"] += 1
            return None
        try:
            header = EnvelopeHeader(
                room=self.room,
                epoch=int(msg["epoch"]),
                sender=str(msg["from"]),
                to=str(msg["to"]),
                seq=int(msg["seq"]),
            )
            if header.to not in ("*", self.id):
                self.rejected["not-for-me"] += 1
                return None
            if not self.replay.check(header.sender, header.seq):
                self.rejected["replay"] += 1
                return None
            payload = open_envelope(self.keys.k_room, header, unb64(msg["nonce"]), unb64(msg["ct"]))
        except (InvalidEnvelope, KeyError, TypeError, ValueError):
            self.rejected["invalid"] += 1
            return None
        self.replay.commit(header.sender, header.seq)
        return Sealed(header.sender, header.to, header.epoch, header.seq, payload)

    async def set_media_handler(self, handler: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Route SFU messages to ``handler`` (first the ones that arrived before)."""
        self._media_handler = handler
        backlog, self._media_backlog = self._media_backlog, []
        for msg in backlog:
            await handler(msg)

    # -- protocol -------------------------------------------------------------------------

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Wait until the server closed the socket; its close code."""
        await asyncio.wait_for(asyncio.shield(self.reader), timeout)
        return self.close_code

    def drain(self) -> list[dict[str, Any] | Sealed]:
        """Everything received and not yet read, without waiting."""
        out: list[dict[str, Any] | Sealed] = []
        while not self.inbox.empty():
            out.append(self.inbox.get_nowait())
        return out

    async def recv(self, timeout: float = 10.0) -> dict[str, Any] | Sealed:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def expect(self, mtype: str, timeout: float = 10.0) -> dict[str, Any]:
        """Next message of ``mtype``; raises ServerError on an ``error`` first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.0, deadline - loop.time()))
            if isinstance(msg, Sealed):
                continue
            if msg.get("type") == "error":
                raise ServerError(msg["id"], msg["message"])
            if msg.get("type") == mtype:
                return msg
            if msg.get("type") == "closed":
                raise ConnectionError(f"socket closed with {msg.get('code')}")

    async def next_sealed(self, timeout: float = 10.0) -> Sealed:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.0, deadline - loop.time()))
            if isinstance(msg, Sealed):
                return msg

    async def room_info(self, room: str) -> dict[str, Any]:
        await self.send({"type": "room-info", "room": room})
        return await self.expect("room-info")

    async def join(self, room: str, password: str, kdf: KdfParams = DEFAULT_KDF) -> dict[str, Any]:
        """Derive the room keys from the password and enter (or create) the room.

        Joining an existing room uses the room's recorded KDF parameters, which
        ``KdfParams.from_json`` refuses when weaker than the defaults.
        """
        info = await self.room_info(room)
        params = KdfParams.from_json(info["kdf"]) if info["exists"] else kdf
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, password_key, password, room, params)
        keys = room_keys(key, room)
        del key
        if self.nonce is None or self.conn is None:
            raise ConnectionError("no challenge received")
        sig = sign_join(keys.adm_seed, self.origin, room, self.nonce, self.conn)
        msg: dict[str, Any] = {"type": "join", "room": room, "sig": b64(sig)}
        if not info["exists"]:
            msg["create"] = {"kdf": params.to_json(), "adm_pk": b64(keys.adm_pk)}
        await self.send(msg)
        joined = await self.expect("joined")
        self.keys = keys
        self.room, self.id, self.index = room, joined["id"], joined["index"]
        self.members = {m["id"]: m["index"] for m in joined["members"]}
        return joined

    async def seal(self, to: str, payload: bytes | dict[str, Any]) -> int:
        """Seal ``payload`` for ``to`` (a participant id, or ``"*"`` for everyone)."""
        if self.keys is None or self.room is None or self.id is None:
            raise RuntimeError("join first")
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.seq += 1
        header = EnvelopeHeader(self.room, self.epoch, self.id, to, self.seq)
        nonce, ct = seal(self.keys.k_room, header, data)
        await self.send(
            {
                "type": "seal",
                "to": to,
                "epoch": self.epoch,
                "seq": self.seq,
                "nonce": b64(nonce),
                "ct": b64(ct),
            }
        )
        return self.seq

    async def allow_joining(self, seconds: int = 120) -> None:
        await self.send({"type": "allow-joining", "seconds": seconds})

    async def leave(self) -> None:
        await self.send({"type": "leave"})
