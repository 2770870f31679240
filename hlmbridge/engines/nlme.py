"""The nlme engine: ``nlme::lme()`` through rpy2, for what lme4 cannot fit.

Stata's ``cov(identity)`` and ``cov(exchangeable)`` over several random terms (``pdIdent``,
``pdCompSymm``) and its residual structures (``residuals(ar 1, t(time))`` ...; see
:mod:`hlmbridge.spec.residuals` and :mod:`hlmbridge.spec.render_nlme` for the nlme classes).
R is the lme4 engine's (:mod:`hlmbridge.engines.r_session`); ``r/hlmbridge_nlme.R`` is
sourced into its private environment on the first nlme fit. nlme runs with tight
tolerances; hlmbridge then evaluates its own likelihood at nlme's estimates
(:mod:`hlmbridge.inference.residual_structures` for a residual structure, else
:mod:`hlmbridge.inference.stata_parity`) and finishes with a few Newton steps on it.
Crossed designs are refused (nlme nests every level in the one before it): the lme4 engine
fits them.

Examples
--------
>>> from hlmbridge.engines.nlme import NlmeEngine
>>> engine = NlmeEngine()           # cheap: R starts only when a fit needs it
>>> engine.name
'nlme'
>>> from hlmbridge.spec.parse_stata import parse_stata
>>> engine.unsupported(parse_stata("mixed y x || _all: R.a || b:"))[0][:40]
'nlme cannot fit crossed random effects ('
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from hlmbridge.design.build import Design
from hlmbridge.engines.base import EngineFit
from hlmbridge.errors import EngineUnavailableError, FitError, UnsupportedSpecError
from hlmbridge.spec.model import ModelSpec
from hlmbridge.spec.render_nlme import to_nlme

__all__ = ["NlmeEngine"]

_R_FILE = "hlmbridge_nlme.R"


def _session() -> Any:
    from hlmbridge.engines.r_session import session

    return session()


def _names(key: str) -> list[str]:
    """The variable names in an lme4 grouping factor's name (``c:(b:a)`` -> c, b, a)."""
    import re

    return re.findall(r"[A-Za-z_.][A-Za-z0-9_.]*", key)


def _values(x: Any) -> list[Any]:
    """The elements of a small R vector (an empty list for NULL or a length-0 vector)."""
    from rpy2.rinterface import NULL

    return [] if x is NULL or x.typeof == 0 else list(x)


