"""TURN REST credentials in coturn's scheme (``use-auth-secret``).

draft-uberti-behave-turn-rest-00 §2.2, as coturn implements it: the username is
``<expiry unix time>:<peer id>`` and the password is
``base64(HMAC-SHA1(static-auth-secret, username))``. coturn recomputes the HMAC and
refuses the username once its expiry has passed, so a leaked credential heals itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

DEFAULT_TTL = 3600


@dataclass(frozen=True)
class TurnCredential:
    urls: tuple[str, ...]
    username: str
    credential: str
    expires: int

    def ice_server(self) -> dict[str, object]:
        """The RTCIceServer dictionary a browser passes to RTCPeerConnection."""
        return {"urls": list(self.urls), "username": self.username, "credential": self.credential}


def turn_password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def mint(
    urls: tuple[str, ...],
    secret: str,
    peer_id: str,
    ttl: int = DEFAULT_TTL,
    now: float | None = None,
) -> TurnCredential:
    expires = int(time.time() if now is None else now) + ttl
    username = f"{expires}:{peer_id}"
    return TurnCredential(urls, username, turn_password(secret, username), expires)


def verify(secret: str, username: str, password: str, now: float | None = None) -> bool:
    """What coturn does with a REST credential (used by tests and by operators' tooling)."""
    expiry, sep, _ = username.partition(":")
    if not sep or not expiry.isdigit():
        return False
    if int(expiry) < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(turn_password(secret, username), password)
