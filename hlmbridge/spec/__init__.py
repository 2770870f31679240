"""Stage 1 — the model: an immutable :class:`~hlmbridge.spec.model.ModelSpec`, read from a Stata
``mixed`` command or an lme4 formula and written back in every syntax.

- ``model``        the data model (ModelSpec, RandomLevel, Term, Var)
- ``parse_stata``  Stata ``mixed`` commands → ModelSpec
- ``parse_lme4``   lme4 formulas → ModelSpec
- ``translate``    ``parse_any`` (either syntax) and ``translate`` (the model in every syntax)
- ``render``       ModelSpec → lme4 formula / statsmodels arguments / Stata command
- ``serialize``    ModelSpec ↔ plain dicts (JSON)

This package imports nothing at load time; import the module you need.
"""
