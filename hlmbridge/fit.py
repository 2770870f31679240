"""``hlmbridge.fit``: one spec, any engine, one result with everything Stata prints.

Examples
--------
>>> import hlmbridge
>>> df = hlmbridge.datasets.hsb("combined")
>>> res = hlmbridge.fit("mixed mathach ses || id:", df, engine="statsmodels")
>>> res.fixed["stata_term"].tolist()
['ses', '_cons']
>>> res.lr_kind
'chibar2'
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design, build_design, rank_notes, require_columns
from hlmbridge.design.cache import FrameCache, fingerprints, per_design
from hlmbridge.design.rows import row_argument
from hlmbridge.engines import require_engine
from hlmbridge.engines.base import Engine, EngineFit, tuning_options
from hlmbridge.errors import FitError, SpecError, UnsupportedSpecError, UsageError
from hlmbridge.inference.stata_parity import (evaluate, linear_loglik, lme4_block_name, not_identified,
                                              variance_parameters)
from hlmbridge.inference.tails import chi2_sf, norm_sf
from hlmbridge.results.fit_result import FitResult, GroupInfo
from hlmbridge.spec.model import FAMILY_LINKS, GLMM_NO_REML, ModelSpec
from hlmbridge.threads import with_bounded_blas

__all__ = ["Z_95", "as_spec", "fit", "result_from_estimates"]

# lmer() arguments hlmbridge does not apply yet: refused with a reason instead of fitting
# a different model than R would.
_LMER_ARGUMENTS_NOT_APPLIED = ("na.action", "control", "start", "verbose", "devFunOnly")
#: lmer's row arguments, applied the same way by every engine (hlmbridge.design.rows).
ROW_ARGUMENTS = ("subset", "weights", "offset", "na_action")
#: fit()'s own keywords besides the engine's tuning options (named in an unknown keyword's message).
FIT_KEYWORDS = ("reml", "REML", "df_method", "contrasts", "family", "link", "nagq", "nAGQ", "residuals") + ROW_ARGUMENTS


def _check_options(adapter: Engine, options: dict[str, Any]) -> None:
    """Refuse every keyword that is not one of the engine's own tuning options."""
    allowed = set(tuning_options(adapter))
    for name in options:
        if name in allowed:
            continue
        if name == "na.action":
            raise UsageError("fit() takes lmer's na.action as na_action= ('na.omit', 'na.exclude' or 'na.fail').")
        if name in _LMER_ARGUMENTS_NOT_APPLIED:
            raise UsageError(f"fit() does not apply lmer's {name}= argument, so it is refused "
                             f"rather than ignored (the fit would differ from R's).")
        known = ", ".join(f"{k}=" for k in sorted(allowed | set(FIT_KEYWORDS), key=str.lower))
        raise UsageError(f"fit() got an unknown keyword {name}= for engine {adapter.name!r} (it takes: {known}).")

#: The normal 97.5% quantile, scipy.stats.norm.ppf(0.975) (a literal: import hlmbridge stays
#: light; scipy.stats costs half a second to import).
Z_95 = 1.959963984540054


def as_spec(model: ModelSpec | str, reml: bool | None = None) -> ModelSpec:
    """A ModelSpec from a spec or a string (Stata command or lme4 formula)."""
    if isinstance(model, ModelSpec):
        if reml is None:
            return model
        return model.with_method("reml" if reml else "ml")
    if isinstance(model, str):
        return _parse(model, reml) if reml is None or isinstance(reml, bool) else ModelSpec.parse(model, reml=reml)
    raise SpecError(f"expected a ModelSpec or a string, got {type(model).__name__}")


@functools.lru_cache(maxsize=256)
def _parse(text: str, reml: bool | None) -> ModelSpec:
    """ModelSpec.parse, once per text: a spec is immutable, and a refit (bootstraps, simulations,
    benchmarks) would otherwise parse the same text every time. Errors are not cached."""
    return ModelSpec.parse(text, reml=reml)


