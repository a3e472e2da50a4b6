"""Real headless Firefox (Debian's /usr/bin/firefox-esr) for the browser tests.

Never Playwright's Firefox and never a browser download: ``tests/firefox/driver.mjs``
drives the Debian package with puppeteer-core over WebDriver BiDi (pinned in
``tests/firefox/package-lock.json``; ``./dev test`` runs ``npm ci`` there before the suite,
outside the loopback-only namespace). This module speaks the driver's JSON lines and
gives each page the part of Playwright's ``Page`` API that ``tests/callpage.py`` uses, so
the same helpers (``join``, ``until``, ``sees``, ``inbound_audio``…) drive both browsers.
Every request is bounded; closing kills what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

FIREFOX = os.environ.get("SEALROOM_FIREFOX", "/usr/bin/firefox-esr")
DRIVER = Path(__file__).resolve().parent / "firefox" / "driver.mjs"

FIREFOX_PREFS: dict[str, Any] = {
    # Fake camera and microphone, no permission prompt (Chromium's
    # --use-fake-device-for-media-stream and --use-fake-ui-for-media-stream).
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # Firefox's counterpart of --allow-loopback-in-peer-connection; both are needed. Without
    # them Firefox gathers host candidates only on the default route's interface, and a
    # loopback-only network has none: no candidate at all, both PCs fail at once. Firefox
    # lifts that restriction only while the page captures with a (real or fake) permission
    # (`permission.fake`), and offers loopback addresses only with `ice.loopback`.
    "media.navigator.permission.fake": True,
    "media.peerconnection.ice.loopback": True,
}

REQUEST_TIMEOUT = 30.0
MAX_LOG_LINES = 1000


# A camera of coloured blocks for Firefox, like Chromium's --use-file-for-fake-video-capture
# with peers/fakecam.py's Y4M (Firefox has no such option: its fake camera is one built-in
# picture). Run before the page's scripts (`FirefoxPage.preload`): getUserMedia keeps
# Firefox's fake microphone and replaces the fake camera with a canvas that shows the grid
# (fakecam.pattern) and an 8-pixel bar walking along the top, 10 frames a second. The page
# itself is unchanged; everything after getUserMedia (encoder, transform, RTP) is Firefox's.
PATTERN_CAMERA = """(grid) => {
  const real = MediaDevices.prototype.getUserMedia;
  MediaDevices.prototype.getUserMedia = async function (constraints) {
    const stream = await real.call(this, constraints);
    if (!constraints || !constraints.video) return stream;
    const canvas = document.createElement('canvas');
    canvas.width = 320;
    canvas.height = 240;
    const ctx = canvas.getContext('2d');
    const bw = canvas.width / grid[0].length, bh = canvas.height / grid.length;
    let n = 0;
    const draw = () => {
      grid.forEach((row, y) => row.forEach(([r, g, b], x) => {
        ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
        ctx.fillRect(x * bw, y * bh, bw, bh);
      }));
      ctx.fillStyle = 'rgb(255, 255, 255)';
      ctx.fillRect((n++ % 10) * 32, 0, 32, 8);
    };
    draw();
    const track = canvas.captureStream(10).getVideoTracks()[0];
    const timer = setInterval(draw, 100);
    track.addEventListener('ended', () => clearInterval(timer));
    const stop = track.stop.bind(track);
    track.stop = () => { clearInterval(timer); stop(); };
    for (const old of stream.getVideoTracks()) {
      stream.removeTrack(old);
      old.stop();
    }
    stream.addTrack(track);
    return stream;
  };
}"""


class FirefoxError(RuntimeError):
    """The driver reported a failed op (its message is the JS error)."""


class Firefox:
    """One headless Firefox behind one driver process."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.version = ""
        self._next = 1
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._pages: dict[str, FirefoxPage] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def launch(cls, log: Path, prefs: dict[str, Any] | None = None) -> Firefox:
        node = shutil.which("node")
        if node is None or not Path(FIREFOX).exists():
            pytest.fail(f"node or {FIREFOX} is missing: run the suite through ./dev test")
        if not (DRIVER.parent / "node_modules" / "puppeteer-core").is_dir():
            pytest.fail("tests/firefox/node_modules is missing: ./dev test runs npm ci there")
        stderr = log.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                node, str(DRIVER), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=stderr, limit=16 * 1024 * 1024,
            )
        finally:
            stderr.close()
        firefox = cls(proc, log)
        try:
            firefox.version = await firefox.request(
                "launch", prefs={**FIREFOX_PREFS, **(prefs or {})}, timeout=60.0
            )
        except BaseException:
            await firefox.close()
            raise
        return firefox

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            if "event" in msg:
                page = self._pages.get(msg.get("page"))
                if page is not None:
                    lines = page.errors if msg["event"] == "pageerror" else page.console
                    lines.append(msg["text"])
                    del lines[:-MAX_LOG_LINES]
                continue
            fut = self._waiting.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                if msg["ok"]:
                    fut.set_result(msg["value"])
                else:
                    fut.set_exception(FirefoxError(msg["error"]))
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(FirefoxError(f"the driver exited (log: {self.log})"))

    async def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> Any:
        """One op, answered within `timeout` seconds (the driver bounds it too)."""
        assert self.proc.stdin is not None
        rid = self._next
        self._next += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        line = json.dumps({"id": rid, "op": op, "timeout": int(timeout * 1000), **fields})
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            return await asyncio.wait_for(fut, timeout + 5)
        finally:
            self._waiting.pop(rid, None)

    async def new_page(self) -> FirefoxPage:
        page = FirefoxPage(self, await self.request("newPage"))
        self._pages[page.id] = page
        return page

    async def close(self) -> None:
        """Close Firefox (bounded), then make sure the driver is gone."""
        with contextlib.suppress(Exception):
            await self.request("close", timeout=15.0)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class FirefoxPage:
    """The subset of Playwright's ``Page`` that tests/callpage.py uses."""

    def __init__(self, firefox: Firefox, page_id: str) -> None:
        self.firefox = firefox
        self.id = page_id
        self.errors: list[str] = []
        self.console: list[str] = []

    async def _do(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> Any:
        return await self.firefox.request(op, timeout=timeout, page=self.id, **fields)

    async def pattern_camera(self, seed: int) -> None:
        """From the next document on, the camera shows fakecam's pattern `seed`."""
        from peers.fakecam import pattern

        await self.preload(PATTERN_CAMERA, pattern(seed))

    async def preload(self, source: str, arg: Any = None) -> None:
        """Run the JS function `source` with `arg` in every document before its scripts."""
        await self._do("preload", source=source, arg=arg)

    async def goto(self, url: str) -> None:
        await self._do("goto", url=url)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self._do("evaluate", expression=expression, arg=arg)

    async def input_value(self, selector: str) -> str:
        value: str = await self.evaluate("(s) => document.querySelector(s).value", selector)
        return value

    async def inner_text(self, selector: str) -> str:
        text: str = await self.evaluate("(s) => document.querySelector(s).innerText", selector)
        return text

    async def fill(self, selector: str, value: str) -> None:
        await self._do("fill", selector=selector, value=value)

    async def click(self, selector: str) -> None:
        await self._do("click", selector=selector)

    async def wait_for_selector(self, selector: str, timeout: float = REQUEST_TIMEOUT) -> None:
        await self._do("waitFor", selector=selector, timeout=timeout)

    async def screenshot(self, path: str) -> None:
        await self._do("screenshot", path=path)


@contextlib.asynccontextmanager
async def firefox(tmp: Path, prefs: dict[str, Any] | None = None) -> AsyncIterator[Firefox]:
    """A headless Firefox for one test (its driver's log in `tmp`), closed after it."""
    browser = await Firefox.launch(tmp / "firefox-driver.log", prefs)
    try:
        yield browser
    finally:
        await browser.close()
