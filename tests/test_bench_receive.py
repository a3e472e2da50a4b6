"""The load generator's compiled receive path (bench/_receive.c).

Latency is taken to the kernel's receive timestamp of each datagram, so that the
generator's own backlog (one process playing many receivers) is not counted as latency
the system under test added; SRTP is undone with the same libsrtp the SFU uses; every
packet is found by its probe and counted once. These tests pin that down on a real uvloop
UDP socket and real libsrtp sessions.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
import uvloop
from pylibsrtp import Policy, Session

from bench._receive import HIST_FINE, HIST_SIZE, Counts, Endpoint
from bench.gen import Counted
from bench.media import MAGIC, PROBE, rtp_header
from sfu.srtp import Protector

KEY = bytes(range(30))  # SRTP_AES128_CM_HMAC_SHA1_80 master key + salt
WIDE = 10**18  # a window that holds any send time


def _probed(sid: int, seq: int, sent: int, pad: int = 1) -> bytes:
    return rtp_header(96, seq, 0, 1, False, b"") + b"\x10" * pad + PROBE.pack(MAGIC, sid, seq,
                                                                              sent)


def _bucket(us: int) -> int:
    return us if us < HIST_FINE else min(HIST_SIZE - 1, HIST_FINE + us // 1000)


def test_counts_latency_to_arrival_and_to_read_separately() -> None:
    counts = Counts(8, 16)
    now = time.monotonic_ns()
    counts.open(1, now - 10_000_000_000, now + 10_000_000_000)
    sent = now - 30_000_000  # sent 30 ms ago, reached the socket 2 ms after sending
    counts.record(4, _probed(7, 1, sent), sent + 2_000_000)
    assert counts.seen(4) == {7} and counts.seen(3) == set()
    got = counts.take(1)
    assert got is not None
    assert got["pairs"] == {(4 << 16) | 7: 1}
    assert got["hist"] == {2000: 1}
    [(read, n)] = got["hist_user"].items()
    assert n == 1 and read >= _bucket(30_000)  # read at least 30 ms after sending
    assert got["unprobed"] == 0 and counts.unknown == 0
    assert counts.take(1) is None  # taken means closed


def test_probe_is_found_after_any_header_and_only_in_its_window() -> None:
    counts = Counts(2, 4)
    counts.open(1, 1_000, 2_000)
    counts.open(2, 2_000, 3_000)
    counts.record(0, _probed(1, 1, 1_500, pad=60), 5_000)  # extensions, rewritten headers
    counts.record(0, _probed(1, 2, 2_500), 5_000)
    counts.record(1, _probed(3, 3, 3_500), 5_000)  # sent outside every window: seen only
    one, two = counts.take(1), counts.take(2)
    assert one is not None and two is not None
    assert one["pairs"] == {1: 1} and two["pairs"] == {1: 1}
    assert counts.seen(1) == {3}


def test_unprobed_and_foreign_packets_are_unknown_and_filed_by_arrival() -> None:
    counts = Counts(2, 4)
    counts.open(1, 1_000, 2_000)
    plain = rtp_header(96, 1, 0, 1, False, b"") + b"\x00" * 40
    counts.record(0, plain, 1_500)
    counts.record(0, plain, 2_500)  # arrived after the window
    counts.record(0, _probed(9, 1, 1_500), 1_500)  # a stream id this process does not know
    cut = _probed(1, 1, 1_500)
    counts.record(1, cut[:-4], 1_500)  # the probe does not fit in the packet
    counts.record(1, b"\x00" * 105 + PROBE.pack(MAGIC, 1, 1, 1_500), 1_500)  # too deep
    got = counts.take(1)
    assert got is not None
    assert got["unprobed"] == 4 and got["pairs"] == {} and counts.unknown == 5
    assert counts.seen(0) == {-1} and counts.seen(1) == {-1}


def test_latency_buckets_are_fine_then_coarse_and_bounded() -> None:
    counts = Counts(1, 2)
    counts.open(1, 0, WIDE)
    for arrived_after_us in (0, HIST_FINE - 1, HIST_FINE, 10**9):
        counts.record(0, _probed(1, 1, 1_000_000), 1_000_000 + arrived_after_us * 1000)
    counts.record(0, _probed(1, 1, 1_000_000), 0)  # "arrived before it was sent": 0
    got = counts.take(1)
    assert got is not None
    assert got["hist"] == {0: 2, HIST_FINE - 1: 1, HIST_FINE + HIST_FINE // 1000: 1,
                           HIST_SIZE - 1: 1}


def test_windows_are_bounded_and_ids_unique() -> None:
    counts = Counts(1, 1)
    counts.open(1, 0, 1)
    with pytest.raises(ValueError, match="open already"):
        counts.open(1, 0, 1)
    for wid in range(2, 9):
        counts.open(wid, 0, 1)
    with pytest.raises(ValueError, match="windows open"):
        counts.open(9, 0, 1)
    assert counts.take(5) is not None
    counts.open(9, 0, 1)  # a taken window's slot is free again
    with pytest.raises(ValueError):
        Counts(0, 1)
    with pytest.raises(ValueError):
        Counts(1, 10**6)


def _sessions() -> tuple[Session, Session]:
    tx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return tx, rx


def test_endpoint_unprotects_with_libsrtp_and_hands_on_what_is_not_rtp() -> None:
    tx, rx = _sessions()
    native = Protector(rx).native("srtp_unprotect")
    assert native is not None
    counts = Counts(2, 4)
    counts.open(1, 0, WIDE)
    others: list[tuple[bytes, Any]] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        e = Endpoint(counts, 1, sock.fileno(), lambda d, a: others.append((d, a)), native[0],
                     native[1], rx)
        sent = time.monotonic_ns()
        first = tx.protect(_probed(2, 1, sent))
        e(first, ("127.0.0.1", 9))
        tampered = bytearray(tx.protect(_probed(2, 2, sent)))
        tampered[30] ^= 1
        e(bytes(tampered), ("127.0.0.1", 9))  # the auth tag no longer matches
        e(first, ("127.0.0.1", 9))  # a replay
        rtcp = tx.protect_rtcp(b"\x80\xc9\x00\x01\x00\x00\x00\x01")  # RFC 3550 §6.4.2 RR
        stun = b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(12)  # RFC 8489 §5
        e(rtcp, ("127.0.0.1", 9))
        e(stun, ("127.0.0.1", 9))
        e(b"\x16\xfe\xfd" + bytes(10), ("127.0.0.1", 9))  # DTLS (RFC 7983 §7: 20..63)
        e(b"", ("127.0.0.1", 9))
        assert counts.srtp_errors == 2
        got = counts.take(1)
        assert got is not None and got["pairs"] == {(1 << 16) | 2: 1}
        assert [d for d, _ in others] == [rtcp, stun, b"\x16\xfe\xfd" + bytes(10), b""]
        assert others[0][1] == ("127.0.0.1", 9)
        e.close()
    finally:
        sock.close()


def test_endpoint_checks_its_arguments() -> None:
    counts = Counts(2, 4)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError, match="receiver"):
            Endpoint(counts, 2, sock.fileno(), None)
        with pytest.raises(ValueError, match="together"):
            Endpoint(counts, 0, sock.fileno(), None, 1, 0)
        with pytest.raises(TypeError):
            Endpoint(counts, 0, sock.fileno(), 42)
        with pytest.raises(OSError):
            Endpoint(counts, 0, -1, None)
        e = Endpoint(counts, 0, sock.fileno(), None)
        with pytest.raises(TypeError):
            e("not bytes", None)  # type: ignore[arg-type]
        e(b"\x00\x01", None)  # not RTP and no one to hand it to: ignored
        assert counts.unknown == 0
    finally:
        sock.close()


def test_unstamped_packet_reads_as_arriving_now() -> None:
    """Nothing was read from this socket, so the kernel has no stamp: "now"."""
    counts = Counts(1, 2)
    counts.open(1, 0, WIDE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        e = Endpoint(counts, 0, sock.fileno(), None)
        e(_probed(1, 1, time.monotonic_ns() - 3_000_000), None)
    finally:
        sock.close()
    got = counts.take(1)
    assert got is not None
    [(arrived, _)] = got["hist"].items()
    [(read, _)] = got["hist_user"].items()
    assert 3000 <= arrived <= read


async def _blocked_loop(counts: Counts) -> list[int]:
    """Send probed datagrams 20 ms apart while the loop is blocked; return the send times."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    endpoint = Endpoint(counts, 0, sock.fileno(), None)
    transport, _ = await loop.create_datagram_endpoint(lambda: Counted(endpoint), sock=sock)
    addr = transport.get_extra_info("sockname")
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Turning stamps on is deferred in the kernel (a static key flipped from a work
        # queue): wait, bounded, until a warm-up datagram comes back really stamped.
        for attempt in range(100):
            counts.open(100 + attempt, 0, WIDE)
            out.sendto(_probed(1, attempt, time.monotonic_ns()), addr)
            time.sleep(0.01)  # the loop reads it ≥ 10 ms later; a real stamp is earlier
            await asyncio.sleep(0.01)
            warm = counts.take(100 + attempt)
            if warm is not None and warm["hist"] and max(warm["hist"]) < _bucket(5_000):
                break
        sends = [time.monotonic_ns()]
        for i in range(3):
            counts.open(i, sends[i], sends[i] + 1)  # each window holds one datagram
            out.sendto(_probed(1, 1000 + i, sends[i]), addr)
            time.sleep(0.02)
            sends.append(time.monotonic_ns())
        await asyncio.sleep(0.05)
        return sends
    finally:
        out.close()
        transport.close()


def test_arrival_is_when_the_datagram_reached_the_socket_not_when_it_was_read() -> None:
    counts = Counts(1, 2)
    sends = uvloop.run(_blocked_loop(counts))
    for i in range(3):
        got = counts.take(i)
        assert got is not None and got["pairs"] == {1: 1}, (i, got)
        [(arrived, _)] = got["hist"].items()
        [(read, _)] = got["hist_user"].items()
        # its own stamp: before the next datagram was sent …
        assert arrived <= _bucket((sends[i + 1] - sends[i]) // 1000), (i, sends, got)
        # … while the loop read it only after the last send
        assert read >= _bucket((sends[3] - sends[i]) // 1000), (i, sends, got)
