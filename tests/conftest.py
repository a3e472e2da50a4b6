"""Shared fixtures.

Browser tests get fresh Chromium profiles from ``chromium``: a factory that opens a
persistent context (fresh ``--user-data-dir`` each) on the single Playwright driver
of the session, and closes everything at the end of the test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from peers.browser import CHROMIUM, CHROMIUM_ARGS

BrowserFactory = Callable[..., Awaitable[Any]]


def pytest_configure(config: pytest.Config) -> None:
    # `sealroom serve` keeps its own files (self-signed certificate, resume key, the names
    # of locked rooms at a restart) in $XDG_STATE_HOME/sealroom: servers the tests start
    # use a directory of the run's own, never the user's home.
    state = tempfile.mkdtemp(prefix="sealroom-test-state-")
    os.environ["XDG_STATE_HOME"] = state
    config.add_cleanup(lambda: shutil.rmtree(state, ignore_errors=True))
ServerFactory = Callable[..., Awaitable["RunningServer"]]


@pytest_asyncio.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserFactory]:
    """``ctx = await chromium(extra_args=[...])`` → a Playwright BrowserContext."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run the suite through ./dev test, which installs it")
    from playwright.async_api import async_playwright

    contexts: list[Any] = []
    async with async_playwright() as pw:

        async def launch(extra_args: list[str] | None = None, **kwargs: Any) -> Any:
            profile = tmp_path / f"profile-{len(contexts)}"
            ctx = await pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS + (extra_args or []),
                **kwargs,
            )
            contexts.append(ctx)
            return ctx

        try:
            yield launch
        finally:
            for ctx in contexts:
                await ctx.close()


class RunningServer:
    """A SignalingServer listening on 127.0.0.1 (ephemeral port) inside the test's loop."""

    def __init__(self, server: Any, runner: Any, port: int) -> None:
        self.server = server
        self.runner = runner
        self.port = port
        self.http = f"http://127.0.0.1:{port}"
        self.ws = f"ws://127.0.0.1:{port}/ws"


@pytest_asyncio.fixture
async def signaling() -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """``srv = await signaling(lock_after=1, media=...)`` → a running server."""
    from aiohttp import web

    from sealroom.metrics import Metrics
    from signaling.config import ServerConfig
    from signaling.server import SignalingServer

    running: list[RunningServer] = []

    async def start(media: Any = None, **overrides: Any) -> RunningServer:
        cfg = ServerConfig(host="127.0.0.1", port=0, **overrides)
        server = SignalingServer(cfg, media, metrics=Metrics)
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        srv = RunningServer(server, runner, port)
        running.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in running:
            await srv.runner.cleanup()
            if srv.server.media is not None:
                await srv.server.media.close()


@pytest_asyncio.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[Any]:
    """A real redis-server on a loopback port of its own (bench/redisserver.py)."""
    from bench.redisserver import REDIS_SERVER, RedisServer

    if not Path(REDIS_SERVER).exists():
        pytest.fail(f"{REDIS_SERVER} is missing: run the suite through ./dev test, which "
                    "installs Debian's redis-server")
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def redis(redis_server: Any) -> AsyncIterator[Any]:
    """An asyncio redis-py client of ``redis_server`` (cluster/cluster.py ``connect``)."""
    from cluster.cluster import connect

    client = connect(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()
