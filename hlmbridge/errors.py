"""One exception family for everything hlmbridge raises on purpose.

Every error a user can provoke (bad data, a bad model string, an engine that is
missing, a construct an engine cannot fit, a fit that failed) is a subclass of
:class:`HlmbridgeError`, so ``except HlmbridgeError`` catches all of them.

Examples
--------
>>> from hlmbridge.errors import HlmbridgeError, SpecError
>>> issubclass(SpecError, HlmbridgeError)
True
"""

from __future__ import annotations

__all__ = [
    "HlmbridgeError",
    "DataError",
    "SpecError",
    "UnsupportedSpecError",
    "EngineUnavailableError",
    "FitError",
    "ConvergenceError",
    "FixtureError",
    "UsageError",
]


class HlmbridgeError(Exception):
    """Base class of every error hlmbridge raises on purpose."""


class DataError(HlmbridgeError, ValueError):
    """The data cannot be used as given (missing file, missing column, bad merge, ...)."""


class SpecError(HlmbridgeError, ValueError):
    """A model specification (Stata command, lme4 formula or ModelSpec) is malformed.

    ``position`` is the 0-based offset in ``text`` where the problem was found,
    when the spec came from a string.
    """

    def __init__(self, message: str, *, text: str | None = None, position: int | None = None):
        self.text = text
        self.position = position
        if text is not None and position is not None:
            message = f"{message} (at position {position})"
        super().__init__(message)

    @property
    def pointer(self) -> str:
        """The text with a caret under the position (empty when there is none)."""
        if self.text is None or self.position is None or "\n" in self.text:
            return ""
        return f"  {self.text}\n  {' ' * self.position}^"


class UnsupportedSpecError(SpecError):
    """A valid model that a given engine cannot fit exactly (names construct and engine)."""

    def __init__(self, construct: str, engine: str, detail: str = "", *, message: str | None = None):
        self.construct = construct
        self.engine = engine
        msg = f"{engine} cannot fit {construct} exactly"
        if detail:
            msg += f": {detail}"
        super().__init__(message if message is not None else msg)


class EngineUnavailableError(HlmbridgeError, RuntimeError):
    """An engine was asked for but what it needs is not installed (says what to install)."""


class FitError(HlmbridgeError, RuntimeError):
    """An engine failed to fit the model; carries the engine's own message."""

    def __init__(self, message: str, *, engine: str | None = None):
        self.engine = engine
        super().__init__(f"[{engine}] {message}" if engine else message)


class ConvergenceError(FitError):
    """The optimizer did not reach an optimum (reported, never hidden)."""


class FixtureError(HlmbridgeError, ValueError):
    """A reference fixture file is malformed (names the file and line)."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)


class UsageError(HlmbridgeError, ValueError):
    """A command-line or API call was used wrongly (unknown case, engine, option ...)."""
