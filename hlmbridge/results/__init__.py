"""Stage 5 — the result: one schema for every engine, and what is computed or shown from it.

- ``fit_result``      :class:`~hlmbridge.results.fit_result.FitResult` (immutable, JSON round trip)
- ``postestimation``  ``estat icc/recov/ic``, ``lrtest``, variance explained, sd/corr, tidy
- ``display``         the Stata-style ``mixed`` table (display only; never stored in the result)

This package imports nothing at load time; import the module you need.
"""
