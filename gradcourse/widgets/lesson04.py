"""Lesson 04 explorer: a deep MLP with and without BatchNorm, its gradient per layer at
initialisation and (optionally) a short training run.

>>> from gradcourse.widgets.lesson04 import BatchNormExplorer
>>> result = BatchNormExplorer().run(steps=0)            # probe only: the gradient at init
>>> result.values["grad_ratio"] > 1                      # with BN the first layer gets more
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import data, models, plots, train
from ..probes import Probe
from .base import Explorer, Param, Result

WIDTH = 32
N_TRAIN = 256


def gradient_at_init(model: torch.nn.Module, dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One probed forward/backward pass on the full training set, no update: the per-layer
    weight-gradient norms, signal norms and layer names (head included)."""
    with Probe(model) as probe:
        torch.nn.functional.cross_entropy(model(dataset.x), dataset.y).backward()
    model.zero_grad(set_to_none=True)
    trace = probe.trace
    return trace.get("grad_norm")[0], trace.get("output_grad_norm")[0], trace.layers


def batch_spread(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """How much each hidden layer's activations differ between the examples of the batch: per
    layer, the standard deviation over the batch of each unit, averaged over the units.

    A layer whose spread is ~0 gives every input the same activation: the input is forgotten.
    """
    spreads = {}
    handles = [getattr(model, f"act{k}").register_forward_hook(
        lambda module, args, out, k=k: spreads.__setitem__(k, out.std(dim=0).mean().item()))
        for k in range(1, model.depth + 1)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return np.array([spreads[k] for k in range(1, model.depth + 1)])


class BatchNormExplorer(Explorer):
    """Depth, activation, BatchNorm on/off, batch size and learning rate of a width-32 MLP on the
    spirals (256 points). Left: ‖∂L/∂W‖ and ‖∂L/∂z‖ per hidden layer at initialisation. Right
    (when ``steps`` > 0): the training loss under SGD with momentum 0.9 and norm clipping at 1,
    with ln 2 (chance) marked. ``steps=0`` only probes (fast)."""

    title = "BatchNorm: gradient per layer at the start, and training"
    params = {
        "depth": Param(10, low=2, high=40, label="hidden layers"),
        "activation": Param("sigmoid", options=("sigmoid", "tanh", "relu")),
        "batchnorm": Param(True, label="BatchNorm"),
        "batch_size": Param(256, options=(2, 4, 16, 64, 256), label="batch size (256 = full)"),
        "lr": Param(0.1, low=0.01, high=1.0, log=True, step=0.25, label="learning rate"),
        "steps": Param(300, low=0, high=400, step=50, label="training steps (0 = probe only)"),
    }

    def compute(self, depth, activation, batchnorm, batch_size, lr, steps) -> Result:
        dataset = data.spirals(n=N_TRAIN, seed=0)
        model = models.mlp(depth, WIDTH, activation=activation, batchnorm=batchnorm, seed=0)
        grads, signal, _ = gradient_at_init(model, dataset)
        values = {
            "grad_ratio": float(grads[0] / grads[depth - 1]),
            "signal_ratio": float(signal[0] / signal[depth - 1]),
            "per_layer": float((signal[0] / signal[depth - 1]) ** (1 / max(depth - 1, 1))),
        }
        runs = {}
        fig, axes = plots.new_figure(2 if steps else 1, width=4.8, height=3.4)
        plots.draw_layer_gradients(axes[0, 0], grads[:depth], signal[:depth],
                                   title="Gradient per layer at initialisation")
        summary = (f"At the start the first layer's weight gradient is {values['grad_ratio']:.2g}× the "
                   f"last layer's; the signal changes by about {values['per_layer']:.2f}× per layer.")
        if steps:
            run = train.fit(model, dataset, steps=steps, lr=lr, momentum=0.9, clip=1.0, probe=False,
                            batch_size=None if batch_size >= N_TRAIN else batch_size, progress=False)
            runs["run"] = run
            values["final_loss"] = float(run.losses[-1])
            values["test_accuracy"] = run.metrics.get("test_accuracy", float("nan"))
            self._draw_loss(axes[0, 1], run, batchnorm)
            if run.diverged:
                summary += f" Training hit NaN/Inf at step {run.diverged_at}."
            else:
                summary += (f" After {steps} steps the loss is {values['final_loss']:.3g} (chance: "
                            f"ln 2 ≈ 0.693) and the test accuracy in eval mode "
                            f"{values['test_accuracy']:.0%}.")
        fig.suptitle(f"{depth} × (Linear → {'BN → ' if batchnorm else ''}{activation}), width {WIDTH}")
        return Result(figure=fig, values=values, runs=runs, summary=summary)

    @staticmethod
    @plots.styled
    def _draw_loss(ax, run, batchnorm) -> None:
        losses = run.losses[np.isfinite(run.losses)]
        ax.plot(np.arange(len(losses)), losses, color=plots.COLORS[1 if batchnorm else 0],
                label="with BN" if batchnorm else "without BN")
        ax.axhline(math.log(2), color="grey", ls=":", label="chance, ln 2")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (log scale)")
        ax.set_title("Training loss (SGD + momentum, clip 1)")
        ax.legend(fontsize="small")
