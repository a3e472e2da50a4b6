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
    # Hardening (docs/PROTOCOL.md "Limits", docs/SECURITY.md).
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
    # Graceful shutdown (docs/DEPLOY.md "Stopping and restarting"): after SIGTERM the server
    # stays up `drain_grace` s with /healthz/ready 503, joins refused (`shutting-down`) and
    # every socket told `going-away`, then closes them with 1001; the process exits within
    # `shutdown_timeout` s of the signal whatever happens (forced, exit code 1, past it).
    drain_grace: float = 2.0
    shutdown_timeout: float = 15.0
    # What `going-away.retry_after` tells clients: seconds before their first reconnect.
    retry_after: float = 1.0
    # Where the server keeps its own state (resume-credential key, locked room names at
    # shutdown); None: a key in memory only and nothing written (tests, embedding).
    state_dir: str | None = None
    # Slow readers (docs/PROTOCOL.md "Transport"): the UTF-8 bytes queued for one socket
    # and not yet handed to the kernel may not exceed `outbox_bytes`; a message the socket
    # has not taken within `drain_timeout` s closes it too (1013 `slow-consumer`). A close
    # frame the socket does not take within `close_grace` s ends in a TCP reset.
    outbox_bytes: int = 1024 * 1024
    drain_timeout: float = 10.0
    close_grace: float = 1.0
    # One address's messages over all its sockets (the per-socket bucket is `rate`/`burst`).
    rate_ip: float = 100.0
    burst_ip: float = 200.0
    # Host names served (DNS rebinding, docs/SECURITY.md): besides these, IP literals,
    # `localhost`, `host` and the hosts of `allowed_origins`; "*" allows any name.
    allowed_hosts: tuple[str, ...] = ()

    @property
    def turn_enabled(self) -> bool:
        return bool(self.turn_urls and self.turn_secret)
