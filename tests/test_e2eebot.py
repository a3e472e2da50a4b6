"""E2eeBot: real encrypted VP8/Opus through the real SFU and signaling server.

A receiver decrypts the bot's frames with the keys the media-keys protocol gave it and
decodes them with PyAV to the bot's picture; a member that left cannot decrypt what is
sent after the rotation; a newcomer cannot decrypt what was sent before it joined.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable

import av
import numpy as np
import pytest

from e2ee.sframe import EncryptedFrame, FrameRejected, KeyId
from peers.e2eebot import BAR_ROWS, E2eeBot, decode_vp8
from sfu import Sfu, SfuConfig
from sfu.ice import IcePolicy
from tests.conftest import RunningServer

pytestmark = pytest.mark.media
PASSWORD = "encrypted media bots"
BOT_ICE = IcePolicy("127.0.0.1", port_min=55000, port_max=55999)
RED = (200, 30, 60)
GREEN = (40, 180, 70)
BLUE = (30, 60, 210)


def plaintexts(results: list[bytes | FrameRejected]) -> list[bytes]:
    return [r for r in results if isinstance(r, bytes)]


def reasons(results: list[bytes | FrameRejected]) -> set[str]:
    return {r.reason for r in results if isinstance(r, FrameRejected)}


def shows(pictures: list[np.ndarray], color: tuple[int, int, int]) -> bool:
    """The lower part of the newest picture is ``color`` (VP8 is lossy: within 12 levels)."""
    if not pictures:
        return False
    lower = pictures[-1][BAR_ROWS + 16 :].reshape(-1, 3).astype(float)
    return bool(np.all(np.abs(lower.mean(axis=0) - color) < 12) and lower.std(axis=0).max() < 8)


def generation_of(frame: bytes) -> int:
    return KeyId.parse(EncryptedFrame.parse("video", frame).kid).generation


async def sees(receiver: E2eeBot, sender: E2eeBot, timeout: float = 30.0) -> bool:
    """Wait until ``receiver`` decrypts and decodes ``sender``'s picture; ask for key frames
    (PLI, as a browser does when it cannot decode) while it cannot."""
    assert receiver.media is not None
    for _ in range(int(timeout)):
        frames = receiver.received_frames(sender.id, "video")
        fresh = copy.deepcopy(receiver.decryptor)  # decrypting twice would be a replay
        if shows(decode_vp8(plaintexts(receiver.decrypt(sender.id, "video", frames, fresh))),
                 sender.color):
            return True
        await receiver.media.request_keyframe(sender.id)
        await asyncio.sleep(1.0)
    return False


async def test_encrypted_vp8_decrypts_and_decodes_and_keys_follow_membership(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    sfu = Sfu(SfuConfig(port_min=45000, port_max=45999))
    srv = await signaling(media=sfu)
    alice = E2eeBot(srv.ws, "bots", PASSWORD, "Alice", ice=BOT_ICE, color=RED, debounce=0.2,
                    switch_timeout=30.0)
    bob = E2eeBot(srv.ws, "bots", PASSWORD, "Bob", ice=BOT_ICE, color=GREEN)
    carol = E2eeBot(srv.ws, "bots", PASSWORD, "Carol", ice=BOT_ICE, color=BLUE)
    bots = [alice, bob]
    try:
        await alice.start()
        await bob.start()
        assert await sees(bob, alice), "Bob does not see Alice's red picture"
        assert await sees(alice, bob), "Alice does not see Bob's green picture"
        # What the SFU forwarded is ciphertext: the same bytes do not decode to the picture.
        raw = bob.received_frames(alice.id, "video")
        assert not shows(decode_vp8(raw), RED)
        assert all(f in alice.sent_frames["video"] for f in raw)
        # Audio: real Opus that decrypts and decodes.
        audio = plaintexts(bob.decrypt(alice.id, "audio", bob.received_frames(alice.id, "audio"),
                                       copy.deepcopy(bob.decryptor)))
        assert len(audio) >= 10
        opus = av.CodecContext.create("opus", "r")
        samples = sum(f.samples for a in audio[-10:] for f in opus.decode(av.packet.Packet(a)))
        assert samples == 10 * 960

        # Carol joins: Alice ratchets; Carol cannot read what Bob received before.
        before_carol = bob.received_frames(alice.id, "video")
        assert alice.current_key is not None and alice.current_key.step == 1
        await carol.start()
        bots.append(carol)
        assert await sees(carol, alice), "Carol does not see Alice"
        assert alice.current_key.step == 2 and alice.old_keys[-1].step == 1
        earlier = carol.decrypt(alice.id, "video", before_carol, copy.deepcopy(carol.decryptor))
        assert plaintexts(earlier) == [] and reasons(earlier) == {"step-out-of-range"}
        # ...while Bob's own keys read them (a fair control).
        assert len(plaintexts(bob.decrypt(alice.id, "video", before_carol,
                                          copy.deepcopy(bob.decryptor)))) == len(before_carol)

        # Bob leaves: Alice rotates (generation 1) once Carol acked; Bob's keys stay behind.
        assert alice.keys is not None and bob.keys is not None
        bob_keys = copy.deepcopy(bob.decryptor)
        last_for_bob = bob.received_frames(alice.id, "video")[-5:]
        assert {generation_of(f) for f in last_for_bob} == {0}
        await bob.close()
        bots.remove(bob)
        assert await alice.keys.wait_for(lambda: bool(alice.keys.events_named("rotated")), 20)
        assert alice.current_key.generation == 1
        assert await carol.media.wait_for(  # type: ignore[union-attr]
            lambda: sum(generation_of(f) == 1
                        for f in carol.received_frames(alice.id, "video")) >= 10, 20
        ), "Carol receives no frames of the new generation"
        assert await sees(carol, alice), "Carol lost Alice after the rotation"
        after = [f for f in carol.received_frames(alice.id, "video") if generation_of(f) == 1]
        departed = carol.decrypt(alice.id, "video", after, bob_keys)
        assert plaintexts(departed) == [] and reasons(departed) == {"unknown-kid"}
        assert len(plaintexts(carol.decrypt(alice.id, "video", after,
                                            copy.deepcopy(carol.decryptor)))) == len(after)
        # The same keys read Alice's frames up to the leave (a fair control).
        up_to_leave = carol.decrypt(alice.id, "video", last_for_bob, bob_keys)
        assert len(plaintexts(up_to_leave)) == len(last_for_bob)
    finally:
        for b in bots:
            await b.close()
