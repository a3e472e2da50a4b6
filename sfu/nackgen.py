"""Upstream loss recovery: which of a publisher's packets to ask for again, and when.

Every packet a publisher loses on its uplink is lost for every subscriber unless the
SFU asks for it: a subscriber's NACK can only be answered from what the SFU received.
So the SFU watches each published video stream's sequence numbers and sends the
publisher generic NACKs (RFC 4585 §6.2.1) for the holes; the publisher answers with RTX
(RFC 4588), which ``PublishedTrack.on_rtx`` turns back into the original packet and
forwards to everybody in their own rewritten sequence.

The policy (mediasoup's ``NackGenerator`` and libwebrtc's ``NackRequester`` are shaped
the same way):

* a hole is asked for at once when the packet after it arrives, then again every
  ``retry`` (1.5 × the measured NACK→RTX round trip, at least ``MIN_RETRY``), at most
  ``max_tries`` times;
* a hole older than ``max_age`` seconds, or asked for ``max_tries`` times, is given up:
  the delta frames after it cannot be decoded, so the caller asks for a key frame (one
  throttled PLI for all holes given up together);
* a jump of more than ``max_gap`` packets is not a hole but a restart of the stream
  (or garbage): nothing is asked for, and a key frame is;
* at most ``max_missing`` holes are kept (libwebrtc's ``kMaxNackPackets`` is 1000): a gap
  that would exceed it is handled as a jump. Without the bound, a publisher whose
  sequence numbers leap ahead by up to ``max_gap`` on every packet (a broken or hostile
  client: found by ``bench.fuzz``) filled the table with up to 65 536 holes that every
  NACK timer tick scanned and packed into one NACK.

Pure bookkeeping, no I/O: ``PublishedTrack`` calls it from its receive path and from a
timer, and sends what it returns.
"""

from __future__ import annotations

MIN_RETRY = 0.02  # seconds between two NACKs for one hole, whatever the RTT says
INITIAL_RTT = 0.1  # seconds, until a repair has been timed (libwebrtc's default RTT)


class NackGenerator:
    """The holes of one stream, by sequence number."""

    __slots__ = ("_last", "_missing", "max_age", "max_gap", "max_missing", "max_tries", "rtt")

    def __init__(self, max_age: float = 1.0, max_tries: int = 6, max_gap: int = 256,
                 max_missing: int = 1000) -> None:
        self.max_age = max_age
        self.max_tries = max_tries
        self.max_gap = max_gap
        self.max_missing = max_missing
        self.rtt = INITIAL_RTT
        self._last: int | None = None  # newest sequence number received
        # seq -> [first seen missing, NACKs sent, last NACK time]
        self._missing: dict[int, list[float]] = {}

    @property
    def pending(self) -> int:
        return len(self._missing)

    def received(self, seq: int, now: float) -> tuple[str, list[int]]:
        """Account for one packet. Returns what it was and the holes to ask for now.

        ``("in-order", [])``, ``("gap", [new holes])``, ``("filled", [])`` for a packet
        that closes a hole, ``("old", [])`` for a duplicate or one given up on,
        ``("reset", [])`` for a jump too large to repair.
        """
        last = self._last
        if last is None:
            self._last = seq
            return "in-order", []
        ahead = (seq - last) & 0xFFFF
        if ahead == 1:  # the common case, first: one subtraction and one compare
            self._last = seq
            return "in-order", []
        if ahead != 0 and ahead < 0x8000:  # newer, with a hole before it
            self._last = seq
            if ahead > self.max_gap or len(self._missing) + ahead - 1 > self.max_missing:
                self._missing.clear()
                return "reset", []
            holes = [(last + i) & 0xFFFF for i in range(1, ahead)]
            for s in holes:
                self._missing[s] = [now, 1.0, now]
            return "gap", holes
        if self._missing.pop(seq, None) is not None:
            return "filled", []
        return "old", []

    def repaired(self, seq: int, now: float) -> bool:
        """A retransmission of ``seq`` arrived; True if it filled a hole (then the round
        trip from its last NACK updates the RTT estimate, as an RFC 6298 §2 SRTT would)."""
        entry = self._missing.pop(seq, None)
        if entry is None:
            return False
        sample = now - entry[2]
        self.rtt = 0.875 * self.rtt + 0.125 * min(max(sample, 0.0), self.max_age)
        return True

    def due(self, now: float) -> tuple[list[int], int]:
        """Holes to ask for again now, and how many were given up on (removed)."""
        retry = max(MIN_RETRY, 1.5 * self.rtt)
        again: list[int] = []
        given_up = [s for s, (first, tries, _) in self._missing.items()
                    if tries >= self.max_tries or now - first > self.max_age]
        for s in given_up:
            del self._missing[s]
        for s, entry in self._missing.items():
            if now - entry[2] >= retry:
                entry[1] += 1
                entry[2] = now
                again.append(s)
        return again, len(given_up)

    def next_due(self, now: float) -> float | None:
        """Seconds until ``due`` has something to do (None: no hole is pending)."""
        if not self._missing:
            return None
        retry = max(MIN_RETRY, 1.5 * self.rtt)
        soonest = min(min(e[2] + retry, e[0] + self.max_age) for e in self._missing.values())
        return max(0.0, soonest - now)

    def is_missing(self, seq: int) -> bool:
        return seq in self._missing
