"""What an lme4 formula means, by R's own rules.

R decides what ``y ~ a*b + (x | g)`` means in three steps, and this module follows each:

1. lme4 splits the random-effects terms off (``findbars``/``nobars``), expands ``(x || g)``
   into ``(1 | g) + (0 + x | g)`` (``expandDoubleVerts``: one bar per term label) and
   ``(x | a/b)`` into ``(x | b:a) + (x | a)`` (``expandSlash``).
2. R's ``terms()`` expands the fixed part with the formula algebra (``+ : * / %in% ^ -``,
   ``0``/``1``/``-1``), records the variables in order of first appearance, drops repeated
   terms and sorts the terms by degree (``keep.order = FALSE``).
3. ``model.matrix`` codes the terms (see :mod:`hlmbridge.design.model_matrix`).

A *variable* is an R expression over data columns (``ses``, ``factor(sector)``,
``log(x + 1)``, ``poly(age, 2)``); its label is R's ``deparse`` of it, which is the name R
gives its model-matrix columns. Only the functions in :data:`FUNCTIONS` are accepted
(an unknown one is a :class:`~hlmbridge.errors.SpecError` that names it); hlmbridge
evaluates them itself (:mod:`hlmbridge.design.evaluate`), never with ``eval``.

Examples
--------
>>> f = parse_formula("mathach ~ sector + ses + ses:sector + (1 | id)")
>>> f.fixed.labels
('sector', 'ses', 'sector:ses')
>>> f.random[0].label, f.random[0].lhs.intercept
('id', True)
>>> [b.label for b in parse_formula("y ~ 1 + (x || a/b)").random]
['b:a', 'b:a', 'a', 'a']
>>> parse_formula("y ~ (a + b + c)^2 - a:b + (1 | g)").fixed.labels
('a', 'b', 'c', 'a:c', 'b:c')
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from hlmbridge.errors import SpecError
from hlmbridge.spec.common import check_parens, spec_error

__all__ = ["FUNCTIONS", "Expr", "Formula", "RandomBar", "Terms", "format_r_number", "parse_formula",
           "parse_r_expression"]

#: The functions hlmbridge evaluates inside a formula, with what each takes.
FUNCTIONS: dict[str, str] = {
    "I": "I(expr): arithmetic with + - * / ^ and numbers",
    "log": "log(x) or log(x, base)",
    "log2": "log2(x)",
    "log10": "log10(x)",
    "log1p": "log1p(x)",
    "exp": "exp(x)",
    "sqrt": "sqrt(x)",
    "abs": "abs(x)",
    "scale": "scale(x, center = TRUE, scale = TRUE)",
    "poly": "poly(x, degree, raw = FALSE)",
    "factor": "factor(x, levels = c(...), labels = c(...), ordered = FALSE)",
    "as.factor": "as.factor(x)",
    "ordered": "ordered(x, levels = c(...), labels = c(...))",
    "as.ordered": "as.ordered(x)",
    "relevel": "relevel(f, ref = level)",
    "offset": "offset(x)",
    "cut": "cut(x, breaks, labels = NULL, include.lowest = FALSE, right = TRUE, dig.lab = 3, ordered_result = FALSE)",
    "interaction": "interaction(f1, f2, ..., drop = FALSE, sep = \".\", lex.order = FALSE)",
    "C": "C(f, contr) with contr one of contr.treatment, contr.sum, contr.helmert, contr.poly, contr.SAS",
    "ns": "ns(x, df, knots, intercept = FALSE, Boundary.knots) from R's splines",
    "bs": "bs(x, df, knots, degree = 3, intercept = FALSE, Boundary.knots) from R's splines",
    "mean": "mean(x, na.rm = FALSE)",
    "sd": "sd(x, na.rm = FALSE)",
    "median": "median(x, na.rm = FALSE)",
    "min": "min(x, na.rm = FALSE)",
    "max": "max(x, na.rm = FALSE)",
    "sum": "sum(x, na.rm = FALSE)",
    "length": "length(x)",
    "c": "c(...): a vector of numbers or strings, as an argument (levels =, breaks =, knots =)",
}

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<name>`[^`]*`|(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*)
  | (?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?L?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>\|\||%[^%]*%|[~+\-*/:^()|,=])
    """,
    re.VERBOSE,
)

