"""Rate limits: a token bucket per socket and sliding failure windows per key."""

from __future__ import annotations

import time
from collections import deque


class TokenBucket:
    """Classic token bucket: ``rate`` tokens/s, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class FailureWindow:
    """At most ``limit`` failures per key within ``window`` seconds.

    Used for wrong passwords per client address and per room. Keys whose window
    is empty are forgotten, so memory stays bounded by the keys failing right now;
    ``max_keys`` bounds it against a flood of distinct keys too (oldest dropped).
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

    def blocked(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        q = self._recent(key, now)
        return q is not None and len(q) >= self.limit

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
