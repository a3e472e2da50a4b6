"""Two sealroom nodes on one real redis-server: a room hosted on node B, reached through
node A (docs/DEPLOY.md "Several nodes").

The nodes are what ``sealroom serve --redis`` runs (tests/clusternodes.py), each its own
port and its SFU on its own loopback address; the participants are the reference Python
client and the E2EE bots, with real ICE/DTLS-SRTP to the hosting node's SFU.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from cluster import keys
from cluster.cluster import connect
from peers.client import Sealed, ServerError, SignalingClient
from peers.e2eebot import E2eeBot
from sfu.ice import IcePolicy
from tests.clusternodes import Node, start_node
from tests.leaks import derived_secrets, text_forms
from tests.test_e2eebot import GREEN, RED, sees

PASSWORD = "two nodes, one room, sealed end to end"
ROOM = "spread"
BOT_ICE = IcePolicy("127.0.0.1", port_min=55000, port_max=55999)
A_MEDIA, B_MEDIA = "127.0.0.1", "127.0.0.2"

StartNode = Callable[..., Awaitable[Node]]


@pytest_asyncio.fixture
async def nodes(redis_server: Any) -> AsyncIterator[StartNode]:
    started: list[Node] = []

    async def start(node_id: str, media_host: str, ports: tuple[int, int],
                    **kw: Any) -> Node:
        node = await start_node(redis_server.url, node_id, media_host, ports, **kw)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in reversed(started):
            await node.stop()


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[list[SignalingClient]]:
    made: list[SignalingClient] = []
    try:
        yield made
    finally:
        for c in made:
            await c.close()


async def connect_to(node: Node, made: list[SignalingClient]) -> SignalingClient:
    client = await SignalingClient.connect(node.ws)
    made.append(client)
    return client


async def until(predicate: Callable[[], bool], seconds: float = 20.0) -> bool:
    for _ in range(int(seconds * 10)):  # bounded
        if predicate():
            return True
        await asyncio.sleep(0.1)
    return predicate()


async def b_hosts_the_room(nodes: StartNode, clients: list[SignalingClient],
                           **kw: Any) -> tuple[Node, Node, SignalingClient]:
    """Node B starts alone and a member joins through it: the room is placed on B (the
    only live node); then node A starts."""
    b = await nodes("node-b", B_MEDIA, (46000, 46499), **kw)
    bob = await connect_to(b, clients)
    await bob.join(ROOM, PASSWORD)
    a = await nodes("node-a", A_MEDIA, (46500, 46999), **kw)
    assert await b.cluster.placement.host(ROOM) == "node-b"
    return a, b, bob


async def test_a_join_through_node_a_is_bridged_to_the_host_b(
    nodes: StartNode, clients: list[SignalingClient]
) -> None:
    a, b, bob = await b_hosts_the_room(nodes, clients, sfu=False)
    alice = await connect_to(a, clients)
    info = await alice.room_info(ROOM)  # node A reads the record in Redis
    assert info["exists"] and info["kdf"] == bob.kdf.to_json()  # type: ignore[union-attr]
    joined = await alice.join(ROOM, PASSWORD)
    assert [m["id"] for m in joined["members"]] == [bob.id]
    assert (await bob.expect("member-joined"))["id"] == alice.id
    # The room lives on B alone; A only bridges the socket.
    assert ROOM in b.server.rooms.rooms and ROOM not in a.server.rooms.rooms
    assert set(b.server.conns) == {bob.id, alice.id} and not a.server.conns
    assert len(a.server.bridges) == 1 and len(b.server.relayed) == 1

    await alice.seal("*", {"chat": "from A to B"})
    assert (await bob.next_sealed()).json() == {"chat": "from A to B"}
    await bob.seal(alice.id, {"chat": "from B to A"})  # type: ignore[arg-type]
    assert (await alice.next_sealed()).json() == {"chat": "from B to A"}

    # Errors come from the host, through the bridge, as on one node.
    await alice.send({"type": "seal", "to": "nobody", "epoch": 0, "seq": 99,
                      "nonce": "AAAAAAAAAAAAAAAA", "ct": "AAAAAAAAAAAAAAAAAAAAAA=="})
    with pytest.raises(ServerError) as err:
        await alice.expect("nothing")
    assert err.value.id == "unknown-recipient"

    # A wrong password through A is refused by B, and the socket may try again.
    eve = await connect_to(a, clients)
    with pytest.raises(ServerError) as err:
        await eve.join(ROOM, "not the password")
    assert err.value.id == "wrong-password"
    assert b.server.stats["admission_failures"] == 1
    carol = await connect_to(a, clients)
    await carol.join(ROOM, PASSWORD)

    # Leaving through A: B says member-left, and both ends forget the bridge.
    await alice.send({"type": "leave"})
    left = await bob.expect("member-left")
    assert left["id"] == alice.id and left["reason"] == "left"
    assert await until(lambda: len(b.server.relayed) == 2 and len(a.server.bridges) == 2)
    # A socket that closes without leaving: member-left (closed) on B.
    await carol.close()
    left = await bob.expect("member-left")
    assert left["id"] == carol.id and left["reason"] == "closed"
    assert await until(lambda: len(b.server.relayed) == 1 and len(a.server.bridges) == 1)


@pytest.mark.media
async def test_e2ee_bots_through_a_and_on_b_share_media_via_b_and_redis_holds_no_secret(
    nodes: StartNode, redis_server: Any,
) -> None:
    b = await nodes("node-b", B_MEDIA, (46000, 46499))
    bob = E2eeBot(b.ws, ROOM, PASSWORD, "Bob", ice=BOT_ICE, color=GREEN)
    # Everything that crosses Redis's pub/sub during the call, and every key it holds.
    spy = connect(redis_server.url)
    pubsub = spy.pubsub()
    await pubsub.psubscribe(keys.PREFIX + "*")
    relayed: list[str] = []

    async def listen() -> None:
        while True:
            item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if item is not None:
                relayed.append(item["data"].decode("utf-8", "replace"))

    spying = asyncio.get_running_loop().create_task(listen())
    bots = [bob]
    try:
        await bob.start()  # B is the only live node: the room is placed on B
        assert await b.cluster.placement.host(ROOM) == "node-b"
        a = await nodes("node-a", A_MEDIA, (46500, 46999))
        alice = E2eeBot(a.ws, ROOM, PASSWORD, "Alice", ice=BOT_ICE, color=RED)
        await alice.start()
        bots.append(alice)
        assert alice.client is not None and bob.client is not None
        assert len(a.server.bridges) == 1 and ROOM not in a.server.rooms.rooms
        assert await sees(bob, alice), "Bob (on B) does not see Alice (through A)"
        assert await sees(alice, bob), "Alice (through A) does not see Bob (on B)"
        # Both media sessions are on B's SFU; A's carries nothing.
        assert b.sfu is not None and a.sfu is not None
        assert b.sfu.gauges()["participants"] == 2 and a.sfu.gauges()["participants"] == 0
        # A sealed application message through the bridge: a hand raised through A.
        await alice.raise_hand()
        assert bob.keys is not None
        body = await asyncio.wait_for(next_body(bob.keys.other), 20)
        assert body["type"] == "hand" and body["raised"] is True

        # Secrets: none of the password, the keys derived from it or any media key is in
        # any key of Redis (every type, every value) nor in what crossed its pub/sub.
        kdf = alice.client.kdf
        secrets = derived_secrets(PASSWORD, ROOM, kdf)
        media_keys = [k.key for bot in (alice, bob) for k in
                      ([bot.current_key] if bot.current_key else []) + bot.old_keys]
        assert media_keys, "no media key to look for: the check would be vacuous"
        needles = [PASSWORD] + [f for s in secrets + media_keys for f in text_forms(s)]
        stored = await redis_dump(spy)
        assert any(keys.room_record(ROOM) == k for k in stored), "nothing stored: vacuous"
        assert relayed, "nothing relayed: vacuous"
        haystack = "\n".join([*stored.values(), *relayed])
        for needle in needles:
            assert needle not in haystack, "a secret reached Redis"
        # What the record holds is public by design: the admission public key and the salt.
        assert alice.client.keys is not None
        assert text_forms(alice.client.keys.adm_pk)[1] in stored[keys.room_record(ROOM)]
    finally:
        spying.cancel()
        for bot in bots:
            await bot.close()
        await pubsub.aclose()
        await spy.aclose()


async def next_body(queue: asyncio.Queue[Any]) -> dict[str, Any]:
    while True:  # bounded by the caller's wait_for
        item = await queue.get()
        if isinstance(item, Sealed):
            body: dict[str, Any] = item.json()
            return body


async def redis_dump(client: Any) -> dict[str, str]:
    """Every key (SCAN) with every value of it, whatever its type, as text."""
    out: dict[str, str] = {}
    async for raw in client.scan_iter(count=100):
        key = raw.decode()
        kind = (await client.type(raw)).decode()
        if kind == "string":
            value: Any = await client.get(raw)
        elif kind == "set":
            value = sorted(await client.smembers(raw))
        elif kind == "hash":
            value = sorted((await client.hgetall(raw)).items())
        elif kind == "list":
            value = await client.lrange(raw, 0, -1)
        elif kind == "zset":
            value = await client.zrange(raw, 0, -1, withscores=True)
        else:
            value = await client.dump(raw)
        out[key] = repr(value) + json.dumps(str(value))
    return out


async def test_redis_down_new_joins_refused_running_calls_go_on_then_nodes_return(
    nodes: StartNode, clients: list[SignalingClient], redis_server: Any
) -> None:
    a, b, bob = await b_hosts_the_room(nodes, clients, sfu=False, lease=2.0)
    carol = await connect_to(b, clients)
    await carol.join(ROOM, PASSWORD)
    await bob.expect("member-joined")
    await redis_server.stop()
    # A new join through either node: cluster-unavailable, counted, the socket stays open.
    for node in (a, b):
        newcomer = await connect_to(node, clients)
        with pytest.raises(ServerError) as err:
            await newcomer.join("another-room", PASSWORD)
        assert err.value.id == "cluster-unavailable"
        async with aiohttp.ClientSession() as http, http.get(node.http + "/metrics") as resp:
            text = await resp.text()
        assert 'sealroom_signaling_errors_total{id="cluster-unavailable"} 1.0' in text
        assert "sealroom_cluster_redis_up 0.0" in text or node.cluster.up
    # The call on B goes on: sealed messages between its members still flow.
    await bob.seal("*", {"chat": "still here"})
    assert (await carol.next_sealed()).json() == {"chat": "still here"}
    assert await until(lambda: not a.cluster.up and not b.cluster.up, 10)

    await redis_server.start()  # empty: a restart without persistence
    assert await until(lambda: a.cluster.up and b.cluster.up, 15), "nodes did not re-register"
    check = connect(redis_server.url)
    try:
        assert await check.exists(keys.node("node-a"), keys.node("node-b")) == 2
        # B took its room back (host key and record written again).
        assert await until_async(lambda: check.get(keys.room_host(ROOM)), b"node-b")
        assert await check.exists(keys.room_record(ROOM)) == 1
    finally:
        await check.aclose()
    # New joins work again, also into the running room through A.
    dave = await connect_to(a, clients)
    await dave.join(ROOM, PASSWORD)
    assert (await bob.expect("member-joined"))["id"] == dave.id
    assert dave.id in b.server.conns


async def test_a_node_that_stops_renewing_ends_the_sockets_bridged_with_it(
    nodes: StartNode, clients: list[SignalingClient]
) -> None:
    """Within the lease bound: the entrance closes a socket bridged to a host that vanished
    (relay-lost, 1013), and a host ends the session of a socket whose entrance vanished."""
    a, b, bob = await b_hosts_the_room(nodes, clients, sfu=False, lease=2.0)
    alice = await connect_to(a, clients)
    await alice.join(ROOM, PASSWORD)
    await bob.expect("member-joined")
    c = await nodes("node-c", "127.0.0.3", (0, 0), sfu=False, lease=2.0)
    carol = await connect_to(c, clients)
    await carol.join(ROOM, PASSWORD)
    await bob.expect("member-joined")
    assert len(b.server.relayed) == 2
    # Node C vanishes as a kill -9 would leave it: no renewal, no relay, no goodbye.
    await vanish(c)
    left = await bob.expect("member-left", timeout=15)  # B noticed C's lease run out
    assert left["id"] == carol.id and left["reason"] == "closed"
    assert await until(lambda: len(b.server.relayed) == 1)
    # Node B vanishes: A closes Alice's bridged socket with relay-lost.
    await vanish(b)
    with pytest.raises(ServerError) as err:
        await alice.expect("nothing", timeout=15)
    assert err.value.id == "relay-lost"
    assert await until(lambda: alice.ws.closed)
    assert alice.ws.close_code == 1013
    assert await until(lambda: not a.server.bridges)


async def vanish(node: Node) -> None:
    """Stop a node's renewals and its relay without leaving the cluster."""
    assert node.cluster._renewer is not None
    node.cluster._renewer.cancel()
    node.cluster._left = True  # no renewal, and close() will not deregister it either
    await node.cluster.relay.close()


