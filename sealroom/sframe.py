"""Frame encryption: the reference implementation of e2ee-worker/FORMAT.md.

RFC 9605 (SFrame) key schedule and nonce with cipher suite 0x0004
(AES_128_GCM_SHA256_128), the SFrame header moved behind the ciphertext so that
the codec's own header stays first::

    out = C ‖ AES-GCM(key_KID, salt_KID ⊕ CTR, aad = H ‖ kind ‖ C, frame[n:]) ‖ H ‖ len(H)

The browser worker (e2ee-worker/worker.js) implements the same format; the two
are checked against each other byte for byte (tests/vectors/sframe*.json). The
SFU bots and the benchmark use this module to send real encrypted VP8 and Opus.
"""

from __future__ import annotations

import hashlib
import hmac
import os
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
# FORMAT.md §5, §6.
BASE_KEY_LENGTH = 32
MAX_STEP_AHEAD = 16
REPLAY_WINDOW = 1024
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


# ------------------------------------------------------------------ KID, FORMAT.md §3


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
    """The next step's base key (FORMAT.md §5)."""
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


# ------------------------------------------------------------ frame layout, FORMAT.md §2


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


# ------------------------------------------------------ sending side, FORMAT.md §5, §7


@dataclass
class SendKey:
    """A sending key as handed to the page for distribution."""

    sender: int
    generation: int
    step: int
    key: bytes = field(repr=False)  # never in a log line or a traceback's locals


class FrameEncryptor:
    """The sending state of one participant: one CTR for all tracks, never reset."""

    def __init__(self) -> None:
        self.counter = 0
        self._current: tuple[SendKey, KidKeys] | None = None
        self._pending: tuple[SendKey, KidKeys] | None = None

    @staticmethod
    def _make(key: SendKey) -> tuple[SendKey, KidKeys]:
        kid = int(KeyId(key.sender, key.generation, key.step))
        return key, KidKeys.derive(key.key, kid)

    @property
    def current(self) -> SendKey | None:
        return None if self._current is None else self._current[0]

    def set_key(self, sender: int, generation: int = 0, key: bytes | None = None) -> SendKey:
        """Use a fresh random base key (or ``key``, for tests and vectors)."""
        base = os.urandom(BASE_KEY_LENGTH) if key is None else key
        self._current = self._make(SendKey(sender, generation, 0, base))
        self._pending = None
        return self._current[0]

    def ratchet(self) -> SendKey:
        current = self._require()
        if current.step == 0xFF:
            raise ValueError("step exhausted: rotate instead")
        nxt = SendKey(current.sender, current.generation, current.step + 1, ratchet(current.key))
        self._current = self._make(nxt)
        return nxt

    def rotate(self, key: bytes | None = None) -> SendKey:
        current = self._require()
        base = os.urandom(BASE_KEY_LENGTH) if key is None else key
        self._pending = self._make(SendKey(current.sender, current.generation + 1, 0, base))
        return self._pending[0]

    def switch(self) -> SendKey | None:
        if self._pending is None:
            return None
        self._current, self._pending = self._pending, None
        return self._current[0]

    def next_counter(self) -> int:
        if self.counter >= CTR_LIMIT:
            raise FrameRejected("counter-exhausted")  # FORMAT.md §7: refuse, never wrap
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


# ----------------------------------------------------------- receiving side, FORMAT.md §6


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
    base: bytes
    keys: KidKeys


@dataclass
class _Generation:
    sender: int
    generation: int
    current: _StepKeys
    previous: _StepKeys | None = None
    replay: ReplayWindow = field(default_factory=ReplayWindow)


@dataclass
class _Sender:
    participant: str
    generations: dict[int, _Generation] = field(default_factory=dict)


class FrameDecryptor:
    """The receive keys of one participant's client, by sender index then generation."""

    def __init__(self) -> None:
        self._senders: dict[int, _Sender] = {}

    def set_key(
        self, participant: str, sender: int, generation: int, step: int, key: bytes
    ) -> None:
        if len(key) != BASE_KEY_LENGTH:
            raise ValueError("a base key is 32 bytes")
        kid = int(KeyId(sender, generation, step))
        entry = self._senders.get(sender)
        if entry is None or entry.participant != participant:
            entry = self._senders[sender] = _Sender(participant)
        entry.generations[generation] = _Generation(
            sender, generation, _StepKeys(step, key, KidKeys.derive(key, kid))
        )
        for old in sorted(entry.generations)[:-2]:  # keep the two newest generations
            del entry.generations[old]

    def remove_participant(self, participant: str) -> None:
        for sender in [s for s, e in self._senders.items() if e.participant == participant]:
            del self._senders[sender]

    def decrypt(self, kind: Kind, participant: str, data: bytes) -> bytes:
        """C ‖ plaintext of an authenticated frame, else raises ``FrameRejected``."""
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
            if kid.generation > max(entry.generations):
                raise UnknownKey()
            raise FrameRejected("stale-key")
        candidate = self._keys_for(gen, kid.step)
        if not gen.replay.check(frame.ctr):
            raise FrameRejected("replay")
        plaintext = candidate.keys.open(
            frame.header, frame.ctr, _metadata(kind, frame.clear), frame.ciphertext
        )
        # Verified: only now update the replay window and commit a step advance.
        gen.replay.update(frame.ctr)
        if candidate.step > gen.current.step:
            gen.previous, gen.current = gen.current, candidate
        return frame.clear + plaintext

    @staticmethod
    def _keys_for(gen: _Generation, step: int) -> _StepKeys:
        if step == gen.current.step:
            return gen.current
        if gen.previous is not None and step == gen.previous.step:
            return gen.previous
        if not gen.current.step < step <= gen.current.step + MAX_STEP_AHEAD:
            raise FrameRejected("step-out-of-range")
        base = gen.current.base
        for _ in range(step - gen.current.step):
            base = ratchet(base)
        kid = int(KeyId(gen.sender, gen.generation, step))
        return _StepKeys(step, base, KidKeys.derive(base, kid))
