"""docs/PROTOCOL.md is the contract: the server does exactly what it says, at every edge.

One test (or one parameter set) per point a client written from the document alone would
otherwise have to guess: the version, the join's challenge rule, the KDF record and salt, the
frame and ciphertext caps, allow-joining's range, ``from``, ``ping``'s ``t``, ``seq`` and
``room-info`` of a missing room. Raw sockets, so that nothing of the reference clients helps.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from e2ee.roomcrypto import RoomKeys, b64, room_keys, sign_join, unb64
from peers.client import KdfChanged, SignalingClient, origin_of
from tests.conftest import RunningServer

Start = Callable[..., Awaitable[RunningServer]]
MIB = 1024 * 1024
CAP = 256 * 1024  # docs/PROTOCOL.md, Transport: the largest message, in bytes
SALT = bytes(range(16))
KDF = {"alg": "argon2id13", "ops": 2, "mem": 64 * MIB, "salt": b64(SALT)}


class Raw:
    """A bare protocol client: JSON in, JSON out, in order, nothing hidden."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 origin: str) -> None:
        self.session, self.ws, self.origin = session, ws, origin
        self.conn = ""
        self.nonce = b""

    @classmethod
    async def open(cls, srv: RunningServer, **kwargs: Any) -> Raw:
        session = aiohttp.ClientSession()
        origin = origin_of(srv.ws)
        ws = await session.ws_connect(srv.ws, origin=origin, **kwargs)
        raw = cls(session, ws, origin)
        raw.take_challenge(await raw.recv())
        return raw

    def take_challenge(self, msg: dict[str, Any]) -> None:
        assert msg["type"] == "challenge", msg
        assert msg["conn"] == self.conn or not self.conn
        self.conn, self.nonce = msg["conn"], unb64(msg["nonce"])
        assert len(self.nonce) == 32

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps({"v": 2, **msg}))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.ws.receive(timeout=timeout)
        assert frame.type == aiohttp.WSMsgType.TEXT, (frame.type, frame.data, frame.extra)
        text = frame.data
        msg: dict[str, Any] = json.loads(text, parse_constant=_not_json)
        assert type(msg["v"]) is int and msg["v"] == 2
        return msg

    async def error(self) -> str:
        msg = await self.recv()
        assert msg["type"] == "error", msg
        assert isinstance(msg["message"], str) and msg["message"]
        return str(msg["id"])

    async def closed(self) -> tuple[int, str]:
        """Skip to the close frame: (code, reason)."""
        while True:
            frame = await self.ws.receive(timeout=5)
            if frame.type == aiohttp.WSMsgType.CLOSE:
                return frame.data, frame.extra
            assert frame.type == aiohttp.WSMsgType.TEXT, frame.type

    def join_msg(self, keys: RoomKeys, room: str, create: bool = False,
                 kdf: dict[str, Any] | None = None) -> dict[str, Any]:
        sig = sign_join(keys.adm_seed, self.origin, room, self.nonce, self.conn)
        msg: dict[str, Any] = {"type": "join", "room": room, "sig": b64(sig)}
        if create:
            msg["create"] = {"kdf": KDF if kdf is None else kdf, "adm_pk": b64(keys.adm_pk)}
        return msg

    async def join(self, keys: RoomKeys, room: str, create: bool = False,
                   kdf: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a join; every join is answered first by a fresh challenge, then the outcome."""
        before = self.nonce
        await self.send(self.join_msg(keys, room, create, kdf))
        self.take_challenge(await self.recv())
        assert self.nonce != before
        return await self.recv()

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def _not_json(name: str) -> Any:
    raise AssertionError(f"the server sent {name}, which is not JSON")


def keys() -> RoomKeys:
    """Admission keys of some password: the server sees only adm_pk and signatures."""
    return room_keys(os.urandom(32), "any")


@pytest.fixture
async def raws() -> AsyncIterator[list[Raw]]:
    made: list[Raw] = []
    yield made
    for raw in made:
        await raw.close()


async def opened(srv: RunningServer, made: list[Raw], **kwargs: Any) -> Raw:
    raw = await Raw.open(srv, **kwargs)
    made.append(raw)
    return raw


async def member(srv: RunningServer, made: list[Raw], room: str = "r",
                 k: RoomKeys | None = None) -> tuple[Raw, RoomKeys, dict[str, Any]]:
    """A raw client admitted to ``room`` (created if need be)."""
    k = k or keys()
    raw = await opened(srv, made)
    await raw.send({"type": "room-info", "room": room})
    exists = (await raw.recv())["exists"]
    joined = await raw.join(k, room, create=not exists)
    assert joined["type"] == "joined", joined
    return raw, k, joined


# --- version ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["true", "1", "1.0", "2.0", '"2"', "null", "3", "[2]"])
async def test_only_the_json_integer_2_is_version_2(
    signaling: Start, raws: list[Raw], version: str
) -> None:
    srv = await signaling()
    raw = await opened(srv, raws)
    await raw.ws.send_str('{"v": ' + version + ', "type": "ping", "t": 1}')
    msg = await raw.recv()
    assert msg["type"] == "error" and msg["id"] == "unsupported-version"
    assert "v=2" in msg["message"] and msg["ref"] == "ping"
    await raw.ws.send_str('{"type": "ping"}')
    assert await raw.error() == "unsupported-version"
    await raw.ws.send_str('{"v": 2, "type": "ping", "t": 1}')
    assert await raw.recv() == {"v": 2, "type": "pong", "t": 1}
    assert srv.server.stats["errors.unsupported-version"] == 2


# --- joining: a fresh challenge first, whatever the join ---------------------------------------


async def test_join_is_answered_by_a_challenge_then_joined_and_only_the_fresh_nonce_counts(
    signaling: Start, raws: list[Raw]
) -> None:
    srv = await signaling()
    _, k, _ = await member(srv, raws, "room")
    raw = await opened(srv, raws)
    stale = raw.join_msg(k, "room")  # signed over the first challenge
    wrong = await raw.join(keys(), "room")
    assert wrong["id"] == "wrong-password"
    # The first nonce is spent: a signature over it is refused on the same socket.
    await raw.send(stale)
    raw.take_challenge(await raw.recv())
    assert await raw.error() == "wrong-password"
    joined = await raw.join(k, "room")  # over the fresh one
    assert joined["type"] == "joined" and joined["kdf"] == KDF


JoinSetup = Callable[[RunningServer, list[Raw]], Awaitable[tuple[Raw, dict[str, Any]]]]


async def _already_joined(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    raw, k, _ = await member(srv, made)
    return raw, raw.join_msg(k, "r")


async def _bad_room(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    raw = await opened(srv, made)
    return raw, {**raw.join_msg(keys(), "r"), "room": "bad room!"}


async def _bad_sig(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    raw = await opened(srv, made)
    return raw, {**raw.join_msg(keys(), "r", create=True), "sig": "not base64"}


async def _sig_not_under_adm_pk(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    raw = await opened(srv, made)
    msg = raw.join_msg(keys(), "r", create=True)
    msg["create"]["adm_pk"] = b64(keys().adm_pk)
    return raw, msg


def _with_kdf(**change: Any) -> JoinSetup:
    async def setup(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
        raw = await opened(srv, made)
        kdf = {k: v for k, v in {**KDF, **change}.items() if v is not None}
        return raw, raw.join_msg(keys(), "r", create=True, kdf=kdf)

    return setup


async def _no_such_room(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    raw = await opened(srv, made)
    return raw, raw.join_msg(keys(), "nobody-here")


async def _wrong_password(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    await member(srv, made)
    raw = await opened(srv, made)
    return raw, raw.join_msg(keys(), "r")


async def _too_many_attempts(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    _, k, _ = await member(srv, made)
    raw = await opened(srv, made)
    for _ in range(srv.server.cfg.fail_limit_ip):
        assert (await raw.join(keys(), "r"))["id"] == "wrong-password"
    return raw, raw.join_msg(k, "r")  # even the right key, now


async def _room_locked(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    _, k, _ = await member(srv, made)
    await asyncio.sleep(0.3)  # lock_after=0.2
    raw = await opened(srv, made)
    return raw, raw.join_msg(k, "r")


async def _room_full(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    _, k, _ = await member(srv, made)  # max_members=1
    raw = await opened(srv, made)
    return raw, raw.join_msg(k, "r")


async def _too_many_rooms(srv: RunningServer, made: list[Raw]) -> tuple[Raw, dict[str, Any]]:
    await member(srv, made)  # max_rooms_per_ip=1
    raw = await opened(srv, made)
    return raw, raw.join_msg(keys(), "another", create=True)


@pytest.mark.parametrize(
    ("setup", "error_id", "config"),
    [
        (_already_joined, "already-joined", {}),
        (_bad_room, "bad-room", {}),
        (_bad_sig, "bad-message", {}),
        (_sig_not_under_adm_pk, "bad-message", {}),
        (_with_kdf(salt=None), "bad-message", {}),
        (_with_kdf(salt=b64(bytes(15))), "bad-message", {}),
        (_with_kdf(salt=b64(bytes(17))), "bad-message", {}),
        (_with_kdf(salt="AAECAwQFBgcICQoLDA0ODx=="), "bad-message", {}),
        (_with_kdf(p=1), "bad-message", {}),
        (_with_kdf(ops=1), "weak-kdf", {}),
        (_with_kdf(alg="argon2i13"), "weak-kdf", {}),
        (_with_kdf(mem=64 * MIB - 1), "weak-kdf", {}),
        (_with_kdf(ops=17), "excessive-kdf", {}),
        (_with_kdf(mem=1024 * MIB + 1), "excessive-kdf", {}),
        (_no_such_room, "no-such-room", {}),
        (_wrong_password, "wrong-password", {}),
        (_too_many_attempts, "too-many-attempts", {"fail_limit_ip": 2}),
        (_room_locked, "room-locked", {"lock_after": 0.2}),
        (_room_full, "room-full", {"max_members": 1}),
        (_too_many_rooms, "too-many-rooms", {"max_rooms_per_ip": 1}),
    ],
)
async def test_every_join_error_comes_after_a_fresh_challenge(
    signaling: Start, raws: list[Raw], setup: JoinSetup, error_id: str, config: dict[str, Any]
) -> None:
    srv = await signaling(**config)
    raw, msg = await setup(srv, raws)
    counted = srv.server.stats[f"errors.{error_id}"]
    before = raw.nonce
    await raw.send(msg)
    raw.take_challenge(await raw.recv())
    assert raw.nonce != before
    reply = await raw.recv()
    assert reply["type"] == "error" and reply["id"] == error_id and reply["ref"] == "join"
    assert srv.server.stats[f"errors.{error_id}"] == counted + 1
    # Non-fatal: the socket answers on.
    await raw.send({"type": "ping", "t": 3})
    assert (await raw.recv())["type"] == "pong"


# --- the room record: kdf with the creator's salt --------------------------------------------


async def test_room_info_of_a_missing_room_and_the_salt_in_the_record(
    signaling: Start, raws: list[Raw]
) -> None:
    srv = await signaling()
    raw = await opened(srv, raws)
    await raw.send({"type": "room-info", "room": "fresh"})
    assert await raw.recv() == {"v": 2, "type": "room-info", "room": "fresh", "exists": False}
    kdf = {"alg": "argon2id13", "ops": 3, "mem": 128 * MIB, "salt": b64(os.urandom(16))}
    joined = await raw.join(keys(), "fresh", create=True, kdf=kdf)
    assert joined["type"] == "joined" and joined["kdf"] == kdf
    other = await opened(srv, raws)
    await other.send({"type": "room-info", "room": "fresh"})
    info = await other.recv()
    assert info["exists"] is True and info["kdf"] == kdf
    assert set(info) == {"v", "type", "room", "exists", "kdf", "lock"}


async def test_python_client_refuses_a_changed_salt_before_deriving(
    signaling: Start, raws: list[Raw]
) -> None:
    srv = await signaling(empty_ttl=0.2)
    srv.server.wire_tap = []
    async with await SignalingClient.connect(srv.ws) as first:
        await first.join("salted", "pw")
        assert first.kdf is not None and len(first.kdf.salt) == 16
        record = srv.server.rooms.get("salted")
        assert record is not None and record.kdf == first.kdf.to_json()
        # Rejoin with the same parameters: fine.
        async with await SignalingClient.connect(srv.ws) as again:
            await again.join("salted", "pw", expect_kdf=first.kdf)
            assert again.kdf == first.kdf
        # A (hostile) server now serves another salt for the room.
        record.kdf = {**record.kdf, "salt": b64(bytes(16))}
        async with await SignalingClient.connect(srv.ws) as rejoin:
            tapped = len(srv.server.wire_tap)
            with pytest.raises(KdfChanged) as err:
                await rejoin.join("salted", "pw", expect_kdf=first.kdf)
            assert err.value.id == "kdf-changed"
            sent = [json.loads(f)["type"] for f in srv.server.wire_tap[tapped:]]
            assert sent == ["room-info"]  # no join: nothing was derived or signed
    # The room expired (empty for empty_ttl): a rejoin makes it again with the salt it
    # remembers, so that every member coming back (say after a server restart) agrees on it.
    await asyncio.sleep(0.4)
    assert srv.server.rooms.get("salted") is None
    async with await SignalingClient.connect(srv.ws) as later:
        await later.join("salted", "pw", expect_kdf=first.kdf)
        assert later.kdf == first.kdf
        async with await SignalingClient.connect(srv.ws) as other:
            await other.join("salted", "pw", expect_kdf=first.kdf)
    # Without a memory of the room, a creator draws a fresh salt.
    await asyncio.sleep(0.4)
    assert srv.server.rooms.get("salted") is None
    async with await SignalingClient.connect(srv.ws) as fresh:
        await fresh.join("salted", "another password")
        assert fresh.kdf is not None and fresh.kdf.salt != first.kdf.salt


async def test_a_lost_creation_race_is_retried_as_a_join(signaling: Start) -> None:
    srv = await signaling()
    async with await SignalingClient.connect(srv.ws) as a, await SignalingClient.connect(
        srv.ws
    ) as b:
        stale = await a.room_info("race")  # "does not exist" ...
        await b.join("race", "same password")  # ... and then b creates it, with its salt
        calls: list[str] = []
        real = a.room_info

        async def first_stale(room: str) -> dict[str, Any]:
            calls.append(room)
            return stale if len(calls) == 1 else await real(room)

        a.room_info = first_stale  # type: ignore[method-assign]
        joined = await a.join("race", "same password")
        assert calls == ["race", "race"] and joined["members"][0]["id"] == b.id
        assert a.kdf == b.kdf
        assert srv.server.stats["errors.wrong-password"] == 1  # the lost create, then a join


# --- transport caps --------------------------------------------------------------------------


def _ping_of(size: int, fill: str = "x") -> str:
    """A ping of exactly ``size`` UTF-8 bytes."""
    head, tail = '{"v":2,"type":"ping","t":1,"pad":"', '"}'
    room = size - len(head) - len(tail)
    unit = len(fill.encode())
    text = head + fill * (room // unit) + "x" * (room % unit) + tail
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "permessage-deflate"])
@pytest.mark.parametrize("fill", ["x", "é"])
async def test_a_message_of_exactly_256_kib_passes_and_one_byte_more_closes_1009_too_big(
    signaling: Start, raws: list[Raw], compress: int, fill: str
) -> None:
    srv = await signaling()
    raw = await opened(srv, raws, compress=compress)
    await raw.ws.send_str(_ping_of(CAP, fill))
    assert await raw.recv() == {"v": 2, "type": "pong", "t": 1}
    await raw.ws.send_str(_ping_of(CAP + 1, fill))
    assert await raw.closed() == (1009, "too-big")
    assert srv.server.stats["errors.too-big"] == 1
    # Far too big: refused by the WebSocket reader itself (from the frame header when plain,
    # while inflating when compressed), with the same code and reason.
    big = await opened(srv, raws, compress=compress)
    await big.ws.send_str(_ping_of(4 * CAP, fill))
    assert await big.closed() == (1009, "too-big")
    assert srv.server.stats["errors.too-big"] == 2


def _seal(ct: bytes | str, seq: int, **extra: Any) -> dict[str, Any]:
    return {"type": "seal", "to": "*", "epoch": 0, "seq": seq, "nonce": b64(bytes(12)),
            "ct": ct if isinstance(ct, str) else b64(ct), **extra}


async def test_ciphertext_is_16_to_49152_decoded_bytes_in_canonical_base64(
    signaling: Start, raws: list[Raw]
) -> None:
    srv = await signaling()
    alice, k, _ = await member(srv, raws)
    bob, _, _ = await member(srv, raws, k=k)
    assert (await alice.recv())["type"] == "member-joined"
    for seq, ct in enumerate([bytes(16), bytes(49152)], start=1):
        await alice.send(_seal(ct, seq))
        got = await bob.recv()
        assert got["type"] == "sealed" and unb64(got["ct"]) == ct and got["seq"] == seq
    non_canonical, unpadded = "AAAA" * 5 + "AB==", "AAAA" * 4 + "AA"
    for ct in [bytes(15), bytes(49153), bytes(49155), non_canonical, unpadded]:
        await alice.send(_seal(ct, 9))
        assert await alice.error() == "bad-message"
    assert srv.server.stats["errors.bad-message"] == 5
    assert srv.server.stats["sealed_relayed"] == 2


# --- seal: from and seq ----------------------------------------------------------------------


async def test_from_must_be_absent_or_the_senders_own_id(signaling: Start, raws: list[Raw]) -> None:
    srv = await signaling()
    alice, k, joined = await member(srv, raws)
    bob, _, bob_joined = await member(srv, raws, k=k)
    await alice.recv()  # member-joined
    for seq, sender in enumerate([None, 0, "", bob_joined["id"], [joined["id"]]], start=1):
        await alice.send(_seal(bytes(16), seq, **{"from": sender}))
        assert await alice.error() == "spoofed-from"
    await alice.send(_seal(bytes(16), 10, **{"from": joined["id"]}))
    got = await bob.recv()
    assert got["type"] == "sealed" and got["from"] == joined["id"]
    assert srv.server.stats["errors.spoofed-from"] == 5


async def test_seq_starts_anywhere_from_0_and_must_increase(
    signaling: Start, raws: list[Raw]
) -> None:
    srv = await signaling()
    alice, _, _ = await member(srv, raws)
    for seq in [-1, 2**53, 1.0, True, "1"]:
        await alice.send(_seal(bytes(16), seq))  # type: ignore[arg-type]
        assert await alice.error() == "bad-message"
    await alice.send(_seal(bytes(16), 0))  # the first seal may carry 0: accepted silently
    await alice.send(_seal(bytes(16), 0))
    assert await alice.error() == "replay"
    await alice.send(_seal(bytes(16), 2**53 - 1))
    await alice.send(_seal(bytes(16), 2**53 - 1))
    assert await alice.error() == "replay"
    assert srv.server.stats["sealed_relayed"] == 2


# --- allow-joining, ping ---------------------------------------------------------------------


async def test_allow_joining_takes_1_to_600_seconds_and_refuses_the_rest(
    signaling: Start, raws: list[Raw]
) -> None:
    srv = await signaling()
    alice, _, _ = await member(srv, raws)
    for seconds in [0, 601, -5, 1.5, True, "60", None, 10**9]:
        await alice.send({"type": "allow-joining", "seconds": seconds})
        assert await alice.error() == "bad-message"
    for seconds, expect in [(600, 600), (1, 600), (None, 600)]:  # open_until never shrinks
        msg = {"type": "allow-joining"} | ({} if seconds is None else {"seconds": seconds})
        await alice.send(msg)
        lock = await alice.recv()
        assert lock["type"] == "lock" and lock["open_until"] is not None
        room = srv.server.rooms.get("r")
        assert room is not None
        assert abs(room.open_until - srv.server.rooms.clock() - expect) < 5
    assert srv.server.stats["errors.bad-message"] == 8


@pytest.mark.parametrize(
    ("t", "error_id"),
    [
        ("NaN", "bad-json"),
        ("Infinity", "bad-json"),
        ("-Infinity", "bad-json"),
        ("1e999", "bad-json"),
        ("-1e400", "bad-json"),
        ('"now"', "bad-message"),
        ("true", "bad-message"),
        ("null", "bad-message"),
        ("[1]", "bad-message"),
        ("{}", "bad-message"),
    ],
)
async def test_ping_t_must_be_a_finite_number(
    signaling: Start, raws: list[Raw], t: str, error_id: str
) -> None:
    srv = await signaling()
    raw = await opened(srv, raws)
    await raw.ws.send_str('{"v": 2, "type": "ping", "t": ' + t + "}")
    assert await raw.error() == error_id  # recv() parses strictly: never NaN back
    assert srv.server.stats[f"errors.{error_id}"] == 1


async def test_ping_echoes_finite_numbers(signaling: Start, raws: list[Raw]) -> None:
    srv = await signaling()
    raw = await opened(srv, raws)
    for t in ["0", "-7", "1.5", "1763754000.123", "1e300", "123456789012345678901234567890"]:
        await raw.ws.send_str('{"v": 2, "type": "ping", "t": ' + t + "}")
        assert (await raw.recv())["t"] == json.loads(t)
    await raw.send({"type": "ping"})
    assert await raw.recv() == {"v": 2, "type": "pong"}


async def test_a_nan_anywhere_in_a_message_is_bad_json(signaling: Start, raws: list[Raw]) -> None:
    srv = await signaling()
    raw = await opened(srv, raws)
    await raw.ws.send_str('{"v": 2, "type": "room-info", "room": "r", "x": [NaN]}')
    assert await raw.error() == "bad-json"


async def test_refusals_never_disturb_another_room(signaling: Start, raws: list[Raw]) -> None:
    srv = await signaling()
    alice, k, _ = await member(srv, raws, "calm")
    bob, _, _ = await member(srv, raws, "calm", k)
    await alice.recv()
    noisy, _, _ = await member(srv, raws, "noisy")
    for bad in ['{"v": true, "type": "ping"}', '{"v": 2, "type": "ping", "t": NaN}',
                json.dumps({"v": 2, **_seal(bytes(49153), 1)}),
                json.dumps({"v": 2, "type": "allow-joining", "seconds": 601})]:
        await noisy.ws.send_str(bad)
        await noisy.error()
    await alice.send(_seal(bytes(16), 1))
    assert (await bob.recv())["type"] == "sealed"


# --- origin ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080"),
        ("wss://meet.example.org/ws", "https://meet.example.org"),
        ("wss://Meet.Example.ORG:443/ws", "https://meet.example.org"),
        ("ws://host:80/ws", "http://host"),
        ("ws://host:443/ws", "http://host:443"),
        ("wss://[::1]:8443/ws", "https://[::1]:8443"),
        ("ws://user:pw@host:9/ws", "http://host:9"),
    ],
)
def test_origin_of_a_signaling_url(url: str, origin: str) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize("url", ["ftp://host/ws", "/ws", "ws:///ws"])
def test_origin_of_refuses_what_is_not_a_ws_url(url: str) -> None:
    with pytest.raises(ValueError):
        origin_of(url)
