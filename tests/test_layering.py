"""The code's structure: each shared definition lives once, and the replay layer sits below the
services (no cycle between them, hence no import tucked inside a function to dodge one)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("agent_app", "rlagent_client", "rlagent_project", "tasks", "simulator", "examples", "benchmarks")


def modules(*folders: str) -> Iterator[tuple[Path, ast.Module]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path.relative_to(ROOT), ast.parse(path.read_text(), filename=str(path))


def imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def test_the_fallback_heuristic_and_the_confidence_are_defined_once():
    defined = sorted(
        f"{path}:{node.name}" for path, tree in modules(*SOURCES) for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in ("least_loaded", "softmax_confidence")
    )
    assert defined == ["agent_app/rl/policy.py:least_loaded", "agent_app/rl/policy.py:softmax_confidence"]


def test_the_state_size_is_written_out_once():
    # N + 7 is agent_app.rl.state.state_dim(N); any other `+ 7` is a second definition of it.
    sums = [
        f"{path}:{node.lineno}: {ast.unparse(node)}"
        for path, tree in modules(*SOURCES) for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub)
        and any(isinstance(side, ast.Constant) and side.value == 7 for side in (node.left, node.right))
    ]
    assert sums == []


def test_the_replay_layer_imports_nothing_from_the_services():
    upward = [f"{path}: {name}" for path, tree in modules("agent_app/replay") for node in ast.walk(tree)
              for name in imported(node) if name.startswith("agent_app.services")]
    assert upward == []


def test_the_replay_and_services_layers_import_each_other_only_at_module_level():
    inside = []
    for path, tree in modules("agent_app/replay", "agent_app/services"):
        for function in ast.walk(tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                inside += [f"{path}:{node.lineno}: {name}"
                           for node in ast.walk(function) for name in imported(node)
                           if name.startswith(("agent_app.replay", "agent_app.services"))]
    assert inside == []
