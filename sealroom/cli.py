"""The ``sealroom`` command.

Every ``serve`` flag can also be given as an environment variable
(``SEALROOM_<FLAG>``, e.g. ``SEALROOM_PORT=9000``); a flag wins over the variable,
the variable over the embedded default.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sealroom import logs, tls
from sealroom.cpulatency import CpuLatencyLimit
from sealroom.metrics import Metrics
from sfu import Sfu, SfuConfig, workers
from signaling.config import ServerConfig
from signaling.server import MediaPlane, SignalingServer

if TYPE_CHECKING:  # imported at run time only with --redis: a single node never loads redis
    from cluster.cluster import Cluster

log = logging.getLogger("sealroom")
DEFAULTS = ServerConfig()


def _env(name: str, default: Any, conv: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get("SEALROOM_" + name.upper().replace("-", "_"))
    return default if raw is None or raw == "" else conv(raw)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        low, high = int(lo), int(hi if sep else lo)
    except ValueError:
        raise argparse.ArgumentTypeError("expected MIN-MAX, e.g. 40000-40999") from None
    if not (0 <= low <= high <= 65535):
        raise argparse.ArgumentTypeError("ports are 0..65535 and MIN <= MAX")
    return low, high


def _workers(text: str) -> int:
    try:
        return workers.worker_count(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError("a number of processes, or 0 = one per core") from None


def _node_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", text):
        raise argparse.ArgumentTypeError("1–64 characters of A–Z a–z 0–9 . _ -")
    return text


def _flag(text: str) -> bool:
    return text.lower() not in ("0", "false", "no")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sealroom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the web client, signaling and the SFU")
    a = serve.add_argument
    a("--host", default=_env("host", DEFAULTS.host), help="address to listen on [%(default)s]")
    a("--port", type=int, default=_env("port", DEFAULTS.port, int), help="[%(default)s]")
    a("--tls-cert", default=_env("tls-cert", None), help="PEM certificate for HTTPS")
    a("--tls-key", default=_env("tls-key", None), help="PEM private key for HTTPS")
    a(
        "--self-signed",
        action="store_true",
        default=_env("self-signed", False, _flag),
        help="serve HTTPS with a self-signed certificate made once and kept in --state-dir "
        "(for LAN use; its SHA-256 fingerprint is printed at start)",
    )
    a(
        "--tls-names",
        type=_csv,
        default=_env("tls-names", (), _csv),
        help="comma-separated extra DNS names/IPs for the self-signed certificate",
    )
    a(
        "--state-dir",
        type=Path,
        default=_env("state-dir", tls.default_state_dir(), Path),
        help="where state is kept: the self-signed certificate, the key of resume "
        "credentials, the names of locked rooms at shutdown [%(default)s]",
    )
    a(
        "--allowed-origins",
        type=_csv,
        default=_env("allowed-origins", (), _csv),
        help="comma-separated origins allowed to open /ws besides the server's own",
    )
    a(
        "--allowed-hosts",
        type=_csv,
        default=_env("allowed-hosts", (), _csv),
        help="comma-separated host names this server answers for (Host header; against DNS "
        "rebinding), besides IP addresses, localhost, --host, the hosts of "
        "--allowed-origins and of the self-signed certificate; * = any name",
    )
    a(
        "--address-rate",
        type=float,
        default=_env("address-rate", DEFAULTS.rate_ip, float),
        help="messages/s one client address may send over all its sockets, burst twice "
        "that; raise it when many participants share one address (NAT) [%(default)s]",
    )
    a(
        "--trusted-proxies",
        type=_csv,
        default=_env("trusted-proxies", (), _csv),
        help="comma-separated addresses of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (e.g. 127.0.0.1 behind nginx on the same host)",
    )
    a(
        "--lock-after",
        type=float,
        default=_env("lock-after", DEFAULTS.lock_after, float),
        help="seconds after creation when a room stops admitting newcomers; 0 = never "
        "[%(default)s]",
    )
    a(
        "--turn-urls",
        type=_csv,
        default=_env("turn-urls", (), _csv),
        help="comma-separated TURN URLs handed to clients (turn:host:3478?transport=udp)",
    )
    a("--turn-secret", default=_env("turn-secret", None), help="coturn static-auth-secret")
    a(
        "--turn-ttl",
        type=int,
        default=_env("turn-ttl", DEFAULTS.turn_ttl, int),
        help="TURN credential lifetime, seconds [%(default)s]",
    )
    a(
        "--log-level",
        default=_env("log-level", DEFAULTS.log_level),
        choices=["debug", "info", "warning", "error"],
        help="[%(default)s]",
    )
    a(
        "--log-format",
        default=_env("log-format", "text"),
        choices=list(logs.FORMATS),
        help="text, or json: one JSON object per line [%(default)s]",
    )
    a(
        "--media-host",
        default=_env("media-host", "127.0.0.1"),
        help="address the SFU's UDP sockets bind to [%(default)s]",
    )
    a(
        "--media-announce",
        default=_env("media-announce", None),
        help="address put in the SFU's ICE candidates, if not --media-host (1:1 NAT)",
    )
    a(
        "--media-ports",
        type=_port_range,
        default=_env("media-ports", (0, 0), _port_range),
        help="UDP port range of the SFU, MIN-MAX (default: any port)",
    )
    a(
        "--last-n",
        type=int,
        default=_env("last-n", 0, int),
        help="each participant receives video from at most N publishers; 0 = all [%(default)s]",
    )
    a(
        "--max-screens",
        type=int,
        default=_env("max-screens", 1, int),
        help="screen shares at once per room; a share beyond it is refused with "
        "screen-limit [%(default)s]",
    )
    a(
        "--no-dynacast",
        action="store_true",
        default=_env("no-dynacast", False, _flag),
        help="keep every simulcast layer a publisher sends on, even those no subscriber "
        "needs (docs/SFU.md \"Dynacast\")",
    )
    a(
        "--bwe",
        choices=("remb", "transport-cc"),
        default=_env("bwe", "remb"),
        help="each subscriber's downlink estimate: its REMB, or the SFU's own from "
        "transport-wide feedback (docs/SFU.md \"Send-side estimate\"; costs CPU per "
        "packet) [%(default)s]",
    )
    a(
        "--workers",
        type=_workers,
        default=_env("workers", 1, _workers),
        help="SFU worker processes, rooms pinned to one each; 1 = the SFU runs in this "
        "process; 0 = one per CPU core; --media-ports is split evenly between them "
        "[%(default)s]",
    )
    a(
        "--idle-poll",
        action="store_true",
        default=_env("idle-poll", False, _flag),
        help="while serving, hold the CPU latency limit at 0 µs (PM QoS, /dev/cpu_dma_latency; "
        "root) so idle cores poll instead of halting: lower and steadier forwarding latency "
        "on VMs, at the cost of power (docs/DEPLOY.md)",
    )
    a(
        "--no-send-batching",
        action="store_true",
        default=_env("no-send-batching", False, _flag),
        help="send each forwarded packet with its own sendto instead of one UDP GSO send per "
        "subscriber and event-loop turn (for kernels or NICs that mishandle UDP_SEGMENT; "
        "refusals already fall back by themselves, docs/SFU.md)",
    )
    a(
        "--drain-grace",
        type=float,
        default=_env("drain-grace", DEFAULTS.drain_grace, float),
        help="after SIGTERM: seconds of 503 on /healthz/ready with every client told "
        "going-away, before their sockets are closed (docs/DEPLOY.md) [%(default)s]",
    )
    a(
        "--shutdown-timeout",
        type=float,
        default=_env("shutdown-timeout", DEFAULTS.shutdown_timeout, float),
        help="after SIGTERM the process exits within this many seconds, forced (exit "
        "code 1) if the drain, the sockets or the SFU workers take longer [%(default)s]",
    )
    a(
        "--redis",
        default=_env("redis", None),
        help="join a cluster of nodes through this Redis (redis://[user:password@]host:6379/0, "
        "rediss:// for TLS): rooms are placed on the least-loaded node and any node is an "
        "entrance (docs/DEPLOY.md \"Several nodes\"); without it, this process is the whole "
        "deployment",
    )
    a(
        "--node-id",
        type=_node_id,
        default=_env("node-id", None, _node_id),
        help="this node's id in the cluster, unique (with --redis) [HOSTNAME-PORT]",
    )
    a(
        "--public-url",
        default=_env("public-url", None),
        help="this node's own public signaling URL, registered in the cluster (with --redis) "
        "[http(s)://HOST:PORT]",
    )
    a(
        "--no-sfu",
        action="store_true",
        default=_env("no-sfu", False, _flag),
        help="signaling only (no media plane)",
    )
    # `sealroom bench ARGS` is `python -m bench ARGS` (docs/BENCHMARKS.md): the benchmark
    # drives this application from outside, so this package does not import it.
    bench = sub.add_parser(
        "bench", add_help=False,
        help="measure forwarding against a reflector, Janus, MediaRelay "
             "(`sealroom bench --help` for its flags)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("sealroom: --tls-cert and --tls-key go together")
    if args.self_signed and args.tls_cert:
        raise SystemExit("sealroom: --self-signed or --tls-cert/--tls-key, not both")
    return ServerConfig(
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        allowed_origins=tuple(args.allowed_origins),
        allowed_hosts=tuple(args.allowed_hosts),
        rate_ip=args.address_rate,
        burst_ip=2 * args.address_rate,
        trusted_proxies=tuple(args.trusted_proxies),
        lock_after=args.lock_after,
        turn_urls=tuple(args.turn_urls),
        turn_secret=args.turn_secret,
        turn_ttl=args.turn_ttl,
        log_level=args.log_level,
        drain_grace=args.drain_grace,
        shutdown_timeout=args.shutdown_timeout,
        state_dir=str(args.state_dir),
    )


def sfu_config_from_args(args: argparse.Namespace) -> SfuConfig:
    return SfuConfig(
        bind_host=args.media_host,
        announced_host=args.media_announce,
        port_min=args.media_ports[0],
        port_max=args.media_ports[1],
        last_n=args.last_n,
        dynacast=not args.no_dynacast,
        bwe=args.bwe,
        max_screens=max(0, args.max_screens),
        send_batching=not args.no_send_batching,
    )


def cluster_from_args(args: argparse.Namespace, cfg: ServerConfig,
                      sfu_cfg: SfuConfig | None) -> Cluster | None:
    """The node's cluster membership with --redis; None (and redis not imported) without."""
    if not args.redis:
        return None
    from cluster.cluster import Cluster
    from cluster.nodes import NodeInfo

    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:50] or "node"
    node_id = args.node_id or f"{name}-{cfg.port}"
    scheme = "https" if cfg.tls_cert else "http"
    url = args.public_url or f"{scheme}://{cfg.host}:{cfg.port}"
    media = "" if sfu_cfg is None else (sfu_cfg.announced_host or sfu_cfg.bind_host)
    info = NodeInfo(id=node_id, url=url, media=media)
    return Cluster.from_url(args.redis, info, record_ttl=cfg.empty_ttl)


