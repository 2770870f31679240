"""Parsing Stata ``mixed`` commands (Stata's meaning) and lme4 formulas (R's meaning) into ModelSpec.

Only the tests marked ``requires_r`` need R: they recompute the R-derived expectations.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hlmbridge.errors import DataError, SpecError
from hlmbridge.spec.model import ModelSpec
from hlmbridge.spec.translate import parse_any
from hlmbridge.spec.parse_lme4 import parse_lme4
from hlmbridge.spec.parse_stata import parse_stata, parse_stata_method
from tests.spec_cases import (
    BAD_LME4,
    BAD_STATA,
    LME4_READINGS,
    SEED_COMMANDS,
    SEED_FILE,
    SEED_SPECS,
    SEED_TYPO,
    STATA_CASES,
    Bar,
    Reading,
)

# ---------------------------------------------------------------------------- the seed


@pytest.mark.parametrize(("line", "command"), SEED_COMMANDS, ids=[f"L{n}" for n, _ in SEED_COMMANDS])
def test_seed_command_parses_to_expected_spec(line: int, command: str) -> None:
    spec = parse_stata(command)
    assert spec == SEED_SPECS[line]
    assert spec.method == "ml"  # Stata's default; the seed never says reml


def test_seed_model5_term_order_is_statas() -> None:
    spec = parse_stata(". mixed mathach c.ses##i.sector || id: ses, cov(unstr)")
    assert [t.stata_name for t in spec.fixed] == ["ses", "i.sector", "c.ses#i.sector"]
    assert spec.levels[0].stata_terms == ("ses", "_cons")


def test_seed_typo_is_not_a_mixed_command() -> None:
    line, command = SEED_TYPO
    with pytest.raises(SpecError) as info:
        parse_stata(command)
    msg = str(info.value)
    assert "this is not a mixed command: 'mathach'" in msg
    assert "did you mean 'mixed mathach ses || id: ses, cov(unstructured)'" in msg
    assert info.value.position == command.index("mathach")
    with pytest.raises(SpecError, match="not a mixed command"):
        parse_any(command)


def test_case_table_covers_every_mixed_line_of_the_seed() -> None:
    # The seed handout is committed beside the fixtures it produces.
    path = Path(__file__).resolve().parents[1] / "fixtures" / "stata" / "logs" / SEED_FILE
    found = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"\s*\. (qui )?mixed ", line) or n == SEED_TYPO[0]:
            found[n] = line
    table = dict(SEED_COMMANDS)
    table[SEED_TYPO[0]] = SEED_TYPO[1]
    assert found == table


# ---------------------------------------------------------------------- Stata constructs


def _check_position(err: SpecError, text: str, at: str | int | None) -> None:
    """The error points at offset ``at`` or at the first occurrence of substring ``at``."""
    assert err.text == text
    assert err.position is not None
    if at is not None:
        assert err.position == (at if isinstance(at, int) else text.index(at))
        assert f"(at position {err.position})" in str(err)


@pytest.mark.parametrize("command", list(STATA_CASES))
def test_stata_construct(command: str) -> None:
    assert parse_stata(command) == STATA_CASES[command]


@pytest.mark.parametrize(("command", "needle", "at"), BAD_STATA, ids=[c or "<empty>" for c, _, _ in BAD_STATA])
def test_bad_stata_command(command: str, needle: str, at: str | int | None) -> None:
    with pytest.raises(SpecError) as info:
        parse_stata(command)
    assert needle in str(info.value)
    _check_position(info.value, command, at)


def test_stata_repeated_term_is_omitted() -> None:
    # Stata fits `mixed y x x` and omits the repeated x ("(omitted)"); the spec says so in a note.
    spec = parse_stata("mixed y x x || g:")
    assert spec == parse_stata("mixed y x || g:")
    assert any("listed twice" in note for note in spec.notes)


def test_unknown_covariance_lists_valid_names() -> None:
    with pytest.raises(SpecError) as info:
        parse_stata("mixed y x || g: x, cov(banded)")
    for name in ("independent", "exchangeable", "identity", "unstructured"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("ind", "independent"),
        ("indep", "independent"),
        ("exc", "exchangeable"),
        ("exch", "exchangeable"),
        ("id", "identity"),
        ("iden", "identity"),
        ("un", "unstructured"),
        ("unstr", "unstructured"),
        ("unstructured", "unstructured"),
    ],
)
def test_covariance_abbreviations(written: str, expected: str) -> None:
    for opt in ("cov", "cova", "covariance"):
        spec = parse_stata(f"mixed y x || g: x z, {opt}({written})")
        assert spec.levels[0].cov == expected


@pytest.mark.parametrize("written", ["in", "ex", "i", "u", "unstructuredx"])
def test_covariance_too_short_or_wrong(written: str) -> None:
    with pytest.raises(SpecError, match="unknown covariance structure"):
        parse_stata(f"mixed y x || g: x, cov({written})")


def test_co_is_not_covariance() -> None:
    with pytest.raises(SpecError, match="unknown option 'co'"):
        parse_stata("mixed y x || g: x, co(un)")


def test_stated_method_is_reported() -> None:
    assert parse_stata_method("mixed y || g:")[1] is None
    assert parse_stata_method("mixed y || g:, reml")[1] == "reml"
    assert parse_stata_method("mixed y, mle || g:")[1] == "ml"


def test_source_is_kept_but_not_compared() -> None:
    a = parse_stata("mixed y x || g:")
    b = parse_stata(". qui mixed y x || g:")
    assert a == b
    assert a._source == "mixed y x || g:"


# ----------------------------------------------------------------------- lme4 constructs
#
# An lme4 formula means what R and lme4 make of it. LME4_READINGS holds R's answers;
# test_lme4_readings_are_r_s recomputes them in R with R_READING_SCRIPT, and
# test_lme4_design_columns_are_r_s checks the fixed and random columns hlmbridge builds
# against lme4::lFormula on one data set.

#: R's reading of each formula in ``formulas`` (a character vector), as JSON.
R_READING_SCRIPT = r"""
function(formulas) {
  read_one <- function(s) {
    f <- as.formula(s)
    tt <- terms(lme4::nobars(f))
    vars <- vapply(as.list(attr(tt, "variables"))[-1], deparse1, "")
    offs <- attr(tt, "offset")
    bars <- lme4::findbars(lme4::expandDoubleVerts(f[[length(f)]]))
    list(
      response = deparse1(f[[2]]),
      labels = I(attr(tt, "term.labels")),
      intercept = attr(tt, "intercept") == 1,
      offsets = I(if (is.null(offs)) character(0) else vars[offs]),
      bars = lapply(bars, function(b) {
        lt <- terms(eval(substitute(~foo, list(foo = b[[2]]))))
        list(label = deparse1(b[[3]]), labels = I(attr(lt, "term.labels")),
             intercept = attr(lt, "intercept") == 1)
      }),
      columns = I(all.vars(f))
    )
  }
  as.character(jsonlite::toJSON(lapply(formulas, read_one), auto_unbox = TRUE))
}
"""

#: lme4's fixed-effect column names and sums and its random-effects columns per term.
R_DESIGN_SCRIPT = r"""
function(formulas, path) {
  data <- utils::read.csv(path, check.names = FALSE)
  ## lmer's own rank check: a rank-deficient X loses the columns lmer drops (issue 26).
  ctrl <- lme4::lmerControl(check.nobs.vs.nlev = "ignore", check.nobs.vs.nRE = "ignore",
                            check.rankX = "silent.drop.cols", check.scaleX = "ignore")
  one <- function(s) {
    lf <- lme4::lFormula(as.formula(s), data, control = ctrl)
    cnms <- lf$reTrms$cnms
    list(X = I(colnames(lf$X)), Xsum = I(unname(colSums(lf$X))),
         cnms = lapply(seq_along(cnms), function(i) list(names(cnms)[i], I(cnms[[i]]))))
  }
  as.character(jsonlite::toJSON(lapply(formulas, one), auto_unbox = TRUE, digits = NA))
}
"""

#: spec.variables puts a logical constant among the data columns (R's all.vars() does not).
_COLUMN_CASES = list(LME4_READINGS)


def _reading(spec: ModelSpec) -> Reading:
    """hlmbridge's reading of an lme4-formula spec in the form of :class:`Reading`."""
    f = spec.formula
    assert f is not None
    return Reading(
        response=f.response.deparse(),
        labels=f.fixed.labels,
        intercept=f.fixed.intercept,
        offsets=tuple(f"offset({o.deparse()})" for o in f.fixed.offsets),
        bars=tuple(Bar(b.label, b.lhs.labels, b.lhs.intercept) for b in f.random),
        columns=spec.variables,
    )


