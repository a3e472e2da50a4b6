"""sfu/pauses.py: stops of the loop are counted by length and by where the time went."""

from __future__ import annotations

import asyncio
import gc
import time

from sfu.pauses import BUCKETS_MS, SCHEDSTAT, PauseMeter, bucket
from sfu.stats import Stats


def test_bucket_counts_every_edge_reached() -> None:
    stats = Stats()
    bucket(stats, "x", 1_999_999)
    assert stats.snapshot() == {}
    bucket(stats, "x", 12_000_000)
    assert stats.snapshot() == {"x_ge_2ms": 1, "x_ge_5ms": 1, "x_ge_10ms": 1}
    bucket(stats, "x", 10**12)
    assert stats.snapshot()[f"x_ge_{BUCKETS_MS[-1]}ms"] == 1


async def probe(stats: Stats, hold: float, spin: bool) -> dict[str, int]:
    """Hold the loop for ``hold`` s from a callback, burning CPU or blocked in a sleep."""
    meter = PauseMeter(stats, interval=0.01)
    try:
        await asyncio.sleep(0.05)  # the probe is asleep: it will wake late
        before = stats.snapshot()
        end = time.monotonic() + hold
        if spin:
            while time.monotonic() < end:
                pass
        else:
            time.sleep(hold)  # a blocking call on the loop: off the CPU, not runnable
        await asyncio.sleep(0.05)
        after = stats.snapshot()
    finally:
        meter.close()
    return {k: v - before.get(k, 0) for k, v in after.items()}


async def test_a_busy_loop_is_late_but_ran() -> None:
    d = await probe(Stats(), 0.03, spin=True)
    assert d.get("loop_lag_ge_20ms", 0) >= 1
    # it ran all along: at most a little of it can be off the CPU (a VM may steal some)
    assert d.get("loop_offcpu_ge_20ms", 0) == 0


async def test_a_blocked_loop_is_late_and_off_cpu() -> None:
    d = await probe(Stats(), 0.03, spin=False)
    assert d.get("loop_lag_ge_20ms", 0) >= 1
    assert d.get("loop_offcpu_ge_20ms", 0) >= 1
    assert d.get("loop_runqueue_ge_20ms", 0) == 0  # sleeping is not waiting for a core


async def test_gc_passes_are_timed_and_the_meter_cleans_up() -> None:
    stats = Stats()
    meter = PauseMeter(stats)
    gc.collect()
    meter.close()
    snap = stats.snapshot()
    assert snap["gc_gen2_passes"] == 1 and "gc_pause_us" in snap
    assert meter._on_gc not in gc.callbacks
    gc.collect()
    await asyncio.sleep(0.03)
    assert stats.snapshot() == snap  # closed: nothing counts any more
    assert meter.run_delay() == 0  # schedstat closed


def schedstat_wait() -> int:
    with open(SCHEDSTAT) as f:
        return int(f.read().split()[1])


async def test_run_delay_is_this_threads_schedstat() -> None:
    meter = PauseMeter(Stats())
    try:
        low = schedstat_wait()
        got = meter.run_delay()
        assert low <= got <= schedstat_wait()
    finally:
        meter.close()
