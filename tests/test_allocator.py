"""sfu.allocator: one subscriber's downlink budget, allocation, probing, RTX bucket."""

from __future__ import annotations

import pytest

from sfu import allocator
from sfu.allocator import (
    CAPACITY_MEMORY,
    CARRIED_MEMORY,
    CONGESTION_MEMORY,
    KEEP,
    LAYER_HOLD,
    LOSS_INTERVALS,
    PROBE_ABOVE_CAPACITY,
    PROBE_GROWTH,
    PROBE_LENGTH,
    PROBE_MIN_GAP,
    PROBE_STALL,
    PROVEN_BELOW_CAPACITY,
    RESUME_GAP,
    RESUME_MARGIN,
    RTX_BURST,
    RTX_SHARE,
    UPGRADE_GAP,
    DownlinkBudget,
    Step,
    Video,
    ladder,
)

MBIT = 1_000_000


@pytest.fixture(autouse=True)
def no_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """REMBs count from the first one on (the start-up rule has its own test)."""
    monkeypatch.setattr(allocator, "STARTUP", 0.0)


def test_remb_of_the_first_seconds_is_not_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "STARTUP", 6.0)
    b = DownlinkBudget()
    assert not b.on_remb(300_000, 10.0)  # libwebrtc's start value, before it measured
    assert b.known(10.0) is None and b.plan(0, videos(MBIT, MBIT), 10.0) == {0, 1}
    b.on_remb(300_000, 15.9)
    assert b.known(15.9) is None
    congest(b, 40, 15.9)  # the link loses packets: a believed REMB below the use counts
    assert b.on_remb(300_000, 16.0) and b.known(16.0) == 300_000


def congest(b: DownlinkBudget, fraction: int, now: float) -> None:
    """LOSS_INTERVALS lossy report intervals in a row."""
    for _ in range(LOSS_INTERVALS):
        b.on_loss(fraction, now)


def videos(*rates: int, active: bool = True) -> list[Video]:
    return [Video(i, r, active) for i, r in enumerate(rates)]


def test_without_an_estimate_everything_is_forwarded() -> None:
    b = DownlinkBudget()
    assert b.plan(100_000, videos(MBIT, MBIT, MBIT), 0.0) == {0, 1, 2}
    b.on_remb(MBIT, 0.0)
    assert b.known(0.0) == MBIT and b.known(10.0) is None  # stale after STALE seconds


def test_streams_fill_the_budget_in_priority_order_and_the_rest_pause() -> None:
    b = DownlinkBudget()
    b.on_remb(2_700_000, 0.0)
    # without loss on the link a low estimate pauses nothing that flows
    assert b.plan(100_000, videos(1_500_000, 1_500_000, 500_000), 0.0) == {0, 1, 2}
    congest(b, 20, 0.0)  # 8 % lost: the link is congested, the estimate rules
    # audio first, then in order: 1.5 fits, the next 1.5 does not, the 0.5 after it does
    assert b.plan(100_000, videos(1_500_000, 1_500_000, 500_000), 0.0) == {0, 2}
    # the first video is kept a little above the estimate, the others are not
    b.on_remb(1_400_000, 0.1)
    assert b.plan(100_000, videos(1_500_000, 500_000, 500_000), 0.1) == {0}
    b.on_remb(1_200_000, 0.2)
    assert b.plan(100_000, videos(1_500_000, 500_000, 500_000), 0.2) == {1, 2}
    b.on_remb(2_700_000, 0.3)
    assert b.allocated <= 2_700_000 * KEEP
    # the first paused stream needs this estimate to come back
    assert b.waiting(100_000, videos(1_500_000, 1_500_000, 500_000), {0, 2}, 0.3) > 3 * MBIT


def test_a_lower_estimate_says_so_at_once_and_loss_cuts_it() -> None:
    b = DownlinkBudget()
    b.on_remb(3 * MBIT, 0.0)
    b.plan(0, videos(MBIT, MBIT), 0.0)
    assert not b.on_remb(1_500_000, 0.1)  # no loss: a low REMB alone pauses nothing
    congest(b, 14, 0.1)
    assert not b.on_remb(1_950_000, 0.1)  # an estimate at the incoming rate keeps them
    b.sent = 2 * MBIT
    assert not b.on_loss(10, 0.3)  # 4 % lost: not congestion
    assert not b.on_loss(64, 0.25)  # one lossy interval is not congestion yet
    assert b.on_loss(64, 0.3)  # 25 % lost: sent × (1 − 0.125)
    assert b.known(0.3) == 1_750_000
    assert b.plan(0, videos(MBIT, MBIT), 0.3) == {0}
    assert not b.on_loss(64, 0.4)  # loss never raises the estimate
    # once the loss is CONGESTION_MEMORY seconds old, what flows keeps flowing again
    assert b.plan(0, videos(MBIT, MBIT), 0.4 + CONGESTION_MEMORY + 0.1) == {0, 1}
    b.on_loss(64, 0.45)
    assert b.on_remb(800_000, 0.5)  # below what is allocated (1 Mbit/s): re-plan now


