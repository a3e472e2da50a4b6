"""cluster/placement.py against a real redis-server: least loaded, atomic, lease-bound."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from cluster import keys
from cluster.cluster import connect
from cluster.nodes import NodeInfo, NodeRegistry
from cluster.placement import Placement


async def register(redis: Redis, loads: dict[str, int], lease: float = 30.0) -> NodeRegistry:
    reg = NodeRegistry(redis, lease=lease)
    for node_id, load in loads.items():
        await reg.register(NodeInfo(node_id, f"http://{node_id}", "127.0.0.1", load, 1.0))
    return reg


async def test_first_join_places_on_the_least_loaded_live_node(redis: Redis) -> None:
    reg = await register(redis, {"a": 5, "b": 2, "c": 9})
    placement = Placement(redis, lease=30.0)
    assert await placement.place("team") == "b"
    assert await placement.place("team") == "b"  # placed once, then looked up
    assert await placement.host("team") == "b"
    loads = {n.id: n.load for n in await reg.live()}
    assert loads == {"a": 5, "b": 3, "c": 9}  # the placement counted at once
    ttl = await redis.pttl(keys.room_host("team"))
    assert 0 < ttl <= 30_000


async def test_rooms_placed_between_renewals_spread_evenly(redis: Redis) -> None:
    await register(redis, {"a": 0, "b": 0, "c": 0})
    placement = Placement(redis, lease=30.0)
    hosts = Counter([await placement.place(f"room{i}") for i in range(30)])
    assert hosts == {"a": 10, "b": 10, "c": 10}


async def test_two_nodes_racing_first_joins_agree_on_exactly_one_host(
    redis_server: Any,
) -> None:
    # Two nodes, each its own Redis connection, place the same 40 rooms at the same time.
    one, two = connect(redis_server.url), connect(redis_server.url)
    try:
        await register(one, {"a": 0, "b": 0})
        p1, p2 = Placement(one, lease=30.0), Placement(two, lease=30.0)
        rooms = [f"race{i}" for i in range(40)]
        first = await asyncio.gather(*(p1.place(r) for r in rooms))
        second = await asyncio.gather(*(p2.place(r) for r in reversed(rooms)))
        raced = await asyncio.gather(*(p.place(f"both{i}") for i in range(40)
                                       for p in (p1, p2)))
        assert first == list(reversed(second))
        for i in range(40):
            assert raced[2 * i] == raced[2 * i + 1] == await p1.host(f"both{i}")
        assert set(first) == {"a", "b"}
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_room_whose_host_lease_expired_is_placed_again(redis: Redis) -> None:
    await register(redis, {"a": 0}, lease=30.0)
    await register(redis, {"b": -1}, lease=0.3)  # b is the least loaded, then dies
    placement = Placement(redis, lease=30.0)
    assert await placement.place("team") == "b"
    await asyncio.sleep(0.5)  # b's lease runs out; its host key still names it
    assert await placement.host("team") == "b"
    assert await placement.place("team") == "a"
    assert await placement.host("team") == "a"


async def test_no_live_node_places_nothing(redis: Redis) -> None:
    assert await Placement(redis).place("team") is None
    assert await redis.exists(keys.room_host("team")) == 0


async def test_claim_renew_and_release_keep_one_host(redis: Redis) -> None:
    await register(redis, {"a": 0, "b": 5})
    placement = Placement(redis, lease=0.5)
    assert await placement.place("team") == "a"
    assert await placement.renew(["team", "mine"], "a") == []  # "mine": taken, nobody had it
    assert await placement.host("mine") == "a"
    assert await placement.renew(["team"], "b") == ["team"]  # b may not take a's room
    assert not await placement.claim("team", "b")
    assert not await placement.release("team", "b")
    assert await placement.host("team") == "a"
    await asyncio.sleep(0.7)  # not renewed for a lease: the host key is gone
    assert await placement.host("team") is None
    assert await placement.claim("team", "b")
    assert await placement.release("team", "b")
    assert await placement.host("team") is None
