"""The checks behind each lesson's exercises: friendly feedback, never a traceback.

Every check takes the learner's ``answer`` and returns a :class:`Feedback`, which a notebook
shows as a sentence. ``None`` (the answer cell not filled in yet) gets a gentle reminder.

>>> from gradcourse import exercises
>>> exercises.check_number(None, 0.25, name="σ'(0)")
Fill in your answer for σ'(0): replace `None` with your value and run the cell again.
>>> exercises.check_number(0.25, 0.25, name="σ'(0)").correct
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``correct`` is True, False or None (no answer yet)."""

    correct: bool | None
    message: str

    def __repr__(self) -> str:
        return self.message

    def _repr_markdown_(self) -> str:
        mark = {True: "✅", False: "❌", None: "✏️"}[self.correct]
        return f"{mark} {self.message}"

    def __bool__(self) -> bool:
        return bool(self.correct)


def missing(name: str) -> Feedback:
    return Feedback(None, f"Fill in your answer for {name}: replace `None` with your value and "
                          "run the cell again.")


def check_number(answer: Any, expected: float, *, name: str, rel: float = 0.05, abs_tol: float = 0.0,
                 praise: str = "", hint: str = "") -> Feedback:
    """Right if ``answer`` is within ``rel`` (relative) or ``abs_tol`` of ``expected``."""
    if answer is None:
        return missing(name)
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return Feedback(False, f"{name} should be a number; got {answer!r}.")
    if math.isclose(value, expected, rel_tol=rel, abs_tol=abs_tol):
        return Feedback(True, f"Right: {name} = {expected:.4g}. {praise}".strip())
    direction = "too large" if value > expected else "too small"
    return Feedback(False, f"Not quite: {value:.4g} is {direction}. {hint}".strip())


def check_choice(answer: Any, expected: Any, *, name: str, options: tuple | None = None,
                 praise: str = "", hint: str = "") -> Feedback:
    """Right if ``answer`` equals ``expected`` (strings compared without case or spaces)."""
    if answer is None:
        return missing(name)

    def norm(v):
        return v.strip().lower() if isinstance(v, str) else v

    if options is not None and norm(answer) not in {norm(o) for o in options}:
        return Feedback(False, f"{name} should be one of {', '.join(map(repr, options))}; "
                               f"got {answer!r}.")
    if norm(answer) == norm(expected):
        return Feedback(True, f"Right: {expected}. {praise}".strip())
    return Feedback(False, f"Not quite. {hint}".strip())


# Each lesson adds its own named checks below, in its own section, built on the two above.
