"""Figures, each a function of a Run (or several) that returns a matplotlib ``Figure``, and the
axes-level pieces (``draw_*``) every figure of the course is built from.

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

import contextlib
import math
from collections.abc import Mapping

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import LogFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

from .run import Run
from .trace import Trace

STYLE = "tableau-colorblind10"
#: The style's palette, for code that needs a colour by index.
COLORS = matplotlib.style.library[STYLE]["axes.prop_cycle"].by_key()["color"]

#: Draw inside the course's style (a ``matplotlib.style.context`` is also a decorator), so every
#: figure gets the same colour-blind-safe palette: ``@plots.styled`` above a figure function.
#: (A decorator only: a ``with`` statement needs a fresh ``matplotlib.style.context(STYLE)``.)
styled = matplotlib.style.context(STYLE)


def show_figures_inline() -> None:
    """Let IPython show a pyplot-free Figure that ends a cell (or is ``display``-ed), as a PNG.

    IPython only knows how to show a Figure once matplotlib's inline backend has registered its
    formatter (importing pyplot does that); the course never imports pyplot, so this asks
    ``matplotlib_inline`` (installed with ipykernel) to register it. :func:`gradcourse.start`, the
    first line of every lesson, calls it; importing this module changes nothing in IPython.
    Outside IPython: nothing.

    >>> show_figures_inline()   # in a plain Python session: nothing to do
    """
    try:
        from IPython import get_ipython
        from matplotlib.backend_bases import FigureCanvasBase
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks only
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "display_formatter"):
        # No bbox_inches="tight" (IPython's default): the course's figures are laid out by
        # matplotlib's constrained layout (new_figure), which already keeps every label inside
        # the canvas, and "tight" draws each figure twice to find its edges: 0.1 s more per
        # figure (a loss curve: 0.35-0.41 s against 0.25-0.29 s), a second or so per lesson.
        # The explorers' images (widgets.base) are drawn the same way.
        set_matplotlib_formats("png", bbox_inches=None)
        png = shell.display_formatter.formatters["image/png"]
        draw = png.lookup_by_type(Figure)  # IPython's own: print_figure(fig, "png", ...)

        def draw_lighter(fig: Figure):
            lighter_log_ticks(fig)
            if type(fig.canvas) is FigureCanvasBase:
                FigureCanvasAgg(fig)  # one canvas, so the layout and the image share one renderer
            with laid_out(fig):       # at fig.dpi, the dpi IPython draws at
                return draw(fig)

        png.for_type(Figure, draw_lighter)


def lighter_log_ticks(fig: Figure) -> Figure:
    """Spare matplotlib work that shows nothing on log axes spanning many decades; returns ``fig``.

    On a log axis spanning more than one decade matplotlib labels only the powers of ten, yet it
    still creates, formats and measures a text for each of the eight minor ticks per decade. The
    constrained layout does that twice per drawing, which made up about half of the time spent
    drawing a figure. So, on every log axis whose minor ticks are still matplotlib's defaults:

    - over one decade, the minor ticks keep their marks and lose the labels matplotlib would leave
      empty anyway (the image is the same);
    - over three decades, the unlabelled minor marks go too: the powers of ten, labelled, are what a
      reader reads there.

    An axis within one decade is left alone: its minor labels are the only numbers it shows.
    Figures shown in a notebook after :func:`gradcourse.start` and the explorers' images pass
    through this function.

    >>> fig, axes = new_figure()
    >>> axes[0, 0].semilogy([1, 2], [1e-6, 1.0])
    [<matplotlib.lines.Line2D object at ...>]
    >>> type(lighter_log_ticks(fig).axes[0].yaxis.get_minor_locator()).__name__
    'NullLocator'
    """
    for ax in fig.axes:
        for axis, scale, limits in ((ax.xaxis, ax.get_xscale(), ax.get_xlim),
                                    (ax.yaxis, ax.get_yscale(), ax.get_ylim)):
            if scale != "log" or type(axis.get_minor_locator()) is not LogLocator:
                continue  # a linear axis, or minor ticks someone chose
            low, high = sorted(limits())
            if not (low > 0 and math.isfinite(high)):
                continue
            decades = math.log10(high / low)
            if decades > 1 and isinstance(axis.get_minor_formatter(), LogFormatter):
                axis.set_minor_formatter(NullFormatter())
            if decades > 3:
                axis.set_minor_locator(NullLocator())
    return fig



@contextlib.contextmanager
def laid_out(fig: Figure, dpi: float | None = None):
    """Inside the block, ``fig`` is laid out for a single draw: its constrained layout has run, at
    ``dpi`` (default: the figure's own), and its layout engine is set aside, so that ``savefig``
    (or IPython's ``print_figure``) draws the figure once. Given a figure with a layout engine,
    savefig draws it twice: first invisibly, only to run the layout, then for the image; the first
    draw cost 15-20 % of a course figure's time (a lesson's figures and every explorer image), for
    the same bytes (tests/test_widgets_base.py). On leaving, the figure gets its engine and dpi back.

    >>> fig, axes = new_figure()
    >>> with laid_out(fig, dpi=80):
    ...     fig.get_layout_engine() is None, fig.dpi
    (True, 80)
    >>> type(fig.get_layout_engine()).__name__, fig.dpi
    ('ConstrainedLayoutEngine', 100.0)
    """
    engine, own_dpi = fig.get_layout_engine(), fig.dpi
    try:
        if dpi is not None and dpi != own_dpi:
            fig.dpi = dpi  # what savefig sets while it draws: the layout measures the image's text sizes
        if fig.axes and isinstance(engine, ConstrainedLayoutEngine):
            engine.execute(fig)
            fig.set_layout_engine(None)
        yield fig
    finally:
        if engine is not None and fig.get_layout_engine() is not engine:
            fig.set_layout_engine(engine)
        if fig.dpi != own_dpi:
            fig.dpi = own_dpi


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.0, height: float = 3.4, **kwargs):
    """A fresh (pyplot-free) Figure and its axes, sized per panel."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _trace(source: Run | Trace, name: str = "source") -> Trace:
    trace = source.trace if isinstance(source, Run) else source
    if not isinstance(trace, Trace):
        raise ValueError(f"{name} must be a Run made with probe=True or a Trace; got {type(source).__name__}")
    return trace


def _runs(runs, name: str = "runs") -> dict[str, Run]:
    """``runs`` as a name → Run dict (one Run becomes ``{"run": run}``); anything else refused."""
    if isinstance(runs, Run):
        return {"run": runs}
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"{name} must be a Run or a non-empty mapping of names to Runs; got {runs!r:.60}")
    bad = [key for key, run in runs.items() if not isinstance(run, Run)]
    if bad:
        raise ValueError(f"{name} must map names to Runs; {bad[0]!r} maps to {type(runs[bad[0]]).__name__}")
    return dict(runs)


