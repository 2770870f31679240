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
    every = own + ["REML", "weights", "subset", "offset", "na_action"] + list(tuning_options(require_engine(engine)))
    listed = {x.strip() for x in msg.split("it takes: ")[1].rstrip(").").split(",")}
    missing = [name for name in every if f"{name}=" not in listed]
    assert not missing, (missing, msg)
    # ... and each of them really is accepted (an engine option with a value it takes).
    res = hlmbridge.fit("Reaction ~ Days + (1 | Subject)", ss, engine=engine, weights=ss["Days"] + 1,
                        subset=ss["Days"] > 0, offset=ss["Days"] / 10, na_action="na.omit", REML=True,
                        df_method="residual")
    assert res.nobs == int((ss["Days"] > 0).sum())
