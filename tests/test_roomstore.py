"""cluster/roomstore.py against a real redis-server: the room record, strictly read back."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from redis.asyncio import Redis

from cluster import keys
from cluster.roomstore import RoomRecord, RoomStore
from e2ee.roomcrypto import b64

KDF = {"alg": "argon2id13", "ops": 2, "mem": 67108864, "salt": b64(os.urandom(16))}


def record(**changes: Any) -> RoomRecord:
    fields: dict[str, Any] = {"kdf": KDF, "adm_pk": os.urandom(32), "created_at": 1.5e9}
    return RoomRecord(**{**fields, **changes})


async def test_record_round_trip_create_once_and_expiry(redis: Redis) -> None:
    store = RoomStore(redis, ttl=60.0)
    rec = record(open_until=1.6e9, opened_by="p0123456789ab")
    assert await store.create("team", rec)
    assert await store.get("team") == rec
    assert not await store.create("team", record())  # SET NX: the first record stays
    assert await store.get("team") == rec
    assert 0 < await redis.pttl(keys.room_record("team")) <= 60_000
    opened = record(adm_pk=rec.adm_pk, open_until=1.7e9, opened_by="p1")
    await store.put("team", opened)
    assert await store.get("team") == opened
    await store.delete("team")
    assert await store.get("team") is None


async def test_refresh_writes_back_what_redis_lost(redis: Redis) -> None:
    store = RoomStore(redis, ttl=60.0)
    rec = record()
    await store.refresh([("team", rec)])
    await redis.flushall()
    assert await store.get("team") is None
    await store.refresh([("team", rec)])
    assert await store.get("team") == rec


@pytest.mark.parametrize("mutate", [
    lambda o: o.update(v=2),
    lambda o: o.update(adm_pk=b64(bytes(31))),
    lambda o: o["kdf"].update(ops=1),  # below the floor: weak-kdf for a create
    lambda o: o["kdf"].update(mem=1 << 40),  # above the ceiling
    lambda o: o.update(created_at="now"),
    lambda o: o.update(opened_by=7),
    lambda o: o.pop("kdf"),
])
async def test_a_record_this_version_did_not_write_reads_as_none(
    redis: Redis, mutate: Any
) -> None:
    obj = json.loads(record().to_json())
    mutate(obj)
    await redis.set(keys.room_record("team"), json.dumps(obj))
    assert await RoomStore(redis, ttl=60.0).get("team") is None
    await redis.set(keys.room_record("team"), b"\xff not json")
    assert await RoomStore(redis, ttl=60.0).get("team") is None
