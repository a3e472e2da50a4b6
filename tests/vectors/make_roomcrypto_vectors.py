"""Generate tests/vectors/roomcrypto.json, the room-crypto vectors shared by Python and JS.

Deliberately written WITHOUT e2ee.roomcrypto: it restates docs/PROTOCOL.md ("Keys",
"Connecting and joining", "Sealed messages") from the primitives (hashlib/hmac for SHA-256 and
RFC 5869 HKDF, libsodium through PyNaCl for Argon2id and Ed25519, `cryptography` for
AES-256-GCM), so the vectors check the module instead of echoing it. Everything is
deterministic (fixed salts and nonces; Ed25519 signatures are deterministic).

    python tests/vectors/make_roomcrypto_vectors.py           # rewrite the JSON file
    python tests/vectors/make_roomcrypto_vectors.py --check   # exit 1 if the file has drifted
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import sys
import unicodedata
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_pwhash_alg, crypto_sign_seed_keypair
from nacl.bindings import crypto_pwhash_ALG_ARGON2ID13 as ALG_ARGON2ID13
from nacl.signing import SigningKey

PATH = Path(__file__).with_name("roomcrypto.json")

MIB = 1024 * 1024

# (password as typed, room, salt, ops, mem). The salt is the room creator's 16 random bytes,
# fixed here. The second is "pässwörd 🔑" typed in NFD (decomposed umlauts): NFC normalisation
# must make it derive the same K as the third, typed in NFC. The last has the first one's
# password and room with another salt: another K, so another adm_pk.
SALT_A = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SALT_B = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
KDF_CASES: list[tuple[str, str, bytes, int, int]] = [
    ("correct horse battery staple", "lobby", SALT_A, 2, 64 * MIB),
    ("pa\u0308sswo\u0308rd 🔑", "café ☕ 会议室", SALT_B, 2, 64 * MIB),
    ("p\u00e4ssw\u00f6rd 🔑", "café ☕ 会议室", SALT_B, 2, 64 * MIB),
    ("", "r", bytes(16), 3, 64 * MIB),
    ("correct horse battery staple", "lobby", SALT_B, 2, 64 * MIB),
]

# (origin, nonce, conn), signed with the admission key of KDF_CASES[i]. The last one looks like
# a real challenge: conn is the server's token_urlsafe(12), the origin has no default port.
JOIN_CASES: list[tuple[str, bytes, str]] = [
    ("https://localhost:8443", bytes(range(32)), "c-1"),
    ("http://127.0.0.1:8080", bytes.fromhex("ff" * 32), "conn/ünï"),
    ("https://meet.example.org", bytes.fromhex("a5" * 31 + "00"), "q4Zt9cX1-_bN2kPw"),
]

# Wire forms of KDF parameters that every implementation must refuse, and how: "malformed"
# (server: bad-message), "weak" (weak-kdf) or "excessive" (excessive-kdf).
_SALT = base64.b64encode(SALT_A).decode()
_OK: dict[str, Any] = {"alg": "argon2id13", "ops": 2, "mem": 64 * MIB, "salt": _SALT}
KDF_INVALID: list[tuple[Any, str]] = [
    ({k: v for k, v in _OK.items() if k != "salt"}, "malformed"),
    ({**_OK, "salt": None}, "malformed"),
    ({**_OK, "salt": base64.b64encode(bytes(15)).decode()}, "malformed"),
    ({**_OK, "salt": base64.b64encode(bytes(17)).decode()}, "malformed"),
    ({**_OK, "salt": "AAECAwQFBgcICQoLDA0ODw"}, "malformed"),  # no padding
    ({**_OK, "salt": "AAECAwQFBgcICQoLDA0ODx=="}, "malformed"),  # non-zero pad bits
    ({**_OK, "salt": "AAECAwQFBgcICQoLDA0ODw==\n"}, "malformed"),
    ({**_OK, "salt": "AAECAwQFBgcICQoLDA0OD-=="}, "malformed"),  # URL-safe alphabet
    ({**_OK, "p": 1}, "malformed"),
    ({**_OK, "ops": "2"}, "malformed"),
    ({**_OK, "ops": 2.5}, "malformed"),
    ({**_OK, "ops": True}, "malformed"),
    ({**_OK, "alg": 13}, "malformed"),
    ({**_OK, "alg": "argon2i13"}, "weak"),
    ({**_OK, "ops": 1}, "weak"),
    ({**_OK, "mem": 64 * MIB - 1}, "weak"),
    ({**_OK, "ops": 17}, "excessive"),
    ({**_OK, "mem": 1024 * MIB + 1}, "excessive"),
]

# (room, epoch, sender, to, seq, plaintext, nonce)
ENVELOPE_CASES: list[tuple[str, int, str, str, int, bytes, bytes]] = [
    ("lobby", 0, "alice", "*", 1, b'{"type":"hello"}', bytes(12)),
    ("café ☕ 会议室", 4294967295, "p-7", "p-3", 2**53 - 1, "ünïcödé ✓".encode(), bytes(range(12))),
    ("lobby", 1, "bob", "alice", 0, b"", bytes.fromhex("a5" * 12)),
]

B64_CASES: list[bytes] = [b"", b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", bytes(range(256))]


def argon2id(password: str, salt: bytes, ops: int, mem: int) -> bytes:
    pw = unicodedata.normalize("NFC", password).encode()
    return crypto_pwhash_alg(32, pw, salt, ops, mem, ALG_ARGON2ID13)


def hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 §2.2 extract (empty salt → HMAC key of zero length) and §2.3 expand."""
    prk = hmac.new(b"", ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range((length + 31) // 32):
        block = hmac.new(prk, block + info + bytes([i + 1]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


def lp(x: str | bytes) -> bytes:
    data = x.encode() if isinstance(x, str) else x
    return struct.pack(">H", len(data)) + data


def sub_keys(k: bytes, room: str) -> dict[str, str]:
    k_room = hkdf(k, b"sealroom/v1/k_room\x00" + room.encode())
    adm_seed = hkdf(k, b"sealroom/v1/admission\x00" + room.encode())
    adm_pk, _sk = crypto_sign_seed_keypair(adm_seed)
    return {"k_room": k_room.hex(), "adm_seed": adm_seed.hex(), "adm_pk": adm_pk.hex()}


def build() -> dict[str, Any]:
    kdf: list[dict[str, Any]] = []
    for password, room, salt, ops, mem in KDF_CASES:
        k = argon2id(password, salt, ops, mem)
        kdf.append(
            {
                "password": password,
                "room": room,
                "params": {
                    "alg": "argon2id13",
                    "ops": ops,
                    "mem": mem,
                    "salt": base64.b64encode(salt).decode(),
                },
                "salt": salt.hex(),
                "K": k.hex(),
                **sub_keys(k, room),
            }
        )

    join = []
    for i, (origin, nonce, conn) in enumerate(JOIN_CASES):
        base = kdf[i]
        seed = bytes.fromhex(base["adm_seed"])
        # The label has no NUL; the nonce goes in as its 32 raw bytes.
        transcript = b"sealroom/v1/join" + lp(origin) + lp(base["room"]) + lp(nonce) + lp(conn)
        join.append(
            {
                "adm_seed": base["adm_seed"],
                "adm_pk": base["adm_pk"],
                "origin": origin,
                "room": base["room"],
                "nonce": nonce.hex(),
                "conn": conn,
                "transcript": transcript.hex(),
                "sig": SigningKey(seed).sign(transcript).signature.hex(),
            }
        )

    envelope = []
    for i, (room, epoch, sender, to, seq, plaintext, nonce) in enumerate(ENVELOPE_CASES):
        k_room = bytes.fromhex(kdf[i]["k_room"])
        aad = (
            b"sealroom/v1/env"
            + struct.pack(">B", 1)
            + lp(room)
            + struct.pack(">I", epoch)
            + lp(sender)
            + lp(to)
            + struct.pack(">Q", seq)
        )
        envelope.append(
            {
                "k_room": k_room.hex(),
                "header": {
                    "v": 1,
                    "room": room,
                    "epoch": epoch,
                    "sender": sender,
                    "to": to,
                    "seq": seq,
                },
                "plaintext": plaintext.hex(),
                "nonce": nonce.hex(),
                "aad": aad.hex(),
                "ciphertext": AESGCM(k_room).encrypt(nonce, plaintext, aad).hex(),
            }
        )

    b64 = [{"bytes": data.hex(), "text": base64.b64encode(data).decode()} for data in B64_CASES]
    join_resume, resume_credential = resume_vectors(kdf)
    return {
        "comment": "Generated by tests/vectors/make_roomcrypto_vectors.py; do not edit by hand. "
        "Bytes are hex; text fields are the exact strings (passwords before NFC).",
        "kdf": kdf,
        "kdf_invalid": [{"params": params, "error": error} for params, error in KDF_INVALID],
        "join": join,
        "join_resume": join_resume,
        "resume_credential": resume_credential,
        "envelope": envelope,
        "b64": b64,
    }


# docs/PROTOCOL.md "Resuming": (origin, nonce, conn, this membership's resume seed, the
# previous membership's resume seed or None), signed with KDF_CASES[0]'s admission key.
RESUME_JOIN_CASES: list[tuple[str, bytes, str, bytes, bytes | None]] = [
    ("https://localhost:8443", bytes(range(32)), "c-1", bytes([0x11]) * 32, None),
    ("https://meet.example.org", bytes.fromhex("5a" * 32), "q4Zt9cX1-_bN2kPw",
     bytes([0x33]) * 32, bytes([0x11]) * 32),
]
RESUME_SERVER_KEY = bytes(range(32, 64))


def resume_vectors(kdf: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    base = kdf[0]
    adm_seed = bytes.fromhex(base["adm_seed"])
    joins = []
    for origin, nonce, conn, seed, previous in RESUME_JOIN_CASES:
        resume_pk, _ = crypto_sign_seed_keypair(seed)
        transcript = (b"sealroom/v1/join" + lp(origin) + lp(base["room"]) + lp(nonce) + lp(conn)
                      + lp(resume_pk))
        case: dict[str, Any] = {
            "adm_seed": base["adm_seed"], "adm_pk": base["adm_pk"], "origin": origin,
            "room": base["room"], "nonce": nonce.hex(), "conn": conn,
            "resume_seed": seed.hex(), "resume_pk": resume_pk.hex(),
            "transcript": transcript.hex(),
            "sig": SigningKey(adm_seed).sign(transcript).signature.hex(),
        }
        if previous is not None:
            prev_pk, _ = crypto_sign_seed_keypair(previous)
            case.update(previous_resume_seed=previous.hex(), previous_resume_pk=prev_pk.hex(),
                        resume_sig=SigningKey(previous).sign(transcript).signature.hex())
        joins.append(case)

    creds = []
    for room, locked, index, expires in [("lobby", True, 3, 1763757600),
                                         ("café ☕ 会议室", False, 65535, 4102444800)]:
        params = next(k for k in kdf if k["room"] == room)["params"]
        resume_pk, _ = crypto_sign_seed_keypair(bytes([0x11]) * 32)
        adm_pk = bytes.fromhex(next(k for k in kdf if k["room"] == room)["adm_pk"])
        created_ms = 1763754000123
        body = (struct.pack(">B", 1) + lp(room) + lp(params["alg"])
                + struct.pack(">II", params["ops"], params["mem"])
                + base64.b64decode(params["salt"]) + adm_pk
                + struct.pack(">QBH", created_ms, 1 if locked else 0, index) + resume_pk
                + struct.pack(">Q", expires))
        tag = hmac.new(RESUME_SERVER_KEY, b"sealroom/v1/resume" + body, hashlib.sha256).digest()
        creds.append({
            "server_key": RESUME_SERVER_KEY.hex(), "room": room, "kdf": params,
            "adm_pk": adm_pk.hex(), "created_at_ms": created_ms, "locked": locked,
            "index": index, "resume_pk": resume_pk.hex(), "expires": expires,
            "body": body.hex(), "tag": tag.hex(),
            "cred": base64.b64encode(body + tag).decode(),
        })
    return joins, creds


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PATH.read_text(encoding="utf-8") != text:
            print(f"{PATH} differs from a fresh run", file=sys.stderr)
            return 1
        return 0
    PATH.write_text(text, encoding="utf-8")
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
