"""Simulcast through the SFU, end to end over ICE/DTLS-SRTP with Python bots.

A ``SimulcastBot`` publishes three VP8 layers as Chromium does (RIDs on the first
packets only, L1T3 descriptors); a ``MediaBot`` subscribes. The SFU must bind every SSRC
by RID, forward one layer to the subscriber, switch on a key frame of the target layer
when its budget or its maximum height changes, and keep the stream continuous: sequence
numbers, timestamps, PictureID and TL0PICIDX; every payload the subscriber gets is one the
publisher sent on the layer forwarded at that moment (docs/SFU.md "Simulcast").
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator

import pytest

import sfu.allocator
from peers.mediabot import RID_PACKETS, MediaBot, Received, SimulcastBot
from sfu import Sfu, SfuConfig
from sfu.simulcast import URI_REPAIRED_RID, URI_RID
from sfu.track import PublishedTrack, Slot
from sfu.vp8 import Vp8Descriptor

pytestmark = pytest.mark.media


def body(payload: bytes) -> bytes:
    """A VP8 payload without its RFC 7741 descriptor: the frame bytes the SFU never reads."""
    return payload[Vp8Descriptor.parse(payload).size :]


class Sent:
    """What the publisher sent: each payload's frame bytes -> (layer, descriptor)."""

    def __init__(self, bot: SimulcastBot) -> None:
        self.by_body: dict[bytes, tuple[str, Vp8Descriptor, bytes]] = {}
        for x in bot.layers:
            for p in x.sent:
                self.by_body[body(p)] = (x.rid, Vp8Descriptor.parse(p), p)


def layer_at(sent: Sent, r: Received, seq: int) -> str | None:
    payload = r.payloads.get(seq)
    found = sent.by_body.get(body(payload)) if payload is not None else None
    return found[0] if found else None


def frames(r: Received) -> Iterator[tuple[int, bytes]]:
    for seq in sorted(r.payloads):
        yield seq, r.payloads[seq]


def check_stream(pub: SimulcastBot, r: Received) -> list[str]:
    """Assert the received stream is one continuous VP8 stream made of whole runs of one
    layer each, every switch at a key frame of the new layer; return the layers in order."""
    sent = Sent(pub)
    seqs = sorted(r.payloads)
    holes = [k for k in range(seqs[0], seqs[-1]) if k not in r.payloads]
    assert not holes, f"sequence numbers missing: {holes[:10]}"
    for a, b in itertools.pairwise(seqs):
        assert (r.timestamps[b] - r.timestamps[a]) & 0xFFFFFFFF < 0x80000000, "ts went back"
    runs: list[str] = []
    last_pic: int | None = None
    last_tl0: int | None = None
    for seq, payload in frames(r):
        if not payload:
            continue  # padding: the place of a late packet of a picture the TID filter dropped
        found = sent.by_body.get(body(payload))
        assert found is not None, f"payload {seq} is none the publisher sent"
        rid, original, raw = found
        got = Vp8Descriptor.parse(payload)
        # the descriptor is the original with only PictureID and TL0PICIDX rewritten
        assert (got.start_of_partition, got.partition_id, got.tid, got.size) == \
            (original.start_of_partition, original.partition_id, original.tid, original.size)
        assert payload[got.size :] == raw[original.size :]
        if not runs or runs[-1] != rid:
            # a new run of a layer starts at the first packet of one of its key frames
            assert got.start_of_partition and payload[got.size] & 0x01 == 0, \
                f"switch to {rid} at {seq} is not at a key frame: layers around it " \
                f"{[layer_at(sent, r, k) for k in range(seq - 3, seq + 4)]}"
            runs.append(rid)
        assert got.picture_id is not None and got.tl0_pic_idx is not None
        if got.start_of_partition:  # first packet of a picture
            if last_pic is not None:
                assert got.picture_id == (last_pic + 1) & 0x7FFF, \
                    f"PictureID {last_pic} -> {got.picture_id} at {seq}"
                assert last_tl0 is not None
                assert got.tl0_pic_idx == (last_tl0 + (1 if got.tid == 0 else 0)) & 0xFF, \
                    f"TL0PICIDX {last_tl0} -> {got.tl0_pic_idx} (TID {got.tid}) at {seq}"
            last_pic, last_tl0 = got.picture_id, got.tl0_pic_idx
        else:
            assert got.picture_id == last_pic and got.tl0_pic_idx == last_tl0
    return runs


