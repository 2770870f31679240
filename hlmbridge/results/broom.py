"""broom.mixed's ``glance`` and ``augment`` for a FitResult, with broom.mixed's column names.

``glance`` follows ``glance.merMod`` (broom.mixed ``R/lme4_tidiers.R`` and ``finish_glance`` in
``R/utilities.R``): ``nobs``, ``sigma``, ``logLik``, ``AIC``, ``BIC``, ``deviance`` and
``df.residual`` as lme4's ``nobs``, ``sigma``, ``logLik``, ``AIC``, ``BIC``, ``deviance`` and
``df.residual`` (``nobs`` minus the number of parameters) give them; for a REML fit lme4's
``deviance()`` is the REML criterion (with a deprecation warning) and broom.mixed renames the
column ``REMLcrit``, so a REML fit has ``REMLcrit`` (-2 times the REML log likelihood) where
an ML fit has ``deviance``. ``logLik``, ``AIC`` and ``BIC`` of a REML fit are the REML ones, as
lme4's.

``augment`` follows ``augment.merMod``: the model's variables, then ``.fitted`` (lme4's
``fitted``), ``.resid`` (``residuals``, response scale), ``.fixed`` (``predict(re.form = NA)``),
and the response object's ``.mu``, ``.offset``, ``.sqrtXwt``, ``.sqrtrwt``, ``.weights`` and
``.wtres`` (lme4's ``lmResp`` fields; ``.wtres`` is the residual times the square root of the
weight). The index is the row's position in the data the fit was given.

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.hsb("combined")
>>> res = hlmbridge.fit("mathach ~ ses + (1 | id)", df, engine="statsmodels")
>>> list(glance(res).columns)
['nobs', 'sigma', 'logLik', 'AIC', 'BIC', 'REMLcrit', 'df.residual']
>>> list(augment(res).columns)[:4]
['mathach', 'ses', 'id', '.fitted']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import UsageError

__all__ = ["augment", "glance"]


def glance(result: Any) -> pd.DataFrame:
    """One row: ``nobs``, ``sigma``, ``logLik``, ``AIC``, ``BIC``, ``deviance`` (ML) or
    ``REMLcrit`` (REML), ``df.residual``."""
    ll = float(result.loglik)
    k = int(result.df)
    n = int(result.nobs)
    sigma = math.sqrt(float(result.random_rows[-1][5]))
    dev = "REMLcrit" if result.spec.reml else "deviance"
    row = {"nobs": n, "sigma": sigma, "logLik": ll, "AIC": -2.0 * ll + 2.0 * k, "BIC": -2.0 * ll + math.log(n) * k,
           dev: -2.0 * ll, "df.residual": n - k}
    return pd.DataFrame([row])


def _model_columns(result: Any) -> dict[str, np.ndarray]:
    """The model frame's variables on the fit's rows (R's ``model.frame``: the response, each
    variable of the fixed part that is one column, each grouping factor)."""
    from hlmbridge.design.evaluate import Factor

    design = result.design
    spec = design.spec
    out: dict[str, Any] = {}
    if spec.formula is not None:
        f = spec.formula
        out[f.response.deparse()] = design.y
        for e, v in zip(f.fixed.variables, design.fixed_values):
            if isinstance(v, Factor):
                out[e.deparse()] = pd.Categorical.from_codes(v.codes, categories=list(v.levels), ordered=v.ordered)
            elif v.values.shape[1] == 1:
                out[e.deparse()] = v.values[:, 0]
    else:
        out[spec.response] = design.y
        for j, s in enumerate(design.fixed_stata):
            if s != "_cons":
                out[s] = design.X[:, j]
    for ld in design.levels:
        if ld.key not in out and ld.group_labels:
            out[ld.key] = np.asarray(ld.group_labels, dtype=object)[ld.codes]
    return out


def augment(result: Any, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """broom.mixed's ``augment``: ``data``'s rows used by the fit (the model's variables when
    None) with ``.fitted``, ``.resid``, ``.fixed`` and lme4's response columns."""
    from hlmbridge.results.prediction import fitted

    design = result.design
    if design is None:
        raise UsageError("augment needs the fit's design, which a result rebuilt from JSON (from_dict) does not "
                         "carry: refit")
    index = pd.Index(design.rows, name="row")
    if data is None:
        frame = pd.DataFrame(_model_columns(result), index=index)
    else:
        if not isinstance(data, pd.DataFrame) or len(data) != design.n_data:
            raise UsageError(f"data must be the data frame the model was fitted on ({design.n_data} rows), got "
                             f"{type(data).__name__} with {len(data) if hasattr(data, '__len__') else '?'} rows")
        frame = data.iloc[design.rows].copy()
        frame.index = index
    mu = fitted(result).to_numpy()
    resid = design.y - mu
    w = design.weights if design.weights is not None else np.ones(len(mu))
    frame[".fitted"] = mu
    frame[".resid"] = resid
    frame[".fixed"] = fitted(result, level=0).to_numpy()
    frame[".mu"] = mu
    frame[".offset"] = design.offset if design.offset is not None else np.zeros(len(mu))
    frame[".sqrtXwt"] = np.ones(len(mu))
    frame[".sqrtrwt"] = np.sqrt(w)
    frame[".weights"] = w
    frame[".wtres"] = np.sqrt(w) * resid
    return frame
