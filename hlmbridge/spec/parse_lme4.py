"""Parse an lme4 model formula into a :class:`~hlmbridge.spec.model.ModelSpec`.

What is read
------------
- fixed part: names (backtick-quoted names too), ``factor(x)`` / ``as.factor(x)``,
  ``relevel(factor(x), ref = "2")`` (factor with base level 2), ``a:b``, ``a*b`` (``a + b +
  a:b``; repeated terms are dropped as R does), parentheses around sums, ``1``, ``0``,
  ``- 1``. Terms keep the order written (R itself sorts model-matrix columns by degree).
- random part: ``(1|g)``, ``(x|g)`` (= ``(1 + x|g)``), ``(0 + x|g)``, ``(-1 + x|g)``,
  ``(x||g)`` (uncorrelated: one block per term), ``(1|a/b)`` (levels ``a`` then ``b``
  nested in ``a``), ``(1|a) + (1|a:b)`` (the same), ``(1|a) + (1|b)`` (crossed), and the
  same group in several blocks of one term each, ``(1|a) + (0 + x|a)`` (independent).
- everything else (``I()``, ``poly()``, ``offset()``, ``log()``, ``^``, ``%in%``, ``/`` in
  the fixed part, removing terms with ``-``, factors or interactions as random slopes,
  block-diagonal structures such as ``(1 + x|g) + (0 + z|g)``) raises
  :class:`~hlmbridge.errors.SpecError` naming the construct.

Examples
--------
>>> from hlmbridge.spec.parse_lme4 import parse_lme4
>>> spec = parse_lme4("mathach ~ ses * factor(sector) + (ses | id)", reml=False)
>>> [t.stata_name for t in spec.fixed]
['ses', 'i.sector', 'c.ses#i.sector']
>>> spec.levels[0].cov, spec.method
('unstructured', 'ml')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hlmbridge.spec.common import check_parens, spec_error
from hlmbridge.errors import SpecError
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var

__all__ = ["parse_lme4", "R_RESERVED"]

#: Words R reserves; they must be backtick-quoted to be used as names.
R_RESERVED: frozenset[str] = frozenset(
    "if else repeat while function for in next break TRUE FALSE NULL Inf NaN NA NA_integer_ "
    "NA_real_ NA_character_ NA_complex_ T F".split()
)

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<name>`[^`]*`|[A-Za-z.][A-Za-z0-9._]*)
  | (?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)
  | (?P<str>"[^"]*"|'[^']*')
  | (?P<op>\|\||%[^%]*%|[~+\-*/:^()|,=])
    """,
    re.VERBOSE,
)

# Pratt binding powers (R's precedence, lowest first).
_BINARY = {"|": 10, "||": 10, "+": 20, "-": 20, "*": 30, "/": 30, ":": 50, "^": 60}
_UNARY_MINUS = 45


@dataclass(frozen=True)
class _Tok:
    kind: str
    value: str
    pos: int


@dataclass(frozen=True)
class _Node:
    kind: str  # name, num, str, call, bin, neg, paren
    value: str
    pos: int
    args: tuple[_Node, ...] = ()
    keys: tuple[str | None, ...] = ()


_err = spec_error


