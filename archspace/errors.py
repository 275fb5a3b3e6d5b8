"""Problems found in a spec, and the exception that carries all of them at once.

Every user mistake is reported as a :class:`Problem` naming the spec path it concerns
(``stages[2].width``); loaders, validators and graph checks collect every problem they
find and raise one :class:`SpecError` so that the user sees them all in one go.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass
from typing import Iterable, Literal


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem with a spec.

    Attributes:
        path: Spec path the problem concerns, e.g. ``stages[2].width``; ``""`` for the
            spec as a whole.
        message: What is wrong, in one line.
        severity: ``"error"`` stops the build; ``"warning"`` is reported and the build goes on.
    """

    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def format(self, root: str = "spec") -> str:
        """One line: ``path: message`` (``root`` stands for the empty path); control characters
        (newlines, escape sequences) from the input are escaped, so the line stays one line."""
        prefix = "warning: " if self.severity == "warning" else ""
        return escape_controls(f"{prefix}{self.path or root}: {self.message}")


class SpecError(ValueError):
    """Raised with every problem found in a spec (never for internal errors)."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = list(problems)
        if not self.problems:
            raise ValueError("SpecError needs at least one problem")
        super().__init__("\n".join(p.format() for p in self.problems))

    @classmethod
    def single(cls, path: str, message: str) -> "SpecError":
        """A SpecError holding one problem."""
        return cls([Problem(path, message)])

    def lines(self, root: str = "spec") -> list[str]:
        """One line per problem, as printed by the command line."""
        return [p.format(root) for p in self.problems]


def escape_controls(text: str) -> str:
    """``text`` with every non-printable character written as a Python escape (``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def shorten(value: object, limit: int = 80) -> str:
    """A repr of ``value`` of at most about ``limit`` characters, for messages about user input:
    long strings are cut and containers shown only a few items and levels deep (an input may
    repeat one list a million times through aliases)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxlong, short.maxother = 3, 60, 40, 60
    short.maxdict = short.maxlist = short.maxtuple = short.maxset = short.maxfrozenset = 4
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def raise_if_errors(problems: Iterable[Problem]) -> list[Problem]:
    """Raise :class:`SpecError` if any problem is an error; return the warnings."""
    problems = list(problems)
    if any(p.severity == "error" for p in problems):
        raise SpecError([p for p in problems if p.severity == "error"])
    return problems
