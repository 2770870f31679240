"""Property-based tests: random specs survive rendering and re-parsing with the same meaning
(Stata's for a Stata command, R's for an lme4 formula, compared as designs on data); junk input
only ever raises SpecError."""

from __future__ import annotations

import keyword

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from hlmbridge.design.build import build_design
from hlmbridge.errors import HlmbridgeError, SpecError, UnsupportedSpecError
from hlmbridge.spec.render import to_lme4, to_stata, to_statsmodels
from hlmbridge.spec.model import COV_STRUCTURES, ModelSpec, RandomLevel, Term, Var
from hlmbridge.spec.translate import parse_any, translate
from hlmbridge.spec.parse_lme4 import R_RESERVED, parse_lme4
from hlmbridge.spec.parse_stata import STATA_RESERVED, parse_stata
from tests.spec_cases import (
    SEED_COMMANDS,
    SEED_TYPO,
    STATA_CASES,
    assert_lme4_rendering_is_the_model,
    assert_same_design,
    frame_for,
    r_codes_like_stata,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_RESERVED = STATA_RESERVED | R_RESERVED | set(keyword.kwlist) | {"all"}
names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(lambda n: n not in _RESERVED)


@st.composite
def specs(draw: st.DrawFn) -> ModelSpec:
    pool = draw(st.lists(names, min_size=3, max_size=10, unique=True))
    response, rest = pool[0], pool[1:]
    n_groups = draw(st.integers(1, min(3, len(rest) - 1)))
    groups, covariates = rest[:n_groups], rest[n_groups:]
    # one coding per column (what a data frame can hold): number, factor, factor with base
    coding = {
        v: draw(st.sampled_from([(False, None), (True, None), (True, 0), (True, 1), (True, 3)]))
        for v in covariates
    }
    numeric = [v for v in covariates if not coding[v][0]]
    fixed: list[Term] = []
    seen: set[tuple[str, ...]] = set()
    for combo in draw(st.lists(st.lists(st.sampled_from(covariates), min_size=1, max_size=3, unique=True), max_size=5)):
        key = tuple(sorted(combo))
        if key in seen:
            continue
        seen.add(key)
        fixed.append(Term(tuple(Var(v, factor=coding[v][0], base=coding[v][1]) for v in combo)))
    levels = []
    for i, g in enumerate(groups):
        slopes = tuple(draw(st.lists(st.sampled_from(numeric), max_size=3, unique=True))) if numeric else ()
        intercept = draw(st.booleans()) if slopes else True
        cov = draw(st.sampled_from((None, *COV_STRUCTURES)))
        nested = draw(st.booleans()) if i > 0 else True
        levels.append(RandomLevel(g, slopes=slopes, intercept=intercept, cov=cov, nested=nested))  # type: ignore[arg-type]
    constant = draw(st.booleans()) if fixed else True
    method = draw(st.sampled_from(("ml", "reml")))
    return ModelSpec(response, tuple(fixed), tuple(levels), constant, method)  # type: ignore[arg-type]


def _crossed_form_ok(spec: ModelSpec) -> bool:
    """Whether Stata's ``|| _all: R.a || b:`` form can write the spec's crossed levels."""
    crossed = [i for i, lv in enumerate(spec.levels) if i > 0 and not lv.nested]
    k = crossed[-1] if crossed else 0
    return all(
        not spec.levels[i].slopes and spec.levels[i].intercept and (i == 0 or not spec.levels[i].nested)
        for i in range(k)
    )


@SETTINGS
@given(specs())
def test_stata_round_trip(spec: ModelSpec) -> None:
    if _crossed_form_ok(spec):
        command = to_stata(spec)
        assert parse_stata(command) == spec
        assert parse_any(command) == spec
    else:
        with pytest.raises(UnsupportedSpecError) as info:
            to_stata(spec)
        assert info.value.engine == "Stata"


def _lme4_ok(spec: ModelSpec) -> bool:
    return r_codes_like_stata(spec) and all(
        lv.n_terms == 1 or lv.cov in ("independent", "unstructured") for lv in spec.levels)


DESIGN_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@DESIGN_SETTINGS
@given(specs(), st.integers(0, 3))
def test_lme4_rendering_is_the_same_model(spec: ModelSpec, seed: int) -> None:
    # A Stata spec rendered for lme4 means, in R, the design the spec has in Stata; a
    # covariance lmer lacks, or a factor R would code by indicators, is refused.
    if _lme4_ok(spec):
        assert_lme4_rendering_is_the_model(spec, frame_for(spec, seed=seed))
    else:
        with pytest.raises(UnsupportedSpecError) as info:
            to_lme4(spec)
        assert info.value.engine == "lme4"


@st.composite
def formulas(draw: st.DrawFn) -> str:
    """A random lme4 formula over numbers (x, z, w), integer codes used as factor() (a, b), groups g, h."""
    numeric = ["x", "z", "w"]
    factors = ["factor(a)", "factor(b)"]
    atoms = st.sampled_from(numeric + factors)
    terms = draw(st.lists(st.lists(atoms, min_size=1, max_size=3, unique=True), max_size=4))
    ops = [draw(st.sampled_from((":", "*"))) for _ in terms]
    fixed = [op.join(t) for t, op in zip(terms, ops)]
    if draw(st.booleans()) or not fixed:
        fixed.insert(0, draw(st.sampled_from(("1", "0", "-1"))) if fixed else "1")
    bars = []
    for group in draw(st.lists(st.sampled_from(("g", "h", "g/h", "g:h")), min_size=1, max_size=2, unique=True)):
        slopes = draw(st.lists(st.sampled_from(numeric), max_size=2, unique=True))
        lhs = draw(st.sampled_from(("1", "0"))) if slopes else "1"
        bar = draw(st.sampled_from(("|", "||")))
        bars.append(f"({' + '.join([lhs] + slopes)} {bar} {group})")
    return "y ~ " + " + ".join(fixed + bars)


def _formula_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 160
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(size=n), "w": rng.normal(size=n),
        "a": rng.permutation(np.arange(n) % 3), "b": rng.permutation(np.arange(n) % 4),
        "g": rng.integers(0, 6, n), "h": rng.integers(0, 4, n),
    })


