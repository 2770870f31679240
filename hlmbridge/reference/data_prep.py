"""Replay the data preparation of a Stata log (``gen``, ``egen``, ``replace``, ...) on a data frame.

A log's models and summaries often use variables the log made first (``bysort school: gen
n = _N``, ``egen sm = mean(y), by(school)``, ``gen cx = x - sm``). import-stata writes those
commands, with their log lines, into each fixture's ``[meta]`` (``data_steps``,
``data_step_lines``); :func:`replay` runs them on the data validate is given, in order.

Supported (Stata's semantics, missing values as NaN):

- ``[by|bysort g1 [g2...]:] generate [type] NAME = EXPR [if COND]`` and ``replace NAME = EXPR
  [if COND]``; EXPR/COND use numbers, variables, scalars, ``_n``/``_N`` (within the by-groups),
  ``+ - * / ^``, ``== != ~= < > <= >=``, ``& | ! ~``, parentheses and ``ln() log() exp() sqrt()
  abs() missing()``. A comparison treats missing as larger than any number, as Stata does;
- ``egen [type] NAME = FUNC(VAR) [, by(g...)]`` (or with a ``by`` prefix) for FUNC in ``mean sd
  count total sum min max median tag group``;
- ``scalar NAME = EXPR`` (an expression without ``r()``/``e()``), ``sort``/``gsort`` (ascending),
  ``drop``/``keep`` of variables or ``if COND``, ``rename a b``, ``center VARS [, prefix(p)]``
  (SSC's ``center``: ``c_x = x - mean(x)``); ``label``, ``format``, ``order``, ``compress`` change
  no number.

Anything else (``predict``, ``_b[]``, ``r()``, ``e()``, ``recode``, ``merge`` ...) is not replayed:
the variables it would make are *blocked* with the reason (its line and command), and so is
every variable computed from them; a model or summary that needs a blocked variable fails with
that reason. A step that could change the rows (an unsupported ``drop``/``keep``, ``merge``)
blocks every variable (``"*"``).

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"g": [1, 1, 2, 2, 2], "y": [1.0, 3, 2, 4, 6]})
>>> r = replay(df, ["bysort g: gen n = _N", "by g: gen first = _n == 1", "egen m = mean(y), by(g)",
...                 "gen d = y - m", "gen ahat = _b[_cons]"], lines=[3, 4, 5, 6, 7])
>>> r.frame[["n", "first", "m", "d"]].to_numpy().tolist()[:3]
[[2.0, 1.0, 2.0, -1.0], [2.0, 0.0, 2.0, 1.0], [3.0, 1.0, 4.0, -2.0]]
>>> r.blocked["ahat"]
'line 7 `gen ahat = _b[_cons]`: uses an estimation result (_b[], _se[], r(), e()), which is not replayed'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd

from hlmbridge.errors import DataError

__all__ = ["Replay", "estimation_steps", "evaluate", "prepare_for_models", "replay", "required_variables",
           "step_targets"]

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|~=|<=|>=|[-+*/^()<>&|!~,]))"
)
_ESTIMATION_RE = re.compile(r"_b\[|_se\[|\b[re]\(")
_FUNCS = {"ln": np.log, "log": np.log, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs}


class _Unsupported(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise _Unsupported(f"cannot read {text[pos:]!r} in the expression")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over Stata's operator precedence (| < & < comparisons < + - < * / < ^ < unary)."""

    def __init__(self, text: str, env: Mapping[str, np.ndarray | float]):
        self.toks = _tokens(text)
        self.i = 0
        self.env = env

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def parse(self) -> np.ndarray | float:
        v = self.or_()
        if self.i != len(self.toks):
            raise _Unsupported(f"unexpected {self.peek()!r}")
        return v

    def or_(self):
        v = self.and_()
        while self.peek() == "|":
            self.take()
            v = _truth(v) | _truth(self.and_())
            v = v.astype(float) if isinstance(v, np.ndarray) else float(v)
        return v

    def and_(self):
        v = self.cmp()
        while self.peek() == "&":
            self.take()
            v = _truth(v) & _truth(self.cmp())
            v = v.astype(float) if isinstance(v, np.ndarray) else float(v)
        return v

    def cmp(self):
        v = self.add()
        while self.peek() in ("==", "!=", "~=", "<", ">", "<=", ">="):
            op = self.take()[1]
            w = self.add()
            a, b = _stata_order(v), _stata_order(w)
            res = {"==": np.equal, "!=": np.not_equal, "~=": np.not_equal, "<": np.less, ">": np.greater,
                   "<=": np.less_equal, ">=": np.greater_equal}[op](a, b)
            v = res.astype(float) if isinstance(res, np.ndarray) else float(res)
        return v

    def add(self):
        v = self.mul()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            w = self.mul()
            v = v + w if op == "+" else v - w
        return v

    def mul(self):
        v = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()[1]
            w = self.unary()
            if op == "*":
                v = v * w
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = np.where(np.asarray(w) == 0, np.nan, np.asarray(v, float) / np.where(np.asarray(w) == 0, 1, w))
        return v

    def unary(self):
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        if self.peek() in ("!", "~"):
            self.take()
            v = self.unary()
            return (~_truth(v)).astype(float) if isinstance(v, np.ndarray) else float(not _truth(v))
        return self.power()

    def power(self):
        v = self.atom()
        if self.peek() == "^":
            self.take()
            w = self.unary()
            with np.errstate(invalid="ignore"):
                v = np.power(np.asarray(v, float), w)
        return v

    def atom(self):
        kind, tok = self.take()
        if kind == "num":
            return float(tok)
        if tok == "(":
            v = self.or_()
            if self.peek() != ")":
                raise _Unsupported("missing ')'")
            self.take()
            return v
        if kind == "name":
            if self.peek() == "(":
                self.take()
                arg = self.or_()
                if self.peek() != ")":
                    raise _Unsupported(f"{tok}() takes one argument here")
                self.take()
                if tok == "missing":
                    return np.isnan(np.asarray(arg, float)).astype(float)
                if tok not in _FUNCS:
                    raise _Unsupported(f"function {tok}() is not replayed")
                with np.errstate(invalid="ignore", divide="ignore"):
                    return _FUNCS[tok](np.asarray(arg, float))
            if tok not in self.env:
                raise KeyError(tok)
            v = self.env[tok]
            return np.asarray(v, float) if isinstance(v, (np.ndarray, pd.Series)) else float(v)
        raise _Unsupported(f"unexpected {tok!r}")


