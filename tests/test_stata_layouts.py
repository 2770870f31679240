"""Stata logs from Stata 13 to 18: both table layouts, continuation lines, the commands published logs use,
data preparation, and the import-stata -> validate round trip on real and own-made logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hlmbridge.errors import FixtureError, SpecError
from hlmbridge.reference.fixtures import import_stata, load_references
from hlmbridge.reference.stata_log import parse_log_text, to_ascii, to_unicode_layout

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "fixtures" / "stata" / "logs" / "000_b67aa17e87dadab7.txt"
OVERRIDES = ROOT / "fixtures" / "stata" / "seed_overrides.toml"
S18 = ROOT / "fixtures" / "stata18" / "logs" / "snijders_lang1_stata18.log"
S18_DATA = ROOT / "fixtures" / "stata18" / "snijders.dta"
S18_CASES = ROOT / "fixtures" / "stata18" / "cases"
EG = ROOT / "fixtures" / "egsingle"


def _import_text(tmp: Path, sub: str, name: str, text: str, **kw) -> dict[str, bytes]:
    d = tmp / sub
    d.mkdir()
    log = d / name
    log.write_text(text, encoding="utf-8")
    paths, _ = import_stata(log, d / "out", **kw)
    return {p.name: p.read_bytes() for p in paths}


# ---------------------------------------------------------------------------------------------
# 1. one reader for both layouts
def test_seed_in_the_unicode_layout_imports_to_identical_fixtures(tmp_path):
    text = SEED.read_text(encoding="utf-8")
    uni = to_unicode_layout(text)
    assert "│" in uni and "┼" in uni and "┬" in uni and "┴" in uni
    ascii_ = _import_text(tmp_path, "a", SEED.name, text, overrides=OVERRIDES)
    unicode_ = _import_text(tmp_path, "u", SEED.name, uni, overrides=OVERRIDES)
    assert len(ascii_) == 38
    assert unicode_ == ascii_


def test_stata18_log_in_the_ascii_layout_imports_to_identical_fixtures(tmp_path):
    text = S18.read_text(encoding="utf-8")
    ascii_text = "\n".join(to_ascii(t) for t in text.split("\n"))
    assert "│" in text and "│" not in ascii_text
    uni = _import_text(tmp_path, "u", S18.name, text)
    asc = _import_text(tmp_path, "a", S18.name, ascii_text)
    crlf = _import_text(tmp_path, "c", S18.name, text.replace("\n", "\r\n"))
    assert sorted(uni) == ["L0004_summarize.toml", "L0016_summarize.toml", "L0022_xtreg.toml", "L0054_di.toml",
                           "L0059_di.toml", "L0066_di.toml", "L0081_mixed.toml", "L0119_list.toml"]
    assert asc == uni == crlf


def test_layout_is_detected_and_named_in_errors():
    text = S18.read_text(encoding="utf-8")
    assert parse_log_text(text, name="s18").layout == "unicode"
    bad = text.replace("       _cons │   40.36409   .4263628", "       _cons │   40.36409   .42x3628")
    with pytest.raises(FixtureError) as e:
        parse_log_text(bad, name="s18")
    msg = str(e.value)
    assert e.value.line == 104 and "mixed block" in msg and "Unicode box-drawing" in msg


def test_stata_13_spellings_are_read_to_the_same_numbers():
    # Stata 13: Coef./Std. Err./[95% Conf. Interval], "Random-effects Parameters", "Std. Dev.",
    # "LR test vs. linear regression", "Obs per group: min =" on one line, estat ic's BIC note
    import re as _re

    text = SEED.read_text(encoding="utf-8")
    old = (text.replace("Coefficient  Std. err.", "      Coef.   Std. Err.").replace("conf. interval]", "Conf. Interval]")
           .replace("Random-effects parameters", "Random-effects Parameters").replace("Std. dev.", "Std. Dev.")
           .replace("LR test vs. linear model", "LR test vs. linear regression")
           .replace("Note: BIC uses N = number of observations. See [R] BIC note.",
                    "Note:  N=Obs used in calculating BIC; see [R] BIC note"))
    old = _re.sub(r"Obs per group:\n\n +min =", "Obs per group: min =", old)
    assert old.count("Obs per group: min =") == 8 and "Std. Dev." in old and "N=Obs used" in old
    new_log, old_log = parse_log_text(text, name="x"), parse_log_text(old, name="x")
    assert [(b.kind, [(c.path, c.printed) for c in b.cells]) for b in old_log.blocks] == [
        (b.kind, [(c.path, c.printed) for c in b.cells]) for b in new_log.blocks]


# ---------------------------------------------------------------------------------------------
# continuation lines and comments
_LOG_3LEVEL_HEAD = """. use egsingle, clear