# An R expression outside a formula (lmer's subset=, weights=, offset=) also has R's
# comparison and logical operators; "<-" is lexed so that it can be refused.
_EXPR_TOKEN_RE = re.compile(_TOKEN_RE.pattern.replace(
    r"(?P<op>\|\||%[^%]*%|[~+\-*/:^()|,=])", r"(?P<op><-|==|!=|<=|>=|&&|\|\||%[^%]*%|[~+\-*/:^()|,=<>&!])"),
    re.VERBOSE)

# R's precedence (higher binds tighter) for the binary operators a formula uses, and the
# comparison and logical ones of an R expression.
_PREC = {"~": 1, "|": 2, "||": 2, "&": 4, "&&": 4, "==": 8, "!=": 8, "<": 8, "<=": 8, ">": 8, ">=": 8,
         "+": 10, "-": 10, "*": 11, "/": 11, "%%": 12, ":": 14, "^": 16}
_COMPARISONS = frozenset(("==", "!=", "<", "<=", ">", ">="))
_UNARY_MINUS = 15  # R: unary minus binds tighter than : and * but looser than ^
_UNARY_NOT = 5  # R: ! binds looser than comparisons, tighter than & and |
_R_SYNTACTIC = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*")
_R_RESERVED = frozenset(
    "if else repeat while function for in next break TRUE FALSE NULL Inf NaN NA NA_integer_ "
    "NA_real_ NA_character_ NA_complex_".split()
)


def _prec(op: str) -> int:
    return _PREC["%%"] if op.startswith("%") else _PREC[op]


#: A sum with more terms than this goes to R grouped in parentheses (:func:`_balanced`).
_LONG_SUM = 100


def _balanced(e: Expr) -> Expr:
    """``e`` with each long run of ``+`` regrouped as a balanced tree of parentheses:
    ``a + b + c + d`` as ``a + ((b + c) + d)``. R's terms() reads it the same (the union of
    terms is associative and the variables keep their order of appearance), but lme4's
    ``findbars`` recurses once per level of the tree: on a left-deep sum of more than ~640
    terms it stops with "C stack usage is too close to the limit" (lme4 1.1.31, an 8 MB
    stack), and R embedded in Python can crash instead. A sum of ``_LONG_SUM`` terms or
    fewer is returned as it is."""
    chain = _sum_chain(e)
    if len(chain) <= _LONG_SUM:
        return e
    acc = chain[-1].args[0]
    run: list[Expr] = []

    def group(items: list[Expr]) -> Expr:
        if len(items) == 1:
            return items[0]
        mid = len(items) // 2
        return Expr("paren", "(", (Expr("bin", "+", (group(items[:mid]), group(items[mid:]))),))

    for node in reversed(chain):
        if node.value == "+":
            run.append(node.args[1])
            continue
        if run:
            acc = Expr("bin", "+", (acc, group(run)))
            run = []
        acc = Expr("bin", "-", (acc, node.args[1]))
    if run:
        acc = Expr("bin", "+", (acc, group(run)))
    return acc


def _sum_chain(node: Expr) -> list[Expr]:
    """The ``+``/``-`` nodes down the left side of ``node`` (``a + b - c``: the ``-`` node,
    then the ``+`` node); the first operand is ``chain[-1].args[0]``."""
    chain = []
    while node.kind == "bin" and node.value in ("+", "-"):
        chain.append(node)
        node = node.args[0]
    return chain


