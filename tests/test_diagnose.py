"""The gradient doctor: its verdicts at every threshold on synthetic Traces, on real runs of each
kind, on hand-written training loops (an MLP and a CNN), and the TensorBoard export read back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import gradcourse
from gradcourse import data, doctor, models, transformer_measures
from gradcourse.doctor import (
    DEAD_FRACTION,
    DEAD_LAYER_FRACTION,
    ERRATIC_FRACTION,
    EXPLODING_GRAD_NORM,
    EXPLODING_SIGNAL_RATIO,
    LARGE_UPDATE_RATIO,
    LOSS_BLOWUP,
    PROBLEMS,
    SATURATION_FRACTION,
    VANISHING_SIGNAL_RATIO,
    Diagnosis,
    _num,
    diagnose,
    from_trace,
)
from gradcourse.probes import Probe
from gradcourse.remedies import REMEDIES, Remedy
from gradcourse.trace import LAYER_QUANTITIES, Trace
from gradcourse.train import Run, fit

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

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
        "bad_data": fit(models.mlp(4, 16, activation="relu", init="kaiming", seed=0),
                        (_with_nan(spirals.x, 3), spirals.y), steps=10, lr=0.1),
        # hidden weights called with F.linear: the probe sees their gradients, not their outputs
        "inconclusive": _own_loop(_FunctionalMLP(), spirals.x, spirals.y, steps=30, lr=0.1)[0],
        # lesson 09's Post-LN Transformer without warmup: every position alike from step 4 on
        "collapse": transformer_measures.experiment(norm="post", depth=6, steps=40, probe=True).run,
        # lesson 10: a 5-layer sigmoid MLP, healthy in float32, under float16 autocast
        "underflow": _float16_run(),
    }


def _float16_run(steps=5):
    """Lesson 10's underflow: a 5-layer sigmoid MLP (width 64, 512 points) under float16 autocast."""
    from gradcourse.doctor import from_trace

    net, ds = models.mlp(5, 64, activation="sigmoid", seed=0), data.spirals(512, seed=0)
    opt, losses = torch.optim.SGD(net.parameters(), lr=0.1), []
    with Probe(net, optimizer=opt) as probe:
        for _ in range(steps):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.cross_entropy(net(ds.x), ds.y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return from_trace(probe.trace, losses, model=net)


def _with_nan(tensor, row):
    tensor = tensor.clone()
    tensor[row, 0] = float("nan")
    return tensor


def _sequential(activation, *, depth=4, width=32, tell_probe=False, seed=0):
    """An ordinary nn.Sequential (not a gradcourse model); with ``tell_probe`` it carries a
    probe_activations map naming the activation after each hidden Linear."""
    torch.manual_seed(seed)
    layers, sizes = [], [2] + [width] * depth
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    net = nn.Sequential(*layers, nn.Linear(width, 2))
    if tell_probe:
        net.probe_activations = {str(2 * k): str(2 * k + 1) for k in range(depth)}
    return net


class _FunctionalMLP(nn.Module):
    """Linear modules whose weights the forward pass calls with ``F.linear`` (as attention calls its
    projections): the probe reads their gradients from the parameters but never sees a hidden
    layer's output or its activation."""

    def __init__(self, depth: int = 4, width: int = 32, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        sizes = [2] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.tanh(nn.functional.linear(x, layer.weight, layer.bias))
        return self.head(x)


def _own_loop(net, x, y, *, steps, lr, scale=1.0):
    """A hand-written training loop with a probe attached: returns (Run built from the trace, losses)."""
    opt, losses = torch.optim.SGD(net.parameters(), lr=lr), []
    with Probe(net) as probe:
        for _ in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x * scale), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return from_trace(probe.trace, losses, model=net), losses


def _text(d: Diagnosis) -> str:
    return " ".join(d.evidence)


def test_package_exports_the_doctor_and_its_module():
    assert gradcourse.diagnose is doctor.diagnose is diagnose
    assert gradcourse.Diagnosis is Diagnosis
    assert gradcourse.doctor.PROBLEMS == PROBLEMS  # the module is reachable by its own name
    assert {"bad_data", "inconclusive"} < set(PROBLEMS)


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
    assert [r.name for r in d.remedies] == ["relu_he", "xavier_init", "batchnorm", "skip_connections"]
    assert all(isinstance(r, Remedy) and r is REMEDIES[r.name] for r in d.remedies)
    assert str(d.remedies[0]).endswith("(lesson 01).") and "ReLU" in repr(d.remedies[0])
    assert any("clipping" in n and "lesson 03" in n for n in d.notes)  # ...as what NOT to do


def test_every_remedy_points_to_a_lesson_that_exists():
    for remedy in REMEDIES.values():
        assert (NOTEBOOKS / f"{remedy.lesson}.ipynb").exists(), remedy.name
        assert str(remedy) == f"{remedy.sentence} (lesson {remedy.lesson[:2]})."


def test_diverged_run_is_exploding_and_says_where(runs):
    run = runs["diverged"]
    assert run.diverged_at is not None
    d = diagnose(run)
    assert d.problem == "exploding" and d.diverged_at == run.diverged_at
    assert f"NaN/Inf at step {run.diverged_at}" in d.evidence[0]
    assert run.trace.nonfinite["layer"] in d.evidence[0]
    assert d.numbers["signal_ratio_start"] > EXPLODING_SIGNAL_RATIO
    assert _num(d.numbers["signal_ratio_start"]) in _text(d)
    assert [r.name for r in d.remedies] == ["he_init", "lower_lr", "clip_norm", "batchnorm"]
    assert "std 5.66/√fan_in" in _text(d) and "√2" in _text(d)  # 4·√2 ≈ 5.66, against He's √2


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
    assert d.remedies[0].name == "xavier_init" and "std 4/√fan_in" in _text(d)
    # 10 tanh layers at 4/√fan_in: the chaotic phase, where the saturated network's signal still
    # grows going back (DESIGN: ~500×); the doctor says both
    assert d.also == ["exploding"] and d.problems == ("saturation", "exploding")
    assert d.numbers["signal_ratio_start"] > EXPLODING_SIGNAL_RATIO
    assert "chaotic phase" in d.headline and "chaotic phase" in _text(d)


def test_dead_relus_killed_by_a_large_learning_rate(runs):
    d = diagnose(runs["dead_killed"])
    assert d.problem == "dead_relu"
    assert d.numbers["dead_mean_end"] >= DEAD_FRACTION > d.numbers["dead_mean_start"]
    assert f"{100 * d.numbers['dead_mean_end']:.0f}%" in _text(d)
    assert "training killed them" in _text(d)
    assert [r.name for r in d.remedies] == ["lower_lr", "leaky_relu", "he_init", "batchnorm"]
    assert "The learning rate was 0.3 (adam)." in _text(d)


def test_dead_relus_from_negative_biases(runs):
    d = diagnose(runs["dead_born"])
    assert d.problem == "dead_relu"
    assert d.numbers["dead_mean_start"] >= DEAD_FRACTION
    assert "already dead at step 0" in _text(d)
    assert [r.name for r in d.remedies[:3]] == ["he_init", "leaky_relu", "lower_lr"]


def test_healthy_relu_he(runs):
    run = runs["healthy"]
    d = diagnose(run)
    assert d.problem == "healthy" and d.remedies == [] and d.notes == [] and d.also == []
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
        assert all(e in markdown for e in d.evidence) and all(n in markdown for n in d.notes)
        assert all(str(r) in text and str(r) in markdown for r in d.remedies)
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
    assert d.remedies == [REMEDIES["gated_cell"]] and d.remedies[0].lesson == "06_lstm_gru"
    wild = fit(models.sequence_model("rnn", 16, recurrent_scale=3.0, seed=0), adding, steps=10, lr=0.05)
    assert diagnose(wild).problem == "exploding"
    assert [r.name for r in diagnose(wild).remedies] == ["clip_norm", "recurrent_scale", "lower_lr"]


def test_bad_input():
    with pytest.raises(ValueError, match="run must be a gradcourse Run"):
        diagnose({"losses": [1.0]})
    bare = fit(models.mlp(2, 4), data.spirals(32), steps=2, lr=0.1, probe=False)
    with pytest.raises(ValueError, match="probe=True"):
        diagnose(bare)
    with pytest.raises(ValueError, match="losses and model are for a probe's Trace"):
        diagnose(fit(models.mlp(2, 4), data.spirals(32), steps=2, lr=0.1), losses=[1.0])
    trace = _synthetic()
    with pytest.raises(ValueError, match="losses must be a list of numbers"):
        diagnose(trace, losses="0.7")
    with pytest.raises(ValueError, match="losses must be a list of numbers"):
        diagnose(trace, losses=[0.7, "high"])
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        diagnose(trace, losses=[0.7], model="mlp")
    with pytest.raises(ValueError, match="trace must be a probe's Trace"):
        from_trace(None)


# -- bad data: its own verdict, not an explosion (issue 13) --------------------------------------
def test_nan_in_the_inputs_is_bad_data_not_exploding(runs):
    run = runs["bad_data"]
    assert run.diverged_at == 0 and run.trace.nonfinite["layer"] == "layer1"
    d = diagnose(run)
    assert d.problem == "bad_data" and d.diverged_at == 0 and d.remedies == []
    assert "came in with the inputs" in _text(d) and "Check the inputs x" in d.notes[0]
    assert "learning rate" not in repr(d)


def test_nan_in_the_targets_is_bad_data(spirals):
    y = spirals.y.float()[:, None]
    y[5] = float("nan")
    run = fit(models.mlp(4, 16, activation="relu", init="kaiming", out_features=1, seed=0),
              (spirals.x, y), steps=10, lr=0.1)
    d = diagnose(run)
    assert d.problem == "bad_data" and "came from the targets" in _text(d) and "targets y" in d.notes[0]


def test_nan_in_a_later_mini_batch_is_bad_data(spirals):
    """Only some examples hold a NaN: the run trains until a mini-batch draws one."""
    x = _with_nan(spirals.x, 0)
    run = fit(models.mlp(4, 16, activation="relu", init="kaiming", seed=0), (x, spirals.y), steps=50,
              lr=0.1, batch_size=8)
    assert run.diverged_at is not None and run.diverged_at > 0
    assert diagnose(run).problem == "bad_data"


def test_a_nan_made_by_training_is_still_exploding(runs):
    d = diagnose(runs["diverged"])
    assert d.problem == "exploding" and d.numbers["bad_data"] is None


# -- the verdict logic at every threshold, on synthetic Traces -----------------------------------
HIDDEN = 4  # hidden layers of the synthetic network, plus one output layer "head"


def _synthetic(*, signal_ratio=1.0, saturated=math.nan, dead=0.1, dead_worst=None, grad=1.0,
               update=1e-3, steps=2, nonfinite=None, weight_norm=1.0):
    """A Trace whose every quantity is set by hand. The signal ‖∂L/∂z‖ falls (or grows)
    geometrically from 1 at the last hidden layer to ``signal_ratio`` at the first; every layer has
    weight gradient grad/√5, so the total gradient norm is ``grad``."""
    layers = [f"layer{k}" for k in range(1, HIDDEN + 1)] + ["head"]
    signal = signal_ratio ** (np.arange(HIDDEN)[::-1] / (HIDDEN - 1))
    per_layer = {
        "output_grad_norm": np.append(signal, 1.0),
        "grad_norm": np.full(HIDDEN + 1, grad / math.sqrt(HIDDEN + 1)),
        "weight_norm": np.full(HIDDEN + 1, weight_norm),
        "update_ratio": np.full(HIDDEN + 1, update),
        "act_mean": np.zeros(HIDDEN + 1),
        "act_std": np.ones(HIDDEN + 1),
        "saturated_frac": np.append(np.full(HIDDEN, saturated), math.nan),
        "dead_frac": np.append(np.full(HIDDEN, dead), math.nan),
    }
    if dead_worst is not None:
        per_layer["dead_frac"][1] = dead_worst
    scalars = {q: np.tile(per_layer[q], (steps, 1)).astype(np.float64) for q in LAYER_QUANTITIES}
    return Trace(layers=layers, steps=np.arange(steps), scalars=scalars, nonfinite=nonfinite)


FALLING = list(np.linspace(0.7, 0.35, 20))  # a loss that learns: no plateau, no jump


def _verdict(**trace_options) -> Diagnosis:
    losses = trace_options.pop("losses", FALLING)
    return diagnose(_synthetic(**trace_options), losses=losses)


def test_synthetic_healthy_trace():
    d = _verdict()
    assert d.problem == "healthy" and d.remedies == [] and d.notes == []
    assert d.numbers["signal_ratio_start"] == pytest.approx(1.0)
    assert d.numbers["grad_norm_max"] == pytest.approx(1.0)  # from the per-layer weight gradients


@pytest.mark.parametrize("below, above, problem, option", [
    (1.01 * VANISHING_SIGNAL_RATIO, 0.99 * VANISHING_SIGNAL_RATIO, "vanishing", "signal_ratio"),
    (0.99 * EXPLODING_SIGNAL_RATIO, 1.01 * EXPLODING_SIGNAL_RATIO, "exploding", "signal_ratio"),
    (0.99 * EXPLODING_GRAD_NORM, 1.01 * EXPLODING_GRAD_NORM, "exploding", "grad"),
    (0.99 * LARGE_UPDATE_RATIO, 1.01 * LARGE_UPDATE_RATIO, "exploding", "update"),
    (0.99 * SATURATION_FRACTION, 1.01 * SATURATION_FRACTION, "saturation", "saturated"),
    (0.99 * DEAD_FRACTION, 1.01 * DEAD_FRACTION, "dead_relu", "dead"),
    (0.99 * DEAD_LAYER_FRACTION, 1.01 * DEAD_LAYER_FRACTION, "dead_relu", "dead_worst"),
])
def test_each_threshold_just_below_and_just_above(below, above, problem, option):
    extra = {"dead": math.nan} if option == "saturated" else {}
    healthy, sick = _verdict(**{option: below, **extra}), _verdict(**{option: above, **extra})
    assert healthy.problem == "healthy", healthy
    assert sick.problem == problem, sick
    assert healthy.also == sick.also == []


def test_loss_blowup_threshold():
    rising = [1.0, 2.0, 5.0]
    assert _verdict(losses=rising + [0.99 * LOSS_BLOWUP]).problem == "healthy"
    d = _verdict(losses=rising + [1.01 * LOSS_BLOWUP])
    assert d.problem == "exploding" and "more than 10 times its first value" in _text(d)


def _jumpy(jumps: int) -> list[float]:
    """101 losses whose first ``jumps`` cycles of three steps start with a 20% rise (a jump)."""
    losses, value = [1.0], 1.0
    for i in range(100):
        value *= 1.2 if i % 3 == 0 and i // 3 < jumps else 0.9
        losses.append(value)
    return losses


def test_erratic_loss_threshold_on_a_healthy_run():
    calm, erratic = _verdict(losses=_jumpy(24)), _verdict(losses=_jumpy(26))
    assert calm.numbers["loss_jump_fraction"] == pytest.approx(0.24) and 0.24 < ERRATIC_FRACTION < 0.26
    assert erratic.numbers["loss_jump_fraction"] == pytest.approx(0.26)
    assert calm.problem == erratic.problem == "healthy"
    assert calm.remedies == [] and erratic.remedies == [REMEDIES["lower_lr"]]
    assert "erratic" in _text(erratic) and "erratic" not in _text(calm)


def _sawtooth(first: float, last: float) -> list[float]:
    """100 losses: a base at ``first`` for 10 steps, straight to ``last``, flat for the last 10;
    every odd step 1.4 times its base (a 40% jump, half the steps). So the first 10 steps average
    1.2·first and the last 10 average 1.2·last, by hand."""
    base = [first] * 10 + list(np.linspace(first, last, 82)[1:-1]) + [last] * 10
    return [b * (1.4 if t % 2 else 1.0) for t, b in enumerate(base)]


@pytest.mark.parametrize("first, last, batches, cause", [
    (1.0, 0.5, 8, "batches"), (1.0, 0.5, None, "either"), (1.0, 0.5, "full", "lr"),
    (1.0, 1.0, 8, "either"), (1.0, 1.0, None, "either"), (1.0, 1.0, "full", "lr"),
    (0.5, 1.0, 8, "lr"), (0.5, 1.0, None, "lr"),
])
def test_erratic_loss_tells_mini_batch_noise_from_a_learning_rate_too_large(first, last, batches, cause):
    """Issue 25 item 2: jumps whose 10-step average falls by half are the spread between mini-batches;
    on the full batch, or when the average rises, the learning rate; in between, or with batches the
    doctor cannot know (a loop of your own), both are possible and it says so."""
    run = doctor.from_trace(_synthetic(), losses=_sawtooth(first, last))
    if batches is not None:
        run.params["batch_size"] = None if batches == "full" else batches  # as fit records it
    d = diagnose(run)
    assert d.problem == "healthy" and d.numbers["loss_jump_fraction"] == pytest.approx(50 / 99)
    sentence = next(e for e in d.evidence if e.startswith("The loss is erratic"))
    words = {"batches": "fell from 1.2 to 0.6", "lr": "rose from 0.6 to 1.2" if first < last else None,
             "either": "fell from 1.2 to 0.6" if first > last else "fell by less than 25% from 1.2 to 1.2"}
    if words[cause]:
        assert f"averaged over 10 steps it {words[cause]}" in sentence
    text = sentence + " ".join(d.notes)
    if cause == "batches":
        assert d.remedies == [] and "probably too large" not in text and "may be too large" not in text
        assert "not a learning rate too large" in sentence
        assert "spread between mini-batches of 8" in sentence and "nothing to treat" in text
    elif cause == "lr":
        assert d.remedies == [REMEDIES["lower_lr"]] and "the learning rate is probably too large" in sentence
        assert "may be" not in text
    else:
        assert d.remedies == [REMEDIES["lower_lr"]] and "spread between" in sentence
        assert "may be too large" in text or "probably too large" in sentence.split("if every step")[-1]


def test_a_healthy_run_on_mini_batches_of_8_is_not_told_its_learning_rate_is_too_large():
    """The run of the issue: tanh, lr 0.1, batches of 8. Its loss jumps on 30% of the steps, but the
    mean of its first 10 losses is 0.71 and of its last 10 is 0.34 (measured, and computed here
    from run.losses), and on the whole training set it ends at 0.34 like the full-batch run."""
    run = fit(models.mlp(3, 16, activation="tanh", seed=0), data.spirals(256, seed=0), steps=200, lr=0.1,
              batch_size=8)
    assert (round(float(np.mean(run.losses[:10])), 2), round(float(np.mean(run.losses[-10:])), 2)) == (0.71, 0.34)
    d = diagnose(run)
    assert d.problem == "healthy" and d.numbers["loss_jump_fraction"] == pytest.approx(0.30, abs=0.01)
    assert d.remedies == []
    assert not any("probably too large" in line or "may be too large" in line for line in d.evidence + d.notes)
    assert any("fell from 0.71 to 0.34, so these jumps are the spread between mini-batches of 8" in e
               for e in d.evidence)


def test_plateau_note_on_a_healthy_run():
    flat = _verdict(losses=[0.7] * 12 + [0.67])  # 4.3% below the start: under the 5% line
    assert flat.problem == "healthy" and "plateau" in _text(flat)
    assert any("train for more steps" in n for n in flat.notes)
    assert not any("train for more" in n for n in _verdict(losses=[0.7] * 12 + [0.66]).notes)


def test_saturated_and_exploding_says_both():
    """Issue 10 item 3: a saturated network whose signal grows toward layer 1 (tanh in the
    chaotic phase) is both, and the doctor says so."""
    both = _verdict(saturated=0.9, dead=math.nan, signal_ratio=1.01 * EXPLODING_SIGNAL_RATIO)
    assert both.problem == "saturation" and both.also == ["exploding"]
    assert both.problems == ("saturation", "exploding") and "chaotic phase" in both.headline
    assert repr(both).startswith("Diagnosis: saturation + exploding")
    only = _verdict(saturated=0.9, dead=math.nan, signal_ratio=0.99 * EXPLODING_SIGNAL_RATIO)
    assert only.problem == "saturation" and only.also == [] and "chaotic" not in only.headline


def test_order_dead_before_saturation_before_exploding_before_vanishing():
    assert _verdict(dead=0.9, signal_ratio=1e-9).problem == "dead_relu"
    assert _verdict(saturated=0.9, dead=math.nan, signal_ratio=1e-9).problem == "saturation"
    assert _verdict(grad=1e3, signal_ratio=1e-9).problem == "exploding"


def test_unmeasured_units_are_never_healthy():
    """Issue 13: saturated and dead fractions that were not measured (NaN) must not read as 0."""
    d = _verdict(dead=math.nan)
    assert d.problem == "inconclusive" and d.problem != "healthy"
    assert "were not measured" in _text(d) and "probe_activations" in d.notes[0]
    # every other verdict still stands, with the same warning in its evidence
    vanishing = _verdict(dead=math.nan, signal_ratio=1e-9)
    assert vanishing.problem == "vanishing" and "were not measured" in _text(vanishing)
    # a linear (or GELU) network has no unit that can saturate or die: healthy is right there
    linear = diagnose(_synthetic(dead=math.nan), losses=FALLING, model=models.mlp(4, 8, activation="linear"))
    assert linear.problem == "healthy" and "not measured" not in _text(linear)


def test_units_measured_in_some_layers_only():
    trace = _synthetic(dead=0.1)
    trace.scalars["dead_frac"][:, 2] = math.nan  # the probe saw no activation after layer3
    d = diagnose(trace, losses=FALLING)
    assert d.problem == "healthy" and d.numbers["unit_layers_measured"] == HIDDEN - 1
    assert "measured in 3 of 4 hidden layers; not in layer3" in _text(d)
    trace.scalars["dead_frac"][:, 0] = 0.95  # one measured layer almost all dead: the verdict stands
    assert diagnose(trace, losses=FALLING).problem == "dead_relu"
    trace.scalars["dead_frac"][:, 0] = 0.5  # averaged over the measured layers: (0.5 + 0.1 + 0.1) / 3
    assert diagnose(trace, losses=FALLING).numbers["dead_mean_end"] == pytest.approx(0.7 / 3)


def test_the_probe_notes_reach_the_evidence():
    trace = _synthetic()
    trace.notes = ["layer2's weight is frozen: skipped"]
    assert "The probe noted: layer2's weight is frozen: skipped" in _text(diagnose(trace, losses=FALLING))


def test_synthetic_nan_made_by_training_and_by_data():
    # a forward NaN in a later layer, after the weights blew up: an explosion
    blown = _synthetic(nonfinite={"step": 1, "layer": "layer3", "where": "forward"})
    d = diagnose(blown, losses=[0.7, float("nan")])
    assert d.problem == "exploding" and d.diverged_at == 1
    # in the first layer while every weight is finite: the inputs
    bad = _synthetic(nonfinite={"step": 1, "layer": "layer1", "where": "forward"})
    assert diagnose(bad, losses=[0.7, float("nan")]).problem == "bad_data"
    # in the first layer but the weights were already infinite: training did it
    inf = _synthetic(nonfinite={"step": 1, "layer": "layer1", "where": "forward"}, weight_norm=math.inf)
    assert diagnose(inf, losses=[0.7, float("nan")]).problem == "exploding"
    # a NaN loss from a finite output (no non-finite record): the targets; an Inf loss: an overflow
    assert diagnose(_synthetic(), losses=[0.7, float("nan")]).problem == "bad_data"
    assert diagnose(_synthetic(), losses=[0.7, float("inf")]).problem == "exploding"


def test_from_trace_builds_a_run():
    trace = _synthetic(grad=2.0, steps=3)
    trace.steps = np.array([0, 5, 10])  # recorded every 5th step
    run = from_trace(trace, [torch.tensor(0.7), 0.6, np.float32(0.5)])
    assert isinstance(run, Run) and run.losses.tolist() == pytest.approx([0.7, 0.6, 0.5])
    assert len(run.grad_norm_total) == 11  # one per step up to the last recorded one
    np.testing.assert_allclose(run.grad_norm_total[[0, 5, 10]], 2.0)
    assert np.isnan(run.grad_norm_total[[1, 2, 3, 4, 6]]).all()
    assert run.diverged_at is None and run.params["source"] == "trace"
    assert from_trace(trace).losses.size == 0
    d = diagnose(trace)  # no losses: the gradient checks still run
    assert d.problem == "healthy" and "No losses were given" in _text(d)


# -- bring your own loop: a probe in a hand-written loop, an MLP and a CNN -----------------------
def test_own_loop_matches_fit_on_the_same_model(spirals):
    """The doctor reads the Trace of a plain loop exactly as it reads fit's Run."""
    run = _train(spirals, depth=20, activation="sigmoid", lr=0.5, steps=20)
    mine = diagnose(run.trace, losses=list(run.losses), model=run.model)
    theirs = diagnose(run)
    assert mine.problem == theirs.problem == "vanishing"
    assert mine.remedies == theirs.remedies
    for key in ("signal_ratio_start", "signal_ratio_end", "saturated_mean_end", "loss_drop"):
        assert mine.numbers[key] == pytest.approx(theirs.numbers[key], rel=1e-12)


def test_own_loop_on_a_sequential_mlp(spirals):
    run, losses = _own_loop(_sequential(nn.ReLU, tell_probe=True), spirals.x, spirals.y, steps=60, lr=0.5)
    d = diagnose(run.trace, losses=losses)
    assert d.problem == "healthy" and losses[-1] < 0.8 * losses[0]
    signal = run.trace.get("output_grad_norm")[0]
    assert d.numbers["signal_ratio_start"] == pytest.approx(signal[0] / signal[HIDDEN - 1], rel=1e-9)
    assert 0 <= d.numbers["dead_mean_end"] < DEAD_FRACTION  # measured through probe_activations
    assert "model[0]" in _text(d) and "model[6]" in _text(d)  # the Sequential's own layer names


def test_own_loop_without_activations_is_inconclusive(runs):
    d = diagnose(runs["inconclusive"])
    assert d.problem == "inconclusive" and "were not measured" in _text(d)
    assert d.numbers["unit_layers_measured"] == 0


@pytest.mark.parametrize("activation", [nn.SiLU, nn.GELU, nn.Identity])
def test_activations_seen_with_nothing_to_saturate_or_die_are_healthy(activation, spirals):
    """SiLU and GELU modules, or no activation at all: the probe saw every hidden layer's activation
    and none has a flat tail or a dead region, so a run that trains is healthy (it was
    'inconclusive', as if the probe had seen nothing)."""
    run, losses = _own_loop(_sequential(activation), spirals.x, spirals.y, steps=30, lr=0.1)
    d = diagnose(run)
    assert d.problem == "healthy", d.evidence
    assert d.numbers["unit_layers_measured"] == 4 and not d.numbers["unit_layers_unmeasured"]
    assert set(run.trace.activation_kinds.values()) == {"other"}


def test_own_saturated_sigmoid_sequential_is_not_healthy(spirals):
    """Issue 13's case: a learner's nn.Sequential of saturated sigmoids (about 90% of the units
    on their tails here) must not be called healthy, whether or not the probe sees its activations."""
    net = _sequential(nn.Sigmoid, depth=3)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(30)
    run, losses = _own_loop(net, spirals.x, spirals.y, steps=10, lr=0.1, scale=10.0)
    with torch.no_grad():
        first = torch.sigmoid(net[0](spirals.x * 10))
    assert ((first - 0.5).abs() > 0.47).float().mean() > 0.85  # measured independently
    assert diagnose(run.trace, losses=losses).problem != "healthy"
    net.probe_activations = {"0": "1", "2": "3", "4": "5"}
    run, losses = _own_loop(net, spirals.x, spirals.y, steps=10, lr=0.1, scale=10.0)
    assert diagnose(run.trace, losses=losses).problem == "saturation"


class _SmallCNN(nn.Sequential):
    def __init__(self, weight_scale=1.0):
        torch.manual_seed(0)
        super().__init__(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 2))
        self.probe_activations = {"0": "1", "2": "3", "4": "5"}
        with torch.no_grad():
            for layer in self:
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.weight.mul_(weight_scale)


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=gen)
    return x, (x[:, :, :4].mean(dim=(1, 2, 3)) > x[:, :, 4:].mean(dim=(1, 2, 3))).long()


