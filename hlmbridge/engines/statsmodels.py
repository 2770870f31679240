"""The statsmodels engine: ``MixedLM`` on hlmbridge's own design matrices.

statsmodels gets exactly the X, Z and groups the other engines get (no formula
re-parsing). Optimizer strategy (issue 13): Newton's method on MixedLM's own profiled log
likelihood, with its analytic score and Hessian, from moment start values. statsmodels'
default chain stops short or fails on the seed's models (and ``lbfgs`` alone is broken on
random-intercept ML fits, statsmodels issue 10239). Where Newton does not converge, or
hlmbridge's own likelihood still rises nearby, the derivative-free chain runs: Powell with
tight tolerances, Nelder–Mead when Powell does not report convergence, and a BFGS polish
of the better answer, kept only when it converged to a higher log likelihood.

Examples
--------
>>> from hlmbridge.engines.statsmodels import StatsmodelsEngine
>>> StatsmodelsEngine().available()
(True, '')
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design, LevelDesign
from hlmbridge.engines.base import EngineFit
from hlmbridge.errors import ConvergenceError, DataError, FitError
from hlmbridge.inference.optimum import is_singular, overflow_problem, weight_scale
from hlmbridge.inference.stata_parity import theta_from_matrices
from hlmbridge.spec.model import ModelSpec

__all__ = ["StatsmodelsEngine"]

_POWELL = {"ftol": 1e-12, "maxiter": 50_000}
_NELDER_MEAD = {"maxiter": 50_000}
_POLISH = {"gtol": 1e-9, "maxiter": 2_000}
_NEWTON_ITERATIONS = 60
#: MixedLM's GLS step (``get_fe_params``) switches to a pseudo-inverse, and its likelihood
#: jumps, where an eigenvalue of the random-effects covariance over the residual variance
#: (or a variance component's) falls below 1e-10; Newton's steps stay above this.
_EVALUABLE = 1.01e-10
#: The derivative-free chain's answer is refused where hlmbridge's own likelihood still rises
#: by more than this nearby. On the seed's models its answers leave 0 to gain; on a 3x3
#: correlated block (tests/test_formula_meaning.py) Nelder-Mead stops 0.31 below lme4's
#: optimum, close to a singular covariance, where the local search sees only 7.8e-6 (1e-3,
#: the limit before, let that through).
_CHAIN_GAIN_LIMIT = 1e-6
#: MixedLM evaluates its likelihood, score and Hessian group by group in Python: a fit costs
#: about 1.5 ms per group (measured on 2 vCPUs: 10,000 groups 18 s, 20,000 groups 30 s), so
#: 999,999 groups would take about 25 minutes. Past this many groups the engine refuses
#: (lme4 fits 1e6 rows in 999,999 groups in 54 s).
MAX_GROUPS = 50_000


class StatsmodelsEngine:
    """Fits through ``statsmodels.regression.mixed_linear_model.MixedLM``."""

    name = "statsmodels"

    def available(self) -> tuple[bool, str]:
        """statsmodels is a hard dependency, so always available."""
        return True, ""

    def unsupported(self, spec: ModelSpec) -> list[str]:
        """Constructs MixedLM cannot fit exactly."""
        reasons: list[str] = []
        if spec.is_glmm:
            return [f"statsmodels cannot fit a {spec.family} GLMM: it has no maximum-likelihood GLMM (its "
                    "BinomialBayesMixedGLM/PoissonBayesMixedGLM are Bayesian approximations); use engine='lme4'."]

        def refuse(construct: str, detail: str) -> None:
            reasons.append(f"statsmodels cannot fit {construct} exactly: {detail}.")

        if spec.residuals is not None:
            refuse(spec.residuals.stata(), "MixedLM's residuals are independent with one variance; use engine='nlme'")

        for i, lv in enumerate(spec.levels):
            where = f"level {lv.group!r}"
            if lv.cov == "exchangeable":
                refuse(f"covariance(exchangeable) at {where}", "MixedLM has no exchangeable structure")
            if lv.cov == "identity" and lv.n_terms > 1:
                refuse(f"covariance(identity) over several terms at {where}", "MixedLM cannot tie variances")
            if i > 0 and not lv.nested:
                refuse(f"crossed random effects at {where}", "MixedLM nests variance components in groups; "
                       "use engine='lme4'")
            if i > 0 and lv.cov == "unstructured" and lv.n_terms > 1:
                refuse(f"correlated random slopes below the top level ({where})",
                       "MixedLM correlates random terms only at the top grouping level; use engine='lme4'")
        return reasons

    @staticmethod
    def refusal(design: Design) -> str | None:
        """Why MixedLM cannot fit this design exactly (for lme4-formula designs, whose
        nesting is read from the data), or None."""
        levels = design.levels
        top = levels[0]
        multi = [b for b in top.blocks if len(b) > 1]
        if len(multi) > 1:
            return (f"statsmodels cannot fit a block-diagonal covariance at {top.name} exactly: MixedLM has one "
                    "correlated block per group; use engine='lme4'.")
        for ld in levels[1:]:
            if not ld.nested:
                return (f"statsmodels cannot fit the grouping factor {ld.name} exactly: its groups are not nested "
                        f"in those of {top.name} (crossed effects), and MixedLM nests variance components in "
                        "groups; use engine='lme4'.")
            if any(len(b) > 1 for b in ld.blocks):
                return (f"statsmodels cannot fit correlated random terms for {ld.name} exactly: MixedLM correlates "
                        f"random terms only at the top grouping factor ({top.name}); use engine='lme4'.")
        return None

    def fit_design(self, design: Design, *, data: pd.DataFrame | None = None,
                   column_prints: Mapping[str, tuple[Any, ...]] | None = None,
                   max_iterations: int | None = None) -> EngineFit:
        """Fit the design; raises ConvergenceError when no strategy converges.

        ``data`` and ``column_prints`` are the reuse hints every engine is given
        (``engines.base.FIT_CONTEXT``); this engine fits the design's arrays and needs none.

        ``max_iterations`` caps every optimizer's iterations (default: 60 Newton steps,
        50,000 for Powell and Nelder-Mead, 2,000 for the BFGS polish).
        """
        cap = {} if max_iterations is None else {"maxiter": int(max_iterations)}
        import statsmodels
        from statsmodels.regression.mixed_linear_model import MixedLM

        why = self.refusal(design)
        if why:
            from hlmbridge.errors import UnsupportedSpecError

            raise UnsupportedSpecError(why, self.name, message=why)
        too_large = overflow_problem(design)
        if too_large:
            raise DataError(f"[{self.name}] {too_large}")
        top = design.levels[0]
        if top.n_groups > MAX_GROUPS:
            single = int(np.sum(top.sizes == 1))
            raise FitError(
                f"{top.n_groups:,} groups of {top.name!r} are too many for statsmodels' MixedLM, which loops over "
                f"groups in Python (about 1.5 ms per group per fit: some {top.n_groups * 1.5e-3 / 60:.0f} minutes "
                f"here; the statsmodels engine fits at most {MAX_GROUPS:,} groups)"
                + (f"; {single:,} of them have a single row, so the group variance rests on the other "
                   f"{top.n_groups - single:,}" if single > top.n_groups // 2 else "")
                + "; use engine='lme4'", engine=self.name)
        exog_re, vc_names, exog_vc = self._random_design(design)
        y, X = design.y_fit, design.X
        if design.weights is not None:
            # Precision weights: fit the row-scaled model (exact); its log likelihood lacks
            # sum(log w) / 2, added back in _estimates. The weights are divided by
            # optimum.weight_scale (the same model with a residual variance on the data's scale).
            sw = np.sqrt(design.weights / weight_scale(design.weights))
            y, X = y * sw, X * sw[:, None]
        with warnings.catch_warnings():
            # hlmbridge passes variance components as per-group matrices (exact, no formula
            # re-parsing); statsmodels calls that format deprecated, not wrong.
            warnings.filterwarnings("ignore", message="Using deprecated variance components format",
                                    category=FutureWarning)
            model = MixedLM(
                y, X, groups=top.codes, exog_re=exog_re,
                exog_vc=exog_vc if exog_vc else None,
            )
        tried: list[str] = []
        t0 = time.perf_counter()
        from hlmbridge.inference.optimum import likelihood_gain

        # Issue 13: Newton's method with MixedLM's analytic score and Hessian, from moment
        # start values; kept where it converged and hlmbridge's own likelihood finds no better
        # point nearby (gain <= 1e-8). Otherwise the tight derivative-free chain runs as
        # before, from MixedLM's own start.
        newton = _newton_fit(model, design.spec.reml,
                             _NEWTON_ITERATIONS if max_iterations is None else int(max_iterations), tried)
        if newton is not None:
            est = self._estimates(design, newton[0], newton[1], newton[2], vc_names, time.perf_counter() - t0,
                                  statsmodels.__version__)
            gain = likelihood_gain(design, est.theta)
            if gain <= 1e-8:
                return est
            tried.append(f"newton: the log likelihood still rises by {gain:.3g} nearby")
        best = self._run(model, design.spec.reml, "powell", {**_POWELL, **cap}, None, tried)
        if best is None or not best[0].converged:
            alt = self._run(model, design.spec.reml, "nm", {**_NELDER_MEAD, **cap}, None, tried)
            best = _better(best, alt)
        if best is not None:
            # Powell stops on a relative change in the objective; a BFGS step from its
            # answer, judged on the gradient, reaches the optimum itself.
            polished = self._run(model, design.spec.reml, "bfgs", {**_POLISH, **cap}, best[0].params_object, tried)
            if polished is not None and polished[0].converged:
                best = _better(best, (polished[0], best[1] + "+bfgs", polished[2]))
        seconds = time.perf_counter() - t0
        if best is None:
            raise FitError("statsmodels failed with every optimizer: " + "; ".join(tried), engine=self.name)
        res, method, msgs = best
        if not res.converged:
            raise ConvergenceError(
                "statsmodels MixedLM did not converge (" + "; ".join(tried) + ")", engine=self.name
            )
        est = self._estimates(design, res, method, msgs, vc_names, seconds, statsmodels.__version__)
        # MixedLM can report convergence where the likelihood still rises (seen on boundary
        # fits with a correlated block): check the answer on hlmbridge's own likelihood.
        gain = likelihood_gain(design, est.theta)
        if gain > _CHAIN_GAIN_LIMIT:
            raise ConvergenceError(
                f"statsmodels MixedLM reported convergence ({method}) where the log likelihood still rises by "
                f"{gain:.3g} nearby, so its estimates are not the optimum; use engine='lme4'", engine=self.name)
        return est

    @staticmethod
    def _run(model: Any, reml: bool, method: str, kw: dict[str, Any], start: Any,
             tried: list[str]) -> tuple[Any, str, tuple[str, ...]] | None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                res = model.fit(reml=reml, method=[method], start_params=start, **kw)
            except (np.linalg.LinAlgError, ValueError) as exc:
                tried.append(f"{method}: {exc}")
                return None
        tried.append(f"{method}: llf={res.llf:.6f} converged={res.converged}")
        if not np.isfinite(res.llf):
            return None
        return res, method, tuple(dict.fromkeys(str(w.message) for w in caught))

    @staticmethod
    def _random_design(design: Design) -> tuple[np.ndarray, list[tuple[int, list[int]]], dict[str, dict]]:
        """exog_re for the top level's correlated block; variance components for the rest."""
        top = design.levels[0]
        sw = np.sqrt(design.weights / weight_scale(design.weights)) if design.weights is not None else None

        def scaled(Z: np.ndarray) -> np.ndarray:
            return Z if sw is None else Z * sw[:, None]

        q = top.Z.shape[1]
        re_cols = _re_columns(top)
        exog_re = scaled(top.Z)[:, re_cols]
        vc_names: list[tuple[int, list[int]]] = []  # (level, term columns) per component
        exog_vc: dict[str, dict] = {}
        groups = top.codes
        order = np.argsort(groups, kind="stable")
        splits = np.split(order, np.flatnonzero(np.diff(groups[order])) + 1)
        components: list[tuple[int, int]] = [(0, j) for j in range(q) if j not in re_cols]
        for li, ld in enumerate(design.levels[1:], start=1):
            components += [(li, j) for j in range(ld.Z.shape[1])]
        for ci, (li, j) in enumerate(components):
            ld = design.levels[li]
            name = f"vc{ci:06d}"  # MixedLM orders components by name: vc10 would come before vc2
            mats = {}
            Zs = scaled(ld.Z)
            for g, rows in enumerate(splits):
                if li == 0:
                    mats[g] = Zs[rows, j : j + 1]
                else:
                    codes = ld.codes[rows]
                    uniq = np.unique(codes)
                    mats[g] = (codes[:, None] == uniq[None, :]) * Zs[rows, j : j + 1]
            exog_vc[name] = mats
            vc_names.append((li, [j]))
        return exog_re, vc_names, exog_vc

    def _estimates(self, design: Design, res: Any, method: str, msgs: tuple[str, ...],
                   vc_names: list[tuple[int, list[int]]], seconds: float, version: str) -> EngineFit:
        top = design.levels[0]
        q = top.Z.shape[1]
        covs = [np.zeros((ld.Z.shape[1], ld.Z.shape[1])) for ld in design.levels]
        cov_re = np.asarray(res.cov_re)
        re_cols = _re_columns(top)
        covs[0][np.ix_(re_cols, re_cols)] = cov_re
        vcomp = np.atleast_1d(np.asarray(res.vcomp, dtype=float))
        for value, (li, cols) in zip(vcomp, vc_names, strict=True):
            covs[li][cols[0], cols[0]] = value
        sigma2 = float(res.scale) * weight_scale(design.weights)  # fitted with weights / weight_scale
        theta = theta_from_matrices(design, covs, sigma2)
        singular = is_singular(design, theta)  # lme4's isSingular, for every engine alike
        return EngineFit(
            beta=np.asarray(res.fe_params, dtype=float),
            theta=theta,
            loglik=float(res.llf) + (0.5 * float(np.sum(np.log(design.weights / weight_scale(design.weights))))
                                     if design.weights is not None else 0.0),
            converged=bool(res.converged),
            singular=singular,
            optimizer=f"statsmodels MixedLM {method}",
            versions={"statsmodels": version},
            warnings=msgs,
            fixed_vcov=None,
            engine_seconds=seconds,
        )


