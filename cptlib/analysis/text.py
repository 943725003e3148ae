"""What a chapter says in words: ``Note`` and the shared pieces of computed sentences.

A chapter never states a result that the records did not produce, so every sentence about a
result is built from numbers by a function of this package and returned as a ``Note``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: What a table shows where a value does not exist (explained on the page that shows it).
DASH = "—"


@dataclass(frozen=True)
class Note:
    """A sentence shown instead of a figure or table (rendered as Markdown in a notebook)."""

    text: str

    def _repr_markdown_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def missing(value: Any) -> bool:
    """None or NaN: a value a record does not have."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def pct(value: Any, digits: int = 1) -> str:
    """A number for a table cell, or the dash when it is missing or not finite."""
    if missing(value):
        return DASH
    value = float(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else DASH


def seeds_text(n: int) -> str:
    return "one seed" if n == 1 else f"{n} seeds"


def nothing(what: str) -> Note:
    """The Note of a table or figure that these records cannot fill."""
    return Note(f"*No {what} in these records.*")


def no_runs_text(what: str, profile: str, commands: Sequence[str]) -> Note:
    """The plain statement a chapter makes when it has no records, with the commands to fix it."""
    shown = "\n".join(f"$ {c}" for c in commands)
    return Note(
        f"**No runs of this kind at profile `{profile}` yet** ({what}). Nothing below is "
        f"computed until they exist. To produce them, run:\n\n```console\n{shown}\n```\n\n"
        "then rebuild the book (`make book`, or `cpt book --profile " + profile + "`)."
    )


def join_lines(lines: Sequence[str]) -> Note:
    """Bullet lines as one Note."""
    return Note("\n".join(lines))
