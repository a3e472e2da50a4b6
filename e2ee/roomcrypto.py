"""Room cryptography of sealed signaling: password key, sub-keys, admission, envelopes.

docs/PROTOCOL.md, "Keys", "Connecting and joining" and "Sealed messages":

* ``K = Argon2id(NFC(password), salt)``, the salt drawn at random by the room's creator and
  kept in the room record (:class:`KdfParams`), libsodium's INTERACTIVE cost at least;
* ``k_room`` (AES-256-GCM) and ``adm_seed`` (Ed25519) from ``K`` by HKDF-SHA256;
* the join signature over ``"sealroom/v1/join" ‖ lp(origin) ‖ lp(room) ‖ lp(nonce) ‖ lp(conn)``;
* sealed envelopes: AES-256-GCM with the header ``{v, room, epoch, from, to, seq}`` as AAD.

The server imports only :func:`verify_join`, :class:`KdfParams` (to check a room's parameters)
and the encoding helpers from here: that path needs ``cryptography`` alone. PyNaCl (libsodium's
Argon2id) is imported lazily by :func:`password_key`, which only clients call.
``web/js/roomcrypto.js`` is the browser twin; ``tests/vectors/roomcrypto.json`` pins both byte
for byte.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KDF_ALG",
    "SALT_SIZE",
    "EnvelopeHeader",
    "ExcessiveKdfParams",
    "InvalidEnvelope",
    "KdfParams",
    "ReplayGuard",
    "RoomKeys",
    "WeakKdfParams",
    "b64",
    "check_kdf_params",
    "hkdf_sha256",
    "is_valid_admission_key",
    "join_transcript",
    "new_resume_seed",
    "open_envelope",
    "password_key",
    "room_keys",
    "seal",
    "sign_join",
    "unb64",
    "verify_join",
]

KDF_ALG = "argon2id13"

# libsodium crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE / MEMLIMIT_INTERACTIVE (parallelism is
# fixed to 1 by libsodium). These are the floor: a client never derives with less.
MIN_OPSLIMIT = 2
MIN_MEMLIMIT = 64 * 1024 * 1024
# Ceiling, so that a hostile room record cannot make every joiner burn minutes or gigabytes.
MAX_OPSLIMIT = 16
MAX_MEMLIMIT = 1024 * 1024 * 1024

KEY_SIZE = 32
SALT_SIZE = 16  # crypto_pwhash_SALTBYTES
NONCE_SIZE = 12  # AES-GCM 96-bit IV, NIST SP 800-38D §8.2
TAG_SIZE = 16
SIGNATURE_SIZE = 64  # RFC 8032 §5.1.6
PUBLIC_KEY_SIZE = 32  # RFC 8032 §5.1.5
ENVELOPE_VERSION = 1

K_ROOM_LABEL = b"sealroom/v1/k_room\x00"
ADMISSION_LABEL = b"sealroom/v1/admission\x00"
JOIN_LABEL = b"sealroom/v1/join"  # no trailing NUL (docs/PROTOCOL.md, joining)
ENVELOPE_LABEL = b"sealroom/v1/env"

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


class WeakKdfParams(ValueError):
    """KDF parameters below the floor (or an unknown algorithm): refused, never used."""


class ExcessiveKdfParams(ValueError):
    """KDF parameters above the ceiling: refused so a room record cannot DoS its joiners."""


class InvalidEnvelope(ValueError):
    """A sealed envelope that does not authenticate (or is malformed): drop it."""


def _strict_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters and salt as stored in the room record (versioned by ``alg``).

    On the wire exactly ``{"alg": "argon2id13", "ops": int, "mem": int, "salt": base64}``.
    """

    salt: bytes
    alg: str = KDF_ALG
    opslimit: int = MIN_OPSLIMIT
    memlimit: int = MIN_MEMLIMIT

    @classmethod
    def generate(cls, opslimit: int = MIN_OPSLIMIT, memlimit: int = MIN_MEMLIMIT) -> KdfParams:
        """Parameters for a new room: a fresh random salt (the creator's job)."""
        params = cls(salt=os.urandom(SALT_SIZE), opslimit=opslimit, memlimit=memlimit)
        check_kdf_params(params)
        return params

    def to_json(self) -> dict[str, Any]:
        return {"alg": self.alg, "ops": self.opslimit, "mem": self.memlimit, "salt": b64(self.salt)}

    @classmethod
    def from_json(cls, obj: object) -> KdfParams:
        """Parse the wire form; raises ValueError (or a subclass) on anything else.

        Malformed (keys, types, base64, salt size) → plain ValueError; then the policy of
        :func:`check_kdf_params` (:class:`WeakKdfParams`, :class:`ExcessiveKdfParams`).
        """
        if not isinstance(obj, dict):
            raise ValueError("kdf params must be an object")
        if set(obj) != {"alg", "ops", "mem", "salt"}:
            raise ValueError("kdf params must have exactly the keys alg, ops, mem, salt")
        alg, ops, mem, salt = obj["alg"], obj["ops"], obj["mem"], obj["salt"]
        if not isinstance(alg, str):
            raise ValueError("kdf alg must be a string")
        if not _strict_int(ops) or not _strict_int(mem):
            raise ValueError("kdf ops and mem must be integers")
        if not isinstance(salt, str):
            raise ValueError("kdf salt must be a base64 string")
        params = cls(salt=unb64(salt), alg=alg, opslimit=ops, memlimit=mem)
        check_kdf_params(params)
        return params


