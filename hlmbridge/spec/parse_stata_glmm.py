"""Stata's GLMM commands: ``melogit``, ``mepoisson`` and ``xtlogit ..., re``.

Each is read as the ``mixed`` command with the same fixed and random parts
(:mod:`hlmbridge.spec.parse_stata`), plus a family and the integration Stata uses:

- ``melogit``/``mepoisson``: ``intmethod(mvaghermite)`` with 7 points unless
  ``intpoints(k)`` / ``intmethod(laplace|mcaghermite|ghermite)`` say otherwise;
- ``xtlogit depvar indepvars, i(g) re``: the random-intercept logit, 12 points of
  ``mvaghermite`` by default (xtlogit's ``intmethod(aghermite)`` is ``mcaghermite``).

``or``/``irr`` are kept as the display option they are. ``reml``, ``mle`` and ``dfmethod()``
are ``mixed`` options, not these commands'; they are refused.

Examples
--------
>>> spec = parse_stata_glmm("melogit hosp loginc || mother:, intpoints(12)")
>>> spec.family, spec.intmethod, spec.intpoints
('binomial', 'mvaghermite', 12)
>>> parse_stata_glmm("xtlogit hosp loginc, i(mother) re").levels[0].group
'mother'
"""

from __future__ import annotations

import re
from dataclasses import replace

from hlmbridge.errors import SpecError
from hlmbridge.spec.model import ModelSpec
from hlmbridge.spec.parse_stata import parse_stata_method

__all__ = ["GLMM_COMMANDS", "parse_stata_glmm"]

#: The Stata GLMM commands hlmbridge reads, with their family.
GLMM_COMMANDS: dict[str, str] = {"melogit": "binomial", "mepoisson": "poisson", "xtlogit": "binomial"}

_HEAD = re.compile(r"\s*(?:\.(?=\s|$))?\s*(?:(?:qui|quie|quiet|quietl|quietly)(?=[\s:]|$)\s*(?::\s*)?)?"
                   r"(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?=\s|$)")
_OPTION = re.compile(r"(?P<word>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\((?P<arg>[^()]*)\))?")
_INTMETHODS = {"mvaghermite": "mvaghermite", "mcaghermite": "mcaghermite", "ghermite": "ghermite",
               "laplace": "laplace"}
_XT_INTMETHODS = {"mvaghermite": "mvaghermite", "aghermite": "mcaghermite", "ghermite": "ghermite"}


def _abbrev(word: str, full: str, shortest: int) -> bool:
    return len(word) >= shortest and full.startswith(word)


def _method_name(arg: str, table: dict[str, str], command: str) -> str:
    word = arg.strip().lower()
    hits = [v for k, v in table.items() if k.startswith(word) and len(word) >= 2]
    if len(set(hits)) != 1:
        raise SpecError(f"intmethod({arg.strip()}): {command} takes intmethod({'|'.join(table)})")
    return hits[0]


def parse_stata_glmm(command: str) -> ModelSpec:
    """Parse ``melogit``, ``mepoisson`` or ``xtlogit ..., re`` into a GLMM spec.

    Raises
    ------
    SpecError
        Not one of these commands, or an option hlmbridge does not apply (named).
    """
    if not isinstance(command, str):
        raise SpecError(f"a Stata command must be a string, got {type(command).__name__}")
    m = _HEAD.match(command)
    word = m.group("word") if m else None
    if word not in GLMM_COMMANDS:
        raise SpecError(f"not a Stata GLMM command ({', '.join(GLMM_COMMANDS)}): {command.strip()!r}")
    body = command[m.end():]  # type: ignore[union-attr]
    points: int | None = None
    method: str | None = None
    eform: str | None = None
    kept_equations = []
    xt_group: str | None = None
    equations = body.split("||")
    if word == "xtlogit" and len(equations) > 1:
        raise SpecError("xtlogit takes its panel variable as i(panelvar), not a '||' equation")
    for k, eq in enumerate(equations):
        varlist, comma, opts = eq.partition(",")
        kept: list[str] = []
        for om in _OPTION.finditer(opts):
            w, arg = om.group("word"), om.group("arg")
            low = w.lower()
            if _abbrev(low, "intpoints", 4):
                if arg is None or not arg.strip().isdigit() or int(arg) < 1:
                    raise SpecError(f"intpoints() needs a positive whole number, got {om.group(0)!r}")
                if points is not None:
                    raise SpecError("intpoints() is given twice")
                points = int(arg)
            elif _abbrev(low, "intmethod", 4):
                if arg is None:
                    raise SpecError("intmethod() needs a method, e.g. intmethod(laplace)")
                method = _method_name(arg, _XT_INTMETHODS if word == "xtlogit" else _INTMETHODS, word)
            elif low in ("or", "irr"):
                want = "or" if GLMM_COMMANDS[word] == "binomial" else "irr"
                if low != want:
                    raise SpecError(f"{word} takes '{want}', not '{low}'")
                eform = low
            elif low in ("reml", "mle", "ml") or _abbrev(low, "dfmethod", 3):
                raise SpecError(f"'{w}' is an option of mixed, not of {word} (a GLMM is fitted by maximum "
                                "likelihood with z tests)")
            elif word == "xtlogit" and low == "i" and arg is not None:
                xt_group = arg.strip()
            elif word == "xtlogit" and low == "re":
                pass
            elif word == "xtlogit" and low in ("fe", "pa", "be", "vce", "robust", "cluster"):
                raise SpecError(f"xtlogit option {w!r}: hlmbridge reads only the random-effects model, "
                                "'xtlogit ..., i(panelvar) re'")
            elif _abbrev(low, "offset", 3) or _abbrev(low, "exposure", 3) or _abbrev(low, "binomial", 3):
                raise SpecError(f"option {om.group(0)!r} of {word} is not supported yet by hlmbridge")
            else:
                kept.append(om.group(0))
        kept_equations.append(varlist + ((", " + " ".join(kept)) if kept else ""))
    if word == "xtlogit":
        if xt_group is None:
            raise SpecError("xtlogit needs its panel variable: add i(panelvar)")
        if method is None:
            method = "mvaghermite"
        if points is None:
            points = 12  # xtlogit's default
        kept_equations.append(f" {xt_group}:")
    if method == "laplace":
        if points not in (None, 1):
            raise SpecError(f"intmethod(laplace) uses one point; intpoints({points}) contradicts it")
        points = 1
    text = "mixed" + "||".join(kept_equations)
    spec, stated = parse_stata_method(text)
    if stated is not None:  # unreachable: reml/mle were refused above
        raise SpecError(f"{word} has no {stated} option")
    glmm = spec.with_family(GLMM_COMMANDS[word], intmethod=method or "mvaghermite",  # type: ignore[arg-type]
                            intpoints=points)
    return replace(glmm, _source=command, eform=eform)
