"""Shaped links on loopback: one participant's downlink limited, or its uplink losing a
share of its packets, with nothing but ``tc`` (iproute2) on ``lo``.

Why not netem: this project's test kernels are built without ``CONFIG_NET_SCH_NETEM``,
and without ``act_gact`` (so no ``action drop``). What they do have is enough:

* **Downlink limit** (``limit_downlink``): an ``htb`` root qdisc on ``lo`` (tc-htb(8))
  whose default class is ``0``, so every unclassified packet takes htb's direct queue
  and is not shaped. A ``u32`` filter (tc-u32(8)) sends UDP packets whose *destination*
  port is one of the participant's ports (what the SFU sends it: its downlink) to one
  class, whose leaf is a ``tbf`` (tc-tbf(8)) with the rate, a burst and a byte limit:
  what does not fit the limit is dropped, the rest waits its turn. The SFU sends a
  subscriber's packets as one UDP GSO super-packet per event-loop turn (docs/SFU.md,
  "Sends in runs"); ``tbf`` cuts a GSO packet larger than its burst back into segments
  (``tbf_segment`` in net/sched/sch_tbf.c), so the byte limit acts on wire-sized
  packets as a real bottleneck's queue would. ``htb`` alone would queue or drop a whole
  run at once.
* **Uplink loss** (``drop_uplink``): a ``clsact`` qdisc (tc-bpf(8)) and a classic-BPF
  program on ``lo``'s egress hook in direct-action mode (``da``): the program's return
  value is the tc verdict, ``TC_ACT_SHOT`` (2) drops the packet, ``TC_ACT_UNSPEC`` (-1)
  lets the next filter decide (and then the packet passes). It drops a UDP packet whose
  *source* port is one of the participant's ports (what it sends: its uplink) when the
  random number of the ancillary load ``SKF_AD_RANDOM`` is below ``share`` × 2³².
  Documentation/networking/filter.rst of the Linux tree documents the instruction set,
  the ancillary loads and the negative offsets used here.

Loopback carries each datagram once out (egress: both hooks above) and once in, so
every packet is shaped exactly once. Everything is on ``lo`` of the *current* network
namespace: the functions refuse to run where ``lo`` is not alone (``in_private_net``),
so that a stray call never shapes a developer's machine. Each context manager removes
what it added when it exits, on an exception too; state left behind by a killed run
(this module's handles) is reused or removed, never an error.

``local_ports(page)`` reads which local UDP ports a sealroom page's two
PeerConnections use (the selected ICE candidate pairs), the ports to give the above.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DEV = "lo"
ROOT_MAJOR = 0x5E1
"""Handle of our htb root qdisc (``5e1:``); a leaf tbf of class ``5e1:n`` is ``5e1n:``-ish
(``LEAF_BASE + n``). Fixed handles let a later run recognise what a killed run left."""
LEAF_BASE = 0x5E00
EGRESS_PREF_BASE = 0x5E00
"""Filter priorities of our drop programs on clsact egress: ``EGRESS_PREF_BASE + n``."""
HTB_CLASS_RATE = "10gbit"
"""The htb class only classifies; its tbf leaf does the shaping, so the class itself
never limits (tc-htb(8): a class sends at ``rate``, and at most ``ceil``)."""


class NetshapeError(RuntimeError):
    """tc is missing or refused a command (with tc's own message), or the namespace is
    not a private one."""


# ------------------------------------------------------------------------- running tc


def _tc_binary() -> str:
    found = shutil.which("tc") or next(
        (p for p in ("/usr/sbin/tc", "/sbin/tc") if os.path.exists(p)), None
    )
    if found is None:
        raise NetshapeError("tc (Debian package iproute2) is not installed")
    return found


def tc(*args: str, check: bool = True) -> str:
    """Run ``tc args…``; stdout. A refusal raises NetshapeError with tc's message."""
    cmd = [_tc_binary(), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NetshapeError(f"`{' '.join(cmd)}` did not finish in 10 s") from exc
    if done.returncode != 0 and check:
        hint = ""
        if "Operation not permitted" in done.stderr:
            hint = (" — tc needs CAP_NET_ADMIN in this network namespace: run as root under"
                    " `unshare -n` (or `unshare -rn` as a user)")
        raise NetshapeError(
            f"tc refused `{' '.join(cmd[1:])}` (exit {done.returncode}): "
            f"{done.stderr.strip()}{hint}"
        )
    return done.stdout


def links() -> list[str]:
    """Names of the network interfaces of this process's network namespace.

    From /proc/self/net/dev, not /sys/class/net: sysfs shows the namespace it was
    mounted in, which ``unshare -n`` does not remount."""
    with open("/proc/self/net/dev") as f:
        lines = f.read().splitlines()[2:]  # two header lines (proc(5), /proc/net/dev)
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def in_private_net() -> bool:
    """True in a network namespace that has only loopback (what ./dev test and
    ``unshare -n`` give): the only place these functions will shape ``lo``."""
    return links() == [DEV]


def _require_private_net() -> None:
    if not in_private_net():
        raise NetshapeError(
            f"refusing to shape {DEV}: this network namespace has links {links()}, not only"
            " lo; run inside `unshare -n` (as ./dev test and python -m bench.links do)"
        )


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class QdiscStats:
    """tc's own counters of one qdisc (``tc -s qdisc``), since it was created."""

    kind: str
    handle: str
    packets: int = 0
    bytes: int = 0
    drops: int = 0
    overlimits: int = 0
    backlog: int = 0
    qlen: int = 0

    def minus(self, before: QdiscStats | None) -> QdiscStats:
        """Counters since `before` (backlog and qlen are levels, kept as they are now)."""
        if before is None:
            return self
        return QdiscStats(
            self.kind, self.handle, self.packets - before.packets, self.bytes - before.bytes,
            self.drops - before.drops, self.overlimits - before.overlimits,
            self.backlog, self.qlen,
        )


def qdiscs() -> list[dict[str, Any]]:
    """``tc -s -j qdisc show dev lo``: every qdisc of lo with its counters."""
    out = tc("-s", "-j", "qdisc", "show", "dev", DEV)
    parsed: list[dict[str, Any]] = json.loads(out or "[]")
    return parsed


def qdisc_stats(handle: str) -> QdiscStats | None:
    """Counters of lo's qdisc with `handle` (``"5e1:"``, ``"ffff:"``), None if absent."""
    for q in qdiscs():
        if q.get("handle") == handle:
            return QdiscStats(
                kind=str(q.get("kind")), handle=handle,
                packets=int(q.get("packets", 0)), bytes=int(q.get("bytes", 0)),
                drops=int(q.get("drops", 0)), overlimits=int(q.get("overlimits", 0)),
                backlog=int(q.get("backlog", 0)), qlen=int(q.get("qlen", 0)),
            )
    return None


def egress_filters() -> list[dict[str, Any]]:
    """The filters on lo's clsact egress hook (empty without clsact)."""
    if not any(q.get("kind") == "clsact" for q in qdiscs()):
        return []
    parsed: list[dict[str, Any]] = json.loads(tc("-j", "filter", "show", "dev", DEV, "egress")
                                              or "[]")
    return parsed


def is_default() -> bool:
    """lo has its default qdisc (noqueue) and nothing else: nothing shaped, no filter."""
    return [q.get("kind") for q in qdiscs()] == ["noqueue"]


def _htb_classes() -> set[int]:
    """Minor numbers of the classes under our htb root (text: ``tc -j class`` prints
    text for htb in iproute2 6.1)."""
    out = tc("class", "show", "dev", DEV, check=False)
    minors: set[int] = set()
    prefix = f"{ROOT_MAJOR:x}:"
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "class" and words[2].startswith(prefix):
            with contextlib.suppress(ValueError):
                minors.add(int(words[2][len(prefix):], 16))
    return minors


def reset() -> None:
    """Remove everything this module may have added to lo (a killed run's leftovers)."""
    _require_private_net()
    for q in qdiscs():
        if q.get("kind") == "clsact":
            tc("qdisc", "del", "dev", DEV, "clsact", check=False)
        if q.get("root") and q.get("handle") == f"{ROOT_MAJOR:x}:":
            tc("qdisc", "del", "dev", DEV, "root", check=False)


# ---------------------------------------------------------------- classic BPF program

# Classic BPF opcodes (linux/bpf_common.h, linux/filter.h; filter.rst "BPF engine and
# instruction set"): class | size | mode, or class | op | source.
BPF_LD, BPF_LDX, BPF_JMP, BPF_RET = 0x00, 0x01, 0x05, 0x06
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_ABS, BPF_IND, BPF_MSH = 0x20, 0x40, 0xA0
BPF_JA, BPF_JEQ, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x30, 0x40
BPF_K = 0x00
SKF_AD_OFF = -0x1000
SKF_AD_RANDOM = 56
"""``ld rand`` (filter.rst, "ancillary"): A = a fresh prandom_u32() for each packet."""
SKF_NET_OFF = -0x100000
"""Negative offsets from SKF_NET_OFF load relative to the network header (filter.rst;
``bpf_internal_load_pointer_neg_helper``), whatever link-layer header precedes it: on
lo's egress hook skb->data is at lo's 14-byte Ethernet-style header (measured: a
program loading the IP header at offset 0 matches nothing, at 14 it matches), and this
form does not depend on that."""
TC_ACT_UNSPEC = 0xFFFFFFFF  # -1: no verdict, the next filter decides (pkt_cls.h)
TC_ACT_SHOT = 2  # drop (pkt_cls.h)
IPPROTO_UDP = 17

Insn = tuple[int, int, int, int]


def drop_program(ports: Sequence[int], share: float) -> list[Insn]:
    """The classic-BPF program: UDP from one of `ports` → TC_ACT_SHOT with probability
    `share`; anything else (and the packets the draw spares) → TC_ACT_UNSPEC.

    The listing, in filter.rst's assembler syntax, with N = SKF_NET_OFF:

        ldb [N+9]                 ; IPv4 protocol (the filter is `protocol ip`)
        jeq #17, L1, pass
    L1: ldh [N+6]                 ; flags | fragment offset
        jset #0x1fff, pass, L2    ; a later fragment has no UDP header
    L2: ldxb 4*([N+0]&0xf)        ; X = IPv4 header length
        ldh [x+N+0]               ; UDP source port
        jeq #p1, draw, …          ; one test per port
        ja pass
    draw: ld rand
        jge #threshold, pass, drop  ; unsigned: drop when rand < share × 2^32
    drop: ret #2                  ; TC_ACT_SHOT
    pass: ret #-1                 ; TC_ACT_UNSPEC
    """
    if not ports:
        raise ValueError("no port to match")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share} is not in 0…1")
    if any(not 0 < p < 65536 for p in ports):
        raise ValueError(f"bad port in {list(ports)}")
    net = SKF_NET_OFF & 0xFFFFFFFF
    n = len(ports)
    # Positions: 0 ldb, 1 jeq, 2 ldh, 3 jset, 4 ldxb, 5 ldh, 6..6+n-1 jeq port, 6+n ja,
    # 7+n ld rand, 8+n jge, 9+n ret drop, 10+n ret pass. Jumps are relative to the next
    # instruction (filter.rst: "jt/jf: offsets ... relative to the next insn").
    draw, drop, pas = 7 + n, 9 + n, 10 + n
    prog: list[Insn] = [
        (BPF_LD | BPF_B | BPF_ABS, 0, 0, (net + 9) & 0xFFFFFFFF),
        (BPF_JMP | BPF_JEQ | BPF_K, 0, pas - 2, IPPROTO_UDP),
        (BPF_LD | BPF_H | BPF_ABS, 0, 0, (net + 6) & 0xFFFFFFFF),
        (BPF_JMP | BPF_JSET | BPF_K, pas - 4, 0, 0x1FFF),
        (BPF_LDX | BPF_B | BPF_MSH, 0, 0, net),
        (BPF_LD | BPF_H | BPF_IND, 0, 0, net),
    ]
    for i, port in enumerate(ports):
        at = 6 + i
        prog.append((BPF_JMP | BPF_JEQ | BPF_K, draw - at - 1, 0, port))
    prog.append((BPF_JMP | BPF_JA, 0, 0, pas - (6 + n) - 1))
    if share >= 1.0:
        threshold_insn: Insn = (BPF_JMP | BPF_JA, 0, 0, 0)  # always drop: fall through
        prog += [(BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_RANDOM) & 0xFFFFFFFF),
                 threshold_insn]
    else:
        threshold = round(share * 2**32)
        prog += [
            (BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_AD_OFF + SKF_AD_RANDOM) & 0xFFFFFFFF),
            (BPF_JMP | BPF_JGE | BPF_K, pas - (8 + n) - 1, 0, threshold),
        ]
    prog += [(BPF_RET | BPF_K, 0, 0, TC_ACT_SHOT), (BPF_RET | BPF_K, 0, 0, TC_ACT_UNSPEC)]
    assert len(prog) == pas + 1 and prog[drop][3] == TC_ACT_SHOT
    return prog


