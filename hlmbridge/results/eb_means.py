"""Empirical Bayes means and modes of a GLMM's scalar random effect (Stata's ``predict, reffects``).

Two summaries of the posterior of a group's random effect ``u`` given its responses, at the
fit's estimates (``beta``, ``sigma^2 = var(u)``), with density proportional to
``prod_i f(y_i | eta_i + u) * phi(u; 0, sigma^2)``:

- the **mode** and the SD from the curvature there (Fisher information ``sum w mu_eta^2 / V +
  1/sigma^2``): Stata's ``predict, reffects ebmodes`` with ``reses``, and what glmer's
  ``ranef(condVar = TRUE)`` returns (conditional modes and conditional SDs) — the same numbers
  for the canonical links (logit, log), found here by Fisher scoring;
- the **mean** and **SD** of the posterior: Stata's default ``predict, reffects`` (``ebmeans``)
  with ``reses``. No closed form: computed by adaptive Gauss-Hermite quadrature with ``k``
  points per group, adapted as Stata's ``mvaghermite`` does (started at the mode and curvature,
  then moved to the posterior mean and SD the last pass gave, until they stop moving).

The posterior of a logit or Poisson model is skewed, so means and modes differ, most for small
groups (hospital data, 12 points: by up to 0.14, a tenth of a posterior SD).

Examples
--------
>>> import numpy as np
>>> from hlmbridge.families import family
>>> y = np.array([1.0, 1.0, 0.0, 0.0])
>>> eb = eb_posterior(family("binomial"), y, np.zeros(4), np.array([0, 0, 1, 1]), 2, sd=1.0, points=12)
>>> [round(float(v), 6) for v in eb.modes], bool(eb.means[0] > eb.modes[0] > 0)
([0.674832, -0.674832], True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hlmbridge.errors import FitError, UnsupportedSpecError, UsageError
from hlmbridge.families import Family

__all__ = ["EB_SOURCE", "EbPosterior", "eb_frame", "eb_posterior", "gauss_hermite"]

#: What :func:`eb_frame`'s columns are (its ``attrs["source"]``).
EB_SOURCE = ("empirical Bayes predictions at the fit's estimates: ebmean/ebmean_sd = Stata's predict, reffects "
             "(ebmeans) and reses, the posterior mean and SD by adaptive Gauss-Hermite quadrature (mvaghermite); "
             "ebmode/ebmode_sd = Stata's ebmodes and reses = glmer's ranef(condVar = TRUE), the posterior mode "
             "and the SD from its curvature")


def gauss_hermite(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``x`` and weights ``w`` of ``points``-point Gauss-Hermite quadrature for
    ``integral g(x) exp(-x^2) dx ~ sum w g(x)`` (numpy's ``hermgauss``).

    >>> x, w = gauss_hermite(3)
    >>> round(float(w.sum() / np.sqrt(np.pi)), 12)
    1.0
    """
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 1:
        raise UsageError(f"points must be a positive whole number, got {points!r}")
    return np.polynomial.hermite.hermgauss(int(points))


@dataclass(frozen=True, eq=False)
class EbPosterior:
    """Per group: posterior ``modes`` and ``mode_sd`` (curvature), ``means`` and ``sds``."""

    modes: np.ndarray
    mode_sd: np.ndarray
    means: np.ndarray
    sds: np.ndarray