def _truth(v):
    a = np.asarray(v, float)
    out = (a != 0) & ~np.isnan(a) | np.isnan(a)  # Stata: missing is true (not zero)
    return out if isinstance(v, np.ndarray) else bool(out)


def _stata_order(v):
    a = np.asarray(v, float)
    return np.where(np.isnan(a), np.inf, a) if isinstance(v, np.ndarray) else (math.inf if math.isnan(v) else v)


def evaluate(expr: str, frame: pd.DataFrame, scalars: Mapping[str, float] | None = None,
             by: Sequence[str] = ()) -> np.ndarray:
    """The value of a Stata expression on every row of ``frame`` (``_n``/``_N`` within ``by``).

    Examples
    --------
    >>> evaluate("x^2 + (x > 1)", pd.DataFrame({"x": [1.0, 2.0, float("nan")]})).tolist()
    [1.0, 5.0, nan]
    """
    env: dict[str, np.ndarray | float] = {c: frame[c].to_numpy(dtype=float) for c in frame.columns
                                           if pd.api.types.is_numeric_dtype(frame[c])}
    env.update(scalars or {})
    if by:
        grp = frame.groupby(list(by), sort=False, dropna=False)
        env["_n"] = (grp.cumcount() + 1).to_numpy(float)
        env["_N"] = grp[list(by)[0]].transform("size").to_numpy(float)
    else:
        env["_n"] = np.arange(1, len(frame) + 1, dtype=float)
        env["_N"] = np.full(len(frame), float(len(frame)))
    v = _Parser(expr, env).parse()
    return np.broadcast_to(np.asarray(v, float), (len(frame),)).copy()


def required_variables(expr: str) -> set[str]:
    """The names an expression reads (variables or scalars)."""
    text = re.sub(r"(?:_b|_se)\[[^\]]*\]|\b[re]\([^()]*\)", " ", expr)
    text = re.sub(r"\b\d+\.?\d*(?:[eE][-+]?\d+)?", " ", text)
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)) - set(_FUNCS) - {"missing"}


