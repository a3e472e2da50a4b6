"""How late the event loop wakes a task that asked to sleep: the coarse probe of a loop.

The signaling server's loop and each SFU worker's loop run one; ``/metrics`` exports it
(``sealroom_loop_lag_*``). sfu/pauses.py is the fine meter of the media loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class LoopLag:
    """How late the event loop wakes a task that asked to sleep ``interval`` seconds.

    Every media packet and signaling message waits behind whatever runs on the one
    event loop, so this is the first number to look at when calls degrade.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.last = 0.0
        self.max = 0.0
        self.total = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.monotonic() - start - self.interval)
            self.last = lag
            self.max = max(self.max, lag)
            self.total += lag
            self.samples += 1