def bytecode(prog: Sequence[Insn]) -> str:
    """tc-bpf(8)'s ``bytecode`` string: ``N,code jt jf k,…`` (decimal, as bpf_asm -c's
    ``tc`` output format)."""
    return f"{len(prog)}," + ",".join(f"{c} {jt} {jf} {k}" for c, jt, jf, k in prog)


# ------------------------------------------------------------------------- the shapers


@dataclass
class Shaping:
    """What a context manager set up; ``stats()`` reads tc's counters for it."""

    what: str
    ports: tuple[int, ...]
    handle: str
    _start: QdiscStats | None = field(default=None, repr=False)

    def stats(self) -> QdiscStats | None:
        """Counters since this shaping began (for ``drop_uplink``: ``drops`` counts the
        packets our programs dropped; ``packets`` is all of lo's egress)."""
        now = qdisc_stats(self.handle)
        return now.minus(self._start) if now is not None else None


def _ports(ports: Iterable[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(p) for p in ports}))
    if not out:
        raise ValueError("no port given")
    return out


@contextlib.contextmanager
def limit_downlink(
    ports: Iterable[int], kbit: int, burst: int | None = None, queue_ms: int = 150
) -> Iterator[Shaping]:
    """Limit what is sent *to* `ports` on lo to `kbit` kbit/s while the block runs.

    `burst` (bytes, default 20 ms of the rate and at least 16 kB) is the token bucket's
    depth; `queue_ms` sizes the bottleneck's queue (bytes the tbf holds before it drops:
    `queue_ms` of the rate, at least two full-size packets): a home router's buffer.
    Usable from async code (each tc call takes milliseconds)."""
    _require_private_net()
    wanted = _ports(ports)
    if kbit < 8:
        raise ValueError(f"{kbit} kbit/s is below what tbf represents well")
    rate_bytes = kbit * 1000 // 8
    burst = burst if burst is not None else max(16_000, rate_bytes // 50)
    # tbf's limit counts the bucket too: what waits is limit − burst (tc-tbf(8), latency).
    limit = burst + max(3_000, rate_bytes * queue_ms // 1000)
    root = f"{ROOT_MAJOR:x}:"
    undo: list[list[str]] = []
    present = {q.get("handle"): q for q in qdiscs()}
    root_q = next((q for q in present.values() if q.get("root")), None)
    if root_q is None or root_q.get("kind") == "noqueue":
        tc("qdisc", "add", "dev", DEV, "root", "handle", root, "htb", "default", "0")
    elif root_q.get("handle") != root:
        raise NetshapeError(f"{DEV} already has a root qdisc not made here: {root_q}")
    try:
        minor = max(_htb_classes(), default=0) + 1
        classid = f"{ROOT_MAJOR:x}:{minor:x}"
        leaf = f"{LEAF_BASE + minor:x}:"
        tc("class", "add", "dev", DEV, "parent", root, "classid", classid, "htb",
           "rate", HTB_CLASS_RATE, "ceil", HTB_CLASS_RATE, "quantum", "60000")
        undo.append(["class", "del", "dev", DEV, "classid", classid])
        tc("qdisc", "add", "dev", DEV, "parent", classid, "handle", leaf, "tbf",
           "rate", f"{kbit}kbit", "burst", str(burst), "limit", str(limit))
        # pref = the class's minor: deleting that pref removes all its port filters.
        undo.append(["filter", "del", "dev", DEV, "parent", root, "protocol", "ip",
                     "pref", str(minor)])
        for port in wanted:
            # `match ip dport` reads 22 bytes into the IPv4 header: our packets have no
            # IP options (tc-u32(8), "ip dport").
            tc("filter", "add", "dev", DEV, "parent", root, "protocol", "ip", "pref",
               str(minor), "u32", "match", "ip", "protocol", str(IPPROTO_UDP), "0xff",
               "match", "ip", "dport", str(port), "0xffff", "flowid", classid)
        shaping = Shaping(f"downlink ≤ {kbit} kbit/s", wanted, leaf)
        log.info("netshape: %s to ports %s (burst %d B, queue %d B, class %s)",
                 shaping.what, wanted, burst, limit, classid)
        yield shaping
    finally:
        _undo(undo)


@contextlib.contextmanager
def drop_uplink(ports: Iterable[int], share: float) -> Iterator[Shaping]:
    """Drop each UDP packet sent *from* one of `ports` on lo with probability `share`
    (independent draws: Bernoulli loss) while the block runs."""
    _require_private_net()
    wanted = _ports(ports)
    code = bytecode(drop_program(wanted, share))
    undo: list[list[str]] = []
    if not any(q.get("kind") == "clsact" for q in qdiscs()):
        tc("qdisc", "add", "dev", DEV, "clsact")
    try:
        used = {int(f.get("pref", 0)) for f in egress_filters()}
        pref = next(p for p in range(EGRESS_PREF_BASE, EGRESS_PREF_BASE + 4096)
                    if p not in used)
        start = qdisc_stats("ffff:")
        tc("filter", "add", "dev", DEV, "egress", "protocol", "ip", "pref", str(pref),
           "bpf", "da", "bytecode", code)
        undo.append(["filter", "del", "dev", DEV, "egress", "protocol", "ip", "pref",
                     str(pref)])
        shaping = Shaping(f"uplink loss {share:.1%}", wanted, "ffff:", start)
        log.info("netshape: %s from ports %s (clsact egress pref %d)", shaping.what, wanted,
                 pref)
        yield shaping
    finally:
        _undo(undo)


def _undo(undo: list[list[str]]) -> None:
    """Undo a shaping's classes and filters in reverse, then remove our qdiscs if nothing
    uses them any more: another shaping of this process may still hold a class or a
    filter on them. Errors are logged, never raised: the block's own exception (if any)
    is the one that matters, and every later step is still tried."""
    for cmd in reversed(undo):
        try:
            tc(*cmd)
        except NetshapeError as exc:
            log.warning("netshape: cleanup: %s", exc)
    try:
        _remove_if_empty()
    except NetshapeError as exc:
        log.warning("netshape: cleanup: %s", exc)


def _remove_if_empty() -> None:
    for q in qdiscs():
        if q.get("kind") == "clsact" and not egress_filters():
            tc("qdisc", "del", "dev", DEV, "clsact")
        if q.get("root") and q.get("handle") == f"{ROOT_MAJOR:x}:" and not _htb_classes():
            tc("qdisc", "del", "dev", DEV, "root")


# --------------------------------------------------------------------- a page's ports

PORTS_JS = """async () => {
    const out = {};
    const reports = await window.sealroom.call.media.stats();
    for (const [pc, report] of Object.entries(reports)) {
      if (!report) continue;
      let pairId = null;
      report.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
      });
      if (pairId === null) {
        report.forEach((r) => {
          if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pairId = r.id;
        });
      }
      const pair = pairId === null ? null : report.get(pairId);
      const local = pair ? report.get(pair.localCandidateId) : null;
      if (local && local.port) out[pc] = local.port;
    }
    return out;
}"""


async def local_ports_by_pc(page: Any) -> dict[str, int]:
    """{"pub": port, "sub": port}: the local UDP port of each of a sealroom page's
    PeerConnections' selected candidate pair (RTCTransportStats.selectedCandidatePairId,
    else the nominated succeeded pair; W3C webrtc-stats §7.x). A PC without a selected
    pair yet is absent."""
    got: dict[str, int] = await page.evaluate(PORTS_JS)
    return {k: int(v) for k, v in got.items()}


async def local_ports(page: Any) -> set[int]:
    """The local UDP ports of both of a page's PeerConnections (see local_ports_by_pc)."""
    return set((await local_ports_by_pc(page)).values())
