"""Lesson 05 (skip connections): the residual model factory, explorer, exercise checks and
theory against measurements."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _tools import assert_registered
from matplotlib.figure import Figure
from torch import nn

from gradcourse import data, models, theory
from gradcourse.probes import Probe, probe_once
from gradcourse.widgets.lesson05 import ResidualExplorer, signal_theory


@pytest.fixture(scope="module")
def spirals():
    return data.spirals(256, seed=0)


def test_registered():
    assert_registered("05_resnet", ResidualExplorer)
    assert ResidualExplorer.manual


def test_resnet_mlp_layers_names_and_config():
    net = models.resnet_mlp(25, 32, batchnorm=True, seed=3)
    linears = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 52
    assert linears == [f"layer{k}" for k in range(1, 52)] + ["head"]
    assert net.config == dict(kind="resnet_mlp", blocks=25, width=32, activation="relu", batchnorm=True,
                              residual=True, in_features=2, out_features=2, seed=3)
    same = models.resnet_mlp(25, 32, batchnorm=True, seed=3)
    assert torch.equal(net.layer7.weight, same.layer7.weight)
    assert len(net.hidden_layers()) == 51


def test_resnet_mlp_is_x_plus_f_of_x():
    net = models.resnet_mlp(1, 4, seed=0)
    x = torch.randn(5, 2)
    h = torch.relu(net.layer1(x))
    expected = net.head(h + net.layer3(torch.relu(net.layer2(h))))
    assert torch.allclose(net(x), expected)
    plain = models.resnet_mlp(1, 4, residual=False, seed=0)
    expected = plain.head(torch.relu(plain.layer3(torch.relu(plain.layer2(h)))))
    assert torch.allclose(plain(x), expected)




@pytest.mark.parametrize("residual", [True, False])
def test_forward_composes_the_modules_by_name_and_follows_a_replaced_one(residual):
    # forward looks its modules up by their names (issue 24: no per-layer name formatting): the same
    # function as composing them by hand, BN included, and a module replaced after construction is used.
    def by_hand(net, x):
        h = net.act1(net.bn1(net.layer1(x)))
        for b in (1, 2, 3):
            f = getattr(net, f"bn{2 * b + 1}")(getattr(net, f"layer{2 * b + 1}")(
                getattr(net, f"act{2 * b}")(getattr(net, f"bn{2 * b}")(getattr(net, f"layer{2 * b}")(h)))))
            h = h + f if residual else getattr(net, f"act{2 * b + 1}")(f)
        return net.head(h)

    def plain_by_hand(net, x):
        a = net.act1(net.bn1(net.layer1(x)))
        for k in (2, 3):
            z = getattr(net, f"act{k}")(getattr(net, f"bn{k}")(getattr(net, f"layer{k}")(a)))
            a = a + z if residual else z
        return net.head(a)

    x = torch.randn(6, 2)
    for build, reference, swap in ((lambda: models.resnet_mlp(3, 8, batchnorm=True, residual=residual, seed=1),
                                    by_hand, ("act4",) if residual else ("act4", "act5")),
                                   (lambda: models.mlp(3, 8, activation="relu", batchnorm=True, residual=residual,
                                                       seed=1), plain_by_hand, ("act2",))):
        net = build().eval()
        assert torch.equal(net(x), reference(net, x))
        for name in swap:
            setattr(net, name, nn.Tanh())
        assert torch.equal(net(x), reference(net, x))
        assert not torch.allclose(net(x), build().eval()(x))


@pytest.mark.parametrize("bad", [{"blocks": 0}, {"width": 0}, {"batchnorm": 1}, {"residual": "no"},
                                 {"activation": "swish"}])
def test_resnet_mlp_rejects_bad_args(bad):
    kwargs = dict(blocks=2, width=8)
    kwargs.update(bad)
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        models.resnet_mlp(**kwargs)


def test_probe_tracks_every_layer_with_activations(spirals):
    net = models.resnet_mlp(3, 8, seed=0)
    with Probe(net) as probe:
        nn.functional.cross_entropy(net(spirals.x), spirals.y).backward()
    trace = probe.trace
    assert trace.layers == [f"layer{k}" for k in range(1, 8)] + ["head"]
    assert np.isfinite(trace.get("act_std")[0]).all()
    assert np.isfinite(trace.get("dead_frac")[0, [0, 1, 3, 5]]).all()   # the ReLUs: stem, block firsts


def test_explorer_default_probe_only_is_flat():
    result = ResidualExplorer().run()
    assert isinstance(result.figure, Figure) and not result.runs
    assert result.values["hidden_layers"] == 51
    assert 0.3 < result.values["signal_ratio"] < 5


def test_explorer_plain_vanishes_and_bn_plain_explodes():
    explorer = ResidualExplorer()
    assert explorer.run(residual=False).values["signal_ratio"] < 1e-15
    assert explorer.run(residual=False, batchnorm=True).values["grad_ratio"] > 1e3


def test_explorer_trains_on_request():
    result = ResidualExplorer().run(depth=10, residual=False, steps=100)
    assert result.values["final_loss"] < 0.3
    assert len(result.figure.axes) == 2


@pytest.mark.parametrize("bad", [{"depth": 51}, {"depth": 2}, {"steps": 1000}, {"residual": 1}])
def test_explorer_rejects_bad_params(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        ResidualExplorer().run(**bad)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_plain_factor_matches_measurement(spirals, seed):
    """Fitted per-layer factor of the signal in plain-50 (no BN): √(1/6) within 10%."""
    signal = probe_once(models.mlp(50, 32, activation="relu", seed=seed), spirals.x, spirals.y).get(
        "output_grad_norm")[0]
    factor = math.exp(-np.polyfit(np.arange(50), np.log(signal[:50]), 1)[0])
    assert factor == pytest.approx(theory.small_signal_factor("relu", "default", 32), rel=0.1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_residual_profile_matches_measurement(spirals, seed):
    """Every hidden layer's signal in res-50 (no BN) within a factor 3 of signal_theory."""
    signal = probe_once(models.resnet_mlp(25, 32, seed=seed), spirals.x, spirals.y).get("output_grad_norm")[0]
    measured = signal[:51] / signal[50]
    assert np.all(np.abs(np.log10(measured / signal_theory(50, True))) < math.log10(3))



