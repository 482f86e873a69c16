"""Lesson 01: the saturation explorer, its helpers and the lesson's exercise checks."""


import numpy as np
import pytest
from _tools import assert_registered
from matplotlib.figure import Figure

from gradcourse import theory
from gradcourse.widgets.base import figure_png
from gradcourse.widgets.lesson01 import (
    SaturationExplorer,
    activation_figure,
    measure,
    saturated_fraction,
    saturation_figure,
)


@pytest.fixture(scope="module")
def default():
    return SaturationExplorer().run()


def test_registered():
    assert_registered("01_sigmoid_saturation", SaturationExplorer)


def test_first_control_is_a_numeric_slider():
    # The browser test moves the first slider of the first explorer in notebook 01.
    name, spec = next(iter(SaturationExplorer.params.items()))
    assert name == "depth" and spec.options is None and isinstance(spec.default, int)


def test_default_sigmoid_20_vanishes_without_saturation(default):
    v = default.values
    assert isinstance(default.figure, Figure)
    assert 1e-17 < v["ratio"] < 1e-15                       # DESIGN: ~1e-16 over 20 layers
    assert v["factor"] == pytest.approx(v["factor_theory"], rel=0.05)
    assert v["factor_theory"] == pytest.approx(0.141, abs=0.003)
    assert v["weight_grad"][0] / v["weight_grad"][-1] < 1e-15
    assert np.nanmax(v["saturated"]) < 0.01                 # default init: not saturated
    assert len(v["signal"]) == 20 and len(v["theory"]) == 20


def test_depth_changes_the_ratio_and_the_figure(default):
    deeper = SaturationExplorer().run(depth=21)
    assert deeper.values["ratio"] < default.values["ratio"] / 3
    assert figure_png(deeper.figure) != figure_png(default.figure)


def test_relu_needs_he_init():
    relu = SaturationExplorer().run(activation="relu").values
    he = SaturationExplorer().run(activation="relu", init="kaiming").values
    assert relu["factor"] == pytest.approx(theory.small_signal_factor("relu", "default", 64), rel=0.1)
    assert relu["ratio"] < 1e-6
    assert 0.1 < he["ratio"] < 10
    assert np.nanmax(he["dead"]) > 0.1                      # ReLU's own failure: dead units


def test_large_weights_or_inputs_saturate():
    big = SaturationExplorer().run(weight_scale=16.0).values
    assert big["saturated"][-1] > 0.5
    loud = SaturationExplorer().run(input_scale=30.0).values
    assert loud["saturated"][0] > 0.4 and loud["saturated"][1:].max() < 0.01


def test_tanh_large_weights_explode_while_saturated():
    v = SaturationExplorer().run(activation="tanh", init="xavier", weight_scale=4.0).values
    assert v["ratio"] > 100 and np.nanmax(v["saturated"]) > 0.4


def test_deep_signal_does_not_underflow_to_zero():
    v = measure(40)
    assert np.all(v["signal"] > 0) and v["ratio"] < 1e-30
    assert v["factor"] == pytest.approx(v["factor_theory"], rel=0.05)


@pytest.mark.parametrize("params, name", [
    ({"depth": 1}, "depth"), ({"depth": 41}, "depth"), ({"activation": "swish"}, "activation"),
    ({"init": "he"}, "init"), ({"weight_scale": 0.1}, "weight_scale"), ({"input_scale": 1000.0}, "input_scale"),
    ({"seed": 3}, "seed"),
])
def test_bad_params_raise_value_error_naming_them(params, name):
    with pytest.raises(ValueError, match=name):
        SaturationExplorer().run(**params)


def test_helper_figures_are_titled():
    fig = activation_figure()
    assert all(ax.get_title() for ax in fig.axes)
    fig = saturation_figure({"default": {}, "weights ×16": {"weight_scale": 16.0}})
    assert "saturated" in fig.axes[1].get_title() and fig._suptitle is not None


def test_relu_overflow_is_shown_not_refused():
    """ReLU + kaiming at ×16 per layer overflows float32 beyond ~30 layers: the explorer says so
    on the figure and in the summary (it used to refuse with 'last must be a finite number')."""
    result = SaturationExplorer().run(activation="relu", init="kaiming", weight_scale=16.0, depth=35)
    assert result.values["overflow"] and "overflowed float32" in result.summary
    assert "weight scale" in result.summary                       # names the control to change
    ax = result.figure.axes[0]
    assert "overflowed" in ax.get_title()
    assert any(line.get_marker() == "^" for line in ax.lines)      # the ▲ marks at the top edge


