"""Differential tests against R (issue 9): hlmbridge reads every lme4 formula as R does.

For every case of ``tests/formula_corpus.py`` (formulas R users write, on real data sets
exported from lme4, nlme and mlmRev by ``r/export_datasets.R``):

(a) the fixed-effect design hlmbridge builds equals lme4's model matrix (``lFormula``'s X:
    names and order equal, values and response to 1e-10, the same rows);
(b) the lme4 engine equals ``lmer`` run in R on R's own data frame: logLik to 1e-8 relative,
    fixed effects to 1e-6 of their SE, SEs to 1e-6 relative, variance components (the rows of
    ``as.data.frame(VarCorr(fit))``, by lme4's group and term names) to 1e-5 relative;
(c) the statsmodels engine, where it is expected to fit, equals the same numbers within the
    case's measured tolerance (``formula_corpus.SM_TOL`` unless the case says otherwise);
(d) an expected refusal is an ``HlmbridgeError`` with a one-sentence message (no newline, no
    doubled words) that names what the case says it must.

R runs in-process through rpy2, in a private environment; the data are exported once per
session into a pytest temporary directory and read back with their R classes, while R fits
its original data frames, so the pandas round trip is tested too (``test_roundtrip``).

Set ``HLMBRIDGE_DIFF_REPORT=/path/file.jsonl`` to append every comparison's measured error
(used to measure the statsmodels tolerances).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.errors import HlmbridgeError
from tests.formula_corpus import CASES, CONSTRUCTS, ISSUE9_ITEMS, LME4_TOL, Case, Tol

pytestmark = pytest.mark.requires_r

ENGINES = ("lme4", "statsmodels")


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data sets, exported once per session by the committed R script."""
    from tests.r_reference import export_datasets

    out = tmp_path_factory.mktemp("r_datasets")
    export_datasets(out)
    return out


class _Frames:
    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self._cache: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        from tests.r_reference import load_dataset

        if name not in self._cache:
            self._cache[name] = load_dataset(self.outdir, name)
        return self._cache[name]


@pytest.fixture(scope="session")
def frames(exported: Path) -> _Frames:
    """The exported data sets in pandas (loaded on first use; never modified)."""
    return _Frames(exported)


@pytest.fixture(scope="session")
def rref() -> Any:
    """R's side: the original data frames and the reference functions, in a private env."""
    from tests.r_reference import RReference

    return RReference()


_R_FITS: dict[str, Any] = {}


def _r_fit(rref: Any, case: Case) -> Any:
    """lmer's fit of a case, computed once per session (an RError is cached too)."""
    from tests.r_reference import RError

    if case.id not in _R_FITS:
        try:
            _R_FITS[case.id] = rref.lmer(case.dataset, case.formula, **_r_args(case))
        except RError as exc:
            _R_FITS[case.id] = exc
    got = _R_FITS[case.id]
    if isinstance(got, Exception):
        raise AssertionError(f"lmer itself failed on this case (the corpus is wrong): {got}")
    return got


# ---------------------------------------------------------------------------- helpers
def _r_args(case: Case) -> dict[str, Any]:
    return {"reml": case.reml_r, "weights": case.weights, "offset": case.offset, "subset": case.subset,
            "na_action": case.na_action}


def _frame(case: Case, frames: _Frames) -> pd.DataFrame:
    df = frames[case.dataset]
    if case.dtypes:
        df = df.copy()
        for col, dtype in case.dtypes:
            df[col] = df[col].astype(dtype)
    return df


def _vector(df: pd.DataFrame, expr: str) -> np.ndarray:
    """An lmer argument expression evaluated in the data (as lmer evaluates it)."""
    value = df.eval(expr)
    if np.isscalar(value):
        value = pd.Series(value, index=df.index)
    return np.asarray(value)


def _fit_call(case: Case, df: pd.DataFrame, engine: str) -> Any:
    kw: dict[str, Any] = dict(case.kwargs)
    if case.reml is not None and case.stata is None:
        kw["reml"] = case.reml
    if case.weights is not None:
        kw["weights"] = _vector(df, case.weights).astype(float)
    if case.offset is not None:
        kw["offset"] = _vector(df, case.offset).astype(float)
    if case.subset is not None:
        kw["subset"] = _vector(df, case.subset).astype(bool)
    if case.na_action is not None:
        kw["na_action"] = case.na_action
    model = case.stata if case.stata is not None else case.formula
    return hlmbridge.fit(model, df, engine=engine, **kw)


