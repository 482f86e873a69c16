"""Lesson 07's patients and explorer: mystery runs to diagnose, remedies to try on the same seed.

``mystery_runs(seed)`` trains four small networks whose configurations the lesson keeps hidden
(each has one of the course's problems); the learner reads their probes, names the problem,
asks :func:`gradcourse.diagnose`, and then treats each patient with a remedy from
:data:`REMEDIES` (``treat``), on the same seed, to see the problem go away.

>>> from gradcourse.widgets.lesson07 import DoctorExplorer
>>> result = DoctorExplorer().run(patient="A", remedy="ReLU + He init")
>>> result.values["problem_before"], result.values["problem_after"]
('vanishing', 'healthy')
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .. import _checks, data, models, plots
from ..diagnose import diagnose
from ..remedies import clip_norm
from ..train import Run, fit
from .base import Explorer, Param, Result


@dataclass(frozen=True)
class Patient:
    """A mystery run's hidden recipe: the ``mlp`` arguments and the ``fit`` arguments."""

    name: str
    model: dict
    training: dict
    problem: str  # what the lesson expects the doctor to find (the tests check it)
    cure: str     # the remedy (a key of REMEDIES) the lesson applies
    story: str = field(default="", compare=False)


#: The patients. Learners are asked not to read this before they have made their diagnosis.
PATIENTS = {
    "A": Patient("A", dict(depth=20, width=32, activation="sigmoid", init="default"),
                 dict(steps=100, lr=0.1), "vanishing", "ReLU + He init",
                 "20 sigmoid layers with PyTorch's default init: each layer multiplies the signal "
                 "by about σ'(0)·(weight scale) ≈ 1/4 · 0.58."),
    "B": Patient("B", dict(depth=10, width=32, activation="relu", init="normal",
                           weight_std=2 * math.sqrt(2.0)),
                 dict(steps=100, lr=0.1), "exploding", "He init",
                 "10 ReLU layers drawn at twice He's scale: the signal doubles per layer "
                 "going back, and lr = 0.1 turns the huge gradient into a NaN within a few steps."),
    "C": Patient("C", dict(depth=20, width=32, activation="tanh", init="normal", weight_std=4.0),
                 dict(steps=100, lr=0.2), "saturation", "Xavier init",
                 "20 tanh layers with weight std 4/√fan_in: the chaotic phase, where most units "
                 "sit at ±1."),
    "D": Patient("D", dict(depth=6, width=32, activation="relu", init="kaiming"),
                 dict(steps=100, lr=0.3, optimizer="adam"), "dead_relu", "lower learning rate",
                 "6 ReLU layers with He init, trained with Adam at lr = 0.3: the first large "
                 "steps push most units below 0 for every input."),
}

#: What the learner can prescribe (the explorer's menu; ``treat`` applies it).
REMEDIES = ("none", "ReLU + He init", "He init", "Xavier init", "leaky ReLU",
            "lower learning rate", "clip gradient norm", "BatchNorm", "skip connections")
#: "lower learning rate" divides the patient's learning rate by this.
LR_DIVISOR = 10.0
#: "clip gradient norm" clips the total gradient norm at this value.
CLIP_THRESHOLD = 1.0


def recipe(patient: str, remedy: str = "none", *, seed: int = 0) -> tuple[dict, dict]:
    """The (mlp kwargs, fit kwargs) of ``patient`` after ``remedy`` (see :data:`REMEDIES`)."""
    _checks.choice("patient", patient, PATIENTS)
    _checks.choice("remedy", remedy, REMEDIES)
    seed = _checks.integer("seed", seed, low=0)
    p = PATIENTS[patient]
    model = {**p.model, "seed": seed}
    training = {**p.training, "seed": seed}
    if remedy == "ReLU + He init":
        model.update(activation="relu", init="kaiming", weight_std=None)
    elif remedy == "He init":
        model.update(init="kaiming", weight_std=None)
    elif remedy == "Xavier init":
        model.update(init="xavier", weight_std=None)
    elif remedy == "leaky ReLU":
        model.update(activation="leaky_relu")
        if model["init"] == "default":
            model.update(init="kaiming")
    elif remedy == "lower learning rate":
        training["lr"] = training["lr"] / LR_DIVISOR
    elif remedy == "clip gradient norm":
        training["clip"] = clip_norm(CLIP_THRESHOLD)
    elif remedy == "BatchNorm":
        model["batchnorm"] = True
    elif remedy == "skip connections":
        model["residual"] = True
    return model, training


