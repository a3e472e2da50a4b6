"""e2ee.sframe: RFC 9605 vectors, the FORMAT.md check value, the frame rules, the
key policy (FORMAT.md, Key policy) tried the way a hostile server would, and both
directions against the browser worker (e2ee-worker/worker.js run by Node)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee import sframe
from e2ee.sframe import (
    CTR_LIMIT,
    GRACE,
    MAX_STEP,
    REPLAY_WINDOW,
    EncryptedFrame,
    FrameDecryptor,
    FrameEncryptor,
    FrameRejected,
    KeyId,
    KeyRefused,
    KidKeys,
    Kind,
    ReplayWindow,
    SendKey,
    SFrameHeader,
    UnknownKey,
    derive_key_salt,
    make_nonce,
    ratchet,
    sframe_secret,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
WORKER = ROOT / "e2ee-worker" / "worker.js"
NODE = shutil.which("node") or "/usr/bin/node"

RFC = json.loads((VECTORS / "sframe_rfc9605.json").read_text())
OURS = json.loads((VECTORS / "sframe.json").read_text())


def vp8_key(n: int = 200) -> bytes:
    return bytes.fromhex("5043009d012a8002e001") + os.urandom(n - 10)


def vp8_delta(n: int = 120) -> bytes:
    return b"\xd1\x02\x00" + os.urandom(n - 3)


def opus(n: int = 60) -> bytes:
    return b"\x78" + os.urandom(n - 1)


def pair(sender: int = 3) -> tuple[FrameEncryptor, FrameDecryptor]:
    enc = FrameEncryptor()
    key = enc.set_key(sender)
    dec = FrameDecryptor()
    dec.set_key("alice", key.sender, key.generation, key.step, key.key)
    return enc, dec


def not_passed(dec: FrameDecryptor, kind: Kind, data: bytes) -> bool:
    try:
        dec.decrypt(kind, "alice", data)
    except FrameRejected:  # includes UnknownKey: held ≤ 1 s by the browser, then dropped
        return True
    return False


# ------------------------------------------------------------------ known answers


def test_rfc9605_headers() -> None:
    assert len(RFC["header"]) == 289
    for case in RFC["header"]:
        kid, ctr = int(case["kid"], 16), int(case["ctr"], 16)
        assert bytes(SFrameHeader(kid, ctr)).hex() == case["encoded"]
        assert SFrameHeader.parse(bytes.fromhex(case["encoded"])) == SFrameHeader(kid, ctr)


def test_rfc9605_suite_0x0004() -> None:
    [v] = RFC["sframe"]
    assert v["cipher_suite"] == 4
    kid, ctr = int(v["kid"], 16), int(v["ctr"], 16)
    base = bytes.fromhex(v["base_key"])
    assert sframe_secret(base).hex() == v["sframe_secret"]
    key, salt = derive_key_salt(base, kid)
    assert (key.hex(), salt.hex()) == (v["sframe_key"], v["sframe_salt"])
    assert make_nonce(salt, ctr).hex() == v["nonce"]
    keys = KidKeys(kid, key, salt)
    header, ciphertext = keys.seal(ctr, bytes.fromhex(v["metadata"]), bytes.fromhex(v["pt"]))
    assert (header + ciphertext).hex() == v["ct"]
    assert keys.open(header, ctr, bytes.fromhex(v["metadata"]), ciphertext).hex() == v["pt"]


def test_check_value_and_ratchet_from_design() -> None:
    keys = KidKeys.derive(bytes(range(32)), int(KeyId(7, 1, 0)))
    frame = bytes.fromhex("5043009d012a8002e001") + b"\x11" * 20
    enc = FrameEncryptor()
    enc.set_key(7, 1, key=bytes(range(32)))
    enc.counter = 1
    out = enc.encrypt("video", frame)
    assert out.hex() == (
        "5043009d012a8002e001"
        "05a936506f635732f35c1452cffbed91c3991a2c4e82ec2ceb7ed465c29acd728268a487"
        "b107000100"
        "05"
    )
    assert EncryptedFrame.parse("video", out).kid == keys.kid == 0x07000100
    assert ratchet(bytes(range(32))).hex() == (
        "1e31370b2f041d5c893dbba4b27bc3e67956a51ae6221a427445cab04059fd65"
    )


def test_vectors_are_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_sframe_vectors", VECTORS / "make_sframe_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (VECTORS / "sframe.json").read_text()


def test_generated_frames_decrypt() -> None:
    assert len(OURS["frames"]) >= 10
    for v in OURS["frames"]:
        dec = FrameDecryptor()
        dec.set_key(
            "p", v["sender"], v["generation"], v["receiver_step"], bytes.fromhex(v["receiver_key"])
        )
        assert dec.decrypt(v["kind"], "p", bytes.fromhex(v["out"])).hex() == v["frame"], v["name"]


# ------------------------------------------------------------------ rejections


@pytest.mark.parametrize(
    ("kind", "frame"), [("video", vp8_key(60)), ("video", vp8_delta(40)), ("audio", opus(30))]
)
def test_every_byte_change_and_truncation_is_rejected(kind: Kind, frame: bytes) -> None:
    enc, dec = pair()
    out = enc.encrypt(kind, frame)
    for i in range(len(out)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(out)
            bad[i] ^= mask
            assert not_passed(dec, kind, bytes(bad)), (i, mask)
    for n in range(1, len(out)):
        assert not_passed(dec, kind, out[:n])
        assert not_passed(dec, kind, out[n:])
    assert dec.decrypt(kind, "alice", b"") == b""  # an empty frame carries nothing
    assert dec.decrypt(kind, "alice", out) == frame


def test_replay() -> None:
    enc, dec = pair()
    frames = [enc.encrypt("audio", opus()) for _ in range(4)]
    dec.decrypt("audio", "alice", frames[3])
    dec.decrypt("audio", "alice", frames[1])  # late but inside the window
    for f in (frames[3], frames[1]):
        with pytest.raises(FrameRejected, match="replay"):
            dec.decrypt("audio", "alice", f)
    window = ReplayWindow()
    window.update(5000)
    assert not window.check(5000 - REPLAY_WINDOW)
    assert window.check(5001 - REPLAY_WINDOW)


def test_wrong_sender() -> None:
    enc, dec = pair()
    out = enc.encrypt("video", vp8_key())
    with pytest.raises(FrameRejected, match="wrong-sender"):
        dec.decrypt("video", "mallory", out)
    assert dec.decrypt("video", "alice", out)


def test_step_committed_only_after_verify() -> None:
    enc, dec = pair()
    step0, late0 = enc.encrypt("video", vp8_delta()), enc.encrypt("video", vp8_delta())
    enc.ratchet()
    step1 = enc.encrypt("video", vp8_delta())
    for _ in range(15):
        enc.ratchet()
    step16 = enc.encrypt("video", vp8_delta())
    forged = bytearray(step16)
    forged[5] ^= 1
    with pytest.raises(FrameRejected, match="auth-failed"):
        dec.decrypt("video", "alice", bytes(forged))
    # The forgery committed nothing: step 1 is still ahead of the committed step 0.
    assert dec.decrypt("video", "alice", step1)  # commits 1; 0 becomes the previous step
    assert dec.decrypt("video", "alice", step0)  # in flight across the ratchet
    assert dec.decrypt("video", "alice", step16)  # commits 16; 1 becomes the previous step
    # Step 0 is now below the committed step and not the previous one.
    with pytest.raises(FrameRejected, match="step-out-of-range"):
        dec.decrypt("video", "alice", late0)


def test_cleartext_and_unknown_key() -> None:
    _, dec = pair()
    for frame in [vp8_key(), vp8_delta(), opus()] * 50:
        kind: Kind = "audio" if frame[0] == 0x78 else "video"
        assert not_passed(dec, kind, frame)
    other = FrameEncryptor()
    other.set_key(9)
    with pytest.raises(UnknownKey):
        dec.decrypt("audio", "alice", other.encrypt("audio", opus()))


def test_non_canonical_header_with_valid_tag() -> None:
    enc, dec = pair()
    current = enc.current
    assert current is not None
    keys = KidKeys.derive(current.key, int(KeyId(3, 0, 0)))
    header = bytes([0xA8, 0x03, 0x00, 0x00, 0x05])  # CTR 5 as an extra byte: not minimal
    with pytest.raises(ValueError, match="non-canonical"):
        SFrameHeader.parse(header)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ct = AESGCM(keys.key).encrypt(make_nonce(keys.salt, 5), b"payload", header + b"a" + b"\x78")
    frame = b"\x78" + ct + header + bytes([len(header)])
    with pytest.raises(FrameRejected, match="bad-header"):
        dec.decrypt("audio", "alice", frame)
    for length in (0, 18, 255):
        with pytest.raises(FrameRejected, match="bad-header"):
            dec.decrypt("audio", "alice", frame[:-1] + bytes([length]))


def test_counter_overflow_refused() -> None:
    enc, _ = pair()
    enc.counter = CTR_LIMIT - 1
    assert EncryptedFrame.parse("audio", enc.encrypt("audio", opus())).ctr == CTR_LIMIT - 1
    enc.ratchet()
    with pytest.raises(FrameRejected, match="counter-exhausted"):
        enc.encrypt("audio", opus())


# ------------------------------------- key policy (FORMAT.md, Key policy), as a hostile
# server would try it: replaying old media-key messages, forging joins and leaves,
# forging frames. Every refused key leaves the decryptor exactly as it was.


class Clock:
    """An injectable clock: tests move time instead of sleeping."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def refused(call: Any) -> str:
    with pytest.raises(KeyRefused) as info:
        call()
    return info.value.reason


