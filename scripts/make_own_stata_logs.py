"""Write fixtures/egsingle/: the data (mlmRev's egsingle) and Stata logs of our own making.

The logs are NOT Stata output: they are written here, in Stata's exact text layout (Stata 13-15
ASCII, and the same log converted to Stata 16+'s Unicode box drawing), from real lme4 fits of
the models they show (hlmbridge's lme4 engine). They exercise the log reader on what published
logs contain (``xtmixed`` with ``///`` continuations and sd()/corr() rows, a three-level model
with its grouping table, ``estat recov, corr``, ``estimates table``, a two-way ``tab``, data
preparation with ``egen``/``gen``) and let import-stata -> validate round-trip them.

    .venv/bin/python scripts/make_own_stata_logs.py          # rewrite fixtures/egsingle/*
    .venv/bin/python scripts/make_own_stata_logs.py --check  # rebuild in memory and compare

Needs R with mlmRev (the data) and lme4.
"""

from __future__ import annotations

import argparse
import io
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "fixtures" / "egsingle"
R_EXPORT = r"""
suppressMessages(library(mlmRev)); data(egsingle)
d <- egsingle
out <- data.frame(schoolid = as.integer(as.character(d$schoolid)), childid = as.numeric(as.character(d$childid)),
                  year = d$year, grade = d$grade, math = d$math, female = as.integer(d$female == "Female"),
                  black = as.integer(as.character(d$black)), hispanic = as.integer(as.character(d$hispanic)),
                  lowinc = d$lowinc)
write.csv(out, stdout(), row.names = FALSE)
"""


def export_data() -> pd.DataFrame:
    text = subprocess.run(["Rscript", "-e", R_EXPORT], check=True, capture_output=True, text=True).stdout
    df = pd.read_csv(io.StringIO(text))
    for c in ("female", "black", "hispanic"):
        df[c] = df[c].astype("int8")
    df["schoolid"] = df["schoolid"].astype("int32")
    return df


def write_dta(df: pd.DataFrame, path: Path) -> bytes:
    buf = io.BytesIO()
    df.to_stata(buf, write_index=False, version=118, time_stamp=datetime(2000, 1, 1),
                data_label="mlmRev egsingle (Bryk & Raudenbush), hlmbridge copy")
    return buf.getvalue()


def g(x: float, width: int = 10) -> str:
    from hlmbridge.results.display import format_g

    return format_g(x, width)


def mixed_block(res, *, sd: bool) -> list[str]:
    """hlmbridge's Stata-layout summary, with sd()/corr() rows when ``sd`` (xtmixed's default)."""
    text = res.summary()
    lines = text.split("\n")
    keep: list[str] = []
    for t in lines:
        if t.startswith(("[lme4", "Warning:", "Note: boundary")):
            continue
        keep.append(t)
    while keep and not keep[-1].strip():
        keep.pop()
    # Stata prints the log likelihood with 8 significant digits, "restricted" under REML
    digits = 8 - len(str(int(abs(res.loglik))))
    name = "Log restricted-likelihood" if res.method == "reml" else "Log likelihood"
    keep = [f"{name + ' = ' + f'{res.loglik:.{digits}f}':<48}{t[48:]}" if t.startswith("Log likelihood") else t
            for t in keep]
    if not sd:
        return keep
    rows = res.random_sd()
    out, k = [], 0
    for t in keep:
        if "|" in t and t.split("|")[0].strip().startswith(("var(", "cov(")) and len(t.split("|")[1].split()) == 4:
            r = rows.iloc[k]
            k += 1
            out.append(f"{r.stata_term:>28} | {g(r.estimate)} {g(r.std_error)}    {g(r.conf_low)}  {g(r.conf_high)}")
        else:
            out.append(t)
    assert k == len(rows), (k, len(rows))
    return out


