"""Generate tests/vectors/sframe.json from the Python reference (e2ee/sframe.py).

    .venv/bin/python tests/vectors/make_sframe_vectors.py

The output is checked in; tests/test_sframe.py re-runs ``build()`` and compares, so
the vectors cannot drift from the reference. Everything here is deterministic:
keys and frames come from fixed seeds, never from a random source.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from e2ee.sframe import (
    KeyId,
    KidKeys,
    Kind,
    SFrameHeader,
    derive_key_salt,
    encrypt_frame,
    make_nonce,
    ratchet,
)

OUT = Path(__file__).with_name("sframe.json")

CHECK_KEY = bytes(range(32))
# e2ee-worker/FORMAT.md (test vectors): the check value both implementations reproduce.
CHECK_FRAME = bytes.fromhex("5043009d012a8002e001") + b"\x11" * 20
CHECK_OUT = (
    "5043009d012a8002e001"
    "05a936506f635732f35c1452cffbed91c3991a2c4e82ec2ceb7ed465c29acd728268a487"
    "b107000100"
    "05"
)
CHECK_RATCHET = "1e31370b2f041d5c893dbba4b27bc3e67956a51ae6221a427445cab04059fd65"


def seeded(label: str, length: int) -> bytes:
    """``length`` deterministic bytes named by ``label``."""
    out = b""
    block = 0
    while len(out) < length:
        out += hashlib.sha256(f"{label}/{block}".encode()).digest()
        block += 1
    return out[:length]


def vp8_key_frame(label: str, length: int) -> bytes:
    # Frame tag with P=0 (key frame), start code 9d 01 2a, 640x480, then payload.
    return bytes.fromhex("5043009d012a8002e001") + seeded(label, length - 10)


def vp8_delta_frame(label: str, length: int) -> bytes:
    # Frame tag with P=1 (inter frame), then payload.
    return bytes.fromhex("d10200") + seeded(label, length - 3)


def opus_frame(label: str, length: int) -> bytes:
    # TOC byte 0x78: SILK-only wideband 20 ms, one frame (RFC 6716 §3.1).
    return b"\x78" + seeded(label, length - 1)


def frame_case(
    name: str,
    base_key: bytes,
    kid: KeyId,
    ctr: int,
    kind: Kind,
    frame: bytes,
    receiver: tuple[bytes, int] | None = None,
) -> dict[str, Any]:
    """One frame; ``receiver`` is the (base key, step) a receiver installs, when the
    receiver must ratchet forward to reach the frame's step."""
    keys = KidKeys.derive(base_key, int(kid))
    receiver_key, receiver_step = receiver or (base_key, kid.step)
    return {
        "name": name,
        "base_key": base_key.hex(),
        "sender": kid.sender,
        "generation": kid.generation,
        "step": kid.step,
        "kid": f"0x{int(kid):016x}",
        "ctr": f"0x{ctr:016x}",
        "kind": kind,
        "key": keys.key.hex(),
        "salt": keys.salt.hex(),
        "nonce": make_nonce(keys.salt, ctr).hex(),
        "header": bytes(SFrameHeader(int(kid), ctr)).hex(),
        "frame": frame.hex(),
        "out": encrypt_frame(keys, ctr, kind, frame).hex(),
        "receiver_key": receiver_key.hex(),
        "receiver_step": receiver_step,
    }


def build() -> dict[str, Any]:
    check = frame_case("check value", CHECK_KEY, KeyId(7, 1, 0), 1, "video", CHECK_FRAME)
    assert check["out"] == CHECK_OUT, "the reference no longer matches its check value"

    chain = [CHECK_KEY]
    for _ in range(20):
        chain.append(ratchet(chain[-1]))
    assert chain[1].hex() == CHECK_RATCHET, "the ratchet no longer matches its check value"
    ratchet_steps = []
    for step, base in enumerate(chain):
        kid = int(KeyId(7, 1, step))
        key, salt = derive_key_salt(base, kid)
        ratchet_steps.append(
            {"step": step, "base_key": base.hex(), "key": key.hex(), "salt": salt.hex()}
        )

    k = seeded("base/a", 32)
    frames = [
        check,
        frame_case("vp8 key", k, KeyId(1, 0, 0), 0, "video", vp8_key_frame("f1", 1200)),
        frame_case("vp8 delta", k, KeyId(1, 0, 0), 1, "video", vp8_delta_frame("f2", 300)),
        frame_case("opus", k, KeyId(1, 0, 0), 2, "audio", opus_frame("f3", 80)),
        frame_case("vp8 key, no payload", k, KeyId(1, 0, 0), 7, "video", vp8_key_frame("x", 10)),
        frame_case("vp8 delta, no payload", k, KeyId(1, 0, 0), 8, "video", b"\xd1\x02\x00"),
        frame_case("opus, TOC only", k, KeyId(1, 0, 0), 9, "audio", b"\x78"),
        frame_case("ctr 255", k, KeyId(2, 3, 4), 255, "video", vp8_delta_frame("f4", 50)),
        frame_case("ctr 256", k, KeyId(2, 3, 4), 256, "audio", opus_frame("f5", 60)),
        frame_case("ctr 2^32", k, KeyId(2, 3, 4), 1 << 32, "video", vp8_key_frame("f6", 64)),
        frame_case(
            "ctr 2^64-1", k, KeyId(2, 3, 4), (1 << 64) - 1, "video", vp8_delta_frame("f7", 40)
        ),
        frame_case(
            "largest kid",
            k,
            KeyId(0xFFFF, 0xFFFF, 0xFF),
            (1 << 53) + 1,
            "audio",
            opus_frame("f8", 40),
        ),
        frame_case("kid 0", k, KeyId(0, 0, 0), 3, "audio", opus_frame("f9", 20)),
        frame_case(
            "ratcheted step 5",
            chain[5],
            KeyId(7, 1, 5),
            1000,
            "video",
            vp8_delta_frame("f10", 100),
            receiver=(chain[0], 0),
        ),
    ]
    return {
        "about": (
            "sealroom frame format (e2ee-worker/FORMAT.md), generated by "
            "tests/vectors/make_sframe_vectors.py from e2ee/sframe.py. "
            "kid and ctr are 16-digit hex strings; byte strings are hex."
        ),
        "cipher_suite": 4,
        "ratchet": ratchet_steps,
        "frames": frames,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
