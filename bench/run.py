"""The orchestrator: one measurement point = one system × one scenario × one room size.

For each point it starts the system under test pinned to one core (``taskset``), the
load generator(s) pinned to the other, connects every virtual participant, starts the
media, warms up, then measures ``windows`` fixed windows back to back. For each window it
reads the server's and the generators' CPU time from /proc at the window's edges and asks
the generators what was sent and received in it (by the packets' send timestamps), then
reports per-window figures and their medians.

Server CPU is that of the server process and all its descendants (``--workers N``: the
runner and its N SFU worker processes, each pinned to core ``i mod cores``); per worker it
also reports CPU and the packets its rooms forwarded (counted by the generators, which know
each receiver's room, the runner tells which worker holds which room).

Uplink loss (``uplink_loss``): the generators withhold that share of their video packets
and answer the server's NACKs (bench/gen.py); each window then also reports what was
withheld, NACKed and retransmitted, how many withheld packets reached their receivers
anyway (``recovered``) and how many never did, and the server's own upstream counters
(sealroom: ``upstream_*``, ``rtx_received``) over the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sealroom.cpulatency import CpuLatencyLimit, current, idle_entries

from . import procstat
from ._receive import HIST_FINE
from .scenarios import LAST_N, Scenario, build

logger = logging.getLogger("bench.run")

PY = sys.executable
MAX_LOSS = 0.001  # the search's limits: ≤ 0.1 % loss …
MAX_P99_MS = 5.0  # … and p99 added latency ≤ 5 ms
GEN_SATURATED = 0.9  # generator CPU share of its core above which a window is flagged
# A window during which the hypervisor ran other guests on this VM's cores for more than
# this many cores' worth of time is "stolen": on these machines such windows show 10-500 ms
# p99 for every system, the bare reflector included (docs/BENCHMARKS.md, Method).
STEAL_MAX = 0.1
# … or this much of the server's own core(s): 50 ms of a 5 s window. Taken in a few
# chunks of 5-20 ms, that alone is the p99 of a window (fifth series, docs/benchmarks-history.md),
# while the machine-wide figure stays far below STEAL_MAX.
CORE_STEAL_MAX = 0.01
SEARCH_TRIES = 3  # windows measured at most per search step while they come out stolen

Progress = Callable[[str], None]


@dataclass
class Options:
    windows: int = 3
    window: float = 5.0
    warmup: float = 3.0
    grace: float = 0.5
    last_n: int = 4
    gen_procs: int = 1
    pin: bool = True
    search: bool = False
    search_steps: int = 10
    server_cpu: int | None = None
    gen_cpu: int | None = None
    nice: int = 0  # niceness for server and generators (negative needs root)
    rooms: int = 1  # independent copies of the scenario, one room each
    workers: int = 0  # sealroom: SFU worker processes; 0 = sfu.Sfu inside the runner
    rate: float = 1.0  # every stream's packet rate ×rate in the windows (not the search)
    # "poll": hold the CPU latency limit at 0 µs for the point (sealroom/cpulatency.py), so
    # idle cores poll instead of halting; "halt": leave the machine's idle states alone
    idle: str = "poll"
    # share of its video packets each generated publisher does not send, and answers
    # NACKs for (bench/gen.py ``Uplink``); the withholding PRNG's seed
    uplink_loss: float = 0.0
    loss_seed: int = 1
    join_within: float = 2.0  # joinstorm: every participant joins within this many seconds


def cores(opts: Options) -> tuple[int | None, int | None]:
    """(server core, generator core): the first two CPUs we may run on."""
    if not opts.pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return (opts.server_cpu if opts.server_cpu is not None else cpus[0],
            opts.gen_cpu if opts.gen_cpu is not None else cpus[1])


def worker_cores(opts: Options, n: int) -> list[int]:
    """The core of each of ``n`` SFU workers: worker ``i`` on the ``i mod k``-th of the
    ``k`` CPUs we may run on (none when not pinning)."""
    if not opts.pin or n <= 0:
        return []
    cpus = sorted(os.sched_getaffinity(0))
    return [cpus[i % len(cpus)] for i in range(n)]


NICE = 0  # set from Options.nice by run_point


def wrap(cmd: list[str], cpu: int | None, netns: str | None = None) -> list[str]:
    """Prefix ``cmd`` with ``ip netns exec``, ``nice`` and ``taskset``.

    All three exec the next program, so the pid we get is the program's.
    """
    if NICE:
        cmd = ["nice", "-n", str(NICE), *cmd]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return cmd


class Server:
    """A system under test running in its own process."""

    name = "?"
    gen_system = "?"
    reencodes = False  # output is a new encoding: per-packet loss/latency not measurable

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self.bind = "127.0.0.1"
        self.netns: str | None = None
        self.workers = 0  # SFU worker processes to ask for (systems that have them)
        self.worker_cpus: list[int] = []
        self.info: dict[str, Any] = {}  # what the server printed before its port
        self.placement: dict[str, int] = {}  # room name -> SFU worker index

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, scenario: Scenario, cpu: int | None) -> None:
        raise NotImplementedError

    async def _spawn_json_port(self, cmd: list[str], timeout: float = 30.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(),
                                          max(0.1, deadline - time.monotonic()))
            if not line:
                raise RuntimeError(f"{self.name}: server exited before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no port within {timeout:.0f} s")
            obj = json.loads(line)
            if "port" in obj:
                self.port = int(obj["port"])
                return
            self.info.update(obj)

    async def learn_placement(self) -> None:
        """Ask the server where its rooms are (workers only; at most 1 s old)."""
        if not self.worker_pids():
            return
        counters = await self.counters()
        self.placement = {k[5:]: int(v) for k, v in counters.items() if k.startswith("room.")}

    def worker_pids(self) -> list[tuple[int, int, int | None]]:
        """(index, pid, core) of each worker process the server reported."""
        return [(int(w["index"]), int(w["pid"]), w.get("cpu"))
                for w in self.info.get("workers", []) if w.get("pid") is not None]

    async def counters(self) -> dict[str, Any]:
        """The system's own counters, if it has any (a cross-check of the generator's)."""
        return {}

    async def stop(self) -> None:
        await stop_process(self.proc)
        self.proc = None


async def stop_process(proc: asyncio.subprocess.Process | None, timeout: float = 15.0) -> None:
    """SIGTERM, wait (bounded), then SIGKILL."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), 5.0)


