"""Server logs: JSON lines that parse, and nothing secret or identifying of peers in them.

A real ``sealroom serve --log-level debug --log-format json`` process hosts a call of two
media bots that chat through sealed envelopes, plus a wrong-password attempt; then its
whole output is searched for the password, every key derived from it, the plaintext, SDP,
and the bots' media addresses (their ICE ports).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from peers.client import ServerError, SignalingClient
from peers.mediabot import MediaBot
from sealroom import logs
from sfu.ice import IcePolicy
from tests.leaks import derived_secrets, text_forms

PASSWORD = "correct horse battery staple, logged nowhere"
PLAINTEXT = "the vault code is 4-8-15-16-23-42"
ROOM = "log-check"
BOT_PORTS = (55000, 55999)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.media
async def test_debug_json_logs_of_a_call_parse_and_leak_nothing() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALROOM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sealroom.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "debug", "--log-format", "json",
         "--media-ports", "47000-47999"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    err_lines: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    pump = threading.Thread(target=lambda: err_lines.extend(proc.stderr or []), daemon=True)
    pump.start()
    clients: list[SignalingClient] = []
    bots: list[MediaBot] = []
    bot_ports: set[int] = set()
    try:
        line = proc.stdout.readline()  # "sealroom: open …" once listening
        assert "sealroom: open" in line, line
        url = f"ws://127.0.0.1:{port}/ws"
        for _ in range(2):
            client = await SignalingClient.connect(url)
            clients.append(client)
            await client.join(ROOM, PASSWORD)
            assert client.id is not None
            bot = MediaBot(client.id, signal=client.send,
                           ice=IcePolicy("127.0.0.1", port_min=BOT_PORTS[0],
                                         port_max=BOT_PORTS[1]))
            bots.append(bot)
            await client.set_media_handler(bot.on_message)
            await bot.publish()
        assert await bots[0].wait_for(lambda: all(len(b.received) == 2 for b in bots), timeout=30)
        for bot in bots:
            for peer in (bot.pub, bot.sub):
                for t in peer.pc.getTransceivers():
                    conn = t.receiver.transport.transport.iceGatherer._connection
                    bot_ports.update(c.port for c in conn.local_candidates)
        await clients[0].seal("*", {"chat": PLAINTEXT})
        assert (await clients[1].next_sealed()).json() == {"chat": PLAINTEXT}
        intruder = await SignalingClient.connect(url)
        clients.append(intruder)
        with pytest.raises(ServerError):
            await intruder.join(ROOM, PASSWORD + "!")
    finally:
        for bot in bots:
            await bot.close()
        for client in clients:
            await client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pump.join(5)

    assert proc.returncode == 0
    records = [json.loads(line) for line in err_lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    text = "\n".join(r["msg"] + r.get("exc", "") for r in records)
    # Not vacuous: the log recorded the call.
    assert text.count("joined room=log-check") == 2
    assert any("publishes" in r["msg"] for r in records)
    assert "wrong password" in text

    needles = [PASSWORD, PLAINTEXT]
    secrets = derived_secrets(PASSWORD, ROOM, clients[0].kdf)
    needles += [form for s in secrets for form in text_forms(s)]
    for needle in needles:
        assert needle not in text, f"secret in the logs: {needle[:12]}…"
    assert "a=fingerprint" not in text and "a=ice-pwd" not in text and "v=0" not in text
    # The participants' media addresses: the bots' ICE ports, in any notation.
    assert bot_ports and all(BOT_PORTS[0] <= p <= BOT_PORTS[1] for p in bot_ports)
    for p in bot_ports:
        assert not re.search(rf"(?<!\d){p}(?!\d)", text), f"a participant's port {p} is logged"


def test_third_party_records_have_addresses_masked_and_json_is_one_line() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("aioice").level)
    try:
        logs.setup("debug", "json", stream=out)
        logging.getLogger("aioice.ice").warning("pair %s -> %s", ("10.1.2.3", 5000),
                                                "[2001:db8::7]:9")
        logging.getLogger("aioice.ice").info("suppressed below warning %s", "10.9.9.9")
        logging.getLogger("signaling.server").debug("line one\nline two")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("sfu.sfu").exception("failed")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        logging.getLogger("aioice").setLevel(saved[2])
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3
    assert records[0]["msg"] == "pair ('<addr>', 5000) -> [<addr>]:9"
    assert records[1]["msg"] == "line one\nline two" and records[1]["level"] == "debug"
    assert records[2]["logger"] == "sfu.sfu" and "ValueError: boom" in records[2]["exc"]
    assert time.strptime(records[0]["ts"][:19], "%Y-%m-%dT%H:%M:%S")


# -- client-chosen values in logs (docs/SECURITY.md "Logs, metrics, disk") ----------------


def test_safe_escapes_controls_quotes_and_cuts_long_values() -> None:
    assert logs.safe("room-a") == "room-a"
    assert logs.safe("x\r\nERROR forged") == '"x\\r\\nERROR forged"'
    assert logs.safe("\x1b[2J\x00\x7f\x9b") == "\\x1b[2J\\x00\\x7f\\x9b"
    assert logs.safe("a\u2028b\u202ec") == "a\\u2028b\\u202ec"
    assert logs.safe("back\\slash") == "back\\\\slash"
    assert logs.safe("ip=1.2.3.4") == '"ip=1.2.3.4"'
    assert logs.safe('say "hi"') == '"say \\"hi\\""'
    assert logs.safe("") == '""' and logs.safe(None) == "None"
    long = logs.safe("A" * 10_000)
    assert long == "A" * logs.SAFE_MAX + f"…(+{10_000 - logs.SAFE_MAX} chars)"
    # Whatever the input, the result is one line of printable characters.
    nasty = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u2028\u2029\u202e\u2066"
    out = logs.safe(nasty, limit=1000)
    assert out.isprintable() and "\n" not in out


def test_the_handler_escapes_what_a_call_site_forgot() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.setup("info", "text", stream)
    try:
        logging.getLogger("sfu.somewhere").warning("raw %s", "a\nb\x1bc\x00")
        logs.setup("info", "json", stream)
        logging.getLogger("sfu.somewhere").warning("raw %s", "d\u2028e\x9bf")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text_line, json_line = stream.getvalue().splitlines()
    assert text_line.endswith("raw a\\nb\\x1bc\\x00")
    assert json.loads(json_line)["msg"] == "raw d\\u2028e\\x9bf"
