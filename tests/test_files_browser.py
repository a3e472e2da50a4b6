"""Hands, reactions and files between real Chromium pages (web/js/hands.js, web/js/files.js)
and Python members (peers/files.py), through the real signaling server.

* Hands and reactions arrive: the list in raising order, the badge on the tile, a reaction
  over the sender's tile; a Python member raises a hand too, and a flood of its reactions
  is cut by the receivers' limit.
* A 5 MB file from one page arrives at the other byte-identical (the download), its
  SHA-256 checked, with progress on both sides; meanwhile a ``sealroom serve`` process
  relays it, and neither its debug log nor its memory holds any of the file's bytes in clear.
* A chunk whose ciphertext a hostile relay altered is refused (AEAD: the envelope does not
  open, so a chunk is missing); a member that sends a chunk with other content is refused
  by the final SHA-256 check; both sides say so.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from peers.client import SignalingClient
from peers.files import CHUNK_BYTES, Offer, chunk_message, hand, reaction, receive_file, send_file
from tests.callpage import PASSWORD, ROOM, join, open_browser, until
from tests.conftest import BrowserFactory, ServerFactory
from tests.test_logs import free_port

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

PATTERN = b"SEALROOM-CLEAR-FILE-BYTES-0123456789abcdefghij!!"  # 48 bytes: base64 is periodic


def pattern_file(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def clear_forms(data: bytes) -> list[bytes]:
    """The file's bytes as they would sit in a process that had them in clear: raw, and as
    the base64 of a chunk's JSON at each of the three byte alignments."""
    return [data[:48]] + [base64.b64encode(data[k : k + 144])[4:132] for k in range(3)]


