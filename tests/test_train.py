"""fit(): losses, clipping, divergence, determinism, hooks, save/load."""

import json
import math

import numpy as np
import pytest
import torch
from _tools import record_progress_bars
from test_probes import hooks_left
from torch import nn

from gradcourse import data, models, probes, remedies
from gradcourse.train import Run, accuracy, fit


def test_learns_spirals_and_reports_metrics():
    ds = data.spirals(256, seed=0)
    run = fit(models.mlp(3, 32, activation="tanh", init="xavier", seed=0), ds, steps=300, lr=0.1, momentum=0.9)
    assert run.losses[0] == pytest.approx(np.log(2), abs=0.05)  # two balanced classes at initialisation
    assert run.losses[-1] < 0.02                                # measured 0.0049
    assert run.metrics["train_accuracy"] == 1.0 and run.metrics["test_accuracy"] > 0.95  # measured 1.0, 1.0
    assert run.diverged_at is None and not run.diverged


def _identity_classifier() -> torch.nn.Linear:
    """Class scores = the two coordinates: the larger coordinate is the predicted class."""
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
        net.bias.zero_()
    return net


def test_accuracy_of_a_hand_made_classifier():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [1.0, 2.0]])  # predicts 0, 1, 0, 1, 1
    y = torch.tensor([0, 1, 0, 0, 1])
    assert accuracy(_identity_classifier(), x, y) == pytest.approx(0.8)
    ds = data.Dataset(x, y, x_test=x[:4], y_test=torch.tensor([1, 1, 1, 1]))
    # A learning rate of 1e-9 cannot move the decision boundary across these points.
    run = fit(_identity_classifier(), ds, steps=1, lr=1e-9, probe=False)
    assert run.metrics["train_accuracy"] == pytest.approx(0.8)
    assert run.metrics["test_accuracy"] == pytest.approx(0.5)
    # Cross-entropy of two classes with score margin m is ln(1 + e^(−m)): margins 1, 1, 1, −3, 1.
    by_hand = (4 * math.log1p(math.exp(-1)) + math.log1p(math.exp(3))) / 5
    assert run.metrics["train_loss"] == pytest.approx(by_hand, rel=1e-6)   # 0.8603


def test_train_loss_is_the_whole_training_set_not_the_last_mini_batch():
    # Lesson 04's case: with mini-batches of 2 the last batch's loss says nothing about the data.
    ds = data.spirals(256, seed=0)
    run = fit(models.mlp(10, 32, activation="tanh", seed=0), ds, steps=50, lr=1.0, momentum=0.9, clip=1.0,
              probe=False, batch_size=2)
    assert run.metrics["final_loss"] == run.losses[-1] < 1e-4      # measured 1.2e-6: two points fitted
    assert run.metrics["train_loss"] > 5                            # measured 9.3: far from fitted
    with torch.no_grad():
        logits = run.model.eval()(ds.x).double().numpy()
    log_norm = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    by_hand = np.mean(log_norm - logits[np.arange(len(ds.y)), ds.y.numpy()])
    assert run.metrics["train_loss"] == pytest.approx(by_hand, rel=1e-5)


