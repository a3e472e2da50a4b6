"""TURN through a real coturn: the server's minted REST credentials, relay-only media.

coturn runs on loopback with a test-only configuration: ``--allow-loopback-peers``
(production must not: docs/DEPLOY.md), ``--use-auth-secret`` with a random
``--static-auth-secret`` shared with the signaling server, no TLS, no CLI, log to stdout.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aioice import Connection, stun
from aioice.turn import create_turn_endpoint

from peers.client import SignalingClient
from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig
from sfu.ice import IcePolicy, TurnRelay
from signaling import turn
from tests import callpage
from tests.conftest import BrowserFactory, RunningServer

pytestmark = pytest.mark.media
TURNSERVER = "/usr/bin/turnserver"
PASSWORD = "through the relay"
REALM = "sealroom.test"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


@dataclass
class Coturn:
    proc: subprocess.Popen[str]
    port: int
    secret: str
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log(self) -> str:
        return "".join(self.lines)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)


async def stun_answers(port: int) -> bool:
    """One STUN Binding request (RFC 8489 §6) to 127.0.0.1:port; True on any reply."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=("127.0.0.1", port))
    try:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        transport.sendto(bytes(request))
        await asyncio.wait_for(got, 0.3)
        return True
    except TimeoutError:
        return False
    finally:
        transport.close()


