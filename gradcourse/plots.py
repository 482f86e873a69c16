"""Figures, each a function of a Run (or several) that returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so they are never
registered globally: an explorer can redraw a thousand times without accumulating open figures.
Colours come from matplotlib's own colour-blind-safe style, ``tableau-colorblind10``.

>>> from gradcourse import data, models, plots
>>> from gradcourse.train import fit
>>> run = fit(models.mlp(6, 16, seed=0), data.spirals(128), steps=5, lr=0.1)
>>> fig = plots.grad_norms(run)
>>> fig.axes[0].get_yscale(), fig.axes[0].get_title()
('log', 'Gradient per layer at step 0')
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.figure import Figure

from .trace import Trace
from .train import Run

STYLE = "tableau-colorblind10"
#: The style's palette, for code that needs a colour by index.
COLORS = matplotlib.style.library[STYLE]["axes.prop_cycle"].by_key()["color"]


def _register_png_display() -> None:
    """Make a pyplot-free Figure that ends a notebook cell display as a PNG.

    IPython only knows how to show a Figure once matplotlib's inline backend has been loaded
    (importing pyplot does that); the course never imports pyplot, so register the PNG
    formatter here. Outside IPython this does nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks only
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return

    def png(figure: Figure) -> bytes:
        import io

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()

    shell.display_formatter.formatters["image/png"].for_type(Figure, png)


_register_png_display()


def styled(function):
    """Draw inside the course's style, so every figure gets the same colour-blind-safe palette."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.style.context(STYLE):
            return function(*args, **kwargs)
    return wrapper


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.4, **kwargs):
    """A fresh (pyplot-free) Figure and its axes, sized per panel."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _trace(source: Run | Trace) -> Trace:
    trace = source.trace if isinstance(source, Run) else source
    if not isinstance(trace, Trace):
        raise ValueError("source must be a Run made with probe=True or a Trace")
    return trace


def _row(trace: Trace, step: int) -> int:
    if len(trace.steps) == 0:
        raise ValueError("the trace holds no recorded step")
    if step == -1:
        return len(trace.steps) - 1
    matches = np.flatnonzero(trace.steps == step)
    if not len(matches):
        raise ValueError(f"step must be one of the recorded steps {trace.steps[:5].tolist()}…; got {step}")
    return int(matches[0])


@styled
def grad_norms(source: Run | Trace, *, step: int = 0, theory: np.ndarray | None = None,
               title: str | None = None) -> Figure:
    """Per-layer ‖∂L/∂W‖ (weight gradient) and ‖∂L/∂z‖ (backpropagated signal) on a log axis.

    ``theory`` (one value per hidden layer, same units as the signal) is drawn as a dashed line.
    The two measured curves answer different questions: the signal shows what backpropagation
    carries toward the input; the weight gradient is what the optimizer actually uses.
    """
    trace = _trace(source)
    row = _row(trace, step)
    fig, axes = new_figure()
    draw_layer_gradients(axes[0, 0], trace.get("grad_norm")[row], trace.get("output_grad_norm")[row],
                         theory=theory, xlabel="layer (1 = nearest the input)",
                         title=title or f"Gradient per layer at step {int(trace.steps[row])}")
    return fig


