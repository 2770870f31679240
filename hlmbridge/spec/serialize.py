"""Plain-dict (JSON) form of a :class:`~hlmbridge.spec.model.ModelSpec`.

Examples
--------
>>> from hlmbridge.spec.model import ModelSpec, RandomLevel
>>> spec = ModelSpec("y", levels=(RandomLevel("g"),))
>>> spec_from_dict(spec_to_dict(spec)) == spec
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hlmbridge.errors import SpecError
from hlmbridge.spec.model import ModelSpec, RandomLevel, Term, Var

__all__ = ["spec_from_dict", "spec_to_dict"]


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """The spec as nested dicts and lists of plain values (an lme4-formula spec as its formula)."""
    glmm = ({"family": spec.family, "link": spec.link, "intmethod": spec.intmethod, "intpoints": spec.intpoints,
             "eform": spec.eform, **{k: getattr(spec, k) for k in ("trials", "offset", "exposure")
                                    if getattr(spec, k) is not None}} if spec.is_glmm else {})
    if spec.residuals is not None:  # issue 25: Stata's residuals() structure
        r = spec.residuals
        glmm["residuals"] = {"kind": r.kind, "t": r.t, "by": r.by, "order": r.order, "group": r.group}
    if spec.formula is not None:
        return {"lme4_formula": spec.formula.r_formula(), "method": spec.method, **glmm}
    return {
        "response": spec.response,
        "fixed": [[{"name": v.name, "factor": v.factor, "base": v.base} for v in t.vars] for t in spec.fixed],
        "levels": [
            {
                "group": lv.group,
                "slopes": list(lv.slopes),
                "intercept": lv.intercept,
                "cov": lv.cov,
                "nested": lv.nested,
            }
            for lv in spec.levels
        ],
        "constant": spec.constant,
        "method": spec.method,
        **glmm,
    }


def spec_from_dict(d: Mapping[str, Any]) -> ModelSpec:
    """Inverse of :func:`spec_to_dict`."""
    if isinstance(d, Mapping) and "lme4_formula" in d:
        from hlmbridge.spec.parse_lme4 import parse_lme4

        return _with_glmm(parse_lme4(d["lme4_formula"], reml=d.get("method") == "reml"), d)
    try:
        return _with_glmm(ModelSpec(
            response=d["response"],
            fixed=tuple(Term(tuple(Var(**v) for v in t)) for t in d["fixed"]),
            levels=tuple(
                RandomLevel(
                    group=lv["group"],
                    slopes=tuple(lv["slopes"]),
                    intercept=lv["intercept"],
                    cov=lv["cov"],
                    nested=lv["nested"],
                )
                for lv in d["levels"]
            ),
            constant=d["constant"],
            method=d["method"],
        ), d)
    except (KeyError, TypeError) as exc:
        raise SpecError(f"not a serialized ModelSpec: {exc}") from exc


def _with_glmm(spec: ModelSpec, d: Mapping[str, Any]) -> ModelSpec:
    """The spec with the family, link and integration of a serialized GLMM (unchanged for an LMM),
    and a serialized residual structure."""
    from dataclasses import replace

    if d.get("residuals") is not None:
        from hlmbridge.spec.residuals import ResidualStructure

        spec = replace(spec, residuals=ResidualStructure(**d["residuals"]))
    if d.get("family", "gaussian") == "gaussian":
        return spec

    return replace(spec.with_family(d["family"], d.get("link"), d.get("intmethod"), d.get("intpoints")),
                   eform=d.get("eform"), trials=d.get("trials"), offset=d.get("offset"), exposure=d.get("exposure"))
