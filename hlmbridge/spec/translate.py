"""Model syntaxes: Stata ``mixed`` commands and lme4 formulas, and translation between them.

:func:`parse_any` tells the two apart; :func:`translate` shows one model in every syntax
(the ``hlmbridge translate`` command prints it).

Examples
--------
>>> from hlmbridge.spec.translate import parse_any
>>> parse_any("mixed mathach ses || id:").method
'ml'
>>> parse_any("mathach ~ ses + (1 | id)").method
'reml'
"""

from __future__ import annotations

import re

from hlmbridge.errors import SpecError, UnsupportedSpecError
from hlmbridge.spec.model import GLMM_NO_REML, ModelSpec
from hlmbridge.spec.parse_stata_glmm import GLMM_COMMANDS, parse_stata_glmm
from hlmbridge.spec.parse_lme4 import parse_lme4
from hlmbridge.spec.parse_stata import parse_stata, parse_stata_method

__all__ = ["parse_any", "parse_lme4", "parse_stata", "translate"]

_STATA_HEAD = re.compile(
    r"\s*(?:\.(?=\s|$))?\s*(?:(?:qui|quie|quiet|quietl|quietly)(?=[\s:]|$)\s*(?::\s*)?)?(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
)


def parse_any(text: str, *, reml: bool | None = None) -> ModelSpec:
    """Parse a Stata ``mixed`` command or an lme4 formula.

    Parameters
    ----------
    text
        A string starting with ``mixed`` (after an optional ``. `` prompt and ``qui``/
        ``quietly``) is a Stata command; one containing ``~`` is an lme4 formula.
    reml
        ``None``: the syntax's own default (Stata: ML unless the command says ``reml``;
        lme4: REML). ``True``/``False`` asks for REML/ML; for a Stata command that states
        ``reml`` or ``mle`` a conflicting request raises :class:`SpecError`.

    Raises
    ------
    SpecError
        Malformed input, or text that is neither syntax (``qui mathach ses || id:`` gets
        "this is not a mixed command ... did you mean 'mixed mathach ...'").

    Examples
    --------
    >>> parse_any("mixed y x || id:", reml=True).method
    'reml'
    >>> parse_any("y ~ x + (1 | id)", reml=False).method
    'ml'
    """
    if not isinstance(text, str):
        raise SpecError(f"a model must be given as a string, got {type(text).__name__}")
    if not text.strip():
        raise SpecError("empty model: give a Stata 'mixed' command or an lme4 formula ('y ~ x + (1 | g)')")
    if reml is not None and not isinstance(reml, bool):
        raise SpecError(f"reml must be True, False or None, got {reml!r}")
    head = _STATA_HEAD.match(text)
    word = head.group("word") if head else None
    if word in GLMM_COMMANDS:
        spec = parse_stata_glmm(text)
        if reml:
            raise SpecError(GLMM_NO_REML)
        return spec
    if word in ("mixed", "xtmixed", "xtreg"):
        spec, stated = parse_stata_method(text)
        if reml is None:
            return spec
        wanted = "reml" if reml else "ml"
        if stated is not None and stated != wanted:
            raise SpecError(
                f"the command says {'reml' if stated == 'reml' else 'mle'} but "
                f"reml={reml} was asked for; drop one of them"
            )
        if spec.method == wanted:
            return spec
        return ModelSpec(spec.response, spec.fixed, spec.levels, spec.constant, wanted, _source=text,  # type: ignore[arg-type]
                         residuals=spec.residuals)
    if "~" in text:
        return parse_lme4(text, reml=True if reml is None else reml)
    if "||" in text:
        return parse_stata(text)  # raises: "this is not a mixed command ... (did you mean ...)"
    raise SpecError(
        "cannot tell what this is: neither a Stata 'mixed' command nor an lme4 formula "
        f"(which needs '~'): {text.strip()!r}"
    )


def _indent(label: str, body: str) -> list[str]:
    lines = body.splitlines() or [""]
    pad = " " * 14
    return [f"{label:<14}{lines[0]}"] + [pad + ln for ln in lines[1:]]


