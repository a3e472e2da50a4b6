"""signaling/static.py: the installed copy of the browser files when there is one, else the
checkout's own (the wheel itself is built, installed and served in test_packaging.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from signaling import static

ROOT = Path(__file__).resolve().parent.parent


def test_a_checkout_serves_its_own_web_and_worker_directories() -> None:
    assert static.web_dir() == ROOT / "web"
    assert static.worker_dir() == ROOT / "e2ee-worker"
    assert (static.web_dir() / "index.html").is_file()
    assert (static.worker_dir() / "worker.js").is_file()


def test_the_copy_inside_the_package_wins_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "signaling"
    (package / "_static" / "web").mkdir(parents=True)
    monkeypatch.setattr(static.resources, "files", lambda name: package)
    assert static.web_dir() == package / "_static" / "web"
    # Only the directories that are there: the worker's is missing, so the checkout's is used.
    assert static.worker_dir() == ROOT / "e2ee-worker"
    (package / "_static" / "e2ee_worker").mkdir()
    assert static.worker_dir() == package / "_static" / "e2ee_worker"
