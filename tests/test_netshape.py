"""bench/netshape.py does to UDP on loopback what it says, and leaves lo as it found it.

Plain UDP sockets on 127.0.0.1, no browser: the shaped links of the browser tests and
of bench/links.py are only as good as these checks. Loss is checked against a
binomial tolerance that cannot flake (seven standard deviations), the limit by what
arrives, not by wall time.
"""

from __future__ import annotations

import math
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from bench import netshape
from bench.netshape import NetshapeError, drop_uplink, limit_downlink

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # asm-generic/socket.h; Python's socket lacks them


@pytest.fixture(autouse=True)
def private_lo() -> Iterator[None]:
    """Only in a namespace of our own (./dev test runs pytest in one), and lo at its default
    before and after each test: a test that leaves a qdisc behind fails here."""
    if not netshape.in_private_net():
        pytest.skip("needs a private network namespace with only lo (./dev test gives one)")
    netshape.reset()
    yield
    assert netshape.is_default(), netshape.tc("-s", "qdisc", "show", "dev", "lo")


def udp(big_buffers: bool = True) -> socket.socket:
    """A UDP socket on an ephemeral port of 127.0.0.1 whose buffers hold every test burst
    (SO_*BUFFORCE: past net.core.*mem_max, we have CAP_NET_ADMIN here), so that only the
    shaper loses packets."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if big_buffers:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 32 << 20)
    s.bind(("127.0.0.1", 0))
    return s


def port(s: socket.socket) -> int:
    p: int = s.getsockname()[1]
    return p


def drain(rx: socket.socket, expect: int, quiet: float = 0.5) -> Counter[int]:
    """Datagrams received on `rx` by source port, until `expect` came or nothing came for
    `quiet` seconds (bounded by count)."""
    got: Counter[int] = Counter()
    rx.settimeout(quiet)
    for _ in range(expect):
        try:
            _, addr = rx.recvfrom(2048)
        except TimeoutError:
            break
        got[addr[1]] += 1
    return got


def test_drop_program_is_the_listing() -> None:
    """The assembled program: every jump lands inside it, the ports and the threshold are
    where the listing says, and tc's bytecode string has its length first."""
    prog = netshape.drop_program([5000, 6000], 0.25)
    for i, (code, jt, jf, k) in enumerate(prog):
        if code & 0x07 == netshape.BPF_JMP:
            targets = [i + 1 + k] if code == netshape.BPF_JMP | netshape.BPF_JA else \
                [i + 1 + jt, i + 1 + jf]
            assert all(t < len(prog) for t in targets), (i, prog[i])
    assert [k for c, _, _, k in prog if c == 0x15][1:] == [5000, 6000]
    assert (0x35, 1, 0, 2**30) in prog
    assert prog[-2:] == [(0x06, 0, 0, 2), (0x06, 0, 0, 0xFFFFFFFF)]
    text = netshape.bytecode(prog)
    assert text.startswith(f"{len(prog)},48 0 0 {0xFFF00009},")
    with pytest.raises(ValueError):
        netshape.drop_program([], 0.1)
    with pytest.raises(ValueError):
        netshape.drop_program([5000], 1.5)


def test_drop_uplink_drops_that_share_of_the_ports_packets_only() -> None:
    rx, lossy, clean = udp(), udp(), udp()
    n, share = 2000, 0.2
    with drop_uplink([port(lossy)], share) as shaping:
        for i in range(n):
            lossy.sendto(b"L%d" % i, ("127.0.0.1", port(rx)))
            clean.sendto(b"C%d" % i, ("127.0.0.1", port(rx)))
        got = drain(rx, 2 * n)
        stats = shaping.stats()
    lost = n - got[port(lossy)]
    sigma = math.sqrt(n * share * (1 - share))  # binomial: 17.9 packets
    assert abs(lost - n * share) < 7 * sigma, (lost, n * share, sigma)
    assert got[port(clean)] == n, got
    assert stats is not None and stats.drops == lost, (stats, lost)


def test_drop_uplink_extremes_and_several_ports() -> None:
    rx, a, b, c = udp(), udp(), udp(), udp()
    with drop_uplink([port(a), port(b)], 1.0), drop_uplink([port(c)], 0.0):
        for s in (a, b, c):
            for i in range(200):
                s.sendto(b"%d" % i, ("127.0.0.1", port(rx)))
        got = drain(rx, 600)
    assert got[port(a)] == 0 and got[port(b)] == 0 and got[port(c)] == 200, got


def test_limit_downlink_holds_the_ports_traffic_to_the_rate() -> None:
    """3 MB offered at once to a 1 Mbit/s limit: what fits the bucket and the queue arrives
    (in its time), the rest is dropped by the shaper; the same burst to another port all
    arrives."""
    limited, free, tx = udp(), udp(), udp()
    n, size = 2500, 1200
    payload = b"x" * size
    with limit_downlink([port(limited)], kbit=1000) as shaping:
        for _ in range(n):
            tx.sendto(payload, ("127.0.0.1", port(limited)))
            tx.sendto(payload, ("127.0.0.1", port(free)))
        assert drain(free, n)[port(tx)] == n
        # The queue empties at the rate: wait for tbf's backlog to reach 0 (bounded).
        for _ in range(100):
            stats = shaping.stats()
            assert stats is not None
            if stats.qlen == 0:
                break
            time.sleep(0.05)
        arrived = drain(limited, n, quiet=0.3)[port(tx)]
        stats = shaping.stats()
    assert stats is not None
    assert 0 < arrived < n // 4, (arrived, stats)
    assert stats.drops == n - arrived, (arrived, stats)
    assert stats.qlen == 0, stats


def test_nested_repeated_and_leftover_shapings_clean_up() -> None:
    a, b = udp(), udp()
    for _ in range(2):  # twice in one namespace
        with limit_downlink([port(a)], 500) as one, limit_downlink([port(b)], 800) as two:
            assert one.handle != two.handle
            with drop_uplink([port(a)], 0.5):
                assert len(netshape.egress_filters()) > 0
            assert netshape.egress_filters() == []  # clsact went with its last filter
        assert netshape.is_default()
    # What a killed run leaves (our htb root, our clsact) is reused and then removed.
    netshape.tc("qdisc", "add", "dev", "lo", "root", "handle", "5e1:", "htb", "default", "0")
    netshape.tc("qdisc", "add", "dev", "lo", "clsact")
    with limit_downlink([port(a)], 500), drop_uplink([port(b)], 0.1):
        pass
    assert netshape.is_default()


def test_cleanup_on_exception_and_clear_refusals() -> None:
    a = udp()
    with pytest.raises(KeyError), limit_downlink([port(a)], 500), drop_uplink([port(a)], 0.5):
        raise KeyError("the block failed")
    assert netshape.is_default()
    with pytest.raises(NetshapeError, match=r"tc refused `qdisc add dev nosuch0"):
        netshape.tc("qdisc", "add", "dev", "nosuch0", "clsact")
    # A root qdisc this module did not make is left alone, with a clear error.
    netshape.tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb")
    try:
        with pytest.raises(NetshapeError, match="not made here"), limit_downlink([port(a)], 500):
            pass
    finally:
        netshape.tc("qdisc", "del", "dev", "lo", "root")
