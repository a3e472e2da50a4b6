"""Every Redis key and channel sealroom uses (docs/DEPLOY.md "Several nodes", "What Redis
holds"). Room names (1–64 of ``A–Z a–z 0–9 . _ ~ -``) and node ids (1–64 of
``A–Z a–z 0–9 . _ -``) hold no ``:``, so no two names make the same key."""

from __future__ import annotations

import re

PREFIX = "sealroom:"
NODES = PREFIX + "nodes"  # set: ids of the nodes that registered (live or not)
NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def node(node_id: str) -> str:
    """The node's registration: JSON, expires with its lease."""
    return f"{PREFIX}node:{node_id}"


def room_host(room: str) -> str:
    """The id of the node hosting the room: expires with the host's lease."""
    return f"{PREFIX}room:{room}:host"


def room_record(room: str) -> str:
    """The room record (cluster.roomstore): expires ``empty_ttl`` after its host last saw it."""
    return f"{PREFIX}room:{room}:record"


def relay_channel(node_id: str) -> str:
    """The pub/sub channel a node reads its relayed signaling from (cluster.relay)."""
    return f"{PREFIX}relay:{node_id}"
