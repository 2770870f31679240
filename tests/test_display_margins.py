"""Text and HTML display of margins, emmeans and model-comparison results (issue 27, item 5).

- ``str(margins)`` is Stata's ``margins`` output: the header lines are there and every printed
  number, read back out of the text, is the result's own at the printed precision.
- ``str(emmeans)``, ``str(hlmbridge.anova(m0, m1))`` and ``str(pbmodcomp)`` are laid out as R
  prints them: checked against the text real R (emmeans 1.8.4, lme4, pbkrtest through rpy2)
  prints for the same models, line for line where the numbers agree to the printed digits.
- ``_repr_html_`` is well-formed HTML (``html.parser``), escapes the data's text and shows the
  result's numbers; ``repr`` is one short line.
"""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.inference.pbmodcomp import PBModComp
from hlmbridge.results.compare import anova

BREAKS = [-1, 2, 5, 9]


def _sleep(labels: list[str]) -> pd.DataFrame:
    df = hlmbridge.datasets.sleepstudy()
    df["phase"] = pd.cut(df["Days"], BREAKS, labels=labels)
    return df


@pytest.fixture(scope="module")
def fit() -> hlmbridge.FitResult:
    return hlmbridge.fit("Reaction ~ Days * phase + (1 | Subject)", _sleep(["early", "mid", "late"]),
                         engine="statsmodels")


@pytest.fixture(scope="module")
def odd_fit() -> hlmbridge.FitResult:
    """Level labels with characters HTML must escape."""
    return hlmbridge.fit("Reaction ~ Days * phase + (1 | Subject)", _sleep(["lo<2", "mid&x", "hi>5"]),
                         engine="statsmodels")