async def serve(cfg: ServerConfig, sfu_cfg: SfuConfig | None, n_workers: int = 1,
                log_format: str = "text", cluster: Cluster | None = None) -> None:
    media: MediaPlane | None = None
    pool: workers.SfuWorkers | None = None
    if sfu_cfg is not None and n_workers > 1:
        # Started before the listening socket: ready means the workers are up.
        pool = workers.SfuWorkers(sfu_cfg, n_workers, log_level=cfg.log_level,
                                  log_format=log_format, log_setup="sealroom.logs:setup")
        try:
            await pool.start()
        except RuntimeError as exc:
            raise SystemExit(f"sealroom: {exc}") from None
        media = pool
    elif sfu_cfg is not None:
        media = Sfu(sfu_cfg)
    try:
        await _serve(cfg, media, cluster)
    finally:
        if pool is not None:
            await pool.close()  # idempotent: normally done by the server's shutdown


async def _serve(cfg: ServerConfig, media: MediaPlane | None,
                 cluster: Cluster | None = None) -> None:
    try:
        server = SignalingServer(cfg, media, metrics=Metrics, cluster=cluster)
    except (OSError, RuntimeError) as exc:  # the resume key in --state-dir (PROTOCOL.md)
        raise SystemExit(f"sealroom: --state-dir: {exc}") from None
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    try:
        ssl_ctx: ssl.SSLContext | None = None
        if cfg.tls_cert and cfg.tls_key:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        # Idle HTTP keep-alives do not hold the exit (the sockets are closed by drain()).
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ssl_ctx,
                           shutdown_timeout=2.0)
        server.load_locked_rooms()  # names locked at the previous process's SIGTERM
        await site.start()
        scheme = "https" if ssl_ctx else "http"
        shown = "localhost" if cfg.host in ("localhost", "127.0.0.1", "::1") else cfg.host
        log.info("sealroom serving %s://%s:%d/", scheme, shown, cfg.port)
        print(f"sealroom: open {scheme}://{shown}:{cfg.port}/", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        # Graceful shutdown (docs/DEPLOY.md "Stopping and restarting"): bounded by a
        # watchdog thread, which works even if the event loop is stuck.
        watchdog = threading.Timer(cfg.shutdown_timeout, _forced_exit, (cfg.shutdown_timeout,))
        watchdog.daemon = True
        watchdog.start()
        log.info("SIGTERM: draining for up to %.1f s, exit within %.1f s",
                 cfg.drain_grace, cfg.shutdown_timeout)
        server.save_locked_rooms()
        await server.drain(cfg.drain_grace)
    finally:
        await runner.cleanup()


def _forced_exit(timeout: float) -> None:
    log.error("shutdown took longer than %.1f s: exiting now", timeout)
    logging.shutdown()
    os._exit(1)


def run(coro_main: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro_main)
    else:
        uvloop.run(coro_main)


def self_signed(args: argparse.Namespace, cfg: ServerConfig) -> None:
    """Make or reuse the kept certificate and point ``cfg`` at it; print its fingerprint."""
    names = tls.local_names(cfg.host, args.tls_names)
    made = tls.ensure_self_signed(args.state_dir, names)
    cfg.tls_cert, cfg.tls_key = str(made.cert), str(made.key)
    # The names the certificate covers are names this server is reached by.
    cfg.allowed_hosts = (*cfg.allowed_hosts, *names)
    state = "made" if made.created else "kept"
    log.info("self-signed certificate %s: %s", state, made.cert)
    print(f"sealroom: TLS certificate ({state}) {made.cert}", flush=True)
    print(f"sealroom: TLS SHA-256 fingerprint {made.fingerprint}", flush=True)
    print(f"sealroom: TLS SPKI SHA-256 {made.spki_sha256}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # every flag after it is the benchmark's own
        os.execv(sys.executable, [sys.executable, "-m", "bench", *argv[1:]])
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        cfg = config_from_args(args)
        logs.setup(cfg.log_level, args.log_format)
        if args.self_signed:
            self_signed(args, cfg)
        sfu_cfg = None if args.no_sfu else sfu_config_from_args(args)
        if sfu_cfg is not None and args.workers > 1:
            try:
                workers.split_ports(sfu_cfg.port_min, sfu_cfg.port_max, args.workers)
            except ValueError as exc:
                raise SystemExit(f"sealroom: --media-ports: {exc}") from None
        limit = CpuLatencyLimit(0)
        if args.idle_poll and not limit.hold():
            log.warning("--idle-poll: idle cores will halt: %s", limit.reason)
        try:
            run(serve(cfg, sfu_cfg, args.workers, args.log_format,
                      cluster_from_args(args, cfg, sfu_cfg)))
        finally:
            limit.release()
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
