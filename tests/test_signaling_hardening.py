"""The signaling server against slow, flooding and hostile clients.

Clients here are protocol-level (bench/sigflood.py ``RawMember``): they sign joins with keys
derived once, so that hundreds of sockets cost no Argon2id each. Client addresses other than
127.0.0.1 come from ``X-Forwarded-For`` through a trusted proxy (the server's own rule), or
from a bound source address in 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from bench.sigflood import RawMember, Refused, RoomSecret
from e2ee.roomcrypto import KdfParams
from sealroom import logs
from tests.conftest import RunningServer

Start = Callable[..., Awaitable[RunningServer]]
PROXY = ("127.0.0.1",)


@pytest.fixture
async def members() -> AsyncIterator[list[RawMember]]:
    made: list[RawMember] = []
    yield made
    await asyncio.gather(*(m.close() for m in made))


@pytest.fixture(scope="module")
def secrets() -> dict[str, RoomSecret]:
    return RoomSecret.derive(["calm", "noisy", "slow-a", "slow-b", "slow-c", "slow-d",
                              "target", "logged"])


async def member(srv: RunningServer, made: list[RawMember], *, xff: str | None = None,
                 source: str | None = None, rcvbuf: int | None = None) -> RawMember:
    headers = {"X-Forwarded-For": xff} if xff else None
    m = await RawMember.connect(srv.ws, source=source, headers=headers, rcvbuf=rcvbuf)
    made.append(m)
    return m


async def until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait (bounded) for a condition on the server's state."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def next_of(m: RawMember, mtype: str, seconds: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        msg = await m.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, m.ws.close_code)
        data: dict[str, object] = json.loads(msg.data)
        if data["type"] == mtype:
            return data


# -- 1. slow readers ------------------------------------------------------------------------


async def test_a_member_that_stops_reading_is_closed_1013_after_the_drain_timeout(
    signaling: Start, members: list[RawMember], secrets: dict[str, RoomSecret]
) -> None:
    # Byte cap out of the way: only the drain timeout can close it.
    srv = await signaling(drain_timeout=0.5, outbox_bytes=1 << 30, heartbeat=300)
    talker = await member(srv, members)
    await talker.join(secrets["slow-a"])
    stuck = await member(srv, members, rcvbuf=4096)
    await stuck.join(secrets["slow-a"])
    await next_of(talker, "member-joined")
    # `stuck` reads nothing from now on: its client buffers 128 KiB, then the kernel fills.
    big = bytes(48 * 1024)
    for _ in range(400):  # bounded: far more than the kernel buffers of one loopback socket
        if srv.server.stats["closes.slow-consumer"]:
            break
        await talker.seal(big)
        await asyncio.sleep(0.02)  # 50/s is the socket's rate limit
    await until(lambda: srv.server.stats["closes.slow-consumer"] == 1)
    # Reading now (within close_grace), the client finds what was buffered, then the
    # close frame: 1013 slow-consumer.
    while (msg := await stuck.ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
        pass
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert (msg.data, msg.extra) == (1013, "slow-consumer")
    # The other member is told, and the server's accounting is back to nothing queued.
    left = await next_of(talker, "member-left")
    assert left["id"] == stuck.pid and left["reason"] == "closed"
    await until(lambda: srv.server.backlog.total == 0)
    async with aiohttp.ClientSession() as session, session.get(srv.http + "/metrics") as r:
        text = await r.text()
    assert 'sealroom_signaling_closes_total{id="slow-consumer"} 1.0' in text


async def test_200_non_reading_sockets_stay_within_the_queued_bytes_bound(
    signaling: Start, members: list[RawMember], secrets: dict[str, RoomSecret]
) -> None:
    cap = 256 * 1024
    srv = await signaling(outbox_bytes=cap, drain_timeout=60, heartbeat=300,
                          max_connections_per_ip=300)
    rooms = ["slow-a", "slow-b", "slow-c", "slow-d"]
    senders, readers = [], []
    for i, room in enumerate(rooms):
        s = await member(srv, members, source=f"127.0.5.{i + 1}")
        await s.join(secrets[room])
        senders.append(s)
    for k in range(200):
        m = await member(srv, members, source=f"127.0.6.{k % 4 + 1}", rcvbuf=4096)
        await m.join(secrets[rooms[k % 4]])
        readers.append(m)  # never read again
    # A member of each room that does read: the room's broadcast must not stall for it.
    watchers = []
    for i, room in enumerate(rooms):
        w = await member(srv, members, source=f"127.0.7.{i + 1}")
        await w.join(secrets[room])
        watchers.append(w)
    got = [0] * 4

    async def watch(i: int) -> None:
        while True:
            msg = await watchers[i].ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            got[i] += json.loads(msg.data)["type"] == "sealed"

    tasks = [asyncio.create_task(watch(i)) for i in range(4)]
    peak_per_socket = 0
    sent = 0
    for _ in range(150):  # bounded; 48 KiB envelopes to 50 readers per room, 40/s per sender
        for s in senders:
            await s.seal(bytes(48 * 1024))
        sent += 1
        peak_per_socket = max(peak_per_socket, *(c.queued for c in srv.server.sockets))
        if srv.server.stats["closes.slow-consumer"] == 200:
            break
        await asyncio.sleep(0.025)
    await until(lambda: srv.server.stats["closes.slow-consumer"] == 200, 30)
    await until(lambda: all(n == sent for n in got))  # every watcher got every envelope
    for t in tasks:
        t.cancel()
    # The bound: no socket ever held more than the cap, the server never more than the
    # sum of the caps of the sockets it had — and nothing is left queued once they are gone.
    assert 0 < peak_per_socket <= cap
    assert 0 < srv.server.backlog.peak <= 200 * cap + 8 * cap
    await until(lambda: srv.server.backlog.total == 0)
    await until(lambda: len(srv.server.conns) == 8)
    assert srv.server.stats["closes.slow-consumer"] == 200  # each counted once


def test_a_stuck_transport_is_reset_whatever_its_class() -> None:
    """uvloop's transports are not asyncio.Transport subclasses: the reset must not ask."""
    from signaling.config import ServerConfig
    from signaling.server import Connection

    class Transport:  # what uvloop's TCPTransport offers, and nothing more
        def __init__(self, buffered: int) -> None:
            self.buffered, self.aborted = buffered, False

        def get_write_buffer_size(self) -> int:
            return self.buffered

        def abort(self) -> None:
            self.aborted = True

    async def run() -> tuple[bool, bool]:
        stuck, drained = Transport(4096), Transport(0)
        for t in (stuck, drained):
            conn = Connection(None, "127.0.0.1", "http://127.0.0.1",  # type: ignore[arg-type]
                              ServerConfig(), transport=t)  # type: ignore[arg-type]
            conn._abort_if_stuck()
            conn.writer.cancel()
        return stuck.aborted, drained.aborted

    assert asyncio.run(run()) == (True, False)