def _tokenize(text: str) -> list[_Tok]:
    toks = []
    i = 0
    while i < len(text):
        m = _TOKEN_RE.match(text, i)
        if not m:
            raise _err(f"unexpected character {text[i]!r} in the formula", text, i)
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            val = m.group(0)
            if kind == "op" and val.startswith("%") and val != "%in%":
                raise _err(f"the operator {val} is not supported", text, i)
            if kind == "name" and val.startswith("`"):
                val = val[1:-1]
                if not val:
                    raise _err("empty backtick-quoted name", text, i)
            toks.append(_Tok(kind, val, i))
        i = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    def __init__(self, text: str, toks: list[_Tok]):
        self.text = text
        self.toks = toks
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, value: str) -> _Tok:
        t = self.next()
        if t.kind != "op" or t.value != value:
            what = "the end of the formula" if t.kind == "end" else repr(t.value)
            raise _err(f"expected {value!r}, found {what}", self.text, t.pos)
        return t

    def expr(self, min_bp: int = 0) -> _Node:
        t = self.next()
        if t.kind == "op" and t.value == "-":
            operand = self.expr(_UNARY_MINUS)
            left = _Node("neg", "-", t.pos, (operand,))
        elif t.kind == "op" and t.value == "+":
            left = self.expr(_UNARY_MINUS)
        elif t.kind == "op" and t.value == "(":
            inner = self.expr(0)
            self.expect(")")
            left = _Node("paren", "(", t.pos, (inner,))
        elif t.kind == "name":
            if self.peek().kind == "op" and self.peek().value == "(":
                left = self.call(t)
            else:
                left = _Node("name", t.value, t.pos)
        elif t.kind == "num":
            left = _Node("num", t.value, t.pos)
        elif t.kind == "str":
            left = _Node("str", t.value[1:-1], t.pos)
        else:
            what = "the end of the formula" if t.kind == "end" else repr(t.value)
            raise _err(f"expected a term, found {what}", self.text, t.pos)
        while True:
            t = self.peek()
            if t.kind != "op":
                if t.kind == "end":
                    return left
                raise _err(f"expected an operator before {t.value!r}", self.text, t.pos)
            if t.value == "%in%":
                bp = 40
            elif t.value in _BINARY:
                bp = _BINARY[t.value]
            else:
                return left
            if bp <= min_bp:
                return left
            self.next()
            right = self.expr(bp)
            left = _Node("bin", t.value, t.pos, (left, right))

    def call(self, name: _Tok) -> _Node:
        self.expect("(")
        args: list[_Node] = []
        keys: list[str | None] = []
        if not (self.peek().kind == "op" and self.peek().value == ")"):
            while True:
                key = None
                if (
                    self.peek().kind == "name"
                    and self.toks[self.i + 1].kind == "op"
                    and self.toks[self.i + 1].value == "="
                ):
                    key = self.next().value
                    self.next()
                args.append(self.expr(0))
                keys.append(key)
                if self.peek().kind == "op" and self.peek().value == ",":
                    self.next()
                    continue
                break
        self.expect(")")
        return _Node("call", name.value, name.pos, tuple(args), tuple(keys))


def _flatten_sum(node: _Node) -> list[tuple[int, _Node]]:
    """A ``+``/``-`` chain as (sign, node) pairs."""
    if node.kind == "bin" and node.value in ("+", "-"):
        left = _flatten_sum(node.args[0])
        right = _flatten_sum(node.args[1])
        if node.value == "-":
            right = [(-s, n) for s, n in right]
        return left + right
    if node.kind == "neg":
        return [(-s, n) for s, n in _flatten_sum(node.args[0])]
    return [(1, node)]


def _is_bar(node: _Node) -> bool:
    return node.kind == "paren" and node.args[0].kind == "bin" and node.args[0].value in ("|", "||")


def _intercept_value(node: _Node) -> int | None:
    if node.kind == "num":
        try:
            v = float(node.value)
        except ValueError:  # pragma: no cover - the tokenizer only yields numbers
            return None
        if v in (0.0, 1.0):
            return int(v)
    return None


_UNSUPPORTED_CALLS = {
    "I": "I() (arithmetic inside the formula); compute the column in the data instead",
    "poly": "poly() (orthogonal polynomials); compute the columns in the data instead",
    "offset": "offset() (a term with a fixed coefficient of 1)",
    "log": "log(); transform the column in the data instead",
    "exp": "exp(); transform the column in the data instead",
    "sqrt": "sqrt(); transform the column in the data instead",
    "scale": "scale(); center/scale the column in the data instead",
    "ns": "ns() (splines)",
    "bs": "bs() (splines)",
    "C": "C() (R contrasts); use factor() or relevel(factor(x), ref = ...)",
}


def _name_ok(name: str, text: str, pos: int) -> str:
    if not (name[0].isalpha() or name[0] == "_") or not all(c.isalnum() or c in "_." for c in name):
        raise _err(f"{name!r} cannot be a variable name here", text, pos)
    return name


