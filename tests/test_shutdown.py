"""Graceful shutdown of a real ``sealroom serve`` process (docs/DEPLOY.md, "Stopping and
restarting"; docs/PROTOCOL.md, ``going-away``).

SIGTERM: ``/healthz/ready`` turns 503 at once (the process still listens), joins are
refused (``shutting-down``), every connected client is sent ``going-away`` and its socket
is then closed with 1001; the process exits 0 within ``--shutdown-timeout``. With
``--workers`` the SFU workers stop after the drain.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from peers.client import ServerError, SignalingClient

PASSWORD = "a graceful exit is still an exit"
GRACE = 3.0
BOUND = 12.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def start(port: int, state: Path, *flags: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--state-dir", str(state), "--drain-grace", str(GRACE),
         "--shutdown-timeout", str(BOUND), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for _ in range(150):  # 30 s at most (workers start first)
        try:
            if get(f"http://127.0.0.1:{port}/healthz/ready")[0] == 200:
                return proc
        except (urllib.error.URLError, ConnectionError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.communicate()[0]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"serve not ready: {proc.communicate()[0]}")


async def test_sigterm_drains_tells_clients_and_exits_zero_within_the_bound(
    tmp_path: Path,
) -> None:
    port = free_port()
    proc = start(port, tmp_path / "state", "--no-sfu")
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        member = await SignalingClient.connect(url)
        idle = await SignalingClient.connect(url)  # connected, not in a room
        await member.join("drain", PASSWORD)
        assert get(f"http://127.0.0.1:{port}/healthz/ready")[0] == 200

        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # 503 as soon as the server has taken the signal (the kernel delivers it when it
        # will: a probe answered before that is still "ready"), with the listener still up.
        status, body = 0, {}
        for _ in range(100):
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz/ready")
            except (urllib.error.URLError, ConnectionError):
                status, body = 0, {}
            if status == 503:
                break
            await asyncio.sleep(0.02)
        assert (status, body.get("status"), body.get("reason")) == (
            503, "not-ready", "shutting-down"), body
        assert get(f"http://127.0.0.1:{port}/healthz/live")[0] == 200  # still answers

        # Everyone is told why, with when to come back.
        for client in (member, idle):
            away = await client.expect("going-away", timeout=5)
            assert away["reason"] == "restart" and away["retry_after"] == 1.0, away
        # A join during the drain is refused with its documented id, not a hang.
        late = await SignalingClient.connect(url)
        assert (await late.expect("going-away", timeout=5))["type"] == "going-away"
        with pytest.raises(ServerError) as refused:
            await late.join("drain", PASSWORD)
        assert refused.value.id == "shutting-down"

        # Then the sockets close with 1001 (going away), after the grace.
        for client in (member, idle, late):
            assert await client.wait_closed(timeout=GRACE + 5) == 1001
            assert client.close_reason in (None, "going-away")
        closed_after = time.monotonic() - signalled
        code = await asyncio.to_thread(proc.wait, BOUND + 5)
        out = proc.communicate()[0]
        assert code == 0, out
        assert time.monotonic() - signalled <= BOUND + 1, out
        assert closed_after >= GRACE - 0.5, closed_after  # they were kept for the grace
        assert "draining" in out, out
        for client in (member, idle, late):
            await client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_a_drain_ends_early_once_every_client_has_gone(tmp_path: Path) -> None:
    port = free_port()
    proc = start(port, tmp_path / "state", "--no-sfu", "--log-level", "debug")
    try:
        client = await SignalingClient.connect(f"ws://127.0.0.1:{port}/ws")
        await client.join("early", PASSWORD)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await client.expect("going-away", timeout=5)
        await client.close()  # the client leaves by itself, as the reference clients do
        code = await asyncio.to_thread(proc.wait, BOUND + 5)
        assert code == 0
        # No socket left: the process did not wait out the grace.
        assert time.monotonic() - signalled < GRACE, proc.communicate()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def test_with_workers_the_sfu_workers_stop_after_the_drain(tmp_path: Path) -> None:
    port = free_port()
    proc = start(port, tmp_path / "state", "--workers", "2", "--media-ports", "47000-47099")
    try:
        client = await SignalingClient.connect(f"ws://127.0.0.1:{port}/ws")
        await client.join("workers", PASSWORD)
        proc.send_signal(signal.SIGTERM)
        await client.expect("going-away", timeout=5)
        assert await client.wait_closed(timeout=GRACE + 5) == 1001
        await client.close()
        code = await asyncio.to_thread(proc.wait, BOUND + 5)
        out = proc.communicate()[0]
        assert code == 0, out
        lines = out.splitlines()
        drained = next(i for i, line in enumerate(lines) if "draining" in line)
        stopped = [i for i, line in enumerate(lines)
                   if "sfu-worker[" in line and line.rstrip().endswith("stopped")]
        assert len(stopped) == 2, out
        assert all(i > drained for i in stopped), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_past_the_shutdown_timeout_the_process_is_forced_out(tmp_path: Path) -> None:
    """A drain longer than --shutdown-timeout (here on purpose: a 30 s grace and a client
    that stays) is cut short by the watchdog: exit code 1, within the bound."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--state-dir", str(tmp_path / "state"), "--no-sfu",
         "--drain-grace", "30", "--shutdown-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for _ in range(150):
            try:
                if get(f"http://127.0.0.1:{port}/healthz/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                await asyncio.sleep(0.2)
        client = await SignalingClient.connect(f"ws://127.0.0.1:{port}/ws")
        await client.join("stays", PASSWORD)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await client.expect("going-away", timeout=5)  # and does not leave
        code = await asyncio.to_thread(proc.wait, 15)
        took = time.monotonic() - signalled
        out = proc.communicate()[0]
        assert code == 1, out
        assert "shutdown took longer than 2.0 s" in out, out
        assert took < 10, took  # the 30 s grace did not run out
        await client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