@pytest.mark.parametrize("formula", list(LME4_READINGS))
def test_lme4_reading_is_r_s(formula: str) -> None:
    spec = parse_lme4(formula)
    assert _reading(spec)._replace(columns=()) == LME4_READINGS[formula]._replace(columns=())
    # the whole meaning is in the formula; the Stata-style fields stay empty
    assert spec.fixed == () and spec.levels == ()
    assert spec.response == LME4_READINGS[formula].response
    assert spec.constant is LME4_READINGS[formula].intercept


@pytest.mark.parametrize("formula", _COLUMN_CASES)
def test_lme4_columns_are_r_s(formula: str) -> None:
    # R's all.vars() order follows the text; hlmbridge lists the fixed part before the bars.
    assert set(parse_lme4(formula).variables) == set(LME4_READINGS[formula].columns)


@pytest.mark.requires_r
def test_lme4_readings_are_r_s() -> None:
    ro = pytest.importorskip("rpy2.robjects")
    formulas = list(LME4_READINGS)
    out = json.loads(ro.r(R_READING_SCRIPT)(ro.StrVector(formulas))[0])
    for formula, got in zip(formulas, out):
        bars = tuple(Bar(b["label"], _strs(b["labels"]), b["intercept"]) for b in got["bars"])
        r = Reading(got["response"], _strs(got["labels"]), got["intercept"], _strs(got["offsets"]), bars,
                    _strs(got["columns"]))
        assert r == LME4_READINGS[formula], formula


