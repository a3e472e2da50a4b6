"""Resume credentials and the server's own state directory (docs/PROTOCOL.md, "Resuming").

A member of a room gets, in ``joined``, a credential the server MACs with a key of its own
(``resume.key`` in the state directory, 32 random bytes made 0600 on first start). After a
restart the room record is gone; the credential carries what the record held (room, KDF
parameters, ``adm_pk``, creation time and lock state) plus the member's sender index, its
per-membership public key ``resume_pk`` and an expiry, so the first member back re-creates
the room **as it was** (locked stays locked) and newcomers stay out.

At SIGTERM the server also writes the **names** of rooms that were locked, with their lock
data (``locked-rooms.json``: no ``adm_pk``, nothing derived from a password), and the next
process refuses, for ``empty_ttl``, to let anyone without a credential create those names.
Nothing in this module ever sees a password or a key derived from one.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2ee.roomcrypto import KdfParams

log = logging.getLogger(__name__)

MAC_LABEL = b"sealroom/v1/resume"  # no trailing NUL; prefixed to the body under the MAC
CREDENTIAL_VERSION = 1
KEY_SIZE = 32
TAG_SIZE = 32  # HMAC-SHA256 (RFC 2104), not truncated
KEY_FILE = "resume.key"
LOCKED_FILE = "locked-rooms.json"
FLAG_LOCKED = 0x01  # the room was locked when the credential was issued
MAX_CREDENTIAL = 512  # bytes, decoded: a 64-byte room name and the longest alg fit easily


class BadCredential(ValueError):
    """Not a credential this server issued (MAC, layout or version)."""


def _lp(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


@dataclass(frozen=True)
class Credential:
    """What a resume credential binds (docs/PROTOCOL.md, "Resuming", byte layout)."""

    room: str
    kdf: KdfParams
    adm_pk: bytes
    created_at: float  # the room's creation time (its lock_at follows from it)
    locked: bool  # the room was locked when this was issued
    index: int  # the member's sender index
    resume_pk: bytes  # the member's Ed25519 key for this membership
    expires: int  # Unix seconds

    def body(self) -> bytes:
        """``u8 1 ‖ lp room ‖ lp alg ‖ u32 ops ‖ u32 mem ‖ salt(16) ‖ adm_pk(32) ‖
        u64 created_ms ‖ u8 flags ‖ u16 index ‖ resume_pk(32) ‖ u64 expires`` (big-endian)."""
        return (
            struct.pack("!B", CREDENTIAL_VERSION)
            + _lp(self.room.encode("utf-8"))
            + _lp(self.kdf.alg.encode("utf-8"))
            + struct.pack("!II", self.kdf.opslimit, self.kdf.memlimit)
            + self.kdf.salt
            + self.adm_pk
            + struct.pack("!QBH", round(self.created_at * 1000), FLAG_LOCKED if self.locked
                          else 0, self.index)
            + self.resume_pk
            + struct.pack("!Q", self.expires)
        )

    @classmethod
    def parse(cls, body: bytes) -> Credential:
        """Inverse of :meth:`body`; BadCredential on anything but an exact encoding."""
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(body):
                raise BadCredential("truncated credential")
            chunk = body[pos : pos + n]
            pos += n
            return chunk

        def text() -> str:
            (n,) = struct.unpack("!H", take(2))
            try:
                return take(n).decode("utf-8")
            except UnicodeDecodeError:
                raise BadCredential("credential text is not UTF-8") from None

        (version,) = struct.unpack("!B", take(1))
        if version != CREDENTIAL_VERSION:
            raise BadCredential(f"credential version {version}")
        room, alg = text(), text()
        ops, mem = struct.unpack("!II", take(8))
        salt, adm_pk = take(16), take(32)
        created_ms, flags, index = struct.unpack("!QBH", take(11))
        resume_pk = take(32)
        (expires,) = struct.unpack("!Q", take(8))
        if pos != len(body) or flags & ~FLAG_LOCKED:
            raise BadCredential("trailing bytes or unknown flags")
        try:
            kdf = KdfParams(salt=salt, alg=alg, opslimit=ops, memlimit=mem)
        except ValueError:
            raise BadCredential("bad kdf") from None
        return cls(room, kdf, adm_pk, created_ms / 1000, bool(flags & FLAG_LOCKED), index,
                   resume_pk, expires)


def mac(key: bytes, body: bytes) -> bytes:
    """HMAC-SHA256(key, "sealroom/v1/resume" ‖ body), RFC 2104."""
    return hmac.new(key, MAC_LABEL + body, hashlib.sha256).digest()


def issue(key: bytes, cred: Credential) -> bytes:
    """The credential on the wire (before base64): ``body ‖ tag``."""
    body = cred.body()
    return body + mac(key, body)


def open_credential(key: bytes, data: bytes) -> Credential:
    """Check the tag (constant time), then parse; BadCredential otherwise."""
    if len(data) <= TAG_SIZE or len(data) > MAX_CREDENTIAL:
        raise BadCredential("credential size")
    body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(mac(key, body), tag):
        raise BadCredential("credential MAC does not verify")
    return Credential.parse(body)


def load_key(state_dir: Path | None) -> bytes:
    """The server's resume key: ``state_dir/resume.key``, made (0600, exclusively) on
    first start; without a state directory a fresh key in memory (lost at exit)."""
    if state_dir is None:
        return os.urandom(KEY_SIZE)
    path = state_dir / KEY_FILE
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for _ in range(2):  # a concurrent first start may win the creation: then read its key
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            key = os.urandom(KEY_SIZE)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            log.info("resume key created in %s", path)
            return key
        if len(data) != KEY_SIZE:
            raise RuntimeError(f"{path} is not a {KEY_SIZE}-byte key: delete it to make a new "
                               "one (members' resume credentials then stop working)")
        return data
    raise RuntimeError(f"cannot read or create {path}")


@dataclass
class Shutdown:
    """What one process leaves to the next in ``locked-rooms.json``."""

    locked: dict[str, dict[str, Any]]  # name → {"created_at", "lock_at", "until"}
    revoked: dict[str, list[float]]  # resume_pk (hex) → [from, until] (Unix seconds)


def save_locked(state_dir: Path, snapshot: Shutdown) -> Path:
    """Write the locked room names (atomically, 0600)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / LOCKED_FILE
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps({"v": 1, "written": time.time(), "rooms": snapshot.locked,
                       "revoked": snapshot.revoked}, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_locked(state_dir: Path, now: float) -> Shutdown:
    """Read and remove the previous process's list; entries past their ``until`` are
    dropped. A missing or unreadable file is an empty list (logged)."""
    path = state_dir / LOCKED_FILE
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Shutdown({}, {})
    except (OSError, ValueError):
        log.warning("ignoring unreadable %s", path)
        raw = {}
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    locked: dict[str, dict[str, Any]] = {}
    revoked: dict[str, list[float]] = {}
    if isinstance(raw, dict) and raw.get("v") == 1:
        for name, entry in (raw.get("rooms") or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get("until"), int | float) \
                    and entry["until"] > now:
                locked[str(name)] = entry
        for pk, span in (raw.get("revoked") or {}).items():
            if isinstance(span, list) and len(span) == 2 and all(
                    isinstance(t, int | float) for t in span) and span[1] > now:
                revoked[str(pk)] = [float(span[0]), float(span[1])]
    return Shutdown(locked, revoked)
