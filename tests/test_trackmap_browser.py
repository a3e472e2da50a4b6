"""A hostile SFU lies in the ``tracks`` map, in real Chromium: no lie puts a picture on screen.

The subscriber PeerConnection's ``sfu-offer`` carries a ``tracks`` map, MID → participant
(docs/SFU.md "Signaling messages"). The page attaches a decrypt transform to every
receiver for the participant the map names for its MID, or for nobody (participant null)
when the map does not name it (web/js/media.js); the worker drops every frame of a
receiver attached for nobody (``unmapped``, FORMAT.md §6 rule 1) and every frame whose key
is not the named participant's (``wrong-sender``, rule 7). The SFU can only lie in the
map: it cannot read or forge a frame.

Three headless Chromiums meet in a sealed room through a real ``sealroom`` server (SFU in
this process), on the real page, E2EE on: publishers A and B, each with its own fake camera
pattern (peers/fakecam.py), and the subscriber C (camera off). The SFU forwards every
track as usual; only the ``tracks`` map in the sub offers it sends to C is forged, by
wrapping ``Participant.send`` — ``Participant._maybe_offer`` builds the map inline and
hands the offer straight to ``send``, so that is where the hostile SFU rewrites it.

1. Omitted: the map sent to C never names A's video MID (from C's first sub offer on).
   C's receiver on that MID gets A's packets (``packetsReceived`` grows) but decodes
   nothing (``framesDecoded`` 0), the worker's ``dropped.unmapped`` grows, and no tile
   shows A's picture (A's tile has A's audio only). Control: B's video, mapped honestly
   in the same offer, decodes and B's tile shows B's picture.
2. Swapped: the SFU sends C a new sub offer (same SDP, as a renegotiation) whose map
   names B for A's video MID and A for B's. The page re-attaches both receivers (the
   RTCRtpScriptTransform API lets a receiver get a new transform) and the worker drops
   every frame on both as ``wrong-sender``: A's video MID still never decodes a frame,
   B's stops decoding, and neither tile shows the other's picture (the page says "key
   of another participant" on both). The page does not fail or reconnect. (What is
   seen, not asserted: A's tile, now holding B's MID's track, shows nothing; B's tile,
   now holding A's MID's track, which never decoded, keeps showing B's last decoded
   picture, frozen — the <video> keeps its last frame when its stream's track changes.)
3. Control: the SFU sends the honest map again. Both receivers are re-attached to the
   right participants and both decode — A's video MID for the first time — and the tiles
   show the right pictures: what arrived on A's MID all along was A's decodable video,
   and the re-attach path works, so only the frame layer's checks kept it off screen.

Measured: C's worker counters (``getCounters``) and the inbound-rtp stats, per MID, of
C's subscriber PeerConnection; pixels of C's tiles against the fake cameras' patterns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peers.fakecam import block_diff, expected
from sfu import Sfu
from sfu.participant import Participant
from tests.callpage import join, open_browser, sample, until
from tests.conftest import BrowserFactory
from tests.test_replay_browser import HIDE_VIDEO, poll, serve, slot_of, worker_counters

pytestmark = [pytest.mark.browser, pytest.mark.media]

Tracks = list[dict[str, Any]]
SEEDS = {"A": 1, "B": 2, "C": 3}  # fake camera patterns (C's camera is turned off)
MATCH = 25  # block_diff below this: the tile shows that camera (as tests/callpage.py sees)
WINDOW = 2.5  # seconds each phase is watched for


class HostileMap:
    """Forges the ``tracks`` map of the sub offers the SFU sends to chosen subscribers.

    ``rewrite`` gets the honest map (what ``_maybe_offer`` built) and returns the one sent;
    ``victim`` says which subscribers get forged maps. ``reoffer`` makes the SFU send a
    subscriber a new sub offer although nothing changed (a renegotiation, as a hostile SFU
    may send at any time)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rewrite: Callable[[Tracks], Tracks] | None = None
        self.victim: Callable[[str], bool] = lambda pid: False
        self.sent: list[tuple[str, Tracks, Tracks]] = []  # (subscriber, honest, sent)
        self._force: set[str] = set()
        original_send = Participant.send
        original_sync = Participant._sync_slots

        async def send(p: Participant, msg: dict[str, Any]) -> None:
            if msg.get("type") == "sfu-offer" and msg.get("pc") == "sub" \
                    and self.rewrite is not None and self.victim(p.pid):
                honest = [dict(t) for t in msg["tracks"]]
                forged = self.rewrite([dict(t) for t in honest])
                msg = {**msg, "tracks": forged}
                self.sent.append((p.pid, honest, forged))
            await original_send(p, msg)

        def sync_slots(p: Participant) -> bool:
            changed = original_sync(p)
            if p.pid in self._force:
                self._force.discard(p.pid)
                return True
            return changed

        monkeypatch.setattr(Participant, "send", send)
        monkeypatch.setattr(Participant, "_sync_slots", sync_slots)

    async def reoffer(self, p: Participant) -> None:
        await poll(lambda: not p._awaiting_answer, 10, "no sub offer outstanding")
        sent = len(self.sent)
        self._force.add(p.pid)
        await p.renegotiate()  # coalesced: the offer leaves once changes settle
        await poll(lambda: p.pid not in self._force and len(self.sent) == sent + 1, 10,
                   "a new sub offer")
        await poll(lambda: not p._awaiting_answer, 15, "the subscriber's answer")


