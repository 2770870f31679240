"""One result schema for every engine.

A :class:`FitResult` is immutable and JSON-serializable (:meth:`FitResult.to_dict` /
:meth:`FitResult.from_dict` round-trip). It carries every number Stata's ``mixed``
prints, whichever engine produced the estimates. Display (Stata-style tables) lives in
:mod:`hlmbridge.results.display`; postestimation (``estat icc`` ...) in
:mod:`hlmbridge.results.postestimation`.

Tables
------
``fixed``: one row per fixed-effect column, columns :data:`FIXED_COLUMNS`.
``random``: one row per variance parameter (and the residual variance last), columns
:data:`RANDOM_COLUMNS`; ``kind`` is ``"var"`` or ``"cov"``; ``group`` is the grouping
variable or ``"Residual"``; ``stata_term`` is ``var(ses)``, ``cov(ses,_cons)``,
``var(Residual)``; ``term1``/``term2`` use lme4's labels (``(Intercept)``, ``ses``);
``lme4_group`` is the name lme4's ``VarCorr`` gives the row's random-effects term (``id``,
``id.1`` for a second term of the same factor, as in ``(1 | id) + (0 + ses | id)``).

Examples
--------
>>> from hlmbridge.results.fit_result import FIXED_COLUMNS
>>> FIXED_COLUMNS[:3]
('term', 'stata_term', 'estimate')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.spec.model import ModelSpec

__all__ = ["FIXED_COLUMNS", "RANDOM_COLUMNS", "FitResult", "GroupInfo"]

FIXED_COLUMNS: tuple[str, ...] = (
    "term",
    "stata_term",
    "estimate",
    "std_error",
    "statistic",
    "p_value",
    "conf_low",
    "conf_high",
)
RANDOM_COLUMNS: tuple[str, ...] = (
    "group",
    "kind",
    "term1",
    "term2",
    "stata_term",
    "estimate",
    "std_error",
    "conf_low",
    "conf_high",
    "lme4_group",
)


#: What a fit with a residual structure (issue 25) supports among the post-estimation
#: computations: those that need only the fixed effects' covariance or the levels' rows, and
#: those hlmbridge.results.structured computes with the structure's residual covariance
#: (icc() is its refusal, worded as Stata's; ranef/fitted/residuals/predict dispatch there too).
_STRUCTURE_OK = ("lincom()", "test() (F tests)", "recov() (estat recov)", "icc() (estat icc)", "coef()",
                 "tidy()", "glance()", "random_sd()")


@dataclass(frozen=True)
class GroupInfo:
    """Group sizes at one grouping level (Stata's ``Obs per group``)."""

    group: str
    n_groups: int
    min: int
    mean: float
    max: int
    terms: tuple[str, ...] = ()  # random terms in Stata's names and order (slopes, then _cons)
    cov: str = ""  # identity, independent, exchangeable, unstructured or blocks

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(self.terms))


def _frame(rows: tuple[tuple[Any, ...], ...], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(columns))


