"""The package's shape, read from its imports with ``ast``: algorithms side by side, the cached
recipes (``rlhf_mini.zoo``) above them, and no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlhf_mini"
ALGORITHMS = {"sft", "reward", "ppo", "best_of_n", "rejection_sampling", "dpo", "prm", "rlaif"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("rlhf_mini.") and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def _short(name: str) -> str:
    return name.removeprefix("rlhf_mini.")


def test_no_algorithm_imports_another_algorithm():
    graph = _imports()
    crossings = [(_short(a), _short(b)) for a, targets in graph.items() for b in targets
                 if _short(a) in ALGORITHMS and _short(b) in ALGORITHMS]
    assert not crossings, f"algorithm modules import each other: {crossings}"


def test_the_zoo_sits_above_the_algorithms():
    graph = _imports()
    upward = [(_short(a), _short(b)) for a, targets in graph.items() for b in targets
              if not _short(a).startswith(("zoo", "cli_stages", "__main__")) and _short(b).startswith("zoo")]
    assert not upward, f"modules below the zoo import it: {upward}"
    assert {f"rlhf_mini.zoo.{a}" for a in ("sft", "reward", "ppo", "dpo", "prm")} <= set(graph)


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # a package's modules import its __init__; that edge is how Python loads them, not a cycle
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(map(_short, cycle))}")
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
