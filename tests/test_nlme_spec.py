"""Residual structures in the spec (issue 25): Stata's residuals() and fit()'s residuals= keyword,
their errors, the nlme rendering and the refusals of the other engines (no R needed)."""

from __future__ import annotations

import pytest

from hlmbridge.errors import SpecError, UnsupportedSpecError
from hlmbridge.spec.model import ModelSpec
from hlmbridge.spec.parse_stata import parse_stata
from hlmbridge.spec.render import to_lme4, to_stata, to_statsmodels
from hlmbridge.spec.render_nlme import to_nlme
from hlmbridge.spec.residuals import ResidualStructure, parse_residuals, parse_stata_residuals
from hlmbridge.spec.translate import parse_any, translate


@pytest.mark.parametrize("text, expected", [
    ("ar 1, t(time)", ResidualStructure("ar", t="time", order=1)),
    ("ar, t(time)", ResidualStructure("ar", t="time", order=1)),
    ("ar 2, t(time)", ResidualStructure("ar", t="time", order=2)),
    ("ma 2, t(t)", ResidualStructure("ma", t="t", order=2)),
    ("exponential, t(age)", ResidualStructure("exponential", t="age")),
    ("independent, by(sex)", ResidualStructure("independent", by="sex")),
    ("exchangeable", ResidualStructure("exchangeable")),
    ("un, t(t)", ResidualStructure("unstructured", t="t")),
    ("exchangeable, by(sex)", ResidualStructure("exchangeable", by="sex")),
    ("toeplitz 2, t(t)", ResidualStructure("toeplitz", t="t", order=2)),
])
def test_stata_residuals(text: str, expected: ResidualStructure) -> None:
    assert parse_stata_residuals(text) == expected
    spec = parse_stata(f"mixed y x || id:, residuals({text})")
    assert spec.residuals == expected
    assert parse_stata(to_stata(spec)) == spec  # the command written back parses to the same model


@pytest.mark.parametrize("text, expected", [
    ("ar1(time | id)", ResidualStructure("ar", t="time", order=1, group="id")),
    ("ar2(time)", ResidualStructure("ar", t="time", order=2)),
    ("ma1(t | id)", ResidualStructure("ma", t="t", order=1, group="id")),
    ("car1(age | id)", ResidualStructure("exponential", t="age", group="id")),
    ("exponential(age | id)", ResidualStructure("exponential", t="age", group="id")),
    ("exchangeable(1 | id)", ResidualStructure("exchangeable", group="id")),
    ("unstructured(t | id)", ResidualStructure("unstructured", t="t", group="id")),
    ("independent(by = sex)", ResidualStructure("independent", by="sex")),
    ("independent(1 | id, by = sex)", ResidualStructure("independent", by="sex", group="id")),
])
def test_formula_keyword(text: str, expected: ResidualStructure) -> None:
    assert parse_residuals(text) == expected


@pytest.mark.parametrize("text, message", [
    ("mixed y x || id:, residuals(ar 1)", "needs a time variable"),
    ("mixed y x || id:, residuals(exponential)", "needs a time variable"),
    ("mixed y x || id:, residuals(unstructured, by(g))", "needs a time variable"),
    ("mixed y x || id:, residuals(foo, t(t))", "unknown structure"),
    ("mixed y x || id:, residuals(exchangeable 2)", "takes no order"),
    ("mixed y x || id:, residuals(ar 1, t(t) t(s))", "given twice"),
    ("mixed y x || id:, residuals(ar 1, t(t) when(s))", "unknown option"),
    ("mixed y x || id:, residuals(ar 1, t(t)) residuals(ar 1, t(t))", "given twice"),
    ("mixed y x || id:, residuals(ar 0, t(t))", "positive integer"),
    ("mixed y x || id:, residuals(ar 1, t(t) by(t))", "same variable"),
])
def test_stata_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_stata(text)


@pytest.mark.parametrize("text", ["ar1", "ar1(1 | id)", "foo(t | id)", "ar1(t | id, when = x)", "exchangeable2"])
def test_keyword_errors(text: str) -> None:
    with pytest.raises(SpecError):
        parse_residuals(text)


def test_independent_without_by_is_the_plain_model() -> None:
    assert parse_stata("mixed y x || id:, residuals(independent)") == parse_stata("mixed y x || id:")


def test_variables_include_time_and_by() -> None:
    spec = parse_stata("mixed y x || id:, residuals(exponential, t(age))")
    assert spec.variables == ("y", "x", "id", "age")
    spec = parse_stata("mixed y x || id:, residuals(independent, by(sex)) reml")
    assert spec.variables[-1] == "sex" and parse_any(to_stata(spec)) == spec