class SealroomServer(Server):
    name = "sealroom"
    gen_system = "sealroom"

    async def counters(self) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 24)
        try:
            writer.write(b'{"op": "stats"}\n')
            stats: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), 10.0))
            return stats["stats"]  # type: ignore[no-any-return]
        finally:
            writer.close()

    batching = True  # SfuConfig.send_batching (sfu/outbox.py)

    async def start(self, scenario: Scenario, cpu: int | None) -> None:
        cmd = [PY, "-m", "bench.sfu_runner", "--port", "0", "--last-n", str(scenario.last_n)]
        if self.workers > 0:
            cmd += ["--workers", str(self.workers),
                    "--worker-cpus", ",".join(map(str, self.worker_cpus))]
        if not self.batching:
            cmd.append("--no-send-batching")
        await self._spawn_json_port(wrap(cmd, cpu), timeout=30.0 + 15.0 * self.workers)


class SealroomSendtoServer(SealroomServer):
    """sealroom with one sendto per forwarded packet, as before send batching: the same
    SFU otherwise, for a comparison in the same run."""

    name = "sealroom-sendto"
    batching = False


class ReflectorServer(Server):
    name = "reflector"
    gen_system = "reflector"

    async def start(self, scenario: Scenario, cpu: int | None) -> None:
        await self._spawn_json_port(wrap([PY, "-m", "bench.reflector", "--port", "0"], cpu))


class MediaRelayServer(Server):
    name = "mediarelay"
    gen_system = "mediarelay"
    reencodes = True

    async def start(self, scenario: Scenario, cpu: int | None) -> None:
        await self._spawn_json_port(wrap([PY, "-m", "bench.mediarelay", "--port", "0"], cpu))


def make_server(name: str) -> Server:
    if name == "sealroom":
        return SealroomServer()
    if name == "sealroom-sendto":
        return SealroomSendtoServer()
    if name == "reflector":
        return ReflectorServer()
    if name == "mediarelay":
        return MediaRelayServer()
    if name == "janus":
        from .janus import JanusServer
        return JanusServer()
    raise ValueError(f"unknown system {name!r}")


SYSTEMS = ("sealroom", "sealroom-sendto", "reflector", "janus", "mediarelay")


MULTI = ("sealroom", "sealroom-sendto")  # systems with rooms (``rooms`` > 1) and workers


def supports(system: str, scenario: str, rooms: int = 1, workers: int = 0,
             uplink_loss: float = 0.0) -> bool:
    """last-N is an SFU feature: only sealroom has it among the systems measured; so are
    several rooms (the reflector and the Janus client have one) and SFU workers. Uplink
    loss needs probes in what arrives, which a re-encoding system (mediarelay) drops."""
    if (rooms > 1 or workers > 0) and system not in MULTI:
        return False
    if uplink_loss > 0 and system == "mediarelay":
        return False
    if scenario == "simulcast":
        # layer selection is an SFU feature (the reflector sends everything everywhere,
        # mediarelay takes no simulcast); the generator answers no NACK of a layer
        return system in (*MULTI, "janus") and uplink_loss == 0
    return scenario not in LAST_N or system in MULTI


