"""docs/PROTOCOL.md's error table is the one the server uses."""

from __future__ import annotations

import re
from pathlib import Path

from signaling.errors import SPECS, ErrorId

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def documented() -> dict[str, tuple[str, str, str]]:
    text = DOC.read_text()
    table = text.split("<!-- errors-table")[1].split("<!-- /errors-table -->")[0]
    rows = {}
    for line in table.splitlines():
        m = re.fullmatch(r"\| `([a-z-]+)` \| (\S+) \| (\S+) \| (.+) \|", line)
        if m:
            rows[m[1]] = (m[2], m[3], m[4])
    return rows


def test_every_error_is_documented_with_its_code_and_message() -> None:
    rows = documented()
    assert set(rows) == {e.value for e in ErrorId}
    for error_id, spec in SPECS.items():
        close, http, message = rows[error_id.value]
        assert close == (str(spec.close_code) if spec.close_code else "—")
        assert http == (str(spec.http_status) if spec.http_status else "—")
        assert message == spec.message
