"""Reading a learner's answer: friendly feedback, never a traceback.

This is the engine behind every exercise; the answer keys themselves live in
:mod:`gradcourse.exercises`, every lesson's in lesson order.

A check takes the learner's ``answer`` and returns a :class:`Feedback`, which a notebook shows as
a sentence, whatever the answer is: a number, a string such as ``"1/4"`` or ``"2**10"``, a
one-element array or tensor, a list, ``NaN``, ``10**400``… ``None`` (the answer cell not filled in
yet) gets a gentle reminder. Choices are compared without case, spaces, underscores or hyphens
(``"Dead ReLUs"`` reads as ``"dead_relu"``).

A key whose answer is a number or an option is a record (:class:`Number`, :class:`Ratio`,
:class:`Whole`, :class:`Band`, :class:`Choice`): the expected value (a number, or a zero-argument
function that derives it), the tolerance, what to call the answer, the praise, the hint and the
typical wrong answers (:class:`Mistake`) with what to say about each. Calling the record checks an
answer. A key that computes (trains a model, runs the learner's function, reads a Run) is a
function decorated with :func:`exercise`, built from the helpers here.

The other arguments of a check come from the notebook (the mystery runs, a measured mean norm).
When one of them is unusable (``None``, an empty dict, NaN), the check does not raise either: it
returns a Feedback with ``correct=None`` that names the argument and what it expects.

>>> check_number(None, 0.25, name="σ'(0)")
Fill in your answer for σ'(0): replace `None` with your value and run the cell again.
>>> check_number("1/4", 0.25, name="σ'(0)").correct
True
>>> check_number(float("nan"), 0.25, name="σ'(0)")
Not quite: that is not a number (NaN). Write σ'(0) as a number, e.g. 0.25, "1/4" or "2**10".
"""

from __future__ import annotations

import ast
import functools
import math
import numbers
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``correct`` is True, False or None (no answer yet, or the
    check cannot run)."""

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


def not_a_function(fn, name: str) -> Feedback | None:
    """The feedback for a coding exercise's answer that is no function yet (nothing, or not
    callable), else ``None``: the check goes on."""
    if fn is None:
        return missing(name)
    if not callable(fn):
        return Feedback(False, f"Not quite: pass the function itself, without brackets; got {describe(fn)}.")
    return None


def cannot_check(argument: str, expected: str, value: Any) -> Feedback:
    """The feedback for an unusable argument supplied by the notebook (not the learner's answer)."""
    return Feedback(None, f"This check cannot run: {argument} should be {expected}; got {describe(value)}. "
                          "Re-run the cells above this one (or restore this cell as it was).")


def exercise(check: Callable[..., Feedback]) -> Callable[..., Feedback]:
    """Decorator for an exercise check: a ValueError raised while it reads its other arguments
    (a width, a depth, a run) becomes a Feedback that says so, never a traceback."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs) -> Feedback:
        try:
            return check(*args, **kwargs)
        except ValueError as error:
            return _cannot_run(error)

    return wrapper


def _cannot_run(error: ValueError) -> Feedback:
    return Feedback(None, f"This check cannot run: {error}. Re-run the cells above this one "
                          "(or restore this cell as it was).")


# --- reading an answer ---

def describe(value: Any, limit: int = 60) -> str:
    """A short, safe description of ``value`` for a message."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 (an object whose repr fails must not break the feedback)
        text = f"a {type(value).__name__}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


class Unreadable(Exception):
    """The answer is not a number; the message says why."""


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.Pow: operator.pow}
#: The one function an answer may call: ``sqrt(3)``, ``math.sqrt(3)``, ``np.sqrt(3)`` (``√3`` is read as sqrt(3)).
_SQRT_NAMES = {"sqrt", "math.sqrt", "np.sqrt", "numpy.sqrt"}


def _function_name(node: ast.AST) -> str:
    """``sqrt`` or ``math.sqrt`` for a Name or an Attribute of a Name, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return ""


def _evaluate(node: ast.AST) -> float:
    """A number from an arithmetic expression of numbers, + − * / ** and brackets (no names, no
    calls: nothing else is evaluated). Computed in floats, so 2**10**10 overflows at once."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        try:
            return float(node.value)
        except OverflowError:
            return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        try:
            value = _OPERATORS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise Unreadable("it divides by zero") from None
        except OverflowError:
            return math.inf
        if isinstance(value, complex):
            raise Unreadable("it is a complex number") from None
        return value
    if (isinstance(node, ast.Call) and _function_name(node.func) in _SQRT_NAMES and len(node.args) == 1
            and not node.keywords):
        value = _evaluate(node.args[0])
        if value < 0:
            raise Unreadable("it takes the square root of a negative number")
        return math.sqrt(value)
    raise Unreadable("it is not a number or an arithmetic expression of numbers")


