"""Fitted values, residuals and predictions on new data, the same for every engine.

- ``fitted(res, level=None)``: ``X beta + offset + Z b`` on the fit's rows; ``level=None``
  includes every grouping factor's random effects (lme4's ``fitted``), ``level=0`` none
  (the population-level or marginal prediction, lme4's ``predict(re.form = NA)``), and
  ``level=k`` those of the ``k`` outermost grouping factors (nlme's convention).
- ``residuals(res, kind="response" | "working" | "deviance" | "pearson", level=None)``:
  ``y - fitted``; deviance residuals times sqrt of the precision weight (lme4's ``"deviance"``
  and unscaled ``"pearson"``); Pearson residuals also divided by the residual SD: lme4's
  ``residuals(type = "pearson", scaled = TRUE)``; working residuals are the response ones.
- ``predict(res, newdata, re_form=None | "~0" | "~ (1 | g)", se_fit=False)``: new rows through
  the fit's design rules (:mod:`hlmbridge.design.newdata`). A group the fit did not see
  contributes nothing for its grouping factor (lme4's ``allow.new.levels = TRUE``); the result
  counts such rows. Rows with a missing value come back as NaN in place (``na.exclude``); the
  index is newdata's. ``re_form`` picks the random effects as lme4's ``re.form``: every one
  (None), none (``"~0"``), or the terms of an lme4 random part, matched to the fit's terms by
  grouping factor and column name, so ``"~ (1 | Subject)"`` of a ``(Days | Subject)`` fit adds
  each subject's intercept only and ``"~ (1 | batch)"`` of ``(1 | batch/cask)`` the outer level
  only; only those terms' variables are read from newdata (a Stata-command fit reads every
  random slope and grouping variable). ``se_fit=True`` adds ``se``, the standard error of
  the population-level prediction from the fixed effects' covariance alone,
  ``sqrt(diag(X V X'))`` with ``V = fixed_vcov`` (the variance parameters treated as known);
  lme4 has no ``se.fit``, and hlmbridge computes none for a prediction with random effects.

The fitted values and residuals are indexed by the row's position in the caller's frame
(``design.rows``).

Examples
--------
>>> import hlmbridge, pandas as pd
>>> df = hlmbridge.datasets.sleepstudy()
>>> res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", df, engine="statsmodels")
>>> new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": [308, 999]}, index=["a", "b"])
>>> p = res.predict(new)
>>> list(p.values.index), p.n_new_levels
(['a', 'b'], 1)
>>> bool(abs(p.values["b"] - res.predict(new, re_form="~0").values["b"]) < 1e-9)
True
>>> part = res.predict(new, re_form="~ (1 | Subject)")       # the subject's intercept, not its slope
>>> pop = res.predict(new, re_form="~0", se_fit=True)
>>> bool(pop.se["a"] > 0), part.n_new_levels
(True, 1)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hlmbridge.errors import UsageError
from hlmbridge.results.random_effects import estimates_of, level_effects, require_design

__all__ = ["RESIDUAL_KINDS", "Prediction", "fitted", "predict", "residuals"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """Predictions on new data: ``values`` (indexed like newdata, NaN where a needed value
    is missing), ``n_new_levels`` rows that met a group the fit did not see (those get the
    population-level value for that grouping factor), ``n_missing`` rows left NaN, and ``se``
    (``se_fit=True``) the population-level prediction's standard errors, indexed as ``values``.

    Array-like: ``np.asarray(p)``, ``len(p)``, iteration and ``p[label]`` read ``values``
    (a ``pd.Series(p)`` is unindexed: use ``p.values`` to keep newdata's index).

    >>> import numpy as np, pandas as pd
    >>> p = Prediction(pd.Series([1.5, np.nan], index=["a", "b"]), 0, 1)
    >>> np.asarray(p), float(p["a"]), list(p), len(p)
    (array([1.5, nan]), 1.5, [1.5, nan], 2)
    """

    values: pd.Series
    n_new_levels: int
    n_missing: int
    se: pd.Series | None = None

    def to_numpy(self) -> np.ndarray:
        """The predictions as an array."""
        return self.values.to_numpy()

    def __array__(self, dtype: object = None, copy: bool | None = None) -> np.ndarray:
        """``values`` as an array (numpy's protocol: ``copy=False`` refuses a dtype conversion)."""
        if copy is False and dtype is not None and np.dtype(dtype) != self.values.dtype:  # type: ignore[call-overload]
            raise ValueError(f"the predictions are {self.values.dtype}: {dtype} needs a copy")
        out = self.values.to_numpy(dtype=dtype)  # type: ignore[arg-type]
        return out.copy() if copy else out

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[float]:
        return iter(self.values)

    def __getitem__(self, label: object) -> object:
        """``values[label]``: the prediction of newdata's row ``label`` (or a Series for several)."""
        return self.values[label]


def _n_levels(res: object, level: int | None) -> int:
    n = len(res.groups)  # type: ignore[attr-defined]
    if level is None:
        return n
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level <= n:
        raise UsageError(f"level must be None (every grouping factor), 0 (population level) or a number of "
                         f"grouping factors up to {n}; got {level!r}")
    return int(level)


def linear_predictor(res: object, level: int | None, modes: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """``X beta + offset`` on the fit's rows plus ``Z b`` of the first ``level`` grouping factors
    (every one when None): ``b`` the fit's random effects (:func:`level_effects`), or ``modes``,
    one array (groups x terms) per grouping factor (a GLMM's conditional modes)."""
    design = require_design(res, "fitted values")
    k = _n_levels(res, level)
    beta, _ = estimates_of(res)
    mu = design.X @ beta
    if design.offset is not None:
        mu = mu + design.offset
    if k:
        per_level = [le.modes for le in level_effects(res)] if modes is None else modes
        for ld, b in list(zip(design.levels, per_level, strict=True))[:k]:
            mu = mu + np.einsum("ij,ij->i", ld.Z, b[ld.codes])
    return mu


def _fitted_array(res: object, level: int | None) -> np.ndarray:
    return linear_predictor(res, level)


def fitted(res: object, level: int | None = None) -> pd.Series:
    """Fitted values on the fit's rows (see the module docstring for ``level``); a GLMM's are
    glmer's ``fitted()``, on the response scale (:mod:`hlmbridge.results.glmm_predict`)."""
    if res.spec.is_glmm:  # type: ignore[attr-defined]
        from hlmbridge.results.glmm_predict import glmm_fitted

        return glmm_fitted(res, level)
    design = require_design(res, "fitted values")
    return pd.Series(_fitted_array(res, level), index=pd.Index(design.rows, name="row"), name="fitted")


RESIDUAL_KINDS = ("response", "pearson", "deviance", "working")


def residuals(res: object, kind: str = "response", level: int | None = None) -> pd.Series:
    """Residuals ``y - fitted``: ``kind="response"`` (lme4's ``"response"``, and its
    ``"working"``, the same for a linear model), ``"deviance"`` (times sqrt of the precision
    weight: lme4's ``"deviance"``, and its unscaled ``"pearson"``), or ``"pearson"`` (also
    divided by the residual SD: lme4's ``residuals(type = "pearson", scaled = TRUE)``). A GLMM's
    are glmer's ``residuals(type = kind)`` (:mod:`hlmbridge.results.glmm_predict`)."""
    if res.spec.is_glmm:  # type: ignore[attr-defined]
        from hlmbridge.results.glmm_predict import glmm_residuals

        return glmm_residuals(res, kind, level)
    if res.spec.residuals is not None:  # type: ignore[attr-defined]  # issue 25: nlme's residual kinds
        from hlmbridge.results.structured import structured_residuals

        return structured_residuals(res, kind, level)
    if kind not in RESIDUAL_KINDS:
        raise UsageError(f"kind must be one of {', '.join(map(repr, RESIDUAL_KINDS))}, got {kind!r}")
    design = require_design(res, "residuals")
    r = design.y - _fitted_array(res, level)
    if kind in ("pearson", "deviance") and design.weights is not None:
        r = r * np.sqrt(design.weights)
    if kind == "pearson":
        _, theta = estimates_of(res)
        r = r / np.sqrt(theta[-1])
    return pd.Series(r, index=pd.Index(design.rows, name="row"), name=kind)


_NO_RANDOM = ("~0", "~ 0", "NA", "na")


def predict(res: object, newdata: pd.DataFrame | None = None, re_form: str | None = None,
            type: str = "link", se_fit: bool = False) -> Prediction:
    """Predictions on ``newdata`` (the fit's rows when None) with the random effects ``re_form``
    names: every one (None), none (``"~0"``, R's ``re.form = NA`` or ``~0``), or the terms of an
    lme4 random part (``"~ (1 | Subject)"``, lme4's ``re.form = ~(1 | Subject)``).
    ``se_fit=True`` adds ``se``, the standard error of a population-level prediction. ``type``
    is glmer's: ``"link"`` or ``"response"`` (the same for a linear model's identity link); a
    GLMM's predictions are :func:`hlmbridge.results.glmm_predict.glmm_predict`'s."""
    if res.spec.is_glmm:  # type: ignore[attr-defined]
        if se_fit is not False:
            raise UsageError("se_fit=True is computed for linear mixed models only (the population-level "
                             "prediction's SE on the link scale of a GLMM is not computed)")
        from hlmbridge.results.glmm_predict import glmm_predict

        return glmm_predict(res, newdata, re_form, type)  # type: ignore[return-value]
    if type not in ("link", "response"):
        raise UsageError(f"type must be 'link' or 'response', got {type!r}")
    return _predict_lmm(res, newdata, re_form, se_fit)


# ---------------------------------------------------------------------------- linear mixed models
def _predict_lmm(res: object, newdata: pd.DataFrame | None, re_form: str | None, se_fit: bool) -> Prediction:
    """A linear mixed model's prediction (see :func:`predict`)."""
    if not isinstance(se_fit, bool):
        raise UsageError(f"se_fit must be True or False, got {se_fit!r}")
    design = require_design(res, "predictions")
    bars, columns = _re_form_terms(design, re_form)
    if se_fit and (bars is None or bars):
        raise UsageError("se_fit=True is computed for the population-level prediction only (re_form='~0'): "
                         "the standard error of a prediction with random effects (lme4 gives none) is not "
                         "computed")
    beta, _ = estimates_of(res)
    if newdata is None:
        X, offset, missing, index = design.X, design.offset, np.zeros(design.nobs, dtype=bool), \
            pd.Index(design.rows, name="row")
    else:
        from hlmbridge.design.newdata import new_design

        nd = new_design(design, newdata, random=bars is None)
        X, offset, missing, index = nd.X, nd.offset, nd.missing.copy(), newdata.index
    with np.errstate(invalid="ignore"):
        mu = X @ beta
    if offset is not None:
        mu = mu + offset
    unseen = np.zeros(len(mu), dtype=bool)
    effects = level_effects(res) if (bars is None or bars) else ()
    if bars is None:  # every random effect
        if newdata is None:
            mu = _fitted_array(res, None)
        else:
            for lv, le in zip(nd.levels, effects, strict=True):
                mu = mu + _term_effect(lv.codes, lv.Z, le.modes)
                unseen |= lv.codes < 0
    elif bars:
        for term in _terms_on(design, newdata, bars, columns):
            modes = effects[term.level].modes[:, list(term.columns)]
            mu = mu + _term_effect(term.codes, term.Z, modes)
            unseen |= term.codes < 0
            missing |= term.missing
    out = pd.Series(np.where(missing, np.nan, mu), index=index, name="prediction")
    se = None
    if se_fit:
        V = np.asarray(res.fixed_vcov, dtype=float)  # type: ignore[attr-defined]
        with np.errstate(invalid="ignore"):
            var = np.einsum("ij,jk,ik->i", X, V, X)
        se = pd.Series(np.where(missing, np.nan, np.sqrt(np.maximum(var, 0.0))), index=index, name="se")
    return Prediction(out, int(np.sum(unseen & ~missing)) if newdata is not None else 0, int(missing.sum()), se)


def _term_effect(codes: np.ndarray, Z: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """Each row's ``Z b`` for one grouping factor (0 for a group the fit did not see)."""
    seen = codes >= 0
    b = np.where(seen[:, None], modes[np.maximum(codes, 0)], 0.0)
    return np.einsum("ij,ij->i", np.nan_to_num(Z), b)


def _re_form_terms(design: object, re_form: str | None) -> tuple[list | None, list]:
    """``re_form`` read against the fit: (None, []) for every random effect, ([], []) for none,
    else the lme4 random-effects terms and, for each, the fit's level and columns it names."""
    if re_form is None:
        return None, []
    if not isinstance(re_form, str):
        raise UsageError(f"re_form must be None (every random effect), '~0' (none) or an lme4 random part "
                         f"such as '~ (1 | g)', got {re_form!r}")
    text = re_form.strip()
    if text in _NO_RANDOM:
        return [], []
    if not text.startswith("~"):
        raise UsageError(f"re_form must be a one-sided formula such as '~ (1 | g)' (or '~0'), got {re_form!r}")
    from hlmbridge.design.newdata import term_level, term_names
    from hlmbridge.errors import SpecError
    from hlmbridge.spec.rformula import parse_formula

    try:
        f = parse_formula(".re_form ~ " + text[1:])
    except SpecError as exc:
        raise UsageError(f"re_form {re_form!r} is not an lme4 random part: {exc}") from None
    if f.fixed.terms or f.fixed.offsets:
        raise UsageError(f"re_form {re_form!r} has fixed-effect terms ({', '.join(f.fixed.labels)}); it names "
                         "random-effects terms only, e.g. '~ (1 | g)'")
    columns: list[tuple[int, tuple[int, ...]]] = []
    taken: set[tuple[int, int]] = set()
    for bar in f.random:
        lev = term_level(design, bar)
        fit_names = design.levels[lev].terms_lme4  # type: ignore[attr-defined]
        cols = []
        for name in term_names(design, bar.lhs):
            if name not in fit_names:
                raise UsageError(f"re_form: the random effect {name!r} of {bar.label!r} is not in the model "
                                 f"(its random effects for {bar.label}: {', '.join(fit_names)})")
            j = fit_names.index(name)
            if (lev, j) in taken:
                raise UsageError(f"re_form names the random effect {name!r} of {bar.label!r} twice")
            taken.add((lev, j))
            cols.append(j)
        columns.append((lev, tuple(cols)))
    return list(f.random), columns


def _terms_on(design: object, newdata: pd.DataFrame | None, bars: list, columns: list) -> tuple:
    """The ``re_form`` terms on newdata, or on the fit's rows (the design's Z columns)."""
    from hlmbridge.design.newdata import NewTerm, new_terms

    if newdata is not None:
        return new_terms(design, newdata, bars, columns)  # type: ignore[arg-type]
    out = []
    for lev, cols in columns:
        ld = design.levels[lev]  # type: ignore[attr-defined]
        out.append(NewTerm(lev, cols, ld.codes, ld.Z[:, list(cols)], np.zeros(len(ld.codes), dtype=bool)))
    return tuple(out)
