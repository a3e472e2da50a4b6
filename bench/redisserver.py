"""A real ``redis-server`` (Debian's, installed by ``./dev``) for the cluster tests and
``bench.cluster``.

Each test gets its own: a loopback port, no persistence (``--save ""``, no AOF), its own
directory under the test's ``tmp_path``. ``stop()`` and ``start()`` take it away and bring
it back on the same port (an outage), empty as a restart without persistence leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 10.0  # seconds for the server to answer PING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "log"),
            "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:  # bounded
            if self.proc.returncode is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}: "
                                   f"{(self.dir / 'log').read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"PING\r\n")
                line = await asyncio.wait_for(reader.readline(), 1.0)
                writer.close()
                if line.startswith(b"+PONG"):
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None
