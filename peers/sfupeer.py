"""A Python participant's side of the SFU messages (docs/SFU.md "Signaling messages").

Where its client→SFU messages go (``attach``: ``Sfu.handle`` in-process, a WebSocket, a
control channel), and one task that handles what the SFU sends, in order: messages may
arrive re-entrantly (the SFU sends while it handles ours), so they are queued, never
handled in the caller's stack. ``MediaBot`` and the fuzzer (bench/fuzz.py) are built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Signal = Callable[[dict[str, Any]], Awaitable[None]]


class SfuPeer:
    """The message loop; subclasses implement ``_dispatch``."""

    def __init__(self, pid: str, signal: Signal | None = None) -> None:
        self.pid = pid
        self._signal = signal
        self.messages: list[dict[str, Any]] = []  # every SFU→client message, in order
        self.message_errors = 0  # messages whose handling raised (logged)
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._work())

    def attach(self, signal: Signal) -> None:
        """Where client→SFU messages go (Sfu.handle in-process, or a WebSocket)."""
        self._signal = signal

    async def join(self, sfu: Any, room: str) -> None:
        """Join an in-process ``sfu.Sfu``: the same messages a WebSocket would carry."""
        self.attach(lambda msg: sfu.handle(self.pid, msg))
        await sfu.join(room, self.pid, self.on_message)

    async def on_message(self, msg: dict[str, Any]) -> None:
        """SFU→client messages; queued, handled in order by the peer's task."""
        await self._inbox.put(msg)

    async def _emit(self, msg: dict[str, Any]) -> None:
        if self._signal is None:
            raise RuntimeError(f"{type(self).__name__}.attach() a signaling function first")
        await self._signal(msg)

    async def _work(self) -> None:
        while True:
            msg = await self._inbox.get()
            if msg is None:
                return
            self.messages.append(msg)
            try:
                await self._dispatch(msg)
            except Exception:
                logger.exception("%s: handling %s", self.pid, msg.get("type"))
                self.message_errors += 1

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _stop_work(self, timeout: float) -> None:
        """End the message task once what is queued is handled (at most ``timeout`` s)."""
        await self._inbox.put(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._worker, timeout)
