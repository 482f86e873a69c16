"""The axes-level pieces of ``gradcourse.plots``: what they draw, read back from the axes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from gradcourse import data, models, plots
from gradcourse.train import Run, fit


def _run(losses, diverged_at=None) -> Run:
    losses = np.asarray(losses, dtype=float)
    return Run(losses=losses, grad_norm_total=np.ones(len(losses)), clipped=np.zeros(len(losses), bool),
               metrics={}, params={}, diverged_at=diverged_at)


HEALTHY = _run(np.linspace(0.7, 0.1, 50))
BLOWN = _run(np.r_[np.geomspace(0.7, 1e30, 20), np.nan], diverged_at=20)


def _ax():
    fig, axes = plots.new_figure()
    return axes[0, 0]


def test_diverged_run_does_not_flatten_the_others():
    ax = _ax()
    plots.draw_loss(ax, {"healthy": HEALTHY, "blown": BLOWN})
    bottom, top = ax.get_ylim()
    assert 0.01 < bottom < 0.1 and 0.7 < top < 10          # the healthy run's range, not up to 1e30
    cross = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(cross) == 1
    x, y = cross[0].get_xdata()[0], cross[0].get_ydata()[0]
    assert x == 20 and bottom < y < top                     # the ✕ is inside the axes
    (note,) = [t for t in ax.texts if "NaN/Inf" in t.get_text()]
    # left half: written rightwards; the climb that left the axes is named with its peak, 1e30
    assert note.get_text() == "NaN/Inf at step 20\n(the loss reached 1e+30 first)" and note.get_ha() == "left"
    plots.draw_loss(ax := _ax(), {"healthy": HEALTHY, "cut short": _run(np.r_[0.7, 0.6, np.nan], diverged_at=2)})
    (note,) = [t for t in ax.texts if "NaN/Inf" in t.get_text()]
    assert note.get_text() == "NaN/Inf at step 2"                           # it never left the axes: no peak


def test_a_run_on_the_baseline_is_drawn_over_it_and_shades_of_one_hue_differ_in_style():
    ax = _ax()
    runs = {name: HEALTHY for name in "abcde"}
    plots.draw_loss(ax, runs, baseline=0.69)
    lines = [line for line in ax.lines if line.get_label() in runs]
    baseline = [line for line in ax.lines if line.get_linestyle() == ":"][0]
    assert all(line.get_zorder() > baseline.get_zorder() for line in lines)
    # blue, orange, dark grey solid; sky blue and dark orange (cousins of the first two) dash-dot
    assert [line.get_linestyle() for line in lines] == ["-", "-", "-", "-.", "-."]


def test_bars_of_zero_say_so_instead_of_a_blank_panel():
    ax = _ax()
    plots.draw_unhealthy_units(ax, [0.0, 0.0, 0.0], [np.nan] * 3, title="t")
    assert [t.get_text() for t in ax.texts] == ["no saturated unit in any layer (0%)"]
    ax = _ax()
    plots.draw_unhealthy_units(ax, [0.0, 0.2, 0.0], [np.nan] * 3, title="t")
    assert len(ax.texts) == 0


def test_every_run_diverged_keeps_their_start_in_view():
    ax = _ax()
    plots.draw_loss(ax, {"blown": BLOWN}, log=False)
    assert ax.get_ylim()[1] < 10


def test_runs_get_distinct_colour_blind_safe_colours():
    ax = _ax()
    plots.draw_loss(ax, {"a": HEALTHY, "b": HEALTHY, "c": HEALTHY})
    colours = [to_hex(line.get_color()) for line in ax.lines if line.get_label() in "abc"]
    assert len(set(colours)) == 3 and set(colours) <= {to_hex(c) for c in plots.COLORS}


def test_layer_gradients_integer_ticks_and_overflow_marked():
    ax = _ax()
    note = plots.draw_layer_gradients(ax, [1e3, 1e2, np.inf], [np.nan, 1.0, 0.5], title="t")
    assert note == ("weight gradient overflowed to inf/NaN at 3; signal overflowed to inf/NaN at 1")
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    up = [line for line in ax.lines if line.get_marker() == "^"]
    assert [list(line.get_xdata()) for line in up] == [[3], [1]]
    assert any("overflowed" in t.get_text() for t in ax.texts)


def test_through_time_marks_underflow():
    ax = _ax()
    note = plots.draw_through_time(ax, {"rnn": np.r_[0.0, 0.0, 0.0, np.geomspace(1e-40, 1, 7)]})
    assert note == "rnn: gradient underflowed to 0 at t = 1–3"
    (down,) = [line for line in ax.lines if line.get_marker() == "v"]
    assert list(down.get_xdata()) == [1, 2, 3]
    (curve,) = [line for line in ax.lines if line.get_label() == "rnn"]
    assert list(curve.get_xdata()) == list(range(4, 11))


def test_unhealthy_units_draws_the_fractions():
    ax = _ax()
    plots.draw_unhealthy_units(ax, [0.1, 0.5, 0.9], [np.nan] * 3, title="t")
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [0.1, 0.5, 0.9] and ax.get_ylim() == (0, 1)


def test_loss_curve_and_activation_health_figures():
    run = fit(models.mlp(3, 8, activation="sigmoid", seed=0), data.spirals(64), steps=3, lr=0.1, progress=False)
    ax = plots.loss_curve({"sigmoid": run}).axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == "sigmoid"]
    assert np.allclose(line.get_ydata(), run.losses)
    ax = plots.activation_health(run).axes[0]
    # the head has no activation: its NaN fraction is drawn as an empty bar
    assert np.allclose([p.get_height() for p in ax.patches], np.nan_to_num(run.trace.get("saturated_frac")[0]))


@pytest.mark.parametrize("call, name", [
    (lambda: plots.loss_curve("x"), "runs"),
    (lambda: plots.loss_curve({"a": "x"}), "runs"),
    (lambda: plots.total_grad_norm([]), "runs"),
    (lambda: plots.activation_health(3), "source"),
])
def test_errors_name_the_argument(call, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        call()


def test_hidden_grad_norms_refuses_an_mlp_run_and_draws_a_sequence_run():
    mlp_run = fit(models.mlp(2, 4, seed=0), data.spirals(16), steps=1, lr=0.1, progress=False)
    with pytest.raises(ValueError, match="runs must be sequence-model Runs"):
        plots.hidden_grad_norms(mlp_run)
    seq = fit(models.sequence_model("rnn", 8, seed=0), data.adding_problem(10, n=32, seed=0), steps=1, lr=0.01,
              progress=False)
    ax = plots.hidden_grad_norms({"rnn": seq}).axes[0]
    (line,) = [line for line in ax.lines if line.get_label() == "rnn"]
    assert np.allclose(line.get_ydata(), seq.trace.get("hidden_grad_norm")[0])


# -- no label leaves its figure -------------------------------------------------------------------
def texts_outside(fig, dpi: float, slack: float = 1.0) -> list[str]:
    """The texts of ``fig`` that matplotlib's renderer draws (partly) outside the figure at ``dpi``:
    titles, axis labels, tick labels as drawn, texts, legends, and the figure's own texts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    pieces = [(f"figure text {t.get_text()!r}", t) for t in fig.texts]
    pieces += [(f"figure {name} {getattr(fig, '_' + name).get_text()!r}", getattr(fig, "_" + name))
               for name in ("suptitle", "supxlabel", "supylabel") if getattr(fig, "_" + name, None) is not None]
    pieces += [("figure legend", legend) for legend in fig.legends]
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        pieces += [(f"axes {i} {t.get_text()!r}", t)
                   for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts)]
        if ax.get_legend() is not None:
            pieces.append((f"axes {i} legend", ax.get_legend()))
        pieces += [(f"axes {i} {axis.axis_name} tick labels", axis) for axis in (ax.xaxis, ax.yaxis)
                   if axis.get_visible()]
    outside = []
    for what, artist in pieces:
        if not artist.get_visible() or (hasattr(artist, "get_text") and not artist.get_text().strip()):
            continue
        # an Axis's tight box holds only the tick labels it draws (those inside the view) and its label
        extent = artist.get_tightbbox(renderer) if hasattr(artist, "axis_name") else artist.get_window_extent(renderer)
        if extent is None or extent.width == 0:
            continue
        if (extent.x0 < box.x0 - slack or extent.y0 < box.y0 - slack or extent.x1 > box.x1 + slack
                or extent.y1 > box.y1 + slack):
            outside.append(f"{what} at {[round(v) for v in extent.extents]}, figure {[round(v) for v in box.extents]}")
    return outside


