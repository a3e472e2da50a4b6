"""``python -m bench.restart``: how long a call takes to come back after its signaling
server restarts (docs/BENCHMARKS.md "Signaling restart").

Two (``--participants``) headless Chromiums (the flags of peers/browser.py, the moving
cameras of bench.links) hold a call on ``sealroom serve`` run as its own process with
``--lock-after`` (the room is locked before the restart, so the pages must get back in
with their resume credentials). Each round: SIGTERM the server, wait for it to exit,
start a new process on the same port and state directory, and measure

* ``stop_s``: SIGTERM → the old process exited (its drain, DEPLOY.md);
* ``down_s``: SIGTERM → the new process accepts TCP connections (the harness starts it as
  soon as the old one exited, as systemd's ``Restart=`` would, minus ``RestartSec``);
* ``back_s``: the new process accepts connections → every page decodes video from every
  other page's **new** session (``getStats`` ``framesDecoded`` > 0, confirmed increasing
  in the next sample; sampled every 0.25 s).

The pages rejoin by themselves (web/js/call.js: ``going-away.retry_after``, then the
reconnect schedule of docs/PROTOCOL.md "Reconnecting"). A markdown table to stdout, the
rounds as JSON to ``--json``. tests/test_restart_browser.py drives the same functions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.links import (
    NAMES,
    Launch,
    Loopback,
    Participant,
    _chromium_version,
    everyone_receives,
    join,
    launcher,
    open_participant,
    sample_all,
    snapshot,
)

POLL = 0.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    """The port accepts a TCP connection now."""
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Server(Loopback):
    """``sealroom serve`` as its own process on a fixed port (so it can be restarted)."""

    def __init__(self, port: int, state: Path, flags: Sequence[str]) -> None:
        self.port, self.state, self.flags = port, state, list(flags)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state.parent / "serve.log"

    async def start(self) -> float:
        """Start a process; the monotonic time it first accepted TCP (bounded: 30 s)."""
        cmd = [sys.executable, "-c", "from sealroom.cli import main; raise SystemExit(main())",
               "serve", "--host", "127.0.0.1", "--port", str(self.port), "--media-host",
               "127.0.0.1", "--state-dir", str(self.state), *self.flags]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        for _ in range(1500):  # 30 s at most, every 20 ms
            if accepts(self.port):
                listening = time.monotonic()
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"sealroom serve exited with {self.proc.returncode}")
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("sealroom serve did not listen within 30 s")
        for _ in range(150):  # and is ready (the SFU is up)
            try:
                with urllib.request.urlopen(f"{self.http}/healthz/ready", timeout=1):
                    return listening
            except (urllib.error.URLError, OSError):
                await asyncio.sleep(0.05)
        raise RuntimeError("sealroom serve listened but never became ready")

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait (bounded); the exit code (SIGKILL past the timeout: −9)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait, 10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.asynccontextmanager
async def serving(tmp: Path, *flags: str) -> AsyncIterator[Server]:
    server = Server(free_port(), tmp / "state", flags)
    await server.start()
    try:
        yield server
    finally:
        server.kill()


async def session_ids(parts: Sequence[Participant]) -> None:
    for p in parts:
        p.id = str((await snapshot(p)).get("id") or "")


@dataclass
class Round:
    round: int
    exit_code: int
    stop_s: float
    down_s: float
    back_s: float | None  # None: not back within the bound
    reconnects: dict[str, int | None]
    frames_after: dict[str, dict[str, int]]  # viewer → sender → framesDecoded growth


async def back_in_call(parts: Sequence[Participant], old: dict[str, str],
                       seconds: float) -> tuple[float | None, dict[str, dict[str, int]]]:
    """Poll (bounded) until every page has a new session id and decodes every other page's
    new session, with frames growing between two samples; the monotonic time of the
    first of those two samples."""
    deadline = time.monotonic() + seconds
    first = 0.0
    previous: dict[str, Any] | None = None
    for _ in range(int(seconds / POLL) + 1):  # bounded in count and by the deadline
        if time.monotonic() >= deadline:
            break
        t = time.monotonic()
        await session_ids(parts)
        samples = None
        if all(p.id and p.id != old[p.name] for p in parts):
            samples = await sample_all(parts)
            if not all(samples[v.name].inbound.get(s.id, {}).get("framesDecoded", 0) > 0
                       for v in parts for s in parts if s is not v):
                samples = None
        if samples is None:
            previous = None
        elif previous is None:
            first, previous = t, samples
        else:
            growth = {v.name: {s.name: int(samples[v.name].inbound[s.id]["framesDecoded"]
                                         - previous[v.name].inbound[s.id]["framesDecoded"])
                               for s in parts if s is not v} for v in parts}
            if all(g > 0 for row in growth.values() for g in row.values()):
                return first, growth
            previous = samples
        await asyncio.sleep(POLL)
    return None, {}


async def restart_round(server: Server, parts: Sequence[Participant], number: int,
                        seconds: float = 60.0) -> Round:
    """SIGTERM the server, start a new one on the same port, wait for the call."""
    await session_ids(parts)
    old = {p.name: p.id for p in parts}
    t0 = time.monotonic()
    code = await server.stop()
    exited = time.monotonic()
    listening = await server.start()
    back, growth = await back_in_call(parts, old, seconds)
    reconnects = {p.name: (await snapshot(p)).get("reconnects") for p in parts}
    return Round(number, code, round(exited - t0, 2), round(listening - t0, 2),
                 round(back - listening, 2) if back is not None else None, reconnects, growth)


async def call(launch: Launch, tmp: Path, server: Server, n: int) -> list[Participant]:
    parts = [await open_participant(launch, tmp, seed, NAMES[seed - 1])
             for seed in range(1, n + 1)]
    for p in parts:
        await join(p, server.http)
    await everyone_receives(parts)
    return parts


def table(rounds: Sequence[Round]) -> str:
    lines = ["| round | exit | SIGTERM → exited (s) | SIGTERM → new process listens (s)"
             " | listens → everyone decodes everyone (s) |", "|---:|---:|---:|---:|---:|"]
    for r in rounds:
        back = f"{r.back_s:.2f}" if r.back_s is not None else "not back"
        lines.append(f"| {r.round} | {r.exit_code} | {r.stop_s:.2f} | {r.down_s:.2f} | {back} |")
    return "\n".join(lines)


async def run(n: int, rounds: int, lock_after: float, settle: float) -> list[Round]:
    with tempfile.TemporaryDirectory(prefix="sealroom-restart-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            launch = await launcher(stack, Path(tmp))
            server = await stack.enter_async_context(
                serving(Path(tmp), "--lock-after", str(lock_after)))
            parts = await call(launch, Path(tmp), server, n)
            await asyncio.sleep(max(0.0, lock_after + 0.5))  # the room is locked
            out = []
            for r in range(1, rounds + 1):
                out.append(await restart_round(server, parts, r))
                await asyncio.sleep(settle)
            return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m bench.restart",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--participants", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--lock-after", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds between rounds")
    ap.add_argument("--json", help="write the rounds here")
    a = ap.parse_args(args)
    if not 2 <= a.participants <= len(NAMES) or not 1 <= a.rounds <= 50:
        ap.error(f"--participants 2…{len(NAMES)}, --rounds 1…50")
    rounds = asyncio.run(run(a.participants, a.rounds, a.lock_after, a.settle))
    command = shlex.join(["python", "-m", "bench.restart", *args])
    print(f"`{command}` ({_chromium_version()})\n")
    print(table(rounds))
    if a.json:
        Path(a.json).write_text(json.dumps({"command": command,
                                            "rounds": [asdict(r) for r in rounds]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
