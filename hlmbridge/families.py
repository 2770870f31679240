"""The conditional distributions of a GLMM: each family's link, variance and log density.

One place for what glmer's ``family`` objects (R's ``binomial()``, ``poisson()``) hold, so the
engines, predictions and residuals of a generalized linear mixed model share one definition:

- a :class:`Link` maps the mean to the linear predictor (``linkfun``), back (``linkinv``) and
  gives d mu / d eta (``mu_eta``): logit, probit, cloglog, log, identity;
- a :class:`Family` adds the variance function, the log density of one observation and the
  deviance residuals, with glmer's conventions: a binomial response is the proportion of
  successes and its prior weight the number of trials (R's ``cbind(s, f)`` becomes
  ``y = s / (s + f)``, ``weights = s + f``).

Numerically stable forms are used throughout (``log_ndtr`` for the probit, ``log1p``/``expm1``
for the cloglog, ``xlogy`` for 0 log 0).

Examples
--------
>>> import numpy as np
>>> from hlmbridge.families import family
>>> fam = family("binomial")
>>> fam.link.name, float(fam.link.linkinv(np.array([0.0]))[0])
('logit', 0.5)
>>> round(float(fam.loglik(np.array([1.0]), np.array([0.25]))[0]), 6)   # log(0.25)
-1.386294
>>> family("poisson").link.name
'log'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from hlmbridge.errors import SpecError

__all__ = ["FAMILY_LINKS", "Family", "LINK_FUNCTIONS", "Link", "family"]

_Fn = Callable[[np.ndarray], np.ndarray]

#: The smallest and largest probabilities a link returns (R's binomial()$linkinv clamps at
#: the machine epsilon in the same way, so that log densities stay finite).
_EPS = np.finfo(float).eps


@dataclass(frozen=True)
class Link:
    """A link function g: ``eta = linkfun(mu)``, ``mu = linkinv(eta)``, ``mu_eta = d mu / d eta``."""

    name: str
    linkfun: _Fn
    linkinv: _Fn
    mu_eta: _Fn


def _logit_inv(eta: np.ndarray) -> np.ndarray:
    return np.clip(special.expit(eta), _EPS, 1 - _EPS)


def _logit_mu_eta(eta: np.ndarray) -> np.ndarray:
    p = special.expit(eta)
    return np.maximum(p * (1 - p), _EPS)


def _probit_inv(eta: np.ndarray) -> np.ndarray:
    return np.clip(special.ndtr(eta), _EPS, 1 - _EPS)


def _probit_mu_eta(eta: np.ndarray) -> np.ndarray:
    return np.maximum(np.exp(-0.5 * eta**2) / np.sqrt(2 * np.pi), _EPS)


def _cloglog_fun(mu: np.ndarray) -> np.ndarray:
    return np.log(-np.log1p(-mu))


def _cloglog_inv(eta: np.ndarray) -> np.ndarray:
    return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700.0))), _EPS, 1 - _EPS)


def _cloglog_mu_eta(eta: np.ndarray) -> np.ndarray:
    eta = np.minimum(eta, 700.0)
    return np.maximum(np.exp(eta - np.exp(eta)), _EPS)


def _log_inv(eta: np.ndarray) -> np.ndarray:
    return np.maximum(np.exp(eta), _EPS)


def _identity(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _ones(x: np.ndarray) -> np.ndarray:
    return np.ones_like(np.asarray(x, dtype=float))


#: Every link by its R (and Stata) name.
LINK_FUNCTIONS: dict[str, Link] = {
    "logit": Link("logit", special.logit, _logit_inv, _logit_mu_eta),
    "probit": Link("probit", special.ndtri, _probit_inv, _probit_mu_eta),
    "cloglog": Link("cloglog", _cloglog_fun, _cloglog_inv, _cloglog_mu_eta),
    "log": Link("log", np.log, _log_inv, _log_inv),
    "identity": Link("identity", _identity, _identity, _ones),
}

#: The links each family takes, its canonical link first.
FAMILY_LINKS: dict[str, tuple[str, ...]] = {
    "gaussian": ("identity",),
    "binomial": ("logit", "probit", "cloglog"),
    "poisson": ("log",),
}


@dataclass(frozen=True)
class Family:
    """A conditional distribution with its link.

    ``loglik(y, mu, weights)`` is the log density of each observation. For the binomial,
    ``y`` is the proportion of successes and ``weights`` the number of trials (1 when None);
    ``binomial_constant=True`` includes log C(n, y n), which R's ``binomial()$aic`` (and so
    glmer's log likelihood) includes and a 0/1 response makes 0.
    """

    name: str
    link: Link

    def variance(self, mu: np.ndarray) -> np.ndarray:
        """The variance function V(mu) (the conditional variance is V(mu) / weight)."""
        if self.name == "binomial":
            return mu * (1 - mu)
        if self.name == "poisson":
            return np.asarray(mu, dtype=float)
        return np.ones_like(np.asarray(mu, dtype=float))

    def loglik(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None,
               *, binomial_constant: bool = True) -> np.ndarray:
        """The log density of each observation at mean ``mu`` (not defined for gaussian)."""
        y = np.asarray(y, dtype=float)
        mu = np.asarray(mu, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        if self.name == "binomial":
            s = y * w
            out = special.xlogy(s, mu) + special.xlogy(w - s, 1 - mu)
            if binomial_constant:
                out = out + special.gammaln(w + 1) - special.gammaln(s + 1) - special.gammaln(w - s + 1)
            return out
        if self.name == "poisson":
            return w * (special.xlogy(y, mu) - mu - special.gammaln(y + 1))
        raise SpecError(f"the {self.name} family has no GLMM log density here (a linear mixed model's "
                        "likelihood is computed exactly elsewhere)")

    def deviance_residuals(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """sign(y - mu) sqrt(d_i), R's ``residuals(type = "deviance")`` of a GLM."""
        y = np.asarray(y, dtype=float)
        mu = np.asarray(mu, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        if self.name == "binomial":
            d = 2 * w * (special.xlogy(y, y / mu) + special.xlogy(1 - y, (1 - y) / (1 - mu)))
        elif self.name == "poisson":
            d = 2 * w * (special.xlogy(y, y / mu) - (y - mu))
        else:
            d = w * (y - mu) ** 2
        return np.sign(y - mu) * np.sqrt(np.maximum(d, 0.0))

    def pearson_residuals(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(y - mu) sqrt(weight / V(mu)), R's ``residuals(type = "pearson")``."""
        y = np.asarray(y, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        return (y - mu) * np.sqrt(w / self.variance(mu))


def family(name: str, link: str | None = None) -> Family:
    """The :class:`Family` ``name`` with ``link`` (its canonical link when None).

    >>> family("binomial", "probit").link.name
    'probit'
    >>> family("poisson", "logit")
    Traceback (most recent call last):
    ...
    hlmbridge.errors.SpecError: the poisson family takes the log link, not 'logit'
    """
    if name not in FAMILY_LINKS:
        raise SpecError(f"unknown family {name!r}; choose one of {', '.join(FAMILY_LINKS)}")
    links = FAMILY_LINKS[name]
    chosen = links[0] if link is None else link
    if chosen not in links:
        raise SpecError(f"the {name} family takes the {' or '.join(links)} link, not {chosen!r}")
    return Family(name, LINK_FUNCTIONS[chosen])


# ---- the negative binomial (lme4's glmer.nb, Stata's menbreg) ---------------------------------
# Its variance and density need the dispersion alpha, which the result estimates: a
# NegativeBinomialFamily carries it (negative_binomial(alpha)); family("negative_binomial") alone
# is only its name and link.
FAMILY_LINKS["negative_binomial"] = ("log",)


@dataclass(frozen=True)
class NegativeBinomialFamily(Family):
    """The negative binomial with mean dispersion (NB2): var = mu + alpha mu^2, R's
    ``MASS::negative.binomial(theta = 1 / alpha)`` and Stata's ``menbreg`` ``alpha``.

    >>> import numpy as np
    >>> nb = negative_binomial(0.5)
    >>> float(nb.variance(np.array([2.0]))[0])   # 2 + 0.5 * 4
    4.0
    >>> round(float(np.exp(nb.loglik(np.array([0.0]), np.array([2.0]))[0])), 6)   # (1 / (1 + alpha mu))^(1/alpha)
    0.25
    """

    alpha: float = float("nan")

    def variance(self, mu: np.ndarray) -> np.ndarray:
        """mu + alpha mu^2 (R's ``negative.binomial(theta)$variance``)."""
        mu = np.asarray(mu, dtype=float)
        return mu + self.alpha * mu**2

    def loglik(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None,
               *, binomial_constant: bool = True) -> np.ndarray:
        """log dnbinom(y, size = 1 / alpha, mu = mu), times the prior weight (1 when None)."""
        y = np.asarray(y, dtype=float)
        mu = np.asarray(mu, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        size = 1.0 / self.alpha
        return w * (special.gammaln(y + size) - special.gammaln(size) - special.gammaln(y + 1)
                    + size * np.log(size / (size + mu)) + special.xlogy(y, mu / (size + mu)))

    def deviance_residuals(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """R's ``negative.binomial(theta)$dev.resids`` as signed square roots."""
        y = np.asarray(y, dtype=float)
        mu = np.asarray(mu, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        size = 1.0 / self.alpha
        d = 2 * w * (special.xlogy(y, y / mu) - (y + size) * np.log((y + size) / (mu + size)))
        return np.sign(y - mu) * np.sqrt(np.maximum(d, 0.0))


def negative_binomial(alpha: float, link: str = "log") -> NegativeBinomialFamily:
    """The negative binomial family with dispersion ``alpha`` > 0 (only the log link, as glmer.nb).

    >>> negative_binomial(0.3).link.name
    'log'
    >>> negative_binomial(-1.0)
    Traceback (most recent call last):
    ...
    hlmbridge.errors.SpecError: the negative binomial's dispersion alpha must be a positive number, got -1.0
    """
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and alpha > 0):
        raise SpecError(f"the negative binomial's dispersion alpha must be a positive number, got {alpha!r}")
    if link not in FAMILY_LINKS["negative_binomial"]:
        raise SpecError(f"the negative_binomial family takes the log link, not {link!r}")
    return NegativeBinomialFamily("negative_binomial", LINK_FUNCTIONS[link], float(alpha))