def test_key_refused_is_a_value_error_and_participant_is_checked() -> None:
    dec = FrameDecryptor()
    assert issubclass(KeyRefused, ValueError)
    for bad in ("", None, 7):
        with pytest.raises(ValueError):
            dec.set_key(bad, 3, 0, 0, bytes(32))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dec.set_key("alice", 3, 0, 0, bytes(31))
    dec.set_key("alice", 3, 0, 0, bytes(32))  # none of the above left a record behind


def test_replayed_key_message_and_rejoin_cannot_reinstall_a_key() -> None:
    enc, dec = pair()
    current = enc.current
    assert current is not None
    recorded = enc.encrypt("video", vp8_delta())
    assert dec.decrypt("video", "alice", recorded)
    # The server replays Alice's media-key message: same (sender, generation), refused,
    # so the replay window is not reset and the recorded frame stays a replay.
    assert refused(lambda: dec.set_key("alice", 3, 0, 0, current.key)) == "old-key"
    ratcheted = ratchet(current.key)
    assert refused(lambda: dec.set_key("alice", 3, 0, 1, ratcheted)) == "old-key"
    with pytest.raises(FrameRejected, match="replay"):
        dec.decrypt("video", "alice", recorded)
    assert dec.decrypt("video", "alice", enc.encrypt("video", vp8_delta()))
    # It forges a leave and a "rejoin" of Alice and replays her key again: refused.
    dec.remove_participant("alice")
    assert refused(lambda: dec.set_key("alice", 3, 0, 0, current.key)) == "removed"
    assert refused(lambda: dec.set_key("alice", 3, 1, 0, os.urandom(32))) == "removed"
    assert not_passed(dec, "video", recorded)
    assert not_passed(dec, "video", enc.encrypt("video", vp8_delta()))
    # A leave of someone never seen is remembered too (a leave before the key arrives).
    dec.remove_participant("ghost")
    assert refused(lambda: dec.set_key("ghost", 9, 0, 0, bytes(32))) == "removed"


