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