def omit(participant: str, kind: str) -> Callable[[Tracks], Tracks]:
    return lambda tracks: [t for t in tracks
                           if not (t["participant"] == participant and t["kind"] == kind)]


def swap(x: str, y: str, kind: str) -> Callable[[Tracks], Tracks]:
    def rewrite(tracks: Tracks) -> Tracks:
        for t in tracks:
            if t["kind"] == kind and t["participant"] in (x, y):
                t["participant"] = y if t["participant"] == x else x
        return tracks
    return rewrite


async def video_by_mid(page: Any) -> dict[str, dict[str, int]]:
    """inbound-rtp stats of every video receiver of the page's subscriber PC, by MID."""
    stats: dict[str, dict[str, int]] = await page.evaluate(
        """async () => {
            const { sub } = await window.sealroom.call.media.stats();
            const out = {};
            sub?.forEach((r) => {
              if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
              out[r.mid] = {};
              for (const k of ['packetsReceived', 'framesReceived', 'framesDecoded',
                               'keyFramesDecoded']) {
                out[r.mid][k] = r[k] ?? 0;
              }
            });
            return out;
        }"""
    )
    return stats


async def page_map(page: Any) -> dict[str, str]:
    """The map the page holds (media.js ``tracks``): MID → 'participant/kind'."""
    got: dict[str, str] = await page.evaluate(
        """() => Object.fromEntries([...window.sealroom.call.media.tracks]
                 .map(([mid, t]) => [mid, `${t.participant}/${t.kind}`]))"""
    )
    return got


class State:
    """What C's page says at one moment."""

    def __init__(self, counters: dict[str, Any], video: dict[str, dict[str, int]]) -> None:
        self.counters, self.video = counters, video

    def dropped(self, reason: str) -> int:
        return int(self.counters["dropped"].get(reason, 0))

    def stat(self, mid: str, key: str) -> int:
        return int(self.video.get(mid, {}).get(key, 0))


async def state(page: Any) -> State:
    return State(await worker_counters(page), await video_by_mid(page))


def delta(s0: State, s1: State, mids: dict[str, str]) -> str:
    drops = {k: s1.dropped(k) - s0.dropped(k) for k in s1.counters["dropped"]}
    drops = {k: v for k, v in drops.items() if v}
    video = {name: {k: s1.stat(mid, k) - s0.stat(mid, k) for k in
                    ("packetsReceived", "framesReceived", "framesDecoded")}
             for name, mid in mids.items()}
    return (f"worker +decrypted {s1.counters['decrypted'] - s0.counters['decrypted']},"
            f" +dropped {drops}; video {video}")


async def watch_tiles(page: Any, tiles: list[str], seconds: float) -> dict[str, list[Any]]:
    """Sample the tiles for `seconds`: per tile, its block_diff to each camera pattern
    (or None when the tile shows no picture), every 0.25 s."""
    seen: dict[str, list[Any]] = {t: [] for t in tiles}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for t in tiles:
            got = await sample(page, t)
            seen[t].append(None if got is None else
                           {who: round(block_diff(got, expected(seed)))
                            for who, seed in SEEDS.items() if who != "C"})
        await asyncio.sleep(0.25)
    return seen