. mixed math year ///
>     || schoolid: year, cov(un) ///  school level
>     || childid: year, cov(un) mle

"""


def test_a_continued_command_is_joined_before_it_is_parsed():
    log = parse_log_text(_LOG_3LEVEL_HEAD + ". estat recov // comment\n\nnot read\n", name="t", lenient=True)
    # no output under either command: both listed with their lines, the model under its joined command
    assert [p.line for p in log.problems] == [3, 9]
    assert "`mixed math year || schoolid: year, cov(un) || childid: year, cov(un) mle` at line 3" in str(
        log.problems[0])
    assert "estat_recov block of `estat recov`" in str(log.problems[1])
    text = (EG / "logs" / "egsingle_ascii.log").read_text(encoding="utf-8")
    full = parse_log_text(text, name="eg")
    m = next(b for b in full.blocks if b.kind == "mixed")
    assert m.command == "xtmixed math year || schoolid: year, cov(un) || childid:, mle"
    assert m.models[0].command == m.command


def test_a_continuation_that_cannot_be_joined_is_refused_never_shortened():
    text = ". use d, clear\n\n. mixed math year ///\n\n. estat ic\n"
    with pytest.raises(FixtureError) as e:
        parse_log_text(text, name="t")
    assert e.value.line == 3 and "cannot be joined" in str(e.value)
    log = parse_log_text(text, name="t", lenient=True)
    assert [p.line for p in log.problems][:1] == [3]
    assert not any(b.kind == "mixed" for b in log.blocks)
    assert all("mixed math year" != m.command for b in log.blocks for m in b.models)


def test_translate_refuses_a_trailing_continuation():
    from hlmbridge.spec.translate import parse_any

    with pytest.raises(SpecError, match="nothing follows it"):
        parse_any("mixed y x || g: ///")
    assert parse_any("mixed y x ///\n  || g:").levels[0].group == "g"


def test_valid_commands_are_not_checked_not_invalid():
    log = parse_log_text(S18.read_text(encoding="utf-8"), name="s18")
    assert log.invalid == ()
    seed = parse_log_text(SEED.read_text(encoding="utf-8"), name="seed")
    assert [i.line for i in seed.invalid] == [592]  # `qui mathach ...`: still not a command
    text = ". use d, clear\n\n. regress y x\n\n      Source |       SS\n"
    un = parse_log_text(text, name="t").unchecked
    assert [(u.line, u.reason.startswith("not checked")) for u in un] == [(3, True)]


# ---------------------------------------------------------------------------------------------
# 2. commands
def test_xtmixed_defaults_to_reml_and_xtreg_mle_is_the_ml_random_intercept_model():
    from hlmbridge.spec.parse_stata import parse_stata

    assert parse_stata("xtmixed y x || g:").method == "reml"
    assert parse_stata("xtmixed y x || g:, mle").method == "ml"
    assert parse_stata("mixed y x || g:").method == "ml"
    assert parse_stata("xtreg y x, i(g) mle") == parse_stata("mixed y x || g:, mle")


def test_dfmethod_is_kept_when_rendered_back_to_stata():
    from hlmbridge.spec.parse_stata import parse_stata

    cmd = "mixed y x || id:, reml dfmethod(satterthwaite, oim)"
    assert parse_stata(cmd).to_stata() == cmd


def test_three_level_blocks_are_keyed_by_level(tmp_path):
    log = parse_log_text((EG / "logs" / "egsingle_unicode.log").read_text(encoding="utf-8"), name="eg")
    m = next(b for b in log.blocks if b.kind == "mixed")
    keys = {c.path[:2] for c in m.cells}
    assert ("random", "schoolid:corr(year,_cons)") in keys and ("random", "childid:sd(_cons)") in keys
    assert ("groups", "childid") in keys and ("random", "sd(Residual)") in keys
    recov = next(b for b in log.blocks if b.kind == "estat_recov")
    assert {c.path[1] for c in recov.cells} == {"schoolid", "childid"}
    table = next(b for b in log.blocks if b.kind == "etable")
    cells = {c.path: c.printed for c in table.cells}
    assert ("etable", "m3", "atr1_1_1_2:_cons", "se") in cells
    assert ("etable", "m2", "atr1_1_1_2:_cons", "b") not in cells  # a blank cell is no number
    tab = next(b for b in log.blocks if b.kind == "tab2")
    assert {c.path for c in tab.cells} >= {("tab2", "Total", "Total"), ("tab2", "1", "0")}


def test_eb_vector_keeps_every_level_of_a_three_level_model():
    import hlmbridge
    from hlmbridge.data import read_dta
    from hlmbridge.reference.quantities import eb_vector

    df = read_dta(EG / "egsingle.dta")
    res = hlmbridge.fit("mixed math year || schoolid: || childid:, mle", df, engine="lme4")
    eb = eb_vector(res)
    rnd = res.random.set_index(["group", "stata_term"])["estimate"]
    import math

    assert eb["lns1_1_1:_cons"][0] == pytest.approx(0.5 * math.log(rnd[("schoolid", "var(_cons)")]))
    assert eb["lns2_1_1:_cons"][0] == pytest.approx(0.5 * math.log(rnd[("childid", "var(_cons)")]))
    assert eb["lns1_1_1:_cons"][0] != pytest.approx(eb["lns2_1_1:_cons"][0], rel=1e-2)


# ---------------------------------------------------------------------------------------------
# 3. data preparation
def test_data_steps_are_replayed_and_unsupported_ones_named():
    import pandas as pd

    from hlmbridge.reference.data_prep import replay

    df = pd.read_stata(S18_DATA)
    r = replay(df, ["bysort schoolnr: gen sn = _N", "by schoolnr: gen first = _n == 1",
                    "egen sm = mean(langpost), by(schoolnr)", "gen R = _b[/sigma_u]^2", "gen a = R * sm"],
               [12, 14, 50, 69, 71])
    first = r.frame[r.frame["first"] == 1]
    assert len(first) == 131 and first["sn"].mean() == pytest.approx(17.45802, abs=5e-6)
    assert r.blocked["R"].startswith("line 69 `gen R = _b[/sigma_u]^2`")
    assert "line 69" in r.blocked["a"] and r.why_blocked(["langpost", "a"]) == r.blocked["a"]


def test_a_model_on_a_variable_the_replay_cannot_make_fails_with_the_line(tmp_path):
    from hlmbridge.check.validate import validate

    block = S18.read_text(encoding="utf-8")
    model = block[block.index(". xtmixed langpost"):block.index(". predict")]
    log = tmp_path / "y.log"
    log.write_text(". use snijders, clear\n\n. gen ahat = _b[_cons] + iq_verb\n\n" + model, encoding="utf-8")
    (p,), _ = import_stata(log, tmp_path / "out")
    # The same numbers for a model that uses ahat (a log whose model names the variable the step makes):
    t = p.read_text(encoding="utf-8").replace("xtmixed langpost || schoolnr: , mle",
                                              "xtmixed langpost ahat || schoolnr: , mle")
    p.write_text(t.replace("[meta]\n", '[meta]\ndata_steps = ["gen ahat = _b[_cons] + iq_verb"]\n'
                           'data_step_lines = [3]\ndataset = "snijders"\n', 1), encoding="utf-8")
    from hlmbridge.reference.manifest import update_manifest

    update_manifest(tmp_path / "out")  # the edit is deliberate: the manifest records it
    report = validate(tmp_path / "out", data=S18_DATA, engines=["lme4"], compare=False)
    missing = [r for r in report.rows if r.status == "missing"]
    assert missing and len(missing) == len(report.rows)
    assert all("line 3 `gen ahat = _b[_cons] + iq_verb`" in r.reason for r in missing)


# ---------------------------------------------------------------------------------------------
# 5. round trips: import-stata -> validate, exit 0
def test_stata18_fixtures_are_the_import_of_the_committed_log(tmp_path):
    paths, _ = import_stata(S18, tmp_path)
    assert sorted(p.name for p in paths) == sorted(p.name for p in S18_CASES.glob("*.toml"))
    for p in paths:
        assert p.read_bytes() == (S18_CASES / p.name).read_bytes(), p.name


def _ok(report) -> None:
    bad = [r for r in report.rows if r.status not in ("match", "within", "explained")]
    assert not bad, bad[:5]


def test_stata18_round_trip_validates_on_lme4():
    from hlmbridge.check.validate import validate

    report = validate(S18_CASES, data=S18_DATA, engines=["lme4"], compare=False)
    _ok(report)
    keys = {(r.case, r.key) for r in report.rows}
    assert ("L0022_xtreg", 'fixed."_cons".std_error') in keys  # xtreg's full-information SE, reproduced
    assert ("L0119_list", 'list."26".ahat2') in keys  # Stata's BLUP against result.ranef()
    assert ("L0016_summarize", 'summarize."sn".mean') in keys  # a summary on replayed data (not HSB)


@pytest.mark.parametrize("layout", ["ascii", "unicode"])
def test_own_logs_round_trip_in_both_layouts(tmp_path, layout):
    from hlmbridge.check.validate import validate

    paths, parsed = import_stata(EG / "logs" / f"egsingle_{layout}.log", tmp_path)
    assert parsed.layout == layout
    kinds = sorted(r.kind for r in load_references(tmp_path))
    assert kinds == ["estat_icc", "estat_icc", "estat_recov", "etable", "mixed", "mixed", "mixed", "summarize", "tab2",
                     "xtreg"]
    report = validate(tmp_path, data=EG / "egsingle.dta", engines=["lme4"], compare=False)
    _ok(report)
    assert len(report.rows) == 212
    keys = {r.key for r in report.rows}
    assert 'icc."childid|schoolid".estimate' in keys  # a nested level as Stata names it (after estimates restore)
    assert 'fixed."c.yr#c.yr".estimate' in keys  # Stata's quadratic idiom, fitted as yr squared
    assert 'random."schoolid:corr(year,_cons)".conf_low' in keys
    assert 'random."/sigma_u".std_error' in keys  # xtreg (xtset's panel variable added), full-information SE


def test_lenient_import_lists_every_skipped_block_with_its_line(tmp_path, capsys):
    from hlmbridge.cli import main

    log = tmp_path / "t.log"
    log.write_text(". use d, clear\n\n. mixed y x ///\n\n. regress y x\n\n      Source |   SS\n\n. di 1, 2\n1 2\n",
                   encoding="utf-8")
    assert main(["import-stata", str(log), "--out", str(tmp_path / "out"), "--lenient"]) == 1
    out, err = capsys.readouterr()
    assert "note: line 5 `regress y x`: not checked" in out and "not a Stata command" not in out
    assert "t.log:3: `mixed y x ///` continues on the next line" in err and "1 block(s) skipped" in err
    assert main(["import-stata", str(log), "--out", str(tmp_path / "out2")]) == 2  # strict: the first one stops
    assert "t.log:3:" in capsys.readouterr().err
    di = (tmp_path / "out" / "L0009_di.toml").read_text(encoding="utf-8")
    assert "value_2 = " in di


def test_results_of_models_hlmbridge_does_not_fit_are_not_checked():
    # xtlogit, fe (the conditional logit): a model hlmbridge does not fit (xtlogit, re it does)
    text = (". use d, clear\n\n. xtlogit y x, i(g) fe\n\n      output\n\n. estimates store xt\n\n"
            ". estimates table xt\n\n----\n\n. estat ic\n\nAkaike's information criterion\n")
    log = parse_log_text(text, name="t")
    assert log.blocks == () and log.problems == ()
    assert [(u.line, "xtlogit" in u.reason) for u in log.unchecked] == [(3, True), (9, True), (13, True)]


def test_a_wide_matrix_listed_in_panels_is_read_whole():
    text = """. qui mixed math year || schoolid: || childid:, mle

