"""Parse a Stata ``mixed`` command into a :class:`~hlmbridge.spec.model.ModelSpec`.

What is read
------------
- an optional ``. `` prompt and the ``quietly``/``qui`` prefix (with or without ``:``);
- ``mixed depvar [indepvars] [, fe_options] || levelvar: [varlist] [, re_options] ...``;
- factor-variable notation in the fixed part: ``i.``, ``c.``, ``ib#.``, ``ib(first).``
  (the lowest level, Stata's default base), ``ib(last).``, ``ib(freq).`` (the most frequent
  level) and ``ib(#k).`` (the k-th level), which the design resolves on the estimation sample,
  ``#`` and ``##`` (full factorial in Stata's
  order: main effects, then two-way, ... interactions), ``i.(a b)`` outside interactions.
  Inside an interaction a variable without prefix is a factor, as in Stata; a continuous
  variable may repeat (``c.x#c.x`` is x squared). ``ibn.`` (no base) is refused;
- options with Stata's abbreviations (as documented in ``help mixed``):
  ``cov(ariance)(vartype)`` with ``ind(ependent)``, ``exc(hangeable)``, ``id(entity)``,
  ``un(structured)``; ``nocon(stant)`` (Stata documents ``nocons``; the older ``xtmixed``
  accepted shorter forms, so ``nocon`` is accepted too); ``ml(e)``; ``reml``.
  ``dfm(ethod)(residual|satterthwaite [, eim|oim]|kroger)`` is read by
  :func:`parse_stata_df_method` (it does not change the model; ``repeated`` and ``anova``
  are refused).
  Global options (``reml``, ``mle``, display options) may follow any equation's comma.
  Display-only options (``variance``, ``stddeviations``, ``nolog``, ``noheader``, ...) are
  accepted and ignored, since they do not change the model;
- crossed effects in Stata's form ``|| _all: R.a || b:`` (leading ``_all: R.`` levels).

Every problem raises :class:`~hlmbridge.errors.SpecError` with ``text`` and ``position``
so the message points at the spot.

Examples
--------
>>> from hlmbridge.spec.parse_stata import parse_stata
>>> spec = parse_stata(". qui mixed mathach c.ses##i.sector || id: ses, cov(unstr)")
>>> [t.stata_name for t in spec.fixed]
['ses', 'i.sector', 'c.ses#i.sector']
>>> spec.levels[0].cov, spec.method
('unstructured', 'ml')
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from hlmbridge.spec.common import check_parens, spec_error
from hlmbridge.errors import SpecError
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var

__all__ = ["parse_stata", "parse_stata_df_method", "parse_stata_method", "STATA_RESERVED", "COVARIANCE_NAMES"]

#: Names Stata reserves; they cannot be variable names.
STATA_RESERVED: frozenset[str] = frozenset(
    "_all _b _coef _cons _n _N _pi _pred _rc _se _skip byte double float if in int long "
    "str strL using with".split()
)

#: Stata's covariance structure names with the shortest abbreviation ``help mixed`` allows.
COVARIANCE_NAMES: tuple[tuple[str, int], ...] = (
    ("independent", 3),
    ("exchangeable", 3),
    ("identity", 2),
    ("unstructured", 2),
)

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME_RE = re.compile(_NAME)
_PREFIX_RE = re.compile(r"\s*(?:\.(?=\s|$))?\s*")
_QUI_RE = re.compile(r"(?:qui|quie|quiet|quietl|quietly)(?=[\s:]|$)\s*(?::\s*)?")
_ATOM_RE = re.compile(
    r"^(?:(?P<op>[A-Za-z]+[0-9]*(?:\([^()]*\))?)\.)?(?:(?P<name>" + _NAME + r")|\((?P<group>[^()]*)\))$"
)

# (full name, shortest abbreviation, kind). Kinds: "fe" fixed-part only, "re" random
# part only, "both" either, "global" model-wide, "display" accepted and ignored,
# "refuse" a real Stata option hlmbridge cannot honour.
_OPTIONS: tuple[tuple[str, int, str], ...] = (
    ("covariance", 3, "re"),
    ("noconstant", 5, "both"),
    ("mle", 2, "global"),
    ("reml", 4, "global"),
    ("variance", 3, "display"),
    ("stddeviations", 6, "display"),
    ("nolog", 5, "display"),
    ("log", 3, "display"),
    ("noheader", 6, "display"),
    ("nogroup", 4, "display"),
    ("noretable", 5, "display"),
    ("nofetable", 5, "display"),
    ("estmetric", 4, "display"),
    ("nostderr", 5, "display"),
    ("coeflegend", 10, "display"),
    ("matsqrt", 7, "display"),
    ("vce", 3, "refuse"),
    ("dfmethod", 3, "df"),
    ("residuals", 3, "residuals"),
    ("pwscale", 7, "refuse"),
    ("fweight", 2, "refuse"),
    ("pweight", 2, "refuse"),
    ("collinear", 3, "refuse"),
    ("level", 1, "refuse"),
    ("matlog", 6, "refuse"),
    ("emonly", 6, "refuse"),
)
_VALID_OPTIONS_TEXT = ("covariance(vartype), noconstant, reml, mle, residuals(rspec) (and display options such as "
                       "variance, nolog)")


_err = spec_error


@dataclass(frozen=True)
class _Atom:
    text: str
    pos: int


@dataclass(frozen=True)
class _Option:
    name: str  # canonical
    kind: str
    arg: str | None
    arg_pos: int
    pos: int
    written: str


def _match_abbrev(word: str, table: tuple[tuple[str, int], ...]) -> str | None:
    for full, minlen in table:
        if len(word) >= minlen and full.startswith(word):
            return full
    return None


def _skip_ws(text: str, i: int, end: int) -> int:
    while i < end and text[i].isspace():
        i += 1
    return i


def _split_top(text: str, start: int, end: int, sep: str) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` at ``sep`` outside parentheses; returns (start, end) spans."""
    spans = []
    depth = 0
    i = seg = start
    while i < end:
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            spans.append((seg, i))
            i += len(sep)
            seg = i
            continue
        i += 1
    spans.append((seg, end))
    return spans


