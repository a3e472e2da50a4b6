"""/metrics (Prometheus text format) during a real call, and the /healthz probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from peers.client import ServerError, SignalingClient
from peers.mediabot import MediaBot
from sfu import Sfu, SfuConfig
from sfu.ice import IcePolicy
from tests.conftest import RunningServer

PASSWORD = "counting packets"
ROOM = "metrics-room-name"
BOT_ICE = IcePolicy("127.0.0.1", port_min=54000, port_max=54999)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(srv: RunningServer) -> tuple[Samples, str]:
    async with aiohttp.ClientSession() as http, http.get(srv.http + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(("sealroom_" + name, tuple(sorted(labels.items()))), 0.0)


async def participant(srv: RunningServer) -> tuple[SignalingClient, MediaBot]:
    client = await SignalingClient.connect(srv.ws)
    await client.join(ROOM, PASSWORD)
    assert client.id is not None
    bot = MediaBot(client.id, signal=client.send, ice=BOT_ICE)
    await client.set_media_handler(bot.on_message)
    await bot.publish()
    return client, bot


@pytest.mark.media
async def test_counters_move_during_a_call(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    srv = await signaling(media=Sfu(SfuConfig(port_min=46000, port_max=46999)))
    before, _ = await scrape(srv)
    assert value(before, "participants") == 0 and value(before, "sfu_forwarded_packets_total") == 0
    members = [await participant(srv) for _ in range(2)]
    bots = [bot for _, bot in members]
    try:
        assert await bots[0].wait_for(lambda: all(len(b.received) == 2 for b in bots), timeout=30)
        first, _ = await scrape(srv)
        assert await bots[0].wait_for(
            lambda: all(len(r.payloads) > 60 for b in bots for r in b.received.values()),
            timeout=20,
        )
        await bots[1].request_keyframe(bots[0].pid)  # a PLI the SFU must count
        intruder = await SignalingClient.connect(srv.ws)
        with pytest.raises(ServerError):
            await intruder.join(ROOM, PASSWORD + "?")
        await intruder.close()
        assert await bots[0].wait_for(lambda: bots[0].counters["pli_received"] > 0, timeout=10)
        second, text = await scrape(srv)

        assert value(first, "rooms") == 1 and value(first, "participants") == 2
        assert value(second, "sfu_publishers") == 2 and value(second, "sfu_subscribers") == 2
        assert value(second, "sfu_published_tracks") == 4
        for name in ("sfu_forwarded_packets_total", "sfu_forwarded_bytes_total",
                     "sfu_received_packets_total", "ws_messages_total"):
            assert value(second, name) > value(first, name) > 0, name
        assert value(second, "sfu_pli_received_total") >= 1
        # forwarded packets leave in runs, one send per subscriber and loop turn
        sends = value(second, "sfu_batch_sends_total")
        assert value(second, "sfu_batch_packets_total") >= sends > value(
            first, "sfu_batch_sends_total")
        assert value(second, "admission_failures_total", reason="wrong-password") == 1
        assert value(second, "signaling_errors_total", id="wrong-password") == 1
        assert value(second, "joins_total") == 2
        # What the bots received is what the SFU counted as forwarded (give or take the
        # packets in flight at the scrape).
        received = sum(len(r.payloads) for b in bots for r in b.received.values())
        assert value(second, "sfu_forwarded_packets_total") >= received * 0.5
        assert ("sealroom_event_loop_lag_max_seconds", ()) in second
        # The media loop's stop meters run while a room is open (sfu/pauses.py).
        assert value(second, "sfu_loop_probes_total") > value(first, "sfu_loop_probes_total") > 0
        assert ("sealroom_sfu_gc_pause_seconds_total", ()) in second
        # Nothing identifies a room or a participant.
        assert ROOM not in text
        for b in bots:
            assert b.pid not in text
    finally:
        for client, bot in members:
            await bot.close()
            await client.close()
    await asyncio.sleep(0.2)
    after, _ = await scrape(srv)
    assert value(after, "participants") == 0 and value(after, "sfu_participants") == 0


async def test_servers_in_one_process_keep_their_own_numbers(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    a, b = await signaling(), await signaling()
    async with await SignalingClient.connect(a.ws) as client:
        await client.join("only-on-a", PASSWORD)
        samples_a, _ = await scrape(a)
        samples_b, text_b = await scrape(b)
    assert value(samples_a, "joins_total") == 1 and value(samples_a, "participants") == 1
    assert value(samples_b, "joins_total") == 0 and value(samples_b, "participants") == 0
    # Without an SFU there are no media families at all (not zeros that look like data).
    assert "sealroom_sfu_" not in text_b


async def test_rate_limit_close_is_counted(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    srv = await signaling(rate=1.0, burst=3.0)
    client = await SignalingClient.connect(srv.ws)
    try:
        for _ in range(10):
            if client.close_code is not None:
                break
            await client.send({"type": "ping"})
        await client.wait_closed()
    finally:
        await client.close()
    samples, _ = await scrape(srv)
    assert value(samples, "rate_limit_closes_total") == 1
    assert value(samples, "signaling_closes_total", id="rate-limited") == 1


class _NoLiveWorker:
    """A media plane whose workers are all down (sfu.workers.SfuWorkers.accepting)."""

    def accepting(self) -> bool:
        return False


async def test_health_probes(signaling: Callable[..., Awaitable[RunningServer]]) -> None:
    srv = await signaling()
    async with aiohttp.ClientSession() as http:
        for path, body in (("/healthz/live", {"status": "live"}),
                           ("/healthz/ready", {"status": "ready", "sfu": False}),
                           ("/healthz", {"status": "ready", "sfu": False})):
            async with http.get(srv.http + path) as resp:
                assert resp.status == 200, path
                assert await resp.json() == body
        # No live SFU worker (all being restarted): not ready, and it says why.
        srv.server.media = _NoLiveWorker()
        try:
            async with http.get(srv.http + "/healthz/ready") as resp:
                assert resp.status == 503
                assert await resp.json() == {"status": "not-ready", "sfu": True,
                                             "reason": "no-live-sfu-worker"}
        finally:
            srv.server.media = None
        # Shutting down: no longer ready (a load balancer drains it), still live.
        srv.server.ready = False
        async with http.get(srv.http + "/healthz/ready") as resp:
            assert resp.status == 503
            assert (await resp.json())["status"] == "not-ready"
        async with http.get(srv.http + "/healthz/live") as resp:
            assert resp.status == 200
