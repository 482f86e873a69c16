"""Lesson 00's explorer: the scalar chain, the smallest network whose gradient vanishes or explodes.

A scalar chain has one unit per layer: z_k = w·h_{k-1} + b, h_k = φ(z_k), for k = 1..L. Its
gradient ∂h_L/∂h_k is a product of L − k factors w·φ'(z_j). :func:`chain_gradients` measures it
with autograd on a real chain; :func:`gradcourse.theory.scalar_chain` predicts it. The bias is
set so that, with ``offset = 0``, every pre-activation is exactly 0 (where the sigmoid's slope is
its maximum, 1/4); a non-zero ``offset`` pushes the chain away from 0.

>>> result = ScalarChainExplorer().run(depth=10, w=2.0)
>>> round(result.values["input_gradient"], 6), round(float(result.values["predicted"][0]), 6)
(0.000977, 0.000977)
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import _checks, plots, theory
from .base import Explorer, Param, Result

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda z: z}


def chain_gradients(w: float, depth: int, activation: str = "sigmoid",
                    offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Build a real scalar chain of ``depth`` links in float64 and backpropagate through it.

    The chain starts at h_0 = φ(0) and uses the bias b = offset − w·φ(0), so z_1 = offset (and,
    with offset = 0, every z_k = 0). Returns ``(gradients, z)``: ``gradients[k]`` = |∂h_L/∂h_k|
    for k = 0..L as autograd computes it, and the pre-activations z_1..z_L.

    >>> g, z = chain_gradients(2.0, 3)
    >>> g.tolist(), z.tolist()
    ([0.125, 0.25, 0.5, 1.0], [0.0, 0.0, 0.0])
    """
    _checks.choice("activation", activation, ACTIVATIONS)
    depth = _checks.integer("depth", depth, low=1, high=10_000)
    phi = ACTIVATIONS[activation]
    w_t = torch.tensor(float(w), dtype=torch.float64)
    start = phi(torch.zeros((), dtype=torch.float64))
    b = offset - w_t * start
    h = start.clone().requires_grad_(True)
    states, zs = [h], []
    for _ in range(depth):
        z = w_t * h + b
        h = phi(z)
        h.retain_grad()
        states.append(h)
        zs.append(z.item())
    states[-1].backward()
    grads = np.array([abs(s.grad.item()) if s.grad is not None else 1.0 for s in states])
    return grads, np.array(zs)


@plots.styled
def figure(values: dict, *, depth: int, w: float, activation: str, offset: float) -> Figure:
    """Left: |∂h_L/∂h_k| against k (log scale), measured and predicted.
    Right: the predicted gradient at the input against w, with the |w·φ'(0)| = 1 boundary."""
    fig, axes = plots.new_figure(2, width=5.2, height=3.6)
    ax = axes[0, 0]
    k = np.arange(depth + 1)
    measured = values["measured"]
    shown = np.isfinite(measured) & (measured > 0)
    predicted = values["predicted"]
    ok = np.isfinite(predicted) & (predicted > 0)
    ax.semilogy(k[ok], predicted[ok], "-", color="black", lw=1.5, alpha=0.7,
                label=f"predicted |w·φ'(0)|^(L−k), factor {values['factor']:.3g}")
    ax.semilogy(k[shown], measured[shown], "o", ms=5, color=plots.COLORS[0],
                label="measured with autograd")
    plots.mark_nonfinite(ax, k, measured, color=plots.COLORS[0], what="measured gradient")
    plots.integer_ticks(ax)
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("layer k (0 = input, L = output)")
    ax.set_ylabel("|∂h_L/∂h_k| (log scale)")
    verdict = ("vanishes" if values["factor"] < 0.999 else "explodes" if values["factor"] > 1.001
               else "is kept")
    ax.set_title(f"{activation} chain, w = {w:g}, L = {depth}: the gradient {verdict}", fontsize="medium")
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, which="major", alpha=0.3)

    ax = axes[0, 1]
    w_c = theory.critical_weight(activation)
    ws = np.linspace(-2.5 * w_c, 2.5 * w_c, 200)       # an even count: w = 0 is never drawn
    at_input = np.abs(ws / w_c) ** depth              # |w·φ'(0)|^L with φ'(0) = 1/w_c
    here = max(float(measured[0]), 1e-300)
    top = max(float(at_input.max()), here, 10.0) * 30
    bottom = min(float(np.abs(0.25) ** depth), here, 0.1) / 30
    ax.semilogy(ws, at_input, color="black", lw=1.5)
    ax.axvspan(-w_c, w_c, color=plots.COLORS[0], alpha=0.12, lw=0)
    for edge in (-w_c, w_c):
        ax.axvline(edge, color="black", ls="--", lw=1)
        ax.text(edge, bottom * 3, f" |w| = {w_c:g}", fontsize="small", ha="left" if edge > 0 else "right")
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.text(0, top / 3, "vanishes\n|w·φ'(0)| < 1", ha="center", va="top", fontsize="small")
    for side in (-1, 1):
        ax.text(side * 1.75 * w_c, top / 3, "explodes", ha="center", va="top", fontsize="small")
    ax.plot([w], [here], "o", ms=8, color=plots.COLORS[1])
    ax.annotate(f"this chain: {measured[0]:.2g}", (w, here), textcoords="offset points", xytext=(6, 6),
                fontsize="small", color=plots.COLORS[1])
    ax.set_ylim(bottom, top)
    ax.set_xlabel("weight w")
    ax.set_ylabel("|∂h_L/∂h_0| at z = 0 (log scale)")
    ax.set_title(f"The boundary |w·{activation}'(0)| = 1 (L = {depth})", fontsize="medium")
    return fig