def _factor_var(node: _Node, text: str) -> Var:
    """``factor(x)``, ``as.factor(x)`` or ``relevel(factor(x), ref = k)``."""
    if node.value in ("factor", "as.factor"):
        if len(node.args) != 1 or node.args[0].kind != "name" or node.keys[0] is not None:
            raise _err(f"{node.value}() takes one variable name here", text, node.pos)
        return Var(_name_ok(node.args[0].value, text, node.args[0].pos), factor=True)
    # relevel
    if len(node.args) != 2 or node.keys[0] is not None or node.keys[1] not in (None, "ref"):
        raise _err("relevel() is read as relevel(factor(x), ref = level)", text, node.pos)
    inner = node.args[0]
    if inner.kind == "name":
        var = Var(_name_ok(inner.value, text, inner.pos), factor=True)
    elif inner.kind == "call" and inner.value in ("factor", "as.factor"):
        var = _factor_var(inner, text)
    else:
        raise _err("relevel() is read as relevel(factor(x), ref = level)", text, node.pos)
    ref = node.args[1]
    if ref.kind not in ("num", "str") or not re.fullmatch(r"-?[0-9]+", ref.value.strip()):
        raise _err(
            "the base level in relevel() must be an integer level (e.g. ref = \"1\")", text, ref.pos
        )
    return Var(var.name, factor=True, base=int(ref.value.strip()))


def _expand_fixed(node: _Node, text: str) -> list[tuple[Var, ...]]:
    if node.kind == "name":
        return [(Var(_name_ok(node.value, text, node.pos)),)]
    if node.kind == "call":
        if node.value in ("factor", "as.factor", "relevel"):
            return [(_factor_var(node, text),)]
        why = _UNSUPPORTED_CALLS.get(node.value, f"{node.value}() (function calls in the formula)")
        raise _err(f"not supported: {why}", text, node.pos)
    if node.kind == "paren":
        if _is_bar(node):
            raise _err("a random-effects term cannot be part of a fixed-effects expression", text, node.pos)
        return _expand_fixed(node.args[0], text)
    if node.kind == "bin":
        if node.value == "+":
            return _expand_fixed(node.args[0], text) + _expand_fixed(node.args[1], text)
        if node.value in (":", "*"):
            left = _expand_fixed(node.args[0], text)
            right = _expand_fixed(node.args[1], text)
            inter = []
            for a in left:
                for b in right:
                    names = [v.name for v in a + b]
                    if len(set(names)) != len(names):
                        raise _err(
                            f"a variable repeats inside the interaction {':'.join(names)}", text, node.pos
                        )
                    inter.append(a + b)
            if node.value == ":":
                return inter
            # R (and Stata's ##) order a full factorial by degree: main effects first.
            return sorted(left + right + inter, key=len)
        if node.value == "/":
            raise _err("not supported: '/' (nesting) in the fixed part; write a + a:b", text, node.pos)
        if node.value == "^":
            raise _err("not supported: '^' (crossing to a degree); write the terms out", text, node.pos)
        if node.value == "%in%":
            raise _err("not supported: %in%", text, node.pos)
        if node.value == "-":
            raise _err("not supported: removing terms with '-' (other than '- 1')", text, node.pos)
        if node.value in ("|", "||"):
            raise _err("a random-effects term must be in parentheses: (1 | g)", text, node.pos)
    if node.kind == "num":
        raise _err(f"a number ({node.value}) is not a term; use 1 or 0 for the intercept", text, node.pos)
    if node.kind == "neg":
        raise _err("not supported: removing terms with '-' (other than '- 1')", text, node.pos)
    raise _err("not a fixed-effects term", text, node.pos)


def _group_paths(node: _Node, text: str) -> list[tuple[str, ...]]:
    if node.kind == "name":
        return [(_name_ok(node.value, text, node.pos),)]
    if node.kind == "bin" and node.value == ":":
        paths = []
        for side in node.args:
            sub = _group_paths(side, text)
            if len(sub) != 1:
                raise _err("'/' cannot appear inside ':' in a grouping factor", text, node.pos)
            paths.append(sub[0])
        return [paths[0] + paths[1]]
    if node.kind == "bin" and node.value == "/":
        outer = _group_paths(node.args[0], text)
        inner = _group_paths(node.args[1], text)
        if len(inner) != 1:
            raise _err("write nested grouping as a/b/c", text, node.pos)
        return outer + [outer[-1] + inner[0]]
    if node.kind == "paren":
        return _group_paths(node.args[0], text)
    raise _err("a grouping factor must be a variable name (or a/b, a:b)", text, node.pos)


