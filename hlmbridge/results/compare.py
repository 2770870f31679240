"""Model comparison as lme4, lmerTest and pbkrtest do it.

- :func:`anova` is lme4's ``anova(m0, m1, ...)`` for merMod: every REML fit is refitted by ML
  first (lme4's ``refitML``; the table's ``attrs["notes"]`` then says "refitting model(s) with
  ML (instead of REML)", lme4's message), the models are ordered by their number of parameters
  and each is tested against the one before it (``Chisq``, ``Df``, ``Pr(>Chisq)``). The ML refit
  needs no engine and no data: the ML log likelihood is maximized over the variance parameters
  on the fit's own design, starting from the REML estimates, as ``refitML`` re-optimizes the
  same deviance function (Newton steps on the analytic score, :mod:`hlmbridge.inference.polish`;
  a boundary fit by :mod:`hlmbridge.inference.profile`'s bounded search).
  ``hlmbridge.anova(m)`` with one model is lmerTest's type III table (``m.anova()``).
- :func:`ranova` is lmerTest's ``ranova``: a likelihood-ratio test for each random-effects term,
  reduced as lmerTest reduces it (a term with only an intercept is removed; a term with slopes
  loses each slope in turn, and ``(x | g)`` becomes ``(1 | g)``), with the fit's own criterion
  (REML or ML). The reduced models are refitted by the fit's engine on ``data``; a model left
  without random effects is the linear model, whose (REML) log likelihood is computed from the
  design as R's ``logLik.lm`` does. Stata's ``chibar2(01)`` p-value (half the chi2(1) tail) is
  given for a test of one variance at 0, and the boundary note for the others.
- :func:`drop1` is lmerTest's ``drop1`` for an lmer fit: an F test (Satterthwaite or
  Kenward-Roger df) of each marginal term (one no other term contains), by its own columns; on
  a fit with dropped (collinear) columns, by the part of the model matrix the model without the
  term does not span (lmerTest's ``get_Ldiffmat2``; NaN where that is nothing).
- :func:`kr_modcomp` and :func:`sat_modcomp` are pbkrtest's ``KRmodcomp`` and ``SATmodcomp`` of
  two nested fixed-effect structures: the restriction matrix ``L`` spans the part of the large
  model's column space orthogonal to the small model's (pbkrtest's
  ``make_restriction_matrix``), tested on the large (REML) fit.

Examples
--------
>>> import hlmbridge
>>> ss = hlmbridge.datasets.sleepstudy()
>>> m0 = hlmbridge.fit("Reaction ~ 1 + (1 | Subject)", ss, engine="statsmodels")
>>> m1 = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", ss, engine="statsmodels")
>>> tab = anova(m0, m1, names=("m0", "m1"))
>>> tab.attrs["notes"]
('refitting model(s) with ML (instead of REML)',)
>>> tab[["model", "npar", "df"]].to_dict("list")
{'model': ['m0', 'm1'], 'npar': [3, 4], 'df': [nan, 1.0]}
>>> round(float(tab["chisq"].iloc[1]), 2)
116.46
>>> round(float(sat_modcomp(m1, m0)["ddf"].iloc[0]), 1)
161.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.errors import UnsupportedSpecError, UsageError

__all__ = ["ANOVA_LR_COLUMNS", "DROP1_COLUMNS", "MODCOMP_COLUMNS", "RANOVA_COLUMNS", "REFIT_NOTE", "anova", "drop1",
           "kr_modcomp", "ml_refit_loglik", "ranova", "restriction_matrix", "sat_modcomp"]

#: lme4's message when it refits REML fits by ML.
REFIT_NOTE = "refitting model(s) with ML (instead of REML)"
#: Stata's note on a likelihood-ratio test of a variance at the boundary (lrtest's wording).
BOUNDARY_NOTE = ("The reported degrees of freedom assumes the null hypothesis is not on the boundary of the "
                 "parameter space. If this is not true, then the reported test is conservative.")
#: Columns of :func:`anova` (lme4's npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)).
ANOVA_LR_COLUMNS: tuple[str, ...] = ("model", "npar", "aic", "bic", "loglik", "deviance", "chisq", "df",
                                     "p_value")
#: Columns of :func:`ranova` (lmerTest's npar, logLik, AIC, LRT, Df, Pr(>Chisq)), then Stata's
#: chibar2(01) p-value where the test is of one variance at 0 (NaN elsewhere).
RANOVA_COLUMNS: tuple[str, ...] = ("term", "npar", "loglik", "aic", "lrt", "df", "p_value", "p_chibar2")
#: Columns of :func:`drop1` (lmerTest's Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)).
DROP1_COLUMNS: tuple[str, ...] = ("term", "sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value",
                                  "f_scaling", "df_method")
#: Columns of :func:`kr_modcomp` / :func:`sat_modcomp` (pbkrtest's stat, ndf, ddf, F.scaling, p.value).
MODCOMP_COLUMNS: tuple[str, ...] = ("f_value", "ndf", "ddf", "f_scaling", "p_value", "df_method")


# ---- helpers ------------------------------------------------------------------------------------
def _check_result(res: Any, what: str) -> None:
    from hlmbridge.results.fit_result import FitResult

    if not isinstance(res, FitResult):
        raise UsageError(f"{what} takes fitted models (hlmbridge.fit results), got {type(res).__name__}")


def _same_rows(models: list[Any], what: str) -> None:
    """Refuse models fitted to different observations (lme4: 'models were not all fitted to the
    same size of dataset', 'all models must be fit to the same data object')."""
    n = {m.nobs for m in models}
    if len(n) > 1:
        raise UsageError(f"{what}: the models were not all fitted to the same observations "
                         f"({', '.join(str(m.nobs) for m in models)} rows)")
    designs = [m.design for m in models]
    if all(d is not None for d in designs):
        first = designs[0]
        for d in designs[1:]:
            if (d.n_data != first.n_data or not np.array_equal(np.asarray(d.rows), np.asarray(first.rows))
                    or not np.array_equal(d.y, first.y)):
                raise UsageError(f"{what}: the models were fitted to different rows or responses of the data; "
                                 "all models must be fitted to the same observations")


def _written(res: Any) -> str:
    from hlmbridge.results.postestimation import _written as written

    return written(res)


def ml_refit_loglik(res: Any) -> float:
    """The ML log likelihood of a fit's model at its ML optimum (lme4's ``logLik(refitML(m))``).

    An ML fit's own log likelihood; for a REML fit the ML log likelihood is maximized over the
    variance parameters on the fit's design, from the REML estimates (needs the design).
    """
    if res.method == "ml":
        return float(res.loglik)
    if res.design is None:
        raise UsageError("refitting a REML fit by ML needs the fit's design, which a result rebuilt from JSON "
                         "(from_dict) or returned by fit_many does not carry: refit with hlmbridge.fit")
    from dataclasses import replace

    from hlmbridge.inference.polish import newton_polish

    theta = np.array([r[5] for r in res.random_rows], dtype=float)
    ml_design = replace(res.design, spec=res.design.spec.with_method("ml"))
    # Newton's method on the profiled ML log likelihood from the REML estimates (3-4 steps, about
    # 10 ms on HSB); where it cannot go (a boundary fit, an indefinite information) the bounded
    # quasi-Newton search of the profile module, on the same likelihood.
    polished = newton_polish(ml_design, theta, max_steps=50, max_move_se=np.inf)
    if polished is not None:
        ll = float(polished.inference.loglik)
    else:
        from hlmbridge.inference.profile import _Profiler

        prof = _Profiler(res.design, theta)
        ll, _ = prof.maximize(prof.sdcor_from_theta(theta), "sdcor")
    if not np.isfinite(ll):
        from hlmbridge.errors import FitError

        raise FitError("the ML refit of a REML fit gave a non-finite log likelihood")
    return float(ll)


# ---- anova(m0, m1, ...) ---------------------------------------------------------------------------
def anova(*models: Any, refit: bool = True, names: tuple[str, ...] | list[str] | None = None,
          **single: Any) -> Any:
    """lme4's ``anova(m0, m1, ...)`` (see the module docstring); one model: lmerTest's
    ``anova(m)``, ``m.anova(**single)`` (type III; Satterthwaite's df unless the fit has a df
    method or ``ddf=`` says otherwise).

    ``refit=False`` compares the fits' own criteria (REML fits stay REML, as lme4's
    ``refit = FALSE``). ``names`` labels the models (lme4's ``model.names``); by default each is
    shown as written. The frame has :data:`ANOVA_LR_COLUMNS`, rows in increasing ``npar``;
    ``attrs["heading"]`` lists the models and ``attrs["notes"]`` holds lme4's refit message.
    """
    if not models:
        raise UsageError("anova() needs at least one fitted model")
    for m in models:
        _check_result(m, "anova()")
    if len(models) == 1:
        if names is not None or refit is not True:
            raise UsageError("anova(m) of one model is lmerTest's ANOVA table: names= and refit= apply to a "
                             "comparison of several models")
        return models[0].anova(**single)  # Satterthwaite unless the fit or ddf= says otherwise
    if single:
        raise UsageError(f"anova() of several models takes refit= and names= only; got {sorted(single)}")
    if not isinstance(refit, bool):
        raise UsageError(f"refit must be True or False, got {refit!r}")
    if names is None:
        labels = [_written(m) for m in models]
        if len(set(labels)) < len(labels):
            labels = [f"MODEL{i + 1}" for i in range(len(models))]  # lme4's generic names
    else:
        if (not isinstance(names, (tuple, list)) or len(names) != len(models)
                or not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) < len(names)):
            raise UsageError(f"names must be {len(models)} distinct non-empty strings, one per model; got {names!r}")
        labels = list(names)
    models_ = list(models)
    _same_rows(models_, "anova()")
    if len({m.spec.family for m in models_}) > 1:
        raise UsageError("anova(): the models have different families; their likelihoods are not comparable")
    if len({(m.spec.intmethod, m.spec.intpoints) for m in models_}) > 1:
        raise UsageError("anova(): the models' likelihoods integrate the random effects differently (Laplace and "
                         "quadrature points differ): their log likelihoods are not comparable")
    reml = [m.method == "reml" for m in models_]
    notes: list[str] = []
    if refit:
        if any(reml):
            notes.append(REFIT_NOTE)
        lls = [ml_refit_loglik(m) for m in models_]
    else:
        lls = [float(m.loglik) for m in models_]
        if any(reml) and not all(reml):
            notes.append("some models fit with REML = TRUE, some not")
    npar = [int(m.df) for m in models_]
    order = sorted(range(len(models_)), key=lambda i: npar[i])  # stable, as R's order()
    from hlmbridge.inference.tails import chi2_sf

    rows = []
    for pos, i in enumerate(order):
        ll, k, n = lls[i], npar[i], models_[i].nobs
        if pos == 0:
            chisq = df = p = float("nan")
        else:
            j = order[pos - 1]
            chisq = 2.0 * max(0.0, ll - lls[j])
            df = float(k - npar[j])
            p = float("nan") if df == 0 else float(chi2_sf(chisq, df))
        rows.append((labels[i], k, -2 * ll + 2 * k, -2 * ll + k * np.log(n), ll, -2 * ll, chisq, df, p))
    from hlmbridge.results.display_margins import ModelComparisonFrame  # prints as lme4's anova()

    table = ModelComparisonFrame(rows, columns=list(ANOVA_LR_COLUMNS))
    table.attrs["heading"] = "Models:\n" + "\n".join(f"{labels[i]}: {_written(models_[i])}" for i in order)
    table.attrs["notes"] = tuple(notes)
    return table


