"""Lesson 10's explorer and figures: gradients that vanish in the number format.

The explorer trains the lesson's sigmoid MLP on the spirals in one of the formats of
:data:`gradcourse.precision.FORMATS` (float32; float16 autocast without and with a GradScaler;
bfloat16 autocast; the whole model in bfloat16) and draws the per-layer gradient histograms of
the first step against the format's limits, the share of each layer's gradient rounded to 0, and,
after a Run, the loss and the GradScaler's scale with its skipped steps. Every control change
redraws the view of the first step (one probed step); training waits for the Run button.

>>> from gradcourse.widgets.lesson10 import PrecisionExplorer
>>> v = PrecisionExplorer().run(fmt="fp16").values
>>> v["zero_share"][0] > 0.9 and v["verdict"] == "underflow"      # layer1's gradient rounded to 0
True
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from .. import plots, precision
from ..doctor import diagnose
from ..precision import FORMATS, limits
from .base import Explorer, Param, Result

#: The explorer's training run: this many steps behind the Run button.
TRAIN_STEPS = 30


def _log2_centres(edges: np.ndarray) -> np.ndarray:
    """The histogram bins' lower edges as powers of two (log2 units)."""
    return np.rint(np.asarray(edges, dtype=float)[:-1] / math.log10(2.0))


@plots.styled
def plot_histograms(trace, *, step: int = 0, scale: float | None = None, title: str = "",
                    fmt: str = "fp16") -> Figure:
    """Per-layer gradient histograms of one recorded step (counts per power of two of |∂L/∂W|,
    the first bin, zeros, drawn apart at the left) with ``fmt``'s smallest value and, with a loss
    ``scale``, the smallest unscaled gradient the scaled float16 keeps."""
    fig, axes = plots.new_figure(width=7.4, height=3.8)
    draw_histograms(axes[0, 0], trace, step=step, scale=scale, fmt=fmt,
                    title=title or f"Weight-gradient histogram per layer, step {int(trace.steps[step])}")
    return fig