def _parse(text: str) -> float:
    cleaned = (text.strip().replace("−", "-").replace("×", "*").replace("·", "*").replace("^", "**")
               .replace("⁄", "/"))
    # √ binds to the number or bracket right after it: √1.5 → sqrt(1.5), √(3/2) → sqrt(3/2), √2/4 → sqrt(2)/4
    cleaned = re.sub(r"√\s*(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)", r"sqrt(\1)", cleaned).replace("√", "sqrt")
    if not cleaned:
        raise Unreadable("it is empty")
    if len(cleaned) > 100:
        raise Unreadable("it is too long for a number")
    if "," in cleaned:
        raise Unreadable("it contains a comma (write decimals with a point, and one number only)")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise Unreadable("it is not a number or an arithmetic expression of numbers") from None
    return _evaluate(tree)


def as_number(answer: Any) -> float:
    """``answer`` as a float (possibly NaN or ±inf), or :class:`Unreadable` saying why not.

    Accepts numbers of any kind, numeric strings and arithmetic (``"1/4"``, ``"2**10"``,
    ``"1e-3"``, square roots: ``"sqrt(2)/4"``, ``"√1.5"``), and one-element lists, arrays and tensors.

    >>> as_number("2**10"), as_number([0.25]), as_number(10**400), as_number("√(3/2)") == 1.5 ** 0.5
    (1024.0, 0.25, inf, True)
    """
    if isinstance(answer, (bool, np.bool_)):
        raise Unreadable("it is True/False, not a number")
    if isinstance(answer, str):
        return _parse(answer)
    if answer is None or isinstance(answer, (bytes, bytearray, dict, set, frozenset)):
        raise Unreadable(f"it is a {type(answer).__name__}, not a number")
    if isinstance(answer, numbers.Complex) and not isinstance(answer, numbers.Real):
        raise Unreadable("it is a complex number")
    if isinstance(answer, numbers.Real):
        try:
            return float(answer)
        except OverflowError:                      # an int beyond float's range, e.g. 10**400
            return math.inf if answer > 0 else -math.inf
    if callable(getattr(answer, "numel", None)):    # a torch tensor
        count = int(answer.numel())
    elif isinstance(answer, np.ndarray):
        count = int(answer.size)
    elif isinstance(answer, (list, tuple)):
        count = len(answer)
    else:
        try:
            return float(answer)
        except Exception:  # noqa: BLE001 (any object: a number if float() takes it, else feedback)
            raise Unreadable(f"it is a {type(answer).__name__}, not a number") from None
    if count != 1:
        raise Unreadable(f"it holds {count} values, not one number")
    return as_number(answer.item() if hasattr(answer, "item") else answer[0])


def read_number(answer: Any, name: str, example: str) -> float | Feedback:
    """The answer as a finite float, or the Feedback that explains why it is not one."""
    try:
        value = as_number(answer)
    except Unreadable as why:
        return Feedback(False, capitalise(f"{name} should be a number (e.g. {example}); got {describe(answer)}: "
                                          f"{why}."))
    except RecursionError:
        return Feedback(False, capitalise(f"{name} should be a number (e.g. {example}); got a deeply nested "
                                          "object."))
    if math.isnan(value):
        return Feedback(False, f"Not quite: that is not a number (NaN). Write {name} as a number, "
                               f"e.g. {example}.")
    if math.isinf(value):
        return Feedback(False, f"Not quite: {describe(answer, 20)} is infinite, or too large to compute "
                               f"with. {name} is a finite number.")
    return value


def read_answer(answer: Any, name: str, example: str) -> float | Feedback:
    """The answer as a finite float, or the Feedback that explains why not: the reminder to fill it
    in when it is ``None``, else why it is no number (:func:`read_number`).

    >>> read_answer("2**-2", "σ'(0)", "0.25"), read_answer(None, "σ'(0)", "0.25").correct
    (0.25, None)
    """
    if answer is None:
        return missing(name)
    return read_number(answer, name, example)


