"""Client-chosen values as they may appear in a log line: one line, inert, bounded.

Anything a client chose (a message ``type``, a forwarded address, a ``Host`` header) is
written to a log only through :func:`safe`. The application's log handlers
(sealroom/logs.py) escape the same characters in every finished message as a net.
"""

from __future__ import annotations

import re

# Never written raw: C0 controls (NUL, CR, LF, ESC, …), DEL, C1 controls (0x9b is a
# one-byte CSI to some terminals), the Unicode line and paragraph separators, and the
# bidirectional formatting characters that reorder what a reader sees (Unicode TR9; the
# "Trojan Source" paper, CVE-2021-42574).
CONTROLS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
CONTROL = re.compile(f"[{CONTROLS}]")
_UNSAFE = re.compile(f"[{CONTROLS}\\\\]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Longest client-chosen value written to a log, in characters (before escaping).
SAFE_MAX = 200


def escape(m: re.Match[str]) -> str:
    ch = m.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: object, limit: int = SAFE_MAX) -> str:
    """A client-chosen value as it may appear in a log line: one line, inert, bounded.

    Controls (above) and the backslash are escaped Python-style (``\\r``, ``\\x1b``,
    ``\\x00``, ``\\u202e``, ``\\\\``), so the escaped text cannot be mistaken for an
    escape; a value with a space, ``"`` or ``=`` is quoted (logfmt style), so it cannot
    pose as another ``key=value`` field; past ``limit`` characters it is cut and says how
    much was left out. ``None`` stays ``None``.
    """
    text = value if isinstance(value, str) else str(value)
    left_out = len(text) - limit
    if left_out > 0:
        text = text[:limit]
    text = _UNSAFE.sub(escape, text)
    if text == "" or any(c in text for c in ' "='):
        text = '"' + text.replace('"', '\\"') + '"'
    if left_out > 0:
        text += f"…(+{left_out} chars)"
    return text
