"""Reference numbers of a ``mixed ..., dfmethod()`` table: import-stata reads them, validate judges them.

The logs here are *constructed*: the numbers are what hlmbridge computes on the bundled HSB
data for ``mixed mathach ses || id:, reml dfmethod(kroger)`` (Kenward-Roger t tests), printed
the way Stata prints that output. There is no Stata log with dfmethod() among the project's
references, so this is a round trip of the format (parser -> fixture -> validate), not a check
against Stata's numbers.

Layout of the constructed output (Stata 14+): the ``DF method:`` line with ``DF: min`` at its
right and ``avg``/``max`` below, ``F(k, ddf)`` and ``Prob > F`` in place of ``Wald chi2`` and
``Prob > chi2``, ``Log restricted-likelihood``, and a coefficient table with ``t`` and
``P>|t|``; ``dftable(pvalue)`` prints a ``DF`` column before t instead of the CI. Sources:
Stata's [ME] mixed manual, "Small-sample inference for fixed effects" (help mixed: the
``dfmethod()`` and ``dftable()`` options), the feature page
https://www.stata.com/features/overview/small-sample-mixed-models/ and help ``estat df``.
Column widths follow the seed log's ``mixed`` tables (fixtures/stata/logs/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import hlmbridge
from hlmbridge.check.validate import validate
from hlmbridge.errors import FixtureError
from hlmbridge.reference.fixtures import (DEFAULT_TOLERANCES, import_stata, load_reference, load_references,
                                          quantity_class)
from hlmbridge.reference.stata_log import parse_log_text
from hlmbridge.results.display import format_g

COMMAND = "mixed mathach ses || id:, reml dfmethod(kroger)"
RULE = "-" * 78


@pytest.fixture(scope="module")
def kr_fit():
    """The model fitted by hlmbridge (statsmodels engine: needs no R) with Kenward-Roger df."""
    return hlmbridge.fit(COMMAND, hlmbridge.datasets.hsb("combined"), engine="statsmodels")


def _p(x: float, decimals: int = 3) -> str:
    return f"{x:.{decimals}f}"


def stata_log(res, command: str = COMMAND, *, dftable: str = "default") -> str:
    """``res`` printed as Stata prints ``command`` (see the module docstring for the layout)."""
    g = res.groups[0]
    dfs = list(res.fixed_df)
    names = {"kenward-roger": "Kenward-Roger", "residual": "Residual"}
    df_name = names.get(res.df_method, "Satterthwaite")
    ftest = res.test([[1.0 if j == k else 0.0 for j in range(len(res.fixed))]
                      for k, t in enumerate(res.fixed["stata_term"]) if t != "_cons"]).iloc[0]
    fdf = f"F({int(ftest['num_df'])}, {ftest['den_df']:.2f})"
    lines = [
        f". {command}",
        "",
        "Performing EM optimization ...",
        "",
        "Performing gradient-based optimization:",
        f"Iteration 0:  Log restricted-likelihood = {res.loglik:.3f}",
        f"Iteration 1:  Log restricted-likelihood = {res.loglik:.3f}",
        "",
        "Computing standard errors ...",
        "",
        "Computing degrees of freedom ...",
        "",
        f"{'Mixed-effects REML regression':<48}Number of obs     = {res.nobs:>10,}",
        f"{'Group variable: ' + g.group:<48}Number of groups  = {g.n_groups:>10,}",
        f"{'':48}Obs per group:",
        f"{'':62}min = {g.min:>10,}",
        f"{'':62}avg = {g.mean:>10.1f}",
        f"{'':62}max = {g.max:>10,}",
        f"{'DF method: ' + df_name:<48}DF:           min = {min(dfs):>10.2f}",
        f"{'':62}avg = {sum(dfs) / len(dfs):>10.2f}",
        f"{'':62}max = {max(dfs):>10.2f}",
        f"{'':48}{fdf:<18}= {ftest['f_value']:>10.2f}",
        f"{'Log restricted-likelihood = ' + f'{res.loglik:.3f}':<48}Prob > F          = {ftest['p_value']:>10.4f}",
        "",
        RULE,
    ]
    if dftable == "pvalue":
        lines.append(f"{res.spec.response:>12} | Coefficient  Std. err.        DF       t    P>|t|")
    else:
        lines.append(f"{res.spec.response:>12} | Coefficient  Std. err.      t    P>|t|     [95% conf. interval]")
    lines.append("-" * 13 + "+" + "-" * 64)
    for r in res.fixed.itertuples(index=False):
        if dftable == "pvalue":
            row = f"{format_g(r.estimate)} {format_g(r.std_error)} {r.df:9.2f} {r.statistic:8.2f}   {_p(r.p_value)}"
        else:
            row = (f"{format_g(r.estimate)} {format_g(r.std_error)} {r.statistic:8.2f}   {_p(r.p_value)}  "
                   f"{format_g(r.conf_low, 11)}  {format_g(r.conf_high)}")
        lines.append(f"{r.stata_term:>12} | {row}")
    lines += [RULE, "", RULE,
              "  Random-effects parameters  |   Estimate   Std. err.     [95% conf. interval]",
              "-" * 29 + "+" + "-" * 48,
              f"{g.group + ': Identity':<29}|"]
    rnd = res.random
    for r in rnd.itertuples(index=False):
        if r.group == "Residual":
            lines.append("-" * 29 + "+" + "-" * 48)
        lines.append(f"{r.stata_term:>28} | {format_g(r.estimate)} {format_g(r.std_error)}    "
                     f"{format_g(r.conf_low)}  {format_g(r.conf_high)}")
    lines += [RULE,
              f"LR test vs. linear model: chibar2(01) = {res.lr_chi2:.2f}{'':8}Prob >= chibar2 = {res.lr_p:.4f}",
              ""]
    return "\n".join(lines)


def _write(tmp_path: Path, text: str, name: str = "dfmethod.log") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _replace_in_row(text: str, label: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced by ``new`` in the fixed-effects row of ``label`` only."""
    out = []
    for line in text.split("\n"):
        if line.startswith(f"{label:>12} | ") and old in line:
            line = line.replace(old, new, 1)
            old = "\0"  # once
        out.append(line)
    assert old == "\0", f"{label} row holds no {new!r}"
    return "\n".join(out)


