"""Bad signaling messages get a typed sfu-error and never raise out of Sfu.handle."""

from __future__ import annotations

from typing import Any

import pytest

from sfu import Sfu, SfuConfig


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)


@pytest.mark.parametrize(
    ("msg", "error_id"),
    [
        ({"type": "sfu-nonsense"}, "unknown-type"),
        ({"type": 7}, "bad-message"),
        ({}, "bad-message"),
        ([1, 2], "bad-message"),
        ({"type": "sfu-offer", "pc": "sub", "sdp": "v=0"}, "bad-message"),
        ({"type": "sfu-offer", "pc": "pub"}, "bad-message"),
        ({"type": "sfu-offer", "pc": "pub", "sdp": ""}, "bad-message"),
        ({"type": "sfu-offer", "pc": "pub", "sdp": "x" * 300_000}, "bad-message"),
        ({"type": "sfu-offer", "pc": "pub", "sdp": "this is not SDP"}, "bad-sdp"),
        ({"type": "sfu-offer", "pc": "pub", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"},
         "bad-sdp"),
        ({"type": "sfu-answer", "pc": "sub", "sdp": "v=0\r\n"}, "unexpected-answer"),
        ({"type": "sfu-answer", "pc": "pub", "sdp": "v=0\r\n"}, "bad-message"),
    ],
)
async def test_bad_messages_get_typed_errors(msg: Any, error_id: str) -> None:
    sfu = Sfu(SfuConfig())
    inbox = Inbox()
    try:
        await sfu.join("room", "p", inbox)
        await sfu.handle("p", msg)
        errors = [m for m in inbox.messages if m["type"] == "sfu-error"]
        assert [e["id"] for e in errors] == [error_id]
        assert errors[0]["message"]
        assert sfu.stats()["errors"] == 1
        assert sfu.stats()["error_" + error_id] == 1
    finally:
        await sfu.close()


async def test_messages_from_unknown_participants_are_counted() -> None:
    sfu = Sfu(SfuConfig())
    await sfu.handle("ghost", {"type": "sfu-keyframe"})
    assert sfu.stats()["error_not-joined"] == 1
    await sfu.leave("ghost")  # leaving twice or unknown is harmless
    await sfu.close()


async def test_keyframe_request_without_publishing_is_harmless() -> None:
    sfu = Sfu(SfuConfig())
    inbox = Inbox()
    await sfu.join("room", "p", inbox)
    await sfu.handle("p", {"type": "sfu-keyframe"})
    assert inbox.messages == []
    await sfu.close()
