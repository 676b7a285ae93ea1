"""`cryptography` stays behind router/tls, and router/tls imports only the layers below it (DESIGN §4)."""

from __future__ import annotations

import ast
from pathlib import Path

import router

PACKAGE = Path(router.__file__).resolve().parent
# router.metrics: a leaf of the same layer (prometheus only), where the certificate's expiry is exported
TLS_MAY_IMPORT = ("router.tls", "router.errors", "router.settings", "router.logs", "router.model", "router.metrics",
                  "router.files", "router.discovery.documents")  # the one Secret validator


def absolute_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module == "router":  # `from router import logs` imports router.logs
                found.update(f"router.{alias.name}" for alias in node.names)
            else:
                found.add(node.module or "")
    return found


def test_only_the_tls_package_imports_cryptography() -> None:
    users = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if any(name.split(".")[0] == "cryptography" for name in absolute_imports(path))}
    assert users and all(user.startswith("tls/") for user in users), users


def test_the_tls_package_imports_only_lower_layers() -> None:
    for path in (PACKAGE / "tls").rglob("*.py"):
        ours = {name for name in absolute_imports(path) if name.split(".")[0] == "router"}
        assert all(name.startswith(TLS_MAY_IMPORT) for name in ours), (path.name, ours)


def test_the_check_sees_an_import_from_a_higher_layer(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from router import server\ndef f():\n    from router.front.connection import DataPlane\n")
    assert {"router.server", "router.front.connection"} <= absolute_imports(module)