def test_glmm_has_no_residual_structure() -> None:
    with pytest.raises(SpecError, match="no residual errors"):
        ModelSpec("y", levels=parse_stata("mixed y || id:").levels, family="binomial",
                  residuals=ResidualStructure("ar", t="t"))


def test_other_engines_refuse_naming_nlme() -> None:
    spec = parse_stata("mixed y x || id:, residuals(ar 1, t(t))")
    with pytest.raises(UnsupportedSpecError, match="engine='nlme'"):
        to_lme4(spec)
    with pytest.raises(UnsupportedSpecError, match="engine='nlme'"):
        to_statsmodels(spec)
    with pytest.raises(UnsupportedSpecError, match="engine='nlme'.*pdIdent"):
        to_lme4(parse_stata("mixed y x || id: x, cov(identity)"))
    with pytest.raises(UnsupportedSpecError, match="engine='nlme'.*pdCompSymm"):
        to_lme4(parse_stata("mixed y x || id: x, cov(exchangeable)"))


@pytest.mark.parametrize("command, call", [
    ("mixed y x || id:, residuals(ar 1, t(t))",
     "random = list(id = nlme::pdIdent(~ 1)), correlation = nlme::corAR1(form = ~ t | id)"),
    ("mixed y x || id:, residuals(ar 2, t(t))", "nlme::corARMA(form = ~ t | id, p = 2, q = 0)"),
    ("mixed y x || id:, residuals(ma 2, t(t))", "nlme::corARMA(form = ~ t | id, p = 0, q = 2)"),
    ("mixed y x || id: x, cov(un) residuals(exp, t(age))",
     "random = list(id = nlme::pdSymm(~ 1 + x)), correlation = nlme::corCAR1(form = ~ age | id)"),
    ("mixed y x || id: x, cov(ind) residuals(exchangeable)",
     "nlme::pdDiag(~ 1 + x)), correlation = nlme::corCompSymm(form = ~ 1 | id)"),
    ("mixed y x || id:, residuals(unstructured, t(t)) reml",
     "nlme::corSymm(form = ~ as.integer(factor(t)) | id), weights = nlme::varIdent(form = ~ 1 | factor(t)), "
     'method = "REML"'),
    ("mixed y x || school: || id: x, nocons residuals(ind, by(sex))",
     "random = list(school = nlme::pdIdent(~ 1), id = nlme::pdIdent(~ 0 + x)), "
     "weights = nlme::varIdent(form = ~ 1 | sex)"),
    ("mixed y x || school: || id:, residuals(ar 1, t(t))", "nlme::corAR1(form = ~ t | school/id)"),
    ("mixed y i.g || id:, residuals(ar 1, t(t))", "data$g <- factor(data$g)\nfit <- nlme::lme(fixed = y ~ 1 + g"),
])
def test_nlme_rendering(command: str, call: str) -> None:
    assert call in to_nlme(parse_stata(command)).r_code()
    assert "nlme:" in translate(command)


def test_nlme_refusals() -> None:
    with pytest.raises(UnsupportedSpecError, match="engine='lme4'"):
        to_nlme(parse_stata("mixed y || _all: R.a || b:"))
    with pytest.raises(UnsupportedSpecError, match="Toeplitz"):
        to_nlme(parse_stata("mixed y || id:, residuals(toeplitz 1, t(t))"))
    with pytest.raises(UnsupportedSpecError, match="banded"):
        to_nlme(parse_stata("mixed y || id:, residuals(banded 2, t(t))"))
    with pytest.raises(UnsupportedSpecError, match="own correlation"):
        to_nlme(parse_stata("mixed y || id:, residuals(ar 1, t(t) by(sex))"))
    assert "not expressible" in translate("mixed y || id:, residuals(toeplitz 1, t(t))").split("nlme:")[1]


@pytest.mark.parametrize("text", ["mixed y x || id:, residuals(ar 2, t(t)) reml",
                                  "mixed y x || id: x, cov(exch) residuals(independent, by(sex))"])
def test_serialized_spec_keeps_the_structure(text: str) -> None:
    from hlmbridge.spec.serialize import spec_from_dict, spec_to_dict

    spec = parse_any(text)
    assert spec_to_dict(spec)["residuals"]["kind"] in ("ar", "independent")
    assert spec_from_dict(spec_to_dict(spec)) == spec
