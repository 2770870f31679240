"""hlmbridge's own likelihood for models with a residual-error structure (Stata's ``residuals()``).

The model is ``y = X b + Z u + e`` with ``Var(u)`` from the levels' covariance structures and
``Var(e)`` block-diagonal over the innermost groups, each block ``S R S``: ``R`` the
structure's correlation matrix over the group's times (``ar``, ``ma``, ``exponential``,
``exchangeable``, ``unstructured``), ``S`` the residual SDs (one per ``by()`` group or, for
``unstructured``, per time). ``V = Z G Z' + Var(e)`` is block-diagonal over the outermost
groups; the likelihood is computed densely per block (the models are longitudinal: small blocks).

The parameters (``theta``) are, in Stata's display order, the levels' variance parameters
(:func:`hlmbridge.inference.stata_parity.variance_parameters`, without the residual) and then
the residual structure's, on Stata's scale:

================ ==================================================
independent, by  ``var(e)`` per ``by()`` group (sorted levels)
ar 1             ``rho``, ``var(e)``
ar p             ``phi1`` ... ``phip``, ``var(e)``
ma q             ``theta1`` ... ``thetaq``, ``var(e)``
exponential      ``rho`` (correlation ``rho^|t_i - t_j|``), ``var(e)``
exchangeable     ``var(e)``, ``cov(e)``
unstructured     ``var(e<t>)`` per time, ``cov(e<s>,e<t>)`` per pair
================ ==================================================

ML is the log likelihood with the fixed effects profiled out (at their GLS estimate); REML is
the restricted log likelihood on lme4's and Stata's scale, which is also nlme's (``logLik`` of a REML
``lme`` fit equals lme4's on the same model: -223.50126 on Orthodont). Standard errors come from the Hessian of this
log likelihood (central differences), as the inverse of the observed information; the
confidence intervals are on Stata's transformed scales (log for variances, atanh for ``rho``).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from hlmbridge.spec.parse_stata import parse_stata
>>> from hlmbridge.design.build import build_design
>>> rng = np.random.default_rng(1)
>>> df = pd.DataFrame({"id": np.repeat(np.arange(10), 4), "t": np.tile(np.arange(4), 10)})
>>> df["y"] = rng.normal(size=40) + rng.normal(size=10)[df["id"]]
>>> d = build_design(parse_stata("mixed y t || id:, residuals(ar 1, t(t))"), df)
>>> m = structured_model(d, df)
>>> [p.stata_term for p in m.params]
['var(_cons)', 'rho', 'var(e)']
>>> bool(np.isfinite(m.loglik(np.array([1.0, 0.3, 1.0]))[0]))
True
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design
from hlmbridge.errors import DataError, FitError
from hlmbridge.inference.stata_parity import VarianceParam, level_covariances, variance_parameters
from hlmbridge.spec.residuals import ResidualStructure

__all__ = ["ResidualParam", "StructuredInference", "StructuredModel", "is_level_param", "structured_inference",
           "structured_model", "structured_model_again", "time_problems"]

_LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class ResidualParam:
    """One parameter of the residual structure: ``kind`` is ``var``, ``cov``, ``rho``, ``phi`` or
    ``theta``; ``stata_term`` Stata's row label (``var(e)``, ``rho``, ``male: var(e)``)."""

    kind: str
    stata_term: str
    index: int = 0  # the by() group / time position / order of the parameter
    index2: int = -1  # the second time of a covariance (unstructured)
    level = None
    group = "Residual"

    @property
    def term1(self) -> str:
        return "Residual"

    @property
    def term2(self) -> None:
        return None


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def time_problems(res: ResidualStructure, t: np.ndarray | None, inner: np.ndarray) -> str | None:
    """Why ``t`` cannot carry ``res`` within the innermost groups ``inner`` (None when it can):
    ``ar``/``ma`` need whole-number times, and every structure with ``t()`` distinct times within
    a group (Stata's rule, and nlme's)."""
    if t is None:
        return None
    if res.kind in ("ar", "ma") and not np.all(t == np.round(t)):
        return (f"residuals({res.kind}) needs whole-number times: t({res.t}) has non-integer values "
                f"such as {t[t != np.round(t)][0]:g}")
    order = np.lexsort((t, inner))
    same = (np.diff(inner[order]) == 0) & (np.diff(t[order]) == 0)
    if same.any():
        k = int(np.flatnonzero(same)[0])
        return (f"t({res.t}) repeats within a group: the value {t[order][k]:g} appears more than once in one "
                f"group; {res.stata()} needs distinct times within each group")
    return None


