"""SFU worker processes (``sealroom serve --workers N``): rooms pinned to workers, media
through real worker processes behind the real signaling server, a worker killed mid-call,
and the command as a user runs it (start, ready, SIGTERM, no orphans)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from peers.client import SignalingClient
from peers.mediabot import MediaBot
from sealroom.cli import build_parser
from sfu import SfuConfig
from sfu import workers as workers_module
from sfu.ice import IcePolicy
from sfu.workers import (
    FRAME_MAX,
    WORKER_LOST,
    FrameError,
    SfuWorkers,
    encode,
    read_frame,
    split_ports,
    worker_count,
)
from tests.conftest import RunningServer
from tests.test_sfu_room import assert_delivered

PASSWORD = "rooms on their own cores"
SFU_PORTS = (48000, 48999)
BOT_ICE = IcePolicy("127.0.0.1", port_min=55000, port_max=55999)
Member = tuple[SignalingClient, MediaBot]


# -- pieces ------------------------------------------------------------------------------


def test_port_range_is_split_evenly_between_workers() -> None:
    assert split_ports(40000, 40999, 2) == [(40000, 40499), (40500, 40999)]
    # An uneven split: the last worker takes the remainder; no port is shared or lost.
    ranges = split_ports(40000, 40010, 3)
    assert ranges == [(40000, 40002), (40003, 40005), (40006, 40010)]
    ports = [p for lo, hi in ranges for p in range(lo, hi + 1)]
    assert ports == list(range(40000, 40011))
    assert split_ports(0, 0, 4) == [(0, 0)] * 4  # any port: the kernel never double-books
    with pytest.raises(ValueError, match="too small"):
        split_ports(40000, 40004, 3)  # 1 port each: not even one participant (2 sessions)


def test_workers_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEALROOM_WORKERS", raising=False)
    assert build_parser().parse_args(["serve"]).workers == 1
    assert build_parser().parse_args(["serve", "--workers", "3"]).workers == 3
    cores = len(os.sched_getaffinity(0))
    assert build_parser().parse_args(["serve", "--workers", "0"]).workers == cores
    assert worker_count(0) == cores and worker_count(5) == 5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--workers", "-1"])
    monkeypatch.setenv("SEALROOM_WORKERS", "2")
    assert build_parser().parse_args(["serve"]).workers == 2
    assert build_parser().parse_args(["serve", "--workers", "4"]).workers == 4


def test_too_small_a_port_range_for_the_workers_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sealroom.cli", "serve", "--workers", "4", "--port", "0",
         "--media-ports", "40000-40006"],
        capture_output=True, text=True, timeout=60, env=_env(),
    )
    assert proc.returncode != 0
    assert "too small for 4 workers" in proc.stderr


async def test_frames_round_trip_and_bad_frames_are_refused() -> None:
    parent, child = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    try:
        msg = {"op": "handle", "pid": "p1", "msg": {"type": "sfu-offer", "sdp": "v=0\r\n…"}}
        child.sendall(encode(msg) + encode({"op": "stats"}))
        assert await read_frame(reader) == msg
        assert await read_frame(reader) == {"op": "stats"}
        with pytest.raises(FrameError):
            encode({"op": "x", "blob": "a" * FRAME_MAX})
        child.sendall(struct.pack("!I", FRAME_MAX + 1))
        with pytest.raises(FrameError):
            await read_frame(reader)
    finally:
        writer.close()
        child.close()
    for bad in (b"[1, 2]", b"{\"op\": 3}", b"not json"):
        parent, child = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        child.sendall(struct.pack("!I", len(bad)) + bad)
        with pytest.raises(FrameError):
            await read_frame(reader)
        writer.close()
        child.close()
    # End of stream between frames is a clean end; inside one it is an error.
    parent, child = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=parent)
    child.sendall(encode({"op": "stats"})[:6])
    child.close()
    with pytest.raises(FrameError):
        await read_frame(reader)
    writer.close()


# -- placement and restarts (worker processes, no media) -------------------------------------


async def test_rooms_go_to_the_least_loaded_worker_and_a_stopped_worker_comes_back() -> None:
    pool = SfuWorkers(SfuConfig(port_min=SFU_PORTS[0], port_max=SFU_PORTS[1]), 2)
    await pool.start()
    got: dict[str, list[dict[str, Any]]] = {}

    def sender(pid: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def send(msg: dict[str, Any]) -> None:
            got.setdefault(pid, []).append(msg)
        return send

    try:
        for pid, room in (("a1", "one"), ("a2", "one"), ("b1", "two"), ("c1", "three")):
            await pool.join(room, pid, sender(pid))
        # one: 2 on worker 0; two: worker 1 (idle); three: worker 1 (1 < 2 participants).
        assert [pool.worker_of(r) for r in ("one", "two", "three")] == [0, 1, 1]
        deadline = time.monotonic() + 10  # the joins run in the workers' own tasks
        while pool.gauges()["participants"] < 4 and time.monotonic() < deadline:
            await pool.refresh()
        assert pool.gauges()["participants"] == 4 and pool.gauges()["rooms"] == 3
        assert [w.gauges["participants"] for w in pool.worker_stats()] == [2, 2]
        # A message for a participant reaches its worker's Sfu, and its answer comes back.
        await pool.handle("b1", {"type": "sfu-nonsense"})
        deadline = time.monotonic() + 10
        while "b1" not in got and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert got["b1"][0]["type"] == "sfu-error" and got["b1"][0]["id"] == "unknown-type"
        # A room stays on its worker while it has members and is forgotten when empty.
        await pool.leave("a1")
        await pool.join("one", "a3", sender("a3"))
        assert pool.worker_of("one") == 0
        for pid in ("a2", "a3"):
            await pool.leave(pid)
        assert pool.worker_of("one") is None
        await pool.join("four", "d1", sender("d1"))
        assert pool.worker_of("four") == 0  # 0 participants there now, 2 on worker 1

        # SIGTERM to a worker (not from us): it stops cleanly, its participant is told,
        # and a new process takes its place.
        old = pool.workers[0].pid
        assert old is not None
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not (pool.workers[0].alive and pool.workers[0].pid != old):
            assert time.monotonic() < deadline, "worker 0 was not restarted"
            await asyncio.sleep(0.05)
        assert [(m["id"], m["message"]) for m in got["d1"]] == [
            ("transport-failed", WORKER_LOST)]
        assert "d1" not in pool.members and pool.worker_of("four") is None
        assert pool.stats()["worker_exits"] == 1
        await pool.join("five", "e1", sender("e1"))
        assert pool.worker_of("five") == 0
    finally:
        await pool.close()
    assert all(w.proc is not None and w.proc.returncode is not None for w in pool.workers)


async def test_not_accepting_while_no_worker_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    # /healthz/ready reads accepting(): with the only worker dead and its restart pending,
    # a join would just wait, so a load balancer should send it elsewhere meanwhile.
    monkeypatch.setattr(workers_module, "RESTART_MIN", 3.0)  # a window wide enough to see
    pool = SfuWorkers(SfuConfig(port_min=SFU_PORTS[0], port_max=SFU_PORTS[1]), 1)
    await pool.start()
    try:
        assert pool.accepting()
        old = pool.workers[0].pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pool.accepting():
            assert time.monotonic() < deadline, "still accepting with its worker dead"
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 30
        while not pool.accepting():
            assert time.monotonic() < deadline, "the worker was not restarted"
            await asyncio.sleep(0.05)
        assert pool.workers[0].pid != old
    finally:
        await pool.close()
    assert not pool.accepting()


# -- media through worker processes ------------------------------------------------------


async def participant(srv: RunningServer, room: str) -> Member:
    client = await SignalingClient.connect(srv.ws)
    joined = await client.join(room, PASSWORD)
    assert joined["sfu"] is True and client.id is not None
    bot = MediaBot(client.id, signal=client.send, ice=BOT_ICE)
    await client.set_media_handler(bot.on_message)
    await bot.publish()
    return client, bot


def sfu_ports(bot: MediaBot) -> set[int]:
    """The UDP ports of the SFU's host candidates in the answers/offers the bot got."""
    ports: set[int] = set()
    for peer in (bot.pub, bot.sub):
        desc = peer.pc.remoteDescription
        if desc is not None:
            ports |= {int(p) for p in re.findall(r"a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ",
                                                 desc.sdp)}
    return ports


