"""bench/scenarios.py: who should receive what, with audio levels, last-N and rooms."""

from __future__ import annotations

import argparse

import pytest

from bench import cli, run
from bench.scenarios import LOUD, SILENCE, SPEAKER_THRESHOLD, SPEAKING, build, level_byte
from sfu import SfuConfig


def test_levels_against_the_sfu_threshold() -> None:
    # speakers below the SFU's threshold (so they count as speaking), silence above it
    assert LOUD < SPEAKING < SfuConfig().speaker_threshold < SILENCE == 127
    assert SfuConfig().speaker_threshold == SPEAKER_THRESHOLD


def test_level_byte_rfc6464() -> None:
    assert level_byte(SILENCE) == b"\x7f"  # no voice activity, -127 dBov
    assert level_byte(40) == bytes([0x80 | 40])  # V=1, -40 dBov
    assert level_byte(0) == b"\x80"
    for bad in (-1, 128):
        with pytest.raises(ValueError):
            level_byte(bad)


@pytest.mark.parametrize("name", ["meeting", "broadcast", "audio"])
def test_everyone_speaks_and_is_heard(name: str) -> None:
    s = build(name, 12)
    for m in s.members:
        assert m.level == SPEAKING
        if m.audio is not None:
            assert s.receivers(2 * m.index) == [i for i in range(12) if i != m.index]
    # equal levels: the first joined is the speaker (sfu/room.py keeps the first on a tie)
    assert s.speaker(0) == 0
    assert s.speaker_order(0) == list(range(12))


def test_meeting_offered_load() -> None:
    s = build("meeting", 5)
    # 5 × (50 audio + 30 × 2 video packets/s) × 4 receivers
    assert s.offered_packets_per_second() == pytest.approx(5 * 110 * 4)