@dataclass(frozen=True, eq=False)
class _Block:
    """The outermost groups of one size n, stacked: every array has a leading axis of B groups."""

    rows: np.ndarray  # B x n
    X: np.ndarray  # B x n x p
    y: np.ndarray  # B x n
    Z: tuple[np.ndarray, ...]  # per level, B x n x q
    codes: tuple[np.ndarray, ...]  # per level, group codes, B x n
    inner: np.ndarray
    t: np.ndarray | None
    by: np.ndarray | None  # by() group index per row (or time index for unstructured)
    same_inner: np.ndarray  # B x n x n: rows in one innermost group
    lag: np.ndarray | None  # |t_i - t_j|, B x n x n


@dataclass(frozen=True, eq=False)
class StructuredModel:
    """The likelihood of one design with a residual structure (see the module docstring)."""

    design: Design
    structure: ResidualStructure
    params: tuple[Any, ...]  # VarianceParam of the levels, then ResidualParam
    n_level_params: int
    blocks: tuple[_Block, ...]
    by_levels: tuple[str, ...]  # by() labels, or the times of an unstructured structure
    time_values: tuple[float, ...]

    # --------------------------------------------------------------- residual covariance
    def _residual_cov(self, rtheta: np.ndarray, b: _Block) -> np.ndarray:
        res = self.structure
        kind = res.kind
        n = b.rows.shape[-1]
        eye = np.eye(n, dtype=bool)
        if kind == "unstructured":
            k = len(self.by_levels)
            C = np.zeros((k, k))
            for j, prm in enumerate(self.params[self.n_level_params:]):
                if prm.kind == "var":
                    C[prm.index, prm.index] = rtheta[j]
                else:
                    C[prm.index, prm.index2] = C[prm.index2, prm.index] = rtheta[j]
            return C[b.by[..., :, None], b.by[..., None, :]] * b.same_inner
        if kind == "exchangeable":
            return np.where(eye, rtheta[0], np.where(b.same_inner, rtheta[1], 0.0))
        var = rtheta[-1] if res.by is None else rtheta[b.by]
        sd = np.sqrt(var) if np.ndim(var) else np.full(b.rows.shape, np.sqrt(var))
        if kind == "independent":
            return eye * (sd * sd)[..., None]
        if kind == "exponential":
            with np.errstate(divide="ignore", invalid="ignore"):
                corr = np.where(b.lag == 0, 1.0, np.power(rtheta[0], b.lag))
        elif kind == "ar":
            corr = _ar_acf(rtheta[:-1], b.lag)
        elif kind == "ma":
            corr = _ma_acf(rtheta[:-1], b.lag)
        else:  # pragma: no cover - refused earlier
            raise FitError(f"no likelihood for residuals({kind})")
        corr = np.where(b.same_inner, corr, 0.0)
        return corr * sd[..., :, None] * sd[..., None, :]

    def block_v(self, theta: np.ndarray, b: _Block, covs: list[np.ndarray] | None = None) -> np.ndarray:
        """``V`` of a stack of outermost groups at ``theta`` (``covs``: the levels' covariance
        matrices at ``theta`` when the caller has them)."""
        if covs is None:
            covs = level_covariances(self.design, np.append(theta[: self.n_level_params], 0.0))
        V = self._residual_cov(np.asarray(theta[self.n_level_params:], dtype=float), b)
        for Zl, cl, G in zip(b.Z, b.codes, covs, strict=True):
            V = V + (Zl @ G @ np.swapaxes(Zl, -1, -2)) * (cl[..., :, None] == cl[..., None, :])
        return V

    def valid(self, theta: np.ndarray) -> bool:
        """Whether ``theta`` lies inside the parameter space (checked by every V being
        positive definite, and the structure's own bounds)."""
        r = theta[self.n_level_params:]
        kind = self.structure.kind
        if kind in ("ar", "exponential") and self.structure.order in (None, 1) and not (-1 < r[0] < 1):
            return False
        if kind == "exponential" and not (0 <= r[0] < 1):
            return False
        if not all(p.kind != "var" or theta[k] >= 0 for k, p in enumerate(self.params)):
            return False
        # Every level's covariance matrix positive semidefinite (V alone can stay positive definite
        # with an impossible G: a correlation beyond +-1 of two random effects).
        covs = level_covariances(self.design, np.append(theta[: self.n_level_params], 0.0))
        for G in covs:
            if G.shape[0] > 1:
                d = np.sqrt(np.maximum(np.diag(G), 1e-300))
                if np.linalg.eigvalsh(G / np.outer(d, d))[0] < -1e-10:
                    return False
        return True  # the residual covariance itself is checked through V's Cholesky factor

    # --------------------------------------------------------------------- likelihood
    def loglik(self, theta: np.ndarray, reml: bool | None = None) -> tuple[float, np.ndarray, np.ndarray]:
        """(log likelihood, GLS fixed effects, their covariance) at ``theta``: ML with the fixed
        effects profiled out, or REML on lme4's/Stata's scale; -inf outside the space."""
        reml = self.design.spec.reml if reml is None else reml
        theta = np.asarray(theta, dtype=float)
        p = self.design.n_fixed
        bad = (-np.inf, np.full(p, np.nan), np.full((p, p), np.nan))
        if not self.valid(theta):
            return bad
        XVX = np.zeros((p, p))
        XVy = np.zeros(p)
        yVy = 0.0
        logdet = 0.0
        covs = level_covariances(self.design, np.append(theta[: self.n_level_params], 0.0))
        for b in self.blocks:
            V = self.block_v(theta, b, covs)
            try:
                L = np.linalg.cholesky(V)
            except np.linalg.LinAlgError:
                return bad
            logdet += 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1))))
            A = np.linalg.solve(L, np.concatenate([b.X, b.y[..., None]], axis=-1))
            XVX += np.einsum("bnp,bnq->pq", A[..., :p], A[..., :p])
            XVy += np.einsum("bnp,bn->p", A[..., :p], A[..., p])
            yVy += float(np.sum(A[..., p] ** 2))
        try:
            Lx = np.linalg.cholesky(XVX)
        except np.linalg.LinAlgError:
            return bad
        beta = np.linalg.solve(XVX, XVy)
        rss = yVy - float(XVy @ beta)
        n = self.design.nobs
        if reml:
            ll = -0.5 * ((n - p) * _LOG_2PI + logdet + 2.0 * float(np.sum(np.log(np.diag(Lx)))) + rss)
        else:
            ll = -0.5 * (n * _LOG_2PI + logdet + rss)
        return float(ll), beta, np.linalg.inv(XVX)

    def steps(self, theta: np.ndarray, relative: float, se: np.ndarray | None = None) -> np.ndarray:
        """Finite-difference steps: ``relative`` times each parameter's own scale (a variance's
        size; a covariance's the SDs' product; a correlation-type parameter's size, at least 0.1),
        at least 0.05 of the parameter's SE when ``se`` is given (a parameter much smaller than its
        SE would otherwise be differenced in rounding noise), kept inside the parameter space for
        the four-point stencils."""
        theta = np.asarray(theta, dtype=float)
        covs = level_covariances(self.design, np.append(theta[: self.n_level_params], 0.0))
        variances = [abs(float(theta[k])) for k, p in enumerate(self.params) if p.kind == "var"]
        floor = 1e-6 * max(variances + [1e-300])
        rtheta = theta[self.n_level_params:]
        scale = np.empty(len(theta))
        for k, prm in enumerate(self.params):
            x = abs(float(theta[k]))
            if prm.kind in ("rho", "phi", "theta"):
                scale[k] = max(x, 0.1)
            elif prm.kind == "cov":
                if is_level_param(prm):
                    i, j = np.argwhere(np.triu(prm.pattern, 1) != 0)[0]
                    G = covs[prm.level]
                    ref = float(np.sqrt(abs(G[i, i] * G[j, j])))
                elif self.structure.kind == "exchangeable":
                    ref = abs(float(rtheta[0]))
                else:
                    ref = float(np.sqrt(abs(rtheta[prm.index] * rtheta[prm.index2])))
                scale[k] = max(x, 0.1 * ref, floor)
            else:
                scale[k] = max(x, floor)
        h = relative * scale
        if se is not None:
            ok = np.isfinite(se) & (se > 0)
            h[ok] = np.maximum(h[ok], 0.05 * se[ok])
        for k, prm in enumerate(self.params):
            if prm.kind == "rho":  # stay inside (-1, 1), and (0, 1) for the exponential's
                room = 1 - abs(float(theta[k]))
                if self.structure.kind == "exponential" and theta[k] > 0:
                    room = min(room, float(theta[k]))
                if room > 0:
                    h[k] = min(h[k], room / 4)
            elif prm.kind == "var" and theta[k] > 0:
                h[k] = min(h[k], float(theta[k]) / 4)
        return h

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """The Hessian of :meth:`loglik` in ``theta`` (central differences, Richardson-extrapolated)."""
        theta = np.asarray(theta, dtype=float)
        k = len(theta)
        h0 = self.steps(theta, 1e-3)

        def f(x: np.ndarray) -> float:
            return self.loglik(x)[0]

        def one(h: np.ndarray) -> np.ndarray:
            H = np.empty((k, k))
            f0 = f(theta)
            for i in range(k):
                ei = np.zeros(k)
                ei[i] = h[i]
                H[i, i] = (f(theta + ei) - 2 * f0 + f(theta - ei)) / h[i] ** 2
                for j in range(i):
                    ej = np.zeros(k)
                    ej[j] = h[j]
                    H[i, j] = H[j, i] = (f(theta + ei + ej) - f(theta + ei - ej) - f(theta - ei + ej)
                                         + f(theta - ei - ej)) / (4 * h[i] * h[j])
            return H

        with np.errstate(invalid="ignore"):  # a stencil point outside the space: -inf - -inf is NaN
            H = (4 * one(h0 / 2) - one(h0)) / 3
            # Again with steps of at least 0.05 SE (from this first Hessian) where they were smaller.
            try:
                se = np.sqrt(np.diag(np.linalg.inv(-H))) if np.all(np.isfinite(H)) else None
            except np.linalg.LinAlgError:
                se = None
            if se is None:
                return H
            h1 = self.steps(theta, 1e-3, se)
            if np.allclose(h1, h0, rtol=0, atol=0):
                return H
            return (4 * one(h1 / 2) - one(h1)) / 3

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """The gradient of :meth:`loglik` (central differences, Richardson-extrapolated)."""
        theta = np.asarray(theta, dtype=float)
        k = len(theta)
        h0 = self.steps(theta, 1e-4)
        g = np.empty(k)
        for i in range(k):
            e = np.zeros(k)
            e[i] = h0[i]
            with np.errstate(invalid="ignore"):  # as in hessian()
                d1 = (self.loglik(theta + e)[0] - self.loglik(theta - e)[0]) / (2 * h0[i])
                d2 = (self.loglik(theta + e / 2)[0] - self.loglik(theta - e / 2)[0]) / h0[i]
                g[i] = (4 * d2 - d1) / 3
        return g

    def polish(self, theta: np.ndarray, steps: int = 4) -> tuple[np.ndarray, int, float]:
        """Newton steps on :meth:`loglik` from ``theta`` (an engine's optimum): each step is taken
        only when it raises the log likelihood (halved up to 10 times otherwise). Returns the
        polished ``theta``, the steps taken and the largest move in SEs."""
        theta = np.asarray(theta, dtype=float).copy()
        start = theta.copy()
        ll = self.loglik(theta)[0]
        taken = 0
        H = None
        for _ in range(steps):
            H = self.hessian(theta)
            g = self.gradient(theta)
            try:
                step = -np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                break
            if not np.all(np.isfinite(step)) or float(g @ step) <= 0:
                break
            t = 1.0
            for _ in range(10):
                cand = theta + t * step
                ll_c = self.loglik(cand)[0]
                if ll_c >= ll:
                    break
                t /= 2
            else:
                break
            if ll_c - ll < 1e-12:
                if ll_c > ll:
                    theta, ll = cand, ll_c
                    taken += 1
                break
            theta, ll = cand, ll_c
            taken += 1
        move = 0.0
        if H is not None:
            try:
                se = np.sqrt(np.maximum(np.diag(np.linalg.inv(-H)), 0.0))
                ok = np.isfinite(se) & (se > 0)
                move = float(np.max(np.abs(theta - start)[ok] / se[ok])) if ok.any() else 0.0
            except np.linalg.LinAlgError:
                move = float("nan")
        return theta, taken, move


