"""Stata-style text for data summaries (display only; the numbers come from hlmbridge.data).

Examples
--------
>>> import pandas as pd
>>> from hlmbridge.data import summarize
>>> df = pd.DataFrame({"id": ["a", "b"], "x": [0.5, 1.0]})
>>> print(format_summarize(summarize(df)))
    Variable |        Obs        Mean    Std. dev.       Min        Max
-------------+---------------------------------------------------------
          id |          0
           x |          2         .75    .3535534         .5          1
"""

from __future__ import annotations

import math

import pandas as pd

from hlmbridge.errors import DataError

__all__ = ["stata_g9", "format_summarize"]

_HEADER = "    Variable |        Obs        Mean    Std. dev.       Min        Max"
_RULE = "-" * 13 + "+" + "-" * 57


def stata_g9(value: float) -> str:
    """Format a number the way Stata's ``%9.0g`` shows it in ``summarize``.

    At most 7 significant digits and 8 characters besides the sign, no leading zero
    before the decimal point, trailing zeros dropped; integers as integers; missing
    as ``"."``.

    Parameters
    ----------
    value : float

    Returns
    -------
    str

    Examples
    --------
    >>> [stata_g9(v) for v in (0.2747390397, -0.0001875, 1097.825, 2713.0, 0.000143354)]
    ['.274739', '-.0001875', '1097.825', '2713', '.0001434']
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "."
    v = float(value)
    if v == 0:
        return "0"
    if v.is_integer() and abs(v) < 1e9:
        return str(int(v))
    mag = abs(v)
    if mag >= 1e7 or mag < 1e-7:
        return f"{v:.3e}"
    exponent = math.floor(math.log10(mag))
    decimals = max(0, 6 - exponent)  # 7 significant digits
    while decimals > 0:
        text = f"{mag:.{decimals}f}"
        if text.startswith("0."):
            text = text[1:]
        if len(text) <= 8:
            break
        decimals -= 1
    text = f"{mag:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text.startswith("0."):
        text = text[1:]
    if text in ("", "0"):
        return "0"
    return ("-" if v < 0 else "") + text


def format_summarize(table: pd.DataFrame) -> str:
    """Render :func:`hlmbridge.data.summarize`'s table as Stata's ``summarize`` prints it.

    A rule separates every block of five variables, as in Stata's output.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns Variable, Obs, Mean, Std. dev., Min, Max.

    Returns
    -------
    str
        The table, lines joined by newlines (no trailing newline).

    Raises
    ------
    DataError
        ``table`` lacks one of the columns.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"Variable": ["size"], "Obs": [160], "Mean": [1097.825],
    ...                   "Std. dev.": [629.5064309], "Min": [100.0], "Max": [2713.0]})
    >>> print(format_summarize(t).splitlines()[-1])
            size |        160    1097.825    629.5064        100       2713
    """
    missing = [c for c in ("Variable", "Obs", "Mean", "Std. dev.", "Min", "Max") if c not in table]
    if missing:
        raise DataError(f"not a summarize table: missing column(s) {', '.join(missing)}")
    lines = [_HEADER, _RULE]
    for i, row in enumerate(table.itertuples(index=False)):
        variable, obs, mean, sd, lo, hi = row
        if i and i % 5 == 0:
            lines.append(_RULE)
        name = str(variable)
        if len(name) > 12:
            name = name[:5] + "~" + name[-6:]
        line = f"{name:>12} | {int(obs):>10,}"
        if int(obs) > 0:
            line += (
                f"   {stata_g9(mean):>9}   {stata_g9(sd):>9}"
                f"  {stata_g9(lo):>9}  {stata_g9(hi):>9}"
            )
        lines.append(line)
    return "\n".join(lines)