@pytest_asyncio.fixture
async def coturn() -> AsyncIterator[Coturn]:
    if shutil.which(TURNSERVER) is None:
        pytest.fail(f"{TURNSERVER} is missing: run the suite through ./dev test (installs coturn)")
    port = free_port()
    relay_lo = 49152 + secrets.randbelow(10000)
    secret = secrets.token_hex(16)
    proc = subprocess.Popen(
        [
            TURNSERVER,
            "-n",  # no configuration file: only these flags
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--min-port={relay_lo}",
            f"--max-port={relay_lo + 200}",
            "--allow-loopback-peers",  # test only: every peer here is on loopback
            "--use-auth-secret",
            f"--static-auth-secret={secret}",
            f"--realm={REALM}",
            "--fingerprint",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--log-file=stdout",
            "--simple-log",
            "--verbose",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Coturn(proc, port, secret)
    threading.Thread(target=server._pump, daemon=True).start()
    try:
        deadline = time.monotonic() + 15
        while not await stun_answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("coturn did not start:\n" + server.log()[-3000:])
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def join(srv: RunningServer, room: str, relay_only: bool) -> tuple[SignalingClient, MediaBot]:
    """A participant whose bot uses the TURN credentials the server minted for it."""
    client = await SignalingClient.connect(srv.ws)
    joined = await client.join(room, PASSWORD)
    assert client.id is not None
    # The same credentials come in ``joined`` and, fresh, in answer to ``turn``.
    assert joined["ice_servers"] and joined["ice_servers"][0]["username"].endswith(client.id)
    ice = IcePolicy("127.0.0.1")
    if relay_only:
        await client.send({"type": "turn"})
        minted = await client.expect("turn")
        relay = TurnRelay.from_ice_server(minted["ice_servers"][0], relay_only=True)
        ice = IcePolicy("127.0.0.1", turn=relay)
    bot = MediaBot(client.id, signal=client.send, ice=ice)
    await client.set_media_handler(bot.on_message)
    await bot.publish()
    return client, bot


def selected_pairs(bot: MediaBot) -> Iterator[tuple[str, str]]:
    """(local candidate type, remote host) of each nominated ICE pair of the bot's PCs."""
    for peer in (bot.pub, bot.sub):
        # BUNDLE (RFC 9143): all transceivers of a PC share one ICE connection.
        conns = {id(c): c for t in peer.pc.getTransceivers()
                 if (c := t.receiver.transport.transport.iceGatherer._connection)}
        for conn in conns.values():
            for pair in conn._nominated.values():
                yield pair.local_candidate.type, pair.remote_candidate.host


async def test_relay_only_bot_sends_and_receives_media_through_coturn(
    signaling: Callable[..., Awaitable[RunningServer]], coturn: Coturn
) -> None:
    sfu = Sfu(SfuConfig(port_min=45000, port_max=45999))
    srv = await signaling(media=sfu, turn_urls=(coturn.url,), turn_secret=coturn.secret)
    relayed = await join(srv, "relayed", relay_only=True)
    direct = await join(srv, "relayed", relay_only=False)
    bots = [relayed[1], direct[1]]
    try:
        assert await bots[0].wait_for(
            lambda: all(len(b.received) == 2 for b in bots), timeout=30
        ), "media did not flow both ways through the relay:\n" + coturn.log()[-3000:]
        relay_bot, direct_bot = bots
        # Every transport of the relay-only bot goes through coturn's relayed address...
        pairs = list(selected_pairs(relay_bot))
        assert len(pairs) == 2 and {kind for kind, _ in pairs} == {"relay"}
        # ...and enough media crosses it, in both directions.
        assert await direct_bot.wait_for(
            lambda: all(len(r.payloads) >= 40 for r in direct_bot.received.values()), timeout=20
        )
        assert await relay_bot.wait_for(
            lambda: all(len(r.payloads) >= 40 for r in relay_bot.received.values()), timeout=20
        )
        for kind in ("audio", "video"):
            stream = direct_bot.stream(relay_bot.pid, kind)
            assert stream is not None
            got = set(stream.payloads.values())
            assert got <= set(relay_bot.sent[kind]), "bytes changed on the way through the relay"
        # coturn saw the two allocations (pub and sub PC) of the relayed participant, for the
        # username the server minted (expiry:participant id).
        log = coturn.log()
        assert len(re.findall(r"ALLOCATE processed, success", log)) >= 2, log[-3000:]
        assert f":{relay_bot.pid}" in log
    finally:
        for client, bot in (relayed, direct):
            await bot.close()
            await client.close()


async def allocate(coturn: Coturn, username: str, password: str) -> None:
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol,
        server_addr=("127.0.0.1", coturn.port),
        username=username,
        password=password,
    )
    transport.close()


async def test_coturn_accepts_minted_and_refuses_expired_or_forged_credentials(
    coturn: Coturn,
) -> None:
    good = turn.mint((coturn.url,), coturn.secret, "pgood", ttl=600)
    await allocate(coturn, good.username, good.credential)  # the control: this one works

    expired = turn.mint((coturn.url,), coturn.secret, "pold", ttl=600, now=time.time() - 1200)
    forged = turn.mint((coturn.url,), "not-the-secret", "pforged", ttl=600)
    stolen_name = turn.TurnCredential(forged.urls, good.username, forged.credential, good.expires)
    for cred in (expired, forged, stolen_name):
        with pytest.raises(stun.TransactionFailed) as failure:
            await allocate(coturn, cred.username, cred.credential)
        assert failure.value.response.attributes["ERROR-CODE"][0] == 401

    # The same refusal through IcePolicy: gathering fails instead of silently going direct.
    relay = TurnRelay.from_ice_server(forged.ice_server(), relay_only=True)
    conn = Connection(ice_controlling=True, components=1)
    IcePolicy("127.0.0.1", turn=relay).apply(conn)
    try:
        with pytest.raises(stun.TransactionFailed):
            await conn.gather_candidates()
    finally:
        await conn.close()


def test_turn_urls_parse_as_rfc_7065_says() -> None:
    server = {"urls": ["stun:x:1", "turn:[::1]:5349?transport=tcp"], "username": "u",
              "credential": "c"}
    relay = TurnRelay.from_ice_server(server)
    assert (relay.host, relay.port, relay.transport) == ("::1", 5349, "tcp")
    relay = TurnRelay.from_ice_server({"urls": "turn:t.example", "username": "u",
                                       "credential": "secret-pw"})
    assert (relay.host, relay.port, relay.transport) == ("t.example", 3478, "udp")
    assert "secret-pw" not in repr(relay)
    with pytest.raises(ValueError):
        TurnRelay.from_ice_server({"urls": ["stun:x:1"], "username": "u", "credential": "c"})


@pytest.mark.browser
async def test_chromium_forced_to_relay_holds_a_call_through_coturn(
    signaling: Callable[..., Awaitable[RunningServer]],
    coturn: Coturn,
    chromium: BrowserFactory,
    tmp_path: Path,
) -> None:
    """The page with ``?relay`` (iceTransportPolicy "relay") sends and receives encrypted
    video only through coturn, with the credentials the server minted after admission;
    a second browser without the restriction sees its picture and is seen by it."""
    sfu = Sfu(SfuConfig(port_min=46000, port_max=46999))
    srv = await signaling(media=sfu, turn_urls=(coturn.url,), turn_secret=coturn.secret)
    relayed = await callpage.open_browser(chromium, tmp_path, 1)
    direct = await callpage.open_browser(chromium, tmp_path, 2)
    await callpage.join(relayed, srv.http, "Relayed", query="?relay")
    await callpage.join(direct, srv.http, "Direct")
    want_two = "s => s.tiles.filter(t => t.id !== 'self' && t.width > 0).length === 1"
    relayed_id = (await callpage.until(relayed, want_two))["id"]
    direct_id = (await callpage.until(direct, want_two))["id"]
    await callpage.sees(direct, relayed, relayed_id, [])
    await callpage.sees(relayed, direct, direct_id, [])
    assert await callpage.selected_candidate_types(relayed) == {"pub": "relay", "sub": "relay"}
    assert "relay" not in (await callpage.selected_candidate_types(direct)).values()
    log = coturn.log()
    assert f":{relayed_id}" in log, log[-3000:]  # the minted username is expiry:participant id
    assert len(re.findall(r"ALLOCATE processed, success", log)) >= 2, log[-3000:]
    assert relayed.errors == [] and direct.errors == []