def _ar_acf(phi: np.ndarray, lag: np.ndarray) -> np.ndarray:
    """The autocorrelations of a stationary AR(p) at integer lags (Yule-Walker)."""
    phi = np.asarray(phi, dtype=float)
    p = len(phi)
    maxlag = int(lag.max()) if lag.size else 0
    if p == 1:
        with np.errstate(invalid="ignore"):
            return np.power(phi[0], lag)
    # rho_k = sum_j phi_j rho_{|k-j|}, k = 1..p, with rho_0 = 1: solve for rho_1..rho_p
    A = np.eye(p)
    rhs = np.zeros(p)
    for k in range(1, p + 1):
        for j in range(1, p + 1):
            m = abs(k - j)
            if m == 0:
                rhs[k - 1] += phi[j - 1]
            else:
                A[k - 1, m - 1] -= phi[j - 1]
    rho = list(np.concatenate([[1.0], np.linalg.solve(A, rhs)]))
    for k in range(p + 1, maxlag + 1):
        rho.append(sum(phi[j - 1] * rho[k - j] for j in range(1, p + 1)))
    acf = np.asarray(rho)
    return acf[lag.astype(int)]


def _ma_acf(theta: np.ndarray, lag: np.ndarray) -> np.ndarray:
    """The autocorrelations of an MA(q) ``e_t = u_t + theta_1 u_{t-1} + ...`` at integer lags."""
    c = np.concatenate([[1.0], np.asarray(theta, dtype=float)])
    q = len(c) - 1
    gamma = np.array([float(c[: len(c) - k] @ c[k:]) for k in range(q + 1)])
    acf = np.zeros(int(lag.max()) + 1 if lag.size else 1)
    acf[: min(q + 1, len(acf))] = (gamma / gamma[0])[: len(acf)]
    return acf[lag.astype(int)]


