"""sealroom's SFU in its own process, behind a tiny control channel (the system under test).

``python -m bench.sfu_runner --port 0`` starts ``sfu.Sfu`` on uvloop and a TCP listener on
127.0.0.1 speaking JSON lines: ``{"op": "join", "pid", "room"}``, ``{"op": "msg", "pid",
"msg"}`` (a client→SFU message, docs/SFU.md), ``{"op": "leave", "pid"}`` and ``{"op":
"stats"}``; it writes ``{"pid", "msg"}`` for each SFU→client message and ``{"stats": …}``.
It prints ``{"port": N}`` on stdout when ready. Signaling crypto is not part of the
forwarding path, so the benchmark skips it; the media path is exactly ``sealroom serve``'s.
"""

from __future__ import annotations

import argparse
import logging
import sys

from bench import control
from sfu import Sfu, SfuConfig

logger = logging.getLogger("bench.sfu_runner")


async def serve(args: argparse.Namespace) -> None:
    await control.serve(Sfu(SfuConfig(bind_host=args.media_host, last_n=args.last_n)), args.port)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sfu_runner")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--media-host", default="127.0.0.1")
    p.add_argument("--last-n", type=int, default=0)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="sfu %(levelname)s %(name)s: %(message)s")
    import uvloop
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