def format_r_number(value: float) -> str:
    """A double as R prints it with 15 significant digits (``deparse``, ``as.character``).

    >>> [format_r_number(v) for v in (2.0, 2.5, 1e5, 123456, 1e-4, 0.1, 1 / 3)]
    ['2', '2.5', '1e+05', '123456', '1e-04', '0.1', '0.333333333333333']
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sig = f"{value:.15g}"
    mant, _, exp = f"{float(sig):.14e}".partition("e")
    mant = mant.rstrip("0").rstrip(".")
    e = int(exp)
    sci = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    digits = len(mant.replace("-", "").replace(".", ""))
    # Fixed notation with the same significant digits.
    decimals = max(0, digits - 1 - e)
    fixed = f"{float(sig):.{decimals}f}"
    return fixed if len(fixed) <= len(sci) else sci


@dataclass(frozen=True)
class Expr:
    """An R expression node: ``name``, ``num``, ``str``, ``call``, ``bin``, ``neg`` or ``paren``."""

    kind: str
    value: str
    args: tuple[Expr, ...] = ()
    keys: tuple[str | None, ...] = ()
    pos: int = 0

    def __eq__(self, other: object) -> bool:  # position-free: two spellings of one expression are equal
        return isinstance(other, Expr) and self.deparse() == other.deparse()

    def __hash__(self) -> int:
        return hash(self.deparse())

    def deparse(self) -> str:
        """R's ``deparse``, which is also how ``model.matrix`` names the columns."""
        k = self.kind
        if k == "name":
            return self.value if _R_SYNTACTIC.fullmatch(self.value) and self.value not in _R_RESERVED \
                or self.value in ("TRUE", "FALSE") else f"`{self.value}`"
        if k == "num":
            return format_r_number(float(self.value.rstrip("L"))) if not self.value.endswith("L") else self.value
        if k == "str":
            return '"' + self.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if k == "paren":
            return f"({self.args[0].deparse()})"
        if k == "neg":
            return f"-{self._operand(self.args[0], _UNARY_MINUS, right=True)}"
        if k == "not":
            return f"!{self._operand(self.args[0], _UNARY_NOT, right=True)}"
        if k == "bin" and self.value in ("+", "-"):
            # A sum of thousands of terms is a left-deep chain thousands of nodes deep: walk
            # it without recursion (each right operand is one term).
            chain = _sum_chain(self)
            text = self._operand(chain[-1].args[0], _PREC["+"], right=False)
            for node in reversed(chain):
                text = f"{text} {node.value} {node._operand(node.args[1], _PREC['+'], right=True)}"
            return text
        if k == "call":
            parts = [a.deparse() if key is None else f"{key} = {a.deparse()}" for a, key in zip(self.args, self.keys)]
            return f"{self.value}({', '.join(parts)})"
        op = self.value
        left = self._operand(self.args[0], _prec(op), right=False)
        right = self._operand(self.args[1], _prec(op), right=True)
        if op in ("^", ":", "/"):
            return f"{left}{op}{right}"
        return f"{left} {op} {right}"

    def _operand(self, node: Expr, prec: int, right: bool) -> str:
        text = node.deparse()
        if node.kind == "bin":
            p = _prec(node.value)
            right_assoc = self.kind == "bin" and self.value == "^"
            if p < prec or (p == prec and (right != right_assoc)):
                return f"({text})"
        return text

    def columns(self) -> tuple[str, ...]:
        """The data columns the expression reads, in order of appearance."""
        if self.kind == "name":
            return (self.value,)
        args = self.args
        if self.kind == "call" and self.value != "I":
            # Only a call's data argument reads columns (raw = TRUE, ref = "a", 2 are values).
            keyed = [a for a, k in zip(self.args, self.keys) if k in ("x", "object")]
            positional = [a for a, k in zip(self.args, self.keys) if k is None]
            every = self.value in ("interaction", "min", "max", "sum", "cbind")  # each positional argument is data
            args = tuple(keyed + positional if every else (keyed or positional[:1]))
        out: dict[str, None] = {}
        for a in args:
            for c in a.columns():
                out.setdefault(c)
        return tuple(out)


@dataclass(frozen=True)
class Terms:
    """R's ``terms()`` of one right-hand side.

    ``variables`` in order of first appearance; each term is a tuple of indices into
    ``variables`` (ascending, so in variable order), the terms sorted by degree, then
    by appearance; ``offsets`` are the ``offset()`` expressions.
    """

    variables: tuple[Expr, ...]
    terms: tuple[tuple[int, ...], ...]
    intercept: bool
    offsets: tuple[Expr, ...] = ()
    expr: Expr | None = field(default=None, compare=False)  # the right-hand side as written

    def rhs(self) -> list[str]:
        """The right-hand side for R: as written (so that R's own algebra makes the same
        variables, in the same order, and the same terms), or term by term when it was
        built by an expansion (lme4's ``||``)."""
        if self.expr is not None:
            return [_balanced(self.expr).deparse()]
        return ["1" if self.intercept else "0"] + list(self.labels)

    @property
    def labels(self) -> tuple[str, ...]:
        """R's ``term.labels``."""
        return tuple(":".join(self.variables[i].deparse() for i in t) for t in self.terms)

    def deparse(self) -> str:
        """The right-hand side written out term by term (with ``0 +`` / ``1 +``)."""
        parts = ["1" if self.intercept else "0"] + list(self.labels)
        parts += [f"offset({o.deparse()})" for o in self.offsets]
        return " + ".join(parts)

    def columns(self) -> tuple[str, ...]:
        """Data columns read by the variables and offsets."""
        out: dict[str, None] = {}
        for v in self.variables + self.offsets:
            for c in v.columns():
                out.setdefault(c)
        return tuple(out)


