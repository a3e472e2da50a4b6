"""signaling/ratelimit.py on a fake clock: buckets, failure windows, guessing limits."""

from __future__ import annotations

from signaling.ratelimit import (
    AddressBuckets,
    FailureWindow,
    GuessLimits,
    TokenBucket,
    address_key,
)


def test_address_key_groups_ipv6_by_64_and_keeps_ipv4() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:1:2:3")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4-mapped is IPv4
    assert address_key("not an address") == "not an address"


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    b = TokenBucket(rate=10, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.1) and not b.take(0.1)  # one token per 1/rate s
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_address_buckets_are_shared_by_every_socket_of_an_address() -> None:
    buckets = AddressBuckets(rate=100, burst=200)
    # "Reconnects": the same key through any number of sockets draws on one budget.
    granted = sum(buckets.take("203.0.113.5", now=0.0) for _ in range(1000))
    assert granted == 200
    granted = sum(buckets.take("203.0.113.5", now=1.0) for _ in range(1000))
    assert granted == 100  # one second of refill
    assert buckets.take("198.51.100.1", now=1.0)  # another address has its own


def test_address_buckets_forget_refilled_addresses_and_stay_bounded() -> None:
    buckets = AddressBuckets(rate=10, burst=20, max_keys=100)
    for i in range(10_000):
        buckets.take(f"10.0.{i // 256}.{i % 256}", now=i / 1000)
    assert len(buckets) <= 100
    # A busy address that keeps sending is the most recently used: it is not dropped
    # for newcomers, so its budget is not renewed by a flood of other addresses.
    busy = AddressBuckets(rate=1, burst=5, max_keys=10)
    for _ in range(5):
        assert busy.take("busy", now=0.0)
    for i in range(50):
        busy.take(f"other-{i}", now=0.0)
        assert not busy.take("busy", now=0.0)


def test_failure_window_counts_within_the_window_only() -> None:
    w = FailureWindow(limit=3, window=60)
    for t in (0.0, 1.0, 2.0):
        w.fail("k", now=t)
    assert w.blocked("k", now=59.0) and w.count("k", now=59.0) == 3
    assert not w.blocked("k", now=60.5) and w.count("k", now=60.5) == 2
    assert w.count("k", now=200.0) == 0 and len(w) == 0  # forgotten


def test_guess_limits_keep_the_door_open_to_addresses_that_did_not_guess() -> None:
    g = GuessLimits(limit_ip=5, limit_room=20, window=60)
    for i in range(20):
        assert not g.refused(f"203.0.113.{i}", "room", now=1.0)
        g.failed(f"203.0.113.{i}", "room", now=1.0)
    assert g.under_attack("room", now=1.0)
    # Guessers: one wrong guess each, and now refused unchecked in this room...
    assert all(g.refused(f"203.0.113.{i}", "room", now=2.0) for i in range(20))
    # ...but not elsewhere, until their own limit.
    assert not g.refused("203.0.113.1", "other-room", now=2.0)
    # Anyone else is checked (and so gets in with the right password).
    assert not g.refused("198.51.100.7", "room", now=2.0)
    # A window later the room is no longer under attack and the guessers are forgiven.
    assert not g.under_attack("room", now=62.0)
    assert not g.refused("203.0.113.1", "room", now=62.0)


def test_guess_limits_refuse_an_address_past_its_limit_in_every_room() -> None:
    g = GuessLimits(limit_ip=5, limit_room=1000, window=60)
    for _ in range(5):
        assert not g.refused("192.0.2.5", "a", now=0.0)
        g.failed("192.0.2.5", "a", now=0.0)
    assert g.refused("192.0.2.5", "a", now=1.0) and g.refused("192.0.2.5", "b", now=1.0)
    assert not g.refused("192.0.2.6", "a", now=1.0)


def test_a_penalized_address_is_exhausted_until_it_has_paid() -> None:
    buckets = AddressBuckets(rate=100, burst=200)
    while buckets.take("203.0.113.5", now=0.0):
        pass
    buckets.penalize("203.0.113.5", seconds=1.0, now=0.0)
    assert buckets.exhausted("203.0.113.5", now=0.5)
    assert buckets.exhausted("203.0.113.5", now=1.005)
    assert not buckets.exhausted("203.0.113.5", now=1.02)
    assert not buckets.exhausted("198.51.100.1", now=0.5)  # unknown: not exhausted
