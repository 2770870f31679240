"""The ``quadrature`` engine: hlmbridge's own GLMM fit (numpy and scipy, no R).

It integrates the random effects of one grouping level as the spec asks
(:mod:`hlmbridge.inference.glmm_quadrature`): Laplace (glmer ``nAGQ = 1``, Stata
``intmethod(laplace)``), adaptive quadrature at the conditional mode (glmer ``nAGQ = k``,
Stata ``mcaghermite``), Stata's default mvaghermite (at the posterior mean and variance,
iterated; the product rule, ``k^q`` points, for vector random effects) and non-adaptive
``ghermite``; it maximizes the log likelihood (:mod:`hlmbridge.inference.glmm_ml`) and
returns the covariance of ``(beta, theta)`` from the full observed information, so
:func:`hlmbridge.fit` makes every number Stata prints from it.

Two or more grouping levels (nested or crossed) are fitted by Laplace's approximation only,
over every effect at once with a sparse Cholesky (:mod:`hlmbridge.inference.glmm_levels`): quadrature on them is
refused, because Stata integrates nested levels one inside the other (for each point of an
outer group's effects, the adaptive quadrature of each inner group's, ``k^q`` points per
level) and crossed factors as one level ``_all`` with all their effects, which is not
implemented here. A binomial response may carry its trials (``cbind(s, f)``, a proportion
with ``weights=``, Stata's ``binomial(n)``); the log likelihood then includes ``log C(n, s)``
as glmer's does. Poisson prior weights are refused.

Examples
--------
>>> import pandas as pd, hlmbridge
>>> from hlmbridge.datasets import resource_path
>>> hosp = pd.read_csv(resource_path("fixtures", "glmm", "hospital.csv"))
>>> res = hlmbridge.fit("melogit hosp loginc distance dropout college || mother:, intpoints(12)", hosp,
...                     engine="quadrature")                  # Stata's mvaghermite, no R needed
>>> f"{res.loglik:.5f}", f"{res.random['estimate'].iloc[0]:.4f}"    # Stata: -522.65042, 1.5484
('-522.65042', '1.5484')
>>> slope = hlmbridge.fit("melogit hosp loginc || mother: loginc", hosp, engine="quadrature")
>>> (slope.spec.intmethod, slope.spec.intpoints), slope.integration.split(", ")[2]
(('mvaghermite', 7), '49 per group (product rule)')
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design
from hlmbridge.engines.base import EngineFit
from hlmbridge.errors import DataError, FitError, UnsupportedSpecError, UsageError
from hlmbridge.spec.model import ModelSpec

__all__ = ["QuadratureEngine", "integration_sentence"]

_NAME = "quadrature"


def integration_sentence(method: str, points: int, q: int) -> str:
    """What the engine computed, in one phrase (the result's ``integration``).

    >>> integration_sentence("mvaghermite", 7, 2).split(", ")[1:3]
    ['7 points per random effect', '49 per group (product rule)']
    """
    if method == "laplace":
        return "Laplace's approximation (glmer nAGQ = 1; Stata's intmethod(laplace); hlmbridge's quadrature engine)"
    total = f", {points ** q} per group (product rule)" if q > 1 else ""
    where = {
        "mvaghermite": ("mean-variance adaptive Gauss-Hermite quadrature (Stata's mvaghermite)",
                        "adapted at the posterior mean and variance iterated to their fixed point"),
        "mcaghermite": ("mode-curvature adaptive Gauss-Hermite quadrature (Stata's mcaghermite; glmer's nAGQ = "
                        f"{points} for one scalar random effect)", "adapted at the conditional mode and curvature"),
        "ghermite": ("non-adaptive Gauss-Hermite quadrature (Stata's ghermite)", "at the prior N(0, G)"),
    }[method]
    return f"{where[0]}, {points} points per random effect{total}, {where[1]} (hlmbridge's quadrature engine)"


def _reasons(spec: ModelSpec, n_levels: int | None = None) -> list[str]:
    out = []
    if not spec.is_glmm:
        out.append("The quadrature engine fits GLMMs (family binomial or poisson); a linear mixed model's likelihood "
                   "is exact: use the lme4 or statsmodels engine.")
        return out
    levels = n_levels if n_levels is not None else (len(spec.formula.random) if spec.formula is not None
                                                      else len(spec.levels))
    if levels > 1 and (spec.intmethod or "laplace") != "laplace":
        out.append(
            "The quadrature engine integrates one grouping level by quadrature: with two or more, Stata integrates "
            "nested levels one inside the other (the inner groups' adaptive quadrature at every point of the outer "
            "group's) and crossed factors as one level with all their effects, which this engine does not implement; "
            "it fits Laplace's approximation on several levels (intmethod(laplace) / nagq=1).")
    return out


class QuadratureEngine:
    """hlmbridge's own GLMM engine (see the module docstring)."""

    name = _NAME

    def available(self) -> tuple[bool, str]:
        """Always: numpy and scipy only."""
        return True, ""

    def unsupported(self, spec: ModelSpec) -> list[str]:
        """What this engine cannot fit: linear mixed models, quadrature on several grouping levels."""
        # an lme4 formula's grouping factors are counted on the design (two bars may be one factor)
        return _reasons(spec, n_levels=1 if spec.formula is not None else None)

    def fit_design(self, design: Design, *, data: pd.DataFrame | None = None,
                   column_prints: Mapping[str, tuple[Any, ...]] | None = None,
                   max_iterations: int = 500) -> EngineFit:
        """Fit the GLMM ``design`` by maximum likelihood on hlmbridge's own integral.

        ``max_iterations`` bounds BFGS's iterations in each stage (Laplace, then the integral
        asked for). ``data`` and ``column_prints`` are not needed (the design holds the model).
        """
        from scipy import __version__ as scipy_version

        from hlmbridge.families import family
        from hlmbridge.inference.glmm_ml import CovarianceForm, LevelsForm, fit_glmm
        from hlmbridge.inference.glmm_levels import levels_data
        from hlmbridge.inference.glmm_pirls import fixed_only_glm, grouped_data
        from hlmbridge.inference.stata_parity import level_covariances, theta_from_matrices, variance_parameters

        if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1:
            raise UsageError(f"max_iterations must be a positive whole number, got {max_iterations!r}")
        spec = design.spec
        reasons = _reasons(spec, len(design.levels))
        if reasons:
            raise UnsupportedSpecError("this model", _NAME, message=reasons[0])
        if design.weights is not None and spec.family != "binomial":
            raise UnsupportedSpecError("a Poisson GLMM with weights", _NAME, message=(
                "The quadrature engine takes weights only as a binomial response's numbers of trials (weights=, "
                "cbind(successes, failures), Stata's binomial()); a Poisson GLMM's prior weights are not fitted."))
        trials = design.weights
        fam = family(spec.family, spec.link)
        _check_response(design)
        forms, starts = [], []
        for ld in design.levels:
            q = ld.Z.shape[1]
            if ld.cov in ("identity", "exchangeable") and q > 1:
                raise UnsupportedSpecError(f"cov({ld.cov})", _NAME, message=(
                    f"The quadrature engine does not fit cov({ld.cov}) on several random effects (shared variance "
                    "parameters); use cov(independent) or cov(unstructured)."))
            blocks = tuple((j,) for j in range(q)) if ld.cov == "independent" else (ld.blocks or (tuple(range(q)),))
            forms.append(CovarianceForm(q, tuple(tuple(b) for b in blocks)))
            sd = np.where(np.ptp(ld.Z, axis=0) > 0, 1.0 / np.maximum(np.std(ld.Z, axis=0), 1e-8), 1.0)
            starts.append(np.diag(np.minimum(sd, 1e3) ** 2))
        n_theta = len(variance_parameters(design)) - 1
        method, points = spec.intmethod or "laplace", int(spec.intpoints or 1)
        several = len(design.levels) > 1
        form: CovarianceForm | LevelsForm
        if several:  # Laplace over every effect at once, sparse
            lf = LevelsForm(tuple(forms), tuple(ld.n_groups for ld in design.levels))
            form = lf
            stata_order = np.arange(max(f.q for f in forms))

            def to_theta(G: Any) -> np.ndarray:
                return theta_from_matrices(design, list(G), 0.0)[:-1]

            def from_theta(theta: np.ndarray) -> Any:
                return level_covariances(design, np.append(theta, 0.0))

            data_g = levels_data(design.y, design.X, [(ld.Z, ld.codes, ld.n_groups) for ld in design.levels], fam,
                                 design.offset, trials)
            G0 = starts
        else:
            ld = design.levels[0]
            q = ld.Z.shape[1]
            form = forms[0]
            terms = list(ld.terms_lme4)
            stata_order = np.array([j for j in range(q) if terms[j] != "(Intercept)"] +
                                   [j for j in range(q) if terms[j] == "(Intercept)"])

            def to_theta(G: np.ndarray) -> np.ndarray:
                return theta_from_matrices(design, [G], 0.0)[:-1]

            def from_theta(theta: np.ndarray) -> np.ndarray:
                return level_covariances(design, np.append(theta, 0.0))[0]

            data_g = grouped_data(design.y, design.X, ld.Z, ld.codes, ld.n_groups, fam, design.offset, trials)
            G0 = starts[0]
        beta0, ll_fixed = fixed_only_glm(data_g)
        t0 = time.perf_counter()
        res = fit_glmm(data_g, form, to_theta, from_theta, beta0, G0, method, points, stata_order,
                       max_iterations=int(max_iterations))
        seconds = time.perf_counter() - t0
        if not np.isfinite(res.loglik):
            raise FitError("the quadrature engine's log likelihood is not finite at its estimates", engine=_NAME)
        p = design.n_fixed
        vcov = res.vcov
        fixed_vcov = vcov[:p, :p]
        random_vcov = vcov[p:, p:]
        warns = list(res.warnings)
        if not res.converged:
            warns.append("the quadrature engine did not converge: its last Newton step was larger than 1e-6 of a "
                         "standard error")
        ranef = _conditional_modes(design, res, data_g if several else None)
        q_all = max(ld.Z.shape[1] for ld in design.levels)
        extra: dict[str, Any] = {
            "random_vcov": random_vcov, "fixed_random_vcov": vcov[:p, p:], "nagq": points,
            "integration": integration_sentence(method, points, q_all) + (
                f", over the {len(design.levels)} grouping levels' effects at once" if several else ""),
            "loglik_fixed": ll_fixed, "ranef": ranef, "evaluations": res.evaluations,
            "gradient": res.gradient, "vcov_note": "the inverse of the observed information of (beta, theta): "
                                                   "central second differences of the log likelihood"}
        # The posterior means and SDs the quadrature found on the way (res.marginal.mean/var) are
        # not passed on: FitResult.ebmeans() (results/eb_means.py) computes the same numbers for
        # every engine (to 1e-13 with the same square root of the adapting variance).
        grads = ("forward-difference (then central-difference)" if several else
                 "central-difference" if method in ("laplace", "ghermite") else "analytic (quadrature points held)")
        singular = any(bool(np.min(np.linalg.eigvalsh(Gl)) < 1e-8 * max(1.0, float(np.max(np.diag(Gl)))))
                       for Gl in (res.G if several else [res.G]))
        if len(res.theta) != n_theta:
            raise FitError("internal: the variance parameters do not match the design", engine=_NAME)
        return EngineFit(
            beta=res.beta, theta=res.theta, loglik=res.loglik, converged=res.converged, singular=singular,
            optimizer=(f"BFGS on {method} with {grads} gradients, then Newton steps on the observed information; "
                       f"{res.iterations} BFGS iterations, {res.evaluations} likelihood evaluations"),
            versions={"numpy": np.__version__, "scipy": scipy_version}, warnings=tuple(warns),
            fixed_vcov=fixed_vcov, engine_seconds=seconds, extra=extra)


def _conditional_modes(design: Design, res: Any, levels: Any = None) -> tuple[tuple[str, str, str, float, float], ...]:
    """glmer's ``ranef(condVar = TRUE)`` from the fit: each effect's conditional mode and SD
    (level by level; a level's terms one after another, all groups each, as glmer lists them).
    ``levels``: the several levels' data (:class:`~hlmbridge.inference.glmm_levels.LevelsData`)."""
    m = res.marginal
    if levels is not None:
        from hlmbridge.inference.glmm_levels import conditional_variances, effects

        b_all = effects(levels, res.G, m.u)
        sd_all = np.sqrt(np.maximum(conditional_variances(levels, res.beta, res.G, m.u), 0.0))
    else:
        lam = np.linalg.cholesky(res.G)
        b = m.u @ lam.T
        cond_var = lam[None] @ np.linalg.inv(m.H) @ lam.T[None]
        sds = np.sqrt(np.maximum(np.diagonal(cond_var, axis1=1, axis2=2), 0.0))
    out = []
    pos = 0
    for ld in design.levels:
        q = ld.Z.shape[1]
        labels = ld.group_labels or tuple(str(i) for i in range(ld.n_groups))
        for t in range(q):
            for j in range(ld.n_groups):
                if levels is None:
                    est, sd = b[j, t], sds[j, t]
                else:
                    est, sd = b_all[pos + j * q + t], sd_all[pos + j * q + t]
                out.append((ld.key, labels[j], ld.terms_lme4[t], float(est), float(sd)))
        pos += ld.n_groups * q
    return tuple(out)


def _check_response(design: Design) -> None:
    """The response a GLMM family takes (DataError otherwise), as glmer checks it: 0/1, or a
    proportion in [0, 1] with its trials (positive, finite) making whole numbers of successes."""
    y = design.y
    fam = design.spec.family
    w = design.weights
    if fam == "binomial" and w is not None:
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise DataError("a binomial GLMM's numbers of trials must be finite and positive on the quadrature engine")
        if not np.all((y >= 0) & (y <= 1)):
            bad = y[~((y >= 0) & (y <= 1))][0]
            raise DataError(f"a binomial GLMM with trials needs a proportion in [0, 1]; {design.spec.response!r} "
                            f"has the value {bad:g}")
        s = y * w
        off = np.abs(s - np.round(s)) > 1e-7 * np.maximum(1.0, np.abs(s))
        if np.any(off) or np.any(np.abs(w - np.round(w)) > 1e-7 * w):
            i = int(np.flatnonzero(off | (np.abs(w - np.round(w)) > 1e-7 * w))[0])
            raise DataError(f"a binomial GLMM needs whole numbers of trials and successes (proportion x trials); "
                            f"row {int(design.rows[i]) + 1} has {y[i]:g} x {w[i]:g} = {s[i]:g}")
        return
    if fam == "binomial" and not np.all((y == 0) | (y == 1)):
        bad = y[~((y == 0) | (y == 1))][0]
        raise DataError(f"a binomial GLMM needs a 0/1 response; {design.spec.response!r} has the value {bad:g}")
    if fam == "poisson" and not np.all((y >= 0) & (y == np.round(y))):
        bad = y[~((y >= 0) & (y == np.round(y)))][0]
        raise DataError(f"a Poisson GLMM needs a non-negative whole-number response; {design.spec.response!r} "
                        f"has the value {bad:g}")
