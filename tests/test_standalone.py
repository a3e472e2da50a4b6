"""The repository stands alone: nothing in it cites or reads files from outside it.

Whoever clones it gets every document it refers to (docs/, with docs/DESIGN.md for the
architecture and its rules, and e2ee-worker/FORMAT.md); the background the project grew
from is not shipped, so no file may point at it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Built from pieces so that this file does not match itself.
FORBIDDEN = ("shared/" + "DESIGN.md", "../" + "shared/", "/work/" + "shared")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_file_cites_anything_outside_the_repository() -> None:
    files = tracked_files()
    assert len(files) > 100, "git ls-files listed too little: not a checkout?"
    hits = []
    for path in files:
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, binary vectors
        for number, line in enumerate(text.splitlines(), 1):
            hits += [f"{path.relative_to(ROOT)}:{number}: {word}" for word in FORBIDDEN
                     if word in line]
    assert not hits, "\n".join(hits)


def test_the_design_document_is_the_repositorys_own() -> None:
    design = ROOT / "docs" / "DESIGN.md"
    assert design.is_file() and "docs/DESIGN.md" in {
        str(p.relative_to(ROOT)) for p in tracked_files()}
