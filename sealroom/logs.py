"""Logging for ``sealroom serve``: text or JSON lines, with third-party chatter contained.

Our own modules (``signaling``, ``sfu``, ``e2ee``, ``peers``, ``sealroom``) never log
secrets, sealed payloads or SDP (docs/SECURITY.md). The libraries under them do not make
that promise: at DEBUG/INFO aioice logs every candidate pair (participants' addresses and ports) and
STUN transaction, aiortc logs transport states. So their loggers stay at WARNING unless
asked for by name (``--log-level debug`` is about sealroom, not about aioice), and any
record of theirs that does get through has IP addresses masked.

Anything a client chose (a message ``type``, a forwarded address, a ``Host`` header)
goes into a log line only through :func:`safe`, which escapes what could forge a line or
drive a terminal and shortens what is long. Every handler also escapes control
characters in the finished message (:class:`EscapeControls`), as a net for a value that
missed :func:`safe`, in our modules or in a library's.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from signaling.logsafe import CONTROL, CONTROLS, escape
from signaling.logsafe import SAFE_MAX as SAFE_MAX  # re-exported: logs.safe(...)
from signaling.logsafe import safe as safe

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

class EscapeControls(logging.Filter):
    """The net under :func:`safe`: no record's message can hold a control character.

    ``keep``: controls left alone, for the JSON format, where the encoder already writes
    a line break or a tab as ``\\n``/``\\t`` inside the string (RFC 8259 §7), so they
    cannot break the one-record-per-line structure.
    """

    def __init__(self, keep: str = "") -> None:
        super().__init__()
        self.pattern = re.compile(f"(?![{re.escape(keep)}])[{CONTROLS}]") if keep else CONTROL

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.pattern.search(message):
            record.msg = self.pattern.sub(escape, message)
            record.args = None
        return True


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``; a traceback keeps its line breaks and loses every other control."""

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        return "\n".join(CONTROL.sub(escape, line) for line in text.split("\n"))


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
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    handler.addFilter(MaskAddresses())
    handler.addFilter(EscapeControls(keep="\n\t" if fmt == "json" else ""))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