def _strip_comments(text: str) -> str:
    """Blank out ``///`` continuations and ``//`` comments, keeping every offset.

    ``///`` joins the next line to this one (the rest of the line is a comment). A ``///``
    with no line after it, or only blank lines, is an error: the command is incomplete, and
    reading it without its continuation would be a shorter, different command.
    """
    out = list(text)
    i = 0
    while i < len(text):
        if text.startswith("//", i) and (i == 0 or text[i - 1].isspace()):
            j = text.find("\n", i)
            if text.startswith("///", i) and (j < 0 or not text[j + 1:].strip()):
                raise _err("'///' continues the command on the next line, but nothing follows it: the command is "
                           "incomplete (join its lines, or drop the '///')", text, i)
            j = len(text) if j < 0 else j + 1
            for k in range(i, j):
                out[k] = " "
            i = j
            continue
        i += 1
    return "".join(out)


_XTREG_OPTION_RE = re.compile(r"(?P<word>[A-Za-z]+)(?:\((?P<arg>[^()]*)\))?")


def _xtreg_as_mixed(text: str, start: int) -> str:
    """``xtreg depvar [indepvars], i(g) mle`` as the ``mixed`` command it fits (the same ML random-
    intercept likelihood): ``mixed depvar [indepvars] || g:, mle``. Other xtreg estimators
    (``re`` GLS, ``fe``, ``be``, ``pa``) are different models and are refused."""
    body = text[start:]
    varlist, comma, opts = body.partition(",")
    group = None
    mle = False
    noconstant = False
    pos = start + len(varlist) + 1
    for m in _XTREG_OPTION_RE.finditer(opts):
        word, arg = m.group("word"), m.group("arg")
        where = pos + m.start()
        if word == "i" and arg is not None and _NAME_RE.fullmatch(arg.strip()):
            group = arg.strip()
        elif word in ("mle", "ml"):
            mle = True
        elif word in ("nocons", "noconst", "noconsta", "noconstan", "noconstant"):
            noconstant = True
        elif word in ("nolog", "log"):
            pass
        elif word in ("re", "fe", "be", "pa", "vce", "robust", "cluster", "theta", "sa", "wls"):
            raise _err(f"xtreg option {word!r}: hlmbridge fits only 'xtreg ..., mle' (the ML random-intercept "
                       "model, the same as 'mixed depvar indepvars || panelvar:, mle')", text, where)
        else:
            raise _err(f"unknown or unsupported xtreg option {m.group(0)!r} (supported: i(panelvar), mle, "
                       "noconstant, nolog)", text, where)
    if not mle:
        raise _err("xtreg without 'mle' is the GLS random-effects (or fixed-effects) estimator, not a mixed model: "
                   "only 'xtreg ..., mle' is read", text, start)
    if group is None:
        raise _err("xtreg needs its panel variable: add i(panelvar) (a log's 'xtset panelvar' is added by "
                   "import-stata)", text, start)
    return f"mixed {varlist.strip()}{', noconstant' if noconstant else ''} || {group}:, mle"