. mat list e(b)

e(b)[1,5]
          math:        math:    lns1_1_1:
          year        _cons        _cons
y1   .74613006   -.78060692   -.84844114

     lns2_1_1:     lnsig_e:
         _cons        _cons
y1   -.2002993   -.52930207
"""
    (block,) = parse_log_text(text, name="t").blocks
    assert [c.path[1] for c in block.cells] == ["math:year", "math:_cons", "lns1_1_1:_cons", "lns2_1_1:_cons",
                                                "lnsig_e:_cons"]
    with pytest.raises(FixtureError, match="ends after 3 of its 5 columns"):
        parse_log_text(text.split("\n\n     lns2")[0] + "\n", name="t")


def test_a_command_stata_wrapped_at_the_log_width_is_joined():
    text = (". use d, clear\n\n. mixed langpost || schoolnr:, mle variance nolog\n> stddeviations\n\n"
            ". estat ic\n\nAkaike's information criterion and Bayesian information criterion\n\n"
            "-----------------------------------------------------------------------------\n"
            "       Model |          N   ll(null)  ll(model)      df        AIC        BIC\n"
            "-------------+---------------------------------------------------------------\n"
            "           . |      2,287          .  -8126.609       3   16259.22   16276.42\n"
            "-----------------------------------------------------------------------------\n")
    log = parse_log_text(text, name="t", lenient=True)
    ic = next(b for b in log.blocks if b.kind == "estat_ic")
    assert ic.models[0].command == "mixed langpost || schoolnr:, mle variance nolog stddeviations"


@pytest.mark.parametrize(("rule", "value"), [("last", 4), ("freq", 2), ("#2", 2), ("#3", 3)])
def test_base_rules_resolve_on_the_data_as_stata_does(rule, value, tmp_path):
    """ib(last)/ib(freq)/ib(#k): the same fit as the explicit base (denomina: levels 1-4, 2 most frequent),
    on both engines, and the R code translate prints fits the same model in R."""
    import subprocess

    import numpy as np
    import pandas as pd

    import hlmbridge
    from hlmbridge.spec.parse_stata import parse_stata

    df = pd.read_stata(S18_DATA)
    spec = parse_stata(f"mixed langpost ib({rule}).denomina || schoolnr:, mle")
    assert spec.to_stata() == f"mixed langpost ib({rule}).denomina || schoolnr:"
    want = hlmbridge.fit(f"mixed langpost ib{value}.denomina || schoolnr:, mle", df, engine="lme4").fixed
    for eng in ("lme4", "statsmodels"):
        got = hlmbridge.fit(spec, df, engine=eng).fixed
        assert list(got["stata_term"]) == list(want["stata_term"])
        np.testing.assert_allclose(got["estimate"], want["estimate"], rtol=1e-6)
    df[["langpost", "denomina", "schoolnr"]].to_csv(tmp_path / "d.csv", index=False)
    code = (f'data <- read.csv("{tmp_path / "d.csv"}")\n' + spec.to_lme4().r_code()
            + '\ncat(format(lme4::fixef(fit), digits = 15), sep = "\\n")\n')
    out = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, check=True).stdout.split()
    r = np.array([float(x) for x in out])
    np.testing.assert_allclose(r[1:], want["estimate"].to_numpy()[:-1], rtol=1e-5)  # R: intercept first
    np.testing.assert_allclose(r[0], want["estimate"].to_numpy()[-1], rtol=1e-5)
