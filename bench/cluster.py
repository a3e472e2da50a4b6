"""``sealroom bench cluster`` (``python -m bench.cluster``): rooms spread over nodes through
Redis (docs/BENCHMARKS.md "Several nodes", docs/DEPLOY.md "Several nodes").

Starts a ``redis-server`` of its own (loopback, no persistence) and ``--nodes`` (3)
``sealroom serve --redis … --no-sfu`` processes, then measures, with the reference Python
client and precomputed room keys (Argon2id is the client's cost, not the cluster's; it is
left out):

* **placement**: ``--rooms`` (40) rooms created one after another, each through the next
  node in turn; how many each node hosts (Redis's host keys);
* **join**: the time from sending ``join`` to receiving ``joined`` (the challenge answer
  first), for a socket on the room's own node and for one on another node, whose join is
  bridged through Redis (``--joins`` per room and path), and as a reference on a node
  without ``--redis`` (up to 15 rooms);
* **relay**: ``ping``/``pong`` round trips on joined sockets, on the room's node and
  bridged from another node (``--pings`` each, one outstanding per socket, 8 sockets per
  path at once): what the relay adds (one hop through Redis each way), p50 and p99.

A markdown summary to stdout, everything as JSON to ``--json``. Signaling only: media
never crosses Redis (it goes from the client to the room's node's SFU). Run it in a
private network namespace like the other benches::

    unshare -n bash -c 'ip link set lo up && .venv/bin/python -m bench.cluster'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procstat import cpu_seconds
from bench.redisserver import RedisServer
from bench.restart import Server, free_port
from e2ee.roomcrypto import KdfParams, b64, password_key, room_keys, sign_join
from peers.client import SignalingClient

PASSWORD = "spread over nodes"
PING_SOCKETS = 8  # per path, at once
SINGLE_ROOMS = 15  # rooms of the reference node without --redis (under too-many-rooms)


@dataclass
class Results:
    nodes: int
    rooms: int
    placement: dict[str, int] = field(default_factory=dict)
    node_cpu_s: dict[str, float] = field(default_factory=dict)  # each process, whole run
    redis_cpu_s: float = 0.0
    join_single_ms: list[float] = field(default_factory=list)  # a node without --redis
    join_direct_ms: list[float] = field(default_factory=list)
    join_bridged_ms: list[float] = field(default_factory=list)
    ping_single_ms: list[float] = field(default_factory=list)
    ping_direct_ms: list[float] = field(default_factory=list)
    ping_bridged_ms: list[float] = field(default_factory=list)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Keys:
    """Room keys derived once: every room of the run shares one salt (allowed: a salt is the
    creator's choice), so Argon2id runs once and each room's keys are an HKDF away."""

    def __init__(self) -> None:
        self.kdf = KdfParams.generate()
        self.key = password_key(PASSWORD, self.kdf)

    def adm(self, room: str) -> tuple[bytes, bytes]:
        keys = room_keys(self.key, room)
        return keys.adm_seed, keys.adm_pk


async def timed_join(url: str, room: str, keys: Keys, create: bool
                     ) -> tuple[SignalingClient, float]:
    """A new socket joins ``room``; the seconds from ``join`` sent to ``joined``."""
    client = await SignalingClient.connect(url)
    seed, pk = keys.adm(room)
    assert client.nonce is not None and client.conn is not None
    msg: dict[str, Any] = {"type": "join", "room": room,
                           "sig": b64(sign_join(seed, client.origin, room, client.nonce,
                                                client.conn))}
    if create:
        msg["create"] = {"kdf": keys.kdf.to_json(), "adm_pk": b64(pk)}
    loop = asyncio.get_running_loop()
    start = loop.time()
    await client.send(msg)
    await client.expect("joined")
    return client, loop.time() - start


async def ping_series(client: SignalingClient, count: int) -> list[float]:
    """``count`` ping/pong round trips, one outstanding, 25 ms apart (under the socket's
    50 messages/s); seconds each."""
    loop = asyncio.get_running_loop()
    out: list[float] = []
    for i in range(count):
        start = loop.time()
        await client.send({"type": "ping", "t": i})
        await client.expect("pong")
        out.append(loop.time() - start)
        await asyncio.sleep(0.025)
    return out


async def host_of(redis_url: str, room: str) -> str:
    from cluster.cluster import connect
    from cluster.placement import Placement

    client = connect(redis_url)
    try:
        host = await Placement(client).host(room)
    finally:
        await client.aclose()
    if host is None:
        raise RuntimeError(f"room {room} has no host")
    return host


async def run(n_nodes: int, n_rooms: int, joins: int, pings: int,
              workdir: Path) -> Results:
    redis = RedisServer(workdir / "redis")
    await redis.start()
    servers: dict[str, Server] = {}
    single: Server | None = None
    clients: list[SignalingClient] = []
    try:
        for i in range(n_nodes):
            node = f"node{i}"
            state = workdir / node / "state"
            state.mkdir(parents=True)
            servers[node] = Server(free_port(), state, [
                "--no-sfu", "--redis", redis.url, "--node-id", node, "--log-level", "warning",
                "--address-rate", "5000", "--lock-after", "0"])
        single_state = workdir / "single" / "state"
        single_state.mkdir(parents=True)
        single = Server(free_port(), single_state, [
            "--no-sfu", "--log-level", "warning", "--address-rate", "5000", "--lock-after", "0"])
        servers["single"] = single
        await asyncio.gather(*(s.start() for s in servers.values()))
        del servers["single"]
        names = list(servers)
        keys = await asyncio.to_thread(Keys)
        res = Results(n_nodes, n_rooms)
        hosts: dict[str, str] = {}
        for r in range(n_rooms):
            room = f"room{r:03d}"
            entrance = servers[names[r % n_nodes]]
            client, _ = await timed_join(entrance.ws, room, keys, create=True)
            hosts[room] = await host_of(redis.url, room)
            await client.close()
        for node in names:
            res.placement[node] = sum(1 for h in hosts.values() if h == node)
        for r, (room, host) in enumerate(hosts.items()):
            other = names[(names.index(host) + 1 + r % (n_nodes - 1)) % n_nodes]
            for _ in range(joins):
                for path, node in (("direct", host), ("bridged", other)):
                    client, took = await timed_join(servers[node].ws, room, keys, create=False)
                    getattr(res, f"join_{path}_ms").append(took * 1000)
                    await client.close()
        # The same joins on one node without --redis: what the cluster adds to a join.
        for r in range(min(n_rooms, SINGLE_ROOMS)):
            room = f"single{r:03d}"
            creator, _ = await timed_join(single.ws, room, keys, create=True)
            for _ in range(joins):
                client, took = await timed_join(single.ws, room, keys, create=False)
                res.join_single_ms.append(took * 1000)
                await client.close()
            if r < PING_SOCKETS:
                clients.append(creator)
            else:
                await creator.close()
        # Relay: sockets joined to the first rooms, on their node and through another.
        rooms = list(hosts.items())[:PING_SOCKETS]
        direct, bridged = [], []
        for room, host in rooms:
            other = names[(names.index(host) + 1) % n_nodes]
            direct.append((await timed_join(servers[host].ws, room, keys, create=False))[0])
            bridged.append((await timed_join(servers[other].ws, room, keys, create=False))[0])
        clients += direct + bridged
        groups = (("single", clients[:PING_SOCKETS]), ("direct", direct), ("bridged", bridged))
        for path, group in groups:
            series = await asyncio.gather(*(ping_series(c, pings // len(group) or 1)
                                            for c in group))
            getattr(res, f"ping_{path}_ms").extend(t * 1000 for s in series for t in s)
        for node, server in [*servers.items(), ("single", single)]:
            assert server.proc is not None
            res.node_cpu_s[node] = round(cpu_seconds(server.proc.pid), 3)
        assert redis.proc is not None
        res.redis_cpu_s = round(cpu_seconds(redis.proc.pid), 3)
        return res
    finally:
        for c in clients:
            await c.close()
        for s in [*servers.values(), *([single] if single is not None else [])]:
            if s.proc is not None and s.proc.poll() is None:
                await s.stop()
        await redis.stop()


def summary(res: Results) -> str:
    def row(name: str, values: list[float]) -> str:
        return (f"| {name} | {len(values)} | {quantile(values, 0.5):.2f} | "
                f"{quantile(values, 0.99):.2f} | {statistics.fmean(values):.2f} |")

    lines = [f"placement of {res.rooms} rooms on {res.nodes} nodes: "
             + ", ".join(f"{n} {c}" for n, c in res.placement.items()),
             "CPU seconds over the run: " + ", ".join(f"{n} {c:.2f}" for n, c in
                                                      res.node_cpu_s.items())
             + f", redis-server {res.redis_cpu_s:.2f}", "",
             "| measure | samples | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|---:|",
             row("join on one node without --redis", res.join_single_ms),
             row("join on the room's node", res.join_direct_ms),
             row("join through another node (bridged)", res.join_bridged_ms),
             row("ping/pong on one node without --redis", res.ping_single_ms),
             row("ping/pong on the room's node", res.ping_direct_ms),
             row("ping/pong through another node (bridged)", res.ping_bridged_ms)]
    added50 = quantile(res.ping_bridged_ms, 0.5) - quantile(res.ping_direct_ms, 0.5)
    added99 = quantile(res.ping_bridged_ms, 0.99) - quantile(res.ping_direct_ms, 0.99)
    lines += ["", f"the relay adds {added50:.2f} ms at p50 and {added99:.2f} ms at p99 to a "
              "round trip (entrance → Redis → room's node, and back)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sealroom bench cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="[%(default)s]")
    parser.add_argument("--rooms", type=int, default=40, help="[%(default)s]")
    parser.add_argument("--joins", type=int, default=3,
                        help="timed joins per room and path [%(default)s]")
    parser.add_argument("--pings", type=int, default=800,
                        help="ping round trips per path [%(default)s]")
    parser.add_argument("--json", type=Path, default=None, help="write the samples here")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 16 or not 1 <= args.rooms <= 200:
        parser.error("2…16 nodes, 1…200 rooms")
    workdir = Path(tempfile.mkdtemp(prefix="sealroom-bench-cluster-"))
    try:
        res = asyncio.run(run(args.nodes, args.rooms, max(1, args.joins),
                              max(PING_SOCKETS, args.pings), workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(summary(res))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(res), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
