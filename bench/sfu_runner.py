"""sealroom's SFU in its own process, behind a tiny control channel (the system under test).

``python -m bench.sfu_runner --port 0`` starts ``sfu.Sfu`` on uvloop and a TCP listener on
127.0.0.1 speaking JSON lines: ``{"op": "join", "pid", "room"}``, ``{"op": "msg", "pid",
"msg"}`` (a client→SFU message, docs/SFU.md), ``{"op": "leave", "pid"}`` and ``{"op":
"stats"}``; it writes ``{"pid", "msg"}`` for each SFU→client message and ``{"stats": …}``.
It prints ``{"port": N}`` on stdout when ready. Signaling crypto is not part of the
forwarding path, so the benchmark skips it; the media path is exactly ``sealroom serve``'s.

``--workers N`` (N ≥ 1) runs ``sfu.workers.SfuWorkers`` instead, as ``sealroom serve
--workers N`` does: N worker processes, each room on one of them. Before the port line the
runner then prints ``{"workers": [{"index", "pid", "cpu"}]}``; ``--worker-cpus 0,1`` pins
worker ``i`` to the ``i mod len``-th of those cores (sched_setaffinity(2)). Its ``stats``
add each worker's counters as ``worker<i>.<name>`` and the placement as
``room.<room>`` = worker index.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from bench import control
from sfu import Sfu, SfuConfig
from sfu.workers import SfuWorkers

logger = logging.getLogger("bench.sfu_runner")


class WorkersPlane:
    """``SfuWorkers`` with per-worker counters and room placement in ``stats``."""

    def __init__(self, workers: SfuWorkers) -> None:
        self.workers = workers

    async def join(self, room: str, pid: str, send: control.Send) -> None:
        await self.workers.join(room, pid, send)

    async def handle(self, pid: str, msg: dict[str, Any]) -> None:
        await self.workers.handle(pid, msg)

    async def leave(self, pid: str) -> None:
        await self.workers.leave(pid)

    async def close(self) -> None:
        await self.workers.close()

    def stats(self) -> dict[str, int]:
        """The summed counters (at most 1 s old, SfuWorkers.stats), then per worker."""
        out = self.workers.stats()
        for ws in self.workers.worker_stats():
            for name, value in ws.counters.items():
                out[f"worker{ws.index}.{name}"] = value
        for room, w in self.workers.rooms.items():
            out[f"room.{room}"] = w.index
        return out


def pin(workers: SfuWorkers, cpus: list[int]) -> list[dict[str, Any]]:
    """Pin worker ``i`` to ``cpus[i % len(cpus)]`` (none if ``cpus`` is empty)."""
    out: list[dict[str, Any]] = []
    for w in workers.workers:
        cpu = cpus[w.index % len(cpus)] if cpus else None
        if w.pid is not None and cpu is not None:
            os.sched_setaffinity(w.pid, {cpu})
        out.append({"index": w.index, "pid": w.pid, "cpu": cpu})
    return out


async def serve(args: argparse.Namespace) -> None:
    config = SfuConfig(bind_host=args.media_host, last_n=args.last_n,
                       send_batching=not args.no_send_batching)
    if args.workers <= 0:
        await control.serve(Sfu(config), args.port)
        return
    workers = SfuWorkers(config, args.workers, log_level=args.log_level)
    await workers.start()
    cpus = [int(x) for x in args.worker_cpus.split(",") if x.strip()]
    try:
        placed = pin(workers, cpus)
    except OSError:
        await workers.close()
        raise
    logger.info("workers: %s", placed)
    print(json.dumps({"workers": placed}), flush=True)
    await control.serve(WorkersPlane(workers), args.port)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sfu_runner")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--media-host", default="127.0.0.1")
    p.add_argument("--last-n", type=int, default=0)
    p.add_argument("--workers", type=int, default=0,
                   help="SFU worker processes (sfu.workers); 0 = sfu.Sfu in this process")
    p.add_argument("--worker-cpus", default="",
                   help="comma-separated cores; worker i runs on the (i mod count)-th")
    p.add_argument("--no-send-batching", action="store_true",
                   help="one sendto per forwarded packet (SfuConfig.send_batching off)")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="sfu %(levelname)s %(name)s: %(message)s")
    import uvloop
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
