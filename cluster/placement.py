"""Placement: which node hosts a room (docs/DEPLOY.md "Several nodes").

A room is hosted by exactly one node, named by ``sealroom:room:<name>:host``. The first
join of a room places it on the least-loaded live node (cluster/nodes.py), in one Lua
script: Redis runs a script atomically (https://redis.io/docs/latest/develop/interact/programmability/eval-intro/,
"Script atomicity"), so two nodes placing the same room at once get the same answer and a
room never has two hosts. The host key carries its node's lease: it is set with
``PX`` = the lease and the host renews it with its own registration (:meth:`Placement.renew`),
and a host key naming a node whose registration expired counts as absent — a room whose
host died is placed again at its next join.

Load is the ``load`` of each registration (participants hosted); a placement adds one to
the chosen node's load at once, so rooms placed between two renewals spread instead of
all going to the node that was least loaded at the last one. Ties go to the smallest id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cluster import keys
from cluster.nodes import LEASE

if TYPE_CHECKING:  # only cluster.py and relay.py import redis at run time
    from redis.asyncio import Redis

# KEYS[1] the room's host key, KEYS[2] the set of node ids;
# ARGV[1] the prefix of node keys, ARGV[2] the lease in ms.
PLACE = """
local host = redis.call('GET', KEYS[1])
if host and redis.call('EXISTS', ARGV[1] .. host) == 1 then
  return host
end
local ids = redis.call('SMEMBERS', KEYS[2])
table.sort(ids)
local best, best_load, best_info = false, nil, nil
for _, id in ipairs(ids) do
  local raw = redis.call('GET', ARGV[1] .. id)
  if raw then
    local ok, info = pcall(cjson.decode, raw)
    if ok and type(info) == 'table' and type(info.load) == 'number' then
      if best_load == nil or info.load < best_load then
        best, best_load, best_info = id, info.load, info
      end
    end
  else
    redis.call('SREM', KEYS[2], id)
  end
end
if not best then
  return false
end
best_info.load = best_load + 1
redis.call('SET', ARGV[1] .. best, cjson.encode(best_info), 'KEEPTTL')
redis.call('SET', KEYS[1], best, 'PX', ARGV[2])
return best
"""

# KEYS[1] the room's host key; ARGV[1] this node's id, ARGV[2] the lease in ms.
# 1: the room is this node's (renewed, or taken back after Redis lost the key); 0: another's.
CLAIM = """
local host = redis.call('GET', KEYS[1])
if host == false or host == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] the room's host key; ARGV[1] this node's id. Deletes it only if it is ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Placement:
    """Room → host node, atomically, on one Redis."""

    def __init__(self, redis: Redis, lease: float = LEASE) -> None:
        self.redis = redis
        self.lease_ms = max(1, round(lease * 1000))
        self._place = redis.register_script(PLACE)
        self._claim = redis.register_script(CLAIM)
        self._release = redis.register_script(RELEASE)

    async def place(self, room: str) -> str | None:
        """The live node hosting ``room``, placing it first if it has none (or its host's
        lease expired); None when no node is live."""
        host = await self._place(keys=[keys.room_host(room), keys.NODES],
                                 args=[keys.node(""), self.lease_ms])
        return _text(host)

    async def host(self, room: str) -> str | None:
        """The node the host key names now (live or not), without placing."""
        return _text(await self.redis.get(keys.room_host(room)))

    async def claim(self, room: str, node_id: str) -> bool:
        """Renew ``node_id``'s hold on ``room`` (or take it if nobody holds it)."""
        return bool(await self._claim(keys=[keys.room_host(room)],
                                      args=[node_id, self.lease_ms]))

    async def renew(self, rooms: Iterable[str], node_id: str) -> list[str]:
        """:meth:`claim` every room of ``rooms`` in one round trip; the rooms another node
        holds now (this node should no longer serve them)."""
        names = list(rooms)
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                await self._claim(keys=[keys.room_host(name)], args=[node_id, self.lease_ms],
                                  client=pipe)
            held = await pipe.execute()
        return [name for name, ok in zip(names, held, strict=True) if not ok]

    async def release(self, room: str, node_id: str) -> bool:
        """Let ``room`` go (it expired here, or this node drains): only if it is ours."""
        return bool(await self._release(keys=[keys.room_host(room)], args=[node_id]))
