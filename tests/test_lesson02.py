"""Lesson 02: the explosion explorer, its theory and its exercise checks."""

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gradcourse import data, exercises, models, theory
from gradcourse.probes import probe_once as probe_batch
from gradcourse.widgets.lesson02 import ExplosionExplorer


def probe_once(net, ds):
    return probe_batch(net, ds.x, ds.y)



def test_explorer_default_shows_signal_explosion_with_balanced_weight_gradients():
    result = ExplosionExplorer().run()
    assert isinstance(result.figure, Figure)
    v = result.values
    assert 0.3 < v["signal_ratio"] / v["theory_ratio"] < 3           # ~4.8e5 vs 2**19
    assert v["signal_ratio"] > 1e4
    assert 0.05 < v["weight_grad_ratio"] < 5                          # balanced across layers
    assert v["loss"] > 1e4 * v["loss_critical"]
    assert v["total_grad_norm"] > 1e5 * v["total_grad_norm_critical"]


def test_explorer_at_critical_scale_and_tanh_chaos():
    critical = ExplosionExplorer().run(weight_scale=1.0).values
    assert 0.2 < critical["signal_ratio"] < 5
    tanh = ExplosionExplorer().run(activation="tanh", depth=10, weight_scale=4.0).values
    assert tanh["saturated_last"] > 0.5 and tanh["signal_ratio"] > 100


def test_explorer_survives_overflow_and_marks_the_infinite_bar():
    result = ExplosionExplorer().run(weight_scale=4.5, depth=40)
    assert isinstance(result.figure, Figure) and "overflowed" in result.summary
    assert not np.isfinite(result.values["total_grad_norm"])
    bars = result.figure.axes[1]
    hatched = [p for p in bars.patches if p.get_hatch() == "//"]
    assert len(hatched) == 1 and hatched[0].get_height() >= bars.get_ylim()[1] / 3   # drawn to the top
    assert any("inf (overflowed)" in t.get_text() for t in bars.texts)


@pytest.mark.parametrize("bad, name", [({"weight_scale": 9.0}, "weight_scale"), ({"depth": 1}, "depth"),
                                       ({"activation": "swish"}, "activation")])
def test_explorer_rejects_bad_parameters(bad, name):
    with pytest.raises(ValueError, match=name):
        ExplosionExplorer().run(**bad)


def test_relu_signal_factor_matches_measurement_over_seeds():
    ds = data.spirals(512, seed=0)
    for seed in range(3):
        net = models.mlp(20, 64, activation="relu", init="normal", weight_std=2 * math.sqrt(2), seed=seed)
        signal = probe_once(net, ds).get("output_grad_norm")[0]
        per_layer = (signal[0] / signal[19]) ** (1 / 19)
        assert abs(per_layer - theory.relu_signal_factor(4.0)) < 0.15   # measured ~1.99


def test_tanh_mean_field_matches_measurement_over_seeds():
    ds = data.spirals(512, seed=0)
    x = ds.x.numpy()
    q, _ = theory.tanh_mean_field(4.0, 10, (x ** 2).mean(axis=1))
    predicted_sat = theory.tanh_saturated_fraction(q[:, 9]).mean()
    predicted_growth = theory.tanh_signal_ratio(4.0, 10, x)
    for seed in range(3):
        trace = probe_once(models.mlp(10, 64, activation="tanh", init="normal", weight_std=4.0, seed=seed), ds)
        assert abs(trace.get("saturated_frac")[0][9] - predicted_sat) < 0.05
        signal = trace.get("output_grad_norm")[0]
        assert 0.3 < (signal[0] / signal[9]) / predicted_growth < 3        # finite width: within 3x


def test_edge_of_chaos_and_stable_lr():
    assert abs(theory.tanh_critical_sigma_w(0.0) - 1.0) < 0.01
    assert theory.tanh_chi_fixed_point(0.9) < 1 < theory.tanh_chi_fixed_point(1.1)
    w = 1.0
    for _ in range(50):                       # gradient descent on 0.5*40*w^2 just below 2/h
        w -= 0.99 * theory.largest_stable_lr(40.0) * 40 * w
    assert abs(w) < 1
    with pytest.raises(ValueError, match="c"):
        theory.relu_signal_factor(-1.0)
    assert np.allclose(theory.relu_signal_profile(1.0, 4), 1.0)


# -- the exercise checks: right, wrong and odd answers, literal values -------------------------------
@pytest.mark.parametrize("check, rights, wrongs, hint", [
    (exercises.relu_growth_per_layer, [1.2247, "1.5**0.5", np.array([1.22])], [1.5, 3.0], "√c"),
    (exercises.relu_first_to_last, [357.5, "1.5**14.5", 249, 102, 317], [1.5 ** 29, 1.2247, 10.0], "√1.5"),
    (exercises.leaky_relu_factor, [1.118, "1.25**0.5", 1.071], [1.0, 1.25, 1.2247, 0.79], "E[φ'²]"),
    (exercises.largest_learning_rate, [0.16, "2/12.5", torch.tensor(0.16)], [0.08, 0.05, 0.3], "|1 − αh| < 1"),
    (exercises.tanh_phase, ["chaotic", " Chaotic "], ["ordered"], "edge of chaos"),
])
def test_lesson02_checks(check, rights, wrongs, hint):
    for right in rights:
        assert check(right).correct is True, (right, check(right))
    for wrong in wrongs:
        feedback = check(wrong)
        assert feedback.correct is False and hint in feedback.message, (wrong, feedback)
    for odd in (None, "", "two", [1, 2], float("nan"), {}):
        assert check(odd).correct in (None, False)


