"""One subscriber's downlink, estimated by the SFU from transport-wide feedback.

The SFU stamps every packet it sends to a subscriber with a transport-wide sequence
number (draft-holmer-rmcat-transport-wide-cc-extensions-01); the browser reports back,
for each number, whether the packet arrived and when, on its own clock. From that the
SFU estimates, as Google Congestion Control does (draft-ietf-rmcat-gcc-02; libwebrtc's
``goog_cc``), how many bits per second the subscriber's downlink carries:

* **Delay.** Packets sent within 5 ms form a group; for two groups in a row, how much
  further apart they arrived than they were sent is queueing delay gained or lost. A
  line fitted to the last 20 of those (smoothed) tells whether a queue is filling up;
  above an adaptive threshold the link is *overusing*, below its negative *underusing*.
  The receiver's clock offset cancels out: only differences of arrival times are used.
* **Rate (AIMD).** On overuse the estimate drops to 0.85 × what actually arrived in the
  last half second (``acked_rate``; half the estimate, every 200 ms, while nothing has
  been measured yet); while normal it grows by 8 % a second, or by about one packet per
  two round trips near the rate it last backed off from; it never grows past 1.5 × what
  arrived, so it cannot run away from the link. On underuse (a queue draining) it holds.
* **Loss.** Counted over every 20 packets reported or more: above 10 % lost the estimate
  is cut by half the loss (at most once per 300 ms + a round trip); below 2 % it may
  grow by 8 % a second; in between it holds. The estimate is the smaller of this and
  the delay-based one, kept within ``floor`` and ``ceiling``.
* **Probes.** A cluster of packets sent back to back faster than the estimate measures
  the link: the rate it arrived at, once feedback covers most of it, raises the estimate
  (unless the delay says overusing).

Everything the peer controls is bounded: at most ``HISTORY`` sent packets (none older
than ``HISTORY_AGE``) are remembered, a feedback is read for at most ``HISTORY`` entries,
numbers never sent or already reported count for nothing (a packet reported lost and
then received counts once as lost and once as arrived), and no window grows without
limit. Pure bookkeeping: the caller passes its monotonic clock as ``now``.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from itertools import islice

HISTORY = 8192  # sent packets remembered, and the most entries one feedback is read for
HISTORY_AGE = 2.0  # s: feedback for a packet sent longer ago is ignored
MAX_US = 1 << 53  # an arrival time beyond ±this (µs) is garbage, ignored
# Grouping (GCC §5.2 pre-filtering; libwebrtc InterArrivalDelta): packets sent within
# GROUP_MS form one group; one that arrives ≤ BURST_MS after its group and sooner than it
# was sent after it (a burst released after a stall) joins it, within BURST_MAX_MS.
GROUP_MS, BURST_MS, BURST_MAX_MS = 5.0, 5.0, 100.0
OFFSET_JUMP_MS = 3000.0  # InterArrivalDelta kArrivalTimeOffsetThreshold: clock jumped
REORDER_RESET = 3  # InterArrivalDelta kReorderedResetThreshold
STREAM_TIMEOUT = 2.0  # s, DelayBasedBwe kStreamTimeOut: start the delay filter afresh
# libwebrtc TrendlineEstimator (its defaults in DelayBasedBwe) and its detector (GCC §5.4)
WINDOW, SMOOTHING, GAIN = 20, 0.9, 4.0
MIN_DELTAS, MAX_DELTAS = 60, 1000  # kMinNumDeltas, kDeltaCounterMax
THRESHOLD, K_UP, K_DOWN = 12.5, 0.0087, 0.039  # ms, per ms
OVERUSE_MS, MAX_ADAPT_OFFSET_MS = 10.0, 15.0  # kOverUsingTimeThreshold, kMaxAdaptOffsetMs
# libwebrtc AimdRateControl (GCC §5.5)
BETA, ETA = 0.85, 1.08  # back-off factor; multiplicative increase per second
DEFAULT_RTT = 0.2  # s, kDefaultRttMs until feedback measures it
# An SFU does not set the rate of what it forwards: media flows at its publishers' rates
# from the first packet, so the estimate starts from what arrives, once it has arrived
# for INIT_TIME without overuse (AimdRateControl's kInitializationTime does the same for
# a receive-side estimate, after 5 s; 2 s of 0.5 s windows is enough here). An overuse
# before it starts the estimate from the back-off instead.
INIT_TIME = 2.0
# libwebrtc SendSideBandwidthEstimation (classic loss-based, GCC §6)
LOSS_LOW, LOSS_HIGH, LOSS_MIN_PACKETS = 0.02, 0.10, 20  # ... kLimitNumPackets
LOSS_DECREASE_GAP, LOSS_INCREASE_SPAN = 0.3, 1.0  # kBweDecreaseInterval, kBweIncreaseInterval
# libwebrtc ProbeBitrateEstimator: kMinReceivedProbesPercent, (BitrateProber's least
# cluster, 5 packets), kMaxProbeIntervalMs; kMaxValidRatio, kMinRatioForUnsaturatedLink,
# kTargetUtilizationFraction
PROBE_SHARE, PROBE_MIN_PACKETS, PROBE_MAX_SPAN = 0.8, 5, 1.0
PROBE_MAX_RATIO, PROBE_SATURATED, PROBE_TARGET = 2.0, 0.9, 0.95
CLUSTERS = 32  # probe clusters remembered
# acked rate: bytes that arrived in this window of arrival times, none before it is
# covered (libwebrtc BitrateEstimator's first window, kInitialRateWindowMs)
ACKED_WINDOW_MS = 500.0
LOSS_WINDOW = 1.0  # s of feedback that `loss` covers

NORMAL, OVERUSING, UNDERUSING = "normal", "overusing", "underusing"
_NEW, _RECEIVED, _LOST = 0, 1, 2


@dataclass(slots=True)
class _Sent:
    send: float  # s, our clock
    size: int  # bytes
    probe: int
    state: int = _NEW


@dataclass(slots=True)
class _Group:
    first_send: float  # ms
    last_send: float
    first_arrival: float  # ms, receiver's clock
    arrival: float  # of its last packet


@dataclass(slots=True)
class _Cluster:
    sent: int = 0
    received: int = 0
    size: int = 0  # bytes received
    first_send: float = math.inf
    last_send: float = -math.inf
    last_send_size: int = 0
    first_arrival: float = math.inf  # ms
    first_arrival_size: int = 0
    last_arrival: float = -math.inf
    result: int | None = None

    def add(self, send: float, arrival: float, size: int) -> None:
        self.received += 1
        self.size += size
        if send < self.first_send:
            self.first_send = send
        if send > self.last_send:
            self.last_send, self.last_send_size = send, size
        if arrival < self.first_arrival:
            self.first_arrival, self.first_arrival_size = arrival, size
        self.last_arrival = max(self.last_arrival, arrival)

    def evaluate(self) -> int | None:
        """ProbeBitrateEstimator::HandleProbeAndEstimateBitrate."""
        if self.received < max(PROBE_MIN_PACKETS, PROBE_SHARE * self.sent):
            return None
        send_s = self.last_send - self.first_send
        recv_s = (self.last_arrival - self.first_arrival) / 1000
        if not (0 < send_s <= PROBE_MAX_SPAN and 0 < recv_s <= PROBE_MAX_SPAN):
            return None
        # the last packet sent and the first received open no interval: not counted
        send_bps = (self.size - self.last_send_size) * 8 / send_s
        recv_bps = (self.size - self.first_arrival_size) * 8 / recv_s
        if recv_bps > PROBE_MAX_RATIO * send_bps:
            return None
        if recv_bps < PROBE_SATURATED * send_bps:  # the link is full: aim just below it
            return int(PROBE_TARGET * recv_bps)
        return int(min(send_bps, recv_bps))


class _InterArrival:
    """libwebrtc InterArrivalDelta: (send delta, arrival delta) of consecutive groups, ms."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.cur: _Group | None = None
        self.prev: _Group | None = None
        self.reordered = 0

    def add(self, send: float, arrival: float) -> tuple[float, float] | None:
        cur = self.cur
        if cur is None:
            self.cur = _Group(send, send, arrival, arrival)
            return None
        if send < cur.first_send:  # sent before the group being built: out of order
            return None
        arrival_delta, send_delta = arrival - cur.arrival, send - cur.last_send
        burst = send_delta == 0 or (
            arrival_delta - send_delta < 0
            and arrival_delta <= BURST_MS
            and arrival - cur.first_arrival < BURST_MAX_MS
        )
        if burst or send - cur.first_send <= GROUP_MS:
            cur.last_send, cur.arrival = max(cur.last_send, send), arrival
            return None
        deltas = None
        if self.prev is not None:
            sd, ad = cur.last_send - self.prev.last_send, cur.arrival - self.prev.arrival
            if ad - sd >= OFFSET_JUMP_MS:  # the receiver's clock jumped
                self.reset()
                return None
            if ad < 0:  # groups reordered on the way
                self.reordered += 1
                if self.reordered >= REORDER_RESET:
                    self.reset()
                return None
            self.reordered = 0
            deltas = (sd, ad)
        self.prev, self.cur = cur, _Group(send, send, arrival, arrival)
        return deltas