def test_paused_streams_come_back_one_at_a_time_with_margin() -> None:
    b = DownlinkBudget()
    b.on_remb(10 * MBIT, 0.0)
    paused = videos(MBIT, MBIT, active=False)
    assert b.plan(0, paused, 0.0) == {0}  # one resume per plan
    assert b.plan(0, [Video(0, MBIT, True), Video(1, MBIT, False)], 0.5) == {0}
    assert b.plan(0, [Video(0, MBIT, True), Video(1, MBIT, False)], RESUME_GAP) == {0, 1}
    # a paused stream needs room for 1.1 × its rate: exactly fitting is not enough,
    # while one that flows keeps flowing a little above the estimate
    b2 = DownlinkBudget()
    b2.on_remb(int(MBIT * RESUME_MARGIN) - 1, 0.0)
    assert b2.plan(0, videos(MBIT, active=False), 0.0) == set()
    assert b2.plan(0, videos(MBIT, active=True), 0.0) == {0}
    congest(b2, 30, 1.0)
    b2.on_remb(int(MBIT / KEEP) + 1, 1.0)
    assert b2.plan(0, videos(MBIT, active=True), 1.0) == {0}
    assert b2.plan(0, videos(MBIT, active=False), 1.0) == set()  # nothing resumes under loss


def test_retransmissions_fit_a_bucket_of_a_share_of_the_estimate() -> None:
    b = DownlinkBudget()
    b.on_remb(8 * MBIT, 0.0)
    bucket = 8 * MBIT * RTX_SHARE / 8 * RTX_BURST  # bytes
    sent = 0
    now = 1.0
    while b.take_rtx(1000, now):
        sent += 1000
        assert sent <= bucket  # a storm of NACKs gets no more than the bucket
    assert sent >= bucket - 1000
    assert not b.take_rtx(1000, now)
    assert b.take_rtx(1000, now + 0.02)  # it refills at the share of the estimate


def test_a_probe_pads_past_the_estimate_ends_at_the_target_and_backs_off_on_a_fall() -> None:
    b = DownlinkBudget()
    b.on_remb(MBIT, 0.0)
    b.sent = b.allocated = 600_000
    assert b.probe_rate(0, 0.0) == 0  # nothing waits: no probe
    # PROBE_GROWTH × the estimate in all; the media takes what is allocated
    assert b.probe_rate(2 * MBIT, 0.0) == int(MBIT * PROBE_GROWTH) - 600_000
    b.on_remb(1_500_000, 1.0)
    assert b.probe_rate(2 * MBIT, 1.0) == 2 * MBIT - 600_000  # never past the target
    b.on_remb(2_100_000, 2.0)
    assert b.probe_rate(2 * MBIT, 2.0) == 0 and b.probe_gap == PROBE_MIN_GAP  # reached
    assert b.probe_rate(3 * MBIT, 2.5) == 0  # the next waits PROBE_MIN_GAP
    now = 2.0 + PROBE_MIN_GAP
    assert b.probe_rate(3 * MBIT, now) > 0
    b.on_remb(1_500_000, now + 1)  # the link is full: the estimate falls
    assert b.probe_rate(3 * MBIT, now + 1) == 0
    assert b.probe_gap == 2 * PROBE_MIN_GAP and b.probes_failed == 1
    # a probe that stops climbing ends by itself
    later = now + 1 + 2 * PROBE_MIN_GAP
    b.on_remb(1_500_000, later)
    assert b.probe_rate(3 * MBIT, later) > 0
    for i in range(1, int(PROBE_STALL) + 1):  # REMBs, none higher than the first
        b.on_remb(1_500_000, later + i)
    assert b.probe_rate(3 * MBIT, later + PROBE_STALL + 0.5) == 0
    assert b.probes_failed == 2
    # one that keeps climbing may go on for PROBE_LENGTH, not longer
    start = later + PROBE_STALL + 0.5 + 4 * PROBE_MIN_GAP
    b.on_remb(MBIT, start)
    assert b.probe_rate(100 * MBIT, start) > 0
    t, rate = start, MBIT
    while t < start + PROBE_LENGTH:
        t, rate = t + 1, int(rate * 1.05)
        b.on_remb(rate, t)
        if t <= start + PROBE_LENGTH:
            assert b.probe_rate(100 * MBIT, t) > 0
    b.on_remb(int(rate * 1.05), t + 1)
    assert b.probe_rate(100 * MBIT, t + 1) == 0 and b.probes_failed == 3


def test_a_resume_ends_the_probe_that_made_room_for_it() -> None:
    b = DownlinkBudget()
    b.on_remb(2 * MBIT, 0.0)
    b.sent = b.allocated = 100_000
    assert b.probe_rate(3 * MBIT, 0.0) == 2_900_000
    b.on_remb(3 * MBIT, 1.0)
    # the paused stream now fits: it resumes, and no padding goes on beside it
    assert b.plan(100_000, videos(2 * MBIT, active=False), 1.0) == {0}
    assert b.probe_target == 0 and b.probe_rate(5 * MBIT, 1.0) == 0
    # padding never fills what the new allocation already takes
    b.on_remb(3 * MBIT, 1.0 + PROBE_MIN_GAP)
    assert b.probe_rate(5 * MBIT, 1.0 + PROBE_MIN_GAP) == \
        int(3 * MBIT * PROBE_GROWTH) - b.allocated


def test_loss_during_a_probe_ends_it() -> None:
    b = DownlinkBudget()
    b.on_remb(MBIT, 0.0)
    assert b.probe_rate(3 * MBIT, 0.0) > 0
    b.on_loss(20, 0.5)  # one lossy interval: the padding is more than the link carries
    b.on_remb(1_100_000, 1.0)
    assert b.probe_rate(3 * MBIT, 1.0) == 0 and b.probes_failed == 1


