"""e2ee.roomcrypto: vectors byte for byte, round trips, tampering, parameter policy,
and the Python ↔ JavaScript cross-check (node runs web/js/roomcrypto.js)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee import roomcrypto as rc
from e2ee.roomcrypto import EnvelopeHeader, InvalidEnvelope, KdfParams

ROOT = Path(__file__).resolve().parent.parent
VECTORS_PATH = ROOT / "tests" / "vectors" / "roomcrypto.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
CROSS_SCRIPT = ROOT / "web" / "test" / "roomcrypto_cross.mjs"
MIB = 1024 * 1024


def _generator() -> ModuleType:
    path = ROOT / "tests" / "vectors" / "make_roomcrypto_vectors.py"
    spec = importlib.util.spec_from_file_location("make_roomcrypto_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _header(obj: dict[str, Any]) -> EnvelopeHeader:
    return EnvelopeHeader(
        room=obj["room"], epoch=obj["epoch"], sender=obj["sender"], to=obj["to"],
        seq=obj["seq"], v=obj["v"],
    )  # fmt: skip


# --- vectors -------------------------------------------------------------------------------


def test_vectors_file_matches_fresh_generator_run() -> None:
    assert VECTORS_PATH.read_text(encoding="utf-8") == _generator().render()


@pytest.mark.parametrize("case", VECTORS["kdf"], ids=lambda c: repr(c["password"]))
def test_kdf_vectors(case: dict[str, Any]) -> None:
    params = KdfParams.from_json(case["params"])
    assert params.salt.hex() == case["salt"]
    assert params.to_json() == case["params"]  # the exact wire form, salt included
    key = rc.password_key(case["password"], params)
    assert key.hex() == case["K"]
    keys = rc.room_keys(key, case["room"])
    assert keys.k_room.hex() == case["k_room"]
    assert keys.adm_seed.hex() == case["adm_seed"]
    assert keys.adm_pk.hex() == case["adm_pk"]


def test_kdf_vectors_include_nfc_equivalents() -> None:
    by_password = {c["password"]: c["K"] for c in VECTORS["kdf"]}
    nfd, nfc = "pa\u0308sswo\u0308rd 🔑", "p\u00e4ssw\u00f6rd 🔑"
    assert nfd != nfc and by_password[nfd] == by_password[nfc]


def test_kdf_vectors_show_the_salt_matters() -> None:
    # Same password and room, another salt: another K and another admission key, so a table
    # precomputed for one salt is useless against a room with another.
    first, other = VECTORS["kdf"][0], VECTORS["kdf"][-1]
    assert (first["password"], first["room"]) == (other["password"], other["room"])
    assert first["salt"] != other["salt"]
    assert first["K"] != other["K"] and first["adm_pk"] != other["adm_pk"]


@pytest.mark.parametrize("case", VECTORS["kdf_invalid"], ids=lambda c: json.dumps(c["params"]))
def test_kdf_invalid_vectors(case: dict[str, Any]) -> None:
    expected: type[Exception] = {
        "weak": rc.WeakKdfParams,
        "excessive": rc.ExcessiveKdfParams,
        "malformed": ValueError,
    }[case["error"]]
    with pytest.raises(expected) as err:
        KdfParams.from_json(case["params"])
    if case["error"] == "malformed":
        assert not isinstance(err.value, rc.WeakKdfParams | rc.ExcessiveKdfParams)


@pytest.mark.parametrize("case", VECTORS["join"], ids=lambda c: c["conn"])
def test_join_vectors(case: dict[str, Any]) -> None:
    nonce = bytes.fromhex(case["nonce"])
    args = (case["origin"], case["room"], nonce, case["conn"])
    transcript = rc.join_transcript(*args)
    assert transcript.hex() == case["transcript"]
    # The layout PROTOCOL.md gives: label without NUL, then u16-length-prefixed fields, the
    # nonce as its 32 raw bytes (not its base64 text).
    label = b"sealroom/v1/join"
    assert transcript.startswith(label + len(case["origin"].encode()).to_bytes(2, "big"))
    assert (len(nonce).to_bytes(2, "big") + nonce) in transcript
    assert rc.b64(nonce).encode() not in transcript
    seed, pk = bytes.fromhex(case["adm_seed"]), bytes.fromhex(case["adm_pk"])
    sig = rc.sign_join(seed, *args)
    assert sig.hex() == case["sig"]
    assert rc.verify_join(pk, sig, *args) is True


@pytest.mark.parametrize("case", VECTORS["envelope"], ids=lambda c: c["header"]["sender"])
def test_envelope_vectors(case: dict[str, Any]) -> None:
    header = _header(case["header"])
    assert header.aad().hex() == case["aad"]
    assert bytes(header) == header.aad()
    assert EnvelopeHeader.parse(header.aad()) == header
    k_room, nonce = bytes.fromhex(case["k_room"]), bytes.fromhex(case["nonce"])
    plaintext = bytes.fromhex(case["plaintext"])
    assert rc.seal(k_room, header, plaintext, nonce) == (nonce, bytes.fromhex(case["ciphertext"]))
    opened = rc.open_envelope(k_room, header, nonce, bytes.fromhex(case["ciphertext"]))
    assert opened == plaintext


def test_b64_vectors() -> None:
    for case in VECTORS["b64"]:
        data = bytes.fromhex(case["bytes"])
        assert rc.b64(data) == case["text"]
        assert rc.unb64(case["text"]) == data


def test_hkdf_rfc5869_a3_zero_length_salt_and_info() -> None:
    # RFC 5869 Appendix A.3 (SHA-256, salt and info empty).
    okm = rc.hkdf_sha256(bytes([0x0B] * 22), b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


# --- KDF parameter policy --------------------------------------------------------------------


SALT = bytes(range(16))
SALT_B64 = "AAECAwQFBgcICQoLDA0ODw=="


def test_kdf_params_json_is_exactly_alg_ops_mem_salt() -> None:
    params = KdfParams(salt=SALT)
    wire = {"alg": "argon2id13", "ops": 2, "mem": 64 * MIB, "salt": SALT_B64}
    assert params.to_json() == wire
    assert list(params.to_json()) == ["alg", "ops", "mem", "salt"]
    assert KdfParams.from_json(wire) == params
    rc.check_kdf_params(KdfParams(salt=SALT, opslimit=16, memlimit=1024 * MIB))  # the ceiling


def test_generated_params_have_a_fresh_random_salt() -> None:
    salts = {KdfParams.generate().salt for _ in range(32)}
    assert len(salts) == 32 and all(len(s) == rc.SALT_SIZE == 16 for s in salts)
    fresh = KdfParams.generate()
    assert (fresh.alg, fresh.opslimit, fresh.memlimit) == ("argon2id13", 2, 64 * MIB)
    assert KdfParams.from_json(fresh.to_json()) == fresh
    assert not hasattr(rc, "room_salt")  # the salt is no longer a function of the room name


@pytest.mark.parametrize(
    "params",
    [
        KdfParams(salt=SALT, alg="argon2i13"),
        KdfParams(salt=SALT, alg="scrypt"),
        KdfParams(salt=SALT, opslimit=1),
        KdfParams(salt=SALT, opslimit=0),
        KdfParams(salt=SALT, memlimit=64 * MIB - 1),
        KdfParams(salt=SALT, memlimit=8 * 1024),
    ],
)
def test_weak_kdf_params_refused(params: KdfParams) -> None:
    with pytest.raises(rc.WeakKdfParams):
        rc.check_kdf_params(params)
    with pytest.raises(rc.WeakKdfParams):  # refused before any derivation
        rc.password_key("pw", params)
    with pytest.raises(rc.WeakKdfParams):
        KdfParams.from_json(params.to_json())


@pytest.mark.parametrize(
    "params",
    [
        KdfParams(salt=SALT, opslimit=17),
        KdfParams(salt=SALT, memlimit=1024 * MIB + 1),
        KdfParams(salt=SALT, opslimit=10**9),
    ],
)
def test_excessive_kdf_params_refused(params: KdfParams) -> None:
    with pytest.raises(rc.ExcessiveKdfParams):
        rc.check_kdf_params(params)
    with pytest.raises(rc.ExcessiveKdfParams):
        rc.password_key("pw", params)
    with pytest.raises(rc.ExcessiveKdfParams):
        KdfParams.from_json(params.to_json())


@pytest.mark.parametrize("salt", [b"", bytes(15), bytes(17), bytes(32), "not bytes"])
def test_salt_of_another_size_is_refused_before_derivation(salt: Any) -> None:
    params = KdfParams(salt=salt)
    with pytest.raises(ValueError):
        rc.check_kdf_params(params)
    with pytest.raises(ValueError):
        rc.password_key("pw", params)


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        "argon2id13",
        {"alg": "argon2id13", "ops": 2, "salt": SALT_B64},
        {"alg": "argon2id13", "ops": 2, "mem": 64 * MIB},  # version 1's form, without salt
        {"alg": "argon2id13", "ops": 2, "mem": 64 * MIB, "salt": SALT_B64, "p": 4},
        {"alg": "argon2id13", "ops": "2", "mem": 64 * MIB, "salt": SALT_B64},
        {"alg": "argon2id13", "ops": 2.0, "mem": 64 * MIB, "salt": SALT_B64},
        {"alg": "argon2id13", "ops": True, "mem": 64 * MIB, "salt": SALT_B64},
        {"alg": 13, "ops": 2, "mem": 64 * MIB, "salt": SALT_B64},
        {"alg": "argon2id13", "ops": 2, "mem": 64 * MIB, "salt": list(SALT)},
        {"alg": "argon2id13", "ops": 2, "mem": 64 * MIB, "salt": SALT.hex()},
    ],
)
def test_kdf_params_from_json_rejects_malformed(obj: object) -> None:
    with pytest.raises(ValueError):
        KdfParams.from_json(obj)


# --- admission -----------------------------------------------------------------------------

JOIN = VECTORS["join"][0]
JOIN_ARGS = (JOIN["origin"], JOIN["room"], bytes.fromhex(JOIN["nonce"]), JOIN["conn"])
JOIN_PK, JOIN_SIG = bytes.fromhex(JOIN["adm_pk"]), bytes.fromhex(JOIN["sig"])


def test_verify_join_rejects_any_changed_field() -> None:
    origin, room, nonce, conn = JOIN_ARGS
    assert rc.verify_join(JOIN_PK, JOIN_SIG, *JOIN_ARGS)
    assert not rc.verify_join(JOIN_PK, JOIN_SIG, "https://evil.example", room, nonce, conn)
    assert not rc.verify_join(JOIN_PK, JOIN_SIG, origin, room + "x", nonce, conn)
    assert not rc.verify_join(JOIN_PK, JOIN_SIG, origin, room, nonce[:-1] + b"\x00", conn)
    assert not rc.verify_join(JOIN_PK, JOIN_SIG, origin, room, nonce, conn + "2")
    # length prefixes keep field boundaries: moving a byte from room to origin changes the msg
    assert not rc.verify_join(JOIN_PK, JOIN_SIG, origin + room[:1], room[1:], nonce, conn)
    other_pk = bytes.fromhex(VECTORS["join"][1]["adm_pk"])
    assert not rc.verify_join(other_pk, JOIN_SIG, *JOIN_ARGS)
    for i in (0, 31, 32, 63):
        bad = bytearray(JOIN_SIG)
        bad[i] ^= 0x01
        assert not rc.verify_join(JOIN_PK, bytes(bad), *JOIN_ARGS)


def test_wrong_password_keys_fail_admission() -> None:
    # A joiner with another password derives another adm_seed: its signature must not verify.
    wrong = rc.room_keys(bytes(32), JOIN["room"])
    sig = rc.sign_join(wrong.adm_seed, *JOIN_ARGS)
    assert not rc.verify_join(JOIN_PK, sig, *JOIN_ARGS)
    assert rc.verify_join(wrong.adm_pk, sig, *JOIN_ARGS)


@pytest.mark.parametrize(
    ("pk", "sig"),
    [
        (b"", JOIN_SIG),
        (JOIN_PK[:31], JOIN_SIG),
        (JOIN_PK + b"\x00", JOIN_SIG),
        (JOIN_PK, b""),
        (JOIN_PK, JOIN_SIG[:63]),
        (JOIN_PK, JOIN_SIG + b"\x00"),
        (JOIN_PK, bytes(64)),
        (bytes(32), bytes(64)),
        (b"\xff" * 32, b"\xff" * 64),
        ("not bytes", JOIN_SIG),
        (JOIN_PK, None),
    ],
)
def test_verify_join_false_on_garbage(pk: Any, sig: Any) -> None:
    assert rc.verify_join(pk, sig, *JOIN_ARGS) is False


def test_verify_join_false_on_unencodable_fields() -> None:
    origin, room, nonce, conn = JOIN_ARGS
    assert rc.verify_join(JOIN_PK, JOIN_SIG, "x" * 70000, room, nonce, conn) is False
    assert rc.verify_join(JOIN_PK, JOIN_SIG, origin, "\ud800", nonce, conn) is False
    assert rc.verify_join(JOIN_PK, JOIN_SIG, origin, room, "nonce-as-str", conn) is False  # type: ignore[arg-type]


_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P


def _edwards_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """RFC 8032 §5.1.4 point addition (affine), for checking the small-order list."""
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return (
        (x1 * y2 + x2 * y1) * pow(1 + t, _P - 2, _P) % _P,
        (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P,
    )


def _recover_x(y: int) -> int | None:
    """RFC 8032 §5.1.3 step 3: a square root x of (y² − 1)/(d y² + 1), or None."""
    u = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(u, (_P + 3) // 8, _P)
    if (x * x - u) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    return None if (x * x - u) % _P else x


def _small_order_encodings() -> list[bytes]:
    out = []
    for y in sorted(rc._SMALL_ORDER_Y):
        x = _recover_x(y)
        assert x is not None  # on the curve
        point = (x, y)
        for _ in range(3):
            point = _edwards_add(point, point)
        assert point == (0, 1)  # [8]P is the identity: the list really is the 8-torsion
        for sign in (0, 1):
            out.append((y | sign << 255).to_bytes(32, "little"))
    return out


def test_small_order_admission_keys_refused() -> None:
    encodings = _small_order_encodings()
    assert len(encodings) == 10
    for pk in encodings:
        assert not rc.is_valid_admission_key(pk)
        assert not rc.verify_join(pk, bytes(64), *JOIN_ARGS)
    # the identity (01 00…) as key with identity R and S = 0 "verifies" in plain RFC 8032
    # cofactorless verification; refused here before the signature is even looked at
    identity = (1).to_bytes(32, "little")
    assert not rc.verify_join(identity, identity + bytes(32), *JOIN_ARGS)
    # non-canonical y (≥ p) is refused too, the real key is accepted
    assert not rc.is_valid_admission_key(_P.to_bytes(32, "little"))
    assert not rc.is_valid_admission_key((_P + 5).to_bytes(32, "little"))
    assert rc.is_valid_admission_key(JOIN_PK)
    assert all(rc.is_valid_admission_key(bytes.fromhex(c["adm_pk"])) for c in VECTORS["kdf"])


@settings(max_examples=200, deadline=None)
@given(
    pk=st.binary(max_size=40),
    sig=st.binary(max_size=70),
    origin=st.text(max_size=20),
    room=st.text(max_size=20),
    nonce=st.binary(max_size=40),
    conn=st.text(max_size=20),
)
def test_verify_join_never_raises(
    pk: bytes, sig: bytes, origin: str, room: str, nonce: bytes, conn: str
) -> None:
    assert rc.verify_join(pk, sig, origin, room, nonce, conn) is False


def test_verify_join_needs_no_pynacl() -> None:
    # The server imports verify_join: importing the module must not import libsodium bindings.
    code = (
        "import sys; sys.modules['nacl'] = None\n"
        "from e2ee.roomcrypto import verify_join\n"
        "print(verify_join(bytes(32), bytes(64), 'o', 'r', b'n', 'c'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- sealed envelopes ------------------------------------------------------------------------

ENV = VECTORS["envelope"][1]
ENV_KEY, ENV_NONCE = bytes.fromhex(ENV["k_room"]), bytes.fromhex(ENV["nonce"])
ENV_CT, ENV_HEADER = bytes.fromhex(ENV["ciphertext"]), _header(ENV["header"])


def test_seal_open_round_trip_random_nonce() -> None:
    header = EnvelopeHeader(room="lobby", epoch=3, sender="a", to="*", seq=7)
    n1, c1 = rc.seal(ENV_KEY, header, b"offer sdp")
    n2, c2 = rc.seal(ENV_KEY, header, b"offer sdp")
    assert len(n1) == 12 and n1 != n2 and c1 != c2
    assert len(c1) == len(b"offer sdp") + 16
    assert rc.open_envelope(ENV_KEY, header, n1, c1) == b"offer sdp"
    assert rc.open_envelope(ENV_KEY, header, n2, c2) == b"offer sdp"


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"room": "lobby"},
        {"room": ENV_HEADER.room + " "},
        {"epoch": 0},
        {"epoch": ENV_HEADER.epoch - 1},
        {"sender": "p-3"},
        {"to": "*"},
        {"to": "p-7"},
        {"seq": 0},
        {"seq": ENV_HEADER.seq - 1},
    ],
)
def test_open_rejects_tampered_header(change: dict[str, Any]) -> None:
    assert rc.open_envelope(ENV_KEY, ENV_HEADER, ENV_NONCE, ENV_CT)  # the untouched one opens
    with pytest.raises(InvalidEnvelope):
        rc.open_envelope(ENV_KEY, dataclasses.replace(ENV_HEADER, **change), ENV_NONCE, ENV_CT)


def test_open_rejects_every_single_bit_flip_of_nonce_and_ciphertext() -> None:
    for i in range(len(ENV_NONCE) * 8):
        bad = bytearray(ENV_NONCE)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InvalidEnvelope):
            rc.open_envelope(ENV_KEY, ENV_HEADER, bytes(bad), ENV_CT)
    for i in range(len(ENV_CT) * 8):
        bad = bytearray(ENV_CT)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InvalidEnvelope):
            rc.open_envelope(ENV_KEY, ENV_HEADER, ENV_NONCE, bytes(bad))


@pytest.mark.parametrize(
    ("key", "nonce", "ct"),
    [
        (bytes(32), ENV_NONCE, ENV_CT),  # wrong key (other password)
        (ENV_KEY[:16], ENV_NONCE, ENV_CT),  # AES-128 key length must not be accepted
        (ENV_KEY, ENV_NONCE[:11], ENV_CT),
        (ENV_KEY, ENV_NONCE + b"\x00", ENV_CT),
        (ENV_KEY, b"", ENV_CT),
        (ENV_KEY, ENV_NONCE, ENV_CT[:-1]),
        (ENV_KEY, ENV_NONCE, ENV_CT + b"\x00"),
        (ENV_KEY, ENV_NONCE, ENV_CT[:15]),
        (ENV_KEY, ENV_NONCE, b""),
    ],
)
def test_open_rejects_wrong_key_and_lengths(key: bytes, nonce: bytes, ct: bytes) -> None:
    with pytest.raises(InvalidEnvelope):
        rc.open_envelope(key, ENV_HEADER, nonce, ct)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=40), nonce=st.binary(max_size=20), ct=st.binary(max_size=80))
def test_open_envelope_raises_only_invalid_envelope(key: bytes, nonce: bytes, ct: bytes) -> None:
    with pytest.raises(InvalidEnvelope):
        rc.open_envelope(key, ENV_HEADER, nonce, ct)


@settings(max_examples=100, deadline=None)
@given(
    room=st.text(max_size=30),
    epoch=st.integers(0, 2**32 - 1),
    sender=st.text(max_size=30),
    to=st.text(max_size=30),
    seq=st.integers(0, 2**64 - 1),
    plaintext=st.binary(max_size=200),
)
def test_header_and_seal_round_trip(
    room: str, epoch: int, sender: str, to: str, seq: int, plaintext: bytes
) -> None:
    try:
        header = EnvelopeHeader(room=room, epoch=epoch, sender=sender, to=to, seq=seq)
    except ValueError:  # lone surrogates cannot be UTF-8: refused at construction
        return
    assert EnvelopeHeader.parse(header.aad()) == header
    nonce, ct = rc.seal(ENV_KEY, header, plaintext)
    assert rc.open_envelope(ENV_KEY, header, nonce, ct) == plaintext


@pytest.mark.parametrize(
    "fields",
    [
        {"epoch": -1},
        {"epoch": 2**32},
        {"seq": -1},
        {"seq": 2**64},
        {"v": 256},
        {"seq": True},
        {"room": "x" * 65536},
        {"sender": "\udc80"},
        {"to": None},
    ],
)
def test_header_refuses_out_of_range_fields(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"room": "r", "epoch": 0, "sender": "a", "to": "*", "seq": 0}
    with pytest.raises(ValueError):
        EnvelopeHeader(**(base | fields))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"sealroom/v1/env",
        bytes.fromhex(ENV["aad"])[:-1],
        bytes.fromhex(ENV["aad"]) + b"\x00",
        b"sealroom/v2/env" + bytes.fromhex(ENV["aad"])[15:],
    ],
)
def test_header_parse_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        EnvelopeHeader.parse(data)


def test_seal_refuses_bad_key_or_nonce() -> None:
    with pytest.raises(ValueError):
        rc.seal(ENV_KEY[:16], ENV_HEADER, b"x")
    with pytest.raises(ValueError):
        rc.seal(ENV_KEY, ENV_HEADER, b"x", nonce=bytes(8))


def test_replay_guard() -> None:
    guard = rc.ReplayGuard()
    assert guard.check("a", 0) and guard.check("a", 5)
    guard.commit("a", 5)
    assert not guard.check("a", 5) and not guard.check("a", 4) and not guard.check("a", 0)
    assert guard.check("a", 6)
    assert guard.check("b", 1)  # per sender
    guard.commit("a", 3)  # a late commit never moves the window back
    assert not guard.check("a", 4)
    assert not hasattr(guard, "forget")  # no way to reset a sender: ids are never reused


def test_replay_guard_check_then_commit_after_authentication() -> None:
    # A forged envelope with a huge seq fails to open and so must not advance the guard.
    guard = rc.ReplayGuard()
    forged = dataclasses.replace(ENV_HEADER, seq=2**64 - 1)
    assert guard.check(forged.sender, forged.seq)
    with pytest.raises(InvalidEnvelope):
        rc.open_envelope(ENV_KEY, forged, ENV_NONCE, ENV_CT)
    assert guard.check(ENV_HEADER.sender, ENV_HEADER.seq)
    rc.open_envelope(ENV_KEY, ENV_HEADER, ENV_NONCE, ENV_CT)
    guard.commit(ENV_HEADER.sender, ENV_HEADER.seq)
    assert not guard.check(ENV_HEADER.sender, ENV_HEADER.seq)


# --- base64 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["Zg", "Zg=", "Zh==", "Zm9v\n", " Zm9v", "Zm9v====", "Zm-v", "Zm_v", "Zm9v=Zm9v", "é"]
)
def test_unb64_strict(text: str) -> None:
    with pytest.raises(ValueError):
        rc.unb64(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_b64_round_trip(data: bytes) -> None:
    assert rc.unb64(rc.b64(data)) == data


# --- Python ↔ JavaScript --------------------------------------------------------------------


def _node(request: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node") or "/usr/bin/node"
    if not os.path.exists(node):
        pytest.fail("node is missing: run the suite through ./dev test, which installs it")
    out = subprocess.run(
        [node, str(CROSS_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_cross_language_seal_sign_and_kdf() -> None:
    k_room = os.urandom(32)
    header = EnvelopeHeader(room="café ☕", epoch=2, sender="p-1", to="*", seq=41)
    header_json = dataclasses.asdict(header)
    py_plain = "from python ✓".encode()
    py_nonce, py_ct = rc.seal(k_room, header, py_plain)
    K = os.urandom(32)
    py_keys = rc.room_keys(K, header.room)
    join_nonce = os.urandom(32)
    password = "pässwörd 🔑 " + os.urandom(4).hex()
    params = KdfParams.generate()

    result = _node(
        {
            "k_room": rc.b64(k_room),
            "header": header_json,
            "open": {"nonce": rc.b64(py_nonce), "ciphertext": rc.b64(py_ct)},
            "seal": {"plaintext": rc.b64("from js ✓".encode())},
            "join": {
                "K": rc.b64(K),
                "origin": "https://localhost",
                "room": header.room,
                "nonce": rc.b64(join_nonce),
                "conn": "c-9",
            },
            "kdf": {"password": password, "params": params.to_json()},
            "generate": True,
        }
    )
    # Python sealed → JS opened
    assert rc.unb64(result["opened"]) == py_plain
    # JS sealed → Python opens; a changed header still fails on the JS-made envelope
    js_nonce, js_ct = rc.unb64(result["sealed"]["nonce"]), rc.unb64(result["sealed"]["ciphertext"])
    assert rc.open_envelope(k_room, header, js_nonce, js_ct) == "from js ✓".encode()
    with pytest.raises(InvalidEnvelope):
        rc.open_envelope(k_room, dataclasses.replace(header, seq=42), js_nonce, js_ct)
    # same sub-keys of a random K in both languages
    js_keys = result["room_keys"]
    assert rc.unb64(js_keys["k_room"]) == py_keys.k_room
    assert rc.unb64(js_keys["adm_seed"]) == py_keys.adm_seed
    assert rc.unb64(js_keys["adm_pk"]) == py_keys.adm_pk
    # JS signed → Python (the server's verifier) accepts it, and only for that transcript
    sig = rc.unb64(result["sig"])
    args = ("https://localhost", header.room, join_nonce, "c-9")
    assert rc.verify_join(py_keys.adm_pk, sig, *args)
    assert sig == rc.sign_join(py_keys.adm_seed, *args)  # Ed25519 is deterministic
    assert not rc.verify_join(
        py_keys.adm_pk, sig, "https://localhost", header.room, join_nonce, "c-8"
    )
    # a fresh random password and salt: the browser derives the same K as Python
    assert rc.unb64(result["K"]) == rc.password_key(password, params)
    # a JS-made room's parameters parse in Python: a fresh 16-byte salt, the default cost
    js_params = KdfParams.from_json(result["generated"])
    assert (js_params.opslimit, js_params.memlimit) == (2, 64 * MIB)
    assert len(js_params.salt) == 16 and js_params.salt != params.salt


# --- real browser ----------------------------------------------------------------------------

BROWSER_CHECK = """
async (args) => {
  const rc = await import("/js/roomcrypto.js");
  const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
  const unhex = (h) => new Uint8Array(h.match(/../g)?.map((x) => parseInt(x, 16)) ?? []);
  const { kdf, join, env, sealed } = args;
  const K = await rc.passwordKey(kdf.password, rc.KdfParams.fromJson(kdf.params));
  const keys = await rc.roomKeys(K, kdf.room);
  const sig = await rc.signJoin(unhex(join.adm_seed), join.origin, join.room,
                                unhex(join.nonce), join.conn);
  const header = new rc.EnvelopeHeader(env.header);
  const ct = await rc.seal(unhex(env.k_room), header, unhex(env.plaintext), unhex(env.nonce));
  const opened = await rc.openEnvelope(unhex(env.k_room), new rc.EnvelopeHeader(sealed.header),
                                       rc.unb64(sealed.nonce), rc.unb64(sealed.ciphertext));
  let tampered = "accepted";
  try {
    await rc.openEnvelope(unhex(env.k_room), new rc.EnvelopeHeader({...sealed.header, seq: 0}),
                          rc.unb64(sealed.nonce), rc.unb64(sealed.ciphertext));
  } catch (err) { tampered = err.name; }
  return { K: hex(K), k_room: hex(keys.kRoom), adm_pk: hex(keys.admPk), sig: hex(sig),
           ciphertext: hex(ct.ciphertext), opened: rc.b64(opened), tampered,
           secure: window.isSecureContext };
}
"""


@pytest.mark.browser
async def test_browser_loads_vendored_libsodium_and_matches_vectors(chromium: Any) -> None:
    from aiohttp import web

    app = web.Application()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>roomcrypto</title>", content_type="text/html"
        )

    app.router.add_get("/", page)
    app.router.add_static("/", ROOT / "web")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        ctx = await chromium()
        tab = await ctx.new_page()
        await tab.goto(f"http://127.0.0.1:{port}/")
        kdf, join, env = VECTORS["kdf"][1], VECTORS["join"][0], VECTORS["envelope"][0]
        k_room = bytes.fromhex(env["k_room"])
        header = EnvelopeHeader(room="lobby", epoch=9, sender="py", to="*", seq=77)
        nonce, ct = rc.seal(k_room, header, "python → chromium ✓".encode())
        sealed = {
            "header": dataclasses.asdict(header),
            "nonce": rc.b64(nonce),
            "ciphertext": rc.b64(ct),
        }
        result = await tab.evaluate(
            BROWSER_CHECK, {"kdf": kdf, "join": join, "env": env, "sealed": sealed}
        )
    finally:
        await runner.cleanup()
    assert result["secure"] is True
    assert result["K"] == kdf["K"]  # NFD-typed password: NFC normalisation in the browser too
    assert result["k_room"] == kdf["k_room"]
    assert result["adm_pk"] == kdf["adm_pk"]
    assert result["sig"] == join["sig"]
    assert result["ciphertext"] == env["ciphertext"]
    assert rc.unb64(result["opened"]) == "python → chromium ✓".encode()
    assert result["tampered"] == "InvalidEnvelope"
