"""R's reference for the differential tests: exported data in pandas, and R's own numbers.

* :func:`export_datasets` runs ``Rscript r/export_datasets.R OUTDIR`` (real data sets from
  lme4, nlme and mlmRev, as CSV at full precision plus a JSON sidecar with each column's R
  class); :func:`load_dataset` reads one back into pandas with the matching dtypes: factor ->
  Categorical with R's levels, ordered -> ordered Categorical, character -> object (str),
  logical -> bool, integer -> int64 (Int64 when it has NAs), numeric -> float64.
* :class:`RReference` sources ``r/export_datasets.R`` and ``r/tests/differential_reference.R``
  into a private R environment (never R's global environment), builds the ORIGINAL R data
  frames there once (from the packages, not from the CSVs, so the pandas round trip is tested
  too) and computes, per formula and lmer arguments, lme4's fixed-effect model matrix
  (:class:`RDesign`) and an lmer fit with tight bobyqa settings (:class:`RFit`).

Needs R with lme4, nlme, mlmRev and jsonlite (``bash scripts/install.sh``) and rpy2; it is
imported only by tests marked ``requires_r``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["RDesign", "RFit", "RReference", "RScripts", "REPO", "export_datasets", "load_dataset", "r_column"]

REPO = Path(__file__).resolve().parent.parent
EXPORT_SCRIPT = REPO / "r" / "export_datasets.R"
REFERENCE_SCRIPT = REPO / "r" / "tests" / "differential_reference.R"
#: The optimum every R reference sits at (tight bobyqa, then a polishing run): sourced first.
REFERENCE_FIT_SCRIPT = REPO / "r" / "tests" / "reference_fit.R"


def export_datasets(outdir: Path) -> list[str]:
    """Run the committed export script into ``outdir``; the names of the data sets written."""
    proc = subprocess.run(
        ["Rscript", "--vanilla", str(EXPORT_SCRIPT), str(outdir)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{EXPORT_SCRIPT.name} failed ({proc.returncode}): {proc.stderr.strip()}")
    return sorted(p.stem for p in Path(outdir).glob("*.json") if p.stem != "versions")


def load_dataset(outdir: Path, name: str) -> pd.DataFrame:
    """One exported data set as a DataFrame whose dtypes match the R column classes."""
    meta = json.loads((Path(outdir) / f"{name}.json").read_text(encoding="utf-8"))
    raw = pd.read_csv(Path(outdir) / f"{name}.csv", dtype=str, keep_default_na=False, na_values=[])
    if len(raw) != meta["nrow"]:
        raise ValueError(f"{name}: {len(raw)} rows in the CSV, {meta['nrow']} in the JSON")
    out: dict[str, Any] = {}
    for col in meta["columns"]:
        nm, cls = col["name"], col["class"]
        text = raw[nm]
        missing = (text == "").to_numpy()
        if cls == "numeric":
            out[nm] = pd.to_numeric(text.where(~missing, None), errors="raise").astype("float64")
        elif cls == "integer":
            values = pd.to_numeric(text.where(~missing, None), errors="raise")
            out[nm] = values.astype("Int64" if missing.any() else "int64")
        elif cls == "logical":
            mapped = text.map({"TRUE": True, "FALSE": False, "": pd.NA})
            out[nm] = mapped.astype("boolean" if missing.any() else "bool")
        elif cls == "character":
            out[nm] = text.astype(object)
        elif cls in ("factor", "ordered"):
            levels = list(col["levels"])
            values = text.where(~missing, None)
            cat = pd.Categorical(values, categories=levels, ordered=cls == "ordered")
            if cat.isna().sum() != missing.sum():
                raise ValueError(f"{name}.{nm}: values outside the levels R exported")
            out[nm] = cat
        else:
            raise ValueError(f"{name}.{nm}: unknown R class {cls!r}")
    return pd.DataFrame(out)


@dataclass(frozen=True)
class RDesign:
    """lme4's fixed-effect model matrix: column names, values, rows used (0-based), response."""

    names: tuple[str, ...]
    X: np.ndarray
    rows: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class RFit:
    """An lmer fit: logLik, fixed effects and SEs, as.data.frame(VarCorr(fit)) rows."""

    loglik: float
    fixef_names: tuple[str, ...]
    fixef: np.ndarray
    se: np.ndarray
    varcorr: tuple[tuple[str, str, str, float], ...]  # (grp, var1, var2, vcov); var2 "" for variances
    nobs: int
    rows: np.ndarray
    warnings: tuple[str, ...]


class RError(RuntimeError):
    """R itself refused the call (the message is R's)."""


def _get(lst: Any, name: str) -> Any:
    names = list(lst.names)
    return lst[names.index(name)]


def _opt(value: str | None) -> Any:
    import rpy2.robjects as ro

    return ro.NULL if value is None else value