def check_kdf_params(p: KdfParams) -> None:
    """Refuse parameters a client must not derive with (docs/PROTOCOL.md, Keys).

    A salt that is not 16 bytes → ValueError. Another algorithm, or weaker than libsodium
    INTERACTIVE → :class:`WeakKdfParams` (a hostile server must not be able to make offline
    guessing cheap); above 16 passes or 1 GiB → :class:`ExcessiveKdfParams`.
    """
    if not isinstance(p.salt, bytes) or len(p.salt) != SALT_SIZE:
        raise ValueError(f"kdf salt must be {SALT_SIZE} bytes")
    if p.alg != KDF_ALG:
        raise WeakKdfParams(f"unsupported kdf algorithm {p.alg!r}")
    if not _strict_int(p.opslimit) or not _strict_int(p.memlimit):
        raise ValueError("kdf ops and mem must be integers")
    if p.opslimit < MIN_OPSLIMIT or p.memlimit < MIN_MEMLIMIT:
        raise WeakKdfParams(
            f"kdf parameters below the minimum (ops >= {MIN_OPSLIMIT}, mem >= {MIN_MEMLIMIT})"
        )
    if p.opslimit > MAX_OPSLIMIT or p.memlimit > MAX_MEMLIMIT:
        raise ExcessiveKdfParams(
            f"kdf parameters above the maximum (ops <= {MAX_OPSLIMIT}, mem <= {MAX_MEMLIMIT})"
        )


def password_key(password: str, params: KdfParams) -> bytes:
    """``K = Argon2id(NFC(password), params.salt)``, 32 bytes (RFC 9106 via libsodium)."""
    check_kdf_params(params)
    # Imported here so that the server, which never derives K, does not need libsodium.
    from nacl.pwhash import argon2id

    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    return bytes(
        argon2id.kdf(
            KEY_SIZE,
            secret,
            params.salt,
            opslimit=params.opslimit,
            memlimit=params.memlimit,
        )
    )