class _Trendline:
    """libwebrtc TrendlineEstimator: the slope of the queueing delay, and GCC §5.4's
    over-use detector with its adaptive threshold."""

    def __init__(self) -> None:
        self.deltas = 0
        self.first: float | None = None
        self.accumulated = self.smoothed = 0.0
        self.points: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self.threshold = THRESHOLD
        self.last_update: float | None = None
        self.prev_trend = 0.0
        self.over_ms = -1.0
        self.over_count = 0
        self.state = NORMAL

    def update(self, delay_ms: float, send_delta: float, arrival: float) -> None:
        self.deltas = min(self.deltas + 1, MAX_DELTAS)
        if self.first is None:
            self.first = arrival
        self.accumulated += delay_ms
        self.smoothed = SMOOTHING * self.smoothed + (1 - SMOOTHING) * self.accumulated
        self.points.append((arrival - self.first, self.smoothed))
        trend = self.prev_trend
        if len(self.points) == WINDOW:  # least-squares slope (TrendlineEstimator)
            mx = sum(x for x, _ in self.points) / WINDOW
            my = sum(y for _, y in self.points) / WINDOW
            den = sum((x - mx) ** 2 for x, _ in self.points)
            if den > 0:
                trend = sum((x - mx) * (y - my) for x, y in self.points) / den
        if self.deltas < 2:
            self.state = NORMAL
            return
        modified = min(self.deltas, MIN_DELTAS) * trend * GAIN
        if modified > self.threshold:
            self.over_ms = send_delta / 2 if self.over_ms < 0 else self.over_ms + send_delta
            self.over_count += 1
            if self.over_ms > OVERUSE_MS and self.over_count > 1 and trend >= self.prev_trend:
                self.over_ms, self.over_count, self.state = 0.0, 0, OVERUSING
        else:
            self.over_ms, self.over_count = -1.0, 0
            self.state = UNDERUSING if modified < -self.threshold else NORMAL
        self.prev_trend = trend
        # the threshold follows |modified| (fast down, slow up), but not big spikes
        last = arrival if self.last_update is None else self.last_update
        self.last_update = arrival
        if abs(modified) <= self.threshold + MAX_ADAPT_OFFSET_MS:
            k = K_DOWN if abs(modified) < self.threshold else K_UP
            dt = min(max(arrival - last, 0.0), 100.0)
            self.threshold += k * (abs(modified) - self.threshold) * dt
            self.threshold = min(max(self.threshold, 6.0), 600.0)


