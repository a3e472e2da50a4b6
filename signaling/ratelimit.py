"""Rate limits: token buckets per socket and per address, and the password-guessing limits.

Every limit on an address uses :func:`address_key`, so an IPv6 client counts as its /64
(the smallest prefix a site is given, RFC 6177 §3): one host can draw addresses from its
/64 at will, and must not get a fresh budget with each.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque


def address_key(ip: str) -> str:
    """The key an address is limited under: IPv4 as is, IPv6 as its /64, else the text."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class TokenBucket:
    """Classic token bucket: ``rate`` tokens/s, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic() if now is None else now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float | None = None) -> bool:
        self.refill(time.monotonic() if now is None else now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class AddressBuckets:
    """One :class:`TokenBucket` per address, shared by all of that address's sockets.

    A socket's own bucket starts full, so closing and reopening sockets would otherwise
    renew the budget each time; this one survives reconnects. Memory is bounded: a bucket
    that has refilled is the same as no bucket and is forgotten, and at ``max_keys``
    addresses the least recently used one is dropped (it only regains its burst).
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 65_536) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.pop(key, None)  # re-inserted last: the dict is LRU-ordered
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = TokenBucket(self.rate, self.burst, now)
        ok = bucket.take(now)
        self._buckets[key] = bucket
        return ok

    def penalize(self, key: str, seconds: float, now: float | None = None) -> None:
        """Put ``key`` ``seconds`` of refill into debt (after it was closed for its rate)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.refill(time.monotonic() if now is None else now)
            bucket.tokens = min(bucket.tokens, -seconds * bucket.rate)

    def exhausted(self, key: str, now: float | None = None) -> bool:
        """Whether ``key`` has not even one token now (nothing is taken)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return False
        now = time.monotonic() if now is None else now
        return bucket.tokens + (now - bucket.stamp) * bucket.rate < 1.0

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items()
                    if b.tokens + (now - b.stamp) * b.rate >= b.burst]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


class FailureWindow:
    """At most ``limit`` failures per key within ``window`` seconds.

    Keys whose window is empty are forgotten, so memory stays bounded by the keys failing
    right now; ``max_keys`` bounds it against a flood of distinct keys too (oldest dropped).
    """

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._fails.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._fails[key]
            return None
        return q

    def count(self, key: str, now: float | None = None) -> int:
        """Failures of ``key`` within the window (at most ``limit`` are remembered)."""
        q = self._recent(key, time.monotonic() if now is None else now)
        return 0 if q is None else len(q)

    def blocked(self, key: str, now: float | None = None) -> bool:
        return self.count(key, now) >= self.limit

    def fail(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        q = self._recent(key, now)
        if q is None:
            if len(self._fails) >= self.max_keys:
                self._fails.pop(next(iter(self._fails)))
            q = self._fails[key] = deque(maxlen=self.limit)
        q.append(now)

    def __len__(self) -> int:
        return len(self._fails)


class GuessLimits:
    """Online password guessing: strict per address; a room under attack stays open.

    * An address (:func:`address_key`) with ``limit_ip`` wrong passwords within ``window``
      is refused without a check, in every room.
    * A room with ``limit_room`` wrong passwords within ``window`` is **under attack**.
      It is not closed: that would let anyone with ``limit_room`` addresses lock its
      members out. Instead, while it is under attack, an address with *any* wrong
      password in the window is refused without a check there, and every other address
      is checked as usual. An attacker then gets one guess per address per window in
      that room (not ``limit_ip``), and a member with the right password from an address
      that has not guessed wrong gets in at once. docs/SECURITY.md weighs the choice.
    """

    def __init__(self, limit_ip: int, limit_room: int, window: float,
                 max_keys: int = 100_000) -> None:
        self.by_ip = FailureWindow(limit_ip, window, max_keys)
        self.by_room = FailureWindow(limit_room, window, max_keys)

    def under_attack(self, room: str, now: float | None = None) -> bool:
        return self.by_room.blocked(room, now)

    def refused(self, ip_key: str, room: str, now: float | None = None) -> bool:
        """Whether a join from ``ip_key`` to ``room`` is answered without checking it."""
        now = time.monotonic() if now is None else now
        failures = self.by_ip.count(ip_key, now)
        if failures >= self.by_ip.limit:
            return True
        return failures > 0 and self.under_attack(room, now)

    def failed(self, ip_key: str, room: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.by_ip.fail(ip_key, now)
        self.by_room.fail(room, now)