def _row(trace: Trace, step: int) -> int:
    if len(trace.steps) == 0:
        raise ValueError("the trace holds no recorded step")
    if step == -1:
        return len(trace.steps) - 1
    matches = np.flatnonzero(trace.steps == step)
    if not len(matches):
        raise ValueError(f"step must be one of the recorded steps {trace.steps[:5].tolist()}…; got {step}")
    return int(matches[0])


#: The palette in the order lines take it: blue, orange, dark grey, sky blue, dark orange, ...;
#: the light grey (third in the style) comes late, as it reads poorly on white and next to the
#: grey dotted reference lines.
LINE_ORDER = (0, 1, 3, 4, 5, 8, 2, 6, 7, 9)


def color(i: int) -> str:
    """The i-th line colour of the course's colour-blind-safe palette (cycling).

    >>> color(0) == COLORS[0], color(2) == COLORS[3]
    (True, True)
    """
    return COLORS[LINE_ORDER[i % len(LINE_ORDER)]]


def line_style(i: int) -> str:
    """The i-th line's style: solid for the palette's first three colours, dash-dot for the next
    ones, whose sky blue and dark orange are cousins of the first blue and orange (two lines that
    differ only by shade are hard to tell apart, for colour-blind readers most of all).

    >>> [line_style(i) for i in range(6)]
    ['-', '-', '-', '-.', '-.', '-.']
    """
    return "-" if i % len(LINE_ORDER) < 3 else "-."