def test_evaluate_false_skips_the_whole_set_evaluation_and_nothing_else():
    """evaluate=False (lesson 09 reads only the losses): the same losses, gradient norms and weights to the
    bit, metrics with final_loss only, and the model never run on the whole training or held-out set."""
    ds = data.spirals(256, seed=0, n_test=64)
    runs = {}
    for evaluate in (True, False):
        net = models.mlp(3, 16, activation="tanh", seed=0)
        batches = []
        hook = net.register_forward_pre_hook(lambda module, args, seen=batches: seen.append(len(args[0])))
        runs[evaluate] = fit(net, ds, steps=5, lr=0.1, batch_size=32, seed=1, probe=False, evaluate=evaluate)
        hook.remove()
        runs[evaluate].batches = batches
    kept, skipped = runs[True], runs[False]
    np.testing.assert_array_equal(kept.losses, skipped.losses)
    np.testing.assert_array_equal(kept.grad_norm_total, skipped.grad_norm_total)
    for a, b in zip(kept.model.parameters(), skipped.model.parameters()):
        assert torch.equal(a, b)
    assert skipped.metrics == {"final_loss": skipped.losses[-1]}
    assert {"train_loss", "test_loss", "train_accuracy", "test_accuracy"} <= set(kept.metrics)
    assert skipped.batches == [32] * 5 and kept.batches == [32] * 5 + [len(ds.x), len(ds.x_test)]
    with pytest.raises(ValueError, match="evaluate"):
        fit(models.mlp(2, 4), ds, steps=1, lr=0.1, evaluate="no")


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
    assert run.diverged_at == 1 and len(run.losses) == 2 and np.isnan(run.losses[-1])
    # Training stopped before the update of the diverged step, so the model still holds the weights
    # that produced it: replay the forward pass by hand and find the first module with a non-finite output.
    h, first_bad = ds.x, None
    with torch.no_grad():
        for name, module in net.named_children():
            h = module(h)
            if first_bad is None and not bool(torch.isfinite(h).all()):
                first_bad = name
    assert first_bad == "head"
    assert run.diverged_layer == "head"
    assert run.trace.nonfinite == {"step": 1, "layer": "head", "where": "forward"}
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


def test_wrong_number_of_features_is_named_and_no_hook_is_left():
    net = models.mlp(3, 8, seed=0)
    bad = (torch.randn(10, 3), torch.zeros(10, dtype=torch.long))  # 3 features into a 2-input net
    with pytest.raises(ValueError, match=r"x has 3 features .* first layer \(layer1, Linear\) expects 2"):
        fit(net, bad, steps=2, lr=0.1)
    assert hooks_left(net) == 0
    seq = models.sequence_model("rnn", hidden=4, seed=0)
    with pytest.raises(ValueError, match="x has 3 features .* expects 2"):
        fit(seq, (torch.randn(8, 5, 3), torch.randn(8, 1)), steps=1, lr=0.1)
    with pytest.raises(ValueError, match=r"x holds integers .* x.float\(\)"):
        fit(net, (torch.ones(10, 2, dtype=torch.long), torch.zeros(10, dtype=torch.long)), steps=1, lr=0.1)
    with pytest.raises(ValueError, match=r"x has shape \(10,\) .* shape \(n, 2\)"):
        fit(net, (torch.ones(10), torch.zeros(10, dtype=torch.long)), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="x has 3 features .* first layer \\(body, Linear\\) expects 2"):
        fit(_HeadFirst(), (torch.randn(10, 3), torch.zeros(10, dtype=torch.long)), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="model must return one tensor .* tuple"):
        fit(_HeadFirst(as_tuple=True), (torch.randn(10, 2), torch.zeros(10, dtype=torch.long)), steps=1, lr=0.1)
    assert hooks_left(net) == 0


class _HeadFirst(torch.nn.Module):
    """A learner's model whose head is registered before the layer that runs first."""

    def __init__(self, as_tuple=False):
        super().__init__()
        self.head, self.body, self.as_tuple = torch.nn.Linear(8, 2), torch.nn.Linear(2, 8), as_tuple

    def forward(self, x):
        out = self.head(torch.tanh(self.body(x)))
        return (out,) if self.as_tuple else out


