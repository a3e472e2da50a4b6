"""The browser signaling modules (web/js) against the Python client, in real Chromium."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from e2ee.mediakeys import Identity, make_hello, verify_hello
from e2ee.roomcrypto import KdfParams, b64
from peers.browser import ARTIFACTS
from peers.client import SignalingClient
from tests.conftest import BrowserFactory, RunningServer

pytestmark = pytest.mark.browser
PASSWORD = "pässwörd 🔑 shared out of band"


async def browser_join(page: Any, srv: RunningServer, room: str, password: str, name: str) -> None:
    await page.goto(srv.http + "/")
    await page.fill("#room", room)
    await page.fill("#password", password)
    await page.fill("#name", name)
    await page.click("#join")


async def test_browser_and_python_meet_in_a_sealed_room(
    signaling: Callable[..., Awaitable[RunningServer]], chromium: BrowserFactory
) -> None:
    srv = await signaling()
    srv.server.wire_tap = []
    py = await SignalingClient.connect(srv.ws)
    try:
        await py.join("mixed-room", PASSWORD)
        ctx = await chromium()
        page = await ctx.new_page()
        await browser_join(page, srv, "mixed-room", PASSWORD, "Browser Ada")
        await page.wait_for_selector("#room-view:not([hidden])", timeout=20_000)
        joined = await py.expect("member-joined")
        # The browser's sealed, signed hello opens and verifies in Python: same KDF, keys,
        # AAD and AES-GCM for the envelope, same transcript and Ed25519 for the hello.
        hello = await py.next_sealed()
        assert hello.sender == joined["id"]
        peer = verify_hello(hello.json(), "mixed-room", hello.sender, joined["index"])
        assert peer.name == "Browser Ada"
        assert py.id is not None and py.index is not None
        mine = make_hello(Identity.generate(), "mixed-room", py.id, py.index, "Python Bot")
        await py.seal(hello.sender, mine)
        await page.wait_for_function(
            "document.querySelector('#grid').innerText.includes('Python Bot')"
        )
        await py.seal("*", {"type": "chat", "text": "sealed from python"})
        await page.click("#chat-toggle")
        await page.wait_for_selector("#chat li", timeout=10_000)
        assert await page.inner_text("#chat") == "Python Bot: sealed from python"
        await page.fill("#chat-text", "sealed from chromium")
        await page.click("#chat-form button")
        chat = await py.next_sealed()
        while chat.json().get("type") != "chat":  # the browser's mute state, media keys, …
            chat = await py.next_sealed()
        assert chat.json() == {"type": "chat", "text": "sealed from chromium"}
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "signaling-room.png"))
        tapped = "\n".join(srv.server.wire_tap)
        for secret in (PASSWORD, "sealed from chromium", "Browser Ada"):
            assert secret not in tapped
    finally:
        await py.close()


async def test_browser_creates_room_and_wrong_password_is_told(
    signaling: Callable[..., Awaitable[RunningServer]], chromium: BrowserFactory
) -> None:
    srv = await signaling()
    ctx = await chromium()
    owner = await ctx.new_page()
    await browser_join(owner, srv, "browser-made", PASSWORD, "Owner")
    await owner.wait_for_selector("#room-view:not([hidden])", timeout=20_000)
    # Python joins a room whose admission key the browser registered.
    py = await SignalingClient.connect(srv.ws)
    try:
        joined = await py.join("browser-made", PASSWORD)
        assert len(joined["members"]) == 1
        # The browser drew the room's salt: 16 random bytes, recorded and served as sent.
        record = srv.server.rooms.get("browser-made")
        assert record is not None and py.kdf is not None
        assert record.kdf == joined["kdf"] == py.kdf.to_json() and len(py.kdf.salt) == 16
    finally:
        await py.close()
    intruder = await ctx.new_page()
    await browser_join(intruder, srv, "browser-made", "guess", "Mallory")
    await intruder.wait_for_selector("#status.error", timeout=20_000)
    assert await intruder.inner_text("#status") == "Wrong password for this room."
    assert await intruder.is_hidden("#room-view")
    ARTIFACTS.mkdir(exist_ok=True)
    await intruder.screenshot(path=str(ARTIFACTS / "wrong-password.png"))


async def test_browser_refuses_a_salt_changed_between_its_joins(
    signaling: Callable[..., Awaitable[RunningServer]], chromium: BrowserFactory
) -> None:
    """call.js keeps the room's parameters and passes them on every rejoin: a server that
    serves another salt after a reconnect gets no join (no signature to test guesses on)."""
    srv = await signaling()
    srv.server.wire_tap = []
    ctx = await chromium()
    page = await ctx.new_page()
    await browser_join(page, srv, "salted", PASSWORD, "Ada")
    await page.wait_for_selector("#room-view:not([hidden])", timeout=20_000)
    record = srv.server.rooms.get("salted")
    assert record is not None and len(KdfParams.from_json(record.kdf).salt) == 16
    record.kdf = {**record.kdf, "salt": b64(bytes(16))}  # what a hostile server could do
    for conn in list(srv.server.conns.values()):
        await conn.ws.close(code=1012, message=b"restart")
    await page.wait_for_selector("#banner.error", timeout=20_000)
    banner = await page.inner_text("#banner")
    assert "key-derivation parameters changed" in banner, banner
    sent = [json.loads(frame)["type"] for frame in srv.server.wire_tap]
    assert sent.count("join") == 1 and sent.count("room-info") == 2
