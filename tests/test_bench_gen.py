"""The load generator's receive-side measurement (bench/gen.py).

Latency is taken to the kernel's receive timestamp of each datagram, so that the
generator's own backlog (one process playing many receivers) is not counted as latency
the system under test added. These tests pin that down on a real uvloop UDP socket.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from typing import Any

import uvloop

from bench.gen import (
    HIST_FINE,
    HIST_SIZE,
    SWITCH_INTERVAL,
    Arrival,
    OutStream,
    Pacer,
    Tally,
    Window,
    bucket,
)
from bench.media import MAGIC, PROBE, rtp_header


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.arrival: Arrival | None = None
        self.got: list[tuple[bytes, int, int]] = []  # (data, arrival, read time)

    def connection_made(self, transport: Any) -> None:
        self.arrival = Arrival(transport.get_extra_info("socket"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.arrival is not None
        self.got.append((data, self.arrival(), time.monotonic_ns()))


async def _blocked_loop_arrivals() -> tuple[list[int], list[tuple[bytes, int, int]]]:
    loop = asyncio.get_running_loop()
    transport, rx = await loop.create_datagram_endpoint(_Receiver, local_addr=("127.0.0.1", 0))
    addr = transport.get_extra_info("sockname")
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Turning stamps on is deferred in the kernel (a static key flipped from a work
        # queue): wait, bounded, until a warm-up datagram comes back really stamped.
        for _ in range(100):
            out.sendto(b"warm-up", addr)
            time.sleep(0.01)  # the loop reads it ≥ 10 ms later; a real stamp is earlier
            await asyncio.sleep(0.01)
            if rx.got and rx.got[-1][1] < rx.got[-1][2] - 5_000_000:
                break
        rx.got.clear()
        # Three datagrams 20 ms apart while the loop cannot read (it is blocked here),
        # then one read pass: exactly what a busy generator does.
        sends = []
        for i in range(3):
            sends.append(time.monotonic_ns())
            out.sendto(b"p%d" % i, addr)
            time.sleep(0.02)
        sends.append(time.monotonic_ns())
        await asyncio.sleep(0.05)
        return sends, list(rx.got)
    finally:
        out.close()
        transport.close()


def test_arrival_is_when_the_datagram_reached_the_socket_not_when_it_was_read() -> None:
    sends, got = uvloop.run(_blocked_loop_arrivals())
    assert [d for d, _, _ in got] == [b"p0", b"p1", b"p2"]
    for i, (_, arrived, read) in enumerate(got):
        # each datagram's own stamp: after its send, before the next one was sent …
        assert sends[i] <= arrived <= sends[i + 1], (i, sends, got)
        # … while the loop read all of them only after the last send
        assert read >= sends[3]


async def _arrival_before_any_datagram() -> tuple[int, int, int]:
    loop = asyncio.get_running_loop()
    transport, rx = await loop.create_datagram_endpoint(_Receiver, local_addr=("127.0.0.1", 0))
    try:
        assert rx.arrival is not None
        before = time.monotonic_ns()
        value = rx.arrival()
        return before, value, time.monotonic_ns()
    finally:
        transport.close()


def test_arrival_without_a_stamp_reads_as_now() -> None:
    before, value, after = uvloop.run(_arrival_before_any_datagram())
    assert before <= value <= after


def _probed(sid: int, seq: int, sent: int) -> bytes:
    return rtp_header(96, seq, 0, 1, False, b"") + b"\x10" + PROBE.pack(MAGIC, sid, seq, sent)


def test_tally_counts_latency_to_arrival_and_to_read_separately() -> None:
    tally = Tally()
    now = time.monotonic_ns()
    window = Window(1, now - 10_000_000_000, now + 10_000_000_000)
    tally.windows.append(window)
    seen: set[int] = set()
    sent = now - 30_000_000  # sent 30 ms ago, reached the socket 2 ms after sending
    tally.on_media(4, _probed(7, 1, sent), seen, sent + 2_000_000)
    assert seen == {7}
    assert window.pairs == {(4 << 16) | 7: 1}
    assert [i for i, c in enumerate(window.hist) if c] == [2000]
    read = [i for i, c in enumerate(window.hist_user) if c]
    assert len(read) == 1 and read[0] >= bucket(30_000)  # read at least 30 ms after sending
    report = window.to_json()
    assert report["hist"] == {2000: 1} and report["hist_user"] == {read[0]: 1}


def test_tally_files_unprobed_packets_by_arrival() -> None:
    tally = Tally()
    window = Window(1, 1_000, 2_000)
    tally.windows.append(window)
    seen: set[int] = set()
    tally.on_media(0, rtp_header(96, 1, 0, 1, False, b"") + b"\x00" * 40, seen, 1_500)
    tally.on_media(0, rtp_header(96, 2, 0, 1, False, b"") + b"\x00" * 40, seen, 2_500)
    assert window.unprobed == 1 and tally.unknown == 2 and seen == {-1}


def test_bucket_is_fine_then_coarse_and_bounded() -> None:
    assert bucket(0) == 0 and bucket(HIST_FINE - 1) == HIST_FINE - 1
    assert bucket(HIST_FINE) == HIST_FINE + HIST_FINE // 1000
    assert bucket(10**12) == HIST_SIZE - 1


def _audio_spec() -> Any:
    from bench.scenarios import build
    return next(spec for _, spec in build("meeting", 2, 0, 1).members[0].streams()
                if spec.kind == "audio")


def test_pacer_keeps_sending_while_the_loop_thread_is_busy() -> None:
    """The reason the pacer is a thread: frames go out on time while the receiving
    thread runs Python flat out (here: a busy loop that never blocks)."""
    tally = Tally()
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