def _residual_params(res: ResidualStructure, by_levels: tuple[str, ...]) -> list[ResidualParam]:
    if res.kind == "independent":
        return [ResidualParam("var", f"{lab}: var(e)", i) for i, lab in enumerate(by_levels)]
    if res.kind == "exchangeable":
        return [ResidualParam("var", "var(e)"), ResidualParam("cov", "cov(e)")]
    if res.kind == "unstructured":
        out = [ResidualParam("var", f"var(e{lab})", i) for i, lab in enumerate(by_levels)]
        out += [ResidualParam("cov", f"cov(e{by_levels[i]},e{by_levels[j]})", i, j)
                for i in range(len(by_levels)) for j in range(i + 1, len(by_levels))]
        return out
    if res.kind == "exponential" or (res.kind == "ar" and res.order == 1):
        corr = [ResidualParam("rho", "rho")]
    else:
        name = "phi" if res.kind == "ar" else "theta"
        corr = [ResidualParam(name, f"{name}{k}", k) for k in range(1, int(res.order or 1) + 1)]
    return corr + [ResidualParam("var", "var(e)")]


def structured_model(design: Design, data: pd.DataFrame) -> StructuredModel:
    """The likelihood of ``design`` (whose spec has a residual structure) on ``data``, the frame
    the design was built from (``design.rows`` index it)."""
    res = design.spec.residuals
    if res is None:
        raise FitError("structured_model needs a spec with a residual structure")
    if design.weights is not None or design.offset is not None:
        raise DataError(f"{res.stata()} with weights= or an offset is not supported")
    levels = design.levels
    top = int(np.argmin([ld.n_groups for ld in levels]))
    inner_i = int(np.argmax([ld.n_groups for ld in levels]))
    top_codes = levels[top].codes
    inner = levels[inner_i].codes
    for ld in levels:  # nested: each group of every level inside one outermost group
        pairs = np.unique(np.column_stack([ld.codes, top_codes]), axis=0)
        if len(pairs) != ld.n_groups:
            raise FitError(f"{res.stata()} needs nested levels: {ld.name} is not nested in {levels[top].name}")
    rows = design.rows
    t = data[res.t].to_numpy(dtype=float)[rows] if res.t is not None else None
    problem = time_problems(res, t, inner)
    if problem:
        raise DataError(problem)
    by_levels: tuple[str, ...] = ("",)
    by_idx = None
    if res.by is not None:
        col = data[res.by].iloc[rows]
        codes, uniques = pd.factorize(col, sort=True)
        if len(uniques) < 2:
            raise DataError(f"by({res.by}) has one level in the estimation sample ({_label(uniques[0])}); "
                            "residuals(independent, by()) needs at least two")
        by_levels, by_idx = tuple(_label(u) for u in uniques), codes
    times: tuple[float, ...] = ()
    if res.kind == "unstructured":
        assert t is not None
        tv, codes = np.unique(t, return_inverse=True)
        times, by_levels, by_idx = tuple(tv.tolist()), tuple(_label(v) for v in tv), codes
    params = tuple(variance_parameters(design)[:-1]) + tuple(_residual_params(res, by_levels))
    blocks = []
    order = np.argsort(top_codes, kind="stable")
    sizes = np.bincount(top_codes, minlength=levels[top].n_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for n in np.unique(sizes):  # one stack per group size: batched algebra, no loop over groups
        r = np.stack([order[s : s + n] for s in starts[sizes == n]])
        inn = inner[r]
        tt = t[r] if t is not None else None
        blocks.append(_Block(
            rows=r, X=design.X[r], y=design.y_fit[r], Z=tuple(ld.Z[r] for ld in levels),
            codes=tuple(ld.codes[r] for ld in levels), inner=inn, t=tt,
            by=by_idx[r] if by_idx is not None else None, same_inner=inn[..., :, None] == inn[..., None, :],
            lag=np.abs(tt[..., :, None] - tt[..., None, :]) if tt is not None else None))
    # The structure's own columns (t(), by()) are kept for post-fit computations on the design
    # (structured_model_again); a weak key: nothing outlives the design.
    _STRUCTURE_COLUMNS[design] = data[[c for c in dict.fromkeys((res.t, res.by)) if c is not None]].copy()
    return StructuredModel(design, res, params, len(variance_parameters(design)) - 1, tuple(blocks), by_levels,
                           times)


_STRUCTURE_COLUMNS: weakref.WeakKeyDictionary[Design, pd.DataFrame] = weakref.WeakKeyDictionary()


def structured_model_again(design: Design) -> StructuredModel:
    """The :class:`StructuredModel` of a design that :func:`structured_model` has seen (the fit's),
    rebuilt from the structure's columns kept then (the design's arrays hold no ``t()``/``by()``)."""
    frame = _STRUCTURE_COLUMNS.get(design)
    if frame is None:
        raise FitError("this design was not built for a fit with a residual structure in this session: refit to "
                       "get the quantities that need the structure's residual covariance")
    return structured_model(design, frame)


def is_level_param(prm: Any) -> bool:
    """True for a random-effects level's parameter (a VarianceParam), False for the residual's."""
    return isinstance(prm, VarianceParam)


#: The normal 97.5% quantile (as hlmbridge.fit's Z_95).
_Z_95 = 1.959963984540054


@dataclass(frozen=True, eq=False)
class StructuredInference:
    """Everything Stata prints about the variance parameters of a structured model at ``theta``:
    the log likelihood, the GLS fixed effects and their covariance, the parameters' covariance
    (inverse of minus the Hessian of the log likelihood; NaN where it is not positive definite)
    and the random-effects table rows (:attr:`rows`, FitResult's ``random_rows`` layout)."""

    loglik: float
    beta: np.ndarray
    fixed_vcov: np.ndarray
    random_vcov: np.ndarray
    rows: tuple[tuple[Any, ...], ...]


def structured_inference(model: StructuredModel, theta: np.ndarray) -> StructuredInference:
    """The inference of ``model`` at ``theta``; CIs on Stata's scales: a variance's on the log
    scale, ``rho``'s on the atanh scale, the others' (covariances, ``phi``, ``theta``) as they are."""
    from hlmbridge.inference.stata_parity import lme4_block_name

    theta = np.asarray(theta, dtype=float)
    ll, beta, fixed_vcov = model.loglik(theta)
    H = model.hessian(theta)
    try:
        vcov = np.linalg.inv(-H) if np.all(np.isfinite(H)) else np.full(H.shape, np.nan)
    except np.linalg.LinAlgError:
        vcov = np.full(H.shape, np.nan)
    if not np.all(np.isfinite(H)) or not np.all(np.linalg.eigvalsh(-0.5 * (H + H.T)) > 0):
        vcov = np.full(H.shape, np.nan)
    rows = []
    for k, prm in enumerate(model.params):
        value = float(theta[k])
        se = float(np.sqrt(vcov[k, k])) if vcov[k, k] > 0 else float("nan")
        lo = hi = float("nan")
        if np.isfinite(se):
            if prm.kind == "var" and value > 0:
                half = _Z_95 * se / value
                with np.errstate(over="ignore"):  # a variance near zero: the CI is (0, inf)
                    lo, hi = value * np.exp(-half), value * np.exp(half)
            elif prm.kind == "rho" and abs(value) < 1:
                z, half = np.arctanh(value), _Z_95 * se / (1 - value * value)
                lo, hi = float(np.tanh(z - half)), float(np.tanh(z + half))
            elif prm.kind != "var":
                lo, hi = value - _Z_95 * se, value + _Z_95 * se
        block = lme4_block_name(model.design, prm) if is_level_param(prm) else "Residual"
        rows.append((prm.group, prm.kind, prm.term1, prm.term2, prm.stata_term, value, se, float(lo), float(hi),
                     block))
    return StructuredInference(ll, beta, fixed_vcov, vcov, tuple(rows))
