"""Validation of the fields of client messages.

Every accessor raises ``SignalingError(BAD_MESSAGE)`` naming the field, so a handler
reads like the protocol table in docs/PROTOCOL.md and never trusts an input's type.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from signaling.errors import ErrorId, SignalingError

ROOM_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")
PID_RE = re.compile(r"p[0-9a-f]{12}")
MAX_SAFE_INT = 2**53 - 1  # the largest integer JavaScript represents exactly


def bad(field: str, why: str) -> SignalingError:
    return SignalingError(ErrorId.BAD_MESSAGE, f"{field} {why}")


def get_str(msg: dict[str, Any], field: str, max_len: int = 256) -> str:
    value = msg.get(field)
    if not isinstance(value, str):
        raise bad(field, "must be a string")
    if len(value) > max_len:
        raise bad(field, f"is longer than {max_len}")
    return value


def get_int(msg: dict[str, Any], field: str, lo: int = 0, hi: int = MAX_SAFE_INT) -> int:
    value = msg.get(field)
    # bool is an int subclass in Python; JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(field, "must be an integer")
    if not lo <= value <= hi:
        raise bad(field, f"must be in {lo}..{hi}")
    return value


def get_b64(
    msg: dict[str, Any],
    field: str,
    size: int | None = None,
    max_size: int = 65536,
    min_size: int = 0,
) -> bytes:
    """Standard base64 with padding, canonical (RFC 4648 §4, §3.5); sizes on decoded bytes."""
    text = get_str(msg, field, max_len=4 * ((max_size + 2) // 3))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad(field, "must be standard base64") from None
    if base64.b64encode(raw).decode("ascii") != text:  # non-zero pad bits, or no padding
        raise bad(field, "must be canonical base64")
    if size is not None and len(raw) != size:
        raise bad(field, f"must be {size} bytes")
    if not min_size <= len(raw) <= max_size:
        raise bad(field, f"must be {min_size}..{max_size} bytes")
    return raw


def get_room(msg: dict[str, Any]) -> str:
    room = msg.get("room")
    if not isinstance(room, str) or not ROOM_RE.fullmatch(room):
        raise SignalingError(ErrorId.BAD_ROOM)
    return room


def get_object(msg: dict[str, Any], field: str) -> dict[str, Any]:
    value = msg.get(field)
    if not isinstance(value, dict):
        raise bad(field, "must be an object")
    return value
