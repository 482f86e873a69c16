"""Lesson 01's explorer: how deep a sigmoid network can be before its gradient vanishes.

:class:`SaturationExplorer` builds an MLP at initialisation, sends one batch of the spirals
forward and backward under a :class:`~gradcourse.probes.Probe` (no training: it answers in a
fraction of a second) and draws the backpropagated signal per layer next to the mean-field
theory, and the activations of the first and last hidden layers, where saturation shows.

>>> result = SaturationExplorer().run(depth=10)
>>> result.values["ratio"] < 1e-6           # sigmoid, default init: the signal vanishes
True
>>> SaturationExplorer().run(depth=10, activation="relu", init="kaiming").values["ratio"] > 0.1
True
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import _checks, data, measurements, models, plots, theory
from ..activations import hidden_outputs
from ..measurements import SATURATION_MARGIN
from ..probes import probe_once
from .base import Explorer, Param, Result

WIDTH = 64
#: An activation within this distance of an asymptote counts as saturated (as in the probes).
MARGIN = SATURATION_MARGIN  # the probe's definition of a saturated unit


def build(depth: int = 20, activation: str = "sigmoid", init: str = "default", *,
          weight_scale: float = 1.0, width: int = WIDTH, seed: int = 0) -> models.MLP:
    """``models.mlp`` with every hidden layer's weights multiplied by ``weight_scale`` after the
    initialisation (the head is left alone), so the scale is relative to the chosen init."""
    seed = _checks.seed(seed)
    net = models.mlp(depth, width, activation=activation, init=init, seed=seed)
    if weight_scale != 1.0:
        with torch.no_grad():
            for layer in net.hidden_layers():
                layer.weight.mul_(weight_scale)
    net.config["weight_scale"] = weight_scale
    return net


def saturated_fraction(activation: str, values: np.ndarray) -> float:
    """Fraction of ``values`` within MARGIN of an asymptote (sigmoid: 0 or 1; tanh: ±1), where
    the slope is below ≈ 0.03 of its maximum: the unit passes almost no gradient back. Counted
    by the probe's own rule (``measurements.activation_sums``), so a histogram's label and the
    probe's ``saturated_frac`` of the same layer agree exactly; NaN for a non-saturating activation."""
    if activation not in ("sigmoid", "tanh"):
        return float("nan")
    values = torch.as_tensor(values)
    if not values.numel():
        return float("nan")
    sums = measurements.activation_sums(values, activation)
    return float((sums.sat_sigmoid if activation == "sigmoid" else sums.sat_tanh) / sums.count)


def measure(depth: int = 20, activation: str = "sigmoid", init: str = "default", *,
            weight_scale: float = 1.0, input_scale: float = 1.0, width: int = WIDTH, seed: int = 0) -> dict:
    """Probe one batch through a freshly built MLP; return the numbers the lesson talks about.

    Keys: ``signal`` (‖∂L/∂z_k‖ per hidden layer), ``weight_grad`` (‖∂L/∂W_k‖), ``theory``
    (mean-field prediction of the signal, anchored at the last hidden layer), ``ratio``
    (signal at layer 1 / signal at layer L), ``factor`` and ``factor_theory`` (geometric mean of
    the per-layer change, measured and predicted), ``saturated`` and ``dead`` (fraction per
    hidden layer), ``activations`` (every hidden layer's values, flattened), ``loss``, ``trace``.
    """
    seed = _checks.seed(seed)
    ds = data.cached_spirals(512)
    x = ds.x * input_scale
    net = build(depth, activation, init, weight_scale=weight_scale, width=width, seed=seed)
    with np.errstate(all="ignore"):
        trace = probe_once(net, x, ds.y)
        net.zero_grad(set_to_none=True)
        hidden = slice(0, depth)                         # the trace's last layer is the head
        signal = trace.get("output_grad_norm")[0, hidden].astype(float)
        weight_grad = trace.get("grad_norm")[0, hidden].astype(float)
        m2 = float((x**2).sum(dim=1).mean())
        # A signal that overflowed float32 (a ReLU net at ×16 per layer) has no finite anchor.
        overflow = not (np.isfinite(trace.loss) and np.all(np.isfinite(signal)))
        predicted = (np.full(depth, np.nan) if overflow else
                     theory.predict_signal(net.config, last=signal[-1], input_second_moment=m2,
                                           weight_scale=weight_scale))
        ratio = float(signal[0] / signal[-1])
        factor_theory = (float((predicted[0] / predicted[-1]) ** (1 / (depth - 1))) if depth > 1 and not overflow
                         else float("nan") if overflow else 1.0)
    acts = [a.numpy().ravel() for a in hidden_outputs(net, x)]
    values = {
        "signal": signal, "weight_grad": weight_grad, "theory": predicted, "ratio": ratio,
        "factor": _per_layer(signal), "factor_theory": factor_theory, "overflow": overflow,
        "saturated": trace.get("saturated_frac")[0, hidden].astype(float),
        "dead": trace.get("dead_frac")[0, hidden].astype(float),
        "activations": acts, "loss": trace.loss, "trace": trace,
    }
    return values