# ---- the parser ---------------------------------------------------------------------------------
def test_parser_reads_the_dfmethod_header_and_t_table(kr_fit):
    log = parse_log_text(stata_log(kr_fit), name="dfmethod.log")
    (block,) = log.blocks
    cells = {c.path: c for c in block.cells}
    assert block.meta["df_method"] == "Kenward-Roger" and block.meta["statistic"] == "t"
    assert block.meta["method"] == "reml"
    row = kr_fit.fixed.set_index("stata_term").loc["ses"]
    assert cells[("fixed", "ses", "t")].value == pytest.approx(row["statistic"], abs=0.005)
    assert ("fixed", "ses", "statistic") not in cells  # a t is never filed as a z
    assert cells[("header", "df_min")].value == pytest.approx(min(kr_fit.fixed_df), abs=0.005)
    assert cells[("header", "df_max")].value == pytest.approx(max(kr_fit.fixed_df), abs=0.005)
    # the df range's avg/max lines are not the group sizes' avg/max
    assert cells[("header", "group_mean")].value == pytest.approx(kr_fit.groups[0].mean, abs=0.05)
    assert cells[("header", "df_avg")].line == cells[("header", "df_min")].line + 1
    assert {("header", k) for k in ("f_stat", "f_df1", "f_df2", "f_p", "loglik")} <= set(cells)
    assert ("header", "wald_chi2") not in cells


def test_parser_reads_a_df_column(kr_fit):
    (block,) = parse_log_text(stata_log(kr_fit, dftable="pvalue"), name="dftable.log").blocks
    cells = {c.path: c for c in block.cells}
    df = dict(zip(kr_fit.fixed["stata_term"], kr_fit.fixed_df))
    assert cells[("fixed", "_cons", "df")].value == pytest.approx(df["_cons"], abs=0.005)
    assert ("fixed", "_cons", "conf_low") not in cells


def test_parser_refuses_inconsistent_dfmethod_output(kr_fit):
    text = stata_log(kr_fit)
    no_df_line = "\n".join(line for line in text.split("\n") if not line.startswith("DF method:"))
    with pytest.raises(FixtureError, match="DF method"):
        parse_log_text(no_df_line, name="x.log")
    z_table = text.replace("      t    P>|t|", "      z    P>|z|")
    with pytest.raises(FixtureError, match="z table"):
        parse_log_text(z_table, name="x.log")
    with pytest.raises(FixtureError, match="unknown DF method"):
        parse_log_text(text.replace("DF method: Kenward-Roger", "DF method: Bogus-Method    "), name="x.log")


