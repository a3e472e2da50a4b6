"""What the page tells a person when things are not simple, in real Chromium.

Camera and microphone denied, a browser without an encoded-transform API, a locked
room and "Allow joining", a connection the server drops (reconnect and rejoin), and a
room whose secret travels only in the link's #fragment.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sfu import Sfu, SfuConfig
from tests import callpage
from tests.callpage import join, open_browser, until
from tests.conftest import BrowserFactory, RunningServer, ServerFactory

pytestmark = [pytest.mark.browser, pytest.mark.media]

ONE_OTHER = "s => s.tiles.filter(t => t.id !== 'self' && t.width > 0).length === 1"


async def test_denied_camera_joins_without_it_and_says_so(
    signaling: ServerFactory, chromium: BrowserFactory, tmp_path: Path
) -> None:
    srv = await signaling(media=Sfu(SfuConfig(port_min=41000, port_max=41999)))
    seeing = await open_browser(chromium, tmp_path, 1)
    # Chromium's own permission UI, answering "deny" (no camera, no microphone). Without
    # that permission Chromium hides host addresses behind mDNS names, and on a loopback-only
    # namespace it then offers no candidate at all; on a real network the SFU learns the
    # browser's address from its connectivity checks (a peer-reflexive candidate, RFC 8445
    # §7.3.1.3). The feature switch shows the loopback address instead, as
    # --allow-loopback-in-peer-connection does for everyone else here.
    denied = await open_browser(
        chromium, tmp_path, 2,
        ("--use-fake-ui-for-media-stream=deny", "--disable-features=WebRtcHideLocalIpsWithMdns"),
    )
    await join(seeing, srv.http, "Sees")
    await join(denied, srv.http, "Denied")
    snap = await until(denied, "s => s.joined && s.banner !== null")
    assert "blocked" in snap["banner"], snap
    assert snap["localTracks"] == []
    assert await denied.is_disabled("#camera")
    # The others still see the person, by name, without video; and the person sees them.
    await until(seeing, "s => s.tiles.some(t => t.name === 'Denied')")
    await until(denied, ONE_OTHER)


async def test_browser_without_encoded_transforms_is_told_and_cannot_join(
    signaling: ServerFactory, chromium: BrowserFactory, tmp_path: Path
) -> None:
    srv = await signaling()
    page = await open_browser(chromium, tmp_path, 1)
    # What an older browser looks like: neither RTCRtpScriptTransform nor
    # createEncodedStreams(). Joining would send unencrypted frames, so the page refuses.
    await page.add_init_script(
        "delete window.RTCRtpScriptTransform;"
        "delete RTCRtpSender.prototype.createEncodedStreams;"
    )
    await page.goto(srv.http + "/")
    assert await page.is_visible("#unsupported")
    assert "cannot encrypt video end to end" in await page.inner_text("#unsupported")
    assert await page.is_disabled("#join")


async def test_locked_room_names_the_way_in_and_a_member_lets_a_newcomer_in(
    signaling: ServerFactory, chromium: BrowserFactory, tmp_path: Path
) -> None:
    srv = await signaling(lock_after=2)
    member = await open_browser(chromium, tmp_path, 1)
    late = await open_browser(chromium, tmp_path, 2)
    await join(member, srv.http, "Member")
    await member.wait_for_selector("#room-view:not([hidden])")
    await member.wait_for_function(
        "document.querySelector('#lock-state').innerText.startsWith('Locked')", timeout=10_000
    )
    await join(late, srv.http, "Late")
    await late.wait_for_selector("#status.error")
    assert "Allow joining" in await late.inner_text("#status")
    await member.click("#allow")
    await member.wait_for_function(
        "document.querySelector('#lock-state').innerText.startsWith('Open to newcomers')",
        timeout=10_000,
    )
    await late.click("#join")
    await late.wait_for_selector("#room-view:not([hidden])")
    await until(member, "s => s.tiles.some(t => t.name === 'Late')")


async def test_dropped_connection_reconnects_and_rejoins(
    signaling: ServerFactory, chromium: BrowserFactory, tmp_path: Path
) -> None:
    srv: RunningServer = await signaling(media=Sfu(SfuConfig(port_min=42000, port_max=42999)))
    pages = [await open_browser(chromium, tmp_path, seed) for seed in (1, 2)]
    for page, name in zip(pages, ("Stays", "Drops"), strict=True):
        await join(page, srv.http, name)
    ids = [(await until(page, ONE_OTHER))["id"] for page in pages]
    # The server drops the second person's socket, as a network change would.
    await srv.server.conns[ids[1]].ws.close(code=1012)
    await until(pages[1], "s => s.banner !== null && s.banner.includes('reconnecting')")
    snap = await until(pages[1], f"s => s.id !== null && s.id !== '{ids[1]}' && s.banner === null")
    new_id = snap["id"]
    # Both see each other again, with the new keys (pixels, not just frames).
    await until(pages[1], ONE_OTHER)
    await until(pages[0], f"s => s.tiles.some(t => t.id === '{new_id}' && t.width > 0)")
    await callpage.sees(pages[0], pages[1], new_id, [])
    await callpage.sees(pages[1], pages[0], ids[0], [])
    assert not any(t["id"] == ids[1] for t in (await callpage.snapshot(pages[0]))["tiles"])


async def test_secret_link_joins_without_a_password_and_the_secret_stays_in_the_browser(
    signaling: ServerFactory, chromium: BrowserFactory, tmp_path: Path
) -> None:
    srv = await signaling()
    srv.server.wire_tap = []
    creator = await open_browser(chromium, tmp_path, 1)
    await creator.goto(srv.http + "/")
    await creator.fill("#name", "Creator")
    await creator.click("#create-link")  # a new room whose secret lives only in the link
    await creator.wait_for_selector("#room-view:not([hidden])")
    link = creator.url
    room, _, secret = link.partition("#")
    assert "/r/room-" in room and len(secret) >= 43, link
    guest = await open_browser(chromium, tmp_path, 2)
    await guest.goto(link)
    assert await guest.is_hidden("#password-label")  # nothing to type
    await guest.fill("#name", "Guest")
    await guest.click("#join")
    await guest.wait_for_selector("#room-view:not([hidden])")
    await until(creator, "s => s.tiles.some(t => t.name === 'Guest')")
    # The fragment is never sent: not in any request path, not on the wire.
    await asyncio.sleep(0.2)
    assert secret not in "\n".join(srv.server.wire_tap)