def test_a_resume_that_fails_holds_the_next_one_back_longer_each_time() -> None:
    b = DownlinkBudget()
    b.on_remb(3 * MBIT, 0.0)
    assert b.plan(0, videos(2 * MBIT, active=False), 0.0) == {0}  # resumed
    congest(b, 60, 3.0)  # and the link could not take it
    b.on_remb(1_000_000, 3.0)
    assert b.plan(0, videos(2 * MBIT), 3.0) == set()
    first = b.hold_until - 3.0
    assert first > 0
    early = 3.0 + first - 0.5
    b.on_remb(3 * MBIT, early)  # the estimate says it fits again: not yet
    assert b.plan(0, videos(2 * MBIT, active=False), early) == set()
    assert b.probe_rate(5 * MBIT, early) == 0  # nor is the link probed meanwhile
    now = b.hold_until
    assert b.plan(0, videos(2 * MBIT, active=False), now) == {0}
    congest(b, 60, now + 1)
    b.on_remb(1_000_000, now + 1)
    assert b.plan(0, videos(2 * MBIT), now + 1) == set()
    assert b.hold_until - (now + 1) == 2 * first


def test_simulcast_layers_fill_what_plan_left_in_priority_order() -> None:
    """Every simulcast video is planned at its lowest layer; the rest of the estimate
    upgrades them in priority order, an upgrade needing RESUME_MARGIN × its extra rate."""
    b = DownlinkBudget()
    layers = (100_000, 300_000, 1_000_000)
    vs = [Video("a", layers[0], True, layers, 0), Video("b", layers[0], True, layers, 0),
          Video("c", 200_000, True)]  # not simulcast: no layer choice
    # no estimate: the highest layer each
    allowed = b.plan(0, vs, 1.0)
    assert b.choose_layers(vs, allowed, 1.0) == {0: 2, 1: 2}
    b.on_remb(1_600_000, 2.0)
    allowed = b.plan(0, vs, 2.0)
    assert allowed == {0, 1, 2} and b.allocated == 400_000
    # 1.2 M spare: a gets its top layer (+0.9 M × 1.1), b what remains (+0.2 M × 1.1)
    assert b.choose_layers(vs, allowed, 2.0) == {0: 2, 1: 1}
    assert b.allocated == 400_000 + 900_000 + 200_000
    # the layer a video forwards is kept while its extra rate fits without the margin
    b.on_remb(1_000_000 + 300_000 + 200_000 + 100_000, 3.0)  # 1.6 M: 1.2 M spare again
    vs[0] = Video("a", layers[0], True, layers, 2)
    vs[1] = Video("b", layers[0], True, layers, 1)
    allowed = b.plan(0, vs, 3.0)
    assert b.choose_layers(vs, allowed, 3.0) == {0: 2, 1: 1}
    # a lower estimate: steps down at once, no loss needed (it is not a pause)
    b.on_remb(600_000, 4.0)
    allowed = b.plan(0, vs, 4.0)
    assert allowed == {0, 1, 2}  # nothing paused: the link shows no loss
    assert b.choose_layers(vs, allowed, 4.0) == {0: 1, 1: 0}
    b.on_remb(400_000, 5.0)
    allowed = b.plan(0, vs, 5.0)
    assert b.choose_layers(vs, allowed, 5.0) == {0: 0, 1: 0}
    # a paused simulcast video gets no layer
    assert b.choose_layers(vs, {1, 2}, 5.0) == {1: 0}


def test_a_video_stepped_down_is_not_stepped_up_again_for_layer_hold() -> None:
    """After the budget steps a simulcast video down it stays at most where it is for
    LAYER_HOLD seconds, however much room comes back (mediasoup's SimulcastConsumer does
    the same): an estimate that hovers near a layer's rate does not switch it to and
    fro, each switch a key frame. A step further down is still taken at once."""
    b = DownlinkBudget()
    layers = (100_000, 300_000, 1_000_000)
    b.on_remb(2 * MBIT, 1.0)
    v = [Video("a", layers[0], True, layers, 2)]
    assert b.choose_layers(v, b.plan(0, v, 1.0), 1.0) == {0: 2}
    b.on_remb(500_000, 2.0)  # 400 k spare: down to the middle layer
    assert b.choose_layers(v, b.plan(0, v, 2.0), 2.0) == {0: 1}
    v = [Video("a", layers[0], True, layers, 1)]
    b.on_remb(2 * MBIT, 3.0)  # room again: held at the middle layer
    assert b.choose_layers(v, b.plan(0, v, 3.0), 3.0) == {0: 1}
    b.on_remb(150_000, 4.0)  # further down: at once (and the hold starts again)
    assert b.choose_layers(v, b.plan(0, v, 4.0), 4.0) == {0: 0}
    v = [Video("a", layers[0], True, layers, 0)]
    for t in (5.0, 4.0 + LAYER_HOLD - 0.5):
        b.on_remb(2 * MBIT, t)
        assert b.choose_layers(v, b.plan(0, v, t), t) == {0: 0}
    t = 4.0 + LAYER_HOLD
    b.on_remb(2 * MBIT, t)
    assert b.choose_layers(v, b.plan(0, v, t), t) == {0: 2}  # the hold is over
    # another video (another key) was never held
    w = [Video("b", layers[0], True, layers, 0)]
    b2 = DownlinkBudget()
    b2.on_remb(2 * MBIT, 1.0)
    assert b2.choose_layers(w, b2.plan(0, w, 1.0), 1.0) == {0: 2}