def test_explorer_draws_unhealthy_units_per_layer():
    result = SaturationExplorer().run(activation="tanh", init="xavier", weight_scale=4.0, depth=10)
    bars = result.figure.axes[2]
    heights = [p.get_height() for p in bars.patches]
    assert np.allclose(heights, result.values["saturated"]) and max(heights) > 0.5


# -- the lesson's exercise checks -------------------------------------------------------------

def test_sigmoid_he_factor_accepts_theory_and_measurement():
    from gradcourse import exercises

    measured = measure(20, activation="sigmoid", init="kaiming")["factor"]
    assert measured == pytest.approx(0.316, abs=0.002)
    for right in (0.3536, "2**0.5/4", measured):
        assert exercises.sigmoid_he_factor(right).correct is True, right
    forgot_slope = exercises.sigmoid_he_factor(1.4142)
    assert forgot_slope.correct is False and "1/4" in forgot_slope.message
    for wrong in (0.25, 0.5, 1.0):
        assert exercises.sigmoid_he_factor(wrong).correct is False


def _signal_per_layer(model, x, y):
    """The exercise's solution: forward hooks that register tensor hooks, removed in finally."""
    import torch

    layers = list(model.hidden_layers())
    norms = [None] * len(layers)
    handles = []

    def watch(index):
        def forward_hook(module, inputs, output):
            def save(grad):
                norms[index] = grad.norm().item()
            output.register_hook(save)
        return forward_hook

    try:
        for i, layer in enumerate(layers):
            handles.append(layer.register_forward_hook(watch(i)))
        torch.nn.functional.cross_entropy(model(x), y).backward()
    finally:
        for handle in handles:
            handle.remove()
    return norms


def test_signal_probe_right_answer_matches_probe_once():
    from gradcourse import exercises

    feedback = exercises.signal_probe(_signal_per_layer)
    assert feedback.correct is True and "5.66e-17" in feedback.message


def test_signal_probe_full_backward_hooks_work_too():
    import torch

    from gradcourse import exercises

    def backward_hooks(model, x, y):
        layers = list(model.hidden_layers())
        norms = [0.0] * len(layers)
        handles = [layer.register_full_backward_hook(
            lambda m, gi, go, i=i: norms.__setitem__(i, go[0].norm().item())) for i, layer in enumerate(layers)]
        try:
            torch.nn.functional.cross_entropy(model(x), y).backward()
        finally:
            for h in handles:
                h.remove()
        return norms

    with pytest.warns(UserWarning):          # layer 1's input does not require grad: torch warns, values are right
        assert exercises.signal_probe(backward_hooks).correct is True


def test_signal_probe_wrong_answers_get_hints():
    import torch

    from gradcourse import exercises

    def leaky(model, x, y):                  # never removes its hooks
        out = []

        def hook(module, inputs, output):
            output.register_hook(lambda g: out.append(g.norm().item()))

        for layer in model.hidden_layers():
            layer.register_forward_hook(hook)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return out[::-1]

    def weight_gradients(model, x, y):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return [layer.weight.grad.norm().item() for layer in model.hidden_layers()]

    cases = {
        "still attached": leaky,
        "wrong order": lambda m, x, y: _signal_per_layer(m, x, y)[::-1],
        "OUTPUT": weight_gradients,
        "not the head": lambda m, x, y: _signal_per_layer(m, x, y) + [1.0],
        "ZeroDivisionError": lambda m, x, y: 1 / 0,
        "returned None": lambda m, x, y: None,
        "list of 20 numbers": lambda m, x, y: "abc",
    }
    for words, fn in cases.items():
        feedback = exercises.signal_probe(fn)
        assert feedback.correct is False and words in feedback.message, (words, feedback)


def test_signal_probe_unanswered_and_odd():
    from gradcourse import exercises

    def skeleton(model, x, y):
        raise NotImplementedError("your code here")

    assert exercises.signal_probe(None).correct is None
    assert exercises.signal_probe(skeleton).correct is None      # the student's untouched skeleton
    assert exercises.signal_probe(3).correct is False
    assert exercises.signal_probe("signal_per_layer").correct is False


@pytest.mark.parametrize("activation, init, scale", [("sigmoid", "default", 16.0), ("tanh", "xavier", 4.0)])
def test_saturated_fraction_is_the_probes_rule(activation, init, scale):
    # The histograms' labels count a layer's saturated units by the probe's rule: the same
    # fraction, to the last bit, as the probe's saturated_frac of that layer.
    m = measure(10, activation=activation, init=init, weight_scale=scale)
    labels = np.array([saturated_fraction(activation, a) for a in m["activations"]])
    np.testing.assert_array_equal(labels, m["saturated"])
    assert labels.max() > 0.3                                # layers with many saturated units
    assert np.isnan(saturated_fraction("relu", m["activations"][0]))