@plots.styled
def compare_figure(ws: tuple[float, ...] = (2.0, 4.0, 5.0), depth: int = 20,
                   activation: str = "sigmoid") -> Figure:
    """|∂h_L/∂h_k| against k for several weights on one log axis (measured dots, predicted lines)."""
    fig, axes = plots.new_figure(1, width=5.6, height=3.6)
    ax = axes[0, 0]
    k = np.arange(depth + 1)
    for color, w in zip(plots.COLORS, ws):
        measured, _ = chain_gradients(w, depth, activation)
        factor = theory.chain_factor(w, activation)
        ax.semilogy(k, theory.scalar_chain(w, depth, activation), "-", color=color, lw=1.5)
        ax.semilogy(k, measured, "o", ms=4, color=color, label=f"w = {w:g}: factor |w·φ'(0)| = {factor:g}")
    plots.integer_ticks(ax)
    ax.set_xlabel("layer k (0 = input, L = output)")
    ax.set_ylabel("|∂h_L/∂h_k| (log scale)")
    ax.set_title(f"{activation} chains of {depth} links: dots measured, lines predicted", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    return fig


class ScalarChainExplorer(Explorer):
    """Depth L, weight w, activation and pre-activation offset of a scalar chain: the gradient at
    every layer, measured with autograd and predicted by |w·φ'(0)|^(L−k)."""

    title = "Lesson 00 explorer: the scalar chain"
    params = {
        "depth": Param(20, low=1, high=60, label="depth L"),
        "w": Param(2.0, low=-10.0, high=10.0, step=0.1, label="weight w"),
        "activation": Param("sigmoid", options=("sigmoid", "tanh", "linear")),
        "offset": Param(0.0, low=-4.0, high=4.0, step=0.1, label="pre-activation offset"),
    }

    def check(self, params: dict) -> None:
        if params["w"] == 0:
            raise ValueError("w must not be 0: a chain with w = 0 passes no gradient at all "
                             "(every factor is 0). Move w away from 0.")

    def compute(self, depth, w, activation, offset) -> Result:
        measured, z = chain_gradients(w, depth, activation, offset)
        predicted = theory.scalar_chain(w, depth, activation)
        factor = theory.chain_factor(w, activation)
        values = {"measured": measured, "predicted": predicted, "factor": factor, "z": z,
                  "input_gradient": float(measured[0]), "critical_weight": theory.critical_weight(activation)}
        fig = figure(values, depth=depth, w=w, activation=activation, offset=offset)
        summary = (f"Each link multiplies the gradient by |w·φ'(0)| = {factor:.3g}, so {depth} links give "
                   f"{predicted[0]:.3g} at the input; autograd measures {measured[0]:.3g}.")
        if abs(offset) > 0 and activation != "linear":
            summary += (f" With the offset, the pre-activations sit near {z[-1]:+.2g} instead of 0, where "
                        f"the slope is smaller than at 0.")
        return Result(figure=fig, values=values, summary=summary)


@plots.styled
def sharpness_figure(losses: np.ndarray, sharpness: np.ndarray, lr: float) -> Figure:
    """The loss (left) and the sharpness, the Hessian's largest eigenvalue, against 2/lr (right),
    at steps 0, 1, …, len(sharpness) − 1 of a run (``train.sharpness_along``'s numbers)."""
    fig, axes = plots.new_figure(2, width=4.6, height=3.2)
    left, right = axes[0]
    steps = np.arange(len(sharpness))
    left.plot(steps, losses[: len(steps)], "o-", ms=3, color=plots.color(0), label="training loss")
    left.axhline(losses[0], color="grey", ls=":", lw=1, label=f"loss at step 0 ({losses[0]:.2f})")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_title("The loss jumps up for a few steps", fontsize="medium")
    left.legend(fontsize="small")
    right.plot(steps, sharpness, "s-", ms=3, color=plots.color(1), label="sharpness λ_max")
    right.axhline(2 / lr, color="black", ls="--", lw=1, label=f"2/lr = {2 / lr:g}: stable below")
    right.set_xlabel("step")
    right.set_ylabel("largest Hessian eigenvalue λ_max")
    right.set_title("…after the curvature grew past 2/lr", fontsize="medium")
    right.legend(fontsize="small")
    for ax in (left, right):
        plots.integer_ticks(ax)
        ax.grid(True, alpha=0.3)
    return fig