# ---- drop1 ---------------------------------------------------------------------------------------
def _marginal_contrasts(res: Any) -> dict[str, np.ndarray]:
    """lmerTest's ``get_contrasts_marginal`` for the marginal terms (R's ``drop.scope``)."""
    from hlmbridge.results.anova import term_structure, type_contrasts

    ts = term_structure(res)
    p = res.design.X.shape[1]
    if p <= 1 or len(ts.labels) <= 1:
        return type_contrasts(res, 1)
    sets = [set(t) for t in ts.terms]
    scope = [k for k in range(len(sets)) if not any(j != k and sets[k] <= sets[j] for j in range(len(sets)))]
    eye = np.eye(p)
    out = {}
    for k in scope:
        cols = ts.columns(k)
        if ts.r_order is not None:
            cols = [ts.r_order[j] for j in cols]
        out[ts.labels[k]] = eye[cols]
    return out


def _reduced_contrasts(res: Any, scope: list[str]) -> dict[str, np.ndarray]:
    """lmerTest's drop1 on a fit with dropped (collinear) columns: for each term, the model matrix
    without it (R's coding, every column) and ``get_Ldiffmat2`` -- the part of the fit's ``X``
    the reduced matrix does not span; no rows when it spans all of it (lmerTest's row of NA)."""
    from hlmbridge.design.model_matrix import model_matrix
    from hlmbridge.results.anova import zapsmall

    design = res.design
    spec = design.spec
    if spec.formula is None:
        raise UnsupportedSpecError("drop1() of a rank-deficient Stata-command fit", res.engine, message=(
            "drop1() of a Stata-command fit with omitted (collinear) columns is not computed by hlmbridge; "
            f"drop {list(res.dropped_stata_terms)} from the command first"))
    terms = spec.formula.fixed
    mm = model_matrix(terms, list(design.fixed_values), design.X.shape[0], dict(design.contrasts))
    labels = list(terms.labels)
    X = np.asarray(design.X, dtype=float)
    out = {}
    for label in scope:
        k = labels.index(label)
        X0 = mm.X[:, [j for j, t in enumerate(mm.term_of_column) if t != k]]
        R = X - X0 @ np.linalg.lstsq(X0, X, rcond=None)[0] if X0.shape[1] else X
        R = R[:, np.abs(R).sum(axis=0) > 1e-8]
        if R.shape[1] == 0:
            out[label] = np.zeros((0, X.shape[1]))
            continue
        Q, _ = np.linalg.qr(X.T @ R)
        out[label] = zapsmall(Q).T
    return out