def _lex_varlist(text: str, start: int, end: int) -> list[_Atom]:
    """Atoms and ``#``/``##`` operators of a varlist (a parenthesised group stays one atom)."""
    toks: list[_Atom] = []
    i = start
    while True:
        i = _skip_ws(text, i, end)
        if i >= end:
            return toks
        ch = text[i]
        if ch == "#":
            if i + 1 < end and text[i + 1] == "#":
                toks.append(_Atom("##", i))
                i += 2
            else:
                toks.append(_Atom("#", i))
                i += 1
            continue
        if ch in ":|[],=":
            what = {"[": "weights are refused: Stata's [fw=] counts each row w times and [pw=] fits a "
                    "pseudo-likelihood with sampling weights at each level, and neither is lme4's precision "
                    "weights (fit(..., weights=)) nor any statsmodels model", "]": "unexpected ']'"}.get(
                ch, f"unexpected {ch!r} in a variable list"
            )
            raise _err(what, text, i)
        j = i
        depth = 0
        while j < end:
            c = text[j]
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif depth == 0 and (c.isspace() or c in "#:|[],="):
                break
            j += 1
        toks.append(_Atom(text[i:j], i))
        i = j


def _bad_name_message(atom: str) -> str:
    if any(c in atom for c in "*?~") or re.fullmatch(_NAME + "-" + _NAME, atom):
        return (
            f"{atom!r}: variable lists with wildcards or ranges need the data to expand; "
            "name each variable"
        )
    if atom[:1].isdigit() or atom[:1] in "-+.":
        return f"{atom!r} is not a variable name"
    return f"{atom!r} is not a variable name or factor-variable term"


def _interpret_op(op: str, atom: _Atom, text: str) -> tuple[bool, int | None] | str:
    """(factor, base) for a factor-variable operator; the string ``"R"`` for ``R.``."""
    if op == "i":
        return True, None
    if op == "c":
        return False, None
    if op == "R":
        return "R"
    m = re.fullmatch(r"ib([0-9]+)", op)
    if m:
        return True, int(m.group(1))
    m = re.fullmatch(r"ib\((.*)\)", op)
    if m:
        inner = m.group(1).strip()
        if inner == "first":
            return True, None
        if inner in ("last", "freq") or re.fullmatch(r"#[1-9][0-9]*", inner):
            return True, inner  # resolved on the estimation sample by the design, as Stata does
        raise _err(f"unknown base specification '{op}.' (Stata's: ib(first), ib(last), ib(freq), ib(#k), "
                   "ib<value>)", text, atom.pos)
    if op == "ibn":
        raise _err("'ibn.' (no base level) is not supported", text, atom.pos)
    if re.fullmatch(r"i\(.*\)", op):
        raise _err(f"'{op}.' (selected levels) is not supported; use 'i.' or 'ib#.'", text, atom.pos)
    if op == "o" or re.fullmatch(r"o[0-9]*", op):
        raise _err("the omitted-variable operator 'o.' is not supported", text, atom.pos)
    if re.fullmatch(r"[LDFSldfs][0-9]*(?:[LDFSldfs][0-9]*)*", op):
        raise _err(f"time-series operator '{op}.' is not supported", text, atom.pos)
    raise _err(f"unknown factor-variable operator '{op}.' (use i., c., ib#.)", text, atom.pos)


