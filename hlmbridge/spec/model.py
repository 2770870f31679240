"""The engine-neutral model specification.

A :class:`ModelSpec` is immutable and says everything that determines the model:
response, fixed terms with explicit factor coding, the grouping levels (outermost
first) with their random terms and covariance structure, and the estimation method.
Parsers (:meth:`ModelSpec.from_stata`, :meth:`ModelSpec.from_lme4`) and renderers
(:meth:`ModelSpec.to_lme4`, :meth:`ModelSpec.to_statsmodels`, :meth:`ModelSpec.to_stata`)
live in their own modules; this one holds only the data model and its validation.

Examples
--------
>>> from hlmbridge.spec.model import ModelSpec, Term, Var, RandomLevel
>>> spec = ModelSpec(
...     response="mathach",
...     fixed=(Term((Var("ses"),)),),
...     levels=(RandomLevel("id", slopes=("ses",), cov="unstructured"),),
... )
>>> spec.method
'ml'
>>> [t.stata_name for t in spec.fixed]
['ses']
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from hlmbridge.errors import SpecError
from hlmbridge.spec.residuals import ResidualStructure
from hlmbridge.spec.rformula import Formula

CovStructure = Literal["identity", "independent", "exchangeable", "unstructured"]
Method = Literal["ml", "reml"]
Family = Literal["gaussian", "binomial", "poisson", "negative_binomial"]
IntMethod = Literal["laplace", "mcaghermite", "mvaghermite", "ghermite"]

COV_STRUCTURES: tuple[str, ...] = get_args(CovStructure)
METHODS: tuple[str, ...] = get_args(Method)
FAMILIES: tuple[str, ...] = get_args(Family)
INT_METHODS: tuple[str, ...] = get_args(IntMethod)
#: Each family's link (the canonical one, the default).
LINKS: dict[str, str] = {"gaussian": "identity", "binomial": "logit", "poisson": "log", "negative_binomial": "log"}
#: The links each family takes, its canonical link first (hlmbridge.families.FAMILY_LINKS holds the
#: same table with the functions; written out here so that the spec does not import scipy).
FAMILY_LINKS: dict[str, tuple[str, ...]] = {"gaussian": ("identity",), "binomial": ("logit", "probit", "cloglog"),
                                            "poisson": ("log",), "negative_binomial": ("log",)}
#: Why a GLMM has no REML (the sentence fit() and the spec give).
GLMM_NO_REML = ("REML is not defined for a generalized linear mixed model: glmer and Stata's melogit/mepoisson "
                "fit by maximum likelihood (Laplace or adaptive quadrature)")

__all__ = [
    "COV_STRUCTURES",
    "FAMILIES",
    "FAMILY_LINKS",
    "GLMM_NO_REML",
    "INT_METHODS",
    "LINKS",
    "METHODS",
    "CovStructure",
    "Family",
    "IntMethod",
    "Method",
    "ModelSpec",
    "RandomLevel",
    "Term",
    "Var",
]


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not name or not (name[0].isalpha() or name[0] == "_") or not all(
        c.isalnum() or c in "_." for c in name
    ):
        raise SpecError(f"{what} must be a variable name, got {name!r}")


@dataclass(frozen=True)
class Var:
    """One variable inside a fixed term.

    ``factor=True`` means Stata's ``i.`` (R's ``factor()``): one indicator column per
    non-base level. ``base`` is the base level (``ib1.`` gives ``base=1``); ``None``
    means the lowest level, which is Stata's and R's default.
    """

    name: str
    factor: bool = False
    base: int | str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "a variable")
        if self.base is not None and not self.factor:
            raise SpecError(f"a base level is given for {self.name!r}, which is not a factor")
        if isinstance(self.base, str):
            # Stata's ib(last)., ib(freq)., ib(#k).: a base the data resolves (the design does)
            if not re.fullmatch(r"last|freq|#[1-9][0-9]*", self.base):
                raise SpecError(f"the base rule of {self.name!r} must be 'last', 'freq' or '#k', got {self.base!r}")
        elif self.base is not None and (isinstance(self.base, bool) or not isinstance(self.base, int)):
            raise SpecError(f"the base level of {self.name!r} must be an integer, got {self.base!r}")


@dataclass(frozen=True)
class Term:
    """A fixed-effect term: one variable (main effect) or several (an interaction, Stata ``#``)."""

    vars: tuple[Var, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.vars, tuple) or not self.vars:
            raise SpecError("a term needs at least one variable (as a tuple)")
        names = [v.name for v in self.vars]
        # Stata's c.x#c.x is x squared; a factor (or a factor and its continuous self) cannot repeat.
        repeated = {n for n in names if names.count(n) > 1}
        if any(v.factor for v in self.vars if v.name in repeated):
            raise SpecError(f"a variable repeats inside the interaction {'#'.join(names)}")

    @property
    def stata_name(self) -> str:
        """The term as Stata factor-variable notation writes it (``c.ses#i.sector``, ``ses``)."""
        if len(self.vars) == 1 and not self.vars[0].factor:
            return self.vars[0].name
        parts = []
        for v in self.vars:
            if v.factor:
                parts.append(f"i.{v.name}" if v.base is None else f"ib({v.base}).{v.name}"
                             if isinstance(v.base, str) else f"ib{v.base}.{v.name}")
            else:
                parts.append(f"c.{v.name}" if len(self.vars) > 1 else v.name)
        return "#".join(parts)

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of the variables the term uses."""
        return tuple(v.name for v in self.vars)


@dataclass(frozen=True)
class RandomLevel:
    """One grouping level with its random terms.

    ``slopes`` are continuous variables with a random coefficient, in the order written
    (Stata lists them before ``_cons``). ``intercept=False`` is Stata's ``noconstant``
    on the random part. ``nested=True`` (the default, Stata's ``||`` semantics) means the
    groups of this level are identified within the enclosing (previous) level;
    ``nested=False`` is a crossed factor, lme4's ``(1|a) + (1|b)``.
    """

    group: str
    slopes: tuple[str, ...] = ()
    intercept: bool = True
    cov: CovStructure | None = None
    nested: bool = True

    def __post_init__(self) -> None:
        _check_name(self.group, "a grouping variable")
        if not isinstance(self.slopes, tuple):
            raise SpecError("slopes must be a tuple of variable names")
        for s in self.slopes:
            _check_name(s, "a random slope")
        if len(set(self.slopes)) != len(self.slopes):
            raise SpecError(f"a random slope repeats at level {self.group!r}")
        if not self.slopes and not self.intercept:
            raise SpecError(f"level {self.group!r} has no random terms")
        cov = self.cov
        if cov is None:
            # Stata's defaults: identity for a lone random term, independent otherwise.
            cov = "identity" if self.n_terms == 1 else "independent"
            object.__setattr__(self, "cov", cov)
        if cov not in COV_STRUCTURES:
            raise SpecError(f"unknown covariance structure {cov!r}; choose one of {', '.join(COV_STRUCTURES)}")
        if self.n_terms == 1 and cov != "identity":
            # With one random term every structure is the same model: keep one spelling.
            object.__setattr__(self, "cov", "identity")

    @property
    def n_terms(self) -> int:
        """Number of random coefficients per group."""
        return len(self.slopes) + int(self.intercept)

    @property
    def stata_terms(self) -> tuple[str, ...]:
        """Random terms in Stata's order: slopes as written, then ``_cons``."""
        return self.slopes + (("_cons",) if self.intercept else ())

    @property
    def lme4_terms(self) -> tuple[str, ...]:
        """Random terms in lme4's order: ``(Intercept)`` first, then slopes."""
        return (("(Intercept)",) if self.intercept else ()) + self.slopes


@dataclass(frozen=True)
class ModelSpec:
    """An engine-neutral linear mixed model.

    Parameters
    ----------
    response
        The dependent variable.
    fixed
        Fixed terms in the order written (Stata's table order; ``_cons`` is implicit).
    levels
        Grouping levels, outermost first.
    constant
        ``False`` is Stata's ``noconstant`` / lme4's ``0 +`` in the fixed part.
    method
        ``"ml"`` or ``"reml"``.
    family, link
        ``"gaussian"``/``"identity"`` (the default: a linear mixed model), ``"binomial"`` with
        ``"logit"``, ``"probit"`` or ``"cloglog"``, or ``"poisson"``/``"log"`` (a generalized
        linear mixed model, fitted by ML only; ``link=None`` means the family's canonical link).
    trials
        Stata's ``binomial(varname|#)`` on a binomial GLMM: the number of trials, a column name
        or a whole number; the response counts the successes. The log likelihood then includes
        the log binomial coefficients log C(n, s): glmer's does (R's ``binomial()$aic``; its
        quadrature deviance leaves them out with the rest of the saturated log likelihood, and
        the lme4 engine adds them back), and Stata's ``meglm`` states the full binomial density
        (with lnGamma(n+1) - lnGamma(s+1) - lnGamma(n-s+1); [ME] meglm, Methods and formulas),
        so no correction is applied. That last point is from the manual only: no Stata log with
        ``binomial()`` was at hand to confirm it on numbers. A 0/1 response makes them 0.
    offset, exposure
        Stata's ``offset(varname)`` / ``exposure(varname)`` on a GLMM: a column added to the
        linear predictor as it is or as its log.
    intmethod, intpoints
        How a GLMM's likelihood integrates the random effects out: ``"laplace"`` (1 point,
        glmer's ``nAGQ = 1``), ``"mcaghermite"`` (adaptive Gauss-Hermite at the conditional
        mode and curvature: glmer's ``nAGQ = k``), ``"mvaghermite"`` (Stata's default: adapted
        at the posterior mean and variance) or ``"ghermite"`` (not adaptive). ``None`` for a
        linear model; for a GLMM ``None`` means glmer's default, Laplace.

    >>> spec = ModelSpec("y", levels=(RandomLevel("g"),), family="binomial", intmethod="mcaghermite",
    ...                  intpoints=12)
    >>> spec.link, spec.is_glmm, spec.nagq
    ('logit', True, 12)
    >>> ModelSpec("y", levels=(RandomLevel("g"),), family="binomial", link="probit").link
    'probit'
    """

    response: str
    fixed: tuple[Term, ...] = ()
    levels: tuple[RandomLevel, ...] = ()
    constant: bool = True
    method: Method = "ml"
    _source: str | None = field(default=None, compare=False, repr=False)
    formula: Formula | None = None
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)
    family: Family = "gaussian"
    link: str | None = None
    intmethod: IntMethod | None = None
    intpoints: int | None = None
    #: Stata's ``or``/``irr`` display option (exponentiated coefficients); not part of the model.
    eform: str | None = field(default=None, repr=False)
    #: Stata's ``binomial(varname|#)``: the number of trials (a column or a whole number); the
    #: response then counts successes. (An lme4 formula writes ``cbind(s, f)`` instead.)
    trials: str | int | None = None
    #: Stata's ``offset(varname)`` and ``exposure(varname)`` (log of it) on a GLMM's linear
    #: predictor. (An lme4 formula writes ``offset(...)`` in the formula instead.)
    offset: str | None = None
    exposure: str | None = None
    #: Stata's ``residuals()``: the level-1 errors' structure (None: independent, one variance).
    residuals: ResidualStructure | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SpecError(f"unknown method {self.method!r}; choose 'ml' or 'reml'")
        self._check_family()
        self._check_residuals()
        if self.formula is not None:
            # An lme4 formula carries its whole meaning (R's rules); the Stata-style
            # fields stay empty so that a model has one description only.
            if self.trials is not None or self.offset is not None or self.exposure is not None:
                raise SpecError("an lme4 formula writes its trials as cbind(successes, failures) and its offset as "
                                "offset(...) in the formula, not as Stata's binomial()/offset()/exposure()")
            if self.fixed or self.levels:
                raise SpecError("a spec read from an lme4 formula takes no Stata-style fixed terms or levels")
            object.__setattr__(self, "response", self.formula.response.deparse())
            object.__setattr__(self, "constant", self.formula.fixed.intercept)
            return
        _check_name(self.response, "the response")
        if not isinstance(self.fixed, tuple) or not all(isinstance(t, Term) for t in self.fixed):
            raise SpecError("fixed must be a tuple of Term")
        if not isinstance(self.levels, tuple) or not all(isinstance(lv, RandomLevel) for lv in self.levels):
            raise SpecError("levels must be a tuple of RandomLevel")
        if not self.levels:
            raise SpecError("a mixed model needs at least one grouping level")
        if self.method not in METHODS:
            raise SpecError(f"unknown method {self.method!r}; choose 'ml' or 'reml'")
        keys = [tuple(sorted(t.variables)) for t in self.fixed]
        if len(set(keys)) != len(keys):
            raise SpecError("a fixed term is listed twice")
        if not self.fixed and not self.constant:
            raise SpecError("the fixed part is empty (no terms and no constant)")
        groups = [lv.group for lv in self.levels]
        if len(set(groups)) != len(groups):
            raise SpecError(f"a grouping variable is listed twice: {groups}")
        if not self.levels[0].nested:
            # The outermost level encloses nothing: nested/crossed only means something below it.
            object.__setattr__(self, "levels", (replace(self.levels[0], nested=True),) + self.levels[1:])
        for name in self.variables:
            _check_name(name, "a variable")

    def _check_family(self) -> None:
        if self.family not in FAMILIES:
            raise SpecError(f"unknown family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        link = LINKS[self.family] if self.link is None else self.link
        if link not in FAMILY_LINKS[self.family]:
            raise SpecError(f"the {self.family} family with the {link!r} link is not supported (it takes "
                            f"{' or '.join(repr(k) for k in FAMILY_LINKS[self.family])})")
        object.__setattr__(self, "link", link)
        if self.eform is not None and (self.eform, self.family, link) not in (("or", "binomial", "logit"),
                                                                              ("irr", "poisson", "log"),
                                                                              ("irr", "negative_binomial", "log")):
            raise SpecError(f"the {self.eform!r} display option does not apply to the {self.family} family with "
                            f"the {link} link (or: binomial with the logit link; irr: poisson, negative_binomial)")
        self._check_glmm_inputs()
        if self.family == "gaussian":
            if self.intmethod is not None or self.intpoints is not None:
                raise SpecError("integration points and methods belong to a generalized linear mixed model "
                                "(family='binomial' or 'poisson'); a linear mixed model's likelihood is exact")
            return
        if self.method == "reml":
            raise SpecError(GLMM_NO_REML)
        method = "laplace" if self.intmethod is None else self.intmethod
        if method not in INT_METHODS:
            raise SpecError(f"unknown integration method {method!r}; choose one of {', '.join(INT_METHODS)}")
        points = self.intpoints
        if points is None:
            points = 1 if method == "laplace" else 7  # Stata's default: 7 points
        if isinstance(points, bool) or not isinstance(points, int) or points < 1:
            raise SpecError(f"the number of integration points must be a positive integer, got {points!r}")
        if method == "laplace" and points != 1:
            raise SpecError(f"Laplace's approximation uses one integration point, got {points}")
        if method == "mcaghermite" and points == 1:
            method = "laplace"  # mode-curvature adaptive quadrature with one point is Laplace's
        object.__setattr__(self, "intmethod", method)
        object.__setattr__(self, "intpoints", points)

    def _check_glmm_inputs(self) -> None:
        """Stata's binomial(), offset() and exposure() fields: the right family, well formed."""
        if self.trials is not None:
            if self.family != "binomial":
                raise SpecError(f"the number of binomial trials (Stata's binomial()) belongs to the binomial family, "
                                f"not {self.family}")
            if isinstance(self.trials, bool) or not isinstance(self.trials, (str, int)):
                raise SpecError(f"the binomial trials must be a variable name or a whole number, got {self.trials!r}")
            if isinstance(self.trials, int) and self.trials < 1:
                raise SpecError(f"the number of binomial trials must be positive, got {self.trials}")
            if isinstance(self.trials, str):
                _check_name(self.trials, "the binomial trials")
        for name, value in (("offset", self.offset), ("exposure", self.exposure)):
            if value is None:
                continue
            if self.family == "gaussian":
                raise SpecError(f"Stata's {name}() belongs to a GLMM here (mixed has no {name}() option)")
            _check_name(value, f"the {name}() variable")
        if self.offset is not None and self.exposure is not None:
            raise SpecError("offset() and exposure() cannot both be given (Stata allows one of them)")
        if self.exposure is not None and self.family not in ("poisson", "negative_binomial"):
            raise SpecError(f"exposure() belongs to a Poisson model (or a negative binomial one), not the "
                            f"{self.family} family (use offset())")

    def _check_residuals(self) -> None:
        res = self.residuals
        if res is None:
            return
        if not isinstance(res, ResidualStructure):
            raise SpecError(f"residuals must be a ResidualStructure, got {type(res).__name__}")
        if self.is_glmm:
            raise SpecError(f"{res.stata()} belongs to a linear mixed model; a {self.family} GLMM has no "
                            "residual errors")
        if res.is_independent:
            object.__setattr__(self, "residuals", None)  # Stata's default: the same model, one spelling

    @property
    def is_glmm(self) -> bool:
        """True for a generalized linear mixed model (a family other than gaussian)."""
        return self.family != "gaussian"

    @property
    def nagq(self) -> int | None:
        """glmer's ``nAGQ`` for this integration when glmer computes the same integral
        (Laplace: 1; mode-curvature adaptive quadrature: its points), else None."""
        if self.intmethod == "laplace":
            return 1
        if self.intmethod == "mcaghermite":
            return self.intpoints
        return None

    def with_family(self, family: Family, link: str | None = None, intmethod: IntMethod | None = None,
                    intpoints: int | None = None) -> ModelSpec:
        """The same model with another family, link and integration (method ML)."""
        return replace(self, family=family, link=link, intmethod=intmethod, intpoints=intpoints,
                       method="ml" if family != "gaussian" else self.method)

    @property
    def variables(self) -> tuple[str, ...]:
        """Every data column the model uses (response, fixed, slopes, groups), no repeats."""
        extra = self.residuals.variables if self.residuals is not None else ()
        if self.formula is not None:
            return tuple(dict.fromkeys(self.formula.columns() + extra))
        seen: dict[str, None] = {self.response: None}
        for t in self.fixed:
            for v in t.variables:
                seen.setdefault(v)
        for lv in self.levels:
            for s in lv.slopes:
                seen.setdefault(s)
            seen.setdefault(lv.group)
        for glmm_input in (self.trials, self.offset, self.exposure):
            if isinstance(glmm_input, str):
                seen.setdefault(glmm_input)
        for v in extra:
            seen.setdefault(v)
        return tuple(seen)

    @property
    def reml(self) -> bool:
        """True when the method is REML."""
        return self.method == "reml"

    def with_method(self, method: Method) -> ModelSpec:
        """The same model with another estimation method."""
        return replace(self, method=method)

    # Parsers and renderers live in their own modules; imported lazily to keep this one small.
    @classmethod
    def from_stata(cls, command: str) -> ModelSpec:
        """Parse a Stata ``mixed`` command (see :mod:`hlmbridge.spec.parse_stata`)."""
        from hlmbridge.spec.parse_stata import parse_stata

        return parse_stata(command)

    @classmethod
    def from_lme4(cls, formula: str, *, reml: bool = True) -> ModelSpec:
        """Parse an lme4 formula; REML unless ``reml=False`` (see :mod:`hlmbridge.spec.parse_lme4`)."""
        from hlmbridge.spec.parse_lme4 import parse_lme4

        return parse_lme4(formula, reml=reml)

    @classmethod
    def parse(cls, text: str, *, reml: bool | None = None) -> ModelSpec:
        """A Stata command when ``text`` starts with ``mixed`` (after ``qui``), else an lme4 formula."""
        from hlmbridge.spec.translate import parse_any

        return parse_any(text, reml=reml)

    def to_lme4(self):  # -> hlmbridge.spec.render.Lme4Model
        """Render for lme4 (see :func:`hlmbridge.spec.render.to_lme4`)."""
        from hlmbridge.spec.render import to_lme4

        return to_lme4(self)

    def to_statsmodels(self):  # -> hlmbridge.spec.render.StatsmodelsModel
        """Render ``MixedLM.from_formula`` arguments (see :func:`hlmbridge.spec.render.to_statsmodels`)."""
        from hlmbridge.spec.render import to_statsmodels

        return to_statsmodels(self)

    def to_stata(self) -> str:
        """Render a Stata ``mixed`` command that parses back to an equal spec."""
        from hlmbridge.spec.render import to_stata

        return to_stata(self)
