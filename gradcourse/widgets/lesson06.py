"""Lesson 06's explorer: the gradient through time in a plain RNN, an LSTM and a GRU.

At initialisation it probes one forward/backward pass on the adding problem and draws
‖∂L/∂h_t‖ against the time step t (log scale) with the Pascanu bound (λ₁γ)^(T−t) for the plain
RNN, or the forget-gate guide σ(b_f)^(T−t) for the LSTM. With ``train=True`` (behind the Run
button) it also trains the cell on the adding problem and shows the loss against the 1/6
baseline and the gradient through time after training. In the UI every control change redraws
the view at initialisation; training waits for the Run button.

>>> from gradcourse.widgets.lesson06 import RecurrentExplorer
>>> result = RecurrentExplorer().run(cell="rnn", recurrent_scale=0.5)
>>> 0.4 < result.values["factor"] < 0.5 <= result.values["bound_factor"]   # vanishes, under the bound
True
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import _checks, data, models, plots, theory
from ..probes import probe_once
from ..train import fit
from .base import Explorer, Param, Result

#: Training recipe of the lesson: hidden 32, batch 64, Adam at 1e-2 (SGD at 0.1 to show explosion).
HIDDEN = 32
BATCH = 64
LEARNING_RATES = {"adam": 1e-2, "sgd": 0.1}
CLIP_THRESHOLD = 1.0


@functools.lru_cache(maxsize=16)
def adding_data(seq_len: int, seed: int = 0) -> data.Dataset:
    """The lesson's adding-problem data set (1024 training and 256 test sequences), cached."""
    seed = _checks.seed(seed)
    return data.adding_problem(seq_len, n=1024, seed=seed)


def build(cell: str, *, recurrent_scale: float | None = None, forget_bias: float | None = None,
          seed: int = 0) -> torch.nn.Module:
    """The lesson's sequence model (hidden 32); scale and bias are passed only where they apply."""
    seed = _checks.seed(seed)
    return models.sequence_model(cell, HIDDEN, recurrent_scale=recurrent_scale if cell == "rnn" else None,
                                 forget_bias=forget_bias if cell == "lstm" else None, seed=seed)


def gradient_through_time(model: torch.nn.Module, dataset, *, batch: int = BATCH) -> np.ndarray:
    """‖∂L/∂h_t‖ for t = 1 … T from one probed forward/backward pass on the first ``batch``
    sequences (the model's weights are not changed; its gradients are cleared afterwards)."""
    trace = probe_once(model, dataset.x[:batch], dataset.y[:batch])
    model.zero_grad(set_to_none=True)
    return trace.get("hidden_grad_norm")[0].astype(float)


def decay_factor(norms: np.ndarray) -> tuple[float, int]:
    """:func:`gradcourse.theory.decay_per_step` of the time steps whose gradient is still a
    positive finite number, counted back from the last one; and how many earlier steps received
    exactly 0 (or inf/NaN): the gradient underflowed float32 there. The factor is NaN when fewer
    than three steps are left to fit it.

    >>> decay_factor(np.array([0.0, 0.0, 1e-3, 1e-2, 1e-1, 1.0]))
    (0.1, 2)
    """
    norms = np.asarray(norms, dtype=float)
    bad = np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))
    lost = int(bad[-1]) + 1 if len(bad) else 0
    kept = norms[lost:]
    factor = theory.decay_per_step(kept) if len(kept) >= 3 else float("nan")
    return round(factor, 12), lost


def manual_bptt(model: torch.nn.Module, dataset, *, batch: int = BATCH) -> np.ndarray:
    """‖∂L/∂h_t‖ of a plain RNN computed by hand: start from ∂L/∂h_T and multiply, step by step,
    by the transposed Jacobian Wᵀ·diag(tanh'(a_t)) = Wᵀ·diag(1 − h_t²). Agrees with the probe."""
    if getattr(model, "cell_type", None) != "rnn":
        raise ValueError("model must be a plain RNN sequence model (cell='rnn')")
    x, y = dataset.x[:batch], dataset.y[:batch]
    cell, W = model.cell, model.cell.weight_hh.detach()
    with torch.no_grad():
        h, states = x.new_zeros(len(x), model.hidden), []
        for t in range(x.shape[1]):
            h = cell(x[:, t], h)
            states.append(h)
        y_hat = model.readout(h)
        g = (2.0 / y.numel()) * (y_hat - y) @ model.readout.weight  # ∂L/∂h_T for the MSE loss
        norms = [g.norm().item()]
        for h_t in reversed(states[1:]):
            g = (g * (1.0 - h_t ** 2)) @ W  # one step back: Wᵀ diag(1 − h_t²), row-vector form
            norms.append(g.norm().item())
    return np.array(norms[::-1])


