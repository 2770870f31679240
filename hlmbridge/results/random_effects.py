"""Random effects after the fit: conditional modes (BLUPs) and conditional variances.

Computed once for every engine, from the design at the engine's estimates, with the
per-block cross-products the Stata-parity inference already holds
(:mod:`hlmbridge.inference.stata_parity`): a block is an outermost group (nested levels),
or the whole sample when a level is crossed. With ``D`` the random-effects covariance of a
block, ``M = Z'Z``, ``A = s2 I + M D`` and ``W = D A^-1``:

- the conditional mode is ``b = D Z' V^-1 (y - X beta) = W Z'(y - X beta)``;
- the conditional covariance given y (beta and the variances treated as known, lme4's
  ``condVar`` and Stata's ``reses``) is ``D - D Z'V^-1 Z D = s2 W``.

A chain of nested levels whose dense blocks would be wide (the designs
:func:`~hlmbridge.inference.stata_parity.evaluate` takes block-recursively) gets the same
numbers from :func:`hlmbridge.inference.nested.nested_conditional_effects`, one small matrix
per group.

No ``D^-1`` is needed (a variance at zero gives zero modes with zero variance) and no
n-by-n matrix is ever built. Precision weights enter as in the fit (rows scaled by sqrt(w)).

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.sleepstudy()
>>> res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", df, engine="statsmodels")
>>> re = res.ranef()
>>> list(re.columns)
['group', 'level', 'term', 'stata_term', 'estimate', 'std_error', 'conf_low', 'conf_high']
>>> re.shape
(36, 8)
>>> sorted(res.coef())
['Subject']
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hlmbridge.design.build import Design
from hlmbridge.errors import UnsupportedSpecError, UsageError
from hlmbridge.threads import with_bounded_blas

__all__ = ["LevelEffects", "RANEF_COLUMNS", "coef_frames", "conditional_effects", "dense_conditional_effects",
           "estimates_of", "level_effects", "ranef_frame", "require_design"]

RANEF_COLUMNS: tuple[str, ...] = ("group", "level", "term", "stata_term", "estimate", "std_error", "conf_low",
                                  "conf_high")


@dataclass(frozen=True, eq=False)
class LevelEffects:
    """One grouping factor: ``modes`` (n_groups, q) and ``cond_cov`` (n_groups, q, q), in the
    level's lme4 term order and group-code order."""

    key: str
    group_labels: tuple[str, ...]
    terms_lme4: tuple[str, ...]
    terms_stata: tuple[str, ...]
    modes: np.ndarray
    cond_cov: np.ndarray

    @property
    def cond_sd(self) -> np.ndarray:
        """Conditional standard deviations (n_groups, q)."""
        return np.sqrt(np.maximum(np.einsum("gii->gi", self.cond_cov), 0.0))


_CACHE: weakref.WeakKeyDictionary[Design, dict[bytes, tuple[LevelEffects, ...]]] = weakref.WeakKeyDictionary()


def require_design(res: object, what: str) -> Design:
    """The design a result was fitted on, or a UsageError for a result read from JSON."""
    design = getattr(res, "design", None)
    if design is None:
        raise UsageError(f"this result has no design (it was read from JSON or built by hand): refit to get {what}")
    return design


def estimates_of(res: object) -> tuple[np.ndarray, np.ndarray]:
    """(beta in design order, theta in variance_parameters order) of a FitResult."""
    beta = np.array([r[2] for r in res.fixed_rows], dtype=float)  # type: ignore[attr-defined]
    theta = np.array([r[5] for r in res.random_rows], dtype=float)  # type: ignore[attr-defined]
    return beta, theta


@with_bounded_blas
def conditional_effects(design: Design, beta: np.ndarray, theta: np.ndarray) -> tuple[LevelEffects, ...]:
    """Conditional modes and covariances of every level at ``beta`` and ``theta``.

    >>> import numpy as np, pandas as pd
    >>> from hlmbridge.spec.model import ModelSpec
    >>> from hlmbridge.design.build import build_design
    >>> df = pd.DataFrame({"y": [1.0, 2, 4, 5], "g": list("aabb")})
    >>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | g)"), df)
    >>> le = conditional_effects(d, np.array([3.0]), np.array([1.0, 1.0]))[0]
    >>> le.modes.round(4).tolist(), le.cond_cov.ravel().round(4).tolist()
    ([[-1.0], [1.0]], [0.3333, 0.3333])
    """
    from hlmbridge.inference.stata_parity import _path

    if design.spec.residuals is not None:  # issue 25: theta is the structured model's (results.structured)
        raise UnsupportedSpecError(design.spec.residuals.stata(), "hlmbridge", message=(
            "conditional_effects() assumes independent residuals; the random effects after "
            f"{design.spec.residuals.stata()} are hlmbridge.results.structured's (FitResult.ranef())"))
    beta = np.asarray(beta, dtype=float)
    theta = np.asarray(theta, dtype=float)
    key = beta.tobytes() + b"|" + theta.tobytes()
    cached = _CACHE.setdefault(design, {})
    if key in cached:
        return cached[key]
    if _path(design) == "nested":  # a chain of nested levels with wide blocks: block-recursive
        from hlmbridge.inference.nested import nested_conditional_effects

        per_level = nested_conditional_effects(design, beta, theta)
    else:
        per_level = dense_conditional_effects(design, beta, theta)
    result = tuple(LevelEffects(ld.key, tuple(ld.group_labels), tuple(ld.terms_lme4), tuple(ld.terms_stata),
                                modes, cov)
                   for ld, (modes, cov) in zip(design.levels, per_level, strict=True))
    cached[key] = result
    return result


