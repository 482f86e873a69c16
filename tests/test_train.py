"""fit(): losses, clipping, divergence, determinism, hooks, save/load."""

import numpy as np
import pytest
import torch
from test_probes import hooks_left

from gradcourse import data, models, remedies
from gradcourse.train import Run, accuracy, fit


def test_learns_spirals_and_reports_metrics():
    ds = data.spirals(256, seed=0)
    run = fit(models.mlp(3, 32, activation="tanh", init="xavier", seed=0), ds, steps=300, lr=0.1,
              optimizer="adam" if False else "sgd", momentum=0.9)
    assert run.losses[-1] < 0.5 * run.losses[0]
    assert run.metrics["train_accuracy"] > 0.8
    assert 0.0 <= run.metrics["test_accuracy"] <= 1.0
    assert run.metrics["train_accuracy"] == accuracy(run.model, ds.x, ds.y)
    assert run.diverged_at is None and not run.diverged


def test_regression_targets_use_mean_squared_error():
    ds = data.adding_problem(seq_len=6, n=64, seed=0)
    model = models.sequence_model("gru", hidden=8, seed=0)
    run = fit(model, ds, steps=1, lr=1e-3, optimizer="adam", probe=False)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(models.sequence_model("gru", hidden=8, seed=0)(ds.x), ds.y)
    assert run.losses[0] == pytest.approx(expected.item(), rel=1e-6)
    assert "test_loss" in run.metrics


def test_same_seed_same_numbers_and_minibatches_differ_by_seed():
    ds = data.spirals(128, seed=1)
    runs = [fit(models.mlp(4, 16, seed=0), ds, steps=20, lr=0.5, batch_size=32, seed=s) for s in (7, 7, 8)]
    assert np.array_equal(runs[0].losses, runs[1].losses)
    assert np.array_equal(runs[0].trace.get("grad_norm"), runs[1].trace.get("grad_norm"))
    assert not np.array_equal(runs[0].losses, runs[2].losses)


def test_divergence_stops_cleanly_and_names_the_layer():
    ds = data.spirals(256, seed=0)
    net = models.mlp(10, 64, activation="relu", init="normal", weight_std=4.0, seed=0)
    run = fit(net, ds, steps=50, lr=0.5)
    assert run.diverged_at is not None and run.diverged_at < 10
    assert len(run.losses) == run.diverged_at + 1
    assert not np.isfinite(run.losses[-1]) or not np.isfinite(run.grad_norm_total[-1])
    assert run.diverged_layer in run.trace.layers + ["loss", "output"]
    assert run.trace.nonfinite is None or run.trace.nonfinite["step"] == run.diverged_at
    assert "train_accuracy" not in run.metrics
    assert hooks_left(net) == 0


def test_norm_clipping_bounds_the_step_and_records_the_raw_norm():
    ds = data.spirals(256, seed=0)
    net = models.mlp(10, 64, activation="relu", init="normal", weight_std=4.0, seed=0)
    run = fit(net, ds, steps=30, lr=0.01, clip=remedies.clip_norm(1.0))
    assert run.diverged_at is None
    assert run.clipped[0] and run.grad_norm_total[0] > 1.0
    assert run.clipped.tolist() == (run.grad_norm_total > 1.0).tolist()
    assert run.params["clip"] == {"method": "norm", "threshold": 1.0}


def test_value_clipping_flags_steps_with_large_components():
    ds = data.spirals(64, seed=0)
    run = fit(models.mlp(3, 8, seed=0), ds, steps=5, lr=0.1, clip=remedies.clip_value(1e-9))
    assert run.clipped.all()
    run = fit(models.mlp(3, 8, seed=0), ds, steps=5, lr=0.1, clip=remedies.clip_value(1e9))
    assert not run.clipped.any()


def test_no_hook_left_when_training_raises():
    net = models.mlp(3, 8, seed=0)
    bad = (torch.randn(10, 3), torch.zeros(10, dtype=torch.long))  # 3 features into a 2-input net
    with pytest.raises(RuntimeError):
        fit(net, bad, steps=2, lr=0.1)
    assert hooks_left(net) == 0


def test_save_and_load_round_trip(tmp_path):
    ds = data.spirals(64, seed=0)
    run = fit(models.mlp(3, 8, seed=0), ds, steps=12, lr=0.1, every=5, clip=0.5)
    same = Run.load(run.save(tmp_path / "run.npz"))
    assert np.array_equal(same.losses, run.losses)
    assert np.array_equal(same.clipped, run.clipped)
    assert same.params == run.params and same.metrics == run.metrics
    assert same.trace.layers == run.trace.layers
    assert np.array_equal(same.trace.steps, run.trace.steps)
    for q in ("grad_norm", "update_ratio", "saturated_frac", "grad_hist"):
        np.testing.assert_array_equal(same.trace.get(q), run.trace.get(q))
    with pytest.raises(ValueError, match="path"):
        run.save(tmp_path / "run.pickle")
    np.savez(tmp_path / "other.npz", meta=np.array('{"format": "x"}'))
    with pytest.raises(ValueError, match="path"):
        Run.load(tmp_path / "other.npz")