def bound_overlay(model: torch.nn.Module, measured: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The curve drawn over the measurement and its per-step factor: the Pascanu bound
    (λ₁γ)^(T−t)·‖∂L/∂h_T‖ for the plain RNN, σ(b_f)^(T−t)·‖∂L/∂h_T‖ for the LSTM, None for GRU."""
    if model.cell_type == "rnn":
        lam = torch.linalg.matrix_norm(model.cell.weight_hh.detach(), 2).item()
        eta = theory.rnn_step_bound(lam, "tanh")
    elif model.cell_type == "lstm":
        h = model.hidden
        bias = (model.cell.bias_ih + model.cell.bias_hh)[h:2 * h].detach().mean().item()
        eta = theory.forget_gate_factor(bias)
    else:
        return None
    return measured[-1] * eta ** np.arange(len(measured) - 1, -1, -1, dtype=float), eta


class RecurrentExplorer(Explorer):
    title = "Lesson 06: the gradient through time in RNN, LSTM and GRU"
    params = {
        "cell": Param("rnn", options=("rnn", "lstm", "gru"), label="cell"),
        "seq_len": Param(50, low=10, high=100, step=10, label="sequence length T"),
        "recurrent_scale": Param(1.0, low=0.25, high=2.5, step=0.05,
                                 label="recurrent scale λ₁ (plain RNN)"),
        "forget_bias": Param(0.0, low=-2.0, high=5.0, step=0.5, label="forget-gate bias (LSTM)"),
        "clip": Param(False, label="clip gradient norm at 1"),
        "optimizer": Param("adam", options=("adam", "sgd"), label="optimizer (Adam 0.01 / SGD 0.1)"),
        "train": Param(False, label="train on the adding problem"),
        "steps": Param(400, low=100, high=2000, step=100, label="training steps"),
    }
    manual = True
    preview = {"train": False}

    def compute(self, cell, seq_len, recurrent_scale, forget_bias, clip, optimizer, train, steps):
        ds = adding_data(seq_len)
        model = build(cell, recurrent_scale=recurrent_scale, forget_bias=forget_bias)
        at_init = gradient_through_time(model, ds)
        factor, lost = decay_factor(at_init)
        values = {"factor": factor, "underflowed_steps": lost,
                  "first_over_last": float(at_init[0] / at_init[-1])}
        overlay = bound_overlay(model, at_init)
        if overlay is not None:
            values["bound_factor"] = overlay[1]
        name = {"rnn": f"plain RNN (scale {recurrent_scale:g})", "gru": "GRU",
                "lstm": f"LSTM (forget bias {forget_bias:g})"}[cell]
        ignored = {"rnn": "forget bias", "lstm": "recurrent scale",
                   "gru": "recurrent scale, forget bias"}[cell]
        summary = (f"{name}, T = {seq_len}: at initialisation ‖∂L/∂h_t‖ changes by a factor "
                   f"{values['factor']:.2f} per step back; the first step receives "
                   f"{values['first_over_last']:.1e} of the last step's gradient. ")
        if lost:
            summary += (f"The gradient vanished completely: it underflowed float32 (nothing below about 1e-45) "
                        f"and is exactly 0 at the first {lost} of the {seq_len} steps (▼ on the figure). ")
        summary += f"(Not used by this cell: {ignored}.)"
        run = None
        if train:
            run = fit(model, ds, steps=steps, lr=LEARNING_RATES[optimizer], optimizer=optimizer,
                      clip=CLIP_THRESHOLD if clip else None, batch_size=BATCH, probe=False, seed=0,
                      progress=self.progress)
            tail = run.losses[-min(50, len(run.losses)):]
            values["diverged_at"] = run.diverged_at
            if run.diverged_at is None:
                values["loss_over_baseline"] = float(tail.mean() / data.ADDING_BASELINE_MSE)
                values["test_over_baseline"] = run.metrics["test_loss"] / data.ADDING_BASELINE_MSE
                after = gradient_through_time(run.model, ds)
                values["factor_after"], values["underflowed_steps_after"] = decay_factor(after)
                summary += (f" After {steps} steps ({optimizer}{', clipped' if clip else ''}) the "
                            f"loss is {values['loss_over_baseline']:.2f}× the baseline 1/6 "
                            f"({'solved' if values['loss_over_baseline'] < 0.1 else 'not solved'}).")
            else:
                after = None
                summary += f" Training hit NaN/Inf at step {run.diverged_at} and stopped."
        fig = self._figure(name, at_init, overlay, run, after if train else None)
        return Result(figure=fig, values=values, runs={"run": run} if run is not None else {},
                      summary=summary)

    @staticmethod
    @plots.styled
    def _figure(name, at_init, overlay, run, after):
        fig, axes = plots.new_figure(2 if run is not None else 1, width=5.2)
        label = "measured at initialisation"
        overlays, overlay_label = None, ""
        if overlay is not None:
            curve, eta = overlay
            overlays = {label: curve}
            overlay_label = (f"bound (λ₁γ)^(T−t), λ₁γ = {eta:.2f}" if "RNN" in name
                             else f"guide σ(b_f)^(T−t), σ(b_f) = {eta:.2f}")
        plots.draw_through_time(axes[0, 0], {label: at_init}, overlays=overlays, overlay_label=overlay_label,
                                after={label: after} if after is not None else None,
                                after_label="measured after training", title=f"Gradient through time: {name}")
        if run is not None:
            plots.draw_loss(axes[0, 1], {"training loss": run}, baseline=data.ADDING_BASELINE_MSE,
                            baseline_label="baseline 1/6 (predict 1)", ylabel="MSE",
                            title="Adding problem: loss against the baseline")
        return fig


def marker_sensitivity(model: torch.nn.Module, dataset, *, n: int = 256) -> dict:
    """How much the prediction moves per unit change of each input value: the mean of ∂ŷ/∂v_t
    at the first marker, at the second marker, and (mean |∂ŷ/∂v_t|) at the unmarked steps, on
    the first ``n`` test sequences. A model that solved the adding problem has 1, 1 and 0."""
    x = dataset.x_test[:n].clone().requires_grad_(True)
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    grad, markers = x.grad[:, :, 0], dataset.x_test[:n, :, 1]
    rows, cols = markers.nonzero(as_tuple=True)  # two markers per row, first one first
    return {"first": grad[rows[::2], cols[::2]].mean().item(),
            "second": grad[rows[1::2], cols[1::2]].mean().item(),
            "unmarked": ((grad * (1 - markers)).abs().sum() / (1 - markers).sum()).item()}


@plots.styled
def plot_through_time(curves: dict, *, overlays: dict | None = None, after: dict | None = None,
                      title: str = "Gradient reaching each time step",
                      overlay_label: str = "bound (λ₁γ)^(T−t)·‖∂L/∂h_T‖") -> Figure:
    """‖∂L/∂h_t‖ against t on a log axis: one solid line per entry of ``curves`` (name → array),
    the matching entry of ``overlays`` dotted (a bound or guide), of ``after`` dashed (after
    training), in the same colour (:func:`gradcourse.plots.draw_through_time`)."""
    fig, axes = plots.new_figure(width=6.0, height=3.8)
    plots.draw_through_time(axes[0, 0], curves, overlays=overlays, after=after, title=title,
                            overlay_label=overlay_label)
    return fig


def factor_over_training(run) -> tuple[np.ndarray, np.ndarray]:
    """The recorded training steps of ``run`` and, at each, the measured factor per step back of
    ‖∂L/∂h_t‖ (:func:`gradcourse.theory.decay_per_step`): how open the path back in time is."""
    trace = run.trace
    if trace is None or trace.get("hidden_grad_norm") is None:
        raise ValueError("run must be a sequence-model Run made with probe=True")
    return trace.steps, np.array([decay_factor(h)[0] for h in trace.get("hidden_grad_norm")])


@plots.styled
def plot_factor_over_training(runs: dict, *, title: str = "How open is the path back in time?") -> Figure:
    """The factor per step back of ‖∂L/∂h_t‖ against the training step, one line per run."""
    fig, axes = plots.new_figure(width=6.0, height=3.8)
    ax = axes[0, 0]
    for name, run in runs.items():
        steps, factors = factor_over_training(run)
        ax.plot(steps, factors, "o-", ms=4, label=name)
    ax.axhline(1.0, color="grey", ls=":", label="1: nothing lost per step")
    plots.integer_ticks(ax)
    ax.set_xlabel("training step")
    ax.set_ylabel("factor per step back of ‖∂L/∂h_t‖")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig
