"""Turn fitted results (and data summaries) into the keyed numbers a :class:`Reference` holds.

:func:`quantities_for` computes, for every number of a reference that an engine can
produce, an :class:`Actual` (value and, where one exists, the standard error of the
estimate). Models are looked up by the command the fixture names
(``results_by_command``). Stata ``di`` expressions are never evaluated: each known
expression maps, through the explicit :data:`DI_TABLE`, to a named derived quantity in
:data:`DERIVED`, and the e(b) columns it reads are checked against the model.

Examples
--------
>>> normalize_expression("exp(base[1,2])^2 ")
'exp(base[1,2])^2'
>>> DI_TABLE[normalize_expression("exp(base[1,2])^2")][0]
'var_cons'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hlmbridge.errors import FixtureError, UsageError

__all__ = ["DERIVED", "DI_TABLE", "Actual", "eb_vector", "normalize_expression", "quantities_for"]


@dataclass(frozen=True)
class Actual:
    """A computed number: value, the SE of the estimate when one exists, boundary flag."""

    value: float
    std_error: float | None = None
    singular: bool = False


def normalize_expression(expr: str) -> str:
    """A ``di`` expression without whitespace (the key of :data:`DI_TABLE`)."""
    return re.sub(r"\s+", "", expr)


# --------------------------------------------------------------------------------------
# e(b) in Stata's metric
def eb_vector(res: Any) -> dict[str, tuple[float, float | None]]:
    """Stata's e(b) from a FitResult: ``{"eq:col": (value, se)}`` in Stata's order.

    Fixed effects (``<depvar>:<term>``), then per level ``lns<L>_1_<k>`` (log SD of random
    term k, slopes as written then ``_cons``), ``atr<L>_1_<j>_<k>`` (atanh correlation,
    unstructured only), and ``lnsig_e`` (log residual SD). SEs by the delta method from
    the variance-scale SEs (``se(lns) = se(var)/(2 var)``); none for ``atr``.
    """
    out: dict[str, tuple[float, float | None]] = {}
    fx = res.fixed
    resp = res.spec.response
    for r in fx.itertuples(index=False):
        out[f"{resp}:{r.stata_term}"] = (float(r.estimate), float(r.std_error))
    rnd = res.random
    # keyed by level too: var(_cons) repeats at every level of a three-level model
    by_term = {(r.group, r.stata_term): r for r in rnd.itertuples(index=False)}
    sd_rows = {(r.group, r.stata_term): r for r in res.random_sd().itertuples(index=False)}

    def lns(label: str, group: str = "Residual") -> tuple[float, float | None]:
        r = by_term[(group, label)]
        v = float(r.estimate)
        se = float(r.std_error) / (2 * v) if v > 0 and r.std_error == r.std_error else None
        return 0.5 * math.log(v), se

    for li, lv in enumerate(res.spec.levels, start=1):
        terms = lv.stata_terms
        # Stata's parameter names per level: level index, 1, term index (all levels use _1_ for one block)
        for k, t in enumerate(terms, start=1):
            out[f"lns{li}_1_{k}:_cons"] = lns(f"var({t})", lv.group)
        if lv.cov in ("unstructured", "exchangeable"):
            for j in range(len(terms)):
                for k in range(j + 1, len(terms)):
                    cov = by_term.get((lv.group, f"cov({terms[j]},{terms[k]})"))
                    if cov is None:
                        continue
                    va = float(by_term[(lv.group, f"var({terms[j]})")].estimate)
                    vb = float(by_term[(lv.group, f"var({terms[k]})")].estimate)
                    corr = float(cov.estimate) / math.sqrt(va * vb)
                    val = math.atanh(corr) if abs(corr) < 1 else math.copysign(math.inf, corr)
                    sd_row = sd_rows.get((lv.group, f"corr({terms[j]},{terms[k]})"))
                    se = (float(sd_row.std_error) / (1 - corr * corr)
                          if sd_row is not None and abs(corr) < 1 and sd_row.std_error == sd_row.std_error else None)
                    out[f"atr{li}_1_{j + 1}_{k + 1}:_cons"] = (val, se)
    out["lnsig_e:_cons"] = lns("var(Residual)")
    return out


def _var_of(res: Any, label: str) -> tuple[float, float | None]:
    for r in res.random.itertuples(index=False):
        if r.stata_term == label:
            return float(r.estimate), float(r.std_error)
    raise FixtureError(f"the {res.engine} result has no {label}")


def _var_cons(res: Any) -> Actual:
    v, se = _var_of(res, "var(_cons)")
    return Actual(v, se, bool(res.singular))


def _icc(res: Any) -> Actual:
    t, _ = _var_of(res, "var(_cons)")
    s, _ = _var_of(res, "var(Residual)")
    return Actual(t / (t + s), None, bool(res.singular))


def _ve(part: str) -> Callable[[Any, Any], Actual]:
    def f(base: Any, model: Any) -> Actual:
        from hlmbridge import variance_explained  # provided by the postestimation layer

        ve = variance_explained(base, model)
        return Actual(float(getattr(ve, part)), None, bool(base.singular or model.singular))

    return f


#: derived quantity -> (number of models it takes, function of those FitResults)
DERIVED: Mapping[str, tuple[int, Callable[..., Actual]]] = {
    "var_cons": (1, _var_cons),
    "icc": (1, _icc),
    "variance_explained.level2": (2, _ve("level2")),
    "variance_explained.level1": (2, _ve("level1")),
    "variance_explained.total": (2, _ve("total")),
}

#: normalized ``di`` expression -> (derived quantity, model names in argument order,
#: the e(b) column each ``NAME[1,k]`` must be for the expression to mean that quantity)
DI_TABLE: Mapping[str, tuple[str, tuple[str, ...], Mapping[str, str]]] = {
    normalize_expression(k): v
    for k, v in {
        "exp(e(b)[1,2])^2": ("var_cons", ("e(b)",), {"e(b)[1,2]": "lns1_1_1:_cons"}),
        "exp(e(b)[1,2])^2/(exp(e(b)[1,2])^2 + exp(e(b)[1,3])^2)": (
            "icc", ("e(b)",), {"e(b)[1,2]": "lns1_1_1:_cons", "e(b)[1,3]": "lnsig_e:_cons"}),
        "exp(base[1,2])^2": ("var_cons", ("base",), {"base[1,2]": "lns1_1_1:_cons"}),
        "(exp(base[1,2])^2 - exp(ses[1,3])^2)/exp(base[1,2])^2": (
            "variance_explained.level2", ("base", "ses"),
            {"base[1,2]": "lns1_1_1:_cons", "ses[1,3]": "lns1_1_1:_cons"}),
        "(exp(base[1,3])^2 - exp(ses[1,4])^2)/exp(base[1,3])^2": (
            "variance_explained.level1", ("base", "ses"),
            {"base[1,3]": "lnsig_e:_cons", "ses[1,4]": "lnsig_e:_cons"}),
        "(exp(base[1,2])^2+ exp(base[1,3])^2 - exp(ses[1,3])^2 - exp(ses[1,4])^2)"
        "/(exp(base[1,2])^2 + exp(base[1,3])^2)": (
            "variance_explained.total", ("base", "ses"),
            {"base[1,2]": "lns1_1_1:_cons", "base[1,3]": "lnsig_e:_cons",
             "ses[1,3]": "lns1_1_1:_cons", "ses[1,4]": "lnsig_e:_cons"}),
        "(exp(base[1,2])^2 - exp(e(b)[1,3])^2)/exp(base[1,2])^2": (
            "variance_explained.level2", ("base", "e(b)"),
            {"base[1,2]": "lns1_1_1:_cons", "e(b)[1,3]": "lns1_1_1:_cons"}),
    }.items()
}

# --------------------------------------------------------------------------------------
_HEADER = {
    "nobs": "nobs", "n_groups": "n_groups", "group_min": "group_min", "group_mean": "group_mean",
    "group_max": "group_max", "wald_chi2": "wald_chi2", "wald_df": "wald_df", "wald_p": "wald_p",
    "loglik": "loglik",
}
_LR = {"df": "lr_df", "chi2": "lr_chi2", "p_value": "lr_p"}
_HSB_FILES = {"hsb1.dta": "students", "hsb2.dta": "schools", "hsb.dta": "combined"}


def _ereturn(res: Any, name: str) -> float:
    rnd = res.random
    n_var = int((rnd["kind"] == "var").sum())
    n_cov = int((rnd["kind"] == "cov").sum())
    k_f = len(res.fixed)
    table = {
        "e(rank)": k_f + len(rnd), "e(k_f)": k_f, "e(k_r)": len(rnd), "e(k)": k_f + len(rnd),
        "e(k_rs)": n_var, "e(k_rc)": n_cov, "e(k_res)": 0, "e(converged)": int(bool(res.converged)),
        "e(ll)": res.loglik, "e(ll_c)": res.loglik_linear, "e(df_c)": res.lr_df, "e(chi2_c)": res.lr_chi2,
        "e(p_c)": res.lr_p, "e(N)": res.nobs, "e(df_m)": res.wald_df, "e(p)": res.wald_p,
        "e(chi2)": res.wald_chi2,
    }
    return float(table[name])


def _lookup(res_by_cmd: Mapping[str, Any], command: str, case: str) -> Any:
    try:
        return res_by_cmd[command]
    except KeyError:
        raise UsageError(f"case {case}: no result for the model {command!r}") from None


def _frame_row(df: Any, col: str, label: str) -> Any:
    hit = df[df[col] == label]
    return None if hit.empty else hit.iloc[0]


def _mixed_like(ref: Any, v: Any, res: Any, cache: dict[str, Any], xtreg: bool = False) -> Actual | None:
    from hlmbridge.results import postestimation as pe

    sec, sing = v.path[0], bool(res.singular)
    if ref.meta.get("df_method") is not None and sec in ("header", "fixed"):
        _check_df_method(ref, v, res)  # t-based p-values and CIs too: never judged against a z table
    if sec == "header" and v.path[1] in _DF_HEADER:
        return _df_header(ref, v, res, cache)
    if sec == "fixed" and v.path[2] in ("t", "df"):
        df = cache.setdefault(f"fixed:{id(res)}", res.fixed)
        row = _frame_row(df, "stata_term", v.path[1])
        return None if row is None else Actual(float(row["statistic" if v.path[2] == "t" else "df"]), None, sing)
    if sec == "header":
        return Actual(float(getattr(res, _HEADER[v.path[1]])), None, sing)
    if sec == "lr":
        return Actual(float(getattr(res, _LR[v.path[1]])), None, sing)
    if sec == "groups":
        g = next((g for g in res.groups if g.group == v.path[1]), None)
        if g is None:
            return None
        return Actual(float({"n_groups": g.n_groups, "group_min": g.min, "group_mean": g.mean,
                             "group_max": g.max}[v.path[2]]), None, sing)
    if sec == "random":
        return _random_row(v, res, cache)
    if sec in ("fixed", "random"):
        df = cache.setdefault(f"{sec}:{id(res)}", res.fixed if sec == "fixed" else res.random)
        row = _frame_row(df, "stata_term", v.path[1])
        if row is None:
            return None
        se = float(row["std_error"]) if v.path[2] in ("estimate", "conf_low", "conf_high") else None
        return Actual(float(row[v.path[2]]), se, sing)
    if sec == "icc":
        df = cache.setdefault(f"icc:{id(res)}", pe.icc(res))
        row = _frame_row(df, "level", v.path[1])
        if row is None and "|" in v.path[1]:  # Stata names a nested level inner|outer
            row = _frame_row(df, "level", "|".join(reversed(v.path[1].split("|"))))
        if row is None:
            return None
        se = float(row["std_error"]) if v.path[2] != "std_error" else None
        return Actual(float(row[v.path[2]]), se, sing)
    if sec == "ic":
        df = cache.setdefault(f"ic:{id(res)}", pe.ic(res))
        return Actual(float(df.iloc[0][v.path[1]]), None, sing)
    if sec in ("recov", "recov_corr"):
        mats = cache.setdefault(f"{sec}:{id(res)}", pe.recov(res, corr=sec == "recov_corr"))
        m = mats.get(v.path[1])
        if m is None or v.path[2] not in m.index or v.path[3] not in m.columns:
            return None
        return Actual(float(m.loc[v.path[2], v.path[3]]), None, sing)
    if sec == "eb":
        eb = cache.setdefault(f"eb:{id(res)}", eb_vector(res))
        if v.path[1] not in eb:
            return None
        val, se = eb[v.path[1]]
        return Actual(val, se, sing)
    if sec == "ereturn":
        return Actual(_ereturn(res, v.path[1]), None, sing)
    raise FixtureError(f"no engine computes {v.key}", path=ref.path, line=v.fixture_line)


_DF_HEADER = ("df_min", "df_avg", "df_max", "f_stat", "f_df1", "f_df2", "f_p")
_RANDOM_LABEL = re.compile(r"^(?:(?P<level>[^():]+):)?(?P<label>(?:var|cov|sd|corr)\((?P<inner>[^()]+)\))$")


def _random_row(v: Any, res: Any, cache: dict[str, Any]) -> Actual | None:
    """A random-effects row: ``var()``/``cov()`` (result.random) or ``sd()``/``corr()``
    (result.random_sd(), Stata's ``stddeviations``), at the level the key names (``level:label``)
    or the only level (the residual rows have none). After Stata's ``residuals()`` (issue 25) the
    residual block's rows (``rho``, ``var(e)``, ``male: var(e)`` ...) are the result's rows of that
    label in its ``Residual`` group."""
    if getattr(res.spec, "residuals", None) is not None:
        df = cache.setdefault(f"random:{id(res)}", res.random)
        hit = df[(df["group"] == "Residual") & (df["stata_term"] == v.path[1])]
        if len(hit) == 1:
            row = hit.iloc[0]
            se = float(row["std_error"]) if v.path[2] in ("estimate", "conf_low", "conf_high") else None
            return Actual(float(row[v.path[2]]), se, bool(res.singular))
    m = _RANDOM_LABEL.match(v.path[1])
    if m is None:
        return None
    label, level = m.group("label"), m.group("level")
    sd_scale = label.startswith(("sd(", "corr("))
    df = cache.setdefault(f"random{'_sd' if sd_scale else ''}:{id(res)}", res.random_sd() if sd_scale else res.random)
    hit = df[df["stata_term"] == label]
    if level is not None:
        hit = hit[hit["group"] == level]
    elif "Residual" not in label:
        hit = hit[hit["group"] != "Residual"]
    if len(hit) != 1:
        return None
    row = hit.iloc[0]
    se = float(row["std_error"]) if v.path[2] in ("estimate", "conf_low", "conf_high") else None
    return Actual(float(row[v.path[2]]), se, bool(res.singular))


def _check_df_method(ref: Any, v: Any, res: Any) -> None:
    """The result carries the df method the reference table was printed with."""
    from hlmbridge.reference.fixtures import STATA_DF_METHODS, df_method_family

    printed = ref.meta.get("df_method")
    want = STATA_DF_METHODS.get(str(printed))
    if not res.df_method or df_method_family(res.df_method) != want:
        raise FixtureError(f"{v.key} was printed with DF method {printed!r}, but the {res.engine} result carries "
                           f"{res.df_method or 'no df method'}: fit the model with its dfmethod()",
                           path=ref.path, line=v.fixture_line)


def _df_header(ref: Any, v: Any, res: Any, cache: dict[str, Any]) -> Actual:
    """The ``dfmethod()`` header numbers: the range of the fixed effects' df, and Stata's F test of
    every fixed effect but ``_cons`` (``F(k, ddf)``) on the result's df method."""
    sing = bool(res.singular)
    name = v.path[1]
    if name in ("df_min", "df_avg", "df_max"):
        dfs = [d for d in res.fixed_df if not math.isnan(d)]
        if not dfs:
            raise FixtureError(f"the {res.engine} result has no finite fixed-effect df", path=ref.path,
                               line=v.fixture_line)
        value = {"df_min": min(dfs), "df_max": max(dfs), "df_avg": sum(dfs) / len(dfs)}[name]
        return Actual(float(value), None, sing)
    key = f"ftest:{id(res)}"
    test = cache.get(key)
    if test is None:
        terms = list(res.fixed["stata_term"])
        rows = [[1.0 if j == k else 0.0 for j in range(len(terms))] for k, t in enumerate(terms) if t != "_cons"]
        if not rows:
            raise FixtureError(f"{v.key}: the model has no fixed effect but _cons, so Stata prints no F test",
                               path=ref.path, line=v.fixture_line)
        test = cache.setdefault(key, res.test(rows).iloc[0])
    col = {"f_stat": "f_value", "f_df1": "num_df", "f_df2": "den_df", "f_p": "p_value"}[name]
    return Actual(float(test[col]), None, sing)


def _check_di_columns(ref: Any, v: Any, models: Mapping[str, Any], cache: dict[str, Any]) -> None:
    expr = normalize_expression(str(ref.meta.get("expression", "")))
    entry = DI_TABLE.get(expr)
    if entry is None:
        raise FixtureError(f"`di {ref.meta.get('expression')}` is not in DI_TABLE", path=ref.path, line=v.fixture_line)
    for cell, want in entry[2].items():
        name, k = re.fullmatch(r"(.+)\[1,(\d+)\]", cell).groups()  # type: ignore[union-attr]
        res = models[name]
        labels = list(cache.setdefault(f"eb:{id(res)}", eb_vector(res)))
        got = labels[int(k) - 1] if int(k) <= len(labels) else None
        if got != want:
            raise FixtureError(
                f"`di {ref.meta.get('expression')}` reads {cell} as {want}, but that column of the model is {got}",
                path=ref.path, line=v.fixture_line)


def data_frame(ref: Any, cache: dict[str, Any]) -> Any:
    """The data a data case (summarize, tab, list) reads, after the log's data steps.

    The frame validate was given (``cache["data:base"]``, any data file), else the bundled HSB
    file the log's ``use`` names; then :func:`hlmbridge.reference.data_prep.replay` of the
    fixture's ``data_steps`` (cached per step list)."""
    from hlmbridge import datasets
    from hlmbridge.reference.data_prep import replay

    dataset = str(ref.meta.get("dataset", ""))
    base = cache.get("data:base") if dataset not in _HSB_FILES else None  # the bundled HSB files by name
    if base is None:
        if dataset not in _HSB_FILES:
            raise FixtureError(f"the log's data {dataset!r} is not bundled (bundled: {', '.join(_HSB_FILES)}): "
                               "give its data file to validate (--data)", path=ref.path)
        base = cache.get(f"data:{dataset}")
        if base is None:
            base = cache.setdefault(f"data:{dataset}", datasets.hsb(_HSB_FILES[dataset]))
    steps = tuple(ref.meta.get("data_steps", ()))
    lines = tuple(ref.meta.get("data_step_lines", ())) or (0,) * len(steps)
    key = f"replay:{id(base)}:{steps}"
    rep = cache.get(key)
    if rep is None:
        rep = cache.setdefault(key, replay(base, steps, lines))
    return rep


def _data_quantity(ref: Any, v: Any, cache: dict[str, Any]) -> Actual | None:
    from hlmbridge import data as hdata
    from hlmbridge.reference.data_prep import evaluate

    rep = data_frame(ref, cache)
    df = rep.frame
    sec = v.path[0]
    cond = ref.meta.get("condition") if sec == "summarize" else _tab_condition(ref)
    if cond:
        if rep.why_blocked(sorted(_names(cond))):
            return None
        try:
            mask = evaluate(str(cond), df, rep.scalars) != 0
        except Exception as exc:  # noqa: BLE001 - an expression hlmbridge cannot evaluate: no verdict
            raise FixtureError(f"cannot evaluate the condition {cond!r}: {exc}", path=ref.path) from None
        df = df.loc[mask]
    if sec == "summarize":
        if rep.why_blocked([v.path[1]]) or v.path[1] not in df.columns:
            return None
        key = f"sum:{id(rep)}:{cond}:{v.path[1]}"
        table = cache.get(key)
        if table is None:
            table = cache.setdefault(key, hdata.summarize(df, variables=[v.path[1]]))
        row = _frame_row(table, "Variable", v.path[1])
        if row is None:
            return None
        col = {"obs": "Obs", "mean": "Mean", "sd": "Std. dev.", "min": "Min", "max": "Max"}[v.path[2]]
        return Actual(float(row[col]))
    if sec == "tab2":
        rv, cv = ref.meta.get("variables", [None, None])
        if rep.why_blocked([rv, cv]) or rv not in df.columns or cv not in df.columns:
            return None
        rows = df[rv].to_numpy(float)
        cols = df[cv].to_numpy(float)
        ok = ~(pd_isnan(rows) | pd_isnan(cols))
        rsel = ok if v.path[1] == "Total" else ok & (rows == _level(v.path[1]))
        csel = rsel if v.path[2] == "Total" else rsel & (cols == _level(v.path[2]))
        return Actual(float(csel.sum()))
    # one-way tab
    var = ref.meta.get("variable")
    if rep.why_blocked([var]) or var not in df.columns:
        return None
    x = df[var].to_numpy(float)
    x = x[~pd_isnan(x)]
    n = len(x)
    if v.path[1] == "Total":
        return Actual(float(n) if v.path[2] == "freq" else 100.0)
    level = _level(v.path[1])
    if level is None:
        return None
    freq = float((x == level).sum())
    if v.path[2] == "freq":
        return Actual(freq)
    if v.path[2] == "percent":
        return Actual(100.0 * freq / n)
    return Actual(100.0 * float((x <= level).sum()) / n)


def pd_isnan(a: Any) -> Any:
    import numpy as np

    return np.isnan(np.asarray(a, float))


def _level(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def _names(expr: str) -> set[str]:
    from hlmbridge.reference.data_prep import required_variables

    return required_variables(expr)


def _tab_condition(ref: Any) -> str | None:
    cmd = str(ref.source.command)
    return cmd.split(" if ", 1)[1].partition(",")[0].strip() if " if " in cmd else None


def _list_quantity(ref: Any, v: Any, models: Mapping[str, Any], cache: dict[str, Any]) -> Actual | None:
    """A ``list`` cell: a BLUP of a ``predict NAME, reffects`` variable (checked against
    ``result.ranef()`` of the model NAME came from, for the group of that observation), or a data
    value of the replayed data."""
    rep = data_frame(ref, cache)
    df = rep.frame
    obs = int(v.path[1])
    if obs < 1 or obs > len(df):
        return None
    row = df.iloc[obs - 1]
    col = v.path[2]
    if col in models:
        res = models[col]
        level = res.spec.levels[-1].group  # reffects: the innermost level's effects first (one level here)
        if len(res.spec.levels) != 1 or res.spec.levels[0].slopes:
            raise FixtureError(f"{v.key}: predict, reffects is checked for random-intercept models with one level",
                               path=ref.path, line=v.fixture_line)
        re_ = cache.setdefault(f"ranef:{id(res)}", res.ranef())
        g = float(row[level])
        hit = re_[(re_["group"] == level) & (re_["term"] == "(Intercept)")]
        match = hit[[_level(str(x)) == g for x in hit["level"]]]
        if match.empty:
            return None
        return Actual(float(match.iloc[0]["estimate"]), None, bool(res.singular))
    if rep.why_blocked([col]) or col not in df.columns:
        return None
    return Actual(float(row[col]))


def _xtreg(ref: Any, v: Any, res: Any, cache: dict[str, Any]) -> Actual | None:
    """``xtreg, mle``'s numbers: the ML fit's estimates with SEs from the full observed
    information (:mod:`hlmbridge.reference.xtreg_information`), which needs the data."""
    import numpy as np
    from scipy import stats

    from hlmbridge.design.build import build_design
    from hlmbridge.reference.xtreg_information import xtreg_information

    sec, field_ = v.path[0], v.path[-1]
    if sec in ("header", "lr") and v.path[1] not in ("wald_chi2", "wald_p"):
        return _mixed_like(ref, v, res, cache, xtreg=False)
    base = cache.get("data:frame")
    if base is None:
        raise FixtureError(f"{v.key}: xtreg's standard errors come from the data (full observed information); "
                           "validate passes it, quantities_for needs cache['data:frame']", path=ref.path)
    key = f"xtinfo:{id(res)}"
    info = cache.get(key)
    if info is None:
        d = build_design(res.spec, base)
        codes = np.unique(d.levels[0].codes, return_inverse=True)[1]
        fx = res.fixed
        sd = res.random_sd()
        su = float(sd.loc[sd["stata_term"] == "sd(_cons)", "estimate"].iloc[0])
        se_ = float(sd.loc[sd["stata_term"] == "sd(Residual)", "estimate"].iloc[0])
        order = [list(fx["stata_term"]).index(t) for t in d.fixed_stata]
        beta = fx["estimate"].to_numpy(float)[order]
        info = cache.setdefault(key, (xtreg_information(d.y, d.X, codes, beta, su, se_), list(d.fixed_stata),
                                      beta, su, se_))
    xi, terms, beta, su, se_ = info
    z975 = float(stats.norm.ppf(0.975))
    sing = bool(res.singular)
    if sec == "header":  # Wald test of every coefficient but _cons on the full information
        idx = [k for k, t in enumerate(terms) if t != "_cons"]
        if not idx:
            return Actual(0.0 if v.path[1] == "wald_chi2" else float("nan"), None, sing)
        b = beta[idx]
        V = xi.vcov[np.ix_(idx, idx)]
        chi2 = float(b @ np.linalg.solve(V, b))
        return Actual(chi2 if v.path[1] == "wald_chi2" else float(stats.chi2.sf(chi2, len(idx))), None, sing)
    if sec == "fixed":
        if v.path[1] not in terms:
            return None
        k = terms.index(v.path[1])
        b, s = float(beta[k]), float(xi.beta_se[k])
        val = {"estimate": b, "std_error": s, "statistic": b / s, "p_value": float(2 * stats.norm.sf(abs(b / s))),
               "conf_low": b - z975 * s, "conf_high": b + z975 * s}[field_]
        return Actual(val, s if field_ in ("estimate", "conf_low", "conf_high") else None, sing)
    label = v.path[1]
    if label in ("/sigma_u", "/sigma_e"):
        est, s = (su, xi.sigma_u_se) if label == "/sigma_u" else (se_, xi.sigma_e_se)
        half = z975 * s / est
        val = {"estimate": est, "std_error": s, "conf_low": est * math.exp(-half), "conf_high": est * math.exp(half)}
        return Actual(val[field_], s if field_ != "std_error" else None, sing)
    if label == "rho":
        if field_ in ("conf_low", "conf_high"):
            return None
        return Actual(xi.rho if field_ == "estimate" else xi.rho_se, xi.rho_se if field_ == "estimate" else None, sing)
    return None


def _xtlogit_row(v: Any, res: Any, cache: dict[str, Any]) -> Actual | None:
    """``xtlogit, re``'s ``/lnsig2u``, ``sigma_u`` and ``rho`` rows (result.xt_parameters())."""
    df = cache.setdefault(f"xt:{id(res)}", res.xt_parameters())
    row = _frame_row(df, "stata_term", v.path[1])
    if row is None:
        return None
    se = float(row["std_error"]) if v.path[2] in ("estimate", "conf_low", "conf_high") else None
    return Actual(float(row[v.path[2]]), se, bool(res.singular))


def _etable(ref: Any, v: Any, models: Mapping[str, Any], cache: dict[str, Any]) -> Actual | None:
    """An ``estimates table`` cell: e(b) (and its SE) of the stored model the column names."""
    res = models.get(v.path[1]) or (models.get(".") if v.path[1] == "active" else None)
    if res is None:
        return None
    eb = cache.setdefault(f"eb:{id(res)}", eb_vector(res))
    label = v.path[2]
    key = label if ":" in label else f"{res.spec.response}:{label}"
    if key not in eb:
        return None
    val, se = eb[key]
    if v.path[3] == "b":
        return Actual(val, se, bool(res.singular))
    if se is None:
        return None
    return Actual({"se": se, "t": val / se}.get(v.path[3], float("nan")), None, bool(res.singular))


def quantities_for(
    reference: Any,
    results_by_command: Mapping[str, Any],
    *,
    cache: dict[str, Any] | None = None,
) -> dict[str, Actual]:
    """Every engine number of ``reference`` computed from fitted results.

    Parameters
    ----------
    reference
        A :class:`hlmbridge.reference.fixtures.Reference`.
    results_by_command
        ``{model command as the fixture names it: FitResult}`` for one engine.
    cache
        Optional dict reused across calls (data sets, postestimation tables).

    Returns
    -------
    dict
        ``{key: Actual}``; a key the results cannot produce is left out (it then shows
        as *missing* in the cross-check).

    Examples
    --------
    >>> from hlmbridge.reference.fixtures import FIXTURE_ROOT, load_reference
    >>> ref = load_reference(FIXTURE_ROOT / "seed" / "L0945_di.toml")
    >>> quantities_for(ref, {})   # arithmetic on constants: nothing for an engine to compute
    {}
    """
    cache = {} if cache is None else cache
    out: dict[str, Actual] = {}
    models = {m.name: _lookup(results_by_command, m.command, reference.case) for m in reference.models
              if any(v.engine for v in reference.values)}
    for v in reference.values:
        if not v.engine:
            continue
        sec = v.path[0]
        if sec in ("summarize", "tab", "tab2"):
            a = _data_quantity(reference, v, cache)
        elif sec == "list":
            a = _list_quantity(reference, v, models, cache)
        elif sec == "etable":
            a = _etable(reference, v, models, cache)
        elif reference.kind == "xtreg":
            a = _xtreg(reference, v, next(iter(models.values())), cache)
        elif reference.kind == "xtlogit" and sec == "random":
            a = _xtlogit_row(v, next(iter(models.values())), cache)
        elif sec in ("di", "derived"):
            if sec == "di":
                _check_di_columns(reference, v, models, cache)
            a = DERIVED[v.quantity][1](*(models[n] for n in v.args))
        elif sec == "lrtest":
            from hlmbridge import lrtest

            key = f"lrtest:{reference.case}:{id(models)}"
            t = cache.get(key)
            if t is None:
                ms = [models[m.name] for m in reference.models]
                t = cache.setdefault(key, lrtest(ms[0], ms[1]))
            val = {"chi2": t.chi2, "df": t.df, "p_value": t.p_value}[v.path[1]]
            a = Actual(float(val), None, any(bool(models[m.name].singular) for m in reference.models))
        else:
            res = models.get("e(b)") if sec == "eb" and "e(b)" in models else next(iter(models.values()))
            a = _mixed_like(reference, v, res, cache)
        if a is not None:
            out[v.key] = a
    return out
