"""The packages' imports point one way (docs/DESIGN.md, "Packages and what they may import").

Every ``import`` and ``from … import`` in each package, at any depth (inside functions and
``TYPE_CHECKING`` blocks too), is read with ``ast``; a package may import only the
packages listed for it, so the structure stays the architecture: the media plane and the
cryptography at the bottom, the signaling plane above the cryptography, the Python peers
above both, the application on top, and the benchmark outside, driving it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = {"sfu", "signaling", "e2ee", "peers", "sealroom", "bench", "cluster"}
ALLOWED: dict[str, set[str]] = {
    "e2ee": set(),
    "sfu": set(),
    "cluster": {"e2ee"},
    "signaling": {"e2ee", "cluster"},
    "peers": {"e2ee", "sfu"},
    "sealroom": {"e2ee", "sfu", "signaling", "cluster"},
    "bench": {"e2ee", "sfu", "signaling", "peers", "sealroom", "cluster"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Our packages each module of ``package`` imports, by module path."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = (found & OURS) - {package}
    return out


def test_each_package_imports_only_what_is_below_it() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        modules = imported_packages(package)
        assert modules, f"{package}/ has no modules: layout changed?"
        wrong += [f"{module} imports {sorted(used - allowed)}"
                  for module, used in modules.items() if used - allowed]
    assert not wrong, "\n".join(wrong)


def test_the_allowed_imports_have_no_cycle() -> None:
    seen: set[str] = set()

    def visit(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, " -> ".join((*path, package))
        if package in seen:
            return
        for below in ALLOWED[package]:
            visit(below, (*path, package))
        seen.add(package)

    for package in ALLOWED:
        visit(package, ())
    assert seen == set(ALLOWED)


def test_every_package_is_covered() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(ALLOWED)