def latest_layer(pub: SimulcastBot, r: Received | None) -> str | None:
    if r is None or not r.payloads:
        return None
    sent = Sent(pub)
    found = sent.by_body.get(body(r.payloads[max(r.payloads)]))
    return found[0] if found else None


class Link:
    """b's downlink: while ``lossy`` it loses one audio packet in three (a share of all
    it receives well above 5 %, so the SFU finds it congested and believes b's REMB; the
    video whose continuity the tests check loses nothing), and ``also`` more."""

    def __init__(self, also: Callable[[str, int], bool] | None = None) -> None:
        self.lossy = False
        self.also = also

    def drop(self, kind: str, seq: int) -> bool:
        if self.also is not None and self.also(kind, seq):
            return True
        return self.lossy and kind == "audio" and seq % 3 == 0


async def squeeze(sfu_: Sfu, b: MediaBot, link: Link, video: Callable[[], int | None],
                  seconds: float = 30.0) -> None:
    """Hold b's budget at a's audio as the SFU measures it plus ``video()`` bits/s, on a
    lossy link (a REMB alone steps nothing down on a link that loses nothing, docs/SFU.md
    "Loss and congestion"), until cancelled (``seconds`` at most)."""
    link.lossy = True
    try:
        for _ in range(int(seconds * 10)):
            tracks = sfu_.participants["a"].tracks.values()
            audio = sum(t.bitrate for t in tracks if t.kind == "audio")
            rate = video()
            if rate is not None:
                b.send_remb = audio + rate
            await asyncio.sleep(0.1)
    finally:
        link.lossy = False


async def overuse(b: MediaBot, seconds: float = 30.0) -> None:
    """Lower b's REMB by 5 % every 0.2 s (``seconds`` at most, or until cancelled): each
    one it sends is below the one before, as a receiver's estimate falls only on
    overuse (sfu/allocator.py REMB_FALL)."""
    for _ in range(int(seconds / 0.2)):
        b.send_remb = max(1_000, int((b.send_remb or 0) * 0.95))
        await asyncio.sleep(0.2)


@pytest.fixture(autouse=True)
def short_layer_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests step layers down and up again on purpose: the hold after a step down
    (sfu/allocator.py LAYER_HOLD, 10 s; tests/test_allocator.py) is 3 s here."""
    monkeypatch.setattr(sfu.allocator, "LAYER_HOLD", 3.0)


def video_of(sfu_: Sfu) -> PublishedTrack:
    """a's published video track."""
    return next(t for t in sfu_.participants["a"].tracks.values() if t.kind == "video")


def video_slot(sfu_: Sfu) -> Slot:
    """b's slot for a's video."""
    return next(s for s in sfu_.participants["b"].slots if s.kind == "video")


async def start(sfu_: Sfu, link: Link | None = None,
                **kwargs: object) -> tuple[SimulcastBot, MediaBot]:
    # with a link to make lossy, a sends audio too (the share ``Link`` loses)
    a = SimulcastBot("a", audio=link is not None, **kwargs)  # type: ignore[arg-type]
    # b publishes audio only: its media loop also sends its RRs (and REMBs, send_remb)
    b = MediaBot("b", video=False, loss=link.drop if link is not None else None)
    await a.join(sfu_, "s")
    await a.publish()
    await b.join(sfu_, "s")
    await b.publish()
    return a, b


