"""Rooms: the only state the server keeps, and all of it is public by design.

A room record is ``{name, kdf params with the creator's salt, adm_pk}`` (docs/PROTOCOL.md,
"Connecting and joining") plus who is in it. No password, no derived key and no sealed
plaintext ever reaches this module: the admission check is an Ed25519 verification against
``adm_pk``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from signaling.errors import ErrorId, SignalingError

log = logging.getLogger(__name__)

MAX_SENDER_INDEX = 0xFFFF  # 16 bits in the E2EE key id (e2ee-worker/FORMAT.md §3)
# A resume credential used once still works this long (docs/PROTOCOL.md "Resuming").
REUSE_GRACE = 30.0


@dataclass
class Member:
    pid: str
    index: int
    joined_at: float
    ip: str


@dataclass
class Room:
    name: str
    kdf: dict[str, Any]
    adm_pk: bytes
    created_at: float
    creator_ip: str
    members: dict[str, Member] = field(default_factory=dict)
    next_index: int = 1
    open_until: float = 0.0
    opened_by: str | None = None
    expiry: asyncio.TimerHandle | None = None

    def lock_at(self, lock_after: float) -> float | None:
        """When the room stops admitting newcomers (None: never)."""
        return self.created_at + lock_after if lock_after > 0 else None

    def locked(self, lock_after: float, now: float) -> bool:
        at = self.lock_at(lock_after)
        return at is not None and now >= at and now >= self.open_until

    def lock_state(self, lock_after: float, now: float) -> dict[str, Any]:
        at = self.lock_at(lock_after)
        return {
            "locked": self.locked(lock_after, now),
            "lock_at": at,
            "open_until": self.open_until if self.open_until > now else None,
            "opened_by": self.opened_by if self.open_until > now else None,
        }

    def public(self) -> dict[str, Any]:
        """Everything the server stores about the room (what a server dump would show)."""
        return {
            "name": self.name,
            "kdf": dict(self.kdf),
            "adm_pk": self.adm_pk.hex(),
            "created_at": self.created_at,
            "members": [(m.pid, m.index) for m in self.members.values()],
            "next_index": self.next_index,
            "open_until": self.open_until,
        }


class RoomRegistry:
    """Creates, admits to, and expires rooms. Wall-clock times are ``time.time()``."""

    def __init__(
        self,
        *,
        max_members: int,
        max_rooms_per_ip: int,
        lock_after: float,
        empty_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rooms: dict[str, Room] = {}
        # Names locked when the previous process stopped (signaling/resume.py): name →
        # {"created_at", "lock_at", "until"}. Until `until`, only a resume credential
        # re-creates such a name; anyone else gets room-locked.
        self.locked_names: dict[str, dict[str, Any]] = {}
        # resume_pk (hex) → [from, until]: credentials of members who left (from now), or
        # used to resume already (from REUSE_GRACE later: a `joined` lost on the way may be
        # retried); refused from `from` until they would have expired anyway.
        self.revoked: dict[str, list[float]] = {}
        self.max_members = max_members
        self.max_rooms_per_ip = max_rooms_per_ip
        self.lock_after = lock_after
        self.empty_ttl = empty_ttl
        self.clock = clock
        # Called when an empty room's record expires (several nodes: its Redis keys go).
        self.on_expire: Callable[[Room], None] | None = None

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def name_locked(self, name: str) -> bool:
        """True while `name` was locked at the previous process's shutdown."""
        entry = self.locked_names.get(name)
        if entry is None:
            return False
        if entry["until"] <= self.clock():
            del self.locked_names[name]
            return False
        return True

    def restore(self, name: str, kdf: dict[str, Any], adm_pk: bytes, created_at: float,
                locked: bool, ip: str) -> Room:
        """Re-create a room from a member's resume credential, keeping its lock state: its
        creation time comes back, and a room locked then is locked now (unless locking is
        off on this server). Counts towards nobody's too-many-rooms."""
        now = self.clock()
        if locked and self.lock_after > 0 and created_at + self.lock_after > now:
            created_at = now - self.lock_after
        room = Room(name, kdf, adm_pk, created_at=min(created_at, now), creator_ip="")
        self.rooms[name] = room
        self.locked_names.pop(name, None)
        log.info("room restored from a resume credential room=%s locked=%s", name,
                 room.locked(self.lock_after, now))
        return room

    def adopt(self, name: str, kdf: dict[str, Any], adm_pk: bytes, created_at: float,
              open_until: float, opened_by: str | None) -> Room:
        """A room from its record in Redis (several nodes): created on another node, or
        here before this node let it go. Its lock state comes with it; it counts towards
        nobody's too-many-rooms."""
        room = Room(name, kdf, adm_pk, created_at=created_at, creator_ip="",
                    open_until=open_until, opened_by=opened_by)
        self.rooms[name] = room
        # Empty until someone is admitted (admit() cancels this): a join that fails does
        # not leave the room here for ever.
        room.expiry = asyncio.get_running_loop().call_later(self.empty_ttl, self._expire, room)
        log.info("room taken from its record room=%s", name)
        return room

    def revoke(self, resume_pk: bytes, until: float, after: float = 0.0) -> None:
        """Refuse credentials of ``resume_pk`` from ``after`` s from now until ``until``."""
        start = self.clock() + after
        old = self.revoked.get(resume_pk.hex())
        if old is not None:
            start, until = min(start, old[0]), max(until, old[1])
        self.revoked[resume_pk.hex()] = [start, until]

    def is_revoked(self, resume_pk: bytes) -> bool:
        entry = self.revoked.get(resume_pk.hex())
        now = self.clock()
        if entry is None:
            return False
        if entry[1] <= now:
            del self.revoked[resume_pk.hex()]
            return False
        return now >= entry[0]

    def locked_snapshot(self) -> dict[str, dict[str, Any]]:
        """Rooms past their lock time now, and names still held from before: for the
        next process (no adm_pk, no KDF parameters: names and times only)."""
        now = self.clock()
        out = {n: e for n, e in self.locked_names.items() if e["until"] > now}
        for room in self.rooms.values():
            at = room.lock_at(self.lock_after)
            if at is not None and now >= at:
                out[room.name] = {"created_at": room.created_at, "lock_at": at,
                                  "until": now + self.empty_ttl}
        return out

    def create(self, name: str, kdf: dict[str, Any], adm_pk: bytes, ip: str) -> Room:
        if sum(1 for r in self.rooms.values() if r.creator_ip == ip) >= self.max_rooms_per_ip:
            raise SignalingError(ErrorId.TOO_MANY_ROOMS)
        room = Room(name, kdf, adm_pk, created_at=self.clock(), creator_ip=ip)
        self.rooms[name] = room
        log.info("room created room=%s", name)
        return room

    def check_admission(self, room: Room, resumed: bool = False) -> None:
        """Raise if a (correct-password) newcomer may not enter now; a member resuming
        with a valid credential passes the lock (docs/PROTOCOL.md, Resuming)."""
        if not resumed and room.locked(self.lock_after, self.clock()):
            raise SignalingError(ErrorId.ROOM_LOCKED)
        if len(room.members) >= self.max_members or room.next_index > MAX_SENDER_INDEX:
            raise SignalingError(ErrorId.ROOM_FULL)

    def admit(self, room: Room, pid: str, ip: str, resumed: bool = False,
              index_floor: int = 0) -> Member:
        # A restored room continues above the indices its members had (never reused).
        room.next_index = max(room.next_index, min(index_floor + 1, MAX_SENDER_INDEX + 1))
        self.check_admission(room, resumed)
        if room.expiry is not None:
            room.expiry.cancel()
            room.expiry = None
        # Sender indices are never reused within a room's life: an index names one
        # participant's media keys in every receiver (e2ee-worker/FORMAT.md §3).
        member = Member(pid, room.next_index, self.clock(), ip)
        room.next_index += 1
        room.members[pid] = member
        return member

    def remove(self, room: Room, pid: str) -> Member | None:
        member = room.members.pop(pid, None)
        if not room.members and room.expiry is None and self.rooms.get(room.name) is room:
            loop = asyncio.get_running_loop()
            room.expiry = loop.call_later(self.empty_ttl, self._expire, room)
        return member

    def allow_joining(self, room: Room, pid: str, seconds: float) -> None:
        room.open_until = max(room.open_until, self.clock() + seconds)
        room.opened_by = pid

    def _expire(self, room: Room) -> None:
        if not room.members and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            log.info("room expired room=%s", room.name)
            if self.on_expire is not None:
                self.on_expire(room)

    def close(self) -> None:
        for room in self.rooms.values():
            if room.expiry is not None:
                room.expiry.cancel()
        self.rooms.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        return [room.public() for room in self.rooms.values()]