def recov_corr(res) -> list[str]:
    out: list[str] = []
    for level, m in res.recov(corr=True).items():
        cols = list(m.columns)
        out += [f"Random-effects correlation matrix for level {level}", ""]
        out.append(" " * 13 + "|" + "".join(f"{c:>10} " for c in cols).rstrip())
        out.append("-" * 13 + "+" + "-" * (11 * len(cols)))
        for i, r in enumerate(cols):
            vals = "".join(f" {g(float(m.loc[r, c]))}" for c in cols[: i + 1])
            out.append(f"{r:>12} |{vals}")
        out.append("")
    return out[:-1]


def estimates_table(named: dict[str, object]) -> list[str]:
    from hlmbridge.reference.quantities import eb_vector

    ebs = {n: eb_vector(r) for n, r in named.items()}
    keys: list[str] = []
    for eb in ebs.values():
        for k in eb:
            if k not in keys:
                keys.append(k)
    eqs: list[str] = []
    for k in keys:
        eq = k.split(":")[0]
        if eq not in eqs:
            eqs.append(eq)
    width = 13 * len(named) + 1
    out = ["-" * (14 + width), f"{'Variable':>12} |" + "".join(f"{n:^13}" for n in named).rstrip(),
           "-" * 13 + "+" + "-" * width]
    for j, eq in enumerate(eqs):
        if j:
            out.append("-" * 13 + "+" + "-" * width)
        out.append(f"{eq:<12} |")
        for k in [k for k in keys if k.split(":")[0] == eq]:
            col = k.split(":", 1)[1]
            b = "".join(f" {g(ebs[n][k][0], 11)} " if k in ebs[n] else " " * 13 for n in named)
            se = "".join(f" {g(ebs[n][k][1], 11)} " if k in ebs[n] and ebs[n][k][1] is not None else " " * 13
                         for n in named)
            out.append(f"{col:>12} |{b}".rstrip())
            out.append(f"{'':>12} |{se}".rstrip())
    out.append("-" * (14 + width))
    out.append(f"{'legend: b/se':>{14 + width}}")
    return out


def tab2(df: pd.DataFrame, rv: str, cv: str) -> list[str]:
    ct = pd.crosstab(df[rv], df[cv])
    cols = list(ct.columns)
    w = 11 * len(cols)
    out = [f"{'':>11}|{cv:^{w}}".rstrip(), f"{rv:>10} |" + "".join(f"{c:>10} " for c in cols) + "|     Total",
           "-" * 11 + "+" + "-" * w + "+" + "-" * 10]
    for r in ct.index:
        out.append(f"{r:>10} |" + "".join(f"{ct.loc[r, c]:>10,} " for c in cols) + f"| {ct.loc[r].sum():>9,} ")
    out.append("-" * 11 + "+" + "-" * w + "+" + "-" * 10)
    out.append(f"{'Total':>10} |" + "".join(f"{ct[c].sum():>10,} " for c in cols) + f"| {ct.values.sum():>9,} ")
    return out


def summarize(df: pd.DataFrame, var: str, cond: pd.Series | None = None) -> list[str]:
    x = df.loc[cond, var] if cond is not None else df[var]
    x = x.dropna().astype(float)
    return ["    Variable |        Obs        Mean    Std. dev.       Min        Max",
            "-------------+---------------------------------------------------------",
            f"{var:>12} | {len(x):>10,} {g(x.mean(), 11)} {g(x.std(), 11)} {g(x.min(), 9)} {g(x.max(), 10)}"]


