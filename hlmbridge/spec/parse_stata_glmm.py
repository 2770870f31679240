"""Stata's GLMM commands: ``melogit``, ``meprobit``, ``mecloglog``, ``mepoisson``, ``menbreg``,
``meglm`` and ``xtlogit``/``xtprobit``/``xtpoisson ..., re``.

Each is read as the ``mixed`` command with the same fixed and random parts
(:mod:`hlmbridge.spec.parse_stata`), plus a family, a link and the integration Stata uses:

- ``melogit``/``meprobit``/``mecloglog``/``mepoisson``/``meglm``: ``intmethod(mvaghermite)``
  with 7 points unless ``intpoints(k)`` / ``intmethod(laplace|mcaghermite|ghermite)`` say
  otherwise; ``meglm`` takes its family and link from ``family(binomial|bernoulli|poisson)``
  and ``link(logit|probit|cloglog|log)`` (Stata's defaults: the family's canonical link);
- ``xtlogit``/``xtprobit depvar indepvars, i(g) re``: the random-intercept model, 12 points of
  ``mvaghermite`` by default (xt's ``intmethod(aghermite)`` is ``mcaghermite``);
  ``xtpoisson ..., re normal`` likewise (without ``normal`` its random effect is gamma, another
  model, refused);
- ``menbreg``: the negative binomial model with mean dispersion (Stata's default,
  ``dispersion(mean)``: var = mu (1 + alpha mu), lme4's ``glmer.nb``); ``dispersion(constant)``
  (var = mu (1 + delta), another model) is refused;
- ``binomial(varname|#)`` (trials; the response counts successes), ``offset(varname)`` and
  ``exposure(varname)`` (Poisson) are kept on the spec.

``or``/``irr`` are kept as the display option they are. ``reml``, ``mle`` and ``dfmethod()``
are ``mixed`` options, not these commands'; they are refused.

Examples
--------
>>> spec = parse_stata_glmm("melogit hosp loginc || mother:, intpoints(12)")
>>> spec.family, spec.intmethod, spec.intpoints
('binomial', 'mvaghermite', 12)
>>> parse_stata_glmm("xtlogit hosp loginc, i(mother) re").levels[0].group
'mother'
>>> parse_stata_glmm("meglm hosp loginc || mother:, family(binomial) link(probit)").link
'probit'
>>> parse_stata_glmm("mepoisson y x, exposure(t) || g:").exposure
't'
>>> parse_stata_glmm("menbreg y x || g:, irr").family
'negative_binomial'
"""

from __future__ import annotations

import re
from dataclasses import replace

from hlmbridge.errors import SpecError
from hlmbridge.spec.model import FAMILY_LINKS, ModelSpec
from hlmbridge.spec.parse_stata import parse_stata_method

__all__ = ["GLMM_COMMANDS", "parse_stata_glmm"]

#: The Stata GLMM commands hlmbridge reads, with their family (meglm's comes from family()).
GLMM_COMMANDS: dict[str, str] = {"melogit": "binomial", "meprobit": "binomial", "mecloglog": "binomial",
                                 "mepoisson": "poisson", "meglm": "gaussian", "xtlogit": "binomial",
                                 "xtprobit": "binomial", "xtpoisson": "poisson", "menbreg": "negative_binomial"}
#: Commands recognized but not fitted yet, with the sentence that refuses them.
_NOT_YET: dict[str, str] = {}
#: Each command's link (meglm's comes from link()).
_COMMAND_LINKS: dict[str, str] = {"melogit": "logit", "meprobit": "probit", "mecloglog": "cloglog",
                                  "mepoisson": "log", "menbreg": "log", "xtlogit": "logit", "xtprobit": "probit", "xtpoisson": "log"}
_XT = ("xtlogit", "xtprobit", "xtpoisson")

_HEAD = re.compile(r"\s*(?:\.(?=\s|$))?\s*(?:(?:qui|quie|quiet|quietl|quietly)(?=[\s:]|$)\s*(?::\s*)?)?"
                   r"(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?=\s|$)")
_OPTION = re.compile(r"(?P<word>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\((?P<arg>[^()]*)\))?")
_INTMETHODS = {"mvaghermite": "mvaghermite", "mcaghermite": "mcaghermite", "ghermite": "ghermite",
               "laplace": "laplace"}
