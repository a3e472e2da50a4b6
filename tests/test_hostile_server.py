"""A hostile signaling server against the real Python client stack.

The twin of web/test/hostile.test.mjs (docs/SECURITY.md, "Attacks a hostile server can
try"). ``HostileServer`` is a small aiohttp WebSocket server on 127.0.0.1 that speaks
protocol version 2 like signaling/server.py (``challenge``; ``room-info``; ``join`` → a
fresh ``challenge`` then ``joined``; ``member-joined`` / ``member-left``; ``seal`` →
``sealed`` with ``from`` stamped, relayed to every other member or to one) — but it checks
no join signature, records every sealed message it relays (per recipient), withholds the
ones its ``drop`` rule names, tells any participant anything (``tell``: fake membership
events, replayed or reordered envelopes) and can hand the next joiner a sender index of
its choosing (``force_index``).

Each participant is a real ``SignalingClient`` (peers/client.py) with a real
``KeyManager`` (e2ee/mediakeys.py) over a real ``FrameEncryptor`` / ``FrameDecryptor``
(e2ee/sframe.py) whose clock the test can take over. The "SFU" is this file handing the
frames one participant's encryptor made to another's decryptor — or withholding, forging
and re-routing them. Every test is one attack and fails if the attack works.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from e2ee.mediakeys import KeyManager, open_media_key
from e2ee.roomcrypto import EnvelopeHeader, b64, open_envelope, unb64
from e2ee.sframe import (
    GRACE,
    MAX_STEP,
    EncryptedFrame,
    FrameDecryptor,
    FrameEncryptor,
    FrameRejected,
    KeyId,
    KeyRefused,
    KidKeys,
    Kind,
    SendKey,
    encrypt_frame,
    ratchet,
)
from peers.client import Sealed, SignalingClient

pytestmark = pytest.mark.timeout(60)  # a safety net: each test takes a few seconds

ROOM = "hostile"
PASSWORD = "correct horse battery staple"
DEBOUNCE = 0.03  # seconds from a leave to the rotation
SWITCH_TIMEOUT = 0.4  # seconds a rotated key waits for its acks

Message = dict[str, Any]


def vp8() -> bytes:
    """A VP8 key frame: its 10 clear bytes (frame tag, start code, 640×480), then payload."""
    return bytes([0x50, 0x43, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01]) + os.urandom(90)


def media(kind: Kind) -> bytes:
    return vp8() if kind == "video" else b"\x78" + os.urandom(40)  # Opus: TOC byte, payload


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` (for state that changes without a KeyManager event)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------------ participants


class RecordingClient(SignalingClient):
    """The real client; it also keeps the plaintext of every envelope it accepted."""

    def __init__(
        self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, origin: str
    ) -> None:
        self.accepted: list[Any] = []
        super().__init__(session, ws, origin)

    def _open(self, msg: dict[str, Any]) -> Sealed | None:
        opened = super()._open(msg)
        if opened is not None:
            self.accepted.append(opened.json())
        return opened


class Clock:
    """A decryptor's clock: real time until the test sets ``real = False`` and moves ``t``."""

    def __init__(self) -> None:
        self.real = True
        self.t = 0.0

    def __call__(self) -> float:
        return time.monotonic() if self.real else self.t


@dataclass
class Participant:
    name: str
    client: RecordingClient
    km: KeyManager
    clock: Clock

    @property
    def id(self) -> str:
        assert self.client.id is not None
        return self.client.id

    @property
    def index(self) -> int:
        assert self.client.index is not None
        return self.client.index

    @property
    def encryptor(self) -> FrameEncryptor:
        return self.km.encryptor

    @property
    def decryptor(self) -> FrameDecryptor:
        return self.km.decryptor

    def current(self) -> SendKey:
        key = self.encryptor.current
        assert key is not None
        return key


def events(p: Participant, name: str) -> list[dict[str, Any]]:
    return p.km.events_named(name)


def installed(a: Participant, b: Participant) -> list[int]:
    """The generations of ``b``'s keys that ``a`` installed, in order."""
    return [d["generation"] for d in events(a, "key-installed") if d["participant"] == b.id]


def knows(a: Participant, b: Participant) -> bool:
    return bool(installed(a, b))


def rotations(p: Participant) -> list[int]:
    return [d["generation"] for d in events(p, "rotated")]


