"""Server settings with their embedded defaults (``sealroom serve`` with no flags)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerConfig:
    host: str = "localhost"
    port: int = 8080
    tls_cert: str | None = None
    tls_key: str | None = None
    # Origins allowed to open /ws besides the server's own (scheme://host[:port]).
    allowed_origins: tuple[str, ...] = ()
    # Reverse proxies (IP addresses) whose X-Forwarded-For/-Proto headers are believed.
    trusted_proxies: tuple[str, ...] = ()
    # Seconds after creation when a room stops admitting newcomers (0 = never).
    lock_after: float = 600.0
    # Longest "Allow joining" window a member may open, in seconds.
    max_allow_joining: float = 600.0
    # Seconds an empty room's record is kept before it expires.
    empty_ttl: float = 300.0
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    turn_ttl: int = 3600
    log_level: str = "info"
    # Hardening (DESIGN.md, item 9).
    max_message: int = 256 * 1024  # SDP of a 50-person room (docs/SFU.md "Known limits")
    rate: float = 50.0
    burst: float = 100.0
    heartbeat: float = 20.0
    max_members: int = 100
    max_rooms_per_ip: int = 20
    max_connections_per_ip: int = 200
    # Failed admissions allowed per window, per client address and per room.
    fail_limit_ip: int = 5
    fail_limit_room: int = 20
    fail_window: float = 60.0
    outbox: int = 1024

    @property
    def turn_enabled(self) -> bool:
        return bool(self.turn_urls and self.turn_secret)