def xtreg_block(res, frame: pd.DataFrame) -> list[str]:
    """``xtreg ..., i(g) mle`` output (Stata 18's layout) for an ML random-intercept fit, with every SE
    from the full observed information (hlmbridge.reference.xtreg_information)."""
    from scipy import stats

    from hlmbridge.design.build import build_design
    from hlmbridge.reference.xtreg_information import xtreg_information

    d = build_design(res.spec, frame)
    codes = np.unique(d.levels[0].codes, return_inverse=True)[1]
    fx = res.fixed.set_index("stata_term")
    beta = fx.loc[list(d.fixed_stata), "estimate"].to_numpy(float)
    sd = res.random_sd().set_index("stata_term")["estimate"]
    su, se_ = float(sd["sd(_cons)"]), float(sd["sd(Residual)"])
    xi = xtreg_information(d.y, d.X, codes, beta, su, se_)
    z = float(stats.norm.ppf(0.975))
    idx = [k for k, t in enumerate(d.fixed_stata) if t != "_cons"]
    chi2 = float(beta[idx] @ np.linalg.solve(xi.vcov[np.ix_(idx, idx)], beta[idx]))
    grp = res.groups[0]
    digits = 8 - len(str(int(abs(res.loglik))))
    out = [f"{'Random-effects ML regression':<54}Number of obs    = {res.nobs:,}",
           f"{'Group variable: ' + grp.group:<54}Number of groups = {grp.n_groups:>5,}", "",
           f"{'Random effects u_i ~ Gaussian':<54}Obs per group:",
           f"{'':67}min = {grp.min:>5,}", f"{'':67}avg = {grp.mean:>5.1f}", f"{'':67}max = {grp.max:>5,}", "",
           f"{'':54}{'Wald chi2(' + str(len(idx)) + ')':<17}= {chi2:>6.2f}",
           f"{'Log likelihood = ' + f'{res.loglik:.{digits}f}':<54}Prob > chi2      = {stats.chi2.sf(chi2, len(idx)):>6.4f}",
           "", "-" * 78,
           f"{res.spec.response:>12} | Coefficient  Std. err.      z    P>|z|     [95% conf. interval]",
           "-" * 13 + "+" + "-" * 64]
    for k, t in enumerate(d.fixed_stata):
        b, s = float(beta[k]), float(xi.beta_se[k])
        out.append(f"{t:>12} | {g(b)} {g(s)} {b / s:8.2f}   {2 * stats.norm.sf(abs(b / s)):.3f}  "
                   f"{g(b - z * s, 11)}  {g(b + z * s)}")
    out.append("-" * 13 + "+" + "-" * 64)
    for name, est, s in (("/sigma_u", su, xi.sigma_u_se), ("/sigma_e", se_, xi.sigma_e_se)):
        h = z * s / est
        out.append(f"{name:>12} | {g(est)} {g(s)}                   {g(est * math.exp(-h), 11)}  "
                   f"{g(est * math.exp(h))}")
    icc = res.icc().iloc[0]  # rho's interval: the logit-scale one of estat icc (Stata's xtreg differs)
    out.append(f"{'rho':>12} | {g(xi.rho)} {g(xi.rho_se)}                   {g(float(icc['conf_low']), 11)}  "
               f"{g(float(icc['conf_high']))}")
    out.append("-" * 78)
    out.append(f"LR test of sigma_u=0: chibar2(01) = {res.lr_chi2:.2f}             Prob >= chibar2 = {res.lr_p:.3f}")
    return out


def icc_table(res) -> list[str]:
    """``estat icc``: one row per level, a nested level named inner|outer as Stata prints it."""
    out = ["-" * 78, "                       Level |        ICC   Std. err.     [95% conf. interval]",
           "-" * 29 + "+" + "-" * 48]
    for r in res.icc().itertuples(index=False):
        label = "|".join(reversed(str(r.level).split("|")))
        out.append(f"{label:>28} | {g(r.estimate)} {g(r.std_error)}    {g(r.conf_low)}  {g(r.conf_high)}")
    return out + ["-" * 78]