_XT_INTMETHODS = {"mvaghermite": "mvaghermite", "aghermite": "mcaghermite", "ghermite": "ghermite"}
#: meglm's family() words (Stata's minimal abbreviations) -> hlmbridge's family.
_MEGLM_FAMILIES = (("bernoulli", 4, "binomial"), ("binomial", 2, "binomial"), ("poisson", 3, "poisson"),
                   ("gaussian", 3, "gaussian"))
_LINK_WORDS = ("logit", "probit", "cloglog", "log", "identity")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _abbrev(word: str, full: str, shortest: int) -> bool:
    return len(word) >= shortest and full.startswith(word)


def _method_name(arg: str, table: dict[str, str], command: str) -> str:
    word = arg.strip().lower()
    hits = [v for k, v in table.items() if k.startswith(word) and len(word) >= 2]
    if len(set(hits)) != 1:
        raise SpecError(f"intmethod({arg.strip()}): {command} takes intmethod({'|'.join(table)})")
    return hits[0]


def _trials(arg: str | None, where: str) -> str | int:
    """binomial(varname|#): a variable name or a positive whole number."""
    text = (arg or "").strip()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if _NAME.match(text):
        return text
    raise SpecError(f"{where} needs the number of trials, a variable name or a positive whole number, got "
                    f"{text!r}")


def _variable(arg: str | None, option: str) -> str:
    text = (arg or "").strip()
    if not _NAME.match(text):
        raise SpecError(f"{option}() needs one variable name, got {text!r}")
    return text


def _meglm_family(arg: str | None) -> tuple[str, str | int | None]:
    """meglm's family(): hlmbridge's family and, for binomial, the trials it names."""
    parts = (arg or "").split()
    if not parts:
        raise SpecError("family() needs a family, e.g. family(binomial)")
    word = parts[0].lower()
    for full, shortest, fam in _MEGLM_FAMILIES:
        if _abbrev(word, full, shortest):
            break
    else:
        raise SpecError(f"meglm family({arg.strip()}): hlmbridge reads family(bernoulli), family(binomial "  # type: ignore[union-attr]
                        "[varname|#]) and family(poisson) (not yet: nbinomial, gamma, ordinal ...)")
    if fam == "gaussian":
        raise SpecError("meglm with family(gaussian) is the linear mixed model: write it as 'mixed'")
    if len(parts) > 2 or (len(parts) == 2 and full != "binomial"):
        raise SpecError(f"meglm family({arg.strip()}): only family(binomial) takes an argument, the trials")  # type: ignore[union-attr]
    return fam, (_trials(parts[1], "family(binomial ...)") if len(parts) == 2 else None)