def test_temporal_layers_are_the_steps_below_the_lowest_layer() -> None:
    """``ladder``: below the lowest layer with all its temporal layers come that layer at
    TID <= 1 and at TID 0; ``plan`` counts a simulcast video at its cheapest step, so a
    budget that fits only TID 0 keeps it flowing at a quarter of the pictures instead of
    pausing it, and ``choose_layers`` walks the steps like layers."""
    steps = ladder([100_000, 300_000, 1_000_000], [30_000, 55_000])
    assert steps == [Step(0, 0, 30_000), Step(0, 1, 55_000), Step(0, None, 100_000),
                     Step(1, None, 300_000), Step(2, None, 1_000_000)]
    # no temporal layers (or none measured yet): the layers alone
    assert ladder([100_000, 300_000], []) == [Step(0, None, 100_000), Step(1, None, 300_000)]
    # a per-TID rate not below the whole layer's (a key frame in one interval) is no step
    assert ladder([100_000], [120_000]) == [Step(0, None, 100_000)]
    # a layer measured at less than the one below (its rate not measured yet) costs that
    assert ladder([100_000, 0, 1_000_000], [30_000]) == [
        Step(0, 0, 30_000), Step(0, None, 100_000), Step(1, None, 100_000),
        Step(2, None, 1_000_000)]
    assert ladder([0, 0], []) == [Step(0, None, 0), Step(1, None, 0)]  # none measured yet
    rates = tuple(s.rate for s in steps)
    b = DownlinkBudget()
    v = [Video("a", rates[0], True, rates, 2, whole=2)]
    b.on_remb(40_000, 1.0)
    congest(b, 20, 1.0)  # temporal steps need loss on the link
    allowed = b.plan(0, v, 1.0)
    assert allowed == {0}  # TID 0 fits: not paused
    assert b.choose_layers(v, allowed, 1.0) == {0: 0}
    assert b.allocated == 30_000
    # 40 k spare: TID <= 1 (+25 k, x RESUME_MARGIN from TID 0) fits, the whole layer not
    v = [Video("a", rates[0], True, rates, 0, whole=2)]
    b.on_remb(70_000, 2.0)
    allowed = b.plan(0, v, 2.0)
    assert b.choose_layers(v, allowed, 2.0) == {0: 1}
    # room for the middle layer: the temporal steps are passed over
    b.on_remb(350_000, 3.0)
    allowed = b.plan(0, v, 3.0)
    assert b.choose_layers(v, allowed, 3.0) == {0: 3}
    # below TID 0 on a congested link: paused, as a layer was
    b.on_loss(60, 4.0)
    b.on_loss(60, 4.5)
    b.on_remb(20_000, 5.0)
    assert b.plan(0, [Video("a", rates[0], True, rates, 0)], 5.0) == set()


def test_larger_layers_at_half_their_frame_rate_are_steps_between_the_layers() -> None:
    """``ladder``'s ``half_rates``: each layer above the lowest at TID <= 1 comes just
    below that layer whole, where it costs more than the step under it."""
    steps = ladder([100_000, 300_000, 1_000_000], [30_000, 55_000],
                   [55_000, 180_000, 600_000])
    assert steps == [Step(0, 0, 30_000), Step(0, 1, 55_000), Step(0, None, 100_000),
                     Step(1, 1, 180_000), Step(1, None, 300_000),
                     Step(2, 1, 600_000), Step(2, None, 1_000_000)]
    # none where it would not lie between the step under it and the layer whole (a key
    # frame in the interval, a layer not measured yet), nor where none was measured
    assert ladder([100_000, 300_000, 1_000_000], [], [0, 90_000, 1_200_000]) == [
        Step(0, None, 100_000), Step(1, None, 300_000), Step(2, None, 1_000_000)]
    assert ladder([100_000, 300_000], [], [0]) == [Step(0, None, 100_000),
                                                   Step(1, None, 300_000)]


def simulcast_video(key: str, current: Step | None, steps: list[Step]) -> Video:
    rates = tuple(s.rate for s in steps)
    return Video(key, rates[0], True, rates,
                 steps.index(current) if current is not None else -1,
                 next(j for j, s in enumerate(steps) if s.tid is None), tuple(steps))


