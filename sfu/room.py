"""A room: who is in it, the active speaker (RFC 6464 levels), last-N video selection."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .track import PublishedTrack

if TYPE_CHECKING:
    from .participant import Participant
    from .sfu import Sfu

logger = logging.getLogger(__name__)


class Room:
    def __init__(self, sfu: Sfu, name: str) -> None:
        self.sfu = sfu
        self.name = name
        self.participants: dict[str, Participant] = {}
        self.speaker: str | None = None
        self.order: list[str] = []  # most recent speaker first, then join order
        self._task = asyncio.ensure_future(self._speaker_loop())

    def add(self, p: Participant) -> None:
        self.participants[p.pid] = p
        self.order.append(p.pid)

    def remove(self, p: Participant) -> None:
        self.participants.pop(p.pid, None)
        if p.pid in self.order:
            self.order.remove(p.pid)
        if self.speaker == p.pid:
            self.speaker = None

    def tracks_for(self, p: Participant) -> list[PublishedTrack]:
        """Every track published by the others, in join order."""
        return [t for pid in self.participants if pid != p.pid
                for t in self.participants[pid].tracks.values()]

    async def tracks_changed(self, exclude: Participant | None = None) -> None:
        """Someone published or left: re-offer to everybody else."""
        await asyncio.gather(*(p.renegotiate() for p in list(self.participants.values())
                               if p is not exclude and not p.closed),
                             return_exceptions=True)

    def priority(self, pid: str) -> int:
        """A publisher's place in the order subscribers' budgets are filled: the active
        speaker first, then the others by last-spoken order (sfu/allocator.py)."""
        try:
            return self.order.index(pid)
        except ValueError:
            return len(self.order)

    def apply_last_n(self) -> None:
        """Each subscriber gets video from the N most recent speakers only (0 = all)."""
        n = self.sfu.config.last_n
        for sub in self.participants.values():
            others = [pid for pid in self.order if pid != sub.pid]
            allowed = set(others[:n]) if n > 0 else set(others)
            for slot in sub.slots:
                # last-N never pauses a screen share (docs/SFU.md "Screen sharing")
                if (slot.kind == "video" and slot.track is not None
                        and slot.allow(lastn=slot.track.owner.pid in allowed
                                       or slot.track.owner.is_screen(slot.track))):
                    self.sfu.counters.add("last_n_switches")
            sub.streams_changed()

    async def _speaker_loop(self) -> None:
        cfg = self.sfu.config
        while True:
            await asyncio.sleep(cfg.speaker_interval)
            now = time.monotonic()
            best: tuple[int, str] | None = None
            for pid, p in self.participants.items():
                for t in p.tracks.values():
                    if t.kind == "audio":
                        level = t.mean_level(now, cfg.speaker_window)
                        if level < cfg.speaker_threshold and (best is None or level < best[0]):
                            best = (level, pid)
            if best is None or best[1] == self.speaker:
                continue
            level, pid = best
            self.speaker = pid
            self.order.remove(pid)
            self.order.insert(0, pid)
            self.sfu.counters.add("speaker_changes")
            logger.info("room %s: active speaker %s", self.name, pid)
            self.apply_last_n()
            msg = {"type": "speaker", "participant": pid, "level": level}
            for p in list(self.participants.values()):
                await p.send(msg)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