def _theory_words(factor: float) -> str:
    """The theory's factor in words; a factor of 0 or NaN means the mean-field integral gave no
    usable answer at these settings (it underflows for very large pre-activations), not "0"."""
    if not np.isfinite(factor) or factor <= 0:
        return "the mean-field theory gives no usable number at these settings"
    return f"theory {factor:.3g}"


def _per_layer(signal: np.ndarray) -> float:
    """Geometric mean of the per-layer change, from the first layer whose signal is still
    representable (non-zero) to the last."""
    positive = np.flatnonzero(signal > 0)
    if len(positive) < 2 or not np.all(np.isfinite(signal)):
        return float("nan")
    first = positive[0]
    return float((signal[first] / signal[-1]) ** (1 / (len(signal) - 1 - first)))


@plots.styled
def figure(values: dict, *, depth: int, activation: str, init: str, weight_scale: float,
           input_scale: float) -> Figure:
    """Left: signal and weight gradient per layer (log scale) with the theory curve. Middle:
    histograms of the first and last hidden layers' activations. Right: saturated or dead units
    per layer."""
    fig, axes = plots.new_figure(3, width=4.6, height=3.6)
    if values["overflow"]:
        title = f"{depth} {activation} layers, {init} init: overflowed to inf/NaN"
    else:
        title = f"{depth} {activation} layers, {init} init: layer 1 gets {values['ratio']:.1e} of layer {depth}"
    usable = np.isfinite(values["factor_theory"]) and values["factor_theory"] > 0
    theory_label = ("theory: none (no finite anchor)" if values["overflow"]
                    else f"theory: ×{values['factor_theory']:.3g} per layer" if usable
                    else "theory: no usable number here")
    plots.draw_layer_gradients(axes[0, 0], values["weight_grad"], values["signal"], theory=values["theory"],
                               title=title, markersize=3, theory_label=theory_label,
                               labels=("weight gradient ‖∂L/∂W‖", "signal ‖∂L/∂z‖ (measured)"))
    axes[0, 0].title.set_fontsize("medium")

    ax = axes[0, 1]
    first, last = (np.asarray(v)[np.isfinite(v)] for v in (values["activations"][0], values["activations"][-1]))
    lo, hi = (-1.0, 1.0) if activation == "tanh" else (0.0, 1.0)
    if activation == "relu":
        both = np.concatenate([first, last])
        hi = max(float(np.percentile(both, 99.5)) if len(both) else 1.0, 1e-6)
    bins = np.linspace(lo, hi, 41)
    for k, vals, color in ((1, first, plots.COLORS[0]), (depth, last, plots.COLORS[1])):
        if not len(vals):
            ax.plot([], [], color=color, label=f"layer {k}: every value inf/NaN")
            continue
        if activation == "relu":
            label = f"layer {k}: {float(np.mean(vals <= 0)):.0%} exactly 0 (no gradient)"
        else:
            label = f"layer {k}: {saturated_fraction(activation, vals):.0%} saturated"
        ax.hist(np.clip(vals, lo, hi), bins=bins, histtype="stepfilled", alpha=0.45, color=color,
                weights=np.full(len(vals), 1 / len(vals)), label=label)
    if activation in ("sigmoid", "tanh"):
        for k, edge in enumerate(((lo, lo + MARGIN), (hi - MARGIN, hi))):  # in the legend, not under it
            ax.axvspan(*edge, color="grey", alpha=0.25, lw=0, label="saturated (slope ≈ 0)" if k == 0 else None)
    ax.set_xlabel(f"activation value {activation}(z)")
    ax.set_ylabel("fraction of unit-samples")
    ax.set_title(f"Activations (weights ×{weight_scale:g}, inputs ×{input_scale:g})", fontsize="medium")
    ax.legend(fontsize="small", loc="best")

    plots.draw_unhealthy_units(axes[0, 2], values["saturated"], values["dead"],
                               xlabel="hidden layer (1 = nearest the input)",
                               title="Saturated or dead units per layer")
    axes[0, 2].title.set_fontsize("medium")
    return fig


