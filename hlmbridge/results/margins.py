"""Stata's ``margins`` after ``mixed`` and the me commands: predictive margins and average marginal effects.

The prediction is Stata's default after ``mixed``, the linear prediction of the fixed part
(``xb``). Every margin is a linear combination ``L beta`` of the fixed effects, so its SE is the
delta method's ``sqrt(L V L')`` (``V``: the fit's covariance of the fixed effects), with z
statistics and normal CIs, as Stata prints them.

- ``margins(res)``: the mean prediction over the estimation sample.
- ``margins(res, "f")`` (Stata ``margins f``): for each level of the factor ``f``, the mean
  prediction with every row's ``f`` set to that level (a predictive margin); ``"f#g"`` for
  the cells of two factors; a list for several (``margins f g``).
- ``at={"x": [1, 2, 3]}`` (``margins, at(x=(1 2 3))``): each value (the combinations of several
  variables' values) set for every row; a factor may be set to a level.
- ``over="g"`` (``margins f, over(g)``): the same within each group of the factor ``g`` (the
  group's rows only).
- ``dydx="x"`` (``margins, dydx(x)``): the average marginal effect: for a covariate the mean
  derivative of the prediction (a central difference on the design, exact for a prediction
  linear in ``x`` and to about 1e-10 otherwise); for a factor the discrete change of the
  predictive margin from the base level (Stata's base; lme4's first level).
- ``atmeans=True`` (``margins f, atmeans``): the other covariates at their sample means, and
  each other factor's indicators at their means (its levels weighted by their sample
  proportions, the products for interactions), instead of averaging over the rows.

Which emmeans call gives the same numbers (checked in ``tests/test_margins_r.py``, with
emmeans' ``lmer.df = "asymptotic"``, the z of Stata's ``margins``):

======================================  =========================================================
Stata                                   emmeans
======================================  =========================================================
``margins f``                           ``emmeans(fit, ~ f, counterfactuals = "f")``
``margins, dydx(f)`` (a factor)         ``contrast(emmeans(fit, ~ f, counterfactuals = "f"),
                                        "trt.vs.ctrl")``
``margins f, atmeans``                  ``emmeans(fit, ~ f, weights = "outer")``
``margins, dydx(x)`` (x in a model      ``emtrends(fit, ~ 1, var = "x", weights = "proportional")``
linear in x, interacting with factors)
======================================  =========================================================

**After a GLMM** (``melogit``, ``meprobit``, ``mecloglog``, ``mepoisson``; glmer) the margins
average a prediction on the response scale, chosen by ``predict=``:

- ``"mu"`` (the default; Stata's ``predict(mu marginal)``, "Marginal predicted mean"): each
  row's mean with the random effects integrated out, ``E linkinv(x'b + u)``, ``u`` normal with
  the random intercepts' summed variance, by Gauss-Hermite quadrature with the fit's
  integration points (``points=`` to change them; a Laplace fit must name them), as
  :func:`hlmbridge.results.population_averaged.marginal_predict`. Since Stata 14 ``margins``
  and ``predict`` after the me commands integrate over the random effects
  (https://www.stata.com/stata14/marginal-margins: "margins and Stata's predict now integrate
  over the unobserved effects"); before, ``margins`` after ``xtmelogit``/``meglm`` was asked
  for ``predict(mu fixedonly)``. hlmbridge holds no Stata log of ``margins`` after ``melogit``
  to check the numbers against; they are checked against R's ``integrate()``.
  Random intercepts only (random slopes: an error; use ``"mu_fixedonly"``).
- ``"mu_fixedonly"`` (``predict(mu conditional(fixedonly))``, Stata 14's ``mu fixedonly``): the
  mean at random effects 0, ``linkinv(x'b)``; equal to emmeans on the response scale with
  ``counterfactuals`` (``tests/test_margins_glmm.py``).
- ``"xb"`` (or ``"eta"``): the fixed part's linear prediction, as after ``mixed``.

``dydx`` of a covariate is the average derivative of the mean (``E mu_eta(x'b + u)`` times the
row's ``d x'b / dx``); of a factor the discrete change of the predictive margins. The SEs are
the delta method's with the Jacobian of the margins in (beta, variance parameters), by central
differences. Stata's ``margins`` differentiates with respect to all of ``e(b)`` and uses the full
``e(V)``, cross-covariances of beta and the variances included; hlmbridge's result carries only
the two blocks (``fixed_vcov``, ``random_vcov``) and their cross-covariance
(``fixed_random_vcov``, from the engine's full observed information), and uses all three; a
result without the cross block (one read from an older JSON file) leaves the cross terms out and
a note says so (measured on the hospital fit: the overall margin's SE 0.01744 without them,
0.01448 with them). ``vcov=`` replaces the whole matrix. ``"mu_fixedonly"``
and ``"xb"`` depend on beta only: their SEs are Stata's. ``atmeans`` sets the fixed-effect row
to the means (factors' indicators at their proportions) before the link, as Stata does.

Not supported (an error naming them): fits with weights, an offset or dropped columns, other
``predict()`` statistics, ``vce(unconditional)``.

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.hsb()
>>> res = hlmbridge.fit("mixed mathach i.sector##c.ses || id:", df, engine="statsmodels")
>>> m = margins(res, "sector")
>>> m.table[["sector", "margin", "std_error"]].round(3).values.tolist()
[[0.0, 11.799, 0.227], [1.0, 13.936, 0.252]]
>>> margins(res, dydx="ses").table[["term", "dydx"]].round(3).values.tolist()
[['ses', 2.306]]
>>> PREDICTIONS   # a GLMM's default is "mu", e.g. margins(glmm, "f", predict="mu_fixedonly")
('mu', 'mu_fixedonly', 'xb')
>>> EXPRESSIONS["mu"]
'Marginal predicted mean, predict(mu marginal)'
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hlmbridge.errors import UnsupportedSpecError, UsageError

__all__ = ["EXPRESSIONS", "MARGINS_COLUMNS", "PREDICTIONS", "MarginsResult", "margins"]

#: Columns after the label columns (``margin`` is ``dydx`` for marginal effects).
MARGINS_COLUMNS: tuple[str, ...] = ("margin", "std_error", "statistic", "p_value", "conf_low", "conf_high")


@dataclass(frozen=True, eq=False)
class MarginsResult:
    """``table``: one row per margin (label columns, then :data:`MARGINS_COLUMNS`, ``margin``
    named ``dydx`` for marginal effects); ``L``: each row's fixed-effect weights (for a GLMM's
    response scale the Jacobian of the margins in the fixed effects); ``predict`` the prediction
    (:data:`PREDICTIONS`); ``kind``
    ``"margins"`` or ``"dydx"``; ``at``, ``over`` and ``variables`` as asked (for
    :func:`hlmbridge.results.margins_plot.marginsplot`); ``nobs`` the fit's number of
    observations. ``str()`` is Stata's ``margins`` output, ``_repr_html_`` an HTML table."""

    table: pd.DataFrame
    L: np.ndarray
    kind: str
    variables: tuple[str, ...]
    at: tuple[str, ...]
    over: tuple[str, ...]
    level: float
    notes: tuple[str, ...] = field(default=())
    predict: str = "xb"
    nobs: int | None = None

    def __str__(self) -> str:
        """Stata's ``margins`` output (:func:`hlmbridge.results.display_margins.margins_text`)."""
        from hlmbridge.results.display_margins import margins_text

        return margins_text(self)

    def __repr__(self) -> str:
        from hlmbridge.results.display_margins import short_repr

        return short_repr(self, kind=self.kind, rows=len(self.table), variables=self.variables, at=self.at,
                          over=self.over, predict=self.predict, nobs=self.nobs)

    def _repr_html_(self) -> str:
        from hlmbridge.results.display_margins import margins_html

        return margins_html(self)

    def plot(self, **kwargs: Any) -> Any:
        """:func:`hlmbridge.results.margins_plot.marginsplot` of this result."""
        from hlmbridge.results.margins_plot import marginsplot

        return marginsplot(self, **kwargs)


