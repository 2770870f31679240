"""The corpus of lme4 formulas R users write, for the differential tests against R (issue 9).

Each :class:`Case` is one model as an R user fits it: a data set exported by
``r/export_datasets.R`` (with its R column classes), the formula, and lmer's call arguments.
``lme4`` and ``sm`` say what hlmbridge must do on each engine: ``"fit"`` (and then equal R's
numbers) or ``"refuse"`` (an :class:`~hlmbridge.errors.HlmbridgeError` with a one-sentence
message). A refusal is expected only where the engine genuinely cannot fit the model exactly:
statsmodels' MixedLM has one grouping factor with one free covariance matrix plus independent
variance components nested in it, so crossed factors (also "crossed" factors whose labels are
really nested, e.g. Pastes' ``sample``), two correlated blocks of several terms on one factor
and correlated slopes below the top level are refused; lme4 refuses only what lmer itself
refuses (an unknown function, ``na.action = na.fail`` with missing values) and unknown
keywords.

lmer's arguments are written as an R user writes them: ``weights``, ``offset`` and ``subset``
are R expressions over the data's columns that are also valid ``pandas.DataFrame.eval``
expressions (the test evaluates them there and passes the resulting vector, of the data's
length, to ``hlmbridge.fit``, as lmer evaluates them in the data); ``na_action`` is the name
of R's function (``"na.omit"``, ``"na.exclude"``, ``"na.fail"``), passed as that string.
``kwargs`` are extra ``fit()`` keywords (``REML=False``, a typo such as ``remll=``).
``dtypes`` casts columns of the pandas frame before fitting (pandas nullable dtypes).

``tags`` name what a case covers: the items of issue 9's "Deliver" 1-4, 6-7 (``ISSUE9_ITEMS``),
its seven bugs (``bug1`` ... ``bug7``), and the fixed-part constructs and published models the
corpus must contain (``CONSTRUCTS``). ``tests/test_differential_r.py`` checks that every one
has a case.

statsmodels tolerances (``sm_tol``) are measured: see ``SM_TOL`` and the notes on the cases
that need a different one.

>>> len(CASES) >= 120
True
>>> len({c.id for c in CASES}) == len(CASES)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CASES", "CONSTRUCTS", "ISSUE9_ITEMS", "LME4_TOL", "SM_TOL", "SM_TOL_FLAT", "Case", "Tol"]


@dataclass(frozen=True)
class Tol:
    """Tolerances of one engine against lmer.

    ``loglik``: relative; ``fixed``: |difference| in units of R's standard error; ``se`` and
    ``vc``: relative (a covariance relative to the root of the product of its variances).
    """

    loglik: float
    fixed: float
    se: float
    vc: float
    note: str = ""


#: The issue's tolerances for the lme4 engine (same optimizer, same data: numbers agree).
LME4_TOL = Tol(loglik=1e-8, fixed=1e-6, se=1e-6, vc=1e-5, note="issue 9, Done when")

#: statsmodels' MixedLM against lmer, measured with HLMBRIDGE_DIFF_REPORT on this corpus at
#: b4050eb (issue 9's design builder; 147 statsmodels fits): the worst errors were logLik
#: 5.2e-13 relative, fixed effects 3.4e-6 SE, SEs 2.5e-6 relative, variance components 3.6e-6
#: relative (BodyWeight log(weight) ~ Time + Diet + (Time|Rat)), apart from the HSB models of
#: SM_TOL_FLAT. (At af60854, on the 45 cases it fitted, HSB slope models included: 9e-13,
#: 9.1e-6 SE, 2.6e-6, 1.6e-4.)
#: MixedLM's optimizers stop a little short of bobyqa with rhoend=1e-12, so the variance
#: components carry the largest error. The limits keep a margin of 25x or more.
SM_TOL = Tol(loglik=1e-9, fixed=1e-4, se=1e-4, vc=1e-4,
             note="measured at b4050eb: logLik 5e-13, fixed 3.4e-6 SE, SE 2.5e-6, vc 3.6e-6")

#: HSB with a correlated random ses slope: var(ses) lies on a nearly flat likelihood (the
#: fit is close to singular), so where MixedLM stops moves it most: measured at b4050eb
#: 8.3e-5 relative (ses * sector + (ses | id)), fixed effects 1.1e-5 SE, logLik still 3e-13.
SM_TOL_FLAT = Tol(loglik=1e-9, fixed=1e-4, se=1e-4, vc=1e-3,
                  note="measured 8.3e-5 on var(ses): nearly flat likelihood near a singular fit")


@dataclass(frozen=True)
class Case:
    """One model an R user fits: data set, formula, lmer arguments, expected outcomes."""

    dataset: str
    formula: str
    tags: tuple[str, ...] = ()
    reml: bool | None = None  # None: not passed (lmer's default REML = TRUE)
    weights: str | None = None
    offset: str | None = None
    subset: str | None = None
    na_action: str | None = None
    kwargs: tuple[tuple[str, Any], ...] = ()
    dtypes: tuple[tuple[str, str], ...] = ()
    lme4: str = "fit"
    sm: str = "fit"
    sm_tol: Tol = SM_TOL
    stata: str | None = None  # hlmbridge is given this Stata command; R fits `formula`
    r_errors: bool = False  # lmer itself refuses the call (checked with the refusal)
    message_contains: tuple[str, ...] = ()  # words every refusal message must contain
    note: str = ""

    @property
    def reml_r(self) -> bool:
        """The REML argument R gets."""
        for key, value in self.kwargs:
            if key == "REML":
                return bool(value)
        if self.stata is not None:
            return "reml" in self.stata.split()
        return True if self.reml is None else self.reml

    @property
    def id(self) -> str:
        """A readable, unique test id naming the data set, formula and arguments."""
        args = []
        if self.reml is not None:
            args.append(f"REML={'TRUE' if self.reml else 'FALSE'}")
        for name in ("weights", "offset", "subset", "na_action"):
            value = getattr(self, name)
            if value is not None:
                args.append(f"{name}={value}")
        args += [f"{k}={v!r}" for k, v in self.kwargs]
        args += [f"{c} as {t}" for c, t in self.dtypes]
        head = self.stata if self.stata is not None else self.formula
        return f"{self.dataset}: {head}" + (f" [{', '.join(args)}]" if args else "")

    def expect(self, engine: str) -> str:
        """"fit" or "refuse" for engine "lme4" or "statsmodels"."""
        return self.lme4 if engine == "lme4" else self.sm


#: Issue 9's Deliver items, each to be covered by at least one case.
ISSUE9_ITEMS: dict[str, str] = {
    # Deliver 1: R's model.matrix rules
    "term-order": "term order by degree, then appearance",
    "var-order": "variable order inside interaction columns (first appearance)",
    "contrast-rule": "R's rule: factor in a term coded by contrasts or full indicators",
    "treatment-names": "treatment contrasts with R's level names",
    "ordered-poly": "ordered factors with contr.poly (.L .Q .C ^4)",
    "logical": "logical columns (xTRUE)",
    "string-factor": "string/object columns as factors, levels sorted",
    "categorical-levels": "pandas Categorical (R factor) levels kept in R's order",
    "nullable-dtype": "pandas nullable dtypes",
    # Deliver 2: functions in formulas
    "I": "I() arithmetic", "log": "log()", "log2": "log2()", "log10": "log10()", "log1p": "log1p()",
    "exp": "exp()", "sqrt": "sqrt()", "abs": "abs()", "scale": "scale()", "poly": "poly(x, k)",
    "poly-raw": "poly(x, k, raw = TRUE)", "factor": "factor()", "as.factor": "as.factor()",
    "relevel": "relevel()", "offset-term": "offset() in the formula",
    "response-transform": "transform on the response", "random-transform": "transform in a random term",
    "unknown-function": "an unknown function is a SpecError naming it",
    # Deliver 3: the random part
    "interaction-group-alone": "(1|a:b) on its own",
    "interaction-group-any-order": "(1|a:b) with (1|a) in any order",
    "three-crossed": "(1|a) + (1|b) + (1|a:b)",
    "factor-slope-0": "(0 + f|g)", "factor-slope": "(f|g)",
    "several-blocks": "several blocks for one grouping factor",
    "uncorrelated": "(x||g)", "nested-slash": "(1|a/b)",
    "nested-unique-labels": "crossed-looking factors whose labels are nested: statsmodels fits them exactly as nested",
    # Deliver 4: lmer's arguments
    "weights": "weights=", "offset-arg": "offset=", "subset": "subset=", "na_action": "na_action=",
    "REML": "REML= as R's spelling", "unknown-keyword": "an unknown keyword is an error naming it",
    # Deliver 6 and 7
    "stata-repeat": "Stata's repeated terms (c.a##c.b i.s##c.b)",
    "refusal-message": "one clean sentence per refusal",
}

#: Fixed-part constructs and published models the brief asks for.
CONSTRUCTS: dict[str, str] = {
    "zero-plus": "0 + ...", "minus-one": "... - 1", "f+f:x": "f + f:x", "f:g": "f:g without main effects",
    "a*b*c": "a*b*c", "(a+b)^2": "(a+b)^2", "a/b": "a/b in the fixed part", "%in%": "%in%",
    "minus-term": "- term removal", "offset-log": "offset(log(x))", "published": "a published model",
    "nested-correlated": "correlated slopes below the top level",
    **{f"bug{i}": f"issue 9 bug {i}" for i in range(1, 8)},
    # issue 26 (the splines and contrasts= are in tests/test_formula_constructs_r.py)
    "cut": "cut(x, breaks)", "interaction": "interaction(a, b)", "C": "C(f, contr) in the formula",
    "factor-levels": "factor(x, levels = c(...))", "summary-in-I": "mean(), sd() ... inside I()",
    "bare-bar": "a random-effects term without parentheses, y ~ x | g (issue 26)",
}


def _c(dataset: str, formula: str, *tags: str, **kw: Any) -> Case:
    if "kwargs" in kw:
        kw["kwargs"] = tuple(kw["kwargs"].items())
    if "dtypes" in kw:
        kw["dtypes"] = tuple(kw["dtypes"].items())
    if "message_contains" in kw and isinstance(kw["message_contains"], str):
        kw["message_contains"] = (kw["message_contains"],)
    return Case(dataset, formula, tuple(tags), **kw)


CROSSED = "refuse"  # statsmodels: crossed random effects (MixedLM nests components in one factor)

_SS = "sleepstudy"
CASES: tuple[Case, ...] = (
    # ------------------------------------------------------------------ lme4::sleepstudy
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "published"),
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "published", reml=False),
    _c(_SS, "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", "several-blocks", "published"),
    _c(_SS, "Reaction ~ Days + (Days || Subject)", "uncorrelated", reml=False),
    _c(_SS, "Reaction ~ 1 + (1 | Subject)"),
    _c(_SS, "Reaction ~ Days | Subject", "bare-bar"),  # lme4: Reaction ~ 1 + (Days | Subject)
    _c(_SS, "Reaction ~ Days || Subject", "bare-bar", reml=False),
    _c(_SS, "Reaction ~ 1 + Days + (1 + Days | Subject)", reml=True),
    _c(_SS, "Reaction ~ Days + (0 + Days | Subject)"),
    _c(_SS, "Reaction ~ Days + (-1 + Days | Subject) + (1 | Subject)", "several-blocks"),
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "REML", "bug4", kwargs={"REML": False}),
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "weights", "bug4", weights="Days + 1"),
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "weights", weights="Days + 1", reml=False),
    _c(_SS, "Reaction ~ Days + (1 | Subject)", "weights", weights="1 / (Days + 1)"),
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "subset", subset="Days > 1"),
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "subset", subset="Subject != '308'", reml=False),
    _c(_SS, "Reaction ~ Days + (1 | Subject)", "offset-arg", offset="Days"),
    _c(_SS, "Reaction ~ Days + (Days | Subject)", "offset-arg", offset="2 * Days", reml=False),
    _c(_SS, "Reaction ~ Days + offset(Days) + (1 | Subject)", "offset-term"),
    _c(_SS, "log(Reaction) ~ Days + (Days | Subject)", "response-transform", "log"),
    _c(_SS, "log10(Reaction) ~ Days + (1 | Subject)", "response-transform", "log10"),
    _c(_SS, "log2(Reaction) ~ log2(Days + 1) + (1 | Subject)", "response-transform", "log2"),
    _c(_SS, "I(Reaction / 1000) ~ Days + (1 | Subject)", "response-transform", "I"),
    _c(_SS, "sqrt(Reaction) ~ sqrt(Days) + (1 | Subject)", "sqrt", "response-transform"),
    _c(_SS, "Reaction ~ log1p(Days) + (log1p(Days) | Subject)", "log1p", "random-transform"),
    _c(_SS, "Reaction ~ exp(Days / 10) + (1 | Subject)", "exp"),
    _c(_SS, "Reaction ~ abs(Days - 4.5) + (1 | Subject)", "abs"),
    _c(_SS, "Reaction ~ Days + I(Days^2) + (Days | Subject)", "I"),
    _c(_SS, "Reaction ~ I(Days - 4.5) + (I(Days - 4.5) | Subject)", "I", "random-transform", reml=False),
    _c(_SS, "Reaction ~ I(2 * Days + 1) + I(Days * Days / 9) + (1 | Subject)", "I"),
    _c(_SS, "Reaction ~ poly(Days, 2) + (Days | Subject)", "poly"),
    _c(_SS, "Reaction ~ poly(Days, 3) + (1 | Subject)", "poly", reml=False),
    _c(_SS, "Reaction ~ poly(Days, 2, raw = TRUE) + (Days | Subject)", "poly-raw"),
    _c(_SS, "Reaction ~ scale(Days) + (scale(Days) | Subject)", "scale", "random-transform"),
    _c(_SS, "Reaction ~ factor(Days) + (1 | Subject)", "factor", "treatment-names"),
    _c(_SS, "Reaction ~ 0 + factor(Days) + (1 | Subject)", "zero-plus", "contrast-rule", "factor"),
    _c(_SS, "Reaction ~ as.factor(Days_int) + (1 | Subject)", "as.factor"),
    _c(_SS, 'Reaction ~ relevel(factor(Days), ref = "5") + (1 | Subject)', "relevel", "factor"),
    _c(_SS, "Reaction ~ late + Days + (1 | Subject)", "logical"),
    _c(_SS, "Reaction ~ late * Days + (Days | Subject)", "logical", "var-order"),
    _c(_SS, "Reaction ~ Days + (Days | Subject) + (0 + late | Subject)", "several-blocks", "logical",
       sm="refuse", note="(0 + late|g) is a 2x2 block (lateFALSE, lateTRUE): two correlated blocks on one factor"),
    _c(_SS, "Reaction ~ phase + (1 | Subject)", "ordered-poly"),
    _c(_SS, "Reaction ~ phase * Days + (Days | Subject)", "ordered-poly", "var-order", "term-order"),
    _c(_SS, "Reaction ~ Days + (1 | subj)", "string-factor"),
    _c(_SS, "Reaction ~ Days + (Days | subj)", "string-factor", reml=False),
    _c(_SS, "Reaction_na ~ Days + (Days | Subject)", "na_action"),
    _c(_SS, "Reaction_na ~ Days + (Days | Subject)", "na_action", na_action="na.omit"),
    _c(_SS, "Reaction_na ~ Days + (1 | Subject)", "na_action", na_action="na.exclude", reml=False),
    _c(_SS, "Reaction_na ~ Days + (Days | Subject)", "na_action", "refusal-message", na_action="na.fail",
       lme4="refuse", sm="refuse", r_errors=True, note="lmer: 'missing values in object'"),
    _c(_SS, "Reaction ~ foo(Days) + (1 | Subject)", "unknown-function", "refusal-message",
       lme4="refuse", sm="refuse", r_errors=True, message_contains="foo"),
    _c(_SS, "Reaction ~ Days + (1 | Subject)", "unknown-keyword", "refusal-message", "bug4",
       kwargs={"remll": False}, lme4="refuse", sm="refuse", message_contains="remll"),
    _c(_SS, "Reaction ~ Days_int + (Days_int | Subject)", "nullable-dtype", dtypes={"Days_int": "Int64"}),
    _c(_SS, "Reaction ~ Days + (1 | Subject)", "nullable-dtype", dtypes={"Reaction": "Float64"}),
    _c(_SS, "Reaction ~ late + (1 | Subject)", "nullable-dtype", "logical", dtypes={"late": "boolean"}),
    _c(_SS, "Reaction ~ Days + (1 | subj)", "nullable-dtype", "string-factor", dtypes={"subj": "string"}),
    # ------------------------------------------------------------------ lme4::Penicillin
    _c("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "published", sm=CROSSED),
    _c("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", sm=CROSSED, reml=False),
    _c("Penicillin", "diameter ~ sample + (1 | plate)", "treatment-names"),
    # ------------------------------------------------------------------ lme4::Pastes
    _c("Pastes", "strength ~ 1 + (1 | batch/cask)", "nested-slash", "published"),
    _c("Pastes", "strength ~ 1 + (1 | batch/cask)", "nested-slash", reml=False),
    _c("Pastes", "strength ~ 1 + (1 | batch) + (1 | sample)", "nested-unique-labels", "published",
       note="sample's labels are unique (A:a ...): crossed in lme4's reading, nested in the data, so "
            "statsmodels can fit it exactly as nested (or would have to refuse naming the nested form)"),
    _c("Pastes", "strength ~ 1 + (1 | sample) + (1 | batch)", "nested-unique-labels"),
    _c("Pastes", "strength ~ 1 + (1 | batch) + (1 | batch:cask)", "interaction-group-any-order"),
    _c("Pastes", "strength ~ 1 + (1 | cask:batch) + (1 | batch)", "interaction-group-any-order", "bug6"),
    _c("Pastes", "strength ~ 1 + (1 | batch:cask)", "interaction-group-alone"),
    _c("Pastes", "strength ~ cask + (1 | batch)", "treatment-names"),
    # ------------------------------------------------------------------ lme4::cake
    _c("cake", "angle ~ recipe * temperature + (1 | recipe:replicate)", "published", "bug6",
       "ordered-poly", "interaction-group-alone", "term-order"),
    _c("cake", "angle ~ recipe + temperature + (1 | recipe:replicate)", "published", "bug6", "ordered-poly"),
    _c("cake", "angle ~ recipe + temp + (1 | recipe:replicate)", "published", "bug6"),
    _c("cake", "angle ~ recipe * temp + (1 | recipe:replicate)", "var-order", reml=False),
    _c("cake", "angle ~ temperature + (1 | replicate)", "ordered-poly"),
    _c("cake", "angle ~ recipe_chr + temp + (1 | recipe_chr:replicate)", "string-factor"),
    _c("cake", "angle ~ recipe + poly(temp, 3) + (1 | replicate) + (1 | recipe:replicate)", "poly",
       "interaction-group-any-order"),
    _c("cake", "angle ~ recipe:temp + (1 | recipe:replicate)", "contrast-rule", "f:g"),
    _c("cake", "angle ~ recipe + recipe:temp + (1 | recipe:replicate)", "f+f:x", "contrast-rule", "bug3"),
    _c("cake", "angle ~ 0 + recipe + recipe:temp + (1 | recipe:replicate)", "zero-plus", "f+f:x"),
    _c("cake", "angle ~ recipe/temp + (1 | recipe:replicate)", "a/b"),
    _c("cake", "angle ~ temp %in% recipe + (1 | recipe:replicate)", "%in%", "var-order"),
    _c("cake", "angle ~ recipe * temp - temp + (1 | recipe:replicate)", "minus-term", "contrast-rule"),
    _c("cake", "angle ~ (recipe + temp)^2 + (1 | recipe:replicate)", "(a+b)^2"),
    _c("cake", "angle ~ recipe + temperature + (1 | recipe:replicate)", "ordered-poly", reml=False),
    _c("cake", "angle ~ temp + (1 | recipe) + (1 | replicate) + (1 | recipe:replicate)", "three-crossed",
       sm=CROSSED),
    _c("cake", "angle ~ temp + (1 | replicate) + (1 | replicate:recipe)", "interaction-group-any-order",
       reml=False),
    # ------------------------------------------------------------------ lme4::Dyestuff
    _c("Dyestuff", "Yield ~ 1 + (1 | Batch)", "published"),
    _c("Dyestuff", "Yield ~ 1 + (1 | Batch)", "published", reml=False),
    _c("Dyestuff", "log(Yield) ~ 1 + (1 | Batch)", "response-transform"),
    _c("Dyestuff", "Yield ~ 1 + (1 | Batch)", "REML", kwargs={"REML": True}),
    # '|' binds looser than '+' (issue 26): lme4's own example, lmer(Yield ~ 1|Batch, Dyestuff).
    _c("Dyestuff", "Yield ~ 1|Batch", "bare-bar", "published"),
    _c("Dyestuff", "Yield ~ 1 | Batch", "bare-bar", reml=False),
    # ------------------------------------------------------------------ lme4::InstEval (3000 rows)
    _c("InstEval", "y ~ service + (1 | s) + (1 | d)", "published", sm=CROSSED),
    _c("InstEval", "y ~ service + lectage + studage + (1 | s) + (1 | d)", "ordered-poly", sm=CROSSED, reml=False),
    _c("InstEval", "y ~ 1 + (1 | s) + (1 | d) + (1 | dept)", "published", sm=CROSSED),
    _c("InstEval", "y ~ service + dept + (1 | dept:service)", "treatment-names", "interaction-group-alone"),
    _c("InstEval", "y ~ studage + service + (1 | dept)", "ordered-poly"),
    # ------------------------------------------------------------------ nlme::Orthodont
    _c("Orthodont", "distance ~ age + Sex + (age | Subject)", "published", "categorical-levels"),
    _c("Orthodont", "distance ~ age * Sex + (age | Subject)", "var-order", "categorical-levels"),
    _c("Orthodont", "distance ~ age + Sex + (1 | Subject)", "published", reml=False),
    _c("Orthodont", "distance ~ I(age - 11) + Sex + (I(age - 11) | Subject)", "I", "random-transform"),
    _c("Orthodont", "distance ~ age + male + (1 | Subject)", "logical"),
    _c("Orthodont", "distance ~ Sex/age + (1 | Subject)", "a/b", "f+f:x"),
    _c("Orthodont", "distance ~ 0 + Sex + Sex:age + (age | Subject)", "zero-plus", "f+f:x", "contrast-rule"),
    _c("Orthodont", 'distance ~ age + relevel(Sex, ref = "Female") + (age | Subject)', "relevel"),
    _c("Orthodont", "distance ~ age + (age || Subject)", "uncorrelated", reml=False),
    _c("Orthodont", "distance ~ poly(age, 2, raw = TRUE) * Sex + (1 | Subject)", "poly-raw", "term-order"),
    _c("Orthodont", "distance ~ age + Sex + (1 | Subject)", "weights", weights="age / 10"),
    # ------------------------------------------------------------------ nlme::Oats
    _c("Oats", "yield ~ nitro + Variety + (1 | Block/Variety)", "published", "bug5", "nested-slash"),
    _c("Oats", "yield ~ nitro + Variety_chr + (1 | Block/Variety_chr)", "bug5", "string-factor"),
    _c("Oats", "yield ~ nitro_o + Variety + (1 | Block/Variety)", "ordered-poly"),
    _c("Oats", "yield ~ factor(nitro) * Variety + (1 | Block/Variety)", "factor", "term-order"),
    _c("Oats", "yield ~ nitro + (1 | Block) + (1 | Block:Variety)", "interaction-group-any-order"),
    _c("Oats", "yield ~ nitro + (1 | Variety:Block) + (1 | Block)", "interaction-group-any-order", "bug6"),
    _c("Oats", "yield ~ poly(nitro, 2) + Variety + (1 | Block/Variety)", "poly", reml=False),
    _c("Oats", "yield ~ nitro + Variety + (1 | Block) + (1 | Variety)", sm=CROSSED),
    _c("Oats", "yield ~ nitro + (1 | Block) + (1 | Variety) + (1 | Block:Variety)", "three-crossed", sm=CROSSED),
    _c("Oats", "yield ~ Variety + offset(log(nitro + 1)) + (1 | Block)", "offset-log", "offset-term"),
    _c("Oats", "yield ~ nitro + (1 | Block) + (nitro | Block:Variety)", "nested-correlated", sm="refuse",
       reml=False, note="correlated slopes below the top level: MixedLM's nested components are independent"),
    # ------------------------------------------------------------------ nlme::Machines
    _c("Machines", "score ~ Machine + (1 | Worker/Machine)", "published", "bug5", "nested-slash"),
    _c("Machines", "score ~ Machine + (Machine | Worker)", "published", "factor-slope"),
    _c("Machines", "score ~ Machine + (0 + Machine | Worker)", "factor-slope-0"),
    _c("Machines", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)", "interaction-group-any-order"),
    _c("Machines", "score ~ factor(machine_n) + (machine_n | Worker)", "bug7", "factor"),
    _c("Machines", "score ~ Machine_chr + (1 | Worker_chr/Machine_chr)", "bug5", "string-factor"),
    _c("Machines", "score ~ Machine + (0 + Machine | Worker)", "factor-slope-0", reml=False),
    _c(_SS, "Reaction ~ Days + (1 + Days | Subject) + (0 + I(Days^2) | Subject)", "several-blocks",
       "random-transform", note="(1 | Worker) + (0 + Machine | Worker) would not do: not identifiable"),
    _c("Machines", "score ~ Machine + (1 | Machine:Worker)", "interaction-group-alone"),
    _c("Machines", "score ~ 0 + Machine + (1 | Worker/Machine)", "zero-plus", "bug2"),
    _c("Machines", "score ~ Machine - 1 + (1 | Worker)", "minus-one", "bug2"),
    _c("Machines", "score ~ Machine + (Machine | Worker)", "factor-slope", reml=False),
    # ------------------------------------------------------------------ nlme::BodyWeight
    _c("BodyWeight", "weight ~ Time * Diet + (Time | Rat)", "published", "treatment-names"),
    _c("BodyWeight", "log(weight) ~ Time + Diet + (Time | Rat)", "response-transform", "log"),
    _c("BodyWeight", "weight ~ Diet + Diet:Time + (Time | Rat)", "f+f:x", "bug3", "contrast-rule"),
    _c("BodyWeight", "weight ~ scale(Time) * Diet + (scale(Time) | Rat)", "scale", "random-transform",
       reml=False),
    _c("BodyWeight", "weight ~ poly(Time, 2) + Diet + (1 | Rat)", "poly"),
    _c("BodyWeight", "weight ~ Time + Diet + (1 + Time | Rat)", "subset", subset="Diet != '3'",
       note="the subset empties Diet level 3: lmer drops unused levels"),
    _c("BodyWeight", "weight ~ Time + Diet + (1 | Rat)", "offset-arg", offset="Time / 10"),
    # ------------------------------------------------------------------ HSB (nlme MathAchieve + MathAchSchool)
    _c("hsb", "mathach ~ ses + (1 | id)", reml=False),
    _c("hsb", "mathach ~ ses * sector + (ses | id)", "published", sm_tol=SM_TOL_FLAT),
    _c("hsb", "mathach ~ meanses * cses + sector * cses + (cses | id)", "published", "bug1", "var-order",
       "term-order"),
    _c("hsb", "mathach ~ sector + ses + ses:sector + (1 | id)", "bug1", "var-order"),
    _c("hsb", "mathach ~ 0 + factor(sector) + ses + (1 | id)", "bug2", "zero-plus", "contrast-rule"),
    _c("hsb", "mathach ~ factor(sector) - 1 + ses + (1 | id)", "bug2", "minus-one", "contrast-rule"),
    _c("hsb", "mathach ~ factor(sector) + factor(sector):ses + (1 | id)", "bug3", "f+f:x", "contrast-rule"),
    _c("hsb", "mathach ~ Sector + ses + (ses | id)", "categorical-levels", "treatment-names", reml=False, sm_tol=SM_TOL_FLAT),
    _c("hsb", "mathach ~ sector_chr + ses + (1 | id)", "string-factor", "treatment-names"),
    _c("hsb", "mathach ~ catholic * ses + (ses | id)", "logical", "var-order", sm_tol=SM_TOL_FLAT),
    _c("hsb", "mathach ~ ses_q + (1 | id)", "ordered-poly"),
    _c("hsb", "mathach ~ Sex * Minority * ses + (1 | id)", "a*b*c", "term-order", "categorical-levels"),
    _c("hsb", "mathach ~ (Sex + Minority + ses)^2 + (1 | id)", "(a+b)^2", "term-order"),
    _c("hsb", "mathach ~ Sex * Minority * ses - Sex:Minority:ses + (1 | id)", "minus-term", reml=False),
    _c("hsb", "mathach ~ ses + I(ses^2) + meanses + (ses | id)", "I", reml=False, sm_tol=SM_TOL_FLAT),
    _c("hsb", "mathach ~ 0 + Sector:Sex + (1 | id)", "f:g", "zero-plus", "contrast-rule"),
    _c("hsb", "mathach ~ Sector + Sector:Sex + (1 | id)", "f:g", "contrast-rule"),
    _c("hsb", "mathach ~ ses + ses:Sex + (1 | id)", "var-order", "contrast-rule"),
    _c("hsb", "mathach ~ Sex:ses + ses + (1 | id)", "var-order", "term-order"),
    _c("hsb", 'mathach ~ relevel(Sector, ref = "Catholic") * ses + (ses | id)', "relevel", sm_tol=SM_TOL_FLAT),
    _c("hsb", "mathach ~ ses + (ses || id)", "uncorrelated", reml=False),
    _c("hsb", "mathach ~ ses + female + minority + (1 | id)", subset="sector == 1"),
    _c("hsb", "mathach ~ ses + (1 | id)", "offset-arg", offset="meanses"),
    _c("hsb", "mathach ~ meanses * cses + factor(sector) * cses + (cses | id)", "stata-repeat", reml=False,
       stata="mixed mathach c.meanses##c.cses i.sector##c.cses || id: cses, cov(unstructured)",
       note="Stata repeats c.cses; R's formula is the same model"),
    _c("hsb", "mathach ~ scale(ses) + scale(meanses) + (scale(ses) | id)", "scale", "random-transform", sm_tol=SM_TOL_FLAT),
    # ------------------------------------------------------------------ mlmRev::Exam
    _c("Exam", "normexam ~ standLRT + sex + schgend + (standLRT | school)", "published", "categorical-levels"),
    _c("Exam", "normexam ~ standLRT + (1 | school)", reml=False),
    _c("Exam", "normexam ~ standLRT_na + sex + (1 | school)", "na_action", na_action="na.omit"),
    _c("Exam", "normexam ~ standLRT * vr_ord + (1 | school)", "ordered-poly", "var-order"),
    _c("Exam", "normexam ~ standLRT + boys_school + (standLRT | school)", "logical"),
    _c("Exam", "normexam ~ poly(standLRT, 3) + intake + (1 | school)", "poly", "categorical-levels"),
    _c("Exam", "normexam ~ standLRT + sex + (1 | school_chr)", "string-factor"),
    _c("Exam", "normexam ~ standLRT + sex * type + (1 | school)", "term-order"),
    _c("Exam", "normexam ~ standLRT + (1 | school) + (0 + standLRT | school)", "several-blocks", reml=False),
    # ------------------------------------------------------------------ mlmRev::ScotsSec
    _c("ScotsSec", "attain ~ verbal * sex + (1 | primary) + (1 | second)", "published", sm=CROSSED),
    _c("ScotsSec", "attain ~ verbal + sex + social + (1 | second)", "categorical-levels"),
    # ------------------------------------------------------------------ issue 26
    _c(_SS, "Reaction ~ cut(Days, breaks = c(-1, 2, 5, 9)) + (1 | Subject)", "cut"),
    _c("hsb", "mathach ~ cut(ses, 4) * sector + (1 | id)", "cut", reml=False),
    _c("Orthodont", "distance ~ interaction(Sex, factor(age)) + (1 | Subject)", "interaction"),
    _c("Machines", "score ~ C(Machine, contr.sum) + (1 | Worker)", "C"),
    _c("cake", "angle ~ C(recipe, helmert) + temperature + (1 | recipe:replicate)", "C", "ordered-poly"),
    _c("Oats", "yield ~ factor(nitro, levels = c(0.6, 0.4, 0.2, 0)) + (1 | Block/Variety)", "factor-levels"),
    _c(_SS, "Reaction ~ I(Days - mean(Days)) + (I(Days - mean(Days)) | Subject)", "summary-in-I", "random-transform"),
    _c("hsb", "mathach ~ I(ses - mean(ses)) + I(meanses / sd(meanses)) + (1 | id)", "summary-in-I"),
)
