"""Reference fixtures: TOML files of Stata's printed numbers <-> :class:`Reference` objects.

One file per case (one Stata output block), named ``<case name>.toml``. Each file has
``[case]`` (name, kind, ``numbers`` = how many numbers the file holds, ``engines`` = the
engines that must reproduce them, notes), ``[source]`` (log, line, command, program, and
``encoding`` when the log was not UTF-8), ``[[models]]`` (the model commands the numbers
refer to, by the name Stata knew them), ``[meta]``, ``[tolerance.<class>]`` defaults with
their reason, then the numbers, keyed by label::

    [fixed."ses"]
    estimate = { printed = "1.234567", value = 1.234567, line = 100 }

A number's key is its table path, written ``fixed."ses".estimate``. A cell may carry a
per-row override (``rtol``/``se``/``atol`` with a mandatory ``reason``), an
``explain_when = "singular"`` with its ``reason`` (a difference on a boundary fit is then
*explained*, a named cause), or ``engine = false`` with a ``reason`` (recorded, but no
engine computes it). A TOML file without a ``[case]`` table must say what it is with a
top-level ``format = "overrides"`` or ``format = "data_summaries"``; any other TOML file
under a fixture directory is an error (a misspelled ``[case]`` is never passed over).
Fixture files are UTF-8; a file that is not is refused with its line.

Examples
--------
>>> from hlmbridge.reference.fixtures import format_key, parse_key
>>> format_key(("random", "var(_cons)", "std_error"))
'random."var(_cons)".std_error'
>>> parse_key('recov."id"."ses"."_cons"')
('recov', 'id', 'ses', '_cons')
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hlmbridge.datasets import resource_path
from hlmbridge.errors import FixtureError, HlmbridgeError
from hlmbridge.reference.stata_log import (CONTROL_RE, RESIDUAL_ROW_RE, LogBlock, ModelRef, ParsedLog, parse_log,
                                          parse_number)

__all__ = [
    "ABSOLUTE_CLASSES",
    "DEFAULT_TOLERANCES",
    "FIXTURE_ROOT",
    "FORMAT_KEYS",
    "OPTIONAL_CLASSES",
    "OTHER_FORMATS",
    "RefValue",
    "Reference",
    "STATA_DF_METHODS",
    "Source",
    "Tolerance",
    "block_to_toml",
    "boundary_cases",
    "case_name",
    "df_method_family",
    "fixture_files",
    "format_key",
    "import_stata",
    "load_reference",
    "load_references",
    "model_commands",
    "parse_key",
    "quantity_class",
    "unknown_keys",
]

#: ``fixtures/stata`` of the source tree (resolved from this file, never the cwd).
FIXTURE_ROOT: Path = resource_path("fixtures", "stata", required=False)  # the wheel's copy, else the source tree

_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------------------
# keys
def format_key(path: Sequence[str]) -> str:
    """The dotted key of a table path; labels (middle parts) are always quoted."""
    out = []
    for k, part in enumerate(path):
        middle = 0 < k < len(path) - 1
        out.append(part if (_BARE.match(part) and not middle) else '"' + part.replace('"', '\\"') + '"')
    return ".".join(out)


def parse_key(key: str) -> tuple[str, ...]:
    """Inverse of :func:`format_key`."""
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"|([^.]+)', key)
    return tuple(q.replace('\\"', '"') if q else b for q, b in parts)


# --------------------------------------------------------------------------------------
# schema: section -> (number of label levels, allowed field names or None for a label leaf)
#: ``t`` and ``df`` come from a table printed with ``dfmethod()`` (``statistic`` is a z).
_FIXED = ("estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high", "t", "df")
#: Header numbers of a ``mixed ..., dfmethod()`` table: the df range and the F test of the
#: fixed effects (``F(f_df1, f_df2) = f_stat``, ``Prob > F = f_p``).
_DF_HEADER = ("df_min", "df_avg", "df_max", "f_stat", "f_df1", "f_df2", "f_p")
_RANDOM = ("estimate", "std_error", "conf_low", "conf_high")
SECTIONS: Mapping[str, tuple[int, tuple[str, ...] | None]] = {
    "header": (0, ("nobs", "n_groups", "group_min", "group_mean", "group_max", "wald_chi2", "wald_df",
                   "wald_p", "loglik", *_DF_HEADER)),
    "fixed": (1, _FIXED),
    "random": (1, _RANDOM),
    "lr": (0, ("df", "chi2", "p_value")),
    "icc": (1, _RANDOM),
    "ic": (0, ("N", "ll_null", "ll_model", "df", "aic", "bic")),
    "recov": (2, None),
    "recov_corr": (2, None),
    "lrtest": (0, ("df", "chi2", "p_value")),
    "eb": (0, None),
    "ereturn": (0, None),
    "di": (0, ("value", *(f"value_{k}" for k in range(2, 10)))),
    "derived": (0, None),
    "summarize": (1, ("obs", "mean", "sd", "min", "max")),
    "tab": (1, ("freq", "percent", "cum")),
    # added for Stata 13-18 logs (three levels, xtreg, list, estimates table, two-way tab):
    "groups": (1, ("n_groups", "group_min", "group_mean", "group_max")),
    "list": (1, None),
    "etable": (2, ("b", "se", "t", "p")),
    "tab2": (1, None),
}
KIND_SECTIONS: Mapping[str, tuple[str, ...]] = {
    "mixed": ("header", "fixed", "random", "lr"),
    "estat_icc": ("icc",),
    "estat_ic": ("ic",),
    "estat_recov": (),
    "lrtest": ("lrtest",),
    "matlist": ("eb",),
    "ereturn": ("ereturn",),
    "di": ("di",),
    "summarize": ("summarize",),
    "tab": ("tab",),
    "prose": ("derived",),
    "xtreg": ("header", "fixed", "random", "lr"),
    "melogit": ("header", "fixed", "random", "lr"),
    "xtlogit": ("header", "fixed", "random", "lr"),
    "list": ("list",),
    "etable": ("etable",),
    "tab2": ("tab2",),
}
#: e() scalars an engine result determines, and those it does not (with the reason).
ERETURN_ENGINE = (
    "e(rank)", "e(k_f)", "e(k_r)", "e(k)", "e(k_rs)", "e(k_rc)", "e(k_res)", "e(converged)", "e(ll)",
    "e(ll_c)", "e(df_c)", "e(chi2_c)", "e(p_c)", "e(N)", "e(df_m)", "e(p)", "e(chi2)",
)
ERETURN_NOT_ENGINE: Mapping[str, str] = {
    "e(ic)": "iteration count of Stata's optimizer; not a property of the model",
    "e(rc)": "Stata's return code of the estimation command (0 = success)",
    "e(small)": "Stata flag for small-sample statistics (always 0 for mixed ML)",
    "e(nrgroups)": "Stata's count of residual-structure groups (by() option); bookkeeping",
}
_COUNTS = {
    ("header", "nobs"), ("header", "n_groups"), ("header", "group_min"), ("header", "group_max"),
    ("header", "wald_df"), ("lr", "df"), ("ic", "N"), ("ic", "df"), ("lrtest", "df"), ("header", "f_df1"),
}
#: Small-sample (t and F) degrees of freedom: estimated, not counted.
_DF = {("fixed", "df"), ("header", "df_min"), ("header", "df_avg"), ("header", "df_max"), ("header", "f_df2")}
_ERET_CLASS = {"e(ll)": "loglik", "e(ll_c)": "loglik", "e(chi2_c)": "chi2", "e(chi2)": "chi2",
               "e(p_c)": "p_value", "e(p)": "p_value"}
_LOGLIK = {("header", "loglik"), ("ic", "ll_null"), ("ic", "ll_model")}
_CHI2 = {("header", "wald_chi2"), ("lr", "chi2"), ("lrtest", "chi2"), ("ic", "aic"), ("ic", "bic")}

#: Sections computed from the data alone (no model fit).
DATA_SECTIONS = ("summarize", "tab", "tab2")
QUANTITY_CLASSES = ("estimate", "std_error", "ci", "statistic", "p_value", "loglik", "chi2", "count", "df")
#: Classes a generated fixture declares only when it holds such a number (the seed holds none).
OPTIONAL_CLASSES = ("df",)
#: Classes judged on an absolute scale only: a relative tolerance there grows with the sample
#: size (log likelihood, AIC, BIC, chi2), so the loader refuses ``rtol`` for them.
ABSOLUTE_CLASSES = ("loglik", "chi2")
#: What a TOML file without ``[case]`` may declare itself to be (top-level ``format = ...``).
OTHER_FORMATS: Mapping[str, str] = MappingProxyType({
    "overrides": "per-row tolerance overrides read by `hlmbridge import-stata --overrides`",
    "data_summaries": "the data layer's summarize/tab reference (tests/test_data.py)",
    "manifest": "every file of a fixture set with its sha256, cases and number counts (hlmbridge.reference.manifest)",
})

#: Every table of the fixture formats and the keys it may hold: the one place they are defined.
#: A loader refuses any other key with the file, the line and the key (a misspelled key is never
#: passed over). Names: ``case``, ``source``, ``models`` (each ``[[models]]``), ``meta``,
#: ``tolerance`` (each ``[tolerance.<class>]``) and ``cell`` (a number's inline table) of a case
#: file, with ``case_top`` its top level besides the quantity sections (:data:`SECTIONS`);
#: ``overrides_top`` and ``override`` of an overrides file; ``data_summaries_top``,
#: ``data_summaries_meta``, ``summary``, ``summary_row``, ``tabulate``, ``tabulate_row`` of
#: ``data_summaries.toml``; ``manifest_top`` and ``manifest_file`` of ``MANIFEST.toml``.
FORMAT_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "case_top": ("case", "source", "models", "meta", "tolerance"),
    "case": ("name", "kind", "numbers", "engines", "notes"),
    "source": ("log", "line", "command", "program", "encoding"),
    "models": ("name", "command", "line"),
    # What the log reader records about a block (hlmbridge.reference.stata_log), any kind.
    "meta": ("title", "method", "group", "response", "levels", "lr_kind", "lr_note", "df_method", "statistic",
             "expression", "row", "nested", "within", "note", "matrix", "corr", "level", "columns", "variable",
             "variable_label", "cmdline", "dataset", "dataset_line", "data_steps", "data_step_lines", "condition",
             "scale", "variables", "row_variable", "models", "names", "options", "statistics", "residuals",
             "residuals_by"),
    "tolerance": ("rtol", "se", "atol", "reason", "explain_when"),
    "cell": ("printed", "value", "line", "rtol", "se", "atol", "reason", "explain_when", "engine", "quantity",
             "args", "text"),
    "overrides_top": ("format", "override"),
    "override": ("case", "keys", "rtol", "se", "atol", "explain_when", "reason"),
    "data_summaries_top": ("format", "meta", "summary", "tabulate"),
    "data_summaries_meta": ("seed", "source", "note"),
    "summary": ("name", "dataset", "by_group", "variables", "setup", "command", "lines", "printed", "row"),
    "summary_row": ("variable", "obs", "mean", "sd", "min", "max"),
    "tabulate": ("name", "dataset", "setup", "variable", "command", "total", "lines", "printed", "row"),
    "tabulate_row": ("value", "freq", "percent", "cum"),
    "manifest_top": ("format", "files", "cases", "numbers", "file"),
    "manifest_file": ("path", "sha256", "case", "numbers", "format"),
})


def unknown_keys(table: Mapping[str, Any], name: str) -> list[str]:
    """The keys of ``table`` that :data:`FORMAT_KEYS` does not allow in a ``name`` table, sorted.

    Examples
    --------
    >>> unknown_keys({"log": "a.log", "line": 3, "comand": "mixed y || g:"}, "source")
    ['comand']
    """
    return sorted(set(table) - set(FORMAT_KEYS[name]))


def quantity_class(path: Sequence[str]) -> str:
    """The tolerance class of a key path (one of :data:`QUANTITY_CLASSES`).

    Examples
    --------
    >>> quantity_class(("fixed", "ses", "conf_low")), quantity_class(("header", "nobs"))
    ('ci', 'count')
    >>> quantity_class(("header", "loglik")), quantity_class(("ic", "aic")), quantity_class(("lr", "chi2"))
    ('loglik', 'chi2', 'chi2')
    >>> quantity_class(("fixed", "ses", "t")), quantity_class(("fixed", "ses", "df")), quantity_class(("header", "f_p"))
    ('statistic', 'df', 'p_value')
    """
    sec, last = path[0], path[-1]
    if (sec, last) in _DF:
        return "df"
    if (sec, last) in _COUNTS or (sec, last) in (("summarize", "obs"), ("tab", "freq")):
        return "count"
    if sec == "tab2" or (sec == "groups" and last != "group_mean"):
        return "count"
    if sec == "etable":
        return {"se": "std_error", "t": "statistic", "p": "p_value"}.get(last, "estimate")
    if sec == "ereturn":
        return _ERET_CLASS.get(last, "count")
    if (sec, last) in _LOGLIK:
        return "loglik"
    if (sec, last) in _CHI2:
        return "chi2"
    if last == "std_error":
        return "std_error"
    if last in ("conf_low", "conf_high"):
        return "ci"
    if last in ("p_value", "wald_p", "f_p"):
        return "p_value"
    if last in ("statistic", "wald_chi2", "chi2", "t", "f_stat"):
        return "statistic"
    return "estimate"


# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How close is close enough, and why.

    ``match`` (equal at the printed digits) is always tried first. Then ``within`` when
    ``|diff| <= se*SE`` of the estimate if ``se`` is set and the number has an SE (rule
    ``se``; ``rtol`` is then not used: a coefficient is judged against its standard error),
    else ``|diff| <= rtol*|expected|`` (rule ``rtol``); or ``|diff| <= atol`` (rule ``atol``).
    """

    rtol: float = 0.0
    se: float | None = None
    atol: float = 0.0
    reason: str = ""
    explain_when: str | None = None
    explain_reason: str | None = None


