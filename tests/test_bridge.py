"""signaling/bridge.py: a host's stand-in for a socket that lives on another node."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.errors import ClusterUnavailable
from signaling.bridge import RelayedSocket


class Relay:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    async def send(self, msg: dict[str, Any]) -> None:
        if self.fail:
            raise ClusterUnavailable("Redis is down")
        self.sent.append(msg)


async def test_frames_and_one_close_go_to_the_entrance() -> None:
    relay, ended = Relay(), []
    sock = RelayedSocket("s1", relay.send, lambda: ended.append(1))
    await sock.send_str('{"v":2,"type":"pong"}')
    assert await sock.close(code=1008, message=b"rate-limited")
    assert not await sock.close(code=1000, message=b"again")  # closed once
    assert relay.sent == [
        {"op": "frame", "sid": "s1", "data": '{"v":2,"type":"pong"}'},
        {"op": "close", "sid": "s1", "code": 1008, "reason": "rate-limited"},
    ]
    assert ended == [1]
    with pytest.raises(ConnectionError):  # the Connection's writer stops on it
        await sock.send_str("late")


async def test_a_relay_failure_ends_the_session_instead_of_leaving_a_gap() -> None:
    relay, ended = Relay(fail=True), []
    sock = RelayedSocket("s1", relay.send, lambda: ended.append(1))
    with pytest.raises(ConnectionError):
        await sock.send_str("lost")
    assert ended == [1] and sock.closed
    assert not await sock.close(code=1000)  # nothing more is sent, nothing raised
