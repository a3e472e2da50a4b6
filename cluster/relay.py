"""The signal relay between nodes: Redis pub/sub, one channel per node (docs/DEPLOY.md
"Several nodes", "The relay").

A client's WebSocket may end on any node (the *entrance*); its room lives on one node (the
*host*). The entrance bridges the socket to the host, as LiveKit's signal relay does
(https://docs.livekit.io/deploy/distributed/: "that instance will then act as a signaling
bridge, proxying messages between the node where the room is hosted and the client"):
every text frame of the client goes to the host, every frame of the host's goes to the
client, unchanged. A node reads ``sealroom:relay:<its id>``; a message is one JSON object
with ``op``, ``from`` (the sender's node id) and ``sid`` (the bridged socket's id): ``open``,
``frame``, ``gone`` from the entrance, ``frame`` and ``close`` from the host (the
signaling server's side: signaling/server.py, "bridge").

Pub/sub delivers at most once, in order per publisher and channel (one connection
publishes, one reads): ``PUBLISH`` returns how many subscribers took the message, and 0 —
the target is not listening (dead, or resubscribing after a Redis restart) — is a failure
like an unreachable Redis. Either makes :meth:`Relay.send` raise
:class:`~cluster.errors.ClusterUnavailable`, and the signaling server ends that bridged
socket (``relay-lost``) rather than let it miss a message silently. The relay carries what
the client and the host exchange — the same sealed envelopes, SDP and ids the server
reads on a single node; nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cluster import keys
from cluster.errors import ClusterUnavailable

log = logging.getLogger(__name__)

# A relayed frame holds one signaling message (at most 256 KiB, PROTOCOL.md "Limits")
# escaped in JSON, with room for the envelope.
MAX_RELAY_MESSAGE = 2 * 1024 * 1024
READ_TIMEOUT = 1.0  # seconds one get_message waits before the loop looks again
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0  # resubscribing after Redis went away

Handler = Callable[[dict[str, Any]], None]


class Relay:
    """Publishes to other nodes' channels and reads this node's own."""

    def __init__(self, redis: Redis, node_id: str, handler: Handler) -> None:
        self.redis = redis
        self.node_id = node_id
        self.handler = handler
        self.channel = keys.relay_channel(node_id)
        self.subscribed = asyncio.Event()  # set while this node's channel is read
        self.received = 0
        self.dropped = 0  # messages read that were not relay messages
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.subscribed.clear()

    async def send(self, node_id: str, msg: dict[str, Any]) -> None:
        """Hand ``msg`` to ``node_id``'s channel; ClusterUnavailable if Redis is unreachable
        or the node does not listen."""
        data = json.dumps({**msg, "from": self.node_id}, separators=(",", ":"))
        try:
            taken = await self.redis.publish(keys.relay_channel(node_id), data)
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"relay to {node_id}: {exc}") from None
        if not taken:
            raise ClusterUnavailable(f"relay to {node_id}: the node does not listen")

    async def _listen(self) -> None:
        """Read this node's channel for the node's life; after a loss of Redis, subscribe
        again with a back-off of 0.1 s doubling up to 2 s (each try bounded by the client's
        timeouts)."""
        backoff = BACKOFF_MIN
        while True:  # the node's life; cancelled by close()
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if backoff > BACKOFF_MIN:
                    log.info("relay: reading %s again", self.channel)
                backoff = BACKOFF_MIN
                while True:
                    item = await pubsub.get_message(ignore_subscribe_messages=True,
                                                    timeout=READ_TIMEOUT)
                    if item is not None:
                        self._deliver(item.get("data"))
            except (RedisError, OSError) as exc:
                if self.subscribed.is_set():
                    log.warning("relay: lost %s (%s); subscribing again", self.channel, exc)
                self.subscribed.clear()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    # redis 8.1 leaves aclose untyped, 8.2 types it
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    def _deliver(self, data: object) -> None:
        if not isinstance(data, bytes | str) or len(data) > MAX_RELAY_MESSAGE:
            self.dropped += 1
            return
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):
            msg = None
        if not (isinstance(msg, dict) and isinstance(msg.get("op"), str)
                and isinstance(msg.get("from"), str) and isinstance(msg.get("sid"), str)):
            self.dropped += 1
            log.warning("relay: dropped a message that is not a relay message")
            return
        self.received += 1
        try:
            self.handler(msg)
        except Exception:
            log.exception("relay: handling a message failed")
