"""A subscriber's pacer: its packets leave at a bounded rate instead of in bursts.

A key frame is many times the size of a delta frame, and the SFU forwards it the moment
it arrives: a burst that a narrow link's queue cannot hold, so its tail is dropped, the
subscriber asks for another key frame, and that one is lost too (measured here: a
1.7 Mbit/s stream alone on a 2.2 Mbit/s link with a 150 ms queue lost a quarter of its
packets). libwebrtc's sender paces at 2.5 × its target for the same reason
(``PacingController``); mediasoup and LiveKit pace what they send a congested subscriber.

Only subscribers whose link has shown loss are paced (``Participant.reallocate`` sets
``Lane.paced``, which takes their lanes off the compiled fan-out): everyone else keeps
the fast path. The rate is ``FACTOR`` × the subscriber's estimate, so a burst drains
into its link about as fast as the link takes it. Each packet's abs-send-time is
stamped when it leaves, not when it was queued: the subscriber's estimator must see the
link's delay, not ours.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from .rtp import abs_send_time
from .stats import Stats

FACTOR = 1.5  # pacing rate / the subscriber's estimate
MAX_DELAY = 0.5  # seconds: a packet that would wait longer is dropped (drop_pacer_full)
BURST = 0.005  # seconds of the rate that may leave at once after the queue was empty
# A drain that runs late (a busy event loop: measured here, timers firing 10-20 ms late
# with four browsers on two cores) sends what the time since the last one allows, up to
# this much: capped at BURST instead, each late wake-up sent about one packet and the
# pacer drained at ~1 Mbit/s whatever its rate, its queue full and dropping (libwebrtc's
# PacingController likewise charges a late process call for the whole elapsed time).
CATCH_UP = 0.1  # seconds
STEP = 0.002  # seconds between two sends at least (the event loop's timer resolution)


class Pacer:
    """A queue of whole, unprotected RTP packets and the timer that drains it."""

    def __init__(self, send: Callable[[bytes], bool], stats: Stats) -> None:
        self._send = send
        self.stats = stats
        self.rate = 0  # bits/s
        self.dropped = 0  # packets dropped here (the subscriber sees them as lost)
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self._queued = 0  # bytes
        self._tokens = 0.0  # bytes
        self._at = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        return self._queued

    def push(self, packet: bytes, ast_at: int) -> None:
        """Queue one packet; ``ast_at`` is where its abs-send-time value lies (-1: none)."""
        if self.rate <= 0:
            self._emit(packet, ast_at, time.monotonic())
            return
        if (self._queued + len(packet)) * 8 > self.rate * MAX_DELAY:
            self.stats.drop("pacer_full")
            self.dropped += 1
            return
        self._queue.append((packet, ast_at))
        self._queued += len(packet)
        self.stats.add("paced_packets")
        if self._timer is None:
            self._drain(BURST)

    def _drain(self, cap: float = CATCH_UP) -> None:
        """Send what the rate allows since the last drain: from an empty queue (``push``)
        a burst of ``BURST`` at most, from the timer (the queue never emptied since) all
        the time elapsed, up to ``CATCH_UP``."""
        self._timer = None
        now = time.monotonic()
        rate = self.rate / 8  # bytes/s
        self._tokens = min(rate * cap, self._tokens + (now - self._at) * rate)
        self._at = now
        queue = self._queue
        while queue and (self._tokens > 0 or rate <= 0):
            packet, ast_at = queue.popleft()
            self._queued -= len(packet)
            self._tokens -= len(packet)
            self._emit(packet, ast_at, now)
        if queue:
            wait = max(STEP, -self._tokens / rate) if rate > 0 else STEP
            self._timer = asyncio.get_running_loop().call_later(wait, self._drain)

    def _emit(self, packet: bytes, ast_at: int, now: float) -> None:
        if ast_at >= 0:
            packet = packet[:ast_at] + abs_send_time(now) + packet[ast_at + 3 :]
        if not self._send(packet):
            self.stats.drop("send_failed")

    def flush(self) -> None:
        """Send everything queued now (pacing ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        now = time.monotonic()
        while self._queue:
            packet, ast_at = self._queue.popleft()
            self._emit(packet, ast_at, now)
        self._queued = 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._queued = 0
