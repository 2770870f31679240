"""R's ``model.matrix`` rules, applied to evaluated formula variables.

- Columns come term by term in the order of :class:`~hlmbridge.spec.rformula.Terms`
  (by degree, then appearance), the intercept first.
- Inside a term, the first variable varies fastest; a column's name joins the pieces'
  names with ``:`` in variable order (``sector:ses`` when ``sector`` appeared first).
- A factor in a term is coded by contrasts when the term without it is empty or is
  contained in a preceding term, and by one indicator per level otherwise (R's
  ``TermCode``). Without an intercept, the first factor of the first term that has one
  is coded by indicators. This decides ``0 + f`` (k columns), ``f + f:x`` (k slopes) and
  ``f:g`` without main effects.
- Unordered factors use treatment contrasts (``sectorCatholic``), ordered factors
  ``contr.poly`` (``.L``, ``.Q``, ``.C``, ``^4``), logicals ``xTRUE``, unless the factor
  carries other contrasts (``C(f, contr.sum)``) or lmer's ``contrasts=`` names the variable
  (``contrasts``; :mod:`hlmbridge.design.contrasts` gives the coding and R's column names).
- A numeric matrix variable gives one column per matrix column, named by the variable
  and the column name (``poly(x, 2)1``), or by the variable alone for a one-column matrix
  without names (``scale(x)``).

Examples
--------
>>> import numpy as np
>>> from hlmbridge.spec.rformula import parse_formula
>>> from hlmbridge.design.evaluate import Factor, Numeric
>>> t = parse_formula("y ~ 0 + f + f:x + (1 | g)").fixed
>>> f = Factor(np.array([0, 1, 2, 0]), ("a", "b", "c"))
>>> x = Numeric(np.array([[1.0], [2.0], [3.0], [4.0]]))
>>> model_matrix(t, [f, x]).names
('fa', 'fb', 'fc', 'fa:x', 'fb:x', 'fc:x')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product

import numpy as np

from hlmbridge.design.contrasts import Contrast, contr_poly
from hlmbridge.design.evaluate import Factor, Numeric, Value, unsure_order_message
from hlmbridge.errors import DataError
from hlmbridge.spec.rformula import Terms

__all__ = ["ModelMatrix", "model_matrix", "term_codes"]


@dataclass(frozen=True, eq=False)
class ModelMatrix:
    """Columns with R's names and Stata-style names (``1.sector#c.ses``)."""

    X: np.ndarray
    names: tuple[str, ...]
    stata_names: tuple[str, ...]
    term_of_column: tuple[int, ...]  # -1 for the intercept, else the term's index


def term_codes(terms: Terms, is_factor: list[bool]) -> list[list[int]]:
    """R's coding of each variable in each term: 1 contrasts, 2 indicators (0 absent)."""
    sets = [set(t) for t in terms.terms]
    codes: list[list[int]] = []
    for k, t in enumerate(terms.terms):
        row = [0] * len(terms.variables)
        for v in t:
            rest = sets[k] - {v}
            if not rest or any(rest <= sets[j] for j in range(k)):
                row[v] = 1
            else:
                row[v] = 2
        codes.append(row)
    if not terms.intercept:
        for k, t in enumerate(terms.terms):
            hit = [v for v in t if is_factor[v]]
            if hit:
                codes[k][hit[0]] = 2
                break
    return codes


def _stata_piece(label: str, level: str | None, interaction: bool) -> str:
    base = label
    for fn in ("relevel(", "factor(", "as.factor(", "ordered(", "as.ordered("):
        if base.startswith(fn):
            base = base[len(fn):].split(",")[0].rstrip(")")
    if level is None:
        return f"c.{label}" if interaction else label
    return f"{level}.{base}"


def model_matrix(terms: Terms, values: list[Value], n: int | None = None,
                 contrasts: Mapping[str, Contrast] | None = None) -> ModelMatrix:
    """The model matrix of ``terms`` on evaluated ``values`` (one per variable, rows already
    selected, factors with their unused levels dropped). ``contrasts`` maps a variable's
    label to the contrasts lmer's ``contrasts=`` gives it (R's ``contrasts.arg``).

    Raises
    ------
    DataError
        A factor with fewer than two levels (R: "contrasts can be applied only to factors
        with 2 or more levels").
    """
    if n is None:
        n = len(values[0].codes) if values and isinstance(values[0], Factor) else (
            values[0].values.shape[0] if values else 0)
    labels = [v.deparse() for v in terms.variables]
    is_factor = [isinstance(v, Factor) for v in values]
    codes = term_codes(terms, is_factor)
    cols: list[np.ndarray] = []
    names: list[str] = []
    stata: list[str] = []
    owner: list[int] = []
    if terms.intercept:
        cols.append(np.ones(n))
        names.append("(Intercept)")
        stata.append("_cons")
        owner.append(-1)
    for k, t in enumerate(terms.terms):
        pieces: list[list[tuple[np.ndarray, str, str]]] = []
        for v in t:
            val = values[v]
            lab = labels[v]
            inter = len(t) > 1
            if isinstance(val, Factor):
                nlev = len(val.levels)
                if nlev < 2 and codes[k][v] == 1:
                    raise DataError(f"the factor {lab} has a single level in the estimation sample; R: contrasts "
                                    "can be applied only to factors with 2 or more levels")
                if not val.order_sure:
                    raise DataError(unsure_order_message(lab))
                ind = np.zeros((n, nlev))
                ok = val.codes >= 0
                ind[np.flatnonzero(ok), val.codes[ok]] = 1.0
                if codes[k][v] == 2:
                    mat, cn = ind, list(val.levels)
                    stata_lv: list[str | None] = list(val.levels)
                else:
                    contrast = (contrasts or {}).get(lab) or val.contrasts or (
                        Contrast("poly") if val.ordered else None)
                    if contrast is None:
                        mat, cn = ind[:, 1:], list(val.levels[1:])
                    else:
                        cm, names_ = contrast.coding(val.levels)
                        mat, cn = ind @ cm, list(names_)
                    stata_lv = [f"{c}" for c in cn]
                    if contrast is not None and contrast.kind not in ("poly",) and not (
                            contrast.kind in ("treatment", "SAS") and not contrast.by_number):
                        # A column that is no level's indicator (sum, helmert, a matrix, numbered
                        # treatment columns): in Stata's vocabulary a variable named as R names it.
                        pieces.append([(mat[:, j], f"{lab}{c}", _stata_piece(f"{lab}{c}", None, inter))
                                       for j, c in enumerate(cn)])
                        continue
                pieces.append([(mat[:, j], f"{lab}{c}", _stata_piece(lab, s, inter))
                               for j, (c, s) in enumerate(zip(cn, stata_lv))])
            else:
                m = val.values
                if m.shape[1] == 1 and val.colnames is None:
                    pieces.append([(m[:, 0], lab, _stata_piece(lab, None, inter))])
                else:
                    cn = val.colnames or tuple(str(i) for i in range(1, m.shape[1] + 1))
                    pieces.append([(m[:, j], f"{lab}{c}", _stata_piece(f"{lab}{c}", None, inter))
                                   for j, c in enumerate(cn)])
        # The first variable varies fastest.
        for combo in product(*reversed(pieces)):
            combo = combo[::-1]
            col = np.ones(n)
            for c, _, _ in combo:
                col = col * c
            cols.append(col)
            names.append(":".join(p[1] for p in combo))
            stata.append("#".join(p[2] for p in combo))
            owner.append(k)
    X = np.column_stack(cols) if cols else np.empty((n, 0))
    return ModelMatrix(X, tuple(names), tuple(stata), tuple(owner))
