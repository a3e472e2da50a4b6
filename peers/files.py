"""Hands, reactions and files over sealed envelopes: the Python twin of web/js/hands.js and
web/js/files.js (docs/PROTOCOL.md "Hands and reactions" and "Files").

A bot or a test raises a hand (:func:`hand`), reacts (:func:`reaction`), sends a file
(:func:`send_file`) and receives one (:func:`receive_file`) with the same messages, limits
and checks as the page, so the browser's side can be tested against a second
implementation — and against a hostile member (:class:`Offer` and :func:`chunk_message`
build the messages one by one).

Both transfer functions read the participant's message queue: a ``SignalingClient``'s
``inbox``, or ``KeyManager.other`` when a key manager reads the inbox (``E2eeBot``). What
they do not handle there (chat, other transfers) is dropped while they run.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

from e2ee.roomcrypto import Sealed, b64, unb64

REACTIONS = ("👍", "👏", "😂", "😮", "❤️", "🎉")
MAX_FILE_BYTES = 25 * 1024 * 1024
CHUNK_BYTES = 32768  # the chunk's JSON stays under the 48 KiB sealed ciphertext cap
MIN_CHUNK_BYTES = 1024
WINDOW = 6  # chunks in flight beyond the slowest receiver's ack
ACK_EVERY = 3  # a receiver acks every this many chunks
PACE = 0.06  # seconds between two chunks: ~17 messages/s, a third of the socket's limit
STALL = 10.0  # seconds without progress that end a transfer
REASONS = frozenset({"cancelled", "hash-mismatch", "bad-chunk", "too-big", "busy", "stalled",
                     "left", "disconnected"})
_ID_BYTES = 16
_MIME = re.compile(r"^[\w.+-]+/[\w.+-]+$")


class SealingMember(Protocol):
    """What the transfers need of a joined client (``peers.client.SignalingClient``)."""

    id: str | None
    members: dict[str, int]

    async def seal(self, to: str, payload: bytes | dict[str, Any]) -> int: ...


def hand(raised: bool, at: float | None = None) -> dict[str, Any]:
    """A hand message: raised now (``at``: Unix seconds, default now) or lowered."""
    if not raised:
        return {"type": "hand", "raised": False}
    return {"type": "hand", "raised": True, "at": round((time.time() if at is None else at) * 1000)}


def reaction(emoji: str) -> dict[str, Any]:
    if emoji not in REACTIONS:
        raise ValueError(f"not a reaction: {emoji!r}")
    return {"type": "reaction", "emoji": emoji}


class FileRefused(Exception):
    """A transfer ended without the file: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Offer:
    id: str  # 16 bytes, base64
    name: str
    mime: str
    size: int
    chunk: int
    sha256: bytes

    @property
    def chunks(self) -> int:
        return math.ceil(self.size / self.chunk)

    @classmethod
    def of(cls, name: str, data: bytes, mime: str = "application/octet-stream",
           chunk: int = CHUNK_BYTES) -> Offer:
        if not data:
            raise ValueError("the file is empty")
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"files are limited to {MAX_FILE_BYTES} bytes")
        return cls(b64(secrets.token_bytes(_ID_BYTES)), name, mime, len(data), chunk,
                   hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, msg: dict[str, Any]) -> Offer:
        """A checked ``file-offer`` (ValueError otherwise); the size cap is the caller's."""
        fid, name, size, chunk = msg.get("id"), msg.get("name"), msg.get("size"), msg.get("chunk")
        digest = msg.get("sha256")
        if not isinstance(fid, str) or len(unb64(fid)) != _ID_BYTES:
            raise ValueError("id")
        if not isinstance(name, str) or type(size) is not int or size < 1:
            raise ValueError("name or size")
        if type(chunk) is not int or not MIN_CHUNK_BYTES <= chunk <= CHUNK_BYTES:
            raise ValueError("chunk")
        if not isinstance(digest, str) or len(unb64(digest)) != 32:
            raise ValueError("sha256")
        mime = msg.get("mime")
        mime = mime if isinstance(mime, str) and len(mime) <= 100 and _MIME.match(mime) else (
            "application/octet-stream")
        return cls(fid, name, mime, size, chunk, unb64(digest))

    def to_json(self) -> dict[str, Any]:
        return {"type": "file-offer", "id": self.id, "name": self.name, "mime": self.mime,
                "size": self.size, "chunk": self.chunk, "sha256": b64(self.sha256)}

    def piece(self, data: bytes, index: int) -> bytes:
        return data[index * self.chunk : min(self.size, (index + 1) * self.chunk)]


def chunk_message(offer: Offer, index: int, data: bytes) -> dict[str, Any]:
    """``file-chunk`` number ``index`` carrying ``data`` (the file's piece, or anything)."""
    return {"type": "file-chunk", "id": offer.id, "index": index, "data": b64(data)}


@dataclass(frozen=True)
class ReceivedFile:
    sender: str
    offer: Offer
    data: bytes


Inbox = asyncio.Queue[dict[str, Any] | Sealed]