def _re_columns(top: LevelDesign) -> list[int]:
    """Top-level terms in MixedLM's correlated ``exog_re`` block (the rest are variance components).

    Unstructured (or a lone term): all of them. Independent: the first term alone, as a
    1x1 block; the others become separate components.
    """
    q = top.Z.shape[1]
    if q == 1 or top.cov == "unstructured":
        return list(range(q))
    multi = [b for b in top.blocks if len(b) > 1]
    return list(multi[0]) if multi else [0]


def _better(a: Any, b: Any) -> Any:
    """The attempt with the higher log likelihood (converged attempts first)."""
    if a is None or b is None:
        return a if b is None else b
    if bool(a[0].converged) != bool(b[0].converged):
        return a if a[0].converged else b
    return b if b[0].llf > a[0].llf + 1e-9 else a


class _NewtonOptimum:
    """The parts of a ``MixedLMResults`` that ``_estimates`` reads, at Newton's optimum.

    Every number is MixedLM's own: its GLS fixed effects (``get_fe_params``), residual
    variance (``get_scale``) and profiled log likelihood (``loglike``) at the covariance
    parameters Newton's method found.
    """

    def __init__(self, model: Any, packed: np.ndarray, llf: float) -> None:
        from statsmodels.regression.mixed_linear_model import MixedLMParams

        params = MixedLMParams.from_packed(packed, model.k_fe, model.k_re, True, has_fe=False)
        self.fe_params, _ = model.get_fe_params(params.cov_re, params.vcomp)
        self.scale = float(model.get_scale(self.fe_params, params.cov_re, params.vcomp))
        self.cov_re = self.scale * params.cov_re
        self.vcomp = self.scale * params.vcomp
        self.llf = float(llf)
        self.converged = True


