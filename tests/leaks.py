"""What a secret looks like wherever it might leak: raw bytes and their printable forms."""

from __future__ import annotations

import base64

from e2ee.roomcrypto import KdfParams, password_key, room_keys


def derived_secrets(password: str, room: str, kdf: KdfParams | None) -> list[bytes]:
    """K, k_room and adm_seed of a room (``kdf``: its parameters, e.g. ``client.kdf`` after a
    join): none of them may ever reach the server."""
    if kdf is None:
        raise AssertionError("join the room first: its salt is in the parameters")
    key = password_key(password, kdf)
    keys = room_keys(key, room)
    return [key, keys.k_room, keys.adm_seed]


def text_forms(secret: bytes) -> list[str]:
    """The ways bytes show up in text: hex, base64, and raw (latin-1)."""
    return [secret.hex(), base64.b64encode(secret).decode(), secret.decode("latin-1")]
