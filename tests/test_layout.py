"""The test suite's own layering: shared helpers live in ``tests/support``, and no test module imports another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(TESTS.parent).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_or_conftest_is_imported() -> None:
    offenders = {
        f"{path.relative_to(TESTS.parent)} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in _imported_modules(path)
        if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith(("test_", "conftest"))
    }
    assert not offenders, "import shared helpers from tests.support instead:\n" + "\n".join(sorted(offenders))


def test_helper_modules_live_in_support() -> None:
    """Outside ``tests/support`` a file under ``tests`` is a test module, a ``conftest.py`` or an ``__init__.py``."""
    stray = [
        str(path.relative_to(TESTS.parent))
        for path in sorted(TESTS.rglob("*.py"))
        if "support" not in path.relative_to(TESTS).parts[:1]
        and not path.name.startswith("test_")
        and path.name not in {"conftest.py", "__init__.py"}
    ]
    assert not stray, "move shared helpers into tests/support: " + ", ".join(stray)
