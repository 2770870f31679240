"""Render a :class:`~hlmbridge.spec.model.ModelSpec` for lme4, statsmodels and Stata.

Each renderer gives exactly the model the spec describes, or raises
:class:`~hlmbridge.errors.UnsupportedSpecError` naming the construct and the engine —
never a silently different model.

=========================  ============================  ===================================
spec                       lme4                          statsmodels MixedLM
=========================  ============================  ===================================
unstructured (top level)   ``(1 + ses | id)``            ``re_formula="1 + ses"``
independent (top level)    ``(1 | id) + (0 + ses | id)``  ``re_formula="1"``, vc ``{"ses": "0 + ses"}``
identity, one term         ``(1 | id)``                  ``re_formula="1"``
nested level ``class``     ``(1 | school:class)``        vc ``{"class": "0 + C(class)"}``
crossed ``(1|a) + (1|b)``  ``(1 | a) + (1 | b)``         groups ``_all`` (a constant column the
                                                         caller adds), vc per level
identity, several terms    not expressible               not expressible
exchangeable               not expressible               not expressible
=========================  ============================  ===================================

Examples
--------
>>> from hlmbridge.spec.parse_stata import parse_stata
>>> spec = parse_stata("mixed mathach c.ses##i.sector || id: ses, cov(unstr)")
>>> to_lme4(spec).formula
'mathach ~ 1 + ses + sector + ses:sector + (1 + ses | id)'
>>> to_statsmodels(spec).formula
'mathach ~ 1 + ses + C(sector) + ses:C(sector)'
>>> to_stata(spec)
'mixed mathach ses i.sector c.ses#i.sector || id: ses, cov(unstructured)'
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from typing import Any
from dataclasses import dataclass, field
from types import MappingProxyType

from hlmbridge.errors import SpecError, UnsupportedSpecError
from hlmbridge.spec.model import ModelSpec, RandomLevel
from hlmbridge.spec.parse_lme4 import R_RESERVED
from hlmbridge.spec.parse_stata import STATA_RESERVED

__all__ = [
    "ALL_GROUP",
    "Lme4Model",
    "StatsmodelsModel",
    "level_paths",
    "to_lme4",
    "to_stata",
    "to_statsmodels",
]

#: Column name of the one all-encompassing group statsmodels uses for crossed designs.
ALL_GROUP = "_all"

_R_SYNTACTIC = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*")
_STATA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


def level_paths(spec: ModelSpec) -> tuple[tuple[str, ...], ...]:
    """The grouping path of every level: nested levels extend the previous level's path.

    Examples
    --------
    >>> from hlmbridge.spec.model import ModelSpec, RandomLevel
    >>> spec = ModelSpec("y", levels=(RandomLevel("school"), RandomLevel("class"),
    ...                               RandomLevel("rater", nested=False)))
    >>> level_paths(spec)
    (('school',), ('school', 'class'), ('rater',))
    """
    paths: list[tuple[str, ...]] = []
    for i, lv in enumerate(spec.levels):
        paths.append(paths[-1] + (lv.group,) if i > 0 and lv.nested else (lv.group,))
    return tuple(paths)


def _default_cov(lv: RandomLevel) -> str:
    return "identity" if lv.n_terms == 1 else "independent"


# ----------------------------------------------------------------------------- lme4


def _r_name(name: str) -> str:
    if _R_SYNTACTIC.fullmatch(name) and name not in R_RESERVED:
        return name
    return f"`{name}`"


def _r_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Lme4Model:
    """An lme4 model: formula, factor columns and method.

    ``formula`` writes every fixed term explicitly in the spec's order (R itself orders
    model-matrix columns by degree: main effects, then interactions). Factor variables
    appear by their plain column name; ``factors`` lists ``(column, base level)`` (``None``
    = lowest) and the lme4 adapter converts those columns to R factors with the base
    level first, so lme4 labels the columns ``sector1``, ``ses:sector1``.

    Examples
    --------
    >>> from hlmbridge.spec.parse_stata import parse_stata
    >>> m = to_lme4(parse_stata("mixed y c.x##ib2.s || g:, reml"))
    >>> m.formula, m.factors, m.reml
    ('y ~ 1 + x + s + x:s + (1 | g)', (('s', 2),), True)
    >>> print(m.r_code())
    data$s <- relevel(factor(data$s), ref = "2")
    fit <- lme4::lmer(y ~ 1 + x + s + x:s + (1 | g), data = data, REML = TRUE)
    >>> m.explicit_formula
    'y ~ 1 + x + relevel(factor(s), ref = "2") + x:relevel(factor(s), ref = "2") + (1 | g)'
    """

    formula: str
    factors: tuple[tuple[str, int | str | None], ...]
    reml: bool
    explicit_formula: str = field(default="", compare=False)
    #: A GLMM's family (``"gaussian"``: lmer) and glmer's ``nAGQ``.
    family: str = "gaussian"
    nagq: int | None = None

    def r_code(self, data: str = "data") -> str:
        """Runnable R: factor conversions, then ``lme4::lmer(...)`` assigned to ``fit``."""
        lines = []
        for name, base in self.factors:
            col = f"{data}${name}" if _r_name(name) == name else f"{data}[[{_r_string(name)}]]"
            if base is None:
                lines.append(f"{col} <- factor({col})")
            else:
                lines.append(f"{col} <- relevel(factor({col}), ref = {_r_base_ref(f'factor({col})', base)})")
        if self.family == "negative_binomial":
            if self.nagq is not None and self.nagq > 1:
                lines.append("# glmer.nb's search on theta with nAGQ > 1 leaves out the saturated log likelihood, which "
                             "depends on theta: hlmbridge polishes (theta, beta, log alpha) jointly")
            lines.append(f"fit <- lme4::glmer.nb({self.formula}, data = {data}, nAGQ = {self.nagq})")
        elif self.family != "gaussian":
            lines.append(f"fit <- lme4::glmer({self.formula}, data = {data}, family = {self.family}, "
                         f"nAGQ = {self.nagq})")
        else:
            lines.append(f"fit <- lme4::lmer({self.formula}, data = {data}, REML = {'TRUE' if self.reml else 'FALSE'})")
        return "\n".join(lines)


def glmer_refusal(method: str, points: int) -> str:
    """The lme4 engine's sentence for a quadrature glmer cannot compute on this random part,
    naming the engine that computes it (hlmbridge's own, on one grouping level)."""
    if method == "ghermite":
        return ("The lme4 engine cannot fit intmethod(ghermite): glmer has no non-adaptive Gauss-Hermite quadrature, "
                "and its adaptive quadrature or Laplace would be a different estimate (engine='quadrature' fits it "
                "on one grouping level).")
    return (f"The lme4 engine cannot fit {method} quadrature with {points} points on this random part: glmer's "
            "nAGQ > 1 needs a single scalar random effect, and Laplace would be a different estimate (engine="
            "'quadrature' fits it on one grouping level; or ask for intmethod(laplace) / nagq=1 to fit Laplace's "
            "approximation).")


def _cbind_needs_binomial(spec: ModelSpec, engine: str) -> None:
    """A ``cbind(successes, failures)`` response is glmer's binomial response only (lmer refuses a
    two-column response); anything else is refused rather than fitted as another model."""
    response = spec.formula.response if spec.formula is not None else None
    if response is not None and response.kind == "call" and response.value == "cbind" and spec.family != "binomial":
        raise UnsupportedSpecError(f"the response {response.deparse()}", engine, message=(
            f"the response {response.deparse()} is a binomial response (successes, failures): give "
            "family='binomial'."))


def _r_family(spec: ModelSpec) -> str:
    """R's family object for a GLMM spec: ``binomial``, ``binomial(link = "probit")``, ``poisson``."""
    if spec.family == "negative_binomial":  # lme4::glmer.nb (its family's theta is estimated)
        return spec.family
    canonical = {"binomial": "logit", "poisson": "log"}[spec.family]
    return spec.family if spec.link == canonical else f'{spec.family}(link = "{spec.link}")'


def _glmer_nagq(spec: ModelSpec) -> int:
    """glmer's nAGQ for a GLMM spec (the lme4 engine checks the design again)."""
    method, points = spec.intmethod or "laplace", spec.intpoints or 1
    if method == "ghermite":
        raise UnsupportedSpecError("intmethod(ghermite)", "lme4", message=glmer_refusal(method, points))
    if method == "laplace":
        return 1
    if spec.formula is not None:
        bars = spec.formula.random
        scalar = len(bars) == 1 and int(bars[0].lhs.intercept) + len(bars[0].lhs.labels) == 1
    else:
        scalar = len(spec.levels) == 1 and spec.levels[0].n_terms == 1
    if not scalar:
        raise UnsupportedSpecError(f"{method} quadrature", "lme4", message=glmer_refusal(method, points))
    return points


def _factor_coding(spec: ModelSpec, engine: str) -> dict[str, int | None]:
    coding: dict[str, tuple[bool, int | None]] = {}
    for t in spec.fixed:
        for v in t.vars:
            if v.name in coding and coding[v.name] != (v.factor, v.base):
                raise UnsupportedSpecError(
                    f"variable {v.name!r} coded two ways in the fixed part",
                    engine,
                    "the lme4 adapter converts whole columns to factors, so a column is either a "
                    "factor (with one base level) or a number throughout",
                )
            coding[v.name] = (v.factor, v.base)
    factors = {n: b for n, (f, b) in coding.items() if f}
    others = {spec.response} | {s for lv in spec.levels for s in lv.slopes}
    for name in factors:
        if name in others:
            raise UnsupportedSpecError(
                f"factor variable {name!r} also used as the response or a random slope",
                engine,
                "the lme4 adapter converts the whole column to a factor",
            )
    return factors


def _check_r_codes_like_stata(spec: ModelSpec) -> None:
    """Stata's i. always omits a base level; R codes a factor by one column per level where
    the term without it is not in the model (or there is no intercept). Such a spec has no
    lme4 formula with the same meaning."""
    from hlmbridge.design.model_matrix import term_codes
    from hlmbridge.spec.rformula import Expr, Terms

    names: list[str] = []
    for t in spec.fixed:
        for v in t.variables:
            if v not in names:
                names.append(v)
    is_factor = [any(v.factor for t in spec.fixed for v in t.vars if v.name == n) for n in names]
    terms = Terms(tuple(Expr("name", n) for n in names),
                  tuple(tuple(sorted(names.index(v) for v in t.variables))
                        for t in sorted(spec.fixed, key=lambda t: len(t.vars))), spec.constant)
    for t, row in zip(terms.terms, term_codes(terms, is_factor)):
        for i in t:
            if is_factor[i] and row[i] == 2:
                term = "#".join(names[j] for j in t)
                raise UnsupportedSpecError(
                    f"the factor {names[i]} in {term}", "lme4",
                    "R codes it with one column per level here (no lower-order term without it"
                    + ("" if spec.constant else ", or no constant") + "), where Stata omits a base level; "
                    "add the missing main effect or the constant")


def _lme4_random(spec: ModelSpec) -> list[str]:
    parts = []
    for lv, path in zip(spec.levels, level_paths(spec)):
        g = ":".join(_r_name(p) for p in path)
        slopes = [_r_name(s) for s in lv.slopes]
        if lv.n_terms == 1 or lv.cov == "unstructured":
            lhs = " + ".join((["1"] if lv.intercept else ["0"]) + slopes)
            parts.append(f"({lhs} | {g})")
        elif lv.cov == "independent":
            if lv.intercept:
                parts.append(f"(1 | {g})")
            parts.extend(f"(0 + {s} | {g})" for s in slopes)
        else:
            raise UnsupportedSpecError(
                f"covariance({lv.cov}) at level {lv.group!r}",
                "lme4",
                "lmer has no "
                + (
                    "equal-variances (identity) structure for several random terms"
                    if lv.cov == "identity"
                    else "exchangeable (one common variance and covariance) structure"
                )
                + "; use unstructured or independent, or engine='nlme' (nlme's "
                + ("pdIdent" if lv.cov == "identity" else "pdCompSymm") + ")",
            )
    return parts


def to_lme4(spec: ModelSpec) -> Lme4Model:
    """Render the spec as an lme4 formula.

    Raises
    ------
    UnsupportedSpecError
        For identity with several terms, exchangeable, or a column coded as a factor in
        one term and as a number in another.

    Examples
    --------
    >>> from hlmbridge.spec.parse_stata import parse_stata
    >>> to_lme4(parse_stata("mixed y x || school: || class:")).formula
    'y ~ 1 + x + (1 | school) + (1 | school:class)'
    >>> to_lme4(parse_stata("mixed y x || id: x, nocons")).formula
    'y ~ 1 + x + (0 + x | id)'
    """
    _cbind_needs_binomial(spec, "lme4")
    if spec.residuals is not None:
        raise UnsupportedSpecError(spec.residuals.stata(), "lme4", message=(
            f"lme4 cannot fit {spec.residuals.stata()}: lmer's residuals are independent with one variance; "
            "use engine='nlme' (nlme's lme fits this structure)"))
    glmm = {"family": _r_family(spec), "nagq": _glmer_nagq(spec)} if spec.is_glmm else {}
    if spec.formula is not None:
        text = spec.formula.r_formula()
        return Lme4Model(formula=text, factors=(), reml=spec.reml, explicit_formula=text, **glmm)
    factors = _factor_coding(spec, "lme4")
    _check_r_codes_like_stata(spec)
    random = _lme4_random(spec)
    plain = ["1" if spec.constant else "0"]
    explicit = list(plain)
    for t in spec.fixed:
        plain.append(_powered(t, lambda v: _r_name(v.name), lambda v, k: f"I({_r_name(v.name)}^{k})"))
        exp = []
        for v in _distinct(t):
            if not v.factor:
                k = t.variables.count(v.name)
                exp.append(_r_name(v.name) if k == 1 else f"I({_r_name(v.name)}^{k})")
            elif v.base is None:
                exp.append(f"factor({_r_name(v.name)})")
            elif isinstance(v.base, str):  # ib(last|freq|#k): the base the data picks
                f = f"factor({_r_name(v.name)})"
                exp.append(f"relevel({f}, ref = {_r_base_ref(f, v.base)})")
            else:
                exp.append(f"relevel(factor({_r_name(v.name)}), ref = {_r_string(str(v.base))})")
        explicit.append(":".join(exp))
    resp = _r_name(spec.response)
    if spec.trials is not None:  # Stata's binomial(varname|#): glmer's cbind(successes, failures)
        n = spec.trials if isinstance(spec.trials, int) else _r_name(spec.trials)
        resp = f"cbind({resp}, {n} - {resp})"
    if spec.offset is not None:
        random = random + [f"offset({_r_name(spec.offset)})"]
    elif spec.exposure is not None:
        random = random + [f"offset(log({_r_name(spec.exposure)}))"]
    return Lme4Model(
        formula=f"{resp} ~ {' + '.join(plain + random)}",
        factors=tuple(factors.items()),
        reml=spec.reml,
        explicit_formula=f"{resp} ~ {' + '.join(explicit + random)}",
        **glmm,
    )


# ----------------------------------------------------------------------- statsmodels


def _py_name(name: str) -> str:
    if name.isidentifier() and not keyword.iskeyword(name) and name.isascii():
        return name
    return f"Q({name!r})"


def _patsy_var(name: str, factor: bool, base: int | str | None) -> str:
    if not factor:
        return _py_name(name)
    if base is None:
        return f"C({_py_name(name)})"
    if isinstance(base, str):  # ib(last|freq|#k): the base the data picks (patsy evaluates it on the column)
        col = _py_name(name)
        ref = {"last": f"sorted(set({col}))[-1]", "freq": f"{col}.value_counts().sort_index().idxmax()"}.get(
            base, f"sorted(set({col}))[{base[1:]} - 1]")
        return f"C({col}, Treatment({ref}))"
    return f"C({_py_name(name)}, Treatment({base}))"


@dataclass(frozen=True)
class StatsmodelsModel:
    """Arguments for ``statsmodels`` ``MixedLM.from_formula(formula, data, groups=...,
    re_formula=..., vc_formula=...)`` and ``.fit(**fit_kwargs)``.

    ``vc_formula`` is a read-only mapping (pass ``dict(model.vc_formula)`` or ``None``
    when empty). When ``all_group`` is true (crossed designs), ``groups`` names a constant
    column (:data:`ALL_GROUP`) the caller must add to the data (``data.assign(_all=1)``):
    every level is then a variance component of that one group.

    Examples
    --------
    >>> from hlmbridge.spec.parse_stata import parse_stata
    >>> m = to_statsmodels(parse_stata("mixed y x || id: x"))
    >>> m.formula, m.groups, m.re_formula, dict(m.vc_formula), m.fit_kwargs["reml"]
    ('y ~ 1 + x', 'id', '1', {'x': '0 + x'}, False)
    """

    formula: str
    groups: str
    re_formula: str
    vc_formula: Mapping[str, str]
    fit_kwargs: Mapping[str, object]
    all_group: bool = False

    def python_code(self, data: str = "df") -> str:
        """Runnable Python that fits the model with statsmodels (result in ``result``)."""
        lines = ["import statsmodels.formula.api as smf"]
        if self.all_group:
            lines.append(f"{data} = {data}.assign({self.groups}=1)  # one group holding every row")
        vc = repr(dict(self.vc_formula)) if self.vc_formula else "None"
        lines.append(
            f"model = smf.mixedlm({self.formula!r}, {data}, groups={self.groups!r}, "
            f"re_formula={self.re_formula!r}, vc_formula={vc})"
        )
        kw = ", ".join(f"{k}={v!r}" for k, v in self.fit_kwargs.items())
        # Powell first: lbfgs alone can stop at a wrong optimum (see STATA_PARITY.md).
        lines.append(f"result = model.fit({kw}, method=['powell', 'lbfgs'])")
        return "\n".join(lines)


def _sm_unsupported(construct: str, detail: str) -> UnsupportedSpecError:
    return UnsupportedSpecError(construct, "statsmodels", detail)


def _vc_level(lv: RandomLevel, path: tuple[str, ...], where: str) -> dict[str, str]:
    """Variance components for one level whose groups are the cells of ``path``."""
    if lv.n_terms > 1 and lv.cov != "independent":
        raise _sm_unsupported(
            f"covariance({lv.cov}) at {where} level {lv.group!r}",
            "MixedLM variance components are independent with one variance each; correlated or "
            "equal-variance random terms exist only at the top grouping level (re_formula)",
        )
    cells = ":".join(f"C({_py_name(p)})" for p in path)
    out = {}
    if lv.intercept:
        out[lv.group] = f"0 + {cells}"
    for s in lv.slopes:
        out[f"{lv.group}:{s}"] = f"0 + {cells}:{_py_name(s)}"
    return out


def to_statsmodels(spec: ModelSpec) -> StatsmodelsModel:
    """Render ``MixedLM.from_formula`` arguments.

    The outermost level is ``groups``: an unstructured or single random-term top level
    goes into ``re_formula``; independent top-level slopes become one variance component
    each. Nested lower levels are variance components within the outer groups. A spec
    with crossed levels uses one all-encompassing group (:data:`ALL_GROUP`) with every
    level as variance components.

    Raises
    ------
    UnsupportedSpecError
        Correlated (unstructured) random terms below the top level or in a crossed design,
        identity with several terms (equal variances), exchangeable.

    Examples
    --------
    >>> from hlmbridge.spec.parse_stata import parse_stata
    >>> m = to_statsmodels(parse_stata("mixed y x || school: || room:, reml"))
    >>> m.groups, m.re_formula, dict(m.vc_formula), dict(m.fit_kwargs)
    ('school', '1', {'room': '0 + C(room)'}, {'reml': True})
    >>> m = to_statsmodels(parse_stata("mixed y || _all: R.a || b:"))
    >>> m.groups, m.re_formula, dict(m.vc_formula), m.all_group
    ('_all', '0', {'a': '0 + C(a)', 'b': '0 + C(b)'}, True)
    """
    _cbind_needs_binomial(spec, "statsmodels")
    if spec.is_glmm:
        raise UnsupportedSpecError(f"a {spec.family} GLMM", "statsmodels", message=(
            f"statsmodels cannot fit a {spec.family} GLMM: it has no maximum-likelihood GLMM (its "
            "BinomialBayesMixedGLM/PoissonBayesMixedGLM are Bayesian approximations)."))
    if spec.residuals is not None:
        raise UnsupportedSpecError(spec.residuals.stata(), "statsmodels", message=(
            f"statsmodels cannot fit {spec.residuals.stata()}: MixedLM's residuals are independent with one "
            "variance; use engine='nlme'"))
    if spec.formula is not None:
        spec = stata_like(spec, "statsmodels")
    fixed = ["1" if spec.constant else "0"]
    for t in spec.fixed:
        fixed.append(_powered(t, lambda v: _patsy_var(v.name, v.factor, v.base),
                              lambda v, k: f"I({_py_name(v.name)}**{k})"))
    formula = f"{_py_name(spec.response)} ~ {' + '.join(fixed)}"
    paths = level_paths(spec)
    crossed = any(not lv.nested for lv in spec.levels[1:])
    vc: dict[str, str] = {}

    def add(parts: dict[str, str]) -> None:
        for k, v in parts.items():
            if k in vc:
                raise _sm_unsupported(
                    f"two variance components named {k!r}",
                    "a random slope and a grouping variable share a name",
                )
            vc[k] = v

    for lv in spec.levels:
        if lv.cov == "exchangeable" or (lv.cov == "identity" and lv.n_terms > 1):
            raise _sm_unsupported(
                f"covariance({lv.cov}) at level {lv.group!r}",
                "MixedLM has no "
                + ("exchangeable" if lv.cov == "exchangeable" else "equal-variances (identity)")
                + " structure for several random terms",
            )
    if crossed:
        if ALL_GROUP in spec.variables:
            raise _sm_unsupported("a data column named '_all'", "the crossed-design group column needs that name")
        for lv, path in zip(spec.levels, paths):
            if lv.cov == "unstructured" and lv.n_terms > 1:
                raise _sm_unsupported(
                    f"covariance(unstructured) at crossed level {lv.group!r}",
                    "crossed levels are fitted as independent variance components of one group; "
                    "correlated random terms cannot be expressed",
                )
            add(_vc_level(lv, path, "crossed"))
        return StatsmodelsModel(
            formula=formula,
            groups=ALL_GROUP,
            re_formula="0",
            vc_formula=MappingProxyType(vc),
            fit_kwargs=MappingProxyType({"reml": spec.reml}),
            all_group=True,
        )
    top = spec.levels[0]
    slopes = [_py_name(s) for s in top.slopes]
    if top.n_terms == 1 or top.cov == "unstructured":
        re_formula = " + ".join((["1"] if top.intercept else ["0"]) + slopes)
    else:  # independent
        re_formula = "1" if top.intercept else "0"
        add({s: f"0 + {_py_name(s)}" for s in top.slopes})
    for lv, path in zip(spec.levels[1:], paths[1:]):
        add(_vc_level(lv, path[1:], "nested"))
    return StatsmodelsModel(
        formula=formula,
        groups=top.group,
        re_formula=re_formula,
        vc_formula=MappingProxyType(vc),
        fit_kwargs=MappingProxyType({"reml": spec.reml}),
        all_group=False,
    )


# ----------------------------------------------------------------------------- Stata


def stata_like(spec: ModelSpec, target: str) -> ModelSpec:
    """The Stata-style spec that means the same model as an lme4-formula spec, when there is one.

    That needs plain column names (taken as numeric) and ``factor(x)`` coded by treatment
    contrasts in every term, an intercept where factors appear, no transforms or offsets,
    and random terms of plain names grouped by a name or a nesting chain.

    Raises
    ------
    UnsupportedSpecError
        Naming what ``target`` cannot say.

    Examples
    --------
    >>> from hlmbridge.spec.parse_lme4 import parse_lme4
    >>> stata_like(parse_lme4("y ~ x * factor(s) + (x | g)"), "Stata").fixed[2].stata_name
    'c.x#i.s'
    """
    try:
        return _stata_like(spec, target)
    except UnsupportedSpecError:
        raise
    except SpecError as exc:  # a name Stata cannot hold, a spec with no fixed part ...
        raise UnsupportedSpecError("this model", target, str(exc)) from None


def _stata_like(spec: ModelSpec, target: str) -> ModelSpec:
    from hlmbridge.design.model_matrix import term_codes
    from hlmbridge.spec.model import Term, Var

    f = spec.formula
    assert f is not None

    def refuse(what: str, why: str) -> UnsupportedSpecError:
        return UnsupportedSpecError(what, target, why)

    if f.response.kind != "name":
        raise refuse(f"the response {f.response.deparse()}", "generate the transformed variable first")
    if f.fixed.offsets:
        raise refuse("offset()", f"{target} has no offset term here")
    variables: list[Var] = []
    for v in f.fixed.variables:
        if v.kind == "name":
            try:
                variables.append(Var(v.value))
            except SpecError as exc:
                raise refuse(f"the variable name {v.value!r}", str(exc)) from None
        elif v.kind == "call" and v.value in ("factor", "as.factor") and len(v.args) == 1 and v.args[0].kind == "name":
            variables.append(Var(v.args[0].value, factor=True))
        else:
            raise refuse(f"the formula term {v.deparse()}",
                         f"{target} cannot express it in the model; generate the variable first")
    is_factor = [var.factor for var in variables]
    codes = term_codes(f.fixed, is_factor)
    for t, row in zip(f.fixed.terms, codes):
        for i in t:
            if is_factor[i] and row[i] != 1:
                raise refuse(f"indicator coding of {f.fixed.variables[i].deparse()} in "
                             f"{':'.join(f.fixed.variables[j].deparse() for j in t)}",
                             f"R codes this factor by one column per level here; {target}'s i. notation "
                             "always omits a base level")
    fixed = tuple(Term(tuple(variables[i] for i in t)) for t in f.fixed.terms)
    by_label: dict[tuple[str, ...], list] = {}
    for bar in f.random:
        for v in bar.lhs.variables:
            if v.kind != "name":
                raise refuse(f"the random term {v.deparse()}", "random slopes must be plain numeric variables")
        if any(len(t) > 1 for t in bar.lhs.terms):
            raise refuse("an interaction as a random slope", "generate the product variable first")
        by_label.setdefault(bar.group, []).append(bar)
    levels: list[RandomLevel] = []
    done: list[tuple[str, ...]] = []
    for names in sorted(by_label, key=len):
        bars = by_label[names]
        terms: list[str] = []
        for b in bars:
            terms += (["(Intercept)"] if b.lhs.intercept else []) + [v.value for v in b.lhs.variables]
        if len(set(terms)) != len(terms):
            raise refuse(f"a random term repeated for {':'.join(names)}", "each random term once per level")
        if len(bars) == 1:
            cov = "unstructured" if len(terms) > 1 else "identity"
        elif all(len(b.lhs.terms) + int(b.lhs.intercept) == 1 for b in bars):
            cov = "independent"
        else:
            raise refuse(f"a block-diagonal covariance for {':'.join(names)}",
                         "Stata's covariance structures are identity, independent, exchangeable, unstructured")
        if len(names) == 1:
            group, nested = names[0], not done
        else:
            outer = [d for d in done if len(d) == len(names) - 1 and set(d) <= set(names)]
            if not outer or done[-1] != outer[0]:
                raise refuse(f"the grouping factor {bars[0].label}",
                             f"{target} nests a level right inside the level before it; write the "
                             "enclosing level's term next to it")
            group, nested = [n for n in names if n not in outer[0]][0], True
        levels.append(RandomLevel(group, slopes=tuple(t for t in terms if t != "(Intercept)"),
                                  intercept="(Intercept)" in terms, cov=cov,  # type: ignore[arg-type]
                                  nested=nested))
        done.append(names)
    if not f.fixed.intercept and any(is_factor):
        raise refuse("a model without intercept that has factors", f"{target} and R code such factors differently")
    try:
        out = ModelSpec(f.response.value, fixed, tuple(levels), f.fixed.intercept, spec.method,
                        residuals=spec.residuals)
        if spec.is_glmm:
            out = out.with_family(spec.family, spec.link, spec.intmethod, spec.intpoints)  # type: ignore[arg-type]
        return out
    except SpecError as exc:  # e.g. a name Stata cannot hold, or no fixed part at all
        raise refuse("this model", str(exc)) from None


def _stata_name(name: str) -> str:
    if not _STATA_NAME.fullmatch(name) or name in STATA_RESERVED:
        raise UnsupportedSpecError(
            f"variable name {name!r}",
            "Stata",
            "Stata names are letters, digits and '_' (at most 32, not starting with a digit) "
            "and not reserved words",
        )
    return name


def to_stata(spec: ModelSpec) -> str:
    """Render a Stata ``mixed`` command that :func:`~hlmbridge.spec.parse_stata.parse_stata`
    parses back to an equal spec.

    ``reml`` is printed when the method is REML; ``cov(...)`` only when it is not Stata's
    default. Crossed levels are written in Stata's form ``|| _all: R.a || b:``; that needs
    the levels before the last crossed one to be crossed random intercepts.

    Raises
    ------
    UnsupportedSpecError
        A name Stata cannot hold, or a crossed structure Stata's ``_all: R.`` form cannot
        write.

    Examples
    --------
    >>> from hlmbridge.spec.parse_lme4 import parse_lme4
    >>> to_stata(parse_lme4("y ~ x + (1 | a) + (1 | b)"))
    'mixed y x || _all: R.a || b:, reml'
    >>> to_stata(parse_lme4("y ~ 0 + x + (x || g)", reml=False))
    'mixed y x, noconstant || g: x'
    """
    if spec.formula is not None:
        spec = stata_like(spec, "Stata")
    for name in spec.variables:
        _stata_name(name)
    command = {("gaussian", "identity"): "mixed", ("binomial", "logit"): "melogit", ("binomial", "probit"): "meprobit",
               ("binomial", "cloglog"): "mecloglog", ("poisson", "log"): "mepoisson",
               ("negative_binomial", "log"): "menbreg"}[(spec.family, spec.link or "")]
    head = [command, spec.response] + [t.stata_name for t in spec.fixed]
    out = " ".join(head)
    fe_options = [] if spec.constant else ["noconstant"]
    if spec.offset is not None:
        fe_options.append(f"offset({spec.offset})")
    if spec.exposure is not None:
        fe_options.append(f"exposure({spec.exposure})")
    if fe_options:
        out += ", " + " ".join(fe_options)
    crossed_at = [i for i, lv in enumerate(spec.levels) if i > 0 and not lv.nested]
    k = crossed_at[-1] if crossed_at else 0
    for i in range(k):
        lv = spec.levels[i]
        if lv.slopes or not lv.intercept or (i > 0 and lv.nested):
            raise UnsupportedSpecError(
                f"crossed structure around level {lv.group!r}",
                "Stata",
                "Stata writes crossed effects as '|| _all: R.a || b:', which needs every level "
                "before the last crossed one to be a crossed random intercept",
            )
    equations = []
    for i, lv in enumerate(spec.levels):
        if i < k:
            equations.append([f"_all: R.{lv.group}", []])
            continue
        body = f"{lv.group}:" + "".join(f" {s}" for s in lv.slopes)
        opts = []
        if not lv.intercept:
            opts.append("noconstant")
        if lv.cov != _default_cov(lv):
            opts.append(f"cov({lv.cov})")
        equations.append([body, opts])
    if spec.reml:
        equations[-1][1].append("reml")
    if spec.is_glmm:
        if spec.intmethod != "mvaghermite":
            equations[-1][1].append(f"intmethod({spec.intmethod})")
        if spec.intmethod != "laplace" and spec.intpoints != 7:
            equations[-1][1].append(f"intpoints({spec.intpoints})")
        if spec.trials is not None:
            equations[-1][1].append(f"binomial({spec.trials})")
        if spec.eform:
            equations[-1][1].append(spec.eform)
    df_option = _stata_df_option(spec)
    if df_option:
        equations[-1][1].append(df_option)
    if spec.residuals is not None:
        equations[-1][1].append(spec.residuals.stata())
    for body, opts in equations:
        out += f" || {body}"
        if opts:
            out += ", " + " ".join(opts)
    return out


#: hlmbridge's df method -> Stata's ``dfmethod()`` option.
_STATA_DF_OPTIONS = {
    "residual": "dfmethod(residual)",
    "kenward-roger": "dfmethod(kroger)",
    "satterthwaite (expected information)": "dfmethod(satterthwaite)",
    "satterthwaite": "dfmethod(satterthwaite, oim)",
}


def _stata_df_option(spec: ModelSpec) -> str | None:
    """The ``dfmethod()`` of the Stata command ``spec`` was read from (kept when it is written back).

    Examples
    --------
    >>> from hlmbridge.spec.parse_stata import parse_stata
    >>> to_stata(parse_stata("mixed y x || id:, reml dfmethod(kroger)"))
    'mixed y x || id:, reml dfmethod(kroger)'
    """
    source = spec._source
    if not source or "~" in source or "dfm" not in source:
        return None
    from hlmbridge.spec.parse_stata import parse_stata_df_method

    method = parse_stata_df_method(source, reml=True)
    if not method or (method != "residual" and not spec.reml):  # Satterthwaite and Kenward-Roger need REML
        return None
    return _STATA_DF_OPTIONS[method]


def _distinct(term: Any) -> list[Any]:
    """A term's variables, each once (a repeated continuous variable is a power: ``c.x#c.x``)."""
    seen: dict[str, Any] = {}
    for v in term.vars:
        seen.setdefault(v.name, v)
    return list(seen.values())


def _powered(term: Any, piece: Any, power: Any) -> str:
    """A term joined with ``:``, a continuous variable written k times as its k-th power.

    Examples
    --------
    >>> from hlmbridge.spec.parse_stata import parse_stata
    >>> to_lme4(parse_stata("mixed y c.x##c.x || g:")).formula
    'y ~ 1 + x + I(x^2) + (1 | g)'
    """
    return ":".join(piece(v) if term.variables.count(v.name) == 1 else power(v, term.variables.count(v.name))
                    for v in _distinct(term))


def _r_base_ref(factor: str, base: int | str) -> str:
    """R for a factor's base level: a value, or Stata's ``ib(last)``/``ib(freq)``/``ib(#k)`` rule
    evaluated on the data (the most frequent level: the first, i.e. lowest, of equally frequent ones).

    Examples
    --------
    >>> _r_base_ref("factor(s)", 2), _r_base_ref("factor(s)", "last"), _r_base_ref("factor(s)", "#3")
    ('"2"', 'tail(levels(factor(s)), 1)', 'levels(factor(s))[3]')
    """
    if not isinstance(base, str):
        return _r_string(str(base))
    return {"last": f"tail(levels({factor}), 1)", "freq": f"names(which.max(table({factor})))"}.get(
        base, f"levels({factor})[{base[1:]}]")