@dataclass(frozen=True)
class Replay:
    """The data after the log's preparation, and the variables it could not make (with why)."""

    frame: pd.DataFrame
    blocked: Mapping[str, str] = field(default_factory=dict)
    scalars: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocked", MappingProxyType(dict(self.blocked)))
        object.__setattr__(self, "scalars", MappingProxyType(dict(self.scalars)))

    def why_blocked(self, variables: Sequence[str]) -> str | None:
        """The reason one of ``variables`` cannot be made, or None."""
        if "*" in self.blocked:
            return self.blocked["*"]
        for v in variables:
            if v in self.blocked:
                return self.blocked[v]
        return None


_BY_RE = re.compile(r"^(?:by|bys|byso|bysor|bysort)\s+([^:]+):\s*(.*)$")
_GEN_RE = re.compile(r"^(g|ge|gen|gene|gener|genera|generat|generate)\s+(?:(?:byte|int|long|float|double)\s+)?"
                     r"(\w+)\s*=\s*(.+)$")
_REPLACE_RE = re.compile(r"^replace\s+(\w+)\s*=\s*(.+)$")
_EGEN_RE = re.compile(r"^egen\s+(?:(?:byte|int|long|float|double)\s+)?(\w+)\s*=\s*(\w+)\(([^()]*)\)\s*(?:,\s*(.*))?$")
_IF_RE = re.compile(r"\s+if\s+(.+)$")


def _split_if(text: str) -> tuple[str, str | None]:
    m = _IF_RE.search(text)
    return (text[: m.start()].strip(), m.group(1).strip()) if m else (text.strip(), None)


def _by_vars(spec: str) -> list[str]:
    return [v for v in re.sub(r"\([^()]*\)", " ", spec).split()]


def replay(frame: pd.DataFrame, steps: Sequence[str], lines: Sequence[int] | None = None) -> Replay:
    """Run the log's data steps on a copy of ``frame`` (see the module docstring)."""
    df = frame.copy()
    blocked: dict[str, str] = {}
    scalars: dict[str, float] = {}
    lines = list(lines) if lines is not None else [0] * len(steps)
    if len(lines) != len(steps):
        raise DataError(f"{len(steps)} data steps but {len(lines)} line numbers")
    for line, step in zip(lines, steps):
        where = f"line {line} `{step}`" if line else f"`{step}`"
        try:
            _step(df, step, blocked, scalars, where)
        except _Replaced as r:
            df = r.frame
        except (_Unsupported, KeyError) as exc:
            reason = (f"uses {exc.args[0]!r}, which the data does not have" if isinstance(exc, KeyError)
                      else str(exc))
            for t in step_targets(step):
                blocked[t] = f"{where}: {reason}"
    return Replay(df, blocked, scalars)


class _Replaced(Exception):
    def __init__(self, frame: pd.DataFrame):
        self.frame = frame


def step_targets(step: str) -> list[str]:
    """The variables a step makes or changes (``"*"`` when it can change the rows).

    Examples
    --------
    >>> step_targets("bysort g: egen m = mean(y)"), step_targets("sort g"), step_targets("drop if y > 1")
    (['m'], [], ['*'])
    """
    c = step.strip()
    m = _BY_RE.match(c)
    if m:
        c = m.group(2).strip()
    for rx in (_GEN_RE, _EGEN_RE):
        g = rx.match(c)
        if g:
            return [g.group(2) if rx is _GEN_RE else g.group(1)]
    r = _REPLACE_RE.match(c)
    if r:
        return [r.group(1)]
    w = c.split()
    if w and w[0] in ("scalar", "sca", "scal", "scala") and len(w) > 1:
        return [w[1].split("=")[0]]
    if w and w[0] in ("predict", "pred", "predi", "predic"):
        names = [x for x in re.split(r"[\s,]", c)[1:] if x and x not in ("double", "float")]
        return names[:1]
    if w and w[0] == "center":
        pre = re.search(r"prefix\((\w*)\)", c)
        return [f"{pre.group(1) if pre else 'c_'}{v}" for v in c.partition(",")[0].split()[1:]]
    if w and w[0] in ("label", "la", "lab", "format", "order", "compress", "sort", "gsort", "xtset"):
        return []
    return ["*"]


