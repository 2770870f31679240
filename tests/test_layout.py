"""The package layout: no module-level import cycles inside hlmbridge, and the tree the README shows.

Read from the modules' own source (``ast``), not from ``sys.modules``: an import inside a function
or method is a lazy convenience and is allowed; an import that runs when the module loads is an
edge of the graph, and the graph must have no cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hlmbridge"
README = Path(__file__).resolve().parents[1] / "README.md"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _load_time_imports(tree: ast.Module, here: str, is_package: bool) -> set[str]:
    """Imports executed at module load: top-level statements, including inside if/try/with."""
    found: set[str] = set()

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # bodies run later (class bodies run at load, but ours import nothing)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(node, field, None)
                    if isinstance(sub, list):
                        visit([s for s in sub if isinstance(s, ast.stmt)] +
                              [s for h in sub if isinstance(h, ast.ExceptHandler) for s in h.body])

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = _load_time_imports(tree, name, path.name == "__init__.py")
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of module names (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        colour[u] = GREY
        stack.append(u)
        for v in sorted(graph[u]):
            if colour[v] == GREY:
                return stack[stack.index(v):] + [v]
            if colour[v] == WHITE and (c := dfs(v)):
                return c
        stack.pop()
        colour[u] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (c := dfs(node)):
            return c
    return None


def test_no_module_level_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_a_cycle():
    # The checker itself must be able to fail.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_reads_real_edges():
    graph = import_graph()
    assert "hlmbridge.spec.model" in graph["hlmbridge.results.fit_result"]
    # lazy imports inside methods are not edges
    assert "hlmbridge.results.display" not in graph["hlmbridge.results.fit_result"]


def test_readme_layout_matches_tree():
    """Every folder and top-level module of the package is named in the README's layout block."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## Layout", 1)[1]
    names = set(re.findall(r"^\s+([\w]+(?:\.py|/))", block, flags=re.M))
    actual = {p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    actual |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert actual <= names, f"README layout misses {sorted(actual - names)}"
    stale = {n for n in names if n.endswith(".py") and not any(PACKAGE.rglob(n))}
    assert not stale, f"README layout names files that do not exist: {sorted(stale)}"