def test_older_generation_is_refused() -> None:
    dec = FrameDecryptor()
    keys = {g: os.urandom(32) for g in range(5)}
    dec.set_key("alice", 3, 2, 0, keys[2])
    for g in (0, 1, 2):  # an older generation, or the same one again
        assert refused(lambda g=g: dec.set_key("alice", 3, g, 0, keys[g])) == "old-key"
    dec.set_key("alice", 3, 4, 0, keys[4])
    # Generation 3 is older than the newest installed (4), even though never installed.
    assert refused(lambda: dec.set_key("alice", 3, 3, 0, keys[3])) == "old-key"
    for g in (2, 4):  # the refusals changed nothing: both kept generations still decrypt
        enc = FrameEncryptor()
        enc.set_key(3, g, key=keys[g])
        enc.counter = g * 10
        assert dec.decrypt("audio", "alice", enc.encrypt("audio", b"\x78ok")) == b"\x78ok"


def test_sender_index_claims() -> None:
    alice, dec = pair(sender=3)
    recorded = alice.encrypt("video", vp8_delta())
    assert dec.decrypt("video", "alice", recorded)
    # The server announces Mallory with Alice's live sender index: refused.
    assert refused(lambda: dec.set_key("mallory", 3, 0, 0, os.urandom(32))) == "sender-taken"
    assert refused(lambda: dec.set_key("mallory", 3, 7, 0, os.urandom(32))) == "sender-taken"
    # Alice under another index: refused (a participant has one sender index for life).
    assert refused(lambda: dec.set_key("alice", 4, 1, 0, os.urandom(32))) == "wrong-sender"
    assert dec.decrypt("video", "alice", alice.encrypt("video", vp8_delta()))
    # Alice leaves: her index is released and Dave may take it later.
    dec.remove_participant("alice")
    dave = FrameEncryptor()
    key = dave.set_key(3)
    dec.set_key("dave", 3, 0, 0, key.key)
    dave.counter = 10_000
    frame = dave.encrypt("video", vp8_delta())
    # Dave's frames on the old owner's track, and Alice's on either track: refused.
    with pytest.raises(FrameRejected, match="wrong-sender"):
        dec.decrypt("video", "alice", frame)
    with pytest.raises(FrameRejected, match="wrong-sender"):
        dec.decrypt("video", "alice", alice.encrypt("video", vp8_delta()))
    with pytest.raises(FrameRejected, match="auth-failed"):
        dec.decrypt("video", "dave", alice.encrypt("video", vp8_delta()))
    assert dec.decrypt("video", "dave", frame)
    # Once Dave holds the index, Alice's record still says "removed", not "taken".
    assert refused(lambda: dec.set_key("alice", 3, 5, 0, os.urandom(32))) == "removed"
    assert refused(lambda: dec.set_key("erin", 3, 5, 0, os.urandom(32))) == "sender-taken"


