"""Media keys: identities, signed hellos, boxed media keys, acks, the room security code.

The Python twin of ``web/js/mediakeys.js``; the protocol is docs/PROTOCOL.md "Media keys".
Every message travels inside a sealed envelope (``SignalingClient.seal``), so the server sees
none of it; the per-session keys below protect against the other password holders as well:

* ``hello`` announces a per-session Ed25519 signing key and X25519 box key, the sender
  index and a display name, signed with that signing key over a domain-separated
  transcript that names the room and the participant id.
* ``media-key`` carries one sender's frame base key ``{generation, step, key}``, boxed to
  one member with libsodium ``crypto_box`` (X25519 + XSalsa20-Poly1305, the sender's box
  secret key and the recipient's box public key) and signed with the sender's Ed25519 key
  over a transcript binding room, from, to, sender index, generation, step, box nonce and
  box. ``media-key-ack`` answers it, signed as well.

``KeyManager`` runs the protocol for a bot on a ``peers.client.SignalingClient``,
installing keys into ``e2ee.sframe``'s ``FrameEncryptor`` / ``FrameDecryptor``.
Key material is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing

from e2ee.roomcrypto import Sealed, b64, unb64
from e2ee.sframe import FrameDecryptor, FrameEncryptor, KeyRefused, SendKey

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
# Each label ends with a NUL so that no label is a prefix of another ("media-key" and
# "media-key-ack" would otherwise be ambiguous in front of a length prefix).
HELLO_LABEL = b"sealroom/v1/hello\x00"
MEDIA_KEY_LABEL = b"sealroom/v1/media-key\x00"
ACK_LABEL = b"sealroom/v1/media-key-ack\x00"
CODE_LABEL = b"sealroom/v1/security-code\x00"

KEY_SIZE = 32  # Ed25519 seed and public key (RFC 8032 §5.1.5), X25519 keys (RFC 7748 §5)
SIGNATURE_SIZE = 64  # RFC 8032 §5.1.6
BOX_NONCE_SIZE = 24  # crypto_box_NONCEBYTES (XSalsa20)
BOX_MAC_SIZE = 16  # crypto_box_MACBYTES (Poly1305)
BASE_KEY_SIZE = 32  # e2ee-worker/FORMAT.md §5
MAX_NAME_BYTES = 100
CODE_GROUPS = 5  # 5 groups of 5 digits, like Signal's safety numbers

DEBOUNCE = 0.5  # seconds between a leave and the rotation (several leaves → one rotation)
SWITCH_TIMEOUT = 5.0  # switch to the rotated key after every ack, or after this long
MAX_STEP = 0xFF  # FORMAT.md §3: step is 8 bits; at 255 the sender rotates instead


class Rejected(ValueError):
    """A media-keys message that must be ignored; ``reason`` is a stable short id."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- encodings


