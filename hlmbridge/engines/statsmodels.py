"""The statsmodels engine: ``MixedLM`` on hlmbridge's own design matrices.

statsmodels gets exactly the X, Z and groups the other engines get (no formula
re-parsing). Optimizer strategy: Powell with tight tolerances — statsmodels' default
chain stops short or fails on the seed's models (and ``lbfgs`` alone is broken on
random-intercept ML fits, statsmodels issue 10239); when Powell does not report
convergence, Nelder–Mead is tried as well. BFGS then polishes the better answer, judged
on the gradient; the polish is kept only when it converged to a higher log likelihood.

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
from hlmbridge.errors import ConvergenceError, FitError
from hlmbridge.inference.stata_parity import theta_from_matrices
from hlmbridge.spec.model import ModelSpec

__all__ = ["StatsmodelsEngine"]

_POWELL = {"ftol": 1e-12, "maxiter": 50_000}
_NELDER_MEAD = {"maxiter": 50_000}
_POLISH = {"gtol": 1e-9, "maxiter": 2_000}
_ROUGH = {"ftol": 1e-4, "maxiter": 50_000}


class StatsmodelsEngine:
    """Fits through ``statsmodels.regression.mixed_linear_model.MixedLM``."""

    name = "statsmodels"

    def available(self) -> tuple[bool, str]:
        """statsmodels is a hard dependency, so always available."""
        return True, ""

    def unsupported(self, spec: ModelSpec) -> list[str]:
        """Constructs MixedLM cannot fit exactly."""
        reasons: list[str] = []

        def refuse(construct: str, detail: str) -> None:
            reasons.append(f"statsmodels cannot fit {construct} exactly: {detail}.")

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

    def fit_design(self, design: Design, *, data: pd.DataFrame | None = None, frame: pd.DataFrame | None = None,
                   column_prints: Mapping[str, tuple[Any, ...]] | None = None,
                   max_iterations: int | None = None) -> EngineFit:
        """Fit the design; raises ConvergenceError when no strategy converges.

        ``data``, ``frame`` and ``column_prints`` are the reuse hints every engine is given
        (``engines.base.FIT_CONTEXT``); this engine fits the design's arrays and needs none.

        ``max_iterations`` caps every optimizer's iterations (default: 50,000 for
        Powell and Nelder-Mead, 2,000 for the BFGS polish).
        """
        cap = {} if max_iterations is None else {"maxiter": int(max_iterations)}
        import statsmodels
        from statsmodels.regression.mixed_linear_model import MixedLM

        why = self.refusal(design)
        if why:
            from hlmbridge.errors import UnsupportedSpecError

            raise UnsupportedSpecError(why, self.name, message=why)
        top = design.levels[0]
        exog_re, vc_names, exog_vc = self._random_design(design)
        y, X = design.y_fit, design.X
        if design.weights is not None:
            # Precision weights: fit the row-scaled model (exact); its log likelihood lacks
            # sum(log w) / 2, added back in _estimates.
            sw = np.sqrt(design.weights)
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

        # Issue 13: a cheap first pass (Powell to a loose relative tolerance), then BFGS with
        # MixedLM's analytic score from there. Kept only where BFGS converged on the gradient
        # and hlmbridge's own likelihood finds no better point nearby (gain <= 1e-8).
        # Otherwise (a flat likelihood near a singular fit, a stalled line search) the tight
        # derivative-free chain runs exactly as before, from MixedLM's own start (started from
        # the first pass's answer instead it stops elsewhere on such a flat ridge: measured
        # 1.6e-7 lower in the log likelihood on a seed model).
        rough = self._run(model, design.spec.reml, "powell", {**_ROUGH, **cap}, None, tried)
        if rough is not None:
            first = self._run(model, design.spec.reml, "bfgs", {**_POLISH, **cap}, rough[0].params_object, tried)
            if first is not None and first[0].converged:
                est = self._estimates(design, first[0], "powell(ftol=1e-4)+bfgs", first[2], vc_names,
                                      time.perf_counter() - t0, statsmodels.__version__)
                gain = likelihood_gain(design, est.theta)
                if gain <= 1e-8:
                    return est
                tried.append(f"bfgs: the log likelihood still rises by {gain:.3g} nearby")
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
        if gain > 1e-3:
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
        sw = np.sqrt(design.weights) if design.weights is not None else None

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
            name = f"vc{ci}"
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
        sigma2 = float(res.scale)
        theta = theta_from_matrices(design, covs, sigma2)
        singular = _is_singular(covs)
        return EngineFit(
            beta=np.asarray(res.fe_params, dtype=float),
            theta=theta,
            loglik=float(res.llf) + (0.5 * float(np.sum(np.log(design.weights)))
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


def _is_singular(covs: list[np.ndarray], tol: float = 1e-6) -> bool:
    """A variance at zero or a correlation within ``tol`` of +-1."""
    for g in covs:
        d = np.diag(g)
        if np.any(d <= tol * max(1.0, float(np.max(np.abs(d))) if d.size else 1.0)):
            return True
        sd = np.sqrt(d)
        corr = g / np.outer(sd, sd)
        off = corr[~np.eye(len(d), dtype=bool)]
        if off.size and np.any(np.abs(off) > 1 - tol):
            return True
    return False
