"""sfu.nackgen: which of a publisher's packets to ask for again, and when."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sfu.nackgen import MIN_RETRY, NackGenerator


def test_in_order_packets_ask_for_nothing_even_across_the_wrap() -> None:
    g = NackGenerator()
    for i, seq in enumerate([65533, 65534, 65535, 0, 1]):
        assert g.received(seq, i * 0.01) == ("in-order", [])
    assert g.pending == 0 and g.next_due(1.0) is None


def test_a_hole_is_asked_for_at_once_and_filled_by_a_late_original_or_a_repair() -> None:
    g = NackGenerator()
    g.received(65534, 0.0)
    assert g.received(2, 0.01) == ("gap", [65535, 0, 1])
    assert g.received(0, 0.02) == ("filled", [])  # reordered, not lost
    assert g.received(0, 0.03) == ("old", [])  # a duplicate
    assert g.repaired(65535, 0.05) and not g.repaired(65535, 0.06)
    assert g.is_missing(1) and not g.is_missing(0)
    # the round trip of the repair (40 ms after its NACK) moved the RTT estimate down
    assert 0.04 < g.rtt < 0.1


def test_holes_are_asked_for_again_then_given_up() -> None:
    g = NackGenerator(max_age=1.0, max_tries=3)
    g.received(10, 0.0)
    g.received(12, 0.0)  # 11 is missing, asked once
    retry = max(MIN_RETRY, 1.5 * g.rtt)
    assert g.due(retry / 2) == ([], 0)  # too soon
    assert g.due(retry) == ([11], 0)
    assert g.due(2 * retry) == ([11], 0)
    assert g.due(3 * retry) == ([], 1)  # three NACKs sent: given up
    assert g.pending == 0 and g.received(11, 0.5) == ("old", [])


def test_an_old_hole_is_given_up_by_age() -> None:
    g = NackGenerator(max_age=0.2, max_tries=100)
    g.received(1, 0.0)
    g.received(3, 0.0)
    wait = g.next_due(0.0)
    assert wait is not None and wait <= 0.2
    assert g.due(0.25)[1] == 1


def test_a_jump_too_large_is_a_restart_not_a_hole() -> None:
    g = NackGenerator(max_gap=100)
    g.received(1, 0.0)
    g.received(3, 0.0)
    assert g.received(500, 0.0) == ("reset", [])
    assert g.pending == 0  # nothing from before the jump is asked for any more


@given(st.lists(st.integers(0, 0xFFFF), max_size=400), st.integers(1, 300))
def test_the_hole_table_stays_bounded(seqs: list[int], bound: int) -> None:
    """Whatever the sequence numbers (a hostile publisher: bench.fuzz), at most
    ``max_missing`` holes are kept, and each NACK asks only for kept ones."""
    g = NackGenerator(max_missing=bound)
    now = 0.0
    for seq in seqs:
        now += 0.001
        what, holes = g.received(seq, now)
        assert g.pending <= bound and len(holes) <= bound
        assert what in ("in-order", "gap", "filled", "old", "reset")
        again, _ = g.due(now + 0.05)
        assert all(g.is_missing(s) for s in again)