def _report(case: Case, engine: str, **errors: float) -> None:
    path = os.environ.get("HLMBRIDGE_DIFF_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"case": case.id, "engine": engine, **errors}) + "\n")


def _cases(engine: str | None, outcome: str, *, stata: bool = True) -> list[Any]:
    out = []
    for case in CASES:
        if not stata and case.stata is not None:
            continue
        if engine is None:
            if case.lme4 == outcome:
                out.append(pytest.param(case, id=case.id))
        elif case.expect(engine) == outcome:
            out.append(pytest.param(case, id=case.id))
    return out


def _refusals() -> list[Any]:
    return [pytest.param(case, engine, id=f"{engine}: {case.id}")
            for case in CASES for engine in ENGINES if case.expect(engine) == "refuse"]


# ---------------------------------------------------------------------------- the corpus
def test_corpus_size_and_coverage():
    assert len(CASES) >= 120, f"the corpus has {len(CASES)} cases; issue 9 asks for at least 120"
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), "duplicate cases"
    tags = {t for c in CASES for t in c.tags}
    unknown = tags - set(ISSUE9_ITEMS) - set(CONSTRUCTS)
    assert not unknown, f"tags that name nothing: {sorted(unknown)}"
    missing = (set(ISSUE9_ITEMS) | set(CONSTRUCTS)) - tags
    assert not missing, f"issue-9 items or constructs without a case: {sorted(missing)}"
    for case in CASES:
        assert case.lme4 in ("fit", "refuse") and case.sm in ("fit", "refuse"), case.id
        if case.lme4 == "refuse":
            assert case.sm == "refuse", f"{case.id}: lme4 refuses, so statsmodels must too"


# ---------------------------------------------------------------------------- data round trip
_DTYPES = {"numeric": ("float64",), "integer": ("int64", "Int64"), "logical": ("bool", "boolean"),
           "character": ("object",), "factor": ("category",), "ordered": ("category",)}


def test_roundtrip(rref: Any, frames: _Frames, exported: Path):
    """Every exported data set reads back into pandas equal to R's data frame, class by class."""
    from tests.r_reference import r_column

    assert sorted(rref.dataset_names) == sorted(p.stem for p in exported.glob("*.json") if p.stem != "versions")
    needed = {c.dataset for c in CASES}
    assert needed <= set(rref.dataset_names)
    for name in rref.dataset_names:
        df = frames[name]
        r_names = list(rref.frame(name).names)
        assert list(df.columns) == r_names, name
        for col in r_names:
            cls, values, levels = r_column(rref, name, col)
            s = df[col]
            assert str(s.dtype) in _DTYPES[cls], f"{name}.{col}: R {cls}, pandas {s.dtype}"
            got = [None if pd.isna(v) else v for v in s.astype(object)]
            if cls in ("factor", "ordered"):
                assert list(s.cat.categories) == levels, f"{name}.{col}: levels"
                assert bool(s.cat.ordered) == (cls == "ordered"), f"{name}.{col}: ordered"
                got = [None if pd.isna(v) else str(v) for v in s.astype(object)]
            if cls == "numeric" or cls == "integer":
                a = np.array([np.nan if v is None else v for v in got], dtype=float)
                b = np.array([np.nan if v is None else v for v in values], dtype=float)
                assert np.array_equal(a, b, equal_nan=True), f"{name}.{col}: values differ (not bit-equal)"
            else:
                assert got == values, f"{name}.{col}: values differ"


# ---------------------------------------------------------------------------- (a) design
@pytest.mark.parametrize("case", _cases(None, "fit", stata=False))
def test_design_matches_r_model_matrix(case: Case, rref: Any, frames: _Frames):
    from hlmbridge.design.build import build_design
    from hlmbridge.spec.parse_lme4 import parse_lme4

    ref = rref.model_matrix(case.dataset, case.formula, **_r_args(case))
    df = _frame(case, frames)
    positions = np.arange(len(df))
    if case.subset is not None:
        mask = _vector(df, case.subset).astype(bool)
        df = df[mask]
        positions = positions[mask]
    design = build_design(parse_lme4(case.formula, reml=case.reml_r), df)
    names = tuple(design.fixed_lme4)
    assert names == ref.names, f"columns differ:\n  hlmbridge {list(names)}\n  R         {list(ref.names)}"
    rows = positions[np.asarray(design.rows)]
    assert np.array_equal(rows, ref.rows), (
        f"rows differ: hlmbridge uses {len(rows)}, R {len(ref.rows)}; first differing position "
        f"{_first_diff(rows, ref.rows)}")
    X = np.asarray(design.X, dtype=float)
    bad = [n for j, n in enumerate(names) if not np.allclose(X[:, j], ref.X[:, j], rtol=1e-10, atol=1e-10)]
    assert not bad, f"column values differ from R's beyond 1e-10: {bad}"
    np.testing.assert_allclose(np.asarray(design.y, dtype=float), ref.y, rtol=1e-10, atol=1e-10,
                               err_msg="the response differs from R's")


def _first_diff(a: np.ndarray, b: np.ndarray) -> Any:
    n = min(len(a), len(b))
    idx = np.flatnonzero(a[:n] != b[:n])
    return int(idx[0]) if idx.size else n


# ---------------------------------------------------------------------------- (b), (c) fits
def _compare_fit(case: Case, res: Any, ref: Any, tol: Tol, engine: str) -> None:
    problems: list[str] = []
    ll_rel = abs(res.loglik - ref.loglik) / abs(ref.loglik)
    if not ll_rel <= tol.loglik:
        problems.append(f"logLik {res.loglik!r} vs R {ref.loglik!r} (rel {ll_rel:.2e} > {tol.loglik:g})")

    fixed = res.fixed
    terms = [str(t) for t in fixed["term"]]
    est = fixed["estimate"].to_numpy(dtype=float)
    se = fixed["std_error"].to_numpy(dtype=float)
    fixed_err = se_err = math.nan
    if case.stata is not None:
        # A Stata command names its columns in Stata's order; compare the same model by value.
        if len(est) != len(ref.fixef):
            problems.append(f"{len(est)} fixed effects vs R's {len(ref.fixef)}")
        else:
            order, r_order = np.argsort(est), np.argsort(ref.fixef)
            fixed_err = float(np.max(np.abs(est[order] - ref.fixef[r_order]) / ref.se[r_order]))
            se_err = float(np.max(np.abs(se[order] / ref.se[r_order] - 1)))
    elif sorted(terms) != sorted(ref.fixef_names):
        problems.append(f"fixed-effect names {terms} vs R {list(ref.fixef_names)}")
    else:
        if terms != list(ref.fixef_names):
            problems.append(f"fixed-effect order {terms} vs R {list(ref.fixef_names)}")
        pick = [terms.index(t) for t in ref.fixef_names]  # compare the numbers by name all the same
        terms, est, se = list(ref.fixef_names), est[pick], se[pick]
        dz = np.abs(est - ref.fixef) / ref.se
        fixed_err = float(np.max(dz)) if dz.size else 0.0
        bad = [f"{t} ({d:.1e} SE)" for t, d in zip(terms, dz, strict=True) if not d <= tol.fixed]
        if bad:
            problems.append(f"fixed effects differ beyond {tol.fixed:g} SE: {', '.join(bad)}")
        rel = np.abs(se / ref.se - 1)
        se_err = float(np.max(rel)) if rel.size else 0.0
        bad = [f"{t} (rel {r:.1e})" for t, r in zip(terms, rel, strict=True) if not r <= tol.se]
        if bad:
            problems.append(f"SEs differ beyond {tol.se:g} relative: {', '.join(bad)}")
    if case.stata is not None and not (fixed_err <= tol.fixed and se_err <= tol.se):
        problems.append(f"fixed effects (matched by value) differ: {fixed_err:.1e} SE, SE rel {se_err:.1e}")

    vc_err = _compare_random(res, ref, tol, problems)
    _report(case, engine, loglik=ll_rel, fixed=fixed_err, se=se_err, vc=vc_err)
    assert not problems, f"{engine} vs lmer: " + "; ".join(problems)


def _key(group: str, t1: str, t2: str) -> tuple[str, str, str]:
    return (group, *sorted((t1, t2))) if t2 else (group, t1, "")