def _atom_vars(atom: _Atom, text: str, in_interaction: bool) -> list[Var]:
    m = _ATOM_RE.match(atom.text)
    if not m:
        raise _err(_bad_name_message(atom.text), text, atom.pos)
    op, name, group = m.group("op"), m.group("name"), m.group("group")
    if op is None:
        if group is not None:
            raise _err("unexpected parenthesis in a variable list", text, atom.pos)
        factor, base = in_interaction, None
    else:
        kind = _interpret_op(op, atom, text)
        if kind == "R":
            raise _err(
                "'R.' notation belongs to a random-effects equation ('|| _all: R.a')", text, atom.pos
            )
        factor, base = kind  # type: ignore[misc]
    names = [name] if group is None else group.split()
    if group is not None:
        if not names:
            raise _err("empty factor-variable group '()'", text, atom.pos)
        if in_interaction:
            raise _err(
                "factor-variable groups like 'i.(a b)' inside interactions are not supported; "
                "write the terms out",
                text,
                atom.pos,
            )
    out = []
    for nm in names:
        if not _NAME_RE.fullmatch(nm):
            raise _err(_bad_name_message(nm), text, atom.pos)
        _check_varname(nm, text, atom.pos)
        out.append(Var(nm, factor=factor, base=base))
    return out


def _check_varname(name: str, text: str, pos: int) -> None:
    if name in ("if", "in", "using"):
        raise _err(f"'{name}' qualifiers are not supported; subset the data first", text, pos)
    if name in STATA_RESERVED:
        raise _err(f"{name!r} is a reserved name in Stata, not a variable", text, pos)


def _fixed_terms(toks: list[_Atom], text: str) -> tuple[list[Term], list[str]]:
    # Group atoms into expressions joined by # / ##.
    exprs: list[list[_Atom]] = []
    cur: list[_Atom] = []
    expect_atom = True
    for t in toks:
        if t.text in ("#", "##"):
            if expect_atom:
                raise _err(f"'{t.text}' needs a variable on each side", text, t.pos)
            cur.append(t)
            expect_atom = True
        else:
            if not expect_atom:
                exprs.append(cur)
                cur = []
            cur.append(t)
            expect_atom = False
    if cur:
        if expect_atom:
            raise _err(f"'{cur[-1].text}' needs a variable on each side", text, cur[-1].pos)
        exprs.append(cur)
    terms: list[Term] = []
    for expr in exprs:
        if len(expr) == 1:
            for v in _atom_vars(expr[0], text, in_interaction=False):
                terms.append(Term((v,)))
            continue
        # components separated by ##, each a #-product
        components: list[list[Var]] = [[]]
        for t in expr:
            if t.text == "##":
                components.append([])
            elif t.text != "#":
                (v,) = _atom_vars(t, text, in_interaction=True)
                components[-1].append(v)
        made: set[tuple[str, ...]] = set()
        for k in range(1, len(components) + 1):
            for combo in itertools.combinations(components, k):
                vs = tuple(v for comp in combo for v in comp)
                names = [v.name for v in vs]
                repeated = {n for n in names if names.count(n) > 1}
                if any(v.factor for v in vs if v.name in repeated):
                    raise _err(f"a factor variable repeats inside the interaction {'#'.join(names)} "
                               "(only a continuous c.x may: c.x#c.x is x squared)", text, expr[0].pos)
                key = tuple(sorted(names))
                if key in made:  # c.x##c.x: x, x and c.x#c.x; Stata keeps x once, silently
                    continue
                made.add(key)
                terms.append(Term(vs))
    seen: dict[tuple[str, ...], Term] = {}
    kept: list[Term] = []
    notes: list[str] = []
    for term in terms:
        key = tuple(sorted(term.variables))
        if key in seen:
            if set(seen[key].vars) != set(term.vars):
                raise _err(f"the fixed term {term.stata_name} is listed twice with different coding", text,
                           exprs[0][0].pos)
            # Stata fits the model and omits the repeat (its coefficient shows as "(omitted)").
            note = (f"the fixed term {term.stata_name} is listed twice; the repeat is omitted, as Stata "
                    "omits it")
            if note not in notes:
                notes.append(note)
            continue
        seen[key] = term
        kept.append(term)
    return kept, notes