@dataclass(frozen=True)
class RandomBar:
    """One random-effects term ``(lhs | group)`` after lme4's expansions.

    ``group`` holds the grouping variables whose interaction is the grouping factor;
    ``label`` is lme4's name for it (``id``, ``cask:batch``, ``c:(b:a)``).
    """

    lhs: Terms
    group: tuple[str, ...]
    label: str
    group_r: str  # the grouping factor as R code (backticks where R needs them)


@dataclass(frozen=True)
class Formula:
    """An lme4 formula as R and lme4 read it."""

    response: Expr
    fixed: Terms
    random: tuple[RandomBar, ...]

    def columns(self) -> tuple[str, ...]:
        """Every data column the model reads: response, fixed part, offsets, random part."""
        out: dict[str, None] = {}
        for c in self.response.columns() + self.fixed.columns():
            out.setdefault(c)
        for bar in self.random:
            for c in bar.lhs.columns() + bar.group:
                out.setdefault(c)
        return tuple(out)

    def r_formula(self) -> str:
        """The formula hlmbridge hands to R, written from the parsed (checked) expression:
        the fixed part as written, lme4's random-effects terms after its expansions."""
        fixed = self.fixed.rhs()
        bars = []
        for bar in self.random:
            lhs = bar.lhs.rhs()
            bars.append(f"({' + '.join(lhs)} | {bar.group_r})")
        return f"{self.response.deparse()} ~ {' + '.join(fixed + bars)}"


# ----------------------------------------------------------------------------- parsing


def _tokenize(text: str, expression: bool = False) -> list[tuple[str, str, int]]:
    toks = []
    i = 0
    where = "the expression" if expression else "the formula"
    token_re = _EXPR_TOKEN_RE if expression else _TOKEN_RE
    while i < len(text):
        m = token_re.match(text, i)
        if not m:
            hint = ""
            if text[i] == "_" or (text[i].isdigit() and i + 1 < len(text) and text[i + 1].isalpha()):
                word = re.match(r"[\w.]+", text[i:])
                hint = f" (R needs backticks around a name like that: `{word.group(0) if word else text[i]}`)"
            raise spec_error(f"unexpected character {text[i]!r} in {where}{hint}", text, i)
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            val = m.group(0)
            if kind == "op" and val.startswith("%") and val != "%in%":
                raise spec_error(f"the operator {val} is not supported in {where}", text, i)
            if kind == "op" and val == "<-":
                raise spec_error("an assignment (<-) is not allowed in the expression", text, i)
            if kind == "name" and val.startswith("`"):
                val = val[1:-1]
                if not val:
                    raise spec_error("empty backtick-quoted name", text, i)
            if kind == "str":
                val = re.sub(r"\\(.)", r"\1", val[1:-1])
            toks.append((kind, val, i))
        i = m.end()
    toks.append(("end", "", len(text)))
    return toks


