"""Keep idle CPUs polling instead of halting, for as long as a server or benchmark runs.

Linux's PM QoS interface (kernel Documentation/power/pm_qos_interface.rst, "CPU latency
QoS") lets a process ask that no CPU enter an idle state whose exit latency exceeds a
bound. The request is made by writing the bound, in microseconds, as a 4-byte binary
integer to ``/dev/cpu_dma_latency``, and it lasts exactly as long as that file stays
open: closing it, or the process ending in any way, withdraws it. With a bound of 0 the
cpuidle governor may only choose the polling state, so an idle core spins in the kernel
instead of executing HLT.

Why a media server wants that (docs/benchmarks-history.md, sixth series; docs/DEPLOY.md): a
forwarding core runs at 40-60 % load in bursts, idles between them, and every packet
from a peer wakes it. On a KVM guest a halted vCPU gives its physical CPU back to the
host; waking it costs an interrupt through the hypervisor and whatever wait the host's
scheduler adds, and on the benchmark machine those waits were most of the "steal"
that made p99 latency exceed 5 ms. A polling core is woken by a store to its flags (the kernel
skips the interrupt when the target polls), and the host sees it busy. The cost is
power, and on a shared host a core that never looks idle. ``cyclictest`` makes the same
request while it measures, and ``tuned``'s latency-performance profile sets such a limit
(``force_latency``); this module is for hosts without that and for the benchmark, which
holds it for every system it measures alike.
"""

from __future__ import annotations

import glob
import logging
import os
import struct

logger = logging.getLogger(__name__)

PATH = "/dev/cpu_dma_latency"
_VALUE = struct.Struct("=i")  # the kernel reads a native s32 when exactly 4 bytes come


class CpuLatencyLimit:
    """A PM QoS CPU latency request, held from :meth:`hold` until :meth:`release`."""

    def __init__(self, microseconds: int = 0, path: str = PATH) -> None:
        if microseconds < 0:
            raise ValueError("the latency limit is a number of microseconds ≥ 0")
        self.microseconds = microseconds
        self.path = path
        self.reason: str | None = None  # why the last hold() failed
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self) -> bool:
        """Make the request; False (and :attr:`reason`) if this process may not."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.reason = f"{self.path}: {exc.strerror or exc}"
            return False
        try:
            os.write(fd, _VALUE.pack(self.microseconds))
        except OSError as exc:
            os.close(fd)
            self.reason = f"{self.path}: {exc.strerror or exc}"
            return False
        self._fd = fd
        self.reason = None
        logger.info("CPU latency limit %d µs held (%s)", self.microseconds, self.path)
        return True

    def release(self) -> None:
        """Withdraw the request (closing the file is what withdraws it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> CpuLatencyLimit:
        self.hold()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def current(path: str = PATH) -> int | None:
    """The limit in force now, in µs (the kernel's answer to a 4-byte read), or None."""
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.read(_VALUE.size)
    except OSError:
        return None
    return _VALUE.unpack(data)[0] if len(data) == _VALUE.size else None


def idle_entries(root: str = "/sys/devices/system/cpu") -> dict[str, int]:
    """How often all CPUs have entered each cpuidle state so far, by state name.

    The difference over a run shows what the limit did: with it held, a polling state
    ("POLL") takes the entries and the halting ones stop counting. Empty when the
    kernel has no cpuidle driver.
    """
    out: dict[str, int] = {}
    for state in sorted(glob.glob(os.path.join(root, "cpu[0-9]*", "cpuidle", "state[0-9]*"))):
        try:
            with open(os.path.join(state, "name")) as f:
                name = f.read().strip()
            with open(os.path.join(state, "usage")) as f:
                usage = int(f.read())
        except (OSError, ValueError):
            continue
        out[name] = out.get(name, 0) + usage
    return out
