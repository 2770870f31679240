"""Issue 26, item 3: no ``except ImportError`` / ``except AttributeError`` can hide a typo in
project code.

``hlmbridge summarize`` printed a plain table for months because ``cli.py`` imported a function
that does not exist (``format_summary``) inside ``except (ImportError, AttributeError)``. Every
handler in ``hlmbridge/`` that catches ImportError, ModuleNotFoundError or AttributeError is
listed here with its reason; a new one fails this test until it is reviewed (an optional
third-party import whose message names what to install, or a probe of a third-party package).
No such handler may guard an import of hlmbridge's own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hlmbridge"
CAUGHT = {"ImportError", "ModuleNotFoundError", "AttributeError"}

#: (file, enclosing function, exceptions caught) -> why it is allowed.
REVIEWED = {
    ("results/plots.py", "_figure", ("ImportError",)):
        "matplotlib is optional: UsageError \"plots need matplotlib: pip install 'hlmbridge[plot]'\"",
    ("engines/r_session.py", "_r_start_stamp", ("ImportError", "ValueError")):
        "importlib.util.find_spec('rpy2') probing the optional third-party rpy2 (no stamp without it)",
    ("engines/r_session.py", "_check_r_starts", ("AttributeError", "OSError", "ValueError")):
        "reads a JSON stamp of any shape (`.get` on a non-dict); owned by the r_session helper; reported "
        "(an isinstance(recorded, dict) check would let AttributeError go)",
}


def _handlers() -> dict[tuple[str, str, tuple[str, ...]], list[ast.Try]]:
    found: dict[tuple[str, str, tuple[str, ...]], list[ast.Try]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def visit(node: ast.AST, where: str) -> None:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = node.name
            if isinstance(node, ast.Try):
                for h in node.handlers:
                    types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type] if h.type else []
                    names = tuple(sorted(t.id if isinstance(t, ast.Name) else ast.unparse(t) for t in types))
                    if CAUGHT & set(names):
                        key = (path.relative_to(PACKAGE).as_posix(), where, names)
                        found.setdefault(key, []).append(node)
            for child in ast.iter_child_nodes(node):
                visit(child, where)

        visit(tree, "<module>")
    return found


def test_every_import_or_attribute_error_handler_is_reviewed() -> None:
    found = _handlers()
    unreviewed = sorted(set(found) - set(REVIEWED))
    assert not unreviewed, f"except ImportError/AttributeError not reviewed (can it hide a typo?): {unreviewed}"
    gone = sorted(set(REVIEWED) - set(found))
    assert not gone, f"reviewed handlers no longer in the code (drop them from REVIEWED): {gone}"


def test_no_such_handler_guards_an_import_of_hlmbridge() -> None:
    for key, tries in _handlers().items():
        for node in tries:
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("hlmbridge"):
                        raise AssertionError(f"{key}: catches {key[2]} around `from {sub.module} import ...`")
                    if isinstance(sub, ast.Import) and any(a.name.startswith("hlmbridge") for a in sub.names):
                        raise AssertionError(f"{key}: catches {key[2]} around an import of hlmbridge")
