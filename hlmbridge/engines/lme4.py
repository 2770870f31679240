"""The lme4 engine: the only module that talks to R.

rpy2 is imported lazily, on the first fit. The R code in ``r/hlmbridge.R`` is loaded
into a private environment (never R's global environment). Each data column a model
needs is pushed to R once per data frame and reused by later fits; each fit is one R
call, which returns plain vectors and lists. R warnings and messages are captured into
the result, never printed.

Examples
--------
>>> from hlmbridge.engines.lme4 import Lme4Engine
>>> engine = Lme4Engine()          # cheap: R starts only when a fit needs it
>>> engine.name
'lme4'
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, replace
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design
from hlmbridge.engines.base import EngineFit
from hlmbridge.engines.r_session import INSTALL_HINT, _RSession, r_source_path
from hlmbridge.engines.r_session import session as _session
from hlmbridge.errors import DataError, EngineUnavailableError, FitError, UnsupportedSpecError, UsageError
from hlmbridge.design.cache import FrameCache, fingerprints, per_design
from hlmbridge.inference.optimum import (is_singular, likelihood_gain, overflow_problem, profiled_loglik,
                                         weight_scale)
from hlmbridge.inference.stata_parity import evaluate, theta_from_matrices, uses_sparse_algebra
from hlmbridge.spec.model import ModelSpec
from hlmbridge.spec.render import glmer_refusal

__all__ = ["INSTALL_HINT", "Lme4Engine", "glmer_nagq", "push_frame", "r_source_path"]


@dataclass(frozen=True)
class _RFit:
    """What ``hlmbridge_fit`` returns, read from its flat vectors (see r/hlmbridge.R)."""

    loglik: float
    sigma2: float
    singular: bool
    conv_code: int
    feval: int
    elapsed: float
    nobs: int
    optimizer: str
    fixef: dict[str, float]
    blocks: list[tuple[str, list[str], np.ndarray]]
    warnings: tuple[str, ...]
    messages: tuple[str, ...]
    conv_messages: tuple[str, ...]
    vcov: np.ndarray | None
    fixed_names: tuple[str, ...] = ()
    design_check: np.ndarray | None = None
    lme4_theta: np.ndarray | None = None  # lme4's own parameters (relative Cholesky factors)
    feval_before: int = 0  # evaluations of an optimizer run before the final one (R side)
    dropped: tuple[str, ...] | None = None  # columns lme4 dropped as rank deficient


def _r_items(out: Any) -> dict[str, Any]:
    """The elements of an R list by name, at rpy2's low level (no conversion): reading the
    list through rpy2's converters cost about 0.2 ms a fit, 1-2% of a small one."""
    from rpy2.rinterface import ListSexpVector

    names = out.do_slot("names")
    return {str(name): ListSexpVector.__getitem__(out, i) for i, name in enumerate(names)}


def _r_doubles(x: Any) -> np.ndarray:
    """An R double vector as a numpy copy (R may reuse the memory)."""
    return np.array(x.memoryview(), dtype=float)


def _read_fit(out: Any) -> _RFit | str:
    """Decode ``hlmbridge_fit``'s list: an _RFit, or lme4's error message."""
    items = _r_items(out)
    if "error" in items:
        return str(items["error"][0])
    num = _r_doubles(items["num"])
    chr_ = [str(x) for x in items["chr"]]
    counts = [int(x) for x in items["counts"]]
    n_fixed, n_blocks = counts[0], counts[1]
    sizes = counts[2 : 2 + n_blocks]
    n_warn, n_msg, n_conv = counts[2 + n_blocks :]
    pos = 7
    beta = num[pos : pos + n_fixed]
    pos += n_fixed
    fixed_names = chr_[1 : 1 + n_fixed]
    groups = chr_[1 + n_fixed : 1 + n_fixed + n_blocks]
    cpos = 1 + n_fixed + n_blocks
    blocks = []
    for group, q in zip(groups, sizes, strict=True):
        mat = num[pos : pos + q * q].reshape((q, q), order="F")
        blocks.append((group, chr_[cpos : cpos + q], mat))
        pos += q * q
        cpos += q
    vcov = num[pos:].reshape((n_fixed, n_fixed), order="F") if num.size > pos else None
    warns = tuple(chr_[cpos : cpos + n_warn])
    msgs = tuple(chr_[cpos + n_warn : cpos + n_warn + n_msg])
    conv = tuple(chr_[cpos + n_warn + n_msg : cpos + n_warn + n_msg + n_conv])
    return _RFit(
        loglik=float(num[0]), sigma2=float(num[1]), singular=bool(num[2]), conv_code=int(num[3]),
        feval=int(num[4]) if np.isfinite(num[4]) else -1, elapsed=float(num[5]), nobs=int(num[6]),
        optimizer=chr_[0], fixef=dict(zip(fixed_names, beta.tolist(), strict=True)), blocks=blocks,
        warnings=warns, messages=msgs, conv_messages=conv, vcov=vcov, fixed_names=tuple(fixed_names),
        design_check=_r_doubles(items["design"]) if "design" in items else None,
        lme4_theta=_r_doubles(items["theta"]) if "theta" in items else None,
        feval_before=int(items["feval_before"][0]) if "feval_before" in items else 0,
        dropped=tuple(str(x) for x in items["dropped"]) if "dropped" in items else None,
    )


