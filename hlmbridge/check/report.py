"""Render a :class:`~hlmbridge.check.crosscheck.CheckReport` as text, JSON, Markdown or JUnit XML.

Examples
--------
>>> from hlmbridge.check.crosscheck import CheckReport
>>> render(CheckReport(()), "text").splitlines()[-1]
'0 numbers · 0 mismatch'
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from typing import Any

from hlmbridge.errors import UsageError

__all__ = ["FORMATS", "render", "render_json", "render_junit", "render_markdown", "render_text"]

FORMATS = ("text", "json", "markdown", "junit")
_COLS = ("status", "case", "key", "engine", "expected", "actual", "rel_diff", "digits", "diff_in_se", "rule", "reason")


def _g(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return ""
        if math.isinf(x):
            return "inf"
        return f"{x:.7g}"
    return str(x)


def _cells(r: Any) -> list[str]:
    return [(r.printed or _g(r.expected)) if c == "expected" else _g(getattr(r, c)) for c in _COLS]


def render_text(report: Any, limit: int | None = None, *, all_rows: bool = True) -> str:
    """A plain table, worst first, then the verdict line."""
    rows = report.worst_first()
    if limit is not None:
        rows = rows[:limit]
    table = [list(_COLS)] + [_cells(r) for r in rows]
    widths = [min(max(len(t[k]) for t in table), 60) for k in range(len(_COLS))]
    lines = ["  ".join(t[k][:60].ljust(widths[k]) for k in range(len(_COLS))).rstrip() for t in table]
    if limit is not None and len(report.rows) > limit:
        lines.append(f"... {len(report.rows) - limit} more rows")
    # The table cuts a reason at 60 characters: a failing row's reason is said once in full.
    full = dict.fromkeys(r.reason for r in rows if r.status in ("mismatch", "missing") and len(r.reason) > 60)
    if full:
        lines.append("")
        lines.extend(f"reason: {why}" for why in full)
    lines.append("")
    lines.append(("OK: " if report.ok else "FAIL: ") + report.summary_line() if report.rows else report.summary_line())
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def render_json(report: Any) -> str:
    """All rows and the verdict as JSON (NaN -> null)."""
    doc = {
        "ok": report.ok,
        "summary": report.summary_line(),
        "cases": list(report.cases),
        "engines": list(report.engines),
        "counts": report.counts(),
        "rows": [{k: _jsonable(v) for k, v in r.__dict__.items()} for r in report.rows],
    }
    return json.dumps(doc, indent=1, allow_nan=False)


def render_markdown(report: Any) -> str:
    """A Markdown table, worst first, with the verdict as a heading line."""
    out = [f"**{'OK' if report.ok else 'FAIL'}**: {report.summary_line()}", ""]
    out.append("| " + " | ".join(_COLS) + " |")
    out.append("|" + "---|" * len(_COLS))
    for r in report.worst_first():
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(out) + "\n"


def render_junit(report: Any) -> str:
    """JUnit XML: one testcase per (case, engine); each mismatch/missing number a <failure>."""
    suite = ET.Element("testsuite", name="hlmbridge.check.validate")
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in report.rows:
        groups.setdefault((r.case, r.engine), []).append(r)
    failures = 0
    for (case, engine), rows in groups.items():
        tc = ET.SubElement(suite, "testcase", classname=f"hlmbridge.{engine}", name=case)
        for r in rows:
            if r.status in ("mismatch", "missing"):
                failures += 1
                f = ET.SubElement(tc, "failure", type=r.status,
                                  message=f"{r.key}: expected {r.printed or _g(r.expected)}, got {_g(r.actual)}")
                f.text = (f"{case} {r.key} [{engine}] expected={_g(r.expected)} actual={_g(r.actual)} "
                          f"rel_diff={_g(r.rel_diff)} tolerance={r.tolerance} {r.reason}").strip()
        ok = sum(r.status not in ("mismatch", "missing") for r in rows)
        ET.SubElement(tc, "system-out").text = f"{ok} of {len(rows)} numbers match/within/explained/unexpected"
    suite.set("tests", str(len(groups)))
    suite.set("failures", str(sum(1 for tc in suite if tc.find("failure") is not None)))
    suite.set("errors", "0")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def render(report: Any, fmt: str = "text") -> str:
    """Render ``report`` in one of :data:`FORMATS`."""
    try:
        fn = {"text": render_text, "json": render_json, "markdown": render_markdown, "junit": render_junit}[fmt]
    except KeyError:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}") from None
    return fn(report)