def test_inputs_are_converted_where_the_intent_is_clear():
    ds = data.spirals(64, seed=0)
    reference = fit(models.mlp(2, 8, seed=0), ds, steps=5, lr=0.1, probe=False)
    variants = [
        (ds.x.double(), ds.y),                      # float64 features → float32
        (ds.x, ds.y.int()),                         # int32 labels → int64
        (ds.x, ds.y.reshape(-1, 1)),                # (n, 1) labels → (n,)
        (ds.x.numpy().astype(np.float64), ds.y.numpy().astype(np.int32)),  # numpy arrays
    ]
    for xy in variants:
        run = fit(models.mlp(2, 8, seed=0), xy, steps=5, lr=0.1, probe=False)
        np.testing.assert_allclose(run.losses, reference.losses, rtol=1e-6)
        assert run.metrics["train_accuracy"] == reference.metrics["train_accuracy"]
    # float targets of shape (n,) for a one-output regression model: the same as (n, 1)
    x = torch.linspace(-1, 1, 16).reshape(-1, 1)
    flat = fit(models.mlp(1, 4, in_features=1, out_features=1, seed=0), (x, 2 * x[:, 0]), steps=3, lr=0.1, probe=False)
    column = fit(models.mlp(1, 4, in_features=1, out_features=1, seed=0), (x, 2 * x), steps=3, lr=0.1, probe=False)
    np.testing.assert_array_equal(flat.losses, column.losses)


def test_labels_that_do_not_fit_the_model_are_refused_with_the_reason():
    net, x = models.mlp(2, 4, seed=0), data.spirals(16, seed=0).x
    with pytest.raises(ValueError, match=r"y holds float regression targets of shape \(16,\) .*\(y.long\(\)\)"):
        fit(net, (x, torch.arange(16.0) % 2), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="y holds class labels up to 4 but the model outputs 2 classes"):
        fit(net, (x, torch.arange(16) % 5), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="y holds class labels, which count from 0; got the label -1"):
        fit(net, (x, torch.arange(16) % 2 - 1), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="y must hold integer class labels or float"):
        fit(net, (x, torch.zeros(16, dtype=torch.bool)), steps=1, lr=0.1)
    with pytest.raises(ValueError, match=r"y holds integer class labels of shape \(16, 2\)"):
        fit(net, (x, torch.zeros(16, 2, dtype=torch.long)), steps=1, lr=0.1)
    assert hooks_left(net) == 0


def test_nonfinite_data_is_recorded_in_the_parameters():
    ds = data.spirals(16, seed=0)
    x = ds.x.clone()
    x[3, 1] = float("nan")
    assert fit(models.mlp(2, 4, seed=0), ds, steps=1, lr=0.1).params["data_finite"] is True
    run = fit(models.mlp(2, 4, seed=0), (x, ds.y), steps=3, lr=0.1)
    assert run.params["data_finite"] is False and run.diverged_at == 0


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


def _scalar_problem(w0: float = 0.0):
    """loss(w) = (w·1 − 1)² on one example: the gradient is 2(w − 1), so each step can be done by hand."""
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(w0)
    return net, (torch.ones(1, 1), torch.ones(1, 1))


def test_warmup_ramps_the_learning_rate_linearly_then_holds_it():
    net, xy = _scalar_problem()
    run = fit(net, xy, steps=6, lr=0.4, warmup=4, probe=False)
    np.testing.assert_allclose(run.lrs, [0.1, 0.2, 0.3, 0.4, 0.4, 0.4], rtol=1e-12)
    w = 0.0
    for lr in (0.1, 0.2, 0.3, 0.4, 0.4, 0.4):  # plain SGD by hand: w ← w − lr·2(w − 1)
        w -= lr * 2 * (w - 1)
    assert net.weight.item() == pytest.approx(w, rel=1e-6)
    assert run.params["warmup"] == 4 and run.params["betas"] is None
    np.testing.assert_allclose(fit(_scalar_problem()[0], xy, steps=3, lr=0.4, probe=False).lrs, [0.4] * 3)


def test_adam_uses_the_given_betas_and_warmup():
    net, xy = _scalar_problem(3.0)
    lr, (b1, b2), eps = 0.1, (0.5, 0.8), 1e-8
    run = fit(net, xy, steps=5, lr=lr, optimizer="adam", betas=(b1, b2), warmup=2, probe=False)
    w, m, v = 3.0, 0.0, 0.0
    for k, lr_k in enumerate((0.05, 0.1, 0.1, 0.1, 0.1), start=1):  # Adam by hand (Kingma & Ba, Alg. 1)
        g = 2 * (w - 1)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        w -= lr_k * (m / (1 - b1**k)) / ((v / (1 - b2**k)) ** 0.5 + eps)
    assert net.weight.item() == pytest.approx(w, rel=1e-5)
    np.testing.assert_allclose(run.lrs, [0.05, 0.1, 0.1, 0.1, 0.1])
    assert run.params["optimizer"] == "adam" and run.params["betas"] == [0.5, 0.8]