def _parse_options(text: str, start: int, end: int) -> list[_Option]:
    opts: list[_Option] = []
    i = start
    while True:
        i = _skip_ws(text, i, end)
        if i >= end:
            return opts
        if text[i] == ",":
            raise _err("unexpected ',' (options are separated by spaces)", text, i)
        m = _NAME_RE.match(text, i, end)
        if not m:
            raise _err(f"unexpected {text[i]!r} in the options", text, i)
        word = m.group(0)
        j = _skip_ws(text, m.end(), end)
        arg = None
        arg_pos = j
        if j < end and text[j] == "(":
            depth = 0
            k = j
            while k < end:
                if text[k] == "(":
                    depth += 1
                elif text[k] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            arg = text[j + 1 : k]
            arg_pos = j + 1
            j = k + 1
        full = kind = None
        for name, minlen, knd in _OPTIONS:
            if len(word) >= minlen and name.startswith(word):
                full, kind = name, knd
                break
        if full is None:
            raise _err(f"unknown option {word!r}; mixed options are {_VALID_OPTIONS_TEXT}", text, i)
        opts.append(_Option(full, kind, arg, arg_pos, i, text[i:j].strip()))  # type: ignore[arg-type]
        i = j


def _covariance(opt: _Option, text: str) -> str:
    if opt.arg is None:
        raise _err("covariance() needs a structure, e.g. cov(unstructured)", text, opt.pos)
    word = opt.arg.strip()
    full = _match_abbrev(word, COVARIANCE_NAMES)
    if full is None:
        valid = ", ".join(f"{n} (min. '{n[:k]}')" for n, k in COVARIANCE_NAMES)
        raise _err(f"unknown covariance structure {word!r}; valid: {valid}", text, opt.arg_pos)
    return full


#: Stata's dfmethod() names (shortest abbreviation) and hlmbridge's method for each.
_DF_METHODS: tuple[tuple[str, int, str | None], ...] = (
    ("residual", 3, "residual"),
    ("repeated", 3, None),
    ("anova", 3, None),
    ("satterthwaite", 3, "satterthwaite"),
    ("kroger", 2, "kenward-roger"),
)


def _df_method(opt: _Option, text: str) -> str:
    """hlmbridge's df method for ``dfmethod(...)``: Satterthwaite on the expected information
    (Stata's default, suboption ``eim``) unless the suboption says ``oim``."""
    arg = (opt.arg or "").strip()
    name, _, sub = arg.partition(",")
    name, sub = name.strip(), sub.strip()
    full = _match_abbrev(name, tuple((n, k) for n, k, _ in _DF_METHODS)) if name else None
    if full is None:
        valid = ", ".join(n for n, _, _ in _DF_METHODS)
        raise _err(f"unknown dfmethod {name!r}; Stata's methods are {valid}", text, opt.arg_pos)
    method = dict((n, m) for n, _, m in _DF_METHODS)[full]
    if method is None:
        raise _err(f"dfmethod({full}) is not supported by hlmbridge; supported: residual, satterthwaite, kroger",
                   text, opt.arg_pos)
    if method != "satterthwaite":
        if sub:
            raise _err(f"dfmethod({full}) takes no suboptions, got {sub!r}", text, opt.arg_pos)
        return method
    if sub in ("", "eim"):
        return "satterthwaite (expected information)"
    if sub == "oim":
        return "satterthwaite"
    raise _err(f"unknown dfmethod(satterthwaite) suboption {sub!r}; Stata's are eim and oim", text, opt.arg_pos)


@dataclass
class _Level:
    group: str
    pos: int
    slopes: tuple[str, ...] = ()
    intercept: bool = True
    cov: str | None = None
    crossed_factor: bool = False  # an ``_all: R.x`` level


