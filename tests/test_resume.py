"""Resume credentials (docs/PROTOCOL.md "Resuming", signaling/resume.py): members of a
locked room get back in — across a server restart too — and nobody else does.

In-process servers for the refusals (each with its documented error id), a real
``sealroom serve`` restarted on the same port for the whole story with the Python
``ReconnectingClient``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from e2ee import roomcrypto as rc
from e2ee.roomcrypto import KdfParams, b64, unb64
from peers.client import ReconnectingClient, Resume, ServerError, SignalingClient
from signaling import resume, rooms
from tests.conftest import RunningServer
from tests.test_shutdown import BOUND, free_port, start

PASSWORD = "the door locks behind us, and opens for us"
Start = Callable[..., Awaitable[RunningServer]]


async def locked_room(signaling: Start, tmp_path: Path, lock_after: float = 2.0,
                      **cfg: Any) -> tuple[RunningServer, SignalingClient, SignalingClient]:
    srv = await signaling(lock_after=lock_after, state_dir=str(tmp_path / "state"), **cfg)
    a = await SignalingClient.connect(srv.ws)
    b = await SignalingClient.connect(srv.ws)
    await a.join("vault", PASSWORD)
    await b.join("vault", PASSWORD)
    await asyncio.sleep(lock_after + 0.1)  # the room locks
    return srv, a, b


async def refused(client: SignalingClient, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ServerError) as err:
        await client.join(*args, **kwargs)
    return err.value.id


async def test_a_member_resumes_a_locked_room_and_a_newcomer_stays_out(
    signaling: Start, tmp_path: Path
) -> None:
    srv, a, b = await locked_room(signaling, tmp_path)
    assert a.resume is not None and a.resume.room == "vault"
    assert a.resume.expires > srv.server.rooms.clock()
    newcomer = await SignalingClient.connect(srv.ws)
    assert await refused(newcomer, "vault", PASSWORD) == "room-locked"
    # A's socket dies; a new one with the credential gets in, locked or not.
    a_resume = a.resume
    await a.close()
    a2 = await SignalingClient.connect(srv.ws)
    joined = await a2.join("vault", PASSWORD, expect_kdf=a.kdf, resume=a_resume)
    assert joined["lock"]["locked"] is True
    assert a2.resume is not None and a2.resume.cred != a_resume.cred
    assert srv.server.stats["resumes"] == 1
    assert b"sealroom_resumes_total 1" in srv.server.metrics.render()
    # Sealed messages flow between the resumed member and the one who stayed.
    await a2.seal("*", {"back": True})
    assert (await b.next_sealed()).json() == {"back": True}
    # Its holder may use it again for REUSE_GRACE s (a `joined` lost on the way)…
    again = await SignalingClient.connect(srv.ws)
    await again.join("vault", PASSWORD, resume=a_resume)
    # …and not after.
    clock = srv.server.rooms.clock
    srv.server.rooms.clock = lambda: clock() + rooms.REUSE_GRACE + 1
    later = await SignalingClient.connect(srv.ws)
    assert await refused(later, "vault", PASSWORD, resume=a_resume) == "bad-resume"
    srv.server.rooms.clock = clock
    await later.close()
    # Once its member leaves for good, no credential of that membership works.
    assert a2.resume is not None
    a2_resume = a2.resume
    await a2.leave()
    await a2.wait_closed()
    late = await SignalingClient.connect(srv.ws)
    assert await refused(late, "vault", PASSWORD, resume=a2_resume) == "bad-resume"
    await late.close()
    for c in (a2, b, newcomer, again):
        await c.close()


async def test_a_copied_credential_without_its_key_is_refused(
    signaling: Start, tmp_path: Path
) -> None:
    srv, a, b = await locked_room(signaling, tmp_path)
    assert b.resume is not None
    # The newcomer knows the password and copied B's credential (the network, a log…),
    # but not B's resume key: it signs with a key of its own.
    thief = await SignalingClient.connect(srv.ws)
    copied = Resume("vault", b.resume.cred, b.resume.expires, os.urandom(32))
    assert await refused(thief, "vault", PASSWORD, resume=copied) == "bad-resume"
    # B's own resume still works afterwards (the refusal did not use it up).
    b2 = await SignalingClient.connect(srv.ws)
    await b2.join("vault", PASSWORD, resume=b.resume)
    assert srv.server.stats["errors.bad-resume"] == 1
    for c in (a, b, thief, b2):
        await c.close()


@pytest.mark.parametrize("field", ["flags", "expires", "index", "tag", "truncated"])
async def test_a_tampered_credential_is_refused(
    signaling: Start, tmp_path: Path, field: str
) -> None:
    srv, a, b = await locked_room(signaling, tmp_path)
    assert a.resume is not None
    raw = bytearray(unb64(a.resume.cred))
    body = raw[: -resume.TAG_SIZE]
    cred = resume.Credential.parse(bytes(body))
    if field == "flags":  # the other lock state
        forged = resume.Credential(**{**cred.__dict__, "locked": not cred.locked})
        raw = bytearray(forged.body() + raw[-resume.TAG_SIZE:])
    elif field == "expires":  # a longer life
        forged = resume.Credential(**{**cred.__dict__, "expires": cred.expires + 86400})
        raw = bytearray(forged.body() + raw[-resume.TAG_SIZE:])
    elif field == "index":
        forged = resume.Credential(**{**cred.__dict__, "index": cred.index + 1000})
        raw = bytearray(forged.body() + raw[-resume.TAG_SIZE:])
    elif field == "tag":
        raw[-1] ^= 1
    else:
        raw = raw[:-1]
    tampered = Resume("vault", b64(bytes(raw)), a.resume.expires, a.resume.seed)
    other = await SignalingClient.connect(srv.ws)
    assert await refused(other, "vault", PASSWORD, resume=tampered) == "bad-resume"
    for c in (a, b, other):
        await c.close()


async def test_another_servers_credential_and_another_room_are_refused(
    signaling: Start, tmp_path: Path
) -> None:
    srv, a, b = await locked_room(signaling, tmp_path)
    assert a.resume is not None
    cred = resume.open_credential(srv.server.resume_key, unb64(a.resume.cred))
    foreign = resume.issue(os.urandom(32), cred)  # same content, another server's key
    c = await SignalingClient.connect(srv.ws)
    token = Resume("vault", b64(foreign), a.resume.expires, a.resume.seed)
    assert await refused(c, "vault", PASSWORD, resume=token) == "bad-resume"
    # A genuine credential of room "vault" does not open room "other".
    d = await SignalingClient.connect(srv.ws)
    await d.join("other", PASSWORD)
    await asyncio.sleep(2.1)
    e = await SignalingClient.connect(srv.ws)
    moved = Resume("other", a.resume.cred, a.resume.expires, a.resume.seed)
    assert await refused(e, "other", PASSWORD, resume=moved) == "bad-resume"
    for x in (a, b, c, d, e):
        await x.close()


async def test_expired_and_left_credentials_are_refused(signaling: Start, tmp_path: Path) -> None:
    srv, a, b = await locked_room(signaling, tmp_path, empty_ttl=3.0)
    assert a.resume is not None and b.resume is not None
    # B leaves for good: its credential is revoked.
    b_resume = b.resume
    await b.leave()
    await b.wait_closed()
    late_b = await SignalingClient.connect(srv.ws)
    assert await refused(late_b, "vault", PASSWORD, resume=b_resume) == "bad-resume"
    # A credential of A's expires empty_ttl after it was issued (A, still in the room,
    # holds a refreshed one by then; the room stays, locked).
    a_resume = a.resume
    await asyncio.sleep(max(0.0, a_resume.expires - srv.server.rooms.clock()) + 0.2)
    assert a.resume.cred != a_resume.cred and a.resume.expires > a_resume.expires
    late_a = await SignalingClient.connect(srv.ws)
    # resume-expired, then the client's one retry without the credential: a newcomer.
    assert await refused(late_a, "vault", PASSWORD, resume=a_resume) == "room-locked"
    assert srv.server.stats["errors.resume-expired"] == 1
    for c in (a, late_a, late_b):
        await c.close()


async def test_members_get_refreshed_credentials_while_they_stay(
    signaling: Start, tmp_path: Path
) -> None:
    srv = await signaling(empty_ttl=3.0, state_dir=str(tmp_path / "state"))
    a = await SignalingClient.connect(srv.ws)
    await a.join("long-call", PASSWORD)
    assert a.resume is not None
    first = a.resume
    for _ in range(40):  # refreshed every empty_ttl / 3 = 1 s
        await asyncio.sleep(0.1)
        if a.resume.cred != first.cred:
            break
    assert a.resume.cred != first.cred and a.resume.expires >= first.expires
    assert a.resume.seed == first.seed  # the same membership, the same key
    await a.close()


async def test_the_key_file_is_made_once_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = resume.load_key(state)
    assert len(key) == 32 and resume.load_key(state) == key
    assert stat.S_IMODE((state / resume.KEY_FILE).stat().st_mode) == 0o600
    (state / resume.KEY_FILE).write_bytes(b"short")
    with pytest.raises(RuntimeError):
        resume.load_key(state)
    assert resume.load_key(None) != resume.load_key(None)  # no state dir: memory only


async def test_after_a_restart_locked_names_stay_locked_and_members_restore_them(
    signaling: Start, tmp_path: Path
) -> None:
    """In process: SIGTERM's save, then a new server on the same state directory."""
    srv, a, b = await locked_room(signaling, tmp_path, lock_after=2.0)
    open_member = await SignalingClient.connect(srv.ws)
    await open_member.join("not-locked-yet", PASSWORD)  # created now: not locked at the save
    assert a.resume is not None and a.kdf is not None
    srv.server.save_locked_rooms()
    saved = (tmp_path / "state" / resume.LOCKED_FILE).read_text()
    assert "vault" in saved and "not-locked-yet" not in saved
    for secret in (a.kdf.to_json()["salt"], b64(srv.server.rooms.get("vault").adm_pk)):
        assert secret not in saved  # names and times only
    assert stat.S_IMODE((tmp_path / "state" / resume.LOCKED_FILE).stat().st_mode) == 0o600
    a_resume, a_kdf = a.resume, a.kdf
    for c in (a, b, open_member):
        await c.close()

    srv2 = await signaling(lock_after=0.5, state_dir=str(tmp_path / "state"))
    srv2.server.load_locked_rooms()
    assert not (tmp_path / "state" / resume.LOCKED_FILE).exists()
    # Before any member is back, the right password cannot re-create the locked name…
    newcomer = await SignalingClient.connect(srv2.ws)
    assert await refused(newcomer, "vault", PASSWORD) == "room-locked"
    # …while a room that was not locked can be created by anyone, as before.
    other = await SignalingClient.connect(srv2.ws)
    await other.join("not-locked-yet", PASSWORD)
    # The member comes back with its credential: the room is restored, locked.
    a2 = await SignalingClient.connect(srv2.ws)
    joined = await a2.join("vault", PASSWORD, expect_kdf=a_kdf, resume=a_resume)
    assert joined["lock"]["locked"] is True and joined["kdf"] == a_kdf.to_json()
    assert joined["index"] > resume.Credential.parse(
        unb64(a_resume.cred)[: -resume.TAG_SIZE]).index  # indices go on, never reused
    # Now the room exists (locked): the newcomer is refused again, by the lock.
    newcomer2 = await SignalingClient.connect(srv2.ws)
    assert await refused(newcomer2, "vault", PASSWORD) == "room-locked"
    for c in (newcomer, other, a2, newcomer2):
        await c.close()


