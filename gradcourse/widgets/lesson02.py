"""Lesson 02's explorer: how the weight scale makes the backpropagated signal explode.

It builds an MLP whose weights have standard deviation ``weight_scale`` times the activation's
critical scale (He's √(2/fan_in) for ReLU, 1/√fan_in for tanh and linear), probes one
forward/backward pass on the spirals, and draws the signal ‖∂L/∂z‖ per layer against theory next
to the weight gradients ‖∂L/∂W‖, plus what the optimiser sees: the loss and the total gradient
norm, compared with the same network at the critical scale.

>>> from gradcourse.widgets.lesson02 import ExplosionExplorer
>>> result = ExplosionExplorer().run(weight_scale=2.0, depth=20, activation="relu")
>>> result.values["signal_ratio"] > 1e4          # the signal explodes backward...
True
>>> 0.05 < result.values["weight_grad_ratio"] < 5  # ...while the weight gradients stay balanced
True
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .. import _checks, data, models, plots, theory
from ..probes import probe_once
from .base import Explorer, Param, Result

#: Weight std (times √fan_in) at which each activation is critical: the signal neither grows nor
#: shrinks (He for ReLU; the edge of chaos σ_w = 1 for tanh without bias; 1 for linear).
CRITICAL_SIGMA_W = theory.CRITICAL_SIGMA_W  # σ_w at the edge: ReLU √2 (He), tanh and linear 1


def probe_network(activation: str, depth: int, weight_scale: float, *, width: int = 64,
                  seed: int = 0, n: int = 512) -> dict:
    """One forward/backward pass of an MLP with std = weight_scale × critical, under a probe.

    Returns the trace, the loss and the total gradient norm (every parameter).
    """
    seed = _checks.seed(seed)
    sigma_w = weight_scale * CRITICAL_SIGMA_W[activation]
    ds = data.cached_spirals(n)
    net = models.mlp(depth, width, activation=activation, init="normal", weight_std=sigma_w,
                     seed=seed)
    trace = probe_once(net, ds.x, ds.y)
    total = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item()
    net.zero_grad(set_to_none=True)
    return {"trace": trace, "loss": trace.loss, "total_grad_norm": total, "sigma_w": sigma_w,
            "x": ds.x.numpy()}


@functools.lru_cache(maxsize=64)
def _critical(activation: str, depth: int) -> dict:
    probed = probe_network(activation, depth, 1.0)
    return {"loss": probed["loss"], "total_grad_norm": probed["total_grad_norm"]}


def theory_signal(activation: str, depth: int, weight_scale: float, x: np.ndarray) -> np.ndarray:
    """Predicted signal per hidden layer relative to the last one (ReLU/linear: weight_scale per
    layer; tanh: the per-example mean-field average of :func:`gradcourse.theory.tanh_mean_field`)."""
    if activation in ("relu", "linear"):
        return theory.relu_signal_profile(weight_scale ** 2, depth)
    sigma_w = weight_scale * CRITICAL_SIGMA_W["tanh"]
    _, chi = theory.tanh_mean_field(sigma_w, depth, (x ** 2).mean(axis=1))
    # ratio of layer k to the last layer: rms over examples of sqrt(chi_k ... chi_{depth-1})
    profile = [np.sqrt(np.mean(np.prod(chi[:, k:depth - 1], axis=1))) for k in range(depth)]
    return np.array(profile)


class ExplosionExplorer(Explorer):
    title = "Lesson 02: weight scale, depth and the exploding signal"
    params = {
        "weight_scale": Param(2.0, low=0.5, high=4.5, step=0.05,
                              label="weight std ÷ critical std (1 = He for ReLU)"),
        "depth": Param(20, low=2, high=40, label="hidden layers"),
        "activation": Param("relu", options=("relu", "tanh", "linear"), label="activation"),
    }

    def compute(self, weight_scale, depth, activation) -> Result:
        probed = probe_network(activation, depth, weight_scale)
        critical = _critical(activation, depth)
        trace = probed["trace"]
        with np.errstate(all="ignore"):
            return self._result(probed, critical, trace, weight_scale, depth, activation)

    def _result(self, probed, critical, trace, weight_scale, depth, activation) -> Result:
        signal = trace.get("output_grad_norm")[0][:depth]
        weight_grads = trace.get("grad_norm")[0][:depth]
        predicted = theory_signal(activation, depth, weight_scale, probed["x"])
        values = {
            "signal_ratio": float(signal[0] / signal[-1]),
            "theory_ratio": float(predicted[0]),
            "weight_grad_ratio": float(weight_grads[min(1, depth - 1)] / weight_grads[-1]),
            "loss": probed["loss"],
            "total_grad_norm": probed["total_grad_norm"],
            "loss_critical": critical["loss"],
            "total_grad_norm_critical": critical["total_grad_norm"],
            "saturated_last": float(trace.get("saturated_frac")[0][depth - 1]),
        }
        figure = _figure(signal, weight_grads, predicted * signal[-1], values, activation,
                         weight_scale, depth)
        summary = (f"Signal first/last layer: measured {values['signal_ratio']:.3g}, theory "
                   f"{values['theory_ratio']:.3g}. Weight gradients layer 2/last: "
                   f"{values['weight_grad_ratio']:.2g}. Loss {values['loss']:.3g} and total "
                   f"gradient norm {values['total_grad_norm']:.3g} (at the critical scale: "
                   f"{values['loss_critical']:.3g} and {values['total_grad_norm_critical']:.3g}).")
        if not all(np.isfinite([values["signal_ratio"], values["loss"], values["total_grad_norm"]])):
            summary = ("Some numbers overflowed float32 (largest ≈ 3.4e38) and became inf/NaN: "
                       "this network is past exploding. " + summary)
        if activation == "tanh":
            summary += f" Last layer saturated: {values['saturated_last']:.0%} of units."
        return Result(figure=figure, values=values, summary=summary)


@plots.styled
def _figure(signal, weight_grads, predicted, values, activation, weight_scale, depth):
    fig, axes = plots.new_figure(2, width=4.8, height=3.4)
    plots.draw_layer_gradients(axes[0, 0], weight_grads, signal, theory=predicted,
                               xlabel="layer (1 = nearest the input)",
                               title=f"{activation}, {depth} layers, std × {weight_scale:g}")

    ax = axes[0, 1]
    names = ["loss", "total ‖∇L‖"]
    here = np.array([values["loss"], values["total_grad_norm"]], dtype=float)
    base = np.array([values["loss_critical"], values["total_grad_norm_critical"]], dtype=float)
    positions = np.arange(len(names))
    finite = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in (here, base)])
    top = float(finite.max()) * 30 if len(finite) else 10.0
    ax.bar(positions - 0.2, base, width=0.4, label="critical scale (× 1)", color=plots.COLORS[0])
    # A value that overflowed float32 has no bar height: draw it to the top, hatched, and say so.
    shown = np.where(np.isfinite(here), here, top)
    bars = ax.bar(positions + 0.2, shown, width=0.4, label=f"this scale (× {weight_scale:g})",
                  color=plots.COLORS[1])
    for bar, value in zip(bars, here):
        if not np.isfinite(value):
            bar.set_hatch("//")
            bar.set_edgecolor("black")
            ax.annotate(f"{value} (overflowed)", (bar.get_x() + bar.get_width() / 2, top / 3), ha="center",
                        va="top", rotation=90, fontsize="small", color="black",
                        bbox=dict(facecolor="white", edgecolor="none", alpha=0.9))
    ax.set_yscale("log")
    ax.set_ylim(top=top * 1.5)
    ax.set_xticks(positions, names)
    ax.set_ylabel("value at initialisation (log scale)")
    ax.set_title("What the optimiser sees")
    ax.legend(fontsize="small", loc="upper left")
    return fig


@plots.styled
def sharpness_figure(steps: np.ndarray, sharpness: np.ndarray, lr: float, *, title: str,
                     shade: np.ndarray | None = None, shade_label: str = "", mark: int | None = None,
                     mark_label: str = ""):
    """The sharpness (the Hessian's largest eigenvalue, ``train.sharpness_along``) at the measured
    ``steps`` of a run, on a log axis, against the stability limit 2/lr. ``shade`` (one bool per
    training step) greys the steps where it holds; ``mark`` draws a dotted line at one step."""
    fig, axes = plots.new_figure(1, width=5.6, height=3.4)
    ax = axes[0, 0]
    if shade is not None and np.any(shade):
        ax.fill_between(np.arange(len(shade)), 0, 1, where=shade, transform=ax.get_xaxis_transform(),
                        color="0.85", step="mid", label=shade_label)
    ax.semilogy(steps, sharpness, "s-", ms=3, color=plots.color(1), label="largest Hessian eigenvalue")
    ax.axhline(2 / lr, color="black", ls="--", lw=1, label=f"2/lr = {2 / lr:g}: gradient descent stable below")
    if mark is not None:
        ax.axvline(mark, color=plots.color(0), ls=":", lw=1.5, label=mark_label)
    ax.set_xlabel("step")
    ax.set_ylabel("sharpness λ_max (log scale)")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small", loc="upper right")
    ax.grid(True, which="major", alpha=0.3)
    return fig
