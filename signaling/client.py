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

PROTOCOL_VERSION = 2


class ServerError(Exception):
    """The server answered with a typed ``error`` (docs/PROTOCOL.md, Errors)."""

    def __init__(self, error_id: str, message: str) -> None:
        super().__init__(f"{error_id}: {message}")
        self.id = error_id
        self.message = message


class CreationRaceLost(ServerError):
    """``wrong-password`` in answer to a join that carried ``create``: someone else created
    the room after our ``room-info``, with a salt of their own, so our key cannot match."""


class KdfChanged(ValueError):
    """The room's KDF parameters (its salt above all) differ from the ones this session
    joined with: refused before deriving anything (docs/PROTOCOL.md, Keys)."""

    id = "kdf-changed"


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
    """The ``Origin`` a browser would send for a page on this server (docs/PROTOCOL.md,
    Transport): ``http`` for ws://, ``https`` for wss://, the host in lower case (IPv6 in
    brackets) and the port unless it is the scheme's default — RFC 6454 §6.2, as the server
    compares it with ``scheme://`` + the Host header (RFC 9110 §7.2)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise ValueError("the signaling URL must be ws://host[:port]/… or wss://host[:port]/…")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


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
        # Every participant id and sender index of this session: neither is reused in a
        # room, so a membership event naming one again is refused (docs/PROTOCOL.md).
        self.seen_ids: set[str] = set()
        self.seen_indexes: set[int] = set()
        self.keys: RoomKeys | None = None
        self.kdf: KdfParams | None = None  # the room's parameters, as this session joined
        self.epoch = 0
        self.seq = 0
        self.replay = ReplayGuard()  # never forgets a sender: ids are not reused
        self.rejected: Counter[str] = Counter()  # envelopes and membership events refused
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
                if isinstance(mtype, str) and (mtype.startswith("sfu-")
                                              or mtype in ("speaker", "stream-state")):
                    if self._media_handler is None:
                        self._media_backlog.append(msg)
                    else:
                        await self._media_handler(msg)
                    continue
                if mtype in ("member-joined", "member-left") and not self._membership(msg):
                    continue
                self.inbox.put_nowait(msg)
        finally:
            self.close_code = self.ws.close_code
            reason = self.ws.close_message if hasattr(self.ws, "close_message") else None
            self.close_reason = reason if isinstance(reason, str) else None
            self.inbox.put_nowait({"type": "closed", "code": self.close_code})

    def _membership(self, msg: dict[str, Any]) -> bool:
        """Apply a membership event; False (counted, dropped) for one that cannot be true."""
        pid, index = msg.get("id"), msg.get("index")
        if msg["type"] == "member-left":
            if not isinstance(pid, str) or self.members.pop(pid, None) is None:
                self.rejected["not-a-member"] += 1
                return False
            return True
        if not isinstance(pid, str) or type(index) is not int:
            reason = "malformed"
        elif pid in self.seen_ids:
            reason = "rejoin"
        elif index in self.seen_indexes:
            reason = "index-reused"
        else:
            self._remember(pid, index)
            self.members[pid] = index
            return True
        self.rejected[reason] += 1
        return False

    def _remember(self, pid: str, index: int) -> None:
        self.seen_ids.add(pid)
        self.seen_indexes.add(index)

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

    async def join(
        self,
        room: str,
        password: str,
        kdf: KdfParams | None = None,
        expect_kdf: KdfParams | None = None,
    ) -> dict[str, Any]:
        """Derive the room keys from the password and enter (or create) the room.

        An existing room's parameters are checked (``KdfParams.from_json``) and, with
        ``expect_kdf`` (a rejoin), must equal it, else :class:`KdfChanged` before any
        derivation. A room this join creates gets ``kdf`` (tests), else ``expect_kdf`` (the
        room is gone, e.g. the server restarted: its members, rejoining, agree on the salt),
        else the default cost and a fresh random salt. Losing a creation race (the room
        appeared between ``room-info`` and ``join`` with another creator's salt:
        ``wrong-password``) is retried once as a plain join.
        """
        try:
            return await self._join_once(room, password, kdf, expect_kdf)
        except CreationRaceLost:
            return await self._join_once(room, password, kdf, expect_kdf)

    async def _join_once(
        self, room: str, password: str, kdf: KdfParams | None, expect_kdf: KdfParams | None
    ) -> dict[str, Any]:
        info = await self.room_info(room)
        if info["exists"]:
            params = KdfParams.from_json(info["kdf"])
            if expect_kdf is not None and params != expect_kdf:
                raise KdfChanged("the room's key-derivation parameters (salt) changed")
        elif kdf is not None:
            params = kdf
        elif expect_kdf is not None:  # the room is gone (expired, server restarted): same salt
            params = expect_kdf
        else:
            params = KdfParams.generate()
        loop = asyncio.get_running_loop()
        key = await loop.run_in_executor(None, password_key, password, params)
        keys = room_keys(key, room)
        del key
        if self.nonce is None or self.conn is None:
            raise ConnectionError("no challenge received")
        sig = sign_join(keys.adm_seed, self.origin, room, self.nonce, self.conn)
        msg: dict[str, Any] = {"type": "join", "room": room, "sig": b64(sig)}
        if not info["exists"]:
            msg["create"] = {"kdf": params.to_json(), "adm_pk": b64(keys.adm_pk)}
        await self.send(msg)
        try:
            joined = await self.expect("joined")
        except ServerError as err:
            if err.id == "wrong-password" and "create" in msg:
                raise CreationRaceLost(err.id, err.message) from None
            raise
        self.keys, self.kdf = keys, params
        self.room, self.id, self.index = room, joined["id"], joined["index"]
        self.members = {m["id"]: m["index"] for m in joined["members"]}
        for pid, index in [(joined["id"], joined["index"]), *self.members.items()]:
            self._remember(pid, index)
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
