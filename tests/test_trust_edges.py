"""Engine edge cases that used to be silent or crash (issue 26).

1. ``singular`` means lme4's ``isSingular`` for every engine: some pivot of a relative
   covariance factor below 1e-4, computed by hlmbridge from the estimates. A 3x3 block of
   rank 2 (every correlation inside (-1, 1)) used to be "not singular" in the statsmodels
   engine while lme4 said it was.
2. Precision weights far from 1 (constant 1e-16) are fitted divided by a power of two, the same
   model: lmer stopped 230 log-likelihood units short with converged=True and no warning; the
   lme4 engine's fallback answer is checked on hlmbridge's score, as lmer's gradient check would.
3. A response whose squares overflow, and more groups than MixedLM loops over in reasonable
   time, are quick errors naming the problem (they ran for minutes).
4. Embedded R starts without the user's profile and saved workspace: a quit() there ended the
   Python process with exit status 0.
5. bootstrap() and fit_many() called from a script without an ``if __name__ == "__main__":``
   guard raise a UsageError in the caller (spawned workers re-ran the script and died, and the
   pools were restarted worker by worker).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hlmbridge

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------- 1. singular
@pytest.fixture(scope="module")
def exam(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """mlmRev's Exam, exported by the committed R script and read back with R's classes."""
    from tests.r_reference import export_datasets, load_dataset

    out = tmp_path_factory.mktemp("r_datasets")
    export_datasets(out)
    return load_dataset(out, "Exam")


def _r_is_singular(formula: str, reml: bool) -> bool:
    """lme4's own isSingular of lmer (its defaults) on mlmRev's Exam, in a private R env."""
    import rpy2.robjects as ro

    fun = ro.r("function(f, reml) suppressMessages(suppressWarnings(lme4::isSingular("
               "lme4::lmer(stats::as.formula(f), data = mlmRev::Exam, REML = reml))))")
    return bool(fun(formula, reml)[0])


#: On Exam: a 3x3 block of rank 2 (lme4's last pivot 0 under REML and ML; no correlation at
#: +-1, no variance at 0), and a 3x3 block whose smallest pivot is 0.029 (not singular).
SINGULAR_CASES = [
    ("normexam ~ standLRT + sex + (standLRT + sex | school)", True),
    ("normexam ~ standLRT + sex + (standLRT + sex | school)", False),
    ("normexam ~ standLRT + (standLRT + I(standLRT^2) | school)", False),
]


@pytest.mark.requires_r
@pytest.mark.parametrize("formula,reml", SINGULAR_CASES)
def test_singular_is_lme4s_is_singular_for_both_engines(exam: pd.DataFrame, formula: str, reml: bool) -> None:
    expected = _r_is_singular(formula, reml)
    for engine in ("lme4", "statsmodels"):
        res = hlmbridge.fit(formula, exam, engine=engine, reml=reml)
        assert res.singular is expected, (engine, formula, reml)
    if formula.startswith("normexam ~ standLRT + sex"):
        assert expected  # the case is what it claims: lme4 says singular


# ---------------------------------------------------------------------------- 2. tiny weights
HSB_MODEL = "mathach ~ ses + (ses | id)"


def _r_lmer_unweighted(hsb: pd.DataFrame) -> dict[str, Any]:
    """lmer in R (tight bobyqa, ML) of HSB_MODEL on hsb's columns, without weights."""
    import rpy2.robjects as ro

    fun = ro.r("""function(y, x, g) {
      d <- data.frame(mathach = y, ses = x, id = factor(g))
      f <- lme4::lmer(mathach ~ ses + (ses | id), d, REML = FALSE,
                      control = lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12)))
      vc <- as.data.frame(lme4::VarCorr(f))
      list(loglik = as.numeric(stats::logLik(f)), fixef = unname(lme4::fixef(f)), vcov = vc$vcov)
    }""")
    out = fun(ro.FloatVector(hsb["mathach"].to_numpy(float)), ro.FloatVector(hsb["ses"].to_numpy(float)),
              ro.StrVector(hsb["id"].astype(str).tolist()))
    return {k: np.array(out.rx2(k), dtype=float) for k in ("loglik", "fixef", "vcov")}


