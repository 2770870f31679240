"""Table of model-syntax cases shared by the spec tests (no R, no data needed).

The seed commands are copied verbatim from the course handout
``seeds/000_b67aa17e87dadab7.txt`` (line numbers given); the typo on line 592 is kept
as printed there. Everything else is a construct case written for these tests. A Stata
command has Stata's meaning; an lme4 formula has R's (``terms()``, ``lme4::findbars``), and
every lme4 expectation below was produced by R, not by reading the formula by hand.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from hlmbridge.design.build import Design, build_design
from hlmbridge.errors import HlmbridgeError, UnsupportedSpecError
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var
from hlmbridge.spec.parse_lme4 import parse_lme4
from hlmbridge.spec.render import to_lme4
from hlmbridge.spec.translate import parse_any

SEED_FILE = "000_b67aa17e87dadab7.txt"

#: (seed line, command exactly as the seed prints it)
SEED_COMMANDS: tuple[tuple[int, str], ...] = (
    (174, ". mixed mathach || id:"),
    (373, ". mixed mathach ses || id:"),
    (454, ". qui mixed mathach || id:"),
    (458, ". qui mixed mathach ses || id:"),
    (510, ". mixed mathach ses || id: ses, cov(unstructured)"),
    (611, ". qui mixed mathach ses || id:"),
    (646, ". mixed mathach sector || id:"),
    (702, " . mixed mathach ses sector || id: ses, cov(unstr)"),
    (759, ". qui mixed mathach ses sector || id: ses, cov(unstr)"),
    (779, ". qui mixed mathach ses sector || id:"),
    (815, ". mixed mathach c.ses##i.sector || id: ses, cov(unstr)"),
    (879, ". mixed mathach c.ses##ib1.sector || id: ses, cov(unstr)"),
    (950, ". qui mixed mathach c.ses##i.sector || id: ses, cov(unstr)"),
    (970, ". qui mixed mathach c.ses##i.sector || id:"),
    (1004, " . mixed mathach c.ses##i.sector || id:"),
)

#: The seed's typo (line 592): a ``qui`` prefix with no ``mixed``.
SEED_TYPO: tuple[int, str] = (592, ". qui mathach ses || id: ses, cov(unstructured)")


def _v(name: str, factor: bool = False, base: int | None = None) -> Var:
    return Var(name, factor=factor, base=base)


def _t(*vars_: Var | str) -> Term:
    return Term(tuple(_v(v) if isinstance(v, str) else v for v in vars_))


_ID = RandomLevel("id")
_ID_SES_UN = RandomLevel("id", slopes=("ses",), cov="unstructured")
_SECTOR = _v("sector", factor=True)
_SECTOR1 = _v("sector", factor=True, base=1)

#: The spec each seed command must parse to.
SEED_SPECS: dict[int, ModelSpec] = {
    174: ModelSpec("mathach", (), (_ID,)),
    373: ModelSpec("mathach", (_t("ses"),), (_ID,)),
    454: ModelSpec("mathach", (), (_ID,)),
    458: ModelSpec("mathach", (_t("ses"),), (_ID,)),
    510: ModelSpec("mathach", (_t("ses"),), (_ID_SES_UN,)),
    611: ModelSpec("mathach", (_t("ses"),), (_ID,)),
    646: ModelSpec("mathach", (_t("sector"),), (_ID,)),
    702: ModelSpec("mathach", (_t("ses"), _t("sector")), (_ID_SES_UN,)),
    759: ModelSpec("mathach", (_t("ses"), _t("sector")), (_ID_SES_UN,)),
    779: ModelSpec("mathach", (_t("ses"), _t("sector")), (_ID,)),
    815: ModelSpec("mathach", (_t("ses"), _t(_SECTOR), _t("ses", _SECTOR)), (_ID_SES_UN,)),
    879: ModelSpec("mathach", (_t("ses"), _t(_SECTOR1), _t("ses", _SECTOR1)), (_ID_SES_UN,)),
    950: ModelSpec("mathach", (_t("ses"), _t(_SECTOR), _t("ses", _SECTOR)), (_ID_SES_UN,)),
    970: ModelSpec("mathach", (_t("ses"), _t(_SECTOR), _t("ses", _SECTOR)), (_ID,)),
    1004: ModelSpec("mathach", (_t("ses"), _t(_SECTOR), _t("ses", _SECTOR)), (_ID,)),
}

#: Stata construct cases: command -> expected spec.
STATA_CASES: dict[str, ModelSpec] = {
    "quietly mixed y x || g:": ModelSpec("y", (_t("x"),), (RandomLevel("g"),)),
    "quietly: mixed y x || g:": ModelSpec("y", (_t("x"),), (RandomLevel("g"),)),
    "mixed y i.a || g:": ModelSpec("y", (_t(_v("a", True)),), (RandomLevel("g"),)),
    "mixed y c.x || g:": ModelSpec("y", (_t("x"),), (RandomLevel("g"),)),
    "mixed y ib3.a || g:": ModelSpec("y", (_t(_v("a", True, 3)),), (RandomLevel("g"),)),
    "mixed y ib(first).a || g:": ModelSpec("y", (_t(_v("a", True)),), (RandomLevel("g"),)),
    "mixed y i.(a b) x || g:": ModelSpec(
        "y", (_t(_v("a", True)), _t(_v("b", True)), _t("x")), (RandomLevel("g"),)
    ),
    # inside an interaction a variable without prefix is a factor (Stata's rule)
    "mixed y a#b || g:": ModelSpec("y", (_t(_v("a", True), _v("b", True)),), (RandomLevel("g"),)),
    "mixed y c.x#c.z || g:": ModelSpec("y", (_t("x", "z"),), (RandomLevel("g"),)),
    "mixed y c.x # i.a || g:": ModelSpec("y", (_t("x", _v("a", True)),), (RandomLevel("g"),)),
    "mixed y c.a##c.b##c.c || g:": ModelSpec(
        "y",
        (_t("a"), _t("b"), _t("c"), _t("a", "b"), _t("a", "c"), _t("b", "c"), _t("a", "b", "c")),
        (RandomLevel("g"),),
    ),
    "mixed y x, noconstant || g:": ModelSpec("y", (_t("x"),), (RandomLevel("g"),), constant=False),
    "mixed y x, nocons || g:": ModelSpec("y", (_t("x"),), (RandomLevel("g"),), constant=False),
    "mixed y x, nocon || g:": ModelSpec("y", (_t("x"),), (RandomLevel("g"),), constant=False),
    "mixed y x || g: x, noconstant": ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), intercept=False),)),
    "mixed y x || g: x z, nocons cov(un)": ModelSpec(
        "y", (_t("x"),), (RandomLevel("g", ("x", "z"), intercept=False, cov="unstructured"),)
    ),
    "mixed y x || g:, reml": ModelSpec("y", (_t("x"),), (RandomLevel("g"),), method="reml"),
    "mixed y x, reml || g:": ModelSpec("y", (_t("x"),), (RandomLevel("g"),), method="reml"),
    "mixed y x || g:, mle": ModelSpec("y", (_t("x"),), (RandomLevel("g"),)),
    "mixed y x || g:, ml": ModelSpec("y", (_t("x"),), (RandomLevel("g"),)),
    "mixed y x || g:, variance nolog": ModelSpec("y", (_t("x"),), (RandomLevel("g"),)),
    "mixed y x || g: x, covariance(un)": ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="unstructured"),)),
    "mixed y x || g: x, cov(unstr)": ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="unstructured"),)),
    "mixed y x || g: x, covar(unstructured)": ModelSpec(
        "y", (_t("x"),), (RandomLevel("g", ("x",), cov="unstructured"),)
    ),
    "mixed y x || g: x, cov(ind)": ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="independent"),)),
    "mixed y x || g: x, cov(independent)": ModelSpec(
        "y", (_t("x"),), (RandomLevel("g", ("x",), cov="independent"),)
    ),
    "mixed y x || g: x": ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="independent"),)),
    "mixed y x || g: x z, cov(exch)": ModelSpec(
        "y", (_t("x"),), (RandomLevel("g", ("x", "z"), cov="exchangeable"),)
    ),
    "mixed y x || g: x, cov(exchangeable)": ModelSpec(
        "y", (_t("x"),), (RandomLevel("g", ("x",), cov="exchangeable"),)
    ),
    "mixed y x || g: x, cov(id)": ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="identity"),)),
    "mixed y x || g: x, cov(identity)": ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="identity"),)),
    "mixed y x || school: || class:": ModelSpec("y", (_t("x"),), (RandomLevel("school"), RandomLevel("class"))),
    "mixed y x || school: x, cov(un) || class: || pupil:, reml": ModelSpec(
        "y",
        (_t("x"),),
        (RandomLevel("school", ("x",), cov="unstructured"), RandomLevel("class"), RandomLevel("pupil")),
        method="reml",
    ),
    "mixed y x || _all: R.a || b:": ModelSpec(
        "y", (_t("x"),), (RandomLevel("a"), RandomLevel("b", nested=False))
    ),
    "mixed y x || _all: R.a || _all: R.b || c: x": ModelSpec(
        "y", (_t("x"),), (RandomLevel("a"), RandomLevel("b", nested=False), RandomLevel("c", ("x",), nested=False))
    ),
    "mixed y x || _all: R.a || b: || c:": ModelSpec(
        "y", (_t("x"),), (RandomLevel("a"), RandomLevel("b", nested=False), RandomLevel("c"))
    ),
    "mixed y x ///\n  z || g:": ModelSpec("y", (_t("x"), _t("z")), (RandomLevel("g"),)),
    # Stata's quadratic idiom: c.x#c.x is x squared; c.x##c.x is x and x squared (x once)
    "mixed y c.x#c.x || g:": ModelSpec("y", (_t("x", "x"),), (RandomLevel("g"),)),
    "mixed y c.x##c.x || g:": ModelSpec("y", (_t("x"), _t("x", "x")), (RandomLevel("g"),)),
    "mixed y i.a#i.b#c.x || g:": ModelSpec(
        "y", (_t(_v("a", factor=True), _v("b", factor=True), "x"),), (RandomLevel("g"),)),
}

class Bar(NamedTuple):
    """One random-effects term as lme4 reads it: the grouping factor's name and the left side."""

    label: str  # lme4:::barnames(bars): deparse1(bar[[3]]), the names of lFormula(...)$reTrms$cnms
    labels: tuple[str, ...]  # attr(terms(~ <left side>), "term.labels")
    intercept: bool  # attr(terms(~ <left side>), "intercept") == 1


