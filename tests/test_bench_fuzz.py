"""bench.fuzz: 20 000 fuzzed RTP/RTCP packets inside valid SRTP into a live SFU with a call.

The small version of ``python -m bench.fuzz --packets 1000000`` (docs/BENCHMARKS.md,
"Hostile media traffic"), with the SFU in this process so that its tasks and peers can
be looked at: it fails if a handler raised, a task died, a participant was lost, a fuzzed
datagram is not accounted for, a datagram handed to the SFU's handlers did not end in
exactly one named counter, or the call stopped forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import pytest

from bench.fuzz import (
    RTCP_MUTATIONS,
    RTP_MUTATIONS,
    FuzzPeer,
    FuzzRun,
    Mutator,
    _srtp_first_octet,
    account,
    datagrams,
    fuzz,
    udp_drops,
)
from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig, rtcp
from sfu.participant import MAX_RTCP_SENDERS
from sfu.rtp import build_packet
from tests.test_sfu_fuzz import assert_intact

pytestmark = pytest.mark.media

PACKETS = 20_000


def snapshot(sfu: Sfu) -> dict[str, int]:
    return {**sfu.stats(), **datagrams(sfu), "udp_rcvbuf_drops": udp_drops()}


@contextlib.asynccontextmanager
async def call_with_fuzzer(sfu: Sfu) -> AsyncIterator[tuple[MediaBot, MediaBot, FuzzPeer]]:
    """a and b in a call, hearing each other, then the fuzzer joined and connected; all
    closed, and the SFU, at the end."""
    a, b = MediaBot("a"), MediaBot("b")
    fz = FuzzPeer("fuzz0")
    try:
        for x in (a, b):
            await x.join(sfu, "call")
            await x.publish()
        assert await a.wait_for(lambda: all(len(x.received) == 2 for x in (a, b)), 20)
        fz.attach(lambda msg: sfu.handle("fuzz0", msg))
        await sfu.join("call", "fuzz0", fz.on_message)
        await fz.publish()
        assert await fz.connected(20)
        await asyncio.sleep(0.5)
        yield a, b, fz
    finally:
        await fz.close()
        for x in (a, b):
            await x.close()
        await sfu.close()


async def test_fuzzed_srtp_into_a_live_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    # no ingress limit here: every fuzzed datagram must reach the parsers
    sfu = Sfu(SfuConfig(max_pub_pps=0, max_sub_pps=0))
    async with call_with_fuzzer(sfu) as (a, b, fz):
        watchdogs = {pid: p._watchdog for pid, p in sfu.participants.items()}
        before = snapshot(sfu)
        heard = {x.pid: len(x.stream(y.pid, "video").payloads)  # type: ignore[union-attr]
                 for x, y in ((a, b), (b, a))}
        mutator = Mutator(fz, seed=7)
        run = await fuzz(fz, mutator, PACKETS, rate=3000, max_seconds=240)
        await asyncio.sleep(1.0)
        after = snapshot(sfu)
        acc = account(before, after, "fuzz0", run)

        assert run.total == PACKETS
        # every mutation was exercised, and the parsers saw most of the packets
        assert {n for n, _ in RTP_MUTATIONS} | {n for n, _ in RTCP_MUTATIONS} <= set(
            mutator.counts)
        assert acc["fuzz_handed"] > acc["fuzz_arrived"] * 0.6, acc
        # nothing raised, nobody was lost, every task is alive
        assert acc["handler_errors"] == 0, acc
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert set(sfu.participants) == {"a", "b", "fuzz0"}
        assert all(not w.done() for w in watchdogs.values())
        # every fuzzed datagram reached the SFU, or the kernel dropped it for a full socket
        # buffer (counted in this test's network namespace), and ended in a counter
        assert PACKETS - acc["udp_rcvbuf_drops"] <= acc["fuzz_arrived"] <= PACKETS, acc
        assert acc["fuzz_rate_limited"] == 0, acc
        assert acc["outcomes"] == acc["handed_in"], acc
        # every datagram the fuzzer did not protect was refused by libsrtp, unless the kernel
        # dropped it first for a full socket buffer (counted above)
        assert (acc["drops"]["drop_srtp_rejected"] >= run.total - sum(run.protected.values())
                - acc["udp_rcvbuf_drops"]), acc
        for reason in ("malformed_rtp", "malformed_rtcp", "unknown_ssrc", "unexpected_pt",
                       "rtx_padding", "rtp_on_sub", "rtcp_unknown_ssrc"):
            assert acc["drops"].get("drop_" + reason, 0) > 0, reason
        for name in ("rtcp_ignored", "bad_audio_level", "rr_received", "nacks_received",
                     "remb_received", "pli_received", "fir_received", "sr_received"):
            assert acc["counters"][name] > 0, name
        # the call kept forwarding, gapless and in order
        for x, y in ((a, b), (b, a)):
            assert await x.wait_for(
                lambda x=x, y=y: len(x.stream(y.pid, "video").payloads)  # type: ignore[union-attr]
                > heard[x.pid] + 20, 10)
        await a.stop_media()
        await b.stop_media()
        await asyncio.sleep(0.3)
        assert_intact(a, b)


async def test_a_flooding_participant_is_cut_at_the_ingress_limit() -> None:
    """Over ``max_pub_pps`` / ``max_sub_pps`` a transport's datagrams are dropped before
    libsrtp, each counted as ``drop_rate_limited``; the call's own packets are not."""
    sfu = Sfu(SfuConfig(max_pub_pps=400, max_sub_pps=200))
    async with call_with_fuzzer(sfu) as (a, b, fz):
        before = snapshot(sfu)
        run = await fuzz(fz, Mutator(fz, seed=11), 4000, rate=2000, max_seconds=60)
        await asyncio.sleep(0.5)
        after = snapshot(sfu)
        acc = account(before, after, "fuzz0", run)
        # 2 s at 2000/s against 400 + 200 a second: most of it is over the limit
        assert acc["fuzz_rate_limited"] >= 1500, acc
        assert acc["drops"]["drop_rate_limited"] == acc["fuzz_rate_limited"], acc
        assert 4000 - acc["udp_rcvbuf_drops"] <= acc["fuzz_arrived"] <= 4000, acc
        for pid in ("a", "b"):  # the call's transports stayed under their limits
            p = sfu.participants[pid]
            assert p.pub.rate_limited == 0 and p.sub.rate_limited == 0
        await a.stop_media()
        await b.stop_media()
        await asyncio.sleep(0.3)
        assert_intact(a, b)