def _step(df: pd.DataFrame, step: str, blocked: dict[str, str], scalars: dict[str, float], where: str) -> None:
    c = step.strip()
    by: list[str] = []
    m = _BY_RE.match(c)
    if m:
        by = _by_vars(m.group(1))
        if c.startswith("bys"):
            _sort(df, by)
        c = m.group(2).strip()
    if _ESTIMATION_RE.search(c):
        raise _Unsupported("uses an estimation result (_b[], _se[], r(), e()), which is not replayed")
    reads = required_variables(c) | set(by)
    hit = next((blocked[v] for v in reads if v in blocked), None) or blocked.get("*")
    if hit:
        raise _Unsupported(f"needs a variable that was not replayed ({hit})")
    word = c.split()[0]
    g = _GEN_RE.match(c)
    if g:
        name, (expr, cond) = g.group(2), _split_if(g.group(3))
        if name in df.columns:
            raise _Unsupported(f"variable {name} already defined (Stata: r(110))")
        vals = evaluate(expr, df, scalars, by)
        if cond is not None:
            vals = np.where(_truth(evaluate(cond, df, scalars, by)), vals, np.nan)
        df[name] = vals
        return
    r = _REPLACE_RE.match(c)
    if r:
        name, (expr, cond) = r.group(1), _split_if(r.group(2))
        if name not in df.columns:
            raise KeyError(name)
        vals = evaluate(expr, df, scalars, by)
        if cond is not None:
            vals = np.where(_truth(evaluate(cond, df, scalars, by)), vals, df[name].to_numpy(float))
        df[name] = vals
        return
    e = _EGEN_RE.match(c)
    if e:
        _egen(df, e.group(1), e.group(2), e.group(3).strip(), e.group(4) or "", by)
        return
    if word in ("scalar", "sca", "scal", "scala"):
        name, _, expr = c.split(None, 1)[1].partition("=")
        if not expr:
            raise _Unsupported("scalar without '= expression'")
        v = _Parser(expr, scalars).parse()
        scalars[name.strip()] = float(np.asarray(v, float))
        return
    if word in ("sort", "gsort"):
        cols = c.split()[1:]
        if any(x.startswith("-") for x in cols) or "," in c:
            raise _Unsupported("only ascending sorts are replayed")
        _sort(df, cols)
        return
    if word in ("rename", "ren", "rena", "renam") and len(c.split()) == 3:
        a, b = c.split()[1:]
        if a not in df.columns:
            raise KeyError(a)
        df.rename(columns={a: b}, inplace=True)
        return
    if word in ("drop", "keep") and not by:
        body, cond = _split_if(c.split(None, 1)[1] if len(c.split()) > 1 else "")
        if cond is not None and not body:
            mask = _truth(evaluate(cond, df, scalars))
            keep = ~mask if word == "drop" else mask
            raise _Replaced(df.loc[keep].reset_index(drop=True))
        if body and cond is None:
            cols = body.split()
            missing = [x for x in cols if x not in df.columns]
            if missing:
                raise KeyError(missing[0])
            if word == "drop":
                df.drop(columns=cols, inplace=True)
            else:
                df.drop(columns=[x for x in df.columns if x not in cols], inplace=True)
            return
    if word == "center" and not by:
        body, _, opts = c.partition(",")
        pre = re.search(r"prefix\((\w*)\)", opts)
        if opts.strip() and not re.fullmatch(r"\s*prefix\(\w*\)\s*", opts):
            raise _Unsupported(f"center option {opts.strip()!r} is not replayed (only prefix())")
        for v in body.split()[1:]:
            x = df[v].to_numpy(float)
            df[f"{pre.group(1) if pre else 'c_'}{v}"] = x - np.nanmean(x)
        return
    if word in ("label", "la", "lab", "format", "order", "compress", "xtset"):
        return
    raise _Unsupported(f"`{word}` is not a data step hlmbridge replays")


def _sort(df: pd.DataFrame, cols: Sequence[str]) -> None:
    for col in cols:
        if col not in df.columns:
            raise KeyError(col)
    order = df.sort_values(list(cols), kind="mergesort").index
    sorted_df = df.loc[order].reset_index(drop=True)
    for col in df.columns:
        df[col] = sorted_df[col].to_numpy()


