"""Counters of the media plane (exposed by ``Sfu.stats``)."""

from __future__ import annotations

from collections import Counter


class Stats:
    """Named integer counters; ``drop_<reason>`` for every dropped packet."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def drop(self, reason: str) -> None:
        self.counters["drop_" + reason] += 1
        self.counters["dropped"] += 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)
