"""``sealroom serve --self-signed``: a kept certificate that clients can pin and trust."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from peers.client import SignalingClient
from signaling import turn
from tests import callpage
from tests.conftest import BrowserFactory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    def __init__(
        self, state: Path, port: int, extra: tuple[str, ...] = ("--no-sfu",)
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sealroom.cli", "serve", "--self-signed", "--host",
             "127.0.0.1", "--port", str(port), "--state-dir", str(state), *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.out: list[str] = []

    def wait_open(self) -> str:
        """Read the output until the 'open' line (bounded); all lines read so far."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.out.append(line)
            if "sealroom: open " in line:
                return "".join(self.out)
        self.stop()
        pytest.fail("server did not start:\n" + "".join(self.out))

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return "".join(self.out) + (rest or "")


def printed(out: str, what: str) -> str:
    match = re.search(rf"sealroom: TLS {what} (\S+)", out)
    assert match, f"no '{what}' line in:\n{out}"
    return match.group(1)


def cert_digests(path: Path) -> tuple[str, str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    fp = ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return fp, base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def test_self_signed_certificate_is_made_kept_and_trusted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Served(state, free_port())
    try:
        assert f"open https://localhost:{first.port}/" in first.wait_open()
    finally:
        out = first.stop()
    cert_path = state / "tls" / "cert.pem"
    key_path = state / "tls" / "key.pem"
    fp, _ = cert_digests(cert_path)
    assert printed(out, "SHA-256 fingerprint") == fp
    assert "TLS certificate (made)" in out
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "::1"}

    # Restart: the same certificate, so the fingerprint people compared stays valid.
    # The TURN flags ride along: the credentials handed out over TLS are coturn's scheme.
    turn_flags = ("--turn-urls", "turn:127.0.0.1:3478", "--turn-secret", "s3cret",
                  "--turn-ttl", "120")
    second = Served(state, free_port(), turn_flags)
    try:
        out = second.wait_open()
        assert "TLS certificate (kept)" in out
        assert printed(out, "SHA-256 fingerprint") == fp
        trusting = ssl.create_default_context(cafile=str(cert_path))
        base = f"https://127.0.0.1:{second.port}"
        connector = aiohttp.TCPConnector(ssl=trusting)
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "ready"
            ws = await http.ws_connect(base.replace("https", "wss") + "/ws", origin=base)
            client = SignalingClient(http, ws, base)
            await asyncio.wait_for(client.challenged.wait(), 10)
            joined = await client.join("over-tls", "a password over TLS")
            assert joined["type"] == "joined" and joined["room"] == "over-tls"
            (ice,) = joined["ice_servers"]
            assert ice["urls"] == ["turn:127.0.0.1:3478"]
            assert turn.verify("s3cret", ice["username"], ice["credential"])
            assert 0 < int(ice["username"].split(":")[0]) - time.time() <= 120
            await client.ws.close()
        # A client that does not trust it is refused: the check above is not vacuous.
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(base + "/healthz")
    finally:
        second.stop()


@pytest.mark.browser
async def test_chromium_trusting_the_spki_opens_the_page_over_https(
    tmp_path: Path, chromium: BrowserFactory
) -> None:
    served = Served(tmp_path / "state", free_port())
    try:
        out = served.wait_open()
        spki = printed(out, "SPKI SHA-256")
        assert cert_digests(tmp_path / "state" / "tls" / "cert.pem")[1] == spki
        url = f"https://127.0.0.1:{served.port}/"
        # Without the pin Chromium refuses the certificate...
        untrusting = await chromium()
        page = await untrusting.new_page()
        with pytest.raises(Exception, match="ERR_CERT"):
            await page.goto(url)
        # ...with it (the real way to trust exactly one certificate) it is a secure context.
        ctx = await chromium(extra_args=[f"--ignore-certificate-errors-spki-list={spki}"])
        page = await ctx.new_page()
        resp = await page.goto(url)
        assert resp is not None and resp.status == 200
        assert await page.title() == "sealroom"
        assert await page.evaluate("window.isSecureContext") is True
        assert await page.evaluate("typeof crypto.subtle") == "object"
    finally:
        served.stop()


@pytest.mark.browser
@pytest.mark.media
async def test_browsers_trusting_the_certificate_hold_a_call_over_https(
    tmp_path: Path, chromium: BrowserFactory
) -> None:
    """Two browsers on https:// (a secure context, as on a LAN) join one call through a
    real ``sealroom serve --self-signed`` process and see each other's camera."""
    served = Served(
        tmp_path / "state", free_port(),
        ("--media-host", "127.0.0.1", "--media-ports", "47000-47999"),
    )
    try:
        spki = printed(served.wait_open(), "SPKI SHA-256")
        trust = (f"--ignore-certificate-errors-spki-list={spki}",)
        url = f"https://127.0.0.1:{served.port}"
        pages = [await callpage.open_browser(chromium, tmp_path, seed, trust) for seed in (4, 5)]
        for page, name in zip(pages, ("Lan One", "Lan Two"), strict=True):
            await callpage.join(page, url, name)
        want = "s => s.tiles.filter(t => t.id !== 'self' && t.width > 0).length === 1"
        ids = [(await callpage.until(page, want))["id"] for page in pages]
        assert await pages[0].evaluate("window.isSecureContext") is True
        await callpage.sees(pages[0], pages[1], ids[1], [])
        await callpage.sees(pages[1], pages[0], ids[0], [])
        assert all(page.errors == [] for page in pages)
    finally:
        served.stop()