# -- 2. log injection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["x\r\n2026-01-01 INFO forged", "\x1b]0;pwned\x07", "nul\x00byte", "\u202eRTL",
     "L" * 5000],
)
async def test_client_chosen_values_reach_the_log_escaped(
    signaling: Start, value: str, members: list[RawMember]
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter(logs.TEXT_FORMAT))
    handler.addFilter(logs.EscapeControls())
    root = logging.getLogger("signaling")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        srv = await signaling(trusted_proxies=PROXY)
        # A message type (logged as the error's ref when it is at most 32 characters).
        m = await member(srv, members)
        await m.send({"type": value})
        await next_of(m, "error")
        # Header values: a forwarded address and a Host the server does not serve. The
        # HTTP layers refuse CR, LF and NUL in headers; what they let through is logged.
        header = "".join(c for c in value if c not in "\r\n\x00")
        with contextlib.suppress(ValueError, aiohttp.ClientError):
            proxied = await member(srv, members, xff=header)
            await proxied.send({"type": "no-such-type"})
            await next_of(proxied, "error")
        async with aiohttp.ClientSession() as session:
            with contextlib.suppress(ValueError, aiohttp.ClientError):
                async with session.get(srv.http + "/", headers={"Host": header}) as resp:
                    assert resp.status in (400, 421)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = stream.getvalue()
    lines = text.splitlines()
    assert lines, "something was logged"
    for line in lines:
        assert line.isprintable(), repr(line)
        assert len(line) < 1000
        # Every line is one record: starts with the timestamp of TEXT_FORMAT.
        assert line[:4].isdigit() and " signaling." in line, line
    assert not any(c in text for c in "\r\x1b\x00\u202e")


# -- 3. online guessing: the attacker is limited, a member still gets in --------------------


async def _guess(srv: RunningServer, made: list[RawMember], room: str, ip: str) -> str:
    """One wrong guess (a random admission key: what a wrong password amounts to)."""
    wrong = RoomSecret(room, KdfParams.generate(), os.urandom(32), bytes(32))
    m = await member(srv, made, xff=ip)
    try:
        await m.join(wrong)
    except Refused as err:
        return str(err)
    finally:
        await m.close()
    return "joined"


