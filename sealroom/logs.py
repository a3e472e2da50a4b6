"""Logging for ``sealroom serve``: text or JSON lines, with third-party chatter contained.

Our own modules (``signaling``, ``sfu``, ``sealroom``) never log secrets, sealed
payloads or SDP (docs/SECURITY.md). The libraries under them do not make that promise:
at DEBUG/INFO aioice logs every candidate pair (participants' addresses and ports) and
STUN transaction, aiortc logs transport states. So their loggers stay at WARNING unless
asked for by name (``--log-level debug`` is about sealroom, not about aioice), and any
record of theirs that does get through has IP addresses masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

FORMATS = ("text", "json")
THIRD_PARTY = ("aioice", "aiortc", "aiohttp.access", "asyncio")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# IPv4 dotted quads; IPv6 literals (RFC 4291 §2.2): compressed (with "::") or 8 groups.
_IPV4 = r"\b(?:\d{1,3}\.){3}\d{1,3}\b"
_IPV6 = (
    r"(?<![\w:])(?=[0-9a-fA-F:]*::)[0-9a-fA-F:]{2,39}(?![\w:])"
    r"|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])"
)
ADDRESS = re.compile(f"{_IPV4}|{_IPV6}")


class MaskAddresses(logging.Filter):
    """Replace IP addresses in records of third-party loggers by ``<addr>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in {n.split(".", 1)[0] for n in THIRD_PARTY}:
            record.msg = ADDRESS.sub("<addr>", record.getMessage())
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (RFC 3339 UTC), level, logger, msg, [exc]."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger for a server process (replaces earlier handlers)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(MaskAddresses())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