async def test_a_restored_room_takes_a_credential_only_with_the_password(
    signaling: Start, tmp_path: Path
) -> None:
    _srv, a, b = await locked_room(signaling, tmp_path)
    assert b.resume is not None
    b_resume = b.resume
    for c in (a, b):
        await c.close()
    srv2 = await signaling(lock_after=0.5, state_dir=str(tmp_path / "state"))
    # B's credential and key, but not the password (its adm_seed signature fails).
    c = await SignalingClient.connect(srv2.ws)
    salt = resume.Credential.parse(unb64(b_resume.cred)[: -resume.TAG_SIZE]).kdf
    assert await refused(c, "vault", PASSWORD + "?", expect_kdf=salt,
                         resume=b_resume) == "wrong-password"
    assert srv2.server.rooms.get("vault") is None
    await c.close()


async def test_a_real_restart_python_clients_reconnect_and_resume(tmp_path: Path) -> None:
    """``sealroom serve`` (--lock-after 3) with two ReconnectingClients in a locked room:
    SIGTERM, a new process on the same port and state directory; both are back in the
    room by themselves, talk again, and a newcomer with the password stays out."""
    port, state = free_port(), tmp_path / "state"
    url = f"ws://127.0.0.1:{port}/ws"
    proc = start(port, state, "--no-sfu", "--lock-after", "3")
    proc2 = None
    a = ReconnectingClient(url, "vault", PASSWORD)
    b = ReconnectingClient(url, "vault", PASSWORD)
    try:
        await a.start()
        await b.start()
        await asyncio.sleep(3.2)  # locked
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, BOUND + 5) == 0
        proc2 = start(port, state, "--no-sfu", "--lock-after", "3")
        a2 = await a.wait_session(2, timeout=60)
        b2 = await b.wait_session(2, timeout=60)
        assert a2.id != b2.id
        for _ in range(100):  # the later one's member-joined reaches the other's reader
            if b2.id in a2.members and a2.id in b2.members:
                break
            await asyncio.sleep(0.1)
        assert b2.id in a2.members and a2.id in b2.members
        await a2.seal("*", {"after": "restart"})
        got = await b2.next_sealed()
        assert got.sender == a2.id and got.json() == {"after": "restart"}
        newcomer = await SignalingClient.connect(url)
        assert await refused(newcomer, "vault", PASSWORD) == "room-locked"
        await newcomer.close()
        assert a.lost is None and b.lost is None
    finally:
        await a.close()
        await b.close()
        for p in (proc, proc2):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.communicate()