async def test_guessers_from_20_addresses_cannot_lock_a_member_out_and_stay_limited(
    signaling: Start, members: list[RawMember], secrets: dict[str, RoomSecret]
) -> None:
    srv = await signaling(trusted_proxies=PROXY, fail_limit_ip=5, fail_limit_room=20)
    owner = await member(srv, members, xff="198.51.100.1")
    await owner.join(secrets["target"])
    # 20 wrong guesses a minute from 20 addresses: the room is under attack.
    answers = [await _guess(srv, members, "target", f"203.0.113.{i}") for i in range(20)]
    assert answers == ["wrong-password"] * 20
    assert srv.server.guesses.under_attack("target")
    # The attackers: each address that guessed wrong is now refused unchecked in this room
    # (one guess per address per window while it is under attack, not five).
    again = [await _guess(srv, members, "target", f"203.0.113.{i}") for i in range(20)]
    assert again == ["too-many-attempts"] * 20
    assert srv.server.stats["admission_failures"] == 20  # nothing more was checked
    # A fresh address still gets its one checked guess, and then no more.
    assert await _guess(srv, members, "target", "203.0.113.99") == "wrong-password"
    assert await _guess(srv, members, "target", "203.0.113.99") == "too-many-attempts"
    # A member with the right password, from an address that did not guess, gets in now.
    newcomer = await member(srv, members, xff="198.51.100.7")
    joined = await newcomer.join(secrets["target"])
    assert joined["room"] == "target"
    # The address limit is still strict everywhere: five wrong guesses lock an address out
    # of every room, the right password included.
    keeper = await member(srv, members, xff="198.51.100.8")
    await keeper.join(secrets["calm"])
    for _ in range(5):
        assert await _guess(srv, members, "calm", "192.0.2.5") == "wrong-password"
    locked = await member(srv, members, xff="192.0.2.5")
    with pytest.raises(Refused, match="too-many-attempts"):
        await locked.join(secrets["calm"])


async def test_an_ipv6_guesser_counts_as_its_64(
    signaling: Start, members: list[RawMember]
) -> None:
    srv = await signaling(trusted_proxies=PROXY, fail_limit_ip=3)
    owner = await member(srv, members)
    await owner.join(RoomSecret.derive(["v6"])["v6"])
    for i in range(3):
        assert await _guess(srv, members, "v6", f"2001:db8:1:2::{i + 1}") == "wrong-password"
    assert await _guess(srv, members, "v6", "2001:db8:1:2:ffff::9") == "too-many-attempts"
    assert await _guess(srv, members, "v6", "2001:db8:1:3::1") == "wrong-password"


# -- 4. per-address message rate across reconnects ------------------------------------------


async def test_reconnecting_does_not_renew_an_addresses_message_budget(
    signaling: Start, members: list[RawMember], secrets: dict[str, RoomSecret]
) -> None:
    srv = await signaling(trusted_proxies=PROXY, rate=50, burst=100, rate_ip=100, burst_ip=200)
    listener = await member(srv, members, xff="198.51.100.2")
    await listener.join(secrets["noisy"])
    started = time.monotonic()
    sockets = refused = 0
    while time.monotonic() - started < 3.0 and sockets < 200:  # bounded in time and count
        try:
            flooder = await member(srv, members, xff="203.0.113.50")
        except aiohttp.WSServerHandshakeError as err:
            # The address has no token left: refused before the upgrade.
            assert err.status == 429
            refused += 1
            await asyncio.sleep(0.005)
            continue
        sockets += 1
        with contextlib.suppress(Refused, TimeoutError):
            await flooder.join(secrets["noisy"], timeout=2)
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            for _ in range(150):  # more than a socket's burst, sent at once
                if flooder.ws.closed:
                    break
                await flooder.seal(bytes(16))
        code = await _closed_code(flooder)
        assert code == 1008, code
        await flooder.close()
    elapsed = time.monotonic() - started
    relayed = srv.server.stats["sealed_relayed"]
    # Without the address bucket every socket would relay its burst of 100: sockets × 100.
    # After a close for the address's rate, its new sockets are refused for 1 s (429).
    assert sockets >= 2 and refused >= 10, (sockets, refused)
    assert relayed <= 200 + 100 * elapsed + 2, (relayed, sockets, elapsed)
    # Sockets are closed by the address's budget rather than their own (a pause on a busy
    # machine can refill the address's burst, and then a socket's own 100 run out first).
    assert srv.server.stats["rate_limited.address"] >= 1, srv.server.stats
    assert srv.server.stats["rate_limited.upgrade"] == refused
    # Another address is not touched by it.
    other = await member(srv, members, xff="198.51.100.3")
    await other.join(secrets["noisy"])
    for _ in range(50):
        await other.seal(bytes(16))
    await asyncio.sleep(0.2)
    assert not other.ws.closed


