"""cluster/relay.py against a real redis-server: order, failures, resubscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from cluster import keys
from cluster.cluster import connect
from cluster.errors import ClusterUnavailable
from cluster.relay import Relay


@pytest_asyncio.fixture
async def clients(redis_server: Any) -> AsyncIterator[list[Redis]]:
    made = [connect(redis_server.url), connect(redis_server.url)]
    try:
        yield made
    finally:
        for c in made:
            await c.aclose()


async def until(predicate: Any, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds * 20)):  # bounded
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


async def test_messages_arrive_in_order_with_the_sender_stamped(clients: list[Redis]) -> None:
    got: list[dict[str, Any]] = []
    a = Relay(clients[0], "a", lambda m: None)
    b = Relay(clients[1], "b", got.append)
    a.start()
    b.start()
    try:
        await asyncio.wait_for(b.subscribed.wait(), 10)
        for i in range(200):
            await a.send("b", {"op": "frame", "sid": "s1", "data": str(i), "from": "forged"})
        assert await until(lambda: len(got) == 200)
        assert [m["data"] for m in got] == [str(i) for i in range(200)]
        assert {m["from"] for m in got} == {"a"}  # stamped by the sender's relay
    finally:
        await a.close()
        await b.close()


async def test_a_node_that_does_not_listen_is_a_failure(clients: list[Redis]) -> None:
    a = Relay(clients[0], "a", lambda m: None)
    with pytest.raises(ClusterUnavailable, match="does not listen"):
        await a.send("nobody", {"op": "frame", "sid": "s"})


async def test_what_is_not_a_relay_message_is_dropped(clients: list[Redis]) -> None:
    got: list[dict[str, Any]] = []
    b = Relay(clients[1], "b", got.append)
    b.start()
    try:
        await asyncio.wait_for(b.subscribed.wait(), 10)
        for junk in (b"[1]", b"{\"op\":1}", b"\xff", b"{\"op\":\"frame\",\"from\":\"a\"}"):
            await clients[0].publish(keys.relay_channel("b"), junk)
        await clients[0].publish(keys.relay_channel("b"),
                                 b'{"op":"frame","from":"a","sid":"s"}')
        assert await until(lambda: len(got) == 1)
        assert b.dropped == 4
    finally:
        await b.close()


async def test_redis_gone_then_back_the_relay_reads_again(
    redis_server: Any, clients: list[Redis]
) -> None:
    got: list[dict[str, Any]] = []
    a = Relay(clients[0], "a", lambda m: None)
    b = Relay(clients[1], "b", got.append)
    b.start()
    try:
        await asyncio.wait_for(b.subscribed.wait(), 10)
        await redis_server.stop()
        with pytest.raises(ClusterUnavailable):
            await a.send("b", {"op": "frame", "sid": "s", "data": "lost"})
        assert await until(lambda: not b.subscribed.is_set())
        await redis_server.start()
        await asyncio.wait_for(b.subscribed.wait(), 15)  # resubscribed by itself
        await a.send("b", {"op": "frame", "sid": "s", "data": "after"})
        assert await until(lambda: [m["data"] for m in got] == ["after"])
    finally:
        await b.close()