def packets(bot: MediaBot) -> int:
    return sum(len(r.payloads) for r in bot.received.values())


async def scrape(srv: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as http, http.get(srv.http + "/metrics") as resp:
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def close_all(members: list[Member]) -> None:
    for client, bot in members:
        await bot.close()
        await client.close()


@pytest.mark.media
async def test_rooms_on_two_workers_survive_one_being_killed(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    pool = SfuWorkers(SfuConfig(port_min=SFU_PORTS[0], port_max=SFU_PORTS[1]), 2)
    await pool.start()
    members: list[Member] = []
    try:
        srv = await signaling(media=pool)
        room_a = [await participant(srv, "room-a") for _ in range(2)]
        members += room_a
        room_b = [await participant(srv, "room-b") for _ in range(2)]
        members += room_b
        bots_a, bots_b = [b for _, b in room_a], [b for _, b in room_b]
        wa, wb = pool.worker_of("room-a"), pool.worker_of("room-b")
        assert wa is not None and wb is not None
        assert wa != wb, "the second room was not placed on the idle worker"

        assert await bots_a[0].wait_for(
            lambda: all(len(b.received) == 2 for b in bots_a + bots_b), timeout=30
        ), "media does not flow in both rooms"
        # Each room's ICE runs on its own worker's share of --media-ports.
        for bots, w in ((bots_a, wa), (bots_b, wb)):
            lo, hi = pool.workers[w].ports
            for bot in bots:
                assert sfu_ports(bot) and all(lo <= p <= hi for p in sfu_ports(bot))

        # Counters come from both processes and add up; /metrics shows them per worker.
        assert await bots_a[0].wait_for(
            lambda: all(packets(b) > 40 for b in bots_a + bots_b), timeout=20)
        await pool.refresh()
        per = {w.index: w for w in pool.worker_stats()}
        total = pool.stats()
        assert per[0].counters["forwarded_packets"] > 0
        assert per[1].counters["forwarded_packets"] > 0
        assert total["forwarded_packets"] == (per[0].counters["forwarded_packets"]
                                              + per[1].counters["forwarded_packets"])
        assert total["joins"] == 4
        assert per[wa].gauges["participants"] == 2 and per[wb].gauges["participants"] == 2
        assert pool.gauges()["rooms"] == 2 and pool.gauges()["participants"] == 4
        samples = await scrape(srv)
        assert samples[("sealroom_sfu_participants", ())] == 4
        assert samples[("sealroom_sfu_workers", ())] == 2
        assert samples[("sealroom_sfu_worker_participants", (("worker", str(wa)),))] == 2
        assert samples[("sealroom_sfu_worker_forwarded_packets_total", (("worker", "0"),))] > 0
        assert samples[("sealroom_sfu_forwarded_packets_total", ())] >= total["forwarded_packets"]

        # SIGKILL room A's worker in the middle of the call.
        victim = pool.workers[wa].pid
        assert victim is not None
        before_kill = pool.stats()
        os.kill(victim, signal.SIGKILL)
        for client, _ in room_a:
            assert await client.wait_closed(timeout=20) == 1013  # media-failed
        for bot in bots_a:
            assert [(e["id"], e["message"]) for e in bot.errors] == [
                ("transport-failed", WORKER_LOST)]
        left = [m for c, _ in room_a for m in c.drain()
                if isinstance(m, dict) and m.get("type") == "member-left"]
        assert left and all(m["reason"] == "media-failed" for m in left)
        gone = srv.server.rooms.get("room-a")
        assert gone is None or not gone.members
        assert pool.worker_of("room-a") is None

        # Room B never noticed.
        counts = {b.pid: packets(b) for b in bots_b}
        assert await bots_b[0].wait_for(
            lambda: all(packets(b) > counts[b.pid] + 40 for b in bots_b), timeout=20
        ), "room B stopped receiving when the other worker died"
        assert all(not b.errors for b in bots_b)

        # The dead worker is replaced, and a new room goes to it (it has no load).
        assert await bots_b[0].wait_for(lambda: pool.workers[wa].alive, timeout=30)
        assert pool.workers[wa].pid != victim and pool.workers[wa].restarts == 1
        room_c = [await participant(srv, "room-c") for _ in range(2)]
        members += room_c
        bots_c = [b for _, b in room_c]
        assert pool.worker_of("room-c") == wa
        assert await bots_c[0].wait_for(
            lambda: all(len(b.received) == 2 for b in bots_c), timeout=30
        ), "no media in a room created after the restart"
        assert await bots_c[0].wait_for(lambda: all(packets(b) > 40 for b in bots_c), timeout=20)

        for bot in bots_b + bots_c:
            await bot.stop_media()
        await asyncio.sleep(0.5)
        assert_delivered(bots_b, min_audio=40, min_video=15)
        assert_delivered(bots_c, min_audio=20, min_video=10)

        # Counters never go backwards across the restart; the loss is counted.
        await pool.refresh()
        after = pool.stats()
        for key in ("forwarded_packets", "received_packets", "joins"):
            assert after[key] >= before_kill.get(key, 0), key
        assert after["worker_exits"] == 1
        assert after["error_transport-failed"] >= 2
        assert srv.server.stats.get("errors.server-error", 0) == 0
    finally:
        await close_all(members)
        await pool.close()
    assert all(not w.alive for w in pool.workers)
    for w in pool.workers:
        assert w.proc is not None and w.proc.returncode is not None


# -- the command ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _start_serve(port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "2", "--media-ports", "49000-49099", "--log-format", "json",
         *extra],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_ready(proc: subprocess.Popen[str], port: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status, body = _get(f"http://127.0.0.1:{port}/healthz/ready")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
            continue
        if status == 200:
            ready: dict[str, Any] = json.loads(body)
            return ready
        time.sleep(0.2)
    raise AssertionError(f"not ready (exit code {proc.poll()})")


def _wait_gone(pids: list[int], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_running(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(_running(p) for p in pids)


def test_serve_with_two_workers_starts_and_stops_without_orphans() -> None:
    port = _free_port()
    proc = _start_serve(port)
    workers: list[int] = []
    try:
        assert _wait_ready(proc, port) == {"status": "ready", "sfu": True}
        workers = _children(proc.pid)
        assert len(workers) == 2, [_cmdline(p) for p in workers]
        assert all("sfu.workers" in _cmdline(p) for p in workers)
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "sealroom_sfu_workers 2.0" in text
        assert 'sealroom_sfu_worker_up{worker="1"} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            for pid in workers:
                if _running(pid):
                    os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert _wait_gone(workers, 5), "worker processes outlived the server"
    # The workers log with the parent's format (JSON lines) and say which worker speaks.
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    worker_lines = [r for r in lines if r["msg"].startswith("sfu-worker[")]
    assert {r["msg"].split("]")[0] for r in worker_lines} == {"sfu-worker[0", "sfu-worker[1"}
    assert all(r["logger"] == "sfu.workers" for r in worker_lines)


def test_workers_exit_when_the_server_is_killed() -> None:
    port = _free_port()
    proc = _start_serve(port)
    workers: list[int] = []
    try:
        _wait_ready(proc, port)
        workers = _children(proc.pid)
        assert len(workers) == 2
        proc.kill()  # SIGKILL: no chance to stop them; they must notice on their own
        proc.communicate(timeout=20)
        assert _wait_gone(workers, 15), "workers outlived a killed server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