class _Parser:
    """Pratt parser with R's precedences."""

    def __init__(self, text: str, toks: list[tuple[str, str, int]]):
        self.text = text
        self.toks = toks
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def next(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, value: str) -> None:
        kind, val, pos = self.next()
        if kind != "op" or val != value:
            what = "the end of the formula" if kind == "end" else repr(val)
            raise spec_error(f"expected {value!r}, found {what}", self.text, pos)

    def expr(self, min_prec: int = 0) -> Expr:
        kind, val, pos = self.next()
        if kind == "op" and val == "-":
            left = Expr("neg", "-", (self.expr(_UNARY_MINUS),), pos=pos)
        elif kind == "op" and val == "+":
            left = self.expr(_UNARY_MINUS)
        elif kind == "op" and val == "!":
            left = Expr("not", "!", (self.expr(_UNARY_NOT),), pos=pos)
        elif kind == "op" and val == "(":
            inner = self.expr(0)
            self.expect(")")
            left = Expr("paren", "(", (inner,), pos=pos)
        elif kind == "name":
            if self.peek()[0] == "op" and self.peek()[1] == "(":
                left = self.call(val, pos)
            else:
                left = Expr("name", val, pos=pos)
        elif kind in ("num", "str"):
            left = Expr(kind, val, pos=pos)
        else:
            what = "the end of the formula" if kind == "end" else repr(val)
            raise spec_error(f"expected a term, found {what}", self.text, pos)
        while True:
            kind, val, pos = self.peek()
            if kind != "op" or val == "(":
                if kind == "end":
                    return left
                raise spec_error(f"expected an operator before {val!r}", self.text, pos)
            if val in (")", ",", "="):
                return left
            if val == "~":
                raise spec_error("only one '~' is allowed", self.text, pos)
            if val == "!":
                raise spec_error("expected an operator before '!'", self.text, pos)
            prec = _prec(val)
            if prec < min_prec or (prec == min_prec and val != "^"):
                return left
            if val in _COMPARISONS and left.kind == "bin" and left.value in _COMPARISONS:
                raise spec_error(f"unexpected {val!r}: R does not chain comparisons (a < b < c); use &",
                                 self.text, pos)
            self.next()
            right = self.expr(prec)
            left = Expr("bin", val, (left, right), pos=pos)

    def call(self, name: str, pos: int) -> Expr:
        self.expect("(")
        args: list[Expr] = []
        keys: list[str | None] = []
        if not (self.peek()[0] == "op" and self.peek()[1] == ")"):
            while True:
                key = None
                if self.peek()[0] == "name" and self.toks[self.i + 1][:2] == ("op", "="):
                    key = self.next()[1]
                    self.next()
                args.append(self.expr(0))
                keys.append(key)
                if self.peek()[0] == "op" and self.peek()[1] == ",":
                    self.next()
                    continue
                break
        self.expect(")")
        return Expr("call", name, tuple(args), tuple(keys), pos=pos)


# ----------------------------------------------------------------------------- R's formula algebra


class _Encoder:
    """R's ``EncodeVars``: terms as bit sets over the variables, in order of appearance."""

    def __init__(self, text: str, *, allow_offset: bool = True):
        self.text = text
        self.variables: list[Expr] = []
        self.intercept = True
        self.offsets: list[Expr] = []
        self.allow_offset = allow_offset
        self._index: dict[str, int] = {}

    def install(self, e: Expr) -> int:
        key = e.deparse()
        if key not in self._index:
            self._index[key] = len(self.variables)
            self.variables.append(e)
        return self._index[key]

    def encode(self, e: Expr) -> list[int]:
        k = e.kind
        if k == "bin" and e.value in ("+", "-"):
            # Left to right along the chain, without recursion (a sum can have thousands of
            # terms); R's TrimRepeats keeps each term's first appearance.
            chain = _sum_chain(e)
            out = self.encode(chain[-1].args[0])
            seen = set(out)
            for node in reversed(chain):
                if node.value == "+":
                    for t in self.encode(node.args[1]):
                        if t not in seen:
                            seen.add(t)
                            out.append(t)
                else:
                    out = self._delete(out, node.args[1])
                    seen = set(out)
            return out
        if k == "num":
            v = float(e.value.rstrip("L"))
            if v == 1:
                self.intercept = True
                return []
            if v == 0:
                self.intercept = False
                return []
            raise spec_error(f"a number ({e.value}) is not a term; use 1 or 0 for the intercept", self.text, e.pos)
        if k == "paren":
            return self.encode(e.args[0])
        if k == "neg":
            return self._delete([], e.args[0])
        if k == "name":
            if e.value == ".":
                raise spec_error("'.' (all other columns) is not supported; list the variables", self.text, e.pos)
            return [1 << self.install(e)]
        if k == "call":
            _check_call(e, self.text)
            if e.value == "offset":
                if not self.allow_offset:
                    raise spec_error("offset() is not allowed inside a random-effects term", self.text, e.pos)
                if len(e.args) != 1:
                    raise spec_error("offset() takes one expression: offset(x)", self.text, e.pos)
                self.offsets.append(e.args[0])
                return []
            return [1 << self.install(e)]
        if k == "str":
            raise spec_error(f"a string ({e.value!r}) is not a term", self.text, e.pos)
        op = e.value
        if op in ("|", "||"):
            raise spec_error("a random-effects term must be in parentheses: (1 | g)", self.text, e.pos)
        if op == "^":
            base = self.encode(e.args[0])
            n = e.args[1]
            if n.kind != "num" or float(n.value.rstrip("L")) < 1 or not float(n.value.rstrip("L")).is_integer():
                raise spec_error("'^' in a formula needs a whole number: (a + b)^2", self.text, e.pos)
            out = list(base)
            for _ in range(int(float(n.value.rstrip("L"))) - 1):
                out = _trim(out + [a | b for a in out for b in base])
            return _trim(out)
        left = self.encode(e.args[0])
        right = self.encode(e.args[1])
        if op == ":":
            return _trim([a | b for a in left for b in right])
        if op == "*":
            return _trim(left + right + [a | b for a in left for b in right])
        if op == "%in%":
            allr = _or(right)
            return _trim([a | allr for a in left])
        if op == "/":
            alll = _or(left)
            return _trim(left + [b | alll for b in right])
        raise spec_error(f"the operator {op!r} is not supported in a formula", self.text, e.pos)

    def _delete(self, left: list[int], node: Expr) -> list[int]:
        saved = self.intercept
        if node.kind == "num":
            v = float(node.value.rstrip("L"))
            if v in (0.0, 1.0):
                self.intercept = v == 0
                return left
        right = set(self.encode(node))
        self.intercept = saved
        return [t for t in left if t not in right]


