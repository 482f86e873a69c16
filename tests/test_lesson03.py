"""Lesson 03: the clipping explorer, the cliff toy, the clipping theory and the exercise checks."""


import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gradcourse import data, exercises, models, remedies, theory
from gradcourse.widgets.lesson03 import ClippingExplorer, cliff_figure, descend, train_patient


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


def test_explorer_keeps_each_setting_s_run_and_trains_it_as_train_patient_does():
    explorer = ClippingExplorer()
    first = explorer.run(threshold=0.3, lr=0.3)
    again = explorer.run(threshold=0.3, lr=0.3)
    assert again.runs["clipped"] is first.runs["clipped"]            # a setting seen before: kept
    assert again.runs["no clipping"] is first.runs["no clipping"]
    other = ClippingExplorer().run(method="value", threshold=0.3, lr=0.3)
    assert other.runs["clipped"] is not first.runs["clipped"]        # another method: its own run
    assert other.runs["no clipping"] is first.runs["no clipping"]    # the unclipped run depends on lr only
    fresh = train_patient(0.3, remedies.clip_norm(0.3))
    assert np.array_equal(first.runs["clipped"].losses, fresh.losses)
    assert np.array_equal(first.runs["clipped"].clipped, fresh.clipped)
    assert first.values["final_loss"] == fresh.losses[-1]


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


# -- exercise 4 (code): clip by norm by hand, checked against torch.nn.utils.clip_grad_norm_ ----------
def _by_hand(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.sqrt(sum((g ** 2).sum() for g in grads)).item()
    for g in grads:
        g.mul_(min(1.0, max_norm / (total + 1e-6)))
    return total


def test_clip_by_norm_exercise_accepts_a_hand_written_clip():
    feedback = exercises.clip_by_norm_function(_by_hand)
    assert feedback.correct is True and "26.18" in feedback.message      # lesson 02's patient at step 0


def test_clip_by_norm_exercise_explains_each_wrong_answer():
    def always_scales(parameters, max_norm):             # forgets min(1, ...): shrinks even below the threshold
        grads = [p.grad for p in parameters]
        total = torch.sqrt(sum((g ** 2).sum() for g in grads)).item()
        for g in grads:
            g.mul_(max_norm / total)
        return total

    def per_parameter(parameters, max_norm):              # clips each tensor on its own, adds the norms
        norms = [p.grad.norm().item() for p in parameters]
        for p, n in zip(parameters, norms):
            p.grad.mul_(min(1.0, max_norm / (n + 1e-6)))
        return sum(norms)

    def after_clipping(parameters, max_norm):
        _by_hand(parameters, max_norm)
        return torch.sqrt(sum((p.grad ** 2).sum() for p in parameters)).item()

    def not_in_place(parameters, max_norm):
        total = torch.sqrt(sum((p.grad ** 2).sum() for p in parameters)).item()
        for p in parameters:
            g = p.grad * min(1.0, max_norm / total)        # a new tensor: p.grad is unchanged
            del g
        return total

    cases = {always_scales: "min(1, max_norm", per_parameter: "ALL gradients",
             after_clipping: "after clipping", not_in_place: "in place",
             (lambda ps, t: torch.nn.utils.clip_grad_norm_(ps, t)): "by hand",
             (lambda ps, t: 1 / 0): "ZeroDivisionError", (lambda ps, t: "big"): "one number"}
    for function, words in cases.items():
        feedback = exercises.clip_by_norm_function(function)
        assert feedback.correct is False and words in feedback.message, (words, feedback)
    assert torch.nn.utils.clip_grad_norm_.__name__ == "clip_grad_norm_"     # the spy is gone again


def test_clip_by_norm_exercise_skeleton_and_odd_answers():
    def skeleton(parameters, max_norm):
        grads = [p.grad for p in parameters if p.grad is not None]  # noqa: F841
        total = ...
        return total

    assert exercises.clip_by_norm_function(skeleton).correct is None
    assert "Fill in" in exercises.clip_by_norm_function(None).message
    for odd in (3.0, "clip_by_norm", [_by_hand], 26.18):
        feedback = exercises.clip_by_norm_function(odd)
        assert feedback.correct is False and "without brackets" in feedback.message


def test_edge_of_stability_on_seed_0_and_not_on_seed_1():
    """Lesson 03's spikes: the healthy run at lr 0.2 (seed 0) hovers at sharpness 2/lr = 10 and spikes;
    seed 1 stays below the edge and does not. The core's sharpness_along retrains train_patient's run
    step for step. Measured with AVX2 and the portable kernels (256 points, the lesson's 150 steps): seed 0
    median 9.3-11.4 from step 50, worst loss after step 50 0.080; seed 1 median 0.46-0.53, worst 0.0036-0.0042."""
    from gradcourse.train import sharpness_along
    from gradcourse.widgets.lesson03 import STEPS, patient, patient_data

    edge = {seed: sharpness_along(patient(1.0, seed=seed), patient_data(seed), steps=STEPS, lr=0.2,
                                  at=range(0, STEPS, 10), rtol=1e-2) for seed in (0, 1)}
    late = {seed: np.median(run.sharpness[run.steps >= 50]) for seed, run in edge.items()}
    assert 7 < late[0] < 13 and late[1] < 3
    assert edge[0].losses[50:].max() > 0.02 > 0.01 > edge[1].losses[50:].max()
    assert np.array_equal(edge[0].losses, train_patient(lr=0.2, scale=1.0).losses)