def _parse(command: str) -> tuple[ModelSpec, str | None, str | None]:
    if not isinstance(command, str):
        raise SpecError(f"a Stata command must be a string, got {type(command).__name__}")
    text = _strip_comments(command)
    if not text.strip():
        raise _err("empty command: expected 'mixed depvar [indepvars] || group: [slopes]'", command, 0)
    i = _PREFIX_RE.match(text).end()  # type: ignore[union-attr]
    m = _QUI_RE.match(text, i)
    if m:
        i = m.end()
    m = _NAME_RE.match(text, i)
    if not m:
        raise _err("expected a Stata command ('mixed ...')", command, i)
    word = m.group(0)
    if word == "xtreg" and (m.end() >= len(text) or text[m.end()].isspace()):
        spec, method, df_method = _parse(_xtreg_as_mixed(text, m.end()))
        return ModelSpec(spec.response, spec.fixed, spec.levels, spec.constant, spec.method, command,
                         spec.formula, spec.notes), method, df_method
    default_method = "ml"
    if word == "xtmixed" and (m.end() >= len(text) or text[m.end()].isspace()):
        word = "mixed"
        default_method = "reml"  # xtmixed's default (mixed's, since Stata 13, is ML)
    if word != "mixed" or (m.end() < len(text) and not text[m.end()].isspace()):
        rest = text[i:].strip()
        if "||" in text and word not in ("meglm", "melogit", "mepoisson", "me"):
            raise _err(
                f"this is not a mixed command: {word!r} is not a Stata estimation command "
                f"(did you mean 'mixed {rest}'?)",
                command,
                i,
            )
        raise _err(
            f"this is not a mixed command: {word!r} (hlmbridge reads Stata's 'mixed' command only)",
            command,
            i,
        )
    i = m.end()
    check_parens(text, i)
    equations = _split_top(text, i, len(text), "||")
    for s, e in equations:
        for span_s, _ in _split_top(text, s, e, "|")[1:]:
            raise _err("unexpected '|' (random-effects equations start with '||')", command, span_s - 1)

    method: str | None = None
    method_pos = -1
    df_method: str | None = None
    constant = True
    levels: list[_Level] = []
    residuals = None

    def apply_global(opt: _Option) -> None:
        nonlocal method, method_pos, df_method, residuals
        if opt.kind == "residuals":
            from hlmbridge.spec.residuals import parse_stata_residuals

            if residuals is not None:
                raise _err("residuals() is given twice", command, opt.pos)
            try:
                residuals = parse_stata_residuals(opt.arg or "")
            except SpecError as exc:
                raise _err(str(exc), command, opt.arg_pos if opt.arg is not None else opt.pos) from None
        elif opt.kind == "df":
            new_df = _df_method(opt, command)
            if df_method is not None and df_method != new_df:
                raise _err(f"conflicting options: {opt.written!r} and an earlier dfmethod({df_method})", command, opt.pos)
            df_method = new_df
        elif opt.kind == "global":
            new = "reml" if opt.name == "reml" else "ml"
            if method is not None and method != new:
                raise _err(f"conflicting options: {opt.written!r} and an earlier {method!r}", command, opt.pos)
            method, method_pos = new, opt.pos
        elif opt.kind == "refuse":
            raise _err(
                f"option {opt.written!r} is not supported by hlmbridge (it changes the model or its "
                f"inference); supported: {_VALID_OPTIONS_TEXT}",
                command,
                opt.pos,
            )

    # Fixed-effects equation.
    fs, fe = equations[0]
    fparts = _split_top(text, fs, fe, ",")
    if len(fparts) > 2:
        raise _err("unexpected ',' (options are separated by spaces)", command, fparts[2][0] - 1)
    toks = _lex_varlist(text, fparts[0][0], fparts[0][1])
    if not toks:
        raise _err("mixed needs a dependent variable", command, fparts[0][0])
    dep = toks[0]
    if not _NAME_RE.fullmatch(dep.text):
        raise _err(f"the dependent variable must be a plain variable name, got {dep.text!r}", command, dep.pos)
    _check_varname(dep.text, command, dep.pos)
    if len(toks) > 1 and toks[1].text in ("#", "##"):
        raise _err("the dependent variable cannot be part of an interaction", command, toks[1].pos)
    terms, notes = _fixed_terms(toks[1:], command)
    if len(fparts) == 2:
        for opt in _parse_options(text, fparts[1][0], fparts[1][1]):
            if opt.name == "noconstant":
                constant = False
            elif opt.name == "covariance":
                raise _err(
                    "covariance() belongs to a random-effects equation ('|| id: ses, cov(unstr)')",
                    command,
                    opt.pos,
                )
            else:
                apply_global(opt)

    if len(equations) == 1:
        raise _err("no random-effects equation: add '|| group:' (e.g. '|| id:')", command, len(command.rstrip()))

    for rs, re_ in equations[1:]:
        parts = _split_top(text, rs, re_, ",")
        if len(parts) > 2:
            raise _err("unexpected ',' (options are separated by spaces)", command, parts[2][0] - 1)
        bs, be = parts[0]
        j = _skip_ws(text, bs, be)
        gm = _NAME_RE.match(text, j, be)
        if j >= be or text[j] == ":" or not gm:
            where = j if j < be else rs
            raise _err(
                "'||' needs a grouping variable: write '|| group: [slopes]' (e.g. '|| id: ses')",
                command,
                where,
            )
        group = gm.group(0)
        k = _skip_ws(text, gm.end(), be)
        if k >= be or text[k] != ":":
            raise _err(
                f"expected ':' after the grouping variable {group!r}: a random-effects equation is "
                f"'|| group: [slopes]' (did you mean '|| {group}:'?)",
                command,
                k,
            )
        if group != "_all":
            _check_varname(group, command, j)
        lvl = _Level(group, j)
        vtoks = _lex_varlist(text, k + 1, be)
        for t in vtoks:
            if t.text in ("#", "##"):
                raise _err("interactions are not supported as random slopes", command, t.pos)
        if group == "_all":
            if len(vtoks) != 1 or not vtoks[0].text.startswith("R."):
                raise _err(
                    "'_all:' is supported only in Stata's crossed-effects form '|| _all: R.a'",
                    command,
                    j,
                )
            name = vtoks[0].text[2:]
            if not _NAME_RE.fullmatch(name):
                raise _err(_bad_name_message(name), command, vtoks[0].pos + 2)
            _check_varname(name, command, vtoks[0].pos + 2)
            lvl = _Level(name, vtoks[0].pos + 2, crossed_factor=True)
        else:
            slopes = []
            for t in vtoks:
                am = _ATOM_RE.match(t.text)
                if not am or am.group("group") is not None:
                    raise _err(_bad_name_message(t.text), command, t.pos)
                op = am.group("op")
                if op == "R":
                    raise _err(
                        "'R.' notation is supported only as '|| _all: R.a' (crossed effects)", command, t.pos
                    )
                if op not in (None, "c"):
                    _interpret_op(op, t, command)  # raises for operators it does not know
                    raise _err(
                        f"factor variables as random slopes ({t.text!r}) are not supported; "
                        "random slopes must be continuous variables",
                        command,
                        t.pos,
                    )
                _check_varname(am.group("name"), command, t.pos)
                slopes.append(am.group("name"))
            if len(set(slopes)) != len(slopes):
                raise _err(f"a random slope repeats at level {group!r}", command, bs)
            lvl.slopes = tuple(slopes)
        if len(parts) == 2:
            for opt in _parse_options(text, parts[1][0], parts[1][1]):
                if opt.name == "noconstant":
                    if lvl.crossed_factor:
                        raise _err("noconstant is not allowed with R. notation", command, opt.pos)
                    lvl.intercept = False
                elif opt.name == "covariance":
                    cov = _covariance(opt, command)
                    if lvl.cov is not None and lvl.cov != cov:
                        raise _err(f"conflicting covariance options: {lvl.cov} and {cov}", command, opt.pos)
                    if lvl.crossed_factor and cov != "identity":
                        raise _err(
                            f"covariance({cov}) with R. notation (correlated levels of a factor) "
                            "is not supported; R. levels are identity",
                            command,
                            opt.pos,
                        )
                    lvl.cov = cov
                else:
                    apply_global(opt)
        if not lvl.slopes and not lvl.intercept:
            raise _err(f"level {lvl.group!r} has no random terms (noconstant and no slopes)", command, j)
        levels.append(lvl)

    # Crossed effects: leading ``_all: R.`` levels; the level after them is crossed too.
    n_all = 0
    while n_all < len(levels) and levels[n_all].crossed_factor:
        n_all += 1
    for lv in levels[n_all:]:
        if lv.crossed_factor:
            raise _err(
                "'_all: R.' levels are supported only before all other levels (crossed effects "
                "'|| _all: R.a || b:')",
                command,
                lv.pos,
            )
    spec_levels = []
    for idx, lv in enumerate(levels):
        nested = not (0 < idx <= n_all)
        spec_levels.append(
            RandomLevel(lv.group, slopes=lv.slopes, intercept=lv.intercept, cov=lv.cov, nested=nested)  # type: ignore[arg-type]
        )
    groups = [lv.group for lv in levels]
    for idx, g in enumerate(groups):
        if g in groups[:idx]:
            raise _err(f"the grouping variable {g!r} is listed twice", command, levels[idx].pos)
    spec = ModelSpec(
        response=dep.text,
        fixed=tuple(terms),
        levels=tuple(spec_levels),
        constant=constant,
        method=method or default_method,  # type: ignore[arg-type]
        _source=command,
        notes=tuple(notes),
        residuals=residuals,
    )
    return spec, method, df_method