# ------------------------------------------------------------------------------------------ helpers
def _margins_rows(text: str) -> list[tuple[str, list[float]]]:
    """The Delta-method table's data rows: (label, [value, se, z, p, lo, hi])."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-------------+"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == "-" * 78)
    rows = []
    for line in lines[start + 1:end]:
        label, _, rest = line.partition(" | ")
        if not rest.strip():
            continue
        rows.append((label.strip(), [float(t) for t in rest.split()]))
    return rows


def _check_margins_numbers(m, text: str) -> list[str]:
    rows = _margins_rows(text)
    value = "dydx" if m.kind == "dydx" else "margin"
    assert len(rows) == len(m.table) > 0
    for (label, nums), (_, r) in zip(rows, m.table.iterrows(), strict=True):
        assert len(nums) == 6, (label, nums)
        for got, col in zip([nums[0], nums[1], nums[4], nums[5]], [value, "std_error", "conf_low", "conf_high"]):
            assert got == pytest.approx(float(r[col]), rel=6e-7, abs=0), (label, col)  # 7 significant digits
        assert abs(nums[2] - float(r["statistic"])) <= 0.005 + 1e-12  # z to 2 decimals
        assert abs(nums[3] - float(r["p_value"])) <= 0.0005 + 1e-12  # P>|z| to 3 decimals
    return [label for label, _ in rows]


class _Checker(HTMLParser):
    """Tags balanced; the text content collected."""

    VOID = {"br", "hr", "img", "meta", "link", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells[-1] += data


def _html(markup: str) -> _Checker:
    p = _Checker()
    p.feed(markup)
    p.close()
    assert p.stack == [], f"unclosed tags {p.stack}"
    return p


# ------------------------------------------------------------------------------------------ margins
def test_margins_print_stata_header_legend_and_the_results_numbers(fit):
    m = fit.margins("phase", at={"Days": [0, 4.5]})
    text = str(m)
    lines = text.splitlines()
    assert lines[0].startswith("Predictive margins") and lines[0].endswith("Number of obs = 180")
    assert len(lines[0]) == 78
    assert "Model VCE: OIM" in lines
    assert "Expression: Linear prediction, fixed portion, predict()" in lines
    assert "1._at: Days = 0" in lines and "2._at: Days = 4.5" in lines
    assert any("Delta-method" in line for line in lines)
    assert any(re.search(r"Margin\s+std\. err\.\s+z\s+P>\|z\|\s+\[95% conf\. interval\]", line) for line in lines)
    assert "   _at#phase |" in lines
    labels = _check_margins_numbers(m, text)
    assert labels == [f"{a}#{p}" for a in (1, 2) for p in ("early", "mid", "late")]


def test_dydx_prints_average_marginal_effects(fit):
    m = fit.margins(dydx=["Days", "phase"])
    text = str(m)
    lines = text.splitlines()
    assert lines[0].startswith("Average marginal effects")
    assert "dy/dx wrt:  Days phase" in lines
    assert any(re.search(r"dy/dx\s+std\. err\.", line) for line in lines)
    assert "Note: dy/dx for factor levels is the discrete change from the base level." in lines
    assert "       phase |" in lines
    assert _check_margins_numbers(m, text) == ["Days", "mid", "late"]


def test_overall_margin_atmeans_and_over(fit):
    m = fit.margins()
    assert _check_margins_numbers(m, str(m)) == ["_cons"]
    a = fit.margins("phase", atmeans=True)
    assert str(a).startswith("Adjusted predictions")
    assert "Note: at: the other covariates at their means (atmeans)" in str(a).splitlines()
    _check_margins_numbers(a, str(a))
    o = fit.margins(dydx="Days", over="phase")
    text = str(o)
    assert "Over: phase" in text.splitlines()
    assert _check_margins_numbers(o, text) == ["early", "mid", "late"]


def test_margins_repr_is_short_and_html_escapes(odd_fit):
    m = odd_fit.margins("phase", at={"Days": [0, 9]})
    r = repr(m)
    assert "\n" not in r and len(r) < 200 and r.startswith("MarginsResult(kind='margins', rows=6")
    markup = m._repr_html_()
    assert "lo<2" not in markup and "lo&lt;2" in markup and "mid&amp;x" in markup and "hi&gt;5" in markup
    p = _html(markup)
    text = "".join(p.text)
    assert "Predictive margins" in text and "1._at: Days = 0" in text and "Delta-method" in text
    # every margin and SE of the result is a cell, to the cells' 4 decimals
    cells = set(p.cells)
    for col in ("margin", "std_error", "conf_low", "conf_high"):
        assert all(f"{v:.4f}" in cells for v in m.table[col]), col
    # the text display shows the odd labels as they are
    assert _check_margins_numbers(m, str(m))[0] == "1#lo<2"


# ------------------------------------------------------------------------------------------ emmeans
def _r_rows(lines: list[str], start: str | None) -> list[list[str]]:
    """The rows (split) of the table after the line ``start`` (None: from the top) up to the
    next blank line."""
    i = 0 if start is None else lines.index(start) + 1
    out = []
    while i < len(lines) and lines[i].strip():
        out.append(lines[i].split())
        i += 1
    return out


def test_emmeans_text_holds_the_results_numbers(odd_fit):
    em = odd_fit.emmeans("pairwise ~ phase")
    text = str(em)
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[0] == "$emmeans" and "$contrasts" in lines
    assert "P value adjustment: tukey method for comparing a family of 3 estimates" in lines
    assert lines.count("Degrees-of-freedom method: kenward-roger") == 2
    means = _r_rows(lines, "$emmeans")
    assert means[0] == ["phase", "emmean", "SE", "df", "lower.CL", "upper.CL"]
    for row, (_, r) in zip(means[1:], em.emmeans.iterrows(), strict=True):
        assert row[0] == r["phase"]
        for got, col in zip(row[1:], ("emmean", "std_error", "df", "conf_low", "conf_high")):
            assert float(got) == pytest.approx(float(r[col]), rel=6e-7, abs=0)
    con = _r_rows(lines, "$contrasts")
    assert con[0] == ["contrast", "estimate", "SE", "df", "t.ratio", "p.value"]
    for row, (_, r) in zip(con[1:], em.contrasts.iterrows(), strict=True):
        assert " ".join(row[:3]) == r["contrast"]
        for got, col in zip(row[3:7], ("estimate", "std_error", "df", "statistic")):
            assert float(got) == pytest.approx(float(r[col]), rel=6e-7, abs=0)
        assert abs(float(row[7]) - float(r["p_value"])) <= 5e-5 + 1e-12
    r = repr(em)
    assert "\n" not in r and "array" not in r and len(r) < 200
    assert repr(em.grid) == "ReferenceGrid(points=3, variables=('Days', 'phase'), factors=('phase',))"
    markup = em._repr_html_()
    assert "lo&lt;2 - mid&amp;x" in markup and "lo<2" not in markup
    p = _html(markup)
    assert "P value adjustment: tukey method for comparing a family of 3 estimates" in "".join(p.text)


# ------------------------------------------------------------------------------------------ R's own print
R_SETUP = """
suppressMessages({library(lme4); library(emmeans); library(pbkrtest)})
ss <- sleepstudy
ss$phase <- cut(ss$Days, c(-1, 2, 5, 9), labels = c("early", "mid", "late"))
m1 <- lmer(Reaction ~ Days * phase + (1 | Subject), ss)
m0 <- lmer(Reaction ~ Days + (1 | Subject), ss)
n0 <- lmer(Reaction ~ 1 + (1 | Subject), ss)
n2 <- lmer(Reaction ~ Days + I(Days^2) + (1 | Subject), ss)
"""


@pytest.fixture(scope="module")
def r_env():
    import rpy2.robjects as ro

    env = ro.Environment()
    ro.r["eval"](ro.r["parse"](text=R_SETUP), envir=env)
    return ro, env


def _r_print(r_env, expr: str) -> list[str]:
    ro, env = r_env
    out = ro.r["eval"](ro.r["parse"](text=f"suppressMessages(capture.output(print({expr})))"), envir=env)
    return [str(line).rstrip() for line in out]


def _agrees_at_printed_digits(ours: str, theirs: str) -> bool:
    """``ours`` (more digits) is R's printed ``theirs`` to within a unit of its last digit (R
    rounds some columns twice: emmeans shows a df of 36.44865 as 36.5, via 36.45)."""
    if ours == theirs:
        return True
    try:
        t = float(theirs)
        o = float(ours)
    except ValueError:
        return False
    mantissa, _, exponent = theirs.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return abs(o - t) <= 10.0 ** (int(exponent or 0) - decimals) * (1 + 1e-9)


@pytest.fixture(scope="module")
def lme4_fits():
    df = _sleep(["early", "mid", "late"])
    return (hlmbridge.fit("Reaction ~ Days + (1 | Subject)", df, engine="lme4"),
            hlmbridge.fit("Reaction ~ Days * phase + (1 | Subject)", df, engine="lme4"))


EMMEANS_CASES = [
    (("pairwise ~ phase",), {}, "emmeans(m1, pairwise ~ phase)"),
    (("pairwise ~ phase",), {"adjust": "holm"}, "emmeans(m1, pairwise ~ phase, adjust = 'holm')"),
    (("~ phase",), {"df_method": "asymptotic"}, "emmeans(m1, ~ phase, lmer.df = 'asymptotic')"),
    (("pairwise ~ Days | phase",), {"at": {"Days": [0, 9]}},
     "emmeans(m1, pairwise ~ Days | phase, at = list(Days = c(0, 9)))"),
]


@pytest.mark.requires_r
@pytest.mark.parametrize(("args", "kwargs", "r_call"), EMMEANS_CASES, ids=[c[2] for c in EMMEANS_CASES])
def test_emmeans_prints_as_r_emmeans_prints(r_env, lme4_fits, args, kwargs, r_call):
    em = lme4_fits[1].emmeans(*args, **kwargs)
    ours = [line.rstrip() for line in str(em).splitlines()]
    theirs = _r_print(r_env, r_call)

    def prose(lines: list[str]) -> list[str]:  # everything but the tables' rows
        return [line for line in lines if line and not line.startswith(" ")]

    assert prose(ours) == prose(theirs)

    def headings(lines: list[str]) -> list[int]:  # each table's heading line ($emmeans, "phase = early:")
        return [i for i, line in enumerate(lines) if line.startswith("$") or line.endswith(":")]

    hours, htheirs = headings(ours), headings(theirs)
    assert [ours[i] for i in hours] == [theirs[i] for i in htheirs]
    compared = 0
    for i, j in zip(hours or [-1], htheirs or [-1]):
        a, b = _rows_after(ours, i), _rows_after(theirs, j)
        if not a:
            continue  # "$emmeans" directly above "phase = early:"
        assert a[0] == b[0]  # column names
        assert len(a) == len(b)
        for ra, rb in zip(a[1:], b[1:]):
            assert len(ra) == len(rb)
            assert all(_agrees_at_printed_digits(x, y) for x, y in zip(ra, rb)), (ra, rb)
            compared += 1
    assert compared == len(em.emmeans) + (0 if em.contrasts is None else len(em.contrasts))


def _rows_after(lines: list[str], i: int) -> list[list[str]]:
    """The table rows (split) after line ``i`` up to a blank line; none when a heading follows."""
    out = []
    for line in lines[i + 1:]:
        if not line.strip() or line.startswith("$") or line.endswith(":"):
            break
        out.append(line.split())
    return out


def _legend(lines: list[str]) -> list[str]:
    """R's legend quotes depend on its locale: compare them as ASCII."""
    return [line.replace("\u2018", "'").replace("\u2019", "'") for line in lines]


