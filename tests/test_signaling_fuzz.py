"""Hypothesis drives arbitrary frames through the real dispatcher: nothing may crash it.

The frames go through ``SignalingServer._dispatch`` on a connection object whose
socket is a recorder, so thousands of cases run in seconds; the end-to-end tests in
test_signaling_server.py cover the same path over real sockets.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.config import ServerConfig
from signaling.server import SERVER_ONLY_TYPES, Connection, SignalingServer


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.close_code: int | None = None

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        self.close_code = code


TYPES = sorted(
    {"room-info", "join", "seal", "allow-joining", "turn", "ping", "leave", "sfu-offer", "x"}
    | SERVER_ONLY_TYPES
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {"v": st.one_of(st.just(2), values), "type": st.one_of(st.sampled_from(TYPES), values)},
    optional={
        "room": st.one_of(st.sampled_from(["r", "room-a", "x" * 70]), values),
        "to": st.one_of(st.just("*"), values),
        "seq": values,
        "epoch": values,
        "sig": st.one_of(st.just("A" * 88), values),
        "nonce": st.one_of(st.just("AAAAAAAAAAAAAAAA"), values),
        "ct": values,
        "seconds": values,
        "create": values,
        "from": values,
        "t": values,
    },
)
frames = st.one_of(messages.map(json.dumps), st.text(max_size=200))


def _not_json(name: str) -> Any:
    raise AssertionError(f"the server sent {name}, which is not JSON")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(frames, min_size=1, max_size=8))
def test_dispatch_never_crashes(batch: list[str]) -> None:
    async def run() -> tuple[SignalingServer, list[Any]]:
        server = SignalingServer(ServerConfig(rate=1e9, burst=1e9))
        sock = RecordingSocket()
        conn = Connection(sock, "127.0.0.1", "http://127.0.0.1", server.cfg)  # type: ignore[arg-type]
        for frame in batch:
            await server._dispatch(conn, frame)
        await conn.shutdown()
        server.rooms.close()
        return server, [json.loads(s, parse_constant=_not_json) for s in sock.sent]

    server, replies = asyncio.run(run())
    assert server.stats["errors.server-error"] == 0
    # Every reply is a well-formed protocol message with a known type.
    for reply in replies:
        assert type(reply["v"]) is int and reply["v"] == 2
        assert reply["type"] in {"challenge", "error", "pong", "room-info", "joined", "lock"}
        if reply["type"] == "error":
            assert isinstance(reply["id"], str) and reply["message"]
