"""Rendering ModelSpec for lme4, statsmodels and Stata, and translating between syntaxes.

Round trips need no R. statsmodels is exercised for real (it is installed with the
package) to show the rendered arguments build the intended model; one test runs the
rendered R code through rpy2 and is marked ``requires_r``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hlmbridge.design.build import build_design
from hlmbridge.errors import SpecError, UnsupportedSpecError
from hlmbridge.spec.render import (
    ALL_GROUP,
    Lme4Model,
    level_paths,
    to_lme4,
    to_stata,
    to_statsmodels,
)
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var
from hlmbridge.spec.translate import parse_any, translate
from hlmbridge.spec.parse_lme4 import parse_lme4
from hlmbridge.spec.parse_stata import parse_stata
from tests.spec_cases import (
    LME4_READINGS,
    SEED_COMMANDS,
    SEED_SPECS,
    STATA_CASES,
    assert_lme4_rendering_is_the_model,
    assert_same_design,
    frame_for,
    r_codes_like_stata,
)

#: Stata-style specs (Stata's meaning): the seed's and the construct cases.
ALL_SPECS = list(SEED_SPECS.values()) + list(STATA_CASES.values())


def _lme4_expressible(spec: ModelSpec) -> bool:
    try:
        to_lme4(spec)
    except UnsupportedSpecError:
        return False
    return True


_STATA_SPEC_PARAMS = [pytest.param(s, id=str(i)) for i, s in enumerate(ALL_SPECS)]

# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("line", "command"), SEED_COMMANDS, ids=[f"L{n}" for n, _ in SEED_COMMANDS])
def test_seed_round_trips(line: int, command: str) -> None:
    spec = parse_stata(command)
    assert parse_stata(to_stata(spec)) == spec
    assert_lme4_rendering_is_the_model(spec, frame_for(spec))
    assert _lme4_expressible(spec)
    sm = to_statsmodels(spec)
    assert sm.groups == "id"
    assert sm.fit_kwargs == {"reml": False}


@pytest.mark.parametrize("spec", ALL_SPECS, ids=[repr(i) for i in range(len(ALL_SPECS))])
def test_stata_round_trip(spec: ModelSpec) -> None:
    command = to_stata(spec)
    assert parse_stata(command) == spec
    assert parse_any(command) == spec


@pytest.mark.parametrize("spec", _STATA_SPEC_PARAMS)
def test_lme4_rendering_of_stata_spec_is_the_same_model(spec: ModelSpec) -> None:
    if not r_codes_like_stata(spec):
        # A factor whose margin is missing (c.x#i.a without x, a#b alone, no constant): R would
        # code it by one column per level, a different model; to_lme4 refuses.
        with pytest.raises(UnsupportedSpecError, match="one column per level"):
            to_lme4(spec)
        return
    assert_lme4_rendering_is_the_model(spec, frame_for(spec))


def _rendering_changes_labels(formula: str) -> bool:
    r = LME4_READINGS[formula]
    return parse_lme4(to_lme4(parse_lme4(formula)).formula).formula.fixed.labels != r.labels


_FORMULA_PARAMS = list(LME4_READINGS)


@pytest.mark.parametrize("formula", _FORMULA_PARAMS)
def test_lme4_rendering_of_formula_spec_keeps_r_s_reading(formula: str) -> None:
    for reml in (True, False):
        spec = parse_lme4(formula, reml=reml)
        m = to_lme4(spec)
        assert m.reml is reml and m.factors == () and m.explicit_formula == m.formula
        back = parse_lme4(m.formula, reml=reml)
        r = LME4_READINGS[formula]
        f = back.formula
        assert f is not None
        assert (f.response.deparse(), f.fixed.labels, f.fixed.intercept) == (r.response, r.labels, r.intercept)
        assert tuple(f"offset({o.deparse()})" for o in f.fixed.offsets) == r.offsets
        assert tuple((b.label, b.lhs.labels, b.lhs.intercept) for b in f.random) == r.bars


def _formula_data() -> pd.DataFrame:
    """Columns for the formulas of LME4_READINGS: integer codes where Stata may read a factor."""
    rng = np.random.default_rng(7)
    n = 144
    i = np.arange(n)
    numbers = {c: rng.uniform(0.5, 3, n) for c in ("y", "yy", "x", "w", "if", "my var")}
    codes = {"z": rng.integers(1, 7, n), "s": i % 4, "t": (i // 4) % 3, "a": i % 3, "b": (i // 3) % 3, "c": (i // 9) % 2, "n": i % 5 + 1,
             "g": i // 12, "h": i % 2, "grp": i // 8}
    return pd.DataFrame({**numbers, **codes})


_THROUGH_STATA_PARAMS = list(LME4_READINGS)


@pytest.mark.parametrize("formula", _THROUGH_STATA_PARAMS)
def test_lme4_formula_spec_through_stata_is_the_same_model(formula: str) -> None:
    spec = parse_lme4(formula)
    try:
        command = to_stata(spec)
    except UnsupportedSpecError as e:
        assert e.engine == "Stata" and e.construct
        return
    assert command.endswith("reml")
    back = parse_stata(command)
    assert back.method == "reml"
    data = _formula_data()
    assert_same_design(build_design(spec, data), build_design(back, data))


@pytest.mark.parametrize(
    ("formula", "command"),
    [
        ("y ~ x + (1|g)", "mixed y x || g:, reml"),
        ("y ~ x*factor(s) + (x|g)", "mixed y x i.s c.x#i.s || g: x, cov(unstructured) reml"),
        ("y ~ 0 + x + (x||g)", "mixed y x, noconstant || g: x, reml"),
        ("y ~ x + (1|a/b)", "mixed y x || a: || b:, reml"),
        ("y ~ a*b + (1|g)", "mixed y a b c.a#c.b || g:, reml"),
    ],
)
def test_lme4_formula_spec_as_stata_command(formula: str, command: str) -> None:
    assert to_stata(parse_lme4(formula)) == command


@pytest.mark.parametrize(
    ("formula", "construct"),
    [
        ("y ~ log(x) + (1|g)", "the formula term log(x)"),
        ("y ~ offset(z) + x + (1|g)", "offset()"),
        ("log(y) ~ x + (1|g)", "the response log(y)"),
        ("y ~ 0 + factor(s) + (1|g)", "indicator coding of factor(s) in factor(s)"),
        ("y ~ x:factor(s) + (1|g)", "indicator coding of factor(s) in x:factor(s)"),
        ("y ~ x + (x:z|g)", "an interaction as a random slope"),
        ("y ~ x + (1 + x|g) + (0 + z|g)", "a block-diagonal covariance for g"),
    ],
)
def test_lme4_formula_spec_without_stata_form(formula: str, construct: str) -> None:
    with pytest.raises(UnsupportedSpecError) as info:
        to_stata(parse_lme4(formula))
    assert info.value.engine == "Stata"
    assert info.value.construct == construct
    with pytest.raises(UnsupportedSpecError) as info:
        to_statsmodels(parse_lme4(formula))
    assert info.value.engine == "statsmodels"


# ------------------------------------------------------------------- lme4 rendering


@pytest.mark.parametrize(
    ("text", "formula", "factors"),
    [
        (
            "mixed mathach c.ses##i.sector || id: ses, cov(unstr)",
            "mathach ~ 1 + ses + sector + ses:sector + (1 + ses | id)",
            (("sector", None),),
        ),
        (
            "mixed mathach c.ses##ib1.sector || id: ses, cov(unstr)",
            "mathach ~ 1 + ses + sector + ses:sector + (1 + ses | id)",
            (("sector", 1),),
        ),
        ("mixed mathach || id:", "mathach ~ 1 + (1 | id)", ()),
        ("mixed y x, nocons || id: x", "y ~ 0 + x + (1 | id) + (0 + x | id)", ()),
        ("mixed y x || id: x, nocons", "y ~ 1 + x + (0 + x | id)", ()),
        ("mixed y x || id: x z, nocons cov(un)", "y ~ 1 + x + (0 + x + z | id)", ()),
        ("mixed y x || id: x, cov(id)", None, ()),
        ("mixed y x || school: || class:", "y ~ 1 + x + (1 | school) + (1 | school:class)", ()),
        ("mixed y x || _all: R.a || b:", "y ~ 1 + x + (1 | a) + (1 | b)", ()),
        ("mixed y x || _all: R.a || b: || c:", "y ~ 1 + x + (1 | a) + (1 | b) + (1 | b:c)", ()),
        ("mixed y c.x#i.f || g:", "refused", ()),
    ],
)
def test_lme4_formula(text: str, formula: str | None, factors: tuple) -> None:
    spec = parse_stata(text)
    if formula == "refused":
        # c.x#i.f without x: R codes f by one column per level there (R: colnames(model.matrix(
        # ~ x:factor(f))) has every level), Stata omits the base: no lme4 formula means it.
        with pytest.raises(UnsupportedSpecError, match="one column per level"):
            to_lme4(spec)
        return
    if formula is None:
        with pytest.raises(UnsupportedSpecError) as info:
            to_lme4(spec)
        assert info.value.engine == "lme4"
        assert info.value.construct == "covariance(identity) at level 'id'"
    else:
        m = to_lme4(spec)
        assert m.formula == formula
        assert m.factors == factors
        assert m.reml is False


def test_lme4_exchangeable_is_refused_with_construct() -> None:
    spec = parse_stata("mixed y x || id: x, cov(exch)")
    with pytest.raises(UnsupportedSpecError) as info:
        to_lme4(spec)
    assert info.value.construct == "covariance(exchangeable) at level 'id'"
    assert info.value.engine == "lme4"
    assert isinstance(info.value, SpecError)


def test_lme4_factor_and_number_in_one_column_is_refused() -> None:
    spec = parse_stata("mixed y x i.x#c.z || g:")
    with pytest.raises(UnsupportedSpecError, match="coded two ways"):
        to_lme4(spec)


def test_lme4_r_code_text() -> None:
    m = to_lme4(parse_stata("mixed mathach c.ses##ib1.sector || id: ses, cov(unstr) reml"))
    code = m.r_code("hsb")
    assert code.splitlines() == [
        'hsb$sector <- relevel(factor(hsb$sector), ref = "1")',
        "fit <- lme4::lmer(mathach ~ 1 + ses + sector + ses:sector + (1 + ses | id), data = hsb, REML = TRUE)",
    ]


def test_lme4_quotes_names_r_reserves() -> None:
    spec = ModelSpec("y", (Term((Var("if"),)),), (RandomLevel("g"),))
    m = to_lme4(spec)
    assert m.formula == "y ~ 1 + `if` + (1 | g)"
    assert parse_lme4(m.formula, reml=m.reml).formula.fixed.labels == ("`if`",)  # R: term.labels "`if`"
    assert_same_design(build_design(spec, frame_for(spec)), build_design(parse_lme4(m.formula), frame_for(spec)))


def test_level_paths() -> None:
    spec = parse_stata("mixed y || _all: R.a || b: || c:")
    assert level_paths(spec) == (("a",), ("b",), ("b", "c"))


# ------------------------------------------------------------ statsmodels rendering


@pytest.mark.parametrize(
    ("text", "formula", "groups", "re_formula", "vc"),
    [
        ("mixed mathach || id:", "mathach ~ 1", "id", "1", {}),
        (
            "mixed mathach c.ses##i.sector || id: ses, cov(unstr)",
            "mathach ~ 1 + ses + C(sector) + ses:C(sector)",
            "id",
            "1 + ses",
            {},
        ),
        (
            "mixed mathach c.ses##ib1.sector || id: ses, cov(unstr)",
            "mathach ~ 1 + ses + C(sector, Treatment(1)) + ses:C(sector, Treatment(1))",
            "id",
            "1 + ses",
            {},
        ),
        ("mixed y x || id: x", "y ~ 1 + x", "id", "1", {"x": "0 + x"}),
        ("mixed y x || id: x z, nocons", "y ~ 1 + x", "id", "0", {"x": "0 + x", "z": "0 + z"}),
        ("mixed y x || id: x, nocons", "y ~ 1 + x", "id", "0 + x", {}),
        ("mixed y x, nocons || id:", "y ~ 0 + x", "id", "1", {}),
        ("mixed y x || school: || room:", "y ~ 1 + x", "school", "1", {"room": "0 + C(room)"}),
        (
            "mixed y x || school: x, cov(un) || room: x || pupil:",
            "y ~ 1 + x",
            "school",
            "1 + x",
            {"room": "0 + C(room)", "room:x": "0 + C(room):x", "pupil": "0 + C(room):C(pupil)"},
        ),
        ("mixed y x || _all: R.a || b:", "y ~ 1 + x", ALL_GROUP, "0", {"a": "0 + C(a)", "b": "0 + C(b)"}),
        (
            "mixed y x || _all: R.a || b: x || c:",
            "y ~ 1 + x",
            ALL_GROUP,
            "0",
            {"a": "0 + C(a)", "b": "0 + C(b)", "b:x": "0 + C(b):x", "c": "0 + C(b):C(c)"},
        ),
        ("mixed y x || g: || class:", "y ~ 1 + x", "g", "1", {"class": "0 + C(Q('class'))"}),
    ],
)
def test_statsmodels_arguments(text: str, formula: str, groups: str, re_formula: str, vc: dict) -> None:
    m = to_statsmodels(parse_stata(text))
    assert m.formula == formula
    assert m.groups == groups
    assert m.re_formula == re_formula
    assert dict(m.vc_formula) == vc
    assert m.all_group is (groups == ALL_GROUP)
    assert dict(m.fit_kwargs) == {"reml": False}


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("mixed y x || school: || room: x, cov(un)", "covariance(unstructured) at nested level 'room'"),
        ("mixed y x || _all: R.a || b: x, cov(un)", "covariance(unstructured) at crossed level 'b'"),
        ("mixed y x || g: x, cov(exch)", "covariance(exchangeable) at level 'g'"),
        ("mixed y x || g: x, cov(identity)", "covariance(identity) at level 'g'"),
        ("mixed y x || g: || h: x z, cov(id)", "covariance(identity) at level 'h'"),
    ],
)
def test_statsmodels_unsupported(text: str, construct: str) -> None:
    with pytest.raises(UnsupportedSpecError) as info:
        to_statsmodels(parse_stata(text))
    assert info.value.engine == "statsmodels"
    assert info.value.construct == construct


def test_statsmodels_model_is_immutable() -> None:
    m = to_statsmodels(parse_stata("mixed y x || id: x"))
    with pytest.raises(TypeError):
        m.vc_formula["z"] = "0 + z"  # type: ignore[index]
    with pytest.raises(AttributeError):
        m.groups = "other"  # type: ignore[misc]


def _synthetic(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_groups, per = 30, 12
    g = np.repeat(np.arange(n_groups), per)
    room = np.tile(np.arange(3), n_groups * per // 3)
    x = rng.normal(size=g.size)
    s = rng.integers(0, 2, size=g.size)
    u0 = rng.normal(size=n_groups)
    u1 = 0.5 * rng.normal(size=n_groups)
    y = 1 + x + 0.5 * s + u0[g] + u1[g] * x + 0.3 * rng.normal(size=(n_groups, 3))[g, room] + rng.normal(size=g.size)
    b = rng.integers(0, 8, size=g.size)
    return pd.DataFrame({"y": y, "x": x, "s": s, "g": g, "room": room, "a": g, "b": b})


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("mixed y c.x##i.s || g: x, cov(un)", ["Intercept", "C(s)[T.1]", "x", "x:C(s)[T.1]", "g Var", "g x x Cov", "x Var"]),
        ("mixed y x || g: x", ["Intercept", "x", "g Var", "x Var"]),
        ("mixed y x || g: || room:", ["Intercept", "x", "g Var", "room Var"]),
        ("mixed y x || _all: R.a || b:", ["Intercept", "x", "a Var", "b Var"]),
    ],
)
def test_statsmodels_builds_the_intended_model(text: str, params: list[str]) -> None:
    smf = pytest.importorskip("statsmodels.formula.api")
    m = to_statsmodels(parse_stata(text))
    data = _synthetic()
    if m.all_group:
        data = data.assign(**{m.groups: 1})
    model = smf.mixedlm(
        m.formula, data, groups=m.groups, re_formula=m.re_formula, vc_formula=dict(m.vc_formula) or None
    )
    assert sorted(model.data.param_names) == sorted(params)


def test_statsmodels_python_code_runs() -> None:
    pytest.importorskip("statsmodels")
    m = to_statsmodels(parse_stata("mixed y x || g: || room:"))
    scope: dict = {"df": _synthetic()}
    exec(m.python_code("df"), scope)  # noqa: S102 - the code under test
    result = scope["result"]
    assert np.isfinite(result.llf)
    assert "room Var" in result.params.index


def test_statsmodels_python_code_adds_all_group() -> None:
    pytest.importorskip("statsmodels")
    m = to_statsmodels(parse_stata("mixed y x || _all: R.a || b:"))
    code = m.python_code("frame")
    assert "frame = frame.assign(_all=1)" in code
    scope: dict = {"frame": _synthetic()}
    exec(code, scope)  # noqa: S102 - the code under test
    assert np.isfinite(scope["result"].llf)


# ------------------------------------------------------------------ Stata rendering


@pytest.mark.parametrize(
    ("spec_text", "command"),
    [
        ("mixed mathach ses || id: ses, cov(unstructured)", "mixed mathach ses || id: ses, cov(unstructured)"),
        ("mixed mathach ses || id:", "mixed mathach ses || id:"),
        ("mixed y x || id: x", "mixed y x || id: x"),
        ("mixed y x || id: x, cov(ind)", "mixed y x || id: x"),
        ("mixed y x || id:, cov(un)", "mixed y x || id:"),
        ("mixed y x || id: x, cov(exch) nocons", "mixed y x || id: x, noconstant"),
        ("mixed y x || id: x z, cov(exch) nocons", "mixed y x || id: x z, noconstant cov(exchangeable)"),
        ("mixed y x, nocons reml || id:", "mixed y x, noconstant || id:, reml"),
        ("mixed y c.x##ib2.s || a: || b:", "mixed y x ib2.s c.x#ib2.s || a: || b:"),
        ("y ~ x + (1 | a) + (1 | b)", "mixed y x || _all: R.a || b:, reml"),
        ("y ~ x + (1 | a) + (1 | b) + (1 | c)", "mixed y x || _all: R.a || _all: R.b || c:, reml"),
        ("y ~ (x | school/class)", "mixed y || school: x, cov(unstructured) || class: x, cov(unstructured) reml"),
    ],
)
def test_stata_command(spec_text: str, command: str) -> None:
    assert to_stata(parse_any(spec_text)) == command


@pytest.mark.parametrize(
    "spec",
    [
        # crossed level before the last crossed one has a slope
        ModelSpec("y", (), (RandomLevel("a", ("x",)), RandomLevel("b", nested=False))),
        # nested level sandwiched between crossed ones
        ModelSpec("y", (), (RandomLevel("a"), RandomLevel("b"), RandomLevel("c", nested=False))),
        # a name Stata cannot hold
        ModelSpec("y", (Term((Var("x.1"),)),), (RandomLevel("g"),)),
        ModelSpec("y", (Term((Var("in"),)),), (RandomLevel("g"),)),
    ],
)
def test_stata_unsupported(spec: ModelSpec) -> None:
    with pytest.raises(UnsupportedSpecError) as info:
        to_stata(spec)
    assert info.value.engine == "Stata"


# ------------------------------------------------------------------------ translate


def test_translate_shows_every_form() -> None:
    out = translate(". mixed mathach c.ses##i.sector || id: ses, cov(unstr)")
    assert "method:       ML (maximum likelihood)" in out
    assert "Stata:        mixed mathach ses i.sector c.ses#i.sector || id: ses, cov(unstructured)" in out
    assert "mathach ~ 1 + ses + sector + ses:sector + (1 + ses | id)" in out
    assert "data$sector <- factor(data$sector)" in out
    assert "mathach ~ 1 + ses + C(sector) + ses:C(sector)" in out
    assert "not expressible" not in out


def test_translate_lme4_input_is_reml() -> None:
    out = translate("y ~ x + (x | g)")
    assert "method:       REML" in out
    assert "Stata:        mixed y x || g: x, cov(unstructured) reml" in out
    assert "REML = TRUE" in out
    assert "reml=True" in out


def test_translate_says_what_an_engine_cannot_express() -> None:
    out = translate("mixed y x || g: x z, cov(exch)")
    lines = {ln.split(":", 1)[0]: ln for ln in out.splitlines() if not ln.startswith(" ")}
    assert "not expressible" in lines["lme4"] and "exchangeable" in lines["lme4"]
    assert "not expressible" in lines["statsmodels"] and "exchangeable" in lines["statsmodels"]
    assert "cov(exchangeable)" in lines["Stata"]


def test_translate_reml_request() -> None:
    assert "method:       REML" in translate("mixed y x || g:", reml=True)
    with pytest.raises(SpecError):
        translate("mixed y x || g:, mle", reml=True)


def test_translate_bad_input_is_spec_error() -> None:
    with pytest.raises(SpecError, match="not a mixed command"):
        translate(". qui mathach ses || id: ses, cov(unstructured)")


# ------------------------------------------------------------------------ lme4 in R


@pytest.mark.requires_r
def test_model5_r_code_runs_in_r() -> None:
    ro = pytest.importorskip("rpy2.robjects")
    from rpy2.robjects import pandas2ri
    from rpy2.robjects.conversion import localconverter

    m: Lme4Model = to_lme4(parse_stata(". mixed mathach c.ses##ib1.sector || id: ses, cov(unstr)"))
    rng = np.random.default_rng(5)
    n_groups, per = 40, 15
    gid = np.repeat(np.arange(n_groups), per)
    sector = np.repeat(rng.integers(0, 2, size=n_groups), per).astype(float)
    ses = rng.normal(size=gid.size)
    u0 = rng.normal(size=n_groups)
    mathach = 12 + 2 * ses + 2 * sector - 1.3 * ses * sector + u0[gid] + rng.normal(size=gid.size) * 3
    frame = pd.DataFrame({"mathach": mathach, "ses": ses, "sector": sector, "id": gid.astype(str)})
    env = ro.r("new.env()")
    with localconverter(ro.default_converter + pandas2ri.converter) as cv:
        env["data"] = cv.py2rpy(frame)
    code = m.r_code("data") + "\nnames(lme4::fixef(fit))"
    names = list(ro.r["eval"](ro.r["parse"](text=code), env))
    assert names == ["(Intercept)", "ses", "sector0", "ses:sector0"]