def drop1(res: Any, ddf: str = "Satterthwaite") -> pd.DataFrame:
    """lmerTest's ``drop1(fit, ddf = ddf)``: the F test of each marginal term (:data:`DROP1_COLUMNS`).

    ``ddf``: ``"Satterthwaite"`` (lmerTest's default) or ``"Kenward-Roger"`` (a REML fit).

    Examples
    --------
    >>> import hlmbridge
    >>> hsb = hlmbridge.datasets.hsb()
    >>> m = hlmbridge.fit("mathach ~ ses * sector + meanses + (1 | id)", hsb, engine="statsmodels")
    >>> drop1(m)["term"].tolist()  # ses and sector are inside ses:sector: not marginal
    ['meanses', 'ses:sector']
    """
    from hlmbridge.results.anova import _HEAD, _contest
    from hlmbridge.results.small_sample import df_analysis_of, resolve_df_method

    _check_result(res, "drop1()")
    res._lmm_only("drop1()")
    if not isinstance(ddf, str) or ddf.strip().lower() in ("lme4", "residual"):
        raise UsageError(f"drop1: ddf must be 'Satterthwaite' or 'Kenward-Roger' (lmerTest's), got {ddf!r}")
    if res.design is None:
        raise UsageError("drop1 needs the fit's design, which a result rebuilt from JSON (from_dict) does not "
                         "carry: refit with hlmbridge.fit")
    method = resolve_df_method(ddf)
    Ls = _marginal_contrasts(res)
    if res.dropped_columns:
        Ls = _reduced_contrasts(res, list(Ls))
    a = df_analysis_of(res, method)
    sigma2 = float(res.random_rows[-1][5])
    rows = []
    for label, L in Ls.items():  # a term that tests nothing keeps its place with NaN (lmerTest's NA row)
        r = _contest(a, L, sigma2)
        rows.append((label, *([float("nan")] * 7 if r is None else r), method))
    table = pd.DataFrame(rows, columns=list(DROP1_COLUMNS))
    table.attrs["heading"] = f"Single term deletions using {_HEAD.get(method, method)} method"
    return table


