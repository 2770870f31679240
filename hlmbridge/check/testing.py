"""Test helper: assert that fitted results reproduce a reference.

Examples
--------
>>> from hlmbridge.check.testing import assert_matches
>>> callable(assert_matches)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["assert_matches"]


def assert_matches(result_or_results: Any, reference: Any, engine: str | None = None) -> Any:
    """Raise AssertionError (with the rendered table) unless every number matches.

    Parameters
    ----------
    result_or_results
        A FitResult (used for every model the reference names), a sequence of FitResults
        (matched to the reference's models in order), or ``{model command: FitResult}``.
    reference
        A :class:`~hlmbridge.reference.fixtures.Reference` or a path to a fixture file.
    engine
        Name used in the report (default: the result's ``engine``).

    Returns
    -------
    CheckReport
        The report, when it is ok.
    """
    from hlmbridge.check.crosscheck import crosscheck
    from hlmbridge.reference.fixtures import Reference, load_reference
    from hlmbridge.reference.quantities import quantities_for

    ref = reference if isinstance(reference, Reference) else load_reference(reference)
    if isinstance(result_or_results, Mapping):
        by_cmd = dict(result_or_results)
    elif isinstance(result_or_results, Sequence) and not isinstance(result_or_results, str):
        if len(result_or_results) != len(ref.models):
            raise AssertionError(f"{ref.case} names {len(ref.models)} models, got {len(result_or_results)} results")
        by_cmd = {m.command: r for m, r in zip(ref.models, result_or_results)}
    else:
        by_cmd = {m.command: result_or_results for m in ref.models}
    first = next(iter(by_cmd.values()), None)
    name = engine or getattr(first, "engine", "result")
    report = crosscheck(ref, {name: quantities_for(ref, by_cmd)})
    if not report.ok:
        raise AssertionError(f"{ref.case} ({ref.path}) does not match:\n{report.render()}")
    return report