def _egen(df: pd.DataFrame, name: str, func: str, arg: str, opts: str, by: list[str]) -> None:
    if name in df.columns:
        raise _Unsupported(f"variable {name} already defined (Stata: r(110))")
    bym = re.fullmatch(r"\s*by\(([^()]*)\)\s*", opts) if opts else None
    if opts and not bym:
        raise _Unsupported(f"egen option {opts!r} is not replayed (only by())")
    groups = by + (bym.group(1).split() if bym else [])
    if func == "tag":
        keys = arg.split()
        dup = df.duplicated(subset=keys, keep="first")
        df[name] = (~dup).astype(float)
        return
    if func == "group":
        df[name] = df.groupby(arg.split(), sort=True, dropna=False).ngroup().astype(float) + 1
        return
    aggs = {"mean": "mean", "sd": "std", "count": "count", "total": "sum", "sum": "sum", "min": "min",
            "max": "max", "median": "median"}
    if func not in aggs:
        raise _Unsupported(f"egen function {func}() is not replayed (replayed: {', '.join(aggs)}, tag, group)")
    vals = pd.Series(evaluate(arg, df), index=df.index)
    if groups:
        for gcol in groups:
            if gcol not in df.columns:
                raise KeyError(gcol)
        out = vals.groupby([df[gcol] for gcol in groups], dropna=False).transform(aggs[func])
    else:
        out = pd.Series(getattr(vals, aggs[func])(), index=df.index)
    df[name] = out.to_numpy(float)


def estimation_steps(steps: Sequence[tuple[int, str]]) -> dict[str, str]:
    """Variables made from estimation results (``_b[]``, ``r()``, ``e()``, ``predict``), directly or
    through other such variables, with the reason naming the line: validate never replays them.

    Examples
    --------
    >>> estimation_steps([(3, "gen R = _b[/sigma_u]^2"), (4, "gen a = R*2"), (5, "gen m = 1")])["a"]
    'made from estimation results: line 4 `gen a = R*2` uses R (line 3 `gen R = _b[/sigma_u]^2`), not replayed'
    """
    out: dict[str, str] = {}
    for line, step in steps:
        targets = [t for t in step_targets(step) if t != "*"]
        body = _BY_RE.sub(r"\2", step.strip())
        if _ESTIMATION_RE.search(body) or body.split()[:1] in (["predict"], ["pred"], ["predi"], ["predic"]):
            for t in targets:
                out[t] = f"made from estimation results: line {line} `{step}`, not replayed"
            continue
        used = [v for v in required_variables(body.partition("=")[2] or body) if v in out]
        if used:
            src = out[used[0]].removeprefix("made from estimation results: ").removesuffix(", not replayed")
            for t in targets:
                out[t] = f"made from estimation results: line {line} `{step}` uses {used[0]} ({src}), not replayed"
    return out


def prepare_for_models(refs: Sequence[object], frame: pd.DataFrame) -> Replay:
    """The data every model of ``refs`` is fitted to: ``frame`` after the longest list of data steps
    the model fixtures carry (``[meta] data_steps``); every other model's steps must be the start
    of that list, and no later step may change (``replace``) a variable such a model uses, so that
    one frame serves all of them. Otherwise a :class:`~hlmbridge.errors.DataError` naming the step.

    Examples
    --------
    >>> prepare_for_models([], pd.DataFrame({"y": [1.0]})).frame.columns.tolist()
    ['y']
    """
    chains: list[tuple[tuple[str, ...], tuple[int, ...], object]] = []
    for ref in refs:
        meta = getattr(ref, "meta", {})
        if not getattr(ref, "needs_engine", False) or not meta.get("data_steps"):
            continue
        steps = tuple(meta["data_steps"])
        lines = tuple(meta.get("data_step_lines", ())) or (0,) * len(steps)
        chains.append((steps, lines, ref))
    if not chains:
        return Replay(frame)
    longest = max(chains, key=lambda c: len(c[0]))
    for steps, _, ref in chains:
        if longest[0][: len(steps)] != steps:
            raise DataError(f"{getattr(ref, 'path', ref)}: its data steps are not the start of the log's other "
                            "models' steps (a 'use' between them?); validate fits every model to one data set")
        later = longest[0][len(steps):]
        for k, step in enumerate(later):
            r = _REPLACE_RE.match(_BY_RE.sub(r"\2", step.strip()))
            if r is None:
                continue
            for m in getattr(ref, "models", ()):
                from hlmbridge.spec.model import ModelSpec

                if r.group(1) in ModelSpec.parse(m.command).variables:
                    raise DataError(f"line {longest[1][len(steps) + k]} `{step}` changes {r.group(1)} after the model "
                                    f"at line {m.line} used it; validate fits every model to one data set")
    return replay(frame, longest[0], longest[1])