# ---- KRmodcomp / SATmodcomp ------------------------------------------------------------------------
def _rank(x: np.ndarray) -> int:
    if x.size == 0:
        return 0
    s = np.linalg.svd(x, compute_uv=False)
    return int(np.sum(s > max(x.shape) * np.finfo(float).eps * s[0])) if s[0] > 0 else 0


def restriction_matrix(X: np.ndarray, X2: np.ndarray) -> np.ndarray:
    """pbkrtest's ``make_restriction_matrix(X, X2)``: rows spanning the hypothesis under which the
    large model (columns ``X``) reduces to the small one (``X2``), orthonormal."""
    X = np.asarray(X, dtype=float)
    X2 = np.asarray(X2, dtype=float)
    r, r2 = _rank(X), _rank(X2)
    if _rank(np.column_stack([X2, X])) > r:
        raise UsageError("the small model's fixed effects are not a subspace of the large model's: not nested")
    if r2 >= r:
        raise UsageError("the models have the same fixed-effect column space: nothing to test")
    # The part of X's column space orthogonal to X2's (pbkrtest: the last columns of Q of cbind(X2, X)).
    if X2.shape[1]:
        U2 = np.linalg.svd(X2, full_matrices=False)[0]
        U2 = U2[:, :r2]
        R = X - U2 @ (U2.T @ X)
    else:
        R = X
    U, _, _ = np.linalg.svd(R, full_matrices=False)
    Q2 = U[:, : r - r2]
    L = Q2.T @ X
    # Orthonormal rows spanning the same space (pbkrtest: t(qr.Q(qr(t(L))))).
    Lq, _ = np.linalg.qr(L.T)
    from hlmbridge.results.anova import zapsmall

    return zapsmall(Lq.T)