async def happens(p: Participant, predicate: Callable[[], bool], what: str, t: float = 10) -> None:
    """Wait for a KeyManager event of ``p`` after which ``predicate`` holds."""
    assert await p.km.wait_for(predicate, t), f"{p.name}: timed out waiting for {what}"


# ------------------------------------------------------------------------ frames


def frame_of(p: Participant, kind: Kind = "video") -> bytes:
    """A frame ``p``'s encryptor sends now."""
    return p.encryptor.encrypt(kind, media(kind))


def verdict(to: Participant, track: Participant | None, data: bytes, kind: Kind = "video") -> str:
    """``"ok"`` when ``to`` decrypts ``data`` as a frame of ``track``'s track (None: a track
    the SFU mapped to nobody), else the reason it was dropped."""
    try:
        to.decryptor.decrypt(kind, None if track is None else track.id, data)
    except FrameRejected as exc:
        return exc.reason
    return "ok"


def generation_of(data: bytes, kind: Kind = "video") -> int:
    return KeyId.parse(EncryptedFrame.parse(kind, data).kid).generation


class Forger:
    """Frames under a key someone holds, with a counter of its own far above the real
    sender's, so that the replay window does not stop them."""

    def __init__(self, key: SendKey, counter: int = 1_000_000) -> None:
        self.keys = KidKeys.derive(key.key, int(KeyId(key.sender, key.generation, key.step)))
        self.counter = counter

    def frame(self, kind: Kind = "video") -> bytes:
        self.counter += 1
        return encrypt_frame(self.keys, self.counter, kind, media(kind))


# ------------------------------------------------------------------------ the server


def challenge() -> Message:
    return {"type": "challenge", "conn": secrets.token_urlsafe(12), "nonce": b64(os.urandom(32))}