def _label(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _r_factor(session: _RSession, codes: np.ndarray, labels: Sequence[str], name: str, ordered: bool = False) -> Any:
    """An R factor from 0-based codes (-1 = NA) and level labels, refusing labels R would merge."""
    labels = [str(lab) for lab in labels]
    if any("\x00" in lab for lab in labels):
        raise DataError(f"a level of {name!r} contains a NUL character, which R cannot hold: R would merge "
                        "levels that differ only after it")
    if len(set(labels)) != len(labels):
        raise DataError(f"the column {name!r} has distinct values with the same text label; R would merge them")
    ro = session.ro
    fcodes = codes.astype(float)
    fcodes[codes < 0] = np.nan
    out = session.codes_factor(ro.FloatVector(fcodes), ro.StrVector(labels))
    if ordered:
        out = session.ordered(out)
    return out


def _to_r(session: _RSession, column: pd.Series, as_factor: bool) -> Any:
    """A Stata-style spec's column: numeric, or a grouping factor from sorted codes."""
    ro = session.ro
    if as_factor:
        codes, uniques = pd.factorize(column, sort=True)
        return _r_factor(session, codes, [_label(u) for u in uniques], str(column.name))
    if pd.api.types.is_integer_dtype(column.dtype):
        values = column.to_numpy(dtype=float, na_value=np.nan)
        ok = ~np.isnan(values)
        if not ok.any() or np.abs(values[ok]).max() < 2**31 - 1:
            # An R integer, as R would read the column (factor labels 100000, not 1e+05);
            # a pandas nullable integer's NA becomes R's NA_integer_.
            ints = np.where(ok, values, 0).astype(np.int32)
            if ok.all():
                return ro.IntVector(ints)
            return ro.IntVector([int(v) if k else ro.NA_Integer for v, k in zip(ints.tolist(), ok.tolist())])
    return ro.FloatVector(column.to_numpy(dtype=float, na_value=np.nan))


def _to_r_as_r_reads(session: _RSession, data: pd.DataFrame, name: str) -> Any:
    """An lme4-formula spec's column, as hlmbridge's evaluator reads it (so R sees the same
    levels in the same order): numbers (integers as R integers), logicals, factors."""
    from hlmbridge.design.evaluate import Factor, column_value

    value = column_value(data, name)
    ro = session.ro
    if isinstance(value, Factor):
        if value.logical:
            return session.as_logical(ro.IntVector(np.where(value.codes < 0, -(2**31), value.codes).astype(np.int32)))
        if value.character:
            # Text goes over as text: R orders its levels by its own locale's collation, and the
            # design check then catches any difference from hlmbridge's order.
            labels = [str(lab) for lab in value.levels]
            if any("\x00" in lab for lab in labels):
                raise DataError(f"a level of {name!r} contains a NUL character, which R cannot hold: R would merge "
                                "levels that differ only after it")
            text = np.array(labels + [None], dtype=object)[np.where(value.codes >= 0, value.codes, len(labels))]
            return ro.StrVector([ro.NA_Character if t is None else t for t in text.tolist()])
        return _r_factor(session, value.codes, value.levels, name, value.ordered)
    return _to_r(session, data[name], False)


_PUSHED = FrameCache()  # R copies of columns, per data frame, checked against their content


def _push(session: _RSession, data: pd.DataFrame, names: Sequence[str], group_columns: Collection[str],
          prints: Mapping[str, tuple[Any, ...]] | None = None, as_r_reads: bool = False) -> Any:
    """An R data.frame of ``names``, built from R copies of ``data``'s columns that are made once
    and reused while their fingerprints (``prints``, computed here when not given) match."""
    if prints is None:
        prints = fingerprints(data, names)

    def make_frame() -> Any:
        columns = {
            v: _PUSHED.get(data, ("r", v, "group" if v in group_columns else "value"), (prints[v],),
                           lambda v=v: _to_r(session, data[v], v in group_columns))
            if not as_r_reads else
            _PUSHED.get(data, ("r", v, "formula"), (prints[v],), lambda v=v: _to_r_as_r_reads(session, data, v))
            for v in names
        }
        return session.frame(session.ro.ListVector(columns))

    # The R data.frame itself is reused while its columns are unchanged (R never modifies it:
    # hlmbridge_fit's changes go to R's copy-on-modify local copy); a refit then skips one R
    # call and rpy2's list conversion.
    key = ("r frame", tuple(names), frozenset(group_columns) if not as_r_reads else "formula")
    return _PUSHED.get(data, key, tuple(prints[v] for v in names), make_frame)


def push_frame(data: pd.DataFrame, names: Sequence[str] | None = None, group_columns: Collection[str] = ()) -> Any:
    """hlmbridge's data path into R: an R data.frame of ``names`` (default: all columns).

    Numeric columns go over as double vectors, ``group_columns`` as factors built from
    integer codes; each column is sent once per data frame and reused while unchanged.
    """
    session = _session()
    with session.lock, session.converting():
        return _push(session, data, list(data.columns) if names is None else list(names), set(group_columns))


_SUFFIX = re.compile(r"\.\d+$")


@functools.lru_cache(maxsize=256)
def _lme4_model(spec: ModelSpec) -> Any:
    """``spec.to_lme4()``, once per spec (immutable and hashable): every fit renders it twice
    (the engine's check and the R call); errors are not cached."""
    return spec.to_lme4()


@per_design
def _r_factor_bases(design: Design) -> Any:
    """hlmbridge_fit's ``factors`` argument (variable -> base level) as an R list, made once per
    design (rpy2 builds even an empty list with an R call: 0.15 ms a fit). Called inside the
    session's conversion context."""
    ro = _session().ro
    return ro.ListVector({name: ro.FloatVector([base]) for name, base in design.factor_bases})


@per_design
def _r_contrasts(design: Design) -> Any:
    """lmer's ``contrasts=`` list for R (NULL when none): a contrast function's name where R
    makes the same coding from it, else hlmbridge's matrix with R's column names. Called
    inside the session's conversion context."""
    ro = _session().ro
    if not design.contrasts:
        return ro.NULL
    levels = {v.expr: v.levels for v in design.predvars if v.factor}
    out = {}
    for label, contrast in design.contrasts:
        if contrast.r_name is not None:
            out[label] = ro.StrVector([contrast.r_name])
            continue
        m, names = contrast.coding(levels[label])
        mat = ro.r["matrix"](ro.FloatVector(m.ravel(order="F")), nrow=m.shape[0])
        out[label] = ro.r["structure"](mat, dimnames=ro.r["list"](ro.StrVector(list(levels[label])),
                                                                  ro.StrVector(list(names))))
    return ro.ListVector(out)


@per_design
def _design_checksums(design: Design) -> tuple[np.ndarray, np.ndarray]:
    """hlmbridge's side of :func:`_check_design_parity` (column sums, sums of squares, X'y)
    and the scale each is judged on; once per design, so a warm refit skips them."""
    X, y = design.X, design.y
    return (np.concatenate([X.sum(axis=0), (X * X).sum(axis=0), X.T @ y]),
            np.concatenate([np.abs(X).sum(axis=0), (X * X).sum(axis=0), np.abs(X).T @ np.abs(y)]))


def _check_design_parity(design: Design, out: _RFit) -> None:
    """R's fixed-effects model matrix must be hlmbridge's: same names in the same order, the
    same number of rows, and the same column sums, sums of squares and X'y.

    Raises FitError naming the differing columns: a fit of another model is never kept,
    and a fit is never thrown away for a naming detail only.
    """
    ours = list(design.fixed_lme4)
    theirs = list(out.fixed_names)
    if out.nobs != design.nobs:
        raise FitError(f"R used {out.nobs} observations where hlmbridge's design has {design.nobs}", engine="lme4")
    if out.dropped is not None and sorted(out.dropped) != sorted(design.dropped_lme4):
        raise FitError(f"lme4 dropped the fixed-effect column(s) {list(out.dropped)} as rank deficient where "
                       f"hlmbridge's design dropped {list(design.dropped_lme4)}", engine="lme4")
    # A Stata-style spec lists _cons last (Stata's order); an lme4 formula keeps R's order.
    same_order = theirs == ours if design.spec.formula is not None else sorted(theirs) == sorted(ours)
    if not same_order or len(set(theirs)) != len(theirs):
        only_r = [c for c in theirs if c not in ours]
        only_h = [c for c in ours if c not in theirs]
        detail = (f"R has {only_r} and hlmbridge has {only_h}" if only_r or only_h
                  else f"in another order (R: {theirs})")
        hint = ("; where a text column's levels differ, R's locale sorts them otherwise: pass that column as a "
                "pandas Categorical with its categories in the order wanted" if design.spec.formula is not None
                else "")
        raise FitError(f"R's fixed-effects columns differ from hlmbridge's design: {detail}{hint}", engine="lme4")
    if out.design_check is None:
        return
    mine, scale = _design_checksums(design)
    p = len(theirs)
    perm = np.array([theirs.index(c) for c in ours], dtype=int)
    r = np.concatenate([out.design_check[k * p + perm] for k in range(3)])
    bad = np.abs(mine - r) > 1e-9 * np.maximum(scale, 1e-300) + 1e-12
    if bad.any():
        p = len(ours)
        cols = sorted({ours[i % p] for i in np.flatnonzero(bad)}, key=ours.index)
        raise FitError(f"R's values of the fixed-effects column(s) {', '.join(cols)} differ from hlmbridge's "
                       "design (column sums or X'y)", engine="lme4")


#: bobyqa's final trust-region radius on the tight path: the optimum to its last digits.
_TIGHT_RHOEND = 1e-12


def _newton_steps_are_costly(design: Design) -> bool:
    """A large crossed design whose Newton steps would each cost a dozen sparse factorizations
    (InstEval at 20k rows: 0.43 s a step against 0.3 s for bobyqa's extra evaluations): where
    the sparse algebra has no exact derivatives for it, bobyqa to 1e-12 is cheaper than the
    polish. With them (the usual crossed design, :func:`~hlmbridge.inference.sparse.has_exact_derivatives`)
    a step costs about one evaluation, and lmer's default optimizer and the polish are taken."""
    if not uses_sparse_algebra(design):
        return False
    from hlmbridge.inference.sparse import has_exact_derivatives

    return not has_exact_derivatives(design)


#: The fallback's answer (bobyqa, after the Newton polish refused) is not the optimum where
#: hlmbridge's log likelihood is higher by more than this at a point nearby (the limit the
#: statsmodels engine's fallback chain is held to).
_FALLBACK_GAIN_LIMIT = 1e-6


def _check_optimum(design: Design, est: EngineFit) -> EngineFit:
    """``est`` itself, or, where hlmbridge's likelihood still rises nearby, ``est`` marked not
    converged with a warning saying by how much.

    hlmbridge runs lmer with ``calc.derivs = FALSE`` (it computes the information itself), so
    lmer's own gradient check, which warns where its optimizer stopped short, does not run;
    this is its replacement on the fallback path, where the Newton polish (which checks the
    score itself) did not finish the fit. With hlmbridge's analytic score g and information I
    (scale-free: it sees a fit stopped at random effects of 1e-15 whose optimum is at 8), the
    fit stopped short where a Newton step predicts a gain (g' I^-1 g / 2) above the limit and
    the log likelihood does rise by more than the limit along it (steps 1, 1/2, 1/4, 1/10 that
    keep every covariance valid): both, because with weights spread over 17 orders of
    magnitude the log likelihood itself is only evaluated to about 1e-6, while the predicted
    gain at a bobyqa optimum is 1e-12. Where I is not positive definite,
    :func:`~hlmbridge.inference.optimum.likelihood_gain` searches instead. At lmer's answer
    for constant weights of 1e-16 (before the engines rescaled weights) the Newton step gains
    110 (lmer stopped 230 short of the optimum).
    """
    theta = np.asarray(est.theta, dtype=float)
    gain = None
    try:
        inf = evaluate(design, None, theta)
        info, score = inf.information, inf.score
        if np.all(np.isfinite(info)) and np.all(np.isfinite(score)) and np.linalg.eigvalsh(info)[0] > 0:
            step = np.linalg.solve(info, score)
            gain = 0.0
            if 0.5 * float(score @ step) > _FALLBACK_GAIN_LIMIT:
                base = profiled_loglik(design, theta)
                gain = max(profiled_loglik(design, theta + t * step) - base for t in (1.0, 0.5, 0.25, 0.1))
    except (FitError, np.linalg.LinAlgError, FloatingPointError):
        gain = None
    if gain is None:
        gain = likelihood_gain(design, theta)
    if not gain > _FALLBACK_GAIN_LIMIT:
        return est
    message = (f"lmer's optimizer stopped where the log likelihood still rises (by {gain:.3g} at a point "
               "nearby, on hlmbridge's likelihood): these estimates are not the optimum (lmer's own gradient "
               "check, which hlmbridge replaces, would warn that the model failed to converge)")
    return replace(est, converged=False, warnings=est.warnings + (message,),
                   extra={**est.extra, "gain_nearby": gain})


#: bobyqa's final radius for glmer (both stages) on the tight path (``rhoend=`` not given: the
#: fallback where the Newton polish of glmer's default optimizers cannot finish; r/hlmbridge.R's
#: ``hlmbridge_glmer_rhoend``): the optimum to the digits Stata prints.
_GLMER_RHOEND = 1e-10


def glmer_nagq(design: Design) -> tuple[int, str]:
    """glmer's ``nAGQ`` for a GLMM design and a sentence saying which integral it computes.

    Laplace (one point) is glmer's ``nAGQ = 1`` for any random part. With more points glmer
    integrates one scalar random effect only, adapting at the conditional mode and curvature
    (Stata's ``mcaghermite``); Stata's ``mvaghermite`` (its default, adapted at the posterior
    mean and variance) is the same integral in the limit of many points, and is taken as
    ``nAGQ = k`` with the difference said. Anything else raises UnsupportedSpecError.
    """
    spec = design.spec
    method, points = spec.intmethod, spec.intpoints
    if method == "ghermite":
        raise UnsupportedSpecError("intmethod(ghermite)", "lme4", message=glmer_refusal(method, int(points)))
    if method == "laplace":
        return 1, "Laplace's approximation (glmer nAGQ = 1; Stata's intmethod(laplace))"
    scalar = len(design.levels) == 1 and len(design.levels[0].terms_lme4) == 1
    if not scalar:
        raise UnsupportedSpecError(f"{method} quadrature with {points} points", "lme4",
                                   message=glmer_refusal(method, int(points)))
    if method == "mcaghermite":
        return int(points), (f"adaptive Gauss-Hermite quadrature at the conditional mode, {points} points "
                             f"(glmer nAGQ = {points}; Stata's intmethod(mcaghermite))")
    return int(points), (f"adaptive Gauss-Hermite quadrature, {points} points, by glmer nAGQ = {points}, which "
                         "adapts at the conditional mode and curvature (Stata's mcaghermite); Stata's mvaghermite "
                         "adapts at the posterior mean and variance: the same integral as the points grow")


def _trials_in_formula(design: Design) -> bool:
    """True when the trials are written in the model (a cbind() response, Stata's binomial()),
    so that glmer reads them from the formula and its prior weights are not passed apart."""
    spec = design.spec
    if spec.trials is not None:
        return True
    return spec.formula is not None and spec.formula.response.kind == "call" and spec.formula.response.value == "cbind"


def _glmer_settings(nagq: int, rhoend: float | None, maxfun: int, polish_steps: int, tight_steps: int = 0) -> str:
    """The optimizer path of a glmer fit, in words (``result.optimizer``): glmer's default
    optimizers and ``polish_steps`` Newton steps on its deviance (``hlmbridge_glmer_polish`` in
    r/hlmbridge.R), or bobyqa in both stages to ``rhoend`` (given, or the polish's fallback),
    then ``tight_steps`` Newton steps (0 on the boundary). The deviance polished is the exact
    Laplace/AGQ deviance: PIRLS restarted at the point's own linear predictor
    (``hlmbridge_glmer_restart``), not at glmer's first stage's.

    >>> _glmer_settings(12, None, 100000, 1)
    "glmer nAGQ = 12; glmer's default optimizers (bobyqa, Nelder-Mead), tolPwrss=1e-10, maxfun=100000, then 1 Newton step on its deviance"
    >>> _glmer_settings(1, None, 100000, 0)
    "glmer nAGQ = 1; bobyqa in both stages, rhoend=1e-10, tolPwrss=1e-10, maxfun=100000 (the Newton polish could not finish the default optimizers' optimum: a boundary fit, a warning, or no convergence)"
    >>> _glmer_settings(1, 1e-10, 100000, 0, 2)
    'glmer nAGQ = 1; bobyqa in both stages, rhoend=1e-10, tolPwrss=1e-10, maxfun=100000, then 2 Newton steps on its deviance with PIRLS restarted'
    """
    if polish_steps > 0:
        return (f"glmer nAGQ = {nagq}; glmer's default optimizers (bobyqa, Nelder-Mead), tolPwrss=1e-10, "
                f"maxfun={maxfun:g}, then {polish_steps} Newton step{'s' if polish_steps != 1 else ''} on its deviance")
    tight = f"glmer nAGQ = {nagq}; bobyqa in both stages, rhoend={_GLMER_RHOEND if rhoend is None else rhoend:g}, " \
            f"tolPwrss=1e-10, maxfun={maxfun:g}"
    if rhoend is None:
        tight += (" (the Newton polish could not finish the default optimizers' optimum: a boundary fit, a warning, "
                  "or no convergence)")
    if tight_steps > 0:
        tight += f", then {tight_steps} Newton step{'s' if tight_steps != 1 else ''} on its deviance with PIRLS restarted"
    return tight


def _glmm_ranef(items: Mapping[str, Any]) -> tuple[tuple[Any, ...], ...]:
    """glmer's ranef(condVar = TRUE) as R sent it (hlmbridge_glmm_random_parts): rows of
    (grouping factor, level, term, conditional mode, conditional SD)."""
    chr_ = [str(x) for x in items["ranef_chr"]]
    num = _r_doubles(items["ranef_num"])
    n = len(num) // 2
    return tuple((chr_[i], chr_[2 * n + i], chr_[n + i], float(num[i]), float(num[n + i])) for i in range(n))


def _glmm_warnings(est: EngineFit, full: np.ndarray, hessian: str) -> tuple[str, ...]:
    """The fit's warnings plus lme4's singular-fit message (glmer with its default checks gives
    it, check.conv.singular; with calc.derivs = FALSE it stays silent, so it is put back) and a
    warning when ``hessian``'s inverse ``full`` is not positive definite."""
    warns = tuple(est.warnings)
    if est.singular and not any("singular" in w for w in warns):
        warns += ("boundary (singular) fit: see help('isSingular')",)
    if not np.all(np.isfinite(full)) or np.any(np.diag(full) <= 0):
        warns += (f"{hessian} is not positive definite: the standard errors are not reliable",)
    return warns


def _check_glmm_response(design: Design) -> None:
    """The response a GLMM family takes, as glmer checks it (DataError otherwise): a binomial
    proportion in [0, 1] whose successes (proportion x trials) are whole numbers (glmer only
    warns "non-integer #successes"; its log likelihood then is no binomial likelihood), a
    Poisson count a non-negative whole number."""
    y = design.y
    spec = design.spec
    family = spec.family
    w = design.weights
    if w is not None and (not np.all(np.isfinite(w)) or np.any(w < 0)):
        raise DataError("a GLMM's prior weights (a binomial response's numbers of trials) must be finite and "
                        "non-negative")
    if family == "binomial":
        what = "a cbind() response's proportion" if _trials_in_formula(design) else repr(spec.response)
        if not np.all((y >= 0) & (y <= 1)):
            bad = y[~((y >= 0) & (y <= 1))][0]
            raise DataError(f"a binomial GLMM needs a response in [0, 1] (0/1, or a proportion with its trials as "
                            f"weights); {what} has the value {bad:g}")
        if w is None and not np.all((y == 0) | (y == 1)):
            bad = y[~((y == 0) | (y == 1))][0]
            raise DataError(f"a binomial GLMM needs a 0/1 response; {what} has the value {bad:g} (a proportion needs "
                            "its numbers of trials: weights=, cbind(successes, failures) or Stata's binomial())")
        if w is not None:
            s = y * w
            off = np.abs(s - np.round(s)) > 1e-7 * np.maximum(1.0, np.abs(s))
            if np.any(off):
                i = int(np.flatnonzero(off)[0])
                raise DataError(f"a binomial GLMM needs whole numbers of successes (proportion x trials); row "
                                f"{int(design.rows[i]) + 1} has {y[i]:g} x {w[i]:g} = {s[i]:g}")
    if family == "poisson" and not np.all((y >= 0) & (y == np.round(y))):
        bad = y[~((y >= 0) & (y == np.round(y)))][0]
        raise DataError(f"a Poisson GLMM needs a non-negative whole-number response; {spec.response!r} "
                        f"has the value {bad:g}")


def _check_glmm_parity(design: Design, items: Mapping[str, Any]) -> None:
    """glmer's prior weights (a binomial's trials) and offset must be hlmbridge's design's: a fit
    of another model is never kept (FitError naming which differs)."""
    for key, ours, what in (("prior_weights_sum", design.weights, "prior weights (binomial trials)"),
                            ("offset_sum", design.offset, "offset")):
        mine = float(np.sum(ours)) if ours is not None else (float(design.nobs) if key == "prior_weights_sum" else 0.0)
        theirs = float(items[key][0])
        scale = float(np.sum(np.abs(ours))) if ours is not None else float(design.nobs)
        if abs(mine - theirs) > 1e-9 * max(1.0, scale):
            raise FitError(f"glmer's {what} differ from hlmbridge's design (sums {theirs:.10g} and {mine:.10g})",
                           engine="lme4")


class Lme4Engine:
    """Fits through ``lme4::lmer``: its default optimizer, then a Newton polish (see fit_design)."""

    name = "lme4"

    def available(self) -> tuple[bool, str]:
        """True when rpy2, R and lme4 load; otherwise what to install."""
        try:
            _session()
        except EngineUnavailableError as exc:
            return False, str(exc)
        return True, ""

    def unsupported(self, spec: ModelSpec) -> list[str]:
        """Constructs lme4 cannot fit exactly."""
        try:
            _lme4_model(spec)
        except UnsupportedSpecError as exc:
            return [str(exc)]
        return []

    def fit_design(self, design: Design, *, data: pd.DataFrame | None = None,
                   column_prints: Mapping[str, tuple[Any, ...]] | None = None, rhoend: float | None = None,
                   maxfun: int = 100_000, engine_vcov: bool = False) -> EngineFit:
        """Fit with lme4. ``data`` is the caller's frame: its columns are pushed to R once and
        reused while unchanged; ``column_prints`` (optional) are its columns' fingerprints when
        the caller has them already.

        By default lmer runs with its own default optimizer (nloptwrap), and hlmbridge polishes
        that optimum with Newton steps on the analytic score
        (:func:`hlmbridge.inference.polish.newton_polish`; on a boundary fit
        :func:`~hlmbridge.inference.polish.newton_polish_boundary`, in lme4's parameters). Where
        that refuses, a boundary fit is finished in R by bobyqa from lmer's optimum, and any
        other fit is refitted with bobyqa to ``rhoend`` 1e-12 (so is a large crossed design
        whose Newton steps would cost more, see :func:`_newton_steps_are_costly`). The
        result's ``optimizer`` says which path was taken. ``rhoend=`` (e.g. 1e-12) asks for
        bobyqa with that tolerance and no polish.

        ``engine_vcov=True`` also takes lme4's own ``vcov()`` for the fixed effects (by
        default hlmbridge computes the same matrix itself, which saves lme4 ~2 ms a fit); it
        implies bobyqa (``rhoend`` 1e-12 unless given), so that lme4's matrix belongs to the
        reported estimates.
        """
        if data is None:
            raise FitError("the lme4 engine needs the original data frame", engine=self.name)
        if design.spec.is_glmm:
            if engine_vcov:
                raise UsageError("engine_vcov= applies to lmer fits: a GLMM's covariance is always glmer's own "
                                 "(the inverse of its Hessian in theta and beta)")
            if design.spec.family == "negative_binomial":
                return self._fit_glmer_nb(design, data, column_prints, _GLMER_RHOEND if rhoend is None else rhoend,
                                          maxfun)
            return self._fit_glmer(design, data, column_prints, rhoend, maxfun)
        if rhoend is not None and not (isinstance(rhoend, (int, float)) and 0 < rhoend < 1):
            raise FitError(f"rhoend must be a number between 0 and 1, got {rhoend!r}", engine=self.name)
        too_large = overflow_problem(design)
        if too_large:
            raise DataError(f"[{self.name}] {too_large}")
        if rhoend is None and (engine_vcov or _newton_steps_are_costly(design)):
            # engine_vcov: lme4's matrix must belong to the reported estimates.
            rhoend = _TIGHT_RHOEND
        if rhoend is not None:
            out, seconds, versions = self._run_lmer(design, data, column_prints, rhoend, maxfun, engine_vcov)
            settings = f"bobyqa, rhoend={rhoend:g}, maxfun={maxfun:g}, calc.derivs=FALSE"
            return self._estimates(design, out, versions, seconds, settings)
        out, seconds, versions = self._run_lmer(design, data, column_prints, None, maxfun, False,
                                                boundary_restart=False)
        est = self._estimates(design, out, versions, seconds, "lmer's default optimizer settings, calc.derivs=FALSE")
        polished = None
        if est.converged:
            from hlmbridge.inference.polish import newton_polish, newton_polish_boundary

            polished = (newton_polish_boundary if est.singular else newton_polish)(design, est.theta)
        if polished is None and est.singular and est.converged:
            # lmer's default ended on a boundary that the polish could not finish: R restarts
            # bobyqa from that optimum.
            out, seconds2, versions = self._run_lmer(design, data, column_prints, None, maxfun, False)
            settings = (f"lmer's default optimizer ({out.feval_before} evaluations) ended on a boundary, then "
                        f"bobyqa from its optimum, rhoend={_TIGHT_RHOEND:g}, calc.derivs=FALSE")
            est2 = self._estimates(design, out, versions, seconds + seconds2, settings)
            return _check_optimum(design, replace(est2, extra={**est2.extra, "feval": out.feval + out.feval_before}))
        if polished is not None:
            inf = polished.inference
            return replace(
                est, beta=inf.beta_gls, theta=polished.theta, loglik=inf.loglik, inference=inf,
                singular=is_singular(design, polished.theta),
                optimizer=(f"{est.optimizer} + Newton polish on the analytic score"
                           f"{' in lme4 parameters, on the boundary' if est.singular else ''} ({polished.steps} "
                           f"step{'s' if polished.steps != 1 else ''}, largest move {polished.move_se:.1g} SE)"),
                extra={**est.extra, "polish_steps": polished.steps, "polish_gain": polished.gain,
                       "polish_move_se": polished.move_se, "lmer_loglik": est.loglik},
            )
        # Refit from lmer's own start, exactly as with rhoend=1e-12: where the likelihood has a
        # ridge (variance parameters not identified) the point reported depends on the path.
        why = "lmer did not converge" if not est.converged else "the Newton polish did not converge"
        out2, seconds2, versions = self._run_lmer(design, data, column_prints, _TIGHT_RHOEND, maxfun, False)
        settings = f"bobyqa, rhoend={_TIGHT_RHOEND:g}, maxfun={maxfun:g}, calc.derivs=FALSE; refit: {why}"
        tight = self._estimates(design, out2, versions, seconds + seconds2, settings)
        return _check_optimum(design, replace(tight, engine_seconds=out.elapsed + out2.elapsed,
                                              extra={**tight.extra, "feval": (out.feval or 0) + (out2.feval or 0)}))

    def _fit_glmer(self, design: Design, data: pd.DataFrame, column_prints: Mapping[str, tuple[Any, ...]] | None,
                   rhoend: float | None, maxfun: int) -> EngineFit:
        """A GLMM through ``hlmbridge_glmer`` (r/hlmbridge.R): glmer with the ``nAGQ`` of
        :func:`glmer_nagq`; with ``rhoend`` None its default optimizers finished by Newton steps
        on its deviance in R (falling back to the tight settings where they cannot finish), with
        a number bobyqa to ``rhoend`` in both stages; and the covariance of (theta, beta) from
        the Hessian of glmer's deviance at the optimum.

        What differs from an lmer fit: the Newton polish runs in R on glmer's own deviance, made
        exact (PIRLS restarted at each evaluated point), the fixed effects' covariance and the variance parameters' come from
        glmer's full Hessian (``EngineFit.extra["random_vcov"]``, on the variance scale by the
        delta method), and the fixed-only GLM's log likelihood comes back for the LR test."""
        spec = design.spec
        nagq, integration = glmer_nagq(design)
        if design.weights is not None and spec.family == "poisson":
            raise UnsupportedSpecError("a Poisson GLMM with weights", self.name, message=(
                "hlmbridge does not fit a Poisson GLMM with prior weights: glmer's weighted Poisson log likelihood "
                "is not a likelihood of the counts (and Stata's mepoisson has no such weights)."))
        _check_glmm_response(design)
        if rhoend is not None and not (isinstance(rhoend, (int, float)) and 0 < rhoend < 1):
            raise FitError(f"rhoend must be a number between 0 and 1, got {rhoend!r}", engine=self.name)
        session = _session()
        ro = session.ro

        def call(rframe: Any, formula: str, rows: Any, weights: Any, offset: Any) -> Any:
            return session.glmer(rframe, formula, spec.family, nagq, _r_factor_bases(design), rows,
                                 _r_contrasts(design), ro.NULL if rhoend is None else rhoend, maxfun,
                                 link=spec.link, weights=weights, offset=offset)

        out, items, seconds = self._run_glmm(session, design, data, column_prints, "glmer", call)
        est = self._estimates(design, out, session.versions, seconds,
                              _glmer_settings(nagq, rhoend, maxfun, int(items["polish_steps"][0]),
                                              int(items["tight_steps"][0])))
        full, fixed_vcov, random_vcov, cross = self._glmer_covariances(design, out, items, "glmer", 0)
        warns = _glmm_warnings(est, full, "glmer's Hessian at the optimum")
        # glmer's nAGQ > 1 deviance leaves out the saturated log likelihood (r/hlmbridge.R): added back,
        # so that the log likelihood is the one Laplace's and Stata's include (engine_loglik keeps glmer's).
        constant = float(items["loglik_constant"][0])
        ranef = _glmm_ranef(items)
        return replace(est, theta=est.theta[:-1], fixed_vcov=fixed_vcov, warnings=warns, loglik=est.loglik + constant,
                       extra={**est.extra, "random_vcov": random_vcov, "fixed_random_vcov": cross, "nagq": nagq,
                              "integration": integration,
                              "glmer_loglik": est.loglik, "loglik_constant": constant, "ranef": ranef,
                              "loglik_fixed": float(items["loglik_fixed"][0]),
                              "vcov_note": "glmer's Hessian of the deviance in (theta, beta) at the optimum "
                                           "(lme4's finite differences, calc.derivs = TRUE)"})

    def _fit_glmer_nb(self, design: Design, data: pd.DataFrame,
                      column_prints: Mapping[str, tuple[Any, ...]] | None, rhoend: float, maxfun: int) -> EngineFit:
        """A negative binomial GLMM through ``hlmbridge_glmer_nb`` (r/hlmbridge.R): lme4's
        ``glmer.nb`` (log link, var = mu (1 + alpha mu), Stata's ``menbreg``), its estimates
        polished jointly in (theta, beta, log alpha) by bobyqa on the joint deviance (exact: PIRLS
        restarted at each point) and glmer's merMod built at the polished point; the covariance of (theta, beta, log alpha) is twice the
        inverse Hessian of that deviance. ``extra["ancillary"]`` holds Stata's ``/lnalpha`` and
        ``alpha`` rows (alpha = 1 / glmer.nb's theta; its SE by the delta method, its CI the
        exponentiated ``/lnalpha`` bounds), ``extra["nb_polish"]`` what the polish changed."""
        spec = design.spec
        nagq, integration = glmer_nagq(design)
        if design.weights is not None:
            raise UnsupportedSpecError("a negative binomial GLMM with weights", self.name, message=(
                "hlmbridge does not fit a negative binomial GLMM with prior weights (glmer.nb's weighted log "
                "likelihood is not a likelihood of the counts, and Stata's menbreg has no such weights)."))
        y = design.y
        if not np.all((y >= 0) & (y == np.round(y))):
            bad = y[~((y >= 0) & (y == np.round(y)))][0]
            raise DataError(f"a negative binomial GLMM needs a non-negative whole-number response; {spec.response!r} "
                            f"has the value {bad:g}")
        if not (isinstance(rhoend, (int, float)) and 0 < rhoend < 1):
            raise FitError(f"rhoend must be a number between 0 and 1, got {rhoend!r}", engine=self.name)
        session = _session()

        def call(rframe: Any, formula: str, rows: Any, weights: Any, offset: Any) -> Any:
            return session.env["hlmbridge_glmer_nb"](rframe, formula, nagq, _r_factor_bases(design), rows,
                                                     _r_contrasts(design), rhoend, maxfun, offset=offset)

        out, items, seconds = self._run_glmm(session, design, data, column_prints, "glmer.nb", call)
        est = self._estimates(design, out, session.versions, seconds,
                              f"glmer.nb nAGQ = {nagq}, then bobyqa on the joint deviance of (theta, beta, log alpha) "
                              f"with PIRLS restarted at each point, glmer's merMod at the polished point; bobyqa, rhoend={rhoend:g}, tolPwrss=1e-10, "
                              f"maxfun={maxfun:g}")
        full, fixed_vcov, random_vcov, cross = self._glmer_covariances(design, out, items, "glmer.nb", 1)
        lnalpha = float(_r_doubles(items["lnalpha"])[0])
        se_ln = float(np.sqrt(full[-1, -1])) if full[-1, -1] > 0 else float("nan")
        z = 1.959963984540054
        alpha = float(np.exp(lnalpha))
        ancillary = (("/lnalpha", lnalpha, se_ln, lnalpha - z * se_ln, lnalpha + z * se_ln),
                     ("alpha", alpha, alpha * se_ln, float(np.exp(lnalpha - z * se_ln)),
                      float(np.exp(lnalpha + z * se_ln))))
        warns = _glmm_warnings(est, full, "the Hessian of glmer.nb's deviance at the optimum")
        constant = float(items["loglik_constant"][0])
        ll_fixed = float(items["loglik_fixed"][0])
        if not np.isfinite(ll_fixed):
            raise FitError("MASS::glm.nb, the comparison model of the LR test, failed", engine=self.name)
        polish = dict(zip(("glmer_nb_loglik", "polished_loglik", "evaluations", "glmer_nb_lnalpha",
                           "max_abs_gradient"), map(float, _r_doubles(items["nb_polish"])), strict=True))
        ranef = _glmm_ranef(items)
        return replace(est, theta=est.theta[:-1], fixed_vcov=fixed_vcov, warnings=warns, loglik=est.loglik + constant,
                       extra={**est.extra, "random_vcov": random_vcov, "fixed_random_vcov": cross, "nagq": nagq,
                              "integration": integration,
                              "glmer_loglik": est.loglik, "loglik_constant": constant, "ranef": ranef,
                              "loglik_fixed": ll_fixed, "ancillary": ancillary, "nb_polish": polish,
                              "vcov_note": "twice the inverse Hessian of glmer.nb's deviance in (theta, beta, "
                                           "log alpha) at the polished optimum"})

    def _run_glmm(self, session: _RSession, design: Design, data: pd.DataFrame,
                  column_prints: Mapping[str, tuple[Any, ...]] | None, what: str,
                  call: Any) -> tuple[_RFit, dict[str, Any], float]:
        """One GLMM fit in R: the data frame pushed (each column once), the fit's rows, prior
        weights (a proportion's trials; trials written in the model stay there) and offset
        argument as R vectors over the frame, ``call(rframe, formula, rows, weights, offset)`` timed,
        R's answer read and checked against hlmbridge's design. Returns (fit, items, seconds)."""
        ro = session.ro
        spec = design.spec
        if spec.formula is not None:
            formula = spec.formula.r_formula()
            group_vars: set[str] = set()
        else:
            formula = _lme4_model(spec).formula
            group_vars = {lv.group for lv in spec.levels}
        n_data = design.n_data if design.n_data >= 0 else len(data)
        with session.lock, session.converting():
            rframe = _push(session, data, spec.variables, group_vars, column_prints,
                           as_r_reads=spec.formula is not None)
            rows = ro.NULL if design.nobs == n_data else ro.IntVector((design.rows + 1).tolist())
            weights = offset = ro.NULL
            if design.weights is not None and not _trials_in_formula(design):  # a proportion's trials
                full = np.ones(n_data)
                full[design.rows] = design.weights
                weights = ro.FloatVector(full)
            if design.offset_argument is not None:  # offset() terms stay in the formula, for R
                full = np.zeros(n_data)
                full[design.rows] = design.offset_argument
                offset = ro.FloatVector(full)
            t0 = time.perf_counter()
            raw = call(rframe, formula, rows, weights, offset)
            seconds = time.perf_counter() - t0
            out = _read_fit(raw)
            items = _r_items(raw)
        if isinstance(out, str):
            raise FitError(f"{what} failed: {out}", engine=self.name)
        _check_design_parity(design, out)
        _check_glmm_parity(design, items)
        return out, items, seconds

    def _glmer_covariances(self, design: Design, out: _RFit, items: Mapping[str, Any], what: str,
                           n_extra: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The covariance of (lme4 theta, beta[, ``n_extra`` more]) R returned (2 H^-1 of the
        deviance), and from it the fixed effects' (hlmbridge's order), the variance parameters'
        (by the Jacobian of glmer's VarCorr entries in lme4's theta, mapped to hlmbridge's
        parameters exactly as the estimates are: the map is linear in the covariance matrices) and
        their cross-covariance (fixed rows, variance columns)."""
        n_t, p = len(_r_doubles(items["theta"])), len(out.fixed_names)
        n = n_t + p + n_extra
        full = _r_doubles(items["vcov_full"])
        if full.size != n * n:
            raise FitError(f"{what} did not return the Hessian of its deviance at the optimum", engine=self.name)
        full = full.reshape((n, n), order="F")
        fixed = [n_t + out.fixed_names.index(t) for t in design.fixed_lme4]
        jac_vc = _r_doubles(items["vc_jacobian"]).reshape((-1, n_t), order="F")
        jac = np.column_stack([self._variance_parameters(design, out, jac_vc[:, j]) for j in range(n_t)])
        return (full, full[np.ix_(fixed, fixed)], jac @ full[:n_t, :n_t] @ jac.T,
                full[np.ix_(fixed, range(n_t))] @ jac.T)

    def _variance_parameters(self, design: Design, out: _RFit, flat: np.ndarray) -> np.ndarray:
        """hlmbridge's variance parameters (no residual) from glmer's VarCorr blocks flattened
        column-major in ``out.blocks``' order (values or their derivatives)."""
        pos = 0
        blocks = []
        for group, terms, mat in out.blocks:
            q = mat.shape[0]
            blocks.append((group, terms, flat[pos : pos + q * q].reshape((q, q), order="F")))
            pos += q * q
        return theta_from_matrices(design, self._covariances(design, blocks), 0.0)[:-1]

    def _run_lmer(self, design: Design, data: pd.DataFrame,
                  column_prints: Mapping[str, tuple[Any, ...]] | None, rhoend: float | None, maxfun: int,
                  engine_vcov: bool, *, boundary_restart: bool = True) -> tuple[_RFit, float, dict[str, str]]:
        """One ``hlmbridge_fit`` call in R (``rhoend`` None: lmer's default optimizer;
        ``boundary_restart``: R finishes a boundary fit with bobyqa from that optimum)."""
        session = _session()
        spec = design.spec
        ro = session.ro
        if spec.formula is not None:
            formula, reml = spec.formula.r_formula(), spec.reml
            group_vars: set[str] = set()
        else:
            model = _lme4_model(spec)
            formula, reml = model.formula, model.reml
            group_vars = {lv.group for lv in spec.levels}
        n_data = design.n_data if design.n_data >= 0 else len(data)
        # rpy2's conversion rules are per thread: set them here so any thread can fit.
        with session.lock, session.converting():
            rframe = _push(session, data, spec.variables, group_vars, column_prints,
                           as_r_reads=spec.formula is not None)
            factors = _r_factor_bases(design)
            all_rows = design.nobs == n_data
            rows = ro.NULL if all_rows else ro.IntVector((design.rows + 1).tolist())
            weights = offset = ro.NULL
            if design.weights is not None:
                full = np.ones(n_data)
                # The same model on the data's scale (optimum.weight_scale); _estimates scales back.
                full[design.rows] = design.weights / weight_scale(design.weights)
                weights = ro.FloatVector(full)
            if design.offset_argument is not None:  # offset() terms stay in the formula, for R
                full = np.zeros(n_data)
                full[design.rows] = design.offset_argument
                offset = ro.FloatVector(full)
            t0 = time.perf_counter()
            out = _read_fit(session.fit(rframe, formula, reml, factors, rows,
                                        ro.NULL if rhoend is None else rhoend, maxfun, engine_vcov, weights, offset,
                                        boundary_restart, _r_contrasts(design)))
            seconds = time.perf_counter() - t0
        if isinstance(out, str):
            raise FitError(f"lme4 failed: {out}", engine=self.name)
        _check_design_parity(design, out)
        return out, seconds, session.versions

    def _covariances(self, design: Design, blocks: Sequence[tuple[str, list[str], np.ndarray]]) -> list[np.ndarray]:
        """Each level's covariance matrix (lme4 term order) from lme4's VarCorr blocks."""
        covs = [np.zeros((ld.Z.shape[1], ld.Z.shape[1])) for ld in design.levels]
        seen = [np.zeros(ld.Z.shape[1], dtype=bool) for ld in design.levels]
        keys: dict[str, list[int]] = {}
        for i, ld in enumerate(design.levels):
            keys.setdefault(ld.key, []).append(i)
        for group, terms, mat in blocks:
            candidates = keys.get(group) or keys.get(_SUFFIX.sub("", group)) or []
            level = next((i for i in candidates if set(terms) <= set(design.levels[i].terms_lme4)), None)
            if level is None:
                raise FitError(f"lme4 returned a random-effects term ({' + '.join(terms)} | {group}) that "
                               "hlmbridge's design does not have", engine=self.name)
            order = list(design.levels[level].terms_lme4)
            pos = [order.index(t) for t in terms]
            covs[level][np.ix_(pos, pos)] = mat
            seen[level][pos] = True
        for ld, got in zip(design.levels, seen):
            if not got.all():
                missing = [t for t, g in zip(ld.terms_lme4, got) if not g]
                raise FitError(f"lme4 returned no variance for {', '.join(missing)} | {ld.key}", engine=self.name)
        return covs

    def _estimates(self, design: Design, out: _RFit, versions: dict[str, str], seconds: float,
                   settings: str) -> EngineFit:
        fixef = out.fixef
        beta = np.array([fixef[t] for t in design.fixed_lme4])
        fixed_vcov = None
        if out.vcov is not None:
            idx = [list(fixef).index(t) for t in design.fixed_lme4]
            fixed_vcov = out.vcov[np.ix_(idx, idx)]

        covs = self._covariances(design, out.blocks)
        # R fitted weights / weight_scale: the same covariances and log likelihood, and a
        # residual variance that many times smaller.
        theta = theta_from_matrices(design, covs, out.sigma2 * weight_scale(design.weights))
        return EngineFit(
            beta=beta,
            theta=theta,
            loglik=out.loglik,
            # lme4 files "boundary (singular) fit" among its convergence messages; that is a
            # property of the optimum (reported as `singular`), not a failure to reach it.
            converged=out.conv_code == 0 and not [m for m in out.conv_messages if "singular" not in m],
            # lme4's isSingular, computed by hlmbridge from the estimates as for every engine
            # (R's own answer, at R's unpolished theta, is kept in extra["lme4_isSingular"]).
            singular=is_singular(design, theta),
            optimizer=f"lme4 {out.optimizer} ({settings})",
            versions=dict(versions),
            warnings=tuple(dict.fromkeys(out.warnings + out.messages + out.conv_messages)),
            fixed_vcov=fixed_vcov,
            engine_seconds=out.elapsed,
            extra={"feval": out.feval, "call_seconds": seconds, "lme4_isSingular": out.singular},
        )
