"""Parse a Stata log (plain text, as the seed prints it) into blocks of reference numbers.

A log is a sequence of commands (lines starting with ``. ``, sometimes indented) and
their output, with prose in between. :func:`parse_log_text` walks the commands, keeps
the estimation context (the last ``mixed`` command, ``est store`` names, ``mat NAME=e(b)``
copies, the dataset in memory) and turns every output it knows into a :class:`LogBlock`:
the command, its line, the model command(s) it refers to and its numbers as
:class:`Cell` objects keyed by label (never by position).

Any Stata from 13 to 18: the table layout is detected (:func:`detect_layout`), ASCII
(``-----+-----``, ``|``) or Unicode box drawing (``─────┼─────``, ``│``, Stata 16+), and read as
one (:func:`to_ascii`); CRLF line ends are read too. A command continued with ``///`` (the log
prints the rest after ``> ``) or wrapped by Stata at the log's width is joined before it is
read; ``//`` and ``/* */`` comments are dropped; a ``///`` with no continuation line is an
error naming its line (never a shorter command). Errors name the line, the block and the layout.

Known outputs: ``mixed`` and ``xtmixed`` (``var()``/``cov()`` or ``sd()``/``corr()`` rows, the
"grouping information" table of three and more levels, rows keyed ``level:label`` when a model
has several levels), ``xtreg ..., mle`` (``/sigma_u``, ``/sigma_e``, ``rho``), ``estat icc``,
``estat ic``, ``estat recov`` (and ``, corr``; every level), ``lrtest``, ``mat list`` (wide
matrices in panels), ``ereturn list``, ``estimates table`` (``b``/``se``/``t``/``p`` rows, blank
cells), ``di`` (up to nine values), ``summarize``, one- and two-way ``tab``, and ``list`` (a
``predict NAME, reffects`` column is tied to its model). ``quietly``/``capture``/``by``/
``bysort`` prefixes, ``estimates store/restore`` and ``xtset`` are followed; data steps (``gen``,
``egen``, ``replace`` ...) since the last ``use`` are recorded with their lines. A valid Stata
command whose output is not read is listed in :attr:`ParsedLog.unchecked` ("not checked"), and so
is a postestimation command on a model hlmbridge does not fit (``xtlogit``, ``melogit`` ...). A ``mixed``
table printed with ``dfmethod()`` (``DF method:`` header with the df range, ``F(k, ddf)`` and
``Prob > F``; t and P>|t| columns, a DF column with ``dftable()``) gives ``header.df_min``/
``df_avg``/``df_max``, ``header.f_*`` and ``fixed.<term>.t``/``df`` keys. A block
that cannot be parsed raises :class:`~hlmbridge.errors.FixtureError` naming the log and
line; ``lenient=True`` collects those errors in :attr:`ParsedLog.problems` instead. A row
whose label Stata abbreviated (``~``) or wrapped onto the line above (numbers without a
label) is such an error: the label cannot be recovered. :func:`parse_log` reads UTF-8 and
falls back to Windows-1252, then Latin-1 (Stata logs from Windows), recording which in
:attr:`ParsedLog.encoding`.
An invalid command (e.g. the seed's ``qui mathach ...``) does not change the context and
is recorded in :attr:`ParsedLog.invalid`.

Examples
--------
>>> text = '''. di 1/8
...
... .125
... '''
>>> log = parse_log_text(text, name="demo.log")
>>> [(b.kind, b.line, b.cells[0].printed) for b in log.blocks]
[('di', 1, '.125')]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hlmbridge.errors import FixtureError

__all__ = [
    "CONTROL_RE",
    "DF_METHOD_NAMES",
    "Cell",
    "InvalidCommand",
    "LogBlock",
    "ModelRef",
    "ParsedLog",
    "decode_log",
    "is_mixed_command",
    "parse_log",
    "parse_log_text",
    "parse_number",
    "to_ascii",
    "to_unicode_layout",
]

#: A control character other than tab and newline (never in a Stata log's text).
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
NUM = r"(?:[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|\.)"
_NUM_RE = re.compile(NUM)
_CMD_RE = re.compile(r"^\s?\.\s+(\S.*?)\s*$")
_RULE_RE = re.compile(r"^\s*-{10,}(?:\+-+)*\s*$")
_QUI_RE = re.compile(r"^(?:qui(?:e(?:t(?:l(?:y)?)?)?)?\s*:?\s+)", re.IGNORECASE)
#: Stata 16+'s Unicode box drawing and the ASCII character Stata 13-15 print in its place
#: (``┬``/``┴`` sit in rules that ASCII draws as plain dashes; list boxes use the corners).
_BOX_TO_ASCII = str.maketrans({"│": "|", "─": "-", "┼": "+", "┬": "-", "┴": "-", "┌": "+", "┐": "+",
                               "└": "+", "┘": "+", "├": "|", "┤": "|"})
_BOX_CHARS = frozenset("│─┼┬┴┌┐└┘├┤")
#: The two table layouts a Stata log can have, by name.
LAYOUTS: Mapping[str, str] = MappingProxyType({
    "ascii": "ASCII tables ('-----+-----' rules, '|' columns: Stata 13-15, and logs written as text)",
    "unicode": "Unicode box-drawing tables ('─────┼─────' rules, '│' columns: Stata 16+ viewer/SMCL output)",
})


def detect_layout(lines: Sequence[str]) -> str:
    """``"unicode"`` when the log draws its tables with box-drawing characters, else ``"ascii"``.

    Examples
    --------
    >>> detect_layout(["  x │ 1", "────┼──"]), detect_layout(["  x | 1", "----+--"])
    ('unicode', 'ascii')
    """
    return "unicode" if any(_BOX_CHARS.intersection(t) for t in lines) else "ascii"


def to_ascii(line: str) -> str:
    """A log line with Stata's Unicode box drawing replaced by the ASCII Stata 13-15 prints.

    Examples
    --------
    >>> to_ascii("─────┬─────"), to_ascii("  _cons │ 1.5"), to_ascii("─────┼──")
    ('-----------', '  _cons | 1.5', '-----+--')
    """
    return line.translate(_BOX_TO_ASCII)


_ASCII_RULE_RE = re.compile(r"^\s*[-+]*-{10,}[-+]*\s*$")
_LIST_EDGE_RE = re.compile(r"^(\s*)\+(-+)\+\s*$")
_LIST_SEP_RE = re.compile(r"^(\s*)\|(-+)\|\s*$")


def to_unicode_layout(text: str) -> str:
    """An ASCII-layout log (Stata 13-15) drawn as Stata 16+ draws it: ``│`` column bars, ``─`` rules
    with ``┬``/``┼``/``┴`` where a bar meets them, list boxes with corners. Command lines
    (``. ``, ``> ``) are left alone. :func:`to_ascii` undoes it line by line.

    Examples
    --------
    >>> rows = ["-" * 20, "           x | 1", "-" * 13 + "+" + "-" * 6, "           y | 2", "-" * 20]
    >>> print(to_unicode_layout(chr(10).join(rows)))
    ─────────────┬──────
               x │ 1
    ─────────────┼──────
               y │ 2
    ─────────────┴──────
    """
    lines = text.split("\n")
    out = []

    def bar_col(k: int, step: int) -> int | None:
        j = k + step
        while 0 <= j < len(lines) and not lines[j].strip():
            j += step
        if not 0 <= j < len(lines) or lines[j].startswith((". ", "> ")):
            return None
        m = re.search(r"(?<= )\|", lines[j])
        return m.start() if m else None

    for k, line in enumerate(lines):
        if line.startswith((". ", "> ")):
            out.append(line)
            continue
        m = _LIST_EDGE_RE.match(line)
        if m:
            nxt = next((t for t in lines[k + 1:] if t.strip()), "")
            a, b = ("┌", "┐") if nxt.strip().startswith("|") else ("└", "┘")
            out.append(f"{m.group(1)}{a}{'─' * len(m.group(2))}{b}")
            continue
        m = _LIST_SEP_RE.match(line)
        if m:
            out.append(f"{m.group(1)}├{'─' * len(m.group(2))}┤")
            continue
        if _ASCII_RULE_RE.match(line):
            chars = list(line.replace("-", "─").replace("+", "┼"))
            if "┼" not in line.replace("+", "┼") or "+" not in line:
                below, above = bar_col(k, 1), bar_col(k, -1)
                col = below if below is not None else above
                if col is not None and col < len(chars) and chars[col] == "─":
                    chars[col] = "┬" if below is not None else "┴"
            out.append("".join(chars))
            continue
        out.append(re.sub(r"(?<= )\|(?= |$)|^\|", "│", line) if "|" in line else line)
    return "\n".join(out)


_MIXED_RE = re.compile(r"^(?:qui(?:e(?:t(?:l(?:y)?)?)?)?\s*:?\s+)?(?:xt)?mixed\s", re.IGNORECASE)

# Stata commands the parser knows produce no output worth keeping (or none at all).
_SILENT = ("use", "egen", "gen", "generate", "replace", "set", "clear", "sort", "keep", "drop")
# Commands Stata accepts whose output, if any, is not reference material.
_KNOWN_OTHER = ("est", "estimates", "mat", "matrix", "qui", "quietly", "estat", "lrtest", "di", "display")


def parse_number(printed: str) -> float:
    """The value of a number as Stata prints it (``1,234``, ``.1234567``, ``.`` = missing).

    Examples
    --------
    >>> parse_number("1,234"), parse_number("-.1234567"), parse_number(".")
    (1234.0, -0.1234567, nan)
    """
    s = printed.strip()
    if s == ".":
        return float("nan")
    if not _NUM_RE.fullmatch(s):
        raise ValueError(f"not a number: {printed!r}")
    return float(s.replace(",", ""))


def is_model_command(command: str) -> bool:
    """True when ``command`` fits a model hlmbridge can read (``mixed``, ``xtmixed``, ``xtreg``).

    Examples
    --------
    >>> is_model_command("quietly xtreg y, i(g) mle"), is_model_command("bysort g: gen n = _N")
    (True, False)
    """
    c, _ = strip_prefixes(command)
    w = c.split()[0] if c.split() else ""
    return stata_command_name(w.rstrip(",")) in ("mixed", "xtmixed", "xtreg") + GLMM_COMMANDS


#: The GLMM commands whose output hlmbridge reads (kinds ``melogit``: also ``mepoisson``; ``xtlogit``).
GLMM_COMMANDS = ("melogit", "mepoisson", "xtlogit")
#: Model-fitting block kinds (one model each, the active one).
MODEL_KINDS = ("mixed", "xtreg", "melogit", "xtlogit")


def is_mixed_command(command: str) -> bool:
    """True when ``command`` runs ``mixed`` (quietly or not).

    Examples
    --------
    >>> is_mixed_command("qui mixed y || g:"), is_mixed_command("qui mathach ses || id:")
    (True, False)
    """
    return bool(_MIXED_RE.match(command.strip() + " "))


@dataclass(frozen=True)
class Cell:
    """One printed number: its key path (``("fixed", "ses", "estimate")``), text and log line."""

    path: tuple[str, ...]
    printed: str
    line: int

    @property
    def value(self) -> float:
        """The number (NaN for Stata's missing ``.``)."""
        return parse_number(self.printed)


@dataclass(frozen=True)
class ModelRef:
    """A model command a block refers to, under the name Stata knows it by (``.`` = active)."""

    name: str
    command: str
    line: int


@dataclass(frozen=True)
class InvalidCommand:
    """A command Stata would reject; it leaves the estimation context unchanged."""

    line: int
    command: str
    reason: str


@dataclass(frozen=True)
class LogBlock:
    """One command's output: kind, command, lines, the models it refers to, its numbers."""

    kind: str
    command: str
    line: int
    end_line: int
    cells: tuple[Cell, ...]
    models: tuple[ModelRef, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


@dataclass(frozen=True)
class ParsedLog:
    """Everything :func:`parse_log_text` found in one log."""

    name: str
    blocks: tuple[LogBlock, ...]
    invalid: tuple[InvalidCommand, ...] = ()
    problems: tuple[FixtureError, ...] = ()
    encoding: str = "utf-8"
    layout: str = "ascii"
    #: Valid Stata commands whose output hlmbridge does not check (``reason`` starts "not checked").
    unchecked: tuple[InvalidCommand, ...] = ()


# --------------------------------------------------------------------------------------
# low-level line helpers
class _Lines:
    """The log's lines (1-based access) and where each command starts."""

    def __init__(self, text: str, name: str):
        self.name = name
        # Split at newlines only (str.splitlines also splits at form feeds and other control
        # characters, which would move a damaged row's text to a line of its own).
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        raw = [t[:-1] if t.endswith("\r") else t for t in lines]
        self.layout = detect_layout(raw)
        self.lines = [to_ascii(t) for t in raw]

    def __getitem__(self, lineno: int) -> str:
        return self.lines[lineno - 1]

    def __len__(self) -> int:
        return len(self.lines)

    def error(self, message: str, lineno: int) -> FixtureError:
        return FixtureError(message, path=self.name, line=lineno)

    def blank(self, lineno: int) -> None:
        """Blank a line (a continuation line joined into its command)."""
        self.lines[lineno - 1] = ""


def _check_label(label: str, lines: _Lines, lineno: int) -> str:
    """``label`` when it is a full label; an error for an abbreviated or a wrapped one."""
    if not label:
        raise lines.error("a row of numbers without a label: a wrapped row (its label is on the line above, or "
                          "missing); use names that fit Stata's column (12 characters) and re-run", lineno)
    if "~" in label:
        raise lines.error(f"abbreviated label {label!r}: Stata shortened a long name with '~' to fit its column "
                          "and the full name cannot be recovered; use names of 12 characters or fewer and re-run",
                          lineno)
    return label


def _command_of(line: str) -> str | None:
    m = _CMD_RE.match(line)
    return m.group(1) if m else None


_COMMENT_RE = re.compile(r"(?:(?<=\s)|^)//")
_BLOCK_COMMENT_RE = re.compile(r"/\*.*?\*/")


def _split_comment(text: str) -> tuple[str, bool]:
    """A command line without its comment, and whether it ends in a ``///`` continuation.

    Examples
    --------
    >>> _split_comment("gen sn = _N     // school n"), _split_comment("mixed y x ///  more")
    (('gen sn = _N', False), ('mixed y x', True))
    >>> _split_comment("use https://example.org/d, clear")
    ('use https://example.org/d, clear', False)
    """
    text = _BLOCK_COMMENT_RE.sub(" ", text)
    m = _COMMENT_RE.search(text)
    if not m:
        return text.rstrip(), False
    return text[: m.start()].rstrip(), text.startswith("///", m.start())


def _join_commands(lines: _Lines) -> tuple[list[tuple[int, str]], list[FixtureError]]:
    """Every command with its line, continuation lines joined; the commands that cannot be joined.

    A line ending in ``///`` continues on the next line, which the log prints after ``> ``; a
    ``> `` line after a command without ``///`` is Stata wrapping a long command at the log's
    width, which it does at a blank. Both are joined with one space. Comments (``//``, ``/* */``)
    are dropped.
    A ``///`` with no ``> `` line after it is an error naming its line (never a shorter command).
    Joined continuation lines are blanked, so no block reads them as output.
    """
    out: list[tuple[int, str]] = []
    broken: list[FixtureError] = []
    i = 1
    n = len(lines)
    while i <= n:
        cmd = _command_of(lines[i])
        if cmd is None:
            i += 1
            continue
        start = i
        text, cont = _split_comment(cmd)
        ok = True
        while True:
            nxt = lines[i + 1] if i + 1 <= n else None
            is_cont = nxt is not None and nxt.startswith(">")
            if cont and not is_cont:
                broken.append(lines.error(
                    f"`{text} ///` continues on the next line, but "
                    + ("the log ends there" if nxt is None else f"line {i + 1} is not a continuation line ('> ...')")
                    + ": the command cannot be joined, and a shorter command would be a different one", i))
                ok = False
                break
            if not is_cont:
                break
            i += 1
            more, cont2 = _split_comment(nxt[1:])
            text = text.rstrip() + " " + more.strip()
            cont = cont2
            lines.blank(i)
        i += 1
        if ok:
            text = text.strip()
            if text:
                out.append((start, text))
        else:
            out.append((start, ""))  # a command that cannot be joined: handled by the caller
    return out, broken


def _nonblank(lines: _Lines, start: int, stop: int) -> Iterator[tuple[int, str]]:
    for i in range(start, stop):
        if lines[i].strip():
            yield i, lines[i]


def _nums(text: str, lines: _Lines, lineno: int, count: int | None = None) -> list[str]:
    toks = text.split()
    for t in toks:
        if not _NUM_RE.fullmatch(t):
            raise lines.error(f"expected a number, found {t!r}", lineno)
    if count is not None and len(toks) != count:
        raise lines.error(f"expected {count} numbers, found {len(toks)}", lineno)
    return toks


# --------------------------------------------------------------------------------------
# block parsers: each gets the lines from the command to the next command (exclusive)
_RANDOM_FIELDS = ("estimate", "std_error", "conf_low", "conf_high")
_HEADER_PATTERNS = (
    ("nobs", re.compile(r"Number of obs\s+=\s+(" + NUM + r")\s*$")),
    ("n_groups", re.compile(r"Number of groups\s+=\s+(" + NUM + r")\s*$")),
    ("group_min", re.compile(r"(?:^\s+|Obs per group:\s+)min\s+=\s+(" + NUM + r")\s*$")),  # Stata 13: one line
    ("group_mean", re.compile(r"^\s+avg\s+=\s+(" + NUM + r")\s*$")),
    ("group_max", re.compile(r"^\s+max\s+=\s+(" + NUM + r")\s*$")),
    ("wald_chi2", re.compile(r"Wald chi2\((\d+)\)\s+=\s+(" + NUM + r")\s*$")),
    ("loglik", re.compile(r"^Log (?:restricted-)?likelihood\s+=\s+(" + NUM + r")")),
    ("wald_p", re.compile(r"Prob > chi2\s+=\s+(" + NUM + r")\s*$")),
)

def _header_cells(text: str, line: int) -> list[Cell]:
    """The header numbers (:data:`_HEADER_PATTERNS`) on one line of a ``mixed``/``xtreg`` header;
    ``Wald chi2(k)`` gives its df and its statistic."""
    out = []
    for key, rx in _HEADER_PATTERNS:
        hit = rx.search(text)
        if hit:
            if key == "wald_chi2":
                out.append(Cell(("header", "wald_df"), hit.group(1), line))
                out.append(Cell(("header", key), hit.group(2), line))
            else:
                out.append(Cell(("header", key), hit.group(1), line))
    return out


def _coefficient_header(it: list[tuple[int, str]], pos: int, lines: _Lines, start: int,
                        meta: dict[str, Any]) -> tuple[tuple[str, ...], int]:
    """The coefficient table's header line at ``it[pos]`` (``xtreg``, ``xtlogit``, ``melogit``):
    the response into ``meta``, the table's columns, and the position after the header and its rule."""
    if pos >= len(it) or _table_row(it[pos][1]) is None:
        raise lines.error("expected the coefficient table header", it[min(pos, len(it) - 1)][0] if it else start)
    meta["response"] = it[pos][1].partition("|")[0].strip()
    return _fixed_columns(it[pos][1], lines, it[pos][0]), pos + 2  # header, rule



def _z_table_rows(it: list[tuple[int, str]], pos: int, lines: _Lines,
                  what: str) -> tuple[list[tuple[int, str, str, str]], int]:
    """The rows of an ``xtreg``/``xtlogit``/``melogit`` z table from ``it[pos]`` to its closing
    rule, as ``(line, part, label, rest)`` (``part`` "fixed" above the first inner rule, "random"
    below it), and the position after the closing rule."""
    rows: list[tuple[int, str, str, str]] = []
    part = "fixed"
    while pos < len(it):
        i, text = it[pos]
        pos += 1
        if _RULE_RE.match(text):
            if "+" not in text:
                break
            part = "random"
            continue
        row = _table_row(text)
        if row is None:
            raise lines.error(f"not a {part} row of the {what} table", i)
        rows.append((i, part, row[0], row[1]))
    return rows, pos


def _lr_test_cells(m: re.Match[str], line: int, meta: dict[str, Any]) -> list[Cell]:
    """The LR test line under a table (groups: kind, df, chi2, p): its kind into ``meta``."""
    meta["lr_kind"] = m.group(1)
    return [Cell(("lr", "df"), m.group(2), line), Cell(("lr", "chi2"), m.group(3), line),
            Cell(("lr", "p_value"), m.group(4), line)]

# ``mixed ..., dfmethod()`` (Stata 14+): the method and the range of the fixed effects' df on
# the left and right of one line, then ``avg``/``max`` lines, and an F test of the fixed
# effects (``F(k, ddf)``, ``Prob > F``) in place of the Wald chi2 lines.
_DF_METHOD_RE = re.compile(r"^DF method:\s+(\S(?:.*?\S)?)\s{2,}DF:\s+min\s+=\s+(" + NUM + r")\s*$")
_DF_AVG_RE = re.compile(r"^\s+avg\s+=\s+(" + NUM + r")\s*$")
_DF_MAX_RE = re.compile(r"^\s+max\s+=\s+(" + NUM + r")\s*$")
_F_RE = re.compile(r"\bF\(\s*(\d+)\s*,\s*(" + NUM + r")\s*\)\s+=\s+(" + NUM + r")\s*$")
_F_P_RE = re.compile(r"Prob > F\s+=\s+(" + NUM + r")\s*$")
#: Stata's name of each df method in the ``DF method:`` header line.
DF_METHOD_NAMES = ("Residual", "Repeated", "ANOVA", "Satterthwaite", "Kenward-Roger")
# Columns of the fixed-effects table: Stata's header text -> field(s). The default table is
# ``Coefficient Std. err. z P>|z| [95% conf. interval]``; with ``dfmethod()`` the statistic is
# ``t``/``P>|t|``, and ``dftable(pvalue)``/``dftable(ci)`` print a ``DF`` column instead of
# the CI / the test (Stata 13 and older spell ``Coef.``, ``Std. Err.``, ``Interval``).
_FIXED_COLUMNS = (
    (re.compile(r"Coefficient|Coef\."), ("estimate",)),
    (re.compile(r"Std\.\s+[Ee]rr\."), ("std_error",)),
    (re.compile(r"DF|df"), ("df",)),
    (re.compile(r"P>\|z\|"), ("p_value",)),
    (re.compile(r"P>\|t\|"), ("p_value",)),
    (re.compile(r"z"), ("statistic",)),
    (re.compile(r"t"), ("t",)),
    (re.compile(r"\[\d+(?:\.\d+)?% [Cc]onf\. [Ii]nterval\]"), ("conf_low", "conf_high")),
)
_LR_RE = re.compile(
    r"^LR test vs\. linear (?:model|regression):\s+(chibar2|chi2)\((\d+)\)\s+=\s+(" + NUM + r")\s+Prob\s*>=?\s*(?:chibar2|chi2)\s+=\s+(" + NUM + r")\s*$"
)
_TITLE_RE = re.compile(r"^(Mixed-effects (ML|REML) regression)\s")
_GROUPVAR_RE = re.compile(r"^Group variable:\s+(\S+)")


def _table_row(line: str) -> tuple[str, str] | None:
    """``label | rest`` split, or None when the line is not a table row."""
    if "|" not in line or _RULE_RE.match(line):
        return None
    # the column bar follows a blank (a label may hold a bar itself: estat icc's "childid|schoolid")
    m = re.search(r"(?<=\s)\|", line)
    label, rest = (line[: m.start()], line[m.end():]) if m else line.partition("|")[::2]
    return label.strip(), rest.strip()


def _factor_label(subheader: str, level: str) -> str:
    """Combine a factor sub-header (``sector#c.ses``) and its level row (``1``) into a label."""
    parts = subheader.split("#")
    levels = level.split()
    out, k = [], 0
    for p in parts:
        if p.startswith("c."):
            out.append(p)
        else:
            if k >= len(levels):
                return ""
            out.append(f"{levels[k]}.{p}")
            k += 1
    return "#".join(out) if k == len(levels) else ""


def _fixed_columns(header: str, lines: _Lines, lineno: int) -> tuple[str, ...]:
    """The fields of the fixed-effects table's columns, read from its header line."""
    rest = header.partition("|")[2]
    fields: list[str] = []
    for tok in re.split(r"\s{2,}|(?<=\S)\s(?=P>|\[)", rest.strip()):
        for rx, names in _FIXED_COLUMNS:
            if rx.fullmatch(tok):
                fields.extend(names)
                break
        else:
            raise lines.error(f"unknown column {tok!r} in the fixed-effects table header", lineno)
    if len(set(fields)) != len(fields) or fields[:2] != ["estimate", "std_error"]:
        raise lines.error("the fixed-effects table header does not start with Coefficient, Std. err. "
                          f"(columns {fields})", lineno)
    return tuple(fields)


def _df_header_line(text: str, i: int, cells: list[Cell], meta: dict[str, Any], state: dict[str, Any]) -> bool:
    """Read one ``dfmethod()`` header line into ``cells``/``meta``; True when it was one."""
    m = _DF_METHOD_RE.match(text)
    if m:
        meta["df_method"] = m.group(1)
        cells.append(Cell(("header", "df_min"), m.group(2), i))
        state["df"] = "min"
        return True
    if state.get("df") == "min" and (a := _DF_AVG_RE.match(text)):
        cells.append(Cell(("header", "df_avg"), a.group(1), i))
        state["df"] = "avg"
        return True
    if state.get("df") == "avg" and (x := _DF_MAX_RE.match(text)):
        cells.append(Cell(("header", "df_max"), x.group(1), i))
        state["df"] = "done"
        return True
    hit = False
    f = _F_RE.search(text)
    if f:
        cells.append(Cell(("header", "f_df1"), f.group(1), i))
        cells.append(Cell(("header", "f_df2"), f.group(2), i))
        cells.append(Cell(("header", "f_stat"), f.group(3), i))
        hit = True
    fp = _F_P_RE.search(text)
    if fp:
        cells.append(Cell(("header", "f_p"), fp.group(1), i))
        hit = True
    if hit:  # the log likelihood shares the Prob > F line
        ll = dict(_HEADER_PATTERNS)["loglik"].search(text)
        if ll:
            cells.append(Cell(("header", "loglik"), ll.group(1), i))
    return hit


#: The title of a residual structure's block in mixed's random-effects table (issue 25), and its
#: rows: var(e), cov(e), var(e2), cov(e1,e2), rho, phi1, theta2, and per by() group "male: var(e)".
_RESIDUAL_TITLE_RE = re.compile(r"Residual:\s+((?:AR|MA|Banded|Toeplitz)\(\d+\)|Exponential|Exchangeable|"
                                r"Unstructured|Independent),?")
RESIDUAL_ROW_RE = re.compile(r"(?:[^:|]+:\s+)?(?:(?:var|cov)\(e[^()]*\)|rho|phi\d+|theta\d+)")


def _parse_mixed(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    cells: list[Cell] = []
    meta: dict[str, Any] = {}
    it = list(_nonblank(lines, start + 1, stop))
    pos = 0
    df_state: dict[str, Any] = {}
    # header: up to the first rule (a "Grouping information" table of a model with several levels
    # sits inside the header, between its own rules)
    groups_table = False
    while pos < len(it):
        i, text = it[pos]
        if _RULE_RE.match(text):
            if pos + 1 < len(it) and re.search(r"No\. of", it[pos + 1][1]):
                pos = _group_table(lines, it, pos, cells)
                groups_table = True
                continue
            break
        m = _TITLE_RE.match(text)
        if m:
            meta["title"] = m.group(1)
            meta["method"] = m.group(2).lower()
        g = _GROUPVAR_RE.match(text)
        if g:
            meta["group"] = g.group(1)
        if _df_header_line(text, i, cells, meta, df_state):
            pos += 1
            continue
        cells.extend(_header_cells(text, i))
        pos += 1
    cells = [c for c in cells if c.path[0] != "groups"] + [c for c in cells if c.path[0] == "groups"]
    found = {c.path[1] for c in cells}
    need = {"nobs", "loglik"} | (set() if groups_table else {"n_groups", "group_min", "group_mean", "group_max"})
    if "df_method" in meta:  # dfmethod(): the df range; an F test (when there is one) replaces the Wald chi2
        need |= {"df_min", "df_avg", "df_max"} | ({"f_stat", "f_p"} if found & {"f_stat", "f_p"} else set())
        if found & {"wald_chi2", "wald_p"}:
            raise lines.error("a dfmethod() header (DF method:) with a Wald chi2 test: Stata prints an F test", start)
        if meta["df_method"] not in DF_METHOD_NAMES:
            raise lines.error(f"unknown DF method {meta['df_method']!r} (Stata's: {', '.join(DF_METHOD_NAMES)})", start)
    else:
        need |= {"wald_chi2", "wald_p"}
        if found & {"f_stat", "f_p"}:
            raise lines.error("an F test in the mixed header without the 'DF method:' line", start)
    if "title" not in meta or need - found:
        line = it[pos][0] if pos < len(it) else start
        raise lines.error(f"mixed output header incomplete (missing {sorted(need - found) or 'title'})", line)

    def expect_rule() -> int:
        nonlocal pos
        if pos >= len(it) or not _RULE_RE.match(it[pos][1]):
            raise lines.error("expected a table rule", it[pos][0] if pos < len(it) else stop - 1)
        pos += 1
        return it[pos - 1][0]

    # fixed-effects table
    expect_rule()
    if pos >= len(it) or not re.search(r"\bCoefficient\b|\bCoef\.", it[pos][1]):
        raise lines.error("expected the fixed-effects table header", it[min(pos, len(it) - 1)][0])
    meta["response"] = it[pos][1].partition("|")[0].strip()
    columns = _fixed_columns(it[pos][1], lines, it[pos][0])
    if "df_method" in meta and "statistic" in columns:
        raise lines.error("a z table under a 'DF method:' header: dfmethod() output prints t and P>|t|", it[pos][0])
    if "df_method" not in meta and ("t" in columns or "df" in columns):
        raise lines.error("a t table (t or DF column) without the 'DF method:' header line", it[pos][0])
    if "df_method" in meta:
        meta["statistic"] = "t"
    pos += 1
    expect_rule()
    sub = ""
    while pos < len(it) and not _RULE_RE.match(it[pos][1]):
        i, text = it[pos]
        row = _table_row(text)
        if row is None:
            raise lines.error("not a fixed-effects row", i)
        label, rest = row
        if not rest:
            sub = label  # factor sub-header, or a blank separator row
        else:
            if sub and label and not label.startswith("_cons") and re.fullmatch(r"[\d\s]+", label):
                label = _factor_label(sub, label)
                if not label:
                    raise lines.error("factor level row does not fit its sub-header", i)
            else:
                sub = ""
            _check_label(label, lines, i)
            toks = _nums(rest, lines, i, len(columns))
            cells.extend(Cell(("fixed", label, f), t, i) for f, t in zip(columns, toks))
        pos += 1
    expect_rule()
    # random-effects table
    expect_rule()
    if pos >= len(it) or "random-effects parameters" not in it[pos][1].lower():  # Stata 13: "Parameters"
        raise lines.error("expected the random-effects table header", it[min(pos, len(it) - 1)][0])
    pos += 1
    expect_rule()
    levels: dict[str, str] = {}
    level: str | None = None
    rows: list[tuple[str | None, str, list[str], int]] = []
    while pos < len(it):
        i, text = it[pos]
        if _RULE_RE.match(text) and "+" not in text:
            break
        pos += 1
        if _RULE_RE.match(text):
            level = None  # the residual rows follow the last level's separator
            continue
        row = _table_row(text)
        if row is None:
            raise lines.error("not a random-effects row", i)
        label, rest = row
        rt = _RESIDUAL_TITLE_RE.fullmatch(label)
        if rt and not rest:  # issue 25: "Residual: AR(1)", "Residual: Independent," (then "by sex")
            meta["residuals"] = rt.group(1).rstrip(",")
            level = None
            continue
        if not rest and "residuals" in meta and re.fullmatch(r"by \w+", label):
            meta["residuals_by"] = label[3:]
            continue
        lv = re.fullmatch(r"(\S+):\s+(\w+)", label)
        if lv and not rest:
            levels[lv.group(1)] = lv.group(2)
            level = lv.group(1)
            continue
        _check_label(label, lines, i)
        if not re.fullmatch(r"(var|cov|sd|corr)\([^()]+\)", label) and not (
                "residuals" in meta and level is None and RESIDUAL_ROW_RE.fullmatch(label)):
            raise lines.error(f"unrecognized random-effects row {label!r}", i)
        rows.append((level, label, _nums(rest, lines, i, 4), i))
    for level, label, toks, i in rows:
        # With several levels a label is keyed with its level ("school:var(_cons)"): the same
        # label repeats at every level. The residual rows belong to no level.
        key = f"{level}:{label}" if level is not None and len(levels) > 1 else label
        cells.extend(Cell(("random", key, f), t, i) for f, t in zip(_RANDOM_FIELDS, toks))
    if any(lab.startswith(("sd(", "corr(")) for _, lab, _, _ in rows):
        meta["scale"] = "sd"
    meta["levels"] = levels
    expect_rule()
    # LR test vs linear model
    if pos >= len(it):
        raise lines.error("missing 'LR test vs. linear model' line", stop - 1)
    i, text = it[pos]
    m = _LR_RE.match(text.strip())
    if not m:
        raise lines.error("expected 'LR test vs. linear model: ...'", i)
    meta["lr_kind"] = m.group(1)
    cells.append(Cell(("lr", "df"), m.group(2), i))
    cells.append(Cell(("lr", "chi2"), m.group(3), i))
    cells.append(Cell(("lr", "p_value"), m.group(4), i))
    end = i
    if pos + 1 < len(it) and it[pos + 1][1].startswith("Note: LR test is conservative"):
        meta["lr_note"] = it[pos + 1][1].strip()
        end = it[pos + 1][0]
    return cells, meta, end


_GROUP_FIELDS = ("n_groups", "group_min", "group_mean", "group_max")


def _group_table(lines: _Lines, it: list[tuple[int, str]], pos: int, cells: list[Cell]) -> int:
    """Read a "Grouping information" table (rule, two header lines, rule, one row per level,
    rule) into ``groups.<level>.*`` cells; the position after its bottom rule."""
    pos += 1
    heads = 0
    while pos < len(it) and not _RULE_RE.match(it[pos][1]):
        heads += 1
        pos += 1
    if heads != 2 or pos >= len(it):
        raise lines.error("expected the two header lines of the grouping-information table "
                          "(No. of groups, Observations per group)", it[min(pos, len(it) - 1)][0])
    pos += 1
    n = 0
    while pos < len(it) and not _RULE_RE.match(it[pos][1]):
        i, text = it[pos]
        row = _table_row(text)
        if row is None:
            raise lines.error("not a grouping-information row ('level | groups min avg max')", i)
        label, rest = row
        _check_label(label, lines, i)
        toks = _nums(rest, lines, i, 4)
        cells.extend(Cell(("groups", label, f), t, i) for f, t in zip(_GROUP_FIELDS, toks))
        n += 1
        pos += 1
    if pos >= len(it) or not n:
        raise lines.error("grouping-information table without rows or its bottom rule", it[min(pos, len(it) - 1)][0])
    return pos + 1


_XT_TITLE_RE = re.compile(r"^Random-effects ML regression\s")
_XT_LR_RE = re.compile(
    r"^LR test of sigma_u=0:\s+(chibar2|chi2)\((\d+)\)\s+=\s+(" + NUM + r")\s+Prob\s*>=?\s*(?:chibar2|chi2)\s+=\s+("
    + NUM + r")\s*$")


def _parse_xtreg(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    """``xtreg ..., mle``: its header, the z table, the ``/sigma_u``, ``/sigma_e``, ``rho`` rows
    (section ``random``) and ``LR test of sigma_u=0`` (section ``lr``)."""
    cells: list[Cell] = []
    meta: dict[str, Any] = {}
    it = list(_nonblank(lines, start + 1, stop))
    pos = 0
    while pos < len(it) and not _RULE_RE.match(it[pos][1]):
        i, text = it[pos]
        if _XT_TITLE_RE.match(text):
            meta["title"] = "Random-effects ML regression"
        g = _GROUPVAR_RE.match(text)
        if g:
            meta["group"] = g.group(1)
        cells.extend(_header_cells(text, i))
        if re.search(r"\bLR chi2\(", text):
            raise lines.error("an 'LR chi2(k)' model test in the xtreg header: not read (Stata 18 prints Wald chi2)", i)
        pos += 1
    need = {"nobs", "n_groups", "group_min", "group_mean", "group_max", "loglik", "wald_chi2", "wald_p"}
    found = {c.path[1] for c in cells}
    if "title" not in meta or need - found:
        raise lines.error(f"xtreg, mle output header incomplete (missing {sorted(need - found) or 'the title'})",
                          it[min(pos, len(it) - 1)][0] if it else start)
    columns, pos = _coefficient_header(it, pos + 1, lines, start, meta)
    rows, pos = _z_table_rows(it, pos, lines, "xtreg")
    for i, part, label, rest in rows:
        _check_label(label, lines, i)
        if part == "fixed":
            toks = _nums(rest, lines, i, len(columns))
            cells.extend(Cell(("fixed", label, f), t, i) for f, t in zip(columns, toks))
        else:
            if label not in ("/sigma_u", "/sigma_e", "rho"):
                raise lines.error(f"unrecognized xtreg row {label!r} (expected /sigma_u, /sigma_e, rho)", i)
            toks = _nums(rest, lines, i, 4)
            cells.extend(Cell(("random", label, f), t, i) for f, t in zip(_RANDOM_FIELDS, toks))
    if pos >= len(it) or not (m := _XT_LR_RE.match(it[pos][1].strip())):
        raise lines.error("expected 'LR test of sigma_u=0: ...'", it[min(pos, len(it) - 1)][0])
    return cells + _lr_test_cells(m, it[pos][0], meta), meta, it[pos][0]


_GLMM_TITLE_RE = re.compile(r"^((?:Mixed|Random)-effects (?:logistic|Poisson) regression)\s")
_INTEGRATION_RE = re.compile(r"^Integration method:\s+(\S+)\s+Integration pts\.\s+=\s+(\d+)\s*$")
_GLMM_LR_RE = re.compile(
    r"^LR test (?:vs\. (?:logistic|Poisson) model|of rho=0):\s+(chibar2|chi2)\((\d+)\)\s+=\s+(" + NUM
    + r")\s+Prob\s*>=?\s*(?:chibar2|chi2)\s+=\s+(" + NUM + r")\s*$")
_XTLOGIT_ROWS = ("/lnsig2u", "sigma_u", "rho")


def _parse_glmm(lines: _Lines, start: int, stop: int, kind: str) -> tuple[list[Cell], dict[str, Any], int]:
    """``melogit``/``mepoisson`` and ``xtlogit, re`` (Stata 15-18): the header (with
    ``Integration method: ...  Integration pts. = k`` as meta), the z table, the random part
    (melogit: a level's ``var()``/``cov()`` rows under its name, keyed ``level:var(_cons)``;
    xtlogit: ``/lnsig2u``, ``sigma_u``, ``rho``) and the LR test line (section ``lr``)."""
    cells: list[Cell] = []
    meta: dict[str, Any] = {}
    it = list(_nonblank(lines, start + 1, stop))
    pos = 0
    while pos < len(it) and not _RULE_RE.match(it[pos][1]):
        i, text = it[pos]
        t = _GLMM_TITLE_RE.match(text)
        if t:
            meta["title"] = t.group(1)
        g = _GROUPVAR_RE.match(text)
        if g:
            meta["group"] = g.group(1)
        m = _INTEGRATION_RE.match(text)
        if m:
            meta["options"] = f"intmethod({m.group(1)}) intpoints({m.group(2)})"
        cells.extend(_header_cells(text, i))
        pos += 1
    need = {"nobs", "n_groups", "group_min", "group_mean", "group_max", "loglik", "wald_chi2", "wald_p"}
    found = {c.path[1] for c in cells}
    if "title" not in meta or "options" not in meta or need - found:
        missing = sorted(need - found) or "the title or the integration line"
        raise lines.error(f"{kind} output header incomplete (missing {missing})",
                          it[min(pos, len(it) - 1)][0] if it else start)
    columns, pos = _coefficient_header(it, pos + 1, lines, start, meta)
    rows, pos = _z_table_rows(it, pos, lines, kind)
    level = None
    end = rows[-1][0] if rows else start
    for i, part, label, rest in rows:
        if part == "fixed":
            _check_label(label, lines, i)
            toks = _nums(rest, lines, i, len(columns))
            cells.extend(Cell(("fixed", label, f), t, i) for f, t in zip(columns, toks))
        elif kind == "xtlogit":
            if label not in _XTLOGIT_ROWS:
                raise lines.error(f"unrecognized xtlogit row {label!r} (expected {', '.join(_XTLOGIT_ROWS)})", i)
            toks = _nums(rest, lines, i, 4 if label != "/lnsig2u" else None)
            if len(toks) != 4:
                raise lines.error(f"expected 4 numbers on the {label} row", i)
            cells.extend(Cell(("random", label, f), t, i) for f, t in zip(_RANDOM_FIELDS, toks))
        elif not rest.strip():
            level = label  # a level's name heads its rows
        else:
            if level is None or not re.fullmatch(r"(?:var|cov)\([^()]+\)", label):
                raise lines.error(f"unrecognized {kind} random-effects row {label!r}", i)
            toks = _nums(rest, lines, i, 4)
            cells.extend(Cell(("random", f"{level}:{label}", f), t, i) for f, t in zip(_RANDOM_FIELDS, toks))
    if pos >= len(it) or not (m := _GLMM_LR_RE.match(it[pos][1].strip())):
        raise lines.error("expected the LR test line ('LR test vs. logistic model: ...' / 'LR test of rho=0: ...')",
                          it[min(pos, len(it) - 1)][0] if it else end)
    return cells + _lr_test_cells(m, it[pos][0], meta), meta, it[pos][0]


def _parse_list(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    """``list`` output in a box: a header row of variable names, then ``n. | values |`` rows
    (cells ``list.<obs number>.<variable>``)."""
    it = [(i, t) for i, t in _nonblank(lines, start + 1, stop)]
    rows = [(i, t.strip()) for i, t in it]
    if not rows or not re.fullmatch(r"\+-+\+", rows[0][1]):
        raise lines.error("expected the top of a list box ('+-----+')", rows[0][0] if rows else start)
    head = rows[1][1] if len(rows) > 1 else ""
    if not (head.startswith("|") and head.endswith("|")):
        raise lines.error("expected the list header ('| var1 var2 |')", rows[1][0] if len(rows) > 1 else start)
    names = head.strip("|").split()
    cells: list[Cell] = []
    end = rows[1][0]
    for i, t in rows[2:]:
        if re.fullmatch(r"\|-+\|", t):
            continue
        if re.fullmatch(r"\+-+\+", t):
            end = i
            break
        m = re.fullmatch(r"(\d+)\.\s+\|(.*)\|", t)
        if not m:
            raise lines.error("not a list row ('n. | values |')", i)
        toks = _nums(m.group(2), lines, i, len(names))
        cells.extend(Cell(("list", m.group(1), v), x, i) for v, x in zip(names, toks))
        end = i
    if not cells:
        raise lines.error("list without rows", start)
    return cells, {"variables": names}, end


def _parse_tab2(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    """A two-way ``tab a b`` (frequencies only): cells ``tab2.<row level>.<column level>`` and
    ``Total`` rows/columns."""
    it = list(_nonblank(lines, start + 1, stop))
    k = 0
    while k < len(it) and _table_row(it[k][1]) is None:
        k += 1
    if k + 1 >= len(it):
        raise lines.error("expected a two-way tab header", it[0][0] if it else start)
    # two header rows: "           |      col var" then "  row var |   0   1   Total"
    header = _table_row(it[k + 1][1]) if not _RULE_RE.match(it[k + 1][1]) else None
    if header is None or not header[1].split() or header[1].split()[-1] != "Total" or "|" not in header[1]:
        raise lines.error("expected the two-way tab column header ending in 'Total'", it[k + 1][0])
    cols = header[1].replace("|", " ").split()
    cells: list[Cell] = []
    end = it[k + 1][0]
    for i, label, rest in _simple_rows(it[k + 2:]):
        _check_label(label, lines, i)
        toks = _nums(rest.replace("|", " "), lines, i, len(cols))
        cells.extend(Cell(("tab2", label, c), t, i) for c, t in zip(cols, toks))
        end = i
        if label == "Total":
            break
    if not cells:
        raise lines.error("two-way tab without rows", start)
    return cells, {"row_variable": header[0], "columns": cols}, end


_ETABLE_LEGEND = re.compile(r"^\s*(?:Legend|legend):\s*(\S+)\s*$")


def _parse_etable(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    """``estimates table NAMES[, se t p]``: one column per stored model, ``b`` rows with their
    label and (``se``/``t``/``p``) unlabelled rows under them; equation names (``lns1_1_1``) as
    rows without numbers. Cells ``etable.<model>."<eq>:<label>".<b|se|t|p>``."""
    it = list(_nonblank(lines, start + 1, stop))
    k = 0
    while k < len(it) and _table_row(it[k][1]) is None:
        k += 1
    if k >= len(it) or _table_row(it[k][1])[0] != "Variable":  # type: ignore[index]
        raise lines.error("expected the estimates table header ('Variable | model ...')", it[min(k, len(it) - 1)][0]
                          if it else start)
    head_text = it[k][1]
    bar = head_text.index("|")
    models = head_text[bar + 1:].split()
    centers = [m.start() + bar + 1 + len(m.group()) / 2 for m in re.finditer(r"\S+", head_text[bar + 1:])]
    cells: list[Cell] = []
    eq = ""
    label = ""
    stat_k = 0
    end = it[k][0]
    stats: list[str] = []
    for i, text in it[k + 1:]:
        lg = _ETABLE_LEGEND.match(text)
        if lg:
            stats = lg.group(1).split("/")
            end = i
            break
        if _RULE_RE.match(text):
            continue
        row = _table_row(text)
        if row is None:
            raise lines.error("not an estimates table row", i)
        lab, rest = row
        if not rest:
            eq = lab
            continue
        _nums(rest, lines, i)
        if lab:
            _check_label(lab, lines, i)
            label = lab
            stat_k = 0
        else:
            stat_k += 1
        bar_i = text.index("|")
        for m in re.finditer(r"\S+", text[bar_i + 1:]):
            mid = m.start() + bar_i + 1 + len(m.group()) / 2
            col = min(range(len(models)), key=lambda j: abs(centers[j] - mid))
            if abs(centers[col] - mid) > 7:
                raise lines.error(f"a number of row {label!r} is under no model's column", i)
            cells.append(Cell(("etable", models[col], f"{eq}:{label}" if eq else label, f"#{stat_k}"), m.group(), i))
        end = i
    if not cells:
        raise lines.error("estimates table without rows", start)
    stats = stats or ["b"]
    out = []
    for c in cells:
        n = int(c.path[3][1:])
        if n >= len(stats):
            raise lines.error(f"row {c.path[2]!r} has more numbers than the legend's {'/'.join(stats)}", c.line)
        out.append(Cell(c.path[:3] + (stats[n],), c.printed, c.line))
    order = list(dict.fromkeys(c.path[2] for c in out))
    out.sort(key=lambda c: (models.index(c.path[1]), order.index(c.path[2])))  # one table per model and row
    return out, {"models": models, "statistics": stats}, end


def _parse_icc(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    it = list(_nonblank(lines, start + 1, stop))
    if not it or it[0][1].strip() not in ("Intraclass correlation", "Residual intraclass correlation"):
        raise lines.error("expected 'Intraclass correlation' title", it[0][0] if it else start)
    meta = {"title": it[0][1].strip()}
    cells: list[Cell] = []
    end = it[0][0]
    state = 0  # 0 before table, 1 header seen, 2 rows
    for i, text in it[1:]:
        if _RULE_RE.match(text):
            if state == 2 and "+" not in text:
                end = i
                break
            continue
        row = _table_row(text)
        if row is None:
            raise lines.error("not an ICC table row", i)
        label, rest = row
        if label == "Level":
            state = 1
            continue
        _check_label(label, lines, i)
        toks = _nums(rest, lines, i, 4)
        cells.extend(Cell(("icc", label, f), t, i) for f, t in zip(_RANDOM_FIELDS, toks))
        state = 2
    if not cells:
        raise lines.error("no ICC rows found", start)
    return cells, meta, end


def _parse_ic(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    it = list(_nonblank(lines, start + 1, stop))
    if not it or not it[0][1].startswith("Akaike's information criterion"):
        raise lines.error("expected the estat ic title", it[0][0] if it else start)
    cells: list[Cell] = []
    meta: dict[str, Any] = {}
    end = it[0][0]
    for k, (i, text) in enumerate(it[1:], start=1):
        if _RULE_RE.match(text):
            continue
        if text.startswith("Note:"):  # "Note: BIC uses N = ..." (Stata 13: "Note:  N=Obs used ...")
            end = i
            break
        row = _table_row(text)
        if row is None:
            raise lines.error("not an estat ic row", i)
        label, rest = row
        if label == "Model":
            continue
        toks = _nums(rest, lines, i, 6)
        meta["row"] = label
        for f, t in zip(("N", "ll_null", "ll_model", "df", "aic", "bic"), toks):
            cells.append(Cell(("ic", f), t, i))
        end = i
    if not cells:
        raise lines.error("no estat ic row found", start)
    return cells, meta, end


def _parse_recov(lines: _Lines, start: int, stop: int, corr: bool) -> tuple[list[Cell], dict[str, Any], int]:
    """``estat recov[, corr]``: one matrix per level (each after its "for level" title)."""
    cells: list[Cell] = []
    levels: list[str] = []
    columns: dict[str, list[str]] = {}
    pos = start
    while True:
        c, meta, end = _parse_recov_level(lines, pos, stop, corr)
        cells += c
        levels.append(meta["level"])
        columns[meta["level"]] = meta["columns"]
        nxt = next(_nonblank(lines, end + 1, stop), None)
        if nxt is None or not re.match(r"^Random-effects (?:correlation|covariance) matrix for level ", nxt[1]):
            break
        pos = nxt[0] - 1
    if len(levels) == 1:
        return cells, {"level": levels[0], "columns": columns[levels[0]]}, end
    return cells, {"level": levels[0], "columns": columns[levels[0]], "levels": levels}, end


def _parse_recov_level(lines: _Lines, start: int, stop: int, corr: bool) -> tuple[list[Cell], dict[str, Any], int]:
    it = list(_nonblank(lines, start + 1, stop))
    word = "correlation" if corr else "covariance"
    m = re.match(rf"^Random-effects {word} matrix for level (\S+)\s*$", it[0][1]) if it else None
    if not m:
        raise lines.error(f"expected 'Random-effects {word} matrix for level ...'", it[0][0] if it else start)
    level = m.group(1)
    sec = "recov_corr" if corr else "recov"
    if len(it) < 2 or _table_row(it[1][1]) is None:
        raise lines.error("expected the matrix column header", it[1][0] if len(it) > 1 else start)
    cols = it[1][1].partition("|")[2].split()
    for c in cols:
        _check_label(c, lines, it[1][0])
    cells: list[Cell] = []
    rows_seen = 0
    end = it[1][0]
    for i, text in it[2:]:
        if rows_seen == len(cols):
            break
        if _RULE_RE.match(text):
            continue
        row = _table_row(text)
        if row is None:
            raise lines.error("not a matrix row", i)
        label, rest = row
        toks = _nums(rest, lines, i)
        if label != cols[rows_seen] or len(toks) != rows_seen + 1:
            raise lines.error(f"matrix row {label!r} does not fit the columns {cols}", i)
        cells.extend(Cell((sec, level, label, c), t, i) for c, t in zip(cols, toks))
        rows_seen += 1
        end = i
    if rows_seen != len(cols):
        raise lines.error("matrix has fewer rows than columns", end)
    return cells, {"level": level, "columns": cols}, end


_LRT_CHI = re.compile(r"LR chi2\((\d+)\)\s+=\s+(" + NUM + r")")
_LRT_P = re.compile(r"Prob > chi2\s+=\s+(" + NUM + r")")
_LRT_ASSUME = re.compile(r"^Assumption:\s+(\S+) nested within (\S+)\s*$")


def _parse_lrtest(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    it = list(_nonblank(lines, start + 1, stop))
    if not it or not it[0][1].strip().startswith("Likelihood-ratio test"):
        raise lines.error("expected 'Likelihood-ratio test'", it[0][0] if it else start)
    cells: list[Cell] = []
    meta: dict[str, Any] = {}
    end = it[0][0]
    note: list[str] = []
    for i, text in it:
        a = _LRT_ASSUME.match(text.strip())
        if a:
            meta["nested"], meta["within"] = a.group(1), a.group(2)
            end = i
        c = _LRT_CHI.search(text)
        if c:
            cells.append(Cell(("lrtest", "df"), c.group(1), i))
            cells.append(Cell(("lrtest", "chi2"), c.group(2), i))
            end = i
        p = _LRT_P.search(text)
        if p:
            cells.append(Cell(("lrtest", "p_value"), p.group(1), i))
            end = i
        if text.startswith("Note: The reported degrees") or (note and not note[-1].rstrip().endswith(".")):
            note.append(text.strip())
            end = i
    if {c.path[1] for c in cells} != {"df", "chi2", "p_value"} or "nested" not in meta:
        raise lines.error("lrtest output incomplete (need Assumption, LR chi2(df), Prob > chi2)", end)
    if note:
        meta["note"] = " ".join(note)
    return cells, meta, end


def _parse_matlist(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    """``mat list NAME``: a 1-row matrix of equation-qualified columns; a wide matrix comes in
    several panels (equation line, column line, the row), read until every column is seen."""
    it = list(_nonblank(lines, start + 1, stop))
    m = re.match(r"^(\S+)\[(\d+),(\d+)\]\s*$", it[0][1]) if it else None
    if not m or len(it) < 4:
        raise lines.error("expected 'NAME[r,c]' and a matrix", it[0][0] if it else start)
    name, ncol = m.group(1), int(m.group(3))
    cells: list[Cell] = []
    pos = 1
    i = it[0][0]
    while len(cells) < ncol:
        if pos + 2 >= len(it):
            raise lines.error(f"matrix {name} ends after {len(cells)} of its {ncol} columns", it[-1][0])
        eqs = it[pos][1].split()
        cols = it[pos + 1][1].split()
        for lab in eqs:
            _check_label(lab, lines, it[pos][0])
        for lab in cols:
            _check_label(lab, lines, it[pos + 1][0])
        i, text = it[pos + 2]
        row = text.split()
        k = len(cols)
        if not k or len(eqs) != k or len(row) != k + 1 or not all(e.endswith(":") for e in eqs):
            raise lines.error(f"matrix {name} does not have {ncol} labelled columns", i)
        toks = _nums(" ".join(row[1:]), lines, i, k)
        cells += [Cell(("eb", f"{e}{c}"), t, i) for e, c, t in zip(eqs, cols, toks)]
        pos += 3
    if len(cells) != ncol:
        raise lines.error(f"matrix {name} has {len(cells)} columns, not {ncol}", i)
    return cells, {"matrix": name}, i


_ERET_RE = re.compile(r"^\s*(e\(\w+\))\s+([=:])\s+(.*?)\s*$")


def _parse_ereturn(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    cells: list[Cell] = []
    meta: dict[str, Any] = {}
    section = ""
    end = start
    for i, text in _nonblank(lines, start + 1, stop):
        s = text.strip()
        if s in ("scalars:", "macros:", "matrices:", "functions:"):
            section = s[:-1]
            end = i
            continue
        if not section:
            raise lines.error("expected 'scalars:'", i)
        m = _ERET_RE.match(text)
        if m and section == "scalars":
            if m.group(2) != "=":
                raise lines.error("expected 'e(name) = number'", i)
            _nums(m.group(3), lines, i, 1)
            cells.append(Cell(("ereturn", m.group(1)), m.group(3), i))
        elif m and section == "macros" and m.group(1) == "e(cmdline)":
            meta["cmdline"] = m.group(3).strip('"')
        elif m or (section == "functions" and re.fullmatch(r"e\(\w+\)", s)):
            pass
        else:
            break  # prose after the listing
        end = i
    if not cells:
        raise lines.error("ereturn list without scalars", start)
    return cells, meta, end


def _parse_di(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    for i, text in _nonblank(lines, start + 1, stop):
        toks = _nums(text.strip(), lines, i)
        if len(toks) > 9:
            raise lines.error(f"di printed {len(toks)} values; at most 9 are read", i)
        names = ["value"] + [f"value_{k}" for k in range(2, len(toks) + 1)]
        return [Cell(("di", n), t, i) for n, t in zip(names, toks)], {}, i
    raise lines.error("di without a result", start)


def _simple_rows(it: list[tuple[int, str]]) -> Iterator[tuple[int, str, str]]:
    """(line, label, rest) of a simple table's rows: rules skipped, stopping at the first non-row."""
    for i, text in it:
        if _RULE_RE.match(text):
            continue
        row = _table_row(text)
        if row is None:
            return
        yield i, row[0], row[1]


def _parse_summarize(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    it = list(_nonblank(lines, start + 1, stop))
    if not it or not re.match(r"^\s*Variable \|\s+Obs\s+Mean\s+Std\. [Dd]ev\.\s+Min\s+Max\s*$", it[0][1]):
        raise lines.error("expected the summarize header", it[0][0] if it else start)
    cells: list[Cell] = []
    end = it[0][0]
    for i, label, rest in _simple_rows(it[1:]):
        _check_label(label, lines, i)
        toks = rest.split()
        if len(toks) not in (1, 5):
            raise lines.error("a summarize row has 1 or 5 numbers", i)
        _nums(rest, lines, i)
        for f, t in zip(("obs", "mean", "sd", "min", "max"), toks):
            cells.append(Cell(("summarize", label, f), t, i))
        end = i
    if not cells:
        raise lines.error("summarize table without rows", start)
    return cells, {}, end


def _parse_tab(lines: _Lines, start: int, stop: int) -> tuple[list[Cell], dict[str, Any], int]:
    it = list(_nonblank(lines, start + 1, stop))
    head = _table_row(it[0][1]) if it else None
    if head is None or head[1].split() != ["Freq.", "Percent", "Cum."]:
        raise lines.error("expected a one-way tab header", it[0][0] if it else start)
    cells: list[Cell] = []
    end = it[0][0]
    for i, label, rest in _simple_rows(it[1:]):
        _check_label(label, lines, i)
        toks = _nums(rest, lines, i)
        fields = ("freq", "percent", "cum") if label != "Total" else ("freq", "percent")
        if len(toks) != len(fields):
            raise lines.error(f"a tab row has {len(fields)} numbers", i)
        cells.extend(Cell(("tab", label, f), t, i) for f, t in zip(fields, toks))
        end = i
        if label == "Total":
            break
    if not cells:
        raise lines.error("tab table without rows", start)
    return cells, {"variable_label": head[0]}, end


# --------------------------------------------------------------------------------------
def _classify(command: str) -> tuple[str, dict[str, Any]] | None:
    """The kind of output a command prints, or None when it prints nothing we keep."""
    if _QUI_RE.match(command.strip()):
        return None
    c, by = strip_prefixes(command)
    words = c.split()
    if not words:
        return None
    w0 = stata_command_name(re.split(r"[,(\[=]", words[0])[0]) or words[0].lower()
    rest = c[len(words[0]):].strip()
    if by is not None and w0 not in ("summarize", "tabulate"):
        return None
    if w0 in ("mixed", "xtmixed"):
        return "mixed", {}
    if w0 == "xtreg":
        opts = rest.partition(",")[2]
        return ("xtreg", {}) if re.search(r"\bmle?\b", opts) else None
    if w0 in ("melogit", "mepoisson"):
        return "melogit", {}
    if w0 == "xtlogit":
        return None if re.search(r"\b(?:fe|pa)\b", rest.partition(",")[2]) else ("xtlogit", {})
    if w0 == "estat" and rest:
        sub = rest.split(",")[0].strip()
        opts = rest.partition(",")[2].strip()
        if sub == "icc":
            return "estat_icc", {}
        if sub == "ic":
            return "estat_ic", {}
        if sub in ("recov", "recova", "recovariance"):
            return "estat_recov", {"corr": opts.startswith("corr")}
    if w0 == "lrtest":
        return "lrtest", {"names": rest.split(",")[0].split()}
    if w0 == "matrix" and len(words) >= 3 and words[1] in ("list", "li", "l"):
        return "matlist", {"matrix": words[2]}
    if w0 == "ereturn" and len(words) > 1 and words[1] in ("list", "li"):
        return "ereturn", {}
    if w0 == "estimates" and len(words) > 1 and words[1] in ("tab", "tabl", "table"):
        names = rest.split(None, 1)[1].partition(",")[0].split() if len(rest.split()) > 1 else []
        opts = rest.partition(",")[2]
        return "etable", {"columns": names or ["active"], "options": opts.strip()}
    if w0 == "display":
        return "di", {"expression": rest}
    if w0 == "summarize":
        return "summarize", {}
    if w0 in ("tabulate", "tab1"):
        vars_ = re.split(r"[,\[]|\bif\b|\bin\b", rest)[0].split()
        if len(vars_) == 2 and w0 == "tabulate":
            return "tab2", {"variables": vars_}
        return "tab", {"variable": vars_[0] if vars_ else ""}
    if w0 == "list":
        cols = re.split(r"[,\[]|\bif\b|\bin\b", rest)[0].split()
        return "list", {"columns": cols, "condition": rest.partition(" if ")[2].partition(",")[0].strip()}
    return None


_PARSERS = {
    "mixed": _parse_mixed,
    "estat_icc": _parse_icc,
    "estat_ic": _parse_ic,
    "lrtest": _parse_lrtest,
    "matlist": _parse_matlist,
    "ereturn": _parse_ereturn,
    "di": _parse_di,
    "summarize": _parse_summarize,
    "tab": _parse_tab,
    "tab2": _parse_tab2,
    "xtreg": _parse_xtreg,
    "melogit": lambda lines, start, stop: _parse_glmm(lines, start, stop, "melogit"),
    "xtlogit": lambda lines, start, stop: _parse_glmm(lines, start, stop, "xtlogit"),
    "list": _parse_list,
    "etable": _parse_etable,
}

_MATREF_RE = re.compile(r"\b(e\(b\)|[A-Za-z_]\w*)\[\d+,\d+\]")


#: Stata commands by full name and the shortest abbreviation Stata accepts (``help`` pages).
#: A log line starting with another word is not a command Stata runs (r(199)).
STATA_COMMANDS: Mapping[str, int] = MappingProxyType({
    "mixed": 5, "xtmixed": 7, "xtreg": 5, "regress": 3, "use": 3, "generate": 1, "egen": 4, "replace": 7,
    "set": 3, "clear": 5, "sort": 4, "gsort": 5, "keep": 4, "drop": 4, "estimates": 3, "matrix": 3,
    "scalar": 2, "quietly": 3, "noisily": 1, "capture": 3, "estat": 5, "lrtest": 6, "display": 2,
    "summarize": 2, "tabulate": 2, "tab1": 4, "tab2": 4, "ereturn": 4, "return": 3, "by": 2, "bysort": 6,
    "predict": 4, "list": 1, "scatter": 2, "graph": 2, "twoway": 2, "histogram": 4, "xtset": 5,
    "describe": 1, "codebook": 4, "label": 3, "merge": 5, "append": 6, "collapse": 8, "reshape": 7,
    "save": 4, "log": 3, "cd": 2, "xtsum": 5, "xtdescribe": 4, "xttab": 5, "margins": 7, "marginsplot": 11,
    "test": 4, "lincom": 6, "nlcom": 5, "correlate": 3, "pwcorr": 6, "ttest": 5, "count": 3, "assert": 6,
    "rename": 3, "recode": 6, "encode": 6, "decode": 6, "order": 5, "format": 3, "preserve": 8,
    "restore": 7, "local": 3, "global": 2, "version": 4, "help": 1, "which": 5, "xtlogit": 7,
    "melogit": 7, "meglm": 5, "mepoisson": 9, "meqrlogit": 9, "xtmelogit": 9, "logit": 5, "logistic": 8,
    "probit": 6, "poisson": 7, "xtpoisson": 9, "anova": 5, "table": 5, "tabstat": 7, "xtrho": 5,
    "webuse": 6, "sysuse": 6, "insheet": 7, "import": 6, "export": 6, "outsheet": 8, "center": 6,
    "kdensity": 5, "qnorm": 5, "pnorm": 5, "lowess": 3, "line": 4, "sample": 6,
    "compress": 4, "duplicates": 3, "isid": 4, "fillin": 6, "expand": 6, "xi": 2,
    "fvset": 5, "char": 4, "notes": 4, "timer": 5, "do": 2, "run": 3, "exit": 4, "more": 4,
    "infile": 3, "infix": 5, "mata": 4, "end": 3, "gllamm": 6, "xtmepoisson": 11,
})
#: Commands that print nothing hlmbridge reads, or nothing at all (no "not checked" note).
_QUIET_COMMANDS = frozenset({"use", "generate", "egen", "replace", "set", "clear", "sort", "gsort", "keep", "drop",
                             "estimates", "matrix", "scalar", "quietly", "by", "bysort", "xtset", "label", "rename",
                             "preserve", "restore", "local", "global", "version", "capture", "log", "cd", "format",
                             "order", "compress", "recode", "encode", "decode", "center", "predict", "webuse",
                             "sysuse", "save", "graph", "more", "timer", "infile", "infix"})
#: Estimation commands whose models hlmbridge does not fit (their e() replaces the active model).
_OTHER_ESTIMATION = frozenset({"regress", "logit", "logistic", "probit", "poisson", "meglm",
                               "meqrlogit", "xtmelogit", "xtpoisson", "anova"})
_BY_RE = re.compile(r"^(?:by|bys|byso|bysor|bysort)\s+([^:]+):\s*(.*)$", re.IGNORECASE)


def stata_command_name(word: str) -> str | None:
    """The full name of a Stata command word (abbreviations expanded), or None when Stata has none.

    Examples
    --------
    >>> stata_command_name("sum"), stata_command_name("g"), stata_command_name("mathach")
    ('summarize', 'generate', None)
    """
    w = word.lower()
    if w in STATA_COMMANDS:
        return w
    for full, k in STATA_COMMANDS.items():
        if len(w) >= k and full.startswith(w):
            return full
    return None


def strip_prefixes(command: str) -> tuple[str, str | None]:
    """A command without its ``quietly``/``capture``/``noisily`` and ``by``/``bysort`` prefixes, and
    the by-variables (None without a ``by`` prefix).

    Examples
    --------
    >>> strip_prefixes("bysort schoolnr: gen sn = _N")
    ('gen sn = _N', 'schoolnr')
    >>> strip_prefixes("quietly sum sm if first")
    ('sum sm if first', None)
    """
    c = command.strip()
    by = None
    while True:
        c2 = _QUI_RE.sub("", c)
        c2 = re.sub(r"^(?:cap|capt|captu|captur|capture|n|no|noi|nois|noisi|noisil|noisily)\s*:?\s+", "", c2)
        m = _BY_RE.match(c2)
        if m:
            by = m.group(1).strip()
            c2 = m.group(2)
        if c2 == c:
            return c, by
        c = c2


def _is_valid_command(command: str) -> tuple[bool, str]:
    c, _ = strip_prefixes(command)
    word = c.split()[0] if c.split() else ""
    word = re.split(r"[,(\[=:]", word)[0]
    if stata_command_name(word):
        return True, ""
    return False, f"'{word}' is not a Stata command (Stata: command {word} is unrecognized, r(199))"


def parse_log_text(text: str, *, name: str = "<log>", lenient: bool = False) -> ParsedLog:
    """Parse a Stata log given as text; see the module docstring.

    Parameters
    ----------
    text
        The log, one output line per text line (blank lines anywhere are fine).
    name
        The log's name used in errors and provenance.
    lenient
        Collect unparseable blocks in ``problems`` instead of raising.

    Returns
    -------
    ParsedLog

    Examples
    --------
    >>> log = parse_log_text(". qui mixed y x || g:\\n. mat m=e(b)\\n. di m[1,1]\\n2\\n", name="t")
    >>> log.blocks[0].models
    (ModelRef(name='m', command='qui mixed y x || g:', line=1),)
    """
    lines = _Lines(text, name)
    starts, broken = _join_commands(lines)
    broken_at = {e.line: e for e in broken}
    current: ModelRef | None = None
    stored: dict[str, ModelRef] = {}
    matrices: dict[str, ModelRef] = {}
    predicted: dict[str, ModelRef] = {}  # predict NAME, reffects: the model whose BLUPs NAME holds
    dataset: tuple[str, int] | None = None
    data_steps: list[tuple[int, str]] = []
    panel: str | None = None  # xtset's panel variable
    current_foreign: tuple[int, str] | None = None  # the active estimation result, when not a model we read
    foreign: dict[str, tuple[int, str]] = {}  # est store names of such results
    blocks: list[LogBlock] = []
    invalid: list[InvalidCommand] = []
    unchecked: list[InvalidCommand] = []
    problems: list[FixtureError] = []
    invalid_since: list[InvalidCommand] = []

    def fail(err: FixtureError) -> None:
        if not lenient:
            raise err
        problems.append(err)

    for k, (line, cmd) in enumerate(starts):
        stop = starts[k + 1][0] if k + 1 < len(starts) else len(lines) + 1
        if line in broken_at:
            fail(broken_at[line])
            first = _command_of(lines[line]) or ""
            if is_model_command(first):
                current = None  # a model ran, but which one cannot be known
            continue
        bare, by = strip_prefixes(cmd)
        words = bare.split()
        ok, why = _is_valid_command(cmd)
        if not ok:
            bad = InvalidCommand(line, cmd, why)
            invalid.append(bad)
            invalid_since.append(bad)
            continue
        w0 = stata_command_name(re.split(r"[,(\[=]", words[0])[0]) or words[0].lower()
        readable = is_model_command(cmd) and not (w0 == "xtreg" and not re.search(r",.*\bmle?\b", bare)) and not (
            w0 == "xtlogit" and re.search(r",.*\b(?:fe|pa)\b", bare))
        if w0 in _OTHER_ESTIMATION or (is_model_command(cmd) and not readable):
            current, current_foreign = None, (line, cmd)  # e() now holds a model hlmbridge does not fit
            invalid_since = []
        elif readable:
            current_foreign = None
            model_cmd = cmd
            if w0 in ("xtreg", "xtlogit") and not re.search(r",.*\bi\(", bare) and panel is not None:
                model_cmd = cmd + (" " if "," in bare else ", ") + f"i({panel})"
            current = ModelRef(".", model_cmd, line)
            invalid_since = []
        elif w0 == "use" or w0 in ("webuse", "sysuse"):
            dataset = (re.split(r"[\s,]", bare.split(None, 1)[1])[0] if len(words) > 1 else "", line)
            data_steps = []
        elif w0 == "xtset" and len(words) > 1:
            panel = words[1].rstrip(",")
        elif w0 in ("egen", "generate", "replace", "drop", "keep", "sort", "gsort", "center", "recode", "rename",
                    "label", "format", "order", "compress", "scalar") or (w0 == "predict" and by is None):
            data_steps.append((line, cmd))
            pm = re.match(r"^predict\s+(?:\w+\s+)?(\w+)\s*,\s*(?:reff|reffe|reffec|reffect|reffects)\b", bare)
            if w0 == "predict" and pm and current is not None:
                predicted[pm.group(1)] = current
        elif w0 in ("estimates",) and len(words) >= 3 and words[1].startswith("sto"):
            if current is None and current_foreign is not None:
                foreign[words[2]] = current_foreign
                stored.pop(words[2], None)
            elif current is None:
                fail(lines.error("est store without an active model", line))
            else:
                stored[words[2]] = ModelRef(words[2], current.command, current.line)
                foreign.pop(words[2], None)
        elif w0 == "estimates" and len(words) >= 3 and words[1].startswith("res"):
            if words[2] in foreign:
                current, current_foreign = None, foreign[words[2]]
            elif words[2] not in stored:
                fail(lines.error(f"estimates restore {words[2]!r}: no 'estimates store' of that name", line))
            else:
                current = ModelRef(".", stored[words[2]].command, stored[words[2]].line)
                current_foreign = None
        elif w0 == "matrix" and re.fullmatch(r"\w+\s*=\s*e\(b\)", bare.partition(" ")[2].strip()):
            mname = bare.partition(" ")[2].split("=")[0].strip()
            if current is None:
                fail(lines.error("mat NAME=e(b) without an active model", line))
            else:
                matrices[mname] = ModelRef(mname, current.command, current.line)
        kind = _classify(cmd)
        if kind is None:
            if not _QUI_RE.match(cmd.strip()) and w0 not in _QUIET_COMMANDS and _has_output(lines, line, stop):
                unchecked.append(InvalidCommand(line, cmd, f"not checked: hlmbridge reads no reference numbers "
                                                f"from `{w0}` output"))
            continue
        kname, kmeta = kind
        names = kmeta.get("names") or kmeta.get("columns") or []
        uses_active = kname in ("estat_icc", "estat_ic", "estat_recov", "ereturn") or "." in names or (
            kname == "etable" and names == ["active"]) or (kname == "matlist" and kmeta.get("matrix") == "e(b)")
        other = [foreign[n] for n in names if n in foreign] + (
            [current_foreign] if uses_active and current is None and current_foreign is not None else [])
        if other and kname in ("estat_icc", "estat_ic", "estat_recov", "ereturn", "lrtest", "etable", "matlist"):
            unchecked.append(InvalidCommand(line, cmd, f"not checked: it reports `{other[0][1]}` (line {other[0][0]}), "
                                            "an estimation command hlmbridge does not fit"))
            continue
        try:
            if kname == "estat_recov":
                cells, meta, end = _parse_recov(lines, line, stop, kmeta["corr"])
            else:
                cells, meta, end = _PARSERS[kname](lines, line, stop)
            meta = {**kmeta, **meta}
            models: list[ModelRef] = []
            notes: list[str] = []
            if kname in MODEL_KINDS:
                models = [current] if current else []
            elif kname in ("estat_icc", "estat_ic", "estat_recov", "ereturn"):
                if current is None:
                    raise lines.error(f"{cmd!r} without an active model", line)
                models = [current]
            elif kname == "lrtest":
                for nm in kmeta["names"]:
                    ref = current if nm == "." else stored.get(nm)
                    if ref is None:
                        raise lines.error(f"lrtest names {nm!r}, which no 'est store' defined", line)
                    models.append(ModelRef(nm, ref.command, ref.line))
            elif kname == "etable":
                for nm in meta["columns"]:
                    ref = current if nm in (".", "active") else stored.get(nm)
                    if ref is None:
                        raise lines.error(f"estimates table names {nm!r}, which no 'estimates store' defined", line)
                    models.append(ModelRef(nm, ref.command, ref.line))
            elif kname in ("matlist", "di"):
                names = [kmeta["matrix"]] if kname == "matlist" else list(
                    dict.fromkeys(m.group(1) for m in _MATREF_RE.finditer(kmeta["expression"]))
                )
                for nm in names:
                    ref = current if nm == "e(b)" else matrices.get(nm)
                    if ref is None:
                        raise lines.error(f"matrix {nm!r} is not defined at this point", line)
                    models.append(ModelRef(nm, ref.command, ref.line))
            elif kname == "list":
                for col in meta["columns"]:
                    if col in predicted:
                        models.append(ModelRef(col, predicted[col].command, predicted[col].line))
            if kname in ("summarize", "tab", "tab2", "list") or (kname in MODEL_KINDS
                                                                  and _uses_made_variable(cmd, data_steps)):
                if dataset is None:
                    raise lines.error(f"{cmd!r} before any 'use'", line)
                if dataset is not None:
                    meta["dataset"] = dataset[0]
                    meta["dataset_line"] = dataset[1]
                    meta["data_steps"] = [c for _, c in data_steps]
                    if data_steps:
                        meta["data_step_lines"] = [i for i, _ in data_steps]
            if kname not in MODEL_KINDS and models and invalid_since and any(m.name == "." for m in models):
                for bad in invalid_since:
                    notes.append(
                        f"line {bad.line} `{bad.command}` is not a valid command ({bad.reason}); "
                        f"the active model is still the one from line {current.line if current else '?'}"
                    )
            if kname == "ereturn" and "cmdline" in meta and current is not None:
                if _QUI_RE.sub("", current.command) != meta["cmdline"]:
                    raise lines.error(
                        f"e(cmdline) {meta['cmdline']!r} is not the active model {current.command!r}", line
                    )
            blocks.append(LogBlock(kname, cmd, line, end, tuple(cells), tuple(models), meta, tuple(notes)))
        except FixtureError as exc:
            fail(_with_layout(exc, kname, cmd, line, lines.layout))
    return ParsedLog(name, tuple(blocks), tuple(invalid), tuple(problems), layout=lines.layout,
                     unchecked=tuple(unchecked))


def _uses_made_variable(command: str, steps: Sequence[tuple[int, str]]) -> bool:
    """True when a model command names a variable one of the log's data steps makes or changes."""
    from hlmbridge.reference.data_prep import step_targets

    made = {t for _, s in steps for t in step_targets(s)}
    return "*" in made or bool(made & set(re.findall(r"[A-Za-z_]\w*", command)))


def _has_output(lines: _Lines, start: int, stop: int) -> bool:
    return any(True for _ in _nonblank(lines, start + 1, stop))


def _with_layout(exc: FixtureError, kind: str, command: str, line: int, layout: str) -> FixtureError:
    """``exc`` with the block it is in and the table layout the log was read as."""
    msg = str(exc)
    if exc.path is not None:
        msg = msg.removeprefix(f"{exc.path}:{exc.line}: " if exc.line is not None else f"{exc.path}: ")
    return FixtureError(f"{msg} (in the {kind} block of `{command}` at line {line}; read as {LAYOUTS[layout]})",
                        path=exc.path, line=exc.line)


def decode_log(raw: bytes) -> tuple[str, str]:
    """The text of a log and the encoding it was read with.

    UTF-8 (a byte-order mark is dropped; UTF-16 with its mark is read too), else
    Windows-1252 (Stata logs written on Windows), else Latin-1, which reads any bytes.

    Examples
    --------
    >>> decode_log("r\u00e9sum\u00e9".encode("cp1252"))
    ('résumé', 'cp1252')
    >>> decode_log("r\u00e9sum\u00e9".encode("utf-8"))[1]
    'utf-8'
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16"), "utf-16"
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def parse_log(path: str | Path, *, lenient: bool = False) -> ParsedLog:
    """Parse the Stata log at ``path`` (see :func:`parse_log_text`).

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
    ...     _ = f.write(". di 3\\n3\\n")
    >>> [b.kind for b in parse_log(f.name).blocks]
    ['di']
    >>> os.unlink(f.name)
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise FixtureError(f"cannot read the log: {exc.strerror}", path=str(p)) from exc
    if b"\x00" in raw and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise FixtureError("NUL byte: not a text log (a binary file, or UTF-16 without its byte-order mark?)", path=str(p),
                           line=line)
    text, encoding = decode_log(raw)
    parsed = parse_log_text(text, name=p.name, lenient=lenient)
    return ParsedLog(parsed.name, parsed.blocks, parsed.invalid, parsed.problems, encoding, parsed.layout,
                     parsed.unchecked)