class GenProc:
    """One load generator process and its JSON-lines control channel."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.published = False  # its "published" event was already read

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, **msg: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())

    async def expect(self, ev: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"generator: no {ev!r} within {timeout:.0f} s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                raise RuntimeError(f"generator exited while waiting for {ev!r}")
            msg: dict[str, Any] = json.loads(line)
            if msg.get("ev") == ev:
                return msg


async def start_gens(server: Server, scenario: Scenario, opts: Options,
                     cpu: int | None, setup: float = 60.0) -> list[GenProc]:
    """Start the generators; participant ``i`` goes to generator ``i mod n``.

    With last-N the room's join order decides who sees whom, so then generator ``k`` gets
    the ``k``-th contiguous block of indices and starts only after generator ``k − 1``
    has joined and published everybody: the join order is the index order.
    """
    gens: list[GenProc] = []
    n = max(1, min(opts.gen_procs, scenario.total))
    ordered = scenario.last_n > 0 and n > 1
    try:
        for k in range(n):
            gens.append(await _start_gen(server, scenario, opts, cpu, k, n, ordered))
            if ordered:
                await gens[-1].expect("published", setup)
                gens[-1].published = True
    except BaseException:
        await stop_gens(gens)
        raise
    return gens


async def _start_gen(server: Server, scenario: Scenario, opts: Options, cpu: int | None,
                     k: int, n: int, ordered: bool) -> GenProc:
    if ordered:
        indices = list(range(k * scenario.total // n, (k + 1) * scenario.total // n))
    else:
        indices = [i for i in range(scenario.total) if i % n == k]
    cmd = [PY, "-m", "bench.gen", "--system", server.gen_system,
           "--scenario", scenario.name, "--participants", str(scenario.participants),
           "--rooms", str(scenario.rooms),
           "--last-n", str(scenario.last_n), "--indices", ",".join(map(str, indices)),
           "--host", server.host, "--port", str(server.port), "--bind", server.bind]
    if opts.uplink_loss > 0:
        cmd += ["--uplink-loss", repr(opts.uplink_loss), "--loss-seed", str(opts.loss_seed)]
    if scenario.name == "joinstorm":
        cmd += ["--join-within", repr(opts.join_within)]
    proc = await asyncio.create_subprocess_exec(
        *wrap(cmd, cpu, server.netns), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, limit=1 << 26)
    return GenProc(proc)


async def stop_gens(gens: list[GenProc]) -> None:
    for g in gens:
        with contextlib.suppress(Exception):
            g.send(op="stop")
    for g in gens:
        try:
            await asyncio.wait_for(g.proc.wait(), 15.0)
        except TimeoutError:
            await stop_process(g.proc, 5.0)


def percentile(hist: dict[int, int], q: float) -> float | None:
    """q-quantile (0..1) in ms of a latency histogram (1 µs buckets, then 1 ms).

    A 1 ms bucket is reported by its upper edge (so "6.0" means 5–6 ms and never passes a
    5 ms limit); the last bucket holds everything from 999 ms up and reads 1000.
    """
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen > rank:
            us = bucket if bucket < HIST_FINE else (bucket - HIST_FINE + 1) * 1000
            return us / 1000.0
    return None


def tail(hist: dict[int, int]) -> dict[str, float | None]:
    """p90, p95, p99.9 (ms, as :func:`percentile`) and the share of packets later than
    5 ms, the issue-6 limit, of a latency histogram."""
    total = sum(hist.values())
    late = sum(v for k, v in hist.items() if k >= HIST_FINE)  # 1 ms buckets: ≥ 5 ms
    return {"p90_ms": percentile(hist, 0.90), "p95_ms": percentile(hist, 0.95),
            "p999_ms": percentile(hist, 0.999),
            "over_5ms": late / total if total else None}


def merge_window(reports: list[dict[str, Any]]) -> dict[str, Any]:
    sent: dict[int, int] = {}
    received: dict[int, int] = {}
    pairs: dict[int, int] = {}  # (receiver << 16) | stream id -> packets
    hist: dict[int, int] = {}
    hist_user: dict[int, int] = {}
    late = ticks = unprobed = 0
    lag = 0.0
    uplink: dict[str, dict[int, int]] = {"withheld": {}, "nacked": {}, "resent": {}}
    for r in reports:
        w = r["window"]
        if w is None:
            continue
        for what, counts in uplink.items():
            for k, v in w.get(what, {}).items():
                counts[int(k)] = counts.get(int(k), 0) + v
        for k, v in w["sent"].items():
            sent[int(k)] = sent.get(int(k), 0) + v
        for k, v in w["received"].items():
            received[int(k)] = received.get(int(k), 0) + v
        for k, v in w["pairs"].items():
            pairs[int(k)] = pairs.get(int(k), 0) + v
        for k, v in w["hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
        for k, v in w.get("hist_user", {}).items():
            hist_user[int(k)] = hist_user.get(int(k), 0) + v
        late += w["late"]
        unprobed += w["unprobed"]
        ticks += w["ticks"]
        lag = max(lag, w["lag_max_ms"])
    return {"sent": sent, "received": received, "pairs": pairs, "hist": hist,
            "hist_user": hist_user,
            "late": late, "ticks": ticks, "lag_max_ms": lag, "unprobed": unprobed, **uplink}


# The SFU's upstream loss-recovery counters (sealroom: sfu.counters.snapshot())
UPSTREAM_COUNTERS = ("upstream_nacks_sent", "upstream_nacked", "upstream_recovered",
                     "upstream_late", "upstream_unrepaired", "rtx_received")


def uplink_window(m: dict[str, Any], scenario: Scenario, reports: list[dict[str, Any]],
                  c0: dict[str, Any], c1: dict[str, Any]) -> dict[str, Any]:
    """Uplink loss over one window, from the merged generator reports ``m``.

    Every figure is of the packets *sent* (or withheld) in the window. ``recovered``: the
    (receiver, withheld packet) pairs that arrived anyway, counted by their own probe
    stream id (``Scenario.withheld_base``), at most once per pair that should exist;
    ``expected`` = withheld × receivers of the stream; ``duplicates``: copies beyond
    that (a packet repaired twice). Identified per stream, not per packet: the receive
    counters are per (receiver, probe stream id). ``server`` is the difference of the
    server's upstream counters at the window's edges (None for a system without them).
    """
    withheld: dict[int, int] = m["withheld"]
    expected = sum(c * len(scenario.receivers(sid)) for sid, c in withheld.items())
    recovered = duplicates = 0
    for key, count in m["pairs"].items():
        sid = scenario.withheld_sid(key & 0xFFFF)
        if sid is None:
            continue
        if (key >> 16) not in scenario.receivers(sid):
            duplicates += count  # not a receiver of that stream at all
            continue
        cap = withheld.get(sid, 0)
        recovered += min(count, cap)
        duplicates += max(0, count - cap)
    sent_video = sum(c for sid, c in m["sent"].items() if scenario.is_video(sid))
    totals: dict[str, int] = {}
    for r in reports:
        for k, v in (r.get("uplink") or {}).items():
            totals[k] = totals.get(k, 0) + int(v)
    has = [k for k in UPSTREAM_COUNTERS if k in c1]
    return {
        "withheld": sum(withheld.values()),
        "video_packets": sent_video + sum(withheld.values()),  # sent + withheld
        "nacked": sum(m["nacked"].values()),  # NACKed sequence numbers of these packets
        "resent": sum(m["resent"].values()),
        "expected": expected,
        "recovered": recovered,
        "unrecovered": expected - recovered,
        "duplicates": duplicates,
        "recovered_share": recovered / expected if expected else None,
        # cumulative per generator process (not per window): NACK packets, sequence numbers
        # asked for, those not answered, those of packets that had been sent
        "generator": totals,
        "server": {k: int(c1.get(k, 0)) - int(c0.get(k, 0)) for k in UPSTREAM_COUNTERS}
        if has else None,
    }


def layers_window(m: dict[str, Any], scenario: Scenario) -> dict[str, dict[str, int]] | None:
    """simulcast: per layer (by RID), over one window, ``expected`` = packets sent on it ×
    the subscribers that asked for it, ``received`` = packets of it those subscribers got,
    ``wrong`` = packets of it that reached a subscriber that asked for another layer of
    that publisher (every system should forward each subscriber exactly the layer asked
    for; a switch still in progress shows here). None for a scenario without layers."""
    out: dict[str, dict[str, int]] = {}
    for sid, count in m["sent"].items():
        spec = scenario.layer(sid)
        if spec is not None and spec.rid is not None:
            row = out.setdefault(spec.rid, {"expected": 0, "received": 0, "wrong": 0})
            row["expected"] += count * len(scenario.receivers(sid))
    if not out:
        return None
    for key, count in m["pairs"].items():
        sid = key & 0xFFFF
        if sid >= scenario.withheld_base:
            continue
        spec = scenario.layer(sid)
        if spec is None or spec.rid is None:
            continue
        row = out.setdefault(spec.rid, {"expected": 0, "received": 0, "wrong": 0})
        row["received" if (key >> 16) in scenario.receivers(sid) else "wrong"] += count
    return out


def gen_core_load(server: Server, gen_core: int | None, gen: float,
                  workers: dict[int, float]) -> float:
    """CPU share of the generators' core: theirs plus any SFU worker pinned to it."""
    return gen + sum(workers.get(i, 0.0) for i, _, core in server.worker_pids()
                     if gen_core is not None and core == gen_core)