#: Each class is judged on the scale where a difference could change a conclusion.
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "estimate": Tolerance(1e-4, 1e-3, 0.0, "default: 1e-3 standard errors of the estimate, the scale of any "
                          "conclusion about it; relative difference 1e-4 only for a number without a standard error"),
    "std_error": Tolerance(1e-4, None, 0.0, "default: relative difference 1e-4; a standard error is a scale, and its "
                           "relative error is that of every CI width and z built on it"),
    "ci": Tolerance(1e-4, 1e-3, 0.0, "default: 1e-3 standard errors of the estimate the interval is for; relative "
                    "difference 1e-4 only without a standard error"),
    "statistic": Tolerance(1e-4, None, 0.0, "default: relative difference 1e-4 of z; it moves a two-sided p-value by "
                           "at most 2*z*phi(z)*1e-4 < 4.9e-5, inside the p-value tolerance"),
    "p_value": Tolerance(0.0, None, 1e-4, "default: absolute difference 1e-4; a p-value is read against thresholds "
                         "such as 0.05 on its own scale, and tiny tail areas (1e-216 vs 2e-216) say the same thing"),
    "loglik": Tolerance(0.0, None, 0.01, "default: absolute 0.01 on the log-likelihood scale = an LR chi2 shift of "
                        "0.02, far below any conclusion; a relative tolerance would grow with the sample "
                        "(1e-4 of -23,557 is 2.4, an LR chi2 shift of 4.7)"),
    "chi2": Tolerance(0.0, None, 0.02, "default: absolute 0.02 on the chi2 / -2 log-likelihood scale (LR and Wald "
                      "chi2, AIC, BIC) = 0.01 of log likelihood; a relative tolerance would grow with the statistic"),
    "count": Tolerance(0.0, None, 0.0, "counts and degrees of freedom are exact"),
    "df": Tolerance(1e-3, None, 0.0, "default: relative difference 1e-3 of a small-sample (Kenward-Roger, "
                    "Satterthwaite) df; it moves a two-sided t p-value by < 1e-4 for df >= 3 (2e-4 at df = 1) and "
                    "the 97.5% t quantile by < 6e-4 relative; Stata's df differ from pbkrtest's/lmerTest's only "
                    "through optimizer noise in the variance parameters, which the df amplify (they are built "
                    "from derivatives of the covariance), so 1e-4 would judge the optimizer, not the method"),
})