def _random_terms(node: _Node, text: str) -> tuple[bool, list[str]]:
    intercept = True
    slopes: list[str] = []
    for sign, n in _flatten_sum(node):
        iv = _intercept_value(n)
        if iv is not None:
            if sign < 0 and iv == 1 or sign > 0 and iv == 0:
                intercept = False
            elif sign > 0 and iv == 1:
                intercept = True
            continue
        if sign < 0:
            raise _err("not supported: removing random terms with '-' (other than '- 1')", text, n.pos)
        if n.kind == "name":
            name = _name_ok(n.value, text, n.pos)
            if name in slopes:
                raise _err(f"the random slope {name!r} repeats", text, n.pos)
            slopes.append(name)
        elif n.kind == "call" and n.value in ("factor", "as.factor", "relevel"):
            raise _err("not supported: factors as random slopes", text, n.pos)
        elif n.kind == "bin" and n.value in (":", "*"):
            raise _err("not supported: interactions as random slopes", text, n.pos)
        elif n.kind == "call":
            why = _UNSUPPORTED_CALLS.get(n.value, f"{n.value}() (function calls in the formula)")
            raise _err(f"not supported: {why}", text, n.pos)
        else:
            raise _err("random slopes must be plain numeric variables", text, n.pos)
    return intercept, slopes


@dataclass
class _Block:
    path: tuple[str, ...]
    terms: tuple[str, ...]  # "(Intercept)" or slope names
    pos: int


def _parse(formula: str, reml: bool, factors: Mapping[str, int | None]) -> ModelSpec:
    if not isinstance(formula, str):
        raise SpecError(f"an lme4 formula must be a string, got {type(formula).__name__}")
    if not formula.strip():
        raise _err("empty formula: expected 'y ~ x + (1 | g)'", formula, 0)
    check_parens(formula)
    toks = _tokenize(formula)
    tilde = [t for t in toks if t.kind == "op" and t.value == "~"]
    if not tilde:
        raise _err("an lme4 formula needs '~' (e.g. 'y ~ x + (1 | g)')", formula, 0)
    if len(tilde) > 1:
        raise _err("only one '~' is allowed", formula, tilde[1].pos)
    cut = toks.index(tilde[0])
    lhs_toks = toks[:cut]
    if len(lhs_toks) != 1 or lhs_toks[0].kind != "name":
        pos = lhs_toks[0].pos if lhs_toks else tilde[0].pos
        raise _err("the response (left of '~') must be one variable name", formula, pos)
    response = _name_ok(lhs_toks[0].value, formula, lhs_toks[0].pos)
    parser = _Parser(formula, toks[cut + 1 :])
    rhs = parser.expr(0)
    end = parser.peek()
    if end.kind != "end":
        raise _err(f"unexpected {end.value!r}", formula, end.pos)

    constant = True
    raw_terms: list[tuple[tuple[Var, ...], int]] = []
    blocks: list[_Block] = []
    for sign, node in _flatten_sum(rhs):
        iv = _intercept_value(node)
        if iv is not None:
            constant = (iv == 1) == (sign > 0)
            continue
        if _is_bar(node):
            if sign < 0:
                raise _err("a random-effects term cannot be removed with '-'", formula, node.pos)
            bar = node.args[0]
            intercept, slopes = _random_terms(bar.args[0], formula)
            for path in _group_paths(bar.args[1], formula):
                terms = (("(Intercept)",) if intercept else ()) + tuple(slopes)
                if not terms:
                    raise _err("a random-effects term with no terms (0 | g)", formula, node.pos)
                if bar.value == "||":
                    blocks.extend(_Block(path, (t,), node.pos) for t in terms)
                else:
                    blocks.append(_Block(path, terms, node.pos))
            continue
        if sign < 0:
            raise _err("not supported: removing terms with '-' (other than '- 1')", formula, node.pos)
        raw_terms.extend((t, node.pos) for t in _expand_fixed(node, formula))

    # Apply factor declarations, then drop repeated terms as R does.
    fixed: list[Term] = []
    fixed_pos: list[int] = []
    seen: dict[tuple[str, ...], Term] = {}
    for vs, pos in raw_terms:
        vs = tuple(
            Var(v.name, factor=True, base=factors[v.name]) if v.name in factors and not v.factor else v
            for v in vs
        )
        term = Term(vs)
        key = tuple(sorted(term.variables))
        if key in seen:
            if set(seen[key].vars) != set(vs):
                raise _err(f"the term {':'.join(key)} appears twice with different coding", formula, pos)
            continue  # a repeated term, dropped as R does
        seen[key] = term
        fixed.append(term)
        fixed_pos.append(pos)
    coding: dict[str, tuple[bool, int | None]] = {}
    for term, pos in zip(fixed, fixed_pos):
        for v in term.vars:
            if v.name in coding and coding[v.name] != (v.factor, v.base):
                raise _err(f"{v.name!r} is used both as a factor and as a number (or with two bases)", formula, pos)
            coding[v.name] = (v.factor, v.base)

    if not blocks:
        raise _err("no random-effects term: add e.g. '+ (1 | g)' (use lm() for a linear model)", formula, len(formula))
    # Group blocks into levels by grouping path, in order of first appearance.
    order: list[tuple[str, ...]] = []
    by_path: dict[tuple[str, ...], list[_Block]] = {}
    for b in blocks:
        if b.path not in by_path:
            order.append(b.path)
            by_path[b.path] = []
        by_path[b.path].append(b)
    levels = []
    for idx, path in enumerate(order):
        first = by_path[path][0]
        if len(path) > 1:
            if idx == 0 or order[idx - 1] != path[:-1]:
                raise _err(
                    f"the nested grouping {':'.join(path)!r} must come right after its enclosing level "
                    f"(1 | {':'.join(path[:-1])}) — or write (1 | {path[0]}/{'/'.join(path[1:])})",
                    formula,
                    first.pos,
                )
            nested = True
        else:
            nested = False
        blist = by_path[path]
        all_terms: list[str] = []
        for b in blist:
            for t in b.terms:
                if t in all_terms:
                    what = "random intercept" if t == "(Intercept)" else f"random slope {t!r}"
                    raise _err(f"the {what} for {':'.join(path)!r} is given twice", formula, b.pos)
                all_terms.append(t)
        if len(blist) == 1:
            cov = "unstructured" if len(all_terms) > 1 else "identity"
        elif all(len(b.terms) == 1 for b in blist):
            cov = "independent"
        else:
            raise _err(
                f"block-diagonal covariance at level {':'.join(path)!r} (several correlated blocks) "
                "is not one of identity/independent/exchangeable/unstructured",
                formula,
                blist[1].pos,
            )
        levels.append(
            RandomLevel(
                path[-1],
                slopes=tuple(t for t in all_terms if t != "(Intercept)"),
                intercept="(Intercept)" in all_terms,
                cov=cov,  # type: ignore[arg-type]
                nested=nested,
            )
        )
    groups = [lv.group for lv in levels]
    for idx, g in enumerate(groups):
        if g in groups[:idx]:
            raise _err(f"the grouping variable {g!r} appears at two levels", formula, by_path[order[idx]][0].pos)
    return ModelSpec(
        response=response,
        fixed=tuple(fixed),
        levels=tuple(levels),
        constant=constant,
        method="reml" if reml else "ml",
        _source=formula,
    )


