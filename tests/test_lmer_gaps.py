"""Formulas and arguments lmer accepts that hlmbridge refused or mishandled (issue 26).

Each test failed before its fix. R's side is real lmer run in R through rpy2
(``r/tests/differential_reference.R``'s ``diffref_lmer``: tight bobyqa, then a polishing run),
on R's own data frames; the bare-bar formulas (``y ~ 1 | g``) are also in the differential
corpus (``tests/formula_corpus.py``, tag ``bare-bar``).
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UsageError
from hlmbridge.engines import require_engine
from hlmbridge.engines.base import tuning_options

ENGINES = [pytest.param("lme4", marks=pytest.mark.requires_r), "statsmodels"]


@pytest.fixture(scope="module")
def ss() -> pd.DataFrame:
    return hlmbridge.datasets.sleepstudy()


# ---------------------------------------------------------------------------- 5. keywords
@pytest.mark.parametrize("engine", ["lme4", "statsmodels"])
def test_unknown_keyword_message_lists_every_keyword(ss, engine):
    """Before: the list left out weights=, subset=, offset=, na_action= and df_method=."""
    with pytest.raises(UsageError) as info:
        hlmbridge.fit("Reaction ~ Days + (1 | Subject)", ss, engine=engine, wieghts=ss["Days"] + 1)
    msg = str(info.value)
    assert "wieghts=" in msg
    own = [p.name for p in inspect.signature(hlmbridge.fit).parameters.values() if p.kind is p.KEYWORD_ONLY]
    every = own + ["REML", "weights", "subset", "offset", "na_action", "contrasts"] + \
        list(tuning_options(require_engine(engine)))
    listed = {x.strip() for x in msg.split("it takes: ")[1].rstrip(").").split(",")}
    missing = [name for name in every if f"{name}=" not in listed]
    assert not missing, (missing, msg)
    # ... and each of them really is accepted (an engine option with a value it takes).
    res = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", ss, engine=engine, weights=ss["Days"] + 1,
                        subset=ss["Days"] > 0, offset=ss["Days"] / 10, na_action="na.omit", REML=True,
                        df_method="residual")
    assert res.nobs == int((ss["Days"] > 0).sum())


# ---------------------------------------------------------------------------- R's side
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

#: Extra columns, made the same way in R and in pandas: a constant, a zero column, a logical
#: and a factor whose interaction has empty cells (Days < 5 holds Days %/% 3 in 0, 1 only).
R_EXTRA = "transform(lme4::sleepstudy, one = 1, z = 0, half = Days < 5, dd = factor(Days %/% 3))"


def _extra(ss: pd.DataFrame) -> pd.DataFrame:
    dd = pd.Categorical((ss["Days"] // 3).astype(int).astype(str), categories=["0", "1", "2", "3"])
    return ss.assign(one=1.0, z=0.0, half=ss["Days"] < 5, dd=dd)


@pytest.fixture(scope="module")
def r_lmer():
    """lmer in R on R's own sleepstudy (plus :data:`R_EXTRA`'s columns), through
    ``diffref_lmer`` (tight bobyqa, then a polishing run); also the names of the columns lme4
    drops as rank deficient (``attr(X, "col.dropped")`` of lFormula's X, lmer's default
    check.rankX)."""
    import rpy2.robjects as ro
    from r_reference import REFERENCE_FIT_SCRIPT

    env = ro.r("new.env(parent = globalenv())")
    ro.r["sys.source"](str(REFERENCE_FIT_SCRIPT), envir=env)
    ro.r["sys.source"](str(ROOT / "r" / "tests" / "differential_reference.R"), envir=env)
    frames = {"sleepstudy": ro.r(R_EXTRA), "Dyestuff": ro.r("lme4::Dyestuff")}
    fn = env["diffref_lmer"]
    dropped = ro.r("function(f, d) as.character(names(attr(lme4::lFormula(stats::as.formula(f), d)$X, "
                   "'col.dropped')))")

    def run(formula: str, reml: bool = True, data: str = "sleepstudy", subset: str | None = None) -> dict:
        out = fn(frames[data], formula, reml, ro.NULL, ro.NULL, ro.NULL if subset is None else subset, ro.NULL)
        names = list(out.names)
        assert "error" not in names, out
        got = {n: np.asarray(out[names.index(n)]) for n in ("loglik", "fixef", "se", "nobs", "vc_vcov")}
        got["fixef_names"] = [str(s) for s in out[names.index("fixef_names")]]
        got["warnings"] = [str(s) for s in out[names.index("warnings")]]
        got["dropped"] = [str(s) for s in dropped(formula, frames[data])]
        return got

    return run


def _assert_equals_lmer(res, ref: dict, engine: str) -> dict:
    """Compare a fit with lmer's; returns the measured differences."""
    assert list(res.fixed["term"]) == ref["fixef_names"]
    assert res.nobs == int(ref["nobs"][0])
    se = ref["se"]
    err = {"loglik": abs(res.loglik - float(ref["loglik"][0])) / abs(float(ref["loglik"][0])),
           "fixed_in_se": float(np.max(np.abs((res.fixed["estimate"].to_numpy() - ref["fixef"]) / se))),
           "se_rel": float(np.max(np.abs(res.fixed["std_error"].to_numpy() / se - 1)))}
    print(f"measured vs lmer ({engine}): " + ", ".join(f"{k} {v:.1e}" for k, v in err.items()))  # pytest -s
    tight = engine == "lme4"
    assert err["loglik"] <= (1e-8 if tight else 1e-6), err
    assert err["fixed_in_se"] <= (1e-6 if tight else 1e-3), err
    assert err["se_rel"] <= (1e-6 if tight else 1e-3), err
    return err