def integer_ticks(ax, axis: str = "x") -> None:
    """Ticks at whole numbers only on ``axis`` (layers and time steps are counted, not measured)."""
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


# -- axes-level pieces: every figure below and every explorer is built from these -----------------
def mark_nonfinite(ax, x, values, *, color: str = "black", what: str = "value", where: str = "at") -> str:
    """Mark where ``values`` overflowed (inf/NaN: ▲ at the top edge) or underflowed to 0 (▼ at the
    bottom edge) on a log axis, where matplotlib would silently drop them. Returns a short note
    ("inf at layers 1–12") for a title or summary, "" when every value is positive and finite.
    """
    x = np.asarray(x)
    values = np.asarray(values, dtype=float)
    over = ~np.isfinite(values)
    under = np.isfinite(values) & (values <= 0)
    notes = []
    edge = ax.get_xaxis_transform()          # x in data, y in axes fraction: always inside the axes
    if over.any():
        ax.plot(x[over], np.full(over.sum(), 0.97), "^", ms=7, color=color, transform=edge, clip_on=False)
        notes.append(f"{what} overflowed to inf/NaN {where} {_span(x[over])}")
    if under.any():
        ax.plot(x[under], np.full(under.sum(), 0.03), "v", ms=7, color=color, transform=edge, clip_on=False)
        notes.append(f"{what} underflowed to 0 {where} {_span(x[under])}")
    return "; ".join(notes)


def _span(x: np.ndarray) -> str:
    x = [int(v) for v in x]
    return str(x[0]) if len(x) == 1 else f"{x[0]}–{x[-1]}" if x == list(range(x[0], x[-1] + 1)) else \
        ", ".join(map(str, x[:4])) + ("…" if len(x) > 4 else "")


def _note(ax, text: str) -> None:
    """A warning written inside the axes, top left, on a white box (stays readable over lines)."""
    ax.text(0.02, 0.9, text, transform=ax.transAxes, ha="left", va="top", fontsize="small", wrap=True,
            color="#b2182b", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8))