def test_own_loop_on_a_small_cnn(images):
    x, y = images
    run, losses = _own_loop(_SmallCNN(), x, y, steps=40, lr=0.05)
    d = diagnose(run.trace, losses=losses)
    assert run.trace.layers == ["0", "2", "4", "7"] and d.problem == "healthy"
    assert losses[-1] < losses[0]
    dead = run.trace.get("dead_frac")[-1, :3]
    assert np.isfinite(dead).all() and d.numbers["dead_mean_end"] == pytest.approx(dead.mean())


def test_own_loop_on_an_exploding_cnn(images):
    x, y = images
    run, losses = _own_loop(_SmallCNN(weight_scale=16.0), x, y, steps=5, lr=1e-4)
    d = diagnose(run.trace, losses=losses)
    assert d.problem == "exploding"
    first = run.trace.get("grad_norm")[0]
    assert d.numbers["grad_norm_start"] == pytest.approx(np.sqrt((first.astype(float) ** 2).sum()), rel=1e-6)
    assert d.numbers["grad_norm_max"] > EXPLODING_GRAD_NORM and "total gradient norm reached" in _text(d)
    signal = run.trace.get("output_grad_norm")[0]
    assert d.numbers["signal_ratio_start"] == pytest.approx(signal[0] / signal[2], rel=1e-6)
    assert signal[0] > signal[1] > signal[2]  # the signal grows going back through the convolutions


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