@with_bounded_blas
def fit(model: ModelSpec | str, data: pd.DataFrame, engine: str = "lme4", *, reml: bool | None = None,
        df_method: str | None = None, family: str | None = None, nagq: int | None = None,
        link: str | None = None, residuals: Any = None, **options: Any) -> FitResult:
    """Fit ``model`` on ``data`` with ``engine`` ("lme4", "statsmodels", "nlme" or another of ``ENGINES``).

    A string starting with ``mixed`` (or ``qui mixed``) is a Stata command (ML unless it
    says ``reml``); any other string is an lme4 formula (REML unless ``reml=False``).
    ``data`` is never modified; rows with missing values in model variables are dropped
    (the count is in ``result.n_dropped``). ``REML=`` is accepted as R's spelling of ``reml=``;
    lmer's ``subset=``, ``weights=``, ``offset=``, ``na_action=`` and ``contrasts=`` are applied
    the same way by every engine (:mod:`hlmbridge.design.rows`; rows given as arrays, column names
    or R code such as ``subset="Days >= 2"``; ``contrasts=`` a dict: variable as R labels it ->
    ``"contr.sum"``, ``"contr.helmert"``, ``"contr.poly"``, ``"contr.SAS"``,
    ``"contr.treatment(base = 2)"`` or a matrix); collinear fixed-effect columns are dropped as
    lmer drops them (``result.dropped_columns``, lme4's message in ``result.warnings``); the only
    other keywords are the engine's own options (``engines.base.tuning_options``); anything else,
    including lmer arguments that are not applied (``control=``, ``start=`` ...), is a
    ``UsageError`` naming it and listing every keyword ``fit`` takes.

    ``df_method`` (``"residual"``, ``"satterthwaite"``, ``"kenward-roger"``; a Stata command's
    ``dfmethod()`` is read too) puts the fixed effects on t distributions (``result.with_df``).

    ``family="binomial"`` (link ``"logit"``, ``"probit"`` or ``"cloglog"``: ``link=`` or R's
    ``family='binomial(link = "probit")'``), ``"poisson"`` or ``"negative_binomial"`` (log
    link; lme4's ``glmer.nb``, Stata's ``menbreg``) fits a generalized linear mixed model by
    ML (glmer on the lme4 engine). A binomial response is 0/1,
    ``cbind(successes, failures)`` in the formula, or a proportion with the trials as
    ``weights=`` (glmer's way); a formula's ``offset(log(t))`` or ``offset=`` enter the linear
    predictor. ``nagq=`` (glmer's ``nAGQ=`` too) is glmer's number of quadrature points: 1
    (the default) Laplace, k > 1 adaptive Gauss-Hermite quadrature (one scalar random effect
    only). Stata's ``melogit``, ``meprobit``, ``mecloglog``, ``mepoisson``, ``menbreg``, ``meglm`` and
    ``xtlogit``/``xtprobit``/``xtpoisson ..., re`` commands carry their family, link,
    ``binomial()``/``offset()``/``exposure()`` and integration.
    ``residuals=`` gives an lme4 formula (or a Stata command without ``residuals()``) Stata's
    residual-error structure, fitted by ``engine="nlme"``: ``"ar1(time | id)"``, ``"ar2(time | id)"``,
    ``"ma1(time | id)"``, ``"exponential(age | id)"``, ``"exchangeable(1 | id)"``,
    ``"unstructured(time | id)"``, ``"independent(by = sex)"`` (:func:`hlmbridge.spec.residuals.parse_residuals`;
    a :class:`~hlmbridge.spec.residuals.ResidualStructure` works too).
    """
    t0 = time.perf_counter()
    if "REML" in options:  # R's spelling
        r_reml = options.pop("REML")
        if reml is not None and bool(reml) != bool(r_reml):
            raise UsageError("fit() got both reml= and REML= with different values.")
        reml = bool(r_reml)
    if "nAGQ" in options:  # glmer's spelling
        r_nagq = options.pop("nAGQ")
        if nagq is not None and nagq != r_nagq:
            raise UsageError("fit() got both nagq= and nAGQ= with different values.")
        nagq = r_nagq
    rows_args = {k: options.pop(k) for k in ROW_ARGUMENTS if k in options}
    contrasts = options.pop("contrasts", None)  # lmer's contrasts=, applied by the design (both engines)
    adapter = require_engine(engine)
    _check_options(adapter, options)
    if reml and (family is not None or as_spec(model).is_glmm):
        raise UsageError(f"reml=True: {GLMM_NO_REML}.")
    spec = (_glmm_spec(model, reml, family, nagq, link) if family is not None or nagq is not None or link is not None
            else as_spec(model, reml))
    if residuals is not None:
        spec = _with_residuals(spec, residuals)
    if spec.is_glmm:
        if reml:
            raise UsageError(f"reml=True: {GLMM_NO_REML}.")
        if df_method is not None:
            raise UsageError("df_method= applies to linear mixed models: a GLMM's fixed effects have z tests, as in "
                             "glmer and Stata's melogit.")
    df_method = None if spec.is_glmm else _df_method(model, spec, df_method)
    reasons = adapter.unsupported(spec)
    if reasons:  # each reason is a whole sentence naming the construct and the engine
        raise UnsupportedSpecError(reasons[0], engine, message=reasons[0])
    require_columns(spec, data)
    # Once per fit, shared by every cache below; read from the caller's frame directly (the
    # model's own frame, _model_frame, is built only when a design is).
    prints = fingerprints(data, spec.variables)
    if any(v is not None for v in rows_args.values()) or contrasts is not None:
        for k, v in rows_args.items():  # a column or an R expression over the caller's frame, as in lmer
            if isinstance(v, str) and k != "na_action":
                rows_args[k] = data[v] if v in data.columns else row_argument(v, data, k, rows_args.get("na_action"))
        design = build_design(spec, _model_frame(data, spec), contrasts=contrasts,
                              **rows_args)  # per-call arrays: never cached
    else:
        design = _DESIGNS.get(data, ("design", spec), tuple(prints.values()),
                              lambda: build_design(spec, _model_frame(data, spec)))
    if df_method == "kenward-roger" and not spec.reml:
        raise UsageError("df_method='kenward-roger' needs a REML fit (as pbkrtest and Stata's dfmethod(kroger)); "
                         "pass reml=True or use df_method='satterthwaite'")
    estimates = adapter.fit_design(design, data=data, column_prints=prints, **options)
    result = result_from_estimates(design, estimates, engine, wall_start=t0)
    return result.with_df(df_method) if df_method else result


