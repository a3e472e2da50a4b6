"""Counters of the media plane (exposed by ``Sfu.stats``)."""

from __future__ import annotations

from collections import Counter


class Stats:
    """Named integer counters; ``drop_<reason>`` for every dropped packet.

    The three counters bumped for every packet are plain attributes: an attribute
    increment costs a fraction of a ``Counter`` update, and the forwarding loop does one
    per subscriber. ``snapshot`` folds them in under the same names.
    """

    __slots__ = ("counters", "forwarded_bytes", "forwarded_packets", "received_packets")

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.received_packets = 0
        self.forwarded_packets = 0
        self.forwarded_bytes = 0

    def add(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def drop(self, reason: str, n: int = 1) -> None:
        self.counters["drop_" + reason] += n
        self.counters["dropped"] += n

    def snapshot(self) -> dict[str, int]:
        out = dict(self.counters)
        for name in ("received_packets", "forwarded_packets", "forwarded_bytes"):
            value = getattr(self, name)
            if value:
                out[name] = out.get(name, 0) + value
        return out