def test_departed_member_loses_the_previous_generation_after_the_grace() -> None:
    clock = Clock()
    alice = FrameEncryptor()
    gen0 = alice.set_key(3)
    dec = FrameDecryptor(clock=clock)
    dec.set_key("alice", 3, 0, 0, gen0.key)
    # Bob held Alice's generation 0 as a member; he left and keeps forging Alice's frames.
    bob = FrameEncryptor()
    bob.set_key(3, key=gen0.key)
    bob.counter = 1000  # fresh counters (inside the window of Alice's in-flight frame)
    in_flight = alice.encrypt("video", vp8_delta())
    gen1 = alice.rotate()
    dec.set_key("alice", 3, gen1.generation, 0, gen1.key)
    # Before any generation-1 frame authenticates, generation 0 lives on, however long.
    clock.now += 1000
    assert dec.decrypt("video", "alice", alice.encrypt("video", vp8_delta()))
    assert dec.decrypt("video", "alice", bob.encrypt("video", vp8_delta()))
    alice.switch()
    # A forged generation-1 frame does not start the grace...
    bad = bytearray(alice.encrypt("video", vp8_delta()))
    bad[4] ^= 1
    with pytest.raises(FrameRejected, match="auth-failed"):
        dec.decrypt("video", "alice", bytes(bad))
    clock.now += 1000
    assert dec.decrypt("video", "alice", bob.encrypt("video", vp8_delta()))
    # ...a genuine one does: generation 0 retires GRACE seconds later.
    assert dec.decrypt("video", "alice", alice.encrypt("video", vp8_delta()))
    start = clock.now
    clock.now = start + GRACE / 2
    assert dec.decrypt("video", "alice", alice.encrypt("video", vp8_delta()))  # not pushed back
    assert dec.decrypt("video", "alice", bob.encrypt("video", vp8_delta()))
    clock.now = start + GRACE - 0.001
    assert dec.decrypt("video", "alice", in_flight)  # a frame in flight across the switch
    clock.now = start + GRACE
    with pytest.raises(FrameRejected, match="stale-key"):
        dec.decrypt("video", "alice", bob.encrypt("video", vp8_delta()))
    clock.now = start  # deleted: even a clock that goes back does not bring it back
    with pytest.raises(FrameRejected, match="stale-key"):
        dec.decrypt("video", "alice", bob.encrypt("video", vp8_delta()))
    assert refused(lambda: dec.set_key("alice", 3, 0, 0, gen0.key)) == "old-key"
    assert dec.decrypt("video", "alice", alice.encrypt("video", vp8_delta()))