def _with_residuals(spec: ModelSpec, residuals: Any) -> ModelSpec:
    """``spec`` with fit()'s ``residuals=`` structure (never replacing a command's own ``residuals()``)."""
    from dataclasses import replace

    from hlmbridge.spec.residuals import parse_residuals

    if spec.residuals is not None:
        raise UsageError(f"fit() got residuals= but the model says {spec.residuals.stata()} already")
    return replace(spec, residuals=parse_residuals(residuals))


#: R's family argument as text: ``binomial``, ``binomial()``, ``binomial(link = "probit")``,
#: ``binomial("cloglog")``, ``poisson(link = log)``.
_R_FAMILY = re.compile(r"\s*(?P<family>[A-Za-z_]+)\s*(?:\(\s*(?:(?:link\s*=\s*)?(?P<q>[\"']?)(?P<link>[A-Za-z_]+)"
                       r"(?P=q))?\s*\))?\s*\Z")


def _family_link(family: Any, link: Any) -> tuple[str, str | None]:
    """fit()'s family= (a name or R's family call as text) and link= as (family, link)."""
    m = _R_FAMILY.match(family) if isinstance(family, str) else None
    if m is None or m.group("family") not in ("binomial", "poisson", "negative_binomial"):
        raise UsageError(f"family={family!r} is not supported: choose 'binomial' (links logit, probit, cloglog), "
                         "'poisson' (log link) or 'negative_binomial' (log link, lme4's glmer.nb), as a name or as R "
                         "writes it, e.g. 'binomial(link = \"probit\")'")
    name, in_call = m.group("family"), m.group("link")
    if link is not None and not isinstance(link, str):
        raise UsageError(f"link= must be a link's name, got {link!r}")
    if in_call is not None and link is not None and in_call != link:
        raise UsageError(f"fit() got family={family!r} and link={link!r}: give the link once")
    chosen = link if link is not None else in_call
    links = FAMILY_LINKS[name]
    if chosen is not None and chosen not in links:
        raise UsageError(f"link={chosen!r} is not supported for the {name} family (it takes "
                         f"{', '.join(repr(k) for k in links)})")
    return name, chosen


