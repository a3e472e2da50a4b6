"""sfu/outbox.py: one flush per event-loop turn, losses counted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from pylibsrtp import Policy, Session

from sfu._fanout import Lane, Sender, fanout
from sfu.outbox import Outbox
from sfu.rtp import build_packet
from sfu.srtp import Protector
from sfu.stats import Stats

KEY = bytes(range(30))


@pytest.fixture
def lane_to() -> Iterator[tuple[Lane, Sender, socket.socket]]:
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    into = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    into.bind(("127.0.0.1", 0))
    into.setblocking(False)
    session = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    native = Protector(session).native()
    assert native is not None
    pair = object()
    sender = Sender()
    host, port = into.getsockname()
    sender.point(native[0], native[1], session, {1: pair}, pair, out.fileno(), host, port)
    lane = Lane(sender)
    lane.pt, lane.ssrc, lane.started = 100, 7, True
    lane.set_ext(b"", b"", b"", True)
    yield lane, sender, into
    sender.clear()
    out.close()
    into.close()


def packet(seq: int) -> bytes:
    return build_packet(payload_type=96, sequence_number=seq, timestamp=1, ssrc=2,
                        marker=False, extensions=b"", payload=b"p" * 100)


def waiting(into: socket.socket) -> int:
    n = 0
    try:
        while True:
            into.recv(2048)
            n += 1
    except BlockingIOError:
        return n


def test_one_flush_per_turn_sends_every_run(lane_to: tuple[Lane, Sender, socket.socket]
                                            ) -> None:
    lane, _, into = lane_to
    stats = Stats()
    outbox = Outbox(stats)
    seen: list[int] = []

    async def turns() -> None:
        loop = asyncio.get_running_loop()
        calls = 0
        original = loop.call_soon

        def counting(callback, *args, **kw):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += callback == outbox.flush
            return original(callback, *args, **kw)

        loop.call_soon = counting  # type: ignore[method-assign]
        for seq in (1, 2, 3):  # one turn: three packets, one flush scheduled
            data = packet(seq)
            fanout([lane], data, 12, len(data), None, None, 1.0, outbox.batch)
            outbox.staged()
        seen.append(waiting(into))  # nothing left yet
        seen.append(calls)
        await asyncio.sleep(0)  # the flush runs
        seen.append(waiting(into))
        data = packet(4)  # the next turn schedules its own
        fanout([lane], data, 12, len(data), None, None, 1.0, outbox.batch)
        outbox.staged()
        await asyncio.sleep(0)
        seen.append(waiting(into))
        seen.append(calls)

    asyncio.run(turns())
    assert seen == [0, 1, 3, 1, 2]
    assert outbox.counters() == {"batch_sends": 2, "batch_packets": 4}
    assert "drop_send_failed" not in stats.snapshot()


def test_without_a_loop_it_sends_at_once_and_counts_losses(
        lane_to: tuple[Lane, Sender, socket.socket]) -> None:
    lane, sender, into = lane_to
    stats = Stats()
    outbox = Outbox(stats)
    data = packet(1)
    fanout([lane], data, 12, len(data), None, None, 1.0, outbox.batch)
    outbox.staged()
    assert waiting(into) == 1 and not outbox.batch.pending
    for seq in (2, 3):
        data = packet(seq)
        fanout([lane], data, 12, len(data), None, None, 1.0, outbox.batch)
    sender.clear()  # the peer went while its packets waited
    outbox.flush()
    assert stats.snapshot()["drop_send_failed"] == 2
    assert waiting(into) == 0