def test_a_remb_fall_without_loss_halves_the_frame_rate_and_keeps_the_size() -> None:
    """A viewer on a video's top layer whose REMB falls on a link that loses nothing gets
    that layer at TID <= 1 (no key frame, same size), not the layer below, and no
    LAYER_HOLD: it goes back to every picture as soon as the room is there. A lower layer
    never climbs to a larger one at half its frame rate; and on a lossy link a video
    gives up its size, not its frame rate, as long as its capacity is known."""
    steps = ladder([100_000, 300_000, 1_000_000], [30_000, 55_000],
                   [55_000, 180_000, 600_000])
    top, half, middle = steps[6], steps[5], steps[4]
    b = DownlinkBudget()
    b.on_remb(2 * MBIT, 1.0)
    v = [simulcast_video("a", top, steps)]
    assert b.choose_layers(v, b.plan(0, v, 1.0), 1.0) == {0: 6}
    b.on_remb(700_000, 2.0)  # 600 k spare above the lowest layer: half fits, top not
    assert b.choose_layers(v, b.plan(0, v, 2.0), 2.0) == {0: 5}
    v = [simulcast_video("a", half, steps)]
    b.on_remb(2 * MBIT, 3.0)  # room again: every picture at once (a temporal step up)
    assert b.choose_layers(v, b.plan(0, v, 3.0), 3.0) == {0: 6}
    # further down than half the top's rate: the middle layer whole, and the hold
    b.on_remb(450_000, 4.0)
    assert b.choose_layers(v, b.plan(0, v, 4.0), 4.0) == {0: 4}
    v = [simulcast_video("a", middle, steps)]
    b.on_remb(800_000, 5.0)  # room for the top at half its rate: not from below
    assert b.choose_layers(v, b.plan(0, v, 5.0), 5.0) == {0: 4}
    b.on_remb(2 * MBIT, 6.0)  # held, then the top layer whole
    assert b.choose_layers(v, b.plan(0, v, 6.0), 6.0) == {0: 4}
    t = 4.0 + LAYER_HOLD
    b.on_remb(2 * MBIT, t)
    assert b.choose_layers(v, b.plan(0, v, t), t) == {0: 6}
    # a viewer on the middle layer at no hold, room for the top at half only: stays
    b2 = DownlinkBudget()
    b2.on_remb(800_000, 1.0)
    assert b2.choose_layers(v, b2.plan(0, v, 1.0), 1.0) == {0: 4}
    # a lossy link: from the top layer to the middle one whole, not to the top at half
    b3 = DownlinkBudget()
    v = [simulcast_video("a", top, steps)]
    b3.sent = MBIT
    congest(b3, 20, 1.0)
    b3.on_remb(700_000, 1.0)
    assert b3.choose_layers(v, b3.plan(0, v, 1.0), 1.0) == {0: 4}
    # ... and while its capacity is known (CAPACITY_MEMORY after the loss), the REMB's
    # falls are the link's: every picture on a smaller layer, not the size at half rate
    t = 1.0 + CONGESTION_MEMORY + 1.0
    b3.on_remb(700_000, t)
    assert not b3.congested(t) and b3.choose_layers(v, b3.plan(0, v, t), t) == {0: 4}
    t = 1.0 + CAPACITY_MEMORY + 1.0
    b3.on_remb(700_000, t)
    assert b3.choose_layers(v, b3.plan(0, v, t), t) == {0: 5}


def test_after_a_remb_fall_every_video_keeps_its_size_before_any_gets_every_picture() -> None:
    """Three cameras on their 540-line layers, a receiver's REMB falls to about half
    (rates of a measured fall, 960x540 cameras): each keeps its size at half its frame
    rate, instead of the first two at every picture and the third down to 135 lines (in
    priority order, one by one); with more room the first ones get every picture
    again, in priority order."""
    steps = ladder([161_000, 400_000, 2_004_000], [64_000, 99_000],
                   [99_000, 247_000, 1_234_000])
    assert [s.rate for s in steps] == [64_000, 99_000, 161_000, 247_000, 400_000,
                                       1_234_000, 2_004_000]
    b = DownlinkBudget()
    vs = [simulcast_video(k, steps[6], steps) for k in "abc"]
    b.on_remb(4_436_000, 1.0)
    assert b.choose_layers(vs, b.plan(100_000, vs, 1.0), 1.0) == {0: 5, 1: 5, 2: 5}
    b.on_remb(5_500_000, 2.0)
    assert b.choose_layers(vs, b.plan(100_000, vs, 2.0), 2.0) == {0: 6, 1: 6, 2: 5}
    # what is set aside is only a size's half-rate step: a ladder without it upgrades in
    # priority order alone (the lowest layer whole is counted by ``plan``)
    plain = ladder([161_000, 400_000, 2_004_000], [])
    ws = [simulcast_video(k, plain[2], plain) for k in "abc"]
    b.on_remb(4_436_000, 3.0)
    assert b.choose_layers(ws, b.plan(100_000, ws, 3.0), 3.0) == {0: 2, 1: 2, 2: 0}


def test_near_a_known_capacity_one_video_at_a_time_goes_up_a_layer() -> None:
    """A link that lost packets lately: room for every video's next layer still takes
    them up one at a time, UPGRADE_GAP apart (each is a key frame into a full link).
    Without a known capacity all go up at once."""
    steps = ladder([150_000, 400_000, 2_000_000], [], [0, 0, 0])
    b = DownlinkBudget()
    b.sent = 1_500_000
    congest(b, 60, 1.0)  # the link lost packets: a capacity, a ceiling for 60 s
    t = 1.0 + CONGESTION_MEMORY + 1.0
    b.on_remb(1_500_000, t)
    assert b.ceiling(t) is not None
    vs = [simulcast_video(k, steps[0], steps) for k in "abc"]
    assert b.choose_layers(vs, b.plan(0, vs, t), t) == {0: 1, 1: 0, 2: 0}
    vs[0] = simulcast_video("a", steps[1], steps)
    b.on_remb(1_500_000, t + 1.0)
    assert b.choose_layers(vs, b.plan(0, vs, t + 1.0), t + 1.0) == {0: 1, 1: 0, 2: 0}
    t += UPGRADE_GAP
    b.on_remb(1_500_000, t)
    assert b.choose_layers(vs, b.plan(0, vs, t), t) == {0: 1, 1: 1, 2: 0}
    # no loss lately: every upgrade at once
    b2 = DownlinkBudget()
    b2.on_remb(1_500_000, 1.0)
    vs = [simulcast_video(k, steps[0], steps) for k in "abc"]
    assert b2.choose_layers(vs, b2.plan(0, vs, 1.0), 1.0) == {0: 1, 1: 1, 2: 1}