@dataclass(frozen=True)
class Source:
    """Provenance of a case."""

    log: str
    line: int
    command: str
    program: str
    encoding: str = "utf-8"


@dataclass(frozen=True)
class RefValue:
    """One reference number with its provenance and tolerance settings."""

    key: str
    path: tuple[str, ...]
    value: float
    printed: str
    log_line: int
    fixture_line: int | None
    qclass: str
    override: Tolerance | None = None
    explain_when: str | None = None
    explain_reason: str | None = None
    engine: bool = True
    reason: str | None = None
    quantity: str | None = None
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reference:
    """One case: provenance, the models it refers to, its numbers and tolerances."""

    case: str
    path: str
    kind: str
    source: Source
    models: tuple[ModelRef, ...]
    values: tuple[RefValue, ...]
    tolerances: Mapping[str, Tolerance]
    meta: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tolerances", MappingProxyType(dict(self.tolerances)))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def needs_engine(self) -> bool:
        """True when some checked number comes from a model fit (not the data layer)."""
        return any(v.engine and v.path[0] not in DATA_SECTIONS for v in self.values)

    @property
    def checked(self) -> tuple[RefValue, ...]:
        """The numbers an engine is expected to reproduce (``engine`` true)."""
        return tuple(v for v in self.values if v.engine)

    def get(self, key: str) -> RefValue | None:
        """The value under ``key``, or None."""
        return next((v for v in self.values if v.key == key), None)

    def model(self, name: str) -> ModelRef:
        """The model command this case knows as ``name`` (``.`` = the active model)."""
        for m in self.models:
            if m.name == name:
                return m
        raise FixtureError(f"case {self.case} names no model {name!r}", path=self.path)

    def tolerance(self, value: RefValue) -> Tolerance:
        """The tolerance that applies to ``value`` (its override, else its class default)."""
        base = self.tolerances.get(value.qclass, DEFAULT_TOLERANCES[value.qclass])
        if value.override is not None:
            base = value.override
        if value.explain_when:
            return Tolerance(base.rtol, base.se, base.atol, base.reason, value.explain_when, value.explain_reason)
        return base