def test_texts_outside_finds_a_cut_title():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), layout="constrained")
    fig.add_subplot().set_title("a title far too long for a figure three inches wide, cut at both ends")
    assert texts_outside(fig, 80) and "title far too long" in texts_outside(fig, 80)[0]
    fig.axes[0].set_title("short")
    assert texts_outside(fig, 80) == []


RUN_EXPLORER_PREVIEWS = {       # the Run-button explorers, at settings that make their longest titles
    "lesson08.DigitsExplorer": [{}, {"kind": "cnn", "depth": 30, "activation": "relu", "init": "he", "batchnorm": True},
                                {"kind": "cnn", "depth": 12, "activation": "sigmoid", "init": "xavier"}],
    "lesson09.TransformerExplorer": [{}, {"norm": "pre", "depth": 12, "qk_norm": True, "optimizer": "radam"}],
}


@pytest.mark.parametrize("name", sorted(RUN_EXPLORER_PREVIEWS))
def test_no_label_leaves_the_run_explorers_previews(name):
    import importlib

    module, cls = name.split(".")
    explorer = getattr(importlib.import_module(f"gradcourse.widgets.{module}"), cls)()
    for settings in RUN_EXPLORER_PREVIEWS[name]:
        result = explorer.run_preview(**{**settings, "steps": 100})
        assert "press Run" in result.notice and not result.figure.get_supxlabel()   # the note is the widget's
        assert texts_outside(result.figure, explorer.dpi) == [], settings


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUN_EXPLORER_PREVIEWS))
def test_no_label_leaves_the_run_explorers_trained_figure(name):
    import importlib

    module, cls = name.split(".")
    explorer = getattr(importlib.import_module(f"gradcourse.widgets.{module}"), cls)()
    assert texts_outside(explorer.run().figure, explorer.dpi) == []


