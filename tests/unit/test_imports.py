"""The package's import structure: no import circles, and a producer loads no worker code.

A circle here is any pair of modules that import each other, directly or through others,
counting imports inside functions too (they only hide a circle, they do not break it).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "agentflow"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every module of the package → the package modules it imports (anywhere in it)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str | None] = set()
        tree = ast.parse(path.read_text())
        skipped = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for stmt in node.body
            for inner in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(known(a.name) for a in node.names if a.name.startswith("agentflow"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agentflow"):
                assert node.module is not None
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(known(full) if full in modules else known(node.module))
        targets.discard(None)
        targets.discard(name)
        graph[name] = {t for t in targets if t is not None}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert _circles(_import_graph()) == []


def test_the_circle_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _loaded_after(code: str) -> list[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return [m for m in json.loads(out.stdout) if m.startswith("agentflow")]


def test_a_producer_import_loads_no_worker_or_dev_module() -> None:
    loaded = _loaded_after("import agentflow\nfrom agentflow import Client, Event, agent, tool")
    worker_side = [m for m in loaded
                   if m.startswith(("agentflow._worker", "agentflow.bench", "agentflow.mock_llm",
                                    "agentflow.llm", "agentflow.demo", "agentflow.local_cluster",
                                    "agentflow.mcp", "agentflow._redis.transport"))]  # fmt: skip
    assert worker_side == []
    assert len(loaded) <= 31, loaded


def test_the_celery_app_is_there_for_celery_a_agentflow() -> None:
    loaded = _loaded_after("import agentflow\nfrom celery import Celery\n"
                           "assert isinstance(agentflow.app, Celery)")  # fmt: skip
    assert "agentflow.celery_app" in loaded
