"""Build hook: the wheel carries the browser files inside the ``signaling`` package.

Everything else about the build is in pyproject.toml; this file only extends ``build_py``.

Why a hook: the web client (``web/``) and the E2EE worker (``e2ee-worker/``) live at the
repository's root, outside every Python package (the node tests, the docs and the editable
install use that layout), and setuptools' package data only takes files inside a package's
directory. The hook copies nothing itself: it maps each of those directories to a data-only
package under ``signaling/_static/`` (package-dir + package-data), so setuptools' own
``build_py`` globs, copies and records them like any package data. ``signaling/static.py``
finds them there with ``importlib.resources``; a checkout, which has no ``_static``, serves
its own ``web/`` and ``e2ee-worker/``. What is shipped is what MANIFEST.in puts in the sdist:
the node tests (``*/test/``) are not.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# source directory at the repository's root -> directory under signaling/_static/
STATIC = {"web": "web", "e2ee-worker": "e2ee_worker"}
# top-level subdirectories of those that stay in the source tree (node tests)
NOT_SHIPPED = frozenset({"test"})


def static_packages() -> dict[str, str]:
    """Data-only package name -> its source directory, one per shipped directory."""
    packages: dict[str, str] = {}
    for source, name in STATIC.items():
        root = Path(source)
        directories = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
        for directory in directories:
            parts = directory.relative_to(root).parts
            if parts and parts[0] in NOT_SHIPPED:
                continue
            if any("." in part for part in parts):  # a dot would split the package name
                raise SystemExit(f"setup.py: {directory}: a shipped directory has a '.'")
            packages[".".join(["signaling", "_static", name, *parts])] = directory.as_posix()
    return packages


class BuildPyWithStatic(build_py):
    def finalize_options(self) -> None:
        super().finalize_options()
        static = static_packages()
        # New containers: the distribution's own lists stay as pyproject.toml made them, so
        # the editable install (which reads those) keeps serving the source tree.
        self.packages = [*(self.packages or []), *static]
        self.package_dir = {**self.package_dir, **static}
        self.package_data = {**self.package_data, **{p: ["*"] for p in static}}


setup(cmdclass={"build_py": BuildPyWithStatic})