@pytest.mark.requires_r
@pytest.mark.parametrize("engine", ["lme4", "statsmodels"])
def test_constant_tiny_weights_fit_the_same_model(hsb_combined: pd.DataFrame, engine: str) -> None:
    """Constant weights c are the same model with the residual variance times c: the fit must be
    lmer's unweighted one (lme4's engine stopped at the linear model, 230 units short, with
    converged=True and no warning; the statsmodels engine likewise)."""
    c = 1e-16
    ref = _r_lmer_unweighted(hsb_combined)
    res = hlmbridge.fit(HSB_MODEL, hsb_combined, engine=engine, reml=False,
                        weights=np.full(len(hsb_combined), c))
    assert res.converged and not res.warnings
    assert abs(res.loglik - ref["loglik"][0]) < 1e-6
    # as.data.frame(VarCorr): var((Intercept)), var(ses), cov, residual
    var = {r[4]: r[5] for r in res.random_rows}
    got = np.array([var["var(_cons)"], var["var(ses)"], var["cov(ses,_cons)"], var["var(Residual)"] / c])
    np.testing.assert_allclose(got, ref["vcov"], rtol=1e-5)
    fixed = res.fixed.set_index("term")["estimate"]
    np.testing.assert_allclose(fixed[["(Intercept)", "ses"]].to_numpy(), ref["fixef"], rtol=1e-7)