def parse_lme4(
    formula: str,
    *,
    reml: bool = True,
    factors: Mapping[str, int | None] | Iterable[tuple[str, int | None]] = (),
) -> ModelSpec:
    """Parse an lme4 formula.

    Parameters
    ----------
    formula
        ``y ~ fixed + (terms | group) ...``.
    reml
        lme4's default is REML (``True``); the method is always recorded in the spec.
    factors
        Columns to treat as factors with their base level (``None`` = lowest), as in
        :attr:`hlmbridge.spec.render.Lme4Model.factors`: lme4 formulas written with plain
        column names do not say which columns are factors.

    Returns
    -------
    ModelSpec

    Raises
    ------
    SpecError
        With ``text`` and ``position`` pointing at the problem.

    Examples
    --------
    >>> spec = parse_lme4("y ~ x + (1 | school/class)")
    >>> [(lv.group, lv.nested) for lv in spec.levels], spec.method
    ([('school', True), ('class', True)], 'reml')
    >>> spec = parse_lme4("y ~ 0 + x + (x || g)", reml=False)
    >>> spec.constant, spec.levels[0].cov
    (False, 'independent')
    >>> parse_lme4("y ~ s + (1|g)", factors=[("s", 1)]).fixed[0].stata_name
    'ib1.s'
    """
    fmap = dict(factors.items() if isinstance(factors, Mapping) else factors)
    return _parse(formula, bool(reml), fmap)
