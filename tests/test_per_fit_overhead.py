"""Per-fit overhead (issue 22): what a refit of the same model on the same data does not redo.

The fingerprint memo: a column whose bytes equal those of one fingerprinted before reuses its
fingerprint without hashing it again, and a column changed in any way (in place, at a reused
address, an element of an object column replaced or mutated) gets the fingerprint a fresh copy
of it gets. A Stata command's ``dfmethod()`` and the spec's lme4 rendering are made once per
command and spec."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hlmbridge
from hlmbridge.design import cache
from hlmbridge.design.cache import column_fingerprint, column_values, fingerprints


@pytest.fixture
def hashed(monkeypatch):
    """How many times a column's content is hashed (cache._update calls)."""
    calls = []
    real = cache._update

    def counting(h, values):
        calls.append(type(values).__name__)
        return real(h, values)

    monkeypatch.setattr(cache, "_update", counting)
    return calls


def test_unchanged_columns_are_not_hashed_again(hashed):
    df = hlmbridge.datasets.hsb("combined").copy(deep=True)  # new arrays: never seen before
    first = fingerprints(df, ["mathach", "ses", "id"])
    assert len(hashed) == 3
    again = fingerprints(df, ["mathach", "ses", "id"])
    assert again == first and len(hashed) == 3  # floats and the python-backed string column: memo hits


def test_in_place_changes_are_hashed_afresh(hashed):
    df = pd.DataFrame({"x": np.arange(20.0), "g": np.array([f"g{i % 4}" for i in range(20)], dtype=object)})
    before = fingerprints(df, ["x", "g"])
    df.loc[3, "x"] = -1.0
    df.loc[5, "g"] = "g" + str(9)  # a new str object
    after = fingerprints(df, ["x", "g"])
    fresh = fingerprints(df.copy(deep=True), ["x", "g"])
    assert after == fresh and after["x"] != before["x"] and after["g"] != before["g"]


def test_replaced_strings_at_reused_addresses():
    """An element replaced by a string made afresh each time (CPython may put it at the freed
    address of the one before): the kept copy holds the old objects alive, so equal pointers
    always mean equal values."""
    a = np.array([f"s{i}" for i in range(50)], dtype=object)
    for k in range(200):
        a[7] = "".join(["v", str(k % 3)])
        assert column_fingerprint(a) == column_fingerprint(a.copy()), k


def test_mutable_objects_are_never_memoized():
    s = pd.Series([[1], [2]], dtype=object)
    first = column_fingerprint(s)
    s.iloc[0].append(3)  # same pointers, other content
    assert column_fingerprint(s) != first
    assert column_fingerprint(s) == column_fingerprint(pd.Series([[1, 3], [2]], dtype=object))


@pytest.mark.parametrize("values", [
    np.arange(6, dtype=np.int32), np.array([1.5, np.nan, -0.0]), np.array(["a", "b"]),
    pd.array([1, None, 3], dtype="Int64"), pd.Categorical(["a", "b", "a"]),
    pd.array(["x", None], dtype=pd.StringDtype("python")), np.array(["a", 1], dtype=object),
])
def test_memo_hits_equal_fresh_fingerprints(values):
    first = column_fingerprint(values)
    assert column_fingerprint(values) == first  # a memo hit where the content allows it
    assert column_fingerprint(values.copy()) == first  # a fresh computation


def test_frame_reads_and_memo_agree():
    df = pd.DataFrame({"y": np.linspace(0, 1, 30), "g": pd.array([f"k{i % 5}" for i in range(30)],
                                                                 dtype=pd.StringDtype("python"))})
    for name in ("y", "g"):
        assert column_fingerprint(column_values(df, name)) == column_fingerprint(df[name].copy())


@pytest.mark.requires_r
def test_refit_parses_and_renders_once(monkeypatch):
    from hlmbridge.spec import parse_stata
    from hlmbridge.spec.model import ModelSpec

    parsed, rendered = [], []
    real_parse, real_render = parse_stata.parse_stata_df_method, ModelSpec.to_lme4

    def parse(command, *, reml=None):
        parsed.append(command)
        return real_parse(command, reml=reml)

    def render(self):
        rendered.append(self)
        return real_render(self)

    monkeypatch.setattr(parse_stata, "parse_stata_df_method", parse)
    monkeypatch.setattr(ModelSpec, "to_lme4", render)
    df = hlmbridge.datasets.hsb("combined")
    command = "mixed mathach ses sector || id:, reml dfmethod(residual)"  # used by no other test
    first = hlmbridge.fit(command, df, engine="lme4")
    again = hlmbridge.fit(command, df, engine="lme4")
    assert again.fixed.equals(first.fixed) and again.df_method == first.df_method == "residual"
    assert parsed == [command] and len(rendered) == 1