class RReference:
    """R's side of the differential tests, in one private R environment.

    The R data frames are built once; every call takes a data set name and lmer's arguments
    as R expressions (text), exactly as the corpus records them.
    """

    def __init__(self) -> None:
        import rpy2.robjects as ro

        self._ro = ro
        self.env = ro.r("new.env()")
        for script in (EXPORT_SCRIPT, REFERENCE_FIT_SCRIPT, REFERENCE_SCRIPT):
            ro.r["sys.source"](str(script), envir=self.env)
        self._datasets = self.env["hlmbridge_diff_datasets"]()
        self._names = list(self._datasets.names)

    @property
    def dataset_names(self) -> list[str]:
        """Names of the R data frames (the same as the exported files)."""
        return list(self._names)

    def frame(self, name: str) -> Any:
        """The original R data frame (an rpy2 object)."""
        return self._datasets[self._names.index(name)]

    def _call(self, fun: str, dataset: str, formula: str, reml: bool, weights: str | None,
              offset: str | None, subset: str | None, na_action: str | None) -> Any:
        out = self.env[fun](self.frame(dataset), formula, REML=bool(reml), weights=_opt(weights),
                            offset=_opt(offset), subset=_opt(subset), na_action=_opt(na_action))
        if "error" in list(out.names):
            raise RError(str(_get(out, "error")[0]))
        return out

    def model_matrix(self, dataset: str, formula: str, *, reml: bool = True, weights: str | None = None,
                     offset: str | None = None, subset: str | None = None,
                     na_action: str | None = None) -> RDesign:
        """lme4's fixed-effect model matrix (lFormula's X, no rank-deficient column dropped)."""
        out = self._call("diffref_model_matrix", dataset, formula, reml, weights, offset, subset, na_action)
        names = tuple(str(s) for s in _get(out, "names"))
        rows = np.array(_get(out, "rows"), dtype=int) - 1
        flat = np.array(_get(out, "X"), dtype=float).ravel(order="F")
        X = flat.reshape((len(rows), len(names)), order="F")
        return RDesign(names, X, rows, np.array(_get(out, "y"), dtype=float))

    def lmer(self, dataset: str, formula: str, *, reml: bool = True, weights: str | None = None,
             offset: str | None = None, subset: str | None = None, na_action: str | None = None) -> RFit:
        """An lmer fit with lmerControl(optimizer="bobyqa", rhoend=1e-12, maxfun=1e5)."""
        out = self._call("diffref_lmer", dataset, formula, reml, weights, offset, subset, na_action)
        vc = tuple(
            (str(g), str(v1), str(v2), float(v))
            for g, v1, v2, v in zip(_get(out, "vc_grp"), _get(out, "vc_var1"), _get(out, "vc_var2"),
                                    _get(out, "vc_vcov"), strict=True)
        )
        return RFit(
            loglik=float(_get(out, "loglik")[0]),
            fixef_names=tuple(str(s) for s in _get(out, "fixef_names")),
            fixef=np.array(_get(out, "fixef"), dtype=float),
            se=np.array(_get(out, "se"), dtype=float),
            varcorr=vc,
            nobs=int(_get(out, "nobs")[0]),
            rows=np.array(_get(out, "rows"), dtype=int) - 1,
            warnings=tuple(str(s) for s in _get(out, "warnings")),
        )


def r_column(ref: RReference, dataset: str, column: str) -> tuple[str, list[Any], list[str] | None]:
    """(R class, values with None for NA, levels or None) of one column of an R data frame."""
    ro = ref._ro
    col = ref.frame(dataset).rx2(column)
    cls = str(ref.env["hlmbridge_diff_column_class"](col)[0])
    if cls in ("factor", "ordered"):
        levels = [str(s) for s in ro.r["levels"](col)]
        codes = list(ro.r["as.integer"](col))
        values = [None if c == ro.NA_Integer else levels[c - 1] for c in codes]
        return cls, values, levels
    isna = list(ro.r["is.na"](col))
    if cls == "logical":
        raw = list(ro.r["as.integer"](col))
        return cls, [None if m else bool(v) for v, m in zip(raw, isna, strict=True)], None
    if cls == "character":
        return cls, [None if m else str(v) for v, m in zip(col, isna, strict=True)], None
    as_float = list(ro.r["as.numeric"](col))
    return cls, [None if m else float(v) for v, m in zip(as_float, isna, strict=True)], None


class RScripts:
    """R reference scripts sourced into one private R environment (never R's global one), with
    pandas <-> R data frame conversion, R data sets cached by (package, name) through the
    scripts' ``loader`` function, and a fit's variance components as the R scripts take them."""

    def __init__(self, files: tuple[Path, ...] | list[Path], loader: str = "anova_reference_data") -> None:
        import rpy2.robjects as ro

        self.ro = ro
        self.env = ro.Environment()
        for f in files:
            ro.r["sys.source"](str(f), envir=self.env)
        self._loader = loader
        self._data: dict[tuple[str, str], tuple] = {}

    def conv(self, x: Any, to_r: bool) -> Any:
        """A pandas frame as an R data frame (``to_r``), or back."""
        from rpy2.robjects import pandas2ri
        from rpy2.robjects.conversion import localconverter

        with localconverter(self.ro.default_converter + pandas2ri.converter):
            c = self.ro.conversion.get_conversion()
            return c.py2rpy(x) if to_r else c.rpy2py(x)

    def data(self, package: str, name: str) -> tuple:
        """(R data frame, the same as pandas), made once per data set."""
        if (package, name) not in self._data:
            rd = self.env[self._loader](package, name)
            self._data[(package, name)] = (rd, self.conv(rd, False))
        return self._data[(package, name)]

    def variance_rows(self, res: Any) -> Any:
        """A fit's variance components in the columns the R scripts' refits at fixed values read."""
        rows = res.random.rename(columns={"group": "stata_group", "lme4_group": "group"})
        return self.conv(rows[["group", "kind", "term1", "term2", "estimate"]].fillna({"term2": ""}), True)

    def arrays(self, out: Any) -> dict[str, np.ndarray]:
        """An R named list as numpy arrays by name (NULL elements left out); a matrix keeps its
        shape (R stores it column-major)."""
        res = {}
        for key, val in zip(out.names, out):
            if val is self.ro.NULL:
                continue
            arr = np.array(val)
            dim = self.ro.r["dim"](val)
            if dim is not self.ro.NULL and len(dim) == 2 and arr.ndim == 1:
                arr = arr.reshape(tuple(dim), order="F")
            res[key] = arr
        return res
