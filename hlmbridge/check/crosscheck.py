"""The cross-check: reference numbers vs. engine numbers (pure: no engine, no R).

:func:`crosscheck` joins a :class:`~hlmbridge.reference.fixtures.Reference` to each engine's
``{key: Actual}`` by key and judges every number; :func:`compare_engines` judges engines
against each other. Status, in order of precedence:

``match``
    equal at the digits Stata printed (within half a unit of the last printed digit).
``within``
    difference <= ``se`` standard errors of the estimate when the tolerance has ``se`` and
    the number has an SE (rule ``se``), else relative difference <= ``rtol`` (rule
    ``rtol``); or difference <= ``atol`` (rule ``atol``: log likelihoods, chi2, AIC, BIC
    and p-values are judged on an absolute scale).
``explained``
    otherwise, when the row's ``explain_when`` condition holds (``singular``: the fit is
    at a boundary); the reason is recorded.
``mismatch`` / ``missing`` / ``unexpected``
    a difference beyond tolerance; a reference number no engine value was given for; an
    engine value the reference does not hold.

Examples
--------
>>> from hlmbridge.check.crosscheck import printed_half_unit
>>> printed_half_unit(".1234567"), printed_half_unit("1,234")
(5e-08, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Any

import pandas as pd

from hlmbridge.reference.fixtures import DEFAULT_TOLERANCES, Reference, Tolerance, quantity_class

__all__ = ["ENGINE_TOLERANCES", "STATUSES", "CheckReport", "CheckRow", "compare_engines", "crosscheck", "merge_reports",
           "printed_half_unit"]

STATUSES = ("mismatch", "missing", "explained", "within", "unexpected", "match")
_ORDER = {s: k for k, s in enumerate(STATUSES)}


def printed_half_unit(printed: str) -> float:
    """Half a unit in the last digit Stata printed (``0.0000`` -> 5e-05)."""
    s = printed.strip().lstrip("+-").replace(",", "")
    mant, _, exp = s.lower().partition("e")
    decimals = len(mant.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exp) if exp else 0))


@dataclass(frozen=True)
class CheckRow:
    """The verdict on one number for one engine."""

    case: str
    key: str
    engine: str
    expected: float
    actual: float
    printed: str
    abs_diff: float
    rel_diff: float
    digits: float
    diff_in_se: float
    tolerance: str
    rule: str
    status: str
    reason: str = ""


def _fmt_tol(t: Tolerance) -> str:
    parts = [f"rtol={t.rtol:g}"] if t.rtol or not t.atol else []
    if t.se is not None:
        parts.append(f"se={t.se:g}")
    if t.atol:
        parts.append(f"atol={t.atol:g}")
    return " ".join(parts)


def _judge(expected: float, actual: float, printed: str | None, se: float | None, tol: Tolerance,
           singular: bool) -> tuple[str, str, float, float, float, float, str]:
    """(status, rule, abs diff, rel diff, digits, diff in SEs, reason)."""
    if math.isnan(expected) or math.isnan(actual):
        both = math.isnan(expected) and math.isnan(actual)
        return ("match" if both else "mismatch", "missing value '.'", math.nan, math.nan, math.nan, math.nan, "")
    d = abs(actual - expected)
    rel = d / abs(expected) if expected != 0 else (0.0 if d == 0 else math.inf)
    digits = math.inf if rel == 0 else -math.log10(rel)
    dse = d / se if se is not None and se > 0 and math.isfinite(se) else math.nan
    if printed is not None and d <= printed_half_unit(printed) * (1 + 1e-9):
        return "match", "printed digits", d, rel, digits, dse, ""
    if printed is None and d == 0:
        return "match", "equal", d, rel, digits, dse, ""
    why = tol.reason if not tol.reason.startswith("default") else ""
    if tol.se is not None and not math.isnan(dse):
        # A number with a standard error is judged against it, never relative to its size.
        if dse <= tol.se:
            return "within", f"se={tol.se:g}", d, rel, digits, dse, why
    elif tol.rtol and rel <= tol.rtol:
        return "within", f"rtol={tol.rtol:g}", d, rel, digits, dse, why
    if tol.atol and d <= tol.atol:
        return "within", f"atol={tol.atol:g}", d, rel, digits, dse, ""
    if tol.explain_when == "singular" and singular:
        return "explained", "explain_when=singular", d, rel, digits, dse, tol.explain_reason or ""
    return "mismatch", _fmt_tol(tol), d, rel, digits, dse, ""


@dataclass(frozen=True)
class CheckReport:
    """Every judged number (frozen). ``ok`` when nothing is a mismatch or missing."""

    rows: tuple[CheckRow, ...]
    cases: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No mismatch and no missing number."""
        return not any(r.status in ("mismatch", "missing") for r in self.rows)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{engine: {status: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rows:
            out.setdefault(r.engine, {s: 0 for s in STATUSES})[r.status] += 1
        return out

    def worst_first(self) -> list[CheckRow]:
        """Rows by status severity, then by how few digits agree."""
        return sorted(self.rows, key=lambda r: (_ORDER[r.status], -(0 if math.isnan(r.rel_diff) else r.rel_diff)))

    def to_frame(self) -> pd.DataFrame:
        """One row per judged number."""
        cols = list(CheckRow.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self.rows], columns=cols)

    def summary_line(self) -> str:
        """One line: numbers, per engine match/within and explained, total mismatches."""
        keys = {(r.case, r.key) for r in self.rows}
        parts = [f"{len(keys)} numbers"]
        bad = 0
        for eng, c in self.counts().items():
            seg = f"{eng} {c['match'] + c['within']} match/within"
            if c["explained"]:
                seg += f", {c['explained']} explained"
            if c["missing"]:
                seg += f", {c['missing']} missing"
            if c["mismatch"]:
                seg += f", {c['mismatch']} mismatch"
            parts.append(seg)
            bad += c["mismatch"]
        parts.append(f"{bad} mismatch")
        return " · ".join(parts)

    def render(self, limit: int | None = None) -> str:
        """A readable table, worst first, then the summary line."""
        from hlmbridge.check.report import render_text

        return render_text(self, limit=limit)


def _actual_parts(a: Any) -> tuple[float, float | None, bool]:
    if isinstance(a, (int, float)):
        return float(a), None, False
    return float(a.value), a.std_error, bool(getattr(a, "singular", False))


def crosscheck(reference: Reference, actuals_by_engine: Mapping[str, Mapping[str, Any]]) -> CheckReport:
    """Judge every engine number of ``reference`` (see the module docstring).

    Parameters
    ----------
    reference
        A loaded fixture.
    actuals_by_engine
        ``{engine: {key: Actual}}`` (a bare float is taken as a value without SE).

    Examples
    --------
    >>> from hlmbridge.reference.fixtures import FIXTURE_ROOT, load_reference
    >>> from hlmbridge.reference.quantities import Actual
    >>> ref = load_reference(FIXTURE_ROOT / "seed" / "L0344_di.toml")
    >>> crosscheck(ref, {"demo": {"di.value": Actual(8.5535197)}}).rows[0].status
    'match'
    """
    rows: list[CheckRow] = []
    for engine, actuals in actuals_by_engine.items():
        keys = set()
        for v in reference.checked:
            keys.add(v.key)
            tol = reference.tolerance(v)
            if v.key not in actuals:
                rows.append(CheckRow(reference.case, v.key, engine, v.value, math.nan, v.printed, math.nan, math.nan,
                                     math.nan, math.nan, _fmt_tol(tol), "", "missing", "no value computed"))
                continue
            val, se, singular = _actual_parts(actuals[v.key])
            status, rule, d, rel, dig, dse, why = _judge(v.value, val, v.printed, se, tol, singular)
            if v.override is not None and status != "match" and not why:
                why = v.override.reason
            rows.append(CheckRow(reference.case, v.key, engine, v.value, val, v.printed, d, rel, dig, dse,
                                 _fmt_tol(tol), rule, status, why))
        for k in sorted(set(actuals) - keys):
            val, _, _ = _actual_parts(actuals[k])
            rows.append(CheckRow(reference.case, k, engine, math.nan, val, "", math.nan, math.nan, math.nan,
                                 math.nan, "", "", "unexpected", "the reference holds no such number"))
    return CheckReport(tuple(rows), (reference.case,), tuple(actuals_by_engine))


#: Engine-vs-engine tolerances: the default classes (each judged on the scale where a
#: difference could change a conclusion; see ``DEFAULT_TOLERANCES``' reasons).
ENGINE_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType(dict(DEFAULT_TOLERANCES))


def compare_engines(
    actuals_by_engine: Mapping[str, Mapping[str, Any]],
    reference: Reference | None = None,
    *,
    case: str | None = None,
) -> CheckReport:
    """Judge engines against each other: the first engine is the yardstick.

    Tolerances are :data:`ENGINE_TOLERANCES` by quantity class (a row's documented
    ``explain_when`` from ``reference`` is kept). There are no printed digits here, so
    ``match`` means exactly equal. Engine rows are named ``"<other> vs <first>"``.

    Examples
    --------
    >>> from hlmbridge.reference.quantities import Actual
    >>> rep = compare_engines({"a": {"header.loglik": Actual(-10.0)}, "b": {"header.loglik": Actual(-10.00001)}})
    >>> rep.rows[0].status, rep.rows[0].engine
    ('within', 'b vs a')
    """
    from hlmbridge.reference.fixtures import parse_key

    engines = list(actuals_by_engine)
    name = case or (reference.case if reference is not None else "engines")
    rows: list[CheckRow] = []
    if len(engines) < 2:
        return CheckReport((), (name,), tuple(engines))
    first, base = engines[0], actuals_by_engine[engines[0]]
    for other in engines[1:]:
        label = f"{other} vs {first}"
        act = actuals_by_engine[other]
        for key in sorted(set(base) | set(act)):
            tol = ENGINE_TOLERANCES[quantity_class(parse_key(key))]
            ref_value = reference.get(key) if reference is not None else None
            if ref_value is not None:
                # Keep a documented boundary-fit explanation; the numeric tolerance is the
                # engine-vs-engine one (the fixture's may be digits-only, e.g. prose figures).
                ref_tol = reference.tolerance(ref_value)  # type: ignore[union-attr]
                if ref_tol.explain_when:
                    tol = replace(tol, explain_when=ref_tol.explain_when, explain_reason=ref_tol.explain_reason)
            if key not in act or key not in base:
                status = "missing" if key not in act else "unexpected"
                v = _actual_parts(base[key])[0] if key in base else math.nan
                w = _actual_parts(act[key])[0] if key in act else math.nan
                rows.append(CheckRow(name, key, label, v, w, "", math.nan, math.nan, math.nan, math.nan,
                                     _fmt_tol(tol), "", status, f"only in {first if key in base else other}"))
                continue
            v, se, s1 = _actual_parts(base[key])
            w, se2, s2 = _actual_parts(act[key])
            status, rule, d, rel, dig, dse, why = _judge(v, w, None, se if se is not None else se2, tol, s1 or s2)
            rows.append(CheckRow(name, key, label, v, w, "", d, rel, dig, dse, _fmt_tol(tol), rule, status, why))
    return CheckReport(tuple(rows), (name,), tuple(f"{o} vs {first}" for o in engines[1:]))


def merge_reports(reports: Iterable[CheckReport]) -> CheckReport:
    """One report holding every row of ``reports`` (cases and engines in first-seen order)."""
    rows: list[CheckRow] = []
    cases: dict[str, None] = {}
    engines: dict[str, None] = {}
    for r in reports:
        rows.extend(r.rows)
        cases.update(dict.fromkeys(r.cases))
        engines.update(dict.fromkeys(r.engines))
    return CheckReport(tuple(rows), tuple(cases), tuple(engines))
