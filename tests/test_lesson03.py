"""Lesson 03: the clipping explorer, the cliff toy, the clipping theory and the exercise checks."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gradcourse import data, models, remedies, theory
from gradcourse.widgets.lesson03 import ClippingExplorer, cliff_figure, descend


def test_explorer_default_rescues_the_diverging_run():
    result = ClippingExplorer().run()
    assert isinstance(result.figure, Figure)
    v = result.values
    assert v["reference_diverged_at"] is not None and v["diverged_at"] is None
    assert v["final_loss"] < 0.05 and v["test_accuracy"] > 0.9
    assert 0.02 < v["clipped_fraction"] < 0.5


def test_explorer_too_small_threshold_clips_everything_and_slows_training():
    v = ClippingExplorer().run(threshold=0.003).values
    assert v["diverged_at"] is None and v["clipped_fraction"] == 1.0
    assert v["final_loss"] > 20 * ClippingExplorer().run().values["final_loss"]


@pytest.mark.parametrize("bad, name", [({"method": "sign"}, "method"), ({"threshold": 0.0}, "threshold"),
                                       ({"lr": 5.0}, "lr")])
def test_explorer_rejects_bad_parameters(bad, name):
    with pytest.raises(ValueError, match=name):
        ClippingExplorer().run(**bad)


def test_cliff_descent_with_and_without_clipping():
    wild, tame = descend(), descend(clip=0.5)
    assert wild["norms"].max() > 20 and wild["path"][:, 0].min() < -15
    assert tame["path"][:, 0].min() >= -3.0 and tame["losses"][-1] < 1.0
    steps = np.linalg.norm(np.diff(tame["path"], axis=0), axis=1)
    assert steps.max() <= 0.5 + 1e-6                        # step length bounded by lr * threshold
    assert isinstance(cliff_figure({"a": wild, "b": tame}), Figure)
    with pytest.raises(ValueError, match="clip"):
        descend(clip=-1.0)


def test_clip_theory_matches_torch():
    rng = np.random.default_rng(0)
    for _ in range(5):
        g = rng.normal(size=6) * 3
        for method, t in (("norm", 1.0), ("value", 0.5)):
            p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
            p.grad = torch.tensor(g)
            remedies.Clipping(method, t).apply([p])
            expected = theory.clip_by_norm(g, t) if method == "norm" else theory.clip_by_value(g, t)
            assert np.allclose(p.grad.numpy(), expected)
            cosine = g @ expected / (np.linalg.norm(g) * np.linalg.norm(expected))
            assert abs(np.degrees(np.arccos(min(cosine, 1.0))) - theory.clip_angle(g, method, t)) < 1e-4
        assert theory.clip_angle(g, "norm", 1.0) == 0.0


def test_clipping_never_enlarges_a_vanishing_gradient():
    ds = data.spirals(256, seed=0)
    for seed in range(2):
        net = models.mlp(20, 32, activation="sigmoid", seed=seed)
        torch.nn.functional.cross_entropy(net(ds.x), ds.y).backward()
        before = net.layer1.weight.grad.norm().item()
        remedies.clip_norm(1e-3).apply(list(net.parameters()))
        assert net.layer1.weight.grad.norm().item() <= before