class _Aimd:
    """libwebrtc AimdRateControl (GCC §5.5): the delay-based estimate, bits/s."""

    def __init__(self, start: float, floor: float, ceiling: float) -> None:
        self.rate, self.floor, self.ceiling = start, floor, ceiling
        self.incoming = start  # the last acked rate known
        self.increasing = False  # rate control state: increase, else hold
        self.near_max = False  # region: near the rate last backed off from
        self.avg_max: float | None = None  # kbit/s arriving at back-offs, and its
        self.var_max = 0.4  # variance normalised by it
        self.last_change: float | None = None
        self.rtt = DEFAULT_RTT

    def time_to_reduce(self, now: float, acked: float) -> bool:
        gap = min(max(self.rtt, 0.01), 0.2)
        if self.last_change is None or now - self.last_change >= gap:
            return True
        return acked < 0.5 * self.rate

    def set(self, rate: float, now: float) -> None:  # SetEstimate
        self.rate = min(max(rate, self.floor), self.ceiling)
        self.last_change = now

    def update(self, usage: str, acked: float | None, now: float) -> None:
        if acked is not None:
            self.incoming = acked
        kbps = self.incoming / 1000
        std = math.sqrt(self.var_max * self.avg_max) if self.avg_max is not None else 0.0
        new = self.rate
        if usage == OVERUSING:  # decrease, then hold until the queue drains
            new = min(BETA * self.incoming, self.rate)
            self.near_max, self.increasing = True, False
            if self.avg_max is not None and kbps < self.avg_max - 3 * std:
                self.avg_max = None
            if self.avg_max is None:
                self.avg_max = kbps
            else:
                self.avg_max = 0.95 * self.avg_max + 0.05 * kbps
            norm = max(self.avg_max, 1.0)
            self.var_max = 0.95 * self.var_max + 0.05 * (self.avg_max - kbps) ** 2 / norm
            self.var_max = min(max(self.var_max, 0.4), 2.5)
            self.last_change = now
        elif usage == UNDERUSING:
            self.increasing = False
        else:
            if not self.increasing or self.last_change is None:
                self.increasing, self.last_change = True, now
            if self.avg_max is not None and kbps > self.avg_max + 3 * std:
                self.near_max, self.avg_max = False, None  # far past it: the link changed
            dt = max(now - self.last_change, 0.0)
            if self.near_max:  # about one packet per response time
                frame = self.rate / 30
                packet = frame / max(1, math.ceil(frame / (8 * 1200)))
                new += dt * max(4000.0, packet / (2 * (self.rtt + 0.1)))
            else:
                new += max(self.rate * (ETA ** min(dt, 1.0) - 1), 1000.0)
            self.last_change = now
        limit = 1.5 * self.incoming + 10_000  # ClampBitrate: stay near what arrives
        if new > self.rate and new > limit:
            new = max(self.rate, limit)
        self.rate = min(max(new, self.floor), self.ceiling)