def _glmm_spec(model: ModelSpec | str, reml: bool | None, family: str | None, nagq: Any,
               link: str | None = None) -> ModelSpec:
    """The spec of ``fit(model, family=..., link=..., nagq=...)``: the family, link and glmer's integration."""
    if nagq is not None and (isinstance(nagq, bool) or not isinstance(nagq, (int, np.integer))):
        raise UsageError(f"nagq= must be a whole number of quadrature points, got {nagq!r}")
    if nagq is not None and nagq < 1:
        raise UsageError(f"nagq={nagq} is not supported: glmer's nAGQ = 0 optimizes the fixed effects in PIRLS, "
                         "an estimate neither Laplace's nor Stata's; use nagq=1 (Laplace) or more points.")
    if isinstance(model, ModelSpec) and not model.is_glmm and model.reml and reml is None:
        raise UsageError(f"the spec's method is REML: {GLMM_NO_REML}.")
    base = as_spec(model, None if isinstance(model, ModelSpec) and model.is_glmm else False)
    if base.is_glmm:  # a Stata GLMM command or a GLMM spec: its own family and integration
        if family is not None:
            name, chosen = _family_link(family, link)
            if name != base.family or (chosen is not None and chosen != base.link):
                raise UsageError(f"fit() got family={family!r} but the model is a {base.family} GLMM with the "
                                 f"{base.link} link")
        elif link is not None and link != base.link:
            raise UsageError(f"fit() got link={link!r} but the model is a {base.family} GLMM with the {base.link} link")
        if nagq is not None:
            raise UsageError("fit() got nagq= for a model that states its integration (give Stata's intpoints() "
                             "and intmethod() in the command)")
        return base
    if family is None:
        what = "nagq=" if nagq is not None else "link="
        raise UsageError(f"{what} applies to a GLMM: give family='binomial', 'poisson' or 'negative_binomial' too")
    name, chosen = _family_link(family, link)
    if base.formula is None and isinstance(model, str):
        raise UsageError("family= goes with an lme4 formula; for a Stata command write melogit, meprobit, mecloglog, "
                         "mepoisson, meglm or xtlogit/xtprobit/xtpoisson")
    points = 1 if nagq is None else int(nagq)
    return base.with_family(name, chosen, intmethod="laplace" if points == 1 else "mcaghermite",  # type: ignore[arg-type]
                            intpoints=points)


def _df_method(model: ModelSpec | str, spec: ModelSpec, df_method: str | None) -> str | None:
    """The df method from fit()'s keyword or the Stata command's ``dfmethod()`` (never both, differing)."""
    from hlmbridge.results.small_sample import resolve_df_method

    stated = None
    if isinstance(model, str) and spec.formula is None:  # a Stata command
        stated = _stated_df_method(model, spec.reml)
    if df_method is None:
        return stated
    label = resolve_df_method(df_method)
    if stated is None:
        return label
    if stated.split(" (")[0] != label.split(" (")[0]:
        raise UsageError(f"fit() got df_method={df_method!r} but the Stata command says dfmethod() = {stated!r}")
    return stated


@functools.lru_cache(maxsize=256)
def _stated_df_method(command: str, reml: bool) -> str | None:
    """parse_stata_df_method, once per command (a refit would parse the text again, 0.1-0.25 ms
    a fit); errors are not cached."""
    from hlmbridge.spec.parse_stata import parse_stata_df_method

    return parse_stata_df_method(command, reml=reml)


_DESIGNS = FrameCache()