def two_digits(expected: float) -> float:
    """Half a unit of ``expected``'s second significant digit: an answer rounded to two significant
    digits is never further off than this, so every check accepts it (2.6 for 48^¼ = 2.632).

    >>> two_digits(2.632), two_digits(0.16), two_digits(0.0)
    (0.05, 0.005, 0.0)
    """
    if expected == 0 or not math.isfinite(expected):
        return 0.0
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(expected))) - 1)


def check_number(answer: Any, expected: float, *, name: str, rel: float = 0.05, abs_tol: float = 0.0,
                 praise: str = "", hint: str = "") -> Feedback:
    """Right if ``answer`` is within ``rel`` (relative) or ``abs_tol`` of ``expected``, and always
    when it is ``expected`` rounded to two significant digits (:func:`two_digits`).

    >>> check_number("0.25", 0.25, name="x").correct, check_number(0.5, 0.25, name="x")
    (True, Not quite: 0.5 is too large.)
    >>> check_number(2.6, 48 ** 0.25, name="α", rel=0.01).correct
    True
    """
    value = read_answer(answer, name, '0.25, "1/4" or "2**10"')
    if isinstance(value, Feedback):
        return value
    if math.isclose(value, expected, rel_tol=rel, abs_tol=max(abs_tol, two_digits(expected) * (1 + 1e-9))):
        return Feedback(True, f"Right: {name} = {expected:.4g}. {praise}".strip())
    direction = "too large" if value > expected else "too small"
    return Feedback(False, f"Not quite: {value:.4g} is {direction}. {hint}".strip())


def check_whole_number(answer: Any, expected: int, *, name: str, within: int = 0, unit: str = "", low: int = 0,
                       praise: str = "", hint: str = "") -> Feedback:
    """Right if ``answer`` is a whole number (``11``, ``"11"``, ``11.0``) within ``within`` of
    ``expected``; a count of layers or steps is never 10.5, nor below ``low``.

    >>> check_whole_number("6", 6, name="the depth").correct, check_whole_number(10.5, 11, name="the depth")
    (True, Not quite: the depth is a whole number; 10.5 is not one.)
    """
    value = read_answer(answer, name, f"{expected + 2}")
    if isinstance(value, Feedback):
        return value
    if value != round(value):
        return Feedback(False, f"Not quite: {name} is a whole number{unit}; {value:g} is not one.")
    if value < low:
        return Feedback(False, f"Not quite: {name} is at least {low}{unit}; got {value:g}.")
    if abs(value - expected) <= within:
        return Feedback(True, f"Right: {name} = {expected}. {praise}".strip())
    direction = "too large" if value > expected else "too small"
    return Feedback(False, f"Not quite: {value:g} is {direction}. {hint}".strip())


def normalise(text: str) -> str:
    """Lower case, with runs of spaces, underscores and hyphens as one space, and American
    spellings read as British ones (``optimization`` as ``optimisation``).

    >>> normalise("  Dead_ReLU "), normalise("Optimization difficulty")
    ('dead relu', 'optimisation difficulty')
    """
    text = re.sub(r"[\s_\-]+", " ", text).strip().lower()
    return re.sub(r"(?<=\w\w)iz(e|es|ed|ing|ation|ations)\b", r"is\1", text)


def check_choice(answer: Any, expected: str | Iterable[str], *, name: str, options: Iterable[str] | None = None,
                 aliases: dict[str, str] | None = None, praise: str = "", hint: str = "") -> Feedback:
    """Right if ``answer`` is (one of) ``expected``: strings compared by :func:`normalise`;
    ``aliases`` maps other words to an option (``{"dead relus": "dead_relu"}``).

    >>> check_choice("Gated-Cell", "gated cell", name="the remedy").correct
    True
    >>> check_choice(["eval"], "eval", name="the mode", options=("train", "eval"))
    The mode should be one of 'train', 'eval'; got ['eval'].
    """
    if answer is None:
        return missing(name)
    accepted = (expected,) if isinstance(expected, str) else tuple(expected)
    options = tuple(options) if options is not None else accepted
    choices = {normalise(o): o for o in options}
    choices.update({normalise(a): o for a, o in (aliases or {}).items()})
    given = choices.get(normalise(answer)) if isinstance(answer, str) else None
    if given is None:
        return Feedback(False, capitalise(f"{name} should be one of {', '.join(map(repr, options))}; "
                                        f"got {describe(answer)}."))
    if normalise(given) in {normalise(e) for e in accepted}:
        return Feedback(True, f"Right: {given}. {praise}".strip())
    return Feedback(False, f"Not quite. {hint}".strip())