class Conn:
    """The server's end of one WebSocket, with an ordered outbox (a socket keeps order)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.id: str | None = None
        self.index: int | None = None
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def deliver(self, msg: Message) -> None:
        self.outbox.put_nowait(json.dumps({"v": 2, **msg}))

    async def _write(self) -> None:
        while (frame := await self.outbox.get()) is not None:
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return

    async def stop(self) -> None:
        self.outbox.put_nowait(None)
        try:
            await asyncio.wait_for(self.writer, 2)
        except (TimeoutError, asyncio.CancelledError):
            self.writer.cancel()


@dataclass(frozen=True)
class Relayed:
    to: str  # the recipient's participant id
    msg: Message  # the `sealed` message as relayed
    withheld: bool


class HostileServer:
    """Relays like signaling/server.py, records every sealed message, and lies on demand."""

    def __init__(self) -> None:
        self.kdf: Message | None = None  # the room record's KDF parameters, as its creator sent
        self.conns: dict[str, Conn] = {}  # current members: participant id → socket
        self.sockets: set[Conn] = set()  # every open socket
        self.people: list[Participant] = []  # every participant joined through this server
        self.next_index = 1
        self.force_index: int | None = None  # the index to hand the next joiner
        self.log: list[Relayed] = []
        self.drop: Callable[[Message, str], bool] = lambda msg, to: False  # withhold?
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._socket)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}/ws"

    async def close(self) -> None:
        """Stop every participant (KeyManager, then client), then the server."""
        for p in self.people:
            await p.km.close()
        for p in self.people:
            await p.client.close()
        for conn in list(self.sockets):
            await conn.ws.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Conn(ws)
        self.sockets.add(conn)
        conn.deliver(challenge())
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self._receive(conn, json.loads(frame.data))
        finally:
            self.sockets.discard(conn)
            if conn.id is not None and self.conns.get(conn.id) is conn:
                self._depart(conn, "closed")
            await conn.stop()
        return ws

    def _receive(self, conn: Conn, msg: Message) -> None:
        mtype = msg.get("type")
        if mtype == "room-info":
            reply: Message = {
                "type": "room-info",
                "room": msg["room"],
                "exists": self.kdf is not None,
            }
            if self.kdf is not None:
                reply["kdf"] = self.kdf
            conn.deliver(reply)
        elif mtype == "join":
            if self.kdf is None:
                self.kdf = msg["create"]["kdf"]
            pid = "p" + secrets.token_hex(6)
            if self.force_index is not None:
                index, self.force_index = self.force_index, None
            else:
                index, self.next_index = self.next_index, self.next_index + 1
            members = [{"id": c.id, "index": c.index} for c in self.conns.values()]
            conn.id, conn.index = pid, index
            conn.deliver(challenge())  # every join is answered by a fresh challenge first
            conn.deliver(
                {
                    "type": "joined",
                    "room": msg["room"],
                    "id": pid,
                    "index": index,
                    "members": members,
                    "kdf": self.kdf,
                    "lock": {
                        "locked": False,
                        "lock_at": None,
                        "open_until": None,
                        "opened_by": None,
                    },
                    "ice_servers": [],
                    "sfu": False,
                }
            )
            for other in self.conns.values():
                other.deliver({"type": "member-joined", "id": pid, "index": index})
            self.conns[pid] = conn
        elif mtype == "seal" and conn.id is not None and self.conns.get(conn.id) is conn:
            # (like the real server: a socket that left the room relays nothing more)
            out: Message = {
                "type": "sealed",
                "from": conn.id,  # stamped from the socket, like the real server
                "to": msg["to"],
                "epoch": msg["epoch"],
                "seq": msg["seq"],
                "nonce": msg["nonce"],
                "ct": msg["ct"],
            }
            if msg["to"] == "*":
                targets = [c for c in self.conns.values() if c is not conn]
            else:  # a fake member has no socket: nobody to relay to
                target = self.conns.get(msg["to"])
                targets = [] if target is None else [target]
            for target in targets:
                assert target.id is not None
                withheld = self.drop(out, target.id)
                self.log.append(Relayed(target.id, out, withheld))
                if not withheld:
                    target.deliver(out)
        elif mtype == "leave" and conn.id is not None and self.conns.get(conn.id) is conn:
            self._depart(conn, "left")

    def _depart(self, conn: Conn, reason: str) -> None:
        assert conn.id is not None
        del self.conns[conn.id]
        for other in self.conns.values():
            other.deliver(
                {"type": "member-left", "id": conn.id, "index": conn.index, "reason": reason}
            )

    # -- what the tests drive ---------------------------------------------------------------

    def tell(self, p: Participant, msg: Message) -> None:
        """Send ``msg`` to ``p`` as if it were true (after what is queued for it)."""
        self.conns[p.id].deliver(msg)

    async def leave(self, p: Participant) -> None:
        """A real leave: ``p`` stops (its keys stay as they were: what a departed member
        keeps), everyone else is told."""
        await p.km.close()
        self._depart(self.conns[p.id], "left")
        await p.client.close()

    def recorded(self, p: Participant, sender: Participant | None = None) -> list[Message]:
        """Every sealed message relayed (or withheld) to ``p``, optionally only ``sender``'s."""
        return [
            r.msg
            for r in self.log
            if r.to == p.id and (sender is None or r.msg["from"] == sender.id)
        ]

    async def quiet(self, timeout: float = 5.0) -> None:
        """Until nothing was relayed for 100 ms and every current member has accepted and
        taken from its inbox everything relayed to it and not withheld."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            count = len(self.log)
            await asyncio.sleep(0.1)
            if len(self.log) == count and self._delivered():
                return
            if loop.time() > deadline:
                raise AssertionError("the room did not go quiet")

    def _delivered(self) -> bool:
        live = {p.client.id: p for p in self.people if p.client.id in self.conns}
        for r in self.log:
            p = live.get(r.to)
            # ReplayGuard.check is True while the envelope's seq is above the last accepted
            if (
                p is not None
                and not r.withheld
                and p.client.replay.check(r.msg["from"], r.msg["seq"])
            ):
                return False
        return all(p.client.inbox.empty() for p in live.values())


def open_sealed(p: Participant, msg: Message) -> Any:
    """The plaintext of a recorded envelope, opened with ``p``'s room key (any password
    holder can: what a colluding member sees)."""
    keys = p.client.keys
    assert keys is not None
    header = EnvelopeHeader(ROOM, msg["epoch"], msg["from"], msg["to"], msg["seq"])
    return json.loads(open_envelope(keys.k_room, header, unb64(msg["nonce"]), unb64(msg["ct"])))


def keys_received(server: HostileServer, p: Participant, sender: Participant) -> list[SendKey]:
    """Every media key ``sender`` boxed to ``p``, opened with ``p``'s own secrets from what
    the server relayed to it: what ``p`` holds, whatever it does later."""
    peer = p.km.peers[sender.id]
    out = []
    for msg in server.recorded(p, sender):
        body = open_sealed(p, msg)
        if body.get("type") == "media-key":
            out.append(open_media_key(body, p.km.identity, ROOM, p.id, peer)[0])
    return out


@pytest_asyncio.fixture
async def server() -> AsyncIterator[HostileServer]:
    srv = HostileServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def join(
    server: HostileServer, name: str, *, switch_timeout: float = SWITCH_TIMEOUT
) -> Participant:
    """A real SignalingClient + KeyManager, joined through ``server`` (Argon2id: ~0.1 s)."""
    client = await RecordingClient.connect(server.url)
    assert isinstance(client, RecordingClient)
    clock = Clock()
    km = KeyManager(
        client,
        FrameEncryptor(),
        FrameDecryptor(clock=clock),
        name,
        debounce=DEBOUNCE,
        switch_timeout=switch_timeout,
    )
    p = Participant(name, client, km, clock)
    server.people.append(p)  # closed at the end of the test, whatever happens
    await client.join(ROOM, PASSWORD)
    await km.start()
    return p


async def settled(people: list[Participant]) -> None:
    await until(
        lambda: all(knows(a, b) for a in people for b in people if a is not b), "everyone's keys"
    )


async def room(server: HostileServer, *names: str) -> list[Participant]:
    people = [await join(server, name) for name in names]
    await settled(people)
    return people


# ------------------------------------------------------------------------ attacks


async def test_fake_leave_and_rejoin_under_the_same_id_then_replays_are_all_refused(
    server: HostileServer,
) -> None:
    alice, vic = await room(server, "Alice", "Vic")
    await vic.client.seal("*", {"type": "chat", "text": "the plan"})
    old = [frame_of(vic), frame_of(vic)]
    assert [verdict(alice, vic, f) for f in old] == ["ok", "ok"]
    # A member leaves for real: Vic rotates away the key Carol saw (generation 1).
    carol = await join(server, "Carol")
    await settled([alice, vic, carol])
    await server.leave(carol)
    await happens(
        alice,
        lambda: rotations(alice) == [1] and 1 in installed(alice, vic),
        "Alice's rotation and Vic's generation 1",
    )
    await happens(
        vic,
        lambda: rotations(vic) == [1] and 1 in installed(vic, alice),
        "Vic's rotation and Alice's generation 1",
    )
    await server.quiet()  # the last acks land
    before_installed, before_accepted = installed(alice, vic), len(alice.client.accepted)
    before_hellos = len(events(alice, "hello"))
    assert [m for m in alice.client.accepted if m["type"] == "chat"] == [
        {"type": "chat", "text": "the plan"}
    ]
    assert alice.client.rejected["replay"] == 0
    vic_keys = vic.km.sent_keys + keys_received(server, alice, vic)  # every key Vic ever had
    assert {(k.generation, k.step) for k in vic_keys} == {(0, 0), (0, 1), (1, 0)}

    # The attack: Vic "left", "came back" with the same id and index, and said it all again.
    replay = server.recorded(alice, vic)
    bodies = [open_sealed(alice, m) for m in replay]
    assert {"hello", "media-key", "media-key-ack", "chat"} <= {b["type"] for b in bodies}
    assert {b["generation"] for b in bodies if b["type"] == "media-key"} == {0, 1}
    server.tell(alice, {"type": "member-left", "id": vic.id, "index": vic.index, "reason": "left"})
    server.tell(alice, {"type": "member-joined", "id": vic.id, "index": vic.index})
    for msg in replay:
        server.tell(alice, msg)
    await until(lambda: alice.client.rejected["replay"] >= len(replay), "every replay refused")
    await server.quiet()

    assert alice.client.rejected["replay"] == len(replay)
    assert alice.client.rejected["rejoin"] == 1
    assert vic.id not in alice.client.members and vic.id not in alice.km.peers
    assert len(alice.client.accepted) == before_accepted  # no hello, key or chat twice
    assert installed(alice, vic) == before_installed
    assert len(events(alice, "hello")) == before_hellos
    # Vic's old frames: his keys are gone at Alice.
    assert [verdict(alice, vic, f) for f in old] == ["unknown-kid", "unknown-kid"]
    # Even asked directly, the decryptor refuses every key Vic ever had.
    for key in vic_keys:
        with pytest.raises(KeyRefused) as refused:
            alice.decryptor.set_key(vic.id, key.sender, key.generation, key.step, key.key)
        assert refused.value.reason == "removed"


async def test_a_rotated_away_media_key_resealed_in_a_fresh_envelope_is_refused(
    server: HostileServer,
) -> None:
    # A colluding password holder can re-seal an old media-key body in a fresh envelope
    # (a new seq), so the envelope replay guard does not see it: the key policy must.
    alice, vic = await room(server, "Alice", "Vic")
    carol = await join(server, "Carol")
    await settled([alice, vic, carol])
    await server.leave(carol)
    await happens(alice, lambda: 1 in installed(alice, vic), "Vic's generation 1")
    await server.quiet()
    assert events(alice, "rejected") == []
    recorded = server.recorded(alice, vic)
    old_bodies = [
        (m, body)
        for m in recorded
        if (body := open_sealed(alice, m))["type"] == "media-key" and body["generation"] == 0
    ]
    assert len(old_bodies) == 1
    old_envelope, old_body = old_bodies[0]
    old_key = open_media_key(old_body, alice.km.identity, ROOM, alice.id, alice.km.peers[vic.id])[0]

    # Vic's own client plays the insider: the very same signed body, a new envelope.
    seq = await vic.client.seal(alice.id, json.dumps(old_body).encode())
    assert seq > max(m["seq"] for m in recorded) > old_envelope["seq"]
    await happens(alice, lambda: bool(events(alice, "rejected")), "the refusal")
    assert events(alice, "rejected") == [{"sender": vic.id, "reason": "stale-key"}]
    assert alice.client.rejected["replay"] == 0  # the envelope itself was fresh
    assert installed(alice, vic) == [0, 1]
    # The decryptor alone refuses it as well.
    with pytest.raises(KeyRefused) as refused:
        alice.decryptor.set_key(
            vic.id, old_key.sender, old_key.generation, old_key.step, old_key.key
        )
    assert refused.value.reason == "old-key"
    assert verdict(alice, vic, frame_of(vic)) == "ok"


async def test_every_recorded_envelope_replayed_and_envelopes_reordered(
    server: HostileServer,
) -> None:
    alice, bob = await room(server, "Alice", "Bob")
    await bob.client.seal("*", {"type": "chat", "text": "one"})
    await bob.client.seal("*", {"type": "state", "audio": False, "video": True})
    await server.quiet()
    seen = len(alice.client.accepted)
    assert {"hello", "media-key", "chat", "state"} <= {m["type"] for m in alice.client.accepted}
    everything = server.recorded(alice)
    for msg in everything:
        server.tell(alice, msg)
    await until(lambda: alice.client.rejected["replay"] >= len(everything), "replays refused")
    await server.quiet()
    assert alice.client.rejected["replay"] == len(everything)
    assert len(alice.client.accepted) == seen
    assert sum(1 for m in alice.client.accepted if m["type"] == "chat") == 1

    # Reordered: the later envelope arrives first; the earlier one is then a replay.
    server.drop = lambda msg, to: to == alice.id
    await bob.client.seal("*", {"type": "chat", "text": "first"})
    await bob.client.seal("*", {"type": "chat", "text": "second"})
    await until(lambda: len(server.recorded(alice, bob)) == len(everything) + 2, "the relay")
    first, second = server.recorded(alice, bob)[-2:]
    assert first["seq"] < second["seq"]
    server.tell(alice, second)
    server.tell(alice, first)
    await until(lambda: alice.client.rejected["replay"] >= len(everything) + 1, "the late one")
    await server.quiet()
    assert alice.client.rejected["replay"] == len(everything) + 1
    assert [m.get("text") for m in alice.client.accepted[seen:]] == ["second"]


async def test_a_departed_members_copy_of_the_previous_key_stops_working_after_the_grace(
    server: HostileServer,
) -> None:
    alice, vic, dave = await room(server, "Alice", "Vic", "Dave")
    await server.quiet()
    # Dave keeps the generation-0 key Vic boxed to him, as a malicious member would.
    (held,) = keys_received(server, dave, vic)
    assert held.generation == 0
    forger = Forger(held)
    await server.leave(dave)
    await happens(vic, lambda: rotations(vic) == [1], "Vic's rotation")
    await happens(alice, lambda: 1 in installed(alice, vic), "Vic's generation 1 at Alice")
    assert GRACE == 2.0  # FORMAT.md §6a: the bound this attack is up against
    alice.clock.t, alice.clock.real = 0.0, False  # Alice's decryptor now runs on a test clock
    # Until Vic's first frame under generation 1 arrives, generation 0 is still his working
    # key at Alice (frames in flight): this is the documented window.
    assert verdict(alice, vic, forger.frame()) == "ok"
    first = frame_of(vic)
    assert generation_of(first) == 1
    assert verdict(alice, vic, first) == "ok"
    step = 1 / 1024  # exact in binary: t lands on GRACE exactly
    alice.clock.t += GRACE - step
    assert verdict(alice, vic, forger.frame()) == "ok", "frames in flight still decrypt"
    alice.clock.t += step
    for _ in range(3):
        assert verdict(alice, vic, forger.frame()) == "stale-key"
        assert verdict(alice, vic, forger.frame("audio"), "audio") == "stale-key"
        alice.clock.t += 60.0
    assert verdict(alice, vic, frame_of(vic)) == "ok"


async def test_fake_leaves_of_never_members_cannot_postpone_the_rotation(
    server: HostileServer,
) -> None:
    alice, vic, dave = await room(server, "Alice", "Vic", "Dave")
    await server.leave(dave)

    async def flood() -> None:  # every 20 ms, 75 times: `member-left` for a never-member
        for i in range(75):
            server.tell(
                vic,
                {
                    "type": "member-left",
                    "id": "p" + str(i).rjust(12, "f"),
                    "index": 900 + i,
                    "reason": "left",
                },
            )
            await asyncio.sleep(0.02)

    flooding = asyncio.get_running_loop().create_task(flood())
    try:
        # Bound: debounce (30 ms) + the ack or the 400 ms timeout; well inside the flood.
        await until(lambda: bool(rotations(vic)) or flooding.done(), "Vic's rotation")
        assert rotations(vic) == [1]
        assert not flooding.done(), "the rotation waited for the fake leaves to stop"
        await flooding
    finally:
        flooding.cancel()
    await until(lambda: vic.client.rejected["not-a-member"] >= 75, "the fake leaves counted")
    assert vic.client.rejected["not-a-member"] == 75
    assert rotations(vic) == [1]  # fake leaves start no rotation either
    await happens(alice, lambda: 1 in installed(alice, vic), "Vic's generation 1 at Alice")
    data = frame_of(vic)
    assert generation_of(data) == 1
    assert verdict(alice, vic, data) == "ok"


async def test_a_leave_while_a_rotation_waits_for_withheld_acks_gets_its_own_rotation(
    server: HostileServer,
) -> None:
    vic_timeout = 1.0  # room to see that Erin leaves while Vic's rotation is pending
    alice = await join(server, "Alice")
    vic = await join(server, "Vic", switch_timeout=vic_timeout)
    dave = await join(server, "Dave")
    erin = await join(server, "Erin")
    await settled([alice, vic, dave, erin])
    await server.quiet()
    server.drop = lambda msg, to: to == vic.id  # no ack (nor anything else sealed) reaches Vic
    loop = asyncio.get_running_loop()
    start = loop.time()
    await server.leave(dave)
    await happens(erin, lambda: 1 in installed(erin, vic), "generation 1 at Erin")
    await server.leave(erin)  # Erin leaves holding the pending generation 1
    await until(lambda: erin.id not in vic.client.members, "Erin's leave at Vic")
    pending = vic.encryptor.pending
    assert rotations(vic) == [] and pending is not None and pending.generation == 1
    await happens(vic, lambda: bool(rotations(vic)), "Vic's first switch")
    assert loop.time() - start >= vic_timeout  # no ack came: switched at the timeout
    g1 = frame_of(vic)
    assert generation_of(g1) == 1
    assert verdict(erin, vic, g1) == "ok"  # what Erin could read: the premise of the attack
    await happens(vic, lambda: len(rotations(vic)) >= 2, "Vic's second rotation")
    assert rotations(vic) == [1, 2]
    await happens(alice, lambda: 2 in installed(alice, vic), "generation 2 at Alice")
    g2 = frame_of(vic)
    assert generation_of(g2) == 2
    assert verdict(alice, vic, g2) == "ok"
    assert 2 not in installed(erin, vic)
    assert all(k.generation < 2 for k in keys_received(server, erin, vic))
    assert verdict(erin, vic, g2) == "unknown-kid", "Erin reads what Vic sends after her leave"


async def test_fake_joins_reusing_an_index_or_an_id_and_a_member_with_anothers_index(
    server: HostileServer,
) -> None:
    alice, vic = await room(server, "Alice", "Vic")
    server.tell(alice, {"type": "member-joined", "id": "p0123456789ab", "index": vic.index})
    server.tell(alice, {"type": "member-joined", "id": vic.id, "index": 77})
    server.tell(alice, {"type": "member-joined", "id": alice.id, "index": 78})
    await until(
        lambda: alice.client.rejected["rejoin"] + alice.client.rejected["index-reused"] >= 3,
        "the refusals",
        5,
    )
    assert alice.client.rejected["rejoin"] == 2 and alice.client.rejected["index-reused"] == 1
    assert set(alice.client.members) == {vic.id}
    assert alice.current().step == 1  # no ratchet for a fake join (only Vic's real one)

    # A colluding password holder joins with Vic's sender index (the server lies to it too).
    server.force_index = vic.index
    mallory = await join(server, "Mallory")
    assert mallory.index == vic.index
    await until(lambda: alice.client.rejected["index-reused"] == 2, "Mallory refused at Alice")
    await until(lambda: vic.client.rejected["index-reused"] == 1, "Mallory refused at Vic")
    await happens(
        alice,
        lambda: any(e["sender"] == mallory.id for e in events(alice, "rejected")),
        "Mallory's hello refused",
    )
    await server.quiet()
    assert [e for e in events(alice, "rejected") if e["sender"] == mallory.id] == [
        {"sender": mallory.id, "reason": "unknown-member"}
    ]
    assert mallory.id not in alice.km.peers and installed(alice, mallory) == []
    key = mallory.km.sent_keys[0]
    assert key.sender == vic.index
    with pytest.raises(KeyRefused) as refused:
        alice.decryptor.set_key(mallory.id, key.sender, key.generation, key.step, key.key)
    assert refused.value.reason == "sender-taken"
    assert verdict(alice, vic, frame_of(vic)) == "ok"
    # Mallory's frames carry Vic's KID on Vic's track, with a fresh counter: not Vic's key.
    mallory.encryptor.counter = 1_000_000
    assert verdict(alice, vic, frame_of(mallory)) == "auth-failed"
    assert verdict(alice, vic, frame_of(mallory, "audio"), "audio") == "auth-failed"
    assert verdict(alice, mallory, frame_of(mallory)) == "wrong-sender"
    assert verdict(alice, vic, frame_of(vic)) == "ok"


async def test_a_burst_of_fake_joins_while_a_senders_frames_are_withheld(
    server: HostileServer,
) -> None:
    alice, vic = await room(server, "Alice", "Vic")
    assert verdict(alice, vic, frame_of(vic)) == "ok"
    before = len(vic.km.sent_keys)
    start = vic.current().step

    def ratcheted(n: int) -> Callable[[], bool]:
        return lambda: len(vic.km.sent_keys) == before + n

    for i in range(40):  # 40 joins, each between two frames Alice never gets
        server.tell(
            vic, {"type": "member-joined", "id": "p" + str(i).rjust(12, "e"), "index": 500 + i}
        )
        await until(ratcheted(i + 1), "Vic's ratchet")
        frame_of(vic)  # withheld by the "SFU"
    assert vic.current().step == start + 40 and vic.current().generation == 0
    assert verdict(alice, vic, frame_of(vic)) == "ok"
    assert verdict(alice, vic, frame_of(vic, "audio"), "audio") == "ok"
    assert events(alice, "rejected") == []


async def test_step_255_while_a_rotation_is_pending_uses_the_pending_key(
    server: HostileServer,
) -> None:
    alice, dave = await room(server, "Alice", "Dave")
    vic = await join(server, "Vic", switch_timeout=60.0)
    await settled([alice, dave, vic])
    await server.quiet()
    fake = 0

    def fake_joins(n: int) -> None:
        nonlocal fake
        for _ in range(n):
            server.tell(
                vic,
                {
                    "type": "member-joined",
                    "id": "p" + str(fake).rjust(12, "d"),
                    "index": 1000 + fake,
                },
            )
            fake += 1

    server.drop = lambda msg, to: to == vic.id  # Alice's ack never reaches Vic: still pending
    await server.leave(dave)
    await happens(alice, lambda: 1 in installed(alice, vic), "Vic's pending generation 1")
    fake_joins(MAX_STEP - vic.current().step)
    await until(lambda: vic.current().step == MAX_STEP, "Vic at step 255 of generation 0")
    pending = vic.encryptor.pending
    assert vic.current().generation == 0 and pending is not None and pending.generation == 1
    fake_joins(1)  # step exhausted while generation 1 is pending
    await until(lambda: vic.current().generation == 1, "Vic's switch")
    assert rotations(vic) == [1]
    assert vic.current().step == 1  # the pending key, ratcheted for the newcomer
    assert vic.encryptor.pending is None
    # One key per generation: generation 1 is the key Alice got, never replaced.
    (g1,) = [k for k in keys_received(server, alice, vic) if k.generation == 1]
    assert (g1.step, g1.key) == (pending.step, pending.key)
    assert vic.current().key == ratchet(g1.key)
    assert verdict(alice, vic, frame_of(vic)) == "ok"
    assert installed(alice, vic) == [0, 1]

    # Step 255 with no rotation pending: a new generation at once, sent to everyone.
    fake_joins(MAX_STEP - 1)
    await until(lambda: vic.current().step == MAX_STEP, "step 255 of generation 1")
    fake_joins(1)
    await happens(alice, lambda: 2 in installed(alice, vic), "generation 2 at Alice")
    assert (vic.current().generation, vic.current().step) == (2, 0)
    assert vic.encryptor.pending is None
    assert verdict(alice, vic, frame_of(vic)) == "ok"
    assert installed(alice, vic) == [0, 1, 2]
    # Every key Vic used is the one of its (generation, step): each generation one chain.
    sent = {(k.generation, k.step): k.key for k in vic.km.sent_keys}
    assert len(sent) == len(vic.km.sent_keys)
    for (generation, step), key in sent.items():
        if step > 0:
            assert key == ratchet(sent[(generation, step - 1)])
    assert events(alice, "rejected") == []


async def test_swapped_or_stale_track_maps_cannot_show_one_members_frames_as_anothers(
    server: HostileServer,
) -> None:
    alice, vic, walt, dave = await room(server, "Alice", "Vic", "Walt", "Dave")
    dave_frame = frame_of(dave)
    assert verdict(alice, dave, dave_frame) == "ok"
    dave_frame = frame_of(dave)
    await server.leave(dave)
    await happens(alice, lambda: 1 in installed(alice, vic), "the rotation after Dave left")
    # The SFU swapped Vic's and Walt's tracks, re-sent an old map that still names Dave,
    # and left one track out of the map (participant None).
    vic_frame, walt_frame, audio = frame_of(vic), frame_of(walt), frame_of(vic, "audio")
    assert verdict(alice, vic, walt_frame) == "wrong-sender"
    assert verdict(alice, walt, vic_frame) == "wrong-sender"
    assert verdict(alice, walt, audio, "audio") == "wrong-sender"
    assert verdict(alice, dave, vic_frame) == "wrong-sender"
    assert verdict(alice, dave, dave_frame) == "unknown-kid"  # a departed member: keys gone
    assert verdict(alice, None, vic_frame) == "unmapped"
    assert verdict(alice, None, b"") == "unmapped"  # even an empty frame
    # The same frames on the right tracks: genuine (the refusals were the mapping's).
    assert verdict(alice, vic, vic_frame) == "ok"
    assert verdict(alice, walt, walt_frame) == "ok"
    assert verdict(alice, vic, audio, "audio") == "ok"


async def test_a_leave_right_after_an_early_step_255_switch_still_gets_its_rotation(
    server: HostileServer,
) -> None:
    """Vic switches to a pending key early (step 255); Erin, who holds it, then leaves."""
    timeout = 2.0
    alice = await join(server, "Alice")
    dave = await join(server, "Dave")
    erin = await join(server, "Erin")
    vic = await join(server, "Vic", switch_timeout=timeout)
    await settled([alice, dave, erin, vic])
    await server.quiet()
    server.drop = lambda msg, to: to == vic.id  # acks withheld: Vic's rotation stays pending
    await server.leave(dave)
    await happens(erin, lambda: 1 in installed(erin, vic), "pending generation 1 at Erin")
    for i in range(MAX_STEP - vic.current().step + 1):  # to step 255, then one join more
        server.tell(
            vic, {"type": "member-joined", "id": "p" + str(i).rjust(12, "d"), "index": 1000 + i}
        )
    await until(lambda: vic.current().generation == 1, "Vic's step-255 switch")
    assert rotations(vic) == [1]
    await server.leave(erin)  # a real leave, right after the early switch
    # Bound (PROTOCOL.md): debounce + switch timeout, no rotation being pending any more.
    assert await vic.km.wait_for(lambda: len(rotations(vic)) >= 2, 0.03 + timeout + 1.0)
    assert verdict(erin, vic, frame_of(vic)) != "ok"
