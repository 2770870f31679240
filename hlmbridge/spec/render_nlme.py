"""Render a :class:`~hlmbridge.spec.model.ModelSpec` as an ``nlme::lme()`` call.

=============================== ==============================================
spec                            nlme
=============================== ==============================================
``cov(identity)``               ``pdIdent(~ 1 + x)``
``cov(exchangeable)``           ``pdCompSymm(~ 1 + x)``
``cov(independent)``            ``pdDiag(~ 1 + x)``
``cov(unstructured)``           ``pdSymm(~ 1 + x)``
several terms of one factor     ``pdDiag`` / ``pdBlocked(list(...))`` (lme4 formulas)
nested levels                   ``random = list(school = ..., class = ...)``
crossed levels                  refused (the lme4 engine fits them)
residual structures             :mod:`hlmbridge.spec.residuals`
=============================== ==============================================

Examples
--------
>>> from hlmbridge.spec.parse_stata import parse_stata
>>> m = to_nlme(parse_stata("mixed y x || id: x, cov(exch) residuals(ar 1, t(time))"))
>>> print(m.r_code())
fit <- nlme::lme(fixed = y ~ 1 + x, random = list(id = nlme::pdCompSymm(~ 1 + x)), correlation = nlme::corAR1(form = ~ time | id), method = "ML", data = data)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hlmbridge.errors import UnsupportedSpecError
from hlmbridge.spec.model import ModelSpec, RandomLevel
from hlmbridge.spec.render import _r_name, _r_string, to_lme4

__all__ = ["NlmeModel", "to_nlme"]

_PD = {"identity": "pdIdent", "exchangeable": "pdCompSymm", "independent": "pdDiag", "unstructured": "pdSymm"}


@dataclass(frozen=True)
class NlmeModel:
    """The pieces of one ``nlme::lme()`` call, each as R code (``None``: argument left out).

    ``factors`` are Stata factor variables with their base level (as :class:`Lme4Model`'s);
    ``tpos`` names the time variable that ``corSymm`` needs as positions 1, 2, ... .
    """

    fixed: str
    random: str
    correlation: str | None
    weights: str | None
    reml: bool
    factors: tuple[tuple[str, int | str | None], ...] = ()

    def r_code(self, data: str = "data") -> str:
        """Runnable R: factor conversions, then ``nlme::lme(...)`` assigned to ``fit``."""
        lines = []
        for name, base in self.factors:
            col = f"{data}${name}" if _r_name(name) == name else f"{data}[[{_r_string(name)}]]"
            lines.append(f"{col} <- factor({col})" if base is None else
                         f"{col} <- relevel(factor({col}), ref = {_r_string(str(base))})")
        args = [f"fixed = {self.fixed}", f"random = {self.random}"]
        if self.correlation:
            args.append(f"correlation = {self.correlation}")
        if self.weights:
            args.append(f"weights = {self.weights}")
        args.append(f'method = "{"REML" if self.reml else "ML"}"')
        args.append(f"data = {data}")
        lines.append(f"fit <- nlme::lme({', '.join(args)})")
        return "\n".join(lines)


def _pd(lv: RandomLevel) -> str:
    terms = (["1"] if lv.intercept else ["0"]) + [_r_name(s) for s in lv.slopes]
    return f"nlme::{_PD[lv.cov or 'identity']}(~ {' + '.join(terms)})"


def _stata_levels(spec: ModelSpec) -> list[tuple[str, str]]:
    """(nlme's level name, pd class) of a Stata-style spec, outermost first."""
    for i, lv in enumerate(spec.levels):
        if i > 0 and not lv.nested:
            raise _crossed(lv.group, spec.levels[i - 1].group)
    return [(lv.group, _pd(lv)) for lv in spec.levels]


def _crossed(inner: str, outer: str) -> UnsupportedSpecError:
    return UnsupportedSpecError("crossed random effects", "nlme", message=(
        f"nlme cannot fit crossed random effects ({inner} is not nested in {outer}) efficiently: nlme's lme nests "
        "every grouping level in the one before it; use engine='lme4'"))


def _formula_levels(spec: ModelSpec) -> list[tuple[str, str]]:
    """(nlme's level name, pd class) of an lme4 formula's random part, outermost first: one
    term per factor is ``pdSymm`` (``pdIdent`` for one column), several one-column terms
    ``pdDiag``, other several terms ``pdBlocked``; ``(1 | a/b)`` nests ``b`` in ``a``."""
    assert spec.formula is not None
    by_group: dict[frozenset[str], list] = {}
    for bar in spec.formula.random:
        for v in bar.lhs.variables:
            if v.kind != "name":
                raise UnsupportedSpecError(f"the random term {v.deparse()}", "nlme", message=(
                    f"the nlme engine takes random slopes on plain variables, not {v.deparse()}: generate the "
                    "column first"))
        if any(len(t) > 1 for t in bar.lhs.terms):
            raise UnsupportedSpecError("an interaction as a random slope", "nlme", message=(
                "the nlme engine takes no interaction as a random slope: generate the product column first"))
        by_group.setdefault(frozenset(bar.group), []).append(bar)
    out: list[tuple[str, str]] = []
    previous: frozenset[str] = frozenset()
    for names in sorted(by_group, key=len):
        new = names - previous
        if not previous <= names or len(new) != 1:
            raise _crossed(":".join(sorted(names)), ":".join(sorted(previous)) or "nothing")
        name = next(iter(new))
        pieces = []
        for bar in by_group[names]:
            terms = (["1"] if bar.lhs.intercept else ["0"]) + [_r_name(v.value) for v in bar.lhs.variables]
            n = len(terms) - 1 + int(bar.lhs.intercept)
            pieces.append((terms, n))
        if len(pieces) == 1:
            terms, n = pieces[0]
            pd = f"nlme::{'pdSymm' if n > 1 else 'pdIdent'}(~ {' + '.join(terms)})"
        elif all(n == 1 for _, n in pieces):
            cols = [t for terms, _ in pieces for t in terms if t not in ("0", "1")]
            head = "1" if any("1" in terms for terms, _ in pieces) else "0"
            pd = f"nlme::pdDiag(~ {' + '.join([head] + cols)})"
        else:
            blocks = [f"nlme::{'pdSymm' if n > 1 else 'pdIdent'}(~ {' + '.join(terms)})" for terms, n in pieces]
            pd = f"nlme::pdBlocked(list({', '.join(blocks)}))"
        out.append((name, pd))
        previous = names
    return out


def to_nlme(spec: ModelSpec) -> NlmeModel:
    """Render the spec as an ``nlme::lme()`` call.

    Raises
    ------
    UnsupportedSpecError
        Crossed levels (nlme nests every level in the one before it), a GLMM, a residual
        structure nlme has no class for (banded, Toeplitz, by() with correlation).

    Examples
    --------
    >>> from hlmbridge.spec.parse_stata import parse_stata
    >>> m = to_nlme(parse_stata("mixed y x || school: || class: x, residuals(ind, by(sex)) reml"))
    >>> m.random, m.weights
    ('list(school = nlme::pdIdent(~ 1), class = nlme::pdDiag(~ 1 + x))', 'nlme::varIdent(form = ~ 1 | sex)')
    >>> to_nlme(parse_stata("mixed y || _all: R.a || b:"))
    Traceback (most recent call last):
    ...
    hlmbridge.errors.UnsupportedSpecError: nlme cannot fit crossed random effects (b is not nested in a) efficiently: nlme's lme nests every grouping level in the one before it; use engine='lme4'
    """
    if spec.is_glmm:
        raise UnsupportedSpecError(f"a {spec.family} GLMM", "nlme", message=(
            f"nlme's lme fits linear mixed models only; fit the {spec.family} GLMM with engine='lme4'"))
    res = spec.residuals
    if res is not None:
        res.check_fittable("nlme")
    levels = _formula_levels(spec) if spec.formula is not None else _stata_levels(spec)
    if spec.formula is not None:
        fixed = f"{spec.formula.response.deparse()} ~ {' + '.join(spec.formula.fixed.rhs())}"
        factors: tuple[tuple[str, int | str | None], ...] = ()
    else:
        plain = replace(spec, residuals=None,
                        levels=tuple(replace(lv, cov="unstructured") for lv in spec.levels))
        lme4 = to_lme4(plain)
        fixed = lme4.formula.split(" + (")[0]
        factors = lme4.factors
    random = "list(" + ", ".join(f"{_r_name(name)} = {pd}" for name, pd in levels) + ")"
    inner = "/".join(_r_name(name) for name, _ in levels)  # every level nests in the one before it
    correlation = weights = None
    if res is not None:
        if res.group is not None and res.group != levels[-1][0]:
            raise UnsupportedSpecError(res.stata(), "nlme", message=(
                f"the residual structure is within {res.group!r}, but the innermost grouping level is "
                f"{levels[-1][0]!r}: Stata and nlme correlate the errors within the innermost groups"))
        t = _r_name(res.t) if res.t is not None else None
        if res.kind == "ar":
            correlation = (f"nlme::corAR1(form = ~ {t} | {inner})" if res.order == 1 else
                           f"nlme::corARMA(form = ~ {t} | {inner}, p = {res.order}, q = 0)")
        elif res.kind == "ma":
            correlation = f"nlme::corARMA(form = ~ {t} | {inner}, p = 0, q = {res.order})"
        elif res.kind == "exponential":
            correlation = f"nlme::corCAR1(form = ~ {t} | {inner})"
        elif res.kind == "exchangeable":
            correlation = f"nlme::corCompSymm(form = ~ 1 | {inner})"
        elif res.kind == "unstructured":
            correlation = f"nlme::corSymm(form = ~ as.integer(factor({t})) | {inner})"
            weights = f"nlme::varIdent(form = ~ 1 | factor({t}))"
        if res.by is not None:
            weights = f"nlme::varIdent(form = ~ 1 | {_r_name(res.by)})"
    return NlmeModel(fixed=fixed, random=random, correlation=correlation, weights=weights, reml=spec.reml,
                     factors=factors)