def test_any_later_step_and_the_chain_is_derived_once(monkeypatch: pytest.MonkeyPatch) -> None:
    enc, dec = pair()
    step0 = enc.encrypt("video", vp8_delta())
    later: dict[int, bytes] = {}
    for step in range(1, 151):
        enc.ratchet()
        if step in (40, 41, 150):
            later[step] = enc.encrypt("video", vp8_delta())
    # The server forges a frame naming step 255 (any bytes: it has no key).
    header = bytes(SFrameHeader(int(KeyId(3, 0, MAX_STEP)), 1 << 30))
    forged = b"\xd1\x02\x00" + os.urandom(40) + header + bytes([len(header)])
    calls: list[bytes] = []
    real_ratchet = sframe.ratchet

    def counting(base: bytes) -> bytes:
        calls.append(base)
        return real_ratchet(base)

    monkeypatch.setattr(sframe, "ratchet", counting)
    with pytest.raises(FrameRejected, match="auth-failed"):
        dec.decrypt("video", "alice", forged)
    assert len(calls) == MAX_STEP  # the missing ratchets, once
    # The real stream goes on: nothing was committed, and nothing is derived again.
    assert dec.decrypt("video", "alice", step0)
    assert dec.decrypt("video", "alice", later[40])  # 40 ahead (the old limit was 16)
    assert dec.decrypt("video", "alice", later[150])  # 110 more ahead
    with pytest.raises(FrameRejected, match="auth-failed"):
        dec.decrypt("video", "alice", forged)
    assert len(calls) == MAX_STEP
    # Committed 150, previous 40: step 41 is neither and below.
    with pytest.raises(FrameRejected, match="step-out-of-range"):
        dec.decrypt("video", "alice", later[41])
    # Memory stays bounded: nothing at or below the committed step is cached.
    gen = dec._senders[3].generations[0]
    assert gen.current.step == 150 and min(gen.chain) == 151 and min(gen.ahead) > 150
    # A fresh receiver 40 steps behind needs exactly 40 ratchets.
    calls.clear()
    fresh = FrameDecryptor()
    current = pair()[0].current
    assert current is not None
    fresh_enc = FrameEncryptor()
    fresh_enc.set_key(3, key=current.key)
    fresh.set_key("alice", 3, 0, 0, current.key)
    monkeypatch.setattr(sframe, "ratchet", real_ratchet)
    for _ in range(40):
        fresh_enc.ratchet()
    monkeypatch.setattr(sframe, "ratchet", counting)
    assert fresh.decrypt("audio", "alice", fresh_enc.encrypt("audio", b"\x78!")) == b"\x78!"
    assert len(calls) == 40


def test_unmapped_track_refuses_everything() -> None:
    enc, dec = pair()
    for kind, frame in [("video", vp8_key()), ("video", vp8_delta()), ("audio", opus())]:
        out = enc.encrypt(kind, frame)  # type: ignore[arg-type]
        for data in (out, b"", frame):
            with pytest.raises(FrameRejected) as info:
                dec.decrypt(kind, None, data)  # type: ignore[arg-type]
            assert info.value.reason == "unmapped"
    assert dec.decrypt("audio", "alice", enc.encrypt("audio", opus()))  # nothing moved


def test_rotate_twice_without_switch_is_refused() -> None:
    enc = FrameEncryptor()
    enc.set_key(3)
    pending = enc.rotate()
    with pytest.raises(ValueError, match="rotation pending"):
        enc.rotate()
    assert enc.pending == pending  # the one key of generation 1
    assert enc.switch() == pending
    assert enc.rotate().generation == 2
    # set_key cannot draw a second key for a generation already drawn either.
    for generation in (0, 1, 2):
        with pytest.raises(ValueError, match="already drawn"):
            enc.set_key(3, generation)
    assert enc.set_key(3, 3).generation == 3 and enc.pending is None


# ------------------------------------------------------------------ properties

OPS = st.lists(st.sampled_from(["video", "audio", "ratchet", "rotate", "switch"]), max_size=80)


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_key_nonce_pairs_never_repeat(ops: list[str]) -> None:
    enc = FrameEncryptor()
    enc.set_key(1)
    seen: set[tuple[bytes, bytes]] = set()
    for op in ops:
        if op == "ratchet":
            enc.ratchet()
        elif op == "rotate" and enc.pending is not None:
            with pytest.raises(ValueError, match="rotation pending"):
                enc.rotate()  # a generation's key, once drawn, is its only key
        elif op == "rotate":
            enc.rotate()
        elif op == "switch":
            enc.switch()
        else:
            kind: Kind = "audio" if op == "audio" else "video"
            out = enc.encrypt(kind, opus(10) if kind == "audio" else vp8_delta(10))
            frame = EncryptedFrame.parse(kind, out)
            current = enc.current
            assert current is not None
            key, salt = derive_key_salt(current.key, frame.kid)
            pair_ = (key, make_nonce(salt, frame.ctr))
            assert pair_ not in seen
            seen.add(pair_)


