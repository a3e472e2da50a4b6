"""sfu/peer.py: what a RawPeer keeps per transceiver (the per-participant memory budget)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

import sfu.peer as peer_module
from sfu.ice import IcePolicy
from sfu.peer import RawPeer


def _drop(data: bytes) -> None:
    """A plain-function handler: the fast path's kind."""


async def _bytes_per_transceiver(adopt: bool, count: int = 20) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peer = RawPeer(IcePolicy(), _drop, _drop)
        for _ in range(count):
            peer.pc.addTransceiver("video", direction="sendonly")
        if adopt:
            peer.adopt()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    await peer.close()
    return used / count


async def test_adopted_video_transceivers_drop_the_unused_receive_pipeline() -> None:
    # A subscriber's PC has one transceiver per forwarded stream (2 × (N-1)); aiortc gives
    # each video receiver a bandwidth estimator and a jitter buffer (~100 kB), and every
    # receiver and sender queues and events, that a RawPeer never feeds. Adopting must
    # free them, or memory per participant grows with N (measured: ~130 kB -> ~5 kB).
    stock = await _bytes_per_transceiver(adopt=False)
    adopted = await _bytes_per_transceiver(adopt=True)
    assert stock > 60_000, f"aiortc's receiver got lighter ({stock:.0f} B): revisit _shed"
    assert adopted < 10_000, f"{adopted:.0f} B per adopted video transceiver"


async def test_ingress_limit_is_a_token_bucket_of_max_pps_and_counts_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(peer_module.time, "monotonic", lambda: clock[0])
    errors: list[str] = []
    peer = RawPeer(IcePolicy(), lambda d: None, lambda d: None, errors.append, max_pps=3)
    try:
        # max_pps deep: a burst of 3 passes, the rest is refused and counted
        assert [peer._over_limit() for _ in range(5)] == [False, False, False, True, True]
        assert peer.rate_limited == 2 and errors == ["rate_limited"] * 2
        # refilled at max_pps a second, spread out: 0.2 s is 0.6 of a datagram, 0.4 s 1.2
        clock[0] += 0.2
        assert peer._over_limit()
        clock[0] += 0.2
        assert [peer._over_limit() for _ in range(2)] == [False, True]
        assert peer.rate_limited == 4
        # a long pause fills the bucket to max_pps, not beyond
        clock[0] += 60.0
        assert [peer._over_limit() for _ in range(4)] == [False, False, False, True]
        assert peer.rate_limited == 5
        unlimited = RawPeer(IcePolicy(), lambda d: None, lambda d: None)
        assert not any(unlimited._over_limit() for _ in range(10_000))
        await unlimited.close()
    finally:
        await peer.close()
