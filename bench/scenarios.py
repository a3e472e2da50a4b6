"""Benchmark scenarios: who publishes what at which rate, and who should receive it.

Every scenario is parameterised by ``participants`` (the room size N) so all systems and
all scenarios share one x-axis:

* ``meeting``: N × N, every participant sends 500 kbit/s VP8 at 30 fps + Opus at
  50 packets/s and receives everybody else;
* ``broadcast``: 1 → N−1, one participant sends 1.5 Mbit/s VP8 + Opus, N−1 viewers;
* ``audio``: 10 → N, min(10, N) participants send Opus only, everyone hears everyone;
* ``lastn``: ``meeting`` with the SFU's last-N on (``last_n`` video sources per
  subscriber); only an SFU that implements last-N can run it. Member 0 speaks, everyone
  else sends digital silence, which the SFU does not forward.
* ``joinstorm``: ``lastn``'s room, but the N participants join and publish spread over a
  few seconds (``--join-within``) and each sends media as soon as it is connected, as a
  room of browsers opening one link at once would (bench/sealroom_client.py); the
  storm's figures (time until all are connected, join → first forwarded packet, failures,
  sub offers per participant) come before the usual windows. sealroom only.
* ``simulcast``: ``meeting`` with every participant's video sent as three simulcast
  layers (:data:`LAYERS`: ``q`` 320×180 at 150 kbit/s, ``h`` 640×360 at 500 kbit/s (the
  meeting's video), ``f`` 1280×720 at 1 Mbit/s, all 30 fps, L1T3: 30, 60 and 120 packets/s)
  + Opus. Every subscriber shows one publisher large, one medium and the rest as
  thumbnails (:meth:`Scenario.layer_for`): the member after it in the room (in index
  order, round) in the top layer, the next one in the middle layer, everyone else in the
  lowest, so every layer of every publisher has a receiver. Systems are told so per
  subscriber (sealroom: ``sfu-video-constraints`` with the layer's height; Janus:
  ``configure`` with ``substream``), and the receivers count what they got per layer.

Audio levels (RFC 6464 §3, the ``ssrc-audio-level`` extension every audio packet carries):
in ``meeting``, ``broadcast`` and ``audio`` everyone speaks at one level (:data:`SPEAKING`,
below the SFU's ``speaker_threshold``), so everyone hears everyone; in ``lastn`` member 0
speaks (:data:`LOUD`) and the others are silent (:data:`SILENCE`, level 127).

Rooms: ``rooms`` independent copies of the scenario, each its own room
(:meth:`Scenario.room_name`); participant indices continue across rooms (room ``k`` holds
``k·N … k·N + N − 1``), and a stream is only received inside its room.

Stream ids: participant ``i`` sends audio as ``S·i`` and video as ``S·i + 1`` (simulcast:
layer ``k`` as ``S·i + 1 + k``), where ``S`` (:attr:`Scenario.stride`) is 2, or 4 in
``simulcast``; the packets a generator withholds under ``--uplink-loss`` carry
``sid + S · total`` in their probes (:attr:`Scenario.withheld_base`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.config import SfuConfig

from .media import StreamSpec

NAMES = ("meeting", "broadcast", "audio", "lastn", "joinstorm", "simulcast")
LAST_N = ("lastn", "joinstorm")  # the scenarios that turn the SFU's last-N on
AUDIO_PPS = 50.0
# simulcast: (rid, width, height, bit/s) of each layer, lowest first (the order of the
# offer's a=simulcast list, docs/SFU.md "Simulcast"), all at VIDEO_FPS. 1 Mbit/s for 720p
# is below Chromium's target (2.5) and above its minimum (0.6): the top layer is twice the
# meeting's packets, the middle one the meeting's video, the lowest half of it.
LAYERS = (("q", 320, 180, 150_000), ("h", 640, 360, 500_000), ("f", 1280, 720, 1_000_000))
VIDEO_FPS = 30.0
# RFC 6464 §3 levels in -dBov (0 loudest … 127 digital silence)
SILENCE = 127  # the SFU drops these audio packets instead of forwarding them
SPEAKING = 40  # meeting/broadcast/audio: everyone, at one level (ties: first joined wins)
LOUD = 30  # lastn: the one speaker
# a mean level below this makes a participant the active speaker (sfu/room.py)
SPEAKER_THRESHOLD = SfuConfig().speaker_threshold


def level_byte(level: int) -> bytes:
    """The one-byte RFC 6464 §3 element: V (voice activity) flag, then the level."""
    if not 0 <= level <= SILENCE:
        raise ValueError(f"audio level {level} is not 0..127")
    return bytes([level if level == SILENCE else 0x80 | level])


@dataclass
class Member:
    """One virtual participant."""

    index: int
    audio: StreamSpec | None = None
    video: StreamSpec | None = None
    level: int = SILENCE  # RFC 6464 level of every audio packet it sends
    room: int = 0
    layers: list[StreamSpec] = field(default_factory=list)  # simulcast video, lowest first
    stride: int = 2  # stream ids per member (Scenario.stride)

    @property
    def silent(self) -> bool:
        return self.level >= SILENCE

    @property
    def publishes(self) -> bool:
        return self.audio is not None or self.video is not None or bool(self.layers)

    def streams(self) -> list[tuple[int, StreamSpec]]:
        out: list[tuple[int, StreamSpec]] = []
        base = self.stride * self.index
        if self.audio is not None:
            out.append((base, self.audio))
        if self.video is not None:
            out.append((base + 1, self.video))
        out += [(base + 1 + k, spec) for k, spec in enumerate(self.layers)]
        return out


@dataclass
class Scenario:
    name: str
    participants: int  # per room (the x-axis N)
    members: list[Member] = field(default_factory=list)
    last_n: int = 0
    rooms: int = 1
    stride: int = 2  # stream ids per member: audio, video (simulcast: audio + 3 layers)
    _receivers: dict[int, list[int]] = field(default_factory=dict, repr=False)
    _sources: dict[int, set[int]] = field(default_factory=dict, repr=False)
    _pairs: set[int] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "participants": self.participants, "last_n": self.last_n,
                "rooms": self.rooms}

    @property
    def total(self) -> int:
        """Participants over all rooms."""
        return self.participants * self.rooms

    @property
    def withheld_base(self) -> int:
        """The probe stream-id offset of packets the generator withholds (uplink loss).

        Stream ids are below ``2 · total``. With ``--uplink-loss`` the probe of a withheld
        packet of stream ``sid`` says ``sid + withheld_base``: the receivers count probes
        per (receiver, probe stream id) (bench/_receive.c), so a copy that arrives anyway,
        retransmitted on the SFU's NACK, is told from the packets sent the first time
        although the SFU rewrote its SSRC and sequence number.
        """
        return self.stride * self.total

    def member_of(self, sid: int) -> Member:
        """The member that sends stream ``sid``."""
        return self.members[sid // self.stride]

    def is_video(self, sid: int) -> bool:
        return sid % self.stride != 0

    def layer(self, sid: int) -> StreamSpec | None:
        """The simulcast layer stream ``sid`` is, or None if it is no layer."""
        layers = self.member_of(sid).layers
        k = sid % self.stride - 1
        return layers[k] if 0 <= k < len(layers) else None

    def layer_for(self, receiver: int, publisher: int) -> int:
        """simulcast: the layer index ``receiver`` asks of ``publisher`` (0 = lowest).

        The mix of a speaker view: the next member in the room (room index + 1, round) is
        shown large (top layer), the one after it medium (the layer below), every other
        one as a thumbnail (lowest layer). So each publisher has one large viewer, one
        medium viewer and N − 3 thumbnail viewers.
        """
        layers = len(self.members[publisher].layers)
        n = self.participants
        step = (publisher % n - receiver % n) % n  # 1 … N − 1 within a room
        return max(0, layers - step) if layers else 0

    def withheld_sid(self, probe_sid: int) -> int | None:
        """The stream a probe stream id is a withheld packet of, or None if it is not."""
        base = self.withheld_base
        return probe_sid - base if base <= probe_sid < 2 * base else None

    def room_name(self, index: int) -> str:
        """The SFU room participant ``index`` joins."""
        return f"bench-{self.members[index].room}"

    def room_members(self, room: int) -> list[Member]:
        """The members of one room, in join order (= index order)."""
        return self.members[room * self.participants : (room + 1) * self.participants]

    def speaker(self, room: int) -> int | None:
        """The room's active speaker once levels have settled, as sfu/room.py picks it:
        the lowest level below the threshold, the first joined on a tie; None if all are
        silent."""
        best: Member | None = None
        for m in self.room_members(room):
            if m.audio is not None and m.level < SPEAKER_THRESHOLD and (
                    best is None or m.level < best.level):
                best = m
        return None if best is None else best.index

    def speaker_order(self, room: int) -> list[int]:
        """sfu/room.py ``Room.order``: the active speaker first, then the join order."""
        order = [m.index for m in self.room_members(room)]
        top = self.speaker(room)
        if top is not None:
            order.remove(top)
            order.insert(0, top)
        return order

    def receivers(self, sid: int) -> list[int]:
        """Participants that should get stream ``sid`` (room join order = index order).

        Only members of the sender's room, never the sender. Audio: nobody, if the sender
        is silent (RFC 6464 level 127: the SFU drops digital silence). last-N video:
        subscriber ``i`` gets video from the first ``last_n`` participants other than
        itself in the room's speaker order (docs/SFU.md "Active speaker and last-N"):
        the active speaker, then the join order. In ``lastn`` the speaker is member 0
        of the room, first in join order anyway, so this is the join order; in
        ``meeting`` everyone speaks at the same level, the first joined wins the tie, and
        last-N is off.
        """
        cached = self._receivers.get(sid)
        if cached is None:
            cached = self._receivers[sid] = self._compute_receivers(sid)
        return cached

    def _compute_receivers(self, sid: int) -> list[int]:
        src = self.member_of(sid)
        others = [m.index for m in self.room_members(src.room) if m.index != src.index]
        if not self.is_video(sid):
            return [] if src.silent else others
        if src.layers:  # simulcast: each subscriber gets the one layer it asked for
            k = sid % self.stride - 1
            return [i for i in others if self.layer_for(i, src.index) == k]
        if self.last_n <= 0:
            return others
        with_video = {m.index for m in self.room_members(src.room) if m.video is not None}
        order = [i for i in self.speaker_order(src.room) if i in with_video]
        out = []
        for i in others:
            if src.index in [j for j in order if j != i][: self.last_n]:
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

    def expected_pairs(self) -> set[int]:
        """``(receiver << 16) | stream id`` of every (receiver, stream) that should flow."""
        if self._pairs is None:
            self._pairs = {(r << 16) | sid for m in self.members for sid, _ in m.streams()
                           for r in self.receivers(sid)}
        return self._pairs

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


def build(name: str, participants: int, last_n: int = 4, rooms: int = 1) -> Scenario:
    """``rooms`` copies of scenario ``name`` with ``participants`` each."""
    if name not in NAMES:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(NAMES)}")
    if participants < 2:
        raise ValueError("a scenario needs at least 2 participants")
    if rooms < 1:
        raise ValueError("at least one room")
    s = Scenario(name, participants, rooms=rooms, stride=4 if name == "simulcast" else 2)
    for k in range(rooms):
        for j in range(participants):
            s.members.append(_member(name, k * participants + j, j, k))
            s.members[-1].stride = s.stride
    if name in LAST_N:
        s.last_n = last_n
    return s


def _member(name: str, index: int, i: int, room: int) -> Member:
    """Member ``i`` of its room."""
    m = Member(index, room=room)
    if name in LAST_N:  # one speaker; the SFU drops everyone else's silence
        m.level = LOUD if i == 0 else SILENCE
    else:
        m.level = SPEAKING
    if name in ("meeting", *LAST_N):
        m.audio = StreamSpec("audio", 32_000, AUDIO_PPS)
        m.video = StreamSpec("video", 500_000, VIDEO_FPS)
    elif name == "simulcast":
        m.audio = StreamSpec("audio", 32_000, AUDIO_PPS)
        m.layers = [StreamSpec("video", bps, VIDEO_FPS, rid, w, h) for rid, w, h, bps in LAYERS]
    elif name == "broadcast" and i == 0:
        m.audio = StreamSpec("audio", 32_000, AUDIO_PPS)
        m.video = StreamSpec("video", 1_500_000, 30.0)
    elif name == "audio" and i < 10:
        m.audio = StreamSpec("audio", 32_000, AUDIO_PPS)
    return m
