"""Nodes: each registers itself under a key with a lease and renews it (docs/DEPLOY.md
"Several nodes").

A node's registration is ``sealroom:node:<id>``, a JSON object
``{"id", "url", "media", "load", "started"}`` set with ``PX`` = the lease (6 s by default)
and renewed every lease / 3 (2 s), so a node that stops renewing — killed, frozen, cut off
from Redis — is gone from every other node's view at most one lease after its last renewal.
Its id is also in the set ``sealroom:nodes``, which only lists candidates: a node is live
exactly while its key exists (placement reads it so, atomically: cluster/placement.py).
``load`` is the number of participants the node hosts, the quantity placement minimises,
as ``--workers`` places rooms on the worker with the fewest participants.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cluster import keys

if TYPE_CHECKING:  # only cluster.py and relay.py import redis at run time
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

LEASE = 6.0  # seconds a registration lives without renewal: the bound on a dead node


@dataclass(frozen=True)
class NodeInfo:
    """What a node says of itself (all public: where clients and media reach it)."""

    id: str
    url: str  # its public signaling URL (https://node-b.example.org)
    media: str  # the address its SFU announces in ICE candidates
    load: int = 0  # participants hosted
    started: float = 0.0  # Unix seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> NodeInfo:
        """Inverse of :meth:`to_json`; ValueError on anything else."""
        try:
            obj = json.loads(raw)
            info = cls(id=obj["id"], url=obj["url"], media=obj["media"], load=obj["load"],
                       started=obj["started"])
        except (ValueError, KeyError, TypeError):
            raise ValueError("not a node registration") from None
        if not (isinstance(info.id, str) and isinstance(info.url, str)
                and isinstance(info.media, str) and type(info.load) is int
                and isinstance(info.started, int | float)):
            raise ValueError("not a node registration")
        return info


class NodeRegistry:
    """Registration, renewal and the view of live nodes, on one Redis."""

    def __init__(self, redis: Redis, lease: float = LEASE) -> None:
        self.redis = redis
        self.lease = lease

    @property
    def lease_ms(self) -> int:
        return max(1, round(self.lease * 1000))

    async def register(self, info: NodeInfo) -> None:
        """Set (or renew) ``info``'s registration for one lease; the same call re-registers
        a node after Redis lost its keys (a restart without persistence)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.node(info.id), info.to_json(), px=self.lease_ms)
            pipe.sadd(keys.NODES, info.id)
            await pipe.execute()

    async def deregister(self, node_id: str) -> None:
        """Gone at once (a drain): no room is placed on it any more."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.node(node_id))
            pipe.srem(keys.NODES, node_id)
            await pipe.execute()

    async def live(self) -> list[NodeInfo]:
        """Every node whose lease runs, by id; ids whose key expired leave the set."""
        ids = sorted(m.decode() if isinstance(m, bytes) else str(m)
                     for m in await self.redis.smembers(keys.NODES))
        if not ids:
            return []
        raws = await self.redis.mget([keys.node(i) for i in ids])
        out: list[NodeInfo] = []
        gone: list[str] = []
        for node_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                gone.append(node_id)
                continue
            try:
                out.append(NodeInfo.from_json(raw))
            except ValueError:
                log.warning("node %s: unreadable registration", node_id)
        if gone:
            await self.redis.srem(keys.NODES, *gone)
        return out

    async def alive(self, node_ids: Iterable[str]) -> set[str]:
        """Those of ``node_ids`` whose lease runs now."""
        ids = sorted(set(node_ids))
        if not ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.exists(keys.node(node_id))
            found = await pipe.execute()
        return {node_id for node_id, n in zip(ids, found, strict=True) if n}

