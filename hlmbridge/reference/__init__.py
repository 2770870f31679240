"""Stage 6 — reference numbers: Stata logs read into fixtures, and the matching actual numbers.

- ``stata_log``   parse a Stata log (``mixed``, ``estat``, ``lrtest``, ``di``, ``summarize`` …)
- ``fixtures``    the TOML fixture format with provenance and tolerances; ``import_stata``
- ``quantities``  the actual number for each fixture key, taken from fit results

This package imports nothing at load time; import the module you need.
"""