def _modcomp(large: Any, small: Any, method: str, what: str) -> pd.DataFrame:
    from hlmbridge.results.small_sample import df_analysis_of

    _check_result(large, what)
    _check_result(small, what)
    for m in (large, small):
        m._lmm_only(what)
        if m.design is None:
            raise UsageError(f"{what} needs the fits' designs, which a result rebuilt from JSON (from_dict) does "
                             "not carry: refit with hlmbridge.fit")
    _same_rows([large, small], what)
    if large.design.X.shape[1] < small.design.X.shape[1]:
        large, small = small, large  # pbkrtest swaps the models when given the other way round
    if large.method != "reml":
        raise UsageError(f"{what} tests on the large model's REML fit (pbkrtest refits it with REML = TRUE): "
                         "fit it with reml=True")
    L = restriction_matrix(large.design.X, small.design.X)
    a = df_analysis_of(large, method)
    t = a.test(L)
    out = pd.DataFrame([(t.f_value, t.ndf, t.ddf, t.f_scaling, t.p_value, method)], columns=list(MODCOMP_COLUMNS))
    out.attrs["L"] = L
    out.attrs["heading"] = f"large : {_written(large)}\nsmall : {_written(small)}"
    return out


def kr_modcomp(large: Any, small: Any) -> pd.DataFrame:
    """pbkrtest's ``KRmodcomp(large, small)``: Kenward-Roger's F test of the small model's fixed
    effects in the large (REML) one (:data:`MODCOMP_COLUMNS`; ``attrs["L"]`` the restriction)."""
    return _modcomp(large, small, "kenward-roger", "kr_modcomp()")


def sat_modcomp(large: Any, small: Any) -> pd.DataFrame:
    """pbkrtest's ``SATmodcomp(large, small)``: the Satterthwaite F test of the same hypothesis."""
    return _modcomp(large, small, "satterthwaite", "sat_modcomp()")


