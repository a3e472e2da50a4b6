"""The SFU behind the real signaling server: media bots negotiate over the WebSocket.

Each participant is a ``SignalingClient`` (password admission, sealed relay) plus a
``MediaBot`` whose SFU messages travel on that same socket, as a browser's would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from peers.client import SignalingClient
from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig
from sfu.ice import IcePolicy
from tests.conftest import RunningServer
from tests.test_sfu_room import assert_delivered

pytestmark = pytest.mark.media
PASSWORD = "media over sealed signaling"
BOT_ICE = IcePolicy("127.0.0.1", port_min=53000, port_max=53999)


async def participant(srv: RunningServer, room: str) -> tuple[SignalingClient, MediaBot]:
    client = await SignalingClient.connect(srv.ws)
    joined = await client.join(room, PASSWORD)
    assert joined["sfu"] is True
    assert client.id is not None
    bot = MediaBot(client.id, signal=client.send, ice=BOT_ICE)
    await client.set_media_handler(bot.on_message)
    await bot.publish()
    return client, bot


async def test_three_participants_exchange_media_through_the_server(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    sfu = Sfu(SfuConfig(port_min=43000, port_max=43999))
    srv = await signaling(media=sfu)
    members = [await participant(srv, "call") for _ in range(3)]
    bots = [bot for _, bot in members]
    try:
        assert await bots[0].wait_for(
            lambda: all(len(b.received) == 4 for b in bots), timeout=30
        ), "not every participant receives every other one's audio and video"
        await asyncio.sleep(2.0)
        for b in bots:
            await b.stop_media()
        await asyncio.sleep(0.5)
        assert_delivered(bots, min_audio=40, min_video=15)
        # The media ids are the signaling ids: what the sub offer's track map names.
        for client, bot in members:
            named = {t["participant"] for t in bot.tracks.values()}
            assert named == {c.id for c, _ in members} - {client.id}
        # Sealed signaling keeps working beside media.
        alice, bob = members[0][0], members[1][0]
        await alice.seal("*", {"chat": "can you see me?"})
        assert (await bob.next_sealed()).json() == {"chat": "can you see me?"}
        assert srv.server.stats.get("errors.server-error", 0) == 0
    finally:
        for client, bot in members:
            await bot.close()
            await client.close()


async def test_dead_media_takes_the_member_out_of_the_room(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    sfu = Sfu(SfuConfig(port_min=44000, port_max=44999, idle_timeout=2.0))
    srv = await signaling(media=sfu)
    alive_client, alive_bot = await participant(srv, "fragile")
    dead_client, dead_bot = await participant(srv, "fragile")
    try:
        assert await alive_bot.wait_for(lambda: len(alive_bot.received) == 2, timeout=30)
        await dead_bot.close(abrupt=True)  # the network vanishes; the socket stays open
        left = await alive_client.expect("member-left", timeout=20)
        assert left["id"] == dead_client.id and left["reason"] == "media-failed"
        assert await dead_client.wait_closed() == 1013
        assert dead_client.id not in sfu.participants
        room = srv.server.rooms.get("fragile")
        assert room is not None and list(room.members) == [alive_client.id]
    finally:
        await alive_bot.close()
        await alive_client.close()
        await dead_client.close()
