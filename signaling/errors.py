"""Typed signaling errors: a stable id, a human message, and what happens to the socket.

Galene maps its errors to WebSocket close codes the same way. Non-fatal errors are
answered with an ``error`` message and the socket stays open; fatal ones close the
socket with the close code below and the error id as the close reason. The table is
reproduced in docs/PROTOCOL.md ("Errors"); tests/test_signaling_errors.py keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# RFC 6455 §7.4.1 close codes.
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013


@dataclass(frozen=True)
class ErrorSpec:
    message: str
    close_code: int | None = None  # None: the socket stays open
    http_status: int | None = None  # refused before the WebSocket upgrade


class ErrorId(StrEnum):
    """Every error the server sends. The value is the stable id on the wire."""

    BAD_ORIGIN = "bad-origin"
    BAD_HOST = "bad-host"
    TOO_MANY_CONNECTIONS = "too-many-connections"
    BAD_JSON = "bad-json"
    BAD_MESSAGE = "bad-message"
    UNSUPPORTED_VERSION = "unsupported-version"
    UNKNOWN_TYPE = "unknown-type"
    SERVER_ONLY_TYPE = "server-only-type"
    BINARY_FRAME = "binary-frame"
    TOO_BIG = "too-big"
    RATE_LIMITED = "rate-limited"
    SLOW_CONSUMER = "slow-consumer"
    BAD_ROOM = "bad-room"
    NO_SUCH_ROOM = "no-such-room"
    WEAK_KDF = "weak-kdf"
    EXCESSIVE_KDF = "excessive-kdf"
    WRONG_PASSWORD = "wrong-password"
    TOO_MANY_ATTEMPTS = "too-many-attempts"
    ROOM_LOCKED = "room-locked"
    ROOM_FULL = "room-full"
    TOO_MANY_ROOMS = "too-many-rooms"
    NOT_JOINED = "not-joined"
    ALREADY_JOINED = "already-joined"
    UNKNOWN_RECIPIENT = "unknown-recipient"
    SPOOFED_FROM = "spoofed-from"
    REPLAY = "replay"
    NO_TURN = "no-turn"
    SFU_UNAVAILABLE = "sfu-unavailable"
    MEDIA_FAILED = "media-failed"
    SERVER_ERROR = "server-error"
    SHUTTING_DOWN = "shutting-down"
    BAD_RESUME = "bad-resume"
    RESUME_EXPIRED = "resume-expired"
    CLUSTER_UNAVAILABLE = "cluster-unavailable"
    RELAY_LOST = "relay-lost"


SPECS: dict[ErrorId, ErrorSpec] = {
    ErrorId.BAD_ORIGIN: ErrorSpec("this page's origin is not allowed to connect", http_status=403),
    # RFC 9110 §15.5.20: 421, a request for a name this server does not answer for (the
    # Host allow-list, against DNS rebinding).
    ErrorId.BAD_HOST: ErrorSpec("this server does not answer for that host name",
                                http_status=421),
    ErrorId.TOO_MANY_CONNECTIONS: ErrorSpec(
        "too many connections from your address", http_status=429
    ),
    ErrorId.BAD_JSON: ErrorSpec("the message is not a JSON object"),
    ErrorId.BAD_MESSAGE: ErrorSpec("a field of the message is missing or malformed"),
    ErrorId.UNSUPPORTED_VERSION: ErrorSpec("unsupported protocol version (this server speaks v=2)"),
    ErrorId.UNKNOWN_TYPE: ErrorSpec("unknown message type"),
    ErrorId.SERVER_ONLY_TYPE: ErrorSpec(
        "clients may not send this message type", close_code=CLOSE_POLICY
    ),
    ErrorId.BINARY_FRAME: ErrorSpec(
        "binary frames are not part of the protocol", close_code=CLOSE_UNSUPPORTED_DATA
    ),
    ErrorId.TOO_BIG: ErrorSpec("message larger than the limit (256 KiB)", close_code=CLOSE_TOO_BIG),
    ErrorId.RATE_LIMITED: ErrorSpec("too many messages; slow down", close_code=CLOSE_POLICY,
                                    http_status=429),
    ErrorId.SLOW_CONSUMER: ErrorSpec(
        "you are not reading your messages fast enough", close_code=CLOSE_TRY_LATER
    ),
    ErrorId.BAD_ROOM: ErrorSpec("room names are 1–64 characters of A–Z a–z 0–9 . _ ~ -"),
    ErrorId.NO_SUCH_ROOM: ErrorSpec("the room does not exist; send create to make it"),
    ErrorId.WEAK_KDF: ErrorSpec("key-derivation parameters weaker than the minimum"),
    ErrorId.EXCESSIVE_KDF: ErrorSpec(
        "key-derivation parameters above the maximum (ops ≤ 16, mem ≤ 1 GiB)"
    ),
    ErrorId.WRONG_PASSWORD: ErrorSpec("wrong password for this room"),
    ErrorId.TOO_MANY_ATTEMPTS: ErrorSpec("too many failed attempts; wait a minute and try again"),
    ErrorId.ROOM_LOCKED: ErrorSpec(
        "the room is locked; a member can press “Allow joining” to let you in"
    ),
    ErrorId.ROOM_FULL: ErrorSpec("the room is full"),
    ErrorId.TOO_MANY_ROOMS: ErrorSpec("your address has created too many rooms"),
    ErrorId.NOT_JOINED: ErrorSpec("join a room first"),
    ErrorId.ALREADY_JOINED: ErrorSpec("this connection is already in a room"),
    ErrorId.UNKNOWN_RECIPIENT: ErrorSpec("the recipient is not in the room"),
    ErrorId.SPOOFED_FROM: ErrorSpec(
        "from is stamped by the server; if sent, it must be your own id"
    ),
    ErrorId.REPLAY: ErrorSpec("seq must increase with every sealed message"),
    ErrorId.NO_TURN: ErrorSpec("this server has no TURN service configured"),
    ErrorId.SFU_UNAVAILABLE: ErrorSpec("this server runs no SFU"),
    ErrorId.MEDIA_FAILED: ErrorSpec(
        "your media connection to the SFU failed; reconnect and join again",
        close_code=CLOSE_TRY_LATER,
    ),
    ErrorId.SERVER_ERROR: ErrorSpec("internal server error", close_code=CLOSE_INTERNAL),
    ErrorId.SHUTTING_DOWN: ErrorSpec(
        "the server is shutting down; reconnect after going-away.retry_after"
    ),
    ErrorId.BAD_RESUME: ErrorSpec(
        "the resume credential is invalid for this room, or its signature does not verify"
    ),
    ErrorId.RESUME_EXPIRED: ErrorSpec("the resume credential has expired; join without it"),
    # Several nodes (--redis, docs/DEPLOY.md "Several nodes"): Redis, which places rooms and
    # relays between nodes, cannot be reached now; calls already running go on.
    ErrorId.CLUSTER_UNAVAILABLE: ErrorSpec(
        "the servers cannot reach their shared state just now; try again in a few seconds"
    ),
    ErrorId.RELAY_LOST: ErrorSpec(
        "the link to the server hosting your room was lost; reconnect and join again",
        close_code=CLOSE_TRY_LATER,
    ),
}


class SignalingError(Exception):
    """Raised inside a handler; the dispatcher turns it into an ``error`` or a close."""

    def __init__(self, error_id: ErrorId, detail: str | None = None) -> None:
        super().__init__(error_id.value)
        self.id = error_id
        self.detail = detail

    @property
    def spec(self) -> ErrorSpec:
        return SPECS[self.id]

    @property
    def message(self) -> str:
        base = self.spec.message
        return f"{base}: {self.detail}" if self.detail else base

    @property
    def fatal(self) -> bool:
        return self.spec.close_code is not None
