"""Nothing is accepted and ignored: unknown fit keywords, lmer arguments not applied yet, and a
validate run that compares nothing all fail loudly (issues 9 bug 4 and 12 item 5)."""

from __future__ import annotations

import pytest

import hlmbridge
from hlmbridge.check.validate import validate
from hlmbridge.cli import main
from hlmbridge.errors import HlmbridgeError, UsageError


@pytest.fixture(scope="module")
def ss():
    return hlmbridge.datasets.sleepstudy()


@pytest.mark.parametrize("engine", ["statsmodels", pytest.param("lme4", marks=pytest.mark.requires_r)])
def test_typo_keyword_is_refused(ss, engine):
    with pytest.raises(UsageError, match=r"remll="):
        hlmbridge.fit("Reaction ~ Days + (Days|Subject)", ss, engine=engine, remll=True)


@pytest.mark.parametrize("arg", ["contrasts", "control", "start", "verbose", "na.action"])
def test_lmer_arguments_not_applied_are_refused(ss, arg):
    # Before: weights=ss.Days + 1 returned the unweighted fit with no warning. weights=,
    # offset=, subset= and na_action= are applied now (tests/test_lmer_arguments.py).
    with pytest.raises(UsageError, match=rf"{arg}") as info:
        hlmbridge.fit("Reaction ~ Days + (Days|Subject)", ss, engine="statsmodels", **{arg: ss.Days + 1})
    assert str(info.value).count(".") >= 1 and "\n" not in str(info.value)


def test_R_spelling_REML_is_applied(ss):
    # Before: REML=False was swallowed and a REML fit came back.
    ml = hlmbridge.fit("Reaction ~ Days + (1|Subject)", ss, engine="statsmodels", REML=False)
    assert ml.spec.method == "ml"
    ref = hlmbridge.fit("Reaction ~ Days + (1|Subject)", ss, engine="statsmodels", reml=False)
    assert ml.loglik == pytest.approx(ref.loglik, abs=1e-9)
    reml = hlmbridge.fit("Reaction ~ Days + (1|Subject)", ss, engine="statsmodels", REML=True)
    assert reml.spec.method == "reml"
    with pytest.raises(UsageError, match="both reml= and REML="):
        hlmbridge.fit("Reaction ~ Days + (1|Subject)", ss, engine="statsmodels", reml=True, REML=False)


def test_engine_options_still_pass(ss):
    res = hlmbridge.fit("Reaction ~ Days + (1|Subject)", ss, engine="statsmodels", max_iterations=5000)
    assert res.converged


def test_validate_on_empty_fixture_dir_fails(tmp_path, capsys):
    # Before: exit 0 with "0 numbers".
    with pytest.raises(UsageError, match="compared nothing"):
        validate(tmp_path, engines=["statsmodels"])
    assert main(["validate", "--fixtures", str(tmp_path), "--engine", "statsmodels"]) != 0
    assert "compared nothing" in capsys.readouterr().err


def test_usage_error_is_in_the_family():
    assert issubclass(UsageError, HlmbridgeError)
