"""GLMM inputs (issue 23): links, binomial trials, offsets, Stata's commands for them, and bad input.

The numbers of these models are checked against glmer in tests/test_glmm_differential.py; here
the spec, the parsers, the translation to glmer's call and the refusals (as glmer refuses, or
where hlmbridge would otherwise fit another model).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import DataError, FitError, SpecError, UnsupportedSpecError, UsageError
from hlmbridge.spec.model import FAMILY_LINKS, ModelSpec, RandomLevel
from hlmbridge.spec.serialize import spec_from_dict, spec_to_dict
from hlmbridge.spec.translate import parse_any


# ---- the spec and the parsers (no R) -------------------------------------------------------
def test_spec_links():
    assert FAMILY_LINKS == __import__("hlmbridge.families", fromlist=["x"]).FAMILY_LINKS
    for link in ("logit", "probit", "cloglog"):
        assert ModelSpec("y", levels=(RandomLevel("g"),), family="binomial", link=link).link == link
    with pytest.raises(SpecError, match="the poisson family with the 'probit' link is not supported"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="poisson", link="probit")
    with pytest.raises(SpecError, match="'or' display option does not apply"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="binomial", link="probit", eform="or")
    with pytest.raises(SpecError, match="belongs to the binomial family"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="poisson", trials="n")
    with pytest.raises(SpecError, match="exposure\\(\\) belongs to a Poisson model"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="binomial", exposure="t")
    with pytest.raises(SpecError, match="cannot both be given"):
        ModelSpec("y", levels=(RandomLevel("g"),), family="poisson", exposure="t", offset="o")
    with pytest.raises(SpecError, match="belongs to a GLMM here"):
        ModelSpec("y", levels=(RandomLevel("g"),), offset="o")
    spec = ModelSpec("y", levels=(RandomLevel("g"),), family="binomial", trials="n")
    assert spec.variables == ("y", "g", "n")


@pytest.mark.parametrize("command, family, link, points, extra", [
    ("meprobit y x || g:", "binomial", "probit", 7, {}),
    ("mecloglog y x, binomial(n) || g:, intmethod(laplace)", "binomial", "cloglog", 1, {"trials": "n"}),
    ("melogit y x || g:, binomial(12) or", "binomial", "logit", 7, {"trials": 12, "eform": "or"}),
    ("meglm y x || g:, family(binomial n) link(probit)", "binomial", "probit", 7, {"trials": "n"}),
    ("meglm y x || g:, family(bernoulli)", "binomial", "logit", 7, {}),
    ("meglm y x || g:, fam(poisson) eform", "poisson", "log", 7, {"eform": "irr"}),
    ("xtprobit y x, i(g) re", "binomial", "probit", 12, {}),
    ("xtpoisson y x, i(g) re normal exposure(t) irr", "poisson", "log", 12, {"exposure": "t", "eform": "irr"}),
    ("mepoisson y x, offset(o) || g:", "poisson", "log", 7, {"offset": "o"}),
])
def test_stata_glmm_commands(command, family, link, points, extra):
    spec = parse_any(command)
    assert (spec.family, spec.link, spec.intpoints) == (family, link, points)
    for key, value in extra.items():
        assert getattr(spec, key) == value, key
    assert parse_any(spec.to_stata()) == spec
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_glmer_call_of_stata_inputs():
    """Stata's binomial(), exposure() and offset() become glmer's cbind() and offset() terms."""
    lm = parse_any("meprobit y x, binomial(n) || g:, intmethod(laplace)").to_lme4()
    assert lm.formula == "cbind(y, n - y) ~ 1 + x + (1 | g)" and lm.family == 'binomial(link = "probit")'
    assert "glmer(cbind(y, n - y) ~ 1 + x + (1 | g), data = data, family = binomial(link = \"probit\")" in lm.r_code()
    assert parse_any("mecloglog y x, binomial(5) || g:").to_lme4().formula.startswith("cbind(y, 5 - y) ~")
    assert parse_any("mepoisson y x, exposure(t) || g:").to_lme4().formula.endswith("+ offset(log(t))")
    assert parse_any("mepoisson y x, offset(o) || g:").to_lme4().formula.endswith("+ offset(o)")
    spec = parse_any("cbind(s, n - s) ~ x + (1 | g)")
    assert spec.variables == ("s", "n", "x", "g") and spec.response == "cbind(s, n - s)"
    with pytest.raises(SpecError, match="cbind\\(\\) as a binomial response takes two expressions"):
        parse_any("cbind(s) ~ x + (1 | g)")


# ---- fit()'s family= and link= ----------------------------------------------------------------
@pytest.fixture(scope="module")
def binary() -> pd.DataFrame:
    rng = np.random.default_rng(20231)
    g = np.repeat(np.arange(30), 8)
    x = rng.normal(size=g.size)
    u = rng.normal(scale=0.8, size=30)[g]
    n = rng.integers(1, 9, size=g.size)
    s = rng.binomial(n, 1 / (1 + np.exp(-(0.3 + 0.7 * x + u))))
    return pd.DataFrame({"y": (s > n / 2).astype(int), "s": s, "n": n, "f": n - s, "p": s / n, "x": x,
                         "g": g, "c": rng.poisson(np.exp(0.2 + 0.5 * x + u)), "t": rng.uniform(0.5, 2, g.size)})


@pytest.mark.requires_r
def test_family_and_link_arguments(binary):
    base = hlmbridge.fit("y ~ x + (1 | g)", binary, family="binomial", link="probit")
    assert (base.spec.family, base.spec.link) == ("binomial", "probit")
    for family in ('binomial(link = "probit")', "binomial(link='probit')", "binomial(probit)", 'binomial("probit")'):
        res = hlmbridge.fit("y ~ x + (1 | g)", binary, family=family)
        assert res.spec == base.spec and res.loglik == base.loglik, family
    assert "Mixed-effects probit regression" in base.summary()
    assert "Mixed-effects cloglog regression" in hlmbridge.fit("y ~ x + (1 | g)", binary, family="binomial",
                                                               link="cloglog").summary()
    with pytest.raises(UnsupportedSpecError, match="probit coefficient's exponential means nothing"):
        base.eform()


@pytest.mark.requires_r
@pytest.mark.parametrize("kwargs, words", [
    ({"family": "binomial", "link": "log"}, "link='log' is not supported for the binomial family"),
    ({"family": "poisson", "link": "logit"}, "link='logit' is not supported for the poisson family"),
    ({"family": 'binomial(link = "probit")', "link": "logit"}, "give the link once"),
    ({"link": "probit"}, "link= applies to a GLMM"),
    ({"family": "quasibinomial"}, "family='quasibinomial' is not supported"),
])
def test_family_and_link_usage_errors(binary, kwargs, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        hlmbridge.fit("y ~ x + (1 | g)", binary, **kwargs)


@pytest.mark.requires_r
def test_link_of_a_stata_command_is_its_own(binary):
    with pytest.raises(UsageError, match="binomial GLMM with the probit link"):
        hlmbridge.fit("meprobit y x || g:, intmethod(laplace)", binary, link="logit")


# ---- trials and offsets: three spellings, one model -------------------------------------------
@pytest.mark.requires_r
def test_binomial_trials_three_ways(binary):
    """cbind(s, f), a proportion with weights = trials (glmer's two ways) and Stata's binomial(n)
    fit the same model; the log likelihood includes log C(n, s), as glmer's does."""
    a = hlmbridge.fit("cbind(s, f) ~ x + (1 | g)", binary, family="binomial")
    b = hlmbridge.fit("p ~ x + (1 | g)", binary, family="binomial", weights="n")
    c = hlmbridge.fit("melogit s x, binomial(n) || g:, intmethod(laplace)", binary)
    for other in (b, c):
        assert abs(other.loglik - a.loglik) < 1e-8
        assert np.allclose(np.sort(other.fixed["estimate"]), np.sort(a.fixed["estimate"]), atol=1e-6)
    assert a.nobs == len(binary)


@pytest.mark.requires_r
def test_poisson_offset_three_ways(binary):
    a = hlmbridge.fit("c ~ x + offset(log(t)) + (1 | g)", binary, family="poisson")
    b = hlmbridge.fit("c ~ x + (1 | g)", binary, family="poisson", offset=np.log(binary["t"].to_numpy()))
    c = hlmbridge.fit("mepoisson c x, exposure(t) || g:, intmethod(laplace)", binary)
    d = hlmbridge.fit("mepoisson c x, offset(lt) || g:, intmethod(laplace)", binary.assign(lt=np.log(binary["t"])))
    for other in (b, c, d):
        assert abs(other.loglik - a.loglik) < 1e-8
    none = hlmbridge.fit("c ~ x + (1 | g)", binary, family="poisson")
    assert abs(none.loglik - a.loglik) > 1e-3  # the offset is in the model


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.requires_r
def test_bad_binomial_and_poisson_input(binary):
    with pytest.raises(DataError, match=re.escape("a binomial GLMM needs a 0/1 response; 'p' has the value")):
        hlmbridge.fit("p ~ x + (1 | g)", binary, family="binomial")
    with pytest.raises(DataError, match="needs whole numbers of successes"):
        hlmbridge.fit("p ~ x + (1 | g)", binary, family="binomial", weights=binary["n"] + 0.5)
    with pytest.raises(DataError, match=re.escape("a cbind() response's proportion has the value")):
        hlmbridge.fit("cbind(s + 1, f - 1) ~ x + (1 | g)", binary, family="binomial")
    with pytest.raises(UsageError, match="the trials are given by cbind\\(\\) already"):
        hlmbridge.fit("cbind(s, f) ~ x + (1 | g)", binary, family="binomial", weights="n")
    with pytest.raises(DataError, match="must be positive whole numbers; one is 0"):
        hlmbridge.fit("melogit s x, binomial(n0) || g:, intmethod(laplace)", binary.assign(n0=binary["n"] * 0))
    with pytest.raises(DataError, match=re.escape("a binomial GLMM needs a response in [0, 1]")):
        hlmbridge.fit("melogit s x, binomial(2) || g:, intmethod(laplace)", binary.assign(s=binary["n"] + 1))
    with pytest.raises(DataError, match=re.escape("exposure(t) must be positive")):
        hlmbridge.fit("mepoisson c x, exposure(t) || g:", binary.assign(t=binary["t"] - 1))
    with pytest.raises(UnsupportedSpecError, match="Poisson GLMM with prior weights"):
        hlmbridge.fit("c ~ x + (1 | g)", binary, family="poisson", weights="n")


@pytest.mark.requires_r
def test_observation_level_random_effect(binary):
    """Counts and trials take an observation-level random effect (overdispersion, as glmer fits it);
    a 0/1 response cannot tell it from nothing and is refused."""
    data = binary.assign(obs=np.arange(len(binary)))
    res = hlmbridge.fit("c ~ x + (1 | g) + (1 | obs)", data, family="poisson")
    assert [g.group for g in res.groups] == ["g", "obs"]
    res = hlmbridge.fit("cbind(s, f) ~ x + (1 | obs)", data, family="binomial")
    assert res.groups[0].n_groups == len(data)
    with pytest.raises(DataError, match="single observation"):
        hlmbridge.fit("y ~ x + (1 | obs)", data, family="binomial")


# ---- hard fits: glmer's own errors and warnings reach the user ----------------------------------
@pytest.mark.requires_r
def test_complete_separation_is_glmers_error(binary):
    """x separates y completely: glmer stops (PIRLS does not converge), and so does the fit."""
    data = binary.assign(y=(binary["x"] > 0).astype(int))
    with pytest.raises(FitError, match="glmer failed: pwrssUpdate did not converge"):
        hlmbridge.fit("y ~ x + (1 | g)", data, family="binomial")


def _noise() -> pd.DataFrame:
    """200 rows in 20 groups of 10, with no group effect in the data (numpy's seed 1)."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    y = rng.binomial(1, 0.5, 200)
    rng.binomial(1, 0.3, 200)
    c = rng.poisson(2, 200)
    c[g < 3] = 0  # three groups of zero counts
    return pd.DataFrame({"y": y, "c": c, "x": x, "g": g.astype(str)})


@pytest.mark.requires_r
def test_singular_fit_is_a_warning():
    """A grouping that carries no variance: the boundary (singular) fit glmer reports."""
    res = hlmbridge.fit("y ~ x + (1 | g)", _noise(), family="binomial")
    assert res.singular
    assert "boundary (singular) fit: see help('isSingular')" in res.warnings


@pytest.mark.requires_r
def test_all_zero_groups_fit_without_false_warnings():
    """All-zero groups: the Hessian of glmer's deviance with PIRLS started from its first stage
    was noise (gradient in theta -0.088 where numDeriv's is 6e-6, a negative eigenvalue); with
    PIRLS restarted at each point (r/hlmbridge.R, hlmbridge_glmer_restart) lme4's checks pass."""
    res = hlmbridge.fit("c ~ x + (1 | g)", _noise(), family="poisson")
    assert not [w for w in res.warnings if "converge" in w or "Hessian" in w], res.warnings


def test_cbind_response_needs_the_binomial_family(binary):
    """lmer has no two-column response: cbind() without family='binomial' is refused, never fitted
    as a linear model of the proportion."""
    with pytest.raises(SpecError, match=re.escape("is a binomial response (successes, failures): give "
                                                  "family='binomial'")):
        hlmbridge.fit("cbind(s, f) ~ x + (1 | g)", binary, engine="statsmodels")
    with pytest.raises(UnsupportedSpecError, match="is a binomial response"):
        parse_any("cbind(s, f) ~ x + (1 | g)").to_lme4()


@pytest.mark.requires_r
def test_cbind_response_needs_the_binomial_family_lme4(binary):
    with pytest.raises(UnsupportedSpecError, match=re.escape("the response cbind(s, f) is a binomial response")):
        hlmbridge.fit("cbind(s, f) ~ x + (1 | g)", binary)
    with pytest.raises(UnsupportedSpecError, match="is a binomial response"):
        hlmbridge.fit("cbind(s, f) ~ x + (1 | g)", binary, family="poisson")
