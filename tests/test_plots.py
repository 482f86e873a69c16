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
    assert note.get_text() == "NaN/Inf at step 20" and note.get_ha() == "left"   # left half: written rightwards


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
