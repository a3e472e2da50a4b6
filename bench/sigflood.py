"""Signaling under flood and slow readers: ``python -m bench.sigflood``.

Runs ``sealroom serve --no-sfu`` as a child process on 127.0.0.1 and, from this process,
on loopback only (every client binds a source address in 127.0.0.0/8, so that rooms, the
flooder and the slow readers are different client addresses to the server):

1. **relay, calm**: ``--rooms`` rooms of ``--members`` members; in each room one member
   seals an envelope to ``*`` every 1/``--rate`` s and the others time its arrival
   (the send time rides in the ciphertext, which the server never reads). p50/p99 of
   send → receive over all rooms.
2. **relay, flooded**: the same, while one more client (its own address, its own room,
   with a member there that reads) sends ``--flood-rate`` seal messages/s and reconnects
   every time it is closed. It runs in a child process under ``nice -n 10`` (a real
   flooder has its own machine). Reported: its sockets, and the close codes they got.
   Calm and flooded windows alternate, ``--repeat`` pairs, and the server process's CPU
   (cores) is reported for each condition.
3. **slow readers**: ``--slow-readers`` members (over four rooms and four addresses) join
   and then never read; one member per room seals ``--slow-envelopes`` envelopes of
   ``--slow-size`` bytes (the 48 KiB maximum) to ``*``. The server's RSS
   (/proc/<pid>/status VmRSS, sampled every 50 ms, and VmHWM) and its own accounting of
   queued bytes (``/metrics`` ``sealroom_ws_queued_bytes_peak``) are reported, with how
   many sockets were closed ``slow-consumer``.

Every phase has a fixed length and every wait a timeout; the server is stopped at the end.
The figures and the command are in docs/BENCHMARKS.md, "Signaling under flood and slow
readers".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.procstat import cpu_seconds
from e2ee.roomcrypto import KdfParams, b64, password_key, room_keys, sign_join, unb64
from peers.client import origin_of

PASSWORD = "bench only, never a real one"
SLOW_ROOMS = 4


class Refused(Exception):
    """The server answered a join with an error (its id is the message)."""


@dataclass
class RoomSecret:
    """What a member of one room signs its join with: derived once, used by every socket."""

    room: str
    kdf: KdfParams
    adm_seed: bytes
    adm_pk: bytes

    @classmethod
    def derive(cls, rooms: list[str], password: str = PASSWORD) -> dict[str, RoomSecret]:
        """One Argon2id for all rooms (one salt), then HKDF per room name."""
        kdf = KdfParams.generate()
        key = password_key(password, kdf)
        out = {}
        for room in rooms:
            keys = room_keys(key, room)
            out[room] = cls(room, kdf, keys.adm_seed, keys.adm_pk)
        return out


@dataclass
class RawMember:
    """A protocol-level client without the crypto of a real one (the server reads none)."""

    session: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    origin: str
    conn: str
    nonce: bytes
    pid: str | None = None
    seq: int = 0
    others: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def connect(cls, url: str, source: str | None = None,
                      headers: dict[str, str] | None = None,
                      rcvbuf: int | None = None) -> RawMember:
        """``source``: the local address to bind; ``rcvbuf``: SO_RCVBUF before connecting
        (a small one makes a reader that stops reading stall its server side sooner)."""

        def make_socket(addr_info: Any) -> socket.socket:
            family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
            sock = socket.socket(family=family, type=type_, proto=proto)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            return sock

        connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None,
                                         force_close=True, socket_factory=make_socket)
        session = aiohttp.ClientSession(connector=connector)
        try:
            origin = origin_of(url)
            ws = await session.ws_connect(url, origin=origin, headers=headers,
                                          max_msg_size=1 << 20, autoping=True,
                                          timeout=aiohttp.ClientWSTimeout(ws_close=10))
            first = await ws.receive_json(timeout=10)
        except BaseException:
            await session.close()
            raise
        if first.get("type") != "challenge":
            await session.close()
            raise RuntimeError(f"expected a challenge, got {first.get('type')}")
        return cls(session, ws, origin, first["conn"], unb64(first["nonce"]))

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps({"v": 2, **msg}, separators=(",", ":")))

    async def join(self, secret: RoomSecret, timeout: float = 10.0) -> dict[str, Any]:
        """Join (creating the room if it is missing); raises Refused on an error."""
        sig = sign_join(secret.adm_seed, self.origin, secret.room, self.nonce, self.conn)
        msg: dict[str, Any] = {"type": "join", "room": secret.room, "sig": b64(sig),
                               "create": {"kdf": secret.kdf.to_json(),
                                          "adm_pk": b64(secret.adm_pk)}}
        await self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if reply.type != aiohttp.WSMsgType.TEXT:
                raise Refused(f"closed {self.ws.close_code}")
            data = json.loads(reply.data)
            if data["type"] == "challenge":
                self.nonce = unb64(data["nonce"])
            elif data["type"] == "joined":
                self.pid = data["id"]
                self.others = data["members"]
                return dict(data)
            elif data["type"] == "error":
                raise Refused(data["id"])

    async def seal(self, ct: bytes, to: str = "*") -> None:
        self.seq += 1
        await self.send({"type": "seal", "to": to, "epoch": 0, "seq": self.seq,
                         "nonce": b64(bytes(12)), "ct": b64(ct)})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        await self.session.close()


def stamped(size: int) -> bytes:
    """A ciphertext stand-in holding the send time (perf_counter_ns) in its first 8 bytes."""
    return struct.pack(">Q", time.perf_counter_ns()) + bytes(max(8, size - 8))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def server_process(extra: list[str], root: str | None = None) -> Any:
    """``sealroom serve`` of this tree, or of the tree at ``root`` (to compare versions)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    if root:
        env["PYTHONPATH"] = root
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli", "serve", "--no-sfu", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "sealroom: open" not in line:
            raise RuntimeError(f"the server did not start: {line!r}")
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in kB (proc(5))."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