def _trim(terms: list[int]) -> list[int]:
    out: list[int] = []
    for t in terms:
        if t and t not in out:
            out.append(t)
    return out


def _or(terms: list[int]) -> int:
    acc = 0
    for t in terms:
        acc |= t
    return acc


def _check_call(e: Expr, text: str) -> None:
    if e.value not in FUNCTIONS:
        known = ", ".join(f"{k}()" for k in FUNCTIONS)
        raise spec_error(f"unknown function {e.value}() in the formula (hlmbridge evaluates: {known})", text, e.pos)
    if not e.args:
        raise spec_error(f"{e.value}() needs an argument: {FUNCTIONS[e.value]}", text, e.pos)
    for a in e.args:
        _check_inner(a, text)


def _check_inner(e: Expr, text: str) -> None:
    if e.kind == "call":
        _check_call(e, text)
    elif e.kind == "bin" and e.value in ("|", "||", "%in%"):
        raise spec_error(f"the operator {e.value} cannot be used inside a function call", text, e.pos)
    else:
        for a in e.args:
            _check_inner(a, text)


def _set_bits(b: int) -> tuple[int, ...]:
    out = []
    while b:
        low = b & -b
        out.append(low.bit_length() - 1)
        b ^= low
    return tuple(out)


def _terms(encoder: _Encoder, bits: list[int]) -> Terms:
    order = sorted(range(len(bits)), key=lambda i: (bin(bits[i]).count("1"), i))
    terms = tuple(_set_bits(bits[i]) for i in order)
    return Terms(tuple(encoder.variables), terms, encoder.intercept, tuple(encoder.offsets))


def _rhs_terms(node: Expr | None, text: str, *, allow_offset: bool = True, response: Expr | None = None) -> Terms:
    enc = _Encoder(text, allow_offset=allow_offset)
    if response is not None:
        enc.install(response)
    bits = enc.encode(node) if node is not None else []
    if response is not None:
        # The response is variable 0 in R's terms; it is never a term on the right.
        bits = [b >> 1 for b in bits if not b & 1]
        enc.variables.pop(0)
    return replace(_terms(enc, bits), expr=node)


