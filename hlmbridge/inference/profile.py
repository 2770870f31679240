"""Profile-likelihood confidence intervals, computed from hlmbridge's own likelihood.

For every parameter -- each random-effect standard deviation and correlation, the residual
standard deviation, and each fixed effect -- the ML log likelihood is maximized over all the
other parameters with that one held at a value ``v`` (the fixed effects at their GLS values
given the variance parameters, the variance parameters by a bounded quasi-Newton search).
The signed root ``zeta(v) = sign(v - est) * sqrt(2 * (ll_max - ll_v))`` crosses
``+/- qnorm((1 + level) / 2)`` at the interval's ends; hlmbridge finds these crossings by
root finding on the exact profile (lme4 interpolates a spline through profile points, so the
two agree to about 1e-5 relative).

As lme4's ``confint(fit, method = "profile")`` does, **the profile is always the ML
deviance**: lme4's ``profile.merMod`` refits a REML fit by ML first (``refitML`` in
``devfun2``), so its intervals for a REML fit are centred on the ML estimates, and so are
hlmbridge's. The REML criterion does not depend on the fixed effects, so it could not profile
them anyway. The ``estimate`` column therefore holds the ML estimates.

Scales. The random part is profiled on lme4's sd/correlation scale (``sd_(Intercept)|id``,
``cor_ses.(Intercept)|id``, ``sigma``); the variance-scale interval Stata users expect
(``var(_cons)``, ``var(Residual)``) of a standard deviation is its interval squared (a
profile interval is invariant under a monotone map), and a covariance (``cov(ses,_cons)``)
is profiled on its own, holding the covariance fixed. A bound that the profile does not
reach before the parameter space ends (a standard deviation of 0, a correlation of +/-1) is
reported as that end, as lme4 does.

No engine is called: the profile needs only the fit's design, so it works the same for fits
from either engine, and for the lme4 engine it needs no R call per point. Each point needs the
log likelihood alone: from per-block cross-products, or on a crossed design with many random
effects from the sparse module's block elimination (one ``q2 x q2`` Cholesky factor per point,
``q2`` the effects outside the largest level), so that lme4's InstEval with 40 instructors
(1,830 effects) is profiled in about 5 CPU seconds, as lme4 does.

Examples
--------
>>> import numpy as np, pandas as pd
>>> import hlmbridge
>>> rng = np.random.default_rng(3)
>>> g = np.repeat(np.arange(12), 8)
>>> df = pd.DataFrame({"y": 2 + rng.normal(size=96) + rng.normal(size=12)[g], "g": g})
>>> res = hlmbridge.fit("y ~ 1 + (1 | g)", df, engine="statsmodels", reml=False)
>>> ci = profile_ci(res)
>>> ci["term"].tolist()
['sd_(Intercept)|g', 'sigma', '(Intercept)']
>>> bool((ci["conf_low"] < ci["estimate"]).all() and (ci["estimate"] < ci["conf_high"]).all())
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from hlmbridge.design.cache import per_design
from hlmbridge.errors import FitError, UsageError
from hlmbridge.threads import with_bounded_blas

__all__ = ["PROFILE_COLUMNS", "profile_ci"]

#: Columns of :func:`profile_ci`'s frame.
PROFILE_COLUMNS: tuple[str, ...] = (
    "term", "stata_term", "effect", "group", "scale", "estimate", "conf_low", "conf_high",
    "var_estimate", "var_conf_low", "var_conf_high",
)

_BAD = 1e30  # the objective at an infeasible point (a covariance matrix that is not PSD)


@dataclass(frozen=True)
class _Param:
    """One variance parameter: its lme4 name, Stata term and how it maps to the variance scale."""

    index: int  # position in variance_parameters(design)
    kind: str  # "sd", "cor" or "sigma"
    term: str  # lme4's confint(oldNames = FALSE) name
    stata_term: str  # Stata's variance-scale name
    group: str
    diag: tuple[int, int] | None  # for "cor": the two diagonal entries (level term indices)


class _Profiler:
    """ML log likelihood of one design as a function of sd/cor (or var/cov) parameters."""

    def __init__(self, design: Any, theta0: np.ndarray) -> None:
        from hlmbridge.inference.stata_parity import lme4_block_name, variance_parameters

        self.design = design
        self.vp = variance_parameters(design)
        self.K = len(self.vp)
        self.params: list[_Param] = []
        for k, p in enumerate(self.vp):
            if p.level is None:
                self.params.append(_Param(k, "sigma", "sigma", p.stata_term, "Residual", None))
                continue
            grp = lme4_block_name(design, p)
            if p.kind == "var":
                self.params.append(_Param(k, "sd", f"sd_{p.term1}|{grp}", p.stata_term, p.group, None))
            else:
                terms = list(design.levels[p.level].terms_lme4)
                ii, jj = np.nonzero(np.triu(p.pattern, 1))
                a, b = int(ii[0]), int(jj[0])
                later, earlier = (terms[b], terms[a]) if b > a else (terms[a], terms[b])
                self.params.append(_Param(k, "cor", f"cor_{later}.{earlier}|{grp}", p.stata_term, p.group, (a, b)))
        self.calls = 0
        # The log likelihood alone, without the information matrices evaluate() also computes:
        # from per-block cross-products (nested levels, or a small crossed design as one dense
        # block), or from the sparse random-effects system where evaluate() takes that path.
        from hlmbridge.inference.stata_parity import _path, uses_sparse_algebra

        self.dense_blocks = not uses_sparse_algebra(design)
        self.nested = _path(design) == "nested"  # block-recursive (hlmbridge.inference.nested)
        self.theta0 = np.asarray(theta0, dtype=float)

    # ---- maps between scales ----------------------------------------------------------------
    def _diag(self, theta: np.ndarray, level: int) -> np.ndarray:
        q = self.design.levels[level].Z.shape[1]
        out = np.zeros(q)
        for k, p in enumerate(self.vp):
            if p.level == level and p.kind == "var":
                out += theta[k] * np.diag(p.pattern)
        return out

    def theta_from_sdcor(self, phi: np.ndarray) -> np.ndarray:
        theta = np.empty(self.K)
        for prm in self.params:
            if prm.kind != "cor":
                theta[prm.index] = phi[prm.index] ** 2
        for prm in self.params:
            if prm.kind == "cor":
                d = self._diag(theta, self.vp[prm.index].level)
                a, b = prm.diag  # type: ignore[misc]
                theta[prm.index] = phi[prm.index] * np.sqrt(d[a] * d[b])
        return theta

    def sdcor_from_theta(self, theta: np.ndarray) -> np.ndarray:
        phi = np.empty(self.K)
        for prm in self.params:
            if prm.kind != "cor":
                phi[prm.index] = np.sqrt(max(theta[prm.index], 0.0))
            else:
                d = self._diag(theta, self.vp[prm.index].level)
                a, b = prm.diag  # type: ignore[misc]
                den = np.sqrt(d[a] * d[b])
                phi[prm.index] = float(np.clip(theta[prm.index] / den, -1, 1)) if den > 0 else 0.0
        return phi

    # ---- the likelihood ---------------------------------------------------------------------
    def parts(self, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
        """(ML log likelihood at the GLS fixed effects, GLS fixed effects, their covariance)."""
        from hlmbridge.inference.optimum import is_feasible

        self.calls += 1
        if not is_feasible(self.design, theta):
            return None
        try:
            if self.nested:
                from hlmbridge.inference.nested import nested_ml_parts

                return nested_ml_parts(self.design, theta)
            if self.dense_blocks:
                return _ml_parts(self.design, theta)
            return _sparse_ml_parts(self.design, theta)
        except (FitError, np.linalg.LinAlgError, FloatingPointError):
            return None

    def loglik(self, point: np.ndarray, scale: str = "sdcor", fixed: tuple[int, float] | None = None) -> float:
        """Log likelihood at variance parameters ``point`` (``scale`` "sdcor" or "varcov"); with
        ``fixed = (j, v)`` the fixed effect j is held at v, the others at their conditional GLS."""
        theta = self.theta_from_sdcor(point) if scale == "sdcor" else point
        got = self.parts(theta)
        if got is None:
            return -np.inf
        ll, beta, vcov = got
        if fixed is not None:
            j, v = fixed
            ll -= 0.5 * (v - beta[j]) ** 2 / vcov[j, j]
        return float(ll)

    def bounds(self, scale: str) -> list[tuple[float | None, float | None]]:
        out: list[tuple[float | None, float | None]] = []
        for prm in self.params:
            if scale == "sdcor":
                out.append((-1.0, 1.0) if prm.kind == "cor" else (0.0, None))
            else:
                out.append((None, None) if prm.kind == "cor" else (0.0, None))
        return out

    def maximize(self, start: np.ndarray, scale: str, hold: int | None = None, value: float = 0.0,
                 fixed: tuple[int, float] | None = None, *, leave_boundary: bool = True) -> tuple[float, np.ndarray]:
        """Maximize over the sd/cor parameters (all but ``hold``, which is held at ``value``).

        A standard deviation at 0 is a stationary point of the log likelihood (it is even in
        each sd), so a search that starts or ends there cannot leave it even when the
        constrained maximum is inside (Dyestuff2's intercept profile: sd 0.48 at the interval's
        ends, where the fit has sd 0). So when a free sd ends at 0 (or below 1e-3 of the largest
        sd, where its gradient, proportional to it, is as flat) the search is run again from that
        sd at a quarter of the largest sd (sigma included) and the better of the two is kept
        (``leave_boundary=False`` skips this).

        ``start`` and the point returned are on the sd/cor scale. ``scale="cov"`` holds the
        *covariance* ``hold`` (a correlation's parameter) at ``value``: the two standard
        deviations it joins become ``m e^u`` and ``m e^-u`` with ``m = sqrt(|value| / r)`` and the
        correlation ``sign(value) r``, ``0 < r <= 1``, so every point searched keeps the covariance.
        """
        start = np.asarray(start, dtype=float)
        bnds = self.bounds("sdcor")
        special: list[int] = []
        pair: tuple[int, int] | None = None
        if scale == "cov" and value != 0.0:
            prm = self.params[hold]  # type: ignore[index]
            level = self.vp[prm.index].level
            a_, b_ = prm.diag  # type: ignore[misc]
            ia = next(k for k, p in enumerate(self.vp) if p.level == level and p.kind == "var" and p.pattern[a_, a_])
            ib = next(k for k, p in enumerate(self.vp) if p.level == level and p.kind == "var" and p.pattern[b_, b_])
            pair = (ia, ib)
            special = [hold, ia, ib]  # type: ignore[list-item]
        elif scale == "cov":
            scale = "sdcor"  # a zero covariance is a zero correlation
        free = [k for k in range(self.K) if k != hold and k not in special]
        big = float(np.max(np.abs(start)))
        x_scale = np.array([max(abs(start[k]), 1e-3 * big, 1e-8) for k in free])
        b = [(None if bnds[k][0] is None else bnds[k][0] / xs, None if bnds[k][1] is None else bnds[k][1] / xs)
             for k, xs in zip(free, x_scale)]
        x0 = [min(max(start[k] / xs, lo if lo is not None else -np.inf), hi if hi is not None else np.inf)
              for k, xs, (lo, hi) in zip(free, x_scale, b)]
        if pair is not None:
            sa, sb = max(start[pair[0]], 1e-8), max(start[pair[1]], 1e-8)
            r0 = min(max(abs(value) / (sa * sb) if pair[0] != pair[1] else abs(value) / sa**2, 1e-6), 1.0)
            x0 += [0.5 * np.log(sa / sb) if pair[0] != pair[1] else 0.0, r0]
            b += [(-30.0, 30.0) if pair[0] != pair[1] else (0.0, 0.0), (1e-12, 1.0)]

        def full(x: np.ndarray) -> np.ndarray:
            pt = np.array(start, dtype=float)
            pt[free] = x[: len(free)] * x_scale
            if pair is not None:
                u, r = x[len(free)], x[len(free) + 1]
                m = np.sqrt(abs(value) / r)
                pt[pair[0]], pt[pair[1]] = m * np.exp(u), m * np.exp(-u)
                pt[hold] = np.sign(value) * r
            elif hold is not None:
                pt[hold] = value
            return pt

        def obj(x: np.ndarray) -> float:
            ll = self.loglik(full(x), "sdcor", fixed)
            return -ll if np.isfinite(ll) else _BAD

        x = np.array(x0, dtype=float)
        if len(x):
            best = optimize.minimize(obj, x, method="L-BFGS-B", bounds=b,
                                     options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 500, "eps": 1e-7})
            x = best.x
            # A restart from the optimum with a finer difference step: the end of an interval moves
            # by the error of the log likelihood here, so this polish is worth its cost.
            again = optimize.minimize(obj, x, method="L-BFGS-B", bounds=b,
                                      options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 200, "eps": 1e-8})
            if again.fun <= best.fun:
                x = again.x
        pt = full(x)
        ll = self.loglik(pt, "sdcor", fixed)
        if leave_boundary:
            scale_sd = max(float(pt[k]) for k in range(self.K) if self.params[k].kind != "cor")
            stuck = [k for k in free if self.params[k].kind == "sd" and pt[k] <= 1e-3 * scale_sd]
            if stuck:
                away = np.array(pt, dtype=float)
                away[stuck] = 0.25 * scale_sd
                ll2, pt2 = self.maximize(away, scale, hold, value, fixed, leave_boundary=False)
                if ll2 > ll:
                    return ll2, pt2
        return ll, pt


def _ml_parts(design: Any, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The ML log likelihood at the GLS fixed effects, from the design's per-block cross-products
    (the Woodbury forms of :func:`hlmbridge.inference.stata_parity.evaluate`, log likelihood only)."""
    from hlmbridge.inference.stata_parity import _blocks

    bl = _blocks(design)
    s2 = float(theta[-1])
    D = np.einsum("k,kbij->bij", theta[:-1], bl.patterns)
    Q = bl.M.shape[-1]
    A = s2 * np.eye(Q) + bl.M @ D
    sign, logdet_a = np.linalg.slogdet(A)
    if np.any(sign <= 0):
        return None
    W = np.swapaxes(np.linalg.solve(np.swapaxes(A, -1, -2), D), -1, -2)
    XZW = np.swapaxes(bl.ZX, -1, -2) @ W
    XtVX = (bl.XX - XZW @ bl.ZX).sum(axis=0) / s2
    XtVy = (bl.Xy - np.einsum("bpq,bq->bp", XZW, bl.Zy)).sum(axis=0) / s2
    vcov = np.linalg.inv(XtVX)
    b = vcov @ XtVy
    Zr = bl.Zy - bl.ZX @ b
    rr = bl.yy - 2 * bl.Xy @ b + np.einsum("p,bpq,q->b", b, bl.XX, b)
    quad = float(np.sum(rr - np.einsum("bi,bij,bj->b", Zr, W, Zr))) / s2
    logdet = float(np.sum(bl.n * np.log(s2) + logdet_a - Q * np.log(s2)))
    ll = -0.5 * (design.nobs * np.log(2 * np.pi) + logdet + quad)
    if design.weights is not None:
        ll += 0.5 * float(np.sum(np.log(design.weights)))
    if not np.isfinite(ll):
        return None
    return ll, b + bl.b0, vcov


def _sparse_ml_parts(design: Any, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """:func:`_ml_parts` for a crossed design with many random effects, from the sparse
    random-effects system of :mod:`hlmbridge.inference.sparse`: its block elimination where it
    applies (:class:`_LeanBlocks`), else its sparse Cholesky factor; one factorization and a few
    solves per point, none of the derivatives that
    :func:`~hlmbridge.inference.sparse.sparse_evaluate` adds."""
    from hlmbridge.inference.sparse import _Factor, _prepare

    sd = _prepare(design)
    p = sd.X.shape[1]
    s2 = float(theta[-1])
    if not s2 > 0:
        return None
    rho = np.asarray(theta[:-1], dtype=float) / s2
    lean = _lean_blocks(design)
    if lean is not None:
        got = lean.quadratic(rho)
        if got is None:
            return None
        logdet, GWG = got
        C = (lean.Hxy - GWG) / s2  # [X y]'V^-1 [X y]
    else:
        f = _Factor(sd, rho)
        XV = f.vinv(np.column_stack([sd.X, sd.y]), s2)
        C = np.column_stack([sd.X, sd.y]).T @ XV
        logdet = f.logdet
    n = sd.X.shape[0]
    XtVX, XtVy = C[:p, :p], C[:p, p]
    vcov = np.linalg.inv(XtVX)
    b = vcov @ XtVy
    quad = float(C[p, p] - XtVy @ b)  # r'V^-1 r at the GLS b
    ll = -0.5 * (n * np.log(2 * np.pi) + n * np.log(s2) + logdet + quad)
    if design.weights is not None:
        ll += 0.5 * float(np.sum(np.log(design.weights)))
    if not np.isfinite(ll):
        return None
    return ll, b + sd.b0, vcov


class _LeanBlocks:
    """The log determinant and ``[X y]'Z W Z'[X y]`` of the sparse module's block elimination
    (:class:`hlmbridge.inference.sparse._BlockFactor`, whose notation this follows), with only
    what the likelihood needs: per point the blocks ``W1`` of the largest level, the ``q2 x q2``
    Schur complement ``S = I + L2'(M22 - M12'W1 M12)L2`` and its Cholesky factor; ``Z'[X y]``,
    ``[X y]'[X y]`` and the split of ``Z'Z`` are made once."""

    def __init__(self, sd: Any) -> None:
        bs = sd.blocks
        self.sd, self.bs = sd, bs
        self.q1 = bs.groups * bs.ql
        A = np.column_stack([sd.X, sd.y])
        G = np.vstack([sd.ZX.T, np.asarray(sd.ZT @ sd.y)[None, :]]).T  # Z'[X y]
        self.G1, self.G2 = G[:self.q1], G[self.q1:]
        self.Hxy = A.T @ A
        self.M12 = bs.M12
        self.M12T = bs.M12.T.tocsr()
        self.rest = [li for li in sorted(range(len(sd.level_cols)), key=lambda i: sd.level_cols[i][0])
                     if li != bs.level]

    def quadratic(self, rho: np.ndarray) -> tuple[float, np.ndarray] | None:
        """``(log|I + Z D Z'|, [X y]'Z W Z'[X y])`` at relative covariances ``rho``; None off
        the feasible set."""
        import scipy.sparse as sp
        from scipy.linalg import cho_solve, cholesky

        from hlmbridge.inference.sparse import _blocks_csr, _level_matrices, _root

        sd, bs = self.sd, self.bs
        roots = [_root(m) for m in _level_matrices(sd, rho)]
        if any(r is None for r in roots):
            return None
        L1 = roots[bs.level]
        ql = bs.ql
        H1 = np.eye(ql)[None] + L1.T[None] @ bs.M11 @ L1[None]
        sign, logdet1 = np.linalg.slogdet(H1)
        if np.any(sign <= 0):
            return None
        W1 = L1[None] @ np.linalg.solve(H1, np.broadcast_to(L1.T, H1.shape))
        W1 = 0.5 * (W1 + np.swapaxes(W1, 1, 2))
        M12 = self.M12
        if ql == 1:
            w = W1[:, 0, 0]
            W1M12 = sp.csr_matrix((M12.data * np.repeat(w, np.diff(M12.indptr)), M12.indices, M12.indptr),
                                  shape=M12.shape)
            W1G1 = w[:, None] * self.G1
        else:
            W1M12 = (_blocks_csr(W1) @ M12).tocsr()
            W1G1 = (W1 @ self.G1.reshape(bs.groups, ql, -1)).reshape(self.G1.shape)
        K22 = bs.M22 - (self.M12T @ W1M12).toarray()
        # L2: the other levels' roots repeated over their groups (diagonal for scalar terms).
        l2 = [(sd.level_cols[li][1], roots[li]) for li in self.rest]
        if all(r.shape == (1, 1) or not np.any(r - np.diag(np.diagonal(r))) for _, r in l2):
            d = np.concatenate([np.tile(np.diagonal(r), g) for g, r in l2])
            S = K22 * np.outer(d, d)

            def l2x(x: np.ndarray) -> np.ndarray:
                return d[:, None] * x
            l2t = l2x
        else:
            L2 = sp.block_diag([sp.kron(sp.identity(g), r) for g, r in l2], format="csr").toarray()
            S = L2.T @ K22 @ L2

            def l2x(x: np.ndarray) -> np.ndarray:
                return L2 @ x

            def l2t(x: np.ndarray) -> np.ndarray:
                return L2.T @ x
        S = 0.5 * (S + S.T)
        S[np.diag_indices_from(S)] += 1.0
        try:
            Ls = cholesky(S, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None
        logdet = float(logdet1.sum() + 2 * np.log(np.diagonal(Ls)).sum())
        # W Z'a: w2 = L2 S^-1 L2'(u2 - W1M12' u1), w1 = W1 u1 - W1M12 w2 (u = Z'[X y]).
        w2 = l2x(cho_solve((Ls, True), l2t(self.G2 - W1M12.T @ self.G1), check_finite=False))
        w1 = W1G1 - W1M12 @ w2
        GWG = self.G1.T @ w1 + self.G2.T @ w2
        return logdet, 0.5 * (GWG + GWG.T)


@per_design
def _lean_blocks(design: Any) -> _LeanBlocks | None:
    """The design's :class:`_LeanBlocks` (made once), None where the sparse module factors instead."""
    from hlmbridge.inference.sparse import _prepare

    sd = _prepare(design)
    return None if sd.blocks is None else _LeanBlocks(sd)


def _crossing(zeta: Callable[[float], float], est: float, step: float, direction: int, target: float,
              bound: float | None) -> float:
    """Where ``|zeta|`` reaches ``target`` on one side of ``est`` (``bound`` if it never does).

    zeta is close to linear in the parameter, so secant steps from the Wald guess find the
    crossing in a few evaluations; once a bracket is known, Brent's method finishes the job.
    """
    def clip(v: float) -> float:
        if bound is not None and (v - bound) * direction >= 0:
            return bound
        return v

    def f(v: float) -> float:
        return abs(zeta(v)) - target

    inside_v, inside_f = est, -target  # the last point known to be inside the interval
    v = clip(est + direction * step * target)
    for _ in range(80):
        fv = f(v)
        if fv >= 0:  # a bracket [inside, v]
            if abs(fv) < 1e-10:
                return float(v)
            return float(optimize.brentq(f, inside_v, v, xtol=1e-10 * max(1.0, abs(v)), rtol=1e-12))
        if bound is not None and v == bound:
            return bound
        # Secant through the two points inside, extrapolated past the crossing a little.
        slope = (fv - inside_f) / (v - inside_v)
        inside_v, inside_f = v, fv
        nxt = v - fv / slope * 1.02 if slope * direction > 0 else v + direction * 2 * abs(v - est)
        if (nxt - v) * direction <= 0 or not np.isfinite(nxt):
            nxt = v + direction * 2 * abs(v - est)
        nxt = v + min(abs(nxt - v), 4 * abs(v - est) + step) * direction
        v = clip(nxt)
    raise FitError(f"the profile does not reach the interval's end (last point {v})")


@with_bounded_blas
def profile_ci(result: Any, level: float = 0.95, which: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Profile-likelihood intervals for every parameter of ``result`` (see the module docstring).

    ``which``: None (all), ``"ran_pars"``, ``"fixed"``, or a list of names (lme4's
    ``sd_(Intercept)|id``, ``sigma``, a fixed-effect term, or a Stata name such as
    ``var(_cons)`` or ``_cons``). Columns are :data:`PROFILE_COLUMNS`: ``estimate``,
    ``conf_low``, ``conf_high`` on lme4's sd/cor scale (fixed effects on theirs), and
    ``var_estimate``, ``var_conf_low``, ``var_conf_high`` on the variance/covariance scale
    (NaN for fixed effects). Estimates are ML estimates, also for a REML fit (as lme4).
    """
    if getattr(result, "design", None) is None:
        raise UsageError("profile_ci needs the fit's design, which a result rebuilt from JSON (from_dict) or "
                         "returned by fit_many does not carry: refit with hlmbridge.fit")
    if not (isinstance(level, float | int) and 0 < float(level) < 1):
        raise UsageError(f"level must be a number between 0 and 1, got {level!r}")
    design = result.design
    theta_fit = np.array([r[5] for r in result.random_rows], dtype=float)
    prof = _Profiler(design, theta_fit)
    fixed_terms = [r[0] for r in result.fixed_rows]
    fixed_stata = [r[1] for r in result.fixed_rows]
    fixed_se = np.array([r[3] for r in result.fixed_rows], dtype=float)
    wanted = _select(which, prof.params, fixed_terms, fixed_stata)

    # The ML optimum on hlmbridge's own likelihood (a polish of an ML fit; a refit of a REML one).
    phi0 = prof.sdcor_from_theta(theta_fit)
    ll_max, phi_hat = prof.maximize(phi0, "sdcor")
    if not np.isfinite(ll_max):
        raise FitError("the log likelihood is not finite at the fit's estimates; cannot profile")
    theta_hat = prof.theta_from_sdcor(phi_hat)
    got = prof.parts(theta_hat)
    assert got is not None
    _, beta_hat, beta_vcov = got
    var_se = np.sqrt(np.maximum(np.diag(np.asarray(result.random_vcov, dtype=float)), 0.0))
    target = float(stats.norm.ppf(0.5 + float(level) / 2))

    rows = []
    for prm in prof.params:
        if prm.term not in wanted:
            continue
        k = prm.index
        est = float(phi_hat[k])
        if prm.kind == "cor":
            step, bound_lo, bound_hi = 0.1, -1.0, 1.0
        else:
            se = var_se[k] / (2 * est) if est > 0 and np.isfinite(var_se[k]) else np.nan
            step = float(se) if np.isfinite(se) and se > 0 else max(0.1 * est, 1e-3)
            bound_lo, bound_hi = 0.0, None
        step = min(step, 0.5 * max(est, 1e-8)) if prm.kind != "cor" else step
        lo, hi = _profile_one(prof, "sdcor", k, est, phi_hat, ll_max, step, target, bound_lo, bound_hi)
        var_est, var_lo, var_hi = est**2, lo**2, hi**2
        if prm.kind == "cor":
            cov_est = float(theta_hat[k])
            cov_step = float(var_se[k]) if np.isfinite(var_se[k]) and var_se[k] > 0 else 0.1 * abs(cov_est) + 1e-3
            var_est = cov_est
            var_lo, var_hi = _profile_one(prof, "cov", k, cov_est, phi_hat, ll_max, cov_step, target, None, None)
        rows.append((prm.term, prm.stata_term, "ran_pars", prm.group, prm.kind, est, lo, hi, var_est, var_lo, var_hi))
    for j, term in enumerate(fixed_terms):
        if term not in wanted:
            continue
        est = float(beta_hat[j])
        se = float(np.sqrt(beta_vcov[j, j]))
        step = se if np.isfinite(se) and se > 0 else (fixed_se[j] if fixed_se[j] > 0 else 1.0)
        lo, hi = _profile_one(prof, "sdcor", None, est, phi_hat, ll_max, step, target, None, None, fixed_index=j)
        rows.append((term, fixed_stata[j], "fixed", "", "fixed", est, lo, hi, np.nan, np.nan, np.nan))
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def _profile_one(prof: _Profiler, scale: str, k: int | None, est: float, start: np.ndarray, ll_max: float,
                 step: float, target: float, bound_lo: float | None, bound_hi: float | None,
                 fixed_index: int | None = None) -> tuple[float, float]:
    """The interval of one parameter: variance parameter ``k`` on ``scale``, or fixed effect ``fixed_index``."""
    cache: dict[float, np.ndarray] = {est: np.array(start, dtype=float)}

    def zeta(v: float) -> float:
        near = min(cache, key=lambda u: abs(u - v))
        if fixed_index is None:
            ll, pt = prof.maximize(cache[near], scale, hold=k, value=v)
        else:
            ll, pt = prof.maximize(cache[near], scale, fixed=(fixed_index, v))
        if not np.isfinite(ll):
            return np.inf  # outside the parameter space: beyond any cutoff
        cache[v] = pt
        dev = max(2.0 * (ll_max - ll), 0.0)
        return float(np.sign(v - est) * np.sqrt(dev))

    lo = _crossing(zeta, est, step, -1, target, bound_lo)
    hi = _crossing(zeta, est, step, +1, target, bound_hi)
    return lo, hi


def _select(which: str | Sequence[str] | None, params: list[_Param], fixed_terms: list[str],
            fixed_stata: list[str]) -> set[str]:
    ran = {p.term for p in params}
    if which is None:
        return ran | set(fixed_terms)
    if isinstance(which, str):
        if which == "ran_pars":
            return ran
        if which == "fixed":
            return set(fixed_terms)
        which = [which]
    alias = {p.term: p.term for p in params} | {p.stata_term: p.term for p in params}
    alias |= {t: t for t in fixed_terms} | dict(zip(fixed_stata, fixed_terms))
    out = set()
    for name in which:
        if name not in alias:
            raise UsageError(f"profile_ci: unknown parameter {name!r}; choose from {sorted(alias)}")
        out.add(alias[name])
    return out