def _label_profile(ax, xlabel: str, ylabel: str, title: str, notes: list[str]) -> str:
    """Finish a per-layer or per-step profile: integer ticks, labels, the overflow/underflow note
    inside the axes (the legend moves out of its way); returns the note."""
    integer_ticks(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if notes:
        _note(ax, "; ".join(notes) + " (▲/▼ at the edge)")
    ax.legend(fontsize="small", loc="lower right" if notes else "best")
    return "; ".join(notes)


def draw_layer_gradients(ax, weight_grads, signal, *, theory=None, title: str,
                         xlabel: str = "hidden layer (1 = nearest the input)", markersize: float = 6,
                         labels: tuple[str, str] = ("weight gradient ‖∂L/∂W‖",
                                                    "signal ‖∂L/∂z‖ at the layer's output"),
                         theory_label: str = "theory (signal)") -> str:
    """Draw per-layer ‖∂L/∂W‖ and ‖∂L/∂z‖ (and a theory curve for the signal) on ``ax``, log scale,
    integer layer ticks. Values that overflowed (inf/NaN) or underflowed to 0 are marked at the
    edge of the axes and named inside it. Either curve may be ``None``. Returns that note.

    >>> fig, axes = new_figure()
    >>> draw_layer_gradients(axes[0, 0], [1.0, 2.0, float("inf")], [0.5, 0.0, 3.0], title="t")
    'weight gradient overflowed to inf/NaN at 3; signal underflowed to 0 at 2'
    """
    notes = []
    with matplotlib.style.context(STYLE):
        for values, style, label, i in ((weight_grads, "o-", labels[0], 0), (signal, "s--", labels[1], 1)):
            if values is None:
                continue
            values = np.asarray(values, dtype=float)
            layers = np.arange(1, len(values) + 1)
            shown = np.isfinite(values) & (values > 0)
            ax.semilogy(layers[shown], values[shown], style, ms=markersize, color=color(i), label=label)
            note = mark_nonfinite(ax, layers, values, color=color(i), what=label.split(" ‖")[0])
            notes += [note] if note else []
        if theory is not None:
            theory = np.asarray(theory, dtype=float)
            layers = np.arange(1, len(theory) + 1)
            shown = np.isfinite(theory) & (theory > 0)
            ax.semilogy(layers[shown], theory[shown], ":", color="black", lw=2, label=theory_label)
        return _label_profile(ax, xlabel, "norm (log scale)", title, notes)


def draw_loss(ax, runs: Mapping[str, Run], *, log: bool = True, baseline: float | None = None,
              baseline_label: str | None = None, ylabel: str = "loss", colors: Mapping[str, str] | None = None,
              title: str = "Training loss") -> None:
    """Loss against step for several runs (name → Run) on ``ax``, a diverged run ending in ✕ at the
    step where its loss or gradient became NaN/Inf, labelled inside the axes.

    The loss axis covers the finite range of the runs that did not diverge (and the diverged ones
    before their blow-up), so a run whose loss climbed to 1e30 before it became NaN does not
    flatten the others: it leaves through the top of the axes, where its ✕ is drawn.
    """
    runs = _runs(runs)
    with matplotlib.style.context(STYLE):
        calm = [run.losses[np.isfinite(run.losses)] for run in runs.values() if run.diverged_at is None]
        if not any(len(c) for c in calm):  # every run diverged: their losses up to 10× where they began
            calm = [_before_blowup(run.losses) for run in runs.values()]
        calm = np.concatenate([c for c in calm if len(c)] or [np.array([1.0])])
        if log:
            calm = calm[calm > 0] if (calm > 0).any() else np.array([1.0])
        low, high = float(calm.min()), float(calm.max())
        if baseline is not None:
            low, high = min(low, baseline), max(high, baseline)
        if log:
            bottom, top = low / 2, high * 3
        else:
            pad = 0.08 * (high - low or abs(high) or 1.0)
            bottom, top = low - pad, high + pad
        longest = max(len(run.losses) for run in runs.values())
        for i, (name, run) in enumerate(runs.items()):
            c = (colors or {}).get(name, color(i))
            finite = np.isfinite(run.losses)
            steps = np.arange(len(run.losses))
            ax.plot(steps[finite], run.losses[finite], line_style(i) if (colors or {}).get(name) is None else "-",
                    color=c, label=name, zorder=2.5)
            if run.diverged_at is not None:
                last = run.losses[finite][-1] if finite.any() else top
                y = min(max(last, bottom), top / 1.6 if log else top - 0.05 * (top - bottom))
                ax.plot([run.diverged_at], [y], "x", ms=12, mew=3, color=c)
                right = run.diverged_at > longest / 2
                peak = float(run.losses[finite].max()) if finite.any() else math.nan
                text = f"NaN/Inf at step {run.diverged_at}"
                if peak > top:  # the climb left the axes: say how high it went
                    text += f"\n(the loss reached {peak:.2g} first)"
                ax.annotate(text, (run.diverged_at, y), textcoords="offset points",
                            xytext=(-8 if right else 8, -14), ha="right" if right else "left", va="top",
                            fontsize="small", color=c, annotation_clip=True)
        if baseline is not None:  # under the runs: a run that sits on it stays visible
            ax.axhline(baseline, color="black", ls=":", lw=1, zorder=2,
                       label=baseline_label or f"baseline {baseline:.3g}")
        if log:
            ax.set_yscale("log")
        ax.set_ylim(bottom, top)
        ax.set_xlim(-0.02 * longest, longest * 1.02)
        integer_ticks(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{ylabel} (log scale)" if log else ylabel)
        ax.set_title(title)
        ax.legend(fontsize="small")


def _before_blowup(losses: np.ndarray) -> np.ndarray:
    finite = losses[np.isfinite(losses)]
    if not len(finite):
        return finite
    start = abs(finite[0]) or 1.0
    beyond = np.flatnonzero(np.abs(finite) > 10 * start)
    return finite[: beyond[0]] if len(beyond) else finite


def draw_unhealthy_units(ax, saturated, dead, *, title: str,
                         xlabel: str = "layer (1 = nearest the input)") -> None:
    """Saturated (sigmoid/tanh) and dead (ReLU) fraction of units per layer as bars on ``ax``;
    a quantity that does not apply to the activation (all NaN) is left out and said so."""
    with matplotlib.style.context(STYLE):
        saturated = np.asarray(saturated, dtype=float)
        dead = np.asarray(dead, dtype=float)
        layers = np.arange(1, max(len(saturated), len(dead)) + 1)
        shown = False
        if np.isfinite(saturated).any():
            ax.bar(layers[: len(saturated)] - 0.2, np.nan_to_num(saturated), width=0.4, color=color(0),
                   label="saturated (|slope| ≈ 0)")
            shown = True
        if np.isfinite(dead).any():
            ax.bar(layers[: len(dead)] + 0.2, np.nan_to_num(dead), width=0.4, color=color(1),
                   label="dead ReLU (0 for every input)")
            shown = True
        if not shown:
            ax.text(0.5, 0.5, "this activation neither saturates nor dies", ha="center",
                    transform=ax.transAxes)
        else:  # bars of height 0 draw nothing: say so rather than leave the panel blank
            empty = [what for what, values in (("saturated", saturated), ("dead", dead))
                     if np.isfinite(values).any() and np.nanmax(values) == 0]
            if empty:
                ax.text(0.5, 0.5, f"no {' or '.join(empty)} unit in any layer (0%)", ha="center",
                        va="center", transform=ax.transAxes, fontsize="small", color="dimgrey")
        ax.set_ylim(0, 1)
        integer_ticks(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of units")
        ax.set_title(title)
        if shown:
            ax.legend(fontsize="small")


def draw_through_time(ax, curves: Mapping[str, np.ndarray], *, overlays: Mapping[str, np.ndarray] | None = None,
                      after: Mapping[str, np.ndarray] | None = None, title: str = "Gradient reaching each time step",
                      overlay_label: str = "bound (λ₁γ)^(T−t)·‖∂L/∂h_T‖", after_label: str = "after training",
                      labels: Mapping[str, str] | None = None) -> str:
    """‖∂L/∂h_t‖ against t on a log axis: one solid line per entry of ``curves`` (name → array),
    the matching entry of ``overlays`` dotted (a bound or guide), of ``after`` dashed, in the same
    colour. Time steps whose gradient underflowed to 0 (or overflowed) are marked at the edge of
    the axes and named inside it; returns that note ("" when there is none).
    """
    notes = []
    with matplotlib.style.context(STYLE):
        for i, (name, values) in enumerate(curves.items()):
            c = color(i)
            for series, style, kind in ((values, line_style(i), ""), ((after or {}).get(name), "--",
                                                                      f" ({after_label})")):
                if series is None:
                    continue
                series = np.asarray(series, dtype=float)
                t = np.arange(1, len(series) + 1)
                ok = np.isfinite(series) & (series > 0)
                ax.semilogy(t[ok], series[ok], style, color=c,
                            label=(labels or {}).get(name, name) if not kind else None)
                note = mark_nonfinite(ax, t, series, color=c, what=f"{name}{kind}: gradient", where="at t =")
                notes += [note] if note else []
            if overlays and name in overlays:
                overlay = np.asarray(overlays[name], dtype=float)
                t = np.arange(1, len(overlay) + 1)
                ok = np.isfinite(overlay) & (overlay > 0)
                ax.semilogy(t[ok], overlay[ok], ":", lw=2, color=c)
        if overlays:
            ax.plot([], [], ":", lw=2, color="grey", label=overlay_label)
        if after:
            ax.plot([], [], "--", color="grey", label=after_label)
        return _label_profile(ax, "time step t (the loss reads h_T)", "‖∂L/∂h_t‖ (log scale)", title, notes)


# -- figures -----------------------------------------------------------------------------------------
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
def loss_curve(runs: Run | Mapping[str, Run], *, log: bool = True, baseline: float | None = None,
               title: str = "Training loss") -> Figure:
    """Loss against step for one run or several (a name → Run mapping); a diverged run ends in ✕
    at the step where its loss or gradient became NaN/Inf (see :func:`draw_loss`).

    >>> loss_curve("x")
    Traceback (most recent call last):
    ...
    ValueError: runs must be a Run or a non-empty mapping of names to Runs; got 'x'
    """
    runs = _runs(runs)
    fig, axes = new_figure()
    draw_loss(axes[0, 0], runs, log=log, baseline=baseline, title=title)
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
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))  # narrow panels: four ticks that never touch
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
    draw_unhealthy_units(axes[0, 0], trace.get("saturated_frac")[row], trace.get("dead_frac")[row],
                         title=f"Unhealthy units per layer at step {int(trace.steps[row])}")
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
    integer_ticks(ax)
    ax.set_xlabel("training step")
    ax.set_ylabel("‖W‖ (log scale)")
    ax.set_title("Weight norm per layer (dark = input side)")
    ax.legend(fontsize="small")
    return fig


@styled
def total_grad_norm(runs: Run | Mapping[str, Run], *, threshold: float | None = None,
                    title: str = "Total gradient norm before clipping") -> Figure:
    """The total gradient norm per step (before clipping), clipped steps marked, log scale."""
    runs = _runs(runs)
    fig, axes = new_figure()
    draw_total_grad_norm(axes[0, 0], runs, threshold=threshold, title=title)
    return fig


def draw_total_grad_norm(ax, runs: Mapping[str, Run], *, threshold: float | None = None,
                         title: str = "Total gradient norm before clipping") -> None:
    """‖∇L‖ per step of each run (before clipping) on ``ax``, clipped steps dotted, log scale."""
    with matplotlib.style.context(STYLE):
        for i, (name, run) in enumerate(_runs(runs).items()):
            steps = np.arange(len(run.grad_norm_total))
            finite = np.isfinite(run.grad_norm_total)
            ax.semilogy(steps[finite], run.grad_norm_total[finite], color=color(i), label=name)
            if run.clipped.any():
                ax.plot(steps[run.clipped], run.grad_norm_total[run.clipped], ".", ms=4, color=color(i),
                        label=f"{name}: clipped ({run.clipped.mean():.0%} of steps)")
        if threshold is not None:
            ax.axhline(threshold, color="black", ls=":", lw=1, label=f"threshold {threshold:g}")
        integer_ticks(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel("‖∇L‖ (log scale)")
        ax.set_title(title)
        ax.legend(fontsize="small")


@styled
def hidden_grad_norms(runs: Run | Mapping[str, Run], *, step: int = 0,
                      theory: Mapping[str, np.ndarray] | None = None,
                      title: str = "Gradient reaching each time step") -> Figure:
    """‖∂L/∂h_t‖ against the time step t for sequence models (log scale), theory dotted.

    >>> from gradcourse import data, models
    >>> from gradcourse.train import fit
    >>> hidden_grad_norms(fit(models.mlp(2, 4, seed=0), data.spirals(16), steps=1, lr=0.1))
    Traceback (most recent call last):
    ...
    ValueError: runs must be sequence-model Runs (models.sequence_model) made with probe=True; 'run' holds no ‖∂L/∂h_t‖
    """
    runs = _runs(runs)
    curves = {}
    for name, run in runs.items():
        trace = _trace(run, "runs")
        if trace.hidden_grad_norm is None:
            raise ValueError("runs must be sequence-model Runs (models.sequence_model) made with probe=True; "
                             f"{name!r} holds no ‖∂L/∂h_t‖")
        curves[name] = trace.get("hidden_grad_norm")[_row(trace, step)]
    fig, axes = new_figure(width=5.5)
    draw_through_time(axes[0, 0], curves, overlays=theory, overlay_label="theory", title=title)
    return fig