def test_a_paused_stream_resumes_into_what_the_link_carried_without_loss() -> None:
    """A REMB far below what a link delivered without loss (a receiver short of CPU
    stamps arrivals late and its estimate collapses) still chooses the layers, but a
    paused stream resumes into the highest rate an interval carried with < 2 % lost,
    within CARRIED_MEMORY seconds (``carrying``); not while the link is congested."""
    b = DownlinkBudget()
    b.on_remb(2 * MBIT, 0.0)
    b.sent = 1_800_000
    b.on_loss(2, 1.0)  # < 2 % lost: the link carried 1.8 Mbit/s
    b.on_loss(0, 2.0, reported=False)  # no report covered this interval: nothing learnt
    assert b.carried(2.0) == 1_800_000
    b.on_remb(14_000, 2.0)
    assert b.known(2.0) == 14_000 and b.carrying(2.0) == 1_800_000
    assert b.plan(100_000, videos(MBIT, active=False), 2.0) == {0}
    # a rate sent in a lossy interval is no proof
    b.sent = 3 * MBIT
    b.on_loss(8, 3.0)  # 3 %
    assert b.carried(3.0) == 1_800_000
    # congestion: the estimate alone, and what was carried is lowered to
    # sent × (1 − loss/2) for after it
    b.sent = MBIT
    congest(b, 64, 4.0)
    assert b.carrying(4.0) == 14_000
    after = 4.0 + CONGESTION_MEMORY + 0.1
    b.on_remb(14_000, after)
    assert b.carrying(after) == int(MBIT * (1 - 64 / 512))
    # and is forgotten after CARRIED_MEMORY seconds
    b.on_remb(14_000, 4.0 + CARRIED_MEMORY + 0.5)
    assert b.carrying(4.0 + CARRIED_MEMORY + 0.5) == 14_000


def test_a_probe_climbs_from_what_is_sent_when_the_remb_collapsed() -> None:
    """Every stream paused, a REMB of 14 kbit/s while 90 kbit/s of audio arrive: the
    probe pads up to PROBE_GROWTH × what was sent, what the link carries follows it up
    every interval, and the paused stream resumes within a few intervals."""
    b = DownlinkBudget()
    b.on_remb(14_000, 0.0)
    audio = 90_000
    assert b.plan(audio, [Video(0, 400_000, False)], 0.0) == set()
    target = b.waiting(audio, [Video(0, 400_000, False)], set(), 0.0)
    assert target == int(audio + 400_000 * RESUME_MARGIN)
    now, sent, intervals = 1.0, audio, 0
    while intervals < 10:
        b.sent = sent
        b.on_loss(0, now)
        b.on_remb(14_000, now)
        if b.plan(audio, [Video(0, 400_000, False)], now):
            break
        padding = b.probe_rate(target, now)
        assert padding > 0
        sent = audio + padding  # the link carries all of it
        now, intervals = now + 1.0, intervals + 1
    assert intervals <= 5 and b.probes == 1 and b.probes_failed == 0


def test_temporal_steps_need_loss_on_the_link() -> None:
    """Without loss a simulcast video that flows gets at least its lowest layer with every
    temporal layer, however low the REMB; on a congested link it may drop to TID 0."""
    rates = (30_000, 55_000, 100_000, 300_000, 1_000_000)  # q TID 0, TID <= 1, q, h, f
    b = DownlinkBudget()
    b.on_remb(40_000, 1.0)
    v = [Video("a", rates[0], True, rates, 3, whole=2)]
    allowed = b.plan(0, v, 1.0)
    assert allowed == {0} and b.allocated == 100_000  # counted at the whole lowest layer
    assert b.choose_layers(v, allowed, 1.0) == {0: 2}
    # a paused one resumes at that rate too
    assert b.waiting(0, [Video("a", rates[0], False, rates, -1, whole=2)], set(), 1.0) == \
        int(100_000 * RESUME_MARGIN)
    congest(b, 20, 2.0)
    b.on_remb(40_000, 2.0)
    allowed = b.plan(0, v, 2.0)
    assert allowed == {0} and b.choose_layers(v, allowed, 2.0) == {0: 0}


def test_with_a_send_side_estimate_a_resume_needs_the_link_to_have_delivered_it() -> None:
    """``delivery_gated``: the estimate may allow a paused stream, but it resumes only
    once the link delivered that much lately without loss (transport feedback, probe
    padding included) — probing, not guessing."""
    b = DownlinkBudget()
    b.delivery_gated = True
    paused = videos(MBIT, active=False)
    b.on_remb(5 * MBIT, 0.0)  # the estimate alone would take it
    b.on_delivered(int(0.5 * MBIT), 0.0, 0.0)
    assert b.plan(100_000, paused, 0.0) == set()
    assert b.carrying(0.0) == int(0.5 * MBIT)
    b.on_remb(5 * MBIT, 1.0)
    b.on_delivered(2 * MBIT, 0.05, 1.0)  # delivered, but with loss: it does not count
    assert b.plan(100_000, paused, 1.0) == set()
    b.on_remb(5 * MBIT, 2.0)
    b.on_delivered(int(1.3 * MBIT), 0.0, 2.0)  # 1.1 × (0.1 + 1) = 1.21 Mbit/s fits
    assert b.plan(100_000, paused, 2.0) == {0}
    # the estimate still bounds it: what arrived beyond the estimate is no room
    b.on_remb(MBIT, 2.5)
    assert b.carrying(2.5) == MBIT
    # the link narrows: what it delivers while losing caps what it carried before
    b.on_remb(5 * MBIT, 2.6)
    b.on_delivered(int(0.8 * MBIT), 0.2, 2.6)
    assert b.carrying(2.6) == int(0.8 * MBIT)
    # and what was delivered is forgotten after CARRIED_MEMORY
    b.on_loss(0, 2.0 + CARRIED_MEMORY + 1)
    b.on_remb(5 * MBIT, 2.0 + CARRIED_MEMORY + 1)
    assert b.carrying(2.0 + CARRIED_MEMORY + 1) == 0