# --------------------------------------------------------------------------------------
# writing
def _toml_str(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    # Never a raw control character: TOML refuses them in strings (the file would not load).
    out = CONTROL_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", out.replace("\r", "\\r"))
    return f'"{out}"'


def _toml_val(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_val(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_val(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if _BARE.match(k) else _toml_str(k)


#: Block kinds of GLMM commands (melogit/mepoisson, xtlogit): fitted by the lme4 engine only.
GLMM_KINDS = ("melogit", "xtlogit")


def case_name(block: LogBlock) -> str:
    """The case name of a block: ``L<line>_<kind>`` (e.g. ``L0174_mixed``)."""
    return f"L{block.line:04d}_{block.kind}"


BOUNDARY_REASON = (
    "boundary fit: the ML optimum has corr(ses,_cons) = +1 (singular covariance); Stata stops on a flat "
    "ridge and its variance-component SEs and CIs there are numerical artefacts (the ib1.sector rerun of the "
    "same model prints different ones); not comparable (STATA_PARITY.md, 'Boundary fits')"
)
_DI_R_RESULT = ("a display of r() results or of scalars the log computed (from summarize, _b[] ...): "
                "recorded, not recomputed")


def _di_reason(expression: str) -> str:
    """Why a ``di`` with no model behind it is not an engine quantity."""
    names = set(re.findall(r"[A-Za-z_]\w*", expression)) - {"exp", "ln", "log", "sqrt", "abs"}
    return _DI_R_RESULT if names else _DI_NOT_ENGINE
#: Why xtreg's rho interval is recorded, not checked (measured on the Snijders & Bosker log, line 22).
XTREG_RHO_CI_REASON = (
    "xtreg, mle's interval for rho is not the delta-method interval on the scales tried (on the Snijders & "
    "Bosker log Stata prints .1780689 to .2924018; logit and log(sigma_u^2/sigma_e^2) scales give .17897 to "
    ".29347, the sigma_u CI endpoints .18039 to .29148): recorded, not checked; rho and its SE are checked")


def _not_engine_reason(block: LogBlock, path: tuple[str, ...]) -> str | None:
    """Why a number of ``block`` is recorded but no engine reproduces it, or None."""
    if block.kind == "xtreg" and path[:2] == ("random", "rho") and path[-1] in ("conf_low", "conf_high"):
        return XTREG_RHO_CI_REASON
    if block.kind == "list" and path[2] not in {m.name for m in block.models}:
        steps = list(zip(block.meta.get("data_step_lines", []), block.meta.get("data_steps", [])))
        from hlmbridge.reference.data_prep import estimation_steps

        why = estimation_steps(steps).get(path[2])
        if why:
            return why
    return None


_DI_NOT_ENGINE = "arithmetic on constants typed from the prose, not on an estimation result: not an engine quantity"


def _is_boundary(block: LogBlock) -> bool:
    """True when the printed var/cov imply a correlation within 1e-3 of +-1."""
    cells = {c.path: c for c in block.cells}
    for path, c in cells.items():
        if len(path) != 3 or path[0] != "random" or path[2] != "estimate":
            continue
        m = re.fullmatch(r"cov\(([^,]+),([^)]+)\)", path[1])
        if not m:
            continue
        va = cells.get(("random", f"var({m.group(1)})", "estimate"))
        vb = cells.get(("random", f"var({m.group(2)})", "estimate"))
        if va and vb and va.value > 0 and vb.value > 0:
            if abs(c.value) / math.sqrt(va.value * vb.value) >= 1 - 1e-3:
                return True
    return False


def boundary_cases(parsed: ParsedLog) -> list[str]:
    """The cases of a parsed log that are boundary fits (:func:`_is_boundary`), whose variance-component
    SEs and CIs the importer marks ``explain_when = "singular"``.

    Examples
    --------
    >>> from hlmbridge.reference.stata_log import parse_log
    >>> boundary_cases(parse_log(FIXTURE_ROOT / "logs" / "000_b67aa17e87dadab7.txt"))
    ['L0815_mixed', 'L0879_mixed']
    """
    return [case_name(b) for b in parsed.blocks if b.kind == "mixed" and _is_boundary(b)]


def _toml_lineno(exc: Exception) -> int | None:
    """The line of a tomllib error (``lineno`` on 3.14+, else from the message)."""
    n = getattr(exc, "lineno", None)
    if n is None:
        m = re.search(r"at line (\d+)", str(exc))
        n = int(m.group(1)) if m else None
    return n


def _read_utf8(path: Path, what: str = "fixture") -> str:
    """The text of a UTF-8 file; a FixtureError naming the line of the first bad byte otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FixtureError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise FixtureError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); a {what} file must be UTF-8: re-save it as UTF-8",
            path=str(path), line=line,
        ) from None


_OVERRIDE_FIELDS = FORMAT_KEYS["override"]


def _load_overrides(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        data = tomllib.loads(_read_utf8(path, "overrides"))
    except tomllib.TOMLDecodeError as exc:
        raise FixtureError(str(exc), path=str(path), line=_toml_lineno(exc)) from exc
    unknown = unknown_keys(data, "overrides_top")
    if unknown or data.get("format", "overrides") != "overrides":
        raise FixtureError(f"an overrides file holds [[override]] tables and `format = \"overrides\"` only; "
                           f"found {unknown or data.get('format')!r}", path=str(path))
    out = data.get("override", [])
    for k, o in enumerate(out):
        missing = [f for f in ("case", "keys", "reason") if f not in o]
        if missing:
            raise FixtureError(f"override #{k + 1} is missing {missing}", path=str(path))
        extra = sorted(set(o) - set(_OVERRIDE_FIELDS))
        if extra:
            raise FixtureError(f"override #{k + 1} has unknown fields {extra} (known: {', '.join(_OVERRIDE_FIELDS)})",
                               path=str(path))
        if not any(f in o for f in ("rtol", "se", "atol", "explain_when")):
            raise FixtureError(f"override #{k + 1} ({o['case']}) sets no tolerance (rtol, se, atol or explain_when)",
                               path=str(path))
    return out


def _no_control(text: str, what: str, log_name: str, line: int) -> None:
    """Refuse a control character in text the importer would write into a fixture."""
    m = CONTROL_RE.search(text)
    if m:
        raise FixtureError(f"control character U+{ord(m.group()):04X} in {what} {text!r}: a Stata log prints none "
                           "(is the file damaged or binary?)", path=log_name, line=line)


def block_to_toml(block: LogBlock, log_name: str, overrides: Sequence[Mapping[str, Any]] = (),
                  encoding: str = "utf-8") -> str:
    """Render one parsed block as a fixture file (deterministic text)."""
    return _render_block(block, log_name, overrides, encoding)[0]


def _render_block(block: LogBlock, log_name: str, overrides: Sequence[Mapping[str, Any]],
                  encoding: str) -> tuple[str, dict[int, int]]:
    """The fixture text and, for each fixture line holding a number, that number's log line."""
    from hlmbridge.engines import DEFAULT_ENGINES
    from hlmbridge.reference.quantities import DI_TABLE, normalize_expression

    name = case_name(block)
    _no_control(block.command, "the command", log_name, block.line)
    for m in block.models:
        _no_control(m.command, "the model command", log_name, m.line)
    for c in block.cells:
        for part in c.path:
            _no_control(part, "the label", log_name, c.line)
    boundary = block.kind == "mixed" and _is_boundary(block)
    per_key: dict[str, dict[str, Any]] = {}
    for o in overrides:
        if o["case"] == name:
            for k in o["keys"]:
                per_key[k] = {x: o[x] for x in ("rtol", "se", "atol", "explain_when", "reason") if x in o}
    notes = list(block.notes)
    di_entry: tuple[str, tuple[str, ...]] | None = None
    di_not_engine = False
    if block.kind == "di":
        expr = normalize_expression(block.meta["expression"])
        if not block.models:
            di_not_engine = True
            why = _di_reason(block.meta["expression"])
            notes.append(f"`di {block.meta['expression']}`: {why}")
        elif expr in DI_TABLE:
            di_entry = (DI_TABLE[expr][0], DI_TABLE[expr][1])
        else:
            raise FixtureError(f"no derived quantity is known for `di {block.meta['expression']}`",
                               path=log_name, line=block.line)
    if boundary:
        notes.append("boundary (singular) fit: variance-component SEs and CIs are explained, not compared")
    out = [
        f"# hlmbridge reference fixture, generated by `hlmbridge import-stata` from {log_name}.",
        "# Do not edit by hand: change the log or seed_overrides.toml and re-import.",
        "# Each number: printed = Stata's text, value = that number, line = its line in the log.",
        "",
        "[case]",
        f"name = {_toml_str(name)}",
        f"kind = {_toml_str(block.kind)}",
        f"numbers = {len(block.cells)}",
    ]
    if block.models:  # numbers from model fits: every engine that fits the model must reproduce them
        glmm = block.kind in GLMM_KINDS  # glmer's engine and hlmbridge's own quadrature (statsmodels has no ML GLMM)
        engines = ["lme4", "quadrature"] if glmm else ["nlme"] if _needs_nlme(block) else list(DEFAULT_ENGINES)
        out.append(f"engines = {_toml_val(engines)}")
    if notes:
        out.append(f"notes = {_toml_val(notes)}")
    out += ["", "[source]", f"log = {_toml_str(log_name)}", f"line = {block.line}",
            f"command = {_toml_str(block.command)}", 'program = "Stata"']
    if encoding != "utf-8":
        out.append(f"encoding = {_toml_str(encoding)}")
    for m in block.models:
        out += ["", "[[models]]", f"name = {_toml_str(m.name)}", f"command = {_toml_str(m.command)}",
                f"line = {m.line}"]
    meta = {k: v for k, v in block.meta.items() if k not in ("names",)}
    if block.kind == "summarize" and " if " in f" {block.command} ":
        meta["condition"] = block.command.split(" if ", 1)[1].strip()
    if meta:
        out += ["", "[meta]"] + [f"{_toml_key(k)} = {_toml_val(v)}" for k, v in meta.items()]
    used = {quantity_class(c.path) for c in block.cells}
    for cls in QUANTITY_CLASSES:
        if cls in OPTIONAL_CLASSES and cls not in used:
            continue
        t = DEFAULT_TOLERANCES[cls]
        out += ["", f"[tolerance.{cls}]"]
        if t.rtol or not (t.se or t.atol):  # rtol = 0.0 alone: exact
            out.append(f"rtol = {_toml_val(t.rtol)}")
        if t.se is not None:
            out.append(f"se = {_toml_val(t.se)}")
        if t.atol:
            out.append(f"atol = {_toml_val(t.atol)}")
        out.append(f"reason = {_toml_str(t.reason)}")
    current: tuple[str, ...] | None = None
    log_lines: dict[int, int] = {}
    for c in block.cells:
        table, leaf = c.path[:-1], c.path[-1]
        if table != current:
            out += ["", "[" + ".".join(_toml_key(p) if k == 0 else _toml_str(p) for k, p in enumerate(table)) + "]"]
            log_lines[len(out)] = c.line
            current = table
        cell: dict[str, Any] = {"printed": c.printed, "value": c.value, "line": c.line}
        key = format_key(c.path)
        if boundary and c.path[0] == "random" and c.path[-1] in ("std_error", "conf_low", "conf_high"):
            cell.update(explain_when="singular", reason=BOUNDARY_REASON)
        if key in per_key:
            cell.update(per_key.pop(key))
        if block.kind == "ereturn" and leaf in ERETURN_NOT_ENGINE:
            cell.update(engine=False, reason=ERETURN_NOT_ENGINE[leaf])
        if di_not_engine:
            cell.update(engine=False, reason=_di_reason(block.meta["expression"]))
        not_engine = _not_engine_reason(block, c.path)
        if not_engine:
            cell.update(engine=False, reason=not_engine)
        if di_entry:
            cell.update(quantity=di_entry[0], args=list(di_entry[1]))
        out.append(f"{_toml_key(leaf)} = {_toml_val(cell)}")
        log_lines[len(out)] = c.line
    if per_key:
        raise FixtureError(f"overrides for {name} name keys the block does not have: {sorted(per_key)}")
    return "\n".join(out) + "\n", log_lines


def import_stata(
    log_path: str | Path,
    out_dir: str | Path,
    *,
    lenient: bool = False,
    overrides: str | Path | None = None,
) -> tuple[list[Path], ParsedLog]:
    """Parse a Stata log and write one fixture file per block into ``out_dir``.

    Returns the written paths and the parsed log (whose ``problems`` are non-empty only
    when ``lenient``). Nothing is written unless every fixture would load back
    (:func:`load_reference`: labels against the model, TOML syntax); the first that would
    not is a FixtureError naming the log line. A log with no known output, or overrides
    naming a case or key the log does not have, are errors too.

    The written files are recorded in the fixture set's manifest
    (:func:`hlmbridge.reference.manifest.record_files`: the nearest ``MANIFEST.toml`` at or
    above ``out_dir``, else a new one in ``out_dir``).
    """
    parsed = parse_log(log_path, lenient=lenient)
    opath = Path(overrides) if overrides is not None else None
    ov = _load_overrides(opath)
    if not parsed.blocks:
        listed = "".join(f"; failed: {prob}" for prob in parsed.problems) + "".join(
            f"; line {u.line} `{u.command}`: {u.reason}" for u in parsed.unchecked)
        raise FixtureError("no Stata output the importer knows (mixed, xtmixed, xtreg mle, estat, lrtest, mat list, "
                           "ereturn list, estimates table, di, summarize, tab, list) was found: 0 fixtures" + listed,
                           path=str(log_path))
    names = {case_name(b) for b in parsed.blocks}
    for k, o in enumerate(ov):
        if o["case"] not in names:
            raise FixtureError(f"override #{k + 1} names case {o['case']!r}, which this log does not produce "
                               f"(cases: {', '.join(sorted(names))})", path=str(opath))
    texts: list[tuple[Path, str]] = []
    loaded: list[Reference] = []
    out = Path(out_dir)
    for block in parsed.blocks:
        p = out / f"{case_name(block)}.toml"
        try:
            text, log_lines = _render_block(block, parsed.name, ov, parsed.encoding)
        except FixtureError as exc:
            if exc.path is None and opath is not None:
                raise FixtureError(str(exc), path=str(opath)) from None
            raise
        try:
            loaded.append(_reference_from_text(text, p))
        except FixtureError as exc:
            line = log_lines.get(exc.line or 0, block.line)
            why = str(exc).removeprefix(f"{exc.path}:{exc.line}: " if exc.line is not None else f"{exc.path}: ")
            raise FixtureError(f"`{block.command}`: the fixture {p.name} would not load: {why}",
                               path=parsed.name, line=line) from None
        texts.append((p, text))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FixtureError(f"cannot create the output directory: {exc.strerror}", path=str(out)) from exc
    written = []
    for p, text in texts:
        try:
            p.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise FixtureError(f"cannot write: {exc.strerror}", path=str(p)) from exc
        written.append(p)
    from hlmbridge.reference.manifest import record_files  # the manifest module reads fixtures: import here

    record_files(out, zip(written, loaded, strict=True))
    return written, parsed


# --------------------------------------------------------------------------------------
# loading
def _find_line(text_lines: list[str], path: Sequence[str]) -> int | None:
    """The fixture line that defines ``path`` (its table header, then the leaf)."""
    if not path:
        return None
    for depth in range(len(path) - 1, -1, -1):
        table = path[:depth]
        if table:
            pattern = re.compile(
                r"^\s*\[\s*" + r"\s*\.\s*".join(rf'(?:{re.escape(p)}|"{re.escape(p)}")' for p in table) + r"\s*\]\s*$"
            )
            start = next((i for i, t in enumerate(text_lines) if pattern.match(t)), None)
            if start is None:
                continue
        else:
            start = -1
        rest = path[depth:]
        key_rx = re.compile(
            r"^\s*" + r"\s*\.\s*".join(rf'(?:{re.escape(p)}|"{re.escape(p)}")' for p in rest) + r"\s*="
        )
        for i in range(start + 1, len(text_lines)):
            if text_lines[i].lstrip().startswith("[") and i > start + 0 and table:
                break
            if key_rx.match(text_lines[i]):
                return i + 1
        if table:
            return start + 1
    return None


def _needs_nlme(block: LogBlock) -> bool:
    """Whether a block's models need the nlme engine (issue 25): a residual structure, or an
    identity/exchangeable covariance over several random terms (which lme4 and statsmodels lack)."""
    from hlmbridge.spec.model import ModelSpec

    for model in block.models:
        try:
            spec = ModelSpec.parse(model.command)
        except HlmbridgeError:
            continue  # reported where the case is checked
        if not spec.is_glmm and (spec.residuals is not None or any(
                lv.cov in ("identity", "exchangeable") and lv.n_terms > 1 for lv in spec.levels)):
            return True
    return False


def _spec_for(command: str, err) -> Any:
    from hlmbridge.spec.model import ModelSpec

    try:
        return ModelSpec.parse(command)
    except HlmbridgeError as exc:
        raise err(f"model command {command!r} does not parse: {exc}") from exc


def _allowed(spec: Any) -> dict[str, Any]:
    """What labels a spec's design can have."""
    fixed_patterns = []
    for t in spec.fixed:
        parts = []
        for v in t.vars:
            if v.factor:
                parts.append((rf"(\d+)b?\.{re.escape(v.name)}", v.base))
            else:
                parts.append(((rf"c\.{re.escape(v.name)}" if len(t.vars) > 1 else re.escape(v.name)), None))
        fixed_patterns.append(parts)
    levels = {}
    for lv in spec.levels:
        terms = lv.stata_terms
        rnd = {f"var({t})" for t in terms}
        if lv.cov in ("unstructured", "exchangeable"):
            rnd |= {f"cov({a},{b})" for i, a in enumerate(terms) for b in terms[i + 1:]}
        levels[lv.group] = (terms, rnd)
    return {"fixed": fixed_patterns, "levels": levels, "constant": spec.constant, "response": spec.response,
            "glmm": spec.is_glmm, "residuals": spec.residuals is not None}


def _fixed_ok(label: str, allowed: dict[str, Any]) -> bool:
    if label == "_cons":
        return allowed["constant"]
    got = label.split("#")
    for parts in allowed["fixed"]:
        if len(parts) != len(got):
            continue
        remaining = list(got)
        ok = True
        for rx, base in parts:
            hit = next((g for g in remaining if re.fullmatch(rx, g)), None)
            if hit is None:
                ok = False
                break
            m = re.fullmatch(rx, hit)
            if base is not None and m and m.groups() and int(m.group(1)) == base and "b." not in hit:
                ok = False
                break
            remaining.remove(hit)
        if ok:
            return True
    return False


def random_labels(allowed: Mapping[str, Any]) -> set[str]:
    """Every random-effects row label a model can print: ``var()``/``cov()`` (default) and
    ``sd()``/``corr()`` (``stddeviations``, xtmixed's default) of each level, keyed
    ``level:label`` when the model has several levels; the residual's; and, for a random-intercept
    model, ``xtreg, mle``'s ``/sigma_u``, ``/sigma_e`` and ``rho``."""
    levels = allowed["levels"]
    out = {"var(Residual)", "sd(Residual)"}
    for group, (_, rnd) in levels.items():
        labels = set(rnd)
        labels |= {"sd(" + r[4:] for r in rnd if r.startswith("var(")}
        labels |= {"corr(" + r[4:] for r in rnd if r.startswith("cov(")}
        if allowed.get("glmm"):  # melogit names the level above its rows (level:label), even one level
            out |= {f"{group}:{lab}" for lab in labels}
            continue
        out |= {f"{group}:{lab}" for lab in labels} if len(levels) > 1 else labels
    if allowed.get("glmm"):
        out -= {"var(Residual)", "sd(Residual)"}  # a GLMM has no residual variance
        if len(levels) == 1 and next(iter(levels.values()))[0] == ("_cons",):
            out |= {"/lnsig2u", "sigma_u", "rho"}  # xtlogit, re
        return out
    if len(levels) == 1 and next(iter(levels.values()))[0] == ("_cons",):
        out |= {"/sigma_u", "/sigma_e", "rho"}
    return out


def _check_label(path: tuple[str, ...], allowed: dict[str, Any]) -> str | None:
    """None when a model can produce ``path``, else why not."""
    sec = path[0]
    levels = allowed["levels"]
    if sec == "fixed" and not _fixed_ok(path[1], allowed):
        return f"fixed-effect label {path[1]!r} is not a column of the model's design"
    if sec == "random":
        known = random_labels(allowed)
        if allowed.get("residuals"):  # issue 25: the structure's rows (rho, var(e), male: var(e) ...)
            known -= {"var(Residual)", "sd(Residual)"}
            if RESIDUAL_ROW_RE.fullmatch(path[1]):
                return None
        if path[1] not in known:
            return f"random-effects label {path[1]!r} is not one of {sorted(known)}"
    if sec == "groups" and path[1] not in levels:
        return f"level {path[1]!r} is not a grouping level of the model ({sorted(levels)})"
    if sec == "icc" and "|" in path[1] and all(part in levels for part in path[1].split("|")):
        pass  # a nested level as estat icc names it: "childid|schoolid"
    elif sec in ("icc", "recov", "recov_corr") and path[1] not in levels:
        return f"level {path[1]!r} is not a grouping level of the model ({sorted(levels)})"
    if sec in ("recov", "recov_corr"):
        terms = levels[path[1]][0]
        for lab in path[2:]:
            if lab not in terms:
                return f"{lab!r} is not a random term at level {path[1]!r} ({list(terms)})"
    if sec == "eb":
        eq, _, col = path[1].partition(":")
        nlev = len(levels)
        if eq == allowed["response"]:
            if not _fixed_ok(col, allowed):
                return f"e(b) column {path[1]!r} is not a fixed effect of the model"
        elif eq == "lnsig_e" and col == "_cons":
            pass
        else:
            m = re.fullmatch(r"lns(\d+)_(\d+)_(\d+)", eq) or re.fullmatch(r"atr(\d+)_(\d+)_(\d+)_(\d+)", eq)
            terms_n = [len(t) for t, _ in levels.values()]
            if not m or col != "_cons" or int(m.group(1)) > nlev or any(
                int(g) > terms_n[int(m.group(1)) - 1] for g in m.groups()[2:]
            ):
                return f"e(b) column {path[1]!r} is not a parameter of the model"
    return None


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_reference(path: str | Path) -> Reference:
    """Load and validate one fixture file.

    Raises
    ------
    FixtureError
        Naming the file and line: not UTF-8, TOML syntax error, a missing field, a
        non-numeric value, an unknown section or quantity, a label no engine can produce for
        the case's model, a case name that is not the file's name, fewer or more numbers than
        ``[case] numbers`` says (a truncated file), a relative tolerance on the log-likelihood
        or chi2 scale.

    Examples
    --------
    >>> ref = load_reference(FIXTURE_ROOT / "seed" / "L0174_mixed.toml")
    >>> ref.source.command, ref.get('fixed."_cons".estimate').log_line
    ('mixed mathach || id:', 198)
    """
    p = Path(path)
    return _reference_from_text(_read_utf8(p), p)


def _reference_from_text(text: str, p: Path) -> Reference:
    """:func:`load_reference` on the text of a file at ``p`` (which need not exist yet)."""
    from hlmbridge.engines import DEFAULT_ENGINES, ENGINES

    spath = str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FixtureError(f"TOML syntax error: {exc}", path=spath, line=_toml_lineno(exc)) from exc
    lines = text.splitlines()

    def err(msg: str, where: Sequence[str] = ()) -> FixtureError:
        return FixtureError(msg, path=spath, line=_find_line(lines, where) if where else None)

    def need(table: Mapping[str, Any], fld: str, where: Sequence[str], typ: type | tuple[type, ...]) -> Any:
        if fld not in table:
            raise err(f"missing field {format_key([*where, fld])}", where)
        v = table[fld]
        if not isinstance(v, typ) or isinstance(v, bool) and typ is int:
            raise err(f"field {format_key([*where, fld])} must be {getattr(typ, '__name__', typ)}", [*where, fld])
        return v

    for sect in ("case", "source"):
        if not isinstance(data.get(sect), dict):
            raise err(f"missing table [{sect}]")
    case = data["case"]
    name = need(case, "name", ["case"], str)
    if name != p.stem:
        raise err(f"case name {name!r} is not the file's name {p.stem!r} (a case file is <name>.toml): "
                  "a misspelled name?", ["case", "name"])
    kind = need(case, "kind", ["case"], str)
    if kind not in KIND_SECTIONS:
        raise err(f"unknown case kind {kind!r} (known: {', '.join(KIND_SECTIONS)})", ["case", "kind"])
    n_numbers = need(case, "numbers", ["case"], int)
    _refuse_unknown(case, "case", ["case"], err)
    src = data["source"]
    _refuse_unknown(src, "source", ["source"], err)
    source = Source(need(src, "log", ["source"], str), need(src, "line", ["source"], int),
                    need(src, "command", ["source"], str), need(src, "program", ["source"], str),
                    need(src, "encoding", ["source"], str) if "encoding" in src else "utf-8")
    models = []
    if not isinstance(data.get("models", []), list):
        raise err("models must be an array of tables: [[models]]", ["models"])
    for k, m in enumerate(data.get("models", [])):
        where = ["models"]
        if not isinstance(m, dict):
            raise err(f"[[models]] #{k + 1} must be a table", where)
        _refuse_unknown(m, "models", where, err, f"[[models]] #{k + 1} ({m.get('name', '?')})",
                        lines=lines, line=_nth_table_line(lines, "[[models]]", k))
        models.append(ModelRef(need(m, "name", where, str), need(m, "command", where, str), need(m, "line", where, int)))
    tolerances: dict[str, Tolerance] = {}
    for cls, t in data.get("tolerance", {}).items():
        if cls not in QUANTITY_CLASSES:
            raise err(f"unknown tolerance class {cls!r} (known: {', '.join(QUANTITY_CLASSES)})", ["tolerance", cls])
        if isinstance(t, dict):
            _refuse_unknown(t, "tolerance", ["tolerance", cls], err, f"[tolerance.{cls}]")
        tolerances[cls] = _tolerance(t, ["tolerance", cls], err, need)
        if cls in ABSOLUTE_CLASSES and tolerances[cls].rtol:
            raise err(_ABSOLUTE_MSG.format(where=f"[tolerance.{cls}]"), ["tolerance", cls])
    specs: dict[str, Any] = {}
    values: list[RefValue] = []
    for sec in KIND_SECTIONS[kind]:
        if sec not in data:
            raise err(f"missing table [{sec}] for a {kind} case")
    if kind == "estat_recov" and not ({"recov", "recov_corr"} & set(data)):
        raise err("missing table [recov] or [recov_corr]")
    if "meta" in data:
        if not isinstance(data["meta"], dict):
            raise err("meta must be a table: [meta]", ["meta"])
        _refuse_unknown(data["meta"], "meta", ["meta"], err)
    known_top = set(FORMAT_KEYS["case_top"])
    for sec, body in data.items():
        if sec in known_top:
            continue
        if sec not in SECTIONS:
            raise err(f"unknown quantity section [{sec}] (known: {', '.join(SECTIONS)})", [sec])
        depth, fields = SECTIONS[sec]
        for vpath, cell in _walk(body, (sec,), depth + 1, err):
            if fields is not None and vpath[-1] not in fields:
                raise err(f"unknown quantity {format_key(vpath)} (a {sec} row has {', '.join(fields)})", vpath)
            values.append(_cell(vpath, cell, err, need, name, lines))
    if not values:
        raise err("the case holds no numbers")
    if len(values) != n_numbers:
        raise err(f"the file holds {len(values)} numbers but [case] numbers = {n_numbers}: "
                  f"{'truncated' if len(values) < n_numbers else 'numbers added'} after import?", ["case", "numbers"])
    for v in values:
        if v.override is not None and v.override.rtol and v.qclass in ABSOLUTE_CLASSES:
            raise err(_ABSOLUTE_MSG.format(where=v.key), v.path)
    needs_engine = any(v.engine and v.path[0] not in DATA_SECTIONS for v in values)
    engines = case.get("engines", list(DEFAULT_ENGINES) if needs_engine else [])
    if not isinstance(engines, list) or not all(isinstance(e, str) and e in ENGINES for e in engines):
        raise err(f"[case] engines must be a list of engine names ({', '.join(ENGINES)}), got {engines!r}",
                  ["case", "engines"])
    if needs_engine and not engines:
        raise err("[case] engines is empty, but the case holds numbers from model fits", ["case", "engines"])
    if kind not in (*DATA_SECTIONS, "prose") and not models and any(v.engine for v in values):
        raise err("missing [[models]]: the numbers must name the model command(s) they refer to", ["case"])
    # labels vs. the models' specs
    for v in values:
        if v.path[0] in ("summarize", "tab", "tab2", "list", "etable", "ereturn", "di", "derived", "header", "lr",
                         "ic", "lrtest"):
            if v.path[0] == "ereturn" and v.path[1] not in ERETURN_ENGINE and v.engine:
                raise err(f"unknown e() scalar {v.path[1]!r} (engine quantities: {', '.join(ERETURN_ENGINE)})", v.path)
            if v.path[0] in ("di", "derived") and v.engine:
                _check_derived(v, models, err)
            continue
        model_name = "e(b)" if v.path[0] == "eb" and any(m.name == "e(b)" for m in models) else None
        ref = next((m for m in models if m.name == model_name), models[0]) if models else None
        if ref is None:
            raise err(f"{v.key} needs a model", v.path)
        if ref.command not in specs:
            specs[ref.command] = _allowed(_spec_for(ref.command, lambda msg: err(msg, ["models"])))
        why = _check_label(v.path, specs[ref.command])
        if why:
            raise err(why, v.path)
    _check_df_method(kind, data.get("meta", {}), values, models, err)
    return Reference(name, spath, kind, source, tuple(models), tuple(values), tolerances,
                     data.get("meta", {}), tuple(case.get("notes", ())), tuple(engines))


#: Stata's ``DF method:`` header name -> hlmbridge's df method (without ``(expected information)``).
STATA_DF_METHODS: Mapping[str, str] = MappingProxyType({
    "Residual": "residual", "Satterthwaite": "satterthwaite", "Kenward-Roger": "kenward-roger",
})


def df_method_family(method: str | None) -> str | None:
    """A df method without its information suffix (``"satterthwaite (expected information)"`` ->
    ``"satterthwaite"``); None stays None.

    Examples
    --------
    >>> df_method_family("satterthwaite (expected information)"), df_method_family("kenward-roger")
    ('satterthwaite', 'kenward-roger')
    """
    return method.split(" (")[0] if method else None


def _check_df_method(kind: str, meta: Mapping[str, Any], values: Sequence[RefValue], models: Sequence[ModelRef],
                     err) -> None:
    """Numbers of a ``dfmethod()`` table need a model command whose ``dfmethod()`` is the printed method."""
    small = [v for v in values if v.path[0] == "fixed" and v.path[-1] in ("t", "df")
             or v.path[0] == "header" and v.path[-1] in _DF_HEADER]
    printed = meta.get("df_method")
    if not small and printed is None:
        return
    where = ["meta"] if printed is not None else list(small[0].path)
    if kind != "mixed":
        raise err(f"df-method numbers belong to a mixed case, not {kind!r}", where)
    if printed is None:
        raise err(f"{small[0].key} is a dfmethod() number, but [meta] has no df_method (the 'DF method:' line)",
                  small[0].path)
    if printed not in STATA_DF_METHODS:
        raise err(f"[meta] df_method {printed!r} is not a method hlmbridge computes "
                  f"({', '.join(STATA_DF_METHODS)})", ["meta"])
    if any(v.path[0] == "fixed" and v.path[-1] == "statistic" for v in values):
        raise err("a dfmethod() case holds z statistics (fixed.<term>.statistic); its table prints t", ["meta"])
    from hlmbridge.spec.parse_stata import parse_stata_df_method

    for m in models:
        try:
            got = parse_stata_df_method(m.command)
        except HlmbridgeError as exc:
            raise err(f"model command {m.command!r}: {exc}", ["models"]) from exc
        if df_method_family(got) != STATA_DF_METHODS[printed]:
            raise err(f"the table was printed with DF method {printed!r}, but the model command {m.command!r} "
                      f"asks for {f'dfmethod() = {got}' if got else 'no dfmethod()'}: a different model output",
                      ["models"])


_ABSOLUTE_MSG = ("{where}: a relative tolerance (rtol) on the log-likelihood or chi2 scale grows with the "
                 "sample size; state an absolute one (atol) with its reason")


def _refuse_unknown(table: Mapping[str, Any], name: str, where: Sequence[str], err, label: str | None = None,
                    lines: Sequence[str] = (), line: int | None = None) -> None:
    """A FixtureError naming the first key of ``table`` that :data:`FORMAT_KEYS` ``[name]`` does not allow,
    at its line (in the table whose header is line ``line`` of ``lines``, when given; else found from
    ``where``)."""
    bad = unknown_keys(table, name)
    if not bad:
        return
    key = bad[0]
    more = f" (and {', '.join(map(repr, bad[1:]))})" if len(bad) > 1 else ""
    msg = (f"unknown key {key!r}{more} in {label or '[' + name + ']'}; allowed: {', '.join(FORMAT_KEYS[name])}. "
           "A misspelled key?")
    if line is None:
        raise err(msg, [*where, key])
    raise FixtureError(msg, path=err(msg).path, line=_key_line_after(lines, line, key))


def _nth_table_line(lines: Sequence[str], header: str, n: int) -> int | None:
    """The 1-based line of the ``n``-th (0-based) ``header`` line (e.g. ``[[models]]``), or None."""
    hits = [i + 1 for i, t in enumerate(lines) if t.strip().split("#")[0].strip() == header]
    return hits[n] if n < len(hits) else None


def _key_line_after(lines: Sequence[str], start: int, key: str) -> int:
    """The line of ``key = ...`` in the table whose header is line ``start`` (else ``start``)."""
    rx = re.compile(rf'^\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*=')
    for i in range(start, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        if rx.match(lines[i]):
            return i + 1
    return start


def _tolerance(t: Any, where: list[str], err, need) -> Tolerance:
    if not isinstance(t, dict):
        raise err(f"{format_key(where)} must be a table", where)
    for f in ("rtol", "se", "atol"):
        if f in t and (not _num(t[f]) or t[f] < 0):
            raise err(f"{format_key([*where, f])} must be a non-negative number", where)
    reason = need(t, "reason", where, str)
    ew = t.get("explain_when")
    if ew is not None and ew != "singular":
        raise err(f"explain_when must be 'singular', got {ew!r}", where)
    return Tolerance(float(t.get("rtol", 0.0)), float(t["se"]) if "se" in t else None, float(t.get("atol", 0.0)),
                     reason, ew, reason if ew else None)


def _walk(body: Any, prefix: tuple[str, ...], depth: int, err):
    """Yield (path, cell) for every leaf cell ``depth`` levels under a section."""
    if not isinstance(body, dict):
        raise err(f"{format_key(prefix)} must be a table", prefix)
    for k, v in body.items():
        path = (*prefix, k)
        if depth == 1:
            yield path, v
        else:
            yield from _walk(v, path, depth - 1, err)


_CELL_FIELDS = frozenset(FORMAT_KEYS["cell"])


def _cell(vpath, cell, err, need, case, lines) -> RefValue:
    key = format_key(vpath)
    if not isinstance(cell, dict):
        raise err(f"{key} must be a table {{ printed = ..., value = ..., line = ... }}", vpath)
    unknown = set(cell) - _CELL_FIELDS
    if unknown:
        raise err(f"{key} has unknown fields {sorted(unknown)}", vpath)
    printed = need(cell, "printed", vpath, str)
    if "value" not in cell:
        raise err(f"missing field {key}.value", vpath)
    value = cell["value"]
    if not _num(value):
        raise err(f"{key}.value is not numeric: {value!r}", vpath)
    try:
        pv = parse_number(printed)
    except ValueError:
        raise err(f"{key}.printed is not a number as Stata prints it: {printed!r}", vpath) from None
    if not (math.isnan(pv) and math.isnan(value)) and pv != value:
        raise err(f"{key}: value {value!r} is not the printed {printed!r}", vpath)
    line = need(cell, "line", vpath, int)
    override = None
    if any(f in cell for f in ("rtol", "se", "atol")):
        if "reason" not in cell:
            raise err(f"{key} overrides its tolerance without a reason", vpath)
        override = _tolerance({k: cell[k] for k in ("rtol", "se", "atol", "reason") if k in cell}, list(vpath), err, need)
    ew = cell.get("explain_when")
    if ew is not None:
        if ew != "singular":
            raise err(f"{key}.explain_when must be 'singular', got {ew!r}", vpath)
        if "reason" not in cell:
            raise err(f"{key} has explain_when without a reason", vpath)
    engine = cell.get("engine", True)
    if not isinstance(engine, bool):
        raise err(f"{key}.engine must be true or false", vpath)
    if not engine and "reason" not in cell:
        raise err(f"{key} is marked engine = false without a reason", vpath)
    args = cell.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise err(f"{key}.args must be a list of model names", vpath)
    return RefValue(key, tuple(vpath), float(value), printed, line, _find_line(lines, vpath), quantity_class(vpath),
                    override, ew, cell.get("reason") if ew else None, engine,
                    cell.get("reason"), cell.get("quantity"), tuple(args))


def _check_derived(v: RefValue, models: Sequence[ModelRef], err) -> None:
    from hlmbridge.reference.quantities import DERIVED

    if v.quantity is None:
        raise err(f"{v.key} needs quantity = one of {', '.join(DERIVED)}", v.path)
    if v.quantity not in DERIVED:
        raise err(f"unknown derived quantity {v.quantity!r} (known: {', '.join(DERIVED)})", v.path)
    if len(v.args) != DERIVED[v.quantity][0]:
        raise err(f"{v.quantity} takes {DERIVED[v.quantity][0]} model(s), got {list(v.args)}", v.path)
    names = {m.name for m in models}
    for a in v.args:
        if a not in names:
            raise err(f"{v.key} names model {a!r}, which [[models]] does not define", v.path)


def model_commands(references: Sequence[Reference] | None = None) -> tuple[str, ...]:
    """The distinct models the references fit (one command each, ``qui`` dropped), in log order.

    Examples
    --------
    >>> model_commands()[:2]
    ('mixed mathach || id:', 'mixed mathach ses || id:')
    """
    from hlmbridge.spec.model import ModelSpec

    refs = sorted(load_references() if references is None else references, key=lambda r: r.source.line)
    seen: dict[ModelSpec, str] = {}
    for ref in refs:
        for m in ref.models:
            spec = ModelSpec.parse(m.command)
            seen.setdefault(spec, m.command.removeprefix("quietly ").removeprefix("qui "))
    return tuple(seen.values())


def load_references(directory: str | Path | None = None) -> list[Reference]:
    """Load every case fixture under ``directory`` (recursively; default :data:`FIXTURE_ROOT`).

    Every ``*.toml`` file is accounted for: a case fixture (``[case]`` table), or a file
    declaring another known kind with a top-level ``format`` (:data:`OTHER_FORMATS`).
    Any other TOML file is an error, so a misspelled ``[case]`` is never passed over. An
    overrides file in the directory must name only cases and keys that exist, and each
    must be applied in its fixture (re-imported). Every case file is validated and the
    first error raised. Cases are sorted by name; a repeated case name is an error.
    """
    root = Path(directory) if directory is not None else FIXTURE_ROOT
    if root.is_file():
        return [load_reference(root)]
    if not root.is_dir():
        raise FixtureError("no such fixture directory", path=str(root))
    refs: dict[str, Reference] = {}
    origins: dict[tuple[str, int, str], Reference] = {}
    override_files: list[Path] = []
    for p in fixture_files(root):
        if p.suffix != ".toml":
            continue
        text = _read_utf8(p)
        try:
            head = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            head = {"case": None}  # let load_reference report the syntax error with its line
        if "case" not in head:
            fmt = head.get("format")
            if fmt not in OTHER_FORMATS:
                tables = ", ".join(f"[{k}]" for k in head) or "none"
                raise FixtureError(
                    "not a case fixture (no [case] table) and no top-level `format = ...` naming another known kind "
                    f"({', '.join(OTHER_FORMATS)}); its tables: {tables}. A misspelled [case]?", path=str(p))
            if fmt == "overrides":
                override_files.append(p)
            else:
                _check_format_keys(head, fmt, text, p)
            continue
        ref = _reference_from_text(text, p)
        if ref.case in refs:
            raise FixtureError(f"case {ref.case!r} is also defined in {refs[ref.case].path}", path=str(p))
        origin = (ref.source.log, ref.source.line, ref.kind)
        if ref.source.line > 0 and origin in origins:
            first = origins[origin]
            raise FixtureError(f"case {ref.case!r} comes from the same {ref.kind} output as case {first.case!r} "
                               f"({first.path}): {ref.source.log} line {ref.source.line}; a copy of it?", path=str(p))
        origins[origin] = ref
        refs[ref.case] = ref
    for op in override_files:
        _check_overrides_applied(op, refs)
    return [refs[k] for k in sorted(refs)]


def fixture_files(root: str | Path) -> list[Path]:
    """Every file under the fixture directory ``root``, sorted (any name; the loader reads the ``.toml``
    files, the manifest hashes them all).

    A symlinked folder inside ``root`` is refused (a FixtureError naming it), never passed over: a
    fixture set holds its own files, which its manifest pins; copy the folder in, or point
    ``--fixtures`` at it. A symlinked file is read like any other (its content is what counts).

    Examples
    --------
    >>> [p.name for p in fixture_files(FIXTURE_ROOT) if p.suffix == ".toml"][:2]
    ['MANIFEST.toml', 'data_summaries.toml']
    """
    import os

    base = Path(root)
    found: list[Path] = []
    for here, dirs, files in os.walk(base, followlinks=False):
        for d in sorted(dirs):
            if os.path.islink(os.path.join(here, d)):
                target = os.path.realpath(os.path.join(here, d))
                raise FixtureError(f"a symlinked folder (-> {target}) is not read as part of a fixture set: copy its "
                                   "files in, or validate it on its own with --fixtures", path=os.path.join(here, d))
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found.extend(Path(here) / f for f in files)
    return sorted(found)


def _check_format_keys(head: Mapping[str, Any], fmt: str, text: str, p: Path) -> None:
    """The keys of a ``data_summaries`` or ``manifest`` file against :data:`FORMAT_KEYS` (file, line, key)."""
    lines = text.splitlines()
    spath = str(p)

    def err(msg: str, where: Sequence[str] = ()) -> FixtureError:
        return FixtureError(msg, path=spath, line=_find_line(lines, where) if where else None)

    def rows(name: str) -> list[Any]:
        got = head.get(name, [])
        if not isinstance(got, list) or not all(isinstance(t, dict) for t in got):
            raise err(f"{name} must be an array of tables: [[{name}]]")
        return got

    _refuse_unknown(head, f"{fmt}_top", [], err, "the top level")
    if fmt == "data_summaries":
        if "meta" in head:
            if not isinstance(head["meta"], dict):
                raise err("meta must be a table: [meta]")
            _refuse_unknown(head["meta"], "data_summaries_meta", ["meta"], err, "[meta]")
        for table in ("summary", "tabulate"):
            n_row = 0
            for k, t in enumerate(rows(table)):
                _refuse_unknown(t, table, [table], err, f"[[{table}]] #{k + 1} ({t.get('name', '?')})",
                                lines=lines, line=_nth_table_line(lines, f"[[{table}]]", k))
                body = t.get("row", [])
                if not isinstance(body, list) or not all(isinstance(r, dict) for r in body):
                    raise err(f"[[{table}]] #{k + 1}: row must be an array of tables: [[{table}.row]]")
                for j, r in enumerate(body):
                    _refuse_unknown(r, f"{table}_row", [table], err, f"[[{table}.row]] #{j + 1} of [[{table}]] "
                                    f"{t.get('name', '?')!r}", lines=lines,
                                    line=_nth_table_line(lines, f"[[{table}.row]]", n_row))
                    n_row += 1
    elif fmt == "manifest":
        for k, t in enumerate(rows("file")):
            _refuse_unknown(t, "manifest_file", ["file"], err, f"[[file]] #{k + 1} ({t.get('path', '?')})",
                            lines=lines, line=_nth_table_line(lines, "[[file]]", k))


def _check_overrides_applied(path: Path, refs: Mapping[str, Reference]) -> None:
    """Every override in ``path`` names a case and keys in ``refs``, and the fixture carries it."""
    for k, o in enumerate(_load_overrides(path), start=1):
        ref = refs.get(o["case"])
        if ref is None:
            raise FixtureError(f"override #{k} names case {o['case']!r}, which no fixture here defines", path=str(path))
        for key in o["keys"]:
            v = ref.get(key)
            if v is None:
                raise FixtureError(f"override #{k} names {key!r}, which case {ref.case} does not hold", path=str(path))
            if v.override is None and v.explain_when is None:
                raise FixtureError(f"override #{k} for {ref.case} {key} is not in {ref.path}: re-import the log",
                                   path=str(path))
