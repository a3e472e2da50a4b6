"""The sdist and the wheel, built and installed as a user would, outside the checkout.

One build per run: the sdist from the checkout, the wheel from that sdist (so the compiled
modules ``sfu/_fanout.c`` and ``bench/_receive.c`` are built from what the sdist carries),
both with this virtualenv's setuptools and no network (``build --no-isolation``). The wheel
is installed by pip, from the file alone, into a fresh virtualenv in tmp_path; its runtime
dependencies (aiortc, aiohttp, ...) cannot be downloaded here, so a ``.pth`` file puts this
virtualenv's site-packages directory after the fresh one's. A plain path line is not a site
directory: the ``.pth`` files in it, among them the editable install's finder of this
checkout, are not processed (checked below), so ``sealroom`` can only come from the wheel.
Then a real ``sealroom serve`` runs from the fresh virtualenv (cwd outside the checkout)
and must serve every browser file byte for byte as the checkout has it, and none of the
node tests, which the wheel does not ship (setup.py, MANIFEST.in, docs/DEPLOY.md
"Installing").
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tarfile
import time
import urllib.error
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# URL prefix -> source directory: what a checkout's server serves (signaling/server.py)
SERVED = {"/": ROOT / "web", "/e2ee-worker/": ROOT / "e2ee-worker"}
# source directory -> its place in the wheel, under signaling/_static/ (setup.py)
INSTALLED_AS = {"web": "web", "e2ee-worker": "e2ee_worker"}
NODE_TESTS = "test"  # web/test/, e2ee-worker/test/: kept in the repository only
COMPILED = ("sfu/_fanout", "bench/_receive")
# Bounds of each step, in seconds (a busy 2-core machine; a quiet one needs a tenth).
BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 120
SERVE_TIMEOUT = 60


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(cmd: list[str], *, cwd: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert out.returncode == 0, f"{cmd} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def shipped_files() -> dict[str, Path]:
    """URL path -> source file, for every browser file (node tests excluded)."""
    files: dict[str, Path] = {}
    for prefix, root in SERVED.items():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and rel.parts[0] != NODE_TESTS:
                files[prefix + rel.as_posix()] = path
    return files


def node_tests() -> list[str]:
    """URL paths of the node tests, which a checkout's server would serve."""
    return [prefix + path.relative_to(root).as_posix()
            for prefix, root in SERVED.items()
            for path in sorted((root / NODE_TESTS).rglob("*")) if path.is_file()]


@dataclass
class Dists:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)]
    run([*build, "--sdist", str(ROOT)], cwd=ROOT, timeout=BUILD_TIMEOUT)
    (sdist,) = out.glob("sealroom-*.tar.gz")
    unpacked = tmp_path_factory.mktemp("sdist")
    with tarfile.open(sdist) as tar:
        tar.extractall(unpacked, filter="data")
    (tree,) = unpacked.iterdir()
    run([*build, "--wheel", str(tree)], cwd=unpacked, timeout=BUILD_TIMEOUT)
    (wheel,) = out.glob("sealroom-*.whl")
    return Dists(sdist, wheel)


@dataclass
class Installed:
    venv: Path
    python: Path
    deps: list[str]  # this virtualenv's site-packages, listed in the fresh one's .pth