def test_lastn_one_speaker_silent_audio_not_expected() -> None:
    s = build("lastn", 10, last_n=6)
    assert [m.level for m in s.members] == [LOUD] + [SILENCE] * 9
    assert s.speaker(0) == 0
    assert s.receivers(0) == list(range(1, 10))  # member 0's audio: everyone
    for i in range(1, 10):
        assert s.receivers(2 * i) == []  # silence: the SFU drops it
    # video: the speaker (member 0, also first to join) then join order; each subscriber
    # gets the first 6 others
    for i in range(10):
        got = sorted(sid // 2 for sid in s.expected_sources(i) if sid % 2)
        assert got == [j for j in range(10) if j != i][:6]
    audio = sorted(sid for sid in s.expected_sources(5) if sid % 2 == 0)
    assert audio == [0]
    # 6 video sources (60 pkt/s each) to each of 10 subscribers + one audio to 9
    assert s.offered_packets_per_second() == pytest.approx(10 * 6 * 60 + 9 * 50)


def test_lastn_speaker_moves_first() -> None:
    s = build("lastn", 8, last_n=3)
    s.members[0].level, s.members[5].level = SILENCE, LOUD
    s._receivers.clear()
    s._sources.clear()
    assert s.speaker(0) == 5
    assert s.speaker_order(0) == [5, 0, 1, 2, 3, 4, 6, 7]
    assert 5 in [sid // 2 for sid in s.expected_sources(7)]
    assert sorted(sid // 2 for sid in s.expected_sources(0) if sid % 2) == [1, 2, 5]
    assert sorted(sid // 2 for sid in s.expected_sources(5) if sid % 2) == [0, 1, 2]
    assert s.receivers(0) == []  # member 0 is silent now


@pytest.mark.parametrize("name", ["meeting", "lastn", "broadcast", "audio"])
def test_rooms_are_independent_copies(name: str) -> None:
    one = build(name, 6, last_n=4)
    three = build(name, 6, last_n=4, rooms=3)
    assert three.total == 18 and len(three.members) == 18
    assert [m.index for m in three.members] == list(range(18))
    assert [three.room_name(i) for i in (0, 5, 6, 17)] == ["bench-0", "bench-0", "bench-1",
                                                          "bench-2"]
    sids = [sid for m in three.members for sid, _ in m.streams()]
    assert len(sids) == len(set(sids))
    assert three.offered_packets_per_second() == pytest.approx(
        3 * one.offered_packets_per_second())
    for k in range(3):
        for m in one.members:
            mk = three.members[k * 6 + m.index]
            assert mk.room == k and mk.level == m.level
            for sid, _ in m.streams():
                shifted = sid + 12 * k
                assert three.receivers(shifted) == [r + 6 * k for r in one.receivers(sid)]
        assert three.speaker(k) == (6 * k if one.speaker(0) == 0 else None)


def test_expected_pairs_match_receivers() -> None:
    s = build("lastn", 7, last_n=2, rooms=2)
    pairs = s.expected_pairs()
    assert len(pairs) == sum(len(s.receivers(sid)) for m in s.members for sid, _ in m.streams())
    for key in pairs:
        receiver, sid = key >> 16, key & 0xFFFF
        assert receiver in s.receivers(sid)
        assert s.members[receiver].room == s.members[sid // 2].room


def test_only_sealroom_has_rooms_and_workers() -> None:
    assert run.supports("sealroom", "meeting", rooms=2, workers=2)
    assert run.supports("sealroom", "lastn", rooms=3)
    for system in ("reflector", "janus", "mediarelay"):
        assert run.supports(system, "meeting")
        assert not run.supports(system, "meeting", rooms=2)
        assert not run.supports(system, "meeting", workers=1)
        assert not run.supports(system, "lastn")


def test_worker_cores_round_robin() -> None:
    import os

    cpus = sorted(os.sched_getaffinity(0))
    opts = run.Options()
    assert run.worker_cores(opts, 0) == []
    assert run.worker_cores(opts, 3) == [cpus[i % len(cpus)] for i in range(3)]
    assert run.worker_cores(run.Options(pin=False), 2) == []


def test_build_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        build("meeting", 1)
    with pytest.raises(ValueError):
        build("meeting", 4, rooms=0)
    with pytest.raises(ValueError):
        build("nope", 4)


@pytest.mark.parametrize("rooms", [1, 3])
def test_withheld_packets_have_probe_ids_of_their_own(rooms: int) -> None:
    """--uplink-loss: a withheld packet of stream sid carries sid + withheld_base, above
    every real stream id, so receivers count repaired copies apart (bench/gen.py)."""
    s = build("meeting", 5, rooms=rooms)
    sids = [sid for m in s.members for sid, _ in m.streams()]
    base = s.withheld_base
    assert base == 2 * s.total > max(sids)
    for sid in sids:
        assert s.withheld_sid(sid + base) == sid
        assert s.withheld_sid(sid) is None
    assert s.withheld_sid(2 * base) is None


def test_uplink_loss_is_not_measurable_through_a_reencode() -> None:
    assert run.supports("sealroom", "meeting", uplink_loss=0.03)
    assert run.supports("janus", "broadcast", uplink_loss=0.03)
    assert run.supports("reflector", "audio", uplink_loss=0.03)
    assert run.supports("mediarelay", "meeting")
    assert not run.supports("mediarelay", "meeting", uplink_loss=0.03)


def test_joinstorm_is_lastn_joining_at_once() -> None:
    """joinstorm: lastn's room (one speaker, last-N video), sealroom only."""
    storm, lastn = build("joinstorm", 12, last_n=4), build("lastn", 12, last_n=4)
    assert storm.last_n == 4
    assert [(m.level, m.audio, m.video) for m in storm.members] == [
        (m.level, m.audio, m.video) for m in lastn.members]
    assert storm.expected_pairs() == lastn.expected_pairs()
    assert run.supports("sealroom", "joinstorm")
    for system in ("reflector", "janus", "mediarelay"):
        assert not run.supports(system, "joinstorm")


def test_room_sizes_up_to_100() -> None:
    assert cli._sizes("2,50,100") == [2, 50, 100]
    for bad in ("1", "101", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._sizes(bad)
    assert build("lastn", 100, last_n=6).offered_packets_per_second() == pytest.approx(
        100 * 6 * 60 + 99 * 50)


def test_simulcast_three_layers_per_publisher_and_audio() -> None:
    """simulcast: audio + three L1T3 layers per member, stream ids 4i … 4i + 3, the layers
    lowest first at 30, 60 and 120 packets/s, with the picture size of each."""
    s = build("simulcast", 6)
    assert s.stride == 4 and s.withheld_base == 24
    for m in s.members:
        streams = m.streams()
        assert [sid for sid, _ in streams] == [4 * m.index + k for k in range(4)]
        audio, *layers = (spec for _, spec in streams)
        assert audio.kind == "audio" and audio.rid is None and m.video is None
        assert [(x.rid, x.width, x.height, x.packet_rate()) for x in layers] == [
            ("q", 320, 180, 30.0), ("h", 640, 360, 60.0), ("f", 1280, 720, 120.0)]
        assert [s.layer(sid) for sid, _ in streams] == [None, *layers]
        assert [s.is_video(sid) for sid, _ in streams] == [False, True, True, True]
        assert all(s.member_of(sid) is m for sid, _ in streams)
    # the middle layer is the meeting's video
    meeting_video = build("meeting", 2).members[0].video
    assert meeting_video is not None
    assert s.members[0].layers[1].packet_rate() == meeting_video.packet_rate()


def test_simulcast_mix_one_large_one_medium_the_rest_thumbnails() -> None:
    """Each subscriber gets the next member's top layer, the one after's middle layer and
    everyone else's lowest; each publisher thus has one receiver of its top layer, one of
    its middle layer and N − 3 of its lowest; audio goes to everyone."""
    n = 7
    s = build("simulcast", n)
    for r in range(n):
        asked = {p: s.layer_for(r, p) for p in range(n) if p != r}
        assert asked[(r + 1) % n] == 2 and asked[(r + 2) % n] == 1
        assert sorted(asked.values()) == [0] * (n - 3) + [1, 2]
        # what r expects: every other member's audio and exactly the layer it asked for
        assert s.expected_sources(r) == {4 * p for p in asked} | {
            4 * p + 1 + k for p, k in asked.items()}
    for p in range(n):
        assert s.receivers(4 * p) == [i for i in range(n) if i != p]
        assert len(s.receivers(4 * p + 3)) == 1 and len(s.receivers(4 * p + 2)) == 1
        assert len(s.receivers(4 * p + 1)) == n - 3
    # 20 subscribers: 19 × 50 audio + 120 (large) + 60 (medium) + 17 × 30 (thumbnails)
    assert build("simulcast", 20).offered_packets_per_second() == pytest.approx(
        20 * (19 * 50 + 120 + 60 + 17 * 30))
    # rooms stay independent: the mix is within each room
    two = build("simulcast", 4, rooms=2)
    assert two.receivers(4 * 5 + 3) == [4]  # member 5 (room 1, second) large for member 4
    assert all(two.members[r].room == 1 for sid in range(16, 32) for r in two.receivers(sid))
    # two members: only the large tile
    assert build("simulcast", 2).expected_sources(0) == {4, 4 + 3}


def test_simulcast_runs_on_sfus_that_select_layers() -> None:
    assert run.supports("sealroom", "simulcast") and run.supports("janus", "simulcast")
    assert run.supports("sealroom", "simulcast", rooms=2, workers=2)
    assert not run.supports("reflector", "simulcast")  # no layer selection
    assert not run.supports("mediarelay", "simulcast")
    assert not run.supports("sealroom", "simulcast", uplink_loss=0.03)  # no layer NACKs
    assert cli.DEFAULT_SIZES["simulcast"] == "20"
