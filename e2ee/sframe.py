"""Frame encryption: the reference implementation of e2ee-worker/FORMAT.md.

RFC 9605 (SFrame) key schedule and nonce with cipher suite 0x0004
(AES_128_GCM_SHA256_128), the SFrame header moved behind the ciphertext so that
the codec's own header stays first::

    out = C ‖ AES-GCM(key_KID, salt_KID ⊕ CTR, aad = H ‖ kind ‖ C, frame[n:]) ‖ H ‖ len(H)

The browser worker (e2ee-worker/worker.js) implements the same format; the two
are checked against each other byte for byte (tests/vectors/sframe*.json). The
SFU bots and the benchmark use this module to send real encrypted VP8 and Opus.

The receive and send states also enforce FORMAT.md, Key policy: the frame layer,
not the page or the app, is the last line of defence against a server that
replays old media-key messages or forges membership.

* ``FrameDecryptor.set_key`` refuses (``KeyRefused``, nothing changed) a key for a
  removed participant (``removed``), for a sender index other than the one the
  participant already has (``wrong-sender``), for a sender index another live
  participant owns (``sender-taken``), and any generation not newer than every
  one installed before for that participant (``old-key``). These records last
  for the signaling session: ``new_session`` (a rejoin) starts them over.
* When a frame authenticates under generation G, each older generation of that
  sender is retired ``GRACE`` seconds later: after that its frames are
  ``stale-key`` (the departed member who holds it cannot keep injecting).
* A frame may name any later step of its generation; the ratchet chain is
  derived at most once per step and committed only after the tag verifies.
* A frame on a track the SFU mapped to no participant is ``unmapped``.
* ``FrameEncryptor.rotate`` refuses while a rotated key is pending: a
  generation's key, once drawn, is the only key of that generation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

Kind = Literal["audio", "video"]

# RFC 9605 §4.5, §8.1: AES_128_GCM_SHA256_128 and its AEAD.Nk / Nn / Nt.
CIPHER_SUITE = 0x0004
NK = 16
NN = 12
NT = 16
# RFC 9605 §4.3: KID and CTR are 64-bit, so a header is 1 + 8 + 8 bytes at most.
CTR_LIMIT = 1 << 64
MAX_HEADER = 17
# FORMAT.md, Key schedule, ratchet and rotation; Receive rules; Key policy.
BASE_KEY_LENGTH = 32
MAX_STEP = 0xFF  # the step is 8 bits (FORMAT.md, KID layout): any later step is accepted
MAX_GENERATION = 0xFFFF
REPLAY_WINDOW = 1024
GRACE = 2.0  # seconds an older generation lives on once a newer one authenticated
KIND_BYTE: dict[str, bytes] = {"audio": b"a", "video": b"v"}


class FrameRejected(Exception):
    """A frame that must not reach the decoder; ``reason`` is a stable short id."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownKey(FrameRejected):
    """No key for the frame's KID yet (the browser holds such frames ≤ 1 s)."""

    def __init__(self) -> None:
        super().__init__("unknown-kid")


