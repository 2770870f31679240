"""validate's "nlme vs own likelihood" rows (issue 25): nlme's log likelihood against hlmbridge's.

A fit with a residual structure by the nlme engine reports hlmbridge's own likelihood of the
structure (:mod:`hlmbridge.inference.residual_structures`) at its estimates (nlme's optimum,
finished by a few Newton steps on that likelihood) and keeps nlme's ``logLik`` as
``FitResult.engine_loglik``. One row per such fit judges the two as "statsmodels vs lme4" rows
are judged (:data:`hlmbridge.check.crosscheck.ENGINE_TOLERANCES`, the ``loglik`` class): a
structure's parameter read other than nlme meant it, or a likelihood of another model, shows as
a mismatch; the difference left is the Newton polish's gain (measured: below 1e-7).

Examples
--------
>>> ENGINE_LABEL
'nlme vs own likelihood'
>>> own_likelihood_rows([], {}, {}).rows
()
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hlmbridge.check.crosscheck import ENGINE_TOLERANCES, CheckReport, CheckRow, _fmt_tol, _judge

__all__ = ["ENGINE_LABEL", "own_likelihood_rows"]

#: The engine column of these rows.
ENGINE_LABEL = "nlme vs own likelihood"


def own_likelihood_rows(refs: Sequence[Any], fits: Mapping[tuple[Any, str], Any],
                        specs: Mapping[str, Any]) -> CheckReport:
    """One ``header.loglik`` row per case and residual-structure model the nlme engine fitted:
    expected nlme's ``logLik``, actual hlmbridge's own log likelihood (the result's)."""
    tol = ENGINE_TOLERANCES["loglik"]
    rows: list[CheckRow] = []
    for ref in refs:
        for m in getattr(ref, "models", ()):
            res = fits.get((specs.get(m.command), "nlme"))
            if res is None or isinstance(res, BaseException) or res.spec.residuals is None:
                continue
            nlme_ll, own = float(res.engine_loglik), float(res.loglik)
            if math.isnan(nlme_ll):
                continue
            status, rule, d, rel, dig, dse, why = _judge(nlme_ll, own, None, None, tol, False)
            rows.append(CheckRow(ref.case, "header.loglik", ENGINE_LABEL, nlme_ll, own, "", d, rel, dig, dse,
                                 _fmt_tol(tol), rule, status, why or m.command))
    cases = tuple(dict.fromkeys(r.case for r in rows))
    return CheckReport(tuple(rows), cases, (ENGINE_LABEL,) if rows else ())