def _group_sum(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Column-wise sums of ``values`` (n, k) or (n,) by group."""
    if values.ndim == 1:
        return np.bincount(codes, weights=values, minlength=n_groups)
    return np.stack([np.bincount(codes, weights=values[:, j], minlength=n_groups) for j in range(values.shape[1])],
                    axis=1)


def eb_posterior(fam: Family, y: np.ndarray, eta: np.ndarray, codes: np.ndarray, n_groups: int, *, sd: float,
                 points: int, weights: np.ndarray | None = None, tol: float = 1e-10,
                 max_iter: int = 200) -> EbPosterior:
    """Posterior modes, curvature SDs, means and SDs of a scalar random intercept ``u ~ N(0, sd^2)``
    added to the linear predictor ``eta`` (fixed part and offset) of each group (``codes``)."""
    y = np.asarray(y, dtype=float)
    eta = np.asarray(eta, dtype=float)
    codes = np.asarray(codes)
    if not sd > 0:
        raise UsageError(f"the random effect's SD is {sd!r}: with no variance every posterior is the point 0")
    x, w = gauss_hermite(points)
    wt = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    prec = 1.0 / sd**2
    # the mode by Fisher scoring (Newton's method for the canonical links), all groups at once
    u = np.zeros(n_groups)
    for _ in range(max_iter):
        e = eta + u[codes]
        mu = fam.link.linkinv(e)
        d = fam.link.mu_eta(e)
        score = _group_sum(wt * (y - mu) * d / fam.variance(mu), codes, n_groups) - prec * u
        info = _group_sum(wt * d**2 / fam.variance(mu), codes, n_groups) + prec
        step = score / info
        u = u + step
        if np.max(np.abs(step)) < tol:
            break
    else:
        raise FitError(f"the posterior modes did not converge in {max_iter} Fisher-scoring steps")
    e = eta + u[codes]
    mu = fam.link.linkinv(e)
    d = fam.link.mu_eta(e)
    mode_sd = 1.0 / np.sqrt(_group_sum(wt * d**2 / fam.variance(mu), codes, n_groups) + prec)

    def log_post(at: np.ndarray) -> np.ndarray:  # (n_groups, k) log posterior up to a constant
        mu_k = fam.link.linkinv(eta[:, None] + at[codes])
        ll = fam.loglik(np.repeat(y[:, None], len(x), 1), mu_k, np.repeat(wt[:, None], len(x), 1),
                        binomial_constant=False)
        return _group_sum(ll, codes, n_groups) - 0.5 * prec * at**2

    # mean-variance adaptive quadrature (Stata's mvaghermite): start at the mode and curvature
    centre, scale = u.copy(), mode_sd.copy()
    for _ in range(max_iter):
        nodes = centre[:, None] + np.sqrt(2.0) * scale[:, None] * x[None, :]
        lp = log_post(nodes) + x[None, :] ** 2
        a = w[None, :] * np.exp(lp - lp.max(axis=1, keepdims=True))
        a = a / a.sum(axis=1, keepdims=True)
        mean = np.sum(a * nodes, axis=1)
        var = np.sum(a * (nodes - mean[:, None]) ** 2, axis=1)
        moved = max(np.max(np.abs(mean - centre)), np.max(np.abs(np.sqrt(var) - scale)))
        centre, scale = mean, np.sqrt(var)
        if moved < tol:
            break
    else:
        raise FitError(f"the mean-variance adaptation did not settle in {max_iter} passes")
    return EbPosterior(u, mode_sd, centre, scale)


def _points(res: object, points: int | None) -> int:
    if points is not None:
        return int(gauss_hermite(points)[0].size)
    k = res.spec.intpoints  # type: ignore[attr-defined]
    if not k or k < 2:
        raise UsageError("this fit used the Laplace approximation (one point); give points= for the quadrature "
                         "(Stata's default is 7)")
    return int(k)


def eb_frame(res: object, points: int | None = None) -> pd.DataFrame:
    """Stata's empirical Bayes predictions of a GLMM's scalar random effect, one row per group:
    ``ebmean``, ``ebmean_sd`` (``predict, reffects`` and ``reses``), ``ebmode``, ``ebmode_sd``
    (``ebmodes`` and ``reses``; glmer's ``ranef(condVar = TRUE)``). ``points`` defaults to the
    fit's integration points."""
    from hlmbridge.results.glmm_predict import result_family
    from hlmbridge.results.random_effects import estimates_of, require_design

    design = require_design(res, "empirical Bayes means")
    if not res.spec.is_glmm:  # type: ignore[attr-defined]
        raise UnsupportedSpecError("ebmeans()", res.engine, message=(  # type: ignore[attr-defined]
            "ebmeans() belongs to a GLMM; a linear model's posterior means are its conditional modes (ranef())."))
    if len(design.levels) != 1 or design.levels[0].Z.shape[1] != 1 or not np.all(design.levels[0].Z == 1):
        raise UnsupportedSpecError("ebmeans()", res.engine, message=(  # type: ignore[attr-defined]
            "ebmeans() integrates one scalar random intercept at one grouping level; this model has "
            f"{sum(ld.Z.shape[1] for ld in design.levels)} random effects over {len(design.levels)} level(s)."))
    k = _points(res, points)
    beta, theta = estimates_of(res)
    ld = design.levels[0]
    eta = design.X @ beta
    if design.offset is not None:
        eta = eta + design.offset
    post = eb_posterior(result_family(res), design.y, eta, ld.codes, ld.n_groups, sd=float(np.sqrt(theta[0])),
                        points=k, weights=design.weights)
    out = pd.DataFrame({"group": ld.key, "level": list(ld.group_labels), "term": ld.terms_lme4[0],
                        "stata_term": ld.terms_stata[0], "ebmean": post.means, "ebmean_sd": post.sds,
                        "ebmode": post.modes, "ebmode_sd": post.mode_sd})
    out.attrs["source"] = EB_SOURCE
    out.attrs["points"] = k
    return out
