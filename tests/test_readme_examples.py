"""The README's worked examples run, and print what the README shows.

A Python block of README.md whose first line is ``# example: NAME`` is executed here as a
script (in a temporary working directory, so files it writes land there). When a following
text block begins with ``# output: NAME``, the rest of that block must equal what the script
printed (trailing spaces ignored). A README example that stops working, or whose numbers move,
fails here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```(python|text)\n(.*?)```", re.S)


def _blocks() -> tuple[dict[str, str], dict[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    code: dict[str, str] = {}
    output: dict[str, str] = {}
    for kind, body in _BLOCK.findall(text):
        first, _, rest = body.partition("\n")
        m = re.fullmatch(r"# (example|output): ([\w-]+)", first.strip())
        if not m:
            continue
        target = code if m.group(1) == "example" else output
        assert kind == ("python" if m.group(1) == "example" else "text"), f"{first!r} in a {kind} block"
        assert m.group(2) not in target, f"README has two blocks named {m.group(2)!r}"
        target[m.group(2)] = body if m.group(1) == "example" else rest
    return code, output


EXAMPLES, OUTPUTS = _blocks()


def test_the_readme_has_its_worked_examples() -> None:
    assert {"glmm", "comparison"} <= set(EXAMPLES), sorted(EXAMPLES)
    assert set(OUTPUTS) <= set(EXAMPLES), "an output block names no example"


@pytest.mark.requires_r
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_readme_example_runs_and_prints_what_the_readme_shows(name: str, tmp_path: Path) -> None:
    printed = io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(EXAMPLES[name], f"README.md example {name}", "exec"), {"__name__": "readme_example"})
    finally:
        os.chdir(cwd)
    if name in OUTPUTS:
        def lines(s: str) -> list[str]:
            return [ln.rstrip() for ln in s.strip("\n").splitlines()]

        assert lines(printed.getvalue()) == lines(OUTPUTS[name])
