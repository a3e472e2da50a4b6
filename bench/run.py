"""The orchestrator: one measurement point = one system × one scenario × one room size.

For each point it starts the system under test pinned to one core (``taskset``), the
load generator(s) pinned to the other, connects every virtual participant, starts the
media, warms up, then measures ``windows`` fixed windows back to back. For each window it
reads the server's and the generators' CPU time from /proc at the window's edges and asks
the generators what was sent and received in it (by the packets' send timestamps), then
reports per-window figures and their medians.
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

from . import procstat
from .gen import HIST_FINE
from .scenarios import Scenario, build

logger = logging.getLogger("bench.run")

PY = sys.executable
MAX_LOSS = 0.001  # the search's limits: ≤ 0.1 % loss …
MAX_P99_MS = 5.0  # … and p99 added latency ≤ 5 ms
GEN_SATURATED = 0.9  # generator CPU share of its core above which a window is flagged

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


def cores(opts: Options) -> tuple[int | None, int | None]:
    """(server core, generator core): the first two CPUs we may run on."""
    if not opts.pin:
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return (opts.server_cpu if opts.server_cpu is not None else cpus[0],
            opts.gen_cpu if opts.gen_cpu is not None else cpus[1])


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
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.name}: server exited before it was ready")
        self.port = int(json.loads(line)["port"])

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

    async def start(self, scenario: Scenario, cpu: int | None) -> None:
        cmd = [PY, "-m", "bench.sfu_runner", "--port", "0", "--last-n", str(scenario.last_n)]
        await self._spawn_json_port(wrap(cmd, cpu))


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
    if name == "reflector":
        return ReflectorServer()
    if name == "mediarelay":
        return MediaRelayServer()
    if name == "janus":
        from .janus import JanusServer
        return JanusServer()
    raise ValueError(f"unknown system {name!r}")


SYSTEMS = ("sealroom", "reflector", "janus", "mediarelay")


def supports(system: str, scenario: str) -> bool:
    """last-N is an SFU feature: only sealroom has it among the systems measured."""
    return scenario != "lastn" or system == "sealroom"


class GenProc:
    """One load generator process and its JSON-lines control channel."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

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
                     cpu: int | None) -> list[GenProc]:
    gens = []
    n = max(1, min(opts.gen_procs, scenario.participants))
    for k in range(n):
        indices = [i for i in range(scenario.participants) if i % n == k]
        cmd = [PY, "-m", "bench.gen", "--system", server.gen_system,
               "--scenario", scenario.name, "--participants", str(scenario.participants),
               "--last-n", str(scenario.last_n), "--indices", ",".join(map(str, indices)),
               "--host", server.host, "--port", str(server.port), "--bind", server.bind]
        proc = await asyncio.create_subprocess_exec(
            *wrap(cmd, cpu, server.netns), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 26)
        gens.append(GenProc(proc))
    return gens


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