async def until_async(get: Callable[[], Awaitable[Any]], want: Any, seconds: float = 10.0
                      ) -> bool:
    for _ in range(int(seconds * 10)):  # bounded
        if await get() == want:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_sealroom_serve_with_redis_registers_and_leaves(
    redis_server: Any, tmp_path: Any
) -> None:
    """The real command: `sealroom serve --redis … --node-id … --public-url …` registers
    its node with a lease, and SIGTERM takes it out at once."""
    import os
    import signal
    import sys

    from bench.redisserver import free_port
    from cluster.nodes import NodeInfo

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1", "--port",
        str(port), "--no-sfu", "--state-dir", str(tmp_path / "state"), "--drain-grace", "0",
        "--redis", redis_server.url, "--node-id", "proc-node",
        "--public-url", "https://proc.meet.example", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    check = connect(redis_server.url)
    try:
        raw = None
        for _ in range(300):  # bounded: 30 s for the process to start and register
            raw = await check.get(keys.node("proc-node"))
            if raw is not None or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert raw is not None, "the node did not register"
        info = NodeInfo.from_json(raw)
        assert (info.url, info.load) == ("https://proc.meet.example", 0)
        assert 0 < await check.pttl(keys.node("proc-node")) <= 6000  # the lease
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
        assert await check.exists(keys.node("proc-node")) == 0  # left at the drain
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await check.aclose()


