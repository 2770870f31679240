"""Stage 2 — the design: the rows and the fixed- and random-effects columns every engine fits.

- ``build``  ``build_design(spec, data)`` → :class:`~hlmbridge.design.build.Design`
  (listwise deletion, factor coding, labels in lme4's and Stata's vocabularies)
- ``cache``  per-data-frame reuse of designs and R column copies, keyed by content fingerprints

This package imports nothing at load time; import the module you need.
"""