async def test_answer_and_binding_survive_rid_stopping_and_a_probe_first() -> None:
    sfu_ = Sfu(SfuConfig(pli_interval=0.3))
    a, b = await start(sfu_, probe_first=True)
    try:
        assert await b.wait_for(lambda: latest_layer(a, b.stream("a", "video")) is not None,
                                timeout=15)
        answer = a.answer_sdp
        assert f"a=extmap:12 {URI_RID}" in answer
        assert f"a=extmap:13 {URI_REPAIRED_RID}" in answer
        for line in ("a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f"):
            assert line in answer.splitlines()
        track = video_of(sfu_)
        # every layer's SSRC is the one the bot sent it on (the RTX probe carrying only
        # the MID came first and bound nothing), and stays bound long after the RID
        # extension stopped (20 packets per SSRC)
        assert await a.wait_for(lambda: all(x.packets > 2 * RID_PACKETS for x in a.layers),
                                timeout=10)
        await asyncio.sleep(0.5)
        assert a.counters["probes_sent"] == 1
        assert [(x.rid, x.ssrc) for x in track.layers] == \
            [(x.rid, x.ssrc) for x in a.layers]
        stats = sfu_.stats()
        assert stats["simulcast_ssrcs_bound"] == 3
        assert stats["drop_unknown_ssrc"] == 1  # the probe
        assert track.ssrc is None and track.rtx_ssrc is None  # nothing bound by MID
        assert [x.height for x in track.layers] == [180, 360, 720]
        # the steady state of a simulcast slot is compiled (sfu/_fanout.c rewrites the
        # descriptor there): only run starts and waits take Slot.forward
        assert 0 < stats["general_path"] < stats["forwarded_packets"] // 10
        check_stream(a, b.stream("a", "video"))  # type: ignore[arg-type]
    finally:
        for bot in (a, b):
            await bot.close()
        await sfu_.close()