def test_credential_layout_round_trips() -> None:
    kdf = KdfParams(salt=bytes(range(16)))
    cred = resume.Credential("café", kdf, bytes(32), 1763754000.123, True, 7, bytes(32), 99)
    assert resume.Credential.parse(cred.body()) == cred
    with pytest.raises(resume.BadCredential):
        resume.Credential.parse(cred.body() + b"\x00")
    with pytest.raises(resume.BadCredential):
        resume.Credential.parse(b"\x02" + cred.body()[1:])
    assert base64.b64decode(b64(resume.issue(bytes(32), cred)))[-32:] == resume.mac(
        bytes(32), cred.body())


VECTORS = json.loads((Path(__file__).parent / "vectors" / "roomcrypto.json").read_text())


@pytest.mark.parametrize("case", VECTORS["join_resume"], ids=lambda c: c["conn"])
def test_join_resume_vectors(case: dict[str, Any]) -> None:
    """The transcript with lp(resume_pk), the admission and the resume signatures."""
    nonce, pk = bytes.fromhex(case["nonce"]), bytes.fromhex(case["resume_pk"])
    args = (case["origin"], case["room"], nonce, case["conn"])
    assert rc.join_transcript(*args, pk).hex() == case["transcript"]
    assert rc.join_transcript(*args).hex() == case["transcript"][: -2 * 34]  # v2 bytes kept
    seed = bytes.fromhex(case["resume_seed"])
    assert Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw() == pk
    sig = rc.sign_join(bytes.fromhex(case["adm_seed"]), *args, pk)
    assert sig.hex() == case["sig"]
    assert rc.verify_join(bytes.fromhex(case["adm_pk"]), sig, *args, pk)
    assert not rc.verify_join(bytes.fromhex(case["adm_pk"]), sig, *args)  # pk is bound
    if "resume_sig" in case:
        rsig = rc.sign_join(bytes.fromhex(case["previous_resume_seed"]), *args, pk)
        assert rsig.hex() == case["resume_sig"]
        assert rc.verify_join(bytes.fromhex(case["previous_resume_pk"]), rsig, *args, pk)


