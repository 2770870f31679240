"""Table of model-syntax cases shared by the spec tests (no R, no data needed).

The seed commands are copied verbatim from the course handout
``seeds/000_b67aa17e87dadab7.txt`` (line numbers given); the typo on line 592 is kept
as printed there. Everything else is a construct case written for these tests.
"""

from __future__ import annotations

from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var

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
}

#: lme4 construct cases: (formula, reml) -> expected spec.
LME4_CASES: dict[tuple[str, bool], ModelSpec] = {
    ("y ~ x + (1|g)", True): ModelSpec("y", (_t("x"),), (RandomLevel("g"),), method="reml"),
    ("y ~ x + (1|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g"),)),
    ("y ~ x + (x|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="unstructured"),)),
    ("y ~ x + (1 + x|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="unstructured"),)),
    ("y ~ x + (0 + x|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), intercept=False),)),
    ("y ~ x + (-1 + x|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), intercept=False),)),
    ("y ~ x + (x - 1|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), intercept=False),)),
    ("y ~ x + (x||g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g", ("x",), cov="independent"),)),
    ("y ~ x + (0 + x + z||g)", False): ModelSpec(
        "y", (_t("x"),), (RandomLevel("g", ("x", "z"), intercept=False, cov="independent"),)
    ),
    ("y ~ x + (1|g) + (0 + x|g)", False): ModelSpec(
        "y", (_t("x"),), (RandomLevel("g", ("x",), cov="independent"),)
    ),
    ("y ~ x + (1|a/b)", False): ModelSpec("y", (_t("x"),), (RandomLevel("a"), RandomLevel("b"))),
    ("y ~ x + (1|a) + (1|a:b)", False): ModelSpec("y", (_t("x"),), (RandomLevel("a"), RandomLevel("b"))),
    ("y ~ x + (1|a/b/c)", False): ModelSpec("y", (_t("x"),), (RandomLevel("a"), RandomLevel("b"), RandomLevel("c"))),
    ("y ~ x + (1|a) + (1|b)", False): ModelSpec("y", (_t("x"),), (RandomLevel("a"), RandomLevel("b", nested=False))),
    ("y ~ x*z + (1|g)", False): ModelSpec("y", (_t("x"), _t("z"), _t("x", "z")), (RandomLevel("g"),)),
    ("y ~ x:z + (1|g)", False): ModelSpec("y", (_t("x", "z"),), (RandomLevel("g"),)),
    ("y ~ factor(z) + (1|g)", False): ModelSpec("y", (_t(_v("z", True)),), (RandomLevel("g"),)),
    ("y ~ x*factor(s) + (x|g)", False): ModelSpec(
        "y", (_t("x"), _t(_v("s", True)), _t("x", _v("s", True))), (RandomLevel("g", ("x",), cov="unstructured"),)
    ),
    ('y ~ relevel(factor(s), ref = "2") + (1|g)', False): ModelSpec(
        "y", (_t(_v("s", True, 2)),), (RandomLevel("g"),)
    ),
    ("y ~ 0 + x + (1|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g"),), constant=False),
    ("y ~ x - 1 + (1|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g"),), constant=False),
    ("y ~ -1 + x + (1|g)", False): ModelSpec("y", (_t("x"),), (RandomLevel("g"),), constant=False),
    ("y ~ 1 + (1|g)", False): ModelSpec("y", (), (RandomLevel("g"),)),
    ("y ~ a*b*c + (1|g)", False): ModelSpec(
        "y",
        (_t("a"), _t("b"), _t("c"), _t("a", "b"), _t("a", "c"), _t("b", "c"), _t("a", "b", "c")),
        (RandomLevel("g"),),
    ),
    # a name R reserves, backtick-quoted
    ("yy ~ `if` + (1 | grp)", False): ModelSpec("yy", (_t("if"),), (RandomLevel("grp"),)),
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
    ("xtreg y x, re", "this is not a mixed command", "xtreg"),
    ("mixed y x || g:, robust", "unknown option 'robust'", "robust"),
    ("mixed y x || g:, vce(robust)", "not supported", "vce"),
    ("mixed y x || g:, re", "unknown option 're'", "re"),
    ("mixed y x, cov(un) || g:", "covariance() belongs to a random-effects equation", "cov"),
    ("mixed y x || g:, reml mle", "conflicting options", "mle"),
    ("mixed y x || g: x, cov(un) cov(ind)", "conflicting covariance", "cov(ind)"),
    ("mixed y x", "no random-effects equation", None),
    ("mixed || g:", "dependent variable", None),
    ("mixed y ib(last).a || g:", "needs the data", "ib("),
    ("mixed y ib(freq).a || g:", "needs the data", "ib("),
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
    ("mixed y x x || g:", "listed twice", "x x"),
    ("mixed y c.x#c.x || g:", "repeats", "c.x"),
    ("mixed y ## x || g:", "dependent variable cannot be part of an interaction", "##"),
    ("mixed y x ## || g:", "needs a variable on each side", "##"),
    ("mixed y x, reml, mle || g:", "unexpected ','", ", mle"),
)

#: Bad lme4 formulas, in the same form as BAD_STATA.
BAD_LME4: tuple[tuple[str, str, str | int | None], ...] = (
    ("", "empty", ""),
    ("y x + (1|g)", "needs '~'", ""),
    ("y ~ x + (1|g", "unbalanced parenthesis", "("),
    ("y ~ x) + (1|g)", "unbalanced parenthesis", ")"),
    ("y ~ x", "no random-effects term", None),
    ("y ~ (1|a:b)", "nested grouping 'a:b'", "("),
    ("y ~ I(x^2) + (1|g)", "I()", "I("),
    ("y ~ poly(x, 2) + (1|g)", "poly()", "poly"),
    ("y ~ offset(z) + (1|g)", "offset()", "offset"),
    ("y ~ log(x) + (1|g)", "log()", "log"),
    ("log(y) ~ x + (1|g)", "response", ""),
    ("y ~ x + (1 + x|g) + (0 + z|g)", "block-diagonal", "(0"),
    ("y ~ x + (factor(z)|g)", "factors as random slopes", "factor"),
    ("y ~ x + (x:z|g)", "interactions as random slopes", ":"),
    ("y ~ x - z + (1|g)", "removing terms", "z"),
    ("y ~ a/b + (1|g)", "'/'", "/"),
    ("y ~ (a + b)^2 + (1|g)", "'^'", "^"),
    ("y ~ x + (1|g) + (1|g)", "given twice", 16),
    ("y ~ x ~ z + (1|g)", "only one '~'", "~ z"),
    ("y ~ x + 1|g", "random-effects term must be in parentheses", "|"),
    ("y ~ x + (1|g) + (0|h)", "no terms", "(0"),
    ("y ~ x + factor(x):z + (1|g)", "both as a factor and as a number", ":"),
    ("y ~ x + (1|a) + (1|b/a)", "appears at two levels", "(1|b"),
    ("y ~ x + $ + (1|g)", "unexpected character '$'", "$"),
    ("y ~ x + (1|g) + (1|a) + (1|g:b)", "must come right after", "(1|g:b)"),
)