def _model_frame(data: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The model's columns of ``data`` as a new frame without ``attrs``.

    pandas deep-copies ``attrs`` (variable and value labels of a .dta file) on every
    column access; the fit reads only values.
    """
    require_columns(spec, data)
    view = data[list(spec.variables)]
    view.attrs = {}
    return view


@per_design
def _group_info(design: Design) -> tuple[GroupInfo, ...]:
    """The result's group summary (once per design: refits reuse it)."""
    out = []
    for ld in design.levels:
        sizes = ld.sizes
        q = len(ld.terms_lme4)
        order = [j for j in range(q) if ld.terms_lme4[j] != "(Intercept)"] + \
                [j for j in range(q) if ld.terms_lme4[j] == "(Intercept)"]
        out.append(GroupInfo(ld.name, int(ld.n_groups), int(sizes.min()), float(sizes.mean()), int(sizes.max()),
                             tuple(ld.terms_stata[j] for j in order), ld.cov))
    return tuple(out)


def _fixed_rows(design: Design, beta: np.ndarray, fixed_vcov: np.ndarray) -> tuple[tuple[Any, ...], ...]:
    """The fixed-effects table: estimate, SE, z, p and the 95% CI, one row per column."""
    se = np.sqrt(np.diag(fixed_vcov))
    z = beta / se
    p = 2 * norm_sf(np.abs(z))
    return tuple(
        (lme4, stata, float(b), float(s), float(zz), float(pp), float(b - Z_95 * s), float(b + Z_95 * s))
        for lme4, stata, b, s, zz, pp in zip(design.fixed_lme4, design.fixed_stata, beta, se, z, p, strict=True)
    )


def _random_rows(design: Design, params: Any, values: np.ndarray, rvar: np.ndarray) -> list[tuple[Any, ...]]:
    """The variance-parameter table: estimate, SE and Stata's CI (a variance's on the log scale)."""
    random_rows = []
    for k, prm in enumerate(params):
        value = float(values[k])
        s = float(np.sqrt(rvar[k])) if rvar[k] > 0 else float("nan")
        if prm.kind == "var":
            if value > 0 and np.isfinite(s):
                half = Z_95 * s / value  # log scale: se(log var) = se(var) / var
                with np.errstate(over="ignore"):  # a variance at the boundary: the CI is (0, inf)
                    lo, hi = value * np.exp(-half), value * np.exp(half)
            else:
                lo = hi = float("nan")
        else:
            lo, hi = value - Z_95 * s, value + Z_95 * s
        random_rows.append((prm.group, prm.kind, prm.term1, prm.term2, prm.stata_term, value, s, float(lo), float(hi),
                            lme4_block_name(design, prm)))
    return random_rows


def _wald(design: Design, beta: np.ndarray, fixed_vcov: np.ndarray) -> tuple[float, float, list[int]]:
    """Wald test of every fixed effect but the constant: chi2, p and the columns tested."""
    keep = [j for j, name in enumerate(design.fixed_stata) if name != "_cons"]
    if not keep:
        return float("nan"), float("nan"), keep
    b = beta[keep]
    wald = float(b @ np.linalg.solve(fixed_vcov[np.ix_(keep, keep)], b))
    return wald, chi2_sf(wald, len(keep)), keep


def _design_warnings(design: Design, est: EngineFit) -> list[str]:
    """Notes on the design (dropped columns, single-observation groups, dropped rows) and the engine's warnings."""
    warns = list(dict.fromkeys(list(design.spec.notes) + list(rank_notes(design)) + list(est.warnings)))
    for ld in design.levels:
        n1 = int(np.sum(ld.sizes == 1))
        if n1:
            warns.append(f"{n1} group(s) of {ld.name!r} have a single observation")
    if design.n_dropped:
        warns.append(f"{design.n_dropped} observation(s) dropped for missing values")
    return warns


def _glmm_result(design: Design, est: EngineFit, engine: str, wall_start: float | None) -> FitResult:
    """A GLMM's FitResult: everything from the engine's estimates and its covariance of them.

    Not :mod:`~hlmbridge.inference.stata_parity` (the linear model's closed forms): the fixed
    effects' and variance parameters' covariances are the engine's, from the full observed
    information of (theta, beta) (``est.fixed_vcov``, ``est.extra["random_vcov"]``); the LR
    test compares with the fixed-only GLM (``est.extra["loglik_fixed"]``); no residual variance.
    """
    if not (np.all(np.isfinite(est.beta)) and np.all(np.isfinite(est.theta)) and np.isfinite(est.loglik)):
        raise FitError(f"the {engine} fit gave non-finite estimates (log likelihood {est.loglik})", engine=engine)
    fixed_vcov = np.asarray(est.fixed_vcov, dtype=float)
    random_vcov = np.asarray(est.extra["random_vcov"], dtype=float)
    params = variance_parameters(design)[:-1]  # no residual variance in a GLMM
    random_rows = _random_rows(design, params, est.theta, np.diag(random_vcov))
    wald, wald_p, keep = _wald(design, est.beta, fixed_vcov)
    ll_fixed = float(est.extra["loglik_fixed"])
    lr = max(0.0, 2.0 * (est.loglik - ll_fixed))
    n_theta = len(params)
    if n_theta == 1:
        lr_kind, lr_p = "chibar2", 0.5 * chi2_sf(lr, 1)
    else:
        lr_kind, lr_p = "chi2", chi2_sf(lr, n_theta)
    ancillary = tuple(est.extra.get("ancillary", ()))  # a negative binomial's /lnalpha and alpha
    cross = est.extra.get("fixed_random_vcov")  # cov(beta, variance parameters), when the engine has it
    cross_rows = () if cross is None else tuple(map(tuple, np.asarray(cross, dtype=float).tolist()))
    df = design.n_fixed + n_theta + (1 if ancillary else 0)
    wall = time.perf_counter() - wall_start if wall_start is not None else float("nan")
    return FitResult(
        spec=design.spec, engine=engine, fixed_rows=_fixed_rows(design, est.beta, fixed_vcov),
        random_rows=tuple(random_rows),
        fixed_vcov=tuple(map(tuple, fixed_vcov.tolist())), random_vcov=tuple(map(tuple, random_vcov.tolist())),
        loglik=float(est.loglik), nobs=design.nobs, groups=_group_info(design),
        wald_chi2=wald, wald_df=len(keep), wald_p=wald_p, lr_chi2=lr, lr_df=n_theta, lr_p=lr_p, lr_kind=lr_kind,
        loglik_linear=ll_fixed, aic=float(-2 * est.loglik + 2 * df), bic=float(-2 * est.loglik + df * np.log(design.nobs)),
        df=int(df), converged=bool(est.converged), singular=bool(est.singular), n_dropped=design.n_dropped,
        warnings=tuple(_design_warnings(design, est)), versions=dict(est.versions), optimizer=est.optimizer,
        wall_time=wall, engine_loglik=float(est.extra.get("glmer_loglik", est.loglik)),
        dropped_columns=design.dropped_lme4, dropped_stata_terms=design.dropped_stata,
        integration=str(est.extra.get("integration", "")), engine_ranef=tuple(est.extra.get("ranef", ())),
        ancillary_rows=ancillary, fixed_random_vcov=cross_rows, design=design,
    )


def _structured_result(design: Design, est: EngineFit, engine: str, wall_start: float | None) -> FitResult:
    """A model with a residual structure (the nlme engine): the log likelihood, fixed effects and
    variance-parameter table from hlmbridge's own likelihood of the structure
    (:mod:`hlmbridge.inference.residual_structures`, handed over in ``est.extra``); the LR test
    against the linear regression with independent errors, as Stata's."""
    from hlmbridge.inference.residual_structures import structured_inference

    model = est.extra.get("structured_model")
    if model is None:
        raise FitError(f"the {engine} engine gave no likelihood for {design.spec.residuals.stata()}", engine=engine)
    inf = structured_inference(model, est.theta)
    if not np.isfinite(inf.loglik):
        raise FitError("the log likelihood at the engine's estimates is not finite", engine=engine)
    wald, wald_p, keep = _wald(design, inf.beta, inf.fixed_vcov)
    n_theta = len(model.params)
    ll_lin = linear_loglik(design)
    lr = max(0.0, 2.0 * (inf.loglik - ll_lin))
    lr_df = n_theta - 1
    lr_kind, lr_p = ("chibar2", 0.5 * chi2_sf(lr, 1)) if lr_df == 1 else ("chi2", chi2_sf(lr, lr_df))
    df = design.n_fixed + n_theta
    warns = _design_warnings(design, est)
    if not np.all(np.isfinite(inf.random_vcov)):
        warns.append("the Hessian of the log likelihood in the variance parameters is not negative definite at "
                     "the estimates (a parameter on its boundary or not identified): their standard errors are "
                     "not reported")
    wall = time.perf_counter() - wall_start if wall_start is not None else float("nan")
    return FitResult(
        spec=design.spec, engine=engine, fixed_rows=_fixed_rows(design, inf.beta, inf.fixed_vcov),
        random_rows=inf.rows, fixed_vcov=tuple(map(tuple, inf.fixed_vcov.tolist())),
        random_vcov=tuple(map(tuple, inf.random_vcov.tolist())), loglik=inf.loglik, nobs=design.nobs,
        groups=_group_info(design), wald_chi2=wald, wald_df=len(keep), wald_p=wald_p, lr_chi2=lr, lr_df=lr_df,
        lr_p=lr_p, lr_kind=lr_kind, loglik_linear=ll_lin, aic=float(-2 * inf.loglik + 2 * df),
        bic=float(-2 * inf.loglik + df * np.log(design.nobs)), df=int(df), converged=bool(est.converged),
        singular=bool(est.singular), n_dropped=design.n_dropped, warnings=tuple(warns), versions=dict(est.versions),
        optimizer=est.optimizer, wall_time=wall, engine_loglik=float(est.extra.get("nlme_loglik", est.loglik)),
        dropped_columns=design.dropped_lme4, dropped_stata_terms=design.dropped_stata, design=design,
    )


def result_from_estimates(design: Design, est: EngineFit, engine: str, *, wall_start: float | None = None) -> FitResult:
    """Turn an engine's point estimates into a FitResult with Stata's inference (a GLMM's by
    :func:`_glmm_result`, a linear model's by :mod:`hlmbridge.inference.stata_parity`)."""
    spec = design.spec
    if spec.is_glmm:
        return _glmm_result(design, est, engine, wall_start)
    if spec.residuals is not None:
        return _structured_result(design, est, engine, wall_start)
    if not (np.all(np.isfinite(est.beta)) and np.all(np.isfinite(est.theta)) and np.isfinite(est.loglik)):
        raise FitError(f"the {engine} fit gave non-finite estimates (log likelihood {est.loglik}); the data are "
                       "probably too large in magnitude: rescale the response or the predictors", engine=engine)
    inf = est.inference if est.inference is not None else evaluate(design, est.beta, est.theta)
    if not np.isfinite(inf.loglik):
        raise FitError("the log likelihood at the engine's estimates is not finite; rescale the data", engine=engine)
    fixed_vcov = est.fixed_vcov if est.fixed_vcov is not None else inf.fixed_vcov
    fixed_rows = _fixed_rows(design, est.beta, fixed_vcov)

    params = variance_parameters(design)
    random_rows = _random_rows(design, params, est.theta, np.diag(inf.random_vcov))

    wald, wald_p, keep = _wald(design, est.beta, fixed_vcov)

    n_theta = len(params) - 1
    ll_lin = linear_loglik(design)
    lr = max(0.0, 2.0 * (inf.loglik - ll_lin))
    if n_theta == 1:
        lr_kind, lr_p = "chibar2", 0.5 * chi2_sf(lr, 1)
    else:
        lr_kind, lr_p = "chi2", chi2_sf(lr, n_theta)
    df = design.n_fixed + len(params)
    aic = -2 * inf.loglik + 2 * df
    bic = -2 * inf.loglik + df * np.log(design.nobs)

    # What R (or Stata) says about dropped collinear columns; the lme4 engine hears R say it too.
    warns = _design_warnings(design, est)
    if not_identified(inf.information):
        warns.append("the variance parameters are not all identified by these data (their information matrix is "
                     "singular): another optimizer can report other values with the same log likelihood, and "
                     "their standard errors are not reported")
    if abs(inf.loglik - est.loglik) > 1e-4 * max(1.0, abs(est.loglik)) and not spec.reml:
        warns.append(
            f"the engine's log likelihood ({est.loglik:.6f}) differs from hlmbridge's evaluation "
            f"at its estimates ({inf.loglik:.6f})"
        )
    wall = time.perf_counter() - wall_start if wall_start is not None else float("nan")
    return FitResult(
        spec=spec,
        engine=engine,
        fixed_rows=fixed_rows,
        random_rows=tuple(random_rows),
        fixed_vcov=tuple(map(tuple, np.asarray(fixed_vcov, dtype=float).tolist())),
        random_vcov=tuple(map(tuple, np.asarray(inf.random_vcov, dtype=float).tolist())),
        loglik=inf.loglik,
        nobs=design.nobs,
        groups=_group_info(design),
        wald_chi2=wald,
        wald_df=len(keep),
        wald_p=wald_p,
        lr_chi2=lr,
        lr_df=n_theta,
        lr_p=lr_p,
        lr_kind=lr_kind,
        loglik_linear=ll_lin,
        aic=float(aic),
        bic=float(bic),
        df=int(df),
        converged=bool(est.converged),
        singular=bool(est.singular),
        n_dropped=design.n_dropped,
        warnings=tuple(warns),
        versions=dict(est.versions),
        optimizer=est.optimizer,
        wall_time=wall,
        engine_loglik=float(est.loglik),
        dropped_columns=design.dropped_lme4,
        dropped_stata_terms=design.dropped_stata,
        design=design,
    )
