"""The package layout is the architecture (DESIGN §2, issue 14): each folder is
one layer, imports point down only, and no two modules import each other,
directly or through others. Read from the source with `ast`, so imports inside
functions and under TYPE_CHECKING count too."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "circle"

#: layer -> the layers it may import (besides itself and circle.errors).
ALLOWED: dict[str, set[str]] = {
    "cli": {"tui", "node", "relay", "net", "crdt"},
    "tui": {"node", "net", "crdt"},
    "node": {"net", "crdt"},
    "relay": {"net"},
    "net": {"crdt"},  # the sync session works on the document; crdt never imports net
    "crdt": set(),
    "errors": set(),
    "__main__": {"cli"},
    "__init__": set(),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            names = [node.value]  # importlib.import_module("circle.cli.sync")
        for name in names:
            if name in known:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    known = set(files)
    return {m: imports_of(p, known) - {m} for m, p in files.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            # a package's __init__ is imported by its children implicitly; only edges count
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_arrows_point_down() -> None:
    bad = []
    for module, targets in graph().items():
        own = layer(module)
        for target in targets:
            other = layer(target)
            if other in (own, "errors", "__init__"):
                continue
            if other not in ALLOWED[own]:
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_every_layer_is_known() -> None:
    assert {layer(m) for m in graph()} <= set(ALLOWED)


def test_the_cycle_check_can_fail() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