@pytest.mark.parametrize("optimizer, kwargs", [("adam", dict(betas=(0.9, 0.98), warmup=3)),
                                               ("sgd", dict(momentum=0.9)), ("sgd", {})])
def test_multi_tensor_updates_equal_torchs_per_parameter_loop(optimizer, kwargs):
    """fit steps Adam and SGD with foreach=True (lesson 05's 50-layer nets: half the time); the weights are
    bitwise those of torch's one-parameter-at-a-time loop (foreach=False), the same loop run by hand."""
    ds = data.spirals(64, seed=0)
    net = models.mlp(6, 8, activation="relu", batchnorm=True, seed=0)
    reference = models.mlp(6, 8, activation="relu", batchnorm=True, seed=0)
    run = fit(net, ds, steps=6, lr=0.01, optimizer=optimizer, probe=False, **kwargs)
    warmup = kwargs.get("warmup", 0)
    if optimizer == "adam":
        opt = torch.optim.Adam(reference.parameters(), lr=0.01, betas=kwargs["betas"], foreach=False)
    else:
        opt = torch.optim.SGD(reference.parameters(), lr=0.01, momentum=kwargs.get("momentum", 0.0), foreach=False)
    reference.train()
    losses = []
    for k in range(6):
        for group in opt.param_groups:
            group["lr"] = 0.01 * min(1.0, (k + 1) / warmup) if warmup else 0.01
        opt.zero_grad()
        loss = nn.functional.cross_entropy(reference(ds.x), ds.y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    assert run.losses.tolist() == losses
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))


def test_radam_starts_as_sgd_with_bias_corrected_momentum():
    # RAdam's variance estimate is untrusted for the first steps (rho_t ≤ 5): it steps lr·m̂ = lr·g on step 1.
    net, xy = _scalar_problem(3.0)
    run = fit(net, xy, steps=1, lr=0.1, optimizer="radam", probe=False)
    assert net.weight.item() == pytest.approx(3.0 - 0.1 * 2 * (3.0 - 1), rel=1e-6)
    assert run.params["optimizer"] == "radam" and run.params["betas"] == [0.9, 0.999]


