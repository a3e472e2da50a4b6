"""``sealroom serve`` as a user runs it: no arguments, embedded defaults."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sealroom.cli import build_parser, config_from_args, sfu_config_from_args
from tests.leaks import derived_secrets, text_forms


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM (what systemd and Ctrl-C send), then the process's whole output."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_serve_starts_with_no_arguments_and_serves_the_page() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status, body = 0, ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, body = fetch("http://localhost:8080/")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        assert status == 200, "no page at /"
        assert "<title>sealroom</title>" in body
        assert fetch("http://localhost:8080/r/some-room")[0] == 200
        assert fetch("http://localhost:8080/js/signaling.js")[0] == 200
        # /ws without an allowed Origin is refused before the upgrade, with a typed error.
        code, text = fetch("http://localhost:8080/ws")
        assert code == 403 and '"bad-origin"' in text
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert "open http://localhost:8080/" in out


def test_every_flag_has_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALROOM_PORT", "9999")
    monkeypatch.setenv("SEALROOM_HOST", "0.0.0.0")
    monkeypatch.setenv("SEALROOM_LOCK_AFTER", "30")
    monkeypatch.setenv("SEALROOM_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("SEALROOM_TURN_URLS", "turn:t.example:3478")
    monkeypatch.setenv("SEALROOM_TURN_SECRET", "s")
    monkeypatch.setenv("SEALROOM_LOG_LEVEL", "debug")
    monkeypatch.setenv("SEALROOM_TLS_CERT", "/c.pem")
    monkeypatch.setenv("SEALROOM_TLS_KEY", "/k.pem")
    monkeypatch.setenv("SEALROOM_MEDIA_PORTS", "40000-40099")
    monkeypatch.setenv("SEALROOM_LAST_N", "6")
    args = build_parser().parse_args(["serve"])
    cfg = config_from_args(args)
    sfu = sfu_config_from_args(args)
    assert (sfu.port_min, sfu.port_max, sfu.last_n) == (40000, 40099, 6)
    assert (cfg.port, cfg.host, cfg.lock_after) == (9999, "0.0.0.0", 30.0)
    assert cfg.allowed_origins == ("https://a.example", "https://b.example")
    assert cfg.turn_urls == ("turn:t.example:3478",) and cfg.turn_enabled
    assert (cfg.log_level, cfg.tls_cert, cfg.tls_key) == ("debug", "/c.pem", "/k.pem")
    # A flag wins over its variable.
    cfg = config_from_args(build_parser().parse_args(["serve", "--port", "1234"]))
    assert cfg.port == 1234


def test_send_batching_is_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sfu_config_from_args(build_parser().parse_args(["serve"])).send_batching
    args = build_parser().parse_args(["serve", "--no-send-batching"])
    assert not sfu_config_from_args(args).send_batching
    monkeypatch.setenv("SEALROOM_NO_SEND_BATCHING", "1")
    assert not sfu_config_from_args(build_parser().parse_args(["serve"])).send_batching


def test_tls_cert_without_key_is_refused() -> None:
    with pytest.raises(SystemExit):
        config_from_args(build_parser().parse_args(["serve", "--tls-cert", "/c.pem"]))


async def test_a_real_server_process_keeps_no_secret_in_its_logs_or_on_disk(tmp_path: Path) -> None:
    """Run ``sealroom serve --log-level debug`` as a process, hold a sealed conversation
    and a wrong-password attempt, then search its whole output and its working/home
    directories for the password, the derived keys and the plaintext."""
    from peers.client import ServerError, SignalingClient

    password, plaintext = "hunter2-but-longer", "meet at the north gate at noon"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    env.update(HOME=str(home), TMPDIR=str(home))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealroom.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "8765",
            "--log-level",
            "debug",
        ],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(150):
            try:
                fetch("http://127.0.0.1:8765/")
                break
            except (urllib.error.URLError, ConnectionError):
                await asyncio.sleep(0.2)
        url = "ws://127.0.0.1:8765/ws"
        a = await SignalingClient.connect(url)
        b = await SignalingClient.connect(url)
        c = await SignalingClient.connect(url)
        try:
            await a.join("disk-check", password)
            await b.join("disk-check", password)
            await a.seal("*", {"chat": plaintext})
            assert (await b.next_sealed()).json() == {"chat": plaintext}
            with pytest.raises(ServerError):
                await c.join("disk-check", password + "x")
        finally:
            for client in (a, b, c):
                await client.close()
    finally:
        out = stop(proc)
    assert "joined room=disk-check" in out, "debug log did not record the joins: vacuous check"
    secrets = derived_secrets(password, "disk-check", a.kdf)
    needles = [password, plaintext] + [form for s in secrets for form in text_forms(s)]
    for needle in needles:
        assert needle not in out
    written = [p for p in home.rglob("*") if p.is_file()]
    for path in written:
        data = path.read_bytes()
        for secret in [*secrets, password.encode(), plaintext.encode()]:
            assert secret not in data, f"secret on disk in {path}"


def test_without_redis_the_single_node_path_never_imports_redis() -> None:
    code = (
        "import sys\n"
        "from sealroom.cli import build_parser, cluster_from_args, config_from_args, "
        "sfu_config_from_args\n"
        "import signaling.server, cluster\n"
        "args = build_parser().parse_args(['serve'])\n"
        "cfg = config_from_args(args)\n"
        "assert cluster_from_args(args, cfg, sfu_config_from_args(args)) is None\n"
        "signaling.server.SignalingServer(cfg)\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_redis_flags_make_a_cluster_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from sealroom.cli import cluster_from_args

    monkeypatch.setenv("SEALROOM_REDIS", "redis://127.0.0.1:1/0")
    args = build_parser().parse_args(["serve", "--port", "8443", "--node-id", "node-b",
                                      "--public-url", "https://b.meet.example",
                                      "--media-announce", "203.0.113.7"])
    cfg = config_from_args(args)
    cluster = cluster_from_args(args, cfg, sfu_config_from_args(args))
    assert cluster is not None
    assert (cluster.node_id, cluster.info.url, cluster.info.media) == (
        "node-b", "https://b.meet.example", "203.0.113.7")
    assert cluster.store.ttl_ms == round(cfg.empty_ttl * 1000)
    # Defaults: HOSTNAME-PORT, the listening URL, the media bind address.
    monkeypatch.delenv("SEALROOM_REDIS")
    args = build_parser().parse_args(["serve", "--redis", "redis://127.0.0.1:1/0"])
    cluster = cluster_from_args(args, config_from_args(args), sfu_config_from_args(args))
    assert cluster is not None and cluster.node_id.endswith("-8080")
    assert (cluster.info.url, cluster.info.media) == ("http://localhost:8080", "127.0.0.1")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--node-id", "has:colon"])