async def scrape(port: int) -> dict[str, float]:
    """/metrics as {"name{labels}": value}."""
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)
    ) as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(sealroom_[^ ]+) ([0-9.e+-]+)", line)
        if m:
            out[m[1]] = float(m[2])
    return out


# -- phases ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def relay_rooms(url: str, rooms: int, members: int) -> AsyncIterator[list[list[RawMember]]]:
    names = [f"calm-{i}" for i in range(rooms)]
    secrets = RoomSecret.derive(names)
    made: list[list[RawMember]] = []
    try:
        for i, name in enumerate(names):
            group = []
            for _ in range(members):
                m = await RawMember.connect(url, source=f"127.0.1.{10 + i}")
                group.append(m)
                await m.join(secrets[name])
            made.append(group)
        yield made
    finally:
        await asyncio.gather(*(m.close() for group in made for m in group))


async def measure_relay(rooms: list[list[RawMember]], seconds: float, rate: float,
                        size: int) -> list[float]:
    """Each room's first member seals every 1/rate s; the others time the arrivals (ms)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def receive(m: RawMember) -> None:
        while True:
            msg = await m.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            data = json.loads(msg.data)
            if data["type"] == "sealed":
                sent = struct.unpack(">Q", unb64(data["ct"])[:8])[0]
                latencies.append((time.perf_counter_ns() - sent) / 1e6)

    async def send(m: RawMember) -> None:
        tick = 1.0 / rate
        next_at = time.monotonic()
        while time.monotonic() < stop:
            await m.seal(stamped(size))
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    readers = [asyncio.create_task(receive(m)) for group in rooms for m in group[1:]]
    await asyncio.gather(*(send(group[0]) for group in rooms))
    await asyncio.sleep(0.5)  # the last envelopes in flight
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return latencies


async def flood(url: str, seconds: float, rate: float, size: int) -> dict[str, Any]:
    """One address floods seal messages at ``rate``/s, reconnecting whenever it is closed."""
    room = f"flood-{os.getpid()}"  # a room of its own per flooding process (and salt)
    secret = RoomSecret.derive([room])[room]
    partner = await RawMember.connect(url, source="127.0.2.1")
    await partner.join(secret)
    drain = asyncio.create_task(_drain(partner))
    codes: dict[str, int] = {}
    sockets = sent = refused_joins = 0
    stop = time.monotonic() + seconds
    try:
        while time.monotonic() < stop:
            try:
                m = await RawMember.connect(url, source="127.0.2.66")
            except (aiohttp.ClientError, RuntimeError, TimeoutError):
                codes["refused-upgrade"] = codes.get("refused-upgrade", 0) + 1
                await asyncio.sleep(0.01)
                continue
            sockets += 1
            try:
                await m.join(secret, timeout=2)
            except (Refused, TimeoutError):
                refused_joins += 1
            reader = asyncio.create_task(_drain(m))
            tick, batch = 0.01, max(1, round(rate * 0.01))
            next_at = time.monotonic()
            try:
                while not m.ws.closed and time.monotonic() < stop:
                    for _ in range(batch):
                        await m.seal(bytes(size))
                        sent += 1
                    next_at += tick
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            except (ConnectionError, RuntimeError, aiohttp.ClientError):
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader, 2)
            code = str(m.ws.close_code)
            codes[code] = codes.get(code, 0) + 1
            await m.close()
    finally:
        drain.cancel()
        await partner.close()
    return {"sockets": sockets, "messages_sent": sent, "close_codes": codes,
            "joins_refused": refused_joins}


async def flood_process(url: str, seconds: float, rate: float, size: int) -> dict[str, Any]:
    """``flood`` in a child process: its reconnects do not share the measuring loop."""
    # Niced: a real flooder runs on its own machine; here it must not take the cores the
    # server and the measuring clients need (2 cores on the machine of BENCHMARKS.md).
    proc = await asyncio.create_subprocess_exec(
        "nice", "-n", "10", sys.executable, "-m", "bench.sigflood", "--flood-only", url,
        "--seconds", str(seconds), "--flood-rate", str(rate), "--size", str(size),
        stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    result: dict[str, Any] = json.loads(out)
    return result


async def _drain(m: RawMember) -> None:
    while True:
        msg = await m.ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            return


async def slow_readers(url: str, pid: int, port: int, readers: int, envelopes: int,
                       size: int, rate: float) -> dict[str, Any]:
    names = [f"slow-{i}" for i in range(SLOW_ROOMS)]
    secrets = RoomSecret.derive(names)
    senders: list[RawMember] = []
    idle: list[RawMember] = []
    try:
        for i, name in enumerate(names):
            sender = await RawMember.connect(url, source=f"127.0.3.{i + 1}")
            await sender.join(secrets[name])
            senders.append(sender)
        for k in range(readers):
            i = k % SLOW_ROOMS
            m = await RawMember.connect(url, source=f"127.0.4.{i + 1}")
            await m.join(secrets[names[i]])
            idle.append(m)  # never read from again
        before = memory_kb(pid)
        samples: list[int] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                samples.append(memory_kb(pid)["VmRSS"])
                await asyncio.sleep(0.05)

        async def drain_sender(m: RawMember) -> None:
            with contextlib.suppress(Exception):
                await _drain(m)

        sampler = asyncio.create_task(sample())
        sender_readers = [asyncio.create_task(drain_sender(s)) for s in senders]

        async def send(m: RawMember) -> None:
            tick = 1.0 / rate
            next_at = time.monotonic()
            for _ in range(envelopes):
                await m.seal(os.urandom(size))
                next_at += tick
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        started = time.monotonic()
        await asyncio.gather(*(send(s) for s in senders))
        sent_at = time.monotonic()
        # Until only the senders are members (the drain timeout, 10 s, closes the readers
        # whose kernel buffers took everything so far), bounded.
        members = -1
        while time.monotonic() - sent_at < 30:
            members = int((await scrape(port)).get("sealroom_participants", -1))
            if members == len(senders):
                break
            await asyncio.sleep(0.5)
        gone_after = time.monotonic() - sent_at
        done.set()
        await sampler
        for task in sender_readers:
            task.cancel()
        after = memory_kb(pid)
        metrics = await scrape(port)
        return {
            "slow_readers": readers,
            "envelopes_per_room": envelopes,
            "envelope_ct_bytes": size,
            "seconds": round(time.monotonic() - started, 1),
            "rss_before_mb": round(before["VmRSS"] / 1024, 1),
            "rss_peak_sampled_mb": round(max(samples) / 1024, 1),
            "rss_hwm_mb": round(after["VmHWM"] / 1024, 1),
            "rss_after_mb": round(after["VmRSS"] / 1024, 1),
            "queued_bytes_peak_mb": round(
                metrics.get("sealroom_ws_queued_bytes_peak", 0) / 2**20, 1),
            "slow_consumer_closes": int(
                metrics.get('sealroom_signaling_closes_total{id="slow-consumer"}', 0)),
            "resets": int(metrics.get("sealroom_ws_resets_total", 0)),
            # Members left once the phase is over: the senders, if every reader is gone.
            "participants_after": int(metrics.get("sealroom_participants", -1)),
            "readers_gone_s_after_last_send": round(gone_after, 1) if members == len(
                senders) else None,
            "sockets_open_after": int(metrics.get("sealroom_ws_open", -1)),
        }
    finally:
        await asyncio.gather(*(m.close() for m in senders + idle))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"load_average_at_start": os.getloadavg()}
    with server_process([], args.server_root) as (proc, port):
        url = f"ws://127.0.0.1:{port}/ws"
        # Calm and flooded windows alternate (--repeat pairs), so that a busy moment of the
        # machine does not land on one condition only.
        lat: dict[str, list[float]] = {"calm": [], "flooded": []}
        p99s: dict[str, list[float]] = {"calm": [], "flooded": []}
        cpu = {"calm": 0.0, "flooded": 0.0}
        spent = {"calm": 0.0, "flooded": 0.0}
        floods: list[dict[str, Any]] = []
        async with relay_rooms(url, args.rooms, args.members) as rooms:
            for _ in range(args.repeat):
                for name in ("calm", "flooded"):
                    flood_task = None
                    if name == "flooded":
                        flood_task = asyncio.create_task(flood_process(
                            url, args.seconds + 1.0, args.flood_rate, args.size))
                        await asyncio.sleep(0.5)  # the flood is on before measuring
                    t0, c0 = time.monotonic(), cpu_seconds(proc.pid)
                    window = await measure_relay(rooms, args.seconds, args.rate, args.size)
                    cpu[name] += cpu_seconds(proc.pid) - c0
                    spent[name] += time.monotonic() - t0
                    lat[name] += window
                    p99s[name].append(round(percentile(window, 0.99), 1))
                    if flood_task is not None:
                        floods.append(await flood_task)
        for name, values in lat.items():
            out[name] = {"envelopes": len(values), "p50_ms": round(percentile(values, 0.5), 2),
                         "p99_ms": round(percentile(values, 0.99), 2),
                         "max_ms": round(max(values, default=float("nan")), 2),
                         "p99_ms_per_window": p99s[name],
                         "server_cpu_cores": round(cpu[name] / spent[name], 3)}
        codes: dict[str, int] = {}
        for f in floods:
            for code, n in f["close_codes"].items():
                codes[code] = codes.get(code, 0) + n
        out["flood"] = {"sockets": sum(f["sockets"] for f in floods),
                        "messages_sent": sum(f["messages_sent"] for f in floods),
                        "close_codes": codes}
        metrics = await scrape(port)
        out["flood"]["server_rate_limited_closes"] = int(
            metrics.get("sealroom_rate_limit_closes_total", 0))
        out["flood"]["server_address_limited_closes"] = int(
            metrics.get("sealroom_rate_limit_address_closes_total", 0))
        out["flood"]["server_upgrades_refused"] = int(
            metrics.get("sealroom_rate_limit_upgrade_refusals_total", 0))
        if args.slow_readers:
            out["slow"] = await slow_readers(url, proc.pid, port, args.slow_readers,
                                             args.slow_envelopes, args.slow_size,
                                             args.slow_rate)
    out["load_average_at_end"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sigflood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rooms", type=int, default=4, help="calm rooms [%(default)s]")
    p.add_argument("--members", type=int, default=3, help="members per calm room [%(default)s]")
    p.add_argument("--rate", type=float, default=20.0,
                   help="envelopes/s each calm room's sender seals [%(default)s]")
    p.add_argument("--size", type=int, default=1024, help="ciphertext bytes [%(default)s]")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="length of each relay window [%(default)s]")
    p.add_argument("--repeat", type=int, default=3,
                   help="pairs of calm and flooded windows, alternating [%(default)s]")
    p.add_argument("--flood-rate", type=float, default=1000.0,
                   help="messages/s of the flooding client [%(default)s]")
    p.add_argument("--slow-readers", type=int, default=200,
                   help="non-reading members, over four rooms; 0 skips the phase [%(default)s]")
    p.add_argument("--slow-envelopes", type=int, default=200,
                   help="envelopes each slow room's sender seals to '*' [%(default)s]")
    p.add_argument("--slow-size", type=int, default=48 * 1024,
                   help="their ciphertext bytes (the protocol's maximum) [%(default)s]")
    p.add_argument("--slow-rate", type=float, default=40.0,
                   help="envelopes/s of each slow room's sender [%(default)s]")
    p.add_argument("--server-root", metavar="DIR",
                   help="run the server of the source tree in DIR (e.g. `git archive` of an "
                   "older commit, with its compiled extensions) instead of this one")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--flood-only", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.flood_only:  # the flooding client's own process (flood_process)
        report = asyncio.run(asyncio.wait_for(
            flood(args.flood_only, args.seconds, args.flood_rate, args.size), args.seconds + 30))
        print(json.dumps(report))
        return 0
    result = asyncio.run(asyncio.wait_for(run(args), 300))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