# ---------------------------------------------------------------------------- 4. rank deficiency
RANK_CASES = {
    # (formula, REML): a multiple of a column; a zero and a constant column next to the
    # intercept; the empty cells of a factor interaction.
    "multiple": ("Reaction ~ Days + I(2 * Days) + (Days | Subject)", True),
    "zero and constant": ("Reaction ~ z + Days + one + (1 | Subject)", False),
    "empty cells": ("Reaction ~ half * dd + (1 | Subject)", True),
}


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(RANK_CASES))
def test_rank_deficient_design_drops_what_lmer_drops(ss, r_lmer, engine, case):
    """Before: DataError ("... is collinear with ..."); lmer fits after dropping columns."""
    formula, reml = RANK_CASES[case]
    ref = r_lmer(formula, reml)
    assert ref["dropped"], "the case must be rank deficient in R"
    res = hlmbridge.fit(formula, _extra(ss), engine=engine, reml=reml)
    assert list(res.dropped_columns) == ref["dropped"]
    k = len(ref["dropped"])
    message = (f"fixed-effect model matrix is rank deficient so dropping {k} column{'s' if k > 1 else ''} / "
               f"coefficient{'s' if k > 1 else ''}")
    assert message in ref["warnings"]  # R's own words
    assert message in res.warnings
    _assert_equals_lmer(res, ref, engine)
    # the result keeps them through JSON, and predictions use the same columns
    back = type(res).from_dict(res.to_dict())
    assert back.dropped_columns == res.dropped_columns
    assert np.isfinite(res.predict(_extra(ss).head(5)).values).all()


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
def test_stata_command_omits_collinear_terms(ss, r_lmer, engine):
    """Stata omits a collinear variable ("note: one omitted because of collinearity"), keeping
    _cons and the earlier variables; lmer drops the same column. Before: DataError."""
    res = hlmbridge.fit("mixed Reaction one Days || Subject:", _extra(ss), engine=engine)
    assert res.dropped_stata_terms == ("one",) and res.dropped_columns == ("one",)
    assert "note: one omitted because of collinearity" in res.warnings
    assert list(res.fixed["stata_term"]) == ["Days", "_cons"]
    ref = r_lmer("Reaction ~ one + Days + (1 | Subject)", False)
    assert ref["dropped"] == ["one"]
    res_r_order = res.fixed.set_index("term").loc[ref["fixef_names"]]
    np.testing.assert_allclose((res_r_order["estimate"].to_numpy() - ref["fixef"]) / ref["se"], 0,
                               atol=1e-6 if engine == "lme4" else 1e-3)
    assert res.loglik == pytest.approx(float(ref["loglik"][0]), rel=1e-8 if engine == "lme4" else 1e-6)


# ---------------------------------------------------------------------------- 2. long sums
def _long_frame(p: int, n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).round(6)
    g = np.arange(n) % 20
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(p)])
    df["g"] = [f"g{k}" for k in g]
    df["y"] = (X[:, :5].sum(axis=1) + rng.normal(size=20)[g] + rng.normal(size=n)).round(6)
    return df