class KeyRefused(ValueError):
    """A receive key that must not be installed (FORMAT.md, Key policy).

    ``reason`` is a stable short id: ``removed``, ``wrong-sender``, ``sender-taken``
    or ``old-key``. Nothing was installed and nothing changed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------ KID, FORMAT.md, KID layout


@dataclass(frozen=True)
class KeyId:
    """KID = sender_index (16 bits) << 24 | generation (16 bits) << 8 | step (8 bits)."""

    sender: int
    generation: int
    step: int

    def __post_init__(self) -> None:
        if not (0 <= self.sender <= 0xFFFF and 0 <= self.generation <= 0xFFFF):
            raise ValueError("KID sender or generation out of range")
        if not 0 <= self.step <= 0xFF:
            raise ValueError("KID step out of range")

    def __int__(self) -> int:
        return self.sender << 24 | self.generation << 8 | self.step

    @classmethod
    def parse(cls, kid: int) -> KeyId:
        if not 0 <= kid < 1 << 40:
            raise ValueError("KID outside the sealroom layout")
        return cls(sender=kid >> 24, generation=(kid >> 8) & 0xFFFF, step=kid & 0xFF)


# ------------------------------------------------------------- header, RFC 9605 §4.3


def _minimal_length(value: int) -> int:
    return max(1, (value.bit_length() + 7) // 8)


@dataclass(frozen=True)
class SFrameHeader:
    """The RFC 9605 §4.3 header: config byte ``X|KKK|Y|CCC``, then KID, then CTR."""

    kid: int
    ctr: int

    def __bytes__(self) -> bytes:
        if not (0 <= self.kid < CTR_LIMIT and 0 <= self.ctr < CTR_LIMIT):
            raise ValueError("KID or CTR out of range")
        config = 0
        tail = b""
        if self.kid < 8:
            config |= self.kid << 4  # X=0: the KID itself in K
        else:
            n = _minimal_length(self.kid)  # X=1: K = length − 1, minimal length (§4.3)
            config |= 0x80 | (n - 1) << 4
            tail += self.kid.to_bytes(n, "big")
        if self.ctr < 8:
            config |= self.ctr  # Y=0: the CTR itself in C
        else:
            n = _minimal_length(self.ctr)  # Y=1: C = length − 1
            config |= 0x08 | (n - 1)
            tail += self.ctr.to_bytes(n, "big")
        return bytes([config]) + tail

    @classmethod
    def parse(cls, data: bytes) -> SFrameHeader:
        """Parse a header spanning exactly ``data``; only the canonical encoding passes."""
        if not 1 <= len(data) <= MAX_HEADER:
            raise ValueError("header length outside 1..17")
        config = data[0]
        pos = 1

        def read(extended: bool, bits: int) -> int:
            nonlocal pos
            if not extended:
                return bits
            n = bits + 1
            if pos + n > len(data):
                raise ValueError("header truncated")
            value = int.from_bytes(data[pos : pos + n], "big")
            pos += n
            return value

        kid = read(bool(config & 0x80), (config >> 4) & 0x07)
        ctr = read(bool(config & 0x08), config & 0x07)
        if pos != len(data):
            raise ValueError("trailing bytes after header")
        header = cls(kid=kid, ctr=ctr)
        # RFC 9605 §4.3: values MUST use the minimum number of bytes.
        if bytes(header) != data:
            raise ValueError("non-canonical header")
        return header


# ----------------------------------------------------- key schedule, RFC 9605 §4.4.2


def _hkdf_extract(ikm: bytes) -> bytes:
    # HKDF-Extract("", ikm): an empty salt is HashLen zero bytes (RFC 5869 §2.2).
    return hmac.new(bytes(32), ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def _label(text: bytes, kid: int) -> bytes:
    # Label = text ‖ KID as 8 bytes big-endian ‖ cipher suite as 2 bytes (§4.4.2).
    return text + kid.to_bytes(8, "big") + CIPHER_SUITE.to_bytes(2, "big")


def sframe_secret(base_key: bytes) -> bytes:
    return _hkdf_extract(base_key)


def derive_key_salt(base_key: bytes, kid: int) -> tuple[bytes, bytes]:
    """(sframe_key, sframe_salt) of ``kid`` under ``base_key`` (RFC 9605 §4.4.2)."""
    secret = sframe_secret(base_key)
    key = _hkdf_expand(secret, _label(b"SFrame 1.0 Secret key ", kid), NK)
    salt = _hkdf_expand(secret, _label(b"SFrame 1.0 Secret salt ", kid), NN)
    return key, salt


def ratchet(base_key: bytes) -> bytes:
    """The next step's base key (FORMAT.md, Key schedule, ratchet and rotation)."""
    return _hkdf_expand(_hkdf_extract(base_key), b"SFrame 1.0 Ratchet", 32)


def make_nonce(salt: bytes, ctr: int) -> bytes:
    """nonce = sframe_salt XOR CTR, CTR big-endian on AEAD.Nn bytes (RFC 9605 §4.4.3)."""
    return bytes(a ^ b for a, b in zip(salt, ctr.to_bytes(NN, "big"), strict=True))