def translate(text: str, *, reml: bool | None = None) -> str:
    """The model in all three syntaxes plus the method, as a readable block.

    An engine that cannot express the model exactly gets a line "not expressible: <reason>"
    instead of a different model.

    Examples
    --------
    >>> print(translate("mixed mathach ses || id: ses, cov(unstr)"))
    model:        mixed mathach ses || id: ses, cov(unstr)
    method:       ML (maximum likelihood)
    Stata:        mixed mathach ses || id: ses, cov(unstructured)
    lme4:         fit <- lme4::lmer(mathach ~ 1 + ses + (1 + ses | id), data = data, REML = FALSE)
    statsmodels:  import statsmodels.formula.api as smf
                  model = smf.mixedlm('mathach ~ 1 + ses', df, groups='id', re_formula='1 + ses', vc_formula=None)
                  result = model.fit(reml=False, method=['powell', 'lbfgs'])
    """
    from hlmbridge.spec.render import to_lme4, to_stata, to_statsmodels

    spec = parse_any(text, reml=reml)
    out = _indent("model:", text.strip())
    out += _indent("method:", "REML (restricted maximum likelihood)" if spec.reml else "ML (maximum likelihood)")
    if spec.is_glmm:
        out += _indent("family:", f"{spec.family} ({spec.link} link); integration: {spec.intmethod}, "
                                  f"{spec.intpoints} point{'s' if spec.intpoints != 1 else ''}")
    try:
        stata = to_stata(spec)
    except UnsupportedSpecError as e:
        stata = f"not expressible: {e}"
    out += _indent("Stata:", stata)
    try:
        lme4 = to_lme4(spec).r_code()
    except UnsupportedSpecError as e:
        lme4 = f"not expressible: {e}"
    out += _indent("lme4:", lme4)
    if spec.residuals is not None or any(lv.cov in ("identity", "exchangeable") and lv.n_terms > 1
                                         for lv in spec.levels):
        from hlmbridge.spec.render_nlme import to_nlme  # the nlme engine: structures lme4 lacks

        try:
            nlme = to_nlme(spec).r_code()
        except UnsupportedSpecError as e:
            nlme = f"not expressible: {e}"
        out += _indent("nlme:", nlme)
    out += _indent("statsmodels:", _statsmodels(spec, text.strip(), to_statsmodels))
    return "\n".join(out)


def _statsmodels(spec: ModelSpec, text: str, to_statsmodels: object) -> str:
    """What happens to the model with statsmodels: the formula code that fits it, or how
    hlmbridge's statsmodels engine fits it without one, or why that engine refuses it.

    The engine never goes through a statsmodels formula: it builds the design (Stata's rules
    for a command, R's ``model.matrix`` rules and hlmbridge's own evaluation of transforms for
    an lme4 formula) and gives ``MixedLM`` the arrays, so ``poly()``, ``log()``, ``scale()``,
    ``factor()`` ... fit on it although no statsmodels formula says them. It refuses only
    covariance structures MixedLM lacks (:meth:`~hlmbridge.engines.statsmodels.StatsmodelsEngine.unsupported`;
    for an lme4 formula, crossed grouping factors and correlated terms below the first are
    refused when the data show them).

    >>> print(translate("mathach ~ poly(ses, 2) + (1 | id)").split("statsmodels:  ")[1])
    hlmbridge's statsmodels engine fits it: hlmbridge builds the design (R's model.matrix rules,
                  transforms evaluated by hlmbridge) and gives MixedLM the arrays; no statsmodels formula says
                  the formula term poly(ses, 2) (write the column first for statsmodels alone):
                  import hlmbridge
                  result = hlmbridge.fit('mathach ~ poly(ses, 2) + (1 | id)', df, engine='statsmodels')
    """
    from hlmbridge.engines.statsmodels import StatsmodelsEngine

    refused = StatsmodelsEngine().unsupported(spec)
    try:
        code: str | None = to_statsmodels(spec).python_code()  # type: ignore[attr-defined]
        unsaid = None
    except UnsupportedSpecError as e:
        code, unsaid = None, e
    groups = {bar.label for bar in spec.formula.random} if spec.formula is not None else set()
    depends = ("" if len(groups) < 2 else
               "\nwith several grouping factors, hlmbridge's statsmodels engine refuses crossed ones and\n"
               "correlated terms below the first when the data show them (use engine='lme4')")
    if refused:
        said = f"hlmbridge's statsmodels engine refuses it: {refused[0]}"
        return f"{code}\n{said}" if code is not None else f"not expressible: {refused[0]}"
    if code is not None:
        return code + depends
    what = unsaid.construct if unsaid is not None else "this model"
    return ("hlmbridge's statsmodels engine fits it: hlmbridge builds the design (R's model.matrix rules,\n"
            "transforms evaluated by hlmbridge) and gives MixedLM the arrays; no statsmodels formula says\n"
            f"{what} (write the column first for statsmodels alone):\n"
            f"import hlmbridge\nresult = hlmbridge.fit({text!r}, df, engine='statsmodels')" + depends)
