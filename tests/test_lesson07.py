"""Lesson 07: the mystery patients (gradcourse.patients), the DoctorExplorer, and the exercise checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _tools import record_progress_bars

from gradcourse import diagnose
from gradcourse.patients import PATIENTS, mystery_runs, patient_name, recipe, reveal, treat
from gradcourse.remedies import LR_DIVISOR, REMEDIES
from gradcourse.widgets import EXPLORERS
from gradcourse.widgets.lesson07 import MENU, DoctorExplorer, before_after_figure, patient_chart, unhealthy_fraction


@pytest.mark.parametrize("seed", [0, 1])
def test_each_patient_has_its_problem_and_its_cure_works(seed):
    runs = mystery_runs(seed)
    assert list(runs) == list(PATIENTS)
    for name, patient in PATIENTS.items():
        before = runs[name]
        assert diagnose(before).problem == patient.problem, (name, seed)
        # A and B do not learn the spirals untreated (accuracy at chance, or NaN). C (chaotic phase) and
        # D (units dying during training) train erratically: 0.50 to 0.80 over seeds 0-4 and two
        # kernel sets; only their verdict is asserted.
        if name in ("A", "B"):
            assert math.isnan(before.metrics.get("train_accuracy", math.nan)) or \
                before.metrics["train_accuracy"] < 0.6
        after = treat(name, patient.cure, seed)
        assert diagnose(after).problem == "healthy", (name, seed)
        # treated train accuracy on seeds 0-1, both kernel sets: 0.75 (C) to 1.0; on seeds 3-4 with portable
        # kernels A's ReLU + He run reaches only 0.50 and 0.70 (measured 2026-12-07), hence seeds 0-1 here
        assert after.metrics["train_accuracy"] >= 0.7, (name, seed)


def test_patient_b_diverges_and_the_doctor_points_at_the_init():
    d = diagnose(mystery_runs(0)["B"])
    assert d.diverged_at is not None
    assert d.remedies[0] is REMEDIES["he_init"] and "critical scale" in d.remedies[0].sentence


def test_each_patients_cure_is_the_doctors_first_remedy():
    runs = mystery_runs(0)
    assert {name: diagnose(run).remedies[0].name for name, run in runs.items()} == \
        {name: p.cure for name, p in PATIENTS.items()}


def test_patient_c_is_saturated_and_exploding():
    """Issue 10 item 3: tanh at 4/√fan_in is the chaotic phase: saturated units, and a signal that
    grows about 2e4 times on its way back to layer 1. The doctor names both."""
    d = diagnose(mystery_runs(0)["C"])
    assert d.problems == ("saturation", "exploding")
    assert 1e4 < d.numbers["signal_ratio_start"] < 1e5
    assert max(d.numbers["saturated_mean_start"], d.numbers["saturated_mean_end"]) > 0.5
    assert "chaotic phase" in d.headline


def test_recipe_applies_the_remedy_and_hides_nothing_else():
    model, training = recipe("D", "lower_lr")
    assert training["lr"] == pytest.approx(0.3 / LR_DIVISOR) == pytest.approx(0.03)
    assert model == {**PATIENTS["D"].model, "seed": 0}
    assert PATIENTS["D"].training["lr"] == 0.3  # the patient's own recipe is left untouched
    model, _ = recipe("A", "relu_he", seed=3)
    assert (model["activation"], model["init"], model["seed"]) == ("relu", "kaiming", 3)
    model, _ = recipe("B", "he_init")
    assert (model["init"], model["weight_std"]) == ("kaiming", None)
    model, _ = recipe("A", "leaky ReLU")  # default init becomes He's, the scale for a ReLU
    assert (model["activation"], model["init"]) == ("leaky_relu", "kaiming")
    assert recipe("B", "clip gradient norm")[1]["clip"].method == "norm"
    assert recipe("A", "BatchNorm")[0]["batchnorm"] is True
    assert recipe("A", "skip_connections")[0]["residual"] is True
    assert recipe("a", "none") == recipe("A") == ({**PATIENTS["A"].model, "seed": 0},
                                                  {**PATIENTS["A"].training, "seed": 0})
    assert "sigmoid" in reveal("A") and patient_name(" d ") == "D"
    with pytest.raises(ValueError, match="patient"):
        recipe("Z")
    with pytest.raises(ValueError, match="remedy"):
        recipe("A", "aspirin")
    with pytest.raises(ValueError, match="sequence recipe"):
        recipe("A", "gated_cell")  # a remedy for recurrent networks


def test_every_patients_cure_is_a_registry_entry():
    for patient in PATIENTS.values():
        assert patient.cure in REMEDIES and "mlp" in REMEDIES[patient.cure].kinds
    assert MENU[0] == "none" and set(MENU[1:]) == {r.label for r in REMEDIES.values() if "mlp" in r.kinds}
    assert len(MENU) == 9  # the eight MLP remedies and "none"


def test_treat_names_and_labels_give_the_same_run():
    by_label = treat("C", "Xavier init", 1)
    assert treat("c", "xavier_init", 1) is by_label  # one cached run, whatever the spelling
    fresh = recipe("C", "xavier_init", seed=1)
    assert fresh[0]["init"] == "xavier" and by_label.params["model"]["init"] == "xavier"
    assert by_label.params["lr"] == 0.2 and by_label.params["seed"] == 1


def test_a_remedy_that_changes_nothing_shares_the_untreated_run():
    """Patient D has He init already: "he_init" trains exactly the untreated recipe, so treat returns
    that run instead of training it again (lesson 07's solution cell asks for both)."""
    untreated = treat("D", "none", 0)
    assert recipe("D", "he_init")[0]["weight_std"] is None and "weight_std" not in recipe("D")[0]
    assert treat("D", "he_init", 0) is untreated
    assert treat("D", "clip_norm", 0) is not untreated and treat("D", "none", 1) is not untreated


def test_explorer_default():
    assert EXPLORERS["07_gradient_doctor"] is DoctorExplorer
    result = DoctorExplorer().run()
    v = result.values
    assert (v["problem_before"], v["problem_after"]) == ("vanishing", "healthy")
    assert v["accuracy_before"] < 0.6 < 0.9 < v["accuracy_after"]
    assert v["final_loss_after"] < 0.2 * v["final_loss_before"]
    assert "Vanishing" in result.summary and set(result.runs) == {"before", "after"}


def test_explorer_non_default_settings():
    result = DoctorExplorer().run(patient="D", remedy=REMEDIES["lower_lr"].label, seed=1)
    assert (result.values["problem_before"], result.values["problem_after"]) == ("dead_relu", "healthy")
    assert result.values["accuracy_after"] > 0.95
    # a remedy that does not fit: clipping a diverging patient keeps it finite, but the doctor
    # still sees the exploding gradients it measures before clipping
    clipped = DoctorExplorer().run(patient="B", remedy="clip gradient norm")
    assert clipped.values["diverged_before"] is not None and clipped.values["diverged_after"] is None
    assert clipped.values["problem_after"] == "exploding"
    none = DoctorExplorer().run(patient="B", remedy="none")
    assert "diverged" in none.summary


def test_explorer_bad_parameters():
    with pytest.raises(ValueError, match="patient"):
        DoctorExplorer().run(patient="E")
    with pytest.raises(ValueError, match="remedy"):
        DoctorExplorer().run(remedy="bleeding")
    with pytest.raises(ValueError, match="seed"):
        DoctorExplorer().run(seed=99)
    with pytest.raises(ValueError, match="unknown parameter"):
        DoctorExplorer().run(depth=3)


def test_before_after_figure_draws_the_runs():
    before, after = treat("A"), treat("A", "relu_he")
    fig = before_after_figure(before, after, patient="A", remedy="ReLU + He init")
    loss, signal, units = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["Loss (✕ = NaN/Inf)", "Gradient signal per layer",
                                                  "Saturated or dead units, last step"]
    drawn = [line for line in loss.get_lines() if line.get_label() in ("before", "after")]
    np.testing.assert_allclose(drawn[0].get_ydata(), before.losses)
    np.testing.assert_allclose(drawn[1].get_ydata(), after.losses)
    lines = signal.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), before.trace.get("output_grad_norm")[0, :-1])
    np.testing.assert_array_equal(lines[0].get_xdata(), np.arange(1, 21))  # hidden layers 1..20
    heights = [bar.get_height() for bar in units.patches]
    np.testing.assert_allclose(heights[:20], unhealthy_fraction(before))
    np.testing.assert_allclose(heights[20:], unhealthy_fraction(after))
    assert fig._suptitle.get_text() == "Patient A, seed 0: before and after 'ReLU + He init'"
    other = before_after_figure(treat("A", seed=1), treat("A", "relu_he", seed=1), patient="A", remedy="x")
    assert other._suptitle.get_text() == "Patient A, seed 1: before and after 'x'"