def _long_formula(p: int) -> str:
    # a repeated term and a removed one, as R's terms() handles them
    return "y ~ " + " + ".join(f"x{i}" for i in range(p)) + " + x1 - x3 + (1 | g)"


R_LABELS = """
function(s) attr(stats::terms(lme4::nobars(stats::as.formula(s))), "term.labels")
"""


def _depth(e) -> int:
    depth, stack = 0, [(e, 1)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        stack.extend((a, d + 1) for a in node.args)
    return depth


@pytest.mark.requires_r
def test_a_sum_of_5000_terms_reads_as_r_reads_it():
    """Before: RecursionError from ~330 terms on. R's terms() takes 5,000 terms."""
    import rpy2.robjects as ro
    from hlmbridge.spec.parse_lme4 import parse_lme4
    from hlmbridge.spec.rformula import parse_formula

    formula = _long_formula(5000)
    spec = parse_lme4(formula)
    # (the fixed part alone: lme4's nobars is quadratic in the length of a sum as written)
    labels = [str(s) for s in ro.r(R_LABELS)(formula.replace(" + (1 | g)", ""))]
    assert len(labels) == 4999
    assert spec.formula.fixed.labels == tuple(labels)
    # The formula hlmbridge hands to lmer reads back the same in R, and is shallow: lme4's
    # findbars recurses once per level of the call tree and, on this sum as written, stops
    # past ~640 terms (C stack usage too close to the limit; R embedded in Python can crash).
    sent = spec.formula.r_formula()
    assert [str(s) for s in ro.r(R_LABELS)(sent)] == labels
    assert _depth(parse_formula(formula).fixed.expr) > 5000
    assert _depth(parse_formula(sent).fixed.expr) < 40


@pytest.mark.requires_r
def test_a_2000_term_design_is_r_s():
    import rpy2.robjects as ro
    from hlmbridge.design.build import build_design
    from hlmbridge.spec.parse_lme4 import parse_lme4

    df = _long_frame(2000, 2100)
    formula = _long_formula(2000)
    design = build_design(parse_lme4(formula), df)
    assert design.dropped_lme4 == ()
    rdf = ro.DataFrame({c: ro.FloatVector(df[c].to_numpy()) if c != "g" else ro.StrVector(df[c].tolist())
                        for c in df.columns})
    # lme4's fixed-effects model matrix is model.matrix(nobars(formula)) (lFormula spends
    # minutes in findbars on 2,000 terms); the fixed part alone, as above.
    ref = ro.r("function(s, d) { X <- stats::model.matrix(stats::as.formula(s), d); "
               "list(names = colnames(X), sums = unname(colSums(X))) }")(formula.replace(" + (1 | g)", ""), rdf)
    assert list(design.fixed_lme4) == [str(s) for s in ref.rx2("names")]
    np.testing.assert_allclose(design.X.sum(axis=0), np.asarray(ref.rx2("sums")), rtol=1e-10, atol=1e-9)


R_FIT = """
function(s, path) {
  d <- utils::read.csv(path)
  fit <- lme4::lmer(stats::as.formula(s), d, REML = FALSE,
                    control = lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12),
                                                calc.derivs = FALSE))
  list(loglik = as.numeric(stats::logLik(fit)), fixef = unname(lme4::fixef(fit)),
       names = names(lme4::fixef(fit)), se = unname(sqrt(diag(as.matrix(stats::vcov(fit))))))
}
"""


@pytest.fixture(scope="module")
def long_model(tmp_path_factory):
    """A 500-term model, its data, and lmer's fit of it in R (from the same CSV)."""
    import rpy2.robjects as ro

    path = tmp_path_factory.mktemp("long") / "d.csv"
    df = _long_frame(500, 1000)
    df.to_csv(path, index=False)
    formula = _long_formula(500)
    return formula, df, ro.r(R_FIT)(formula, str(path))


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ["lme4", "statsmodels"])
def test_a_500_term_model_fits_as_lmer(long_model, engine):
    """Before: RecursionError (from ~490 terms on for this formula)."""
    formula, df, ref = long_model
    res = hlmbridge.fit(formula, df, engine=engine, reml=False)
    assert list(res.fixed["term"]) == [str(s) for s in ref.rx2("names")]
    se = np.asarray(ref.rx2("se"))
    err = {"loglik": abs(res.loglik / float(ref.rx2("loglik")[0]) - 1),
           "fixed_in_se": float(np.max(np.abs((res.fixed["estimate"].to_numpy() - np.asarray(ref.rx2("fixef"))) / se))),
           "se_rel": float(np.max(np.abs(res.fixed["std_error"].to_numpy() / se - 1)))}
    print(f"measured vs lmer ({engine}, 500 terms): " + ", ".join(f"{k} {v:.1e}" for k, v in err.items()))
    assert err["loglik"] < 1e-8 and err["fixed_in_se"] < 1e-5 and err["se_rel"] < 1e-5, err


