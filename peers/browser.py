"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Never a browser download: Playwright's Python package brings only its driver, and
``executable_path`` points at the Debian package that ``./dev test`` installs.
The flags (CHROMIUM_ARGS) are what headless Chromium needs here for fake media
and WebRTC on loopback.
"""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = os.environ.get("SEALROOM_CHROMIUM", "/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # Without it Chromium gathers no ICE candidates on loopback.
    "--allow-loopback-in-peer-connection",
]

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