@pytest.fixture(scope="module")
def installed(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    home = tmp_path_factory.mktemp("fresh")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--disable-pip-version-check", "-q", str(dists.wheel)],
        cwd=home, timeout=INSTALL_TIMEOUT)
    fresh_site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir),
                                                           "platbase": str(env_dir)}))
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (fresh_site / "_sealroom_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return Installed(env_dir, python, list(ours))


def test_sdist_carries_every_source_and_no_build_output(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for module in COMPILED:
        assert {f"{module}.c", f"{module}.pyi"} <= names, module
    assert {"pyproject.toml", "setup.py", "MANIFEST.in"} <= names
    for url, source in shipped_files().items():
        assert source.relative_to(ROOT).as_posix() in names, url
    assert not [n for n in names if n.endswith((".so", ".pyc"))], "build output in the sdist"
    assert not [n for n in names if n.startswith(("web/test/", "e2ee-worker/test/"))]


def test_wheel_carries_compiled_modules_and_browser_files(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as whl:
        names = set(whl.namelist())
    for module in COMPILED:
        assert [n for n in names if n.startswith(f"{module}.") and n.endswith(".so")], module
        assert f"{module}.pyi" in names, module
    static = {n for n in names if n.startswith("signaling/_static/")}
    expected = set()
    for source in shipped_files().values():
        top, rest = source.relative_to(ROOT).as_posix().split("/", 1)
        expected.add(f"signaling/_static/{INSTALLED_AS[top]}/{rest}")
    assert static == expected
    # Once: no second copy at the top level (a package pattern such as "e2ee*" also
    # matches the directory e2ee-worker/).
    assert not [n for n in names if n.split("/")[0] in INSTALLED_AS]


def test_installed_modules_are_the_wheels_not_the_checkout(installed: Installed) -> None:
    probe = (
        "import json, sys\n"
        "import aiohttp, bench._receive, sealroom, sfu._fanout, signaling, cluster.cluster\n"
        "from signaling import static\n"
        "print(json.dumps({'files': {m: sys.modules[m].__file__ for m in "
        "('sealroom', 'signaling', 'sfu._fanout', 'bench._receive', 'signaling.static',"
        " 'cluster.cluster')},"
        " 'dirs': [str(static.web_dir()), str(static.worker_dir())],"
        " 'aiohttp': aiohttp.__file__, 'path': sys.path,"
        " 'editable': [m for m in sys.modules if 'editable' in m]}))\n"
    )
    home = installed.venv.parent
    seen = json.loads(run([str(installed.python), "-c", probe], cwd=home, timeout=60))
    for name, path in [*seen["files"].items(), *(("dir", d) for d in seen["dirs"])]:
        assert Path(path).is_relative_to(installed.venv), (name, path)
    # The dependencies come from this virtualenv through the .pth line, and nothing of the
    # checkout is importable: its editable finder was not run, and no path entry but those
    # .pth lines (this virtualenv's site-packages, which may lie in the checkout) is in it.
    assert Path(seen["aiohttp"]).parent.parent.as_posix() in installed.deps
    assert seen["editable"] == []
    inside = [p for p in seen["path"] if p and Path(p).resolve().is_relative_to(ROOT)]
    assert not [p for p in inside if p not in installed.deps], inside


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with NO_PROXY.open(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_live(proc: subprocess.Popen[bytes], base: str) -> bool:
    deadline = time.monotonic() + SERVE_TIMEOUT
    for _ in range(int(SERVE_TIMEOUT / 0.1)):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        try:
            if fetch(base + "/healthz/live")[0] == 200:
                return True
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    return False


@pytest.fixture
def server(installed: Installed, tmp_path: Path) -> Iterator[str]:
    """A real `sealroom serve` of the fresh virtualenv, cwd outside the checkout."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(installed.venv / "bin" / "sealroom"), "serve", "--host", "127.0.0.1",
             "--port", str(port), "--state-dir", str(tmp_path / "state"),
             "--drain-grace", "0.5", "--shutdown-timeout", "5"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        )
        try:
            base = f"http://127.0.0.1:{port}"
            if not wait_live(proc, base):
                pytest.fail(f"sealroom serve did not come up:\n{log_path.read_text()}")
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def test_installed_server_serves_the_browser_files_of_the_wheel(server: str) -> None:
    files = shipped_files()
    # The three a browser needs first: the page, the worker, the vendored libsodium.js
    # (index.html loads js/app.js, which imports vendor/libsodium-wrappers-sumo.mjs).
    assert {"/index.html", "/e2ee-worker/worker.js",
            "/vendor/libsodium-wrappers-sumo.mjs"} <= files.keys()
    status, body = fetch(server + "/")
    assert status == 200 and sha256(body) == sha256((ROOT / "web" / "index.html").read_bytes())
    for url, source in files.items():
        status, body = fetch(server + url)
        assert status == 200, url
        assert sha256(body) == sha256(source.read_bytes()), url
    # The checkout has the node tests and its server would serve them: this one answers 404,
    # so what it serves is the wheel's copy.
    tests = node_tests()
    assert tests
    for url in tests:
        assert fetch(server + url)[0] == 404, url
