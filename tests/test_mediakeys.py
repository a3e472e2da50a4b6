"""Media keys (e2ee/mediakeys.py): vectors, refusals, and the protocol over a real server.

The vectors in tests/vectors/mediakeys.json are shared with web/test/mediakeys.test.mjs, so
the browser's web/js/mediakeys.js and this twin produce and accept the same bytes.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from e2ee.mediakeys import (
    Identity,
    KeyManager,
    Peer,
    Rejected,
    make_hello,
    make_media_key,
    media_key_transcript,
    open_media_key,
    security_code,
    verify_ack,
    verify_hello,
)
from e2ee.roomcrypto import b64, unb64
from e2ee.sframe import FrameDecryptor, FrameEncryptor, FrameRejected, SendKey
from peers.client import SignalingClient
from tests.conftest import RunningServer

VECTORS = Path(__file__).parent / "vectors"
V = json.loads((VECTORS / "mediakeys.json").read_text())
ROOM = V["room"]
PASSWORD = "media keys over sealed signaling"
FRAME = bytes.fromhex("5043009d012a8002e001") + bytes(range(200))


def ident(pid: str) -> Identity:
    m = next(m for m in V["members"] if m["id"] == pid)
    return Identity(bytes.fromhex(m["sign_seed"]), bytes.fromhex(m["box_sk"]))


def peer(pid: str) -> Peer:
    m = next(m for m in V["members"] if m["id"] == pid)
    return Peer(pid, m["name"], m["index"], bytes.fromhex(m["sign_pk"]), bytes.fromhex(m["box_pk"]))


def flip(b64_text: str, at: int = 0) -> str:
    data = bytearray(unb64(b64_text))
    data[at] ^= 0x01
    return b64(bytes(data))


# ------------------------------------------------------------------------------ vectors


def test_vectors_are_what_the_generator_makes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_mediakeys_vectors", VECTORS / "make_mediakeys_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == (VECTORS / "mediakeys.json").read_text()


def test_identity_keys_match_an_independent_ed25519() -> None:
    for m in V["members"]:
        seed = bytes.fromhex(m["sign_seed"])
        independent = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        assert independent.hex() == m["sign_pk"] == ident(m["id"]).sign_pk.hex()
        assert ident(m["id"]).box_pk.hex() == m["box_pk"]


def test_hello_vectors_verify() -> None:
    for h in V["hellos"]:
        m = next(m for m in V["members"] if m["id"] == h["id"])
        got = verify_hello(h["message"], ROOM, h["id"], m["index"])
        assert got == peer(h["id"])
        assert make_hello(ident(h["id"]), ROOM, h["id"], m["index"], m["name"]) == h["message"]


def test_media_key_vectors_open_and_ack() -> None:
    for k in V["media_keys"]:
        key, nonce = open_media_key(k["message"], ident(k["to"]), ROOM, k["to"], peer(k["from"]))
        assert key == SendKey(k["index"], k["generation"], k["step"], bytes.fromhex(k["key"]))
        assert nonce.hex() == k["nonce"]
        box = unb64(k["message"]["box"])
        assert media_key_transcript(
            ROOM, k["from"], k["to"], k["index"], k["generation"], k["step"], nonce, box
        ).hex() == k["transcript"]
        assert verify_ack(k["ack"], ROOM, k["from"], peer(k["to"])) == (
            k["generation"], k["step"], nonce
        )


def test_security_code_vectors_and_properties() -> None:
    for c in V["security_codes"]:
        members = [(p.id, p.sign_pk, p.box_pk) for p in map(peer, c["members"])]
        assert security_code(ROOM, members) == c["code"]
        groups = c["code"].split(" ")
        assert len(groups) == 5 and all(len(g) == 5 and g.isdigit() for g in groups)
    codes = {c["code"] for c in V["security_codes"]}
    # the order of the list does not matter; who is in it does
    assert len(codes) == len(V["security_codes"]) - 1
    one = [(p.id, p.sign_pk, p.box_pk) for p in map(peer, V["security_codes"][0]["members"])]
    other_key = [(one[0][0], ident(one[1][0]).sign_pk, one[0][2]), *one[1:]]
    assert security_code(ROOM, other_key) != security_code(ROOM, one)
    assert security_code(ROOM + "x", one) != security_code(ROOM, one)


# ------------------------------------------------------------------------------ refusals


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(Rejected) as info:
        call()
    return info.value.reason


def test_hello_refusals() -> None:
    h = V["hellos"][1]
    msg, pid, index = h["message"], h["id"], 2
    assert reason(lambda: verify_hello(msg, ROOM, "p000000000000", index)) == "wrong-sender"
    assert reason(lambda: verify_hello(msg, ROOM, pid, 3)) == "wrong-index"
    assert reason(lambda: verify_hello(msg, ROOM, pid, None)) == "unknown-member"
    assert reason(lambda: verify_hello(msg, ROOM + "x", pid, index)) == "bad-signature"
    for name in ("sig", "sign_pk", "box_pk"):
        for at in (0, 31):
            bad = {**msg, name: flip(msg[name], at)}
            assert reason(lambda bad=bad: verify_hello(bad, ROOM, pid, index)) == "bad-signature"
    assert reason(lambda: verify_hello({**msg, "name": "Mallory"}, ROOM, pid, index)) == (
        "bad-signature"
    )
    # a hello signed by someone else's key for this id and index is still refused
    forged = make_hello(ident(V["members"][0]["id"]), ROOM, pid, index, msg["name"])
    forged["sign_pk"] = msg["sign_pk"]
    assert reason(lambda: verify_hello(forged, ROOM, pid, index)) == "bad-signature"
    for bad in ({**msg, "v": 2}, {**msg, "index": "2"}, {**msg, "sig": "!!"},
                {**msg, "box_pk": b64(b"short")}, {**msg, "name": "\ud800"}, {**msg, "name": 5}):
        assert reason(lambda bad=bad: verify_hello(bad, ROOM, pid, index)) in (
            "malformed", "unsupported-version"
        )


def test_media_key_refusals() -> None:
    k = V["media_keys"][0]
    msg, sender, to = k["message"], peer(k["from"]), k["to"]
    me = ident(to)

    def opened(m: dict[str, Any], who: Peer = sender, recipient: str = to,
               identity: Identity = me) -> str:
        return reason(lambda: open_media_key(m, identity, ROOM, recipient, who))

    # tampered signature, box, nonce or metadata: the signature covers all of them
    for field in ("sig", "box", "nonce"):
        assert opened({**msg, field: flip(msg[field], 3)}) == "bad-signature"
    assert opened({**msg, "generation": msg["generation"] + 1}) == "bad-signature"
    assert opened({**msg, "step": 9}) == "bad-signature"
    # the wrong sender: a message from Alice presented as Carol's
    carol = peer(V["members"][2]["id"])
    assert opened(msg, who=Peer(carol.id, carol.name, sender.index, carol.sign_pk,
                                carol.box_pk)) == "bad-signature"
    assert opened(msg, who=carol) == "wrong-index"
    # addressed to someone else: another member cannot pass it on as its own
    assert opened(msg, recipient=carol.id, identity=ident(carol.id)) == "bad-signature"
    # a box that does not open although the signature over it is valid
    alice = ident(k["from"])
    bad_box = flip(msg["box"], 5)
    transcript = media_key_transcript(ROOM, k["from"], to, k["index"], k["generation"],
                                      k["step"], unb64(msg["nonce"]), unb64(bad_box))
    resigned = {**msg, "box": bad_box, "sig": b64(alice.sign(transcript))}
    assert opened(resigned) == "bad-box"
    # a box made for another recipient's key, correctly signed for this one
    key = SendKey(k["index"], k["generation"], k["step"], bytes.fromhex(k["key"]))
    for_carol = make_media_key(alice, ROOM, k["from"], carol, key)
    transcript = media_key_transcript(ROOM, k["from"], to, k["index"], k["generation"],
                                      k["step"], unb64(for_carol["nonce"]), unb64(for_carol["box"]))
    moved = {**for_carol, "sig": b64(alice.sign(transcript))}
    assert opened(moved) == "bad-box"
    for bad in ({**msg, "v": 0}, {**msg, "step": 256}, {**msg, "generation": -1},
                {**msg, "box": b64(bytes(47))}, {**msg, "nonce": b64(bytes(12))}):
        assert opened(bad) in ("malformed", "unsupported-version")
    ack = k["ack"]
    assert reason(lambda: verify_ack({**ack, "sig": flip(ack["sig"])}, ROOM, k["from"],
                                     peer(to))) == "bad-signature"
    assert reason(lambda: verify_ack({**ack, "step": 1}, ROOM, k["from"],
                                     peer(to))) == "bad-signature"
    assert reason(lambda: verify_ack(ack, ROOM, k["from"], carol)) == "bad-signature"


def test_no_key_material_in_messages_or_reprs() -> None:
    k = V["media_keys"][1]
    text = json.dumps(k["message"]) + json.dumps(k["ack"])
    for secret in (k["key"], bytes.fromhex(k["key"])):
        as_text = secret if isinstance(secret, str) else b64(secret)
        assert as_text not in text
    me = ident(k["from"])
    assert me.sign_seed.hex() not in repr(me) and me.box_sk.hex() not in repr(me)


# ------------------------------------------------------------------------------ protocol


class Member:
    def __init__(self, client: SignalingClient, km: KeyManager) -> None:
        self.client, self.km = client, km
        self.keyframes = 0

    @property
    def id(self) -> str:
        assert self.client.id is not None
        return self.client.id

    def installed(self, sender: str) -> list[tuple[int, int]]:
        return [(e["generation"], e["step"]) for e in self.km.events_named("key-installed")
                if e["participant"] == sender]

    def frame(self) -> bytes:
        return self.km.encryptor.encrypt("video", FRAME)

    async def close(self) -> None:
        await self.km.close()
        await self.client.close()


async def join(srv: RunningServer, name: str, room: str = "keys", *, debounce: float = 0.2,
               switch_timeout: float = 60.0) -> Member:
    client = await SignalingClient.connect(srv.ws)
    await client.join(room, PASSWORD)
    km = KeyManager(client, FrameEncryptor(), FrameDecryptor(), name, debounce=debounce,
                    switch_timeout=switch_timeout)
    member = Member(client, km)

    def keyframe() -> None:
        member.keyframes += 1

    km.on_key_frame_needed = keyframe
    await km.start()
    return member


async def settled(members: list[Member], timeout: float = 15.0) -> None:
    """Every member knows every other one and holds its newest key."""
    def done(m: Member) -> bool:
        others = [o for o in members if o is not m]
        if set(m.km.peers) != {o.id for o in others}:
            return False
        for o in others:
            cur = o.km.encryptor.current
            assert cur is not None
            if not any(g == cur.generation for g, _ in m.installed(o.id)):
                return False
        return True

    for m in members:
        assert await m.km.wait_for(lambda m=m: done(m), timeout), (
            f"{m.km.name} did not settle: {m.km.events}"
        )


def decrypts(receiver: Member, sender: Member, frame: bytes) -> bool:
    try:
        return receiver.km.decryptor.decrypt("video", sender.id, frame) == FRAME
    except FrameRejected:
        return False


async def test_join_ratchet_and_leave_rotation_with_three_participants(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    srv = await signaling()
    alice = await join(srv, "Alice")
    bob = await join(srv, "Bob")
    members = [alice, bob]
    try:
        await settled([alice, bob])
        # Alice ratcheted for the newcomer: Bob got step 1, never step 0. Bob's own key is
        # step 0 (nobody joined after him).
        assert bob.installed(alice.id) == [(0, 1)]
        assert alice.installed(bob.id) == [(0, 0)]
        assert alice.km.peers[bob.id].name == "Bob" and bob.km.peers[alice.id].name == "Alice"
        assert alice.km.security_code == bob.km.security_code != ""
        two_code = alice.km.security_code
        before_carol = alice.frame()
        assert decrypts(bob, alice, before_carol)
        assert decrypts(alice, bob, bob.frame())

        carol = await join(srv, "Carol")
        members.append(carol)
        await settled([alice, bob, carol])
        # Everyone ratcheted once more; the ratcheted keys went only to Carol.
        assert carol.installed(alice.id) == [(0, 2)] and carol.installed(bob.id) == [(0, 1)]
        assert bob.installed(alice.id) == [(0, 1)] and alice.installed(bob.id) == [(0, 0)]
        codes = {m.km.security_code for m in members}
        assert len(codes) == 1 and two_code not in codes
        # Bob follows Alice's ratchet by himself; Carol cannot read what was sent before her.
        after_carol = alice.frame()
        assert decrypts(bob, alice, after_carol) and decrypts(carol, alice, after_carol)
        assert not decrypts(carol, alice, before_carol)
        with pytest.raises(FrameRejected) as info:
            carol.km.decryptor.decrypt("video", alice.id, before_carol)
        assert info.value.reason == "step-out-of-range"

        # Bob leaves: Alice and Carol rotate, switch after both acks, ask for a key frame.
        last_seen_by_bob = alice.frame()
        bob_decryptor = copy.deepcopy(bob.km.decryptor)  # what Bob holds when he leaves
        assert decrypts(bob, alice, last_seen_by_bob)
        await bob.client.leave()
        await bob.close()
        members.remove(bob)
        for m in (alice, carol):
            assert await m.km.wait_for(lambda m=m: bool(m.km.events_named("rotated")), 20), (
                "no rotation after a leave (or it waited for the 60 s timeout: acks lost)"
            )
            assert m.km.events_named("rotated") == [{"generation": 1}]
            assert m.keyframes == 1
        await settled([alice, carol])
        assert carol.installed(alice.id)[-1] == (1, 0)
        assert alice.installed(carol.id)[-1] == (1, 0)
        assert alice.km.security_code == carol.km.security_code
        assert alice.km.security_code not in codes and alice.km.security_code != two_code
        assert security_code(ROOM, []) != alice.km.security_code
        after_bob = alice.frame()
        assert decrypts(carol, alice, after_bob)
        with pytest.raises(FrameRejected) as info:  # Bob's keys cannot open the new generation
            bob_decryptor.decrypt("video", alice.id, after_bob)
        assert info.value.reason == "unknown-kid"
        # The same keys read Alice up to the leave: the copy is a fair witness.
        assert bob_decryptor.decrypt("video", alice.id, last_seen_by_bob) == FRAME
        # no refusals anywhere in an honest room
        for m in (alice, carol):
            assert m.km.events_named("rejected") == []
    finally:
        for m in members:
            await m.close()


async def test_forged_and_misaddressed_messages_are_refused_in_a_room(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    srv = await signaling()
    alice = await join(srv, "Alice", room="forge")
    mallory = await SignalingClient.connect(srv.ws)  # holds the password, runs no KeyManager
    await mallory.join("forge", PASSWORD)
    assert mallory.id is not None and mallory.index is not None
    try:
        evil = Identity.generate()
        # 1) a hello claiming another index, and one claiming to be Alice
        await mallory.seal("*", make_hello(evil, "forge", mallory.id, mallory.index + 5, "M"))
        await mallory.seal("*", {**make_hello(evil, "forge", alice.id, alice.client.index or 0,
                                              "A"), "id": alice.id})
        # 2) a media-key before any valid hello
        fake_peer = Peer(alice.id, "", 0, alice.km.identity.sign_pk, alice.km.identity.box_pk)
        key = SendKey(mallory.index, 0, 0, bytes(32))
        await mallory.seal(alice.id, make_media_key(evil, "forge", mallory.id, fake_peer, key))
        # 3) a valid hello, then a media-key signed by another key, and one sent to everyone
        await mallory.seal("*", make_hello(evil, "forge", mallory.id, mallory.index, "M"))
        other = Identity.generate()
        bad = make_media_key(evil, "forge", mallory.id, fake_peer, key)
        bad["sig"] = make_media_key(other, "forge", mallory.id, fake_peer, key)["sig"]
        await mallory.seal(alice.id, bad)
        await mallory.seal("*", make_media_key(evil, "forge", mallory.id, fake_peer, key))
        # 4) a second hello with other keys for the same session
        await mallory.seal("*", make_hello(other, "forge", mallory.id, mallory.index, "M"))
        # 5) chat passes through to the application untouched
        await mallory.seal("*", {"type": "chat", "text": "hi"})
        expected = ["wrong-index", "wrong-sender", "no-hello", "bad-signature", "not-for-me",
                    "key-changed"]
        assert await alice.km.wait_for(
            lambda: len(alice.km.events_named("rejected")) >= len(expected), 10
        ), alice.km.events
        assert [e["reason"] for e in alice.km.events_named("rejected")] == expected
        assert all(e["sender"] == mallory.id for e in alice.km.events_named("rejected"))
        assert alice.installed(mallory.id) == []
        assert list(alice.km.peers) == [mallory.id]  # the one valid hello
        chat = None
        for _ in range(20):
            item = await asyncio.wait_for(alice.km.other.get(), 10)
            if not isinstance(item, dict):
                chat = item.json()
                break
        assert chat == {"type": "chat", "text": "hi"}
        # Alice answered the valid hello with her key, boxed to Mallory's announced key.
        sealed = None
        for _ in range(20):
            got = await mallory.next_sealed()
            body = got.json()
            if body.get("type") == "media-key":
                sealed = body
                break
        assert sealed is not None
        alice_peer = Peer(alice.id, "Alice", alice.client.index or 0,
                          alice.km.identity.sign_pk, alice.km.identity.box_pk)
        opened, _ = open_media_key(sealed, evil, "forge", mallory.id, alice_peer)
        cur = alice.km.sent_keys[-1]
        assert (opened.generation, opened.step) == (cur.generation, cur.step)
    finally:
        await alice.close()
        await mallory.close()


async def test_rotation_switches_after_the_timeout_when_an_ack_never_comes(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    srv = await signaling()
    alice = await join(srv, "Alice", room="slow", switch_timeout=1.0)
    bob = await join(srv, "Bob", room="slow")
    carol = await join(srv, "Carol", room="slow")
    members = [alice, bob, carol]
    try:
        await settled(members)

        async def silent(*args: Any) -> int:  # Carol stops sending anything (no acks)
            return 0

        carol.client.seal = silent  # type: ignore[method-assign]
        await bob.client.leave()
        await bob.close()
        members.remove(bob)
        assert await alice.km.wait_for(lambda: bool(alice.km.events_named("rotated")), 20)
        # Carol got the new key even though Alice never heard her ack.
        assert await carol.km.wait_for(lambda: (1, 0) in carol.installed(alice.id), 10)
        assert decrypts(carol, alice, alice.frame())
        assert alice.km.encryptor.current is not None
        assert alice.km.encryptor.current.generation == 1
    finally:
        for m in members:
            await m.close()