def _newton_fit(model: Any, reml: bool, max_iterations: int,
                tried: list[str]) -> tuple[_NewtonOptimum, str, tuple[str, ...]] | None:
    """Newton's method on MixedLM's profiled log likelihood in its Cholesky (``use_sqrt``)
    parametrization, or None where it did not converge (the reason is appended to ``tried``).

    The parametrization keeps every covariance matrix positive semi-definite, and a singular
    fit (a variance at 0, a correlation at +-1) is a stationary point inside it. Each step
    solves with the analytic Hessian (``_score_hessian``; eigenvalues of the wrong sign
    flipped, so the step always ascends) and is halved until the log likelihood rises.
    Converged: at a concave point, a Newton step that changes no parameter by more than 1e-7
    of its size (the step is then taken), or a decrement g'(-H)^-1 g (twice the gain of a
    full step) below 1e-15 (1e-10 where rounding stops any further rise).

    At a singular optimum MixedLM cannot evaluate the likelihood on the boundary itself
    (``_EVALUABLE``): steps are shortened to stay inside, the pivots at that limit are then
    held while the other parameters move, and Newton stops once the others have converged
    (their decrement below 1e-9) and what is left to gain by crossing the limit is below
    5e-8 (decrement 1e-7). On the seed's two singular models this ends 7e-9 below lme4's
    optimum (the Powell chain before: 4.3e-8 and 3.2e-8).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _prepare(model, reml)
            packed, llf, how = _newton(model, _moment_start(model), max_iterations)
            answer = None if packed is None else _NewtonOptimum(model, packed, llf)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            tried.append(f"newton: {type(exc).__name__}: {exc}")
            return None
    if answer is None or not np.isfinite(answer.llf):
        tried.append(f"newton: {how}")
        return None
    tried.append(f"newton: llf={answer.llf:.6f} {how}")
    return answer, f"newton ({how})", tuple(dict.fromkeys(str(w.message) for w in caught))


def _prepare(model: Any, reml: bool) -> None:
    """Set what ``MixedLM.fit`` sets before it evaluates the likelihood (no penalties, all
    parameters free)."""
    model.reml = reml
    model.cov_pen = None
    model.fe_pen = None
    model._freepat = None
    model._cov_sing = 0


def _newton(model: Any, start: np.ndarray, max_iterations: int) -> tuple[np.ndarray | None, float, str]:
    """(packed parameters or None, profiled log likelihood, how it ended); see ``_newton_fit``."""
    k2 = model.k_re * (model.k_re + 1) // 2
    rows, cols = np.tril_indices(model.k_re)
    pivots = np.concatenate([np.flatnonzero(rows == cols), np.arange(k2, k2 + model.k_vc)])
    p = _canonical(start, model.k_re)
    if _smallest(model, p) < _EVALUABLE:
        p = _canonical(np.concatenate([np.eye(model.k_re)[np.tril_indices(model.k_re)], np.ones(model.k_vc)]),
                       model.k_re)
    f = float(model.loglike(p))
    stalled = False  # the last step gained nothing
    limit = "converged in {} steps at the limit of MixedLM's singular covariance"
    for it in range(max_iterations):
        g, H = _score_hessian(model, p)
        d, decrement, concave = _ascent(g, H)
        if concave and (_relative(d, p) < 1e-7 or decrement < 1e-15):
            return _last_step(model, p, f, d, f"converged in {it + 1} steps")
        # Near a singular optimum MixedLM's likelihood is evaluable (and accurate) only down
        # to an eigenvalue of _EVALUABLE: there Newton settles for what is left to gain
        # below 5e-8 (the decrement is twice the gain of a full step).
        at_limit = concave and decrement < 1e-7 and _smallest(model, p) < 1.5 * _EVALUABLE
        directions = [(d, decrement)]
        if _smallest(model, _canonical(p + d, model.k_re)) < _EVALUABLE:
            # The step crosses that limit. The other parameters move with the Cholesky
            # pivots (variance components' square roots) at the limit that it drives to
            # zero held where they are: that step first, the shortened full step second.
            end = p[pivots] + d[pivots]
            frozen = pivots[((end * p[pivots] <= 0) | (np.abs(end) < np.abs(p[pivots])))
                            & (p[pivots] ** 2 < 1.5 * _EVALUABLE)]
            free = np.setdiff1d(np.arange(len(p)), frozen)
            if len(frozen) and len(free):
                sub, sub_decrement, _ = _ascent(g[free], H[np.ix_(free, free)])
                reduced = np.zeros_like(d)
                reduced[free] = sub
                if at_limit and sub_decrement < 1e-9:
                    return _last_step(model, p, f, reduced, limit.format(it + 1))
                directions.insert(0, (reduced, sub_decrement))
            elif len(frozen) and at_limit:
                return p, f, limit.format(it)
        step = None
        for direction, dec in directions:
            step = _line_search(model, p, f, direction, dec, concave)
            if step is not None:
                break
        if step is None or (stalled and step[1] - f < 1e-10):
            # Rounding leaves nothing to gain: converged where little was left anyway.
            if at_limit:
                return p, f, limit.format(it)
            if concave and decrement < 1e-10:
                return p, f, f"converged in {it} steps"
            why = "no step raises the log likelihood" if step is None else "no progress"
            return None, f, f"{why} (step {it}, decrement {decrement:.3g})"
        stalled = step[1] - f < 1e-10
        p, f = step
    return None, f, f"not converged in {max_iterations} steps"


def _relative(d: np.ndarray, p: np.ndarray) -> float:
    """The largest change ``d`` makes to a parameter, relative to its size (or to a thousandth
    of the largest, for parameters near zero)."""
    return float(np.max(np.abs(d) / np.maximum(np.abs(p), 1e-3 * max(float(np.max(np.abs(p))), 1e-8))))


def _last_step(model: Any, p: np.ndarray, f: float, d: np.ndarray, how: str) -> tuple[np.ndarray, float, str]:
    """At convergence: the point after the (tiny) last step ``d``, unless MixedLM cannot
    evaluate it or its log likelihood falls by more than rounding."""
    last = _canonical(p + d, model.k_re)
    if _smallest(model, last) >= _EVALUABLE:
        fl = float(model.loglike(last))
        if np.isfinite(fl) and fl >= f - 1e-12 * abs(f):
            return last, fl, how
    return p, f, how


def _ascent(g: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Newton's step with the Hessian's eigenvalues of the wrong sign flipped (so it always
    ascends), its decrement g'd, and whether the Hessian is negative definite."""
    w, V = np.linalg.eigh(-H)
    d = V @ ((V.T @ g) / np.maximum(np.abs(w), 1e-10 * max(1.0, float(np.max(np.abs(w))))))
    return d, float(g @ d), bool(w.min() > 0)


