"""Janus VideoRoom (Debian's ``janus``) as a system under test, and the generator's client.

Janus (libnice) never gathers ICE candidates on ``lo``, so Janus and the load generator
run in a network namespace of their own with a veth carrying 127.0.0.2/32 (docs/BENCHMARKS.md,
Method): ``-i 127.0.0.2``, ``ice_enforce_list`` = that veth,
``ignore_mdns``; the HTTP transport and Admin API listen on the namespace's loopback;
``event_loops = 1`` (its fastest single-core setting). Rooms are created through the API
with ``"bitrate": 0`` so Janus does not cap publishers. NACKs and RTX: ``MIN_NACK_QUEUE``.
The configuration files are generated into a temporary directory; nothing in /etc is used.

The client speaks the Janus HTTP API (``create`` / ``attach`` / ``message`` and a
long-poll ``GET`` for events, janus.conf.meetecho.com/docs/rest) with aiohttp: per
virtual participant a publisher handle (``joinandconfigure`` with our offer) and a
subscriber handle (multistream ``join`` with every other feed, then ``start`` with our
answer). Media then flows through the same lean SRTP path as for sealroom.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from sfu.ice import IcePolicy

from .gen import Participant, Tally
from .rtc import Peers, wait_until
from .run import Server, stop_process, wrap
from .scenarios import Scenario

logger = logging.getLogger("bench.janus")

JANUS = "/usr/bin/janus"
ADDRESS = "127.0.0.2"
HTTP_PORT = 8088
ADMIN_PORT = 7088
ADMIN_SECRET = "bench-admin"
ROOM = 4242
LIBDIR = "/usr/lib/x86_64-linux-gnu/janus"
PLUGINS_OFF = ["audiobridge", "duktape", "echotest", "lua", "nosip", "recordplay", "sip",
               "streaming", "textroom", "videocall", "voicemail"]
TRANSPORTS_OFF = ["websockets", "mqtt", "nanomsg", "pfunix", "rabbitmq"]
# Loss recovery, as sealroom's SFU does it (--uplink-loss): Janus NACKs a publisher's
# holes (RFC 4585 §6.2.1) whenever the publisher's m-line negotiated "nack" (our offer has
# a=rtcp-fb:<vp8> nack) and takes RTX (RFC 4588) when it negotiated rtx (its answer keeps
# our offer's rtx, and it reads our a=ssrc-group:FID): nothing to switch on. Written out
# rather than left to the defaults: the shortest time (ms) it keeps sent packets to answer
# its subscribers' NACKs (its default; longer with a longer RTT; sealroom keeps 512 packets
# per track, 8.5 s of a meeting's video: either is far beyond a loopback round trip), and
# that buffer is not emptied at key frames (the default).
MIN_NACK_QUEUE = 200


def _libdir() -> str:
    for candidate in (LIBDIR, "/usr/lib/janus", "/usr/local/lib/janus"):
        if os.path.isdir(os.path.join(candidate, "plugins")):
            return candidate
    return LIBDIR


def write_config(folder: Path, veth: str) -> None:
    lib = _libdir()
    (folder / "janus.jcfg").write_text(f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{lib}/plugins"
    transports_folder = "{lib}/transports"
    events_folder = "{lib}/events"
    loggers_folder = "{lib}/loggers"
    debug_level = 3
    admin_secret = "{ADMIN_SECRET}"
    event_loops = 1
    session_timeout = 120
    server_name = "sealroom-bench"
}}
certificates: {{
}}
media: {{
    min_nack_queue = {MIN_NACK_QUEUE}
    nack_optimizations = false
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "{veth}"
    ignore_mdns = true
}}
plugins: {{
    disable = "{",".join(f"libjanus_{p}.so" for p in PLUGINS_OFF)}"
}}
transports: {{
    disable = "{",".join(f"libjanus_{t}.so" for t in TRANSPORTS_OFF)}"
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
events: {{
    broadcast = false
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    (folder / "janus.transport.http.jcfg").write_text(f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {HTTP_PORT}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_base_path = "/admin"
    admin_http = true
    admin_port = {ADMIN_PORT}
    admin_ip = "127.0.0.1"
    admin_https = false
}}
cors: {{
}}
""")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class JanusServer(Server):
    """Janus in its own network namespace, pinned to the server core."""

    name = "janus"
    gen_system = "janus"

    def __init__(self) -> None:
        super().__init__()
        self.tmp: str | None = None
        self.bind = ADDRESS
        self.port = HTTP_PORT

    async def start(self, scenario: Scenario, cpu: int | None) -> None:
        if not os.path.exists(JANUS):
            raise RuntimeError(f"{JANUS} is missing: install Debian's janus (./dev test does)")
        self.tmp = tempfile.mkdtemp(prefix="sealroom-janus-")
        self.netns = f"srbench{os.getpid()}"
        _ip("netns", "add", self.netns)
        _ip("-n", self.netns, "link", "set", "lo", "up")
        _ip("-n", self.netns, "link", "add", "jv0", "type", "veth", "peer", "name", "jv1")
        _ip("-n", self.netns, "addr", "add", f"{ADDRESS}/32", "dev", "jv0")
        _ip("-n", self.netns, "link", "set", "jv0", "up")
        _ip("-n", self.netns, "link", "set", "jv1", "up")
        write_config(Path(self.tmp), "jv0")
        cmd = [JANUS, "-F", self.tmp, "-C", f"{self.tmp}/janus.jcfg", "-i", ADDRESS,
               "-E", "jv0", "-o", "-L", f"{self.tmp}/janus.log", "-N"]
        self.proc = await asyncio.create_subprocess_exec(
            *wrap(cmd, cpu, self.netns), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await self._wait_http(20.0)

    async def _wait_http(self, timeout: float) -> None:
        """Janus is ready when its HTTP transport answers inside the namespace."""
        assert self.netns is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        probe = ["ip", "netns", "exec", self.netns, sys.executable, "-c",
                 f"import socket; socket.create_connection(('127.0.0.1', {HTTP_PORT}), 1)"]
        while loop.time() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                raise RuntimeError(f"janus exited ({self.proc.returncode}); log: "
                                   f"{self.tmp}/janus.log")
            p = await asyncio.create_subprocess_exec(*probe, stderr=asyncio.subprocess.DEVNULL)
            if await p.wait() == 0:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("janus did not open its HTTP port")

    async def stop(self) -> None:
        await stop_process(self.proc)
        self.proc = None
        if self.netns is not None:
            with contextlib.suppress(Exception):
                _ip("netns", "del", self.netns)
            self.netns = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class JanusApi:
    """The Janus HTTP API: one session, handles, and a long-poll event loop."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http: aiohttp.ClientSession | None = None
        self.session = 0
        self._tx = itertools.count(1)
        self._events: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._poller: asyncio.Future[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.http is not None
        body["transaction"] = f"t{next(self._tx)}"
        async with self.http.post(self.base + path, json=body) as resp:
            reply: dict[str, Any] = await resp.json(content_type=None)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus: {reply.get('error')}")
        return reply

    async def open(self) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
        self._poller = asyncio.ensure_future(self._poll())

    async def attach(self) -> int:
        reply = await self._post(f"/{self.session}", {"janus": "attach",
                                                      "plugin": "janus.plugin.videoroom"})
        handle: int = reply["data"]["id"]
        self._events[handle] = asyncio.Queue()
        return handle

    async def message(self, handle: int, body: dict[str, Any],
                      jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        return await self._post(f"/{self.session}/{handle}", msg)

    async def event(self, handle: int, timeout: float = 30.0) -> dict[str, Any]:
        """The next plugin event for ``handle`` (bounded wait)."""
        while True:
            ev = await asyncio.wait_for(self._events[handle].get(), timeout)
            if ev.get("janus") == "event":
                return ev

    async def _poll(self) -> None:
        assert self.http is not None
        while True:
            try:
                async with self.http.get(f"{self.base}/{self.session}?maxev=50") as resp:
                    data = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                logger.debug("janus long poll: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for ev in data if isinstance(data, list) else [data]:
                q = self._events.get(ev.get("sender", 0))
                if q is not None:
                    q.put_nowait(ev)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self._post(f"/{self.session}", {"janus": "destroy"})
            await self.http.close()


def feed_id(index: int) -> int:
    return 1000 + index


class JanusClient:
    """Generator backend for Janus VideoRoom."""

    def __init__(self, host: str, port: int, bind: str, scenario: Scenario) -> None:
        self.api = JanusApi(f"http://{host}:{port}/janus")
        self.ice = IcePolicy(bind)
        self.scenario = scenario
        self.peers: dict[str, Peers] = {}
        self.tally: Tally | None = None

    async def publish(self, parts: list[Participant]) -> None:
        await self.api.open()
        handle = await self.api.attach()
        # One room per run, no bitrate cap (room 1234 of the sample config caps at 128 kbit/s)
        reply = await self.api.message(handle, {
            "request": "create", "room": ROOM, "publishers": 100, "bitrate": 0,
            "videocodec": "vp8", "audiocodec": "opus", "audiolevel_ext": True,
            "fir_freq": 0, "notify_joining": False})
        data = reply.get("plugindata", {}).get("data", {})
        if data.get("videoroom") != "created" and data.get("error_code") != 427:  # 427: exists
            raise RuntimeError(f"janus: cannot create the room: {data}")
        self.tally = parts[0].tally if parts else None
        for part in parts:
            self.peers[part.pid] = Peers(part, self.ice)
        await asyncio.gather(*(self._publish(self.peers[p.pid]) for p in parts if p.streams))
        if self.tally is not None:
            await wait_until(list(self.peers.values()), self.tally, True, False,
                             30.0 + len(parts))

    async def _publish(self, peers: Peers) -> None:
        part = peers.part
        handle = await self.api.attach()
        sdp = await peers.pub_offer()
        offer: dict[str, Any] = {"type": "offer", "sdp": sdp}
        if part.member.layers:
            # simulcast: our a=simulcast lists the layers lowest first; Janus assumes
            # highest first unless told (janus.c, "rid_order"; substream 0 = lowest)
            offer["rid_order"] = "lmh"
        await self.api.message(handle, {
            "request": "joinandconfigure", "ptype": "publisher", "room": ROOM,
            "id": feed_id(part.index), "display": part.pid,
            "audio": part.member.audio is not None,
            "video": part.member.video is not None or bool(part.member.layers)}, offer)
        ev = await self.api.event(handle)
        jsep = ev.get("jsep")
        if not jsep:
            raise RuntimeError(f"janus: no answer for {part.pid}: {ev.get('plugindata')}")
        await peers.pub_answer(jsep["sdp"])

    async def subscribe(self, parts: list[Participant]) -> None:
        wanted = [p for p in parts if self.scenario.expected_sources(p.index)]
        await asyncio.gather(*(self._subscribe(self.peers[p.pid]) for p in wanted))
        if self.tally is not None:
            await wait_until([self.peers[p.pid] for p in wanted], self.tally, True, True,
                             30.0 + 2.0 * len(parts))

    async def _subscribe(self, peers: Peers) -> None:
        part = peers.part
        feeds = sorted({self.scenario.member_of(sid).index
                        for sid in self.scenario.expected_sources(part.index)})
        handle = await self.api.attach()
        await self.api.message(handle, {
            "request": "join", "ptype": "subscriber", "room": ROOM,
            "streams": [{"feed": feed_id(i)} for i in feeds]})
        ev = await self.api.event(handle)
        jsep = ev.get("jsep")
        if not jsep:
            raise RuntimeError(f"janus: no offer for {part.pid}: {ev.get('plugindata')}")
        answer = await peers.sub_offer(jsep["sdp"])
        await self.api.message(handle, {"request": "start"}, {"type": "answer", "sdp": answer})
        streams = ev.get("plugindata", {}).get("data", {}).get("streams") or []
        await self._configure_layers(handle, part, streams)

    async def _configure_layers(self, handle: int, part: Participant,
                                streams: list[dict[str, Any]]) -> None:
        """simulcast: per subscribed video stream, the layer the scenario has this
        subscriber ask of its publisher (Scenario.layer_for), as VideoRoom's ``configure``
        ``substream`` (0 = lowest, as ``rid_order`` "lmh" made it), and every temporal
        layer (``temporal`` 2): Janus then forwards what sealroom forwards to a subscriber
        without a downlink estimate (the generator sends no REMB): every temporal layer
        (docs/SFU.md "Simulcast"; bench/run.py ``layers_window`` checks it)."""
        wanted = []
        for st in streams:
            index = int(st.get("feed_id", 0)) - feed_id(0)
            if st.get("type") != "video" or not 0 <= index < len(self.scenario.members):
                continue
            if self.scenario.members[index].layers:
                wanted.append({"mid": st.get("mid"), "temporal": 2,
                               "substream": self.scenario.layer_for(part.index, index)})
        if not wanted:
            return
        await self.api.message(handle, {"request": "configure", "streams": wanted})
        while True:  # the "started" event may come first; bounded by event()'s timeout
            data = (await self.api.event(handle)).get("plugindata", {}).get("data", {})
            if data.get("configured") == "ok":
                return
            if "error" in data:
                raise RuntimeError(f"janus: configure for {part.pid}: {data}")

    def keepalive(self, parts: list[Participant], pub: bool = False) -> None:
        for p in parts:
            peers = self.peers.get(p.pid)  # called from the start: some may not exist yet
            if peers is not None:
                peers.keepalive()

    async def close(self) -> None:
        for peers in self.peers.values():
            await peers.close()
        self.peers.clear()
        await self.api.close()
