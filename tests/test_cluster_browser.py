"""A real Chromium joins through node A into a room hosted on node B (docs/DEPLOY.md
"Several nodes").

Two nodes on one real redis-server (tests/clusternodes.py), each its own port and its SFU
on its own loopback address (A: 127.0.0.1, B: 127.0.0.2). An E2EE bot joins through B
first, so the room is placed on B. The page is served by A and opens its WebSocket to A;
A bridges it to B. The page must show the bot's picture (pixels), and its media must go
to B's SFU (the selected candidate pair's remote address is B's).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from peers.e2eebot import E2eeBot
from sfu.ice import IcePolicy
from tests.callpage import PASSWORD, ROOM, join, open_browser, snapshot, until
from tests.clusternodes import start_node
from tests.conftest import BrowserFactory
from tests.test_call_browser import shows_color

pytestmark = [pytest.mark.browser, pytest.mark.media]

BOT_COLOR = (40, 180, 70)
A_MEDIA, B_MEDIA = "127.0.0.1", "127.0.0.2"

REMOTE_ADDRESSES = """async () => {
  const out = [];
  const reports = await window.sealroom.call.media.stats();
  for (const report of Object.values(reports)) {
    report?.forEach((r) => {
      if (r.type !== 'transport' || !r.selectedCandidatePairId) return;
      const pair = report.get(r.selectedCandidatePairId);
      const remote = report.get(pair?.remoteCandidateId);
      if (remote) out.push(remote.address ?? remote.ip);
    });
  }
  return out;
}"""


async def test_a_page_on_node_a_meets_a_member_of_node_b(
    chromium: BrowserFactory, tmp_path: Path, redis_server: Any
) -> None:
    b = await start_node(redis_server.url, "node-b", B_MEDIA, (47000, 47499))
    nodes = [b]
    bot = E2eeBot(b.ws, ROOM, PASSWORD, "Bob on B", color=BOT_COLOR,
                  ice=IcePolicy("127.0.0.1", port_min=48000, port_max=48999))
    try:
        await bot.start()  # B is the only live node: the room is placed on B
        assert await b.cluster.placement.host(ROOM) == "node-b"
        a = await start_node(redis_server.url, "node-a", A_MEDIA, (47500, 47999))
        nodes.append(a)
        page = await open_browser(chromium, tmp_path, 1)
        await join(page, a.http, "Ada on A")
        await page.wait_for_selector("#room-view:not([hidden])")
        await until(page, f"s => s.tiles.some(t => t.id === '{bot.id}' && t.width > 0"
                          " && t.name === 'Bob on B')")
        assert await shows_color(page, bot.id, BOT_COLOR), "the page does not show Bob"
        snap = await snapshot(page)
        # The page's socket is A's, bridged to B; its media is on B's SFU alone.
        assert len(a.server.bridges) == 1 and snap["id"] in b.server.conns
        assert ROOM not in a.server.rooms.rooms
        assert b.sfu is not None and a.sfu is not None
        assert b.sfu.gauges()["participants"] == 2 and a.sfu.gauges()["participants"] == 0
        remotes = await page.evaluate(REMOTE_ADDRESSES)
        assert remotes and set(remotes) == {B_MEDIA}, remotes
        assert not page.errors, page.errors
    finally:
        await bot.close()
        for node in reversed(nodes):
            await node.stop()


async def test_two_browsers_come_back_after_their_rooms_node_is_killed(
    chromium: BrowserFactory, tmp_path: Path, redis_server: Any
) -> None:
    """Two pages, each on its own entrance node (n1, n2), in a locked room hosted by a
    third node run as its own process (n0, `sealroom serve --redis`). `kill -9` of n0:
    both pages rejoin by themselves (relay-lost, then a join with their resume
    credentials), the room is placed on a live node from its record, and they decode each
    other's new sessions from that node's SFU. A newcomer stays out (still locked). The
    time from the kill until both decode each other again is printed, not asserted
    (DEPLOY.md "Several nodes" gives the bound)."""
    import time

    from bench import links
    from bench.restart import Server, back_in_call, free_port, session_ids
    from peers.client import ServerError, SignalingClient

    lock_after = 4.0
    state = tmp_path / "state"  # one resume key for the three nodes
    entries = [
        await start_node(redis_server.url, "n1", "127.0.0.1", (47000, 47499),
                         state_dir=str(state), lock_after=lock_after),
        await start_node(redis_server.url, "n2", "127.0.0.3", (47500, 47999),
                         state_dir=str(state), lock_after=lock_after),
    ]
    host = Server(free_port(), state, ["--redis", redis_server.url, "--node-id", "n0",
                                       "--media-host", "127.0.0.2", "--media-ports",
                                       "46000-46499", "--lock-after", str(lock_after)])
    try:
        await host.start()
        parts = [await links.open_participant(chromium, tmp_path, seed, name)
                 for seed, name in ((1, "Ada"), (2, "Grace"))]
        for p, node in zip(parts, entries, strict=True):
            await links.join(p, node.http)
        await links.everyone_receives(parts)
        assert await entries[0].cluster.placement.host(links.ROOM) == "n0"  # wins the tie
        assert all(len(node.server.bridges) == 1 for node in entries)
        await asyncio.sleep(lock_after + 0.5)  # the room locks

        await session_ids(parts)
        old = {p.name: p.id for p in parts}
        killed = time.monotonic()
        host.kill()  # SIGKILL
        back, growth = await back_in_call(parts, old, seconds=90)
        assert back is not None, "the call did not come back: " + "\n".join(
            f"{p.name}: {p.console[-15:]}" for p in parts)
        assert all(g > 0 for row in growth.values() for g in row.values()), growth
        new_host = await entries[0].cluster.placement.host(links.ROOM)
        assert new_host in ("n1", "n2")
        owner = entries[0] if new_host == "n1" else entries[1]
        assert owner.sfu is not None and owner.sfu.gauges()["participants"] == 2
        assert owner.server.stats["resumes"] == 2  # back through the resume path
        newcomer = await SignalingClient.connect(entries[0].ws)
        with pytest.raises(ServerError) as locked:
            await newcomer.join(links.ROOM, links.PASSWORD)
        assert locked.value.id == "room-locked"
        await newcomer.close()
        for p in parts:
            assert p.errors == [], p.errors
        print(f"both pages decode each other again {back - killed:.2f} s after kill -9 "
              "of the room's node")
    finally:
        host.kill()
        for node in reversed(entries):
            await node.stop()
