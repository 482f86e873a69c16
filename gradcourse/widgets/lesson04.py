"""Lesson 04 explorer: a deep MLP with and without BatchNorm, its gradient per layer at
initialisation (redrawn on every control change) and a short training run (on the Run button).

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
from ..activations import hidden_outputs
from ..hooks import Hooks
from ..modes import evaluating
from ..probes import probe_once
from .base import Explorer, Param, Result

WIDTH = 32
N_TRAIN = 256


def gradient_at_init(model: torch.nn.Module, dataset) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One probed forward/backward pass on the full training set, no update: the per-layer
    weight-gradient norms, signal norms and layer names (head included)."""
    trace = probe_once(model, dataset.x, dataset.y)
    model.zero_grad(set_to_none=True)
    return trace.get("grad_norm")[0], trace.get("output_grad_norm")[0], trace.layers


def gradient_parts(model: torch.nn.Module, dataset) -> dict[str, np.ndarray]:
    """One forward/backward pass on the full training set, no update, and for every hidden Linear
    layer k the three parts of its weight gradient ∂L/∂W_k = δ_kᵀ h_{k-1}, summed over the batch:
    ``signal`` ‖δ_k‖ (δ_k = ∂L/∂z_k, one row per example), ``input`` ‖h̄_{k-1}‖ (the layer's input with its
    batch mean removed), ``alignment`` ‖δ_kᵀh̄_{k-1}‖ / (‖δ_k‖·‖h̄_{k-1}‖) (1 when every example's δ is the
    same multiple of its input, near 0 when they cancel in the sum over examples), and ``weight``
    ‖∂L/∂W_k‖ from autograd. ``mean_signal`` is max |Σ_i δ_ik|: 0 up to rounding after a BN layer,
    so that δᵀh = δᵀh̄. ``dense`` is max |∂L/∂W − δᵀh̄| / ‖∂L/∂W‖ over the layers (the check)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][:-1]   # the head goes
    seen = {}

    def keep(module, inputs, output):
        output.retain_grad()
        seen[module] = (inputs[0].detach(), output)

    with Hooks(*[module.register_forward_hook(keep) for module in linears]):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(dataset.x), dataset.y).backward()
    parts = {key: [] for key in ("signal", "input", "alignment", "weight", "mean_signal", "dense")}
    for module in linears:
        h, z = seen[module]
        delta, centred = z.grad.double(), (h - h.mean(dim=0)).double()
        product = delta.T @ centred
        weight = module.weight.grad.double()
        parts["signal"].append(delta.norm().item())
        parts["input"].append(centred.norm().item())
        parts["alignment"].append(product.norm().item() / (delta.norm().item() * centred.norm().item()))
        parts["weight"].append(weight.norm().item())
        parts["mean_signal"].append(delta.sum(dim=0).abs().max().item())
        parts["dense"].append(((weight - product).norm() / weight.norm()).item())
    model.zero_grad(set_to_none=True)
    return {key: np.array(value) for key, value in parts.items()}


def batch_spread(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """How much each hidden layer's activations differ between the examples of the batch: per
    layer, the standard deviation over the batch of each unit, averaged over the units.

    A layer whose spread is ~0 gives every input the same activation: the input is forgotten.
    """
    return np.array([out.std(dim=0).mean().item() for out in hidden_outputs(model, x)])


def training_loss(model: torch.nn.Module, dataset) -> float:
    """The loss on the whole training set in eval mode (BatchNorm uses its running statistics):
    what the network has learnt, unlike the last mini-batch's loss, which a batch of 2 can make 0."""
    with evaluating(model):
        return torch.nn.functional.cross_entropy(model(dataset.x), dataset.y).item()


class BatchNormExplorer(Explorer):
    """Depth, activation, BatchNorm on/off, batch size and learning rate of a width-32 MLP on the
    spirals (256 points). Left: ‖∂L/∂W‖ and ‖∂L/∂z‖ per hidden layer at initialisation. Right
    (when ``steps`` > 0): the training loss under SGD with momentum 0.9 and norm clipping at 1,
    with ln 2 (chance) marked. ``steps=0`` only probes (fast); in the UI every control change
    redraws that view and training waits for the Run button."""

    title = "BatchNorm: gradient per layer at the start, and training"
    params = {
        "depth": Param(10, low=2, high=40, label="hidden layers"),
        "activation": Param("sigmoid", options=("sigmoid", "tanh", "relu")),
        "batchnorm": Param(True, label="BatchNorm"),
        "batch_size": Param(256, options=(2, 4, 16, 64, 256), label="batch size (256 = full)"),
        "lr": Param(0.1, low=0.01, high=1.0, log=True, step=0.25, label="learning rate"),
        "steps": Param(300, low=0, high=400, step=50, label="training steps (0 = probe only)"),
    }
    manual = True
    preview = {"steps": 0}

    def compute(self, depth, activation, batchnorm, batch_size, lr, steps) -> Result:
        dataset = data.cached_spirals(N_TRAIN)
        model = models.mlp(depth, WIDTH, activation=activation, batchnorm=batchnorm, seed=0)
        grads, signal, _ = gradient_at_init(model, dataset)
        values = {
            "grad_ratio": float(grads[0] / grads[depth - 1]),
            "signal_ratio": float(signal[0] / signal[depth - 1]),
            "per_layer": float((signal[0] / signal[depth - 1]) ** (1 / max(depth - 1, 1))),
            "grad_per_layer": float((grads[0] / grads[depth - 1]) ** (1 / max(depth - 1, 1))),
        }
        runs = {}
        fig, axes = plots.new_figure(2 if steps else 1, width=4.8, height=3.4)
        plots.draw_layer_gradients(axes[0, 0], grads[:depth], signal[:depth],
                                   title="Gradient per layer at initialisation")
        summary = (f"At the start the first layer's weight gradient ‖∂L/∂W‖ is {values['grad_ratio']:.2g}× the "
                   f"last layer's (×{values['grad_per_layer']:.2f} per layer); the signal ‖∂L/∂z‖ changes by "
                   f"about ×{values['per_layer']:.2f} per layer.")
        if steps:
            full = batch_size >= N_TRAIN
            run = train.fit(model, dataset, steps=steps, lr=lr, momentum=0.9, clip=1.0, probe=False,
                            batch_size=None if full else batch_size, progress=self.progress)
            runs["run"] = run
            values["last_batch_loss"] = float(run.losses[-1])
            values["test_accuracy"] = run.metrics.get("test_accuracy", float("nan"))
            kind = "with BN" if batchnorm else "without BN"
            label = kind if full else f"{kind}: loss of each mini-batch of {batch_size}"
            plots.draw_loss(axes[0, 1], {label: run}, baseline=math.log(2), baseline_label="chance, ln 2",
                            colors={label: plots.COLORS[1 if batchnorm else 0]},
                            title="Training loss (SGD + momentum, clip 1)")
            if run.diverged:
                summary += f" Training hit NaN/Inf at step {run.diverged_at}."
            else:
                values["final_loss"] = training_loss(run.model, dataset)
                batches = "" if full else (f" (the last mini-batch of {batch_size} alone scored "
                                           f"{values['last_batch_loss']:.3g})")
                summary += (f" After {steps} steps the loss on the whole training set (eval mode) is "
                            f"{values['final_loss']:.3g}{batches}; chance is ln 2 ≈ 0.693; the test "
                            f"accuracy in eval mode {values['test_accuracy']:.0%}.")
        fig.suptitle(f"{depth} × (Linear → {'BN → ' if batchnorm else ''}{activation}), width {WIDTH}")
        return Result(figure=fig, values=values, runs=runs, summary=summary)