_ENC, _DEC = pair()
_GENUINE = [_ENC.encrypt("video", vp8_delta(40)) for _ in range(4)]


def _flip(case: tuple[bytes, int, int]) -> bytes:
    """A genuine frame with one byte XOR-ed by a non-zero mask."""
    frame, index, mask = case
    bad = bytearray(frame)
    bad[index % len(frame)] ^= mask
    return bytes(bad)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=100),
        st.tuples(st.sampled_from(_GENUINE), st.integers(0, 80), st.integers(1, 255)).map(_flip),
    )
)
def test_fuzz_decrypt_only_rejects(data: bytes) -> None:
    try:
        out = _DEC.decrypt("video", "alice", data)
    except FrameRejected:
        return
    assert out == b"" and data == b""  # nothing but the empty frame gets through


# ------------------------------------------------------- both directions with Node


def node(script: str, stdin: str) -> Any:
    proc = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


JS_ENCRYPT = f"""
import {{ readFileSync }} from 'node:fs';
import {{ SendState }} from {json.dumps(WORKER.as_uri())};
const frames = JSON.parse(readFileSync(0, 'utf8'));
const send = new SendState();
const key = await send.setKey(12, 3);
const out = [];
for (const [kind, hex] of frames) {{
  out.push(Buffer.from(await send.encrypt(kind, Buffer.from(hex, 'hex'))).toString('hex'));
}}
console.log(JSON.stringify({{ key: Buffer.from(key.key).toString('hex'), out }}));
"""

JS_DECRYPT = f"""
import {{ readFileSync }} from 'node:fs';
import {{ ReceiveState }} from {json.dumps(WORKER.as_uri())};
const {{ key, sender, generation, frames }} = JSON.parse(readFileSync(0, 'utf8'));
const receive = new ReceiveState();
await receive.setKey({{ participant: 'py', sender, generation, step: 0,
                        key: Buffer.from(key, 'hex') }});
const out = [];
for (const [kind, hex] of frames) {{
  const r = await receive.decrypt(kind, 'py', Buffer.from(hex, 'hex'));
  out.push(r.ok ? Buffer.from(r.ok).toString('hex') : r);
}}
console.log(JSON.stringify(out));
"""


def random_frames() -> list[tuple[Kind, bytes]]:
    frames: list[tuple[Kind, bytes]] = []
    for i in range(30):
        frames.append(("video", vp8_key(300 + i) if i % 10 == 0 else vp8_delta(50 + i * 7)))
        frames.append(("audio", opus(20 + i)))
    return frames


def test_js_encrypts_python_decrypts() -> None:
    frames = random_frames()
    result = node(JS_ENCRYPT, json.dumps([[k, f.hex()] for k, f in frames]))
    dec = FrameDecryptor()
    dec.set_key("js", 12, 3, 0, bytes.fromhex(result["key"]))
    for (kind, frame), out in zip(frames, result["out"], strict=True):
        assert dec.decrypt(kind, "js", bytes.fromhex(out)) == frame


def test_python_encrypts_js_decrypts() -> None:
    frames = random_frames()
    enc = FrameEncryptor()
    key = enc.set_key(40, 2)
    out = [[k, enc.encrypt(k, f).hex()] for k, f in frames]
    enc.ratchet()  # the receiver must follow one step on its own
    out += [[k, enc.encrypt(k, f).hex()] for k, f in frames[:4]]
    out.append(out[0])  # a replay
    got = node(
        JS_DECRYPT,
        json.dumps({"key": key.key.hex(), "sender": 40, "generation": 2, "frames": out}),
    )
    expected = [f.hex() for _, f in frames] + [f.hex() for _, f in frames[:4]]
    assert got[:-1] == expected
    assert got[-1] == {"reject": "replay"}


def test_send_key_repr_hides_the_key() -> None:
    # A SendKey in a log line or a traceback's locals must not print the media key.
    key = bytes(range(100, 116))
    text = repr(SendKey(sender=7, generation=2, step=3, key=key))
    assert "sender=7" in text and "generation=2" in text
    assert "key=" not in text and repr(key) not in text and key.hex() not in text