@dataclass(frozen=True)
class KidKeys:
    """The AEAD key and salt of one KID."""

    kid: int
    key: bytes
    salt: bytes

    @classmethod
    def derive(cls, base_key: bytes, kid: int) -> KidKeys:
        key, salt = derive_key_salt(base_key, kid)
        return cls(kid=kid, key=key, salt=salt)

    def seal(self, ctr: int, metadata: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
        """RFC 9605 §4.4.3: (header, ciphertext) with aad = header ‖ metadata."""
        header = bytes(SFrameHeader(kid=self.kid, ctr=ctr))
        ciphertext = AESGCM(self.key).encrypt(
            make_nonce(self.salt, ctr), plaintext, header + metadata
        )
        return header, ciphertext

    def open(self, header: bytes, ctr: int, metadata: bytes, ciphertext: bytes) -> bytes:
        """RFC 9605 §4.4.4; raises ``FrameRejected("auth-failed")`` on a bad tag."""
        try:
            return AESGCM(self.key).decrypt(
                make_nonce(self.salt, ctr), ciphertext, header + metadata
            )
        except InvalidTag:
            raise FrameRejected("auth-failed") from None


# ------------------------------------------------------- frame layout, FORMAT.md, Frame layout


def clear_length(kind: Kind, first_byte: int) -> int:
    """Opus: 1 (TOC). VP8: 10 for a key frame (P bit of the frame tag == 0), else 3."""
    if kind == "audio":
        return 1
    return 10 if first_byte & 0x01 == 0 else 3


def _metadata(kind: Kind, clear: bytes) -> bytes:
    return KIND_BYTE[kind] + clear


def encrypt_frame(keys: KidKeys, ctr: int, kind: Kind, frame: bytes) -> bytes:
    """C ‖ ciphertext ‖ H ‖ len(H). The caller owns CTR uniqueness."""
    n = clear_length(kind, frame[0])
    if len(frame) < n:
        raise ValueError("frame shorter than its clear prefix")
    clear = frame[:n]
    header, ciphertext = keys.seal(ctr, _metadata(kind, clear), frame[n:])
    return clear + ciphertext + header + bytes([len(header)])


@dataclass(frozen=True)
class EncryptedFrame:
    """An encrypted frame split into parts without any key: what the SFU can see."""

    clear: bytes
    ciphertext: bytes
    header: bytes
    kid: int
    ctr: int

    @classmethod
    def parse(cls, kind: Kind, data: bytes) -> EncryptedFrame:
        header_length = data[-1]
        if not 1 <= header_length <= MAX_HEADER:
            raise FrameRejected("bad-header")
        n = clear_length(kind, data[0])
        body_end = len(data) - 1 - header_length
        if body_end < n + NT:
            raise FrameRejected("too-short")
        header = data[body_end:-1]
        try:
            parsed = SFrameHeader.parse(header)
        except ValueError:
            raise FrameRejected("bad-header") from None
        return cls(data[:n], data[n:body_end], header, parsed.kid, parsed.ctr)

    def __bytes__(self) -> bytes:
        return self.clear + self.ciphertext + self.header + bytes([len(self.header)])


# ---------- sending side: FORMAT.md, Key schedule, ratchet and rotation; Nonce safety


@dataclass
class SendKey:
    """A sending key as handed to the page for distribution."""

    sender: int
    generation: int
    step: int
    key: bytes = field(repr=False)  # never in a log line or a traceback's locals


class FrameEncryptor:
    """The sending state of one participant: one CTR for all tracks, never reset.

    FORMAT.md, Key policy: a generation's key, once drawn, is the only key of that
    generation. ``set_key`` refuses a generation not newer than every one drawn before
    for that sender index, and ``rotate`` refuses while a rotated key is pending.
    """

    def __init__(self) -> None:
        self.counter = 0
        self._current: tuple[SendKey, KidKeys] | None = None
        self._pending: tuple[SendKey, KidKeys] | None = None
        self._drawn: dict[int, int] = {}  # sender index → newest generation drawn

    @staticmethod
    def _make(key: SendKey) -> tuple[SendKey, KidKeys]:
        kid = int(KeyId(key.sender, key.generation, key.step))
        return key, KidKeys.derive(key.key, kid)

    @property
    def current(self) -> SendKey | None:
        return None if self._current is None else self._current[0]

    @property
    def pending(self) -> SendKey | None:
        """The rotated key announced but not used yet (``switch`` starts using it)."""
        return None if self._pending is None else self._pending[0]

    def set_key(self, sender: int, generation: int = 0, key: bytes | None = None) -> SendKey:
        """Use a fresh random base key (or ``key``, for tests and vectors) at once.

        Raises ValueError for a generation already drawn (or older) for ``sender``.
        """
        if generation <= self._drawn.get(sender, -1):
            raise ValueError("generation already drawn")
        base = os.urandom(BASE_KEY_LENGTH) if key is None else key
        made = self._make(SendKey(sender, generation, 0, base))
        self._drawn[sender] = generation
        self._current, self._pending = made, None
        return made[0]

    def ratchet(self) -> SendKey:
        current = self._require()
        if current.step == MAX_STEP:
            raise ValueError("step exhausted: rotate instead")
        nxt = SendKey(current.sender, current.generation, current.step + 1, ratchet(current.key))
        self._current = self._make(nxt)
        return nxt

    def rotate(self, key: bytes | None = None) -> SendKey:
        """Draw generation + 1's key; it is used only after ``switch()``.

        Raises ValueError("rotation pending") while an earlier rotated key is not switched
        to: drawing another would give that generation a second key.
        """
        current = self._require()
        if self._pending is not None:
            raise ValueError("rotation pending")
        if current.generation >= MAX_GENERATION:
            raise ValueError("generation exhausted")
        generation = current.generation + 1
        if generation <= self._drawn.get(current.sender, -1):
            raise ValueError("generation already drawn")
        base = os.urandom(BASE_KEY_LENGTH) if key is None else key
        self._pending = self._make(SendKey(current.sender, generation, 0, base))
        self._drawn[current.sender] = generation
        return self._pending[0]

    def switch(self) -> SendKey | None:
        if self._pending is None:
            return None
        self._current, self._pending = self._pending, None
        return self._current[0]

    def next_counter(self) -> int:
        if self.counter >= CTR_LIMIT:
            raise FrameRejected("counter-exhausted")  # FORMAT.md, Nonce safety: never wrap
        ctr = self.counter
        self.counter += 1
        return ctr

    def encrypt(self, kind: Kind, frame: bytes) -> bytes:
        if not frame:
            return frame  # empty frames (Opus DTX) pass
        if self._current is None:
            raise FrameRejected("no-key")
        return encrypt_frame(self._current[1], self.next_counter(), kind, frame)

    def _require(self) -> SendKey:
        if self._current is None:
            raise ValueError("no sending key")
        return self._current[0]


# -------------------------------------- receiving side: FORMAT.md, Receive rules; Key policy


class ReplayWindow:
    """Accept a CTR above the highest seen, or ≤ 1024 below it and not seen yet."""

    def __init__(self) -> None:
        self.top = -1
        self._seen: set[int] = set()

    def check(self, ctr: int) -> bool:
        if ctr > self.top:
            return True
        if self.top - ctr >= REPLAY_WINDOW:
            return False
        return ctr not in self._seen

    def update(self, ctr: int) -> None:
        if ctr > self.top:
            self.top = ctr
            self._seen = {c for c in self._seen if self.top - c < REPLAY_WINDOW}
        self._seen.add(ctr)


@dataclass
class _StepKeys:
    step: int
    base: bytes = field(repr=False)
    keys: KidKeys = field(repr=False)


@dataclass
class _Generation:
    sender: int
    generation: int
    current: _StepKeys
    previous: _StepKeys | None = None
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    # Steps above the committed one, derived but not committed: the ratchet chain
    # (step → base key; always the contiguous run current.step + 1 .. its top) and the
    # AEAD keys of the steps frames named. Entries at or below a committed step go.
    chain: dict[int, bytes] = field(default_factory=dict, repr=False)
    ahead: dict[int, _StepKeys] = field(default_factory=dict, repr=False)
    retire_at: float | None = None  # set once a newer generation authenticated


@dataclass
class _Sender:
    participant: str
    generations: dict[int, _Generation] = field(default_factory=dict)


@dataclass
class _Record:
    """What the decryptor remembers of a participant for the session (Key policy)."""

    sender: int | None  # None: removed before any key was installed
    newest: int = -1  # the newest generation ever installed
    removed: bool = False


class FrameDecryptor:
    """The receive keys of one participant's client, by sender index then generation.

    ``clock`` gives the time in seconds for the grace of older generations (FORMAT.md,
    Key policy); tests inject their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._senders: dict[int, _Sender] = {}  # live sender indexes only
        self._records: dict[str, _Record] = {}  # reset only by new_session

    def set_key(
        self, participant: str, sender: int, generation: int, step: int, key: bytes
    ) -> None:
        """Install the base key of (sender, generation) at ``step`` for ``participant``.

        Raises ``KeyRefused`` (FORMAT.md, Key policy) with nothing changed: ``removed``,
        ``wrong-sender``, ``sender-taken``, ``old-key``; ValueError for malformed values.
        """
        if not isinstance(participant, str) or not participant:
            raise ValueError("participant must be a non-empty string")
        if len(key) != BASE_KEY_LENGTH:
            raise ValueError("a base key is 32 bytes")
        kid = int(KeyId(sender, generation, step))
        record = self._records.get(participant)
        if record is not None and record.removed:
            raise KeyRefused("removed")
        if record is not None and record.sender != sender:
            raise KeyRefused("wrong-sender")
        owner = self._senders.get(sender)
        if owner is not None and owner.participant != participant:
            raise KeyRefused("sender-taken")
        if record is not None and generation <= record.newest:
            raise KeyRefused("old-key")  # a (sender, generation) once; an older one never
        installed = _Generation(sender, generation, _StepKeys(step, key, KidKeys.derive(key, kid)))
        # Checks passed: from here on nothing raises.
        if record is None:
            record = self._records[participant] = _Record(sender)
        record.newest = generation
        if owner is None:
            owner = self._senders[sender] = _Sender(participant)
        owner.generations[generation] = installed
        for old in sorted(owner.generations)[:-2]:  # keep the two newest generations
            del owner.generations[old]

    def remove_participant(self, participant: str) -> None:
        """Forget its keys and release its sender index; its record stays (removed)."""
        record = self._records.setdefault(participant, _Record(None))
        record.removed = True
        if record.sender is not None:
            entry = self._senders.get(record.sender)
            if entry is not None and entry.participant == participant:
                del self._senders[record.sender]

    def new_session(self) -> None:
        """A new signaling session (a rejoin): forget every key and record (FORMAT.md §6a)."""
        self._senders.clear()
        self._records.clear()

    def decrypt(self, kind: Kind, participant: str | None, data: bytes) -> bytes:
        """C ‖ plaintext of an authenticated frame, else raises ``FrameRejected``.

        ``participant`` is whose track the frame came on; None when the SFU mapped the
        track to nobody, and then every frame, even an empty one, is ``unmapped``.
        """
        if participant is None:
            raise FrameRejected("unmapped")
        if not data:
            return data  # empty frames (Opus DTX) pass
        frame = EncryptedFrame.parse(kind, data)
        try:
            kid = KeyId.parse(frame.kid)
        except ValueError:
            raise FrameRejected("bad-kid") from None
        entry = self._senders.get(kid.sender)
        if entry is None:
            raise UnknownKey()
        if entry.participant != participant:
            raise FrameRejected("wrong-sender")
        gen = entry.generations.get(kid.generation)
        if gen is None:
            if kid.generation > max(entry.generations, default=-1):
                raise UnknownKey()
            raise FrameRejected("stale-key")
        if gen.retire_at is not None and self._clock() >= gen.retire_at:
            del entry.generations[kid.generation]  # its grace is over
            raise FrameRejected("stale-key")
        candidate = self._keys_for(gen, kid.step)
        if not gen.replay.check(frame.ctr):
            raise FrameRejected("replay")
        plaintext = candidate.keys.open(
            frame.header, frame.ctr, _metadata(kind, frame.clear), frame.ciphertext
        )
        # Verified: only now update the replay window, commit a step advance and start
        # the grace of the older generations.
        gen.replay.update(frame.ctr)
        if candidate.step > gen.current.step:
            self._commit(gen, candidate)
        older = [g for n, g in entry.generations.items() if n < kid.generation]
        if any(g.retire_at is None for g in older):
            retire_at = self._clock() + GRACE
            for g in older:
                if g.retire_at is None:  # set once, never pushed back
                    g.retire_at = retire_at
        return frame.clear + plaintext

    @staticmethod
    def _keys_for(gen: _Generation, step: int) -> _StepKeys:
        """The committed step, the previous committed one, or any later step (derived once)."""
        if step == gen.current.step:
            return gen.current
        if gen.previous is not None and step == gen.previous.step:
            return gen.previous
        if step < gen.current.step:
            raise FrameRejected("step-out-of-range")
        found = gen.ahead.get(step)
        if found is not None:
            return found
        if step not in gen.chain:  # extend the chain from its top: each ratchet once
            top = max(gen.chain, default=gen.current.step)
            base = gen.chain.get(top, gen.current.base)
            for s in range(top + 1, step + 1):
                base = ratchet(base)
                gen.chain[s] = base
        base = gen.chain[step]
        kid = int(KeyId(gen.sender, gen.generation, step))
        found = gen.ahead[step] = _StepKeys(step, base, KidKeys.derive(base, kid))
        return found

    @staticmethod
    def _commit(gen: _Generation, candidate: _StepKeys) -> None:
        gen.previous, gen.current = gen.current, candidate
        for cache in (gen.chain, gen.ahead):
            for s in [s for s in cache if s <= candidate.step]:
                del cache[s]