def test_unhealthy_fraction_reads_saturated_or_dead_units():
    """A trace written by hand: a sigmoid layer (saturated measured), a ReLU layer (dead measured),
    a layer with neither, and the head, whose values must be left out. Expected values by hand."""
    from gradcourse.doctor import from_trace
    from gradcourse.trace import Trace

    nan = math.nan
    trace = Trace(layers=["layer1", "layer2", "layer3", "head"], steps=np.array([0, 5, 10]), scalars={
        "saturated_frac": np.array([[0.1, nan, nan, 0.9], [0.15, nan, nan, 0.85], [0.2, nan, nan, 0.8]]),
        "dead_frac": np.array([[nan, 0.3, nan, 0.7], [nan, 0.35, nan, 0.65], [nan, 0.4, nan, 0.6]]),
    })
    run = from_trace(trace, losses=[0.7] * 11)
    np.testing.assert_array_equal(unhealthy_fraction(run), [0.2, 0.4, 0.0])        # the last recorded step
    np.testing.assert_array_equal(unhealthy_fraction(run, 0), [0.1, 0.3, 0.0])     # step 0
    np.testing.assert_array_equal(unhealthy_fraction(run, 1), [0.15, 0.35, 0.0])
    sigmoid, relu = treat("A"), treat("D")       # and the patients: 20 and 6 hidden layers
    assert unhealthy_fraction(sigmoid).shape == (20,) and unhealthy_fraction(relu, 0).shape == (6,)