def _parts(widget):
    """The view's controls by description and its Run button, found in the widget tree."""
    import ipywidgets as w

    found, stack = {}, [widget]
    while stack:
        item = stack.pop()
        stack.extend(getattr(item, "children", ()))
        if isinstance(item, w.Button):
            found["Run"] = item
        elif hasattr(item, "description") and hasattr(item, "value"):
            found[item.description] = item
    return found


def test_the_same_explorer_shown_twice_reads_each_views_own_controls():
    pytest.importorskip("ipywidgets")
    explorer = ResidualExplorer()
    first, second = _parts(explorer.show()), _parts(explorer.show())
    depth = "hidden layers (plain) / 2 × blocks"
    first[depth].value, second[depth].value = 10, 20
    first["Run"].click()
    assert explorer.last_result.params["depth"] == 10
    second["Run"].click()
    assert explorer.last_result.params["depth"] == 20


def test_a_control_change_redraws_the_preview_and_says_training_waits():
    pytest.importorskip("ipywidgets")
    explorer = ResidualExplorer()
    parts = _parts(explorer.show())
    parts["training steps (0 = probe only)"].value = 100      # a change: preview, no training
    result = explorer.last_result
    assert result.params["steps"] == 0 and not result.runs
    assert "press Run" in result.notice and not result.figure.get_supxlabel()
    parts["skip connections"].value = False                    # every control redraws the preview
    assert explorer.last_result.params["residual"] is False and "Run button" in explorer.last_result.notice
    parts["Run"].click()                                       # the Run button trains
    assert explorer.last_result.params["steps"] == 100 and "run" in explorer.last_result.runs
    assert not explorer.last_result.notice


# -- the exercise checks (expected values are literals measured in the lesson) -----------------

def test_plain30_ratio_check_against_the_measurement(spirals):
    from gradcourse import exercises

    signal = probe_once(models.mlp(30, 32, activation="relu", seed=0), spirals.x, spirals.y).get("output_grad_norm")[0]
    measured = signal[0] / signal[29]
    assert measured == pytest.approx(1.82e-11, rel=0.05)
    for right in (measured, 5.21e-12, "(1/6)**14.5", 7.05e-13 * 2):
        assert exercises.resnet_plain30_ratio(right).correct is True
    for wrong in (8.6e-20, 0.41**49, 1e-5, 0.41 * 29):
        feedback = exercises.resnet_plain30_ratio(wrong)
        assert feedback.correct is False and "29 steps" in feedback.message
    assert exercises.resnet_plain30_ratio(None).correct is None
    assert exercises.resnet_plain30_ratio("1e-12, 2e-12").correct is False


def test_he_branch_factor_check_against_the_measurement(spirals):
    from gradcourse import exercises

    net = models.resnet_mlp(10, 32, seed=0)
    for m in [m for m in net.modules() if isinstance(m, nn.Linear)][1:-1]:   # the branch layers
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    signal = probe_once(net, spirals.x, spirals.y).get("output_grad_norm")[0]
    per_block = (signal[2] / signal[20]) ** (1 / 9)       # the stream: each block's second layer
    assert per_block == pytest.approx(1.836, rel=0.01)
    for right in (per_block, 1.7321, "3**0.5", "sqrt(3)", "√3"):   # square roots are read (issue 22 §2.10)
        assert exercises.resnet_he_branch_factor(right).correct is True
    for wrong in (1.0274, 2, 3):
        assert exercises.resnet_he_branch_factor(wrong).correct is False
    assert "n·Var(w) = 2" in exercises.resnet_he_branch_factor(1.0274).message


@pytest.mark.parametrize("residual, name", [
    (True, "res-60 (a stem and 30 residual blocks of 2 layers), ReLU, width 32"),
    (False, "plain-60 (60 hidden layers), ReLU, width 32"),
])
def test_the_title_reads_as_the_slider_at_its_end(residual, name):
    """The slider at 60 titled the residual network "61 hidden layers" (the stem counted): the
    title now names what the slider set, and the probe still sees stem + 60 (+ the head)."""
    result = ResidualExplorer().run(depth=60, residual=residual)
    assert result.figure._suptitle.get_text() == name
    assert result.summary.startswith(name.split(", ReLU")[0] + ":")
    assert result.values["hidden_layers"] == (61 if residual else 60)