@functools.lru_cache(maxsize=8)
def _spirals(seed: int) -> data.Dataset:
    return data.spirals(256, seed=seed)


@functools.lru_cache(maxsize=64)
def treat(patient: str, remedy: str = "none", seed: int = 0) -> Run:
    """Train ``patient`` with ``remedy`` applied (``"none"``: the mystery run itself) on the
    spirals of ``seed``. Cached: the same call returns the same Run object.

    >>> treat("B", "He init").diverged_at is None
    True
    """
    model_kwargs, fit_kwargs = recipe(patient, remedy, seed=seed)
    model = models.mlp(**model_kwargs)
    return fit(model, _spirals(seed), progress=False, **fit_kwargs)


def mystery_runs(seed: int = 0) -> dict[str, Run]:
    """The four mystery patients, trained on the spirals of ``seed``: ``{"A": Run, ...}``.

    Their configurations are in :data:`PATIENTS` and in each ``run.params`` (no peeking before
    you have made your diagnosis).
    """
    seed = _checks.integer("seed", seed, low=0)
    return {name: treat(name, "none", seed) for name in PATIENTS}


def reveal(patient: str) -> str:
    """What was wrong with ``patient``, in one sentence (for after the diagnosis)."""
    _checks.choice("patient", patient, PATIENTS)
    return PATIENTS[patient].story


def unhealthy_fraction(run: Run, row: int = -1) -> np.ndarray:
    """Per hidden layer: the saturated (sigmoid/tanh) or dead (ReLU) fraction of units at ``row``."""
    trace = run.trace
    sat = trace.get("saturated_frac")[row, :-1]
    dead = trace.get("dead_frac")[row, :-1]
    return np.where(np.isfinite(sat), sat, np.where(np.isfinite(dead), dead, 0.0))