class NlmeEngine:
    """Fits through R's ``nlme::lme``."""

    name = "nlme"

    def available(self) -> tuple[bool, str]:
        """True when rpy2, R and nlme load; otherwise what to install."""
        try:
            s = _session()
            with s.lock, s.converting():
                ok = s.ro.r('isTRUE(suppressMessages(requireNamespace("nlme", quietly = TRUE)))')[0]
        except EngineUnavailableError as exc:
            return False, str(exc)
        if not ok:
            return False, ("the nlme engine needs R's nlme package (Debian/Ubuntu: apt-get install r-cran-nlme; "
                           "or install.packages('nlme') in R)")
        return True, ""

    def unsupported(self, spec: ModelSpec) -> list[str]:
        """Constructs nlme cannot fit exactly (crossed levels, GLMMs, banded/Toeplitz residuals,
        correlation structures with by())."""
        try:
            to_nlme(spec)
        except UnsupportedSpecError as exc:
            return [str(exc)]
        return []

    def fit_design(self, design: Design, *, data: pd.DataFrame | None = None,
                   column_prints: Mapping[str, tuple[Any, ...]] | None = None, polish: bool = True) -> EngineFit:
        """Fit with ``nlme::lme`` (tight nlminb tolerances), then evaluate hlmbridge's own
        likelihood at nlme's estimates and, with ``polish=True`` (the default), take Newton
        steps on it (``EngineFit.extra``: ``nlme_loglik``, ``own_loglik_at_nlme``,
        ``polish_steps``, ``polish_move_se``)."""
        from hlmbridge.engines.lme4 import _push, _r_factor_bases, _r_items

        if data is None:
            raise FitError("the nlme engine needs the data frame the design was built from", engine=self.name)
        spec = design.spec
        model = to_nlme(spec)
        if design.weights is not None or design.offset is not None:
            raise UnsupportedSpecError("weights= or an offset", self.name, message=(
                "the nlme engine does not apply lmer's weights= or offsets (nlme's weights= are variance "
                "functions); use engine='lme4'"))
        structured = None
        if spec.residuals is not None:
            from hlmbridge.inference.residual_structures import structured_model

            structured = structured_model(design, data)  # checks t() and by() before R runs
        session = _session()
        ro = session.ro
        group_vars = set() if spec.formula is not None else {lv.group for lv in spec.levels}
        n_data = design.n_data if design.n_data >= 0 else len(data)
        with session.lock, session.converting():
            env = session.source_once(_R_FILE)
            rframe = _push(session, data, spec.variables, group_vars, column_prints,
                           as_r_reads=spec.formula is not None)
            factors = _r_factor_bases(design)
            rows = ro.NULL if design.nobs == n_data else ro.IntVector((design.rows + 1).tolist())
            t0 = time.perf_counter()
            raw = env["hlmbridge_nlme_fit"](rframe, model.fixed, model.random, model.correlation or "",
                                            model.weights or "", spec.reml, factors, rows)
            seconds = time.perf_counter() - t0
            items = _r_items(raw)
            if "error" in items:
                raise FitError(f"nlme failed: {items['error'][0]}", engine=self.name)
            num = {k: np.array([float(x) for x in _values(items[k])], dtype=float)
                   for k in ("fixef", "vcov", "re_cov", "cor_coef", "var_coef", "fixed_fitted")}
            names = {k: [str(x) for x in _values(items[k])]
                     for k in ("fixed_names", "re_names", "re_terms", "var_levels", "warnings", "messages")}
            sizes = [int(x) for x in items["re_sizes"]]
            loglik = float(items["loglik"][0])
            sigma2 = float(items["sigma2"][0])
            n_used = int(items["n_used"][0])
            versions = dict(session.versions)
            versions["nlme"] = str(env["hlmbridge_nlme_versions"]()[0])
        if n_used != design.nobs:
            raise FitError(f"nlme used {n_used} observations where hlmbridge's design has {design.nobs}",
                           engine=self.name)
        fixed = names["fixed_names"]
        if sorted(fixed) != sorted(design.fixed_lme4):
            raise FitError(f"nlme's fixed-effects columns {fixed} differ from hlmbridge's {list(design.fixed_lme4)}",
                           engine=self.name)
        idx = [fixed.index(c) for c in design.fixed_lme4]
        beta = num["fixef"][idx]
        # R's fixed-effects columns are hlmbridge's: X beta from nlme's model matrix (fitted at level 0,
        # in the rows' order) equals hlmbridge's X times nlme's beta.
        mine = design.X @ beta
        theirs = num["fixed_fitted"]
        scale = np.abs(design.X) @ np.abs(beta) + 1e-300
        if theirs.shape != mine.shape or np.any(np.abs(theirs - mine) > 1e-9 * scale + 1e-12):
            raise FitError("nlme's fixed-effects model matrix differs from hlmbridge's design (X beta at nlme's "
                           "estimates)", engine=self.name)
        p = len(fixed)
        nlme_vcov = num["vcov"].reshape((p, p), order="F")[np.ix_(idx, idx)]
        covs = self._covariances(design, names["re_names"], names["re_terms"], sizes, num["re_cov"])
        from hlmbridge.inference.stata_parity import theta_from_matrices

        theta_levels = theta_from_matrices(design, covs, sigma2)
        warns = tuple(dict.fromkeys(names["warnings"] + names["messages"]))
        settings = "nlme lme (nlminb, msTol 1e-12, tolerance 1e-10)"
        if structured is None:
            return self._finish_plain(design, beta, theta_levels, loglik, nlme_vcov, versions, warns, settings,
                                      seconds, polish)
        theta = np.concatenate([theta_levels[:-1], self._residual_theta(structured, sigma2, num["cor_coef"],
                                                                        num["var_coef"], names["var_levels"])])
        own_at_nlme = structured.loglik(theta)[0]
        if not abs(own_at_nlme - loglik) <= 1e-6 * max(1.0, abs(loglik)):
            warns += (f"hlmbridge's likelihood at nlme's estimates ({own_at_nlme:.8f}) differs from nlme's "
                      f"logLik ({loglik:.8f}): the structure's parameters were not read as nlme meant them",)
        steps, move = 0, 0.0
        if polish:
            theta, steps, move = structured.polish(theta)
        ll, beta_gls, fixed_vcov = structured.loglik(theta)
        from hlmbridge.inference.optimum import is_singular

        singular = is_singular(design, np.append(theta[: structured.n_level_params], 1.0))
        optimizer = settings + (f" + Newton polish on hlmbridge's likelihood ({steps} step{'s' if steps != 1 else ''}, "
                                f"largest move {move:.1g} SE)" if polish else "")
        return EngineFit(beta=beta_gls, theta=theta, loglik=ll, converged=bool(np.isfinite(ll)), singular=singular,
                         optimizer=optimizer, versions=versions, warnings=warns, fixed_vcov=fixed_vcov,
                         engine_seconds=seconds,
                         extra={"nlme_loglik": loglik, "own_loglik_at_nlme": own_at_nlme, "nlme_beta": beta,
                                "nlme_vcov": nlme_vcov, "polish_steps": steps, "polish_move_se": move,
                                "structured_model": structured})

    def _finish_plain(self, design: Design, beta: np.ndarray, theta: np.ndarray, loglik: float,
                      nlme_vcov: np.ndarray, versions: dict[str, str], warns: tuple[str, ...], settings: str,
                      seconds: float, polish: bool) -> EngineFit:
        """A model without residual structure: stata_parity's likelihood, and its Newton polish."""
        from hlmbridge.inference.optimum import is_singular
        from hlmbridge.inference.stata_parity import evaluate

        own = evaluate(design, None, theta).loglik
        if not abs(own - loglik) <= 1e-6 * max(1.0, abs(loglik)):
            warns += (f"hlmbridge's likelihood at nlme's estimates ({own:.8f}) differs from nlme's logLik "
                      f"({loglik:.8f})",)
        est = EngineFit(beta=beta, theta=theta, loglik=loglik, converged=True, singular=is_singular(design, theta),
                        optimizer=settings, versions=versions, warnings=warns, fixed_vcov=None,
                        engine_seconds=seconds,
                        extra={"nlme_loglik": loglik, "own_loglik_at_nlme": own, "nlme_beta": beta,
                               "nlme_vcov": nlme_vcov})
        if not polish:
            return est
        from hlmbridge.inference.polish import newton_polish, newton_polish_boundary

        # On a boundary (a zero variance, a correlation of +-1) in lme4's parameters, as the lme4 engine.
        polished = (newton_polish_boundary if est.singular else newton_polish)(design, theta)
        if polished is None:
            return replace(est, warnings=est.warnings + (
                "hlmbridge's Newton polish could not improve nlme's optimum (reported as nlme found it)",))
        inf = polished.inference
        return replace(est, beta=inf.beta_gls, theta=polished.theta, loglik=inf.loglik, inference=inf,
                       singular=is_singular(design, polished.theta),
                       optimizer=f"{settings} + Newton polish on the analytic score"
                                 f"{' in lme4 parameters, on the boundary' if est.singular else ''} ({polished.steps} "
                                 f"step{'s' if polished.steps != 1 else ''}, largest move {polished.move_se:.1g} SE)",
                       extra={**est.extra, "polish_steps": polished.steps, "polish_move_se": polished.move_se})

    @staticmethod
    def _covariances(design: Design, re_names: list[str], re_terms: list[str], sizes: list[int],
                     flat: np.ndarray) -> list[np.ndarray]:
        """Each design level's covariance matrix (lme4 term order) from nlme's ``pdMatrix`` blocks
        (named by the level's grouping variable, outermost first)."""
        if len(re_names) != len(design.levels):
            raise FitError(f"nlme returned {len(re_names)} random-effects levels where the design has "
                           f"{len(design.levels)}", engine="nlme")
        out: list[np.ndarray | None] = [None] * len(design.levels)
        pos = tpos = 0
        for name, q in zip(re_names, sizes, strict=True):
            mat = flat[pos : pos + q * q].reshape((q, q), order="F")
            terms = re_terms[tpos : tpos + q]
            pos += q * q
            tpos += q
            # A Stata level by its variable; an lme4-formula level by its factor's name, or (nested,
            # "diet:rat" / "rat:diet") by the one component of its key that is not an outer level's.
            hit = [i for i, ld in enumerate(design.levels) if ld.name == name or ld.key == name]
            if not hit:
                hit = [i for i, ld in enumerate(design.levels)
                       if name in _names(ld.key) and ":" in ld.key and out[i] is None
                       and not any(n in _names(ld.key) for n in re_names[re_names.index(name) + 1:])]
            if len(hit) != 1 or set(terms) != set(design.levels[hit[0]].terms_lme4):
                raise FitError(f"nlme returned a random-effects block ({' + '.join(terms)} | {name}) that "
                               "hlmbridge's design does not have", engine="nlme")
            order = [terms.index(t) for t in design.levels[hit[0]].terms_lme4]
            out[hit[0]] = mat[np.ix_(order, order)]
        return [m for m in out if m is not None]

    @staticmethod
    def _residual_theta(model: Any, sigma2: float, cor: np.ndarray, var: np.ndarray,
                        var_levels: list[str]) -> np.ndarray:
        """The residual structure's parameters on Stata's scale from nlme's sigma, correlation
        coefficients (``coef(corStruct, unconstrained = FALSE)``) and variance ratios
        (``coef(varStruct, allCoef = TRUE)``, by level label)."""
        res = model.structure
        ratio = dict(zip(var_levels, var.tolist(), strict=True))

        def var_of(label: str) -> float:
            if label not in ratio:
                raise FitError(f"nlme's variance function has no level {label!r} (it has {var_levels})",
                               engine="nlme")
            return sigma2 * ratio[label] ** 2

        if res.kind == "independent":
            return np.array([var_of(lab) for lab in model.by_levels])
        if res.kind == "exchangeable":
            return np.array([sigma2, cor[0] * sigma2])
        if res.kind == "unstructured":
            sd = np.sqrt([var_of(lab) for lab in model.by_levels])
            k = len(sd)
            pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
            if len(cor) != len(pairs):
                raise FitError(f"nlme's corSymm has {len(cor)} correlations where {len(pairs)} were expected "
                               "(a time that no group has twice with another?)", engine="nlme")
            return np.concatenate([sd ** 2, [c * sd[i] * sd[j] for c, (i, j) in zip(cor, pairs)]])
        return np.concatenate([cor, [sigma2]])