def _split_bars(node: Expr) -> tuple[Expr | None, list[Expr]]:
    """lme4's ``findbars``/``nobars`` on a ``+``/``-`` chain: (the fixed part, the bars).

    The chain is walked left to right without recursion (a sum can have thousands of terms).
    """
    chain = []
    while node.kind == "bin" and (node.value == "+" or (node.value == "-" and not _contains_bar(node.args[1]))):
        chain.append(node)
        node = node.args[0]
    fixed, bars = _split_term(node)
    for link in reversed(chain):
        if link.value == "+":
            f2, b2 = _split_bars(link.args[1])
            bars = bars + b2
            if fixed is None or f2 is None:
                fixed = f2 if fixed is None else fixed
            else:
                fixed = Expr("bin", "+", (fixed, f2), pos=link.pos)
        elif fixed is None:
            fixed = Expr("neg", "-", (link.args[1],), pos=link.pos)
        else:
            fixed = Expr("bin", "-", (fixed, link.args[1]), pos=link.pos)
    return fixed, bars


def _split_term(node: Expr) -> tuple[Expr | None, list[Expr]]:
    """:func:`_split_bars` of one term (not a ``+``/``-`` chain)."""
    if node.kind == "paren" and node.args[0].kind == "bin" and node.args[0].value in ("|", "||"):
        return None, [node.args[0]]
    if node.kind == "paren":
        f, b = _split_bars(node.args[0])
        if b:
            return f, b
    return node, []


def _first_bar(node: Expr) -> Expr | None:
    """The first ``|``/``||`` node in ``node``, depth first (iterative: a sum may be thousands
    of terms deep)."""
    stack = [node]
    while stack:
        e = stack.pop()
        if e.kind == "bin" and e.value in ("|", "||"):
            return e
        stack.extend(reversed(e.args))
    return None


def _contains_bar(node: Expr) -> bool:
    return _first_bar(node) is not None


def _group_paths(node: Expr, text: str) -> list[Expr]:
    """lme4's ``expandSlash``: ``a/b`` gives ``b:a`` then ``a``."""
    if node.kind == "paren":
        return _group_paths(node.args[0], text)
    if node.kind == "bin" and node.value == "/":
        outer = _group_paths(node.args[0], text)
        inner = node.args[1]
        if inner.kind == "bin" and inner.value == "/":
            raise spec_error("write nested grouping as a/b/c", text, node.pos)
        return [Expr("bin", ":", (inner, outer[0]), pos=node.pos)] + outer
    _group_names(node, text)
    return [node]


def _group_names(node: Expr, text: str) -> list[str]:
    if node.kind == "name":
        return [node.value]
    if node.kind == "paren":
        return _group_names(node.args[0], text)
    if node.kind == "bin" and node.value == ":":
        return _group_names(node.args[0], text) + _group_names(node.args[1], text)
    raise spec_error("a grouping factor must be a variable or an interaction of variables (a, a:b, a/b)",
                     text, node.pos)


def _bars(bar: Expr, text: str) -> list[RandomBar]:
    lhs_node, group_node = bar.args
    for side in (lhs_node, group_node):
        inner = _first_bar(side)
        if inner is not None:
            raise spec_error("a random-effects term inside another one; put each in parentheses: "
                             "y ~ x + (1 | g) + (1 | h)", text, inner.pos)
    groups = _group_paths(group_node, text)
    out: list[RandomBar] = []
    for g in groups:
        names = tuple(_group_names(g, text))
        if len(set(names)) != len(names):
            raise spec_error(f"a variable repeats in the grouping factor {g.deparse()}", text, g.pos)
        while g.kind == "paren":
            g = g.args[0]
        # lme4 names the factor by deparse(): a lone name without backticks, a call with them.
        label = g.value if g.kind == "name" else g.deparse()
        lhs = _rhs_terms(lhs_node, text, allow_offset=False)
        if bar.value == "||":
            pieces = ([Terms((), (), True)] if lhs.intercept else []) + [
                Terms(tuple(lhs.variables[i] for i in t), (tuple(range(len(t))),), False) for t in lhs.terms
            ]
            out += [RandomBar(p, names, label, g.deparse()) for p in pieces]
        else:
            if not lhs.terms and not lhs.intercept:
                raise spec_error("a random-effects term with no terms (0 | g)", text, bar.pos)
            out.append(RandomBar(lhs, names, label, g.deparse()))
    return out