def test_classes_and_tolerances_of_the_new_keys():
    assert quantity_class(("fixed", "ses", "t")) == "statistic"
    assert quantity_class(("fixed", "ses", "df")) == "df"
    assert quantity_class(("header", "f_df2")) == "df" and quantity_class(("header", "f_df1")) == "count"
    assert quantity_class(("header", "f_p")) == "p_value" and quantity_class(("header", "df_avg")) == "df"
    t = DEFAULT_TOLERANCES["df"]
    assert t.rtol == 1e-3 and t.se is None and "optimizer" in t.reason


# ---- import-stata and validate --------------------------------------------------------------------
def test_import_writes_the_df_numbers_with_their_class(kr_fit, tmp_path):
    paths, _ = import_stata(_write(tmp_path, stata_log(kr_fit)), tmp_path / "fx")
    (p,) = paths
    text = p.read_text(encoding="utf-8")
    assert "[tolerance.df]" in text and 'df_method = "Kenward-Roger"' in text
    ref = load_reference(p)
    v = ref.get('fixed."ses".t')
    assert v.qclass == "statistic" and ref.tolerance(v).rtol == 1e-4
    assert ref.get("header.df_max").qclass == "df"
    assert ref.tolerance(ref.get("header.f_p")).atol == 1e-4


def test_import_refuses_a_model_command_with_another_df_method(kr_fit, tmp_path):
    for command, why in (("mixed mathach ses || id:, reml", "no dfmethod"),
                         ("mixed mathach ses || id:, reml dfmethod(satterthwaite)", "satterthwaite")):
        log = _write(tmp_path, stata_log(kr_fit).replace(f". {COMMAND}", f". {command}"))
        with pytest.raises(FixtureError, match=why):
            import_stata(log, tmp_path / "fx")


def test_seed_fixtures_hold_no_df_class():
    assert all(v.qclass != "df" for r in load_references() for v in r.values)


def _statuses(report, key_part: str) -> set[str]:
    return {r.status for r in report.rows if key_part in r.key and " vs " not in r.engine}


def _round_trip(tmp_path: Path, res, engines: list[str]) -> None:
    text = stata_log(res)
    import_stata(_write(tmp_path, text), tmp_path / "ok")
    rep = validate(tmp_path / "ok", engines=engines)
    assert rep.ok, rep.render(limit=10)
    keys = {r.key for r in rep.rows}
    assert {'fixed."ses".t', 'fixed."_cons".p_value', "header.df_min", "header.f_df2", "header.f_stat"} <= keys
    assert {r.engine for r in rep.rows} >= set(engines)
    # a wrong t, then a wrong df: each is a mismatch
    t = f"{res.fixed.set_index('stata_term').loc['ses', 'statistic']:8.2f}"
    bad_t = _replace_in_row(text, "ses", t, f"{float(t) * 1.01:8.2f}")
    import_stata(_write(tmp_path, bad_t, "bad_t.log"), tmp_path / "bad_t")
    rep = validate(tmp_path / "bad_t", engines=engines)
    assert not rep.ok and _statuses(rep, 'fixed."ses".t') == {"mismatch"}
    pv = stata_log(res, dftable="pvalue")
    df = f"{dict(zip(res.fixed['stata_term'], res.fixed_df))['_cons']:9.2f}"
    bad_df = _replace_in_row(pv, "_cons", df, f"{float(df) * 1.01:9.2f}")
    import_stata(_write(tmp_path, bad_df, "bad_df.log"), tmp_path / "bad_df")
    rep = validate(tmp_path / "bad_df", engines=engines)
    assert not rep.ok and _statuses(rep, 'fixed."_cons".df') == {"mismatch"}
    assert _statuses(rep, 'fixed."ses".df') <= {"match", "within"}


def test_round_trip_statsmodels(kr_fit, tmp_path):
    _round_trip(tmp_path, kr_fit, ["statsmodels"])


@pytest.mark.requires_r
def test_round_trip_both_engines(tmp_path):
    res = hlmbridge.fit(COMMAND, hlmbridge.datasets.hsb("combined"), engine="lme4")
    _round_trip(tmp_path, res, ["lme4", "statsmodels"])