def parse_stata(command: str) -> ModelSpec:
    """Parse a Stata ``mixed`` command.

    Parameters
    ----------
    command
        The command as typed or as a log shows it (``. qui mixed ...`` is fine).

    Returns
    -------
    ModelSpec
        Method ``"ml"`` unless the command says ``reml`` (Stata's default is ML).

    Raises
    ------
    SpecError
        With ``text`` and ``position`` pointing at the problem.

    Examples
    --------
    >>> spec = parse_stata("mixed mathach ses || id: ses, cov(unstr)")
    >>> spec.levels[0].slopes, spec.levels[0].cov
    (('ses',), 'unstructured')
    >>> parse_stata("mixed y x || school: || class:, reml").method
    'reml'
    """
    return _parse(command)[0]


def parse_stata_method(command: str) -> tuple[ModelSpec, str | None]:
    """Like :func:`parse_stata`, also returning the method the command states explicitly.

    Returns
    -------
    tuple
        ``(spec, method)`` where ``method`` is ``"reml"``, ``"ml"`` or ``None`` when the
        command has neither ``reml`` nor ``mle``.

    Examples
    --------
    >>> parse_stata_method("mixed y || id:")[1] is None
    True
    >>> parse_stata_method("mixed y || id:, mle")[1]
    'ml'
    """
    return _parse(command)[:2]


