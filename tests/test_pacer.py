"""sfu.pacer: a congested subscriber's packets leave at a bounded rate, in order, with
abs-send-time stamped when they leave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sfu import pacer as pacer_module
from sfu.pacer import MAX_DELAY, Pacer
from sfu.stats import Stats


def collect(out: list[bytes]) -> Callable[[bytes], bool]:
    def send(b: bytes) -> bool:
        out.append(b)
        return True
    return send


def packet(n: int, size: int = 1000) -> bytes:
    return bytes([n & 0xFF]) + bytes(size - 1)


async def test_a_burst_leaves_at_the_rate_in_order() -> None:
    out: list[bytes] = []
    times: list[float] = []

    def send(b: bytes) -> bool:
        times.append(time.monotonic())
        out.append(b)
        return True

    p = Pacer(send, Stats())
    p.rate = 800_000  # 100 kB/s: 1 kB packets every 10 ms
    start = time.monotonic()
    for n in range(30):  # a 30 kB key frame arrives at once
        p.push(packet(n), -1)
    assert len(out) < 5  # only the burst allowance left at once
    for _ in range(200):  # bounded: 2 s at most
        if len(out) == 30:
            break
        await asyncio.sleep(0.01)
    assert [b[0] for b in out] == list(range(30))
    spread = times[-1] - start
    assert spread >= 0.2  # 30 kB at 100 kB/s spread over ≥ 0.2 s (0.3 s nominally)
    assert p.queued == 0


async def test_abs_send_time_is_stamped_when_the_packet_leaves() -> None:
    sent: list[bytes] = []
    p = Pacer(collect(sent), Stats())
    p.rate = 80_000  # 10 kB/s
    for n in range(5):
        p.push(packet(n), 20)  # the 3 bytes at offset 20 are an abs-send-time value
    for _ in range(200):
        if len(sent) == 5:
            break
        await asyncio.sleep(0.01)
    stamps = [int.from_bytes(b[20:23], "big") for b in sent]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]  # later packets, later stamps
    assert all(b[:20] == packet(n)[:20] and b[23:] == packet(n)[23:]
               for n, b in enumerate(sent))  # nothing else changed


def test_unpaced_packets_leave_at_once_and_a_full_queue_drops() -> None:
    sent: list[bytes] = []
    stats = Stats()
    p = Pacer(collect(sent), stats)
    p.push(packet(1), -1)
    assert len(sent) == 1  # rate 0: not pacing

    async def fill() -> None:
        p.rate = 80_000  # 10 kB/s: MAX_DELAY holds MAX_DELAY × 10 kB
        for n in range(100):
            p.push(packet(n), -1)
        assert p.queued * 8 <= p.rate * MAX_DELAY
        assert stats.snapshot()["drop_pacer_full"] > 0
        p.flush()  # pacing ends: everything queued goes now
        assert p.queued == 0

    asyncio.run(fill())
    assert pacer_module.FACTOR > 1


async def test_a_late_drain_sends_what_the_elapsed_time_allows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy event loop fires the pacer's timer late: that drain sends what the whole
    elapsed time allows (up to CATCH_UP), so the pacer keeps its rate; a burst from an
    empty queue is still held to BURST."""
    clock = [1000.0]

    class FakeTime:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

    monkeypatch.setattr(pacer_module, "time", FakeTime)
    sent: list[bytes] = []
    p = Pacer(collect(sent), Stats())
    p.rate = 2_000_000  # 250 kB/s
    for n in range(100):  # 120 kB queued at once
        p.push(packet(n, 1200), -1)
    first = len(sent)
    assert first <= 2  # BURST: 1.25 kB
    for _ in range(10):  # ten drains, each 20 ms late: 200 ms at 250 kB/s = 50 kB
        clock[0] += 0.02
        p._drain()
    assert 40 <= len(sent) - first <= 43  # 50 kB / 1.2 kB, not one packet per drain
    assert [b[0] for b in sent] == list(range(len(sent)))
    clock[0] += 10.0  # a drain much later still sends only CATCH_UP's worth
    before = len(sent)
    p._drain()
    assert len(sent) - before <= int(p.rate / 8 * pacer_module.CATCH_UP / 1200) + 1
    p.close()