def test_ex2_measurements_lie_within_the_accepted_range_and_below_mean_field():
    """Exercise 2's measuring cell: Var(w) = 3/n, 30 layers; 249 / 102 / 317 over seeds 0-2. Every seed
    0-11 is accepted (102 to 449 over seeds 0-19), and their geometric mean lies below the mean-field
    1.5**14.5, near the Jensen-corrected 1.5**14.5 * exp(-29/64) = 227 (measured 248 over 20 seeds)."""
    ds = data.spirals(512, seed=0)
    ratios = []
    for seed in range(12):
        net = models.mlp(30, 64, activation="relu", init="normal", weight_std=math.sqrt(3), seed=seed)
        signal = probe_once(net, ds).get("output_grad_norm")[0]
        ratios.append(signal[0] / signal[29])
        assert exercises.relu_first_to_last(ratios[-1]).correct is True, (seed, ratios[-1])
    assert ratios[0] == pytest.approx(249.0, rel=0.02) and ratios[1] == pytest.approx(102.0, rel=0.02)
    typical = math.exp(np.mean(np.log(ratios)))
    assert typical < 0.85 * 1.5 ** 14.5 and 0.7 < typical / (1.5 ** 14.5 * math.exp(-29 / 64)) < 1.4


def test_ex3_leaky_relu_measurement_is_accepted():
    """Exercise 3's measuring cell: leaky ReLU a = 0.5 at He's init, 20 layers of width 64; 1.071 to
    1.130 per layer over seeds 0-9 against √1.25 = 1.118."""
    ds = data.spirals(512, seed=0)
    for seed in range(3):
        net = models.mlp(20, 64, activation="leaky_relu", init="normal", weight_std=math.sqrt(2), seed=seed)
        for module in net.modules():
            if isinstance(module, torch.nn.LeakyReLU):
                module.negative_slope = 0.5
        signal = probe_once(net, ds).get("output_grad_norm")[0]
        factor = (signal[0] / signal[19]) ** (1 / 19)
        assert 1.05 < factor < 1.15 and exercises.leaky_relu_factor(factor).correct is True


# -- the sharpness (the Hessian's top eigenvalue) against the full Hessian -----------------------------
def test_top_hessian_eigenvalue_matches_the_full_hessian_of_a_tiny_model():
    """Power iteration on Hessian-vector products against torch.autograd.functional.hessian's full
    matrix, eigenvalues by numpy: a 2-4-2 tanh MLP on 16 spiral points (34 parameters)."""
    from torch.func import functional_call

    from gradcourse.measurements import top_hessian_eigenvalue

    ds = data.spirals(16, seed=1)
    net = models.mlp(1, 4, activation="tanh", init="xavier", seed=3).double()
    x = ds.x.double()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_of(vector):
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = vector[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return torch.nn.functional.cross_entropy(functional_call(net, params, (x,)), ds.y)

    hessian = torch.autograd.functional.hessian(loss_of, flat).numpy()
    eigenvalues = np.linalg.eigvalsh(hessian)
    largest = eigenvalues[np.argmax(np.abs(eigenvalues))]
    found = top_hessian_eigenvalue(lambda: torch.nn.functional.cross_entropy(net(x), ds.y),
                                   list(net.parameters()), iters=500, rtol=1e-10)
    assert found.value == pytest.approx(largest, rel=1e-6)
    # the eigenvector: H v = λ v, checked with the full matrix
    v = torch.cat([t.reshape(-1) for t in found.vector]).numpy()
    assert np.allclose(hessian @ v, largest * v, atol=1e-5 * abs(largest))
    # warm start from the eigenvector: converges at once
    again = top_hessian_eigenvalue(lambda: torch.nn.functional.cross_entropy(net(x), ds.y),
                                   list(net.parameters()), start=found.vector)
    assert again.products <= 3 and again.value == pytest.approx(largest, rel=1e-6)


def test_top_hessian_eigenvalue_keeps_the_sign_and_refuses_nothing_to_measure():
    from gradcourse.measurements import top_hessian_eigenvalue

    w = torch.tensor([1.0, 1.0], requires_grad=True)
    saddle = top_hessian_eigenvalue(lambda: 0.5 * (w[0] ** 2 - 7 * w[1] ** 2), [w], rtol=1e-8)
    assert saddle.value == pytest.approx(-7.0, rel=1e-6)
    with pytest.raises(ValueError, match="params"):
        top_hessian_eigenvalue(lambda: w.sum(), [torch.zeros(2)])


def test_sharpness_figure_is_titled_labelled_and_inside_its_figure():
    from test_plots import texts_outside

    from gradcourse.widgets.lesson02 import sharpness_figure

    steps = np.arange(0, 150, 10)
    fig = sharpness_figure(steps, np.geomspace(26, 0.5, len(steps)), 0.8, title="He init, lr 0.8",
                           shade=np.arange(150) > 100, shade_label="loss on the ln 2 plateau")
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and "log scale" in ax.get_ylabel() and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("2/lr = 2.5" in label for label in labels) and "loss on the ln 2 plateau" in labels
    assert texts_outside(fig, 100) == []
