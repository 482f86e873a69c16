"""The gradient doctor's patients: four mystery runs, each with one of the course's problems.

``mystery_runs(seed)`` trains four small networks whose recipes lesson 07 keeps hidden; the
learner reads their probes, names each problem, asks :func:`gradcourse.diagnose`, and then
treats each patient with a remedy from :data:`gradcourse.remedies.REMEDIES` on the same seed
(``treat``) to see the problem go away.

>>> from gradcourse.patients import recipe, treat
>>> model, training = recipe("D", "lower_lr")
>>> model["activation"], training["lr"], training["optimizer"]
('relu', 0.03, 'adam')
>>> treat("B", "He init").diverged_at is None     # a remedy's name or its menu label
True
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field

from . import _checks, data, models
from .remedies import REMEDIES, Remedy, lookup
from .run import Run
from .train import fit, progress_bar


@dataclass(frozen=True)
class Patient:
    """A mystery run's hidden recipe: the ``mlp`` arguments and the ``fit`` arguments, the problem
    the doctor finds, and ``cure``, the name of the remedy (in :data:`REMEDIES`) the lesson applies."""

    name: str
    model: dict
    training: dict
    problem: str  # what the lesson expects the doctor to find (the tests check it)
    cure: str     # a key of REMEDIES
    story: str = field(default="", compare=False)


#: The probe records one step in this many of a patient's 100: steps 0, 11, …, 99, so the first and
#: the last step, which the doctor and the chart read, are both recorded, at a third of the cost of
#: probing every step (lesson 07 trains a dozen patient runs). Patient B stays probed every step: it
#: diverges at step 2, and its chart shows the units that its first huge step killed.
PROBE_EVERY = 11

#: The patients. Learners are asked not to read this before they have made their diagnosis.
PATIENTS = {
    "A": Patient("A", dict(depth=20, width=32, activation="sigmoid", init="default"),
                 dict(steps=100, lr=0.1, every=PROBE_EVERY), "vanishing", "relu_he",
                 "20 sigmoid layers with PyTorch's default init: each layer multiplies the signal "
                 "by about σ'(0)·(weight scale) ≈ 1/4 · 0.58."),
    "B": Patient("B", dict(depth=10, width=32, activation="relu", init="normal",
                           weight_std=2 * math.sqrt(2.0)),
                 dict(steps=100, lr=0.1), "exploding", "he_init",
                 "10 ReLU layers drawn at twice He's scale: the signal doubles per layer "
                 "going back, and lr = 0.1 turns the huge gradient into a NaN within a few steps."),
    "C": Patient("C", dict(depth=20, width=32, activation="tanh", init="normal", weight_std=4.0),
                 dict(steps=100, lr=0.2, every=PROBE_EVERY), "saturation", "xavier_init",
                 "20 tanh layers with weight std 4/√fan_in: the chaotic phase, where most units "
                 "sit at ±1 and yet the signal grows on its way back to layer 1."),
    "D": Patient("D", dict(depth=6, width=32, activation="relu", init="kaiming"),
                 dict(steps=100, lr=0.3, optimizer="adam", every=PROBE_EVERY), "dead_relu", "lower_lr",
                 "6 ReLU layers with He init, trained with Adam at lr = 0.3: the first large "
                 "steps push most units below 0 for every input."),
}


def patient_name(patient: str) -> str:
    """``patient`` as a key of :data:`PATIENTS` (``"a"`` and ``" A "`` are ``"A"``).

    >>> patient_name("c")
    'C'
    """
    if isinstance(patient, str) and patient.strip().upper() in PATIENTS:
        return patient.strip().upper()
    return _checks.choice("patient", patient, PATIENTS)


def _remedy_name(remedy: Remedy | str) -> str:
    """``"none"`` (the untreated run) or the name of a registry entry."""
    if isinstance(remedy, str) and remedy.strip().lower() == "none":
        return "none"
    return lookup(remedy).name


def recipe(patient: str, remedy: Remedy | str = "none", *, seed: int = 0) -> tuple[dict, dict]:
    """The (mlp kwargs, fit kwargs) of ``patient`` after ``remedy``: ``"none"``, or a remedy of
    :data:`REMEDIES` given by name, label or entry."""
    seed = _checks.seed(seed)
    p = PATIENTS[patient_name(patient)]
    remedy = _remedy_name(remedy)
    model, training = {**p.model, "seed": seed}, {**p.training, "seed": seed}
    if remedy == "none":
        return model, training
    return REMEDIES[remedy].apply(model, training)


@functools.lru_cache(maxsize=8)
def _spirals(seed: int) -> data.Dataset:
    return data.spirals(256, seed=seed)


def treat(patient: str, remedy: Remedy | str = "none", seed: int = 0) -> Run:
    """Train ``patient`` with ``remedy`` applied (``"none"``: the mystery run itself) on the
    spirals of ``seed``. Runs are cached by what is trained (the explorer and the exercise checks
    ask for the same ones; a remedy that changes nothing, such as He init for patient D, which
    has it already, is the untreated run), so treat them as read-only."""
    seed = _checks.seed(seed)
    model_kwargs, fit_kwargs = recipe(patient_name(patient), _remedy_name(remedy), seed=seed)
    return _train(_settings(model_kwargs, models.mlp), _settings(fit_kwargs, fit), seed)


def _settings(kwargs: dict, function) -> tuple:
    """``kwargs`` as a cache key: sorted, without the arguments given as ``None`` whose default is
    ``None`` (``weight_std=None`` trains what leaving it out trains)."""
    defaults = inspect.signature(function).parameters
    return tuple(sorted((k, v) for k, v in kwargs.items()
                        if not (v is None and k in defaults and defaults[k].default is None)))


@functools.lru_cache(maxsize=64)
def _train(model_settings: tuple, fit_settings: tuple, seed: int) -> Run:
    fit_kwargs = dict(fit_settings)
    return fit(models.mlp(**dict(model_settings)), _spirals(seed), progress=False, **fit_kwargs)


def mystery_runs(seed: int = 0, progress: bool | None = None) -> dict[str, Run]:
    """The four mystery patients, trained on the spirals of ``seed``: ``{"A": Run, ...}``.

    Their configurations are in :data:`PATIENTS` and in each ``run.params`` (no peeking before
    you have made your diagnosis). ``progress`` shows a bar over the patients (default: in a
    notebook; the four take a few seconds).
    """
    seed = _checks.seed(seed)
    progress = _checks.flag("progress", progress, optional=True)
    runs = {}
    with progress_bar(len(PATIENTS), progress, desc="patients") as bar:
        for name in PATIENTS:
            runs[name] = treat(name, "none", seed)
            if bar is not None:
                bar.update(1)
    return runs


def reveal(patient: str) -> str:
    """What was wrong with ``patient``, in one sentence (for after the diagnosis).

    >>> reveal("A").startswith("20 sigmoid layers")
    True
    """
    return PATIENTS[patient_name(patient)].story