def parse_r_expression(text: str) -> Expr:
    """One R expression, as lmer's ``subset=`` (or ``weights=``, ``offset=``) is written:
    R's arithmetic, comparison (``== != < <= > >=``) and logical (``! & | && ||``) operators,
    ``%in%``, calls, names, numbers and strings, with R's precedences. Only parsed here;
    :mod:`hlmbridge.design.rows` evaluates it (never Python's ``eval``).

    >>> parse_r_expression("Days >= 2 & !(Subject %in% c('308', '309'))").deparse()
    'Days >= 2 & !(Subject %in% c("308", "309"))'
    >>> parse_r_expression("-x^2 + 1 > 0").args[0].deparse()
    '-x^2 + 1'
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError("expected an R expression, e.g. \"Days >= 2\"")
    check_parens(text)
    parser = _Parser(text, _tokenize(text, expression=True))
    expr = parser.expr(0)
    kind, val, pos = parser.peek()
    if kind != "end":
        raise spec_error(f"unexpected {val!r}", text, pos)
    return expr


def parse_formula(text: str) -> Formula:
    """Read an lme4 formula as R and lme4 do (see the module docstring).

    Raises
    ------
    SpecError
        With the position of the problem: bad syntax, an unknown function, a formula
        without a random-effects term.
    """
    if not isinstance(text, str):
        raise SpecError(f"an lme4 formula must be a string, got {type(text).__name__}")
    if not text.strip():
        raise spec_error("empty formula: expected 'y ~ x + (1 | g)'", text, 0)
    check_parens(text)
    toks = _tokenize(text)
    tildes = [t for t in toks if t[:2] == ("op", "~")]
    if not tildes:
        raise spec_error("an lme4 formula needs '~' (e.g. 'y ~ x + (1 | g)')", text, 0)
    if len(tildes) > 1:
        raise spec_error("only one '~' is allowed", text, tildes[1][2])
    cut = toks.index(tildes[0])
    if cut == 0:
        raise spec_error("the response (left of '~') is missing", text, 0)
    lhs_parser = _Parser(text, toks[:cut] + [("end", "", tildes[0][2])])
    response = lhs_parser.expr(0)
    if lhs_parser.peek()[0] != "end":
        raise spec_error("the response (left of '~') must be one expression", text, lhs_parser.peek()[2])
    if response.kind == "call" and response.value == "cbind":
        # glmer's binomial response cbind(successes, failures): the response only, two expressions
        if len(response.args) != 2 or any(k is not None for k in response.keys):
            raise spec_error("cbind() as a binomial response takes two expressions: cbind(successes, failures)",
                             text, response.pos)
        for a in response.args:
            _check_inner(a, text)
    elif response.kind == "call":
        _check_call(response, text)
        if response.value in ("offset", "factor", "as.factor", "ordered", "as.ordered", "relevel", "poly"):
            raise spec_error(f"{response.value}() cannot be the response", text, response.pos)
    elif response.kind not in ("name", "paren") and not (response.kind == "bin" and response.value in "+-*/^"):
        raise spec_error("the response (left of '~') must be a variable or a transform of one", text, response.pos)
    if response.kind == "bin":
        raise spec_error("arithmetic in the response must be wrapped in I(): I(y / 10) ~ ...", text, response.pos)
    parser = _Parser(text, toks[cut + 1 :])
    rhs = parser.expr(0)
    kind, val, pos = parser.peek()
    if kind != "end":
        raise spec_error(f"unexpected {val!r}", text, pos)
    if rhs.kind == "bin" and rhs.value in ("|", "||"):
        # '|' binds looser than '+': lme4's findbars reads `y ~ x + 1 | g` as the one term
        # (x + 1 | g), and nobars leaves `y ~ 1` (lmer(Yield ~ 1 | Batch, Dyestuff)).
        fixed_node, bar_nodes = None, [rhs]
    else:
        fixed_node, bar_nodes = _split_bars(rhs)
    if fixed_node is not None and _contains_bar(fixed_node):
        raise spec_error("a random-effects term must stand on its own, added with '+': ... + (1 | g)", text,
                         fixed_node.pos)
    if not bar_nodes:
        raise spec_error("no random-effects term: add e.g. '+ (1 | g)' (use lm() for a linear model)", text, len(text))
    fixed = _rhs_terms(fixed_node, text, response=response)
    random: list[RandomBar] = []
    for b in bar_nodes:
        random += _bars(b, text)
    return Formula(response, fixed, tuple(random))