def _compare_random(res: Any, ref: Any, tol: Tol, problems: list[str]) -> float:
    expected = {_key(g, v1, v2): v for g, v1, v2, v in ref.varcorr}
    got: dict[tuple[str, str, str], float] = {}
    for row in res.random.itertuples(index=False):
        group = str(row.lme4_group)  # lme4's VarCorr name: Subject, Subject.1 for a second term
        if group == "Residual":
            key = ("Residual", "", "")
        elif row.kind == "var":
            key = (group, str(row.term1), "")
        else:
            key = _key(group, str(row.term1), str(row.term2))
        got[key] = float(row.estimate)
    if set(got) != set(expected):
        problems.append(f"variance components differ: hlmbridge has {sorted(set(got) - set(expected))} "
                        f"not in R, R has {sorted(set(expected) - set(got))} not in hlmbridge")
    resid = expected[("Residual", "", "")]
    worst = 0.0
    bad = []
    for key, ref_v in expected.items():
        if key not in got:
            continue
        if key[2]:
            scale = math.sqrt(max(expected[(key[0], key[1], "")], 0) * max(expected[(key[0], key[2], "")], 0))
        else:
            scale = abs(ref_v)
        err = abs(got[key] - ref_v) / max(scale, 1e-8 * resid)
        worst = max(worst, err)
        if not err <= tol.vc:
            bad.append(f"{'/'.join(k for k in key if k)} {got[key]!r} vs {ref_v!r} (rel {err:.1e})")
    if bad:
        problems.append(f"variance components differ beyond {tol.vc:g} relative: {'; '.join(bad)}")
    return worst


@pytest.mark.parametrize("case", _cases("lme4", "fit"))
def test_lme4_engine_matches_lmer(case: Case, rref: Any, frames: _Frames):
    ref = _r_fit(rref, case)
    res = _fit_call(case, _frame(case, frames), "lme4")
    _compare_fit(case, res, ref, LME4_TOL, "lme4")


@pytest.mark.parametrize("case", _cases("statsmodels", "fit"))
def test_statsmodels_engine_matches_lmer(case: Case, rref: Any, frames: _Frames):
    ref = _r_fit(rref, case)
    res = _fit_call(case, _frame(case, frames), "statsmodels")
    _compare_fit(case, res, ref, case.sm_tol, "statsmodels")


# ---------------------------------------------------------------------------- (d) refusals
_ABBREVIATIONS = re.compile(r"\b(e\.g|i\.e|etc|vs|cf)\.", re.I)
_DOUBLED = re.compile(r"\b(\w+(?: \w+){0,4}) \1\b", re.I)  # words repeated with single spaces


def one_sentence_problems(message: str) -> list[str]:
    """What makes ``message`` more (or less) than one clean sentence; empty when it is one.

    >>> one_sentence_problems("lme4 cannot fit lme4 cannot fit (1|a:b) exactly exactly: no.")
    ['doubled words: "lme4 cannot fit"']
    >>> one_sentence_problems("statsmodels cannot fit crossed random effects; write (1|a/b), e.g. for Pastes.")
    []
    >>> one_sentence_problems("cannot fit crossed effects at level 'b': crossed effects at level 'b' are not nested")
    ['a phrase said twice: "crossed effects at level"']
    """
    problems = []
    text = message.strip()
    if not text:
        return ["empty message"]
    if "\n" in text:
        problems.append("more than one line")
    body = _ABBREVIATIONS.sub("", text.rstrip(".!?"))
    if re.search(r"[.!?]\s+[A-Z(`]", body):
        problems.append("more than one sentence")
    doubled = _DOUBLED.search(text)
    if doubled:
        problems.append(f'doubled words: "{doubled.group(1)}"')
    else:
        words = re.findall(r"[A-Za-z][\w']*", text.lower())
        grams = [" ".join(words[i:i + 4]) for i in range(len(words) - 3)]
        repeated = sorted({g for g in grams if grams.count(g) > 1})
        if repeated:
            problems.append(f'a phrase said twice: "{repeated[0]}"')
    return problems


@pytest.mark.parametrize(("case", "engine"), _refusals())
def test_refusal_is_one_clean_sentence(case: Case, engine: str, rref: Any, frames: _Frames):
    from tests.r_reference import RError

    if case.r_errors and engine == "lme4":
        with pytest.raises(RError):
            rref.lmer(case.dataset, case.formula, **_r_args(case))
    df = _frame(case, frames)
    with pytest.raises(HlmbridgeError) as info:
        _fit_call(case, df, engine)
    message = str(info.value)
    problems = one_sentence_problems(message)
    assert not problems, f"refusal message {message!r}: {', '.join(problems)}"
    for word in case.message_contains:
        assert word.lower() in message.lower(), f"refusal message {message!r} does not name {word!r}"