async def _closed_code(m: RawMember) -> int | None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while (await m.ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
    return m.ws.close_code


# -- 5. DNS rebinding -----------------------------------------------------------------------


async def test_a_host_name_the_server_does_not_serve_is_refused(signaling: Start) -> None:
    srv = await signaling(allowed_hosts=("meet.example.org",),
                          allowed_origins=("https://other.example",))
    port = srv.port
    async with aiohttp.ClientSession() as session:
        # Host and Origin agree on a name that resolves to us: the rebinding case.
        evil = f"rebind.attacker.example:{port}"
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(srv.ws, headers={"Host": evil},
                                     origin=f"http://{evil}")
        assert err.value.status == 421
        async with session.get(srv.http + "/metrics", headers={"Host": evil}) as resp:
            assert resp.status == 421
            body = await resp.json()
            assert body["id"] == "bad-host" and body["type"] == "error"
        async with session.get(srv.http + "/", headers={"Host": "a:b:c"}) as resp:
            assert resp.status == 421
        # Served: IP literals, localhost, the configured host, allowed hosts and origins.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", f"[::1]:{port}",
                     "meet.example.org", f"meet.example.org:{port}", "other.example"):
            async with session.get(srv.http + "/healthz/live", headers={"Host": host}) as r:
                assert r.status == 200, host
        good = f"meet.example.org:{port}"
        async with session.ws_connect(srv.ws, headers={"Host": good},
                                      origin=f"http://{good}") as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "challenge"
    assert srv.server.stats["errors.bad-host"] == 3

    anything = await signaling(allowed_hosts=("*",))
    async with aiohttp.ClientSession() as session, session.get(
        anything.http + "/healthz/live", headers={"Host": "whatever.example"}
    ) as resp:
        assert resp.status == 200


def test_served_host_names_follow_the_configuration() -> None:
    from signaling.config import ServerConfig
    from signaling.server import host_allowed, served_host_names

    names = served_host_names(ServerConfig())
    assert names is not None and "localhost" in names
    assert host_allowed("localhost:8080", names) and host_allowed("192.168.1.20:8080", names)
    assert not host_allowed("evil.example:8080", names)
    names = served_host_names(ServerConfig(host="meet.example.org"))
    assert names is not None and host_allowed("Meet.Example.org.:443", names)
    assert served_host_names(ServerConfig(allowed_hosts=("*",))) is None


# -- 6. a flood from one socket -------------------------------------------------------------


async def test_a_1000_per_second_flood_is_closed_1008_and_other_rooms_keep_relaying(
    signaling: Start, members: list[RawMember], secrets: dict[str, RoomSecret]
) -> None:
    srv = await signaling(trusted_proxies=PROXY)
    alice = await member(srv, members, xff="198.51.100.10")
    await alice.join(secrets["calm"])
    bob = await member(srv, members, xff="198.51.100.11")
    await bob.join(secrets["calm"])
    flooder = await member(srv, members, xff="203.0.113.66")
    await flooder.join(secrets["noisy"])
    got = 0

    async def bob_reads() -> None:
        nonlocal got
        while True:
            msg = await bob.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            got += json.loads(msg.data)["type"] == "sealed"

    reader = asyncio.create_task(bob_reads())

    async def flood() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
            for _ in range(300):  # 10 every 10 ms: 1,000/s, bounded
                if flooder.ws.closed:
                    return
                for _ in range(10):
                    await flooder.send({"type": "ping", "t": 1})
                await asyncio.sleep(0.01)

    async def calm() -> None:
        for _ in range(40):
            await alice.seal(bytes(64))
            await asyncio.sleep(0.01)

    await asyncio.gather(flood(), calm())
    assert await _closed_code(flooder) == 1008
    assert srv.server.stats["closes.rate-limited"] == 1
    await until(lambda: got == 40)
    reader.cancel()
    assert not alice.ws.closed and not bob.ws.closed


def test_flags_and_environment_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from sealroom.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(
        ["serve", "--allowed-hosts", "meet.example.org, meet.internal", "--address-rate", "40"]))
    assert cfg.allowed_hosts == ("meet.example.org", "meet.internal")
    assert (cfg.rate_ip, cfg.burst_ip) == (40.0, 80.0)
    monkeypatch.setenv("SEALROOM_ALLOWED_HOSTS", "*")
    monkeypatch.setenv("SEALROOM_ADDRESS_RATE", "250")
    cfg = config_from_args(build_parser().parse_args(["serve"]))
    assert cfg.allowed_hosts == ("*",) and cfg.rate_ip == 250.0
    assert cfg.outbox_bytes == 1 << 20 and cfg.drain_timeout == 10.0  # the documented values