def test_radam_multi_tensor_update_is_torchs_loop_up_to_rounding(monkeypatch):
    """fit steps RAdam with foreach=True (lesson 09's Transformer: 1.9 against 4.8 ms an update): the weights
    are those of torch's one-parameter-at-a-time loop up to float32 rounding, through the first steps (plain
    momentum) and the later ones (rho_t > 5: the variance-rectified step)."""
    ds = data.spirals(64, seed=0)
    net = models.mlp(3, 8, activation="tanh", seed=0)
    reference = models.mlp(3, 8, activation="tanh", seed=0)
    made = []

    class Recorded(torch.optim.RAdam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(torch.optim, "RAdam", Recorded)
    run = fit(net, ds, steps=12, lr=0.01, optimizer="radam", betas=(0.9, 0.98), probe=False)
    assert [opt.defaults["foreach"] for opt in made] == [True]
    opt = torch.optim.RAdam(reference.parameters(), lr=0.01, betas=(0.9, 0.98), foreach=False)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(reference(ds.x), ds.y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.testing.assert_allclose(run.losses, losses, rtol=1e-5)
    for a, b in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["foreach"] is False


def test_warmup_and_betas_survive_save_and_load(tmp_path):
    run = fit(models.mlp(2, 4, seed=0), data.spirals(32, seed=0), steps=4, lr=1e-2, optimizer="radam",
              betas=(0.9, 0.98), warmup=3)
    same = Run.load(run.save(tmp_path / "run.npz"))
    assert same.params["warmup"] == 3 and same.params["betas"] == [0.9, 0.98]
    np.testing.assert_array_equal(same.lrs, run.lrs)
    np.testing.assert_allclose(same.lrs, [1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2])



class _FailsOnSecondCall(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net, self.calls = models.mlp(2, 4, seed=0), 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt  # what a learner's "stop" button raises mid-training
        return self.net(x)


def test_the_training_error_itself_reaches_the_probe_and_no_hook_is_left(monkeypatch):
    seen = []
    original = probes.Probe.__exit__

    def spy(self, *exc):
        seen.append(exc[0])
        return original(self, *exc)

    monkeypatch.setattr(probes.Probe, "__exit__", spy)
    model = _FailsOnSecondCall()
    with pytest.raises(KeyboardInterrupt):
        fit(model, data.spirals(16, seed=0), steps=3, lr=0.1)
    assert seen == [KeyboardInterrupt]
    assert hooks_left(model) == 0


def test_numpy_numbers_and_flags_are_accepted():
    ds = data.spirals(32, seed=0)
    run = fit(models.mlp(2, 4, seed=0), ds, steps=np.int64(3), lr=np.float32(0.1), clip=np.float32(1.0),
              probe=np.bool_(False), seed=np.int64(1), momentum=np.float64(0.5))
    assert run.params["clip"] == {"method": "norm", "threshold": 1.0}
    assert run.trace is None and len(run.losses) == 3


def test_progress_bar_obeys_tqdm_disable(capfd, monkeypatch):
    """progress=True makes a tqdm.auto bar of ``steps`` steps, updated once a step and closed, with
    no disable= of its own: so TQDM_DISABLE=1 (tests/conftest.py sets it before tqdm is imported)
    is what keeps the real bar silent here. A fit that never made a bar passed the old version."""
    fit(models.mlp(2, 4, seed=0), data.spirals(16, seed=0), steps=2, lr=0.1, progress=True)
    assert capfd.readouterr().err == ""
    bars = record_progress_bars(monkeypatch)
    fit(models.mlp(2, 4, seed=0), data.spirals(16, seed=0), steps=3, lr=0.1, progress=True)
    assert len(bars) == 1 and bars[0].kwargs["total"] == 3 and "disable" not in bars[0].kwargs
    assert bars[0].updates == 3 and bars[0].closed
    fit(models.mlp(2, 4, seed=0), data.spirals(16, seed=0), steps=3, lr=0.1, progress=False)
    assert len(bars) == 1


def _saved(tmp_path, **changes):
    """A real run file, then the same file with some entries replaced (None removes one)."""
    run = fit(models.mlp(2, 4, seed=0), data.spirals(32, seed=0), steps=4, lr=0.1, every=2)
    with np.load(run.save(tmp_path / "good.npz")) as stored:
        arrays = {k: stored[k] for k in stored.files}
    meta = json.loads(str(arrays.pop("meta")))
    for key, value in changes.items():
        if key == "meta":
            continue
        target = meta if key.startswith("meta.") else arrays
        key = key.removeprefix("meta.")
        if value is None:
            target.pop(key)
        else:
            target[key] = value
    if "meta" not in changes:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("changes,reason", [
    ({"meta.format": None}, "format"),
    ({"meta": None}, "no 'meta'"),
    ({"meta.params": [1, 2]}, "params"),
    ({"meta.metrics": None}, "metrics"),
    ({"meta.diverged_at": "3"}, "diverged_at"),
    ({"meta.diverged_at": 2.0}, "diverged_at"),
    ({"meta.diverged_at": True}, "diverged_at"),
    ({"meta.diverged_at": 1}, "diverged_at"),            # not the last step: inconsistent
    ({"meta.trace": "layers"}, "trace"),
    ({"losses": np.zeros(3)}, "losses"),                 # one step fewer than the other arrays
    ({"clipped": np.zeros(4)}, "clipped"),               # floats where flags belong
    ({"grad_norm_total": None}, "grad_norm_total"),
    ({"trace_steps": np.array([0, 9])}, "steps"),        # a recorded step the run never took
    ({"trace_grad_norm": np.zeros((2, 2))}, "grad_norm"),
    ({"trace_steps": None}, "trace"),
])
def test_load_refuses_inconsistent_files(tmp_path, changes, reason):
    with pytest.raises(ValueError, match=rf"not a gradcourse run \(.*{reason}"):
        Run.load(_saved(tmp_path, **changes))


def test_load_refuses_foreign_and_damaged_files(tmp_path):
    good = _saved(tmp_path)
    assert Run.load(good).losses.shape == (4,)
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:200])
    np.save(tmp_path / "array.npy", np.arange(3))
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "object.npz", meta=np.array([{"format": "gradcourse-run/1"}], dtype=object))
    np.savez(tmp_path / "deep.npz", meta=np.array("[" * 100_000 + "]" * 100_000))
    np.savez(tmp_path / "nested.npz", meta=np.array(json.dumps({"format": "gradcourse-run/1", "params": {
        "a": [[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]}})))
    np.savez(tmp_path / "list.npz", meta=np.array("[1, 2]"))
    for name in ("truncated.npz", "array.npy", "text.npz", "object.npz", "deep.npz", "nested.npz", "list.npz"):
        with pytest.raises(ValueError, match=r"not a gradcourse run \("):
            Run.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        Run.load(tmp_path / "missing.npz")


def test_runs_with_numpy_parameters_save_as_plain_numbers(tmp_path):
    seeds = np.arange(2)
    run = fit(models.mlp(2, 4, seed=seeds[1]), data.spirals(16, seed=0), steps=seeds[1] + 1, lr=np.float64(0.1),
              seed=seeds[1], optimizer="adam", betas=np.array([0.9, 0.99]))
    assert run.params["seed"] == 1 and type(run.params["seed"]) is int
    assert run.params["betas"] == [0.9, 0.99] and run.params["model"]["seed"] == 1
    same = Run.load(run.save(tmp_path / "run.npz"))
    assert same.params == run.params


def test_runs_compare_by_value(tmp_path):
    ds = data.spirals(32, seed=0)

    def make(lr=0.1, **kw):
        return fit(models.mlp(2, 4, seed=0), ds, steps=3, lr=lr, **kw)

    first, second = make(), make()
    assert first == second and first is not second
    assert first != make(lr=0.2)                                 # different losses and parameters
    assert first != make(every=2)                                # same losses, different trace
    assert first != make(probe=False) and first != "run"
    diverged = fit(models.mlp(10, 64, activation="relu", init="normal", weight_std=4.0, seed=0),
                   data.spirals(256, seed=0), steps=20, lr=0.5)
    assert np.isnan(diverged.metrics["final_loss"]) or not np.isfinite(diverged.losses[-1])
    assert Run.load(diverged.save(tmp_path / "d.npz")) == diverged   # NaN equals NaN here
    assert Run.load(first.save(tmp_path / "r.npz")) == first


class _TokenModel(torch.nn.Module):
    """Per-token class scores in cross-entropy's layout (batch, vocab, seq_len), as lesson 09's models give."""

    def __init__(self, vocab=16, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = torch.nn.Embedding(vocab, width), torch.nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.head(self.embed(tokens)).permute(0, 2, 1)


def test_token_ids_and_per_token_labels():
    tokens = torch.randint(0, 16, (32, 8), generator=torch.Generator().manual_seed(0)).int()
    model = _TokenModel()
    with torch.no_grad():
        scores = model(tokens.long()).permute(0, 2, 1).reshape(-1, 16).double()
    targets = tokens.flip(1).reshape(-1).long()  # the reversal task: labels (n, seq_len)
    by_hand = (torch.logsumexp(scores, 1) - scores[torch.arange(len(targets)), targets]).mean().item()
    run = fit(model, (tokens, tokens.flip(1)), steps=20, lr=1e-2, optimizer="adam", warmup=5, probe=False)
    assert run.losses[0] == pytest.approx(by_hand, rel=1e-5)
    assert run.metrics["train_loss"] < run.losses[0]
    with torch.no_grad():
        predicted = model(tokens.long()).numpy().argmax(axis=1)          # (n, seq_len)
    assert run.metrics["train_accuracy"] == pytest.approx(np.mean(predicted == tokens.flip(1).numpy()))
    with pytest.raises(ValueError, match="x holds floats but the model's first layer \\(embed, Embedding\\)"):
        fit(_TokenModel(), (tokens.float(), tokens.flip(1)), steps=1, lr=1e-2, probe=False)


@pytest.mark.parametrize("training", [True, False])
def test_evaluating_gives_the_model_back_in_its_own_mode_even_after_an_error(training):
    from gradcourse.modes import evaluating

    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    net.train(training)
    with pytest.raises(ZeroDivisionError), evaluating(net):
        assert not net.training and not net[1].training and not torch.is_grad_enabled()
        raise ZeroDivisionError("an evaluation that fails half way")
    assert net.training is training and net[2].training is training and torch.is_grad_enabled()
    with pytest.raises(ValueError, match="^model must be a torch.nn.Module"), evaluating("net"):
        pass


def _plain_loop_reference(net, x, y, *, steps, lr, every, optimizer, momentum=0.0, clip=None, hist=(-40, 7)):
    """What fit(..., every=every) records, computed by a plain torch loop written out here: forward,
    loss, backward, torch's own clipping or total norm, a foreach optimizer step, and, on every
    ``every``-th step, each Linear layer's figures summed in float64 the way the probe documents
    them (activation = the output of the module named in ``probe_activations``, else the layer's own
    output). Read from hooks that only keep tensors, so nothing of the probe takes part."""
    from gradcourse.theory import SATURATION_MARGIN

    layers = {name: m for name, m in net.named_modules() if isinstance(m, nn.Linear)}
    acts = {name: net.get_submodule(net.probe_activations[name]) if name in net.probe_activations else None
            for name in layers}
    kept = {}
    handles = [m.register_forward_hook(lambda m, a, out, name=name: kept.__setitem__(("z", name), out))
               for name, m in layers.items()]
    handles += [m.register_forward_hook(lambda m, a, out, name=name: kept.__setitem__(("a", name), out))
                for name, m in acts.items() if m is not None]
    params = [p for p in net.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True) if optimizer == "sgd"
           else torch.optim.Adam(params, lr=lr, foreach=True))
    losses, totals, clipped, records = [], [], [], []
    net.train()
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        out = net(x)
        loss = nn.functional.cross_entropy(out, y)
        losses.append(loss.item())
        recorded = step % every == 0
        if recorded:
            for name in layers:
                kept[("z", name)].retain_grad()
        loss.backward()
        if recorded:  # fit's probe (no optimizer given) reads the gradients as backward ends: before clipping
            before = [m.weight.detach().clone() for m in layers.values()]
            grads = [m.weight.grad.detach().clone() for m in layers.values()]
        if clip is None:
            total = nn.utils.get_total_norm([p.grad for p in params])
        else:
            total = nn.utils.clip_grad_norm_(params, clip)
        totals.append(float(total))
        clipped.append(clip is not None and float(total) > clip)
        opt.step()
        if not recorded:
            continue
        rec = {q: [] for q in ("grad_norm", "output_grad_norm", "weight_norm", "update_ratio", "act_mean",
                               "act_std", "saturated_frac", "dead_frac")}
        hists = []
        for (name, m), w0, g in zip(layers.items(), before, grads):
            f64 = torch.float64
            rec["grad_norm"].append(torch.linalg.vector_norm(g, dtype=f64).item())
            zg = kept[("z", name)].grad.reshape(-1).double()
            rec["output_grad_norm"].append(math.sqrt(torch.dot(zg, zg).item()))
            weight_norm = torch.linalg.vector_norm(w0, dtype=f64).item()
            rec["weight_norm"].append(weight_norm)
            rec["update_ratio"].append(torch.linalg.vector_norm(w0 - m.weight.detach(), dtype=f64).item()
                                       / weight_norm)
            a = kept[("a", name)] if acts[name] is not None else kept[("z", name)]
            a = a.detach()
            a64, n = a.reshape(-1).double(), a.numel()
            total_a = a64.sum()
            centred = a64.sub(total_a, alpha=1 / n)
            rec["act_mean"].append(total_a.item() / n)
            rec["act_std"].append(math.sqrt(max(torch.dot(centred, centred).item() / max(n - 1, 1), 0.0)))
            kind = type(acts[name]).__name__ if acts[name] is not None else "other"
            if kind == "Sigmoid":
                rec["saturated_frac"].append(((a64 - 0.5).abs() > 0.5 - SATURATION_MARGIN).sum().item() / n)
            else:
                rec["saturated_frac"].append(math.nan)
            units = a.reshape(len(a), -1).amax(dim=0)
            rec["dead_frac"].append((units <= 0).sum().item() / units.numel() if kind == "ReLU" else math.nan)
            # the float32 exponent field of each |g|, one bin per power of two, the ends gathering the rest
            exponent = (g.reshape(-1).numpy().view(np.int32) >> 23) & 0xFF
            bins = np.clip(exponent.astype(np.int64) - (127 + hist[0]), 0, hist[1] - hist[0] - 1)
            hists.append(np.bincount(bins, minlength=hist[1] - hist[0]))
        records.append((step, rec, np.array(hists)))
    for handle in handles:
        handle.remove()
    return losses, totals, clipped, records


@pytest.mark.parametrize("activation, init, optimizer, kwargs", [
    ("sigmoid", "normal", "sgd", dict(momentum=0.9, clip=1.0)),  # lessons 01, 03, 04: momentum, clipping, saturation
    ("relu", "kaiming", "adam", {}),                              # lesson 07's patient D: Adam, dead units
])
def test_fit_and_its_probe_record_bitwise_what_a_plain_loop_computes(activation, init, optimizer, kwargs):
    """fit's losses, total norms, clipping flags, and every figure its probe records (issue 24 cut their
    per-step overhead: one no_grad block instead of a detach per tensor, fewer reshapes and slices, the
    saturation count in fewer passes) equal, bit for bit, what a plain torch loop computes."""
    ds = data.spirals(64, seed=0)
    net, reference = (models.mlp(5, 16, activation=activation, init=init, weight_std=4.0 if init == "normal" else None,
                                 seed=0) for _ in range(2))
    lr = 0.3 if optimizer == "adam" else 0.5
    run = fit(net, ds, steps=9, lr=lr, optimizer=optimizer, every=4, progress=False, **kwargs)
    losses, totals, clipped, records = _plain_loop_reference(reference, ds.x, ds.y, steps=9, lr=lr, every=4,
                                                             optimizer=optimizer, **kwargs)
    assert run.losses.tolist() == losses
    assert run.grad_norm_total.tolist() == totals
    assert run.clipped.tolist() == clipped and (0 < sum(clipped) < 9 if "clip" in kwargs else not any(clipped))
    trace = run.trace
    assert trace.steps.tolist() == [step for step, _, _ in records] == [0, 4, 8]
    assert round(trace.hist_edges[0] / math.log10(2)) == -40 and len(trace.hist_edges) == 48
    for i, (_, expected, hists) in enumerate(records):
        for quantity, values in expected.items():
            np.testing.assert_array_equal(trace.get(quantity)[i], np.array(values), err_msg=quantity)
        np.testing.assert_array_equal(trace.grad_hist[i], hists)
    # what the comparison covers is there to compare: saturated sigmoid units, dead ReLU units
    assert (trace.get("saturated_frac" if activation == "sigmoid" else "dead_frac")[:, :5] > 0).any()
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))
