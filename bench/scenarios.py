"""Benchmark scenarios: who publishes what at which rate, and who should receive it.

Every scenario is parameterised by ``participants`` (the room size N) so all systems and
all scenarios share one x-axis:

* ``meeting``: N × N, every participant sends 500 kbit/s VP8 at 30 fps + Opus at
  50 packets/s and receives everybody else;
* ``broadcast``: 1 → N−1, one participant sends 1.5 Mbit/s VP8 + Opus, N−1 viewers;
* ``audio``: 10 → N, min(10, N) participants send Opus only, everyone hears everyone;
* ``lastn``: ``meeting`` with the SFU's last-N on (``last_n`` video sources per
  subscriber); only an SFU that implements last-N can run it.

Stream ids: participant ``i`` sends audio as ``2i`` and video as ``2i + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .media import StreamSpec

NAMES = ("meeting", "broadcast", "audio", "lastn")
AUDIO_PPS = 50.0


@dataclass
class Member:
    """One virtual participant."""

    index: int
    audio: StreamSpec | None = None
    video: StreamSpec | None = None

    @property
    def publishes(self) -> bool:
        return self.audio is not None or self.video is not None

    def streams(self) -> list[tuple[int, StreamSpec]]:
        out: list[tuple[int, StreamSpec]] = []
        if self.audio is not None:
            out.append((2 * self.index, self.audio))
        if self.video is not None:
            out.append((2 * self.index + 1, self.video))
        return out


@dataclass
class Scenario:
    name: str
    participants: int
    members: list[Member] = field(default_factory=list)
    last_n: int = 0
    _receivers: dict[int, list[int]] = field(default_factory=dict, repr=False)
    _sources: dict[int, set[int]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "participants": self.participants, "last_n": self.last_n}

    def receivers(self, sid: int) -> list[int]:
        """Participants that should get stream ``sid`` (room join order = index order).

        last-N with nobody speaking (all audio is silence, RFC 6464 level 127): the
        speaker order is the join order, so subscriber ``i`` gets video from the first
        ``last_n`` participants other than itself (docs/SFU.md "Active speaker and last-N").
        """
        cached = self._receivers.get(sid)
        if cached is None:
            cached = self._receivers[sid] = self._compute_receivers(sid)
        return cached

    def _compute_receivers(self, sid: int) -> list[int]:
        src = sid // 2
        others = [m.index for m in self.members if m.index != src]
        if self.last_n <= 0 or sid % 2 == 0:
            return others
        out = []
        for i in others:
            order = [m.index for m in self.members if m.index != i and m.video is not None]
            if src in order[: self.last_n]:
                out.append(i)
        return out

    def expected_sources(self, index: int) -> set[int]:
        if not self._sources:
            for m in self.members:
                self._sources[m.index] = set()
            for m in self.members:
                for sid, _ in m.streams():
                    for r in self.receivers(sid):
                        self._sources[r].add(sid)
        return self._sources[index]

    def offered_packets_per_second(self) -> float:
        """Packets/s the SFU should forward if nothing is lost."""
        return sum(spec.packet_rate() * len(self.receivers(sid))
                   for m in self.members for sid, spec in m.streams())

    def upload_bps(self) -> float:
        """What one publishing participant uploads to an SFU (media payload only)."""
        best = 0.0
        for m in self.members:
            bps = sum(s.frame_bytes() * 8 * s.rate for _, s in m.streams())
            best = max(best, bps)
        return best


def build(name: str, participants: int, last_n: int = 4) -> Scenario:
    if name not in NAMES:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(NAMES)}")
    if participants < 2:
        raise ValueError("a scenario needs at least 2 participants")
    s = Scenario(name, participants)
    for i in range(participants):
        m = Member(i)
        if name in ("meeting", "lastn"):
            m.audio = StreamSpec("audio", 32_000, AUDIO_PPS)
            m.video = StreamSpec("video", 500_000, 30.0)
        elif name == "broadcast" and i == 0:
            m.audio = StreamSpec("audio", 32_000, AUDIO_PPS)
            m.video = StreamSpec("video", 1_500_000, 30.0)
        elif name == "audio" and i < 10:
            m.audio = StreamSpec("audio", 32_000, AUDIO_PPS)
        s.members.append(m)
    if name == "lastn":
        s.last_n = last_n
    return s