def parse_stata_glmm(command: str) -> ModelSpec:
    """Parse a Stata GLMM command (see the module) into a GLMM spec.

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
    if word in _NOT_YET:
        raise SpecError(_NOT_YET[word])
    body = command[m.end():]  # type: ignore[union-attr]
    family: str = GLMM_COMMANDS[word]
    link: str | None = _COMMAND_LINKS.get(word)
    points: int | None = None
    method: str | None = None
    eform: str | None = None
    trials: str | int | None = None
    offset: str | None = None
    exposure: str | None = None
    xt_re = xt_normal = False
    kept_equations = []
    xt_group: str | None = None
    equations = body.split("||")
    if word in _XT and len(equations) > 1:
        raise SpecError(f"{word} takes its panel variable as i(panelvar), not a '||' equation")
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
                method = _method_name(arg, _XT_INTMETHODS if word in _XT else _INTMETHODS, word)
            elif low in ("or", "irr", "eform"):
                eform = low
            elif low in ("reml", "mle", "ml") or _abbrev(low, "dfmethod", 3):
                raise SpecError(f"'{w}' is an option of mixed, not of {word} (a GLMM is fitted by maximum "
                                "likelihood with z tests)")
            elif word == "meglm" and _abbrev(low, "family", 3) and arg is not None:
                family, fam_trials = _meglm_family(arg)
                if fam_trials is not None:
                    trials = fam_trials
            elif word == "meglm" and _abbrev(low, "link", 4) and arg is not None:
                hits = [x for x in _LINK_WORDS if x == arg.strip().lower()]
                if not hits:
                    raise SpecError(f"meglm link({arg.strip()}): hlmbridge reads link(logit|probit|cloglog|log)")
                link = hits[0]
            elif word in _XT and low == "i" and arg is not None:
                xt_group = arg.strip()
            elif word in _XT and low == "re":
                xt_re = True
            elif word == "xtpoisson" and _abbrev(low, "normal", 4):
                xt_normal = True
            elif word in _XT and low in ("fe", "pa", "be", "vce", "robust", "cluster"):
                raise SpecError(f"{word} option {w!r}: hlmbridge reads only the random-effects model, "
                                f"'{word} ..., i(panelvar) re'")
            elif word == "menbreg" and _abbrev(low, "dispersion", 4):
                kind = (arg or "").strip().lower()
                if kind and "mean".startswith(kind):
                    continue  # Stata's default: var = mu (1 + alpha mu), glmer.nb's model
                raise SpecError(f"menbreg {om.group(0)}: hlmbridge fits the mean-dispersion model (Stata's default, "
                                "var = mu(1 + alpha mu), lme4's glmer.nb); dispersion(constant), var = mu(1 + delta), "
                                "is another model that glmer.nb does not fit")
            elif low == "binomial" and arg is not None:
                if word not in ("melogit", "meprobit", "mecloglog"):
                    raise SpecError(f"{word} has no binomial() option"
                                    + (" (meglm writes family(binomial varname|#))" if word == "meglm" else ""))
                trials = _trials(arg, "binomial()")
            elif low == "offset" and arg is not None:
                offset = _variable(arg, "offset")
            elif _abbrev(low, "exposure", 3) and arg is not None:
                exposure = _variable(arg, "exposure")
            else:
                kept.append(om.group(0))
        kept_equations.append(varlist + ((", " + " ".join(kept)) if kept else ""))
    if family == "gaussian":  # meglm without family(): Stata's default is gaussian
        raise SpecError("meglm without family() is Stata's gaussian model, the linear mixed model: write it as "
                        "'mixed', or give family(binomial|bernoulli|poisson)")
    if link is None or link == "identity":
        link = FAMILY_LINKS[family][0] if link is None else link
    if link not in FAMILY_LINKS[family]:
        raise SpecError(f"{word}: the {family} family with link({link}) is not supported (it takes "
                        f"{'|'.join(FAMILY_LINKS[family])})")
    if eform is not None:
        want = {("binomial", "logit"): "or", ("poisson", "log"): "irr",
                ("negative_binomial", "log"): "irr"}.get((family, link))
        if want is None:
            raise SpecError(f"'{eform}' does not apply to {word} with the {family} family and the {link} link "
                            "(or: binomial with the logit link; irr: poisson)")
        if eform not in ("eform", want):
            raise SpecError(f"{word} takes '{want}', not '{eform}'")
        eform = want
    if exposure is not None and family not in ("poisson", "negative_binomial"):
        raise SpecError(f"{word} has no exposure() option (it belongs to Poisson models; use offset())")
    if word in _XT:
        if xt_group is None:
            raise SpecError(f"{word} needs its panel variable: add i(panelvar)")
        if not xt_re and word == "xtpoisson":
            raise SpecError("xtpoisson without 're normal' is not read: hlmbridge fits normal random effects, "
                            "'xtpoisson ..., i(panelvar) re normal'")
        if word == "xtpoisson" and not xt_normal:
            raise SpecError("xtpoisson ..., re has a gamma-distributed random effect, another model than a normal "
                            "random intercept: add 'normal' ('xtpoisson ..., re normal') for the model hlmbridge fits")
        if method is None:
            method = "mvaghermite"
        if points is None:
            points = 12  # xtlogit's, xtprobit's and xtpoisson, re normal's default
        kept_equations.append(f" {xt_group}:")
    if method == "laplace":
        if points not in (None, 1):
            raise SpecError(f"intmethod(laplace) uses one point; intpoints({points}) contradicts it")
        points = 1
    text = "mixed" + "||".join(kept_equations)
    spec, stated = parse_stata_method(text)
    if stated is not None:  # unreachable: reml/mle were refused above
        raise SpecError(f"{word} has no {stated} option")
    glmm = spec.with_family(family, link, intmethod=method or "mvaghermite",  # type: ignore[arg-type]
                            intpoints=points)
    return replace(glmm, _source=command, eform=eform, trials=trials, offset=offset, exposure=exposure)