@styled
def draw_layer_gradients(ax, weight_grads, signal, *, theory=None, title: str,
                         xlabel: str = "hidden layer (1 = nearest the input)", markersize: float = 6) -> None:
    """Draw per-layer ‖∂L/∂W‖ and ‖∂L/∂z‖ (and a theory curve for the signal) on ``ax``, log scale.

    The one drawing of this picture: :func:`grad_norms` and the lesson explorers all call it.
    """
    layers = np.arange(1, len(weight_grads) + 1)
    ax.semilogy(layers, weight_grads, "o-", ms=markersize, label="weight gradient ‖∂L/∂W‖")
    ax.semilogy(np.arange(1, len(signal) + 1), signal, "s--", ms=markersize,
                label="signal ‖∂L/∂z‖ at the layer's output")
    if theory is not None:
        theory = np.asarray(theory, dtype=float)
        ax.semilogy(np.arange(1, len(theory) + 1), theory, ":", color="black", lw=2,
                    label="theory (signal)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("norm (log scale)")
    ax.set_title(title)
    ax.legend(fontsize="small")


@styled
def loss_curve(runs: Run | Mapping[str, Run], *, log: bool = True, baseline: float | None = None,
               title: str = "Training loss") -> Figure:
    """Loss against step for one run or several (a name → Run mapping); a diverged run ends in ✕
    at the step where its loss or gradient became NaN/Inf."""
    runs = {"run": runs} if isinstance(runs, Run) else dict(runs)
    if not runs:
        raise ValueError("runs must hold at least one Run")
    fig, axes = new_figure()
    ax = axes[0, 0]
    for name, run in runs.items():
        finite = np.isfinite(run.losses)
        steps = np.arange(len(run.losses))
        (line,) = ax.plot(steps[finite], run.losses[finite], label=name)
        if run.diverged_at is not None:
            last = run.losses[finite][-1] if finite.any() else 1.0
            ax.plot([run.diverged_at], [last], "x", ms=12, mew=3, color=line.get_color())
            ax.annotate(f"NaN/Inf at step {run.diverged_at}", (run.diverged_at, last),
                        textcoords="offset points", xytext=(-10, 8), ha="right", fontsize="small",
                        color=line.get_color())
    if baseline is not None:
        ax.axhline(baseline, color="grey", ls=":", label=f"baseline {baseline:.3g}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (log scale)" if log else "loss")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


@styled
def grad_histograms(source: Run | Trace, *, layers: list[str] | None = None) -> Figure:
    """Heatmaps of log10|∂L/∂W| per layer over the recorded steps (counts on a log colour scale).

    By default it shows the first, middle and last hidden layers and the output layer.
    """
    trace = _trace(source)
    if layers is None:
        n = len(trace.layers)
        layers = [trace.layers[i] for i in sorted({0, (n - 1) // 2, max(n - 2, 0), n - 1})]
    unknown = [name for name in layers if name not in trace.layers]
    if unknown:
        raise ValueError(f"layers must be among {trace.layers}; got {unknown}")
    fig, axes = new_figure(len(layers), width=3.2, height=3.0, sharey=True)
    hist = trace.get("grad_hist")
    edges = trace.hist_edges
    steps = trace.steps
    top = max(hist.max(), 1)
    from matplotlib.colors import LogNorm

    for ax, name in zip(axes[0], layers):
        counts = hist[:, trace.layers.index(name), :].T.astype(float)
        counts[counts == 0] = np.nan
        step_edges = np.append(steps, steps[-1] + max(1, steps[-1] - steps[-2] if len(steps) > 1 else 1))
        mesh = ax.pcolormesh(step_edges, edges, counts, norm=LogNorm(1, top), cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("training step")
    axes[0, 0].set_ylabel("log10 |∂L/∂W|")
    fig.colorbar(mesh, ax=axes[0, -1], label="weights per bin (log scale)")
    fig.suptitle("Weight-gradient histograms over training")
    return fig


@styled
def activation_health(source: Run | Trace, *, step: int = 0) -> Figure:
    """Saturated (sigmoid/tanh) or dead (ReLU) fraction of units per layer at one recorded step."""
    trace = _trace(source)
    row = _row(trace, step)
    fig, axes = new_figure()
    ax = axes[0, 0]
    layers = np.arange(1, len(trace.layers) + 1)
    saturated = trace.get("saturated_frac")[row]
    dead = trace.get("dead_frac")[row]
    shown = False
    if np.isfinite(saturated).any():
        ax.bar(layers - 0.2, np.nan_to_num(saturated), width=0.4, label="saturated (|slope| ≈ 0)")
        shown = True
    if np.isfinite(dead).any():
        ax.bar(layers + 0.2, np.nan_to_num(dead), width=0.4, label="dead ReLU (0 for every input)")
        shown = True
    if not shown:
        ax.text(0.5, 0.5, "this activation neither saturates nor dies", ha="center",
                transform=ax.transAxes)
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer (1 = nearest the input)")
    ax.set_ylabel("fraction of units")
    ax.set_title(f"Unhealthy units per layer at step {int(trace.steps[row])}")
    if shown:
        ax.legend(fontsize="small")
    return fig


@styled
def weight_norms(source: Run | Trace) -> Figure:
    """‖W‖ of every layer over the recorded steps (log scale): fast growth flags explosion."""
    trace = _trace(source)
    fig, axes = new_figure()
    ax = axes[0, 0]
    norms = trace.get("weight_norm")
    cmap = matplotlib.colormaps["viridis"]
    for i, name in enumerate(trace.layers):
        ax.semilogy(trace.steps, norms[:, i], color=cmap(i / max(len(trace.layers) - 1, 1)),
                    label=name if i in (0, len(trace.layers) - 1) else None)
    ax.set_xlabel("training step")
    ax.set_ylabel("‖W‖ (log scale)")
    ax.set_title("Weight norm per layer (dark = input side)")
    ax.legend(fontsize="small")
    return fig


@styled
def total_grad_norm(runs: Run | Mapping[str, Run], *, threshold: float | None = None,
                    title: str = "Total gradient norm before clipping") -> Figure:
    """The total gradient norm per step (before clipping), clipped steps marked, log scale."""
    runs = {"run": runs} if isinstance(runs, Run) else dict(runs)
    fig, axes = new_figure()
    ax = axes[0, 0]
    for name, run in runs.items():
        steps = np.arange(len(run.grad_norm_total))
        (line,) = ax.semilogy(steps, run.grad_norm_total, label=name)
        if run.clipped.any():
            ax.plot(steps[run.clipped], run.grad_norm_total[run.clipped], ".", ms=4,
                    color=line.get_color(), label=f"{name}: clipped ({run.clipped.mean():.0%} of steps)")
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls=":", label=f"threshold {threshold:g}")
    ax.set_xlabel("training step")
    ax.set_ylabel("‖∇L‖ (log scale)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


@styled
def hidden_grad_norms(runs: Run | Mapping[str, Run], *, step: int = 0,
                      theory: Mapping[str, np.ndarray] | None = None) -> Figure:
    """‖∂L/∂h_t‖ against the time step t for sequence models (log scale), theory dashed."""
    runs = {"run": runs} if isinstance(runs, Run) else dict(runs)
    fig, axes = new_figure(width=5.5)
    ax = axes[0, 0]
    for name, run in runs.items():
        trace = _trace(run)
        values = trace.get("hidden_grad_norm")[_row(trace, step)]
        (line,) = ax.semilogy(np.arange(1, len(values) + 1), values, label=name)
        if theory and name in theory:
            ax.semilogy(np.arange(1, len(theory[name]) + 1), theory[name], ":",
                        color=line.get_color())
    ax.set_xlabel("time step t (the loss reads the last one)")
    ax.set_ylabel("‖∂L/∂h_t‖ (log scale)")
    ax.set_title("Gradient reaching each time step")
    ax.legend(fontsize="small")
    return fig