def _line_search(model: Any, p: np.ndarray, f: float, d: np.ndarray, decrement: float,
                 concave: bool) -> tuple[np.ndarray, float] | None:
    """The first of the steps t = 1, 1/2, 1/4, ... along ``d`` where the log likelihood rises
    enough (Armijo), each first shortened (by 5% at a time) until MixedLM can evaluate it;
    None if none does within 60 evaluations."""
    t, evaluations = 1.0, 0
    while evaluations < 60 and t > 1e-12:
        trial = _canonical(p + t * d, model.k_re)
        if _smallest(model, trial) < _EVALUABLE:
            t *= 0.95
            continue
        ft = float(model.loglike(trial))
        evaluations += 1
        # Near the optimum a full step may gain less than rounding: it is taken unless the
        # log likelihood falls by more than rounding.
        if np.isfinite(ft) and (ft >= f + 1e-4 * t * decrement
                                or (t == 1.0 and concave and decrement < 1e-5 and ft >= f - 1e-12 * abs(f))):
            return trial, ft
        t *= 0.5
    return None


def _canonical(p: np.ndarray, k_re: int) -> np.ndarray:
    """The same covariances with a non-negative Cholesky diagonal and square roots (the form
    MixedLM's score assumes: it re-derives the factor from the covariance matrix)."""
    p = np.array(p, dtype=float)
    k2 = k_re * (k_re + 1) // 2
    if k_re:
        L = np.zeros((k_re, k_re))
        L[np.tril_indices(k_re)] = p[:k2]
        L *= np.where(np.diag(L) < 0, -1.0, 1.0)[None, :]
        p[:k2] = L[np.tril_indices(k_re)]
    p[k2:] = np.abs(p[k2:])
    return p


