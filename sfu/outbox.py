"""The SFU's outbox: each peer's packets of one event-loop turn leave in one send.

``fanout`` (sfu/_fanout.c) stages every packet it forwards in its peer's run of a
``Batch`` instead of sending it at once; the first packet staged in a turn of the event
loop schedules ``Outbox.flush`` with ``call_soon``, which runs once the loop has handed
out every datagram it read in that turn (uvloop reads up to 32 per readable socket, so a
video frame's packets arrive in one turn) and sends each run with one ``sendmsg`` and a
UDP_SEGMENT size (udp(7), Linux ≥ 4.18). Why, with the measurements:
docs/benchmarks-history.md "Sends in runs" and the comment above ``Batch`` in _fanout.c.

A packet waits at most for the rest of its turn: the turn's other datagrams are
unprotected, rewritten and protected meanwhile, work that had to be done before the
last of them could leave anyway.
"""

from __future__ import annotations

import asyncio

from ._fanout import Batch
from .stats import Stats


class Outbox:
    """One SFU's batch, and the flush it schedules on the running event loop."""

    __slots__ = ("_scheduled", "batch", "stats")

    def __init__(self, stats: Stats) -> None:
        self.batch = Batch()
        self.stats = stats
        self._scheduled = False

    def staged(self) -> None:
        """After ``fanout``: flush at the end of this turn if anything waits (hot path:
        once per publisher packet, not per subscriber)."""
        if self._scheduled or not self.batch.pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller, tests): send now
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send every staged run; a lost packet counts as ``drop_send_failed``."""
        self._scheduled = False
        lost = self.batch.flush()
        if lost:
            self.stats.drop("send_failed", lost)

    def counters(self) -> dict[str, int]:
        """``batch_sends``/``batch_packets``: sends made for runs and the packets in
        them (their ratio is the packets per send)."""
        return {"batch_sends": self.batch.sends, "batch_packets": self.batch.packets}
