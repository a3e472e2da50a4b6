"""cluster/nodes.py against a real redis-server: registration, lease, expiry."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from cluster import keys
from cluster.nodes import NodeInfo, NodeRegistry

LEASE = 0.4  # seconds: short, so expiry is seen quickly


def node(node_id: str, load: int = 0) -> NodeInfo:
    return NodeInfo(node_id, f"http://{node_id}.test:8080", "127.0.0.1", load, 1.0)


async def test_registration_round_trip_and_lease_expiry(redis: Redis) -> None:
    reg = NodeRegistry(redis, lease=LEASE)
    await reg.register(node("a", 3))
    await reg.register(node("b"))
    assert [n.id for n in await reg.live()] == ["a", "b"]
    assert (await reg.live())[0] == node("a", 3)
    ttl = await redis.pttl(keys.node("a"))
    assert 0 < ttl <= LEASE * 1000
    # b keeps renewing every lease/3; a does not: a is gone once its lease ran out.
    for _ in range(6):
        await asyncio.sleep(LEASE / 3)
        await reg.register(node("b"))
    assert [n.id for n in await reg.live()] == ["b"]
    assert await redis.smembers(keys.NODES) == {b"b"}  # the expired id left the set
    assert await reg.alive(["a", "b", "c"]) == {"b"}


async def test_reregistration_after_redis_lost_everything(redis: Redis) -> None:
    reg = NodeRegistry(redis, lease=5.0)
    await reg.register(node("a"))
    await redis.flushall()  # what a restart without persistence leaves
    assert await reg.live() == []
    await reg.register(node("a"))  # the next renewal
    assert [n.id for n in await reg.live()] == ["a"]


async def test_deregister_is_immediate(redis: Redis) -> None:
    reg = NodeRegistry(redis, lease=5.0)
    await reg.register(node("a"))
    await reg.deregister("a")
    assert await reg.live() == [] and await reg.alive(["a"]) == set()


async def test_an_unreadable_registration_is_skipped(redis: Redis) -> None:
    reg = NodeRegistry(redis, lease=5.0)
    await reg.register(node("a"))
    await redis.set(keys.node("b"), b"{not json", px=5000)
    await redis.sadd(keys.NODES, "b")
    assert [n.id for n in await reg.live()] == ["a"]


@pytest.mark.parametrize("raw", ["[]", "{}", '{"id":1,"url":"u","media":"m","load":0,'
                                 '"started":0}', '{"id":"a","url":"u","media":"m","load":"0",'
                                 '"started":0}'])
def test_node_info_parse_refuses_what_it_did_not_write(raw: str) -> None:
    with pytest.raises(ValueError):
        NodeInfo.from_json(raw)
