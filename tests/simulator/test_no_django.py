"""The simulator is plain Python: no Django import, matplotlib only when plotting."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "simulator"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at_top_level) for every import in a file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
    return found


def test_no_simulator_module_imports_django() -> None:
    for path in PACKAGE.glob("*.py"):
        for module, _ in _imports(path):
            root = module.split(".")[0]
            assert root not in {"django", "rest_framework", "celery"}, f"{path.name}: {module}"
            assert module not in {"agent_app", "agent_app.models"}, f"{path.name}: {module}"


def test_matplotlib_is_imported_lazily() -> None:
    for path in PACKAGE.glob("*.py"):
        for module, top_level in _imports(path):
            assert not (module.startswith("matplotlib") and top_level), path.name


def test_importing_every_module_loads_no_django() -> None:
    modules = sorted(f"simulator.{p.stem}" for p in PACKAGE.glob("*.py")
                     if p.stem not in {"__main__"})
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'matplotlib')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent, timeout=120)