def _rows(df: pd.DataFrame, columns: tuple[str, ...]) -> tuple[tuple[Any, ...], ...]:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"table is missing columns {missing}")
    out = []
    for rec in df[list(columns)].itertuples(index=False, name=None):
        out.append(tuple(v.item() if isinstance(v, np.generic) else v for v in rec))
    return tuple(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x


def _unjson(x: Any) -> Any:
    if x is None:
        return float("nan")
    if x == "inf":
        return float("inf")
    if x == "-inf":
        return float("-inf")
    return x


#: Fields a result written by an older hlmbridge may lack (their defaults apply).
_OPTIONAL_FIELDS = ("df_method", "fixed_df", "fixed_vcov_adjusted", "dropped_columns", "dropped_stata_terms",
                    "integration", "engine_ranef", "ancillary_rows", "fixed_random_vcov")
#: The columns of a result's ancillary parameters (:attr:`FitResult.ancillary`).
ANCILLARY_COLUMNS = ("stata_term", "estimate", "std_error", "conf_low", "conf_high")


@dataclass(frozen=True)
class FitResult:
    """The normalized result of one fit (see the module docstring for the tables).

    Scalars follow Stata's ``e()``: ``loglik`` (``e(ll)``; the REML criterion's log
    likelihood on lme4's scale for REML fits), ``wald_chi2``/``wald_df``/``wald_p``
    (every fixed effect but ``_cons``), the LR test versus the linear model
    (``lr_chi2``, ``lr_df``, ``lr_p``, ``lr_kind`` = ``"chibar2"`` or ``"chi2"``),
    ``aic``/``bic``/``df`` (``estat ic``). ``fixed_vcov`` is the covariance of the fixed
    effects (rows in ``fixed`` order); ``random_vcov`` the covariance of the variance
    parameters on the variance scale (rows in ``random`` order, residual included).
    """

    spec: ModelSpec
    engine: str
    fixed_rows: tuple[tuple[Any, ...], ...]
    random_rows: tuple[tuple[Any, ...], ...]
    fixed_vcov: tuple[tuple[float, ...], ...]
    random_vcov: tuple[tuple[float, ...], ...]
    loglik: float
    nobs: int
    groups: tuple[GroupInfo, ...]
    wald_chi2: float
    wald_df: int
    wald_p: float
    lr_chi2: float
    lr_df: int
    lr_p: float
    lr_kind: str
    loglik_linear: float
    aic: float
    bic: float
    df: int
    converged: bool
    singular: bool
    n_dropped: int = 0
    warnings: tuple[str, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)
    optimizer: str = ""
    wall_time: float = float("nan")
    engine_loglik: float = float("nan")
    # Small-sample inference (hlmbridge.results.small_sample): the df method of the fixed table
    # ("" for Stata's default z tests), each coefficient's df, and the covariance the table's
    # SEs come from when it differs from fixed_vcov (Kenward-Roger's adjusted one).
    df_method: str = ""
    fixed_df: tuple[float, ...] = ()
    fixed_vcov_adjusted: tuple[tuple[float, ...], ...] = ()
    # Fixed-effect columns left out as linear combinations of the others, as lmer does
    # ("fixed-effect model matrix is rank deficient so dropping ..."; its ``col.dropped``) and
    # Stata ("omitted because of collinearity"): lme4's names and Stata's.
    dropped_columns: tuple[str, ...] = ()
    dropped_stata_terms: tuple[str, ...] = ()
    # A GLMM's integration of the random effects, as the engine computed it ("" for a linear model).
    integration: str = ""
    # A GLMM's random effects as the engine gives them (glmer's ranef(condVar = TRUE)): rows of
    # (grouping factor, level, lme4 term, conditional mode, conditional SD).
    engine_ranef: tuple[tuple[Any, ...], ...] = ()
    # Ancillary parameters Stata prints between the fixed and the random table (a negative
    # binomial's /lnalpha and alpha): rows of ANCILLARY_COLUMNS; empty for other models.
    ancillary_rows: tuple[tuple[Any, ...], ...] = ()
    # A GLMM's covariance of the fixed effects (rows, ``fixed`` order) with the variance
    # parameters (columns, ``random`` order), from the same full observed information as
    # ``fixed_vcov`` and ``random_vcov`` (Stata's e(V) holds it; margins' delta method uses it);
    # empty for a linear model, whose two blocks are independent at the optimum.
    fixed_random_vcov: tuple[tuple[float, ...], ...] = ()
    # The design the estimates belong to (not serialized, not compared): what post-fit
    # computations (df methods, predictions) need without a refit. None after from_dict.
    design: Any = field(default=None, compare=False, repr=False)

    # ---- tables -------------------------------------------------------------------
    @property
    def fixed(self) -> pd.DataFrame:
        """Fixed effects, one row per column of the design (a fresh copy each call).

        With a df method (:meth:`with_df`) ``statistic`` is a t statistic, p-values and CIs
        come from the t distribution, and a ``df`` column follows ``std_error``.
        """
        out = _frame(self.fixed_rows, FIXED_COLUMNS)
        if self.df_method:
            out.insert(out.columns.get_loc("std_error") + 1, "df", list(self.fixed_df))
        return out

    @property
    def ancillary(self) -> pd.DataFrame:
        """Ancillary parameters (a negative binomial GLMM's ``/lnalpha`` and ``alpha``, with SE
        and CI as Stata's ``menbreg`` prints them); no rows for other models."""
        return _frame(self.ancillary_rows, ANCILLARY_COLUMNS)

    @property
    def random(self) -> pd.DataFrame:
        """Variance parameters on the variance/covariance scale (a fresh copy each call)."""
        return _frame(self.random_rows, RANDOM_COLUMNS)

    # ---- group sizes of the outermost level -----------------------------------------
    @property
    def n_groups(self) -> int:
        """Number of groups at the outermost level."""
        return self.groups[0].n_groups

    @property
    def group_min(self) -> int:
        """Smallest group at the outermost level."""
        return self.groups[0].min

    @property
    def group_mean(self) -> float:
        """Average group size at the outermost level."""
        return self.groups[0].mean

    @property
    def group_max(self) -> int:
        """Largest group at the outermost level."""
        return self.groups[0].max

    @property
    def method(self) -> str:
        """``"ml"`` or ``"reml"``, as fitted."""
        return self.spec.method

    @property
    def family(self) -> str:
        """``"gaussian"`` (a linear mixed model), ``"binomial"``, ``"poisson"`` or
        ``"negative_binomial"`` (a GLMM)."""
        return self.spec.family

    def _lmm_only(self, what: str) -> None:
        """Refuse a linear-model-only computation on a GLMM (one sentence naming it), and one that
        assumes independent residuals on a fit with a residual structure (issue 25)."""
        if self.spec.is_glmm:
            from hlmbridge.errors import UnsupportedSpecError

            raise UnsupportedSpecError(what, self.engine, message=(
                f"{what} is computed for linear mixed models only; hlmbridge does not compute it for a "
                f"{self.spec.family} GLMM yet."))
        if self.spec.residuals is not None and what not in _STRUCTURE_OK:
            from hlmbridge.errors import UnsupportedSpecError

            raise UnsupportedSpecError(what, self.engine, message=(
                f"{what} assumes independent residuals with one variance; hlmbridge does not compute it after "
                f"{self.spec.residuals.stata()} yet."))

    # ---- GLMM tables ------------------------------------------------------------------
    def eform(self) -> pd.DataFrame:
        """Exponentiated fixed effects, Stata's ``or`` (logit) / ``irr`` (Poisson) table:
        exp(b), its SE by the delta method (exp(b) se(b)), z and p of b, the exponentiated CI."""
        from hlmbridge.results.glmm import eform_table

        return eform_table(self)

    def xt_parameters(self) -> pd.DataFrame:
        """``xtlogit, re``'s ancillary rows: ``/lnsig2u``, ``sigma_u`` and ``rho`` (the latent
        intra-class correlation var/(var + pi^2/3)), with Stata's SEs and CIs."""
        from hlmbridge.results.glmm import xt_parameters

        return xt_parameters(self)

    # ---- views and postestimation (thin wrappers) -----------------------------------
    def random_sd(self) -> pd.DataFrame:
        """The random part on the sd/corr scale (Stata's ``stddev`` option)."""
        self._lmm_only("random_sd()")
        if self.spec.residuals is not None:
            from hlmbridge.results.structured import structured_random_sd

            return structured_random_sd(self)
        from hlmbridge.results.postestimation import random_sd

        return random_sd(self)

    def icc(self) -> pd.DataFrame:
        """Stata's ``estat icc`` (for a binomial GLMM on the latent scale of its link)."""
        if self.spec.is_glmm:
            from hlmbridge.results.glmm import latent_icc

            return latent_icc(self)
        from hlmbridge.results.postestimation import icc

        return icc(self)

    def wcorrelation(self, at: Any = None, covariance: bool = False) -> pd.DataFrame:
        """Stata's ``estat wcorrelation[, at(id=#) covariance]``: the model-implied within-group
        correlation (covariance) matrix of one outermost group (see
        :func:`hlmbridge.results.structured.wcorrelation`)."""
        from hlmbridge.results.structured import wcorrelation

        return wcorrelation(self, at, covariance)

    def recov(self, corr: bool = False) -> dict[str, pd.DataFrame]:
        """Stata's ``estat recov`` (``corr=True``: ``estat recov, corr``)."""
        self._lmm_only("recov() (estat recov)")
        from hlmbridge.results.postestimation import recov

        return recov(self, corr=corr)

    def ic(self) -> pd.DataFrame:
        """Stata's ``estat ic``."""
        from hlmbridge.results.postestimation import ic

        return ic(self)

    def summary(self) -> str:
        """Text laid out like Stata's ``mixed`` output."""
        from hlmbridge.results.display import summary

        return summary(self)

    def profile_ci(self, level: float = 0.95, which: str | list[str] | None = None) -> pd.DataFrame:
        """Profile-likelihood intervals (lme4's ``confint(method = "profile")``), sd/cor and
        variance scales; needs the design (see :mod:`hlmbridge.inference.profile`)."""
        self._lmm_only("profile_ci()")
        from hlmbridge.inference.profile import profile_ci

        return profile_ci(self, level, which)

    def bootstrap(self, data: pd.DataFrame, n: int = 200, seed: int | None = None, executor: Any = None,
                  progress: Any = True, level: float = 0.95, max_workers: int | None = None,
                  statistic: Any = None) -> Any:
        """Parametric bootstrap: ``n`` refits by the same engine on ``data`` (the fit's frame) with
        the response simulated from this fit, through :func:`hlmbridge.fit_many`; percentile, basic
        and normal intervals for every number, or for ``statistic(refit)`` (a
        :class:`hlmbridge.inference.bootstrap.BootstrapResult`)."""
        self._lmm_only("bootstrap()")
        from hlmbridge.inference.bootstrap import bootstrap

        return bootstrap(self, data, n=n, seed=seed, executor=executor, progress=progress, level=level,
                         max_workers=max_workers, statistic=statistic)

    def with_df(self, method: str, *, information: str | None = None) -> FitResult:
        """The same fit with t tests on ``method``'s df (``"residual"``, ``"satterthwaite"``,
        ``"kenward-roger"``): no refit (see :mod:`hlmbridge.results.small_sample`)."""
        self._lmm_only("with_df() (t tests)")
        from hlmbridge.results.small_sample import with_df

        return with_df(self, method, information=information)

    def anova(self, ddf: str | None = None, type: int | str = 3, *, show_tests: bool = False) -> Any:
        """lmerTest's ``anova(fit, type = type, ddf = ddf)``: an F test of every fixed term with
        lmerTest's type I, II or III contrasts (see :mod:`hlmbridge.results.anova`); ``ddf``
        ``"Satterthwaite"``, ``"Kenward-Roger"`` or ``"residual"`` (when None: the fit's df method,
        else Satterthwaite, lmerTest's default). ``show_tests=True`` returns ``(table, {term: L})``
        (lmerTest's ``show_tests``)."""
        self._lmm_only("anova()")
        from hlmbridge.results.anova import anova_table

        if ddf is None and not self.df_method:
            ddf = "Satterthwaite"  # lmerTest's anova() default

        return anova_table(self, type, ddf, show_tests)

    def lincom(self, L: Any, df_method: str | None = None, level: float = 0.95) -> pd.DataFrame:
        """Estimate, SE, df, t (z without a df method), p and CI of a linear combination of the
        fixed effects: an expression in their names (Stata's ``lincom``: ``"ses + 2*sector"``,
        Stata's or lme4's names), a weight vector, or a matrix of them (one row each;
        lmerTest's ``contest(joint = FALSE)``). See :mod:`hlmbridge.results.lincom`."""
        self._lmm_only("lincom()")
        from hlmbridge.results.lincom import lincom

        return lincom(self, L, df_method, level)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's ``glance``: nobs, sigma, logLik, AIC, BIC, deviance (ML) or REMLcrit
        (REML), df.residual (see :mod:`hlmbridge.results.broom`)."""
        self._lmm_only("glance()")
        if self.spec.residuals is not None:
            from hlmbridge.results.structured import structured_glance

            return structured_glance(self)
        from hlmbridge.results.broom import glance

        return glance(self)

    def augment(self, data: pd.DataFrame | None = None) -> pd.DataFrame:
        """broom.mixed's ``augment``: the model's variables (or ``data``'s rows used) with
        ``.fitted``, ``.resid``, ``.fixed`` and lme4's response columns."""
        self._lmm_only("augment()")
        from hlmbridge.results.broom import augment

        return augment(self, data)

    def test(self, L: Any, rhs: Any = None, df_method: str | None = None) -> pd.DataFrame:
        """The F test of ``L beta = rhs`` for a contrast matrix ``L`` (one column per fixed effect)."""
        self._lmm_only("test() (F tests)")
        from hlmbridge.results.small_sample import f_test

        return f_test(self, L, rhs, df_method)

    def tidy(self, effects: str | tuple[str, ...] = ("fixed", "ran_pars")) -> pd.DataFrame:
        """A long table in broom.mixed's vocabulary (sd/cor scale for the random part);
        ``effects`` picks ``"fixed"``, ``"ran_pars"`` and/or ``"ran_vals"`` (random effects)."""
        self._lmm_only("tidy()")
        if self.spec.residuals is not None:
            from hlmbridge.results.structured import structured_tidy

            return structured_tidy(self, effects)
        from hlmbridge.results.postestimation import tidy

        return tidy(self, effects=effects)

    # ---- after the fit (need the design: a result read from JSON has none) ----------
    def ranef(self, level: float = 0.95) -> pd.DataFrame:
        """Random effects (conditional modes) with conditional SDs and intervals, one row per
        grouping factor, group and term (lme4's ``ranef(condVar = TRUE)``). For a GLMM these
        are glmer's own (the engine's, not computed by hlmbridge; ``frame.attrs["source"]`` says so)."""
        if self.spec.is_glmm:
            from hlmbridge.results.glmm import engine_ranef_frame

            return engine_ranef_frame(self, level)
        from hlmbridge.results.random_effects import ranef_frame

        return ranef_frame(self, level)

    def coef(self) -> dict[str, pd.DataFrame]:
        """Each group's coefficients, fixed plus random, per grouping factor (lme4's ``coef``)."""
        self._lmm_only("coef()")
        from hlmbridge.results.random_effects import coef_frames

        return coef_frames(self)

    def fitted(self, level: int | None = None) -> pd.Series:
        """Fitted values (``level=0``: population level; see :mod:`hlmbridge.results.prediction`;
        a GLMM's on the response scale, glmer's ``fitted()``)."""
        from hlmbridge.results.prediction import fitted

        return fitted(self, level)

    def residuals(self, kind: str = "response", level: int | None = None) -> pd.Series:
        """Residuals, ``kind="response"``, ``"working"``, ``"deviance"`` or ``"pearson"`` (see
        :mod:`hlmbridge.results.prediction`); a GLMM's are glmer's ``residuals(type = kind)``."""
        from hlmbridge.results.prediction import residuals

        return residuals(self, kind, level)

    def predict(self, newdata: pd.DataFrame | None = None, re_form: str | None = None, type: str = "link",
                se_fit: bool = False) -> Any:
        """Predictions on new data with every random effect (``re_form=None``), none (``"~0"``)
        or some (``"~ (1 | g)"``, lme4's ``re.form``); ``type="link"`` or ``"response"`` (glmer's;
        the same for a linear model); ``se_fit=True``: population-level SEs (linear models).
        A :class:`hlmbridge.results.prediction.Prediction`."""
        from hlmbridge.results.prediction import predict

        return predict(self, newdata, re_form, type, se_fit)

    # ---- serialization -------------------------------------------------------------
    def to_dict(self, ranef: bool = False) -> dict[str, Any]:
        """A JSON-serializable dict; :meth:`from_dict` gives back an equal result.

        ``ranef=True`` adds the random effects (:meth:`ranef`, a list of records) under
        ``"ranef"``; :meth:`from_dict` does not read them back.
        """
        from hlmbridge.spec.serialize import spec_to_dict

        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "design":
                continue  # arrays of the data: never serialized
            value = getattr(self, f.name)
            if f.name == "spec":
                value = spec_to_dict(value)
            elif f.name == "groups":
                value = [{**g.__dict__, "terms": list(g.terms)} for g in value]
            out[f.name] = _jsonable(value)
        if ranef:
            out["ranef"] = _jsonable(self.ranef().to_dict(orient="records"))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitResult:
        """Rebuild a result from :meth:`to_dict`'s output."""
        from hlmbridge.spec.serialize import spec_from_dict

        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "design" or (f.name in _OPTIONAL_FIELDS and f.name not in d):
                continue  # not serialized / absent from results written before these fields existed
            v = d[f.name] if f.name in d else None
            if f.name == "spec":
                v = spec_from_dict(v)
            elif f.name == "groups":
                v = tuple(GroupInfo(**g) for g in v)
            elif f.name == "fixed_df":
                v = tuple(_unjson(x) for x in v)
            elif f.name in ("fixed_rows", "random_rows", "fixed_vcov", "random_vcov", "fixed_vcov_adjusted",
                            "engine_ranef", "ancillary_rows", "fixed_random_vcov"):
                v = tuple(tuple(_unjson(x) for x in row) for row in v)
            elif f.name in ("warnings", "dropped_columns", "dropped_stata_terms"):
                v = tuple(v)
            elif f.name == "versions":
                v = dict(v)
            else:
                v = _unjson(v)
            kw[f.name] = v
        return cls(**kw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FitResult):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    # ---- a GLMM after the fit: empirical Bayes and population-averaged quantities -------
    def ebmeans(self, points: int | None = None) -> pd.DataFrame:
        """Stata's ``predict, reffects`` (empirical Bayes means) and ``reses`` of a GLMM's scalar
        random intercept, beside ``ebmodes`` (= glmer's ``ranef``), by adaptive quadrature with
        ``points`` (the fit's by default); see :mod:`hlmbridge.results.eb_means`."""
        from hlmbridge.results.eb_means import eb_frame

        return eb_frame(self, points)

    def marginal_predict(self, newdata: pd.DataFrame | None = None, points: int | None = None) -> Any:
        """Stata's ``predict, marginal``: means with the random effects integrated out (see
        :mod:`hlmbridge.results.population_averaged`)."""
        from hlmbridge.results.population_averaged import marginal_predict

        return marginal_predict(self, newdata, points)

    def population_averaged_ratio(self, at0: Mapping[str, Any], at1: Mapping[str, Any],
                                  points: int | None = None) -> dict[str, float]:
        """The population-averaged odds ratio (binomial) or rate ratio (Poisson) of ``at1``
        against ``at0`` (see :mod:`hlmbridge.results.population_averaged`)."""
        from hlmbridge.results.population_averaged import population_averaged_ratio

        return population_averaged_ratio(self, at0, at1, points)

    def xtrho(self, at: float | None = None, points: int | None = None, level: float = 0.95) -> pd.DataFrame:
        """``xtrho``'s manifest intra-class measures of a random-intercept binary GLMM at the
        median linear predictor (or ``at``), with CIs (see :mod:`hlmbridge.results.population_averaged`)."""
        from hlmbridge.results.population_averaged import XTRHO_POINTS, manifest_association

        return manifest_association(self, at, XTRHO_POINTS if points is None else points, level)

    # ---- model comparison (hlmbridge.results.compare; keep these together) ------------
    def ranova(self, data: pd.DataFrame, *, reduce_terms: bool = True) -> pd.DataFrame:
        """lmerTest's ``ranova``: an LR test for each random term, reduced as lmerTest reduces it;
        the reduced models are refitted on ``data`` (see :func:`hlmbridge.results.compare.ranova`)."""
        from hlmbridge.results.compare import ranova

        return ranova(self, data, reduce_terms=reduce_terms)

    def drop1(self, ddf: str = "Satterthwaite") -> pd.DataFrame:
        """lmerTest's ``drop1``: the F test of each marginal fixed term
        (see :func:`hlmbridge.results.compare.drop1`)."""
        from hlmbridge.results.compare import drop1

        return drop1(self, ddf)

    # ---- marginal means and margins (thin delegates) ----------------------------------
    def emmeans(self, specs: Any, by: Any = None, **kwargs: Any) -> Any:
        """R's ``emmeans(fit, specs, by = by, ...)``: estimated marginal means over the reference
        grid, with contrasts when ``specs`` names a method (``"pairwise ~ f | g"``); keywords
        ``data``, ``at``, ``weights``, ``df_method``, ``level``, ``adjust``, ``type`` (see
        :mod:`hlmbridge.results.emmeans`)."""
        from hlmbridge.results.emmeans import emmeans

        return emmeans(self, specs, by, **kwargs)

    def margins(self, variables: Any = None, **kwargs: Any) -> Any:
        """Stata's ``margins`` after ``mixed``: predictive margins, ``at``, ``over``, ``dydx``,
        ``atmeans`` with delta-method z (see :mod:`hlmbridge.results.margins`)."""
        from hlmbridge.results.margins import margins

        return margins(self, variables, **kwargs)

    # ---- issue 27: simulation, intervals, notebook display ---------------------------
    def simulate(self, nsim: int = 1, seed: int | None = None, re_form: str | None = "~0",
                 use_u: bool = False) -> pd.DataFrame:
        """lme4's ``simulate``: ``nsim`` responses on the fit's rows, one column each (``sim_1`` ...);
        new random effects (``re_form="~0"``) or the fitted ones (``use_u=True`` / ``re_form=None``)
        (see :func:`hlmbridge.inference.bootstrap.simulate_frame`)."""
        self._lmm_only("simulate()")
        from hlmbridge.inference.bootstrap import simulate_frame

        return simulate_frame(self, nsim, seed, re_form, use_u)

    def confint(self, method: str = "profile", level: float = 0.95, **options: Any) -> pd.DataFrame:
        """lme4's ``confint``: one interval per parameter (sd/cor scale, sigma, fixed effects) by
        ``method`` ``"Wald"``, ``"profile"`` or ``"boot"`` (``data=`` or ``boot=``, ``boot_type=``,
        ``n=``, ``seed=``), for the rows ``parm=`` picks; the ``method`` column names each interval's method
        (see :mod:`hlmbridge.results.confint`)."""
        self._lmm_only("confint()")
        from hlmbridge.results.confint import confint

        return confint(self, method, level, **options)

    def _repr_html_(self) -> str:
        """The fit as HTML tables in Jupyter (see :mod:`hlmbridge.results.html`)."""
        from hlmbridge.results.html import fit_html

        return fit_html(self)
