"""DESIGN.md's import rules: model/ imports neither app/ nor widgets/ nor PySide6; app/ never imports
widgets/ or PySide6. Checked statically (every import statement in every file) so a lazy import inside
a function is caught too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = {
    "model": ("app", "widgets", "PySide6", "pyqtgraph", "shiboken6"),
    "app": ("widgets", "PySide6", "pyqtgraph", "shiboken6"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def violations(root: Path, package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        for lineno, name in imported_modules(path):
            top = name.split(".")[0]
            if top in forbidden:
                bad.append(f"{path.relative_to(root)}:{lineno} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(RULES))
def test_layer_does_not_import_forbidden(package):
    assert (ROOT / package).is_dir()
    assert violations(ROOT, package, RULES[package]) == []


def test_checker_catches_a_violation(tmp_path):
    """The rule check itself must be able to fail."""
    pkg = tmp_path / "model"
    pkg.mkdir()
    (pkg / "bad.py").write_text("def f():\n    from PySide6 import QtCore\n    import app.session\n")
    found = violations(tmp_path, "model", RULES["model"])
    assert len(found) == 2 and "PySide6" in found[0] and "app.session" in found[1]
