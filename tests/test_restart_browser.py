"""A signaling restart in real Chromium (docs/DEPLOY.md "Stopping and restarting",
docs/PROTOCOL.md "Reconnecting" and "Resuming").

Two browsers hold a call in a room that has locked (``--lock-after``) on ``sealroom serve``
run as its own process. The server gets SIGTERM and a new process starts on the same port
and state directory: both pages rejoin by themselves, with their resume credentials (the
room is locked, so without them they would be refused), and decode each other's video again
(``getStats`` frames increasing on both sides). A newcomer with the right password is still
refused. How long it took is measured by ``python -m bench.restart`` (BENCHMARKS.md), not
asserted here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import links
from bench.restart import call, restart_round, serving
from peers.client import ServerError, SignalingClient
from tests.conftest import BrowserFactory

pytestmark = [pytest.mark.browser, pytest.mark.media]

LOCK_AFTER = 4.0


async def test_both_browsers_resume_a_locked_call_after_the_server_restarts(
    chromium: BrowserFactory, tmp_path: Path
) -> None:
    async with serving(tmp_path, "--lock-after", str(LOCK_AFTER)) as server:
        parts = await call(chromium, tmp_path, server, 2)
        await asyncio.sleep(LOCK_AFTER + 0.5)
        newcomer = await SignalingClient.connect(server.ws)
        with pytest.raises(ServerError) as locked:
            await newcomer.join(links.ROOM, links.PASSWORD)
        assert locked.value.id == "room-locked"  # locked before the restart
        await newcomer.close()

        result = await restart_round(server, parts, 1, seconds=90)
        assert result.exit_code == 0
        assert result.back_s is not None, (
            "the call did not come back: " + "\n".join(f"{p.name}: {p.console[-15:]}"
                                                       for p in parts))
        for viewer, row in result.frames_after.items():
            assert all(g > 0 for g in row.values()), (viewer, row)
        assert result.reconnects == {p.name: 1 for p in parts}, result.reconnects

        # Still locked after the restart: the members' credentials brought the room back
        # as it was, and a newcomer with the right password stays out.
        newcomer = await SignalingClient.connect(server.ws)
        with pytest.raises(ServerError) as locked:
            await newcomer.join(links.ROOM, links.PASSWORD)
        assert locked.value.id == "room-locked"
        await newcomer.close()
        for p in parts:
            snap = await links.snapshot(p)
            assert snap["joined"] and snap["banner"] is None, snap
            assert p.errors == [], p.errors