@pytest.mark.requires_r
def test_lme4_fallback_that_stops_short_is_not_converged(hsb_combined: pd.DataFrame,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """hlmbridge turns off lmer's gradient check (calc.derivs = FALSE) and checks the fallback's
    answer itself: with the weights' rescaling turned off, lmer stops at the linear model for
    weights of 1e-16, and the fit says so instead of converged=True with no warning."""
    import hlmbridge.engines.lme4 as lme4_engine

    monkeypatch.setattr(lme4_engine, "weight_scale", lambda weights: 1.0, raising=False)
    res = hlmbridge.fit(HSB_MODEL, hsb_combined, engine="lme4", reml=False,
                        weights=np.full(len(hsb_combined), 1e-16))
    assert not res.converged
    assert any("still rises" in w and "not the optimum" in w for w in res.warnings), res.warnings


# ---------------------------------------------------------------------------- 3. answer quickly
#: The environment before any test started R: rpy2 (conftest's probe starts it directly) puts
#: the system's library folder on LD_LIBRARY_PATH, where a child Python loads another build's
#: libpython (its multiprocessing then fails on "_thread.RLock has no _recursion_count").
_ENV_BEFORE_R = dict(os.environ)


def _child_env() -> dict[str, str]:
    """A copy of the environment from before R started in this process."""
    return dict(_ENV_BEFORE_R)


def _run(args: list[str], timeout: float, cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``args`` run with this venv's Python; fails the test (instead of hanging) on timeout."""
    try:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=cwd or REPO, env=env if env is not None else _child_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"no answer within {timeout} s")


def _run_script(code: str, timeout: float, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh Python of this venv (see :func:`_run`)."""
    return _run(["-c", code], timeout, cwd, env)


def test_statsmodels_overflowing_response_is_a_quick_data_error() -> None:
    """HSB's response times 1e200 (its squares overflow): the statsmodels engine ran Nelder-Mead on
    NaN for minutes; now a DataError naming the response, before any optimizer runs."""
    code = textwrap.dedent("""
        import hlmbridge
        from hlmbridge.errors import DataError
        hsb = hlmbridge.datasets.hsb()
        try:
            hlmbridge.fit("mathach ~ ses + (1 | id)", hsb.assign(mathach=hsb["mathach"] * 1e200),
                          engine="statsmodels", reml=False)
        except DataError as exc:
            print("DataError:", exc)
        """)
    proc = _run_script(code, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "DataError: [statsmodels] the response's sum of squares overflows double precision" in proc.stdout
    assert "rescale the response" in proc.stdout


@pytest.mark.requires_r
def test_lme4_overflowing_response_is_a_data_error(hsb_combined: pd.DataFrame) -> None:
    """The same in the lme4 engine: named before R runs (it was a FitError about non-finite
    estimates after R and the polish had run, with overflow warnings)."""
    from hlmbridge.errors import DataError

    with pytest.raises(DataError, match="response's sum of squares overflows double precision"):
        hlmbridge.fit("mathach ~ ses + (1 | id)", hsb_combined.assign(mathach=hsb_combined["mathach"] * 1e200),
                      engine="lme4", reml=False)


def test_statsmodels_refuses_more_groups_than_mixedlm_can_loop_over_quickly() -> None:
    """100,000 rows in 99,999 groups (all but one of a single row): MixedLM's per-group Python
    loops took minutes (1e6 rows in 999,999 groups: about 25 minutes); now a FitError naming
    the number of groups and the lme4 engine, in seconds."""
    code = textwrap.dedent("""
        import numpy as np, pandas as pd, hlmbridge
        from hlmbridge.errors import FitError
        n = 100_000
        rng = np.random.default_rng(0)
        g = np.arange(n)
        g[-1] = 0
        df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "g": g})
        try:
            hlmbridge.fit("y ~ x + (1 | g)", df, engine="statsmodels", reml=False)
        except FitError as exc:
            print("FitError:", exc)
        """)
    proc = _run_script(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "FitError: [statsmodels] 99,999 groups of 'g' are too many for statsmodels' MixedLM" in proc.stdout
    assert "99,998 of them have a single row" in proc.stdout and "use engine='lme4'" in proc.stdout


# ---------------------------------------------------------------------------- 4. R start-up files
_QUIT = 'cat("USER CODE RAN\\n"); quit("no")\n'


def _profile_in_cwd(cwd: Path, env: dict[str, str]) -> None:
    (cwd / ".Rprofile").write_text(_QUIT, encoding="utf-8")


def _profile_user(cwd: Path, env: dict[str, str]) -> None:
    (cwd / "profile.R").write_text(_QUIT, encoding="utf-8")
    env["R_PROFILE_USER"] = str(cwd / "profile.R")


def _saved_workspace(cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(["Rscript", "--vanilla", "-e",
                    '.First <- function() { cat("USER CODE RAN\\n"); quit("no") }; save(.First, file = ".RData")'],
                   cwd=cwd, check=True, capture_output=True, timeout=120)


@pytest.mark.requires_r
@pytest.mark.parametrize("setup,fresh_cache", [(_profile_in_cwd, True), (_profile_in_cwd, False),
                                               (_profile_user, False), (_saved_workspace, False)],
                         ids=["cwd-Rprofile-start-check", "cwd-Rprofile", "R_PROFILE_USER", "cwd-RData-.First"])
def test_r_starts_without_user_start_up_code(tmp_path: Path, setup: Any, fresh_cache: bool) -> None:
    """A quit() in the user's R profile or saved workspace ended the Python process (exit status
    0, nothing said) when the lme4 engine started R; R now starts without them."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    env = _child_env()
    if fresh_cache:  # no stamp: the child process that checks that R starts runs too
        env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    setup(cwd, env)
    code = textwrap.dedent("""
        import hlmbridge
        res = hlmbridge.fit("mixed mathach ses || id:", hlmbridge.datasets.hsb(), engine="lme4")
        print("FIT", res.nobs, res.converged)
        """)
    proc = _run_script(code, timeout=180, cwd=cwd, env=env)
    assert "USER CODE RAN" not in proc.stdout + proc.stderr
    assert proc.returncode == 0 and "FIT 7185 True" in proc.stdout, (proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------- 5. __main__ guard
_UNGUARDED = """
import multiprocessing
import hlmbridge
from hlmbridge.errors import UsageError

hsb = hlmbridge.datasets.hsb()
try:
    {call}
except UsageError as exc:
    if multiprocessing.current_process().name == "MainProcess":  # not a worker re-running the script
        print("PARENT UsageError:", exc, flush=True)
    raise
print("PARENT finished without an error", flush=True)
"""


@pytest.mark.parametrize("call", [
    'hlmbridge.fit("mixed mathach ses || id:", hsb, engine="statsmodels").bootstrap(hsb, n=200, seed=1, '
    'progress=False, max_workers=2)',
    'hlmbridge.fit_many([("mixed mathach || id:", hsb, "statsmodels")] * 2, progress=False, max_workers=2)',
], ids=["bootstrap", "fit_many"])
def test_unguarded_script_is_a_usage_error_in_the_caller(tmp_path: Path, call: str) -> None:
    """A script calling bootstrap() or fit_many() without `if __name__ == "__main__":`: every
    spawned worker re-ran it and died (Python refuses to start processes while a worker imports
    its main module), and the pools were restarted worker by worker (bootstrap's 200 jobs: some
    300 pools). Now the caller raises a UsageError saying to add the guard, at the first pool."""
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED.format(call=call), encoding="utf-8")
    proc = _run([str(script)], timeout=120, cwd=tmp_path)  # before: still starting workers after 120 s
    parent = [ln for ln in proc.stdout.splitlines() if ln.startswith("PARENT")]
    assert proc.returncode != 0 and len(parent) == 1, (proc.stdout, proc.stderr[-2000:])
    assert parent[0].startswith("PARENT UsageError:")
    assert 'if __name__ == "__main__":' in parent[0] and str(script) in parent[0]
    assert "bootstrapping phase" in parent[0]
