"""Lesson 07: the mystery patients, the DoctorExplorer, and the exercise checks."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from matplotlib.figure import Figure

from gradcourse import diagnose, exercises
from gradcourse.widgets import EXPLORERS
from gradcourse.widgets.lesson07 import (
    LR_DIVISOR,
    PATIENTS,
    REMEDIES,
    DoctorExplorer,
    mystery_runs,
    recipe,
    reveal,
    treat,
)


@pytest.mark.parametrize("seed", [0, 1])
def test_each_patient_has_its_problem_and_its_cure_works(seed):
    runs = mystery_runs(seed)
    assert list(runs) == list(PATIENTS)
    for name, patient in PATIENTS.items():
        before = runs[name]
        assert diagnose(before).problem == patient.problem, (name, seed)
        # the untreated patient does not learn the spirals (accuracy ≈ chance, or NaN)
        assert math.isnan(before.metrics.get("train_accuracy", math.nan)) or \
            before.metrics["train_accuracy"] < 0.6
        after = treat(name, patient.cure, seed)
        assert diagnose(after).problem == "healthy", (name, seed)
        assert after.metrics["train_accuracy"] >= 0.75, (name, seed)


def test_patient_b_diverges_and_the_doctor_points_at_the_init():
    d = diagnose(mystery_runs(0)["B"])
    assert d.diverged_at is not None
    assert "critical scale" in d.remedies[0]


def test_recipe_applies_the_remedy_and_hides_nothing_else():
    model, training = recipe("D", "lower learning rate")
    assert training["lr"] == pytest.approx(PATIENTS["D"].training["lr"] / LR_DIVISOR)
    assert model == {**PATIENTS["D"].model, "seed": 0}
    model, _ = recipe("A", "ReLU + He init", seed=3)
    assert (model["activation"], model["init"], model["seed"]) == ("relu", "kaiming", 3)
    assert recipe("B", "clip gradient norm")[1]["clip"].method == "norm"
    assert "sigmoid" in reveal("A")
    with pytest.raises(ValueError, match="patient"):
        recipe("Z")
    with pytest.raises(ValueError, match="remedy"):
        recipe("A", "aspirin")


def test_treat_is_cached_and_deterministic():
    assert treat("C", "none", 0) is treat("C", "none", 0)
    np.testing.assert_array_equal(treat("C", "Xavier init", 1).losses,
                                  treat.__wrapped__("C", "Xavier init", 1).losses)


def test_explorer_default():
    assert EXPLORERS["07_gradient_doctor"] is DoctorExplorer
    explorer = DoctorExplorer()
    start = time.perf_counter()
    result = explorer.run()
    assert time.perf_counter() - start < 10  # budget 3 s on a free core; generous under load
    assert isinstance(result.figure, Figure) and len(result.figure.axes) == 3
    v = result.values
    assert (v["problem_before"], v["problem_after"]) == ("vanishing", "healthy")
    assert v["accuracy_before"] < 0.6 < 0.9 < v["accuracy_after"]
    assert v["final_loss_after"] < 0.2 * v["final_loss_before"]
    assert "Vanishing" in result.summary and set(result.runs) == {"before", "after"}


def test_explorer_non_default_settings():
    result = DoctorExplorer().run(patient="D", remedy="lower learning rate", seed=1)
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


def test_exercise_mystery_diagnoses():
    runs = mystery_runs(0)
    right = {name: p.problem for name, p in PATIENTS.items()}
    assert exercises.mystery_diagnoses(right, runs).correct is True
    assert exercises.mystery_diagnoses({**right, "A": "exploding"}, runs).correct is False
    assert "patient A" in exercises.mystery_diagnoses({**right, "A": "exploding"}, runs).message
    assert exercises.mystery_diagnoses({**right, "C": "flu"}, runs).correct is False
    assert exercises.mystery_diagnoses(None, runs).correct is None
    assert exercises.mystery_diagnoses({n: None for n in runs}, runs).correct is None
    assert exercises.mystery_diagnoses({"A": right["A"]}, runs).correct is None


def test_exercise_signal_exponent():
    run = mystery_runs(0)["A"]
    signal = run.trace.get("output_grad_norm")[0, :-1]
    k = np.log10(signal[0] / signal[-1])
    assert k < -10  # 20 sigmoid layers: many decades
    assert exercises.signal_exponent(round(k), run).correct is True
    assert exercises.signal_exponent(-round(k), run).correct is False
    assert exercises.signal_exponent(round(k) + 3, run).correct is False
    assert exercises.signal_exponent(None, run).correct is None


def test_exercise_prescription():
    assert exercises.prescription("lower learning rate", "D").correct is True
    assert exercises.prescription("clip gradient norm", "D").correct is False
    assert exercises.prescription("Xavier init", "D").correct is False
    assert exercises.prescription("aspirin", "D").correct is False
    assert exercises.prescription(None, "D").correct is None
    assert all(r in REMEDIES for r in ("none", "BatchNorm"))