def merge_window(reports: list[dict[str, Any]]) -> dict[str, Any]:
    sent: dict[int, int] = {}
    received: dict[int, int] = {}
    pairs: set[int] = set()
    hist: dict[int, int] = {}
    late = ticks = unprobed = 0
    lag = 0.0
    for r in reports:
        w = r["window"]
        if w is None:
            continue
        for k, v in w["sent"].items():
            sent[int(k)] = sent.get(int(k), 0) + v
        for k, v in w["received"].items():
            received[int(k)] = received.get(int(k), 0) + v
        pairs.update(w["pairs"])
        for k, v in w["hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
        late += w["late"]
        unprobed += w["unprobed"]
        ticks += w["ticks"]
        lag = max(lag, w["lag_max_ms"])
    return {"sent": sent, "received": received, "pairs": pairs, "hist": hist,
            "late": late, "ticks": ticks, "lag_max_ms": lag, "unprobed": unprobed}


async def measure_window(wid: int, length: float, server: Server, gens: list[GenProc],
                         scenario: Scenario, opts: Options, scale: float) -> dict[str, Any]:
    start = time.monotonic_ns() + 50_000_000
    end = start + int(length * 1e9)
    for g in gens:
        g.send(op="window", id=wid, start=start, end=end)
    await asyncio.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
    s0 = procstat.cpu_seconds(server.pid)
    g0 = sum(procstat.cpu_seconds(g.pid) for g in gens)
    d0 = procstat.udp_drops(server.pid)
    m0 = procstat.machine_cpu()
    await asyncio.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
    s1 = procstat.cpu_seconds(server.pid)
    g1 = sum(procstat.cpu_seconds(g.pid) for g in gens)
    rss = procstat.rss_bytes(server.pid)
    d1 = procstat.udp_drops(server.pid)
    m1 = procstat.machine_cpu()
    await asyncio.sleep(opts.grace)
    for g in gens:
        g.send(op="report", id=wid)
    reports = [await g.expect("report", 30.0) for g in gens]
    m = merge_window(reports)
    expected = 0
    for sid, count in m["sent"].items():
        expected += count * len(scenario.receivers(sid))
    received = sum(m["received"].values())
    if server.reencodes:  # a new encoding comes out: count its packets by arrival time
        received += m["unprobed"]
    cpu = s1 - s0
    gen_cpu = g1 - g0
    # everything else the machine did meanwhile (other programs), in cores, and the
    # hypervisor's steal: both make a window's numbers less trustworthy
    ncpu = (m1[2] - m0[2]) / length if m1[2] > m0[2] else 1.0
    other = max(0.0, (m1[0] - m0[0]) - cpu - gen_cpu) / length
    steal = (m1[1] - m0[1]) / length
    return {
        "window": wid,
        "seconds": length,
        "rate_scale": scale,
        "offered_pps": expected / length,
        "forwarded_pps": received / length,
        "loss": max(0.0, 1.0 - received / expected) if expected and not server.reencodes
        else None,
        "p50_ms": None if server.reencodes else percentile(m["hist"], 0.50),
        "p99_ms": None if server.reencodes else percentile(m["hist"], 0.99),
        "server_cpu": cpu / length,
        "server_us_per_packet": cpu * 1e6 / received if received else None,
        "server_rss_mb": rss / 2**20,
        "gen_cpu": gen_cpu / length,
        "gen_late_ticks": m["late"],
        "gen_ticks": m["ticks"],
        "gen_lag_max_ms": m["lag_max_ms"],
        # all generator processes share one core
        "gen_saturated": gen_cpu / length > GEN_SATURATED,
        "gen_late_fraction": m["late"] / m["ticks"] if m["ticks"] else 0.0,
        "other_load_cores": other,
        "steal_cores": steal,
        "cores": ncpu,
        "udp_rcvbuf_drops": d1 - d0,
        "srtp_errors": sum(r.get("srtp_errors", 0) for r in reports),
        "unknown_packets": sum(r.get("unknown", 0) for r in reports),
    }


def median(values: list[Any]) -> Any:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(windows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["offered_pps", "forwarded_pps", "loss", "p50_ms", "p99_ms", "server_cpu",
            "server_us_per_packet", "server_rss_mb", "gen_cpu", "gen_late_fraction",
            "other_load_cores", "steal_cores", "udp_rcvbuf_drops"]
    out = {k: median([w[k] for w in windows]) for k in keys}
    out["gen_saturated"] = any(w["gen_saturated"] for w in windows)
    return out


def held(w: dict[str, Any]) -> bool:
    """≤ 0.1 % loss and p99 ≤ 5 ms, with a generator that kept up."""
    return (w["loss"] is not None and w["loss"] <= MAX_LOSS and w["p99_ms"] is not None
            and w["p99_ms"] <= MAX_P99_MS and not w.get("gen_saturated", False))


def loss_ok(w: dict[str, Any]) -> bool:
    """≤ 0.1 % loss, and the generator kept up (else the step says nothing of the server)."""
    return w["loss"] is not None and w["loss"] <= MAX_LOSS and not w["gen_saturated"]


def search_summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The maxima over the measured steps (see ``search``)."""
    return {
        "max_forwarded_pps": max((s["forwarded_pps"] for s in steps if s["held"]),
                                 default=None),
        "max_forwarded_pps_loss_only": max((s["forwarded_pps"] for s in steps
                                            if loss_ok(s)), default=None),
        # the generator saturated before the server failed: the maxima are lower bounds
        "generator_bound": any(s["gen_saturated"] and s["server_cpu"] < 0.9 for s in steps),
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
        w = await measure_window(1000 + len(steps), length, server, gens, scenario, opts, x)
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
    return search_summary([steps[x] for x in sorted(steps)])


async def run_point(system: str, scenario: Scenario, opts: Options,
                    progress: Progress) -> dict[str, Any]:
    global NICE
    NICE = opts.nice
    server = make_server(system)
    server_cpu, gen_cpu = cores(opts)
    gens: list[GenProc] = []
    result: dict[str, Any] = {"system": system, "scenario": scenario.to_json(),
                              "participants": scenario.participants}
    setup = 60.0 + 2.0 * scenario.participants
    try:
        await server.start(scenario, server_cpu)
        progress(f"{system}: server up (pid {server.pid}), connecting")
        gens = await start_gens(server, scenario, opts, gen_cpu)
        t0 = time.monotonic()
        for g in gens:
            await g.expect("published", setup)
        for g in gens:
            g.send(op="subscribe")
        for g in gens:
            await g.expect("connected", setup)
        for g in gens:
            g.send(op="start")
        missing = sum([(await g.expect("flowing", setup))["missing"] for g in gens])
        result["setup_seconds"] = time.monotonic() - t0
        result["missing_streams"] = missing
        progress(f"{system}: {scenario.participants} connected in "
                 f"{result['setup_seconds']:.1f} s, warming up")
        await asyncio.sleep(opts.warmup)
        windows = []
        for k in range(opts.windows):
            progress(f"{system}: window {k + 1}/{opts.windows}")
            windows.append(await measure_window(k, opts.window, server, gens, scenario, opts,
                                                1.0))
        result["windows"] = windows
        result.update(summarize(windows))
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
        logger.exception("%s %s N=%d failed", system, scenario.name, scenario.participants)
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await stop_gens(gens)
        await server.stop()
    return result


async def run_all(systems: list[str], scenario_name: str, sizes: list[int], opts: Options,
                  progress: Progress) -> list[dict[str, Any]]:
    results = []
    for n in sizes:
        scenario = build(scenario_name, n, opts.last_n)
        for system in systems:
            if not supports(system, scenario_name):
                continue
            progress(f"── {system} {scenario_name} N={n}")
            results.append(await run_point(system, scenario, opts, progress))
    return results