def _names(x: Any, what: str) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    if isinstance(x, (list, tuple)) and all(isinstance(v, str) for v in x):
        return list(x)
    raise UsageError(f"{what} must be a name or a list of names, got {x!r}")


class _Frame:
    """The estimation sample's variables and how to turn settings into a weighted X."""

    def __init__(self, result: Any, data: pd.DataFrame | None) -> None:
        from hlmbridge.results.emmeans import _variables

        v = _variables(result, data)
        self.result = result
        self.frame = v.frame
        self.factors = v.factors
        design = result.design
        self.bases = dict(design.factor_bases) if design.spec.formula is None else {}

    def base(self, f: str) -> Any:
        if f in self.bases:
            return float(self.bases[f])
        return self.factors[f][0]

    def check(self, names: list[str], what: str, factor: bool | None = None) -> None:
        for n in names:
            if n not in self.frame.columns:
                raise UsageError(f"{what}: {n!r} is not a variable of the fixed part ({', '.join(self.frame.columns)})")
            if factor is True and n not in self.factors:
                raise UsageError(f"{what}: {n!r} is a covariate, not a factor (Stata: use at() for covariates)")

    def _set(self, frame: pd.DataFrame, var: str, value: Any) -> None:
        col = self.frame[var]
        if isinstance(col.dtype, pd.CategoricalDtype):
            frame[var] = pd.Categorical([value] * len(frame), categories=col.cat.categories, ordered=col.cat.ordered)
        else:
            frame[var] = np.full(len(frame), value, dtype=col.to_numpy().dtype if var in self.factors else float)

    def rows_of(self, rows: np.ndarray, setting: Mapping[str, Any], shift: tuple[str, float] | None, atmeans: bool
                ) -> tuple[np.ndarray, np.ndarray]:
        """The fixed-effect rows over ``rows`` with ``setting`` applied and their averaging weights
        (summing to 1; with ``atmeans`` the combinations of the factors' levels)."""
        from hlmbridge.design.newdata import new_design
        from hlmbridge.results.emmeans import _level_label

        sub = self.frame.iloc[rows].reset_index(drop=True)
        if atmeans:
            parts: list[list[tuple[Any, float]]] = []
            names = list(self.frame.columns)
            for n in names:
                if n in setting:
                    parts.append([(setting[n], 1.0)])
                elif n in self.factors:
                    counts = sub[n].astype(object).map(_level_label).value_counts()
                    parts.append([(lv, counts.get(_level_label(lv), 0) / len(sub)) for lv in self.factors[n]])
                else:
                    parts.append([(float(np.mean(sub[n].to_numpy(dtype=float))), 1.0)])
            combos = list(itertools.product(*parts))
            w = np.array([np.prod([c[1] for c in combo]) for combo in combos])
            keep = w > 0
            frame = pd.DataFrame([[c[0] for c in combo] for combo, k in zip(combos, keep) if k], columns=names)
            w = w[keep]
            for n in names:
                col = self.frame[n]
                if isinstance(col.dtype, pd.CategoricalDtype):
                    frame[n] = pd.Categorical(frame[n], categories=col.cat.categories, ordered=col.cat.ordered)
                elif n not in self.factors:
                    frame[n] = frame[n].astype(float)
        else:
            frame = sub.copy()
            for n, value in setting.items():
                self._set(frame, n, value)
            w = np.ones(len(frame))
        if shift is not None:
            frame[shift[0]] = frame[shift[0]].to_numpy(dtype=float) + shift[1]
        X = new_design(self.result.design, frame, random=False).X
        return w / w.sum(), X

    def row(self, rows: np.ndarray, setting: Mapping[str, Any], shift: tuple[str, float] | None, atmeans: bool
            ) -> np.ndarray:
        """The mean fixed-effect row over ``rows`` with ``setting`` applied (``shift``: add h to a covariate)."""
        w, X = self.rows_of(rows, setting, shift, atmeans)
        return w @ X


