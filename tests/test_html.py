"""Notebook display and side-by-side tables (issue 27, item 5): ``_repr_html_`` of a FitResult,
an ANOVA table and an LRTest show the objects' own numbers; ``hlmbridge.estimates_table``
(Stata's ``estimates table``) holds exactly the fits' numbers and its Markdown, LaTeX and HTML
exports show them rounded to the table's digits.

Every comparison reads the numbers back out of the rendered text and compares them with the
fits' (never with numbers written here).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import UsageError
from hlmbridge.results.html import TitledFrame


@pytest.fixture(scope="module")
def fits() -> dict:
    hsb = hlmbridge.datasets.hsb()
    return {
        "m1": hlmbridge.fit("mixed mathach ses || id:", hsb, engine="statsmodels"),
        "m2": hlmbridge.fit("mixed mathach ses || id: ses, cov(unstructured)", hsb, engine="statsmodels"),
        "m3": hlmbridge.fit("mathach ~ ses + sector + (1 | id)", hsb, engine="statsmodels"),
    }


def _num(text: str) -> float:
    text = text.strip().strip("()")
    return float("nan") if text in ("", ".") else float(text.replace(",", ""))


def _cells(html: str, caption: str) -> list[list[str]]:
    """The body rows of the table with ``caption`` in an HTML string."""
    table = re.search(r"<caption>" + re.escape(caption) + r"</caption>(.*?)</table>", html, re.S)
    assert table, f"no table {caption!r}"
    body = table.group(1).split("<tbody>", 1)[1]
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


# ---------------------------------------------------------------------------- _repr_html_
@pytest.mark.parametrize("name", ["m2", "m3"])
def test_fit_html_shows_the_fits_numbers(fits, name: str) -> None:
    res = fits[name]
    html = res._repr_html_()
    rows = _cells(html, f"Fixed effects ({res.spec.response})")
    fixed = res.fixed
    assert [r[0] for r in rows] == fixed["stata_term"].tolist()
    got = np.array([[_num(c) for c in r[1:]] for r in rows])
    want = fixed[["estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"]].to_numpy(float)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)
    rnd = _cells(html, "Random-effects parameters")
    np.testing.assert_allclose([[_num(c) for c in r[1:]] for r in rnd],
                               res.random[["estimate", "std_error", "conf_low", "conf_high"]].to_numpy(float),
                               rtol=0, atol=5e-5)
    assert f"{res.nobs:,}" in html and f"{res.loglik:.4f}" in html and f"{res.lr_chi2:.2f}" in html


def test_fit_html_with_t_tests_and_escaping(fits) -> None:
    res = fits["m3"].with_df("satterthwaite")
    html = res._repr_html_()
    rows = _cells(html, "Fixed effects (mathach)")
    np.testing.assert_allclose([_num(r[3]) for r in rows], res.fixed["df"].to_numpy(float), atol=5e-5)
    assert "<th>P&gt;|t|</th>" in html and "DF method" in html


def test_anova_table_displays_its_heading_and_numbers(fits) -> None:
    tab = fits["m3"].anova("Satterthwaite")
    assert isinstance(tab, TitledFrame) and isinstance(tab, pd.DataFrame)
    html = tab._repr_html_()
    rows = _cells(html, tab.attrs["heading"])
    assert [r[0] for r in rows] == tab["term"].tolist()
    np.testing.assert_allclose([_num(r[5]) for r in rows], tab["f_value"].to_numpy(float), atol=5e-5)
    assert type(tab[["term", "f_value"]]) is pd.DataFrame and type(tab.copy()) is pd.DataFrame
    pd.testing.assert_frame_equal(pd.DataFrame(tab), fits["m3"].anova("Satterthwaite"), check_frame_type=False)


def test_lrtest_html(fits) -> None:
    test = hlmbridge.lrtest(fits["m1"], fits["m2"], names=("m1", "m2"))
    html = test._repr_html_()
    rows = dict((r[0], r[1]) for r in _cells(html, "Likelihood-ratio test"))
    assert rows["Assumption"] == "m1 nested within m2"
    assert _num(rows[f"LR chi2({test.df})"]) == pytest.approx(test.chi2, abs=0.005)
    assert _num(rows["Prob &gt; chi2"]) == pytest.approx(test.p_value, abs=5e-5)
    assert "Note:" in html


# ---------------------------------------------------------------------------- estimates table
def _fit_numbers(res: hlmbridge.FitResult) -> dict[str, tuple[float, float]]:
    out = {str(r[0]): (float(r[2]), float(r[3])) for r in res.fixed_rows}
    for r in res.random_rows:
        out[str(r[4]) if r[0] == "Residual" else f"{r[4]}|{r[0]}"] = (float(r[5]), float(r[6]))
    return out


def _parsed(rows: list[list[str]], names: list[str]) -> tuple[dict, dict]:
    """{(parameter, fit): (estimate, se)} and {(stat, fit): text} from label + cells rows."""
    params, stats, last = {}, {}, None
    for label, *cells in rows:
        if label == "":  # the SE row under ``last``
            for n, c in zip(names, cells, strict=True):
                if c:
                    params[(last, n)] = (params[(last, n)][0], _num(c))
            continue
        last = label
        for n, c in zip(names, cells, strict=True):
            if c:
                if label in ("N", "ll", "aic", "bic", "method"):
                    stats[(label, n)] = c
                else:
                    params[(label, n)] = (_num(c), float("nan"))
    return params, stats


def _check(params: dict, stats: dict, fits: dict, names: list[str]) -> None:
    want_keys = set()
    for n in names:
        for key, (est, se) in _fit_numbers(fits[n]).items():
            want_keys.add((key, n))
            got = params[(key, n)]
            assert got[0] == pytest.approx(est, abs=5e-5), (key, n)
            assert got[1] == pytest.approx(se, abs=5e-5), (key, n)
        assert int(stats[("N", n)]) == fits[n].nobs
        for s, v in (("ll", fits[n].loglik), ("aic", fits[n].aic), ("bic", fits[n].bic)):
            assert _num(stats[(s, n)]) == pytest.approx(v, abs=5e-5)
        assert stats[("method", n)] == ("REML" if fits[n].method == "reml" else "ML")
    assert set(params) == want_keys  # nothing extra, nothing missing


def test_estimates_table_numbers_are_the_fits(fits) -> None:
    names = ["m1", "m2", "m3"]
    tab = hlmbridge.estimates_table([fits[n] for n in names], names=names, stats=("N", "ll", "aic", "bic", "method"))
    for n in names:
        for key, (est, se) in _fit_numbers(fits[n]).items():
            assert tab.estimates.loc[key, n] == est and tab.std_errors.loc[key, n] == se
        assert tab.stats.loc["ll", n] == fits[n].loglik and tab.stats.loc["N", n] == fits[n].nobs
    assert np.isnan(tab.estimates.loc["sector", "m1"]) and tab.estimates.index[0] == "(Intercept)"
    assert tab.estimates.index[-1] == "var(Residual)"

    md = tab.to_markdown().splitlines()
    assert md[0] == "| | m1 | m2 | m3 |"
    rows = [[c.strip().replace(r"\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in md[2:]]
    _check(*_parsed(rows, names), fits, names)

    tex = tab.to_latex().splitlines()
    assert tex[0] == r"\begin{tabular}{lrrr}" and tex[-1] == r"\end{tabular}"
    body = [line[:-2] for line in tex[4:] if line.endswith(r"\\")]
    unescape = {r"\_": "_", r"\textbar{}": "|"}

    def tex_cell(c: str) -> str:
        for a, b in unescape.items():
            c = c.replace(a, b)
        return c.strip()

    _check(*_parsed([[tex_cell(c) for c in re.split(r"(?<!\\)&", line)] for line in body], names), fits, names)

    html = tab.to_html()
    rows = [re.findall(r"<t[dh]>(.*?)</t[dh]>", r) for r in re.findall(r"<tr>(.*?)</tr>", html)][1:]
    _check(*_parsed(rows, names), fits, names)
    assert tab._repr_html_().count("<table") == 1 and str(tab) == tab.to_markdown()


def test_estimates_table_options(fits) -> None:
    tab = hlmbridge.estimates_table([fits["m1"], fits["m3"]], se=False, labels="stata", digits=2, stats=("N",))
    assert list(tab.estimates.columns) == ["(1)", "(2)"]
    assert tab.estimates.index.tolist()[:3] == ["ses", "sector", "_cons"]
    md = tab.to_markdown()
    assert not any(line.startswith("|  |") for line in md.splitlines())  # no SE rows
    assert f"| _cons | {fits['m1'].fixed['estimate'].iloc[-1]:.2f} |" in md
    with pytest.raises(UsageError, match="at least one"):
        hlmbridge.estimates_table([])
    with pytest.raises(UsageError, match="not a FitResult"):
        hlmbridge.estimates_table([fits["m1"], "m2"])
    with pytest.raises(UsageError, match="distinct names"):
        hlmbridge.estimates_table([fits["m1"], fits["m2"]], names=("a", "a"))
    with pytest.raises(UsageError, match="unknown statistic"):
        hlmbridge.estimates_table([fits["m1"]], stats=("r2",))
    with pytest.raises(UsageError, match="labels"):
        hlmbridge.estimates_table([fits["m1"]], labels="r")
    with pytest.raises(UsageError, match="digits"):
        hlmbridge.estimates_table([fits["m1"]], digits=-1)


@pytest.mark.requires_r
def test_glmm_html_shows_its_tables() -> None:
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    y = (rng.random(200) < 1 / (1 + np.exp(-(0.3 + x + rng.normal(size=20)[g])))).astype(int)
    res = hlmbridge.fit("y ~ x + (1 | g)", pd.DataFrame({"y": y, "x": x, "g": g}), engine="lme4", family="binomial")
    html = res._repr_html_()
    rows = _cells(html, "Fixed effects (y)")
    np.testing.assert_allclose([_num(r[1]) for r in rows], res.fixed["estimate"].to_numpy(float), atol=5e-5)
    rnd = _cells(html, "Random-effects parameters")
    assert [r[0] for r in rnd] == ["g: var(_cons)"]
    assert _num(rnd[0][1]) == pytest.approx(res.random["estimate"].iloc[0], abs=5e-5)
