"""Stage 7 — the cross-check: judge results against references, and report.

- ``crosscheck``  pure comparison: ``crosscheck(reference, actuals)`` → CheckReport
- ``validate``    the main job: fit every fixture case with every engine and cross-check
- ``report``      text / JSON / Markdown / JUnit renderings of a CheckReport
- ``testing``     ``assert_matches`` for users' own pytest suites

This package imports nothing at load time; import the module you need.
"""
