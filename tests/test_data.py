"""Data layer: read_dta, merge_levels, summarize, tag_first, center, datasets.

Reference numbers (the seed's `summarize` tables and `tab tag` counts) come from
fixtures/stata/data_summaries.toml, never from this file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hlmbridge import datasets
from hlmbridge.data import SUMMARY_COLUMNS, center, merge_levels, read_dta, summarize, tag_first
from hlmbridge.display_data import format_summarize, stata_g9
from hlmbridge.errors import DataError, UsageError

REPO = Path(__file__).resolve().parent.parent
SUMMARIES = REPO / "fixtures" / "stata" / "data_summaries.toml"


def _load_summaries() -> dict:
    with SUMMARIES.open("rb") as fh:
        return tomllib.load(fh)


REFERENCE = _load_summaries()


def _assert_unchanged(before: pd.DataFrame, after: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(before, after)
    assert before.attrs == after.attrs


# ---------------------------------------------------------------- read_dta


def test_read_dta_keeps_variable_and_value_labels():
    df = read_dta(datasets.hsb_path("schools"))
    assert list(df.columns) == ["id", "size", "sector", "pracad", "disclim", "himinty", "meanses"]
    assert df.attrs["variable_labels"]["size"] == "school enrollment"
    assert df.attrs["value_labels"]["sector"] == {0: "public", 1: "catholic"}
    assert df.attrs["source_path"].endswith("hsb2.dta")
    assert pd.api.types.is_string_dtype(df["id"])


def test_read_dta_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.dta"
    with pytest.raises(DataError, match="not found") as info:
        read_dta(path)
    assert str(path) in str(info.value)


def test_read_dta_rejects_a_non_stata_file(tmp_path):
    path = tmp_path / "fake.dta"
    path.write_text("id,x\n1,2\n")
    with pytest.raises(DataError, match=r"is not a Stata \.dta file") as info:
        read_dta(path)
    assert str(path) in str(info.value)


def test_read_dta_rejects_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"is not a Stata \.dta file"):
        read_dta(tmp_path)


def test_read_dta_round_trip_of_labels(tmp_path):
    path = tmp_path / "small.dta"
    frame = pd.DataFrame({"g": ["a", "b"], "x": np.array([0, 1], dtype=np.int8)})
    frame.to_stata(
        path,
        write_index=False,
        variable_labels={"g": "group", "x": "flag"},
        value_labels={"x": {0: "no", 1: "yes"}},
    )
    df = read_dta(path)
    assert df["x"].tolist() == [0, 1]
    assert df.attrs["variable_labels"] == {"g": "group", "x": "flag"}
    assert df.attrs["value_labels"] == {"x": {0: "no", 1: "yes"}}


# ---------------------------------------------------------------- merge_levels


def _levels():
    l1 = pd.DataFrame(
        {"id": ["b", "a", "b", "c"], "y": [1.0, 2.0, 3.0, 4.0]}, index=[10, 11, 12, 13]
    )
    l2 = pd.DataFrame({"id": ["a", "b", "c"], "z": [100, 200, 300], "w": [0.5, 0.25, 0.125]})
    return l1, l2


def test_merge_levels_attaches_group_values_in_level1_order():
    l1, l2 = _levels()
    merged = merge_levels(l1, l2)
    assert list(merged.columns) == ["id", "y", "z", "w"]
    assert merged.index.tolist() == [10, 11, 12, 13]
    assert merged["z"].tolist() == [200, 100, 200, 300]
    assert merged["w"].tolist() == [0.25, 0.5, 0.25, 0.125]


def test_merge_levels_leaves_callers_frames_unchanged():
    l1, l2 = _levels()
    l1.attrs["variable_labels"] = {"y": "outcome"}
    b1, b2 = l1.copy(), l2.copy()
    merge_levels(l1, l2)
    _assert_unchanged(b1, l1)
    _assert_unchanged(b2, l2)


def test_merge_levels_reproduces_bundled_combined_file(hsb_students, hsb_schools, hsb_combined):
    merged = merge_levels(hsb_students, hsb_schools)
    pd.testing.assert_frame_equal(merged, hsb_combined, check_dtype=False)
    assert merged.attrs["value_labels"]["sector"] == hsb_combined.attrs["value_labels"]["sector"]


@pytest.mark.parametrize("side", ["level-1", "level-2"])
def test_merge_levels_missing_id_names_the_side(side):
    l1, l2 = _levels()
    if side == "level-1":
        l1 = l1.rename(columns={"id": "school"})
    else:
        l2 = l2.rename(columns={"id": "school"})
    with pytest.raises(DataError, match=f"{side} data has no id column 'id'"):
        merge_levels(l1, l2)


def test_merge_levels_repeated_level2_ids_are_named():
    l1, l2 = _levels()
    l2 = pd.concat([l2, l2.iloc[[0, 2]]], ignore_index=True)
    with pytest.raises(DataError, match="repeat") as info:
        merge_levels(l1, l2)
    assert "'a'" in str(info.value) and "'c'" in str(info.value)
    assert "2 id(s)" in str(info.value)


def test_merge_levels_unmatched_level1_ids_are_counted_and_named():
    l1, l2 = _levels()
    l1 = pd.concat([l1, pd.DataFrame({"id": ["x", "y", "x"], "y": [0.0, 0.0, 0.0]})])
    with pytest.raises(DataError, match="2 level-1 id") as info:
        merge_levels(l1, l2)
    assert "'x'" in str(info.value) and "'y'" in str(info.value)
    assert "3 level-1 rows" in str(info.value)


def test_merge_levels_conflicting_shared_column_is_named():
    l1, l2 = _levels()
    l1["z"] = [200, 100, 200, 999]  # school c disagrees
    with pytest.raises(DataError, match="'z'.*different values"):
        merge_levels(l1, l2)


def test_merge_levels_identical_shared_column_is_kept_once():
    l1, l2 = _levels()
    l1["z"] = [200, 100, 200, 300]
    merged = merge_levels(l1, l2)
    assert list(merged.columns) == ["id", "y", "z", "w"]
    assert not any(c.endswith(("_x", "_y")) for c in merged.columns)


def test_merge_levels_text_versus_numeric_id_is_reported():
    l1, l2 = _levels()
    l2 = l2.assign(id=[1, 2, 3])
    with pytest.raises(DataError, match="text in the level-1 data but numeric"):
        merge_levels(l1, l2)


# ---------------------------------------------------------------- summarize


def test_summarize_columns_string_variable_and_n_minus_1():
    df = pd.DataFrame({"name": ["p", "q", "r"], "x": [1.0, 2.0, np.nan], "k": [1, 1, 4]})
    table = summarize(df)
    assert tuple(table.columns) == SUMMARY_COLUMNS
    name, x, k = table.to_dict("records")
    assert name["Obs"] == 0 and all(np.isnan(name[c]) for c in ("Mean", "Std. dev.", "Min", "Max"))
    assert x["Obs"] == 2 and x["Mean"] == 1.5
    assert x["Std. dev."] == pytest.approx(np.std([1.0, 2.0], ddof=1))
    assert (k["Min"], k["Max"]) == (1.0, 4.0)


def test_summarize_single_observation_has_missing_sd():
    table = summarize(pd.DataFrame({"x": [3.0]}))
    assert table.loc[0, "Obs"] == 1 and np.isnan(table.loc[0, "Std. dev."])


def test_summarize_varlist_range_and_unknown_variable():
    df = pd.DataFrame({"a": [1], "b": [2], "c": [3], "d": [4]})
    assert summarize(df, variables="b-d a")["Variable"].tolist() == ["b", "c", "d", "a"]
    assert summarize(df, variables=["c"])["Variable"].tolist() == ["c"]
    with pytest.raises(DataError, match="'zz' not found"):
        summarize(df, variables="zz")


def test_summarize_by_group_uses_first_row_of_each_group():
    df = pd.DataFrame({"g": ["a", "a", "b"], "v": [1.0, 1.0, 5.0], "x": [9.0, 0.0, 7.0]})
    table = summarize(df, by_group="g", variables="v x")
    assert table["Obs"].tolist() == [2, 2]
    assert table.loc[1, "Mean"] == 8.0  # rows 0 and 2


def test_summarize_leaves_frame_unchanged(hsb_combined):
    before = hsb_combined.copy()
    summarize(hsb_combined, by_group="id")
    _assert_unchanged(before, hsb_combined)


@pytest.mark.parametrize("case", REFERENCE["summary"], ids=lambda c: c["name"])
def test_summarize_reproduces_seed_tables_at_printed_digits(case):
    df = datasets.hsb(case["dataset"])
    table = summarize(df, by_group=case.get("by_group"), variables=case.get("variables"))
    expected_rows = case["row"]
    assert table["Variable"].tolist() == [r["variable"] for r in expected_rows]
    for actual, expected in zip(table.to_dict("records"), expected_rows, strict=True):
        where = f"{case['name']} {expected['variable']} (seed lines {case['lines']})"
        assert actual["Obs"] == expected["obs"], where
        for key, column in (("mean", "Mean"), ("sd", "Std. dev."), ("min", "Min"), ("max", "Max")):
            if key not in expected:
                assert np.isnan(actual[column]), where
                continue
            printed = expected[key]
            assert stata_g9(actual[column]) == printed, f"{where} {column}"
            # the printed text, read as a number, is within half a unit of its last digit
            decimals = len(printed.split(".")[1]) if "." in printed else 0
            assert abs(actual[column] - float(printed)) <= 0.5 * 10.0**-decimals, where


@pytest.mark.parametrize("case", REFERENCE["summary"], ids=lambda c: c["name"])
def test_format_summarize_prints_the_seed_layout(case):
    df = datasets.hsb(case["dataset"])
    table = summarize(df, by_group=case.get("by_group"), variables=case.get("variables"))
    assert format_summarize(table) == case["printed"].strip("\n")


# ---------------------------------------------------------------- tag_first


def test_tag_first_marks_first_row_in_data_order_and_skips_missing_groups():
    df = pd.DataFrame({"g": ["b", "a", "b", None, "a", None]})
    tag = tag_first(df, "g")
    assert tag.tolist() == [1, 1, 0, 0, 0, 0]
    assert tag.index.equals(df.index) and tag.name == "tag"


def test_tag_first_several_columns_and_missing_column():
    df = pd.DataFrame({"g": [1, 1, 1], "h": [1, 2, 1]})
    assert tag_first(df, ["g", "h"]).tolist() == [1, 1, 0]
    with pytest.raises(DataError, match="'zz' not found"):
        tag_first(df, "zz")


@pytest.mark.parametrize("case", REFERENCE["tabulate"], ids=lambda c: c["name"])
def test_tab_tag_counts_match_seed(case, hsb_combined):
    before = hsb_combined.copy()
    tag = tag_first(hsb_combined, "id")
    _assert_unchanged(before, hsb_combined)
    counts = tag.value_counts().sort_index()
    assert int(counts.sum()) == case["total"]
    cumulative = 0
    for row in case["row"]:
        freq = int(counts[row["value"]])
        cumulative += freq
        assert freq == row["freq"]
        assert f"{100 * freq / case['total']:.2f}" == row["percent"]
        assert f"{100 * cumulative / case['total']:.2f}" == row["cum"]


# ---------------------------------------------------------------- center


def test_center_grand_mean():
    df = pd.DataFrame({"x": [1.0, 2.0, 6.0, np.nan]})
    out = center(df, "x")
    assert out["x_cgm"].iloc[:3].tolist() == [-2.0, -1.0, 3.0]
    assert np.isnan(out["x_cgm"].iloc[3])
    assert "x_cgm" not in df.columns


def test_center_group_mean_from_rows_present(hsb_combined):
    before = hsb_combined.copy()
    out = center(hsb_combined, "ses", by="id", name="ses_gmc")
    _assert_unchanged(before, hsb_combined)
    assert list(out.columns) == list(hsb_combined.columns) + ["ses_gmc"]
    assert out.groupby("id")["ses_gmc"].mean().abs().max() < 1e-12
    assert "ses_gmc" in out.attrs["variable_labels"]
    assert "ses_gmc" not in hsb_combined.attrs["variable_labels"]


def test_center_group_mean_from_level2_column_differs_from_sample_mean(hsb_combined):
    from_file = center(hsb_combined, "ses", by="id", group_mean_from="meanses")
    assert np.array_equal(
        from_file["ses_cwc"].to_numpy(), (hsb_combined["ses"] - hsb_combined["meanses"]).to_numpy()
    )
    from_rows = center(hsb_combined, "ses", by="id")
    gap = (from_file["ses_cwc"] - from_rows["ses_cwc"]).abs()
    assert gap.max() > 1e-3  # meanses is not the mean of the students present (DESIGN.md)


def test_center_missing_column():
    df = pd.DataFrame({"g": [1], "x": [1.0]})
    with pytest.raises(DataError, match="'nope' not found"):
        center(df, "nope")
    with pytest.raises(DataError, match="by column 'h' not found"):
        center(df, "x", by="h")
    with pytest.raises(DataError, match="group_mean_from column 'm' not found"):
        center(df, "x", by="g", group_mean_from="m")


def test_center_non_numeric_column():
    df = pd.DataFrame({"g": [1, 1], "x": ["a", "b"], "y": [1.0, 2.0], "m": ["u", "u"]})
    with pytest.raises(DataError, match="'x' is not numeric"):
        center(df, "x")
    with pytest.raises(DataError, match="'m' is not numeric"):
        center(df, "y", by="g", group_mean_from="m")


def test_center_group_mean_column_must_be_constant_within_groups():
    df = pd.DataFrame({"g": [1, 1, 2], "x": [1.0, 2.0, 3.0], "m": [1.5, 1.6, 3.0]})
    with pytest.raises(DataError, match="varies within g"):
        center(df, "x", by="g", group_mean_from="m")


def test_center_argument_misuse():
    df = pd.DataFrame({"g": [1], "x": [1.0], "x_cgm": [0.0]})
    with pytest.raises(UsageError, match="needs by="):
        center(df, "x", group_mean_from="x")
    with pytest.raises(DataError, match="already exists"):
        center(df, "x")


# ---------------------------------------------------------------- datasets


def test_hsb_levels_match_seed_counts(hsb_students, hsb_schools, hsb_combined):
    obs = {c["name"]: {r["variable"]: r["obs"] for r in c["row"]} for c in REFERENCE["summary"]}
    assert len(hsb_students) == obs["hsb1"]["mathach"]
    assert len(hsb_schools) == obs["hsb2"]["size"]
    assert len(hsb_combined) == obs["hsb"]["meanses"]
    assert hsb_combined["id"].nunique() == len(hsb_schools)
    assert list(hsb_combined.columns) == list(hsb_students.columns) + list(hsb_schools.columns[1:])


def test_hsb_students_are_in_school_order(hsb_students):
    ids = hsb_students["id"]
    assert ids.is_monotonic_increasing
    assert ids.str.fullmatch(r"\d{4}").all()


def test_hsb_unknown_level_lists_choices():
    with pytest.raises(UsageError, match="'students', 'schools', 'combined'"):
        datasets.hsb("pupils")


def test_hsb_returns_a_fresh_frame():
    a = datasets.hsb("schools")
    a.loc[0, "size"] = -1
    assert datasets.hsb("schools").loc[0, "size"] != -1


def test_sleepstudy():
    df = datasets.sleepstudy()
    assert list(df.columns) == ["Reaction", "Days", "Subject"]
    assert pd.api.types.is_string_dtype(df["Subject"])
    assert df.groupby("Subject").size().eq(10).all()
    assert sorted(df["Days"].unique().tolist()) == list(range(10))


def test_bundled_files_match_checksums_in_fixtures_readme():
    text = (REPO / "fixtures" / "README.md").read_text(encoding="utf-8")
    listed = dict(
        (name, digest) for digest, name in re.findall(r"([0-9a-f]{64})\s+fixtures/data/(\S+)", text)
    )
    assert set(listed) >= {"hsb1.dta", "hsb2.dta", "hsb.dta", "sleepstudy.csv"}
    for name, digest in listed.items():
        actual = hashlib.sha256((REPO / "fixtures" / "data" / name).read_bytes()).hexdigest()
        assert actual == digest, f"fixtures/data/{name} changed; rerun scripts/make_hsb_data.py"


# ---------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_values = st.lists(
    st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=0, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(_values)
def test_summarize_matches_plain_formulas(values):
    x = pd.Series([np.nan if v is None else v for v in values], dtype="float64")
    row = summarize(pd.DataFrame({"x": x})).iloc[0]
    present = x.dropna().to_numpy()
    assert row["Obs"] == present.size
    if present.size == 0:
        assert np.isnan(row["Mean"]) and np.isnan(row["Min"])
    else:
        assert row["Mean"] == pytest.approx(present.mean(), rel=1e-12, abs=1e-9)
        assert (row["Min"], row["Max"]) == (present.min(), present.max())
    if present.size > 1:
        assert row["Std. dev."] == pytest.approx(present.std(ddof=1), rel=1e-9, abs=1e-9)
    else:
        assert np.isnan(row["Std. dev."])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from("abcd"), min_size=1, max_size=30))
def test_merge_levels_then_tag_first_agree_with_groups(ids):
    l1 = pd.DataFrame({"id": ids, "y": np.arange(len(ids), dtype=float)})
    l2 = pd.DataFrame({"id": list("dcba"), "z": [4, 3, 2, 1]})
    before = l1.copy()
    merged = merge_levels(l1, l2)
    _assert_unchanged(before, l1)
    assert merged["z"].tolist() == [{"a": 1, "b": 2, "c": 3, "d": 4}[i] for i in ids]
    assert int(tag_first(merged, "id").sum()) == len(set(ids))
