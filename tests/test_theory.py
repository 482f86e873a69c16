"""gradcourse.theory (lessons 00 and 01) against measurements: autograd on real scalar chains and
probes on real MLPs. Tolerances are stated per test; every comparison runs over several seeds."""

import math

import numpy as np
import pytest
import torch

from gradcourse import data, models, theory
from gradcourse.probes import Probe
from gradcourse.widgets.lesson00 import chain_gradients

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def spirals():
    return data.spirals(512, seed=0)


def signal_at_init(net, x, y):
    with Probe(net) as probe:
        torch.nn.functional.cross_entropy(net(x), y).backward()
    return probe.trace.get("output_grad_norm")[0, : net.depth].astype(float)


def geometric_mean_factor(signal):
    return (signal[0] / signal[-1]) ** (1 / (len(signal) - 1))


# -- lesson 00: the scalar chain -----------------------------------------------------------------
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "linear"])
@pytest.mark.parametrize("w", [-3.0, 0.5, 2.0, 4.0, 5.0])
def test_scalar_chain_matches_autograd_at_z0(activation, w):
    measured, z = chain_gradients(w, 25, activation)
    assert np.all(z == 0)
    np.testing.assert_allclose(measured, theory.scalar_chain(w, 25, activation), rtol=1e-12)


def test_scalar_chain_vanishes_below_and_explodes_above_the_critical_weight():
    for activation in ("sigmoid", "tanh"):
        w_c = theory.critical_weight(activation)
        assert theory.scalar_chain(0.9 * w_c, 50, activation)[0] < 0.01
        assert theory.scalar_chain(1.1 * w_c, 50, activation)[0] > 100
        assert theory.scalar_chain(w_c, 50, activation)[0] == pytest.approx(1.0)


def test_scalar_chain_prediction_is_an_upper_bound_for_sigmoid_off_zero():
    # sigma'(z) <= sigma'(0): a chain pushed off z = 0 passes less gradient than predicted.
    for offset in (-2.0, 0.5, 2.0):
        measured, _ = chain_gradients(2.0, 20, "sigmoid", offset)
        assert measured[0] < theory.scalar_chain(2.0, 20, "sigmoid")[0]


def test_activation_slopes_agree_with_autograd():
    z = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    for name, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("gelu", torch.nn.functional.gelu)):
        slope = torch.autograd.grad(fn(z).sum(), z)[0].numpy()
        np.testing.assert_allclose(theory.activation_slope(name, z.detach().numpy()), slope, atol=1e-12)
    assert theory.activation_slope("relu", -1.0) == 0.0 and theory.activation_slope("relu", 2.0) == 1.0


# -- lesson 01: the per-layer factor of an MLP ---------------------------------------------------
# (activation, init, weight_std, weight scale, tolerance on the geometric-mean factor)
CASES = [
    ("sigmoid", "default", None, 1.0, 0.06),
    ("sigmoid", "xavier", None, 1.0, 0.06),
    ("sigmoid", "default", None, 4.0, 0.06),   # larger weights: pre-activations no longer small
    ("sigmoid", "default", None, 8.0, 0.10),   # partly saturated
    ("tanh", "default", None, 1.0, 0.06),
    ("tanh", "xavier", None, 1.0, 0.06),
    ("relu", "default", None, 1.0, 0.10),
    ("relu", "kaiming", None, 1.0, 0.06),
    ("relu", "normal", 2 * math.sqrt(2), 1.0, 0.06),   # twice He's scale: ×2 per layer
]


@pytest.mark.parametrize("activation,init,weight_std,scale,tol", CASES)
def test_mean_field_factor_matches_probe_over_seeds(spirals, activation, init, weight_std, scale, tol):
    depth, width = 20, 64
    m2 = float((spirals.x**2).sum(dim=1).mean())
    _, factors = theory.signal_factors(depth, width, activation=activation, init=init, weight_std=weight_std,
                                       input_second_moment=m2, weight_scale=scale)
    predicted = float(np.exp(np.mean(np.log(factors))))
    measured = []
    for seed in SEEDS:
        net = models.mlp(depth, width, activation=activation, init=init, weight_std=weight_std, seed=seed)
        with torch.no_grad():
            for layer in net.hidden_layers():
                layer.weight.mul_(scale)
        measured.append(geometric_mean_factor(signal_at_init(net, spirals.x, spirals.y)))
    mean = float(np.exp(np.mean(np.log(measured))))
    assert mean == pytest.approx(predicted, rel=tol), (measured, predicted)


def test_small_signal_factor_values_and_design_physics(spirals):
    # DESIGN.md: sigmoid-20 with the default init loses ~1e-16 first/last; ReLU + He stays near 1.
    chi = theory.small_signal_factor("sigmoid", "default", 64)
    assert chi == pytest.approx(0.25 / math.sqrt(3))
    assert 1e-17 < chi**19 < 1e-15
    assert theory.small_signal_factor("relu", "kaiming", 64) == pytest.approx(1.0)
    # ReLU with Var(w) = c·2/fan_in: the signal changes by sqrt(c) per layer.
    for c in (0.5, 2.0, 4.0):
        assert theory.small_signal_factor("relu", "normal", 64, weight_std=math.sqrt(2 * c)) == pytest.approx(
            math.sqrt(c))
    ratios = [signal_at_init(models.mlp(20, 64, activation="sigmoid", seed=s), spirals.x, spirals.y)
              for s in SEEDS]
    for signal in ratios:
        assert 1e-18 < signal[0] / signal[-1] < 1e-15


def test_predict_signal_tracks_every_layer(spirals):
    m2 = float((spirals.x**2).sum(dim=1).mean())
    for seed in SEEDS:
        net = models.mlp(20, 64, activation="sigmoid", seed=seed)
        signal = signal_at_init(net, spirals.x, spirals.y)
        predicted = theory.predict_signal(net.config, last=signal[-1], input_second_moment=m2)
        assert predicted[-1] == pytest.approx(signal[-1])
        # per layer within a factor 3 over 19 layers spanning 16 orders of magnitude
        assert np.all(np.abs(np.log10(signal / predicted)) < math.log10(3))


def test_depth_for_ratio_matches_measurement(spirals):
    chi = theory.small_signal_factor("sigmoid", "default", 64)
    depth = theory.depth_for_ratio(1e-8, chi)
    assert depth == 11
    assert chi ** (depth - 1) < 1e-8 <= chi ** (depth - 2)
    for seed in SEEDS:
        deep = signal_at_init(models.mlp(depth, 64, activation="sigmoid", seed=seed), spirals.x, spirals.y)
        shallow = signal_at_init(models.mlp(depth - 2, 64, activation="sigmoid", seed=seed), spirals.x, spirals.y)
        assert deep[0] / deep[-1] < 1e-8 < shallow[0] / shallow[-1]


@pytest.mark.parametrize("call, name", [
    (lambda: theory.scalar_chain(2.0, 0), "depth"),
    (lambda: theory.chain_factor("big"), "w"),
    (lambda: theory.activation_slope("swish", 0.0), "activation"),
    (lambda: theory.weight_variance("he", 4, 4), "init"),
    (lambda: theory.weight_variance("normal", 4, 4), "weight_std"),
    (lambda: theory.signal_factors(5, 8, weight_scale=0.0), "weight_scale"),
    (lambda: theory.depth_for_ratio(2.0, 0.5), "threshold"),
    (lambda: theory.predict_signal({"kind": "sequence"}), "config"),
])
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
