"""One subscriber's downlink budget: what it can receive, and which streams fill it.

Each subscriber gets its own budget; a publisher's rate is never lowered for a weak
viewer (docs/SFU.md "Loss and congestion"). The pieces:

* **Estimate.** The subscriber's REMB (draft-alvestrand-rmcat-remb-03): the *total*
  rate its receive-side estimator thinks its downlink carries, for all the SSRCs it
  lists. Loss it reports in its receiver reports (RFC 3550 §6.4.2) above
  ``LOSS_HIGH`` lowers the estimate at once, as libwebrtc's loss-based controller does
  (rate × (1 − loss/2)), because a REMB can lag a link that is already dropping.
* **Pausing needs loss.** A stream that flows is paused only while the link also
  loses packets (``LOSS_CONGESTED``): a REMB alone can stay far below what the link
  carries long after one early delay spike.
* **Frame rate needs loss too.** Below the lowest simulcast layer whole come its
  temporal steps (``ladder``); they, like a pause, are taken only while the link is
  congested. Without loss a video that flows gets at least its lowest layer with every
  picture, whatever the REMB says; the REMB chooses among the layers above.
* **A size is kept at half the frame rate first.** Between two spatial layers comes the
  upper one at TID <= 1; a video forwarded at that size gets it on a link that has not
  lost packets for ``CAPACITY_MEMORY``, so a REMB that falls (a starved receiver's, most
  often) halves the frame rate and keeps the picture's size, with no key frame either
  way; only a deeper fall, or a link that lost lately, costs the size
  (``Video.keeps_size``, ``choose_layers``, ``_keep_sizes``).
* **What the link carried.** A REMB is made from the subscriber's own arrival times;
  a receiver short of CPU stamps them late, reads that as queueing, and its REMB falls
  to a few dozen kbit/s on a link that loses nothing (measured here with four browsers
  on two cores: 14 kbit/s for a whole minute while 87 kbit/s arrived loss-free). Such a
  REMB is right to keep a starved receiver on small layers, but it must not keep a
  paused stream paused for ever: a paused stream resumes into the REMB *or* the highest
  rate the link carried in a report interval that lost (almost) nothing (``LOSS_LOW``)
  within the last ``CARRIED_MEMORY`` seconds, whichever is more (``carrying``), and
  probes raise the latter.
* **Allocation** (``plan``), in priority order — audio always (it is taken off the top),
  then the active speaker's video, then the others by last-spoken order (the room's
  ``order``) — each video stream at the rate its publisher sends it, into the
  estimate (``KEEP`` × it for streams already flowing); what does not fit is paused
  for this subscriber only.
  LiveKit's stream allocator and Jitsi Videobridge's ``BandwidthAllocator`` walk the
  same order (without simulcast there is one layer per stream: all or nothing).
* **Resuming** a paused stream needs room for ``RESUME_MARGIN`` × its rate, at most one
  resume every ``RESUME_GAP`` seconds (paused tiles come back in turn), and the first
  frame after it is a key frame (the slot waits for one and asks).
* **Probing.** A receive-side estimate cannot grow past about 1.5 × what arrives
  (libwebrtc's ``AimdRateControl``), so a subscriber whose streams were paused would
  never earn them back by waiting. While a stream waits for room (``waiting``), the SFU
  tops the subscriber's downlink up with RTP padding on an RTX stream (RFC 4588 §4
  allows padding-only packets there), to ``PROBE_GROWTH`` × the estimate or × what it
  sent in the last interval, whichever is more: if the link carries it without loss,
  what it carried grows by that factor every interval (and the REMB climbs) until the
  stream fits; if not, the link loses packets or nothing climbs any more, the probe
  stops and the next one waits twice as long.
* **Upgrades are proven by the link, not by the REMB.** A simulcast video below the
  highest layer its tile allows is upgraded into the estimate; when nothing is paused
  the SFU probes for those upgrades the same way (``upgrade_target``), and what the
  link carried during such a probe *with the padding* (``sent_total``), in report
  intervals that lost nothing while the REMB reported no overuse (no fall below
  ``REMB_FALL`` × the one before), becomes ``proven``: the estimate is then at least
  that, until the link loses packets or the REMB falls (the receiver's detector saw
  queueing). A send-side estimator treats a probe cluster's measured rate the same way
  (libwebrtc's ProbeBitrateEstimator sets the delay-based estimate to it). Without it a
  viewer whose REMB fell once, from a burst of key frames or a busy CPU, climbed back
  at the REMB's ~8 %/s: ~40 s from the 135-line layers to the 540-line ones (measured
  here). A probe for a paused stream only raises the ``capacity`` below.
* **Near a known capacity, small steps.** For ``CAPACITY_MEMORY`` seconds after the
  link lost packets, what got through then (``capacity``, raised by what probes prove
  since) × ``PROBE_ABOVE_CAPACITY`` is a ``ceiling``: no probe pads above it and no
  paused stream resumes into more, whatever the REMB says (a REMB overshoots while a
  probe fills the bottleneck's queue: two resumes it allowed lost 7.9 % of a 1.5 Mbit/s
  link's packets, measured). A link that got better earns its streams back proof by
  proof, ~10 % every two intervals.
* **Retransmissions** draw on a token bucket of ``RTX_SHARE`` of the estimate: a NACK
  storm into a congested link cannot happen, because what does not fit is not sent
  (``drop_rtx_budget``), and the estimate itself falls as the link congests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Streams that flow keep flowing while they fit KEEP × the estimate: a receive-side
# estimate starts at the measured incoming rate (libwebrtc's AimdRateControl), so a
# budget below that would pause a stream on a link that carries it; a congested link's
# estimate drops to 0.85 × what arrives, well below.
KEEP = 1.05
# The first video (the active speaker's, or the most recent one's) is kept while it fits
# KEEP_FIRST × the estimate: right after a congestion the estimate undershoots the link
# (0.85 × what got through, then lower while the queue drains), and cutting a viewer
# down to audio alone would leave it a receive-side estimate that climbs back by a few
# percent a second. LiveKit and Jitsi likewise keep the speaker longest.
KEEP_FIRST = 1.25
RESUME_MARGIN = 1.1  # a paused stream resumes only if 1.1 × its rate fits the estimate
RESUME_GAP = 2.0  # seconds between two resumes for one subscriber
# A stream paused again within RESUME_FAILED seconds of its resume proved the estimate
# wrong (a receive-side estimate overshoots while probing): the next resume, and the
# probe before it, wait RESUME_HOLD seconds, doubling up to RESUME_HOLD_MAX each time.
RESUME_FAILED = 10.0
RESUME_HOLD = 8.0
RESUME_HOLD_MAX = 32.0
STALE = 5.0  # seconds: an estimate older than this is forgotten (no budget: all fit)
# libwebrtc's receive-side estimator reports its start value until it has measured the
# incoming rate for 5 s (AimdRateControl's initialization time): REMBs before that say
# nothing about the link, and believing one paused every stream of a fresh subscriber.
STARTUP = 6.0
LOSS_HIGH = 26 / 256  # above ~10 % lost the estimate is cut to what gets through
# A stream that flows is paused only while the link shows loss: at least ~5 % of what we
# sent lost in one report interval, within the last CONGESTION_MEMORY seconds. A REMB
# alone is not enough: libwebrtc's estimate can sit far below what a link carries for
# tens of seconds after one early delay spike (measured here: 370 kbit/s reported while
# 3.5 Mbit/s arrived without loss), and pausing on it would starve the viewer.
LOSS_CONGESTED = 13 / 256
CONGESTION_MEMORY = 3.0
# ... in LOSS_INTERVALS report intervals in a row: a starved browser drops a burst from
# its socket now and then (two cores running four of them did), which says nothing
# about the link and, believed, paused streams that then had to be probed back.
LOSS_INTERVALS = 2
# A report interval that lost less than ~2 % (libwebrtc's loss-based controller raises
# its rate below 2 %) shows the link carried what was sent in it; the highest such rate
# of the last CARRIED_MEMORY seconds is room a paused stream may resume into.
LOSS_LOW = 5 / 256
CARRIED_MEMORY = 10.0
RTX_SHARE = 0.1  # retransmissions may use this share of the estimate
RTX_BURST = 0.1  # seconds of RTX rate the bucket holds
UNKNOWN_RTX_RATE = 1_000_000  # bits/s for retransmissions while no estimate is known
PROBE_MIN_GAP = 4.0  # seconds between probes at first
PROBE_BACKOFF_MAX = 16.0  # the gap doubles after every failed probe, up to this
# A receive-side estimate grows ~8 %/s at most (libwebrtc's AimdRateControl): from one
# audio stream to a video stream's rate takes tens of seconds, so a probe runs as long as
# the estimate keeps setting new highs, up to PROBE_LENGTH.
PROBE_LENGTH = 60.0  # seconds a probe may run at most
PROBE_STALL = 5.0  # seconds without a new high estimate: the link gives no more
PROBE_DROP = 0.9  # an estimate below 0.9 × the probe's best so far: the link is full
# A probe sends at most this factor × what went out (or was estimated) in the last
# interval: libwebrtc's receive-side estimator grows to 1.5 × what arrives, and what
# the link carried follows the padding up by the same factor per interval, so a
# subscriber whose REMB collapsed gets a stream back in seconds.
PROBE_GROWTH = 1.5
# After the budget stepped a simulcast video down, it is not stepped up again for this
# long (mediasoup's SimulcastConsumer: BweDowngradeConservativeMs, 10 s). Without it a
# viewer whose estimate hovers near a layer's rate switched every second or two (measured
# here: 119 switches a minute among twelve pairs, each one a key frame that its
# publisher sends every viewer of that layer, which raised the rates and so the next
# switch).
LAYER_HOLD = 10.0
# A REMB below REMB_FALL × the one before it reports overuse: libwebrtc's AimdRateControl
# never lowers its estimate but on overuse (then to 0.85 × what arrives) and sends a
# lower REMB at once when it fell by 3 % or more (its kSendThresholdPercent, 97).
REMB_FALL = 0.97
# A link that lost packets lately has a known capacity (what got through then, raised
# to what a probe proved since): a probe goes at most PROBE_ABOVE_CAPACITY × it, instead
# of PROBE_GROWTH × what was sent, and a paused stream resumes into no more, for
# CAPACITY_MEMORY seconds after the loss
# (libwebrtc's AimdRateControl likewise grows only additively near its link capacity
# estimate). Measured here: a 1.5 Mbit/s link proven at 1.24 Mbit/s and then probed at
# 1.5 × that lost 1.4 % of its packets after the limit's onset.
PROBE_ABOVE_CAPACITY = 1.1
CAPACITY_MEMORY = 60.0
# ... and what a probe proves there counts for at most PROVEN_BELOW_CAPACITY × the
# capacity known before it (libwebrtc's AimdRateControl likewise backs off to 0.85 ×
# what got through): a bottleneck's queue hides a 10 % overshoot for a second or two,
# and measured here, a 1.5 Mbit/s link "proven" at 1.59 Mbit/s that way and then filled
# lost 9 % of its packets for two seconds
PROVEN_BELOW_CAPACITY = 0.9
# ... and there one video at a time goes up a spatial layer, UPGRADE_GAP seconds apart:
# each step up is a key frame into the link, and measured here, three of them at once on
# a proof of 1.35 Mbit/s into a 1.5 Mbit/s link lost 20 % of an interval's packets (1.7 %
# of the round's). Resumes are spaced the same way (RESUME_GAP).
UPGRADE_GAP = RESUME_GAP


@dataclass(frozen=True)
class Step:
    """One rung of a simulcast video's ladder (``ladder``): forward layer ``layer`` (an
    index into the layers it may get) up to temporal layer ``tid`` (None: all), at
    ``rate`` bits/s."""

    layer: int
    tid: int | None
    rate: int


@dataclass
class Video:
    """One video stream a subscriber could receive, as ``plan`` sees it."""

    key: object  # the caller's handle (a Slot)
    rate: int  # bits/s its publisher sends (simulcast: its cheapest step)
    active: bool  # forwarded now (False: paused for bandwidth)
    # simulcast: the rate of each step it may get (``ladder``: the lowest layer's lower
    # temporal layers, then the layers of a size allowed and sent lately), cheapest first,
    # and the one it forwards now (an index into ``layers``, -1: none of them)
    layers: tuple[int, ...] = ()
    current: int = -1
    whole: int = 0  # the step of the lowest layer with every temporal layer
    steps: tuple[Step, ...] = ()  # what each of ``layers`` is (``ladder``); () as if
    # every step above ``whole`` were the next spatial layer whole

    def spatial(self, j: int) -> int:
        """The spatial layer of step ``j`` (0: the lowest)."""
        return self.steps[j].layer if self.steps else max(0, j - self.whole)

    def keeps_size(self, j: int) -> bool:
        """Step ``j`` is a spatial layer above the lowest at fewer temporal layers
        (``ladder``'s ``half_rates``): a viewer gets it only to keep the size it has."""
        return bool(self.steps) and self.steps[j].layer > 0 and self.steps[j].tid is not None

    def floor(self, congested: bool) -> int:
        """What ``plan`` counts it at: its cheapest step on a congested link, else its
        lowest layer whole (temporal steps, like pauses, need loss)."""
        return self.layers[self.whole] if self.layers and not congested else self.rate


def ladder(layer_rates: Sequence[int], temporal_rates: Sequence[int],
           half_rates: Sequence[int] = ()) -> list[Step]:
    """The steps a simulcast video can be given, cheapest first (docs/SFU.md "Simulcast"):
    the lowest layer with only its lower temporal layers (``temporal_rates``: its rate at
    TID <= 0, <= 1, ... as ``PublishedTrack.measure`` found them, each below its full
    rate), then every layer with all of them, each layer above the lowest preceded by
    itself at TID <= 1 (``half_rates[i]``: layer i's rate at TID <= 1; 0 or missing:
    none) where that costs more than the step under it and less than the whole layer.
    L1T3 gives, below the lowest layer, that layer at TID <= 1 (about 60 % of its rate,
    half the pictures) and at TID 0 (about 40 %, a quarter) before the video is paused;
    between two spatial layers, the upper one at half its frame rate (``choose_layers``
    gives it only to a viewer that has that size: ``Video.keeps_size``)."""
    steps = [Step(0, t, r) for t, r in enumerate(temporal_rates)
             if layer_rates and 0 < r < layer_rates[0]]
    for i, r in enumerate(layer_rates):
        # a layer measured below the step under it (just resumed by dynacast, its rate
        # not measured yet, or paused a moment ago) costs as much as that step: never
        # less, which would make it a step *down* on a congested link
        half = half_rates[i] if 0 < i < len(half_rates) else 0
        if steps and steps[-1].rate < half < r:
            steps.append(Step(i, 1, half))
        steps.append(Step(i, None, max(r, steps[-1].rate) if steps else r))
    return steps


class DownlinkBudget:
    """The budget of one subscriber (see the module docstring)."""

    def __init__(self) -> None:
        self.estimate: int | None = None  # bits/s, None until the first REMB
        self.estimate_at = 0.0
        self.remb: int | None = None  # the last REMB as received
        self.first_remb: float | None = None
        self.loss = 0  # the share lost in the last report interval (1/256 units)
        self.congested_at = -1e9  # when that last reached LOSS_CONGESTED
        self.lossy = 0  # intervals in a row at LOSS_CONGESTED or more
        self.sent = 0  # bits/s sent to this subscriber in the last interval (media + RTX)
        self.sent_total = 0  # the same with probe padding
        # bits/s an upgrade probe showed the link carries (0: none); the estimate is at
        # least this until loss or a falling REMB (module docstring)
        self.proven = 0
        self.proven_at = 0.0
        self._upgrading = False  # the running probe is for upgrades
        self._proving = 0  # sent_total of the last loss-free interval of that probe
        self.remb_fell_at = -1e9  # the last REMB below REMB_FALL × the one before
        # (bits/s, when): what got through the last time the link was congested
        self.capacity: tuple[int, float] | None = None
        # (when, bits/s): rates sent in report intervals that lost less than LOSS_LOW,
        # each lowered by the loss-based cuts since (``carried``)
        self._carried: list[tuple[float, int]] = []
        self.allocated = 0  # bits/s of the streams ``plan`` let through, audio included
        self.last_resume = -1e9
        self.hold_until = -1e9  # no resume (nor probe) before this, after a failed one
        self.hold = 0.0
        self._rtx_tokens = 0.0  # bytes
        self._rtx_at = 0.0
        # probing
        self.probe_target = 0  # bits/s the estimate must reach (0: not probing)
        self.probe_started = 0.0
        self.probe_best = 0
        self.probe_best_at = 0.0
        self.probe_gap = PROBE_MIN_GAP
        self.next_probe = 0.0
        self.probes = 0
        self.probes_failed = 0
        # With a send-side estimate (sfu/transportcc.py) what arrived is known exactly:
        # a resume then needs the link to have delivered its room, not only the estimate
        # to allow it (``on_delivered``, ``carrying``)
        self.delivery_gated = False
        # simulcast videos (``Video.key``) the budget stepped down lately, and when
        self._stepped_down: dict[object, float] = {}
        self.last_upgrade = -1e9  # the last step of a video to a higher spatial layer

    # --- inputs ------------------------------------------------------------------------

    def on_remb(self, bitrate: int, now: float) -> bool:
        """A REMB arrived. True if it cuts below what is allocated (re-plan now)."""
        if self.remb is not None and bitrate < REMB_FALL * self.remb:
            self.remb_fell_at = now  # the receiver saw overuse: what a probe proved is void
            self._drop_proven(now)
        self.remb = bitrate
        if self.proven and bitrate >= self.proven:
            self.proven = 0  # the REMB caught up
        if self.first_remb is None:
            self.first_remb = now
        if now - self.first_remb < STARTUP:
            return False
        self.estimate, self.estimate_at = bitrate, now
        best = self._probe_measure(now, self._upgrading) or bitrate
        if self.probe_target and best > self.probe_best:
            self.probe_best, self.probe_best_at = best, now
        return bitrate * KEEP < self.allocated and self.congested(now)

    def on_loss(self, fraction: int, now: float, reported: bool = True) -> bool:
        """The share of our packets lost in the last report interval (1/256 units);
        ``reported``: receiver reports covered some of them (without, nothing is known).
        Below ``LOSS_LOW`` the rate sent counts as carried (``carrying``).
        ``LOSS_INTERVALS`` of them in a row at ``LOSS_CONGESTED`` make the link congested:
        what it carried is lowered to sent × (1 − loss/2) at most, and above
        ``LOSS_HIGH`` the estimate too."""
        self.loss = fraction
        self._carried = [(t, r) for t, r in self._carried if now - t <= CARRIED_MEMORY]
        if reported and self.sent and fraction < LOSS_LOW * 256:
            self._carried.append((now, self.sent))
        self._prove(fraction, now, reported)
        self.lossy = self.lossy + 1 if fraction >= LOSS_CONGESTED * 256 else 0
        if self.lossy < LOSS_INTERVALS:
            return False
        episode = self.congested(now)  # this congestion goes on from the last interval
        self.congested_at = now
        self._drop_proven(now)
        if not self.sent:
            return False
        cut = int(self.sent * (1 - fraction / 512))
        # what got through; in one congestion the most of it: receiver reports lag, and
        # the loss reported after a pause is of what was sent before it
        through = int(self.sent * (1 - fraction / 256))
        if episode and self.capacity is not None:
            through = max(through, self.capacity[0])
        self.capacity = (through, now)
        self._carried = [(t, min(r, cut)) for t, r in self._carried]
        if fraction <= LOSS_HIGH * 256:
            return False
        if self.estimate is None or cut < self.estimate:
            self.estimate, self.estimate_at = cut, now
            return True
        return False

    def on_delivered(self, rate: int | None, loss: float, now: float) -> None:
        """Transport feedback: ``rate`` bits/s (media, retransmissions and probe padding)
        arrived throughout the last second (``TransportCc.delivered``; None: not known),
        and ``loss`` of what was sent in the last second was lost. Below ``LOSS_LOW``
        that rate counts as carried (``carrying``); at ``LOSS_CONGESTED`` or more it is
        what the link carries now, and nothing carried before counts for more (the rates
        of before a link narrowed must not resume a stream into it)."""
        if rate is not None and loss >= LOSS_CONGESTED:
            self._carried = [(t, min(r, rate)) for t, r in self._carried]
        elif rate is not None and loss < LOSS_LOW:
            self._carried.append((now, rate))
            if len(self._carried) > 4 * CARRIED_MEMORY * 50:  # ~20 feedbacks/s at most
                del self._carried[: len(self._carried) // 2]

    def _prove(self, fraction: int, now: float, reported: bool) -> None:
        """During a probe: a rate (media, RTX and padding) sent in a report interval
        that lost less than ``LOSS_LOW``, followed by another such interval (a queue that
        overflows late shows in the next one), with no REMB fall since the probe began,
        raises the ``capacity`` (if above it) and, for an upgrade probe, is ``proven``
        (if above the estimate; near a known capacity at most ``PROVEN_BELOW_CAPACITY``
        × it). A probe for a paused stream proves nothing more: what it padded with
        counted in the estimate let it grow by PROBE_GROWTH a step without a ceiling,
        and one-encoding cameras' link lost 15.6 % (measured)."""
        if not self.probe_target:
            self._proving = 0
            return
        if (not reported or fraction >= LOSS_LOW * 256
                or self.remb_fell_at >= self.probe_started):
            self._proving = 0
            return
        usable = self._proving
        if self.capacity is not None:  # near a known capacity: leave it headroom
            usable = min(usable, int(self.capacity[0] * PROVEN_BELOW_CAPACITY))
        if self._upgrading and usable > max(self.proven, self.estimate or 0):
            self.proven, self.proven_at = usable, now
        if self.capacity is not None and self._proving > self.capacity[0]:
            # the link carries more than when it lost: the next step is from here
            self.capacity = (self._proving, self.capacity[1])
        self._proving = self.sent_total

    def _drop_proven(self, now: float) -> None:
        """Loss or an overusing REMB: what a probe proved no longer holds; if it had held
        less than RESUME_FAILED seconds, the next probe waits twice as long."""
        if self.proven and now - self.proven_at < RESUME_FAILED:
            self.probe_gap = min(PROBE_BACKOFF_MAX, self.probe_gap * 2)
            self.next_probe = max(self.next_probe, now + self.probe_gap)
        self.proven = 0

    def congested(self, now: float) -> bool:
        """The link lost packets lately (``LOSS_CONGESTED``, ``CONGESTION_MEMORY``)."""
        return now - self.congested_at <= CONGESTION_MEMORY

    def known(self, now: float) -> int | None:
        """The estimate, or None if there is none or it went stale."""
        if self.estimate is None or now - self.estimate_at > STALE:
            return None
        return max(self.estimate, self.proven)

    def carried(self, now: float) -> int:
        """The highest rate sent in a report interval of the last ``CARRIED_MEMORY``
        seconds that lost less than ``LOSS_LOW`` (lowered by any congestion since); 0 if
        none."""
        return max((r for t, r in self._carried if now - t <= CARRIED_MEMORY), default=0)

    def carrying(self, now: float) -> int | None:
        """Room for a resume (and what a probe must raise): the estimate, or what the link
        carried lately if more — not while it is congested. None without an estimate.
        ``delivery_gated`` (a send-side estimate): the estimate, but no more than what the
        link delivered lately without loss — probing, not guessing."""
        estimate = self.known(now)
        if estimate is None or self.congested(now):
            return estimate
        if self.delivery_gated:
            return min(estimate, self.carried(now))
        return max(estimate, self.carried(now))

    # --- allocation --------------------------------------------------------------------

    def plan(self, audio: int, videos: Sequence[Video], now: float) -> set[int]:
        """Which ``videos`` (indexes, in the given priority order) to forward."""
        estimate = self.known(now)
        if estimate is None:
            self.allocated = audio + sum(v.rate for v in videos)
            return set(range(len(videos)))
        used = audio
        allowed: set[int] = set()
        resumed = False
        congested = self.congested(now)
        room = self.resume_room(now)
        if room is None:
            room = estimate
        paused_again = False
        for i, v in enumerate(videos):
            rate = v.floor(congested)
            if v.active:
                keep = KEEP_FIRST if used == audio else KEEP
                if not congested or used + rate <= estimate * keep:
                    allowed.add(i)
                    used += rate
                else:
                    paused_again = True
            elif (not resumed and not congested and now >= self.hold_until
                  and now - self.last_resume >= RESUME_GAP
                  and used + rate * RESUME_MARGIN <= room):
                allowed.add(i)
                used += rate
                resumed = True
                self.last_resume = now
        if paused_again and now - self.last_resume < RESUME_FAILED:
            self.hold = min(RESUME_HOLD_MAX, self.hold * 2 or RESUME_HOLD)
            self.hold_until = now + self.hold
        elif now - self.last_resume > 3 * RESUME_FAILED:
            self.hold = 0.0  # resumes have held: trust the estimate again
        self.allocated = used
        if resumed and self.probe_target:
            # the stream the probe made room for takes the room: the probe is over, and
            # the next one waits until that stream's rate has been measured
            self._end_probe(now, failed=False)
        return allowed

    def choose_layers(self, videos: Sequence[Video], allowed: set[int],
                      now: float) -> dict[int, int]:
        """Which step each allowed simulcast video gets (an index into its ``layers``).

        ``plan`` counted every simulcast video at its ``floor``; what the estimate has
        left after it goes, in the same priority order, to upgrades: each video gets
        the highest layer whose extra rate fits (LiveKit's allocator likewise first
        gives every stream its lowest layer, then upgrades by priority). Going above the
        layer it forwards needs ``RESUME_MARGIN`` × the extra rate, so that a layer that
        just fits does not flap. Without an estimate every video gets its highest layer.
        A step down to a layer costs the viewer one key frame, and follows the estimate
        at once; a step below the lowest layer whole (fewer temporal layers), like a
        pause, needs loss on the link (the module docstring). A layer above the lowest
        at half its frame rate (``Video.keeps_size``) is a step only for a video
        forwarded at that layer's size and only on a link that has not lost packets
        for ``CAPACITY_MEMORY`` seconds (no ``ceiling``; on one that did, a REMB's fall
        is the link's, and a viewer keeps every picture on a smaller layer): a REMB's
        fall first halves the frame rate, keeping the size and costing no key frame
        (measured here on two cores, a starved receiver's REMB fell to 0.85 × what
        arrived every 15–40 s, and each fall cost a viewer's 540-line layers until a
        probe proved the room), and before the upgrades every video's size at half its
        frame rate is set aside (``_keep_sizes``). After a step down to a
        lower spatial layer the video gets no higher one for ``LAYER_HOLD`` seconds,
        except while room an upgrade probe proved since the step down (``proven``)
        holds. Near a known capacity (a ``ceiling``) one video at a time goes up a
        spatial layer, ``UPGRADE_GAP`` seconds apart.
        """
        estimate = self.known(now)
        spare = None if estimate is None else estimate - self.allocated
        congested = self.congested(now)
        held = self._stepped_down
        for key in [k for k, at in held.items() if now - at >= LAYER_HOLD]:
            del held[key]
        # a link that lost packets lately (its capacity known): a REMB's fall is the
        # link's, and the frame rate is kept rather than the size; and one video at a
        # time goes up a spatial layer (UPGRADE_GAP)
        near = self.ceiling(now) is not None
        halve = not congested and not near
        may_upgrade = not near or now - self.last_upgrade >= UPGRADE_GAP
        # first every video's size is kept (``_keep_sizes``); then upgrades in order
        keep = self._keep_sizes(videos, allowed, spare) if spare is not None and halve else {}
        kept = sum(keep.values())
        chosen: dict[int, int] = {}
        for i in sorted(allowed):
            v = videos[i]
            if not v.layers:
                continue
            pick = len(v.layers) - 1
            if spare is not None:
                low = 0 if congested else v.whole  # the step ``plan`` counted
                pick = low
                kept -= keep.get(i, 0)  # what the videos after this one keep is theirs
                # held: no higher spatial layer (temporal steps cost no key frame),
                # unless a probe proved room since the step down and it still holds.
                # (Ending the hold for good on a proof, measured: on four browsers
                # sharing two cores, each upgrade it allowed brought the next REMB fall
                # on a starved receiver, 50-77 switches a minute in a clean call instead
                # of 8-25, and a page that lost its media.)
                hold = v.key in held and not (self.proven and self.proven_at > held[v.key])
                top = v.spatial(max(v.current, v.whole, low)) if hold else None
                size = v.spatial(v.current) if v.current >= 0 else -1
                if not may_upgrade and size >= 0:
                    top = size if top is None else min(top, size)
                for j in range(len(v.layers) - 1, low, -1):
                    if top is not None and v.spatial(j) > top:
                        continue
                    # a larger layer at half its frame rate keeps a viewer's size through
                    # a REMB's fall on a link that loses nothing (no key frame either
                    # way, and half the pictures to decode for a receiver short of CPU);
                    # on a link that lost packets lately the frame rate is kept and the
                    # size given up
                    if v.keeps_size(j) and (not halve or v.spatial(j) != size):
                        continue
                    extra = v.layers[j] - v.layers[low]
                    if extra * (1.0 if j <= v.current else RESUME_MARGIN) <= spare - kept:
                        pick = j
                        break
                spare -= v.layers[pick] - v.layers[low]
                if v.current >= 0 and v.spatial(pick) < size:  # a lower spatial layer
                    held[v.key] = now  # for the budget: LAYER_HOLD
                elif v.current >= 0 and v.spatial(pick) > size:  # a higher one
                    self.last_upgrade = now
                    may_upgrade = not near
            chosen[i] = pick
        if estimate is not None and spare is not None:
            self.allocated = estimate - spare
        return chosen

    @staticmethod
    def _keep_sizes(videos: Sequence[Video], allowed: set[int], spare: int) -> dict[int, int]:
        """The extra rate (over the lowest layer whole) at which each allowed video keeps
        the size it is forwarded at: that size at half its frame rate (where ``ladder``
        has such a step; a size without it is not set aside), in priority order while they fit
        ``spare``. ``choose_layers`` sets it aside for each video before it upgrades the
        ones before it: after a REMB's fall every video keeps its size at half its frame
        rate before any is given every picture (measured here: a fall to half of a
        receiver's REMB, with the videos upgraded one by one in order, left the first two
        at 540 lines at every picture and stepped the third down to 135 lines, its key
        frame and LAYER_HOLD included). LiveKit's allocator likewise gives every track its
        minimum before it boosts any by priority."""
        keep: dict[int, int] = {}
        for i in sorted(allowed):
            v = videos[i]
            if not v.layers or v.current < 0 or v.spatial(v.current) == 0:
                continue
            size = v.spatial(v.current)
            j = next(j for j in range(len(v.layers)) if v.spatial(j) == size)
            extra = v.layers[j] - v.layers[v.whole]
            if v.keeps_size(j) and 0 < extra <= spare:
                keep[i] = extra
                spare -= extra
        return keep

    def waiting(self, audio: int, videos: Sequence[Video], allowed: set[int],
                now: float) -> int:
        """The room at which the first paused stream (in priority order) would fit."""
        congested = self.congested(now)
        used = audio + sum(videos[i].floor(congested) for i in allowed)
        for i, v in enumerate(videos):
            if i not in allowed:
                return int(used + v.floor(congested) * RESUME_MARGIN)
        return 0

    def upgrade_target(self, videos: Sequence[Video], chosen: dict[int, int],
                       now: float) -> int:
        """The estimate at which every simulcast video ``choose_layers`` left below its
        highest step could take that step: what a probe for upgrades aims at (0: none;
        not on a congested link; a video held after a step down counts: what the probe
        proves lifts its hold while it holds, as libwebrtc probes at once after a large
        drop). A
        receive-side estimate cannot grow past ~1.5 × what arrives, so without it a
        viewer stepped down once stayed down (LiveKit's allocator likewise probes while
        a track is below its optimal layer); what the probe proves (``proven``) lets
        ``choose_layers`` upgrade as it climbs."""
        if self.known(now) is None or self.congested(now):
            return 0
        # choose_layers takes a step j above the floor ``whole`` when RESUME_MARGIN × its
        # extra over the floor fits what is left
        extra = 0.0
        for i, pick in chosen.items():
            v = videos[i]
            if pick + 1 < len(v.layers):
                floor = v.layers[min(v.whole, pick)]
                extra += (v.layers[-1] - floor) * RESUME_MARGIN - (v.layers[pick] - floor)
        return int(self.allocated + extra) + 1 if extra > 0 else 0  # (+1: rounding)

    # --- retransmissions -----------------------------------------------------------------

    def take_rtx(self, nbytes: int, now: float) -> bool:
        """True if a retransmission of ``nbytes`` fits the RTX bucket (and takes it)."""
        estimate = self.known(now)
        rate = (estimate * RTX_SHARE if estimate is not None else UNKNOWN_RTX_RATE) / 8
        self._rtx_tokens = min(rate * RTX_BURST,
                               self._rtx_tokens + (now - self._rtx_at) * rate)
        self._rtx_at = now
        if self._rtx_tokens < nbytes:
            return False
        self._rtx_tokens -= nbytes
        return True

    # --- probing -------------------------------------------------------------------------

    def probe_rate(self, target: int, now: float, upgrade: bool = False) -> int:
        """Padding bits/s to send now so that the estimate can reach ``target``.

        0 when no probe should run. The padding brings what is sent up to
        ``PROBE_GROWTH`` × the estimate (or × what was sent, if more; for an
        ``upgrade`` the estimate grows with what the probe ``proven``, so the padding
        grows by PROBE_GROWTH every interval or two while the link carries it), never
        past ``target`` nor the ``ceiling`` (a link congested within
        ``CAPACITY_MEMORY``). A probe starts when one is due, runs while what it is
        judged on (``_probe_measure``: the room a resume gets; for an ``upgrade``, which
        ``choose_layers`` judges on the estimate, the estimate with what the probe
        ``proven``) keeps setting new highs, and ends once
        that reaches the target (success), or on loss on the link, a fall below
        ``PROBE_DROP`` × its best, ``PROBE_STALL`` seconds without a new high or after
        ``PROBE_LENGTH`` (failure: the next waits twice as long).
        """
        self._upgrading = upgrade
        estimate = self._probe_measure(now, upgrade)
        if not target or estimate is None:
            self.probe_target = 0
            return 0
        if self.probe_target:
            if estimate > self.probe_best:  # the REMB, or what the link carried, grew
                self.probe_best, self.probe_best_at = estimate, now
            if estimate >= target:
                self._end_probe(now, failed=False)
                return 0
            if (self.lossy or estimate < PROBE_DROP * self.probe_best
                    or now - self.probe_best_at > PROBE_STALL
                    or now - self.probe_started > PROBE_LENGTH):
                self._end_probe(now, failed=True)
                return 0
        elif now >= max(self.next_probe, self.hold_until):
            self.probe_target = target
            self.probe_started = self.probe_best_at = now
            self.probe_best = estimate
            self.probes += 1
        else:
            return 0
        # up to PROBE_GROWTH × the estimate or what went out, whichever is more (a REMB
        # far below what arrives must not hold the padding back), never past the target:
        # the media takes ``allocated`` of it, padding the rest
        total = min(target, int(max(estimate, self.sent) * PROBE_GROWTH))
        ceiling = self.ceiling(now)
        if ceiling is not None:
            total = min(total, ceiling)
        return max(0, total - self.allocated)

    def _probe_measure(self, now: float, upgrade: bool) -> int | None:
        """What a probe is judged on: for an ``upgrade`` the estimate (with what probes
        proved), which ``choose_layers`` spends; for a resume the room ``plan`` gives
        one (``resume_room``)."""
        return self.known(now) if upgrade else self.resume_room(now)

    def resume_room(self, now: float) -> int | None:
        """The room a paused stream may resume into (``plan``): ``carrying``, no more
        than the ``ceiling`` (a resume must not go far past what got through lately)."""
        room, ceiling = self.carrying(now), self.ceiling(now)
        return room if room is None or ceiling is None else min(room, ceiling)

    def ceiling(self, now: float) -> int | None:
        """``PROBE_ABOVE_CAPACITY`` × what the link carried when it last lost packets
        (raised to what a probe proved since), for ``CAPACITY_MEMORY`` seconds after that
        loss: no probe pads above it and no paused stream resumes into more. None: no
        loss that recent."""
        if self.capacity is None:
            return None
        rate, at = self.capacity
        if now - at > CAPACITY_MEMORY:
            self.capacity = None
            return None
        return int(rate * PROBE_ABOVE_CAPACITY)

    def _end_probe(self, now: float, failed: bool) -> None:
        self.probe_target = 0
        if failed:
            self.probes_failed += 1
            self.probe_gap = min(PROBE_BACKOFF_MAX, self.probe_gap * 2)
        else:
            self.probe_gap = PROBE_MIN_GAP
        self.next_probe = now + self.probe_gap