def build_log(df: pd.DataFrame) -> str:
    import hlmbridge

    from hlmbridge.reference.data_prep import replay

    steps = ["egen myear = mean(year), by(childid)", "gen cyear = year - myear", "egen first = tag(schoolid)"]
    prepared = replay(df, steps).frame
    m3 = hlmbridge.fit("mixed math year || schoolid: year, cov(un) || childid:, mle", prepared, engine="lme4")
    m2 = hlmbridge.fit("mixed math year || schoolid: || childid:, mle", prepared, engine="lme4")
    mq = hlmbridge.fit("mixed math cyear myear || schoolid:, reml", prepared, engine="lme4")
    prepared2 = replay(prepared, ["gen yr = year"]).frame
    mc = hlmbridge.fit("mixed math c.yr##c.yr || schoolid:, mle", prepared2, engine="lme4")
    L: list[str] = []

    def cmd(c: str, *cont: str) -> None:
        L.append(f". {c}" + (" ///" if cont else ""))
        for k, more in enumerate(cont):
            L.append(f">     {more}" + (" ///" if k < len(cont) - 1 else ""))

    cmd("use egsingle, clear")
    L += ["(mlmRev egsingle (Bryk & Raudenbush), hlmbridge copy)", ""]
    cmd("tab female black")
    L += [""] + tab2(prepared, "female", "black") + [""]
    cmd(steps[0] + "   // each child's mean year")
    L.append("")
    cmd(steps[1])
    L.append("")
    cmd(steps[2])
    L.append("")
    cmd("sum lowinc if first")
    L += [""] + summarize(prepared, "lowinc", prepared["first"] == 1) + [""]
    cmd("xtmixed math year", "|| schoolid: year, cov(un)", "|| childid:, mle")
    L += ["", "Performing EM optimization: ", "", "Performing gradient-based optimization: ", "",
          f"Iteration 0:   log likelihood = {m3.loglik:.4f}  ", f"Iteration 1:   log likelihood = {m3.loglik:.4f}  ",
          "", "Computing standard errors:", ""] + mixed_block(m3, sd=True) + [""]
    cmd("estimates store m3")
    L.append("")
    cmd("estat recov, corr")
    L += [""] + recov_corr(m3) + [""]
    cmd("quietly mixed math year || schoolid: || childid:, mle")
    L.append("")
    cmd("estimates store m2")
    L.append("")
    cmd("estimates table m2 m3, se")
    L += [""] + estimates_table({"m2": m2, "m3": m3}) + [""]
    cmd("estimates restore m2")
    L.append("")
    cmd("estat icc")
    L += ["", "Intraclass correlation", ""] + icc_table(m2) + [""]
    cmd("xtmixed math cyear myear || schoolid:")
    L += [""] + mixed_block(mq, sd=True) + [""]
    cmd("gen yr = year")
    L.append("")
    cmd("mixed math c.yr##c.yr || schoolid:, mle")
    L += ["", "Performing EM optimization: ", "", "Performing gradient-based optimization: ", "",
          f"Iteration 0:   log likelihood = {mc.loglik:.4f}  ", f"Iteration 1:   log likelihood = {mc.loglik:.4f}  ",
          "", "Computing standard errors:", ""] + mixed_block(mc, sd=False) + [""]
    cmd("estat icc")
    L += ["", "Intraclass correlation", ""] + icc_table(mc) + [""]
    mx = hlmbridge.fit("mixed math year || schoolid:, mle", prepared2, engine="lme4")
    cmd("xtset schoolid")
    L += ["", "Panel variable: schoolid (unbalanced)", ""]
    cmd("xtreg math year, mle")
    L += ["", f"Iteration 0:   log likelihood = {mx.loglik:.4f}", ""]
    L += xtreg_block(mx, prepared2) + [""]
    cmd("log close")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    from hlmbridge.reference.stata_log import to_unicode_layout

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    df = export_data()
    dta = write_dta(df, OUT / "egsingle.dta")
    from hlmbridge.data import read_dta

    tmp = OUT / ".egsingle.tmp.dta"
    OUT.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(dta)
    try:
        frame = read_dta(tmp)
    finally:
        tmp.unlink()
    text = build_log(frame)
    files = {"egsingle.dta": dta, "logs/egsingle_ascii.log": text.encode(),
             "logs/egsingle_unicode.log": to_unicode_layout(text).encode()}
    if a.check:
        bad = [n for n, b in files.items() if (OUT / n).read_bytes() != b]
        print("differs: " + ", ".join(bad) if bad else "fixtures/egsingle is up to date")
        return 1 if bad else 0
    for n, b in files.items():
        (OUT / n).parent.mkdir(parents=True, exist_ok=True)
        (OUT / n).write_bytes(b)
    print(f"wrote {', '.join(files)} under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