async def test_a_hosting_node_killed_mid_call_its_members_resume_on_another_node(
    nodes: StartNode, redis_server: Any, tmp_path: Any
) -> None:
    """``kill -9`` of the node hosting a locked room: its lease runs out, the entrances
    close their bridged sockets (relay-lost), the Python clients rejoin by themselves
    through the resume path, the room is placed on a live node from its record in Redis
    (still locked: a newcomer stays out) and the members meet again. The time from the
    kill to both members back is reported; the bound it must stay under is the lease
    (6 s) + one renewal (2 s) + the clients' reconnect schedule and joins."""
    import os
    import signal
    import sys

    from bench.redisserver import free_port
    from cluster.nodes import LEASE
    from peers.client import ReconnectingClient

    state = tmp_path / "state"  # one resume key for every node (DEPLOY.md "Several nodes")
    entry1 = await nodes("n1", "127.0.0.1", (0, 0), sfu=False, state_dir=str(state),
                         lock_after=2.0)
    entry2 = await nodes("n2", "127.0.0.1", (0, 0), sfu=False, state_dir=str(state),
                         lock_after=2.0)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    host = await asyncio.create_subprocess_exec(  # "n0": wins the placement's tie
        sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1", "--port",
        str(port), "--no-sfu", "--state-dir", str(state), "--lock-after", "2",
        "--redis", redis_server.url, "--node-id", "n0", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    members: list[ReconnectingClient] = []
    try:
        check = connect(redis_server.url)
        try:
            assert await until_async(lambda: check.exists(keys.node("n0")), 1, 60)
        finally:
            await check.aclose()
        alice = ReconnectingClient(entry1.ws, ROOM, PASSWORD)
        bob = ReconnectingClient(entry2.ws, ROOM, PASSWORD)
        members += [alice, bob]
        await alice.start()
        await bob.start()
        assert entry1.cluster.node_id not in (await entry1.cluster.placement.host(ROOM), None)
        assert await entry1.cluster.placement.host(ROOM) == "n0"
        await asyncio.sleep(2.5)  # the room locks
        newcomer = await SignalingClient.connect(entry1.ws)
        with pytest.raises(ServerError) as err:
            await newcomer.join(ROOM, PASSWORD)
        assert err.value.id == "room-locked"
        await newcomer.close()

        loop = asyncio.get_running_loop()
        killed = loop.time()
        host.send_signal(signal.SIGKILL)
        await host.wait()
        a2 = await alice.wait_session(2, 60)
        b2 = await bob.wait_session(2, 60)
        back = loop.time() - killed
        # Placed again on a live node, which admitted both by their credentials.
        new_host = await entry1.cluster.placement.host(ROOM)
        assert new_host in ("n1", "n2")
        owner = entry1 if new_host == "n1" else entry2
        assert {a2.id, b2.id} <= set(owner.server.conns)
        assert owner.server.stats["resumes"] == 2
        await a2.seal("*", {"chat": "back on another node"})
        assert (await b2.next_sealed()).json() == {"chat": "back on another node"}
        newcomer = await SignalingClient.connect(entry2.ws)  # still locked
        with pytest.raises(ServerError) as err:
            await newcomer.join(ROOM, PASSWORD)
        assert err.value.id == "room-locked"
        await newcomer.close()
        print(f"members back {back:.2f} s after kill -9 of the hosting node")
        assert back < LEASE + LEASE / 3 + 10.0, back
    finally:
        for m in members:
            await m.close()
        if host.returncode is None:
            host.kill()
            await host.wait()


async def test_a_node_whose_room_was_placed_elsewhere_sends_its_members_there(
    nodes: StartNode, clients: list[SignalingClient], redis_server: Any
) -> None:
    """A node cut off for longer than its lease may find its room placed on another node
    (here: the host key rewritten as a re-placement would): at its next renewal it forgets
    the room, leaving the other node's host key and record alone, and closes its members
    with relay-lost so that they rejoin there."""
    b = await nodes("node-b", B_MEDIA, (0, 0), sfu=False, lease=2.0, empty_ttl=0.5)
    bob = await connect_to(b, clients)
    await bob.join(ROOM, PASSWORD)
    check = connect(redis_server.url)
    try:
        await check.set(keys.room_host(ROOM), "node-z", px=60_000)
        assert await check.pexpire(keys.room_record(ROOM), 60_000)  # node-z keeps it
        with pytest.raises(ServerError) as err:
            await bob.expect("nothing", timeout=15)
        assert err.value.id == "relay-lost"
        assert ROOM not in b.server.rooms.rooms  # forgotten here at once
        await asyncio.sleep(0.5)
        assert await check.get(keys.room_host(ROOM)) == b"node-z"
        assert await check.exists(keys.room_record(ROOM)) == 1
    finally:
        await check.aclose()


@pytest.mark.parametrize("swap", ["salt", "adm_pk"])
async def test_a_room_record_swapped_in_redis_lets_nobody_in_with_the_members(
    nodes: StartNode, redis_server: Any, tmp_path: Any, swap: str
) -> None:
    """A hostile Redis replaces a running room's record with one of its own password (a
    new salt, or the same salt and another admission key) and moves the room to another
    node. The attacker gets a room of that name to itself; the members, sent there, are
    refused by their own clients (kdf-changed) or by the node (bad-resume: their
    credentials name the real admission key) — nobody shares a room, or a key, with
    them who does not hold the password (DEPLOY.md "What a compromised Redis can and
    cannot do")."""
    import time

    from cluster.roomstore import RoomRecord
    from e2ee.roomcrypto import KdfParams, password_key, room_keys
    from peers.client import ReconnectingClient

    shared = {"sfu": False, "lease": 2.0, "state_dir": str(tmp_path / "state")}
    b = await nodes("node-b", B_MEDIA, (0, 0), **shared)
    alice = ReconnectingClient(b.ws, ROOM, PASSWORD)
    await alice.start()  # B is the only node: the room is B's
    a = await nodes("node-a", A_MEDIA, (0, 0), **shared)
    c = await nodes("node-c", "127.0.0.3", (0, 0), **shared)
    bob = ReconnectingClient(a.ws, ROOM, PASSWORD)
    members = [alice, bob]
    try:
        await bob.start()
        assert alice.client is not None and alice.client.kdf is not None
        real = alice.client.kdf
        kdf = KdfParams.generate() if swap == "salt" else real
        evil_pw = "the attacker's own password"
        evil = room_keys(await asyncio.to_thread(password_key, evil_pw, kdf), ROOM)
        record = RoomRecord(kdf=kdf.to_json(), adm_pk=evil.adm_pk, created_at=time.time())
        spy = connect(redis_server.url)
        try:
            async with spy.pipeline(transaction=True) as pipe:  # at once, between renewals
                pipe.set(keys.room_record(ROOM), record.to_json(), px=60_000)
                pipe.set(keys.room_host(ROOM), "node-c", px=60_000)
                await pipe.execute()
        finally:
            await spy.aclose()
        # The attacker enters "the room": on C, alone.
        mallory = await SignalingClient.connect(c.ws)
        joined = await mallory.join(ROOM, evil_pw)
        assert joined["members"] == []
        # B gives the room up at its next renewal; both members are sent away and their
        # clients refuse what C now calls the room.
        for m in members:
            async with m.changed:
                await asyncio.wait_for(m.changed.wait_for(lambda m=m: m.lost is not None), 30)
        want = "kdf-changed" if swap == "salt" else "bad-resume"
        assert (alice.lost, bob.lost) == (want, want)
        assert set(c.server.conns) == {mallory.id}
        assert list(c.server.rooms.rooms[ROOM].members) == [mallory.id]
        await mallory.close()
    finally:
        for m in members:
            await m.close()