def draw_histograms(ax, trace, *, step: int = 0, scale: float | None = None, fmt: str = "fp16",
                    title: str) -> None:
    hist = np.asarray(trace.get("grad_hist")[step], dtype=float)
    powers = _log2_centres(trace.hist_edges)
    x = powers[1:] + 0.5
    zero_x = powers[1] - 2.5
    for i, name in enumerate(trace.layers):
        share = hist[i] / hist[i].sum()
        ax.plot(x, share[1:], "-", color=plots.color(i), lw=1.4, label=name)
        ax.plot([zero_x], [share[0]], "s", color=plots.color(i), ms=6)
    tiny = math.log2(limits(fmt).tiny)
    if tiny >= powers[1]:
        ax.axvline(tiny, color="black", ls="--", lw=1.2, label=f"{fmt}'s smallest 2^{tiny:.0f}")
    if scale is not None and scale > 1:
        floor = tiny - math.log2(scale)
        label = f"× 2^{math.log2(scale):.0f} scale: kept from 2^{floor:.0f}"
        if floor >= powers[1]:
            ax.axvline(floor, color="black", ls=":", lw=1.2, label=label)
        else:
            ax.plot([], [], " ", label=label + " (off the axis)")
    ax.axvspan(zero_x - 1, powers[1], color="0.9", lw=0)
    ticks = [t for t in range(int(powers[1]) + 8 - int(powers[1]) % 8, int(powers[-1]) + 1, 8)]
    ax.set_xticks([zero_x, *ticks], ["zero", *(str(t) for t in ticks)])
    ax.set_xlim(zero_x - 1, powers[-1] + 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("log2 |∂L/∂W|  (squares: entries exactly 0)")
    ax.set_ylabel("share of the layer's entries")
    ax.set_title(title)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def draw_zero_share(ax, shares: np.ndarray, layers: list[str], *, title: str) -> None:
    ax.bar(np.arange(1, len(shares) + 1), 100 * np.asarray(shares), color=plots.color(0))
    ax.set_xticks(np.arange(1, len(shares) + 1), layers, rotation=45, ha="right", fontsize="small")
    ax.set_ylim(0, 105)
    ax.set_xlabel("layer (front to back)")
    ax.set_ylabel("gradient entries exactly 0 (%)")
    ax.set_title(title)


def draw_scale(ax, run: precision.MixedRun, *, title: str) -> None:
    """The loss per step (left axis) and the GradScaler's scale (right axis, log2), skipped steps ×."""
    steps = np.arange(len(run.losses))
    ax.plot(steps, run.losses, "-", color=plots.color(0), label="loss")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    plots.integer_ticks(ax)
    handles = ax.get_lines()[:]
    if np.isfinite(run.scales).any():
        right = ax.twinx()
        right.plot(steps, np.log2(run.scales), "-", drawstyle="steps-post", color=plots.color(1), label="loss scale")
        if run.skipped:
            right.plot(run.skipped, np.log2(run.scales[run.skipped]), "x", color="black", ms=7,
                       label=f"skipped step ({len(run.skipped)})")
        right.set_ylabel("log2 of the loss scale")
        handles += right.get_lines()
    ax.legend(handles=handles, fontsize="small", loc="center right")


class PrecisionExplorer(Explorer):
    title = "Lesson 10: gradients in float16 and bfloat16"
    params = {
        "fmt": Param("fp16", options=FORMATS, label="format"),
        "depth": Param(5, low=2, high=10, label="depth (sigmoid layers)"),
        "init_scale": Param(2.0 ** 16, low=1.0, high=2.0 ** 24, log=True, step=math.log10(2.0),
                            label="initial loss scale (fp16+scaler)"),
        "lr": Param(0.1, low=0.01, high=1.0, log=True, label="learning rate (SGD)"),
        "train": Param(False, label=f"train {TRAIN_STEPS} steps"),
    }
    manual = True
    preview = {"train": False}

    def check(self, params: dict) -> None:
        scale = params["init_scale"]
        if abs(math.log2(scale) - round(math.log2(scale))) > 1e-6:
            params["init_scale"] = 2.0 ** round(math.log2(scale))  # the slider's steps are powers of two

    def compute(self, fmt, depth, init_scale, lr, train, **_):
        run = precision.train(fmt, depth=depth, steps=TRAIN_STEPS if train else 1, lr=lr, init_scale=init_scale)
        trace = run.trace
        first = next((i for i, s in enumerate(trace.steps) if int(s) not in run.skipped), 0)
        shares = precision.zero_share(trace, first)
        verdict = diagnose(trace, losses=list(run.losses), model=run.model)
        values = {"zero_share": shares.tolist(), "layers": list(trace.layers), "verdict": verdict.problem,
                  "grad_norm_first": float(trace.get("grad_norm")[first, 0]), "skipped": list(run.skipped),
                  "scales": run.scales.tolist(), "losses": run.losses.tolist(), "diverged_at": run.diverged_at}
        hidden = shares[:-1]
        worst = int(np.argmax(hidden))
        summary = (f"{fmt}, {depth} sigmoid layers: at step {int(trace.steps[first])} {100 * hidden[worst]:.0f}% of "
                   f"{trace.layers[worst]}'s gradient entries are exactly 0. The doctor says: {verdict.problem}.")
        if run.skipped:
            summary += f" The GradScaler skipped {len(run.skipped)} step(s) (×) and halved its scale each time."
        scale = run.scales[first] if fmt == "fp16+scaler" else None
        fig = self._figure(trace, first, scale, shares, fmt, run if train else None)
        return Result(figure=fig, values=values, runs={"run": run}, summary=summary)

    @staticmethod
    @plots.styled
    def _figure(trace, first, scale, shares, fmt, run) -> Figure:
        fig, axes = plots.new_figure(3 if run is not None else 2, width=4.8, height=3.6,
                                     gridspec_kw={"width_ratios": [1.6, 1, 1.1][:3 if run is not None else 2]})
        limit = "fp16" if fmt.startswith("fp16") or fmt == "fp32" else "bf16"
        draw_histograms(axes[0, 0], trace, step=first, scale=scale, fmt=limit,
                        title=f"{fmt}: gradient histogram, step {int(trace.steps[first])}")
        draw_zero_share(axes[0, 1], shares, trace.layers, title="Gradient entries rounded to 0")
        if run is not None:
            draw_scale(axes[0, 2], run, title="Loss and loss scale")
        return fig
