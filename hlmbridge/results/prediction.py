"""Fitted values, residuals and predictions on new data, the same for every engine.

- ``fitted(res, level=None)``: ``X beta + offset + Z b`` on the fit's rows; ``level=None``
  includes every grouping factor's random effects (lme4's ``fitted``), ``level=0`` none
  (the population-level or marginal prediction, lme4's ``predict(re.form = NA)``), and
  ``level=k`` those of the ``k`` outermost grouping factors (nlme's convention).
- ``residuals(res, kind="response" | "pearson", level=None)``: ``y - fitted``; Pearson
  residuals are scaled by the residual SD (and sqrt of the precision weight): lme4's
  ``residuals(type = "pearson", scaled = TRUE)``.
- ``predict(res, newdata, re_form=None | "~0")``: new rows through the fit's design rules
  (:mod:`hlmbridge.design.newdata`). A group the fit did not see contributes nothing for its
  grouping factor (lme4's ``allow.new.levels = TRUE``); the result counts such rows. Rows
  with a missing value come back as NaN in place (``na.exclude``); the index is newdata's.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hlmbridge.errors import UsageError
from hlmbridge.results.random_effects import estimates_of, level_effects, require_design

__all__ = ["Prediction", "fitted", "predict", "residuals"]


@dataclass(frozen=True, eq=False)
class Prediction:
    """Predictions on new data: ``values`` (indexed like newdata, NaN where a needed value
    is missing), ``n_new_levels`` rows that met a group the fit did not see (those get the
    population-level value for that grouping factor), ``n_missing`` rows left NaN.

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


def _fitted_array(res: object, level: int | None) -> np.ndarray:
    design = require_design(res, "fitted values")
    k = _n_levels(res, level)
    beta, _ = estimates_of(res)
    mu = design.X @ beta
    if design.offset is not None:
        mu = mu + design.offset
    if k:
        for ld, le in list(zip(design.levels, level_effects(res), strict=True))[:k]:
            mu = mu + np.einsum("ij,ij->i", ld.Z, le.modes[ld.codes])
    return mu


def fitted(res: object, level: int | None = None) -> pd.Series:
    """Fitted values on the fit's rows (see the module docstring for ``level``); a GLMM's are
    glmer's ``fitted()``, on the response scale (:mod:`hlmbridge.results.glmm_predict`)."""
    if res.spec.is_glmm:  # type: ignore[attr-defined]
        from hlmbridge.results.glmm_predict import glmm_fitted

        return glmm_fitted(res, level)
    design = require_design(res, "fitted values")
    return pd.Series(_fitted_array(res, level), index=pd.Index(design.rows, name="row"), name="fitted")


def residuals(res: object, kind: str = "response", level: int | None = None) -> pd.Series:
    """Residuals ``y - fitted``: ``kind="response"``, or ``"pearson"`` (divided by the residual
    SD, times sqrt of the precision weight). A GLMM's are glmer's ``residuals(type = kind)``, also
    ``"deviance"`` and ``"working"`` (:mod:`hlmbridge.results.glmm_predict`)."""
    if res.spec.is_glmm:  # type: ignore[attr-defined]
        from hlmbridge.results.glmm_predict import glmm_residuals

        return glmm_residuals(res, kind, level)
    if kind not in ("response", "pearson"):
        raise UsageError(f"kind must be 'response' or 'pearson', got {kind!r}")
    design = require_design(res, "residuals")
    r = design.y - _fitted_array(res, level)
    if kind == "pearson":
        _, theta = estimates_of(res)
        r = r / np.sqrt(theta[-1])
        if design.weights is not None:
            r = r * np.sqrt(design.weights)
    return pd.Series(r, index=pd.Index(design.rows, name="row"), name=kind)


_NO_RANDOM = ("~0", "~ 0", "NA", "na")


def predict(res: object, newdata: pd.DataFrame | None = None, re_form: str | None = None,
            type: str = "link") -> Prediction:
    """Predictions on ``newdata`` (the fit's rows when None), with every random effect
    (``re_form=None``) or none (``re_form="~0"``, R's ``re.form = NA`` or ``~0``). ``type``
    is glmer's: ``"link"`` or ``"response"`` (the same for a linear model's identity link);
    a GLMM's are :func:`hlmbridge.results.glmm_predict.glmm_predict`'s."""
    if res.spec.is_glmm:  # type: ignore[attr-defined]
        from hlmbridge.results.glmm_predict import glmm_predict

        return glmm_predict(res, newdata, re_form, type)  # type: ignore[return-value]
    if type not in ("link", "response"):
        raise UsageError(f"type must be 'link' or 'response', got {type!r}")
    if re_form is not None and (not isinstance(re_form, str) or re_form.strip() not in _NO_RANDOM):
        raise UsageError(f"re_form must be None (every random effect) or '~0' (none), got {re_form!r}")
    random = re_form is None
    design = require_design(res, "predictions")
    if newdata is None:
        values = fitted(res, None if random else 0)
        return Prediction(values.rename("prediction"), 0, 0)
    from hlmbridge.design.newdata import new_design

    nd = new_design(design, newdata, random=random)
    beta, _ = estimates_of(res)
    with np.errstate(invalid="ignore"):
        mu = nd.X @ beta
    if nd.offset is not None:
        mu = mu + nd.offset
    if random:
        for lv, le in zip(nd.levels, level_effects(res), strict=True):
            seen = lv.codes >= 0
            modes = np.where(seen[:, None], le.modes[np.maximum(lv.codes, 0)], 0.0)
            mu = mu + np.einsum("ij,ij->i", np.nan_to_num(lv.Z), modes)
    mu = np.where(nd.missing, np.nan, mu)
    return Prediction(pd.Series(mu, index=newdata.index, name="prediction"), nd.n_new if random else 0,
                      int(nd.missing.sum()))
