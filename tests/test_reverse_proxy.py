"""Behind nginx (docs/DEPLOY.md): X-Forwarded-For/-Proto believed only from trusted proxies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from peers.client import ServerError, SignalingClient
from tests.conftest import RunningServer

PASSWORD = "behind the proxy"


async def connect(srv: RunningServer, client_ip: str, proto: str = "http",
                  origin: str | None = None) -> SignalingClient:
    """What nginx forwards for a browser at ``client_ip`` (see DEPLOY.md's location /ws)."""
    origin = origin or f"{proto}://127.0.0.1:{srv.port}"
    http = aiohttp.ClientSession()
    try:
        ws = await http.ws_connect(srv.ws, origin=origin, headers={
            "X-Forwarded-For": f"198.51.100.77, {client_ip}", "X-Forwarded-Proto": proto})
    except BaseException:
        await http.close()
        raise
    client = SignalingClient(http, ws, origin)
    await asyncio.wait_for(client.challenged.wait(), 10)
    return client


async def fails(srv: RunningServer, client_ip: str) -> str:
    client = await connect(srv, client_ip)
    try:
        with pytest.raises(ServerError) as err:
            await client.join("door", PASSWORD + "?")
        return err.value.id
    finally:
        await client.close()


async def test_failures_are_limited_per_forwarded_client_behind_a_trusted_proxy(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    srv = await signaling(trusted_proxies=("127.0.0.1",), fail_limit_ip=1)
    async with await SignalingClient.connect(srv.ws) as owner:
        await owner.join("door", PASSWORD)
        assert await fails(srv, "203.0.113.1") == "wrong-password"
        assert await fails(srv, "203.0.113.1") == "too-many-attempts"
        # Another user behind the same proxy is not punished for the first one's guesses.
        assert await fails(srv, "203.0.113.2") == "wrong-password"


async def test_forwarded_headers_from_anyone_else_are_ignored(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    srv = await signaling(fail_limit_ip=1)  # no trusted proxy
    async with await SignalingClient.connect(srv.ws) as owner:
        await owner.join("door", PASSWORD)
        assert await fails(srv, "203.0.113.1") == "wrong-password"
        # A forged X-Forwarded-For does not buy a fresh failure budget.
        assert await fails(srv, "203.0.113.2") == "too-many-attempts"


async def test_origin_uses_the_forwarded_scheme_only_from_a_trusted_proxy(
    signaling: Callable[..., Awaitable[RunningServer]],
) -> None:
    trusted = await signaling(trusted_proxies=("127.0.0.1",))
    client = await connect(trusted, "203.0.113.5", proto="https")
    await client.close()
    untrusted = await signaling()
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await connect(untrusted, "203.0.113.5", proto="https")
    assert err.value.status == 403
