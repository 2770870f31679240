"""Parse an lme4 model formula into a :class:`~hlmbridge.spec.model.ModelSpec`.

The formula keeps its R meaning: :mod:`hlmbridge.spec.rformula` reads it as R's
``terms()`` and lme4's ``findbars`` do, and the design is built by R's ``model.matrix``
rules (:mod:`hlmbridge.design.model_matrix`). Which columns are factors is a property
of the data (a string, boolean or ``Categorical`` column) or of the formula
(``factor(x)``), as in R.

Examples
--------
>>> from hlmbridge.spec.parse_lme4 import parse_lme4
>>> spec = parse_lme4("mathach ~ ses * factor(sector) + (ses | id)", reml=False)
>>> spec.formula.fixed.labels, spec.method
(('ses', 'factor(sector)', 'ses:factor(sector)'), 'ml')
>>> spec.variables
('mathach', 'ses', 'sector', 'id')
"""

from __future__ import annotations

from hlmbridge.spec.model import ModelSpec
from hlmbridge.spec.rformula import parse_formula

__all__ = ["R_RESERVED", "parse_lme4"]

#: Words R reserves; they must be backtick-quoted to be used as names.
R_RESERVED: frozenset[str] = frozenset(
    "if else repeat while function for in next break TRUE FALSE NULL Inf NaN NA NA_integer_ "
    "NA_real_ NA_character_ NA_complex_ T F".split()
)


def parse_lme4(formula: str, *, reml: bool = True) -> ModelSpec:
    """Parse an lme4 formula; REML unless ``reml=False`` (lme4's default is REML).

    Raises
    ------
    SpecError
        With ``text`` and ``position`` pointing at the problem.

    Examples
    --------
    >>> spec = parse_lme4("y ~ x + (1 | school/class)")
    >>> [b.label for b in spec.formula.random], spec.method
    (['class:school', 'school'], 'reml')
    >>> parse_lme4("y ~ 0 + x + (x || g)", reml=False).formula.fixed.intercept
    False
    """
    parsed = parse_formula(formula)
    return ModelSpec(response="_", method="reml" if reml else "ml", _source=formula, formula=parsed)