@pytest.mark.parametrize("case", VECTORS["resume_credential"], ids=lambda c: c["room"])
def test_resume_credential_vectors(case: dict[str, Any]) -> None:
    cred = resume.Credential(
        room=case["room"], kdf=KdfParams.from_json(case["kdf"]),
        adm_pk=bytes.fromhex(case["adm_pk"]), created_at=case["created_at_ms"] / 1000,
        locked=case["locked"], index=case["index"], resume_pk=bytes.fromhex(case["resume_pk"]),
        expires=case["expires"],
    )
    key = bytes.fromhex(case["server_key"])
    assert cred.body().hex() == case["body"]
    assert resume.mac(key, cred.body()).hex() == case["tag"]
    assert b64(resume.issue(key, cred)) == case["cred"]
    assert resume.open_credential(key, unb64(case["cred"])) == cred


async def test_malformed_resume_fields_are_bad_message(signaling: Start) -> None:
    srv = await signaling()
    c = await SignalingClient.connect(srv.ws)
    cred = b64(bytes(100))
    cases = [
        {"resume": {"cred": cred, "sig": b64(bytes(64))}},  # no resume_pk
        {"resume_pk": b64(bytes(31)), "resume": {"cred": cred, "sig": b64(bytes(64))}},
        {"resume_pk": b64(bytes(32)), "resume": {"cred": "not base64!", "sig": b64(bytes(64))}},
        {"resume_pk": b64(bytes(32)), "resume": {"cred": b64(bytes(600)), "sig": b64(bytes(64))}},
        {"resume_pk": b64(bytes(32)), "resume": {"cred": cred, "sig": b64(bytes(63))}},
        {"resume_pk": b64(bytes(32)), "resume": "cred"},
    ]
    for extra in cases:
        await c.send({"type": "join", "room": "r", "sig": b64(bytes(64)), **extra})
        with pytest.raises(ServerError) as err:
            await c.expect("joined")
        assert err.value.id == "bad-message", extra
    # A well-formed credential that is not this server's: bad-resume, and the socket lives on.
    await c.send({"type": "join", "room": "r", "sig": b64(bytes(64)), "resume_pk": b64(bytes(32)),
                  "resume": {"cred": cred, "sig": b64(bytes(64))}})
    with pytest.raises(ServerError) as err:
        await c.expect("joined")
    assert err.value.id == "bad-resume"
    assert srv.server.stats["errors.bad-message"] == len(cases)
    await c.close()