def upgrade_interval(b: DownlinkBudget, vs: list[Video], now: float, remb: int,
                     loss: int = 0) -> tuple[dict[int, int], int]:
    """One report interval as Participant.reallocate runs it for a subscriber whose
    link carries everything it is sent: the REMB, the interval's loss, the plan, the
    layers, the upgrade probe; returns the layers chosen and the padding rate."""
    b.on_remb(remb, now)
    b.on_loss(loss, now)
    allowed = b.plan(0, vs, now)
    chosen = b.choose_layers(vs, allowed, now)
    padding = b.probe_rate(b.upgrade_target(vs, chosen, now), now, upgrade=True)
    b.sent = b.allocated
    b.sent_total = b.allocated + padding
    return chosen, padding


def test_an_upgrade_probe_proves_what_the_link_carried_with_its_padding() -> None:
    """A viewer whose REMB fell once (1.2 Mbit/s, three videos on their lowest layer)
    and then grows a few percent a second: the upgrade probe's padding grows by
    PROBE_GROWTH per loss-free interval, what was carried with it becomes ``proven``,
    and the videos climb to their top layers in seconds, not at the REMB's pace. A REMB
    fall (overuse) voids what was proven: the layers follow the REMB down again."""
    layers = (150_000, 400_000, 1_400_000)
    b = DownlinkBudget()
    vs = [Video(k, layers[0], True, layers, 0) for k in "abc"]
    remb, now = 1_000_000, 0.0
    chosen, padding = upgrade_interval(b, vs, now, remb)
    assert padding > 0 and b.probes == 1  # nothing paused: the probe is for upgrades
    for _ in range(12):
        now, remb = now + 1.0, int(remb * 1.03)
        vs = [Video(k, layers[0], True, layers, chosen.get(i, 0))
              for i, k in enumerate("abc")]
        chosen, padding = upgrade_interval(b, vs, now, remb)
        if chosen == {0: 2, 1: 2, 2: 2}:
            break
    assert chosen == {0: 2, 1: 2, 2: 2} and now <= 8.0  # the REMB alone: ~35 s
    assert b.proven > remb and b.known(now) == b.proven and b.probes_failed == 0
    # the receiver's detector sees overuse: its REMB falls, proven is void
    vs = [Video(k, layers[0], True, layers, 2) for k in "abc"]
    chosen, _ = upgrade_interval(b, vs, now + 1, int(remb * 0.85))
    assert b.proven == 0 and b.known(now + 1) == int(remb * 0.85)
    assert chosen != {0: 2, 1: 2, 2: 2}


def test_a_rate_is_not_proven_while_the_remb_falls_or_the_link_loses() -> None:
    layers = (150_000, 400_000, 1_400_000)
    vs = [Video(k, layers[0], True, layers, 0) for k in "abc"]
    for remb_step, loss in ((0.9, 0), (1.0, 10)):  # overuse each interval; 4 % lost
        b = DownlinkBudget()
        remb, now = 1_000_000, 0.0
        for _ in range(6):
            upgrade_interval(b, vs, now, remb, loss)
            now, remb = now + 1.0, int(remb * remb_step)
        assert b.proven == 0


def test_an_upgrade_probe_on_a_link_that_lost_stays_near_what_got_through() -> None:
    """After congestion (capacity: what got through, sent × (1 − loss)) an upgrade probe
    pads to at most PROBE_ABOVE_CAPACITY × that, for CAPACITY_MEMORY seconds; a rate it
    proves above raises the capacity (the next step starts from there), and counts for
    at most PROVEN_BELOW_CAPACITY × the capacity known before it."""
    layers = (150_000, 400_000, 1_400_000)
    vs = [Video(k, layers[0], True, layers, 0) for k in "abc"]
    b = DownlinkBudget()
    b.on_remb(1_200_000, 0.0)
    b.sent = 1_600_000
    congest(b, 64, 0.0)  # 25 % lost: 1.2 Mbit/s got through
    assert b.capacity == (1_200_000, 0.0)
    now = CONGESTION_MEMORY + PROBE_MIN_GAP + 1  # not congested, a probe due
    b.sent = 450_000
    _, padding = upgrade_interval(b, vs, now, 1_200_000)
    assert padding > 0 and b.allocated + padding == int(1_200_000 * PROBE_ABOVE_CAPACITY)
    b.sent_total = 1_300_000  # the link carries it: two loss-free intervals prove it
    upgrade_interval(b, vs, now + 1, 1_200_000)
    b.sent_total = 1_300_000
    upgrade_interval(b, vs, now + 2, 1_200_000)
    # the next step starts from 1.3 Mbit/s; the estimate is raised to no more than
    # PROVEN_BELOW_CAPACITY × the capacity known before (1.08 Mbit/s: the REMB is above)
    assert b.capacity == (1_300_000, 0.0) and b.proven == 0
    assert b.probe_target
    for t, rate in ((now + 3, 1_400_000), (now + 4, 1_500_000), (now + 5, 1_500_000)):
        b.sent_total = rate
        b.on_loss(0, t)
    assert b.capacity == (1_500_000, 0.0)
    assert b.proven == int(1_400_000 * PROVEN_BELOW_CAPACITY) == b.known(now + 5)
    b2 = DownlinkBudget()  # never congested: PROBE_GROWTH × the estimate
    _, padding = upgrade_interval(b2, vs, now, 1_200_000)
    assert b2.allocated + padding == int(1_200_000 * PROBE_GROWTH)
    # forgotten after CAPACITY_MEMORY
    b._end_probe(now, failed=False)
    b.proven = 0
    later = CAPACITY_MEMORY + 1
    b.on_remb(1_200_000, later - 1)
    _, padding = upgrade_interval(b, vs, later + PROBE_MIN_GAP, 1_200_000)
    assert b.capacity is None and b.allocated + padding == int(1_200_000 * PROBE_GROWTH)


