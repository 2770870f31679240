"""Stata's residual-error structures (``mixed ..., residuals(ar 1, t(time))``).

A :class:`ResidualStructure` says how the level-1 errors of one innermost group are
correlated and how their variance may differ across the groups of a ``by()`` variable:

=============== ======================================= =====================================
kind            Stata                                   nlme (``lme``)
=============== ======================================= =====================================
independent     ``residuals(independent)`` (default)    (nothing)
independent+by  ``residuals(independent, by(sex))``     ``varIdent(form = ~ 1 | sex)``
ar              ``residuals(ar 2, t(time))``            ``corAR1`` (order 1), ``corARMA(p=)``
ma              ``residuals(ma 2, t(time))``            ``corARMA(q = 2)``
exponential     ``residuals(exponential, t(age))``      ``corCAR1(form = ~ age | id)``
exchangeable    ``residuals(exchangeable)``             ``corCompSymm``
unstructured    ``residuals(unstructured, t(time))``    ``corSymm`` + ``varIdent(~ 1 | time)``
banded/toeplitz ``residuals(toeplitz 1, t(time))``      refused: nlme has no such structure
=============== ======================================= =====================================

``by()`` goes only with ``independent``: Stata then gives every ``by()`` group its own
correlation parameters too, which nlme's correlation classes (one set of parameters for all
groups) cannot express. The formula keyword of :func:`hlmbridge.fit` reads the same
structures in a short R-like syntax (:func:`parse_residuals`).

Examples
--------
>>> r = parse_residuals("ar1(time | id)")
>>> r.kind, r.order, r.t, r.group
('ar', 1, 'time', 'id')
>>> r.stata()
'residuals(ar 1, t(time))'
>>> parse_residuals("independent(by = sex)").stata()
'residuals(independent, by(sex))'
>>> parse_stata_residuals("exp, t(age)")
ResidualStructure(kind='exponential', t='age', by=None, order=None, group=None)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from hlmbridge.errors import SpecError, UnsupportedSpecError

__all__ = ["RESIDUAL_KINDS", "ResidualKind", "ResidualStructure", "parse_residuals", "parse_stata_residuals"]

ResidualKind = Literal["independent", "ar", "ma", "exponential", "exchangeable", "unstructured", "banded",
                       "toeplitz"]
RESIDUAL_KINDS: tuple[str, ...] = get_args(ResidualKind)

#: Kinds that need ``t()`` (Stata requires it for all of these).
_NEEDS_T = frozenset({"ar", "ma", "exponential", "unstructured", "banded", "toeplitz"})
#: Kinds with an order (``ar 2``, ``ma 1``, ``banded 1``, ``toeplitz 2``); its default when omitted.
_ORDER_DEFAULT = {"ar": 1, "ma": 1, "banded": None, "toeplitz": None}

# Stata's names with their shortest abbreviation (help mixed: "rspec").
_STATA_KINDS: tuple[tuple[str, int], ...] = (
    ("independent", 3), ("exchangeable", 3), ("ar", 2), ("ma", 2), ("unstructured", 2),
    ("banded", 1), ("toeplitz", 2), ("exponential", 3),
)
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"


def _check_var(name: object, what: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise SpecError(f"{what} must be a variable name, got {name!r}")


@dataclass(frozen=True)
class ResidualStructure:
    """One residual-error structure (immutable).

    ``t`` is the time variable (``t()``), ``by`` the variable whose groups get their own
    residual variance (``by()``), ``order`` the order of ``ar``/``ma``/``banded``/``toeplitz``.
    ``group`` is the grouping variable the structure works within when the formula keyword
    names it (``ar1(t | id)``); None means the innermost level's groups, as Stata has it.

    >>> ResidualStructure("ar", t="time").order
    1
    >>> ResidualStructure("ar", by="sex")
    Traceback (most recent call last):
    ...
    hlmbridge.errors.SpecError: residuals(ar) needs a time variable: t(varname)
    """

    kind: ResidualKind
    t: str | None = None
    by: str | None = None
    order: int | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RESIDUAL_KINDS:
            raise SpecError(f"unknown residual structure {self.kind!r}; choose one of {', '.join(RESIDUAL_KINDS)}")
        for name, what in ((self.t, "t()"), (self.by, "by()"), (self.group, "the residual structure's group")):
            if name is not None:
                _check_var(name, what)
        if self.kind in _NEEDS_T and self.t is None:
            raise SpecError(f"residuals({self.kind}) needs a time variable: t(varname)")
        if self.kind in _ORDER_DEFAULT:
            order = self.order if self.order is not None else _ORDER_DEFAULT[self.kind]
            if order is not None and (isinstance(order, bool) or not isinstance(order, int) or order < 1):
                raise SpecError(f"the order of residuals({self.kind}) must be a positive integer, got {order!r}")
            object.__setattr__(self, "order", order)
        elif self.order is not None:
            raise SpecError(f"residuals({self.kind}) takes no order, got {self.order!r}")
        if self.t is not None and self.t == self.by:
            raise SpecError("t() and by() name the same variable")

    @property
    def is_independent(self) -> bool:
        """True for plain independent residuals with one variance (the model without a structure)."""
        return self.kind == "independent" and self.by is None

    @property
    def variables(self) -> tuple[str, ...]:
        """The data columns the structure uses (``t``, ``by``)."""
        return tuple(v for v in (self.t, self.by) if v is not None)

    def stata(self) -> str:
        """Stata's option (``residuals(ar 1, t(time))``)."""
        head = self.kind if self.order is None else f"{self.kind} {self.order}"
        opts = "".join(f", {k}({v})" for k, v in (("t", self.t), ("by", self.by)) if v is not None)
        return f"residuals({head}{opts})"

    def stata_title(self) -> tuple[str, ...]:
        """The title lines of the residual block in Stata's random-effects table.

        >>> ResidualStructure("ar", t="t").stata_title()
        ('Residual: AR(1)',)
        >>> ResidualStructure("independent", by="sex").stata_title()
        ('Residual: Independent,', '    by sex')
        """
        name = {"independent": "Independent", "exponential": "Exponential", "exchangeable": "Exchangeable",
                "unstructured": "Unstructured", "ar": f"AR({self.order})", "ma": f"MA({self.order})",
                "banded": f"Banded({self.order})", "toeplitz": f"Toeplitz({self.order})"}[self.kind]
        if self.by is None:
            return (f"Residual: {name}",)
        return (f"Residual: {name},", f"    by {self.by}")

    def nlme_refusal(self) -> str | None:
        """Why nlme's ``lme`` cannot fit this structure exactly (None when it can)."""
        if self.kind in ("banded", "toeplitz"):
            what = "banded (unstructured within a band, zero beyond it)" if self.kind == "banded" else \
                "Toeplitz (free correlations per lag up to the order, zero beyond it)"
            return (f"residuals({self.kind} {self.order or ''}) is a {what} structure that nlme has no "
                    "correlation class for, so no hlmbridge engine fits it")
        if self.by is not None and self.kind != "independent":
            return (f"residuals({self.kind}, by({self.by})) gives each {self.by} group its own correlation "
                    "parameters in Stata; nlme's correlation classes share one set across groups, so only "
                    "residuals(independent, by()) is fitted")
        return None

    def check_fittable(self, engine: str = "nlme") -> None:
        """Raise UnsupportedSpecError when nlme cannot express the structure."""
        why = self.nlme_refusal()
        if why is not None:
            raise UnsupportedSpecError(f"residuals({self.kind})", engine, message=why)