class SendSideEstimator:
    """The send-side estimate of one subscriber's downlink (see the module docstring)."""

    def __init__(
        self, start: int = 300_000, floor: int = 30_000, ceiling: int = 50_000_000
    ) -> None:
        self._floor, self._ceiling = float(floor), float(max(floor, ceiling))
        start_rate = min(max(float(start), self._floor), self._ceiling)
        self._sent: OrderedDict[int, _Sent] = OrderedDict()  # unwrapped seq → packet
        self._top: int | None = None  # highest unwrapped seq sent
        self._groups = _InterArrival()
        self._trend = _Trendline()
        self._last_seen: float | None = None
        self._aimd = _Aimd(start_rate, self._floor, self._ceiling)
        self._rtts: deque[float] = deque(maxlen=32)
        self._loss_rate = start_rate  # the loss-based estimate
        self._lost_acc = self._expected_acc = 0
        self._min_rates: deque[tuple[float, float]] = deque()  # (now, loss rate), 1 s
        self._last_decrease = -math.inf
        self._reports: deque[tuple[float, int, int]] = deque(maxlen=1024)
        self._acked: deque[tuple[float, int]] = deque()  # (arrival ms, bytes)
        self._acked_bytes = 0
        self._acked_first = self._acked_newest = math.nan
        self._clusters: OrderedDict[int, _Cluster] = OrderedDict()
        self._first_acked: float | None = None  # when acked_rate was first known
        self.initialized = False  # the estimate started from what arrived (INIT_TIME)

    def on_sent(self, seq: int, size: int, now: float, probe: int = 0) -> None:
        seq &= 0xFFFF
        if self._top is None:
            self._top = seq
        else:
            delta = (seq - self._top) & 0xFFFF
            seq = self._top + (delta - 0x10000 if delta >= 0x8000 else delta)
            self._top = max(self._top, seq)
        self._sent[seq] = _Sent(now, size, probe)
        while self._sent:
            oldest = next(iter(self._sent.values()))
            if len(self._sent) <= HISTORY and oldest.send >= now - HISTORY_AGE:
                break
            self._sent.popitem(last=False)
        if probe:
            if probe not in self._clusters:
                if len(self._clusters) >= CLUSTERS:
                    self._clusters.popitem(last=False)
                self._clusters[probe] = _Cluster()
            self._clusters[probe].sent += 1

    def on_feedback(self, arrivals: list[tuple[int, int | None]], now: float) -> None:
        if self._top is None:
            return
        got: list[tuple[int, int, _Sent]] = []
        lost = reported = 0
        for seq16, arrival in islice(arrivals, HISTORY):
            seq = self._top - ((self._top - seq16) & 0xFFFF)
            rec = self._sent.get(seq)
            if rec is None or rec.state == _RECEIVED:
                continue
            if arrival is None:
                if rec.state == _NEW:
                    rec.state, lost, reported = _LOST, lost + 1, reported + 1
            elif -MAX_US <= arrival <= MAX_US:
                if rec.state == _NEW:  # (not if it was reported lost before)
                    reported += 1
                rec.state = _RECEIVED
                got.append((arrival, seq, rec))
        probe: int | None = None
        if got:
            if self._last_seen is not None and now - self._last_seen > STREAM_TIMEOUT:
                self._groups, self._trend = _InterArrival(), _Trendline()
            self._last_seen = now
            # the round trip, as goog_cc takes it: the mean of the last 32 feedbacks'
            # longest time from sending to this feedback
            self._rtts.append(max(0.0, now - min(rec.send for _, _, rec in got)))
            self._aimd.rtt = sum(self._rtts) / len(self._rtts)
            touched: dict[int, _Cluster] = {}
            got.sort(key=lambda g: (g[0], g[1]))  # in arrival order, as goog_cc does
            for arrival, _, rec in got:
                ms = arrival / 1000
                deltas = self._groups.add(rec.send * 1000, ms)
                if deltas is not None:
                    self._trend.update(deltas[1] - deltas[0], deltas[0], ms)
                self._add_acked(ms, rec.size)
                cluster = self._clusters.get(rec.probe) if rec.probe else None
                if cluster is not None:
                    cluster.add(rec.send, ms, rec.size)
                    touched[rec.probe] = cluster
            for cluster in touched.values():
                result = cluster.evaluate()
                if result is not None:
                    cluster.result = result
                    probe = max(probe or 0, result)
            self._update_delay_based(now, probe)
        if reported:
            self._reports.append((now, lost, reported))
        while self._reports and self._reports[0][0] < now - LOSS_WINDOW:
            self._reports.popleft()
        self._lost_acc += lost
        self._expected_acc += reported
        if self._expected_acc >= LOSS_MIN_PACKETS:
            self._update_loss_based(now)
        # SendSideBandwidthEstimation::CapBitrateToThresholds: never above delay-based
        self._loss_rate = min(self._loss_rate, self._aimd.rate)

    def _update_delay_based(self, now: float, probe: int | None) -> None:
        """DelayBasedBwe::MaybeUpdateEstimate."""
        aimd, state, acked = self._aimd, self._trend.state, self.acked_rate
        if state == OVERUSING:
            self.initialized = True
            if acked is not None:
                if aimd.time_to_reduce(now, acked):
                    aimd.update(state, acked, now)
            elif aimd.time_to_reduce(now, aimd.rate):
                # nothing measured yet: halve, at most every 200 ms (libwebrtc's comment
                # says so; its TimeToReduceFurther(rate / 2 - 1) halves every feedback)
                aimd.set(aimd.rate / 2, now)
        elif probe is not None:
            # AimdRateControl::SetEstimate after a probe, and goog_cc's SetSendBitrate
            # on the loss-based part (its history cleared so it starts from there)
            aimd.set(max(aimd.rate, probe), now)
            self._loss_rate = aimd.rate
            self._min_rates.clear()
        else:
            aimd.update(state, acked, now)
        if self.initialized or acked is None:
            return
        if self._first_acked is None:
            self._first_acked = now
        elif now - self._first_acked >= INIT_TIME:
            self.initialized = True
            if acked > aimd.rate:
                aimd.set(acked, now)
                self._loss_rate = aimd.rate
                self._min_rates.clear()

    def _update_loss_based(self, now: float) -> None:
        """SendSideBandwidthEstimation::UpdateEstimate (classic), once ≥ 20 reported."""
        loss = self._lost_acc / self._expected_acc
        self._lost_acc = self._expected_acc = 0
        rates = self._min_rates  # the lowest loss-based rate of the last second
        while rates and now - rates[0][0] >= LOSS_INCREASE_SPAN:
            rates.popleft()
        while rates and self._loss_rate <= rates[-1][1]:
            rates.pop()
        rates.append((now, self._loss_rate))
        new = self._loss_rate
        if loss <= LOSS_LOW:  # 8 % over the lowest of the last second, + 1 kbit/s
            new = rates[0][1] * ETA + 1000
        elif loss > LOSS_HIGH and now - self._last_decrease >= LOSS_DECREASE_GAP + self._aimd.rtt:
            self._last_decrease = now
            new = self._loss_rate * (1 - 0.5 * loss)
        self._loss_rate = min(max(new, self._floor), self._ceiling)

    def _add_acked(self, ms: float, size: int) -> None:
        """Bytes that arrived, in a window of the receiver's arrival times."""
        newest = self._acked_newest
        if not abs(ms - newest) < 3 * ACKED_WINDOW_MS:  # first, or the clock jumped
            self._acked.clear()
            self._acked_bytes = 0
            self._acked_first = newest = ms
        elif ms <= newest - ACKED_WINDOW_MS:  # reported late, out of the window
            return
        self._acked_newest = newest = max(newest, ms)
        self._acked.append((ms, size))
        self._acked_bytes += size
        # (at most HISTORY entries: a receiver that says all arrived at once gets None)
        while self._acked and (
            self._acked[0][0] <= newest - ACKED_WINDOW_MS or len(self._acked) > HISTORY
        ):
            old, old_size = self._acked.popleft()
            self._acked_bytes -= old_size
            self._acked_first = max(self._acked_first, old)

    @property
    def estimate(self) -> int:
        return int(min(max(min(self._aimd.rate, self._loss_rate), self._floor), self._ceiling))

    @property
    def acked_rate(self) -> int | None:
        span = self._acked_newest - self._acked_first
        if not span >= ACKED_WINDOW_MS:  # (NaN: nothing yet)
            return None
        return int(self._acked_bytes * 8000 / ACKED_WINDOW_MS)

    @property
    def loss(self) -> float:
        total = sum(r for _, _, r in self._reports)
        return sum(lost for _, lost, _ in self._reports) / total if total else 0.0

    @property
    def delay_state(self) -> str:
        return self._trend.state

    def probe_result(self, cluster: int) -> int | None:
        found = self._clusters.get(cluster)
        return found.result if found is not None else None