def test_tensorboard_export_writes_one_event_per_step(runs, tmp_path):
    """Every scalar and histogram of a step travel in one event (one Summary with many values), not
    one event each: 16,900 events for this 20-layer, 100-step run cost 1 s per export."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from gradcourse.tensorboard import export

    run = runs["vanishing"]
    events = list(EventFileLoader(str(export(run, tmp_path / "one"))).Load())
    steps = [e for e in events if e.HasField("summary") and e.step in set(range(len(run.losses)))
             and any(v.tag == "loss" for v in e.summary.value)]
    assert len(steps) == len(run.losses) and len(events) <= len(run.losses) + 4   # + file version, two texts
    values = sum(len(e.summary.value) for e in events if e.HasField("summary"))
    assert values > 100 * len(run.losses)      # the loss, and each layer's quantities and histogram


def test_tensorboard_export_of_a_diverged_run(runs, tmp_path):
    from gradcourse.tensorboard import export

    run = runs["diverged"]
    events = _events(export(run, tmp_path).parent)
    assert len(events.Scalars("loss")) == np.isfinite(run.losses).sum()
    with pytest.raises(ValueError, match="logdir"):
        export(run, None)
    with pytest.raises(ValueError, match="run must be"):
        export("run", tmp_path / "other")


def test_tensorboard_export_never_mixes_two_runs(runs, tmp_path):
    from gradcourse.tensorboard import export

    first = export(runs["healthy"], tmp_path / "run")
    with pytest.raises(ValueError, match="already holds 1 TensorBoard event file"):
        export(runs["vanishing"], tmp_path / "run")
    assert list((tmp_path / "run").iterdir()) == [first]  # the refusal left the old run alone
    second = export(runs["vanishing"], tmp_path / "run", overwrite=True)
    assert list((tmp_path / "run").iterdir()) == [second]
    loss = [e.value for e in _events(tmp_path / "run").Scalars("loss")]
    np.testing.assert_allclose(loss, runs["vanishing"].losses, rtol=1e-6)  # only the new run
    with pytest.raises(ValueError, match="overwrite must be True or False"):
        export(runs["healthy"], tmp_path / "x", overwrite="yes")


def test_tensorboard_export_refuses_a_logdir_under_a_file(tmp_path):
    """A path under a regular file was a bare NotADirectoryError from mkdir: now a ValueError naming
    logdir and the file in the way, before anything is written."""
    from gradcourse.tensorboard import export

    run = fit(models.mlp(2, 4, seed=0), data.spirals(16, seed=0), steps=2, lr=0.1)
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    for logdir in (tmp_path / "notes.txt" / "run1", tmp_path / "notes.txt" / "a" / "b"):
        with pytest.raises(ValueError, match=r"^logdir must be a directory path; .*lies under .*notes\.txt'"):
            export(run, logdir)
    with pytest.raises(ValueError, match=r"^logdir must be a directory path; .*notes\.txt' is a file"):
        export(run, tmp_path / "notes.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_tensorboard_export_of_an_own_loop_run(runs, tmp_path):
    from gradcourse.tensorboard import export

    run = runs["inconclusive"]
    events = _events(export(run, tmp_path / "mine").parent)
    np.testing.assert_allclose([e.value for e in events.Scalars("loss")], run.losses, rtol=1e-6)
    assert len(events.Scalars("grad_norm/hidden.0")) == len(run.trace.steps)


# -- the measurements' contract ------------------------------------------------------------------
def _fits(value, hint) -> bool:
    """Whether ``value`` has the type ``hint`` names (``float``, ``int | None``, ``list[str]``, ``dict[str, float]``…);
    a bool is no int or float, and NaN is a float."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if hint in (int, float):
        return isinstance(value, hint) and not isinstance(value, (bool, np.bool_))
    return isinstance(value, hint)