def _strs(value: object) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)  # type: ignore[arg-type]


def _design_data() -> pd.DataFrame:
    """Every column the formulas read: positive numbers (log, sqrt), small integer codes."""
    rng = np.random.default_rng(3)
    n = 72
    i = np.arange(n)
    return pd.DataFrame({
        "y": rng.uniform(1, 5, n), "yy": rng.normal(size=n), "x": rng.uniform(0.5, 3, n).round(3),
        "z": rng.uniform(0.5, 3, n), "w": rng.uniform(0.5, 3, n), "n": rng.integers(1, 9, n),
        "s": i % 4, "t": (i // 4) % 3, "a": i % 3, "b": (i // 3) % 3, "c": (i // 9) % 2,
        "g": i // 12, "h": i % 2, "grp": i // 8, "if": rng.normal(size=n), "my var": rng.normal(size=n),
    })


#: Formulas whose design hlmbridge refuses although lme4 builds one, with the reason.
_DESIGN_REFUSED = {
    # two random intercepts for g: lmer fits a model that is not identified; refused.
    "y ~ x + (1|g) + (1|g)": (SpecError, "appears in two random-effects terms"),
    # lme4 1.1.31 cannot build a model without fixed effects ("attempt to set an attribute on NULL")
    "y ~ 0 + (1|g)": None,
}


@pytest.mark.requires_r
def test_lme4_design_columns_are_r_s(tmp_path: Path) -> None:
    ro = pytest.importorskip("rpy2.robjects")
    from hlmbridge.design.build import build_design

    data = _design_data()
    path = tmp_path / "data.csv"
    data.to_csv(path, index=False)
    formulas = [f for f in LME4_READINGS if f not in _DESIGN_REFUSED and "TRUE" not in f and "FALSE" not in f]
    out = json.loads(ro.r(R_DESIGN_SCRIPT)(ro.StrVector(formulas), str(path))[0])
    assert len(out) == len(formulas) > 70
    for formula, got in zip(formulas, out):
        d = build_design(parse_lme4(formula), data)
        assert d.fixed_lme4 == _strs(got["X"]), formula
        np.testing.assert_allclose(d.X.sum(axis=0), got["Xsum"], rtol=1e-10, atol=1e-10, err_msg=formula)
        ours = sorted((lv.key, tuple(lv.terms_lme4[i] for i in block)) for lv in d.levels for block in lv.blocks)
        theirs = sorted((name, _strs(cols)) for name, cols in got["cnms"])
        assert ours == theirs, formula
    for formula, refusal in _DESIGN_REFUSED.items():
        if refusal is not None:
            with pytest.raises(refusal[0], match=refusal[1]):
                build_design(parse_lme4(formula), data)


@pytest.mark.parametrize(("formula", "needle", "at"), BAD_LME4, ids=[f or "<empty>" for f, _, _ in BAD_LME4])
def test_bad_lme4_formula(formula: str, needle: str, at: str | int | None) -> None:
    with pytest.raises(SpecError) as info:
        parse_lme4(formula)
    assert needle in str(info.value)
    _check_position(info.value, formula, at)


def test_lme4_default_method_is_reml() -> None:
    assert parse_lme4("y ~ x + (1 | g)").method == "reml"
    assert parse_lme4("y ~ x + (1 | g)", reml=False).method == "ml"


def test_lme4_takes_no_factor_declarations() -> None:
    # Which columns are factors is a property of the data or of factor() in the formula, as in R.
    with pytest.raises(TypeError):
        parse_lme4("y ~ x * s + (1 | g)", reml=False, factors={"s": 1})  # type: ignore[call-arg]


def test_lme4_equal_formulas_compare_equal() -> None:
    # Two spellings of one model give equal specs; the source text is kept but not compared.
    a, b = parse_lme4("y ~ x*z + (1|g)"), parse_lme4("y ~ 1 + x + z + x:z + (1 | g)")
    assert a == b
    assert a._source == "y ~ x*z + (1|g)"
    assert parse_lme4("y ~ x + (1|g)") != parse_lme4("y ~ z + (1|g)")


def test_relevel_with_a_number_means_that_level_position() -> None:
    # R: levels(relevel(factor(c(0, 1, 2, 3)), ref = 2)) is "1" "0" "2" "3": the 2nd level is the
    # reference, so model.matrix has no column for it (checked against lFormula in
    # test_lme4_design_columns_are_r_s as well).
    from hlmbridge.design.build import build_design

    d = build_design(parse_lme4("y ~ relevel(factor(s), ref = 2) + (1|g)"), _design_data())
    assert d.fixed_lme4 == ("(Intercept)", "relevel(factor(s), ref = 2)0", "relevel(factor(s), ref = 2)2",
                            "relevel(factor(s), ref = 2)3")


# ------------------------------------------------------------------------------ parse_any


def test_parse_any_stata_default_is_ml() -> None:
    assert parse_any(". qui mixed y x || g:").method == "ml"


def test_parse_any_stata_with_reml_request() -> None:
    spec = parse_any("mixed y x || g:", reml=True)
    assert spec.method == "reml"
    assert spec == parse_stata("mixed y x || g:, reml")


def test_parse_any_stata_conflicting_method() -> None:
    with pytest.raises(SpecError, match="drop one of them"):
        parse_any("mixed y x || g:, mle", reml=True)
    with pytest.raises(SpecError, match="drop one of them"):
        parse_any("mixed y x || g:, reml", reml=False)
    assert parse_any("mixed y x || g:, reml", reml=True).method == "reml"


def test_parse_any_lme4() -> None:
    assert parse_any("y ~ x + (1 | g)").method == "reml"
    assert parse_any("y ~ x + (1 | g)", reml=False).method == "ml"


def test_parse_any_other_stata_command_with_bars() -> None:
    with pytest.raises(SpecError, match="this is not a mixed command: 'meologit'"):
        parse_any("meologit y x || g:")


@pytest.mark.parametrize("text", ["", "   ", "hello world", "regress y x"])
def test_parse_any_neither(text: str) -> None:
    with pytest.raises(SpecError):
        parse_any(text)


def test_parse_any_rejects_non_string() -> None:
    with pytest.raises(SpecError):
        parse_any(None)  # type: ignore[arg-type]


def test_modelspec_lazy_methods_use_these_parsers() -> None:
    assert ModelSpec.from_stata("mixed y x || g:") == parse_stata("mixed y x || g:")
    assert ModelSpec.from_lme4("y ~ x + (1|g)", reml=False) == parse_lme4("y ~ x + (1|g)", reml=False)
    assert ModelSpec.parse("y ~ x + (1|g)").method == "reml"