def _smallest(model: Any, p: np.ndarray) -> float:
    """The smallest eigenvalue of the random-effects covariance and variance component at
    ``p`` (over the residual variance); MixedLM evaluates its likelihood smoothly only where
    this is at least ``_EVALUABLE``."""
    k2 = model.k_re * (model.k_re + 1) // 2
    out = np.inf
    if model.k_re:
        L = np.zeros((model.k_re, model.k_re))
        L[np.tril_indices(model.k_re)] = p[:k2]
        out = float(np.linalg.eigvalsh(L @ L.T).min())
    if model.k_vc:
        out = min(out, float(np.min(p[k2:] ** 2)))
    return out


def _score_hessian(model: Any, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of MixedLM's profiled log likelihood in the packed Cholesky
    parameters ``p``, from its analytic ``score_full`` and ``hessian``.

    ``hessian`` is taken in the fixed effects and the covariance parameters themselves (lower
    triangle of the covariance matrix, then the variance components); at the GLS fixed
    effects the profiled Hessian is its Schur complement, and the chain rule through
    ``theta = vech(L L')``, ``vcomp = s**2`` gives the Hessian in ``p``.
    """
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    params = MixedLMParams.from_packed(p, model.k_fe, model.k_re, True, has_fe=False)
    params.fe_params, _ = model.get_fe_params(params.cov_re, params.vcomp)
    _, score_re, score_vc = model.score_full(params, calc_fe=False)
    grad = np.concatenate([score_re, score_vc])
    hess, _ = model.hessian(params)
    kf = model.k_fe
    profiled = hess[kf:, kf:] - hess[:kf, kf:].T @ np.linalg.solve(hess[:kf, :kf], hess[:kf, kf:])
    J, second = _cholesky_chain(p, model.k_re, model.k_vc)
    H = J.T @ profiled @ J + np.einsum("t,tuw->uw", grad, second)
    return J.T @ grad, 0.5 * (H + H.T)


def _cholesky_chain(p: np.ndarray, k_re: int, k_vc: int) -> tuple[np.ndarray, np.ndarray]:
    """First and second derivatives of (vech(L L'), s**2) in the packed (vech(L), s)."""
    k2 = k_re * (k_re + 1) // 2
    K = k2 + k_vc
    rows, cols = np.tril_indices(k_re)
    L = np.zeros((k_re, k_re))
    L[rows, cols] = p[:k2]
    J = np.zeros((K, K))
    second = np.zeros((K, K, K))
    pairs = list(zip(rows.tolist(), cols.tolist(), strict=True))
    for t, (a, b) in enumerate(pairs):  # theta_t = sum_k L[a, k] L[b, k]
        for u, (c, e) in enumerate(pairs):
            J[t, u] = (L[b, e] if a == c else 0.0) + (L[a, e] if b == c else 0.0)
            for v, (c2, e2) in enumerate(pairs):
                if e == e2:
                    second[t, u, v] = float(a == c and b == c2) + float(b == c and a == c2)
    for k in range(k_vc):
        J[k2 + k, k2 + k] = 2.0 * p[k2 + k]
        second[k2 + k, k2 + k, k2 + k] = 2.0
    return J, second


def _moment_start(model: Any) -> np.ndarray:
    """Packed start values from moments: OLS residuals regressed on each group's random-effects
    columns; the covariance of those coefficients less their average sampling covariance,
    over the pooled within-group residual variance (eigenvalues kept at >= 10% of the
    largest). Variance components of several columns per group (nested levels) start at
    the mean square of their columns' coefficients on the within-group residuals, less
    sampling variance. Where a group has too few rows it is skipped; with too few groups
    the start is MixedLM's own (identity, ones).
    """
    k_re, k_vc = model.k_re, model.k_vc
    start = np.concatenate([np.eye(k_re)[np.tril_indices(k_re)], np.ones(k_vc)])
    y, X = model.endog, model.exog
    resid = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    mats = model.exog_vc.mats if k_vc else []
    single = [j for j in range(k_vc) if all(m.shape[1] == 1 for m in mats[j])]
    nested = [j for j in range(k_vc) if j not in single]
    k = k_re + len(single)
    coefs, sampling, within, ss, dof = [], [], [], 0.0, 0
    for gi, g in enumerate(model.group_labels):
        r = resid[model.row_indices[g]]
        Z = np.hstack(([model.exog_re_li[gi]] if k_re else []) + [mats[j][gi] for j in single])
        if len(r) <= k:
            continue
        ZtZ = Z.T @ Z
        try:
            b = np.linalg.solve(ZtZ, Z.T @ r)
            inv = np.linalg.inv(ZtZ)
        except np.linalg.LinAlgError:
            continue
        e = r - Z @ b
        ss += float(e @ e)
        dof += len(r) - k
        coefs.append(b)
        sampling.append(inv)
        within.append((gi, e))
    if len(coefs) <= k or dof == 0:
        return start
    s2 = ss / dof
    G = np.atleast_2d(np.cov(np.array(coefs).T, ddof=1)) - s2 * np.mean(sampling, axis=0)
    G = 0.5 * (G + G.T) / s2
    w, V = np.linalg.eigh(G)
    top = max(float(w.max()), 1e-2)
    G = (V * np.maximum(w, 0.1 * top)) @ V.T
    if k_re:
        start[: k_re * (k_re + 1) // 2] = np.linalg.cholesky(G[:k_re, :k_re])[np.tril_indices(k_re)]
    k2 = k_re * (k_re + 1) // 2
    for i, j in enumerate(single):
        start[k2 + j] = np.sqrt(G[k_re + i, k_re + i])
    for j in nested:
        sums, n = 0.0, 0
        for gi, e in within:
            M = mats[j][gi]
            mm = np.einsum("ij,ij->j", M, M)
            ok = mm > 0
            sums += float(np.sum((M.T @ e)[ok] ** 2 / mm[ok] ** 2 - s2 / mm[ok]))
            n += int(ok.sum())
        if n:
            start[k2 + j] = np.sqrt(max(sums / n / s2, 0.1 * top))
    return start
