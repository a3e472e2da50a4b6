"""Dynacast: a publisher stops encoding the simulcast layers nobody needs.

A simulcast publisher encodes every layer whether or not anyone is forwarded it: with every
tile of a camera shown small, the top layer (most of the publisher's CPU and uplink) goes
nowhere. LiveKit calls switching those encodings off "dynacast"; mediasoup leaves it to
the application. Here the SFU decides per simulcast track which layers some subscriber
may want, and tells the publishing page with ``sfu-layers`` (docs/SFU.md "Dynacast"); the
page sets those encodings' ``active`` (W3C webrtc-pc §5.2 ``RTCRtpEncodingParameters``).

A layer is **needed** when some subscriber's slot of the track

- forwards from it now, or waits to switch to it (``Slot.source``, ``Slot.target``), or
- would take it by its tile size: the highest layer whose height (from its last key frame)
  is within the slot's ``max_height`` (``sfu-video-constraints``), the top layer when the
  slot has no limit. A layer whose height is not known yet is needed (it may fit).

Slots that last-N keeps from the video need nothing. The lowest layer is always needed:
a new subscriber starts on it, a subscriber whose budget fits nothing more falls back to
it, and the allocator's rule that the lowest layer sent lately is always selectable needs
it sending. **Every layer below a needed one is needed too**, as LiveKit's dynacast keeps
every layer up to the highest quality any subscriber asks for: a viewer whose budget
cannot take the layer its tile wants then steps to the next one down, not all the way to
the lowest (measured here before: with the middle layer off, a viewer held on the
135-line layer could only go to the 540-line one, ~15 × its rate, and stayed down).
The downlink budget does not count: a layer one subscriber cannot afford may fit
another's, and the allocator upgrades within the layers that are sending.

Needed layers are resumed at once; a layer is paused only once it has been unneeded for
``pause_delay`` seconds (a tile resized for a moment, or a subscriber passing through a
switch, does not stop and restart an encoding: Chromium answers every restart with a key
frame on all layers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol


class LayerInfo(Protocol):
    """What dynacast reads of a layer (a ``sfu.track.PublishedTrack``)."""

    index: int
    height: int


class SlotInfo(Protocol):
    """What dynacast reads of a subscriber's slot (a ``sfu.track.Slot``)."""

    lastn_ok: bool
    max_height: int | None

    @property
    def source(self) -> LayerInfo | None: ...

    @property
    def target(self) -> LayerInfo | None: ...


def wanted(layers: Sequence[LayerInfo], max_height: int | None) -> int:
    """The index of the layer a tile ``max_height`` pixels high takes: the highest whose
    known height fits, or whose height is not known yet; 0 if none does."""
    if max_height is None:
        return len(layers) - 1
    return max((x.index for x in layers if x.height == 0 or x.height <= max_height),
               default=0)


def needed(layers: Sequence[LayerInfo], slots: Iterable[SlotInfo]) -> list[bool]:
    """Which of a simulcast track's ``layers`` (lowest first) some of ``slots`` needs."""
    need = [False] * len(layers)
    if need:
        need[0] = True
    for slot in slots:
        for layer in (slot.source, slot.target):
            if layer is not None and 0 <= layer.index < len(need):
                need[layer.index] = True
        if slot.lastn_ok:
            need[wanted(layers, slot.max_height)] = True
    top = max((i for i, n in enumerate(need) if n), default=-1)
    return [i <= top for i in range(len(need))]


class Dynacast:
    """One simulcast track's encodings as the publisher was last told (all active at
    first: a page publishes every layer until told otherwise)."""

    def __init__(self, rids: Sequence[str], pause_delay: float) -> None:
        self.rids = list(rids)
        self.pause_delay = pause_delay
        self.active = [True] * len(self.rids)
        self._unneeded_since: list[float | None] = [None] * len(self.rids)

    def update(self, need: Sequence[bool], now: float) -> dict[str, bool] | None:
        """The layers the publisher should now send, by RID, when that changed (else
        None): needed layers at once, unneeded ones after ``pause_delay``."""
        active = list(self.active)
        for i, (is_needed, since) in enumerate(zip(need, self._unneeded_since, strict=True)):
            if is_needed:
                self._unneeded_since[i] = None
                active[i] = True
            elif since is None:
                self._unneeded_since[i] = now
            elif now - since >= self.pause_delay:
                active[i] = False
        if active == self.active:
            return None
        self.active = active
        return dict(zip(self.rids, active, strict=True))
