"""Every module imports on its own, in a fresh interpreter; lower layers never import higher ones.

A fresh interpreter per module finds circular imports that a test session hides (there, some
other module has usually imported the cycle's other half first); see aiohttp's
tests/test_circular_imports.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

import router

PACKAGE = Path(router.__file__).resolve().parent
PROJECT_ROOT = PACKAGE.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))

# DESIGN §4: cli → server → {front, admin} → proxy → {discovery, balancing, tls, metrics}
#            → {model, errors, settings}
TOP = ("router.cli", "router.demo", "router.server")
LAYERS: dict[str, tuple[str, ...]] = {  # files (relative to router/) → modules they must not import
    "balancing": (*TOP, "router.front", "router.proxy", "router.admin"),
    "discovery": (*TOP, "router.front", "router.proxy", "router.admin"),
    "model.py": (*TOP, "router.front", "router.proxy", "router.admin"),
    "errors.py": (*TOP, "router.front", "router.proxy", "router.admin"),
    "settings.py": (*TOP, "router.front", "router.proxy", "router.admin"),
    "files.py": (*TOP, "router.front", "router.proxy", "router.admin", "router.discovery", "router.tls"),
    "proxy": (*TOP, "router.front", "router.admin"),
    "metrics.py": (*TOP, "router.front", "router.proxy", "router.admin"),
    "access_log.py": (*TOP, "router.front", "router.proxy", "router.admin"),
    "tracing.py": (*TOP, "router.front", "router.proxy", "router.admin"),
    "autoscale": (*TOP, "router.front", "router.proxy", "router.admin"),
    "front": TOP,
    "admin.py": TOP,
    "peers": (*TOP, "router.front", "router.proxy", "router.admin", "router.balancing"),
}


def test_every_module_is_found() -> None:
    assert len(MODULES) > 10
    for expected in ("router", "router.cli", "router.balancing.traffic", "router.discovery.documents"):
        assert expected in MODULES


@pytest.fixture(scope="module")
def imports() -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """All the fresh-interpreter imports, run side by side; each test reads its own."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        yield {name: pool.submit(subprocess.run, [sys.executable, "-c", f"import {name}"],
                                 capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
               for name in MODULES}


@pytest.mark.parametrize("name", MODULES)
def test_module_imports_in_a_fresh_interpreter(
        name: str, imports: dict[str, Future[subprocess.CompletedProcess[str]]]) -> None:
    result = imports[name].result()
    assert result.returncode == 0, f"import {name} failed:\n{result.stderr}"


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module `source` (the text of `module`) may import, relative imports resolved.

    `from a import b` yields both `a` and `a.b`, since b may be a module. Imports inside
    functions and `if TYPE_CHECKING:` blocks count too.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def forbidden(imported: set[str], banned: tuple[str, ...]) -> set[str]:
    return {name for name in imported for ban in banned if name == ban or name.startswith(ban + ".")}


def layered_files() -> Iterator[tuple[Path, tuple[str, ...]]]:
    for place, banned in LAYERS.items():
        target = PACKAGE / place
        for path in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            yield path, banned


LAYERED = list(layered_files())


@pytest.mark.parametrize(("path", "banned"), LAYERED, ids=[str(p.relative_to(PACKAGE)) for p, _ in LAYERED])
def test_lower_layers_do_not_import_higher_ones(path: Path, banned: tuple[str, ...]) -> None:
    assert path.is_file()
    module = module_name(path)
    imported = imported_modules(path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py")
    assert not forbidden(imported, banned), f"{module} imports {sorted(forbidden(imported, banned))}"


def test_the_layer_rules_cover_the_lower_layers() -> None:
    covered = {module_name(path) for path, _ in LAYERED}
    for name in ("router.model", "router.errors", "router.settings", "router.balancing.table",
                 "router.discovery.file", "router.proxy.upstream", "router.front.scoring", "router.admin"):
        assert name in covered


@pytest.mark.parametrize(("source", "module", "caught"), [
    ("import router.front.scoring", "router.balancing.table", "router.front.scoring"),
    ("from router.server import RouterServer", "router.model", "router.server"),
    ("from router import cli", "router.settings", "router.cli"),
    ("from ..proxy import upstream", "router.balancing.table", "router.proxy"),
    ("from .. import demo", "router.discovery.file", "router.demo"),
    ("from . import admin", "router.errors", "router.admin"),
    ("def f():\n    from router.front.connection import DataPlane\n", "router.model", "router.front.connection"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import router.cli\n", "router.model",
     "router.cli"),
])
def test_the_layer_check_catches_each_import_form(source: str, module: str, caught: str) -> None:
    assert caught in forbidden(imported_modules(source, module), LAYERS["model.py"])


@pytest.mark.parametrize(("source", "module"), [
    ("from router.balancing.replicas import Replica", "router.balancing.table"),
    ("from router import logs, model", "router.discovery.file"),
    ("from .documents import load_yaml", "router.discovery.file"),
    ("import router.frontier", "router.model"),  # a prefix of a name is not the module
])
def test_the_layer_check_allows_lower_imports(source: str, module: str) -> None:
    assert not forbidden(imported_modules(source, module), LAYERS["model.py"])


def test_relative_imports_in_a_package_init_resolve_from_the_package() -> None:
    assert "router.front" in imported_modules("from . import front", "router", is_package=True)
    assert "router.balancing.table" in imported_modules("from .table import RoutingTable",
                                                        "router.balancing", is_package=True)