def _cells(fr: _Frame, spec: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    names = [s.strip() for s in spec.split("#")]
    fr.check(names, f"margins {spec!r}", factor=True)
    combos = [tuple(reversed(t)) for t in itertools.product(*(fr.factors[n] for n in reversed(names)))]
    return names, combos


#: The predictions margins averages: a linear model's ``xb``; a GLMM's ``mu`` (the mean with the
#: random effects integrated out), ``mu_fixedonly`` (the mean at random effects 0) or ``xb``.
PREDICTIONS: tuple[str, ...] = ("mu", "mu_fixedonly", "xb")
#: Stata's spellings of ``predict()`` accepted for each.
_SPELLINGS = {"mu": "mu", "mu marginal": "mu", "marginal": "mu", "mu_fixedonly": "mu_fixedonly",
              "mu fixedonly": "mu_fixedonly", "mu conditional(fixedonly)": "mu_fixedonly", "xb": "xb", "eta": "xb"}
EXPRESSIONS = {"mu": "Marginal predicted mean, predict(mu marginal)",
               "mu_fixedonly": "Predicted mean, fixed portion only, predict(mu conditional(fixedonly))",
               "xb": "Linear prediction, fixed portion, predict(xb)"}


def _prediction(result: Any, predict: Any) -> str:
    if predict is None:
        return "mu" if result.spec.is_glmm else "xb"
    key = " ".join(predict.split()) if isinstance(predict, str) else None
    if key not in _SPELLINGS:
        raise UsageError(f"predict must be one of {', '.join(map(repr, PREDICTIONS))} (or Stata's 'mu marginal', "
                         f"'mu conditional(fixedonly)', 'eta'), got {predict!r}")
    kind = _SPELLINGS[key]
    if kind != "xb" and not result.spec.is_glmm:
        raise UsageError(f"predict={predict!r}: a linear mixed model's margins average its linear prediction "
                         "(predict='xb'); 'mu' belongs to a GLMM")
    return kind


def _integration(result: Any, points: int | None) -> int:
    from hlmbridge.results.eb_means import _points

    if points is not None and (isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 1):
        raise UsageError(f"points must be a positive number of quadrature points, got {points!r}")
    for ld in result.design.levels:
        if tuple(ld.terms_lme4) != ("(Intercept)",):
            raise UnsupportedSpecError("margins with random slopes", result.engine, message=(
                "margins: the marginal mean (predict='mu') is computed for random intercepts only; this model has "
                f"random slopes ({', '.join(ld.terms_lme4)} | {ld.name}); use predict='mu_fixedonly'"))
    return _points(result, points)


def _response_margins(result: Any, recipes: list[list[tuple[float, np.ndarray, np.ndarray, np.ndarray | None]]],
                      prediction: str, points: int, vcov: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A GLMM's margins on the response scale, their delta-method SEs and their Jacobian in beta.

    The parameters are beta and the random table's estimates (variances on the variance scale);
    the margins' Jacobian in them is a central difference (one-sided at a variance's boundary 0),
    the covariance ``vcov`` or else the result's ``fixed_vcov``, ``random_vcov`` and ``fixed_random_vcov``."""
    from hlmbridge.results.glmm_predict import result_family
    from hlmbridge.results.population_averaged import normal_quadrature

    link = result_family(result).link
    beta = np.array([r[2] for r in result.fixed_rows], dtype=float)
    rnd = result.random
    variances = np.array(rnd["estimate"], dtype=float)
    names = {ld.name for ld in result.design.levels}
    intercept = ((rnd["kind"] == "var") & (rnd["term1"] == "(Intercept)") & rnd["group"].isin(names)).to_numpy()
    if prediction == "mu":
        t, wq = normal_quadrature(points)
    else:
        t, wq = np.zeros(1), np.ones(1)

    def values(b: np.ndarray, theta: np.ndarray) -> np.ndarray:
        s = np.sqrt(max(float(theta[intercept].sum()), 0.0)) if prediction == "mu" else 0.0
        out = np.zeros(len(recipes))
        for i, recipe in enumerate(recipes):
            for coef, w, X, dX in recipe:
                eta = (X @ b)[:, None] + s * t[None, :]
                if dX is None:
                    g = link.linkinv(eta) @ wq
                else:
                    g = (link.mu_eta(eta) @ wq) * (dX @ b)
                out[i] += coef * float(w @ g)
        return out

    est = values(beta, variances)
    p, q = len(beta), len(variances) if prediction == "mu" else 0
    J = np.zeros((len(recipes), p + q))
    for j in range(p + q):
        h = 1e-5 * max(1.0, abs(beta[j] if j < p else variances[j - p]))
        up_b, down_b, up_v, down_v = beta.copy(), beta.copy(), variances.copy(), variances.copy()
        if j < p:
            up_b[j] += h
            down_b[j] -= h
            J[:, j] = (values(up_b, up_v) - values(down_b, down_v)) / (2 * h)
        elif variances[j - p] - h >= 0:
            up_v[j - p] += h
            down_v[j - p] -= h
            J[:, j] = (values(up_b, up_v) - values(down_b, down_v)) / (2 * h)
        else:  # at the boundary: forward differences (the mean is smooth in the variance at 0)
            up_v[j - p] += h
            two = variances.copy()
            two[j - p] += 2 * h
            J[:, j] = (-3 * est + 4 * values(beta, up_v) - values(beta, two)) / (2 * h)
    V = np.zeros((p + q, p + q))
    V[:p, :p] = np.asarray(result.fixed_vcov, dtype=float)
    if q:
        rv = np.asarray(result.random_vcov, dtype=float)
        if rv.shape != (q, q):
            raise UnsupportedSpecError("margins", result.engine, message=(
                f"margins: the result's covariance of the variance parameters is {rv.shape}, not one row per "
                f"variance parameter ({q}); the marginal mean's standard errors need it"))
        V[p:, p:] = rv
        cross = np.asarray(result.fixed_random_vcov, dtype=float)
        if cross.size:  # Stata's e(V): the covariances of beta with the variance parameters too
            if cross.shape != (p, q):
                raise UnsupportedSpecError("margins", result.engine, message=(
                    f"margins: the result's covariance of the fixed effects with the variance parameters is "
                    f"{cross.shape}, not ({p}, {q})"))
            V[:p, p:] = cross
            V[p:, :p] = cross.T
    if vcov is not None:
        full = np.asarray(vcov, dtype=float)
        n = p + len(variances)
        if full.shape != (n, n) or not np.all(np.isfinite(full)) or not np.allclose(full, full.T):
            raise UsageError(f"vcov must be a symmetric finite ({n}, {n}) matrix: the covariance of the {p} fixed "
                             f"effects and the {len(variances)} variance parameter(s), got shape {full.shape}")
        V = full[:p + q, :p + q]
    se = np.sqrt(np.einsum("ij,jk,ik->i", J, V, J))
    return est, se, J[:, :p]


def margins(result: Any, variables: Any = None, *, at: Mapping[str, Any] | None = None, over: Any = None,
            dydx: Any = None, atmeans: bool = False, data: pd.DataFrame | None = None, level: float = 0.95,
            predict: str | None = None, points: int | None = None, vcov: Any = None) -> MarginsResult:
    """Stata's ``margins [variables], at() over() dydx() atmeans predict()`` after ``mixed``,
    ``melogit``, ``mepoisson``, ... (see the module docstring). ``data`` is the fit's data frame,
    needed only when a variable enters the model transformed (``log(x)``, ``poly(x, 2)``).
    ``predict``: ``"xb"`` (a linear model's only one), for a GLMM ``"mu"`` (the default: the mean
    with the random effects integrated out, Stata's ``predict(mu marginal)``), ``"mu_fixedonly"``
    (``predict(mu conditional(fixedonly))``: the random effects set to 0) or ``"xb"`` (``"eta"``);
    ``points``: Gauss-Hermite points of the integral (``"mu"`` only; default the fit's).
    ``vcov`` (GLMMs only): the full covariance of (fixed effects in ``fixed`` order, variance
    parameters in ``random`` order), cross-covariances included (Stata's ``e(V)``), for the
    delta method instead of the result's own blocks."""
    from hlmbridge.results.emmeans import _check_lmm, _level_label
    from hlmbridge.results.emmeans import at_values as at_setting  # margins has its own at_values

    kind_of_prediction = _prediction(result, predict)
    glm = kind_of_prediction != "xb"
    _check_lmm(result, "margins", glmm=True)
    if points is not None and kind_of_prediction != "mu":
        raise UsageError("points= sets the quadrature of the marginal mean (predict='mu'); the prediction "
                         f"{kind_of_prediction!r} integrates nothing")
    k_points = _integration(result, points) if kind_of_prediction == "mu" else 0
    if vcov is not None and not result.spec.is_glmm:
        raise UsageError("vcov= belongs to a GLMM's response-scale margins; a linear model's margins use fixed_vcov")
    if result.design.weights is not None:
        raise UnsupportedSpecError("weights", "margins", message=(
            "margins: the fit has lmer's precision weights, which are not Stata's sampling weights that "
            "margins would average with; hlmbridge does not compute margins for weighted fits"))
    if not (isinstance(level, float) and 0 < level < 1):
        raise UsageError(f"level must be a number between 0 and 1, got {level!r}")
    if not isinstance(atmeans, bool):
        raise UsageError(f"atmeans must be True or False, got {atmeans!r}")
    fr = _Frame(result, data)
    specs = _names(variables, "variables")
    over_names = _names(over, "over")
    dydx_names = _names(dydx, "dydx")
    fr.check(over_names, "over()", factor=True)
    fr.check(dydx_names, "dydx()")
    if dydx_names and specs:
        raise UsageError("give either variables (predictive margins by level) or dydx= (marginal effects); "
                         "for effects within groups use over=")
    at = dict(at or {})
    fr.check(list(at), "at()")
    at_values: dict[str, list[Any]] = {}
    for n, vals in at.items():
        at_values[n] = at_setting(f"at({n}=)", vals, fr.factors.get(n))
    at_names = list(at_values)
    clash = set(at_names) & (set(over_names) | set(dydx_names) | {p for s in specs for p in s.split("#")})
    if clash:
        raise UsageError(f"{', '.join(sorted(clash))} is both in at() and in the margins' variables, over() or dydx()")
    at_combos = list(itertools.product(*(at_values[n] for n in at_names))) or [()]
    if over_names:
        keys = fr.frame[over_names].astype(object).apply(lambda r: tuple(_level_label(x) for x in r), axis=1)
        groups = [tuple(reversed(t)) for t in itertools.product(*(fr.factors[n] for n in reversed(over_names)))]
        group_rows = [(g, np.flatnonzero((keys == tuple(_level_label(x) for x in g)).to_numpy())) for g in groups]
        group_rows = [(g, r) for g, r in group_rows if len(r)]
    else:
        group_rows = [((), np.arange(len(fr.frame)))]
    records: list[dict[str, Any]] = []
    L: list[np.ndarray] = []
    # GLMM response scale: each margin as a sum of coef * sum_i w_i g(X_i beta) (dX: the derivative
    # in a covariate, the rows' d eta / dx, so that g is the mean's derivative in eta).
    recipes: list[list[tuple[float, np.ndarray, np.ndarray, np.ndarray | None]]] = []

    def piece(rows: np.ndarray, setting: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        w, X = fr.rows_of(rows, setting, None, atmeans)
        return (np.ones(1), (w @ X)[None, :]) if atmeans else (w, X)
    for (g, rows), (ai, combo) in itertools.product(group_rows, enumerate(at_combos)):
        base_set = dict(zip(at_names, combo))
        label: dict[str, Any] = {}
        if at_names:
            label["_at"] = ai + 1
            label.update(base_set)
        label.update(dict(zip(over_names, g)))
        if dydx_names:
            for x in dydx_names:
                if x in fr.factors:
                    b = fr.base(x)
                    ref = fr.row(rows, {**base_set, x: b}, None, atmeans)
                    for lv in fr.factors[x]:
                        if _level_label(lv) == _level_label(b):
                            continue
                        L.append(fr.row(rows, {**base_set, x: lv}, None, atmeans) - ref)
                        records.append({**label, "term": f"{x}: {_level_label(lv)} vs {_level_label(b)}"})
                        if glm:
                            recipes.append([(1.0, *piece(rows, {**base_set, x: lv}), None),
                                            (-1.0, *piece(rows, {**base_set, x: b}), None)])
                else:
                    xs = fr.frame[x].to_numpy(dtype=float)[rows]
                    h = 1e-5 * max(1.0, float(np.mean(np.abs(xs))), float(np.std(xs)))
                    up = fr.row(rows, base_set, (x, h), atmeans)
                    down = fr.row(rows, base_set, (x, -h), atmeans)
                    L.append((up - down) / (2 * h))
                    records.append({**label, "term": x})
                    if glm:
                        w, X = piece(rows, base_set)
                        wu, Xu = fr.rows_of(rows, base_set, (x, h), atmeans)
                        wd, Xd = fr.rows_of(rows, base_set, (x, -h), atmeans)
                        dX = (wu @ Xu - wd @ Xd)[None, :] if atmeans else Xu - Xd
                        recipes.append([(1.0, w, X, dX / (2 * h))])
        elif specs:
            for s in specs:
                names, combos = _cells(fr, s)
                for c in combos:
                    L.append(fr.row(rows, {**base_set, **dict(zip(names, c))}, None, atmeans))
                    records.append({**label, "term": s, **dict(zip(names, c))})
                    if glm:
                        recipes.append([(1.0, *piece(rows, {**base_set, **dict(zip(names, c))}), None)])
        else:
            L.append(fr.row(rows, base_set, None, atmeans))
            records.append(dict(label))
            if glm:
                recipes.append([(1.0, *piece(rows, base_set), None)])
    W = np.array(L)
    beta = np.array([r[2] for r in result.fixed_rows], dtype=float)
    V = np.asarray(result.fixed_vcov, dtype=float)
    if glm:
        est, se, W = _response_margins(result, recipes, kind_of_prediction, k_points, vcov)
    else:
        est = W @ beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", W, V, W))
    z = est / se
    q = stats.norm.ppf(0.5 + level / 2)
    table = pd.DataFrame(records)
    if not len(table.columns):
        table = pd.DataFrame(index=range(len(W)))
    kind = "dydx" if dydx_names else "margins"
    table["dydx" if dydx_names else "margin"] = est
    table["std_error"], table["statistic"] = se, z
    table["p_value"] = 2 * stats.norm.sf(np.abs(z))
    table["conf_low"], table["conf_high"] = est - q * se, est + q * se
    if not result.spec.is_glmm:
        notes = ["Delta-method standard errors; z statistics (Stata's margins after mixed)",
                 "Expression: Linear prediction, fixed portion (xb)"]
    else:
        notes = ["Delta-method standard errors; z statistics (Stata's margins after melogit/mepoisson)",
                 f"Expression: {EXPRESSIONS[kind_of_prediction]}"]
        if kind_of_prediction == "mu" and vcov is None and not np.asarray(result.fixed_random_vcov).size:
            notes.append(f"The random effects integrated out by {k_points}-point Gauss-Hermite quadrature; SEs from "
                         "the fixed effects' and the variance parameters' covariances, without their cross-covariance "
                         "(the result does not carry it; Stata's e(V) does)")
    if atmeans:
        notes.append("at: the other covariates at their means (atmeans)")
    return MarginsResult(table, W, kind, tuple(dydx_names or specs), tuple(at_names), tuple(over_names), level,
                         tuple(notes), kind_of_prediction, int(result.nobs))
