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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from e2ee.roomcrypto import (
    EnvelopeHeader,
    InvalidEnvelope,
    KdfParams,
    ReplayGuard,
    RoomKeys,
    b64,
    new_resume_seed,
    open_envelope,
    password_key,
    room_keys,
    seal,
    sign_join,
    unb64,
)
from e2ee.roomcrypto import Sealed as Sealed  # re-exported: what the inbox holds

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
class Resume:
    """What a member keeps to get back into its room (docs/PROTOCOL.md, Resuming): the
    server's credential and the seed of this membership's ``resume_pk``, in memory only."""

    room: str
    cred: str  # base64, as the server sent it
    expires: float
    seed: bytes = field(repr=False)


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
        self.going_away: dict[str, Any] | None = None  # the server's `going-away`, if sent
        self.going = asyncio.Event()
        self.resume: Resume | None = None  # this membership's credential (Resuming)
        self._resume_seed: bytes | None = None
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
                if mtype == "going-away":
                    self.going_away = msg
                    self.going.set()
                elif mtype == "resume" and self.resume is not None:
                    with contextlib.suppress(KeyError, TypeError, ValueError):
                        self.resume = Resume(self.resume.room, str(msg["cred"]),
                                             float(msg["expires"]), self.resume.seed)
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
        resume: Resume | None = None,
    ) -> dict[str, Any]:
        """Derive the room keys from the password and enter (or create) the room.

        Every join sends a fresh ``resume_pk`` and keeps the credential ``joined`` returns
        in :attr:`resume`. ``resume``, a previous membership's (a rejoin), is sent along
        with a signature by its key, so a locked room (or one gone with a restart) lets
        this member back in; ``resume-expired`` is retried once without it.

        An existing room's parameters are checked (``KdfParams.from_json``) and, with
        ``expect_kdf`` (a rejoin), must equal it, else :class:`KdfChanged` before any
        derivation. A room this join creates gets ``kdf`` (tests), else ``expect_kdf`` (the
        room is gone, e.g. the server restarted: its members, rejoining, agree on the salt),
        else the default cost and a fresh random salt. Losing a creation race (the room
        appeared between ``room-info`` and ``join`` with another creator's salt:
        ``wrong-password``) is retried once as a plain join.
        """
        if resume is not None and resume.room != room:
            resume = None
        try:
            return await self._join_once(room, password, kdf, expect_kdf, resume)
        except CreationRaceLost:
            return await self._join_once(room, password, kdf, expect_kdf, resume)
        except ServerError as err:
            if err.id != "resume-expired":
                raise
            return await self._join_once(room, password, kdf, expect_kdf, None)

    async def _join_once(
        self, room: str, password: str, kdf: KdfParams | None, expect_kdf: KdfParams | None,
        resume: Resume | None = None,
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
        seed, resume_pk = new_resume_seed()  # a fresh key for this membership
        signed = (self.origin, room, self.nonce, self.conn, resume_pk)
        sig = sign_join(keys.adm_seed, *signed)
        msg: dict[str, Any] = {"type": "join", "room": room, "sig": b64(sig),
                               "resume_pk": b64(resume_pk)}
        if resume is not None:  # the previous membership's key signs this join too
            msg["resume"] = {"cred": resume.cred, "sig": b64(sign_join(resume.seed, *signed))}
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
        if isinstance(joined.get("resume"), dict):
            self.resume = Resume(room, str(joined["resume"]["cred"]),
                                 float(joined["resume"]["expires"]), seed)
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


# docs/PROTOCOL.md "Reconnecting": seconds before each attempt (the first waits
# `going-away.retry_after` instead when the server sent one). Every 0.5 s for 10 s, every
# second until 30 s, then every 5 s: a restarting server is found within 0.5–1 s of
# listening; 46 attempts, about a minute, then the client gives up.
RECONNECT_DELAYS: tuple[float, ...] = (0.5,) * 20 + (1.0,) * 20 + (5.0,) * 6
RECONNECT_MAX_SECONDS = 90.0
# Join refusals after which trying again cannot help (as web/js/call.js's FATAL).
FATAL_JOIN_ERRORS = frozenset({"wrong-password", "room-locked", "room-full", "bad-room",
                               "too-many-attempts", "bad-resume", "kdf-changed"})


class ReconnectingClient:
    """A member that stays in its room across lost sockets and server restarts.

    Each socket is a :class:`SignalingClient` (:attr:`client`, replaced on every rejoin;
    :attr:`sessions` counts them). When the socket closes — or the server says
    ``going-away``, upon which this closes it itself — it reconnects on
    :data:`RECONNECT_DELAYS` (the first wait is ``retry_after`` when given, at most 30 s),
    and rejoins with the same KDF expectations (``expect_kdf``, so a changed salt is
    refused) and the previous membership's resume credential (so a locked room takes it
    back). Bounded: the schedule's attempts and ``max_seconds``; then, or on a join
    refusal in :data:`FATAL_JOIN_ERRORS`, it stops with :attr:`lost` set.
    A rejoin is a new session: new participant id, new sender index, new keys.
    """

    def __init__(
        self, url: str, room: str, password: str, *, origin: str | None = None,
        delays: Sequence[float] = RECONNECT_DELAYS,
        max_seconds: float = RECONNECT_MAX_SECONDS,
    ) -> None:
        self.url, self.room, self.origin = url, room, origin
        self._password = password
        self.delays = tuple(delays)
        self.max_seconds = max_seconds
        self.client: SignalingClient | None = None
        self.sessions = 0
        self.attempts = 0  # connection attempts made by reconnects, in all
        self.lost: str | None = None
        self.changed = asyncio.Condition()
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None

    async def start(self, kdf: KdfParams | None = None) -> dict[str, Any]:
        """The first session: connect and join (errors are raised, not retried)."""
        client = await SignalingClient.connect(self.url, self.origin)
        try:
            joined = await client.join(self.room, self._password, kdf=kdf)
        except BaseException:
            await client.close()
            raise
        await self._adopt(client)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return joined

    async def _adopt(self, client: SignalingClient) -> None:
        async with self.changed:
            self.client = client
            self.sessions += 1
            self.changed.notify_all()

    async def wait_session(self, n: int, timeout: float) -> SignalingClient:
        """Wait (bounded) until the ``n``-th session is up; raise if the client gave up."""
        async def reached() -> SignalingClient:
            async with self.changed:
                await self.changed.wait_for(lambda: self.sessions >= n or self.lost is not None)
            if self.sessions < n or self.client is None:
                raise ConnectionError(f"gave up reconnecting: {self.lost}")
            return self.client

        return await asyncio.wait_for(reached(), timeout)

    async def _watch(self) -> None:
        while not self._closing:
            client = self.client
            assert client is not None
            going: asyncio.Future[Any] = asyncio.ensure_future(client.going.wait())
            closed: asyncio.Future[Any] = asyncio.shield(client.reader)
            await asyncio.wait({going, closed}, return_when=asyncio.FIRST_COMPLETED)
            going.cancel()
            if self._closing:
                return
            retry = None
            if client.going_away is not None:
                value = client.going_away.get("retry_after")
                if isinstance(value, int | float) and not isinstance(value, bool):
                    retry = min(max(float(value), 0.0), 30.0)
            log.info("signaling lost (%s); reconnecting",
                     "going-away" if client.going_away else f"closed {client.close_code}")
            await client.close()
            if not await self._reconnect(client, retry):
                async with self.changed:
                    self.changed.notify_all()
                return

    async def _reconnect(self, old: SignalingClient, first: float | None) -> bool:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for attempt, delay in enumerate(self.delays):
            wait = first if attempt == 0 and first is not None else delay
            if loop.time() + wait - start > self.max_seconds:
                break
            await asyncio.sleep(wait)
            if self._closing:
                return False
            self.attempts += 1
            try:
                client = await SignalingClient.connect(self.url, self.origin)
            except (OSError, aiohttp.ClientError, TimeoutError):
                continue
            try:
                await client.join(self.room, self._password, expect_kdf=old.kdf,
                                  resume=old.resume)
            except KdfChanged:
                await client.close()
                self.lost = KdfChanged.id
                return False
            except ServerError as err:
                await client.close()
                if err.id in FATAL_JOIN_ERRORS:
                    self.lost = err.id
                    return False
                continue  # shutting-down, a server error: the next attempt
            except (ConnectionError, TimeoutError):
                await client.close()
                continue
            await self._adopt(client)
            return True
        self.lost = "gave-up"
        return False

    async def close(self) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        if self.client is not None:
            await self.client.close()
