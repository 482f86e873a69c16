"""Lesson 08's explorer: your own digits model, trained by a plain loop under a probe.

The lesson leaves ``fit`` behind: a learner's own ``nn.Sequential`` on real data (the digits that
scikit-learn ships), trained by an ordinary PyTorch loop, with a :class:`~gradcourse.probes.Probe`
attached in one line and the doctor reading what it recorded. The pieces live in the core:
:func:`gradcourse.models.digits_model` (an MLP or a small CNN for 8×8 digits) and
:func:`gradcourse.models.resnet18` (torchvision's ResNet-18), :func:`gradcourse.data.digits_images`,
:func:`gradcourse.train.train_loop` (mini-batch SGD with momentum, stopped at the first NaN), and the
exercise checks in :mod:`gradcourse.exercises`. This module holds :class:`DigitsExplorer`, its
figure, and the exercise's patient :func:`broken_model`.

>>> from gradcourse.widgets.lesson08 import DigitsExplorer
>>> result = DigitsExplorer().run(activation="relu", init="he", batchnorm=True)
>>> result.values["problem"], result.values["test_accuracy"] > 0.8   # 0.90-0.95 over seeds and CPUs
('healthy', True)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import _checks, data, plots
from ..doctor import diagnose
from ..models import DIGITS_ACTIVATIONS, DIGITS_INITS, DIGITS_KINDS, digits_model
from ..probes import probe_once
from ..train import LOOP_LR, Outcome, train_loop
from .base import Explorer, Param, Result

#: The explorer's budget: the first 512 training images and 100 steps (0.5–2 s of one core for the MLPs and the
#: 12-layer CNN, 5 s for a 30-layer CNN). Its accuracies at 100 steps, seeds 0-4 x two kernel sets, match those
#: at 200 (ReLU + He + BatchNorm MLP 0.90-0.95, 4-layer CNN 0.96-0.99, sigmoid + BatchNorm 0.92-0.94).
EXPLORER_SUBSET = 512
EXPLORER_STEPS = 100


# -- the exercise's patient -------------------------------------------------------------------
def broken_model(seed: int = 0) -> nn.Sequential:
    """The model of the exercise "find and fix it": a colleague's digits CNN that does not learn.

    (What is wrong with it is for the learner to find with the probe and the doctor.)
    """
    seed = _checks.seed(seed)
    model = digits_model("cnn", 6, activation="tanh", init="default", seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=1.0)
    return model


# -- figures ---------------------------------------------------------------------------------------
@plots.styled
def loop_figure(outcome: Outcome, *, title: str = ""):
    """Three panels: the gradient per layer at step 0, the loss (✕ where it became NaN), and how
    much each layer's weights moved per step (median ‖ΔW‖/‖W‖ over the run)."""
    trace = outcome.trace
    fig, axes = plots.new_figure(3, width=4.2, height=3.3)
    layers = np.arange(1, len(trace.layers) + 1)
    plots.draw_layer_gradients(axes[0, 0], trace.get("grad_norm")[0], trace.get("output_grad_norm")[0],
                               title="Gradient per layer at step 0",
                               xlabel="layer (1 = nearest the input)", markersize=4)
    ax = axes[0, 1]
    losses = np.asarray(outcome.losses, dtype=float)
    finite = np.isfinite(losses)
    ax.plot(np.arange(len(losses))[finite], losses[finite], color=plots.COLORS[3])
    if not finite.all():
        step = int(np.flatnonzero(~finite)[0])
        last = losses[finite][-1] if finite.any() else 1.0
        ax.plot([step], [last], "x", ms=10, mew=3, color=plots.COLORS[3])
        ax.annotate(f"NaN at step {step}", (step, last), fontsize="small", textcoords="offset points",
                    xytext=(-6, 8), ha="right")
    ax.axhline(math.log(10), color="grey", ls=":", label="ln 10: a guess among 10 digits")
    shown = losses[finite]
    log = len(shown) > 0 and shown.min() > 0 and shown.max() / shown.min() > 10
    if log:  # a log axis only where the loss spans more than a decade (a plateau reads better linear)
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss" + (" (log scale)" if log else ""))
    ax.set_title("Training loss")
    ax.legend(fontsize="small")
    ax = axes[0, 2]
    ratios = trace.get("update_ratio").astype(float)
    rows = np.isfinite(ratios).all(axis=1)
    median = np.median(ratios[rows], axis=0) if rows.any() else np.full(len(layers), np.nan)
    ax.bar(layers, np.where(median > 0, median, np.nan), color=plots.COLORS[1])
    ax.set_yscale("log")
    ax.set_xlim(0.4, len(layers) + 0.6)
    for layer in layers[median == 0]:  # no bar on a log axis: say that the weights did not move
        ax.annotate("0", (layer, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize="small")
    ax.set_xlabel("layer (1 = nearest the input)")
    ax.set_ylabel("‖ΔW‖/‖W‖ per step, median (log)")
    ax.set_title("How much each layer learns")
    fig.suptitle(title or "A plain loop under a probe")
    return fig


# -- the explorer ------------------------------------------------------------------------------
class DigitsExplorer(Explorer):
    """Build a digits model (depth, activation, init, BatchNorm), train it for a few hundred steps
    on a subset with a plain loop under a probe, and see the doctor's verdict and the probes."""

    title = (f"Lesson 08: your own model on the digits ({EXPLORER_STEPS} steps on "
             f"{EXPLORER_SUBSET} training images; press Run)")
    params = {
        "kind": Param("mlp", options=DIGITS_KINDS, label="model"),
        "depth": Param(12, low=2, high=30, label="depth (hidden layers)"),
        "activation": Param("sigmoid", options=DIGITS_ACTIVATIONS, label="activation"),
        "init": Param("default", options=DIGITS_INITS, label="init"),
        "batchnorm": Param(False, label="BatchNorm"),
        "lr": Param(LOOP_LR, low=3e-4, high=3.0, step=0.25, log=True, label="learning rate"),  # 0.03 and 3 on the grid
        "seed": Param(0, low=0, high=4, label="seed"),
        "steps": Param(EXPLORER_STEPS, low=0, high=400, step=50, label="training steps (0 = at initialisation only)"),
    }
    manual = True  # a run trains for 0.5–5 s: it starts on the Run button, with a progress bar
    #: A control change redraws the untrained model's gradients at once; the Run button trains.
    preview = {"steps": 0}

    def compute(self, kind, depth, activation, init, batchnorm, lr, seed, steps) -> Result:
        model = digits_model(kind, depth, activation=activation, init=init, batchnorm=batchnorm, seed=seed)
        name = (f"{depth}-layer {kind.upper()}, {activation}, {init} init"
                f"{', BatchNorm' if batchnorm else ''}")
        ds = data.digits(seed)
        if steps == 0:
            trace = probe_once(model, ds.x[:EXPLORER_SUBSET], ds.y[:EXPLORER_SUBSET])
            signal = trace.get("output_grad_norm")[0, :-1]
            ratio = float(signal[0] / signal[-1]) if len(signal) > 1 else math.nan
            summary = (f"<b>{name}</b>, untrained: the first hidden layer receives {ratio:.2g} times the "
                       "gradient signal of the last. Set the steps and press Run to train and ask the doctor.")
            return Result(figure=plots.grad_norms(trace, title=f"{name}:\ngradient per layer at initialisation"),
                          values={"signal_ratio": ratio}, summary=summary)
        outcome = train_loop(model, ds, lr=lr, steps=steps, seed=seed, subset=EXPLORER_SUBSET,
                             progress=self.progress)
        d = diagnose(outcome.trace, losses=outcome.losses, model=outcome.model)
        signal = outcome.trace.get("output_grad_norm")[0, :-1]
        values = {
            "problem": d.problem, "test_accuracy": outcome.test_accuracy,
            "diverged_at": d.diverged_at, "final_loss": outcome.losses[-1],
            "signal_ratio": float(signal[0] / signal[-1]) if len(signal) > 1 else math.nan,
        }
        accuracy = ("diverged" if math.isnan(outcome.test_accuracy)
                    else f"{outcome.test_accuracy:.0%}")
        name += f", lr {lr:.3g}"
        summary = (f"<b>{name}</b>: {d.headline} {d.evidence[0] if d.evidence else ''}<br>"
                   f"Test accuracy after {len(outcome.losses)} steps: <b>{accuracy}</b> (chance: 10%).")
        figure = loop_figure(outcome, title=f"{name}: the doctor says {d.problem}")
        return Result(figure=figure, values=values, runs={"outcome": outcome, "diagnosis": d}, summary=summary)