# ---- ranova -------------------------------------------------------------------------------------------
def _bar_text(lhs: Any, group_r: str) -> str:
    return f"{' + '.join(lhs.rhs())} | {group_r}"


def _reduced_formulas(res: Any) -> list[tuple[str, str, int]]:
    """lmerTest's ``get_newforms`` for every random term: (row name, reduced formula, variances removed)."""
    from hlmbridge.spec.rformula import parse_formula

    spec = res.spec
    text = spec.to_lme4().formula if spec.formula is None else spec.formula.r_formula()
    f = parse_formula(text)
    fixed = " + ".join(f.fixed.rhs())
    bars = [(_bar_text(b.lhs, b.group_r), b) for b in f.random]
    out = []
    for k, (form, bar) in enumerate(bars):
        others = [f"({t})" for j, (t, _) in enumerate(bars) if j != k]
        lhs = bar.lhs
        sets = [set(t) for t in lhs.terms]
        scope = [i for i in range(len(sets)) if not any(j != i and sets[i] <= sets[j] for j in range(len(sets)))]
        n_cols = len(lhs.terms) + int(lhs.intercept)
        if not lhs.terms or not scope:
            rhs = " + ".join([fixed, *others])
            out.append((f"({form})", f"{f.response.deparse()} ~ {rhs}", n_cols))
            continue
        for i in scope:
            keep = [lab for j, lab in enumerate(lhs.labels) if j != i]
            if not keep:
                new_lhs = "1"
            else:
                new_lhs = " + ".join(keep) if lhs.intercept else " + ".join(["0", *keep])
            new_bar = f"({new_lhs} | {bar.group_r})"
            # R's update() keeps one copy of a term written twice: reducing (0 + x | g) beside (1 | g)
            # leaves (1 | g) once.
            rhs = " + ".join([fixed, *others, *([] if new_bar in others else [new_bar])])
            out.append((f"{lhs.labels[i]} in ({form})", f"{f.response.deparse()} ~ {rhs}", -1))
    return out


def _lm_loglik(design: Any, reml: bool) -> tuple[float, int]:
    """R's ``logLik.lm(fit, REML = reml)`` of the fixed part alone, and its df (p + 1)."""
    X, y = np.asarray(design.X, dtype=float), np.asarray(design.y_fit, dtype=float)
    w = np.ones_like(y) if design.weights is None else np.asarray(design.weights, dtype=float)
    sw = np.sqrt(w)
    Q, R = np.linalg.qr(X * sw[:, None])
    e = y * sw - Q @ (Q.T @ (y * sw))
    n, p = X.shape
    N = n - p if reml else n
    val = 0.5 * (np.sum(np.log(w)) - N * (np.log(2 * np.pi) + 1 - np.log(N) + np.log(np.sum(e**2))))
    if reml:
        val -= float(np.sum(np.log(np.abs(np.diag(R)))))
    return float(val), p + 1