def shows(seen: list[Any], who: str) -> bool:
    """Some sample looked like `who`'s camera."""
    return any(s is not None and s[who] < MATCH for s in seen)


async def test_forged_track_maps_put_no_picture_on_screen(
    chromium: BrowserFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = HostileMap(monkeypatch)
    async with serve() as (sfu, url):
        pages = {who: await open_browser(chromium, tmp_path, seed) for who, seed in SEEDS.items()}
        a, b, c = pages["A"], pages["B"], pages["C"]
        ids: dict[str, str] = {}
        for who in ("A", "B"):
            page = pages[who]
            await join(page, url, who)
            await page.wait_for_selector("#room-view:not([hidden])")
            await page.add_style_tag(content=HIDE_VIDEO)  # A and B need to show nothing
            await page.click("#mic")  # nobody's audio is needed
            ids[who] = (await until(page, "s => s.id !== null"))["id"]
        a_id, b_id = ids["A"], ids["B"]
        # From now on every sub offer to anybody but A and B (that is, to C) omits A's
        # video; C joins only now, so its first sub offer is forged already.
        hostile.victim = lambda pid: pid not in (a_id, b_id)
        hostile.rewrite = omit(a_id, "video")
        await join(c, url, "C")
        await c.wait_for_selector("#room-view:not([hidden])")
        c_id = (await until(c, "s => s.id !== null"))["id"]
        await c.click("#camera")  # C publishes no video: A and B decode only each other
        await c.click("#mic")
        assert (await until(c, "s => true"))["api"] == "script", "this test expects Chromium's" \
            " RTCRtpScriptTransform (media.js re-attaches receivers only with it)"

        mids: dict[str, str] = {}
        for who, pid in (("A", a_id), ("B", b_id)):
            mids[who] = (await poll(_slot(sfu, c_id, pid), 30, f"C's slot of {who}'s video")
                         ).transceiver.mid
        sub_c = sfu.participants[c_id]
        assert hostile.sent and all(p == c_id for p, _, _ in hostile.sent), hostile.sent
        assert all(not any(t["mid"] == mids["A"] for t in sent) for _, _, sent in hostile.sent)
        assert mids["A"] not in await page_map(c)
        assert (await page_map(c))[mids["B"]] == f"{b_id}/video"

        # 1. Omitted. Wait until C gets A's video packets and B's video decodes.
        await poll(lambda: _stat_above(c, mids["A"], "packetsReceived", 20), 30,
                   "A's video packets at C")
        await poll(lambda: _stat_above(c, mids["B"], "framesDecoded", 10), 30,
                   "C decoding B's video")
        s0 = await state(c)
        seen = await watch_tiles(c, [a_id, b_id], WINDOW)
        s1 = await state(c)
        snap = await until(c, "s => true")
        report = [f"MIDs at C: {mids}", f"1 omitted: {delta(s0, s1, mids)}; tiles {seen}"]
        assert s1.stat(mids["A"], "packetsReceived") - s0.stat(mids["A"], "packetsReceived") \
            >= 8, report
        assert s1.stat(mids["A"], "framesDecoded") == 0, report
        assert s1.stat(mids["A"], "keyFramesDecoded") == 0, report
        assert s1.stat(mids["A"], "framesReceived") == 0, report
        assert s1.dropped("unmapped") - s0.dropped("unmapped") >= 8, report
        assert s1.stat(mids["B"], "framesDecoded") - s0.stat(mids["B"], "framesDecoded") \
            >= 8, report
        tiles = {t["id"]: t for t in snap["tiles"]}
        assert tiles[a_id]["tracks"] == ["audio"], snap  # A's mapped audio, no video
        assert all(s is None for s in seen[a_id]), report
        assert shows(seen[b_id], "B") and not shows(seen[b_id], "A"), report

        # 2. Swapped: a renegotiation names B for A's video MID and A for B's.
        hostile.rewrite = swap(a_id, b_id, "video")
        await hostile.reoffer(sub_c)
        forged = await page_map(c)
        assert forged[mids["A"]] == f"{b_id}/video" and forged[mids["B"]] == f"{a_id}/video"
        ws = s1.dropped("wrong-sender")
        await poll(lambda: _dropped_above(c, "wrong-sender", ws + 10), 10,
                   "C's worker dropping wrong-sender")
        await asyncio.sleep(0.5)  # frames that passed the old transform have been decoded
        s2 = await state(c)
        seen = await watch_tiles(c, [a_id, b_id], WINDOW)
        s3 = await state(c)
        snap = await until(c, "s => true")
        first = await sample(c, b_id)
        await asyncio.sleep(0.5)  # the fake camera's bar moves every frame (10 a second)
        frozen = first is not None and first == await sample(c, b_id)
        report.append(f"2 swapped: B's tile frozen {frozen};"
                      f" before {delta(s1, s2, mids)}; watched {delta(s2, s3, mids)};"
                      f" tiles {seen}; snapshot tiles {snap['tiles']}")
        for who in ("A", "B"):
            assert s3.stat(mids[who], "packetsReceived") \
                - s2.stat(mids[who], "packetsReceived") >= 8, report
            assert s3.stat(mids[who], "framesDecoded") == s2.stat(mids[who], "framesDecoded"), \
                report
        assert s3.stat(mids["A"], "framesDecoded") == 0, report  # A's video: never decoded
        assert s3.stat(mids["A"], "keyFramesDecoded") == 0, report
        assert s3.stat(mids["A"], "framesReceived") == 0, report
        assert s3.dropped("wrong-sender") - s2.dropped("wrong-sender") >= 16, report
        assert s3.dropped("unmapped") == s2.dropped("unmapped"), report  # nothing unmapped now
        assert not shows(seen[b_id], "A"), report  # A's picture is never shown as B's
        assert not shows(seen[a_id], "B"), report  # nor B's as A's
        tiles = {t["id"]: t for t in snap["tiles"]}
        for pid in (a_id, b_id):
            assert "key of another participant" in (tiles[pid]["failure"] or ""), snap
        assert snap["id"] == c_id and snap["banner"] is None, snap  # no failure, no reconnect

        # 3. Control: the honest map again; both receivers are re-attached and decode.
        hostile.rewrite = lambda tracks: tracks
        await hostile.reoffer(sub_c)
        assert (await page_map(c))[mids["A"]] == f"{a_id}/video"
        assert (await page_map(c))[mids["B"]] == f"{b_id}/video"
        await poll(lambda: _stat_above(c, mids["A"], "framesDecoded", 10), 20,
                   "C decoding A's video once honestly mapped")
        await poll(lambda: _stat_above(c, mids["B"], "framesDecoded",
                                       s3.stat(mids["B"], "framesDecoded") + 10), 20,
                   "C decoding B's video again")
        await asyncio.sleep(0.5)
        s4 = await state(c)
        seen = await watch_tiles(c, [a_id, b_id], WINDOW)
        s5 = await state(c)
        report.append(f"3 honest: before {delta(s3, s4, mids)}; watched {delta(s4, s5, mids)};"
                      f" tiles {seen}")
        for who in ("A", "B"):
            assert s5.stat(mids[who], "framesDecoded") - s4.stat(mids[who], "framesDecoded") \
                >= 8, report
        assert s5.dropped("wrong-sender") == s4.dropped("wrong-sender"), report
        assert shows(seen[a_id], "A") and not shows(seen[a_id], "B"), report
        assert shows(seen[b_id], "B") and not shows(seen[b_id], "A"), report
        assert (await until(c, "s => true"))["id"] == c_id
        print("\n".join(report))  # shown with pytest -s

        for page in (a, b, c):
            assert page.errors == [], page.errors


def _slot(sfu: Sfu, subscriber: str, publisher: str) -> Callable[[], Any]:
    return lambda: slot_of(sfu, subscriber, publisher, "video")


async def _stat_above(page: Any, mid: str, key: str, value: int) -> bool:
    return int((await video_by_mid(page)).get(mid, {}).get(key, 0)) > value


async def _dropped_above(page: Any, reason: str, value: int) -> bool:
    return int((await worker_counters(page))["dropped"].get(reason, 0)) > value