async def test_the_control_run_sends_nothing_to_the_sfu() -> None:
    """``--sink``: the fuzzer makes and protects every packet as usual, and none of them
    reaches the SFU (the control that tells the fuzzer's own cost from the SFU's)."""
    sfu = Sfu(SfuConfig())
    async with call_with_fuzzer(sfu) as (_a, _b, fz):
        fz.open_sink()
        before = snapshot(sfu)
        run = await fuzz(fz, Mutator(fz, seed=5), 600, rate=3000, max_seconds=30)
        await asyncio.sleep(0.3)
        acc = account(before, snapshot(sfu), "fuzz0", run)
        assert run.total == 600 and sum(run.protected.values()) > 300
        # only its receiver report a second (the SFU's idle clock) reached the SFU
        assert 1 <= fz.keepalives <= 2 and acc["fuzz_arrived"] == fz.keepalives, acc


def test_mutations_keep_the_first_octet_srtp_and_bound_the_ssrcs() -> None:
    """RFC 7983 §7 demux and the SSRC pool hold whatever the mutation did."""

    class Params:
        def __init__(self, kind: str) -> None:
            from sfu.peer import Negotiated
            self.n = Negotiated(kind=kind, mid="0" if kind == "audio" else "1",
                                ssrc=100 if kind == "audio" else 200, rtx_ssrc=300,
                                payload_types={"opus": 111} if kind == "audio" else {"vp8": 96},
                                rtx_payload_type=97,
                                ext_ids={"urn:ietf:params:rtp-hdrext:sdes:mid": 1})

    peer = FuzzPeer.__new__(FuzzPeer)
    peer.params = {"audio": Params("audio").n, "video": Params("video").n}
    peer.sub_ssrcs = [11, 12]
    m = Mutator(peer, seed=3)
    for _ in range(3000):
        _pc, data, _name = m.next()
        assert data and 128 <= data[0] <= 191
        if len(data) >= 8 and 191 < data[1] < 224:
            assert int.from_bytes(data[4:8], "big") in m.pool
        elif len(data) >= 12:
            assert int.from_bytes(data[8:12], "big") in m.pool
    assert _srtp_first_octet(b"", random.Random(1))[0] >> 6 == 2
    assert FuzzRun().total == 0


async def test_libsrtp_forgets_the_ssrcs_the_sfu_does_not_use() -> None:
    """An authenticated participant that invents SSRCs leaves no libsrtp state behind.

    libsrtp keeps a context per SSRC (its replay window): a datagram sent twice is refused
    the second time while the context lives. After the SFU forgets an SSRC it will not
    forward, the same datagram passes libsrtp again and ends as ``drop_unknown_ssrc``.
    """
    sfu = Sfu(SfuConfig())
    async with call_with_fuzzer(sfu) as (_a, _b, fz):
        me = sfu.participants["fuzz0"]
        pub, sub = fz.pub._fast, fz.sub._fast
        assert pub is not None and sub is not None
        before = snapshot(sfu)
        packet = build_packet(payload_type=fz.params["video"].payload_types["vp8"],
                              sequence_number=7, timestamp=1, ssrc=0x5EA10001, marker=True,
                              extensions=b"", payload=bytes(40))
        datagram = pub.protect(packet)
        for _ in range(3):  # the same datagram: a replay but for the forgotten context
            pub.sendto(datagram, pub.addr)
            await asyncio.sleep(0.05)
        # a subscriber's RTCP from 20 sender SSRCs: 8 are kept (MAX_RTCP_SENDERS)
        reports = [sub.protect_rtcp(bytes(rtcp.ReceiverReport(0x5EA20000 + i, [])))
                   for i in range(20)]
        for datagram in reports:
            sub.sendto(datagram, sub.addr)
        await asyncio.sleep(0.2)
        for datagram in reports:  # each again: only the forgotten ones pass libsrtp
            sub.sendto(datagram, sub.addr)
        await asyncio.sleep(0.3)
        after = snapshot(sfu)

        def delta(key: str) -> int:
            return after.get(key, 0) - before.get(key, 0)

        assert delta("drop_unknown_ssrc") == 3, (before, after)
        assert me.pub.srtp_forgotten == 3
        assert len(me._sub_senders) == MAX_RTCP_SENDERS
        ours = len([s for s in me._sub_senders if 0x5EA20000 <= s < 0x5EA20000 + 20])
        assert ours >= 1
        assert me.sub.srtp_forgotten == 2 * (20 - ours)
        # the replays of the kept senders' reports were refused by libsrtp, and only those
        assert delta("drop_srtp_rejected") == ours
        assert delta("srtp_forgotten") == 3 + 2 * (20 - ours)  # on /metrics