# -- lighter_log_ticks: drawing spared, the image kept ---------------------------------------------
def _semilogy(low: float, high: float):
    fig, axes = plots.new_figure()
    axes[0, 0].semilogy([0, 1, 2], [low, (low * high) ** 0.5, high])
    return fig


def _png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=50)
    return buffer.getvalue()


def test_lighter_log_ticks_keeps_the_image_of_an_axis_over_one_to_three_decades():
    from matplotlib.ticker import LogLocator, NullFormatter

    default = _png(_semilogy(0.01, 5.0))  # 2.7 decades: minor marks, no minor labels
    lighter = plots.lighter_log_ticks(_semilogy(0.01, 5.0))
    assert type(lighter.axes[0].yaxis.get_minor_formatter()) is NullFormatter
    assert type(lighter.axes[0].yaxis.get_minor_locator()) is LogLocator
    assert _png(lighter) == default


def test_lighter_log_ticks_drops_minor_marks_over_three_decades_only():
    from matplotlib.ticker import NullLocator

    wide = _semilogy(1e-8, 1.0)
    linear_x = wide.axes[0].xaxis.get_minor_locator(), wide.axes[0].xaxis.get_minor_formatter()
    plots.lighter_log_ticks(wide)
    assert type(wide.axes[0].yaxis.get_minor_locator()) is NullLocator
    assert (wide.axes[0].xaxis.get_minor_locator(), wide.axes[0].xaxis.get_minor_formatter()) == linear_x
    assert _png(wide) != _png(_semilogy(1e-8, 1.0))


def test_lighter_log_ticks_leaves_a_narrow_axis_and_chosen_ticks_alone():
    from matplotlib.ticker import FixedLocator

    narrow = _semilogy(0.2, 0.7)  # within a decade: the minor labels are its only numbers
    formatter, locator = narrow.axes[0].yaxis.get_minor_formatter(), narrow.axes[0].yaxis.get_minor_locator()
    plots.lighter_log_ticks(narrow)
    assert narrow.axes[0].yaxis.get_minor_formatter() is formatter
    assert narrow.axes[0].yaxis.get_minor_locator() is locator
    chosen = _semilogy(1e-8, 1.0)
    chosen.axes[0].yaxis.set_minor_locator(FixedLocator([1e-5]))
    plots.lighter_log_ticks(chosen)
    assert type(chosen.axes[0].yaxis.get_minor_locator()) is FixedLocator


def test_figures_shown_in_a_notebook_pass_through_lighter_log_ticks():
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.ticker import NullLocator

    shell = InteractiveShell.instance()
    try:
        plots.show_figures_inline()
        fig = _semilogy(1e-8, 1.0)
        data, _ = shell.display_formatter.format(fig)
        assert "image/png" in data
        assert type(fig.axes[0].yaxis.get_minor_locator()) is NullLocator
    finally:
        InteractiveShell.clear_instance()


def test_a_figure_shown_in_a_notebook_is_drawn_once_to_the_png_ipython_draws():
    # IPython's print_figure alone draws a constrained-layout figure twice (a layout-only draw);
    # the course's formatter lays it out first and draws once, to the same bytes.
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.pylabtools import print_figure

    def figure():
        fig = _semilogy(1e-8, 1.0)
        fig.axes[0].set_title("a title")
        fig.colorbar(fig.axes[0].scatter([1, 2], [1e-3, 1e-2], c=[0, 1]), ax=fig.axes[0], label="c")
        return fig

    shell = InteractiveShell.instance()
    try:
        plots.show_figures_inline()
        fig, draws = figure(), []
        fig.canvas.mpl_connect("draw_event", draws.append)
        engine, dpi = fig.get_layout_engine(), fig.dpi
        data, _ = shell.display_formatter.format(fig)
        assert len(draws) == 1
        assert fig.get_layout_engine() is engine and fig.dpi == dpi
        shown = data["image/png"]  # base64 text, as the notebook stores it
        assert shown == print_figure(plots.lighter_log_ticks(figure()), "png", bbox_inches=None, base64=True)
    finally:
        InteractiveShell.clear_instance()
