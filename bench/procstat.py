"""CPU time and memory of a process, from /proc (proc(5))."""

from __future__ import annotations

import os

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (proc(5) /proc/pid/stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / TICKS


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


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) seconds summed over all CPUs since boot (/proc/stat ``cpu``)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    total = busy + idle + iowait + steal
    return busy / TICKS, steal / TICKS, total / TICKS
