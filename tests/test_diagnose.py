"""The gradient doctor on real runs of each kind, and the TensorBoard export read back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gradcourse
from gradcourse import data, models
from gradcourse import diagnose as diagnose_function
from gradcourse.diagnose import (
    DEAD_FRACTION,
    EXPLODING_SIGNAL_RATIO,
    PROBLEMS,
    SATURATION_FRACTION,
    VANISHING_SIGNAL_RATIO,
    Diagnosis,
    _num,
    diagnose,
)
from gradcourse.train import Run, fit

HE = math.sqrt(2.0)


@pytest.fixture(scope="module")
def spirals():
    return data.spirals(256, seed=0)


def _train(spirals, *, steps=60, lr=0.1, optimizer="sgd", bias=None, **config):
    model = models.mlp(**{"width": 32, "seed": 0, **config})
    if bias is not None:
        with torch.no_grad():
            for layer in model.hidden_layers():
                layer.bias.fill_(bias)
    return fit(model, spirals, steps=steps, lr=lr, optimizer=optimizer, progress=False)


@pytest.fixture(scope="module")
def runs(spirals):
    return {
        "vanishing": _train(spirals, depth=20, activation="sigmoid", lr=0.5, steps=40),
        "diverged": _train(spirals, depth=10, activation="relu", init="normal", weight_std=4 * HE),
        "exploding": _train(spirals, depth=10, activation="relu", init="normal", weight_std=2 * HE,
                            lr=1e-4, steps=30),
        "saturation": _train(spirals, depth=10, activation="tanh", init="normal", weight_std=4.0),
        "dead_killed": _train(spirals, depth=6, activation="relu", init="kaiming", lr=0.3,
                              optimizer="adam", steps=100),
        "dead_born": _train(spirals, depth=6, activation="relu", init="kaiming", bias=-1.0, steps=30),
        "healthy": _train(spirals, depth=6, activation="relu", init="kaiming", steps=150),
    }


def _text(d: Diagnosis) -> str:
    return " ".join(d.evidence)


def test_package_exports_the_doctor():
    assert gradcourse.diagnose is diagnose_function is diagnose
    assert gradcourse.Diagnosis is Diagnosis


def test_vanishing_sigmoid_stack(runs):
    run = runs["vanishing"]
    d = diagnose(run)
    assert d.problem == "vanishing" and d.diverged_at is None
    ratio = d.numbers["signal_ratio_start"]
    assert ratio < 1e-10 < VANISHING_SIGNAL_RATIO  # ~1e-16 measured: 1/4 times the weight scale per layer
    trace = run.trace
    expected = trace.get("output_grad_norm")[0, 0] / trace.get("output_grad_norm")[0, 19]
    assert ratio == pytest.approx(expected, rel=1e-6)
    assert _num(ratio) in _text(d) and "layer1" in _text(d) and "layer20" in _text(d)
    assert "plateau" in _text(d)  # the loss stayed at ln 2
    assert "ReLU" in d.remedies[0] and "(lesson 01)" in d.remedies[0]
    assert any("clipping" in r and "lesson 03" in r for r in d.remedies)  # ...as what NOT to do
    assert all("lesson" in r for r in d.remedies)


def test_diverged_run_is_exploding_and_says_where(runs):
    run = runs["diverged"]
    assert run.diverged_at is not None
    d = diagnose(run)
    assert d.problem == "exploding" and d.diverged_at == run.diverged_at
    assert f"NaN/Inf at step {run.diverged_at}" in d.evidence[0]
    assert run.trace.nonfinite["layer"] in d.evidence[0]
    assert d.numbers["signal_ratio_start"] > EXPLODING_SIGNAL_RATIO
    assert _num(d.numbers["signal_ratio_start"]) in _text(d)
    assert "critical scale" in d.remedies[0] and "5.66" in d.remedies[0]  # 4·√2 ≈ 5.66
    assert any("Clip" in r and "lesson 03" in r for r in d.remedies)


def test_exploding_without_nan(runs):
    run = runs["exploding"]
    d = diagnose(run)
    assert run.diverged_at is None and d.problem == "exploding"
    # twice He's scale over 10 layers: the signal grows ~2 per layer going back (2**9 ≈ 500)
    assert 100 < d.numbers["signal_ratio_start"] < 2000
    assert d.numbers["grad_norm_max"] > 100
    assert _num(d.numbers["grad_norm_max"]) in _text(d)


def test_saturated_tanh(runs):
    d = diagnose(runs["saturation"])
    assert d.problem == "saturation"
    saturated = max(d.numbers["saturated_mean_start"], d.numbers["saturated_mean_end"])
    assert saturated >= SATURATION_FRACTION
    assert f"{100 * d.numbers['saturated_mean_end']:.0f}%" in _text(d)
    assert "Xavier" in d.remedies[0] and "lesson 01" in d.remedies[0]


def test_dead_relus_killed_by_a_large_learning_rate(runs):
    d = diagnose(runs["dead_killed"])
    assert d.problem == "dead_relu"
    assert d.numbers["dead_mean_end"] >= DEAD_FRACTION > d.numbers["dead_mean_start"]
    assert f"{100 * d.numbers['dead_mean_end']:.0f}%" in _text(d)
    assert "training killed them" in _text(d)
    assert d.remedies[0].startswith("Lower the learning rate (it was 0.3)")


def test_dead_relus_from_negative_biases(runs):
    d = diagnose(runs["dead_born"])
    assert d.problem == "dead_relu"
    assert d.numbers["dead_mean_start"] >= DEAD_FRACTION
    assert "already dead at step 0" in _text(d)
    assert "He (kaiming)" in d.remedies[0]


def test_healthy_relu_he(runs):
    run = runs["healthy"]
    d = diagnose(run)
    assert d.problem == "healthy" and d.remedies == []
    assert VANISHING_SIGNAL_RATIO < d.numbers["signal_ratio_start"] < EXPLODING_SIGNAL_RATIO
    assert d.numbers["dead_mean_end"] < DEAD_FRACTION
    assert run.metrics["train_accuracy"] > 0.95


def test_every_problem_has_a_headline_and_repr(runs):
    seen = set()
    for run in runs.values():
        d = diagnose(run)
        assert d.problem in PROBLEMS
        seen.add(d.problem)
        text, markdown = repr(d), d._repr_markdown_()
        assert text.startswith(f"Diagnosis: {d.problem}") and d.headline in text
        assert all(e in markdown for e in d.evidence)
        assert all(r in text for r in d.remedies)
    assert seen == set(PROBLEMS)


def test_saved_and_loaded_run_gets_the_same_verdict(runs, tmp_path):
    run = runs["saturation"]
    again = Run.load(run.save(tmp_path / "run.npz"))
    assert diagnose(again).problem == diagnose(run).problem == "saturation"
    assert diagnose(again).evidence == diagnose(run).evidence


def test_sequence_models():
    adding = data.adding_problem(seq_len=30, n=128, seed=0)
    rnn = fit(models.sequence_model("rnn", 16, recurrent_scale=0.5, seed=0), adding, steps=10, lr=0.05)
    d = diagnose(rnn)
    assert d.problem == "vanishing" and d.numbers["signal_ratio_start"] < 1e-6
    assert "LSTM or GRU" in d.remedies[0] and "lesson 06" in d.remedies[0]
    wild = fit(models.sequence_model("rnn", 16, recurrent_scale=3.0, seed=0), adding, steps=10, lr=0.05)
    assert diagnose(wild).problem == "exploding"
    assert "Clip" in diagnose(wild).remedies[0]


def test_bad_input():
    with pytest.raises(ValueError, match="run must be a gradcourse Run"):
        diagnose({"losses": [1.0]})
    bare = fit(models.mlp(2, 4), data.spirals(32), steps=2, lr=0.1, probe=False)
    with pytest.raises(ValueError, match="probe=True"):
        diagnose(bare)


# -- TensorBoard export --------------------------------------------------------------------------
def _events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "histograms": 0,
                                                             "tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_export_round_trip(runs, tmp_path):
    from gradcourse.tensorboard import export

    run = runs["vanishing"]
    path = export(run, tmp_path / "sigmoid20")
    assert path.parent == tmp_path / "sigmoid20" and path.name.startswith("events.out.tfevents")
    events = _events(path.parent)
    tags = events.Tags()
    loss = events.Scalars("loss")
    assert [e.step for e in loss] == list(range(len(run.losses)))
    np.testing.assert_allclose([e.value for e in loss], run.losses, rtol=1e-6)
    np.testing.assert_allclose([e.value for e in events.Scalars("grad_norm_total")],
                               run.grad_norm_total, rtol=1e-6)
    trace = run.trace
    for quantity in ("grad_norm", "output_grad_norm", "update_ratio", "saturated_frac"):
        for layer in ("layer1", "layer20"):
            stored = events.Scalars(f"{quantity}/{layer}")
            assert [e.step for e in stored] == trace.steps.tolist()
            np.testing.assert_allclose([e.value for e in stored], trace.layer(layer, quantity),
                                       rtol=1e-6)
    assert "dead_frac/layer1" not in tags["scalars"]  # NaN for a sigmoid network: left out
    hist = events.Histograms("grad_hist/layer5")
    assert len(hist) == len(trace.steps)
    first = hist[0].histogram_value
    assert first.num == run.model.layer5.weight.numel()  # every weight counted once
    np.testing.assert_allclose(first.bucket, trace.get("grad_hist")[0, trace.layers.index("layer5")])
    np.testing.assert_allclose(first.bucket_limit, trace.hist_edges[1:], rtol=1e-6)
    texts = events.Tensors("diagnosis/text_summary")
    assert b"vanishing" in texts[0].tensor_proto.string_val[0]


def test_tensorboard_export_of_a_diverged_run(runs, tmp_path):
    from gradcourse.tensorboard import export

    run = runs["diverged"]
    events = _events(export(run, tmp_path).parent)
    assert len(events.Scalars("loss")) == np.isfinite(run.losses).sum()
    with pytest.raises(ValueError, match="logdir"):
        export(run, None)
    with pytest.raises(ValueError, match="run must be"):
        export("run", tmp_path)