def dense_conditional_effects(design: Design, beta: np.ndarray,
                              theta: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """:func:`conditional_effects`' numbers from the dense per-block cross-products: per level
    ``(modes, cond_cov)`` (see the module docstring).

    >>> import numpy as np, pandas as pd
    >>> from hlmbridge.spec.model import ModelSpec
    >>> from hlmbridge.design.build import build_design
    >>> df = pd.DataFrame({"y": [1.0, 2, 4, 5], "g": list("aabb")})
    >>> d = build_design(ModelSpec.from_lme4("y ~ 1 + (1 | g)"), df)
    >>> [m.ravel().round(4).tolist() for m, _ in dense_conditional_effects(d, np.array([3.0]), np.array([1.0, 1.0]))]
    [[-1.0, 1.0]]
    """
    from hlmbridge.inference.stata_parity import _blocks, woodbury

    bl = _blocks(design)
    s2, _, _, W = woodbury(bl, np.asarray(theta, dtype=float))
    W = 0.5 * (W + np.swapaxes(W, -1, -2))
    Zr = bl.Zy - bl.ZX @ (np.asarray(beta, dtype=float) - bl.b0)
    b = np.einsum("bij,bj->bi", W, Zr)
    out = []
    for g_block, g_first, q in bl.group_place:
        cols = g_first[:, None] + np.arange(q)[None, :]
        out.append((b[g_block[:, None], cols], s2 * W[g_block[:, None, None], cols[:, :, None], cols[:, None, :]]))
    return tuple(out)


def level_effects(res: object) -> tuple[LevelEffects, ...]:
    """The conditional modes and covariances of a FitResult (computed once per result)."""
    design = require_design(res, "its random effects")
    if design.spec.residuals is not None:  # issue 25: V_i has the structure's residual covariance
        from hlmbridge.results.structured import structured_level_effects

        return structured_level_effects(res)
    beta, theta = estimates_of(res)
    return conditional_effects(design, beta, theta)


def ranef_frame(res: object, level: float = 0.95) -> pd.DataFrame:
    """A tidy frame: one row per grouping factor, group and term (lme4's ``ranef(condVar = TRUE)``).

    ``std_error`` is the conditional SD; ``conf_low``/``conf_high`` the normal interval at
    ``level`` (estimate -/+ z * conditional SD).
    """
    if not 0 < level < 1:
        raise UsageError(f"level must be between 0 and 1, got {level!r}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    parts = []
    for le in level_effects(res):
        g, q = le.modes.shape
        sd = le.cond_sd
        est = le.modes.ravel()
        parts.append(pd.DataFrame({
            "group": le.key,
            "level": np.repeat(np.array(le.group_labels, dtype=object), q),
            "term": np.tile(np.array(le.terms_lme4, dtype=object), g),
            "stata_term": np.tile(np.array(le.terms_stata, dtype=object), g),
            "estimate": est,
            "std_error": sd.ravel(),
            "conf_low": est - z * sd.ravel(),
            "conf_high": est + z * sd.ravel(),
        }))
    return pd.concat(parts, ignore_index=True)[list(RANEF_COLUMNS)]


def coef_frames(res: object) -> dict[str, pd.DataFrame]:
    """lme4's ``coef()``: per grouping factor, each group's coefficients (fixed + random).

    Columns as lme4's: random terms the fixed part lacks (filled from 0), then the fixed
    effects in lme4's order, ``(Intercept)`` first and the others in the fit's order (a Stata
    command's fit lists ``_cons`` last); the index is the group labels.

    >>> import hlmbridge
    >>> res = hlmbridge.fit("mixed Reaction Days || Subject: Days, cov(unstructured)",
    ...                     hlmbridge.datasets.sleepstudy(), engine="statsmodels")
    >>> list(res.fixed["term"]), list(res.coef()["Subject"].columns)
    (['Days', '(Intercept)'], ['(Intercept)', 'Days'])
    """
    beta, _ = estimates_of(res)
    fixed = [r[0] for r in res.fixed_rows]  # type: ignore[attr-defined]
    order = sorted(range(len(fixed)), key=lambda j: fixed[j] != "(Intercept)")  # stable: the rest keep their order
    fixed, beta = [fixed[j] for j in order], beta[order]
    out: dict[str, pd.DataFrame] = {}
    for le in level_effects(res):
        extra = [t for t in le.terms_lme4 if t not in fixed]
        base = dict(zip(extra + fixed, [0.0] * len(extra) + list(beta)))
        frame = pd.DataFrame({k: np.full(len(le.group_labels), v) for k, v in base.items()},
                             index=pd.Index(le.group_labels, name=le.key))
        for j, t in enumerate(le.terms_lme4):
            frame[t] = frame[t].to_numpy() + le.modes[:, j]
        out[le.key] = frame
    return out