def _match_kind(word: str) -> str | None:
    word = word.lower()
    for full, minlen in _STATA_KINDS:
        if len(word) >= minlen and full.startswith(word):
            return full
    return None


def _split_commas(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_stata_residuals(arg: str) -> ResidualStructure:
    """The inside of Stata's ``residuals(...)`` option: ``rspec [, t(varname) by(varname)]``.

    >>> parse_stata_residuals("ar 1, t(time)").stata()
    'residuals(ar 1, t(time))'
    >>> parse_stata_residuals("ind, by(sex)").by
    'sex'
    >>> parse_stata_residuals("ar 1")
    Traceback (most recent call last):
    ...
    hlmbridge.errors.SpecError: residuals(ar) needs a time variable: t(varname)
    """
    if not isinstance(arg, str) or not arg.strip():
        raise SpecError("residuals() needs a structure, e.g. residuals(ar 1, t(time))")
    parts = _split_commas(arg)
    if len(parts) > 2:
        raise SpecError(f"residuals({arg}): options after the structure are separated by spaces, not commas")
    m = re.fullmatch(r"([A-Za-z]+)\s*([0-9]+)?", parts[0])
    if not m:
        raise SpecError(f"residuals({arg}): expected a structure such as 'ar 1', 'exponential' or 'independent'")
    kind = _match_kind(m.group(1))
    if kind is None:
        raise SpecError(f"residuals({arg}): unknown structure {m.group(1)!r}; Stata's are independent, "
                        "exchangeable, ar #, ma #, unstructured, banded #, toeplitz #, exponential")
    order = int(m.group(2)) if m.group(2) is not None else None
    if order is not None and kind not in _ORDER_DEFAULT:
        raise SpecError(f"residuals({arg}): {kind} takes no order")
    opts: dict[str, str] = {}
    if len(parts) == 2:
        rest = parts[1]
        for om in re.finditer(r"\s*([A-Za-z]+)\s*\(\s*([^()]*?)\s*\)\s*|(\S+)", rest):
            if om.group(3) is not None:
                raise SpecError(f"residuals({arg}): unexpected {om.group(3)!r}; the options are t(varname) and "
                                "by(varname)")
            name = om.group(1).lower()
            if name not in ("t", "by"):
                raise SpecError(f"residuals({arg}): unknown option {om.group(1)}(); the options are t(varname) "
                                "and by(varname)")
            if name in opts:
                raise SpecError(f"residuals({arg}): {name}() is given twice")
            opts[name] = om.group(2)
    return ResidualStructure(kind, t=opts.get("t"), by=opts.get("by"), order=order)  # type: ignore[arg-type]


_FORMULA_KINDS = {"independent": "independent", "ar": "ar", "ma": "ma", "exponential": "exponential",
                  "car1": "exponential", "exchangeable": "exchangeable", "compsymm": "exchangeable",
                  "unstructured": "unstructured", "banded": "banded", "toeplitz": "toeplitz"}


def parse_residuals(text: str) -> ResidualStructure:
    """The ``residuals=`` keyword of :func:`hlmbridge.fit` for an lme4 formula.

    ``kind[order](t | group, by = var)``: ``ar1(time | id)``, ``ar2(time | id)``,
    ``ma1(time | id)``, ``exponential(age | id)`` (``car1`` too), ``exchangeable(1 | id)``,
    ``unstructured(time | id)``, ``independent(by = sex)``. ``| group`` may be left out
    (the innermost grouping factor); ``1`` stands for "no time variable".

    >>> parse_residuals("exponential(age | Subject)").stata()
    'residuals(exponential, t(age))'
    >>> parse_residuals("exchangeable").kind
    'exchangeable'
    >>> parse_residuals("ar1(1 | id)")
    Traceback (most recent call last):
    ...
    hlmbridge.errors.SpecError: residuals(ar) needs a time variable: t(varname)
    """
    if isinstance(text, ResidualStructure):
        return text
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"residuals= must be a structure such as 'ar1(time | id)', got {text!r}")
    m = re.fullmatch(r"\s*(car1|[A-Za-z]+?)([0-9]+)?\s*(?:\((.*)\))?\s*", text, flags=re.S)
    if not m or m.group(1).lower() not in _FORMULA_KINDS:
        raise SpecError(f"residuals={text!r} is not understood; write e.g. 'ar1(time | id)', 'ma2(time | id)', "
                        "'exponential(age | id)', 'exchangeable(1 | id)', 'unstructured(time | id)' or "
                        "'independent(by = sex)'")
    word = m.group(1).lower()
    kind = _FORMULA_KINDS[word]
    order = int(m.group(2)) if m.group(2) is not None else None
    if order is not None and kind not in _ORDER_DEFAULT:
        raise SpecError(f"residuals={text!r}: {kind} takes no order")
    t = group = by = None
    if m.group(3) is not None:
        parts = _split_commas(m.group(3))
        head = parts[0]
        for extra in parts[1:]:
            bm = re.fullmatch(r"by\s*=\s*(" + _NAME + r")", extra)
            if not bm or by is not None:
                raise SpecError(f"residuals={text!r}: unexpected {extra!r} (the only option is by = variable)")
            by = bm.group(1)
        bm = re.fullmatch(r"by\s*=\s*(" + _NAME + r")", head)
        if bm:
            if by is not None:
                raise SpecError(f"residuals={text!r}: by = is given twice")
            by, head = bm.group(1), ""
        if head:
            fm = re.fullmatch(r"(?:(" + _NAME + r"|1)\s*)?(?:\|\s*(" + _NAME + r"))?", head)
            if not fm or (fm.group(1) is None and fm.group(2) is None):
                raise SpecError(f"residuals={text!r}: expected 'time | group' inside the parentheses, got {head!r}")
            t = None if fm.group(1) in (None, "1") else fm.group(1)
            group = fm.group(2)
    return ResidualStructure(kind, t=t, by=by, order=order, group=group)  # type: ignore[arg-type]
