"""Leaving and killed participants release everything; 100 join/leave cycles stay flat."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable

import pytest
from aiortc import RTCPeerConnection

from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig

pytestmark = pytest.mark.media


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_pcs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, RTCPeerConnection))


def tasks() -> int:
    return len(asyncio.all_tasks())


def video_from(b: MediaBot, pid: str) -> int:
    r = b.stream(pid, "video")
    return len(r.payloads) if r else 0


async def settle(predicate: object, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0.05)


async def steady(count: Callable[[], int], hold: float = 0.5, timeout: float = 5.0) -> None:
    """Wait until ``count()`` has not changed for ``hold`` seconds, ``timeout`` at most."""
    last, since = count(), 0.0
    for _ in range(int(timeout / 0.05)):
        await asyncio.sleep(0.05)
        now = count()
        since = since + 0.05 if now == last else 0.0
        last = now
        if since >= hold:
            return


async def test_leave_and_kill_release_everything() -> None:
    base_fds, base_tasks, base_pcs = open_fds(), tasks(), live_pcs()
    await leave_and_kill()
    await settle(lambda: tasks() <= base_tasks)
    assert tasks() <= base_tasks, "\n".join(repr(t.get_coro()) for t in asyncio.all_tasks())
    assert open_fds() <= base_fds
    await settle(lambda: live_pcs() <= base_pcs)
    assert live_pcs() <= base_pcs  # nothing (SFU side or bot side) keeps a PeerConnection


async def leave_and_kill() -> None:
    sfu = Sfu(SfuConfig(idle_timeout=2.0, rtcp_interval=0.5))
    bots = [MediaBot(n) for n in ("a", "b", "c", "d")]
    try:
        for b in bots:
            await b.join(sfu, "c")
            await b.publish()
        a, b, c, d = bots
        assert await a.wait_for(lambda: all(len(x.received) == 6 for x in bots), timeout=20)

        # c leaves properly
        await c.close()
        await sfu.leave("c")
        assert "c" not in sfu.participants
        for x in (a, b, d):
            assert await x.wait_for(lambda x=x: any(m.get("type") == "sfu-left"
                                                    and m["participant"] == "c"
                                                    for m in x.messages), timeout=5)
            assert await x.wait_for(lambda x=x: "c" not in
                                    {t["participant"] for t in x.tracks.values()}, timeout=5)
        for p in sfu.participants.values():
            for slot in p.slots:
                assert slot.track is None or slot.track.owner.pid != "c"

        # d is killed: sockets gone, no DTLS close, no leave() — the SFU notices by itself
        await d.close(abrupt=True)
        assert await a.wait_for(lambda: "d" not in sfu.participants, timeout=15)
        assert sfu.stats()["transport_failures"] == 1
        assert await a.wait_for(lambda: any(m.get("type") == "sfu-left" and
                                            m["participant"] == "d" for m in a.messages), 5)

        # e closes its PeerConnections cleanly (DTLS close_notify) but never says leave
        e = MediaBot("e", audio=False, video=False)
        bots.append(e)
        await e.join(sfu, "c")
        assert await e.wait_for(lambda: len(e.received) == 4, timeout=10)
        await e.close()
        assert await a.wait_for(lambda: "e" not in sfu.participants, timeout=5)
        assert sfu.stats()["transport_failures"] == 2

        # the survivors still get each other's media
        n = video_from(a, "b")
        assert await a.wait_for(lambda: video_from(a, "b") > n + 10, timeout=5)
    finally:
        for x in bots:
            await x.close()
        await sfu.close()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def cycle(sfu: Sfu, pid: str) -> None:
    """One guest joins, receives the host's video, leaves."""
    guest = MediaBot(pid, video=False)
    await guest.join(sfu, "m")
    await guest.publish()
    assert await guest.wait_for(lambda: video_from(guest, "host") > 0, timeout=10)
    await guest.close()
    await sfu.leave(pid)


async def test_memory_flat_over_100_join_leave_cycles() -> None:
    sfu = Sfu(SfuConfig(pli_interval=0.05))
    host = MediaBot("host")
    await host.join(sfu, "m")
    await host.publish()
    marks: dict[int, tuple[int, int, int, int]] = {}
    try:
        for i in range(100):
            await cycle(sfu, f"g{i}")
            if i in (19, 99):
                # closed PCs are freed shortly after; a send or PLI task of the last
                # guest may still be finishing: each mark waits (bounded) until the PCs
                # are freed and the task count held still for 0.5 s, so neither mark
                # counts a task on its way out (the equality below stays)
                await settle(lambda: live_pcs() <= 4)
                await steady(tasks)
                marks[i] = (open_fds(), tasks(), live_pcs(), rss())
        assert set(sfu.participants) == {"host"}
        p = sfu.participants["host"]
        assert all(s.track is None for s in p.slots)
        assert all(not t.slots for t in p.tracks.values())
        # nothing grows between cycle 20 and cycle 100: sockets, tasks, PeerConnections
        assert marks[99][:3] == marks[19][:3]
        assert marks[99][2] == 4  # host's two PCs, and the SFU's two for the host
        assert marks[99][3] - marks[19][3] < 16 * 1024 * 1024  # RSS: no per-cycle growth
    finally:
        await host.close()
        await sfu.close()
