"""How long the forwarding loop stops, and why: cyclic-GC passes and event-loop lag.

Every packet that arrives while the loop is stopped waits for it, so a stop of a few
milliseconds becomes the p99 added latency of a busy SFU (the target is ≤ 5 ms).
Two meters, cheap enough to run always (~100 wake-ups a second):

* ``gc.callbacks`` (https://docs.python.org/3/library/gc.html#gc.callbacks) time each
  collection the interpreter runs, by generation;
* a sampler asks to sleep ``interval`` seconds and records how late it woke. While it
  is late the loop was never idle, so the lateness splits into time the thread ran
  (our own callbacks: a backlog of packets, a slow handler), time it waited on a run
  queue (``/proc/thread-self/schedstat``, field 2 of Documentation/scheduler/
  sched-stats.rst: another task had the core) and the rest, time it was off the CPU
  without being runnable: blocked in a system call, or the hypervisor ran something
  else (steal, which a guest's accounting leaves out of both). The thread's CPU time
  is read over the whole sample, so this last part is a lower bound.

``sfu.looplag.LoopLag`` is the coarse probe of the signaling server's loop (every
250 ms, last/max); this one is the media plane's, fine enough to see single stops.
The two meters here count into ``Stats`` as buckets, ``<meter>_ge_<n>ms`` for every edge
``n`` the stop reached, plus totals, so any interval's counts are the difference of two
snapshots (the benchmark takes one per measuring window).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from typing import Any

from .stats import Stats

BUCKETS_MS = (2, 5, 10, 20, 50)  # lower edges of the reported stop buckets
SCHEDSTAT = "/proc/thread-self/schedstat"


def bucket(stats: Stats, meter: str, ns: int) -> None:
    """Count a stop of ``ns`` nanoseconds under every ``<meter>_ge_<n>ms`` it reached."""
    for edge in BUCKETS_MS:
        if ns < edge * 1_000_000:
            return
        stats.add(f"{meter}_ge_{edge}ms")


class PauseMeter:
    """Count GC passes and loop stops into ``stats`` until ``close`` (loop thread only)."""

    def __init__(self, stats: Stats, interval: float = 0.01) -> None:
        self.stats = stats
        self.interval = interval
        self._gc_started = 0
        try:  # opened once, read with pread: this thread's scheduler statistics
            self._schedstat = os.open(SCHEDSTAT, os.O_RDONLY)
        except OSError:  # not Linux, or a kernel without schedstats: lag is still counted
            self._schedstat = -1
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.ensure_future(self._sample())

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter_ns()
            return
        ns = time.perf_counter_ns() - self._gc_started
        self.stats.add(f"gc_gen{info['generation']}_passes")
        self.stats.add("gc_pause_us", ns // 1000)
        bucket(self.stats, "gc_pause", ns)

    async def _sample(self) -> None:
        interval_ns = int(self.interval * 1e9)
        stats = self.stats
        while True:
            before, waited_before = time.monotonic_ns(), self.run_delay()
            ran_before = time.thread_time_ns()
            await asyncio.sleep(self.interval)
            lag = time.monotonic_ns() - before - interval_ns
            stats.add("loop_samples")
            if lag < BUCKETS_MS[0] * 1_000_000:  # libuv's timers round to 1 ms: noise
                continue
            waited = self.run_delay() - waited_before
            ran = time.thread_time_ns() - ran_before
            bucket(stats, "loop_lag", lag)
            bucket(stats, "loop_runqueue", waited)
            bucket(stats, "loop_offcpu", lag - waited - ran)

    def run_delay(self) -> int:
        """Nanoseconds this thread has waited on a run queue since it started (0: unknown)."""
        if self._schedstat < 0:
            return 0
        try:
            return int(os.pread(self._schedstat, 64, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    def close(self) -> None:
        self._task.cancel()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._schedstat >= 0:
            os.close(self._schedstat)
            self._schedstat = -1