def lp(value: str | bytes) -> bytes:
    """Length-prefixed field: uint16 big-endian length ‖ bytes (str as UTF-8)."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


def _u16(value: int) -> bytes:
    return struct.pack("!H", value)


def hello_transcript(
    room: str, pid: str, index: int, sign_pk: bytes, box_pk: bytes, name: str
) -> bytes:
    """``label ‖ lp room ‖ lp id ‖ u16 index ‖ lp sign_pk ‖ lp box_pk ‖ lp name``."""
    return (
        HELLO_LABEL + lp(room) + lp(pid) + _u16(index) + lp(sign_pk) + lp(box_pk) + lp(name)
    )


def media_key_transcript(
    room: str,
    sender: str,
    to: str,
    index: int,
    generation: int,
    step: int,
    nonce: bytes,
    box: bytes,
) -> bytes:
    """``label ‖ lp room ‖ lp from ‖ lp to ‖ u16 index ‖ u16 generation ‖ u8 step ‖ lp nonce
    ‖ lp box``."""
    return (
        MEDIA_KEY_LABEL
        + lp(room)
        + lp(sender)
        + lp(to)
        + _u16(index)
        + _u16(generation)
        + bytes([step])
        + lp(nonce)
        + lp(box)
    )


def ack_transcript(
    room: str, sender: str, to: str, generation: int, step: int, nonce: bytes
) -> bytes:
    """``label ‖ lp room ‖ lp from ‖ lp to ‖ u16 generation ‖ u8 step ‖ lp nonce``."""
    return ACK_LABEL + lp(room) + lp(sender) + lp(to) + _u16(generation) + bytes([step]) + lp(nonce)


def security_code(room: str, members: Iterable[tuple[str, bytes, bytes]]) -> str:
    """The room's security code over every ``(id, sign_pk, box_pk)``, self included.

    ``SHA-256(label ‖ lp room ‖ u16 count ‖ (lp id ‖ lp sign_pk ‖ lp box_pk)…)`` with the
    members sorted by the UTF-8 bytes of their id; the first 25 bytes give 5 groups of
    5 digits (each group: 5 bytes as a big-endian integer, mod 100000).
    """
    entries = sorted(members, key=lambda m: m[0].encode("utf-8"))
    data = CODE_LABEL + lp(room) + _u16(len(entries))
    for pid, sign_pk, box_pk in entries:
        data += lp(pid) + lp(sign_pk) + lp(box_pk)
    digest = hashlib.sha256(data).digest()
    groups = [int.from_bytes(digest[5 * i : 5 * i + 5], "big") % 100000 for i in range(CODE_GROUPS)]
    return " ".join(f"{g:05d}" for g in groups)


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Identity:
    """Per-session keys: an Ed25519 seed (signing) and an X25519 secret key (boxes)."""

    sign_seed: bytes = field(repr=False)
    box_sk: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> Identity:
        return cls(sign_seed=os.urandom(KEY_SIZE), box_sk=os.urandom(KEY_SIZE))

    @property
    def sign_pk(self) -> bytes:
        return bytes(nacl.signing.SigningKey(self.sign_seed).verify_key)

    @property
    def box_pk(self) -> bytes:
        return bytes(nacl.bindings.crypto_scalarmult_base(self.box_sk))

    def sign(self, message: bytes) -> bytes:
        """Ed25519 (RFC 8032 §5.1.6), deterministic."""
        return bytes(nacl.signing.SigningKey(self.sign_seed).sign(message).signature)


@dataclass(frozen=True)
class Peer:
    """A member whose hello verified."""

    id: str
    name: str
    index: int
    sign_pk: bytes
    box_pk: bytes


def verify_signature(sign_pk: bytes, signature: bytes, message: bytes) -> bool:
    """libsodium ``crypto_sign_verify_detached`` (RFC 8032 §5.1.7); never raises."""
    try:
        nacl.signing.VerifyKey(sign_pk).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError, ValueError):
        return False
    return True


def _bytes_field(msg: dict[str, Any], name: str, size: int | None = None) -> bytes:
    try:
        value = unb64(msg[name])
    except (KeyError, ValueError):
        raise Rejected("malformed") from None
    if size is not None and len(value) != size:
        raise Rejected("malformed")
    return value


def _int_field(msg: dict[str, Any], name: str, maximum: int) -> int:
    value = msg.get(name)
    if type(value) is not int or not 0 <= value <= maximum:
        raise Rejected("malformed")
    return value


def _check_version(msg: dict[str, Any]) -> None:
    if msg.get("v") != MESSAGE_VERSION:
        raise Rejected("unsupported-version")


# --------------------------------------------------------------------------- hello


def make_hello(identity: Identity, room: str, pid: str, index: int, name: str) -> dict[str, Any]:
    """The signed hello of ``pid`` (whose envelope sender it must be)."""
    sign_pk, box_pk = identity.sign_pk, identity.box_pk
    sig = identity.sign(hello_transcript(room, pid, index, sign_pk, box_pk, name))
    return {
        "type": "hello",
        "v": MESSAGE_VERSION,
        "id": pid,
        "index": index,
        "name": name,
        "sign_pk": b64(sign_pk),
        "box_pk": b64(box_pk),
        "sig": b64(sig),
    }


def verify_hello(msg: dict[str, Any], room: str, sender: str, index: int | None) -> Peer:
    """Check a hello from envelope sender ``sender`` whose signaling index is ``index``."""
    _check_version(msg)
    if msg.get("id") != sender:
        raise Rejected("wrong-sender")  # a hello speaks only for its envelope's sender
    if index is None:
        raise Rejected("unknown-member")
    if _int_field(msg, "index", 0xFFFF) != index:
        raise Rejected("wrong-index")
    name = msg.get("name")
    if not isinstance(name, str):
        raise Rejected("malformed")
    try:
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise Rejected("malformed")
    except UnicodeEncodeError:  # lone surrogates
        raise Rejected("malformed") from None
    sign_pk = _bytes_field(msg, "sign_pk", KEY_SIZE)
    box_pk = _bytes_field(msg, "box_pk", KEY_SIZE)
    sig = _bytes_field(msg, "sig", SIGNATURE_SIZE)
    transcript = hello_transcript(room, sender, index, sign_pk, box_pk, name)
    if not verify_signature(sign_pk, sig, transcript):
        raise Rejected("bad-signature")
    return Peer(sender, name, index, sign_pk, box_pk)


# --------------------------------------------------------------------------- media-key


def make_media_key(
    identity: Identity,
    room: str,
    sender: str,
    to: Peer,
    key: SendKey,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """Box ``key.key`` to ``to`` (crypto_box) and sign the transcript. ``nonce``: tests only."""
    if len(key.key) != BASE_KEY_SIZE:
        raise ValueError("a base key is 32 bytes")
    nonce = os.urandom(BOX_NONCE_SIZE) if nonce is None else nonce
    box = nacl.bindings.crypto_box_easy(key.key, nonce, to.box_pk, identity.box_sk)
    transcript = media_key_transcript(
        room, sender, to.id, key.sender, key.generation, key.step, nonce, box
    )
    return {
        "type": "media-key",
        "v": MESSAGE_VERSION,
        "index": key.sender,
        "generation": key.generation,
        "step": key.step,
        "nonce": b64(nonce),
        "box": b64(box),
        "sig": b64(identity.sign(transcript)),
    }


def open_media_key(
    msg: dict[str, Any], identity: Identity, room: str, me: str, sender: Peer
) -> tuple[SendKey, bytes]:
    """Verify and open a media-key from ``sender`` to ``me``: (the key, the box nonce)."""
    _check_version(msg)
    index = _int_field(msg, "index", 0xFFFF)
    generation = _int_field(msg, "generation", 0xFFFF)
    step = _int_field(msg, "step", MAX_STEP)
    nonce = _bytes_field(msg, "nonce", BOX_NONCE_SIZE)
    box = _bytes_field(msg, "box", BASE_KEY_SIZE + BOX_MAC_SIZE)
    sig = _bytes_field(msg, "sig", SIGNATURE_SIZE)
    if index != sender.index:
        raise Rejected("wrong-index")  # a member only distributes its own sending key
    transcript = media_key_transcript(room, sender.id, me, index, generation, step, nonce, box)
    if not verify_signature(sender.sign_pk, sig, transcript):
        raise Rejected("bad-signature")
    try:
        key = nacl.bindings.crypto_box_open_easy(box, nonce, sender.box_pk, identity.box_sk)
    except (nacl.exceptions.CryptoError, ValueError):
        raise Rejected("bad-box") from None
    return SendKey(index, generation, step, bytes(key)), nonce


def make_ack(
    identity: Identity, room: str, me: str, to: str, generation: int, step: int, nonce: bytes
) -> dict[str, Any]:
    sig = identity.sign(ack_transcript(room, me, to, generation, step, nonce))
    return {
        "type": "media-key-ack",
        "v": MESSAGE_VERSION,
        "generation": generation,
        "step": step,
        "nonce": b64(nonce),
        "sig": b64(sig),
    }


def verify_ack(msg: dict[str, Any], room: str, me: str, sender: Peer) -> tuple[int, int, bytes]:
    """(generation, step, nonce of the acknowledged media-key) of an ack sent to ``me``."""
    _check_version(msg)
    generation = _int_field(msg, "generation", 0xFFFF)
    step = _int_field(msg, "step", MAX_STEP)
    nonce = _bytes_field(msg, "nonce", BOX_NONCE_SIZE)
    sig = _bytes_field(msg, "sig", SIGNATURE_SIZE)
    transcript = ack_transcript(room, sender.id, me, generation, step, nonce)
    if not verify_signature(sender.sign_pk, sig, transcript):
        raise Rejected("bad-signature")
    return generation, step, nonce


# --------------------------------------------------------------------------- the protocol

MESSAGE_TYPES = frozenset({"hello", "media-key", "media-key-ack"})
KeyFrameCallback = Callable[[], Awaitable[None] | None]
PeerCallback = Callable[[Peer], Awaitable[None] | None]


class SealedChannel(Protocol):
    """What ``KeyManager`` needs of a joined signaling client (peers/client.py
    ``SignalingClient`` is one): who we are, the members' sender indices, the inbox of
    opened envelopes and server messages, and a way to seal a message to one or all."""

    id: str | None
    room: str | None
    index: int | None
    members: dict[str, int]
    inbox: asyncio.Queue[dict[str, Any] | Sealed]

    async def seal(self, to: str, payload: bytes | dict[str, Any]) -> int: ...


class KeyManager:
    """Runs the media-keys protocol for one participant over a joined ``SignalingClient``.

    ``start()`` draws the sending key, says hello and starts a task that reads the
    client's inbox: media-keys messages and membership events are handled here, every
    other message goes to ``self.other`` (chat, lock, ...). ``events`` records what
    happened, as ``(name, detail)``, with the names of the browser KeyManager's events.
    """

    def __init__(
        self,
        client: SealedChannel,
        encryptor: FrameEncryptor,
        decryptor: FrameDecryptor,
        name: str = "",
        *,
        identity: Identity | None = None,
        debounce: float = DEBOUNCE,
        switch_timeout: float = SWITCH_TIMEOUT,
    ) -> None:
        self.client = client
        self.encryptor = encryptor
        self.decryptor = decryptor
        self.name = name
        self.identity = identity or Identity.generate()
        self.debounce = debounce
        self.switch_timeout = switch_timeout
        self.peers: dict[str, Peer] = {}
        self.security_code = ""
        self.on_key_frame_needed: KeyFrameCallback | None = None
        # a member's hello verified, once per member and session: what it must hear of
        # us beyond the media key (a raised hand, PROTOCOL.md "Hands and reactions")
        self.on_peer: PeerCallback | None = None
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.other: asyncio.Queue[dict[str, Any] | Sealed] = asyncio.Queue()
        self.sent_keys: list[SendKey] = []  # every sending key this participant used
        self._changed = asyncio.Event()  # replaced by a fresh one after every event
        self._lock = asyncio.Lock()
        self._installed: dict[str, int] = {}  # peer → newest generation; kept for the session
        self._waiting: dict[str, bytes] = {}  # peer → nonce of the rotated key it must ack
        self._acked = asyncio.Event()
        self._pending: SendKey | None = None
        self._rotations: set[asyncio.Task[None]] = set()  # running rotation tasks
        self._due = False  # a rotation is due: its debounce has not ended yet
        self._again = False  # a member left while a rotated key was pending: rotate again
        self._pump: asyncio.Task[None] | None = None

    # -- identity --------------------------------------------------------------------------

    @property
    def me(self) -> str:
        if self.client.id is None or self.client.room is None or self.client.index is None:
            raise RuntimeError("join the room first")
        return self.client.id

    @property
    def room(self) -> str:
        assert self.client.room is not None
        return self.client.room

    async def start(self) -> None:
        """After ``client.join``: own key, hello to everyone, then handle the inbox."""
        me, index = self.me, self.client.index
        assert index is not None
        async with self._lock:
            self._use(self.encryptor.set_key(index, 0))
            self._update_code()
            await self.client.seal("*", make_hello(self.identity, self.room, me, index, self.name))
        self._pump = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        for task in (self._pump, *self._rotations):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def _run(self) -> None:
        while True:
            msg = await self.client.inbox.get()
            try:
                consumed = await self.handle(msg)
            except Exception:
                log.exception("media keys: handling a message failed")
                consumed = False
            if not consumed:
                self.other.put_nowait(msg)
            if isinstance(msg, dict) and msg.get("type") == "closed":
                return

    async def handle(self, msg: dict[str, Any] | Sealed) -> bool:
        """Handle one inbox item; False when it is not ours (it then goes to ``other``)."""
        if isinstance(msg, Sealed):
            try:
                body = msg.json()
            except ValueError:
                return False
            if not isinstance(body, dict) or body.get("type") not in MESSAGE_TYPES:
                return False  # chat and anything else the app sends
            async with self._lock:
                try:
                    await self._sealed(msg.sender, msg.to, body)
                except Rejected as exc:
                    self._emit("rejected", {"sender": msg.sender, "reason": exc.reason})
                    log.info(
                        "media keys: %s from %s refused (%s)", body["type"], msg.sender, exc.reason
                    )
            return True
        mtype = msg.get("type")
        if mtype == "member-joined":
            async with self._lock:
                await self._member_joined(str(msg["id"]))
        elif mtype == "member-left":
            async with self._lock:
                self._member_left(str(msg["id"]))
        return False  # membership events stay visible to the application

    async def _sealed(self, sender: str, to: str, body: dict[str, Any]) -> None:
        kind = body["type"]
        if kind == "hello":
            await self._hello(sender, body)
            return
        if to != self.me:
            raise Rejected("not-for-me")  # keys and acks are addressed to one member
        peer = self.peers.get(sender)
        if peer is None:
            raise Rejected("no-hello")
        if kind == "media-key":
            await self._media_key(peer, body)
        else:
            self._ack(peer, body)

    async def _hello(self, sender: str, body: dict[str, Any]) -> None:
        peer = verify_hello(body, self.room, sender, self.client.members.get(sender))
        known = self.peers.get(sender)
        if known is not None:
            if (known.sign_pk, known.box_pk) != (peer.sign_pk, peer.box_pk):
                raise Rejected("key-changed")  # per-session keys never change in a session
            return
        self.peers[sender] = peer
        self._emit("hello", {"id": sender, "name": peer.name})
        self._update_code()
        current = self.encryptor.current
        assert current is not None
        await self._send_key(peer, current)
        if self._pending is not None:  # a rotation is under way: the newcomer needs it too
            self._waiting[sender] = await self._send_key(peer, self._pending)
            self._acked.clear()
        if self.on_peer is not None:
            done = self.on_peer(peer)
            if done is not None:
                await done

    async def _media_key(self, peer: Peer, body: dict[str, Any]) -> None:
        key, nonce = open_media_key(body, self.identity, self.room, self.me, peer)
        # A sender distributes each generation once: a replayed or older key is refused here,
        # and the decryptor refuses it again (FORMAT.md §6a).
        if key.generation <= self._installed.get(peer.id, -1):
            raise Rejected("stale-key")
        try:
            self.decryptor.set_key(peer.id, key.sender, key.generation, key.step, key.key)
        except KeyRefused as exc:
            raise Rejected(exc.reason) from None
        self._installed[peer.id] = key.generation
        ack = make_ack(self.identity, self.room, self.me, peer.id, key.generation, key.step, nonce)
        await self.client.seal(peer.id, ack)
        detail = {"participant": peer.id, "generation": key.generation, "step": key.step}
        self._emit("key-installed", detail)

    def _ack(self, peer: Peer, body: dict[str, Any]) -> None:
        _generation, _step, nonce = verify_ack(body, self.room, self.me, peer)
        if self._waiting.get(peer.id) == nonce:
            del self._waiting[peer.id]
            if not self._waiting:
                self._acked.set()

    # -- membership ------------------------------------------------------------------------

    async def _member_joined(self, pid: str) -> None:
        """Ratchet (the newcomer cannot read the past) and say hello to the newcomer.

        The ratcheted key goes only to the newcomer, once its hello arrives; the others
        follow by themselves (FORMAT.md §5, §6.8). At step 255 the sender rotates instead,
        or, if a rotated key is pending (every member has been sent it), switches to it now
        and ratchets that.
        """
        current = self.encryptor.current
        assert current is not None
        if current.step >= MAX_STEP and self._pending is not None:
            self._switched(self.encryptor.switch())
            self._use(self.encryptor.ratchet())
            await self._key_frame()
        elif current.step >= MAX_STEP:
            rotated = self.encryptor.rotate()
            self.encryptor.switch()
            self._use(rotated)
            for peer in self.peers.values():
                await self._send_key(peer, rotated)
        else:
            self._use(self.encryptor.ratchet())
        index = self.client.index
        assert index is not None
        hello = make_hello(self.identity, self.room, self.me, index, self.name)
        await self.client.seal(pid, hello)

    def _member_left(self, pid: str) -> None:
        self.peers.pop(pid, None)  # _installed keeps its entry: the id never comes back
        self.decryptor.remove_participant(pid)
        if self._waiting.pop(pid, None) is not None and not self._waiting:
            self._acked.set()
        self._update_code()
        self._rotate_soon()

    def _rotate_soon(self) -> None:
        """Make a rotation due ``debounce`` from now, unless one is due or under way.

        Leaves never postpone or cancel a rotation: leaves while one is due join it, and a
        leave while a rotated key waits for its acks (the departed member may hold that key)
        gets one more rotation right after the switch. So the key a departed member held
        stops being used within ``debounce + switch_timeout`` of its leave, or
        ``2 * switch_timeout + debounce`` when a rotation was pending (PROTOCOL.md).
        """
        if self._pending is not None:
            self._again = True
        elif not self._due:
            self._due = True
            task = asyncio.get_running_loop().create_task(self._rotate_later())
            self._rotations.add(task)
            task.add_done_callback(self._rotations.discard)

    async def _rotate_later(self) -> None:
        await asyncio.sleep(self.debounce)
        async with self._lock:
            self._due = False  # a leave from now on needs a rotation of its own
            if self._pending is not None:
                self._again = True
                return
            pending = self._pending = self.encryptor.rotate()
            self._waiting = {}
            for peer in list(self.peers.values()):
                self._waiting[peer.id] = await self._send_key(peer, pending)
            self._acked.clear()
            if not self._waiting:
                self._acked.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._acked.wait(), self.switch_timeout)
        async with self._lock:
            if self._pending is not pending:
                return  # switched already (a join at step 255)
            self._switched(self.encryptor.switch())
        await self._key_frame()

    def _switched(self, key: SendKey | None) -> None:
        """The pending key is in use: record it; start the next rotation if one is owed."""
        self._pending = None
        self._waiting = {}
        self._acked.set()  # ends the wait for acks if the switch came early (step 255)
        if key is not None:
            self._use(key)
            self._emit("rotated", {"generation": key.generation})
        if self._again:
            self._again = False
            self._rotate_soon()

    async def _key_frame(self) -> None:
        if self.on_key_frame_needed is not None:
            result = self.on_key_frame_needed()
            if inspect.isawaitable(result):
                await result

    # -- helpers ---------------------------------------------------------------------------

    async def _send_key(self, peer: Peer, key: SendKey) -> bytes:
        msg = make_media_key(self.identity, self.room, self.me, peer, key)
        await self.client.seal(peer.id, msg)
        return unb64(msg["nonce"])

    def _use(self, key: SendKey) -> None:
        self.sent_keys.append(key)

    def _update_code(self) -> None:
        members = [(p.id, p.sign_pk, p.box_pk) for p in self.peers.values()]
        members.append((self.me, self.identity.sign_pk, self.identity.box_pk))
        code = security_code(self.room, members)
        if code != self.security_code:
            self.security_code = code
            self._emit("security-code", {"code": code})

    def _emit(self, name: str, detail: dict[str, Any]) -> None:
        self.events.append((name, detail))
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` holds (checked after every event), or ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [detail for n, detail in self.events if n == name]