async def measure_window(wid: int, length: float, server: Server, gens: list[GenProc],
                         scenario: Scenario, opts: Options, scale: float) -> dict[str, Any]:
    start = time.monotonic_ns() + 50_000_000
    end = start + int(length * 1e9)
    for g in gens:
        g.send(op="window", id=wid, start=start, end=end)
    await asyncio.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
    s0 = procstat.tree_cpu(server.pid)
    g0 = sum(procstat.cpu_seconds(g.pid) for g in gens)
    d0 = procstat.udp_drops(server.pid)
    m0 = procstat.machine_cpu()
    k0 = procstat.cpu_steal()
    c0 = await server.counters()
    await asyncio.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
    s1 = procstat.tree_cpu(server.pid)
    g1 = sum(procstat.cpu_seconds(g.pid) for g in gens)
    rss = procstat.tree_rss_bytes(server.pid)
    d1 = procstat.udp_drops(server.pid)
    m1 = procstat.machine_cpu()
    k1 = procstat.cpu_steal()
    c1 = await server.counters()
    await asyncio.sleep(opts.grace)
    for g in gens:
        g.send(op="report", id=wid)
    reports = [await g.expect("report", 30.0) for g in gens]
    m = merge_window(reports)
    expected = 0
    for sid, count in m["sent"].items():
        expected += count * len(scenario.receivers(sid))
    wanted = scenario.expected_pairs()
    received = sum(c for k, c in m["pairs"].items() if k in wanted)
    uplink = uplink_window(m, scenario, reports, c0, c1) if opts.uplink_loss > 0 else None
    repaired = 0 if uplink is None else uplink["recovered"] + uplink["duplicates"]
    # withheld packets that arrived (repaired) are forwarded, neither expected nor not
    unexpected = sum(c for k, c in m["pairs"].items() if k not in wanted) - repaired
    forwarded = received + unexpected + repaired
    if server.reencodes:  # a new encoding comes out: count its packets by arrival time
        received += m["unprobed"]
        forwarded += m["unprobed"]
    cpu = procstat.cpu_delta(s0, s1)
    gen_cpu = g1 - g0
    # per SFU worker: its CPU, and the packets the rooms placed on it forwarded
    worker_cpu = {i: s1.get(pid, 0.0) - s0.get(pid, 0.0) for i, pid, _ in server.worker_pids()
                  if pid in s1}
    worker_packets: dict[int, int] = {}
    for k, c in m["pairs"].items():
        w = server.placement.get(scenario.room_name(k >> 16)) if server.placement else None
        if w is not None:
            worker_packets[w] = worker_packets.get(w, 0) + c
    workers = [{
        "index": i, "pid": pid, "core": core,
        "cpu": worker_cpu.get(i, 0.0) / length,
        "forwarded_pps": worker_packets.get(i, 0) / length,
        "us_per_packet": worker_cpu[i] * 1e6 / worker_packets[i]
        if worker_packets.get(i) and i in worker_cpu else None,
    } for i, pid, core in server.worker_pids()]
    # everything else the machine did meanwhile (other programs), in cores, and the
    # hypervisor's steal: both make a window's numbers less trustworthy
    ncpu = (m1[2] - m0[2]) / length if m1[2] > m0[2] else 1.0
    other = max(0.0, (m1[0] - m0[0]) - cpu - gen_cpu) / length
    steal = (m1[1] - m0[1]) / length
    server_core, gen_core = cores(opts)
    server_cores = {c for c in (server_core, *server.worker_cpus) if c is not None}
    core_steal = sum(k1.get(c, 0.0) - k0.get(c, 0.0) for c in server_cores) / length
    gen_core_share = gen_core_load(server, gen_core, gen_cpu / length,
                                   {i: c / length for i, c in worker_cpu.items()})
    return {
        "window": wid,
        "seconds": length,
        "rate_scale": scale,
        "offered_pps": expected / length,
        "forwarded_pps": forwarded / length,
        # packets to (receiver, stream) pairs the scenario does not expect, e.g. silence
        "unexpected_pps": unexpected / length,
        "loss": max(0.0, 1.0 - received / expected) if expected and not server.reencodes
        else None,
        "p50_ms": None if server.reencodes else percentile(m["hist"], 0.50),
        "p99_ms": None if server.reencodes else percentile(m["hist"], 0.99),
        # the same, to when the generator read the packet (its own queue included)
        "p99_user_ms": None if server.reencodes else percentile(m["hist_user"], 0.99),
        # the shape of the tail: what p99 alone hides (one burst, or many)
        "latency_tail": None if server.reencodes else tail(m["hist"]),
        "server_cpu": cpu / length,  # the server process and its descendants (workers)
        # None, not 0, when the server's CPU time did not advance in the window (read to
        # the nanosecond, procstat.cpu_seconds; where only /proc's 10 ms clock ticks can be
        # read, a short smoke run of the bare reflector read 0.0 µs/pkt)
        "server_us_per_packet": cpu * 1e6 / forwarded if forwarded and cpu > 0 else None,
        "server_rss_mb": rss / 2**20,
        "per_worker": workers,
        "gen_cpu": gen_cpu / length,
        "gen_late_ticks": m["late"],
        "gen_ticks": m["ticks"],
        "gen_lag_max_ms": m["lag_max_ms"],
        # all generator processes share one core (with any SFU worker pinned to it)
        "gen_core_cpu": gen_core_share,
        "gen_saturated": gen_core_share > GEN_SATURATED,
        "gen_late_fraction": m["late"] / m["ticks"] if m["ticks"] else 0.0,
        "other_load_cores": other,
        "steal_cores": steal,
        "server_core_steal": core_steal,  # of that, from the server's own core(s)
        "stolen": steal > STEAL_MAX or core_steal > CORE_STEAL_MAX,
        "cores": ncpu,
        "udp_rcvbuf_drops": d1 - d0,
        "srtp_errors": sum(r.get("srtp_errors", 0) for r in reports),
        "gen_send_errors": sum(r.get("send_errors", 0) for r in reports),
        "unknown_packets": sum(r.get("unknown", 0) for r in reports),
        "layers": layers_window(m, scenario),
        # simulcast: [layers whose SSRC the server's reports named by now, layers]
        "layers_acked": [sum(r["layers_acked"][k] for r in reports) for k in (0, 1)]
        if any("layers_acked" in r for r in reports) else None,
        "server_pauses": (stops := pauses(c0, c1)),
        # how often the server's loop stopped ≥ 5 ms (sealroom only: sfu/pauses.py)
        "server_stops_5ms": None if stops is None else stops.get("loop_lag_ge_5ms", 0),
        **({} if uplink is None else {
            "uplink": uplink,
            # what the receivers lost of everything the publishers meant to send: the
            # forwarding loss above (of what was sent) and the withheld packets not repaired
            "residual_loss": max(0.0, 1.0 - (received + uplink["recovered"])
                                 / (expected + uplink["expected"]))
            if expected + uplink["expected"] and not server.reencodes else None}),
    }


