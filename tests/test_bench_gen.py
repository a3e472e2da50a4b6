"""The load generator's Python side (bench/gen.py): the pacing thread and the windows'
reports. Its compiled receive path has tests of its own (test_bench_receive.py)."""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.gen import SWITCH_INTERVAL, OutStream, Pacer, Tally
from bench.media import MAGIC, PROBE, rtp_header


def _probed(sid: int, seq: int, sent: int) -> bytes:
    return rtp_header(96, seq, 0, 1, False, b"") + b"\x10" + PROBE.pack(MAGIC, sid, seq, sent)


def test_tally_reports_what_was_sent_beside_what_was_received() -> None:
    """A window's report joins the pacer's side (Python) and the receivers' side (C)."""
    tally = Tally(4, 8)
    tally.open(1, 1_000, 2_000)
    tally.on_sent(7, 1_500, 3)
    tally.on_sent(7, 2_500, 5)  # after the window
    tally.on_lag(1_500, 0.006)
    for receiver in (2, 3):
        tally.counts.record(receiver, _probed(7, 1, 1_500), 1_600)
    tally.counts.record(3, _probed(6, 1, 1_500), 1_600)
    report = tally.take(1)
    assert report is not None
    assert report["sent"] == {7: 3}
    assert report["received"] == {7: 2, 6: 1}
    assert report["pairs"] == {(2 << 16) | 7: 1, (3 << 16) | 7: 1, (3 << 16) | 6: 1}
    assert report["hist"] == {0: 3} and report["late"] == 1 and report["lag_max_ms"] == 6.0
    assert tally.windows == [] and tally.take(1) is None


def _audio_spec() -> Any:
    from bench.scenarios import build
    return next(spec for _, spec in build("meeting", 2, 0, 1).members[0].streams()
                if spec.kind == "audio")


def test_pacer_keeps_sending_while_the_loop_thread_is_busy() -> None:
    """The reason the pacer is a thread: frames go out on time while the receiving
    thread runs Python flat out (here: a busy loop that never blocks)."""
    tally = Tally(2, 4)
    stream = OutStream(1, _audio_spec(), tally)  # 50 packets/s
    stamps: list[int] = []

    def send(packet: bytes) -> None:
        i = packet.find(MAGIC)
        assert i > 0 and PROBE.unpack_from(packet, i)[1] == 1
        stamps.append(time.monotonic_ns())

    stream.send = send
    pacer = Pacer([stream])
    pacer.start()
    try:
        busy_from = time.monotonic_ns()
        busy_until = busy_from + 400_000_000
        spins = 0
        while time.monotonic_ns() < busy_until:  # holds the GIL but for forced switches
            spins += 1
    finally:
        pacer.stop()
    assert not pacer._thread.is_alive()
    during = [t for t in stamps if busy_from + 50_000_000 < t < busy_until - 50_000_000]
    assert len(during) >= 5, (len(stamps), len(during))  # ~15 were due in those 300 ms
    assert stream.count == len(stamps)
    after = len(stamps)
    time.sleep(0.1)
    assert len(stamps) == after  # stopped means stopped
    assert sys.getswitchinterval() > SWITCH_INTERVAL  # and the interpreter is as it was


def test_a_key_frame_request_gets_one_key_frame() -> None:
    """PLIs are counted by the loop's thread and served by the pacer's (bench/gen.py)."""
    from bench.gen import Participant
    from bench.scenarios import build
    tally = Tally(2, 4)
    me = Participant(build("meeting", 2, 0, 1).members[0], tally)
    video = next(s for s in me.streams if s.spec.kind == "video")
    sent: list[bytes] = []
    video.send = sent.append

    def frame_is_key() -> bool:
        sent.clear()
        video.fire(time.monotonic(), time.monotonic())
        return any(b"\x9d\x01\x2a" in p for p in sent)  # RFC 6386 §9.1 key frame start code

    assert frame_is_key()  # the first frame
    assert not frame_is_key()
    pli = bytes([0x81, 206, 0, 2]) + (1).to_bytes(4, "big") + video.ssrc.to_bytes(4, "big")
    me.on_pub_rtcp(pli)
    me.on_pub_rtcp(pli)  # two requests before the pacer runs: one key frame serves both
    assert tally.plis == 2
    assert frame_is_key()
    assert not frame_is_key()
