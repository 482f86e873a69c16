"""Lesson 05 explorer: a plain or residual ReLU MLP of a chosen depth, with or without
BatchNorm: its gradient per layer at initialisation, and (on the Run button) a training run.

>>> from gradcourse.widgets.lesson05 import ResidualExplorer
>>> result = ResidualExplorer().run()              # defaults only probe: res-50, no BN
>>> 0.3 < result.values["signal_ratio"] < 5        # flat: the identity path carries the signal
True
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _checks, data, models, plots, theory, train
from ..probes import probe_once
from .base import Explorer, Param, Result

WIDTH = 32
N_TRAIN = 256


def build(depth: int, residual: bool, batchnorm: bool, seed: int = 0) -> torch.nn.Module:
    """The lesson's networks: ``depth`` hidden ReLU layers, plain (``models.mlp``) or residual
    (``models.resnet_mlp`` with depth/2 two-linear blocks after a stem), width 32."""
    seed = _checks.seed(seed)
    if residual:
        return models.resnet_mlp(depth // 2, WIDTH, batchnorm=batchnorm, seed=seed)
    return models.mlp(depth, WIDTH, activation="relu", batchnorm=batchnorm, seed=seed)


def signal_theory(depth: int, residual: bool) -> np.ndarray:
    """Predicted ‖∂L/∂z_k‖ relative to the last hidden layer, without BN, default init.

    Plain: ×√(1/6) ≈ 0.41 per layer (:func:`~gradcourse.theory.small_signal_factor`). Residual:
    the stream's signal δ_b after block b grows by ×1.027 per block toward the input
    (:func:`~gradcourse.theory.residual_block_factor`); a block's second linear layer feeds the
    stream directly (δ_b), its first reaches it through W₂ and a ReLU (×0.41 δ_b), and the stem
    through its ReLU (×√½ of the stream's signal before block 1).
    """
    relu_layer = theory.small_signal_factor("relu", "default", WIDTH)
    if not residual:
        return relu_layer ** np.arange(depth - 1, -1, -1.0)
    blocks = depth // 2
    stream = theory.residual_block_factor(WIDTH) ** np.arange(blocks - 1, -1, -1.0)   # δ_1 .. δ_B
    inside = np.stack([relu_layer * stream, stream], axis=1).reshape(-1)
    return np.concatenate([[math.sqrt(0.5) * stream[0] * theory.residual_block_factor(WIDTH)], inside])


class ResidualExplorer(Explorer):
    """Depth, skip connections and BatchNorm of a width-32 ReLU network on the spirals (256
    points). Left: ‖∂L/∂W‖ and ‖∂L/∂z‖ per hidden layer at initialisation, with the theory line
    when there is no BN. Right (when ``steps`` > 0): the training loss under Adam (lr 1e-3,
    full batch). Training starts on the Run button."""

    title = "Skip connections: gradient per layer at the start, and training"
    manual = True
    preview = {"steps": 0}
    params = {
        "depth": Param(50, low=4, high=60, step=2, label="hidden layers (plain) / 2 × blocks"),
        "residual": Param(True, label="skip connections"),
        "batchnorm": Param(False, label="BatchNorm"),
        "steps": Param(0, low=0, high=500, step=50, label="training steps (0 = probe only)"),
    }

    def check(self, params: dict) -> None:
        if params["depth"] % 2:
            raise ValueError(f"depth must be even (two linear layers per residual block); got {params['depth']}")

    def compute(self, depth, residual, batchnorm, steps) -> Result:
        dataset = data.cached_spirals(N_TRAIN)
        model = build(depth, residual, batchnorm)
        trace = probe_once(model, dataset.x, dataset.y)
        model.zero_grad(set_to_none=True)
        grads, signal = trace.get("grad_norm")[0], trace.get("output_grad_norm")[0]
        n = len(trace.layers) - 1                                 # hidden layers (the head is last)
        values = {"grad_ratio": float(grads[0] / grads[n - 1]),
                  "signal_ratio": float(signal[0] / signal[n - 1]),
                  "hidden_layers": n}
        fig, axes = plots.new_figure(2 if steps else 1, width=4.8, height=3.4)
        predicted = None if batchnorm else signal[n - 1] * signal_theory(depth, residual)
        plots.draw_layer_gradients(axes[0, 0], grads[:n], signal[:n], theory=predicted, markersize=3,
                                   title="Gradient per layer at initialisation")
        # Named as the slider reads: res-60 is a stem and 30 blocks (61 hidden layers), plain-60 has 60.
        short = f"{'res' if residual else 'plain'}-{depth}"
        name = (f"{short} (a stem and {depth // 2} residual blocks of 2 layers)" if residual
                else f"{short} ({depth} hidden layers)")
        summary = (f"{name}{', BN' if batchnorm else ''}: at the start the first "
                   f"layer's weight gradient is {values['grad_ratio']:.2g}× the last layer's.")
        runs = {}
        if steps:
            # fused: torch's fused Adam, as the notebook trains its 50-layer nets (issue 24): one kernel for
            # every weight tensor, 15-20 % off a 50-layer net's step.
            run = train.fit(model, dataset, steps=steps, lr=1e-3, optimizer="adam", fused=True, probe=False,
                            progress=self.progress)
            runs["run"] = run
            values["final_loss"] = float(run.losses[-1])
            plots.draw_loss(axes[0, 1], {short: run}, baseline=math.log(2),
                            baseline_label="chance, ln 2", title="Training loss (Adam, lr 1e-3, full batch)")
            if run.diverged:
                summary += f" Training hit NaN/Inf at step {run.diverged_at}."
            else:
                summary += (f" After {steps} Adam steps the loss of the last step (full batch, training mode) is "
                            f"{values['final_loss']:.3g} (ln 2 ≈ 0.693).")
        fig.suptitle(f"{name}, ReLU, width {WIDTH}{', BatchNorm' if batchnorm else ''}")
        return Result(figure=fig, values=values, runs=runs, summary=summary)
