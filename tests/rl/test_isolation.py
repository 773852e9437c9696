"""docs/design.md, decision 2: the RL core imports only the stdlib, numpy and torch, never Django."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import agent_app.rl

RL_DIR = Path(agent_app.rl.__file__).resolve().parent
ALLOWED_THIRD_PARTY = {"numpy", "torch"}


def run_fresh(code: str, env: dict[str, str]) -> None:
    """Run `code` in a new interpreter (nothing imported yet); it must print ok."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=RL_DIR.parent.parent,
        capture_output=True,
        text=True,
        env=env | {"PYTHONPATH": str(RL_DIR.parent.parent)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_the_rl_core_does_not_import_django() -> None:
    code = (
        "import sys\n"
        "import agent_app.rl, agent_app.rl.__main__\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    run_fresh(code, {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"})


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_rl_sources_import_only_stdlib_numpy_torch_and_the_rl_package() -> None:
    offenders = []
    for path in sorted(RL_DIR.rglob("*.py")):
        for module in _imported_modules(path):
            top = module.split(".")[0]
            if module == "agent_app.rl" or module.startswith("agent_app.rl."):
                continue
            if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "__future__":
                continue
            offenders.append(f"{path.name}: {module}")
    assert offenders == []


def test_no_rl_source_imports_django_even_lazily() -> None:
    # Catches importlib/__import__ with a literal name too, which the AST check cannot see.
    pattern = re.compile(r"(^|\s)(import|from)\s+django\b|[\"']django[.\"']", re.MULTILINE)
    mentions = [p.name for p in RL_DIR.rglob("*.py") if pattern.search(p.read_text())]
    assert mentions == []


def test_the_numpy_serving_path_does_not_import_torch() -> None:
    # Web workers import only these; torch would cost every gunicorn worker ~1 s and ~300 MB.
    code = (
        "import sys\n"
        "from agent_app.rl import NumpyQNetwork, normalize_state, compute_reward\n"
        "import agent_app.rl.inference, agent_app.rl.state, agent_app.rl.reward\n"
        "assert 'torch' not in sys.modules\n"
        "from agent_app.rl import DQNAgent\n"
        "assert 'torch' in sys.modules\n"
        "print('ok')\n"
    )
    run_fresh(code, dict(os.environ))


def test_every_public_name_resolves() -> None:
    for name in agent_app.rl.__all__:
        assert getattr(agent_app.rl, name) is not None, name
    assert "DQNAgent" in dir(agent_app.rl)
