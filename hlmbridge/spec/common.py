"""Pieces both parsers share.

Examples
--------
>>> check_parens("y ~ x + (1 | g)")
>>> check_parens("y ~ (1 | g")
Traceback (most recent call last):
...
hlmbridge.errors.SpecError: unbalanced parenthesis: '(' is never closed (at position 4)
>>> try:
...     check_parens("y ~ (1 | g")
... except Exception as err:
...     print(err.pointer)
  y ~ (1 | g
      ^
"""

from __future__ import annotations

from hlmbridge.errors import SpecError

__all__ = ["check_parens", "spec_error"]


def spec_error(message: str, text: str, position: int | None) -> SpecError:
    """A SpecError pointing at ``position`` in ``text``."""
    return SpecError(message, text=text, position=position)


def check_parens(text: str, start: int = 0) -> None:
    """Raise a SpecError at the first unbalanced parenthesis of ``text[start:]``."""
    stack: list[int] = []
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "(":
            stack.append(i)
        elif ch == ")":
            if not stack:
                raise spec_error("unbalanced parenthesis: ')' has no matching '('", text, i)
            stack.pop()
    if stack:
        raise spec_error("unbalanced parenthesis: '(' is never closed", text, stack[-1])