class Reading(NamedTuple):
    """What R and lme4 make of an lme4 formula ``f`` (each field names the R call that gives it)."""

    response: str  # deparse1(f[[2]])
    labels: tuple[str, ...]  # attr(terms(lme4::nobars(f)), "term.labels")
    intercept: bool  # attr(terms(lme4::nobars(f)), "intercept") == 1
    offsets: tuple[str, ...]  # the variables attr(terms(lme4::nobars(f)), "offset") points at
    bars: tuple[Bar, ...]  # lme4::findbars(lme4::expandDoubleVerts(<right side>)), in that order
    columns: tuple[str, ...]  # all.vars(f): the data columns (compared as a set)


R, B = Reading, Bar

#: lme4 formulas -> R's reading. Every expectation was produced by R 4.2.2 with lme4 1.1.31
#: (``R_READING_SCRIPT`` in tests/test_spec_parse.py, which ``test_lme4_readings_are_r_s``
#: reruns against R), never written by hand. Constructs R accepts are here, including those
#: the old Stata-like reading refused (transforms, ``a/b``, ``^``, ``-x``, ``(1|a:b)`` alone,
#: factors and interactions as random slopes, several terms per grouping factor).
LME4_READINGS: dict[str, Reading] = {
    "y ~ x + (1|g)": R("y", ("x",), True, (), (B("g", (), True),), ("y", "x", "g")),
    # '|' binds looser than '+': lme4's findbars/nobars read a bare bar as the whole right-hand
    # side, with a fixed intercept (issue 26; lmer(Yield ~ 1|Batch, Dyestuff)).
    "y ~ 1|g": R("y", (), True, (), (B("g", (), True),), ("y", "g")),
    "y ~ x + 1|g": R("y", (), True, (), (B("g", ("x",), True),), ("y", "x", "g")),
    "y ~ 0 + x|g": R("y", (), True, (), (B("g", ("x",), False),), ("y", "x", "g")),
    "y ~ x||g": R("y", (), True, (), (B("g", (), True), B("g", ("x",), False)), ("y", "x", "g")),
    "y ~ x + (x|g)": R("y", ("x",), True, (), (B("g", ("x",), True),), ("y", "x", "g")),
    "y ~ x + (1 + x|g)": R("y", ("x",), True, (), (B("g", ("x",), True),), ("y", "x", "g")),
    "y ~ x + (0 + x|g)": R("y", ("x",), True, (), (B("g", ("x",), False),), ("y", "x", "g")),
    "y ~ x + (-1 + x|g)": R("y", ("x",), True, (), (B("g", ("x",), False),), ("y", "x", "g")),
    "y ~ x + (x - 1|g)": R("y", ("x",), True, (), (B("g", ("x",), False),), ("y", "x", "g")),
    "y ~ x + (x||g)": R("y", ("x",), True, (), (B("g", (), True), B("g", ("x",), False)), ("y", "x", "g")),
    "y ~ x + (0 + x + z||g)": R(
        "y", ("x",), True, (),
        (B("g", ("x",), False), B("g", ("z",), False)),
        ("y", "x", "z", "g"),
    ),
    "y ~ x + (1|g) + (0 + x|g)": R("y", ("x",), True, (), (B("g", (), True), B("g", ("x",), False)), ("y", "x", "g")),
    "y ~ x + (1|a/b)": R("y", ("x",), True, (), (B("b:a", (), True), B("a", (), True)), ("y", "x", "a", "b")),
    "y ~ x + (1|a) + (1|a:b)": R("y", ("x",), True, (), (B("a", (), True), B("a:b", (), True)), ("y", "x", "a", "b")),
    "y ~ x + (1|a/b/c)": R(
        "y", ("x",), True, (),
        (B("c:(b:a)", (), True), B("b:a", (), True), B("a", (), True)),
        ("y", "x", "a", "b", "c"),
    ),
    "y ~ x + (1|a) + (1|b)": R("y", ("x",), True, (), (B("a", (), True), B("b", (), True)), ("y", "x", "a", "b")),
    "y ~ x*z + (1|g)": R("y", ("x", "z", "x:z"), True, (), (B("g", (), True),), ("y", "x", "z", "g")),
    "y ~ x:z + (1|g)": R("y", ("x:z",), True, (), (B("g", (), True),), ("y", "x", "z", "g")),
    "y ~ factor(z) + (1|g)": R("y", ("factor(z)",), True, (), (B("g", (), True),), ("y", "z", "g")),
    "y ~ x*factor(s) + (x|g)": R(
        "y", ("x", "factor(s)", "x:factor(s)"), True, (),
        (B("g", ("x",), True),),
        ("y", "x", "s", "g"),
    ),
    'y ~ relevel(factor(s), ref = "2") + (1|g)': R(
        "y", ('relevel(factor(s), ref = "2")',), True, (),
        (B("g", (), True),),
        ("y", "s", "g"),
    ),
    "y ~ 0 + x + (1|g)": R("y", ("x",), False, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ x - 1 + (1|g)": R("y", ("x",), False, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ -1 + x + (1|g)": R("y", ("x",), False, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ 1 + (1|g)": R("y", (), True, (), (B("g", (), True),), ("y", "g")),
    "y ~ a*b*c + (1|g)": R(
        "y", ("a", "b", "c", "a:b", "a:c", "b:c", "a:b:c"), True, (),
        (B("g", (), True),),
        ("y", "a", "b", "c", "g"),
    ),
    "yy ~ `if` + (1 | grp)": R("yy", ("`if`",), True, (), (B("grp", (), True),), ("yy", "if", "grp")),
    "y ~ a*b + a*c + (1 | g)": R(
        "y", ("a", "b", "c", "a:b", "a:c"), True, (),
        (B("g", (), True),),
        ("y", "a", "b", "c", "g"),
    ),
    "y ~ (1|a:b)": R("y", (), True, (), (B("a:b", (), True),), ("y", "a", "b")),
    "y ~ I(x^2) + (1|g)": R("y", ("I(x^2)",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ poly(x, 2) + (1|g)": R("y", ("poly(x, 2)",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ offset(z) + (1|g)": R("y", (), True, ("offset(z)",), (B("g", (), True),), ("y", "z", "g")),
    "y ~ log(x) + (1|g)": R("y", ("log(x)",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "log(y) ~ x + (1|g)": R("log(y)", ("x",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ x + (1 + x|g) + (0 + z|g)": R(
        "y", ("x",), True, (),
        (B("g", ("x",), True), B("g", ("z",), False)),
        ("y", "x", "g", "z"),
    ),
    "y ~ x + (factor(z)|g)": R("y", ("x",), True, (), (B("g", ("factor(z)",), True),), ("y", "x", "z", "g")),
    "y ~ x + (x:z|g)": R("y", ("x",), True, (), (B("g", ("x:z",), True),), ("y", "x", "z", "g")),
    "y ~ x - z + (1|g)": R("y", ("x",), True, (), (B("g", (), True),), ("y", "x", "z", "g")),
    "y ~ a/b + (1|g)": R("y", ("a", "a:b"), True, (), (B("g", (), True),), ("y", "a", "b", "g")),
    "y ~ (a + b)^2 + (1|g)": R("y", ("a", "b", "a:b"), True, (), (B("g", (), True),), ("y", "a", "b", "g")),
    "y ~ x + (1|g) + (1|g)": R("y", ("x",), True, (), (B("g", (), True), B("g", (), True)), ("y", "x", "g")),
    "y ~ x + factor(x):z + (1|g)": R("y", ("x", "factor(x):z"), True, (), (B("g", (), True),), ("y", "x", "z", "g")),
    "y ~ x + (1|a) + (1|b/a)": R(
        "y", ("x",), True, (),
        (B("a", (), True), B("a:b", (), True), B("b", (), True)),
        ("y", "x", "a", "b"),
    ),
    "y ~ x + (1|g) + (1|a) + (1|g:b)": R(
        "y", ("x",), True, (),
        (B("g", (), True), B("a", (), True), B("g:b", (), True)),
        ("y", "x", "g", "a", "b"),
    ),
    "y ~ a*b - a + (1|g)": R("y", ("b", "a:b"), True, (), (B("g", (), True),), ("y", "a", "b", "g")),
    "y ~ (a + b + c)^2 - a:b + (1|g)": R(
        "y", ("a", "b", "c", "a:c", "b:c"), True, (),
        (B("g", (), True),),
        ("y", "a", "b", "c", "g"),
    ),
    "y ~ a %in% b + (1|g)": R("y", ("a:b",), True, (), (B("g", (), True),), ("y", "a", "b", "g")),
    "y ~ b + a:b + (1|g)": R("y", ("b", "b:a"), True, (), (B("g", (), True),), ("y", "b", "a", "g")),
    "y ~ b:a + a + (1|g)": R("y", ("a", "b:a"), True, (), (B("g", (), True),), ("y", "b", "a", "g")),
    "y ~ x + scale(z) + (1|g)": R("y", ("x", "scale(z)"), True, (), (B("g", (), True),), ("y", "x", "z", "g")),
    "y ~ log(x, 2) + sqrt(z) + exp(w) + (1|g)": R(
        "y", ("log(x, 2)", "sqrt(z)", "exp(w)"), True, (),
        (B("g", (), True),),
        ("y", "x", "z", "w", "g"),
    ),
    "y ~ I(x/10) + I(z^2) + I(-w) + I(x + yy) + (1|g)": R(
        "y", ("I(x/10)", "I(z^2)", "I(-w)", "I(x + yy)"), True, (),
        (B("g", (), True),),
        ("y", "x", "z", "w", "yy", "g"),
    ),
    "y ~ I(x * 1e5) + I(z * 0.5) + (1|g)": R(
        "y", ("I(x * 1e+05)", "I(z * 0.5)"), True, (),
        (B("g", (), True),),
        ("y", "x", "z", "g"),
    ),
    "y ~ poly(x, 2, raw = TRUE) + (1|g)": R(
        "y", ("poly(x, 2, raw = TRUE)",), True, (),
        (B("g", (), True),),
        ("y", "x", "g"),
    ),
    "y ~ relevel(factor(s), ref = 2) + (1|g)": R(
        "y", ("relevel(factor(s), ref = 2)",), True, (),
        (B("g", (), True),),
        ("y", "s", "g"),
    ),
    "y ~ offset(log(n)) + x + (1|g)": R(
        "y", ("x",), True, ("offset(log(n))",),
        (B("g", (), True),),
        ("y", "n", "x", "g"),
    ),
    "y ~ x + offset(z) + offset(w) + (1|g)": R(
        "y", ("x",), True, ("offset(z)", "offset(w)"),
        (B("g", (), True),),
        ("y", "x", "z", "w", "g"),
    ),
    "y ~ x + (x + z || g)": R(
        "y", ("x",), True, (),
        (B("g", (), True), B("g", ("x",), False), B("g", ("z",), False)),
        ("y", "x", "z", "g"),
    ),
    "y ~ x + (x * z || g)": R(
        "y", ("x",), True, (),
        (B("g", (), True), B("g", ("x",), False), B("g", ("z",), False), B("g", ("x:z",), False)),
        ("y", "x", "z", "g"),
    ),
    "y ~ x + (1 | a:b:c)": R("y", ("x",), True, (), (B("a:b:c", (), True),), ("y", "x", "a", "b", "c")),
    "y ~ x + ((1|g))": R("y", ("x",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ 1 + x + (1 + x | g/h)": R(
        "y", ("x",), True, (),
        (B("h:g", ("x",), True), B("g", ("x",), True)),
        ("y", "x", "g", "h"),
    ),
    "y ~ x + (x * z | g)": R("y", ("x",), True, (), (B("g", ("x", "z", "x:z"), True),), ("y", "x", "z", "g")),
    "y ~ x + (0 + factor(s) | g)": R("y", ("x",), True, (), (B("g", ("factor(s)",), False),), ("y", "x", "s", "g")),
    "y ~ x + (1|g) - 1": R("y", ("x",), False, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ x + (1|g) + 0": R("y", ("x",), False, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ x*x + (1|g)": R("y", ("x",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ x + (1|g) + x": R("y", ("x",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ as.factor(s) + ordered(t) + as.ordered(c) + (1|g)": R(
        "y", ("as.factor(s)", "ordered(t)", "as.ordered(c)"), True, (),
        (B("g", (), True),),
        ("y", "s", "t", "c", "g"),
    ),
    "y ~ `my var` + (1|g)": R("y", ("`my var`",), True, (), (B("g", (), True),), ("y", "my var", "g")),
    "y ~ a/(b + c) + (1|g)": R("y", ("a", "a:b", "a:c"), True, (), (B("g", (), True),), ("y", "a", "b", "c", "g")),
    "y ~ log1p(x) + log2(z) + log10(w) + abs(yy) + (1|g)": R(
        "y", ("log1p(x)", "log2(z)", "log10(w)", "abs(yy)"), True, (),
        (B("g", (), True),),
        ("y", "x", "z", "w", "yy", "g"),
    ),
    "sqrt(y) ~ x + (1|g)": R("sqrt(y)", ("x",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "I(y/10) ~ x + (1|g)": R("I(y/10)", ("x",), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ 0 + (1|g)": R("y", (), False, (), (B("g", (), True),), ("y", "g")),
    "y ~ -x + (1|g)": R("y", (), True, (), (B("g", (), True),), ("y", "x", "g")),
    "y ~ 1 + x + (1 | a/b) + (1 | c)": R(
        "y", ("x",), True, (),
        (B("b:a", (), True), B("a", (), True), B("c", (), True)),
        ("y", "x", "a", "b", "c"),
    ),
    "y ~ (x + z + w)^3 - x:z:w + (1|g)": R(
        "y", ("x", "z", "w", "x:z", "x:w", "z:w"), True, (),
        (B("g", (), True),),
        ("y", "x", "z", "w", "g"),
    ),
    "y ~ x %in% a + (1|g)": R("y", ("x:a",), True, (), (B("g", (), True),), ("y", "x", "a", "g")),
    "y ~ scale(x, scale = FALSE) + (1|g)": R(
        "y", ("scale(x, scale = FALSE)",), True, (),
        (B("g", (), True),),
        ("y", "x", "g"),
    ),
    "y ~ factor(s):x - 1 + (1|g)": R("y", ("factor(s):x",), False, (), (B("g", (), True),), ("y", "s", "x", "g")),
    "y ~ x + ((1|g) + (1|h))": R("y", ("x",), True, (), (B("g", (), True), B("h", (), True)), ("y", "x", "g", "h")),
    "y ~ n + factor(n):z + (1|g)": R("y", ("n", "factor(n):z"), True, (), (B("g", (), True),), ("y", "n", "z", "g")),
}

#: Bad Stata commands: (command, text the message must contain, where the error points:
#: the first occurrence of this substring or this offset; None: anywhere).
BAD_STATA: tuple[tuple[str, str, str | int | None], ...] = (
    ("", "empty", ""),
    ("   ", "empty", ""),
    ("mixed y (x || g:", "unbalanced parenthesis", "(x"),
    ("mixed y x) || g:", "unbalanced parenthesis", ")"),
    ("mixed y x || g: x, cov(unstr", "unbalanced parenthesis", "(unstr"),
    ("mixed y x || g: x, cov(diagonal)", "unknown covariance structure 'diagonal'", "diagonal"),
    ("mixed y x || g: x, cov(u)", "unknown covariance structure 'u'", "u)"),
    ("mixed y x || : x", "needs a grouping variable", ": x"),
    ("mixed y x || x", "expected ':'", None),
    ("mixed y x ||", "needs a grouping variable", None),
    (". qui mathach ses || id: ses, cov(unstructured)", "this is not a mixed command: 'mathach'", "mathach"),
    ("regress y x", "this is not a mixed command: 'regress'", "regress"),
    ("xtreg y x, re", "hlmbridge fits only 'xtreg ..., mle'", 11),
    ("xtreg y x, i(g)", "xtreg without 'mle'", 5),
    ("mixed y x || g: ///", "nothing follows it", 16),
    ("mixed y x /// || g:", "nothing follows it", 10),
    ("mixed y x || g:, robust", "unknown option 'robust'", "robust"),
    ("mixed y x || g:, vce(robust)", "not supported", "vce"),
    ("mixed y x || g:, re", "unknown option 're'", "re"),
    ("mixed y x, cov(un) || g:", "covariance() belongs to a random-effects equation", "cov"),
    ("mixed y x || g:, reml mle", "conflicting options", "mle"),
    ("mixed y x || g: x, cov(un) cov(ind)", "conflicting covariance", "cov(ind)"),
    ("mixed y x", "no random-effects equation", None),
    ("mixed || g:", "dependent variable", None),
    ("mixed y ib(first).a#ibn.b || g:", "no base level", "ibn"),
    ("mixed y ib(#0).a || g:", "unknown base specification", "ib("),
    ("mixed y ibn.a || g:", "ibn.", "ibn"),
    ("mixed y L.x || g:", "time-series operator", "L.x"),
    ("mixed y x* || g:", "wildcards", "x*"),
    ("mixed y x1-x3 || g:", "wildcards", "x1"),
    ("mixed y x if x > 0 || g:", "qualifiers are not supported", "if"),
    ("mixed y x [fw=w] || g:", "weights", "["),
    ("mixed y x || g: i.a", "factor variables as random slopes", "i.a"),
    ("mixed y x || g: c.x#c.z", "interactions are not supported as random slopes", "#"),
    ("mixed y x || g: || g:", "listed twice", 19),
    ("mixed y x || g:, noconstant", "no random terms", "g:"),
    ("mixed y x || _all: x", "_all:", "_all"),
    ("mixed y x || g: || _all: R.a", "only before all other levels", 27),
    ("mixed y x || _all: R.a, cov(un) || b:", "not supported", "cov"),
    ("mixed y R.a || g:", "'R.' notation", "R.a"),
    ("mixed y x | g:", "unexpected '|'", "|"),
    # (``mixed y x x`` is valid: Stata omits the repeat; see test_stata_repeated_term_is_omitted)
    ("mixed y x i.x || g:", "listed twice with different coding", None),
    ("mixed y i.x#i.x || g:", "a factor variable repeats", "i.x"),
    ("mixed y c.x#i.x || g:", "a factor variable repeats", "c.x"),
    ("mixed y ## x || g:", "dependent variable cannot be part of an interaction", "##"),
    ("mixed y x ## || g:", "needs a variable on each side", "##"),
    ("mixed y x, reml, mle || g:", "unexpected ','", ", mle"),
)

#: lme4 formulas R or lme4 reject, or that hlmbridge refuses on purpose, in the same form as
#: BAD_STATA. What R does with each is in the comment (``lme4::lFormula(f, data)``).
BAD_LME4: tuple[tuple[str, str, str | int | None], ...] = (
    ("", "empty", ""),  # R: not a formula
    ("y x + (1|g)", "needs '~'", ""),  # R: unexpected symbol
    ("y ~ x + (1|g", "unbalanced parenthesis", "("),  # R: unexpected end of input
    ("y ~ x) + (1|g)", "unbalanced parenthesis", ")"),  # R: unexpected ')'
    ("y ~ x + $ + (1|g)", "unexpected character '$'", "$"),  # R: unexpected '$'
    ("y ~ x ~ z + (1|g)", "only one '~'", "~ z"),  # lme4: object is not a matrix
    ("y ~ x", "no random-effects term", None),  # lme4: No random effects terms specified in formula
    ("y ~ foo(x) + (1|g)", "unknown function foo()", "foo"),  # R: could not find function "foo"
    ("y ~ x + (foo(x)|g)", "unknown function foo()", "foo"),  # R: could not find function "foo"
    ("foo(y) ~ x + (1|g)", "unknown function foo()", "foo"),  # R: could not find function "foo"
    ("y ~ I(foo(x)) + (1|g)", "unknown function foo()", "foo"),  # R: could not find function "foo"
    ("y ~ x + (1|log(g))", "grouping factor must be a variable", "log"),  # lme4: couldn't evaluate grouping factor
    # (``y ~ x + 1|g`` is valid: lme4 reads it as y ~ 1 + (x + 1 | g); see LME4_READINGS.)
    # A bar inside the bare bar: lme4 fails in model.matrix ("model frame and formula mismatch").
    ("y ~ x + (1|g) + 1|h", "a random-effects term inside another one", "|g)"),
    # lme4 reads x*(1|g) as x + (1|g) (nobars drops the bar from the product); refused likewise.
    ("y ~ x*(1|g)", "random-effects term must stand on its own", "*"),
    # lme4 keeps (0|h) as a term with no columns (cnms h = character(0)); refused as empty.
    ("y ~ x + (1|g) + (0|h)", "no terms", "|h)"),
    # lme4 drops an offset() inside a bar without a word (cnms g = "(Intercept)"): refused.
    ("y ~ x + (offset(z)|g)", "offset() is not allowed inside a random-effects term", "offset"),
    ("offset(y) ~ x + (1|g)", "cannot be the response", "offset"),  # lme4 fits y; refused as unclear
    ("y ~ . + (1|g)", "'.' (all other columns) is not supported", "."),  # R: every other column
    # lme4 accepts g/h/g as g:(h:g) + h:g + g (a grouping factor repeating g); hlmbridge refuses.
    ("y ~ x + (1|g/h/g)", "a variable repeats in the grouping factor", "/g)"),
    # Found by the fuzz tests (they crashed with KeyError / IndexError before).
    ("y ~ x +5(1 | a)", "expected an operator before '('", "(1 | a)"),  # R: attempt to apply non-function
    ("y ~ offset() + (1|g)", "offset() needs an argument", "offset"),  # lme4: subscript out of bounds
)


# ------------------------------------------------------------------ comparing designs on data
# A Stata-style spec means Stata's model, an lme4-formula spec R's; a rendering is right when it
# gives the same design (rows, response, fixed columns, random-effects levels) on data.


def r_codes_like_stata(spec: ModelSpec) -> bool:
    """Whether R's model.matrix codes every factor of the spec as Stata's ``i.`` does.

    Stata always leaves out a factor's base level. R codes a factor ``f`` in a term ``T`` by
    contrasts (leaving out the base) only when ``T`` without ``f`` is in the model, the empty
    term being the intercept; otherwise by one indicator per level. Without an intercept R
    also codes the first factor it meets by indicators (``colnames(model.matrix(~ 0 + b +
    b:factor(c), d))`` is ``b``, ``b:factor(c)0`` ... ``b:factor(c)3``), so a spec with factors
    and no constant is never coded alike. ``c.x#i.s`` without ``x`` and ``i.a#i.b`` without its
    main effects mean different models in R and Stata too.
    """
    if not spec.constant and any(v.factor for t in spec.fixed for v in t.vars):
        return False
    present = {frozenset(t.variables) for t in spec.fixed} | {frozenset()}
    return all(
        frozenset(t.variables) - {v.name} in present for t in spec.fixed for v in t.vars if v.factor
    )


def frame_for(spec: ModelSpec, n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A data set for ``spec``: factors and groups as small integer codes, the rest numbers."""
    rng = np.random.default_rng(seed)
    factors = {v.name for t in spec.fixed for v in t.vars if v.factor}
    groups = {lv.group for lv in spec.levels}
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(spec.variables):
        if name in factors:
            cols[name] = rng.permutation(np.arange(n) % 4)  # every level 0-3 present (bases 0, 1, 3)
        elif name in groups:
            cols[name] = rng.integers(0, 5 + i % 3, size=n)
        else:
            cols[name] = rng.normal(size=n)
    return pd.DataFrame(cols)


def _plain(label: str) -> frozenset[str]:
    """A column name with R's factor spellings dropped, as the set of its pieces:
    ``x:factor(s)1`` -> ``{x, s1}``. R names an interaction in the order its variables first
    appear in the formula (``z:x + x`` gives ``z:x``, ``x + z:x`` gives ``x:z``), so the order
    of the pieces is not part of the model."""
    label = re.sub(r'relevel\(factor\(`?([^`()]+)`?\), ref = "[^"]*"\)', r"\1", label)
    return frozenset(re.sub(r"factor\(`?([^`()]+)`?\)", r"\1", label).replace("`", "").split(":"))


def _group_vars(key: str) -> frozenset[str]:
    return frozenset(re.findall(r"[^:()`]+", key))


def assert_same_design(a: Design, b: Design) -> None:
    """Same rows, response, fixed columns (by lme4 name, up to order) and random-effects levels."""
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_allclose(a.y, b.y)
    names_a, names_b = [_plain(n) for n in a.fixed_lme4], [_plain(n) for n in b.fixed_lme4]
    assert set(names_a) == set(names_b)
    assert len(set(names_a)) == len(names_a)
    for j, name in enumerate(names_a):
        np.testing.assert_allclose(a.X[:, j], b.X[:, names_b.index(name)], err_msg=":".join(sorted(name)))
    # lme4 names a nested factor by its expansion (``(1|a/b)`` gives ``b:a``), Stata's level path by
    # its order (``a:b``): the same grouping factor, so levels are matched by their set of variables.
    la, lb = ({_group_vars(lv.key): lv for lv in d.levels} for d in (a, b))
    assert set(la) == set(lb)
    for key, lv in la.items():
        other = lb[key]
        # The same terms and the same covariance blocks, matched by name: the order of one factor's
        # terms is not part of the model (``(0 + x | g) + (1 | g)`` gives x first, as lme4 does;
        # Stata's ``|| g: x`` reads back intercept first, its lme4 order).
        names, other_names = list(lv.terms_lme4), list(other.terms_lme4)
        assert sorted(names) == sorted(other_names), key
        perm = [other_names.index(t) for t in names]

        def block_sets(level, labels):
            return {frozenset(labels[i] for i in b) for b in (level.blocks or (tuple(range(len(labels))),))}

        assert (lv.n_groups, lv.cov, block_sets(lv, names)) == (
            other.n_groups, other.cov, block_sets(other, other_names)), key
        np.testing.assert_allclose(lv.Z, other.Z[:, perm], err_msg=key)
        # the same partition of the rows into groups (the numbering may differ)
        assert len(set(zip(lv.codes.tolist(), other.codes.tolist()))) == lv.n_groups, key


def assert_lme4_rendering_is_the_model(spec: ModelSpec, data: pd.DataFrame) -> None:
    """to_lme4(spec) refuses (naming the construct), or its formula has the spec's design in R's meaning."""
    try:
        m = to_lme4(spec)
    except UnsupportedSpecError as e:
        assert e.engine == "lme4" and e.construct
        return
    assert m.reml == spec.reml
    back = parse_lme4(m.explicit_formula, reml=m.reml)
    assert back.method == spec.method
    assert parse_any(m.explicit_formula, reml=m.reml) == back
    try:
        ours = build_design(spec, data)
    except HlmbridgeError as e:  # e.g. an empty factor cell: R's reading must refuse it too
        with pytest.raises(type(e)):
            build_design(back, data)
        return
    assert_same_design(ours, build_design(back, data))