#: Other words for the probe's two per-layer quantities, for every check that asks for one.
QUANTITY_ALIASES = {
    "signal": "output_grad_norm", "the signal": "output_grad_norm", "signal gradient": "output_grad_norm",
    "∂l/∂z": "output_grad_norm", "dl/dz": "output_grad_norm", "output gradient": "output_grad_norm",
    "backward signal": "output_grad_norm",
    "weight gradient": "grad_norm", "weight gradients": "grad_norm", "the weight gradient": "grad_norm",
    "∂l/∂w": "grad_norm", "dl/dw": "grad_norm", "gradient of the weights": "grad_norm", "grad norm": "grad_norm",
}


def skeleton(name: str, *, error: BaseException | None = None, result: Any = None) -> Feedback | None:
    """The "fill in" feedback for a coding exercise's function that is still its skeleton: it raised
    NotImplementedError, or computed with a ``...`` placeholder (a TypeError naming 'ellipsis'), or
    returned ``...`` (alone or in a tuple); else ``None``."""
    placeholder = (isinstance(error, NotImplementedError)
                   or (isinstance(error, TypeError) and "ellipsis" in str(error))
                   or result is Ellipsis
                   or (isinstance(result, (tuple, list)) and any(part is Ellipsis for part in result)))
    if not placeholder:
        return None
    return Feedback(None, f"Fill in {name}: replace each `...` (or the `raise NotImplementedError` line) with "
                          "your code, and run the cell again.")


def peek(answer: Any) -> float | None:
    """The answer as a finite float when it reads as one (to spot a typical wrong answer), else None."""
    value = None if answer is None else read_number(answer, "the answer", "0.25")
    return value if isinstance(value, float) else None


def check_ratio(answer: Any, expected: float, factor: float, *, name: str, example: str,
                praise: str, hint: str) -> Feedback:
    """Right if a positive ``answer`` is within ``factor`` of ``expected`` either way (a log scale:
    ratios that span orders of magnitude scatter by a factor between seeds).

    >>> check_ratio(3e-12, 5e-12, 4.0, name="r", example="5e-12", praise="", hint="").correct
    True
    >>> check_ratio(1e-13, 5e-12, 4.0, name="r", example="5e-12", praise="", hint="Count the layers.")
    Not quite: 1e-13 is too small (more than a factor 4 off). Count the layers.
    """
    value = read_answer(answer, name, example)
    if isinstance(value, Feedback):
        return value
    if value <= 0:
        return Feedback(False, f"Not quite: {value:.3g} cannot be a ratio of two norms, which is positive. {hint}")
    if expected / factor <= value <= expected * factor:
        return Feedback(True, f"Right: {name} ≈ {expected:.2g}. {praise}".strip())
    direction = "too large" if value > expected else "too small"
    return Feedback(False, f"Not quite: {value:.3g} is {direction} (more than a factor {factor:g} off). {hint}")


# --- answer keys as data ---

#: An expected value: a number, or a zero-argument function that derives it (from gradcourse.theory,
#: a measurement, a float format's limits), called when an answer is checked.
Expected = float | Callable[[], float]
#: What to say: a sentence, or a function of the learner's value that writes it.
Says = str | Callable[[float], str]


def _value(expected: Expected) -> float:
    return float(expected()) if callable(expected) else expected