def memory_counts(pid: int, needles: list[bytes]) -> dict[bytes, int]:
    """How often each needle occurs in the readable memory of process ``pid``."""
    counts = dict.fromkeys(needles, 0)
    overlap = max(len(n) for n in needles)
    block = 16 << 20
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or fields[-1] in ("[vvar]", "[vsyscall]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            tail = b""
            for at in range(start, end, block):
                try:
                    mem.seek(at)
                    data = tail + mem.read(min(block, end - at))
                except (OSError, ValueError):
                    break
                for n in needles:
                    counts[n] += data.count(n)
                tail = data[-(overlap - 1):]
    return counts


def hands_are(ids: str, pid: str | None = None, place: int = 0) -> str:
    """A snapshot predicate: the raised hands, in order, are ``ids`` (comma-joined), and
    ``pid``'s tile shows the badge of ``place``."""
    tile = f" && s.tiles.some(t => t.id === '{pid}' && t.hand === {place})" if pid else ""
    return f"s => s.hands.join() === '{ids}'{tile}"


def reacted(pid: str, emoji: str) -> str:
    return f"s => s.tiles.some(t => t.id === '{pid}' && t.reaction === '{emoji}')"


async def page_ids(pages: list[Any]) -> list[str]:
    ids = []
    for page in pages:
        snap = await until(page, "s => s.joined && s.id !== null")
        ids.append(snap["id"])
    return ids


async def test_hands_and_reactions_arrive_in_order_and_a_flood_is_cut(
    signaling: ServerFactory, chromium: BrowserFactory, tmp_path: Path
) -> None:
    srv = await signaling()
    pages = [await open_browser(chromium, tmp_path, seed) for seed in (1, 2)]
    for page, name in zip(pages, ("Ada", "Bob"), strict=True):
        await join(page, srv.http, name)
    a, b = pages
    a_id, b_id = await page_ids(pages)
    await until(a, "s => s.tiles.some(t => t.name === 'Bob')")
    bot = await SignalingClient.connect(srv.ws)
    try:
        await bot.join(ROOM, PASSWORD)
        await until(b, f"s => s.tiles.some(t => t.id === '{bot.id}')")
        # Ada presses R (as in Jitsi Meet): Bob sees her hand, first in the queue, on her tile.
        await a.keyboard.press("r")
        await until(a, "s => s.handRaised && s.hands.join() === 'self'")
        await until(b, hands_are(a_id, a_id, 1))
        # The bot raises its hand: second.
        await bot.seal("*", hand(True))
        await until(b, f"s => s.hands.join() === '{a_id},{bot.id}'")
        await until(a, hands_are(f"self,{bot.id}", bot.id, 2))
        assert "Ada" in await b.inner_text("#hands-bar")
        # Ada lowers it with the button: the bot moves up.
        await a.click("#hand")
        await until(b, hands_are(str(bot.id), bot.id, 1))
        assert await a.inner_text("#hand") == "✋ Raise hand"
        # Bob reacts with the button; Ada sees it over Bob's tile.
        await b.click("#reactions button[data-emoji='🎉']")
        await until(a, reacted(b_id, "🎉"), seconds=3)
        # And with key 1 (👍); his own tile shows it too.
        await b.keyboard.press("1")
        await until(a, reacted(b_id, "👍"), seconds=3)
        await until(b, reacted("self", "👍"), seconds=3)
        # A member ignoring the send limit: 30 reactions at once. The server relays them
        # (its own limits are higher), every page shows at most its receive burst.
        for _ in range(30):
            await bot.seal("*", reaction("😂"))
        await until(a, reacted(str(bot.id), "😂"), seconds=3)
        dropped = await a.evaluate("window.sealroom.call.signalGate.dropped")
        assert 30 - 8 - 2 <= dropped <= 30 - 8, dropped  # RECEIVE_LIMITS.reaction: burst 8
        # A newcomer learns of a hand raised before it came (sent once its hello verified;
        # the bot, which sends no hello, does not repeat its own).
        await a.keyboard.press("r")
        await until(b, f"s => s.hands.join() === '{bot.id},{a_id}'")
        c = await open_browser(chromium, tmp_path, 3)
        await join(c, srv.http, "Cy")
        await until(c, "s => s.tiles.some(t => t.name === 'Ada')")
        snap = await until(c, f"s => s.hands.join() === '{a_id}'")
        assert next(t for t in snap["tiles"] if t["id"] == a_id)["hand"] == 1
        assert not a.errors and not b.errors, (a.errors, b.errors)
    finally:
        await bot.close()


async def test_five_megabytes_arrive_byte_identical_and_the_server_never_holds_them_in_clear(
    chromium: BrowserFactory, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "debug", "--no-sfu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    err_lines: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    pump = threading.Thread(target=lambda: err_lines.extend(proc.stderr or []), daemon=True)
    pump.start()
    data = pattern_file(5 * 1000 * 1000)
    try:
        line = proc.stdout.readline()
        assert "sealroom: open" in line, line
        url = f"http://127.0.0.1:{port}"
        pages = [await open_browser(chromium, tmp_path, seed) for seed in (1, 2)]
        for page, name in zip(pages, ("Sender", "Receiver"), strict=True):
            await join(page, url, name)
        sender, receiver = pages
        ids = await page_ids(pages)
        await until(sender, "s => s.tiles.some(t => t.name === 'Receiver')")
        await sender.keyboard.press("f")  # the F shortcut opens the panel (and the picker)
        assert await sender.is_visible("#files-panel")
        await sender.set_input_files("#file-input", files=[
            {"name": "pattern.bin", "mimeType": "application/octet-stream", "buffer": data}])
        # Progress on both sides: seen part-way, then done.
        seen_partial = {"sender": False, "receiver": False}
        for _ in range(240):
            snaps = {"sender": await until(sender, "s => s.files.length === 1"),
                     "receiver": await until(receiver, "s => true")}
            for side, snap in snaps.items():
                for f in snap["files"]:
                    seen_partial[side] |= 0 < f["bytes"] < f["size"] and f["state"] == "active"
            if all(s["files"] and s["files"][0]["state"] != "active" for s in snaps.values()):
                break
            await asyncio.sleep(0.25)
        got = snaps["receiver"]["files"][0]
        sent = snaps["sender"]["files"][0]
        assert got["state"] == "done" and sent["state"] == "done", (got, sent)
        assert got["sha256"] == hashlib.sha256(data).hexdigest() == sent["sha256"]
        assert got["peer"] == ids[0] and sent["peer"] == "*"
        assert seen_partial == {"sender": True, "receiver": True}
        assert "received, SHA-256 checked" in await receiver.inner_text("#files")
        # The download is the file, byte for byte.
        async with receiver.expect_download() as info:
            await receiver.click("#files a.download")
        download = await info.value
        assert download.suggested_filename == "pattern.bin"
        path = tmp_path / "downloaded.bin"
        await download.save_as(path)
        assert path.read_bytes() == data

        # The server process relayed ~160 sealed chunks of it: none of its memory holds the
        # clear bytes, raw or as base64 — while the participant ids it does hold are found
        # (the scan reads its heap).
        counts = memory_counts(proc.pid, [*clear_forms(data), *(i.encode() for i in ids)])
        for form in clear_forms(data):
            assert counts[form] == 0, f"clear file bytes in the server's memory: {form[:16]!r}"
        assert all(counts[i.encode()] > 0 for i in ids), counts
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pump.join(5)
    log = "".join(err_lines)
    assert "joined room=standup" in log  # not vacuous: the debug log recorded the call
    for form in clear_forms(data):
        assert form.decode() not in log


async def test_a_tampered_chunk_is_refused_whether_the_relay_or_a_member_altered_it(
    signaling: ServerFactory, chromium: BrowserFactory, tmp_path: Path
) -> None:
    srv = await signaling()
    pages = [await open_browser(chromium, tmp_path, seed) for seed in (1, 2)]
    for page, name in zip(pages, ("Ada", "Bob"), strict=True):
        await join(page, srv.http, name)
    a, b = pages
    _, b_id = await page_ids(pages)
    await until(a, "s => s.tiles.some(t => t.name === 'Bob')")

    # 1. A hostile relay flips one byte of the third chunk's ciphertext on its way to Bob.
    conn = srv.server.conns[b_id]
    original = conn.post_frame
    chunks_seen = 0

    def tampering(frame: str) -> None:
        nonlocal chunks_seen
        msg = json.loads(frame)
        if msg.get("type") == "sealed" and len(msg["ct"]) > 40000:
            chunks_seen += 1
            if chunks_seen == 3:
                ct = bytearray(base64.b64decode(msg["ct"]))
                ct[100] ^= 0x01
                frame = json.dumps({**msg, "ct": base64.b64encode(bytes(ct)).decode()})
        original(frame)

    conn.post_frame = tampering  # type: ignore[method-assign]
    await a.click("#files-toggle")
    await a.select_option("#file-to", b_id)
    await a.set_input_files("#file-input", files=[
        {"name": "first.bin", "mimeType": "application/octet-stream",
         "buffer": pattern_file(8 * CHUNK_BYTES)}])
    snap = await until(b, "s => s.files.length === 1 && s.files[0].state === 'failed'")
    assert snap["files"][0]["reason"] == "bad-chunk", snap["files"]
    assert await b.evaluate("window.sealroom.call.signaling.refused.invalid") == 1
    snap = await until(a, "s => s.files.length === 1 && s.files[0].state === 'failed'")
    assert snap["files"][0]["reason"] == "bad-chunk"
    assert "a chunk was missing" in await b.inner_text("#files")
    assert await b.locator("#files a.download").count() == 0
    conn.post_frame = original  # type: ignore[method-assign]

    # 2. A member (the Python client) sends Bob a file with one chunk of other content.
    mallory = await SignalingClient.connect(srv.ws)
    try:
        await mallory.join(ROOM, PASSWORD)
        data = pattern_file(3 * CHUNK_BYTES + 5)
        offer = Offer.of("invoice.pdf", data)
        await mallory.seal(b_id, offer.to_json())
        for i in range(offer.chunks):
            piece = offer.piece(data, i)
            await mallory.seal(b_id, chunk_message(offer, i, piece[::-1] if i == 2 else piece))
        snap = await until(b, "s => s.files.length === 2 && s.files[1].state === 'failed'")
        assert snap["files"][1]["reason"] == "hash-mismatch"
        assert "SHA-256 does not match" in await b.inner_text("#files")
        replies = []
        for _ in range(10):
            msg = await mallory.next_sealed(10)
            replies.append(msg.json())
            if replies[-1]["type"] == "file-cancel":
                break
        assert replies[-1] == {"type": "file-cancel", "id": offer.id, "reason": "hash-mismatch"}

        # 3. The same Python member, honest now, and the page understand each other both
        # ways: a file to Bob arrives, and Bob's file to it arrives byte-identical.
        good = pattern_file(2 * CHUNK_BYTES + 1)
        result = await send_file(mallory, mallory.inbox, b_id, "good.bin", good, pace=0.0)
        assert result == {b_id: "done"}
        snap = await until(b, "s => s.files.length === 3 && s.files[2].state === 'done'")
        assert snap["files"][2]["sha256"] == hashlib.sha256(good).hexdigest()
        mallory.drain()
        assert await b.is_visible("#files-panel")  # opened by itself for the incoming files
        await b.select_option("#file-to", str(mallory.id))
        receiving = asyncio.ensure_future(receive_file(mallory, mallory.inbox))
        await b.set_input_files("#file-input", files=[
            {"name": "back.bin", "mimeType": "text/plain", "buffer": good[::-1]}])
        back = await receiving
        assert back.data == good[::-1] and back.sender == b_id and back.offer.mime == "text/plain"
    finally:
        await mallory.close()