@plots.styled
def activation_figure() -> Figure:
    """σ and tanh with their slopes (left), and ReLU with its slope (right), on [−6, 6]."""
    z = np.linspace(-6, 6, 601)
    fig, axes = plots.new_figure(2, width=5.2, height=3.4)
    ax = axes[0, 0]
    for name, color in (("sigmoid", plots.COLORS[0]), ("tanh", plots.COLORS[1])):
        ax.plot(z, theory.activation_value(name, z), color=color, lw=1.5, alpha=0.6, label=f"{name}(z)")
        ax.plot(z, theory.activation_slope(name, z), color=color, lw=2.5, ls="--", label=f"{name}'(z)")
    ax.axhline(0.25, color="grey", ls=":", lw=1)
    ax.annotate("σ'(0) = 1/4", (0, 0.25), xytext=(1.5, 0.42), arrowprops=dict(arrowstyle="->"),
                fontsize="small")
    ax.set_ylim(-1.05, 1.1)
    ax.set_xlabel("pre-activation z")
    ax.set_ylabel("value or slope")
    ax.set_title("Sigmoid and tanh: slopes ≤ 1/4 and ≤ 1", fontsize="medium")
    ax.legend(fontsize="small", loc="lower right")
    ax = axes[0, 1]
    ax.plot(z, theory.activation_value("relu", z), color=plots.COLORS[2], lw=1.5, alpha=0.6, label="relu(z)")
    slope = theory.activation_slope("relu", z)
    ax.plot(z[z < 0], slope[z < 0], color=plots.COLORS[2], lw=2.5, ls="--", label="relu'(z)")
    ax.plot(z[z > 0], slope[z > 0], color=plots.COLORS[2], lw=2.5, ls="--")
    ax.set_ylim(-0.2, 3)
    ax.set_xlabel("pre-activation z")
    ax.set_ylabel("value or slope")
    ax.set_title("ReLU: slope 1 for z > 0, 0 for z < 0", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")
    return fig


@plots.styled
def saturation_figure(settings: dict[str, dict], *, depth: int = 20) -> Figure:
    """One panel per setting (title → keyword arguments of :func:`measure`): the histogram of
    the activations of the layer that saturates most, with its saturated fraction."""
    fig, axes = plots.new_figure(len(settings), width=3.0, height=2.9, sharey=True)
    for ax, (name, kwargs) in zip(axes[0], settings.items()):
        values = measure(depth, **kwargs)
        k = int(np.nanargmax(values["saturated"]))
        acts = values["activations"][k]
        ax.hist(acts, bins=np.linspace(0, 1, 41), weights=np.full(len(acts), 1 / len(acts)),
                color=plots.COLORS[1 if k == 0 else 0], alpha=0.8)
        for edge in ((0, MARGIN), (1 - MARGIN, 1)):
            ax.axvspan(*edge, color="grey", alpha=0.25, lw=0)
        ax.set_title(f"{name}\nlayer {k + 1}: {saturated_fraction('sigmoid', acts):.0%} saturated",
                     fontsize="medium")
        ax.set_xlabel("sigmoid(z)")
    axes[0, 0].set_ylabel("fraction of unit-samples")
    fig.suptitle(f"Where saturation comes from ({depth} sigmoid layers; grey = saturated)")
    return fig


class SaturationExplorer(Explorer):
    """Depth, activation, init, weight and input scale of an MLP at initialisation: how much of
    the backpropagated signal reaches the first layer, and how saturated its units are."""

    title = "Lesson 01 explorer: how much gradient reaches layer 1?"
    params = {
        "depth": Param(20, low=2, high=40, label="depth (hidden layers)"),
        "activation": Param("sigmoid", options=("sigmoid", "tanh", "relu")),
        "init": Param("default", options=("default", "xavier", "kaiming")),
        "weight_scale": Param(1.0, low=0.25, high=16.0, step=0.1, log=True, label="weight scale ×"),
        "input_scale": Param(1.0, low=0.1, high=100.0, step=0.1, log=True, label="input scale ×"),
    }

    def compute(self, depth, activation, init, weight_scale, input_scale) -> Result:
        values = measure(depth, activation, init, weight_scale=weight_scale, input_scale=input_scale)
        fig = figure(values, depth=depth, activation=activation, init=init, weight_scale=weight_scale,
                     input_scale=input_scale)
        if values["overflow"]:
            summary = (f"With weights ×{weight_scale:g} and inputs ×{input_scale:g}, {depth} {activation} layers "
                       f"overflowed float32 (largest ≈ 3.4e38): the loss is {values['loss']:.3g} and the "
                       f"gradients inf/NaN (▲ on the figure). Lower the weight scale or the depth to see how far "
                       f"the signal grows before it overflows.")
            return Result(figure=fig, values=values, summary=summary)
        with np.errstate(all="ignore"):
            worst = np.nanmax(np.append(values["dead"] if activation == "relu" else values["saturated"], 0.0))
        if activation == "relu":
            unhealthy = f"up to {worst:.0%} of a layer's units are dead (silent for every input)"
        elif worst < 0.005:
            unhealthy = "no layer has saturated units"
        else:
            unhealthy = f"up to {worst:.0%} of a layer's units are saturated"
        summary = (f"Each layer multiplies the signal by {values['factor']:.3g} on average "
                   f"({_theory_words(values['factor_theory'])}), so layer 1 receives "
                   f"{values['ratio']:.2g} of what layer {depth} receives; {unhealthy}.")
        return Result(figure=fig, values=values, summary=summary)