def hkdf_sha256(ikm: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """RFC 5869 HKDF-SHA256 with an empty salt (§2.2: same PRK as HashLen zero bytes)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"", info=info).derive(ikm)


@dataclass(frozen=True)
class RoomKeys:
    k_room: bytes = field(repr=False)
    adm_seed: bytes = field(repr=False)
    adm_pk: bytes


def _ed25519_public(seed: bytes) -> bytes:
    # RFC 8032 §5.1.5: the 32-byte seed is the private key; the public key follows from it.
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def room_keys(K: bytes, room: str) -> RoomKeys:
    """Sub-keys of the password key (docs/PROTOCOL.md, Keys), room name in every HKDF info."""
    if len(K) != KEY_SIZE:
        raise ValueError("K must be 32 bytes")
    room_b = room.encode("utf-8")
    k_room = hkdf_sha256(K, K_ROOM_LABEL + room_b)
    adm_seed = hkdf_sha256(K, ADMISSION_LABEL + room_b)
    return RoomKeys(k_room=k_room, adm_seed=adm_seed, adm_pk=_ed25519_public(adm_seed))


def _lp(value: str | bytes) -> bytes:
    """Length-prefixed field: uint16 big-endian length ‖ bytes (str as UTF-8)."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) > _U16_MAX:
        raise ValueError("field longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


def join_transcript(
    origin: str, room: str, nonce: bytes, conn: str, resume_pk: bytes | None = None
) -> bytes:
    """What the admission signature covers (docs/PROTOCOL.md, "Connecting and joining").

    The label has no trailing NUL; ``nonce`` is the 32 raw bytes of the challenge (not its
    base64 text); origin, room and conn are UTF-8. A join that sends ``resume_pk``
    (docs/PROTOCOL.md, "Resuming") has it as a fifth field, ``lp(resume_pk)``; without
    it the transcript is the version-2 one, byte for byte.
    """
    out = JOIN_LABEL + _lp(origin) + _lp(room) + _lp(nonce) + _lp(conn)
    if resume_pk is not None:
        if len(resume_pk) != PUBLIC_KEY_SIZE:
            raise ValueError("resume_pk must be 32 bytes")
        out += _lp(resume_pk)
    return out


def sign_join(
    adm_seed: bytes, origin: str, room: str, nonce: bytes, conn: str,
    resume_pk: bytes | None = None,
) -> bytes:
    """Ed25519 signature (RFC 8032 §5.1.6, deterministic) of the join transcript.

    The same function makes the resume signature: the seed is then the previous
    membership's ``resume_seed`` (docs/PROTOCOL.md, "Resuming")."""
    if len(adm_seed) != KEY_SIZE:
        raise ValueError("adm_seed must be 32 bytes")
    key = Ed25519PrivateKey.from_private_bytes(adm_seed)
    return key.sign(join_transcript(origin, room, nonce, conn, resume_pk))


def new_resume_seed() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair for one membership: ``(resume_seed, resume_pk)``."""
    seed = os.urandom(KEY_SIZE)
    return seed, _ed25519_public(seed)


# edwards25519 (RFC 8032 §5.1): field prime, and the y coordinates of the points of order 1, 2,
# 4 and 8 (the 8-torsion; 0 = the two order-4 points, 1 = identity, p-1 = order 2). OpenSSL's
# Ed25519 verify accepts such public keys, and for them signatures are forgeable without the
# seed (e.g. all-zero key and signature verify), so they are refused as libsodium does.
_ED25519_P = 2**255 - 19
_SMALL_ORDER_Y = frozenset(
    {
        0,
        1,
        _ED25519_P - 1,
        2707385501144840649318225287225658788936804267575313519463743609750303402022,
        55188659117513257062467267217118295137698188065244968500265048394206261417927,
    }
)


def is_valid_admission_key(adm_pk: bytes) -> bool:
    """True for a 32-byte Ed25519 public key with canonical y (RFC 8032 §5.1.3) and not of small
    order. The server should refuse a room record whose ``adm_pk`` fails this."""
    if not isinstance(adm_pk, bytes | bytearray) or len(adm_pk) != PUBLIC_KEY_SIZE:
        return False
    y = int.from_bytes(adm_pk, "little") & ((1 << 255) - 1)
    return y < _ED25519_P and y not in _SMALL_ORDER_Y


def verify_join(
    adm_pk: bytes, sig: bytes, origin: str, room: str, nonce: bytes, conn: str,
    resume_pk: bytes | None = None,
) -> bool:
    """Check a join signature (RFC 8032 §5.1.7). Never raises: anything malformed is False.

    Also checks a resume signature, with the credential's ``resume_pk`` as ``adm_pk``."""
    try:
        if not isinstance(adm_pk, bytes | bytearray) or not isinstance(sig, bytes | bytearray):
            return False
        if len(sig) != SIGNATURE_SIZE or not is_valid_admission_key(adm_pk):
            return False
        if not isinstance(origin, str) or not isinstance(room, str) or not isinstance(conn, str):
            return False
        if not isinstance(nonce, bytes | bytearray):
            return False
        message = join_transcript(origin, room, bytes(nonce), conn, resume_pk)
        Ed25519PublicKey.from_public_bytes(bytes(adm_pk)).verify(bytes(sig), message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class EnvelopeHeader:
    """Clear header of a sealed envelope; its :meth:`aad` is the AES-GCM associated data.

    ``sender`` is stamped by the server from the authenticated socket; ``to == "*"`` means
    everyone else in the room.
    """

    room: str
    epoch: int
    sender: str
    to: str
    seq: int
    v: int = ENVELOPE_VERSION

    def __post_init__(self) -> None:
        for name in ("room", "sender", "to"):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise ValueError(f"{name} must be a string")
            if len(text.encode("utf-8")) > _U16_MAX:  # also refuses lone surrogates
                raise ValueError(f"{name} longer than 65535 bytes")
        for name, top in (("v", 0xFF), ("epoch", _U32_MAX), ("seq", _U64_MAX)):
            num = getattr(self, name)
            if not _strict_int(num) or not 0 <= num <= top:
                raise ValueError(f"{name} must be an integer in 0..{top}")

    def aad(self) -> bytes:
        """``"sealroom/v1/env" ‖ u8 v ‖ lp room ‖ u32 epoch ‖ lp from ‖ lp to ‖ u64 seq`` (BE)."""
        return (
            ENVELOPE_LABEL
            + struct.pack("!B", self.v)
            + _lp(self.room)
            + struct.pack("!I", self.epoch)
            + _lp(self.sender)
            + _lp(self.to)
            + struct.pack("!Q", self.seq)
        )

    def __bytes__(self) -> bytes:
        return self.aad()

    @classmethod
    def parse(cls, data: bytes) -> EnvelopeHeader:
        """Inverse of :meth:`aad`; raises ValueError on anything but an exact encoding."""
        if not data.startswith(ENVELOPE_LABEL):
            raise ValueError("not an envelope header")
        pos = len(ENVELOPE_LABEL)

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(data):
                raise ValueError("truncated envelope header")
            chunk = data[pos : pos + n]
            pos += n
            return chunk

        def take_text() -> str:
            (length,) = struct.unpack("!H", take(2))
            return take(length).decode("utf-8")

        (v,) = struct.unpack("!B", take(1))
        room = take_text()
        (epoch,) = struct.unpack("!I", take(4))
        sender = take_text()
        to = take_text()
        (seq,) = struct.unpack("!Q", take(8))
        if pos != len(data):
            raise ValueError("trailing bytes after envelope header")
        return cls(room=room, epoch=epoch, sender=sender, to=to, seq=seq, v=v)


def seal(
    k_room: bytes, header: EnvelopeHeader, plaintext: bytes, nonce: bytes | None = None
) -> tuple[bytes, bytes]:
    """AES-256-GCM seal; returns ``(nonce, ciphertext ‖ tag)``.

    The nonce is 96 random bits (NIST SP 800-38D §8.2.2, RBG-based IV); pass one only in tests.
    """
    if len(k_room) != KEY_SIZE:
        raise ValueError("k_room must be 32 bytes")
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    elif len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 12 bytes")
    return nonce, AESGCM(k_room).encrypt(nonce, plaintext, header.aad())


def open_envelope(k_room: bytes, header: EnvelopeHeader, nonce: bytes, ciphertext: bytes) -> bytes:
    """Authenticate and decrypt; raises :class:`InvalidEnvelope` on any failure."""
    try:
        if len(k_room) != KEY_SIZE:
            raise InvalidEnvelope("k_room must be 32 bytes")
        if not isinstance(nonce, bytes | bytearray) or len(nonce) != NONCE_SIZE:
            raise InvalidEnvelope("nonce must be 12 bytes")
        if not isinstance(ciphertext, bytes | bytearray) or len(ciphertext) < TAG_SIZE:
            raise InvalidEnvelope("ciphertext shorter than the tag")
        aad = header.aad()
        return AESGCM(bytes(k_room)).decrypt(bytes(nonce), bytes(ciphertext), aad)
    except InvalidEnvelope:
        raise
    except (InvalidTag, ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise InvalidEnvelope("envelope does not authenticate") from exc


class ReplayGuard:
    """Per-receiver replay check (docs/PROTOCOL.md, Sealed messages): ``seq`` grows per sender.

    :meth:`check` before opening, :meth:`commit` only once the envelope authenticated, so that a
    forged envelope with a huge ``seq`` cannot lock a sender out.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def check(self, sender: str, seq: int) -> bool:
        last = self._last.get(sender)
        return last is None or seq > last

    def commit(self, sender: str, seq: int) -> None:
        last = self._last.get(sender)
        if last is None or seq > last:
            self._last[sender] = seq


def b64(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Strict RFC 4648 §4 decoding: alphabet, padding and canonical trailing bits enforced."""
    if not isinstance(text, str):
        raise ValueError("base64 input must be a string")
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("invalid base64") from exc
    if base64.b64encode(data).decode("ascii") != text:  # §3.5: non-zero pad bits are refused
        raise ValueError("non-canonical base64")
    return data


@dataclass(frozen=True)
class Sealed:
    """An authenticated, opened envelope from another member."""

    sender: str
    to: str
    epoch: int
    seq: int
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)
