"""Dynacast through the SFU, end to end over ICE/DTLS-SRTP with Python bots
(docs/SFU.md "Dynacast"): a simulcast publisher is told to stop the layers no subscriber's
tile needs (``sfu-layers``), and to restart them as soon as one does; the subscriber keeps
receiving, on the layers still sent, and gets the top one back."""

from __future__ import annotations

import asyncio

import pytest

from peers.mediabot import MediaBot, SimulcastBot
from sfu import Sfu, SfuConfig
from tests.test_sfu_simulcast import check_stream, latest_layer, start

pytestmark = pytest.mark.media


def sending(a: SimulcastBot) -> list[str]:
    return [x.rid for x in a.layers if x.active]


async def test_layers_nobody_needs_are_paused_and_resumed_when_needed() -> None:
    sfu_ = Sfu(SfuConfig(pli_interval=0.3, dynacast_pause_delay=1.0))
    a, b = await start(sfu_)
    try:
        def layer() -> str | None:
            return latest_layer(a, b.stream("a", "video"))

        assert await b.wait_for(lambda: layer() == "f", timeout=15)
        assert a.layer_messages == []  # every layer is needed: nothing said
        slot = next(s for s in sfu_.participants["b"].slots if s.kind == "video")
        assert slot.params is not None
        # b shows a's video 200 px high: only the 180-line layer is needed
        await sfu_.handle("b", {"type": "sfu-video-constraints", "mid": slot.params.mid,
                                "height": 200})
        assert await b.wait_for(lambda: layer() == "q", timeout=10)
        assert await a.wait_for(lambda: sending(a) == ["q"], timeout=10)
        assert a.layer_messages[-1] == {"q": True, "h": False, "f": False}
        stats = sfu_.stats()
        assert stats["dynacast_pauses"] == 2 and stats.get("dynacast_resumes", 0) == 0
        # b keeps receiving the lowest layer while the others are off
        got = len(b.stream("a", "video").payloads)  # type: ignore[union-attr]
        paused = {x.rid: x.packets for x in a.layers}
        await asyncio.sleep(1.0)
        assert len(b.stream("a", "video").payloads) > got  # type: ignore[union-attr]
        assert {x.rid: x.packets for x in a.layers if x.rid != "q"} == \
            {k: v for k, v in paused.items() if k != "q"}
        # the tile is big again: the top layer restarts at once (not after the delay),
        # the middle one with it (every layer below a needed one is needed: a budget
        # that cannot take the top steps to the middle), and b gets the top layer back
        await sfu_.handle("b", {"type": "sfu-video-constraints", "mid": slot.params.mid,
                                "height": None})
        assert await a.wait_for(lambda: sending(a) == ["q", "h", "f"], timeout=3)
        assert a.layer_messages[-1] == {"q": True, "h": True, "f": True}
        assert await b.wait_for(lambda: layer() == "f", timeout=10)
        assert sfu_.stats()["dynacast_resumes"] == 2
        runs = check_stream(a, b.stream("a", "video"))  # type: ignore[arg-type]
        assert runs[-2:] == ["q", "f"], runs
        assert not b.errors
    finally:
        for bot in (a, b):
            await bot.close()
        await sfu_.close()


async def test_a_second_subscriber_keeps_the_layer_its_tile_needs() -> None:
    sfu_ = Sfu(SfuConfig(pli_interval=0.3, dynacast_pause_delay=1.0))
    a, b = await start(sfu_)
    c = MediaBot("c", video=False)
    try:
        await c.join(sfu_, "s")
        await c.publish()
        for bot in (b, c):
            assert await bot.wait_for(lambda bot=bot: latest_layer(a, bot.stream("a", "video"))
                                      is not None, timeout=15)
        slots = {pid: next(s for s in sfu_.participants[pid].slots if s.kind == "video")
                 for pid in ("b", "c")}
        for pid, height in (("b", 100), ("c", 400)):
            mid = slots[pid].params.mid  # type: ignore[union-attr]
            await sfu_.handle(pid, {"type": "sfu-video-constraints", "mid": mid,
                                    "height": height})
        # b wants the lowest, c the middle: the top layer is paused, nothing else
        assert await a.wait_for(lambda: sending(a) == ["q", "h"], timeout=10)
        await asyncio.sleep(1.5)
        assert sending(a) == ["q", "h"]
        assert await c.wait_for(lambda: latest_layer(a, c.stream("a", "video")) == "h",
                                timeout=10)
        # c leaves: the middle layer is not needed any more
        await c.close()
        await sfu_.leave("c")
        assert await a.wait_for(lambda: sending(a) == ["q"], timeout=10)
    finally:
        for bot in (a, b, c):
            await bot.close()
        await sfu_.close()
