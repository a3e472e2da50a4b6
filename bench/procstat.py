"""CPU time and memory of a process (or a process and its descendants), from /proc (proc(5))."""

from __future__ import annotations

import contextlib
import glob
import os
import time

TICKS = os.sysconf("SC_CLK_TCK")


def _process_clock(pid: int) -> int:
    """The clock id of ``pid``'s CPU-time clock, what glibc's clock_getcpuclockid(3)
    returns (not in Python's ``time``): ``(~pid << 3) | CPUCLOCK_SCHED`` (the kernel's
    include/linux/posix-timers.h; process-wide, no CPUCLOCK_PERTHREAD bit)."""
    return (~pid << 3) | 2


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``, ended ones included, to the nanosecond: the
    process's CPU-time clock (clock_gettime(2) on its clock_getcpuclockid(3) id). The
    utime + stime of /proc/pid/stat (proc(5) fields 14, 15) counts in clock ticks
    (``TICKS``, 10 ms): a short window of a light process read 0 (a 2 s smoke run of the
    bare reflector), so that is only the fallback where the clock cannot be read."""
    with contextlib.suppress(OSError):
        return time.clock_gettime(_process_clock(pid))
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> set[int]:
    """Direct children of ``pid``: the union of /proc/pid/task/*/children (proc(5), Linux
    3.5+ with CONFIG_PROC_CHILDREN); without that file, by the ppid field of /proc/*/stat."""
    files = glob.glob(f"/proc/{pid}/task/*/children")
    if files:
        out: set[int] = set()
        for name in files:
            # the thread may have ended meanwhile
            with contextlib.suppress(OSError), open(name) as f:
                out.update(int(x) for x in f.read().split())
        return out
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(")") + 2 :].split()[1]) == pid:
                out.add(int(entry))
    return out


def tree(pid: int, limit: int = 10_000) -> list[int]:
    """``pid`` and all its descendants (breadth first, at most ``limit`` processes)."""
    out = [pid]
    seen = {pid}
    i = 0
    while i < len(out) and len(out) < limit:
        for child in sorted(children(out[i])):
            if child not in seen:
                seen.add(child)
                out.append(child)
        i += 1
    return out


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and of each live descendant; a process that ends while it is
    read is left out (its time is lost, unless its parent reaped it: proc(5) cutime)."""
    out: dict[int, float] = {}
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[p] = cpu_seconds(p)
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two :func:`tree_cpu` readings: by the processes seen in
    both, plus all of the time of those that appeared in between."""
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def tree_rss_bytes(pid: int) -> int:
    """Resident set sizes of ``pid`` and its descendants, summed (shared pages counted
    in each process, as ``ps`` does)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            total += rss_bytes(p)
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS in /proc/pid/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def udp_drops(pid: int) -> int:
    """UDP datagrams the kernel dropped for full receive buffers in ``pid``'s network
    namespace (``RcvbufErrors`` of the ``Udp:`` lines of /proc/pid/net/snmp)."""
    with open(f"/proc/{pid}/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    if len(rows) < 2:
        return 0
    return int(dict(zip(rows[0][1:], rows[1][1:], strict=False)).get("RcvbufErrors", 0))


def cpu_steal() -> dict[int, float]:
    """Seconds the hypervisor stole from each CPU since boot (/proc/stat ``cpuN``, 8th)."""
    out: dict[int, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu":
                if out:
                    break  # the cpuN lines come together, right after "cpu"
                continue
            out[int(name[3:])] = int((fields + ["0"] * 8)[7]) / TICKS
    return out


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) seconds summed over all CPUs since boot (/proc/stat ``cpu``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    total = busy + idle + iowait + steal
    return busy / TICKS, steal / TICKS, total / TICKS
