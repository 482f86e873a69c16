"""Lesson 04 (BatchNorm): explorer, exercise checks and theory against measurements."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _tools import assert_registered
from matplotlib.figure import Figure

from gradcourse import data, models, theory
from gradcourse.widgets.lesson04 import (
    BatchNormExplorer,
    batch_spread,
    gradient_at_init,
    gradient_parts,
    training_loss,
)


def test_registered():
    assert_registered("04_batchnorm", BatchNormExplorer)


def test_explorer_defaults_train_with_bn():
    result = BatchNormExplorer().run()
    assert isinstance(result.figure, Figure)
    assert result.values["final_loss"] < 0.05          # BN sigmoid net fits the spirals
    assert result.values["test_accuracy"] > 0.9
    assert result.values["grad_ratio"] > 1             # with BN the first layer gets more, not less


def test_explorer_without_bn_vanishes_and_stalls():
    result = BatchNormExplorer().run(batchnorm=False, steps=100)
    assert result.values["signal_ratio"] < 1e-6
    assert abs(result.values["per_layer"] - theory.small_signal_factor("sigmoid", "default", 32)) < 0.02
    assert abs(result.values["final_loss"] - math.log(2)) < 0.01


def test_explorer_probe_only_has_one_panel():
    result = BatchNormExplorer().run(steps=0, activation="relu", depth=30)
    assert "final_loss" not in result.values and not result.runs
    assert len(result.figure.axes) == 1
    assert result.values["grad_ratio"] > 20            # ReLU+BN: growth toward the input


@pytest.mark.parametrize("bad", [{"depth": 1}, {"activation": "swish"}, {"batch_size": 3},
                                 {"lr": 5.0}, {"steps": -1}, {"batchnorm": "yes"}])
def test_explorer_rejects_bad_params(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        BatchNormExplorer().run(**bad)


def test_batch_spread_collapses_without_bn():
    x = data.spirals(256, seed=0).x
    plain = batch_spread(models.mlp(10, 32, activation="sigmoid", seed=0), x)
    normed = batch_spread(models.mlp(10, 32, activation="sigmoid", batchnorm=True, seed=0), x)
    assert plain[-1] < 1e-5 * plain[0]
    assert normed.min() > 0.1


def test_running_update_matches_torch():
    bn = torch.nn.BatchNorm1d(1)
    z = torch.tensor([[1.0], [2.0], [6.0]])
    for _ in range(3):
        bn(z)
    expected = 0.0
    for _ in range(3):
        expected = theory.batchnorm_running_update(expected, 3.0)
    assert bn.running_mean.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_yang_growth_matches_measurement(seed):
    """The fitted per-layer factor of ‖∂L/∂W‖ over the middle layers of a 40-layer ReLU+BN net
    agrees with √(π/(π−1)) within 5%."""
    spirals = data.spirals(256, seed=0)
    grads, _, _ = gradient_at_init(models.mlp(40, 64, activation="relu", batchnorm=True, seed=seed), spirals)
    middle = np.arange(2, 40)
    factor = math.exp(-np.polyfit(middle, np.log(grads[1:39]), 1)[0])
    assert factor == pytest.approx(theory.batchnorm_relu_growth(), rel=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigmoid_factor_matches_measurement(seed):
    spirals = data.spirals(256, seed=0)
    _, signal, _ = gradient_at_init(models.mlp(10, 32, activation="sigmoid", seed=seed), spirals)
    measured = (signal[0] / signal[9]) ** (1 / 9)
    assert measured == pytest.approx(theory.small_signal_factor("sigmoid", "default", 32), rel=0.15)


def test_small_batches_report_the_whole_training_set_loss_not_the_last_batch():
    """With batches of 2 the last mini-batch's loss can be anything (even ~0); the explorer
    reports the loss of the whole training set in eval mode and names the other one."""
    result = BatchNormExplorer().run(batch_size=2, steps=100)
    v = result.values
    expected = training_loss(result.runs["run"].model, data.cached_spirals(256))
    assert v["final_loss"] == pytest.approx(expected)
    assert v["final_loss"] != pytest.approx(v["last_batch_loss"])
    assert "whole training set" in result.summary and "last mini-batch of 2" in result.summary
    loss_axes = result.figure.axes[1]
    assert any("mini-batch of 2" in line.get_label() for line in loss_axes.lines)


def test_training_waits_for_run_in_the_ui_preview():
    result = BatchNormExplorer().run_preview(depth=40, steps=400)
    assert result.params["steps"] == 0 and not result.runs and len(result.figure.axes) == 1
    assert "press Run" in result.notice and not result.figure.get_supxlabel()


# -- the exercise checks (expected values are literals measured in the lesson) -----------------

def test_tanh_default_ratio_check_right_wrong_odd():
    from gradcourse import exercises

    spirals = data.spirals(256, seed=0)
    _, signal, _ = gradient_at_init(models.mlp(10, 32, activation="tanh", seed=0), spirals)
    measured = signal[0] / signal[9]
    assert measured == pytest.approx(5.0e-3, rel=0.05)                     # what the notebook measures
    for right in (measured, 0.0071, "(1/3)**4.5", 3.1e-3):
        assert exercises.bn_tanh_default_ratio(right).correct is True
    for wrong in (0.144**9, 0.25**9, 0.0625, 0.02):
        feedback = exercises.bn_tanh_default_ratio(wrong)
        assert feedback.correct is False and "tanh'(0) = 1" in feedback.message
    assert exercises.bn_tanh_default_ratio(None).correct is None
    assert exercises.bn_tanh_default_ratio("abc").correct is False
    assert "positive" in exercises.bn_tanh_default_ratio(-0.007).message


def test_bn_relu_growth_ratio_accepts_the_formula_and_the_measurement():
    from gradcourse import exercises

    spirals = data.spirals(256, seed=0)
    grads, _, _ = gradient_at_init(models.mlp(30, 64, activation="relu", batchnorm=True, seed=0), spirals)
    assert grads[0] / grads[29] == pytest.approx(87.9, rel=0.02)
    for right in (grads[0] / grads[29], 259, "1.211**29", 101):
        assert exercises.bn_relu_growth_ratio(right).correct is True
    assert "29 layer-to-layer steps" in exercises.bn_relu_growth_ratio(1.211**39).message
    assert "too small" in exercises.bn_relu_growth_ratio(30).message
    assert exercises.bn_relu_growth_ratio([259, 95]).correct is False


def _bn_solution(z, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    if training:
        mean, var = z.mean(dim=0), z.var(dim=0, unbiased=False)
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * z.var(dim=0, unbiased=True)
    else:
        mean, var = running_mean, running_var
    return gamma * (z - mean) / torch.sqrt(var + eps) + beta, running_mean, running_var


def _bn_variant(**mistake):
    """The solution with one classic mistake."""
    def forward(z, gamma, beta, running_mean, running_var, training):
        if training or mistake.get("batch_stats_in_eval"):
            dim = 1 if mistake.get("layernorm") else 0
            mean = z.mean(dim=dim, keepdim=True)
            var = z.var(dim=dim, unbiased=bool(mistake.get("unbiased")), keepdim=True)
            if training:
                m = 0.9 if mistake.get("momentum_reversed") else 0.1
                running_mean = (1 - m) * running_mean + m * z.mean(dim=0)
                running_var = (1 - m) * running_var + m * z.var(dim=0, unbiased=not mistake.get("biased_running"))
        else:
            mean, var = running_mean, running_var
        return gamma * (z - mean) / torch.sqrt(var + 1e-5) + beta, running_mean, running_var
    return forward


def test_batchnorm_forward_check_right():
    from gradcourse import exercises

    feedback = exercises.batchnorm_forward(_bn_solution)
    assert feedback.correct is True and "eval mode" in feedback.message
    assert exercises.batchnorm_forward(_bn_variant()).correct is True
    z = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 0.0]])        # the lesson's worked batch
    out, mean, var = _bn_solution(z, torch.ones(2), torch.zeros(2), torch.zeros(2), torch.ones(2), True)
    assert out[:, 0].tolist() == pytest.approx([-1.069, -0.535, 0.0, 1.604], abs=1e-3)
    assert mean.tolist() == pytest.approx([0.3, 1.5])
    assert var.tolist() == pytest.approx([0.9 + 0.1 * 14 / 3, 0.9 + 50 / 3])     # unbiased: 14/3 and 500/3


@pytest.mark.parametrize("mistake, words", [
    ({"unbiased": True}, "BIASED"),
    ({"layernorm": True}, "LayerNorm"),
    ({"momentum_reversed": True}, "other way"),
    ({"biased_running": True}, "UNBIASED batch variance"),
    ({"batch_stats_in_eval": True}, "running mean and variance"),
])
def test_batchnorm_forward_check_names_the_mistake(mistake, words):
    from gradcourse import exercises

    feedback = exercises.batchnorm_forward(_bn_variant(**mistake))
    assert feedback.correct is False and feedback.message.startswith("Not quite") and words in feedback.message


def test_batchnorm_forward_check_odd_answers():
    from gradcourse import exercises

    assert exercises.batchnorm_forward(None).correct is None
    assert "without brackets" in exercises.batchnorm_forward(3).message
    assert "raised ZeroDivisionError" in exercises.batchnorm_forward(lambda *a: 1 / 0).message
    assert "three tensors" in exercises.batchnorm_forward(lambda *a: a[0]).message
    assert "shape" in exercises.batchnorm_forward(lambda z, g, b, m, v, t: (z[:1], m, v)).message


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_gradient_parts_split_the_weight_gradient(activation):
    """‖∂L/∂W_k‖ = ‖δ_k‖·‖h̄_{k-1}‖·a_k, with δ and h from hooks of our own (not gradient_parts'), and
    the weight gradient against the probe's; BN's backward leaves δ with no batch mean."""
    spirals = data.spirals(n=128, seed=1)
    net = models.mlp(6, 16, activation=activation, batchnorm=True, seed=1)
    parts = gradient_parts(net, spirals)
    grads, signal, _ = gradient_at_init(net, spirals)
    np.testing.assert_allclose(parts["weight"], grads[:6], rtol=1e-5)
    np.testing.assert_allclose(parts["signal"], signal[:6], rtol=1e-5)
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach()))
             for m in net.modules() if isinstance(m, torch.nn.Linear)][:6]
    with torch.no_grad():
        net(spirals.x)
    for h in hooks:
        h.remove()
    centred = [float((h - h.mean(0)).norm()) for h in inputs[:6]]
    np.testing.assert_allclose(parts["input"], centred, rtol=1e-5)
    np.testing.assert_allclose(parts["weight"], parts["signal"] * parts["input"] * parts["alignment"], rtol=1e-4)
    assert np.all(parts["alignment"] <= 1 + 1e-9) and max(parts["dense"]) < 1e-4
    assert max(parts["mean_signal"]) < 1e-4 * max(parts["signal"])


def test_gradient_parts_without_bn_keep_the_batch_mean():
    """Without BN nothing removes δ's batch mean, and δᵀh̄ is not the weight gradient: the check sees it."""
    spirals = data.spirals(n=128, seed=1)
    parts = gradient_parts(models.mlp(4, 16, activation="sigmoid", seed=1), spirals)
    assert max(parts["dense"]) > 1e-2


def test_explorer_reports_both_per_layer_factors():
    values = BatchNormExplorer().run(steps=0).values
    assert values["grad_per_layer"] == pytest.approx(values["grad_ratio"] ** (1 / 9))
    assert values["per_layer"] == pytest.approx(values["signal_ratio"] ** (1 / 9))
    assert values["per_layer"] > values["grad_per_layer"] + 0.3     # sigmoid + BN: the signal grows faster


def _bn_backward_variant(drop):
    def backward(dy, z, gamma, eps=1e-5):
        sigma = torch.sqrt(z.var(0, unbiased=False) + eps)
        z_hat, g = (z - z.mean(0)) / sigma, (dy if drop == "gamma" else gamma * dy)
        result = g
        if drop not in ("mean", "both"):
            result = result - g.mean(0)
        if drop not in ("std", "both"):
            result = result - z_hat * (g * z_hat).mean(0)
        return result / sigma
    return backward


@pytest.mark.parametrize("drop, words", [(None, "Right"), ("both", "constants"), ("std", "batch std is missing"),
                                         ("mean", "batch mean is missing"), ("gamma", "multiply by γ")])
def test_batchnorm_backward_check_names_the_missing_path(drop, words):
    from gradcourse import exercises

    feedback = exercises.batchnorm_backward(_bn_backward_variant(drop))
    assert feedback.correct is (drop is None) and words in feedback.message, feedback.message


def test_batchnorm_backward_check_skeleton_and_odd_answers():
    from gradcourse import exercises

    def skeleton(dy, z, gamma, eps=1e-5):
        ...

    assert exercises.batchnorm_backward(skeleton).correct is None
    assert exercises.batchnorm_backward(None).correct is None
    assert exercises.batchnorm_backward(lambda dy, z, gamma: 1 / 0).correct is False
    assert exercises.batchnorm_backward(lambda dy, z, gamma: dy[:1]).correct is False
