"""Lesson 07's explorer and figures: a mystery patient before and after a remedy, on the same seed.

The patients and their recipes live in :mod:`gradcourse.patients`, the remedies in
:data:`gradcourse.remedies.REMEDIES` (the explorer's menu shows their labels).

>>> from gradcourse.widgets.lesson07 import DoctorExplorer
>>> result = DoctorExplorer().run(patient="A", remedy="ReLU + He init")
>>> result.values["problem_before"], result.values["problem_after"]
('vanishing', 'healthy')
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import LogLocator, NullLocator

from .. import plots
from ..doctor import diagnose
from ..patients import PATIENTS, treat
from ..remedies import REMEDIES
from ..run import Run
from .base import Explorer, Param, Result

#: The explorer's menu: the untreated run, then every remedy that applies to an MLP, by label.
MENU = ("none", *(r.label for r in REMEDIES.values() if "mlp" in r.kinds))


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
    seeds = {run.params.get("seed") for run in (before, after)}  # the seed of the data and the weights
    seed = f", seed {seeds.pop()}" if len(seeds) == 1 and None not in seeds else ""
    fig.suptitle(f"Patient {patient}{seed}: before and after '{remedy}'")
    return fig


def _whole_decades(ax, values) -> None:
    """A log y axis from the decade below the smallest positive finite value to the decade above the
    largest, labelled at powers of ten only: two or more labelled ticks, none overlapping, and no
    unlabelled minor ticks (the chart's twelve panels drew 300 of them: a second of its two)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values):
        low, high = math.floor(math.log10(values.min())), math.ceil(math.log10(values.max()))
        ax.set_ylim(10.0 ** low, 10.0 ** max(high, low + 1))
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.yaxis.set_minor_locator(NullLocator())


@plots.styled
def patient_chart(runs: dict[str, Run]):
    """The probes of several runs side by side, one column per run: the gradient signal per
    layer at step 0, the saturated/dead units at the last step, and the loss curve (a diverged
    run's ✕ and its label inside the axes)."""
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
        _whole_decades(ax, np.r_[signal, weight])
        plots.integer_ticks(ax)
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
        ax.set_xlim(0.4, len(layers) + 0.6)
        plots.integer_ticks(ax)
        ax.set_title(f"{kind} units, step {int(trace.steps[row])}")
        ax.set_xlabel("hidden layer")
        ax.set_ylabel("fraction of units")
        ax = axes[2, col]
        plots.draw_loss(ax, {"loss": run}, colors={"loss": plots.COLORS[3]}, title="training loss")
        ax.get_legend().remove()
        _whole_decades(ax, ax.get_ylim())    # draw_loss's finite range, out to whole decades
    axes[0, 0].legend(fontsize="x-small")
    fig.suptitle("The mystery patients' probes")
    return fig


class DoctorExplorer(Explorer):
    """Pick a mystery patient and a remedy; see the diagnosis and the probes before and after."""

    title = "Lesson 07: the gradient doctor"
    params = {
        "patient": Param("A", options=tuple(PATIENTS), label="mystery patient"),
        "remedy": Param(REMEDIES["relu_he"].label, options=MENU, label="remedy"),
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