@DESIGN_SETTINGS
@given(formulas(), st.booleans(), st.integers(0, 3))
@example("y ~ 1 + (0 + x | g) + (1 | g/h)", False, 0)  # one factor's terms in another order
def test_lme4_formula_through_stata_is_the_same_model(formula: str, reml: bool, seed: int) -> None:
    # An lme4-formula spec with a Stata form means the same model as that Stata command.
    spec = parse_lme4(formula, reml=reml)
    try:
        command = to_stata(spec)
    except UnsupportedSpecError as e:
        assert e.engine == "Stata" and e.construct
        return
    back = parse_stata(command)
    assert back.method == spec.method
    data = _formula_frame(seed)
    try:
        ours = build_design(spec, data)
    except HlmbridgeError as e:  # e.g. collinear columns: the Stata reading must refuse them too
        with pytest.raises(type(e)):
            build_design(back, data)
        return
    assert_same_design(ours, build_design(back, data))


@SETTINGS
@given(formulas())
def test_lme4_formula_reading_is_stable(formula: str) -> None:
    # Re-reading the formula R is handed keeps every term and random-effects term (as sets: the
    # order of the variables inside an interaction label is the known r_formula bug, see
    # test_spec_render.test_lme4_rendering_of_formula_spec_keeps_r_s_reading).
    f = parse_lme4(formula).formula
    back = parse_lme4(to_lme4(parse_lme4(formula)).formula).formula
    assert back.fixed.intercept == f.fixed.intercept
    assert {frozenset(t.split(":")) for t in back.fixed.labels} == {frozenset(t.split(":")) for t in f.fixed.labels}
    assert [(b.label, b.lhs.labels, b.lhs.intercept) for b in back.random] == [
        (b.label, b.lhs.labels, b.lhs.intercept) for b in f.random
    ]


def _statsmodels_ok(spec: ModelSpec) -> bool:
    crossed = any(not lv.nested for lv in spec.levels[1:])
    for i, lv in enumerate(spec.levels):
        if lv.n_terms > 1 and lv.cov in ("identity", "exchangeable"):
            return False
        if lv.n_terms > 1 and lv.cov == "unstructured" and (i > 0 or crossed):
            return False
    return True


