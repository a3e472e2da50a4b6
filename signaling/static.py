"""Where the browser files are: the web client and the E2EE worker that the server serves.

Two places, the first that exists wins:

* an installed wheel (or ``pip install .``) carries them inside this package, in
  ``signaling/_static/web/`` and ``signaling/_static/e2ee_worker/`` (setup.py maps the
  repository's ``web/`` and ``e2ee-worker/`` there at build time, node tests left out);
* a source checkout, editable install included, has no ``_static``: the server serves the
  repository's own ``web/`` and ``e2ee-worker/``, so an edit shows on the next reload.

docs/DEPLOY.md "Installing" tells the same for operators.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _installed(name: str) -> Path | None:
    """``signaling/_static/<name>`` when this package was installed from a wheel."""
    found = resources.files("signaling") / "_static" / name
    # A wheel is installed unpacked, so the resource is a directory aiohttp can serve;
    # anything else (a zipped package) falls back to the source tree.
    return found if isinstance(found, Path) and found.is_dir() else None


def web_dir() -> Path:
    """The web client: index.html, style.css, js/, vendor/ (served at ``/``)."""
    return _installed("web") or SOURCE_ROOT / "web"


def worker_dir() -> Path:
    """The E2EE Web Worker: worker.js, attach.js, FORMAT.md (served at ``/e2ee-worker/``)."""
    return _installed("e2ee_worker") or SOURCE_ROOT / "e2ee-worker"