# ---------------------------------------------------------------------------- 3. subset as R code
SUBSET_CASES = [
    # (lmer's arguments as R code, REML)
    ({"subset": "Days >= 2"}, True),
    ({"subset": "Subject != '308' & Days %in% c(1, 3, 5, 7, 9) | Days == 0"}, False),
    ({"subset": "!(Subject %in% c('309', '310')) & (Days - 4.5)^2 < 16"}, True),
    ({"subset": "is.na(Reaction_na) | Days > 7"}, True),  # a column with NAs
    ({"subset": "Reaction_na > 250"}, False),  # the condition is NA on some rows
    ({"subset": "log(Days + 1) > 1 & T", "weights": "1 / (Days + 1)", "offset": "Days / 10"}, True),
]


def _with_na(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out["Reaction_na"] = out["Reaction"].where(np.arange(len(out)) % 7 != 3)
    return out


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("args", "reml"), SUBSET_CASES, ids=[a["subset"] for a, _ in SUBSET_CASES])
def test_subset_written_as_r_code_is_evaluated_as_r_does(ss, r_lmer_na, engine, args, reml):
    """Before: UsageError ("subset= names a column that is not in the data")."""
    ref = r_lmer_na("Reaction ~ Days + (Days | Subject)", reml, **args)
    res = hlmbridge.fit("Reaction ~ Days + (Days | Subject)", _with_na(ss), engine=engine, reml=reml, **args)
    _assert_equals_lmer(res, ref, engine)


@pytest.fixture(scope="module")
def r_lmer_na():
    """diffref_lmer on R's sleepstudy with the same Reaction_na column as :func:`_with_na`."""
    import rpy2.robjects as ro
    from r_reference import REFERENCE_FIT_SCRIPT

    env = ro.r("new.env(parent = globalenv())")
    ro.r["sys.source"](str(REFERENCE_FIT_SCRIPT), envir=env)
    ro.r["sys.source"](str(ROOT / "r" / "tests" / "differential_reference.R"), envir=env)
    data = ro.r("transform(lme4::sleepstudy, "
                "Reaction_na = ifelse(seq_len(nrow(lme4::sleepstudy)) %% 7 == 4, NA, Reaction))")
    fn = env["diffref_lmer"]

    def run(formula: str, reml: bool, **args: str) -> dict:
        out = fn(data, formula, reml, *(args.get(k, ro.NULL) for k in ("weights", "offset", "subset", "na_action")))
        names = list(out.names)
        assert "error" not in names, out
        got = {n: np.asarray(out[names.index(n)]) for n in ("loglik", "fixef", "se", "nobs")}
        got["fixef_names"] = [str(s) for s in out[names.index("fixef_names")]]
        return got

    return run


def test_subset_na_fail_and_refusals(ss):
    df = _with_na(ss)
    with pytest.raises(hlmbridge.DataError, match="na.fail"):
        hlmbridge.fit("Reaction ~ Days + (1 | Subject)", df, engine="statsmodels", subset="Reaction_na > 250",
                      na_action="na.fail")
    refused = {
        "Days": "boolean mask",  # a numeric column: R would take its values as row numbers
        "Days + 1": "gives numbers",
        "nosuch > 1": "'nosuch' is not in the data",
        "Subject > '330'": "locale",
        "system('ls')": "unknown function system()",
        "Days <-1": "assignment",
        "__import__('os')": "backticks",
        "Days > 1 > 0": "chain comparisons",
        "Days > 1 && Days < 5": "single values",
    }
    for text, needle in refused.items():
        with pytest.raises(UsageError, match=needle) as info:
            hlmbridge.fit("Reaction ~ Days + (1 | Subject)", df, engine="statsmodels", subset=text)
        assert "\n" not in str(info.value)
