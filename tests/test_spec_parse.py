"""Parsing Stata ``mixed`` commands and lme4 formulas into ModelSpec (no R needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hlmbridge.errors import SpecError
from hlmbridge.spec.model import ModelSpec
from hlmbridge.spec.translate import parse_any
from hlmbridge.spec.parse_lme4 import parse_lme4
from hlmbridge.spec.parse_stata import parse_stata, parse_stata_method
from tests.spec_cases import (
    BAD_LME4,
    BAD_STATA,
    LME4_CASES,
    SEED_COMMANDS,
    SEED_FILE,
    SEED_SPECS,
    SEED_TYPO,
    STATA_CASES,
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


@pytest.mark.parametrize(("formula", "reml"), list(LME4_CASES), ids=[f"{f}|reml={r}" for f, r in LME4_CASES])
def test_lme4_construct(formula: str, reml: bool) -> None:
    assert parse_lme4(formula, reml=reml) == LME4_CASES[(formula, reml)]


@pytest.mark.parametrize(("formula", "needle", "at"), BAD_LME4, ids=[f or "<empty>" for f, _, _ in BAD_LME4])
def test_bad_lme4_formula(formula: str, needle: str, at: str | int | None) -> None:
    with pytest.raises(SpecError) as info:
        parse_lme4(formula)
    assert needle in str(info.value)
    _check_position(info.value, formula, at)


def test_lme4_default_method_is_reml() -> None:
    assert parse_lme4("y ~ x + (1 | g)").method == "reml"


def test_lme4_factor_declarations() -> None:
    spec = parse_lme4("y ~ x * s + (1 | g)", reml=False, factors={"s": 1})
    assert [t.stata_name for t in spec.fixed] == ["x", "ib1.s", "c.x#ib1.s"]


def test_lme4_star_expansion_drops_repeats_like_r() -> None:
    spec = parse_lme4("y ~ a*b + a*c + (1 | g)")
    assert [t.variables for t in spec.fixed] == [("a",), ("b",), ("a", "b"), ("c",), ("a", "c")]


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
    with pytest.raises(SpecError, match="this is not a mixed command: 'meglm'"):
        parse_any("meglm y x || g:")


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