def parse_stata_df_method(command: str, *, reml: bool | None = None) -> str | None:
    """The df method a ``mixed`` command's ``dfmethod()`` asks for, or None.

    ``"residual"``, ``"kenward-roger"``, ``"satterthwaite (expected information)"`` (Stata's
    default ``eim``) or ``"satterthwaite"`` (``dfmethod(satterthwaite, oim)``). As in Stata,
    Satterthwaite and Kenward-Roger need REML (the command's ``reml``, or ``reml=True``);
    otherwise, and for an unknown or unsupported method, a :class:`SpecError`.

    Examples
    --------
    >>> parse_stata_df_method("mixed y x || id:, reml dfmethod(kroger)")
    'kenward-roger'
    >>> parse_stata_df_method("mixed y x || id:, reml dfm(sat, oim)")
    'satterthwaite'
    >>> parse_stata_df_method("mixed y x || id:") is None
    True
    """
    spec, _, df_method = _parse(command)
    is_reml = spec.reml if reml is None else reml
    if df_method not in (None, "residual") and not is_reml:
        stata_name = {"kenward-roger": "kroger"}.get(df_method, df_method.split(" (")[0])
        raise SpecError(f"dfmethod({stata_name}) needs REML, as in Stata: add the reml option "
                        f"({command.strip()!r})")
    return df_method