def test_patient_chart_draws_each_patients_probes():
    runs = mystery_runs(0)
    fig = patient_chart(runs)
    assert len(fig.axes) == 12
    signal_axes, unit_axes, loss_axes = fig.axes[0:4], fig.axes[4:8], fig.axes[8:12]
    for col, (name, run) in enumerate(runs.items()):
        assert signal_axes[col].get_title() == f"Patient {name}: gradient at step 0"
        signal, weight = signal_axes[col].get_lines()
        np.testing.assert_allclose(signal.get_ydata(), run.trace.get("output_grad_norm")[0, :-1])
        np.testing.assert_allclose(weight.get_ydata(), run.trace.get("grad_norm")[0, :-1])
        loss = loss_axes[col].get_lines()[0]
        finite = np.isfinite(run.losses)
        np.testing.assert_allclose(loss.get_ydata(), run.losses[finite])
    heights = [bar.get_height() for bar in unit_axes[0].patches]  # A: sigmoid, saturated units
    np.testing.assert_allclose(heights, runs["A"].trace.get("saturated_frac")[-1, :-1])
    assert unit_axes[3].get_title().startswith("dead units")  # D: ReLU
    label = [t for t in loss_axes[1].texts if "NaN/Inf at step" in t.get_text()]  # B diverged
    peak = float(np.nanmax(np.where(np.isfinite(runs["B"].losses), runs["B"].losses, np.nan)))
    climbed = f"\n(the loss reached {peak:.2g} first)" if peak > loss_axes[1].get_ylim()[1] else ""
    assert len(label) == 1 and label[0].get_text() == f"NaN/Inf at step {runs['B'].diverged_at}{climbed}"
    for ax in fig.axes:                        # every log axis labelled at two powers of ten or more
        if ax.get_yscale() == "log":
            low, high = np.log10(ax.get_ylim())
            assert low == int(low) and high == int(high) and high - low >= 1
    with pytest.raises(ValueError, match="runs must be"):
        patient_chart({})


def test_mystery_runs_shows_a_bar_over_the_patients(monkeypatch):
    """A few seconds of training: a tqdm.auto bar, one update per patient, closed at the end."""
    bars = record_progress_bars(monkeypatch)
    runs = mystery_runs(0, progress=True)
    assert len(bars) == 1 and bars[0].kwargs["total"] == len(PATIENTS) == bars[0].updates and bars[0].closed
    assert list(runs) == list(PATIENTS)
    mystery_runs(0, progress=False)
    assert len(bars) == 1
    with pytest.raises(ValueError, match="progress"):
        mystery_runs(0, progress="yes")
