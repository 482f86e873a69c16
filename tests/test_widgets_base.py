"""The explorers' PNG renderer (widgets.base.figure_png): one Agg renderer per image size, reused."""

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from gradcourse import plots
from gradcourse.widgets import base


def _figure(width: float, scale: float, title: str) -> Figure:
    """Two panels: a log axis over many decades (math-text labels) and a linear one, with a legend."""
    fig, axes = plots.new_figure(2, width=width, height=3.0)
    steps = np.arange(50)
    axes[0, 0].semilogy(steps, scale * np.exp(-0.4 * steps) + 1e-12, label="signal ‖∂L/∂z‖")
    axes[0, 0].set_title(title)
    axes[0, 0].legend()
    axes[0, 1].bar(np.arange(1, 11), np.linspace(0, scale / (1 + scale), 10))
    axes[0, 1].set_xlabel("hidden layer")
    return fig


def _fresh_png(fig: Figure, dpi: int = 80) -> bytes:
    """What figure_png drew before the renderers were shared: a new Agg canvas and renderer."""
    buffer = io.BytesIO()
    plots.lighter_log_ticks(fig).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


@pytest.mark.parametrize("dpi", [80, 60])
def test_a_shared_renderer_draws_each_figure_as_a_fresh_one_does(dpi):
    # Several figures in a row through one renderer (its text sizes and parsed math kept from the
    # previous figure, its pixels cleared): every image equals the one a new renderer draws.
    settings = [(4.0, 1.0, "first"), (4.0, 1e6, "a longer second title"), (4.0, 1.0, "first"), (5.0, 3.0, "wider")]
    shared = [base.figure_png(_figure(*s), dpi) for s in settings]
    fresh = [_fresh_png(_figure(*s), dpi) for s in settings]
    assert shared == fresh
    assert shared[0] == shared[2] != shared[1]


def test_figures_of_one_size_share_a_renderer_and_few_are_kept():
    a, b, wider = _figure(4.0, 1.0, "a"), _figure(4.0, 2.0, "b"), _figure(5.0, 1.0, "wider")
    for fig in (a, b, wider):
        base.figure_png(fig)
    assert a.canvas.renderer is b.canvas.renderer            # same pixels and dpi: one renderer
    assert wider.canvas.renderer is not a.canvas.renderer
    low = _figure(4.0, 1.0, "a")
    base.figure_png(low, dpi=60)
    assert low.canvas.renderer is not a.canvas.renderer      # same inches, another dpi
    for k in range(base._KEEP_RENDERERS + 3):                # many sizes: only the latest few stay
        base.figure_png(_figure(2.0 + 0.25 * k, 1.0, "size"))
    assert len(base._RENDERERS) == base._KEEP_RENDERERS


def test_an_image_is_drawn_once_and_the_figure_keeps_its_layout_and_dpi():
    # savefig alone draws a constrained-layout figure twice (a layout-only draw, then the image);
    # figure_png runs the layout itself and draws once, to the same bytes.
    fig = _figure(4.0, 10.0, "once")
    engine, dpi = fig.get_layout_engine(), fig.dpi
    draws = []
    fig.canvas.mpl_connect("draw_event", draws.append)  # the figure's callbacks outlive its canvas
    png = base.figure_png(fig, 60)
    assert len(draws) == 1
    assert fig.get_layout_engine() is engine and fig.dpi == dpi
    assert png == _fresh_png(_figure(4.0, 10.0, "once"), 60)


def test_a_figure_with_a_colorbar_and_a_suptitle_is_drawn_as_savefig_draws_it():
    def figure() -> Figure:  # constrained layout makes room for the colorbar and the suptitle
        fig = _figure(4.0, 1.0, "left")
        axes = fig.axes
        mesh = axes[1].pcolormesh(np.arange(6.0), np.arange(4.0), np.arange(15.0).reshape(3, 5))
        fig.colorbar(mesh, ax=axes[1], label="counts")
        fig.suptitle("a figure title")
        return fig

    assert base.figure_png(figure()) == _fresh_png(figure())


def test_an_explorer_s_image_is_the_one_savefig_draws():
    # Lesson 01's three panels: log axes with math-text labels, histograms, a legend placed "best".
    from gradcourse.widgets import EXPLORERS

    explorer = EXPLORERS["01_sigmoid_saturation"]()
    for settings in ({}, {"activation": "relu", "init": "kaiming", "depth": 7}):
        mine, plain = explorer.run(**settings).figure, explorer.run(**settings).figure
        assert base.figure_png(mine, explorer.dpi) == _fresh_png(plain, explorer.dpi)
