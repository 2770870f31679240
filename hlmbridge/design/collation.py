"""The order R sorts text in, for the levels of a factor made from a text column.

R's ``factor(x)`` on text sorts the distinct values with ``sort()``, which compares strings
by the collation of R's locale (``LC_COLLATE``): byte (code-point) order in the ``C`` and
``POSIX`` locales, and otherwise, in an R built with ICU (the Debian/Ubuntu, CRAN macOS and
Windows builds), ICU's collator for the locale. ``C.UTF-8`` and the English locales use
ICU's root collation (CLDR), which puts ``a`` before ``B`` (lower case first among equal
letters), punctuation before digits before letters, and accents after the plain letter
(``e < E < é < É < ea``). So a text column with the labels a, B, c has base level ``a``
under ``C.UTF-8`` or ``en_US.UTF-8`` but ``B`` under ``C``.

hlmbridge reproduces both rules: code-point order, and ICU's root collation for text made of
printable ASCII characters and Latin letters with accents (the three UCA levels: letters,
then accents, then case). Where it cannot be sure of R's order (another character, two
labels that differ only in which accent they carry, a locale with its own tailoring such as
Danish ``aa``), :func:`r_sort` says so, and the factor refuses to be coded (see
:mod:`hlmbridge.design.model_matrix`) with the fix: pass the column as a pandas
``Categorical`` with the categories in the order wanted. The locale is read the way R
reads it at start-up, from ``LC_ALL``, then ``LC_COLLATE``, then ``LANG`` (``R_ICU_LOCALE``
overrides it for ICU).

Examples
--------
>>> r_sort(["c", "B", "a"], locale="C.UTF-8")
(('a', 'B', 'c'), True)
>>> r_sort(["c", "B", "a"], locale="C")
(('B', 'a', 'c'), True)
>>> r_sort(["x_1", "x-1", "x1", "X1", "x 1"], locale="en_US.UTF-8")[0]
('x 1', 'x_1', 'x-1', 'x1', 'X1')
>>> r_sort(["é", "e", "E", "f"], locale="C.UTF-8")
(('e', 'E', 'é', 'f'), True)
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Mapping

__all__ = ["collation_locale", "r_sort", "uses_icu_root"]

#: Printable ASCII (and tab, newline) in the order of ICU's root collation (CLDR root,
#: "non-ignorable": punctuation has primary weight): spaces, punctuation, symbols, currency,
#: digits, letters (upper and lower case share a primary weight; case is the third level).
_ROOT_ORDER = "\t\n _-,;:!?.'\"()[]{}@*/\\&#%`^+<=>|~$0123456789abcdefghijklmnopqrstuvwxyz"
_PRIMARY = {ch: i for i, ch in enumerate(_ROOT_ORDER)}
for _ch in "abcdefghijklmnopqrstuvwxyz":
    _PRIMARY[_ch.upper()] = _PRIMARY[_ch]

#: Languages whose ICU collation orders ASCII letters and accented Latin letters with
#: different base letters as the root collation does (their tailorings touch other letters).
_ROOT_LANGUAGES = frozenset({"en", "c", "posix", "root", "de", "fr", "it", "pt", "nl", "id", "ms", "ga", "af"})


def collation_locale(environ: Mapping[str, str] | None = None) -> str:
    """The collation locale R starts with: ``LC_ALL``, else ``LC_COLLATE``, else ``LANG``
    (``C`` when none is set), as R's ``setlocale(LC_COLLATE, "")`` reads them."""
    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_COLLATE", "LANG"):
        value = env.get(name, "")
        if value:
            return value
    return "C"


def uses_icu_root(locale: str, environ: Mapping[str, str] | None = None) -> bool | None:
    """True when R sorts text by ICU's root collation in ``locale``, False for byte order
    (``C``/``POSIX``), None when the locale's ICU collation may be tailored differently."""
    if locale in ("C", "POSIX"):
        return False
    env = os.environ if environ is None else environ
    icu = env.get("R_ICU_LOCALE", "") or locale
    language = icu.split(".")[0].split("_")[0].split("-")[0].split("@")[0].lower()
    return True if language in _ROOT_LANGUAGES else None


def _root_key(text: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """ICU root's three-level key of ``text``, or None when a character is not covered."""
    primary: list[int] = []
    secondary: list[int] = []
    tertiary: list[int] = []
    for ch in unicodedata.normalize("NFD", text):
        if ch in _PRIMARY:
            primary.append(_PRIMARY[ch])
            secondary.append(0)
            tertiary.append(1 if ch.isupper() else 0)
        elif unicodedata.category(ch) == "Mn" and primary and primary[-1] >= _PRIMARY["a"]:
            secondary.append(ord(ch))  # an accent on a letter: a secondary weight only
            tertiary.append(0)
        else:
            return None
    return tuple(primary), tuple(secondary), tuple(tertiary)


def r_sort(values: Iterable[str], locale: str | None = None) -> tuple[tuple[str, ...], bool]:
    """The distinct ``values`` in R's ``sort()`` order, and whether hlmbridge is sure of it.

    ``locale`` defaults to :func:`collation_locale`. When not sure, the values come back in
    code-point order (and the flag is False).
    """
    distinct = sorted(set(values))
    loc = collation_locale() if locale is None else locale
    icu = uses_icu_root(loc, None if locale is None else {})
    if icu is False:
        return tuple(distinct), True
    keys = [_root_key(v) for v in distinct]
    if any(k is None for k in keys):
        return tuple(distinct), False
    order = sorted(range(len(distinct)), key=lambda i: keys[i])
    out = tuple(distinct[i] for i in order)
    sure = icu is True
    for a, b in zip(order, order[1:]):
        ka, kb = keys[a], keys[b]
        # The same letters with different accents: their order depends on the accents' weights.
        if ka[0] == kb[0] and ka[1] != kb[1] and any(x and y and x != y for x, y in zip(ka[1], kb[1])):
            sure = False
        if ka == kb:  # distinct text that collates equal (another Unicode normalization): R's order is moot
            sure = False
    if icu is None:
        sure = False  # a locale whose ICU collation may be tailored (Danish aa, Czech ch ...)
    return out, sure