@plots.styled
def before_after_figure(before: Run, after: Run, *, patient: str, remedy: str):
    """Three panels: loss curves, the signal per layer at step 0, unhealthy units at the end."""
    fig, axes = plots.new_figure(3, width=4.2, height=3.3)
    colors = {"before": plots.COLORS[0], "after": plots.COLORS[1]}
    ax = axes[0, 0]
    for label, run in (("before", before), ("after", after)):
        finite = np.isfinite(run.losses)
        steps = np.arange(len(run.losses))
        ax.plot(steps[finite], run.losses[finite], color=colors[label], label=label)
        if run.diverged_at is not None and finite.any():
            ax.plot([run.diverged_at], [run.losses[finite][-1]], "x", ms=10, mew=3,
                    color=colors[label])
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (log scale)")
    ax.set_title("Loss (✕ = NaN/Inf)")
    ax.legend(fontsize="small")

    ax = axes[0, 1]
    for label, run in (("before", before), ("after", after)):
        signal = run.trace.get("output_grad_norm")[0, :-1]
        ax.semilogy(np.arange(1, len(signal) + 1), signal, "o-", ms=3, color=colors[label],
                    label=label)
    ax.set_xlabel("hidden layer (1 = nearest the input)")
    ax.set_ylabel("‖∂L/∂z‖ at step 0 (log scale)")
    ax.set_title("Gradient signal per layer")
    ax.legend(fontsize="small")

    ax = axes[0, 2]
    for shift, (label, run) in zip((-0.2, 0.2), (("before", before), ("after", after))):
        values = unhealthy_fraction(run)
        ax.bar(np.arange(1, len(values) + 1) + shift, values, width=0.4, color=colors[label],
               label=label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("fraction of units")
    ax.set_title("Saturated or dead units, last step")
    ax.legend(fontsize="small")
    fig.suptitle(f"Patient {patient}: before and after '{remedy}'")
    return fig


@plots.styled
def patient_chart(runs: dict[str, Run]):
    """The probes of several runs side by side, one column per run: the gradient signal per
    layer at step 0, the saturated/dead units at the last step, and the loss curve."""
    if not runs or not all(isinstance(r, Run) and r.trace is not None for r in runs.values()):
        raise ValueError("runs must be a non-empty dict of name → Run made with probe=True")
    fig, axes = plots.new_figure(len(runs), 3, width=3.1, height=2.5)
    for col, (name, run) in enumerate(runs.items()):
        trace = run.trace
        signal = trace.get("output_grad_norm")[0, :-1]
        weight = trace.get("grad_norm")[0, :-1]
        layers = np.arange(1, len(signal) + 1)
        ax = axes[0, col]
        ax.semilogy(layers, signal, "s-", ms=3, label="signal ‖∂L/∂z‖")
        ax.semilogy(layers, weight, "o:", ms=3, label="weight grad ‖∂L/∂W‖")
        ax.set_title(f"Patient {name}: gradient at step 0")
        ax.set_xlabel("hidden layer")
        ax.set_ylabel("norm (log scale)")
        ax = axes[1, col]
        sat = trace.get("saturated_frac")[:, :-1]
        dead = trace.get("dead_frac")[:, :-1]
        row = len(trace.steps) - 1
        kind, values = (("saturated", sat[row]) if np.isfinite(sat[row]).all() else
                        ("dead", dead[row]) if np.isfinite(dead[row]).all() else ("", None))
        if values is not None:
            ax.bar(layers, values, color=plots.COLORS[1 if kind == "saturated" else 2])
        ax.set_ylim(0, 1)
        ax.set_title(f"{kind} units, step {int(trace.steps[row])}")
        ax.set_xlabel("hidden layer")
        ax.set_ylabel("fraction of units")
        ax = axes[2, col]
        finite = np.isfinite(run.losses)
        ax.plot(np.arange(len(run.losses))[finite], run.losses[finite], color=plots.COLORS[3])
        if run.diverged_at is not None:
            last = run.losses[finite][-1] if finite.any() else 1.0
            ax.plot([run.diverged_at], [last], "x", ms=10, mew=3, color=plots.COLORS[3])
            ax.annotate(f"NaN at step {run.diverged_at}", (run.diverged_at, last), fontsize="small",
                        textcoords="offset points", xytext=(6, -4))
        ax.set_yscale("log")
        ax.set_title("training loss")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (log scale)")
    axes[0, 0].legend(fontsize="x-small")
    fig.suptitle("The mystery patients' probes")
    return fig


class DoctorExplorer(Explorer):
    """Pick a mystery patient and a remedy; see the diagnosis and the probes before and after."""

    title = "Lesson 07: the gradient doctor"
    params = {
        "patient": Param("A", options=tuple(PATIENTS), label="mystery patient"),
        "remedy": Param("ReLU + He init", options=REMEDIES, label="remedy"),
        "seed": Param(0, low=0, high=4, label="seed"),
    }
    manual = False  # a change trains at most two small networks (≈2 s; cached afterwards)

    def compute(self, patient: str, remedy: str, seed: int) -> Result:
        before = treat(patient, "none", seed)
        after = treat(patient, remedy, seed)
        d_before, d_after = diagnose(before), diagnose(after)
        figure = before_after_figure(before, after, patient=patient, remedy=remedy)
        values = {
            "problem_before": d_before.problem, "problem_after": d_after.problem,
            "final_loss_before": before.metrics["final_loss"],
            "final_loss_after": after.metrics["final_loss"],
            "accuracy_before": before.metrics.get("train_accuracy", math.nan),
            "accuracy_after": after.metrics.get("train_accuracy", math.nan),
            "diverged_before": before.diverged_at, "diverged_after": after.diverged_at,
        }

        def acc(v):
            return "diverged" if math.isnan(v) else f"{v:.0%}"

        summary = (f"<b>Before</b>: {d_before.headline} {d_before.evidence[0]}<br>"
                   f"<b>After '{remedy}'</b>: {d_after.headline} "
                   f"Training accuracy {acc(values['accuracy_before'])} → "
                   f"{acc(values['accuracy_after'])}.")
        return Result(figure=figure, values=values, runs={"before": before, "after": after},
                      summary=summary)
