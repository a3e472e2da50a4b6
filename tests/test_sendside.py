"""sfu.sendside: a subscriber's downlink estimated from transport-wide feedback.

The estimator is driven by a small deterministic link simulator: packets go through a
bottleneck of ``capacity`` bits/s behind a drop-tail queue of ``queue_ms`` of capacity,
arrive (µs on a receiver clock with an arbitrary offset, in 250 µs steps) or are lost,
and the receiver reports them every 50–100 ms of simulated time; the report reaches the
sender ``delay`` later. No sockets, no sleeps, a fixed seed.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

from sfu.sendside import HISTORY, SendSideEstimator

PACKET = 1200  # bytes
RX_CLOCK = 987_654_250  # µs: the receiver's clock has nothing to do with ours


@dataclass
class Link:
    """A bottleneck: ``capacity`` bits/s behind a drop-tail queue of ``queue_ms``."""

    capacity: float
    queue_ms: float
    rng: random.Random
    delay: float = 0.02  # s, one way, besides the queue
    jitter: float = 0.0005  # s, at most
    busy: float = 0.0  # when the link will have sent all it holds

    def carry(self, t: float, size: int) -> float | None:
        """When a packet sent at ``t`` arrives (s), or None: dropped."""
        serialize = size * 8 / self.capacity
        if max(0.0, self.busy - t) + serialize > self.queue_ms / 1000:
            return None
        self.busy = max(self.busy, t) + serialize
        return self.busy + self.delay + self.rng.uniform(0, self.jitter)


def rx_us(arrival: float) -> int:
    return RX_CLOCK + int(arrival * 4000) * 250


@dataclass
class Path:
    """A sender, a link, and a receiver that reports what it got."""

    est: SendSideEstimator
    link: Link
    seq: int = 0
    t: float = 0.0
    next_send: float = 0.0
    next_report: float = 0.05
    unreported: list[tuple[int, float | None]] = field(default_factory=list)
    reports: deque[tuple[float, list[tuple[int, int | None]]]] = field(default_factory=deque)
    trace: list[tuple[float, int, str, float, int | None]] = field(default_factory=list)

    def send(self, size: int = PACKET, probe: int = 0) -> None:
        self.est.on_sent(self.seq & 0xFFFF, size, self.t, probe)
        self.unreported.append((self.seq & 0xFFFF, self.link.carry(self.t, size)))
        self.seq += 1

    def report(self) -> None:
        """Everything up to the last packet arrived by now: arrived, or lost."""
        arrived = [i for i, (_, a) in enumerate(self.unreported) if a is not None and a <= self.t]
        if arrived:
            last = arrived[-1] + 1
            items = [
                (seq, rx_us(a) if a is not None and a <= self.t else None)
                for seq, a in self.unreported[:last]
            ]
            del self.unreported[:last]
            self.reports.append((self.t + self.link.delay, items))
        self.next_report = self.t + self.link.rng.uniform(0.05, 0.1)

    def run(self, seconds: float, rate: float | None = None) -> None:
        """Send ``PACKET``s at ``rate`` bits/s (None: at the estimate) for ``seconds``."""
        end = self.t + seconds
        while True:
            due = self.reports[0][0] if self.reports else math.inf
            nxt = min(self.next_send, self.next_report, due)
            if nxt > end:
                self.t = end
                return
            self.t = nxt
            if nxt == due:
                self.est.on_feedback(self.reports.popleft()[1], self.t)
                e = self.est
                self.trace.append((self.t, e.estimate, e.delay_state, e.loss, e.acked_rate))
            elif nxt == self.next_report:
                self.report()
            else:
                self.send()
                self.next_send += PACKET * 8 / (rate or self.est.estimate)


def path(capacity: float, queue_ms: float, start: int = 300_000, seq: int = 0) -> Path:
    rng = random.Random(7)
    return Path(SendSideEstimator(start=start), Link(capacity, queue_ms, rng), seq=seq)


def states(p: Path, since: float = 0.0) -> set[str]:
    return {s for t, _, s, _, _ in p.trace if t >= since}


def test_below_capacity_the_estimate_grows_past_the_send_rate_without_alarm() -> None:
    p = path(2e6, 300)
    p.run(15, rate=500e3)
    e = p.est
    assert e.acked_rate is not None and abs(e.acked_rate - 500e3) < 0.1 * 500e3
    assert e.estimate > 500e3  # from 300 kbit/s, ~8 % a second
    assert e.estimate <= 1.5 * e.acked_rate + 10_000  # but not far past what arrives
    assert states(p) == {"normal"} and e.loss == 0


def test_twice_the_capacity_into_a_deep_queue_is_seen_as_overuse() -> None:
    for capacity in (300e3, 1e6, 3e6):
        p = path(capacity, 500, start=int(2 * capacity))
        while p.est.delay_state != "overusing":  # a sender at twice the link
            p.run(0.05, rate=2 * capacity)
            assert p.t < 3
        # from then on it follows the estimate, which drops to 0.85 × what got through
        # (half, if nothing was measured yet) and stays near the link
        seen = p.t
        p.run(10)
        react = next(i for i, (_, e, _, _, _) in enumerate(p.trace) if e < 1.1 * capacity)
        assert p.trace[react][0] < seen + 0.5
        assert all(0.6 * capacity <= e <= 1.1 * capacity for _, e, _, _, _ in p.trace[react:])


def test_twice_the_capacity_into_a_short_queue_is_cut_by_loss() -> None:
    p = path(1e6, 30, start=2_000_000)
    p.run(3, rate=2e6)
    assert p.est.loss > 0.1
    assert p.est.estimate < 1.1e6


def probe(capacity: float) -> SendSideEstimator:
    """15 packets back to back at 3 Mbit/s (cluster 1) through ``capacity``."""
    est = SendSideEstimator()
    link = Link(capacity, 500, random.Random(3))
    feedback: list[tuple[int, int | None]] = []
    for i in range(15):
        t = 1 + i * PACKET * 8 / 3e6
        est.on_sent(i, PACKET, t, probe=1)
        arrival = link.carry(t, PACKET)
        feedback.append((i, None if arrival is None else rx_us(arrival)))
    assert est.probe_result(1) is None  # no feedback yet
    est.on_feedback(feedback, 1.3)
    return est


def test_a_probe_measures_the_bottleneck_or_its_own_rate() -> None:
    narrow = probe(1.5e6)
    result = narrow.probe_result(1)
    assert result is not None and abs(result - 1.5e6) < 0.2 * 1.5e6
    assert narrow.estimate >= result  # the probe raised the estimate
    wide = probe(10e6)
    result = wide.probe_result(1)
    assert result is not None and abs(result - 3e6) < 0.2 * 3e6
    assert wide.probe_result(2) is None and wide.probe_result(0) is None


def test_a_mostly_lost_probe_measures_nothing() -> None:
    est = SendSideEstimator()
    for i in range(15):
        est.on_sent(i, PACKET, i * 0.003, probe=4)
    est.on_feedback([(i, None if i % 3 else RX_CLOCK + i * 4000) for i in range(15)], 0.2)
    assert est.probe_result(4) is None and est.loss > 0.6


def test_unknown_and_repeated_feedback_counts_once() -> None:
    est = SendSideEstimator()
    est.on_feedback([(1, 1000), (2, None)], 0.0)  # nothing sent yet
    for i in range(100):
        est.on_sent(i, PACKET, i * 0.01)
    feedback: list[tuple[int, int | None]] = [
        (i, None if i % 10 == 0 else RX_CLOCK + i * 10_000) for i in range(100)
    ]
    est.on_feedback(feedback, 1.05)
    seen = (est.estimate, est.loss, est.acked_rate, est.delay_state)
    assert seen[1] == 0.1 and seen[2] is not None
    est.on_feedback(feedback, 1.06)  # the same again
    est.on_feedback(feedback[50:], 1.07)  # a late part of it
    est.on_feedback([(i, RX_CLOCK) for i in range(200, 300)], 1.08)  # never sent
    assert (est.estimate, est.loss, est.acked_rate, est.delay_state) == seen
    # a packet reported lost that turns up after all is not lost twice
    est.on_feedback([(10, RX_CLOCK + 100_000)], 1.09)
    assert est.loss <= 0.1


def test_sequence_numbers_wrap() -> None:
    p = path(2e6, 300, seq=65_500)
    p.run(5, rate=500e3)
    assert p.seq > 65_536 + 100
    e = p.est
    assert states(p) == {"normal"} and e.loss == 0
    assert e.acked_rate is not None and abs(e.acked_rate - 500e3) < 0.1 * 500e3
    assert e.estimate > 300_000


def test_hostile_feedback_of_8192_entries_breaks_nothing() -> None:
    est = SendSideEstimator()
    rng = random.Random(5)
    sent = HISTORY + 100  # the first 100 are forgotten
    for i in range(sent):
        est.on_sent((65_000 + i) & 0xFFFF, PACKET, i * 0.0002)
    arrivals = [None, 0, -1, 10**30, -(2**70)]
    for round_ in range(3):
        feedback = [
            (
                (65_000 + i + rng.randrange(-3, 3)) & 0xFFFF,
                rng.choice(arrivals) if i % 7 == 0 else rng.randrange(-(2**40), 2**40),
            )
            for i in range(HISTORY)
        ]
        est.on_feedback(feedback, 2.0 + round_)
    assert 30_000 <= est.estimate <= 50_000_000
    assert 0.0 <= est.loss <= 1.0
    assert est.delay_state in {"normal", "overusing", "underusing"}
    rate = est.acked_rate
    assert rate is None or rate >= 0
    # and it still works afterwards
    p = Path(est, Link(2e6, 300, random.Random(2)), seq=65_000 + sent, t=10.0)
    p.next_send, p.next_report = 10.0, 10.05
    p.run(8, rate=500e3)
    assert est.loss == 0 and est.acked_rate is not None
    assert abs(est.acked_rate - 500e3) < 0.1 * 500e3


def test_after_congestion_clears_the_estimate_climbs_again() -> None:
    p = path(1e6, 300, start=2_000_000)
    p.run(10)  # the sender follows the estimate
    assert p.est.estimate < 1.1e6 and "overusing" in states(p)
    p.link.capacity = 4e6
    for _ in range(30):
        p.run(1)
        if p.est.estimate > 1.5e6:
            break
    assert p.est.estimate > 1.5e6


def test_the_estimate_starts_from_what_arrives() -> None:
    """An SFU forwards at its publishers' rates from the first packet: 2 Mbit/s arriving
    without overuse for INIT_TIME becomes the estimate, not the 300 kbit/s start plus
    8 % a second (which would take ~25 s to get there)."""
    p = path(10e6, 300)
    p.run(1.5, rate=2e6)
    assert not p.est.initialized and p.est.estimate < 1e6
    p.run(2.5, rate=2e6)
    assert p.est.initialized and p.est.estimate >= 0.9 * 2e6
    assert states(p) == {"normal"}