@pytest.mark.requires_r
def test_anova_of_two_models_prints_as_lme4(r_env, lme4_fits):
    m0, m1 = lme4_fits
    table = anova(m0, m1, names=("m0", "m1"))
    ours = [line.rstrip() for line in str(table).splitlines()]
    assert ours[0] == "refitting model(s) with ML (instead of REML)"  # lme4's message
    theirs = _r_print(r_env, "anova(m0, m1)")
    assert theirs[0] == "Data: ss"  # hlmbridge does not know the data's name
    assert ours[1:] == theirs[1:]
    assert type(table.round(3)) is pd.DataFrame  # derived frames print as frames (README example)
    p = _html(table._repr_html_())
    assert "refitting model(s) with ML (instead of REML)" in "".join(p.text)
    assert f"{table['chisq'].iloc[1]:.4f}" in p.cells


@pytest.mark.requires_r
def test_anova_of_three_models_prints_stars_and_tiny_p_as_lme4(r_env):
    df = _sleep(["early", "mid", "late"])
    fits = [hlmbridge.fit(f, df, engine="lme4") for f in (
        "Reaction ~ 1 + (1 | Subject)", "Reaction ~ Days + (1 | Subject)",
        "Reaction ~ Days + I(Days^2) + (1 | Subject)")]
    ours = [line.rstrip() for line in str(anova(*fits, names=("n0", "m0", "n2"))).splitlines()]
    theirs = _r_print(r_env, "anova(n0, m0, n2)")
    assert any("<2e-16 ***" in line for line in ours)
    assert _legend(ours[1:]) == _legend(theirs[1:])