@SETTINGS
@given(specs())
def test_statsmodels_renders_exactly_or_refuses(spec: ModelSpec) -> None:
    assume(not any(lv.group in {s for other in spec.levels for s in other.slopes} for lv in spec.levels))
    if _statsmodels_ok(spec):
        m = to_statsmodels(spec)
        assert m.fit_kwargs["reml"] == spec.reml
        n_vc_terms = len(m.vc_formula)
        re_terms = 0 if m.re_formula == "0" else len(m.re_formula.split(" + ")) - m.re_formula.startswith("0 + ")
        # every random term is in re_formula or is one variance component
        assert re_terms + n_vc_terms == sum(lv.n_terms for lv in spec.levels)
    else:
        with pytest.raises(UnsupportedSpecError) as info:
            to_statsmodels(spec)
        assert info.value.engine == "statsmodels"


@SETTINGS
@given(specs())
def test_translate_never_shows_a_different_model(spec: ModelSpec) -> None:
    assume(_crossed_form_ok(spec))
    out = translate(to_stata(spec))
    assert ("REML" in out.splitlines()[1]) == spec.reml
    assert ("lme4:         not expressible" in out) != _lme4_ok(spec)


# ----------------------------------------------------------------------------- fuzzing

SEEDS = [c for _, c in SEED_COMMANDS] + [SEED_TYPO[1]] + list(STATA_CASES)
LME4_SEEDS = [
    "mathach ~ 1 + ses + sector + ses:sector + (1 + ses | id)",
    "y ~ x*factor(z) + (x || g) + (1 | a/b)",
    'y ~ 0 + relevel(factor(s), ref = "2") + (1 | a) + (1 | b)',
    "log(y) ~ poly(x, 2) + I(x^2) + log(z, 2) + offset(w) + (a + b)^2 - a:b + (1 | g:h)",
    "y ~ scale(x, scale = FALSE) + relevel(factor(s), ref = 2) + (x * z || g) + (factor(s) | h)",
]
SYNTAX_CHARS = "()|:,#.~+-*/^ `\"'=[]0123456789abciRL_\n%"


@st.composite
def mutated(draw: st.DrawFn, base: list[str]) -> str:
    text = draw(st.sampled_from(base))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(("insert", "delete", "replace", "cut")))
        ch = draw(st.sampled_from(SYNTAX_CHARS))
        if op == "insert":
            text = text[:pos] + ch + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + 1 :]
        elif op == "replace":
            text = text[:pos] + ch + text[pos + 1 :]
        else:
            text = text[:pos]
    return text


def _only_spec_errors(func, text: str) -> None:  # type: ignore[no-untyped-def]
    try:
        func(text)
    except SpecError:
        pass


@SETTINGS
@given(mutated(SEEDS))
def test_mutated_stata_raises_only_spec_error(text: str) -> None:
    _only_spec_errors(parse_stata, text)
    _only_spec_errors(parse_any, text)
    _only_spec_errors(translate, text)


@SETTINGS
@given(mutated(LME4_SEEDS))
def test_mutated_lme4_raises_only_spec_error(text: str) -> None:
    _only_spec_errors(parse_lme4, text)
    _only_spec_errors(parse_any, text)
    _only_spec_errors(translate, text)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(SYNTAX_CHARS + "mxedyz"), max_size=40) | st.text(max_size=30))
def test_random_text_raises_only_spec_error(text: str) -> None:
    _only_spec_errors(parse_stata, text)
    _only_spec_errors(parse_lme4, text)
    _only_spec_errors(parse_any, text)
    _only_spec_errors(parse_stata, "mixed " + text)
    _only_spec_errors(parse_lme4, "y ~ " + text)


def test_parsed_errors_carry_position_when_from_text() -> None:
    # a sample of the fuzz space where the spot is known
    with pytest.raises(SpecError) as info:
        parse_stata("mixed y x || g: x, cov(unstr")
    assert info.value.position is not None
