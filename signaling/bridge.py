"""A client socket bridged from another node (docs/DEPLOY.md "Several nodes", "The relay").

With ``--redis``, a client's WebSocket ends on its *entrance* node and its room lives on a
*host* node. The host serves such a client exactly as one of its own sockets: a
:class:`~signaling.server.Connection` whose socket is a :class:`RelayedSocket`, which
hands each frame to the entrance through the relay (``frame``) and the close with its code
and reason (``close``); the entrance writes them to the real socket. Rate limits, the
outbox, admission and every error are the host's, unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cluster.errors import ClusterUnavailable

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class RelayedSocket:
    """What a Connection needs of a WebSocket (``send_str``, ``close``), over the relay.

    ``send`` puts ``op``/``sid`` around a payload and publishes it to the entrance
    (cluster.Cluster.send with the entrance's node id); ``ended`` is called once, when the
    host closed the socket or the relay failed: the host's session for it then ends.
    """

    def __init__(self, sid: str, send: Send, ended: Callable[[], None]) -> None:
        self.sid = sid
        self._send = send
        self._ended = ended
        self.closed = False

    async def send_str(self, data: str, compress: int | None = None) -> None:
        if self.closed:
            raise ConnectionError("relayed socket closed")
        try:
            await self._send({"op": "frame", "sid": self.sid, "data": data})
        except ClusterUnavailable as exc:
            # Not delivered, and pub/sub keeps nothing: this session cannot go on without
            # a gap, so it ends (the entrance closes its socket with relay-lost, or learns
            # that this node is gone).
            log.warning("relay to the entrance failed: %s", exc)
            self._end()
            raise ConnectionError(str(exc)) from None

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        if self.closed:
            return False
        self._end()
        try:
            await self._send({"op": "close", "sid": self.sid, "code": code,
                              "reason": message.decode("utf-8", "replace")})
        except ClusterUnavailable as exc:
            log.warning("relay of a close to the entrance failed: %s", exc)
        return True

    def _end(self) -> None:
        if not self.closed:
            self.closed = True
            self._ended()