def pauses(c0: dict[str, Any], c1: dict[str, Any]) -> dict[str, int] | None:
    """The server's own stop meters over a window (sfu/pauses.py), if it has them.

    ``gc_genN_passes``, ``gc_pause_us``, ``loop_samples`` and the ``<meter>_ge_<n>ms``
    buckets, as differences of the two snapshots; None for a system without them.
    """
    names = [k for k in c1 if k.startswith(("gc_", "loop_")) and "." not in k]
    if not names:
        return None
    return {k: int(c1[k]) - int(c0.get(k, 0)) for k in sorted(names)}


def median(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(windows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["offered_pps", "forwarded_pps", "unexpected_pps", "loss", "p50_ms", "p99_ms",
            "p99_user_ms",
            "server_cpu", "server_us_per_packet", "server_rss_mb", "gen_cpu", "gen_core_cpu",
            "gen_late_fraction", "other_load_cores", "steal_cores", "server_core_steal",
            "udp_rcvbuf_drops"]
    out = {k: median([w.get(k) for w in windows]) for k in keys}
    out["gen_saturated"] = any(w["gen_saturated"] for w in windows)
    # the same medians over the windows the hypervisor left alone (all of them, if any)
    calm = [w for w in windows if not w.get("stolen")]
    out["calm_windows"] = len(calm)
    out["p99_calm_ms"] = median([w.get("p99_ms") for w in calm])
    if any(w.get("server_stops_5ms") is not None for w in windows):
        out["server_stops_5ms"] = sum(w.get("server_stops_5ms") or 0 for w in windows)
    if any(w.get("layers") for w in windows):  # simulcast: sums over the windows
        layers: dict[str, dict[str, int]] = {}
        for w in windows:
            for rid, row in (w.get("layers") or {}).items():
                total = layers.setdefault(rid, {"expected": 0, "received": 0, "wrong": 0})
                for k, v in row.items():
                    total[k] += v
        out["layers"] = layers
    if any(w.get("uplink") for w in windows):
        out["uplink"] = uplink_summary([w["uplink"] for w in windows if w.get("uplink")])
        out["residual_loss"] = median([w.get("residual_loss") for w in windows])
    per: dict[int, list[dict[str, Any]]] = {}
    for w in windows:
        for row in w.get("per_worker", []):
            per.setdefault(row["index"], []).append(row)
    out["per_worker"] = [{
        "index": i, "pid": rows[0]["pid"], "core": rows[0]["core"],
        **{k: median([r[k] for r in rows]) for k in ("cpu", "forwarded_pps", "us_per_packet")},
    } for i, rows in sorted(per.items())]
    return out


def uplink_summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Uplink loss over all measured windows: sums, not medians (a few dozen withheld
    packets per window make a median share jumpy); the generators' cumulative counters
    as the last window had them."""
    keys = ("withheld", "video_packets", "nacked", "resent", "expected", "recovered",
            "unrecovered", "duplicates")
    out: dict[str, Any] = {k: sum(w[k] for w in windows) for k in keys}
    out["withheld_share"] = out["withheld"] / out["video_packets"] \
        if out["video_packets"] else None
    out["recovered_share"] = out["recovered"] / out["expected"] if out["expected"] else None
    out["generator"] = windows[-1]["generator"]
    servers = [w["server"] for w in windows if w.get("server") is not None]
    out["server"] = {k: sum(s.get(k, 0) for s in servers) for k in UPSTREAM_COUNTERS} \
        if servers else None
    return out


def calmest(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """A search step's window: the first the hypervisor left alone, else the least stolen.

    One window per step made the search's verdict a coin toss on these VMs (the "max
    held" of one meeting swung from 15.6k to 47.1k pkt/s across runs): a stolen window
    fails p99 whatever the server does. ``tries`` lists every window measured."""
    w = next((t for t in tries if not t["stolen"]), None) or min(
        tries, key=lambda t: (t.get("server_core_steal", 0.0), t["steal_cores"]))
    return {**w, "tries": len(tries), "steal_tries": [round(t["steal_cores"], 3) for t in tries]}


def held(w: dict[str, Any]) -> bool:
    """≤ 0.1 % loss and p99 ≤ 5 ms, with a generator that kept up."""
    return (w["loss"] is not None and w["loss"] <= MAX_LOSS and w["p99_ms"] is not None
            and w["p99_ms"] <= MAX_P99_MS and not w.get("gen_saturated", False))


def loss_ok(w: dict[str, Any]) -> bool:
    """≤ 0.1 % loss, and the generator kept up (else the step says nothing of the server)."""
    return w["loss"] is not None and w["loss"] <= MAX_LOSS and not w["gen_saturated"]


def search_summary(steps: list[dict[str, Any]], server_cores: int = 1) -> dict[str, Any]:
    """The maxima over the measured steps (see ``search``); the server may use
    ``server_cores`` cores (SFU workers on different cores)."""
    return {
        "max_forwarded_pps": max((s["forwarded_pps"] for s in steps if s["held"]),
                                 default=None),
        "max_forwarded_pps_loss_only": max((s["forwarded_pps"] for s in steps
                                            if loss_ok(s)), default=None),
        # the generator saturated before the server failed: the maxima are lower bounds
        "generator_bound": any(s["gen_saturated"] and s["server_cpu"] < 0.9 * server_cores
                               for s in steps),
        "steps": steps,
    }


async def search(server: Server, gens: list[GenProc], scenario: Scenario, opts: Options,
                 progress: Progress) -> dict[str, Any]:
    """Highest forwarded pkt/s held at ≤ 0.1 % loss and p99 ≤ 5 ms, over offered load.

    The topology stays; every stream's packet rate is scaled by ``x``: doubling from 0.25
    until a step fails, then bisection between the last good and the first bad scale.
    The same search is then made for loss alone (≤ 0.1 %), reusing the steps already
    measured: on a busy machine p99 can exceed 5 ms at any load, and the loss-only
    figure still tells the capacity.
    """
    steps: dict[float, dict[str, Any]] = {}
    length = max(1.0, opts.window / 2)

    async def probe(x: float) -> dict[str, Any]:
        if x in steps:
            return steps[x]
        for g in gens:
            g.send(op="rate", x=x)
        await asyncio.sleep(1.0)
        tries: list[dict[str, Any]] = []
        while len(tries) < SEARCH_TRIES and (not tries or tries[-1]["stolen"]):
            tries.append(await measure_window(1000 + len(steps) * SEARCH_TRIES + len(tries),
                                              length, server, gens, scenario, opts, x))
        w = calmest(tries)
        w["held"] = held(w)
        steps[x] = w
        progress(f"search x={x:.3g}: {w['forwarded_pps']:.0f} pkt/s "
                 f"loss {100 * (w['loss'] or 0):.2f}% p99 {w['p99_ms']} ms")
        return w

    async def bisect(ok: Callable[[dict[str, Any]], bool]) -> None:
        good: float | None = None
        bad: float | None = None
        x = 0.25
        for _ in range(opts.search_steps):
            if ok(await probe(x)):
                good = x
                x *= 2
            else:
                bad = x
                break
        if good is not None and bad is not None:
            for _ in range(3):
                mid = (good + bad) / 2
                if ok(await probe(mid)):
                    good = mid
                else:
                    bad = mid

    await bisect(held)
    await bisect(loss_ok)
    for g in gens:
        g.send(op="rate", x=1.0)
    server_cores = len({core for _, _, core in server.worker_pids()}) or 1
    return search_summary([steps[x] for x in sorted(steps)], server_cores)


async def run_point(system: str, scenario: Scenario, opts: Options,
                    progress: Progress) -> dict[str, Any]:
    global NICE
    NICE = opts.nice
    server = make_server(system)
    server_cpu, gen_cpu = cores(opts)
    server.workers = opts.workers
    server.worker_cpus = worker_cores(opts, opts.workers)
    gens: list[GenProc] = []
    result: dict[str, Any] = {"system": system, "scenario": scenario.to_json(),
                              "participants": scenario.participants, "rooms": scenario.rooms,
                              "workers": opts.workers, "uplink_loss": opts.uplink_loss}
    # which core runs what: with workers, the runner (signaling relay) stays on the server
    # core and worker i runs on core i mod cores, so a worker can share the generators' core
    result["pinning"] = {"server": server_cpu, "workers": server.worker_cpus,
                         "generators": gen_cpu}
    result["gen_shares_core"] = gen_cpu is not None and (
        gen_cpu == server_cpu or gen_cpu in server.worker_cpus)
    setup = 60.0 + 2.0 * scenario.total
    # This process (the orchestrator: it reads /proc and the generators' reports at every
    # window's edge) runs beside the generators, never on the server's core: a runnable
    # task there is run-queue wait for the server (the SFU's ``loop_runqueue`` stops).
    affinity = os.sched_getaffinity(0)
    if gen_cpu is not None and gen_cpu != server_cpu and gen_cpu not in server.worker_cpus:
        os.sched_setaffinity(0, {gen_cpu})
    result["pinning"]["orchestrator"] = sorted(os.sched_getaffinity(0))
    limit = CpuLatencyLimit(0)
    if opts.idle == "poll" and not limit.hold():
        logger.warning("idle cores will halt: %s", limit.reason)
    entries = idle_entries()
    result["idle"] = {"mode": opts.idle, "held": limit.held, "reason": limit.reason,
                      "limit_us": current()}
    try:
        await server.start(scenario, server_cpu)
        progress(f"{system}: server up (pid {server.pid}), connecting")
        if server.worker_pids():
            result["worker_pids"] = {i: pid for i, pid, _ in server.worker_pids()}
            progress(f"{system}: workers " + ", ".join(
                f"{i}: pid {pid} core {core}" for i, pid, core in server.worker_pids()))
        t0 = time.monotonic()
        server_cpu0 = procstat.cpu_delta({}, procstat.tree_cpu(server.pid))
        busy0, _, _ = procstat.machine_cpu()
        gens = await start_gens(server, scenario, opts, gen_cpu, setup)
        for g in gens:
            if not g.published:
                published = await g.expect("published", setup)
                if "storm" in published:
                    result["joinstorm"] = storm = published["storm"]
                    # what the storm cost: CPU seconds of the server, of the generator,
                    # and of everything else on the machine meanwhile (a shared machine)
                    wall = time.monotonic() - t0
                    server_s = procstat.cpu_delta({}, procstat.tree_cpu(server.pid)) - server_cpu0
                    gen_s = sum(procstat.cpu_seconds(x.pid) for x in gens)
                    busy1, _, _ = procstat.machine_cpu()
                    storm.update(wall_s=round(wall, 2), server_cpu_s=round(server_s, 2),
                                 gen_cpu_s=round(gen_s, 2),
                                 other_cpu_s=round(max(0.0, busy1 - busy0 - server_s - gen_s),
                                                   2),
                                 loadavg_1min=os.getloadavg()[0])
                    progress(f"{system}: join storm: {storm['connected']} of "
                             f"{storm['participants']} connected, {storm['failures']} failed")
                    if storm["failures"]:
                        raise RuntimeError(f"join storm: {storm['failures']} of "
                                           f"{storm['participants']} failed: "
                                           f"{storm['error_messages'] or storm['failed']}")
        for g in gens:
            g.send(op="subscribe")
        for g in gens:
            connected = await g.expect("connected", setup)
            if "setup" in connected:
                result["setup"] = connected["setup"]
        for g in gens:
            g.send(op="start")
        missing = sum([(await g.expect("flowing", setup))["missing"] for g in gens])
        result["setup_seconds"] = time.monotonic() - t0
        result["missing_streams"] = missing
        progress(f"{system}: {scenario.total} connected in "
                 f"{result['setup_seconds']:.1f} s, warming up")
        if opts.rate != 1.0:  # the same topology at a higher packet rate (as the search)
            for g in gens:
                g.send(op="rate", x=opts.rate)
        await asyncio.sleep(opts.warmup)
        await server.learn_placement()
        if server.placement:
            result["placement"] = server.placement
        windows = []
        for k in range(opts.windows):
            progress(f"{system}: window {k + 1}/{opts.windows}")
            windows.append(await measure_window(k, opts.window, server, gens, scenario, opts,
                                                opts.rate))
        result["windows"] = windows
        result.update(summarize(windows))
        result["rate_scale"] = opts.rate
        if opts.search:
            result["search"] = await search(server, gens, scenario, opts, progress)
            result["max_forwarded_pps"] = result["search"]["max_forwarded_pps"]
            result["max_forwarded_pps_loss_only"] = result["search"][
                "max_forwarded_pps_loss_only"]
            result["max_generator_bound"] = result["search"]["generator_bound"]
        try:
            result["server_counters"] = await server.counters()
        except (OSError, ValueError, KeyError, TimeoutError) as exc:
            result["server_counters"] = {"error": str(exc)}
    except Exception as exc:
        logger.exception("%s %s N=%d R=%d W=%d failed", system, scenario.name,
                         scenario.participants, scenario.rooms, opts.workers)
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await stop_gens(gens)
        await server.stop()
        # entries into each idle state during the point: with the limit held the polling
        # state takes them (what the limit did, not what was asked)
        after = idle_entries()
        result["idle"]["entries"] = {k: v - entries.get(k, 0) for k, v in after.items()}
        limit.release()
        os.sched_setaffinity(0, affinity)
    return result


async def run_all(systems: list[str], scenario_name: str, sizes: list[int], opts: Options,
                  progress: Progress) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        scenario = build(scenario_name, n, opts.last_n, opts.rooms)
        for system in systems:
            if not supports(system, scenario_name, opts.rooms, opts.workers,
                            opts.uplink_loss):
                continue
            progress(f"── {system} {scenario_name} N={n} rooms={opts.rooms} "
                     f"workers={opts.workers}")
            results.append(await run_point(system, scenario, opts, progress))
    return results