def test_a_probe_that_proves_room_ends_the_hold_of_a_video_stepped_down() -> None:
    """LAYER_HOLD keeps a video stepped down while the REMB hovers; room an upgrade probe
    proved after the step down lifts it (libwebrtc probes at once after a large drop)."""
    layers = (100_000, 300_000, 1_000_000)
    b = DownlinkBudget()
    b.on_remb(2 * MBIT, 1.0)
    v = [Video("a", layers[0], True, layers, 2)]
    b.on_remb(500_000, 2.0)  # a fall: down to the middle layer, held
    assert b.choose_layers(v, b.plan(0, v, 2.0), 2.0) == {0: 1}
    v = [Video("a", layers[0], True, layers, 1)]
    chosen, padding = upgrade_interval(b, v, 2.0 + PROBE_MIN_GAP, 520_000)
    assert chosen == {0: 1} and padding > 0  # the held video is what the probe is for
    t = 2.0 + PROBE_MIN_GAP
    for _ in range(5):
        t += 1.0
        chosen, _ = upgrade_interval(b, v, t, 540_000)
        if chosen == {0: 2}:
            break
    assert chosen == {0: 2} and t < 2.0 + LAYER_HOLD and b.proven > 1_000_000


def test_an_upgrade_probe_is_judged_on_the_estimate_not_on_media_carried_before() -> None:
    """What the link carried earlier (media sent before a REMB fall) is room for a
    resume, not for an upgrade: a REMB arriving during an upgrade probe must not set
    the probe's best to it, which ended the probe at once as a 'fall' (seen in a trace)."""
    b = DownlinkBudget()
    b.on_remb(5 * MBIT, 0.0)
    b.sent = 6 * MBIT
    b.on_loss(0, 0.5)  # 6 Mbit/s carried without loss
    b.sent = b.allocated = 4 * MBIT
    assert b.probe_rate(7 * MBIT, 1.0, upgrade=True) > 0
    b.on_remb(5_050_000, 1.5)
    assert b.probe_rate(7 * MBIT, 2.0, upgrade=True) > 0 and b.probes_failed == 0


def test_after_loss_a_paused_stream_resumes_only_near_what_got_through() -> None:
    """One camera bigger than what a congested link let through stays paused however
    high the REMB climbs (a REMB overshoots while probing: two such resumes lost 7.9 % of
    a 1.5 Mbit/s link's packets, measured); the probe for it pads to at most
    PROBE_ABOVE_CAPACITY × what got through, and what it proves without loss raises that
    step by step, so a link that got better earns the camera back."""
    b = DownlinkBudget()
    audio, camera = 100_000, [Video(0, 1_650_000, True)]
    b.on_remb(5 * MBIT, 0.0)
    b.sent = 5 * MBIT
    congest(b, 180, 1.0)  # 70 % lost: 1.48 Mbit/s got through
    assert b.capacity is not None and 1_400_000 < b.capacity[0] < 1_500_000
    b.on_remb(1_200_000, 1.0)
    assert b.plan(audio, camera, 1.0) == set()  # paused for bandwidth
    got_through = b.capacity[0]
    b.sent = audio  # receiver reports still tell of the loss before the pause
    congest(b, 120, 2.0)
    assert b.capacity == (got_through, 2.0)  # not "53 kbit/s got through"
    paused = [Video(0, 1_650_000, False)]
    now = CONGESTION_MEMORY + PROBE_MIN_GAP + 2
    b.sent = audio
    b.on_loss(0, now - 1)  # the link loses nothing any more
    b.on_remb(3 * MBIT, now)  # a REMB that says it fits: not believed
    assert b.plan(audio, paused, now) == set()
    target = b.waiting(audio, paused, set(), now)
    padding = b.probe_rate(target, now)
    assert padding > 0 and audio + padding <= b.ceiling(now)  # type: ignore[operator]
    b.sent_total = audio + padding
    # the link carries what the probe sends: the ceiling rises proof by proof until
    # the camera fits, well within CAPACITY_MEMORY
    resumed_at = None
    for step in range(1, 40):
        t = now + step
        b.on_remb(3 * MBIT, t)
        b.on_loss(0, t)
        if b.plan(audio, paused, t):
            resumed_at = t
            break
        b.sent_total = audio + b.probe_rate(target, t)
    assert resumed_at is not None and resumed_at - now < 20