def test_fits_reads_the_annotations_it_is_given():
    assert _fits(float("nan"), float) and not _fits(1, float) and not _fits(True, int)
    assert _fits(None, int | None) and _fits(3, int | None) and not _fits("3", int | None)
    assert _fits(["a"], list[str]) and not _fits(["a", 1], list[str]) and not _fits(("a",), list[str])
    assert _fits({"fc1": 0.5}, dict[str, float]) and not _fits({"fc1": "half"}, dict[str, float])
    assert not _fits(np.int64(3), int) and not _fits(np.bool_(True), bool)


def test_the_measurements_are_frozen_and_every_field_has_its_declared_type(runs):
    """_measure returns a frozen Measurements whose every field holds the type it declares, on a run of
    every verdict (a dict of string keys let a check read a key that was never written, or a numpy bool)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(doctor.Measurements)
    names = [f.name for f in dataclasses.fields(doctor.Measurements)]
    assert set(hints) == set(names) and len(names) >= 40
    seen = set()
    for kind, run in runs.items():
        m = doctor._measure(run, doctor._recipe(run.params.get("model")))
        wrong = {n: (getattr(m, n), hints[n]) for n in names if not _fits(getattr(m, n), hints[n])}
        assert not wrong, (kind, wrong)
        d = diagnose(run)
        seen.add(d.problem)
        assert list(d.numbers) == names and d.numbers["steps"] == m.steps == len(run.losses)
        with pytest.raises(dataclasses.FrozenInstanceError):
            m.steps = 0
    assert seen == set(PROBLEMS)                             # a run of every verdict
    values = doctor._measure(runs["healthy"], {}).as_dict()
    with pytest.raises(TypeError, match="unexpected keyword argument 'signal_ratio'"):
        doctor.Measurements(**values, signal_ratio=1.0)      # a key no check declared
    values.pop("loss_end")
    with pytest.raises(TypeError, match="loss_end"):
        doctor.Measurements(**values)                        # a key a check reads, never measured