async def test_budget_and_max_height_switch_layers_on_key_frames(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # REMBs count from the first one (a browser's first 5 s are its start value)
    monkeypatch.setattr(sfu.allocator, "STARTUP", 0.0)
    sfu_ = Sfu(SfuConfig(pli_interval=0.3))
    a, b = await start(sfu_)
    try:
        def layer() -> str | None:
            return latest_layer(a, b.stream("a", "video"))

        # no estimate yet: the highest layer
        assert await b.wait_for(lambda: layer() == "f", timeout=15)
        stats = sfu_.stats()
        assert stats["simulcast_switches_up"] >= 1
        # a low budget: the lowest layer (whole: fewer temporal layers need loss on the
        # link), on a key frame
        plis = a.layer("q").plis
        b.send_remb = 50_000
        # and one that keeps falling, as a receiver's REMB does while it sees overuse (a
        # REMB that stays put while a loss-free link carries more is what an upgrade
        # probe proves wrong, docs/SFU.md "Loss and congestion")
        falling = asyncio.ensure_future(overuse(b))
        try:
            assert await b.wait_for(lambda: layer() == "q", timeout=10)
            assert a.layer("q").plis > plis  # the SFU asked that layer for its key frame
            assert sfu_.stats()["simulcast_switches_down"] >= 1
            await asyncio.sleep(1.0)
            assert layer() == "q"  # and stays there
        finally:
            falling.cancel()
        # a large budget: back up (once the hold after the step down is over)
        b.send_remb = 10_000_000
        assert await b.wait_for(lambda: layer() == "f", timeout=10)
        # the tile is shown at most 360 high: the middle layer
        slot = video_slot(sfu_)
        assert slot.params is not None
        await sfu_.handle("b", {"type": "sfu-video-constraints", "mid": slot.params.mid,
                                "height": 360})
        assert await b.wait_for(lambda: layer() == "h", timeout=10)
        await sfu_.handle("b", {"type": "sfu-video-constraints", "mid": slot.params.mid,
                                "height": None})
        assert await b.wait_for(lambda: layer() == "f", timeout=10)
        await asyncio.sleep(0.5)
        runs = check_stream(a, b.stream("a", "video"))  # type: ignore[arg-type]
        # dynacast pauses h while no subscriber needs it (5 s): the 360 limit then takes
        # q for the moment h needs to come back
        assert runs[-5:] == ["f", "q", "f", "h", "f"] or \
            runs[-6:] == ["f", "q", "f", "q", "h", "f"], runs
        stats = sfu_.stats()
        assert stats["simulcast_switches"] == stats["simulcast_switches_up"] + \
            stats["simulcast_switches_down"]
        assert stats["simulcast_switches"] >= len(runs) - 1
        assert stats["video_constraints"] == 2
        assert not b.errors
        # bad constraints are documented errors, not crashes
        await sfu_.handle("b", {"type": "sfu-video-constraints", "mid": "nope", "height": 1})
        await sfu_.handle("b", {"type": "sfu-video-constraints", "mid": slot.params.mid,
                                "height": "tall"})
        assert await b.wait_for(lambda: len(b.errors) == 2, timeout=5)
        assert [e["id"] for e in b.errors] == ["unknown-mid", "bad-message"]
    finally:
        for bot in (a, b):
            await bot.close()
        await sfu_.close()


async def test_losses_repaired_per_layer_and_across_switches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Uplink holes on a layer are NACKed on that layer's SSRC and repaired from its RTX
    SSRC (bound by repaired RID); the subscriber's own losses are resent with the
    descriptor rewritten as first sent, before and after a switch."""
    monkeypatch.setattr(sfu.allocator, "STARTUP", 0.0)
    sfu_ = Sfu(SfuConfig(pli_interval=0.3))
    calls = {"f": 0, "q": 0, "h": 0}

    def uplink(rid: str, seq: int) -> bool:
        calls[rid] += 1
        return calls[rid] > 100 and calls[rid] % 37 == 0

    videos = itertools.count(1)
    newest: list[int] = []

    def lose(kind: str, seq: int) -> bool:
        """b loses every 41st video packet that comes in order (2.4 %: the link is not
        congested) and NACKs it. Never the first (the stream would start at a delta frame:
        b asks for no key frame), nor one that fills a hole (b NACKs a hole once; a browser
        asks again)."""
        if kind != "video":
            return False
        in_order = bool(newest) and seq == (newest[0] + 1) & 0xFFFF
        if not newest or 0 < (seq - newest[0]) & 0xFFFF < 0x8000:
            newest[:] = [seq]
        return in_order and next(videos) % 41 == 0

    link = Link(also=lose)
    a, b = await start(sfu_, link, layer_loss=uplink)
    try:
        def layer() -> str | None:
            return latest_layer(a, b.stream("a", "video"))

        async def max_height(height: int | None) -> None:
            slot = video_slot(sfu_)
            assert slot.params is not None
            await sfu_.handle("b", {"type": "sfu-video-constraints", "mid": slot.params.mid,
                                    "height": height})

        assert await b.wait_for(lambda: layer() == "f", timeout=15)
        await asyncio.sleep(3.0)
        await max_height(180)  # a switch to the lowest layer
        assert await b.wait_for(lambda: layer() == "q", timeout=10)
        await asyncio.sleep(3.0)
        await max_height(None)
        assert await b.wait_for(lambda: layer() == "f", timeout=10)
        await asyncio.sleep(1.0)  # losses on the top layer again, after the switch back
        await a.stop_media()
        await asyncio.sleep(1.0)  # the last repairs
        track = video_of(sfu_)
        stats = sfu_.stats()
        assert a.counters["uplink_withheld"] > 0
        assert stats["upstream_recovered"] > 0
        # RTX SSRCs bound by repaired RID, each to its own layer
        assert track.layers[2].rtx_ssrc == a.layer("f").rtx_ssrc
        for ours, theirs in zip(track.layers, a.layers, strict=True):
            assert ours.rtx_ssrc in (None, theirs.rtx_ssrc)
        r = b.stream("a", "video")
        assert r is not None and r.recovered > 0 and b.counters["injected_loss"] > 0
        runs = check_stream(a, r)  # retransmissions included: same bytes as first sent
        assert "q" in runs and runs[-1] == "f"
    finally:
        for bot in (a, b):
            await bot.close()
        await sfu_.close()


async def test_a_budget_below_the_lowest_layer_drops_its_temporal_layers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget that fits only the lowest layer's TID 0 (docs/SFU.md "Simulcast"): the
    subscriber gets that layer's TID 0 pictures only, one contiguous stream (sequence
    numbers, PictureIDs, TL0PICIDX), until the budget grows and every layer is back."""
    monkeypatch.setattr(sfu.allocator, "STARTUP", 0.0)
    sfu_ = Sfu(SfuConfig(pli_interval=0.3))
    link = Link()
    a, b = await start(sfu_, link)
    budget: asyncio.Future[None] | None = None
    try:
        def layer() -> str | None:
            return latest_layer(a, b.stream("a", "video"))

        assert await b.wait_for(lambda: layer() == "f", timeout=15)
        q = video_of(sfu_).layers[0]
        slot = video_slot(sfu_)
        # the SFU measured q's rate per temporal layer: TID 0, TID <= 1 (L1T3)
        assert await b.wait_for(lambda: len(q.temporal_rates) == 2, timeout=10)
        tid0, tid01 = q.temporal_rates
        assert 0 < tid0 < tid01 < q.bitrate

        # 1.3 × q's TID 0 rate as measured now, on a lossy link: TID 0 fits, TID 1 on
        # top does not (about as much again); it follows the measurement, key frames and all
        budget = asyncio.ensure_future(squeeze(
            sfu_, b, link, lambda: int(q.temporal_rates[0] * 1.3) if q.temporal_rates else None))
        assert await b.wait_for(lambda: layer() == "q" and slot.temporal == 0, timeout=10)
        r = b.stream("a", "video")
        assert r is not None
        # a congested link is paced (docs/SFU.md "Loss and congestion"): what the pacer
        # holds (0.5 s at most) was forwarded before the step down
        await asyncio.sleep(0.6)
        mark = max(r.payloads)
        dropped = sfu_.stats().get("temporal_dropped", 0)
        await asyncio.sleep(3.0)
        assert slot.temporal == 0 and layer() == "q"
        after = [Vp8Descriptor.parse(r.payloads[k]) for k in sorted(r.payloads) if k > mark]
        assert len(after) >= 6  # 20 pictures/s, a quarter of them TID 0, one packet each
        assert {d.tid for d in after} == {0}  # nothing but TID 0 came
        assert sfu_.stats()["temporal_dropped"] > dropped
        budget.cancel()
        b.send_remb = 10_000_000  # room again: the top layer, every temporal layer
        assert await b.wait_for(lambda: layer() == "f", timeout=10)
        mark = max(r.payloads)
        await asyncio.sleep(1.0)
        assert {Vp8Descriptor.parse(r.payloads[k]).tid for k in r.payloads if k > mark} \
            == {0, 1, 2}
        runs = check_stream(a, r)  # no hole, PictureID and TL0PICIDX continuous
        assert runs[-2:] == ["q", "f"], runs
        stats = sfu_.stats()
        assert stats["temporal_switches_down"] >= 1 and stats["temporal_switches_up"] >= 1
        assert not b.errors
    finally:
        if budget is not None:
            budget.cancel()
        for bot in (a, b):
            await bot.close()
        await sfu_.close()


async def test_a_remb_falling_on_a_loss_free_link_halves_the_top_layers_frame_rate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A REMB that keeps falling (overuse) on a link that loses nothing, to between the top
    layer's rate at TID <= 1 and its whole rate (docs/SFU.md "Selection"): the subscriber
    keeps the top layer, at TID <= 1, with no key frame asked and no layer switch; once
    the room is back, every picture again from the next layer sync (Y), one contiguous
    stream throughout."""
    monkeypatch.setattr(sfu.allocator, "STARTUP", 0.0)
    sfu_ = Sfu(SfuConfig(pli_interval=0.3))
    a, b = await start(sfu_)

    async def falling(start: int) -> None:
        # each report (one a second) 4 % below the one before: overuse, never a proof
        b.send_remb = start
        for _ in range(30):
            await asyncio.sleep(1.0)
            b.send_remb = int((b.send_remb or 0) * 0.96)

    fall: asyncio.Future[None] | None = None
    try:
        def layer() -> str | None:
            return latest_layer(a, b.stream("a", "video"))

        assert await b.wait_for(lambda: layer() == "f", timeout=15)
        f = video_of(sfu_).layers[2]
        slot = video_slot(sfu_)
        assert await b.wait_for(lambda: len(f.temporal_rates) == 2, timeout=10)
        await asyncio.sleep(2.0)  # every layer measured over a few intervals
        half = f.temporal_rates[1]
        assert half < 0.7 * f.bitrate  # the bot's pictures are alike: half the rate
        plis, switches = a.layer("f").plis, sfu_.stats()["simulcast_switches"]
        # from 92 % of the top layer's rate: below it, far above it at TID <= 1
        fall = asyncio.ensure_future(falling(int(0.92 * f.bitrate)))
        assert await b.wait_for(lambda: slot.temporal == 1, timeout=10)
        assert slot.source is f and (b.send_remb or 0) > 1.2 * half
        r = b.stream("a", "video")
        assert r is not None
        mark = max(r.payloads)
        await asyncio.sleep(1.5)
        after = [Vp8Descriptor.parse(r.payloads[k]) for k in sorted(r.payloads) if k > mark]
        assert len(after) >= 10 and {d.tid for d in after} == {0, 1}
        assert layer() == "f" and slot.temporal == 1
        fall.cancel()
        b.send_remb = 10_000_000  # room again: every picture, at a layer sync
        assert await b.wait_for(lambda: slot.temporal is None, timeout=10)
        mark = max(r.payloads)
        await asyncio.sleep(1.0)
        assert {Vp8Descriptor.parse(r.payloads[k]).tid for k in r.payloads if k > mark} \
            == {0, 1, 2}
        # neither step asked for a key frame or switched the layer
        assert a.layer("f").plis == plis
        stats = sfu_.stats()
        assert stats["simulcast_switches"] == switches
        assert stats["temporal_switches_down"] >= 1 and stats["temporal_switches_up"] >= 1
        runs = check_stream(a, r)  # no hole, PictureID and TL0PICIDX continuous
        assert runs[-1] == "f", runs
        assert not b.errors
    finally:
        if fall is not None:
            fall.cancel()
        for bot in (a, b):
            await bot.close()
        await sfu_.close()


async def test_a_paused_layer_is_not_selected() -> None:
    """A layer the publisher stopped sending (encodings[i].active = false) is left: the
    subscriber moves to the highest layer still sent, at its key frame."""
    sfu_ = Sfu(SfuConfig(pli_interval=0.3))
    a, b = await start(sfu_)
    try:
        def layer() -> str | None:
            return latest_layer(a, b.stream("a", "video"))

        assert await b.wait_for(lambda: layer() == "f", timeout=15)
        a.layer("f").active = False
        assert await b.wait_for(lambda: layer() == "h", timeout=10)
        check_stream(a, b.stream("a", "video"))  # type: ignore[arg-type]
    finally:
        for bot in (a, b):
            await bot.close()
        await sfu_.close()


async def test_a_contradictory_simulcast_offer_is_a_documented_error() -> None:
    """No RID extension to tell the layers apart: ``sfu-error`` ``bad-sdp``, counted, and
    the SFU goes on serving the room."""
    sfu_ = Sfu(SfuConfig())

    class NoRid(SimulcastBot):
        def munge_offer(self, sdp: str) -> str:
            return "\r\n".join(line for line in super().munge_offer(sdp).split("\r\n")
                               if URI_RID not in line)

    a = NoRid("a")
    b = MediaBot("b", video=False)
    try:
        await a.join(sfu_, "s")
        await a.publish()
        assert await a.wait_for(lambda: bool(a.errors), timeout=10)
        assert a.errors[0]["id"] == "bad-sdp" and "RID" in a.errors[0]["message"]
        assert sfu_.stats()["error_bad-sdp"] == 1
        assert not sfu_.participants["a"].tracks
        await b.join(sfu_, "s")
        await b.publish()
        assert await a.wait_for(lambda: a.stream("b", "audio") is not None, timeout=15)
    finally:
        for bot in (a, b):
            await bot.close()
        await sfu_.close()