@pytest.mark.requires_r
@pytest.mark.parametrize(("large", "small", "ndf"), [("m1", "m0", 4), ("m0", "n0", 1)])
def test_pbmodcomp_prints_as_pbkrtest_summary(r_env, large, small, ndf):
    """pbkrtest's reference distribution and statistic in a PBModComp: its printed summary is R's."""
    ro, env = r_env
    ro.r["eval"](ro.r["parse"](text=f"set.seed(3); pb <- PBmodcomp({large}, {small}, nsim = 20)"), envir=env)
    ref = [float(x) for x in ro.r["eval"](ro.r["parse"](text="as.numeric(pb$ref)"), envir=env)]
    tobs = float(ro.r["eval"](ro.r["parse"](text="as.numeric(pb$LRTstat['tobs'])"), envir=env)[0])
    ctime = float(ro.r["eval"](ro.r["parse"](text="as.numeric(pb$ctime)"), envir=env)[0])
    formula = {n: str(ro.r["eval"](ro.r["parse"](text=f"deparse(formula({n}))"), envir=env)[0])
               for n in (large, small)}
    pb = PBModComp(tobs, ndf, tuple(ref), tuple(range(len(ref))), (), len(ref), 3, "lme4",
                   formula[large], formula[small], ctime)
    ours = [line.rstrip() for line in str(pb).splitlines()]
    theirs = _r_print(r_env, "summary(pb)")
    assert ours[0] == theirs[0]  # Bootstrap test; time: ...; samples: 20; extremes: k;
    assert ours[1] == theirs[1]  # large : formula
    table_ours = [line.split() for line in ours if line and line.split()[0] in
                  ("stat", "LRT", "PBtest", "Gamma", "Bartlett", "F")]
    table_theirs = [line.split() for line in theirs if line and line.split()[0] in
                    ("stat", "LRT", "PBtest", "Gamma", "Bartlett", "F")]
    assert table_ours[0] == table_theirs[0] == ["stat", "df", "ddf", "p.value"]
    for a, b in zip(table_ours[1:], table_theirs[1:], strict=True):
        assert a[0] == b[0] and len(a) == len(b), (a, b)
        assert all(_agrees_at_printed_digits(x, y) for x, y in zip(a[1:], b[1:])), (a, b)
    assert _legend([line for line in ours if line.startswith(("---", "Signif."))]) == \
        _legend([line for line in theirs if line.startswith(("---", "Signif."))])
    r = repr(pb)
    assert "\n" not in r and len(r) < 200 and "ref=" not in r
    _html(pb._repr_html_())


def test_pbmodcomp_html_escapes_and_notes_failures():
    pb = PBModComp(2.5, 1, (0.5, 3.0, 0.0), (0, 1, 2), ((3, "FitError: x<y"),), 4, 1, "statsmodels",
                   "y ~ a<b", "y ~ c&d", float("nan"))
    text = str(pb)
    assert "Requested samples: 3 Used samples: 2 Extremes: 1" in text.splitlines()  # a replicate at 0
    assert "large : y ~ a<b" in text and "Note: 1 of 4 replicate(s) failed" in text
    markup = pb._repr_html_()
    assert "a&lt;b" in markup and "c&amp;d" in markup and "a<b" not in markup
    p = _html(markup)
    tab = pb.table()
    assert all(f"{v:.4f}" in p.cells for v in tab["stat"])
    assert not math.isnan(float(np.asarray(tab["p_value"])[0]))
