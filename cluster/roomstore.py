"""The room record in Redis: what a server may know of a room, readable by every node
(docs/DEPLOY.md "Several nodes").

``sealroom:room:<name>:record`` holds exactly what ``signaling/rooms.py`` keeps of a room
besides its members, and nothing a password could be recovered from that the server did
not already hold: the KDF parameters with the room's salt, the admission public key, the
creation time (its lock time follows from it and ``--lock-after``) and the "Allow joining"
window. It is JSON:

    {"v":1,"kdf":{"alg":…,"ops":…,"mem":…,"salt":"<b64>"},"adm_pk":"<32 bytes b64>",
     "created_at":<unix s>,"open_until":<unix s>,"opened_by":"<participant id>"|null}

Its host writes it at creation and on every lock change, and refreshes its expiry
(``empty_ttl``, 300 s by default) while it hosts the room, so the record outlives its node:
a node the room is placed on after its host died reads the record and admits with it. A
record read back is checked as strictly as a ``create`` (KDF limits, sizes): a hostile
Redis can swap a record, which members detect (a changed salt is ``kdf-changed``, a
changed ``adm_pk`` refuses their signatures; SECURITY.md), but not make a node misbehave.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster import keys
from e2ee.roomcrypto import KdfParams, b64, unb64

if TYPE_CHECKING:  # only cluster.py and relay.py import redis at run time
    from redis.asyncio import Redis

RECORD_VERSION = 1


@dataclass(frozen=True)
class RoomRecord:
    kdf: dict[str, Any]  # KdfParams.to_json(): alg, ops, mem, salt (b64)
    adm_pk: bytes
    created_at: float
    open_until: float = 0.0
    opened_by: str | None = None

    def to_json(self) -> str:
        return json.dumps({"v": RECORD_VERSION, "kdf": self.kdf, "adm_pk": b64(self.adm_pk),
                           "created_at": self.created_at, "open_until": self.open_until,
                           "opened_by": self.opened_by}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> RoomRecord:
        """Inverse of :meth:`to_json`; ValueError on anything else (a record this version
        did not write, KDF parameters outside the limits, a key of the wrong size)."""
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict) or obj.get("v") != RECORD_VERSION:
                raise ValueError("record version")
            kdf = KdfParams.from_json(obj["kdf"]).to_json()
            adm_pk = unb64(obj["adm_pk"])
            created_at, open_until = obj["created_at"], obj["open_until"]
            opened_by = obj["opened_by"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ValueError("not a room record") from None
        times_ok = all(isinstance(t, int | float) and not isinstance(t, bool)
                       for t in (created_at, open_until))
        if len(adm_pk) != 32 or not times_ok or not (opened_by is None
                                                     or isinstance(opened_by, str)):
            raise ValueError("not a room record")
        return cls(kdf, adm_pk, float(created_at), float(open_until), opened_by)


class RoomStore:
    """Room records on one Redis; ``ttl`` in seconds (the server's ``empty_ttl``)."""

    def __init__(self, redis: Redis, ttl: float) -> None:
        self.redis = redis
        self.ttl_ms = max(1, round(ttl * 1000))

    async def get(self, room: str) -> RoomRecord | None:
        """The record, or None when there is none (or it is not one: see
        :meth:`RoomRecord.from_json`; a node then treats the room as absent)."""
        raw = await self.redis.get(keys.room_record(room))
        if raw is None:
            return None
        try:
            return RoomRecord.from_json(raw)
        except ValueError:
            return None

    async def create(self, room: str, record: RoomRecord) -> bool:
        """Write ``record`` unless the room has one (``SET NX``): False if it had."""
        done = await self.redis.set(keys.room_record(room), record.to_json(), nx=True,
                                    px=self.ttl_ms)
        return bool(done)

    async def put(self, room: str, record: RoomRecord) -> None:
        """Write ``record`` over what is there (its host changed the lock state)."""
        await self.redis.set(keys.room_record(room), record.to_json(), px=self.ttl_ms)

    async def refresh(self, records: Iterable[tuple[str, RoomRecord]]) -> None:
        """Its host's periodic write of each room it holds: expiry pushed back, and a
        record Redis lost (a restart without persistence) written again."""
        items = list(records)
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for room, record in items:
                pipe.set(keys.room_record(room), record.to_json(), px=self.ttl_ms)
            await pipe.execute()

    async def delete(self, room: str) -> None:
        await self.redis.delete(keys.room_record(room))
