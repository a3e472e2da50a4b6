"""Shaped links in real Chromium: a bad link costs its owner, not the call.

Three headless Chromiums with moving, noisy cameras (peers/fakecam.py
``write_moving_y4m``: ~1.7 Mbit/s each) hold a call through the SFU that ``sealroom
serve`` builds; bench/netshape.py spoils one participant's link on loopback:

* A's uplink loses 5 % of its packets: the SFU asks A again for what it lost (NACK,
  RFC 4585 §6.2.1) and A's retransmissions (RFC 4588) fill the holes before B and C
  ask for them, so B and C keep decoding A;
* C's downlink carries one camera but not two: the SFU pauses what C cannot receive
  (and tells C's page, which shows the tile as paused for bandwidth) instead of letting
  the bottleneck drop a share of everything; A and B, whose links are fine, keep
  receiving each other at full rate; when the limit goes, C gets both again;
* with simulcast (three layers from a 960×540 camera, every tile as tall as the camera),
  the same limit costs C the top layers: C gets every camera on a lower layer and
  decodes it, nothing paused, while A and B keep decoding each other.

The calls are driven by bench/links.py, the command that measures the same cases at
length for the issue's table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import netshape
from bench.links import (
    PairWindow,
    Participant,
    Sample,
    call,
    counter_delta,
    describe,
    heights_reach,
    pair_window,
    record,
    windows,
)
from bench.netshape import drop_uplink, limit_downlink
from tests.conftest import BrowserFactory

pytestmark = [pytest.mark.browser, pytest.mark.media]


@pytest.fixture(autouse=True)
def private_lo() -> None:
    if not netshape.in_private_net():
        pytest.skip("needs a private network namespace with only lo (./dev test gives one)")
    netshape.reset()


def pairs_from(samples: list[dict[str, Sample]], viewer: Participant,
               senders: list[Participant], start: int = 0) -> dict[str, float]:
    """Median fps of viewer ← each sender over samples[start:]."""
    return {s.name: pair_window(samples, viewer.name, s.name, s.id, start).median_fps
            for s in senders}


async def test_uplink_loss_is_repaired_upstream(chromium: BrowserFactory, tmp_path: Path) -> None:
    """5 % random loss on A's uplink for 20 s: the SFU recovers A's lost packets from A
    itself, subscribers rarely ask for a packet the SFU lacks, and B and C decode A all
    along."""
    async with call(chromium, tmp_path, 3) as (srv, parts):
        a, b, c = parts
        assert all(set(p.ports) == {"pub", "sub"} for p in parts), [p.ports for p in parts]
        before = srv.counters()
        with drop_uplink(a.ports.values(), 0.05) as shaping:
            samples = await record(parts, 20)
            shaper = shaping.stats()
        sfu = counter_delta(before, srv.counters())
        got = windows(samples, parts)
        diag = f"\nSFU: {sfu}\nshaper: {shaper}\n{describe(got)}"
        assert shaper is not None and shaper.drops > 20, diag  # the loss happened

        assert sfu.get("upstream_nacks_sent", 0) > 0, "the SFU never NACKed A" + diag
        assert sfu.get("upstream_recovered", 0) > 0, "no hole filled by A's RTX" + diag
        # Each packet A lost, unrepaired, is a hole both B and C would NACK in vain.
        assert sfu.get("nack_misses", 0) <= 0.2 * shaper.drops, diag
        for viewer in (b, c):
            w = pair_window(samples, viewer.name, a.name, a.id)
            assert w.median_fps >= 15, diag
            assert w.freeze_seconds <= 4.0, diag
            # Decoding never stops for two seconds in a row.
            for i in range(len(samples) - 2):
                step = pair_window(samples, viewer.name, a.name, a.id, i, i + 3)
                assert step.frames_decoded > 0, f"{viewer.name} stopped decoding A at {i} s{diag}"
        for p in parts:
            assert p.errors == [], p.errors


@pytest.mark.parametrize("bwe", ["remb", "transport-cc"])
async def test_downlink_limit_pauses_what_does_not_fit(
    chromium: BrowserFactory, tmp_path: Path, bwe: str
) -> None:
    """C's downlink limited to 2.2 Mbit/s (one 1.7 Mbit/s camera and audio fit, two do
    not): within 35 s C's loss over the last 10 s is a few percent at most, because the
    SFU pauses what does not fit for C and C's page shows each camera it does not
    decode at a fair rate as paused ("bandwidth"); A and B keep ≥ 80 %
    of their clean rate from each other. Lifted, C decodes both again within 75 s (a
    receive-side estimate climbs ~8 %/s while the SFU probes, and a resume that failed
    under the limit holds the next one back for up to 32 s). The same with the SFU's
    own estimate from transport-wide feedback (``--bwe transport-cc``), which then
    replaces every REMB."""
    kbit, window = 2200, 10
    async with call(chromium, tmp_path, 3, "--bwe", bwe) as (srv, parts):
        a, b, c = parts
        clean = await record(parts, 6)
        clean_ab = pair_window(clean, a.name, b.name, b.id)
        clean_ba = pair_window(clean, b.name, a.name, a.id)

        def settled(samples: list[dict[str, Sample]]) -> bool:
            if len(samples) < 15:
                return False
            got = windows(samples, parts, start=-(window + 1))
            into_c = [w for w in got if w.viewer == c.name]
            lost = sum(w.packets_lost for w in into_c)
            total = lost + sum(w.packets_received for w in into_c)
            shown = all(w.median_fps >= 10 or w.paused == "bandwidth" for w in into_c)
            return total > 0 and lost <= 0.03 * total and shown

        before = srv.counters()
        with limit_downlink(c.ports.values(), kbit) as shaping:
            samples = await record(parts, 35, until=settled)
            shaper = shaping.stats()
        sfu = counter_delta(before, srv.counters())
        got = windows(samples, parts, start=-(window + 1))
        diag = (f"\nafter {len(samples)} s at {kbit} kbit/s\nSFU: {sfu}\nshaper: {shaper}\n"
                f"clean: {describe([clean_ab, clean_ba])}\nlimited: {describe(got)}")
        assert shaper is not None and shaper.packets > 0, "nothing went through the shaper" + diag
        if bwe == "transport-cc":
            # the budget came from transport feedback: Chromium sent no REMB at all
            assert sfu.get("twcc_feedback_received", 0) > 35, diag
            assert sfu.get("remb_received", 0) == 0, diag

        into_c = [w for w in got if w.viewer == c.name]
        lost = sum(w.packets_lost for w in into_c)
        total = lost + sum(w.packets_received for w in into_c)
        assert lost <= 0.03 * total, f"C loses {lost}/{total} over the last {window} s" + diag
        # Every camera C does not decode is shown paused for bandwidth (the issue: paused
        # tiles "resume in turn as the budget allows, or stay paused with the notice").
        # One camera would fit; C keeps it in most runs, but not all: when the estimate
        # dips below it at the onset, both are paused and the probe can take longer than
        # this window to bring one back (docs/SFU.md "Loss and congestion").
        for w in into_c:
            assert w.median_fps >= 10 or w.paused == "bandwidth", f"{w.sender} → C" + diag
        assert sfu.get("bwe_pauses", 0) > 0, "the SFU never paused a stream for C" + diag
        for viewer, sender, ref in ((a, b, clean_ab), (b, a, clean_ba)):
            w = pair_window(samples, viewer.name, sender.name, sender.id, -(window + 1))
            assert w.kbit >= 0.8 * ref.kbit, f"{viewer.name}←{sender.name}" + diag

        # The limit goes: C decodes both cameras again (paused tiles resume), bounded.
        senders = [a, b]

        def resumed(samples: list[dict[str, Sample]]) -> bool:
            if len(samples) < 4:
                return False
            fps = pairs_from(samples, c, senders, start=-3)
            last = samples[-1][c.name].paused
            return all(v >= 10 for v in fps.values()) and not any(
                last.get(s.id) for s in senders)

        after = await record(parts, 75, until=resumed)
        assert resumed(after), (
            f"C did not get both cameras back within 75 s: "
            f"{describe(windows(after, parts, start=-4))}\n"
            f"SFU since the limit began: {counter_delta(before, srv.counters())}" + diag)
        for p in parts:
            assert p.errors == [], p.errors


async def test_simulcast_downlink_limit_costs_the_top_layer_only(
    chromium: BrowserFactory, tmp_path: Path
) -> None:
    """Three publishers of three simulcast layers (135, 270, 540 lines); every tile is
    540 px high, so on clean links everyone gets everyone's top layer. C's downlink
    limited to 1.5 Mbit/s (one top layer at this camera's ~1.5–2.3 Mbit/s does not fit,
    the lower ones do): within 60 s, for three samples in a row, C decodes A and B on a
    layer below the top, neither paused, while A and B keep decoding each other, unpaused
    (docs/SFU.md "Simulcast": the budget counts each video at its lowest layer, upgrades
    fill what is left).

    Not asserted: that A and B keep each other's *top* layer. They often do, but in 2 of
    4 runs one of them was stepped down to the lowest layer by its own receive-side
    estimate (REMB), which on two busy cores falls on a lossless loopback link, and which
    the SFU's layer choice believes without loss (BENCHMARKS.md "Links with simulcast":
    the proposed fix). The cameras run at 15 fps: at 30 fps that happens to most viewers."""
    kbit, top, window = 1500, 540, 3
    # The server in its own process (as bench.links runs it): in this one, the SFU's loop
    # would share the interpreter with Playwright parsing three pages' stats every second.
    async with call(chromium, tmp_path, 3, simulcast=True, camera=(960, 540),
                    tile_height=top, camera_fps=15, camera_seconds=2.0,
                    process=True) as (srv, parts):
        c = parts[2]
        pre = await heights_reach(parts, lambda h: h == top, seconds=30)
        clean = windows(pre, parts, start=-2)
        assert all(w.frame_height == top for w in clean), (
            "not everyone got the top layer before the limit: " + describe(clean))

        def fine(w: PairWindow) -> bool:
            """C decodes every camera on a lower layer all along, every second, unpaused;
            A and B decode each other, unpaused."""
            if w.viewer == c.name:
                return (0 < w.min_height <= w.max_height < top and w.paused is None
                        and w.frames_decoded > 0 and w.min_fps > 0)
            if w.sender != c.name:
                return w.paused is None and w.frames_decoded > 0
            return True

        def settled(samples: list[dict[str, Sample]]) -> bool:
            # 8 s at least: the onset (C's link congests, the SFU steps C down) is over
            return len(samples) >= 8 and all(
                fine(w) for w in windows(samples, parts, start=-window))

        before = srv.counters()
        with limit_downlink(c.ports.values(), kbit) as shaping:
            samples = await record(parts, 60, until=settled)
            shaper = shaping.stats()
        sfu = counter_delta(before, srv.counters())
        got = windows(samples, parts, start=-window)
        diag = (f"\nafter {len(samples)} s at {kbit} kbit/s\nSFU: {sfu}\nshaper: {shaper}\n"
                f"clean: {describe(clean)}\nlimited: {describe(got)}")
        assert shaper is not None and shaper.packets > 0, "nothing went through the shaper" + diag
        for w in got:
            assert fine(w), f"{w.sender} → {w.viewer}" + diag
        assert sfu.get("simulcast_switches_down", 0) > 0, "no layer went down" + diag
        for p in parts:
            assert p.errors == [], p.errors