async def _next_file_message(inbox: Inbox, deadline: float) -> tuple[str, dict[str, Any]] | None:
    """The next sealed ``file-*`` message as (sender, body), or a member-left as
    ("", {...}); None when the deadline passed."""
    loop = asyncio.get_running_loop()
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return None
        try:
            msg = await asyncio.wait_for(inbox.get(), left)
        except TimeoutError:
            return None
        if isinstance(msg, Sealed):
            try:
                body = msg.json()
            except ValueError:
                continue
            if isinstance(body, dict) and str(body.get("type", "")).startswith("file-"):
                return msg.sender, body
        elif msg.get("type") in ("member-left", "closed"):
            return "", msg


async def send_file(client: SealingMember, inbox: Inbox, to: str, name: str, data: bytes, *,
                    mime: str = "application/octet-stream", window: int = WINDOW,
                    pace: float = PACE, stall: float = STALL) -> dict[str, str]:
    """Offer and send ``data`` to ``to`` ("*": every member now), paced and windowed as the
    page does; returns each receiver's result: ``"done"`` or the reason it ended."""
    recipients = list(client.members) if to == "*" else [to]
    if not recipients:
        raise ValueError("nobody to send to")
    offer = Offer.of(name, data, mime)
    loop = asyncio.get_running_loop()
    nxt = dict.fromkeys(recipients, 0)
    progress = dict.fromkeys(recipients, loop.time())
    result: dict[str, str] = {}
    sent = 0

    def active() -> list[str]:
        return [r for r in recipients if r not in result]

    async def handle_until(ready: Any) -> None:
        while active() and not ready():
            deadline = min(progress[r] for r in active()) + stall
            got = await _next_file_message(inbox, deadline)
            if got is None:
                for r in active():
                    if progress[r] + stall <= loop.time():
                        result[r] = "stalled"
                        await client.seal(r, {"type": "file-cancel", "id": offer.id,
                                              "reason": "stalled"})
                continue
            sender, body = got
            if sender == "":
                if body.get("type") == "closed":
                    raise FileRefused("disconnected")
                if body.get("id") in nxt and body["id"] not in result:
                    result[body["id"]] = "left"
                continue
            if body.get("id") != offer.id or sender not in nxt or sender in result:
                continue
            if body["type"] == "file-cancel":
                reason = body.get("reason")
                result[sender] = reason if isinstance(reason, str) and reason in REASONS else (
                    "cancelled")
            elif body["type"] == "file-ack":
                n = body.get("next")
                if type(n) is int and nxt[sender] <= n <= sent:
                    nxt[sender] = n
                    progress[sender] = loop.time()
                    if n == offer.chunks:
                        result[sender] = "done"

    await client.seal(to, offer.to_json())
    for i in range(offer.chunks):
        await handle_until(lambda i=i: i < min(nxt[r] for r in active()) + window)
        if not active():
            break
        await client.seal(to, chunk_message(offer, i, offer.piece(data, i)))
        sent = i + 1
        await asyncio.sleep(pace)
    await handle_until(lambda: all(nxt[r] == offer.chunks for r in active()))
    return result


async def receive_file(client: SealingMember, inbox: Inbox, *, timeout: float = 30.0,
                       stall: float = STALL, ack_every: int = ACK_EVERY) -> ReceivedFile:
    """Wait (``timeout``) for a file offer, receive it with every check the page makes,
    and return it; raises :class:`FileRefused` (and tells the sender) otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await _next_file_message(inbox, deadline)
        if got is None:
            raise TimeoutError("no file offer")
        sender, body = got
        if sender and body["type"] == "file-offer":
            try:
                offer = Offer.parse(body)
            except ValueError:
                continue
            break
    if offer.size > MAX_FILE_BYTES:
        await client.seal(sender, {"type": "file-cancel", "id": offer.id, "reason": "too-big"})
        raise FileRefused("too-big")
    await client.seal(sender, {"type": "file-ack", "id": offer.id, "next": 0})
    pieces: list[bytes] = []

    async def refuse(reason: str) -> FileRefused:
        await client.seal(sender, {"type": "file-cancel", "id": offer.id, "reason": reason})
        return FileRefused(reason)

    while len(pieces) < offer.chunks:
        got = await _next_file_message(inbox, loop.time() + stall)
        if got is None:
            raise await refuse("stalled")
        frm, body = got
        if frm == "":
            if body.get("type") == "closed":
                raise FileRefused("disconnected")
            if body.get("id") == sender:
                raise FileRefused("left")
            continue
        if frm != sender or body.get("id") != offer.id:
            continue
        if body["type"] == "file-cancel":
            reason = body.get("reason")
            raise FileRefused(reason if isinstance(reason, str) and reason in REASONS
                              else "cancelled")
        if body["type"] != "file-chunk":
            continue
        index = len(pieces)
        expected = min(offer.chunk, offer.size - index * offer.chunk)
        try:
            piece = unb64(body["data"]) if body.get("index") == index else b""
        except (KeyError, TypeError, ValueError):
            piece = b""
        if len(piece) != expected:
            raise await refuse("bad-chunk")
        pieces.append(piece)
        if len(pieces) < offer.chunks and len(pieces) % ack_every == 0:
            await client.seal(sender, {"type": "file-ack", "id": offer.id, "next": len(pieces)})
    data = b"".join(pieces)
    if hashlib.sha256(data).digest() != offer.sha256:
        raise await refuse("hash-mismatch")
    await client.seal(sender, {"type": "file-ack", "id": offer.id, "next": offer.chunks})
    return ReceivedFile(sender, offer, data)