def ranova(res: Any, data: pd.DataFrame, *, reduce_terms: bool = True) -> pd.DataFrame:
    """lmerTest's ``ranova(fit)``: a likelihood-ratio test for each random-effects term.

    ``data`` is the frame the fit was made on (a result keeps its design, not the caller's
    columns; the reduced models are refitted by the fit's engine). The first row (``<none>``)
    is the model itself; :data:`RANOVA_COLUMNS`. ``p_chibar2`` is Stata's ``chibar2(01)``
    p-value (half the chi2(1) tail) where the test removes a single variance, which is at the
    boundary under the null; ``attrs["notes"]`` carries Stata's boundary note for the other tests.
    ``reduce_terms=False`` removes every term whole (lmerTest's ``reduce.terms = FALSE``).

    Examples
    --------
    >>> import hlmbridge
    >>> ss = hlmbridge.datasets.sleepstudy()
    >>> m = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", ss, engine="statsmodels")
    >>> tab = ranova(m, ss)
    >>> tab["term"].tolist(), tab["df"].tolist()[1:]
    (['<none>', 'Days in (Days | Subject)'], [2.0])
    >>> round(float(tab["lrt"].iloc[1]), 2)
    42.84
    """
    import hlmbridge
    from hlmbridge.inference.tails import chi2_sf

    _check_result(res, "ranova()")
    res._lmm_only("ranova()")
    if not isinstance(reduce_terms, bool):
        raise UsageError(f"reduce_terms must be True or False, got {reduce_terms!r}")
    design = res.design
    if design is None:
        raise UsageError("ranova needs the fit's design, which a result rebuilt from JSON (from_dict) does not "
                         "carry: refit with hlmbridge.fit")
    if not isinstance(data, pd.DataFrame):
        raise UsageError("ranova needs data=, the DataFrame the fit was made on (the reduced models are refitted)")
    if design.n_data >= 0 and len(data) != design.n_data:
        raise UsageError(f"ranova: data has {len(data)} rows but the fit was made on {design.n_data}")
    if design.weights is not None or design.offset_argument is not None or design.n_subset_out or design.contrasts:
        raise UnsupportedSpecError("ranova() of a fit with weights=, offset=, subset= or contrasts=", res.engine,
                                   message="ranova() of a fit with weights=, offset=, subset= or contrasts= "
                                           "arguments is not supported yet: the refits would not receive them")
    reml = res.method == "reml"
    forms = _reduced_formulas(res)
    if not reduce_terms:
        from hlmbridge.spec.rformula import parse_formula

        spec = res.spec
        f = parse_formula(spec.to_lme4().formula if spec.formula is None else spec.formula.r_formula())
        bars = [_bar_text(b.lhs, b.group_r) for b in f.random]
        fixed = " + ".join(f.fixed.rhs())
        forms = []
        for k, bar in enumerate(f.random):
            others = [f"({t})" for j, t in enumerate(bars) if j != k]
            forms.append((f"({bars[k]})", f"{f.response.deparse()} ~ {' + '.join([fixed, *others])}",
                          len(bar.lhs.terms) + int(bar.lhs.intercept)))
    rows = [("<none>", int(res.df), float(res.loglik))]
    for name, formula, _ in forms:
        if "|" not in formula.split("~", 1)[1]:
            ll, k = _lm_loglik(design, reml)
        else:
            fit = hlmbridge.fit(formula, data, engine=res.engine, reml=reml)
            if fit.nobs != res.nobs:
                raise UsageError("ranova: the number of rows in use has changed in a reduced model: remove missing "
                                 "values first")
            X = fit.design.X
            if X.shape != design.X.shape or not np.allclose(X, design.X, rtol=1e-12, atol=0):
                # e.g. a Stata command's i.x read as a number in the lme4 formula: not the same fixed part
                raise UnsupportedSpecError("ranova() of this model", res.engine, message=(
                    f"ranova: the reduced model {formula!r} does not have the fit's fixed-effect columns, so its "
                    "likelihood is not comparable; fit the model as an lme4 formula (factors as categorical "
                    "columns) and call ranova on that"))
            ll, k = float(fit.loglik), int(fit.df)
        rows.append((name, k, ll))
    out = []
    notes: list[str] = []
    ll0, k0 = rows[0][2], rows[0][1]
    for pos, (name, k, ll) in enumerate(rows):
        if pos == 0:
            out.append((name, k, ll, -2 * ll + 2 * k, *([float("nan")] * 4)))
            continue
        lrt = 2 * (ll0 - ll)
        df = float(k0 - k)
        p = float(chi2_sf(lrt, df)) if df > 0 else float("nan")
        pbar = 0.5 * p if df == 1 else float("nan")
        if df != 1 and BOUNDARY_NOTE not in notes:
            notes.append(BOUNDARY_NOTE)
        out.append((name, k, ll, -2 * ll + 2 * k, lrt, df, p, pbar))
    table = pd.DataFrame(out, columns=list(RANOVA_COLUMNS))
    table.attrs["heading"] = "ANOVA-like table for random-effects: Single term deletions"
    table.attrs["notes"] = tuple(notes)
    return table
