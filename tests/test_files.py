"""peers/files.py: hands, reactions and files over sealed envelopes, between Python clients
through the real signaling server (docs/PROTOCOL.md "Hands and reactions", "Files").

A file arrives byte-identical; a member that sends a chunk with other content is refused by
the SHA-256 check, and a chunk out of order at once; the server relays only ciphertext: its
debug log holds none of the file's bytes in any printable form.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from e2ee.roomcrypto import Sealed
from peers.client import SignalingClient
from peers.files import (
    CHUNK_BYTES,
    MAX_FILE_BYTES,
    FileRefused,
    Offer,
    ReceivedFile,
    chunk_message,
    hand,
    reaction,
    receive_file,
    send_file,
)
from tests.conftest import RunningServer

pytestmark = pytest.mark.timeout(60)
PASSWORD = "files through the room"
ROOM = "files"
# A recognisable plaintext: if the server ever held it in clear, a search would find it.
PATTERN = b"SEALROOM-CLEAR-FILE-BYTES-0123456789abcdefghij!!"  # 48 bytes: base64 is periodic


def pattern_file(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def printable_forms(data: bytes) -> list[str]:
    """The pattern as it would show in text: raw, hex, and base64 at each byte alignment."""
    forms = [data[:48].decode("latin-1"), data[:48].hex()]
    forms += [base64.b64encode(data[k : k + 96]).decode()[4:68] for k in range(3)]
    return forms


@pytest_asyncio.fixture
async def members(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> AsyncIterator[tuple[RunningServer, list[SignalingClient]]]:
    srv = await signaling()
    clients: list[SignalingClient] = []
    for _ in range(3):
        client = await SignalingClient.connect(srv.ws)
        clients.append(client)
        await client.join(ROOM, PASSWORD)
    for client in clients:
        client.drain()  # member-joined events of those who came after
    try:
        yield srv, clients
    finally:
        for client in clients:
            await client.close()


async def test_a_file_to_one_member_arrives_byte_identical_and_the_log_has_none_of_it(
    members: tuple[RunningServer, list[SignalingClient]], caplog: pytest.LogCaptureFixture,
) -> None:
    srv, (alice, _bob, _carol) = members
    data = pattern_file(20 * CHUNK_BYTES + 777)
    caplog.set_level(logging.DEBUG)
    bob = await SignalingClient.connect(srv.ws)  # joins while the log is captured
    await bob.join(ROOM, PASSWORD)
    assert bob.id is not None
    await asyncio.sleep(0.1)
    alice.drain()
    sending = asyncio.ensure_future(
        send_file(alice, alice.inbox, bob.id, "report.bin", data, pace=0.0))
    got = await receive_file(bob, bob.inbox)
    assert await sending == {bob.id: "done"}
    assert got.data == data and got.sender == alice.id and got.offer.name == "report.bin"
    assert got.offer.sha256 == hashlib.sha256(data).digest()
    # The server relayed the chunks (not vacuous), and logged none of the file.
    assert srv.server.stats["sealed_relayed"] >= 21
    text = caplog.text
    assert "joined room=files" in text
    await bob.close()
    for form in printable_forms(data):
        assert form not in text


async def test_a_file_to_everyone_reaches_every_member(
    members: tuple[RunningServer, list[SignalingClient]],
) -> None:
    _, (alice, bob, carol) = members
    data = pattern_file(5 * CHUNK_BYTES)
    sending = asyncio.ensure_future(send_file(alice, alice.inbox, "*", "all.bin", data, pace=0))
    got = await asyncio.gather(receive_file(bob, bob.inbox), receive_file(carol, carol.inbox))
    assert [g.data for g in got] == [data, data]
    assert await sending == {bob.id: "done", carol.id: "done"}


async def offered(sender: SignalingClient, receiver: SignalingClient, name: str, chunks: int
                  ) -> tuple[bytes, Offer, asyncio.Future[ReceivedFile]]:
    """``sender`` offers ``receiver`` a file of ``chunks`` chunks, which ``receiver`` starts
    receiving: the file, the offer and the receiving task."""
    assert receiver.id is not None
    data = pattern_file(chunks * CHUNK_BYTES)
    offer = Offer.of(name, data)
    receiving = asyncio.ensure_future(receive_file(receiver, receiver.inbox))
    await sender.seal(receiver.id, offer.to_json())
    return data, offer, receiving


async def test_a_member_sending_other_content_is_refused_by_the_hash(
    members: tuple[RunningServer, list[SignalingClient]],
) -> None:
    _, (mallory, bob, _carol) = members
    data, offer, receiving = await offered(mallory, bob, "contract.pdf", 3)
    assert bob.id is not None
    for i in range(offer.chunks):
        piece = offer.piece(data, i)
        if i == 1:
            piece = piece.replace(b"SEALROOM", b"SEALR00M")  # same length, other content
        await mallory.seal(bob.id, chunk_message(offer, i, piece))
    with pytest.raises(FileRefused) as refused:
        await receiving
    assert refused.value.reason == "hash-mismatch"
    # Mallory is told: a file-cancel naming the reason.
    bodies = [(await mallory.next_sealed(5)).json() for _ in range(2)]
    assert bodies == [{"type": "file-ack", "id": offer.id, "next": 0},
                      {"type": "file-cancel", "id": offer.id, "reason": "hash-mismatch"}]


async def test_a_replayed_or_skipped_chunk_is_refused_at_once(
    members: tuple[RunningServer, list[SignalingClient]],
) -> None:
    _, (mallory, bob, _carol) = members
    data, offer, receiving = await offered(mallory, bob, "a.bin", 4)
    assert bob.id is not None
    await mallory.seal(bob.id, chunk_message(offer, 0, offer.piece(data, 0)))
    await mallory.seal(bob.id, chunk_message(offer, 0, offer.piece(data, 0)))  # again
    with pytest.raises(FileRefused) as refused:
        await receiving
    assert refused.value.reason == "bad-chunk"


async def test_an_offer_above_the_cap_is_refused_and_a_sender_that_stops_ends_as_stalled(
    members: tuple[RunningServer, list[SignalingClient]],
) -> None:
    _, (alice, bob, _carol) = members
    assert bob.id is not None
    big = {**Offer.of("x", b"x").to_json(), "size": MAX_FILE_BYTES + 1}
    receiving = asyncio.ensure_future(receive_file(bob, bob.inbox))
    await alice.seal(bob.id, big)
    with pytest.raises(FileRefused) as refused:
        await receiving
    assert refused.value.reason == "too-big"
    with pytest.raises(ValueError):
        Offer.of("big", bytes(MAX_FILE_BYTES + 1))
    offer = Offer.of("half.bin", pattern_file(3 * CHUNK_BYTES))
    receiving = asyncio.ensure_future(receive_file(bob, bob.inbox, stall=0.5))
    await alice.seal(bob.id, offer.to_json())  # and then nothing
    with pytest.raises(FileRefused) as refused:
        await receiving
    assert refused.value.reason == "stalled"


async def test_hand_and_reaction_messages(
    members: tuple[RunningServer, list[SignalingClient]],
) -> None:
    _, (alice, bob, _carol) = members
    await alice.seal("*", hand(True, at=1700000000.5))
    await alice.seal("*", reaction("🎉"))
    await alice.seal("*", hand(False))
    got = [(await bob.next_sealed()).json() for _ in range(3)]
    assert got == [{"type": "hand", "raised": True, "at": 1700000000500},
                   {"type": "reaction", "emoji": "🎉"}, {"type": "hand", "raised": False}]
    with pytest.raises(ValueError):
        reaction("💩")


@pytest.mark.media
async def test_an_encrypted_media_bot_receives_a_file_and_raises_a_hand(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    from peers.e2eebot import E2eeBot
    from sfu import Sfu, SfuConfig
    from sfu.ice import IcePolicy

    srv = await signaling(media=Sfu(SfuConfig(port_min=56000, port_max=56499)))
    bot = E2eeBot(srv.ws, ROOM, PASSWORD, "Bot", ice=IcePolicy("127.0.0.1", port_min=56500,
                                                                port_max=56999), audio=False)
    alice = await SignalingClient.connect(srv.ws)
    try:
        await alice.join(ROOM, PASSWORD)
        await bot.start()  # its key manager reads its inbox; file messages pass through
        data = pattern_file(4 * CHUNK_BYTES + 9)
        receiving = asyncio.ensure_future(bot.receive_file())
        result = await send_file(alice, alice.inbox, bot.id, "for-the-bot.bin", data, pace=0)
        assert result == {bot.id: "done"}
        got = await receiving
        assert got.data == data and got.sender == alice.id
        await bot.raise_hand()
        await bot.react("👏")
        bodies = []
        for _ in range(20):
            body = (await alice.next_sealed()).json()
            if body.get("type") in ("hand", "reaction"):
                bodies.append(body)
            if len(bodies) == 2:
                break
        assert bodies[0]["type"] == "hand" and bodies[0]["raised"] is True
        assert bodies[1] == {"type": "reaction", "emoji": "👏"}
        # a member who joins later hears of the raised hand, with the time it was raised,
        # once its hello verified (the bot repeats it to that member alone)
        late = E2eeBot(srv.ws, ROOM, PASSWORD, "Late", audio=False,
                       ice=IcePolicy("127.0.0.1", port_min=56500, port_max=56999))
        try:
            await late.start()
            assert late.keys is not None
            repeated = None
            for _ in range(50):  # the key manager passes on what is not its own
                item = await asyncio.wait_for(late.keys.other.get(), 10)
                if isinstance(item, Sealed) and item.sender == bot.id \
                        and item.json().get("type") == "hand":
                    repeated = item
                    break
            assert repeated is not None and repeated.to == late.id
            assert repeated.json() == bodies[0]
        finally:
            await late.close()
    finally:
        await bot.close()
        await alice.close()