def _said(says: Says, value: float) -> str:
    return says(value) if callable(says) else says


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer and what to tell the learner about it: an answer within ``rel`` of
    ``near`` (of ±``near`` with ``either_sign``), or, without ``near``, strictly between ``above``
    and ``below``.

    >>> Mistake("the sigmoid's 1/4", near=4.0, rel=0.02, either_sign=True).matches(-4.01)
    True
    >>> Mistake("far too small", above=0.0, below=1e-15).matches(0.0)
    False
    """

    says: Says
    near: Expected | None = None
    rel: float = 0.05
    either_sign: bool = False
    above: float = -math.inf
    below: float = math.inf

    def matches(self, value: float) -> bool:
        if self.near is None:
            return self.above < value < self.below
        return math.isclose(abs(value) if self.either_sign else value, _value(self.near), rel_tol=self.rel)


_SECTION = re.compile(r"^\s*(Praise|Hint):", re.M)


def _sections(text: str) -> dict[str, str]:
    """A key's text cut at its ``Praise:`` and ``Hint:`` paragraphs, each with its white space folded
    (the question keeps its lines).

    >>> _sections("How many?\\n\\n    Praise: Four,\\n    as said.\\n    Hint: Count.")
    {'question': 'How many?', 'praise': 'Four, as said.', 'hint': 'Count.'}
    """
    parts = _SECTION.split(text)
    found = {"question": parts[0].strip()}
    for label, body in zip(parts[1::2], parts[2::2]):
        found[label.lower()] = " ".join(body.split())
    return found


@dataclass(frozen=True)
class Key:
    """An answer key as data. ``name`` is what the answer is called in the feedback; ``text`` is the
    key's card: the question (what the exercise asks, what was measured and over which seeds), then a
    ``Praise:`` paragraph (said when the answer is right) and a ``Hint:`` paragraph (when it is not);
    ``mistakes`` are typical wrong answers, tried first, in order, each with what to say.
    Calling the key checks an answer; a ValueError while it derives its expected value becomes a
    Feedback that says so, as in :func:`exercise`."""

    name: str = ""
    text: str = field(default="", repr=False)
    mistakes: tuple[Mistake, ...] = field(default=(), repr=False)

    @functools.cached_property
    def _card(self) -> dict[str, str]:
        return _sections(self.text)

    @property
    def question(self) -> str:
        return self._card["question"]

    @property
    def praise(self) -> str:
        return self._card.get("praise", "")

    @property
    def hint(self) -> str:
        return self._card.get("hint", "")

    def __call__(self, answer: Any) -> Feedback:
        try:
            value = peek(answer) if self.mistakes else None
            mistake = next((m for m in self.mistakes if value is not None and m.matches(value)), None)
            if mistake is not None:
                return Feedback(False, _said(mistake.says, value))
            return self.judge(answer)
        except ValueError as error:
            return _cannot_run(error)

    def judge(self, answer: Any) -> Feedback:
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Key):
    """A number, right within ``rel`` (relative) or ``abs_tol`` of ``expected``
    (:func:`check_number`)."""

    expected: Expected = 0.0
    rel: float = 0.05
    abs_tol: float = 0.0

    def judge(self, answer: Any) -> Feedback:
        return check_number(answer, _value(self.expected), name=self.name, rel=self.rel, abs_tol=self.abs_tol,
                            praise=self.praise, hint=self.hint)


@dataclass(frozen=True)
class Ratio(Key):
    """A positive ratio, right within ``factor`` of ``expected`` either way (:func:`check_ratio`);
    ``example`` is how one is written."""

    expected: Expected = 1.0
    factor: float = 2.0
    example: str = "0.25"

    def judge(self, answer: Any) -> Feedback:
        return check_ratio(answer, _value(self.expected), self.factor, name=self.name, example=self.example,
                           praise=self.praise, hint=self.hint)


@dataclass(frozen=True)
class Whole(Key):
    """A whole number (a count of layers, of steps), right within ``within`` of ``expected``
    (:func:`check_whole_number`)."""

    expected: int | Callable[[], int] = 0
    within: int = 0
    unit: str = ""
    low: int = 0

    def judge(self, answer: Any) -> Feedback:
        expected = self.expected() if callable(self.expected) else self.expected
        return check_whole_number(answer, expected, name=self.name, within=self.within, unit=self.unit,
                                  low=self.low, praise=self.praise, hint=self.hint)


@dataclass(frozen=True)
class Band(Key):
    """A number right anywhere from ``low`` to ``high`` (both included): the band a theory and a
    measurement span. ``right``, ``above`` and ``below`` say what the feedback says in each case
    (``praise`` and ``hint`` are not used)."""

    low: float = -math.inf
    high: float = math.inf
    example: str = "0.25"
    right: Says = ""
    above: Says = ""
    below: Says = ""

    def judge(self, answer: Any) -> Feedback:
        value = read_answer(answer, self.name, self.example)
        if isinstance(value, Feedback):
            return value
        if self.low <= value <= self.high:
            return Feedback(True, _said(self.right, value))
        return Feedback(False, _said(self.above if value > self.high else self.below, value))


@dataclass(frozen=True)
class Choice(Key):
    """One of ``options``, right when it is (one of) ``expected``; ``aliases`` maps other words to
    an option (:func:`check_choice`)."""

    expected: str | tuple[str, ...] = ""
    options: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict, repr=False)

    def judge(self, answer: Any) -> Feedback:
        return check_choice(answer, self.expected, name=self.name, options=self.options or None,
                            aliases=self.aliases, praise=self.praise, hint=self.hint)

    @property
    def accepted(self) -> tuple[str, ...]:
        return (self.expected,) if isinstance(self.expected, str) else tuple(self.expected)
