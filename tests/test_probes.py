"""Every probe quantity against an independent computation with plain autograd."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from gradcourse import data, measurements, models
from gradcourse.losses import loss_function
from gradcourse.probes import Probe, probe_once
from gradcourse.trace import LAYER_QUANTITIES
from gradcourse.train import fit

REL = 1e-5


def close(measured, expected, rel=REL):
    np.testing.assert_allclose(np.asarray(measured, dtype=float), np.asarray(expected, dtype=float),
                               rtol=rel, atol=0)


def manual_forward(net: models.MLP, x: torch.Tensor):
    """Forward pass written out by hand, keeping every pre-activation and activation."""
    zs, acts = [], []
    h = x
    for k in range(1, net.depth + 1):
        z = getattr(net, f"layer{k}")(h)
        z.retain_grad()
        zs.append(z)
        u = getattr(net, f"bn{k}")(z) if hasattr(net, f"bn{k}") else z
        a = getattr(net, f"act{k}")(u)
        acts.append(a)
        h = h + a if net.residual and k > 1 else a
    out = net.head(h)
    out.retain_grad()
    zs.append(out)
    return out, zs, acts


@pytest.mark.parametrize("activation,batchnorm,residual", [
    ("sigmoid", False, False), ("tanh", False, True), ("relu", True, False), ("leaky_relu", False, False),
])
def test_mlp_quantities_match_autograd(activation, batchnorm, residual):
    x, y = data.spirals(64, seed=3)
    net = models.mlp(5, 12, activation=activation, batchnorm=batchnorm, residual=residual,
                     init="normal", weight_std=3.0, seed=1)
    twin = copy.deepcopy(net)
    lr = 0.1
    with Probe(net) as probe:
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    trace = probe.trace
    assert trace.layers == [f"layer{k}" for k in range(1, 6)] + ["head"]
    assert trace.steps.tolist() == [0]

    out, zs, acts = manual_forward(twin, x)
    nn.functional.cross_entropy(out, y).backward()
    linears = twin.hidden_layers() + [twin.head]
    close(trace.get("grad_norm")[0], [lin.weight.grad.norm().item() for lin in linears])
    close(trace.get("output_grad_norm")[0], [z.grad.norm().item() for z in zs])
    close(trace.get("weight_norm")[0], [lin.weight.norm().item() for lin in linears])
    # The update that really happened is the float32 difference W_after - W_before.
    updates = [((lin.weight - lr * lin.weight.grad) - lin.weight).norm().item() / lin.weight.norm().item()
               for lin in linears]
    close(trace.get("update_ratio")[0], updates)
    close(trace.get("act_mean")[0][:-1], [a.mean().item() for a in acts])
    close(trace.get("act_std")[0][:-1], [a.std().item() for a in acts])
    close(trace.get("act_mean")[0][-1], zs[-1].mean().item())  # the head has no activation

    saturated = trace.get("saturated_frac")[0][:-1]
    dead = trace.get("dead_frac")[0][:-1]
    if activation == "sigmoid":
        close(saturated, [((a < 0.03) | (a > 0.97)).float().mean().item() for a in acts])
    elif activation == "tanh":
        close(saturated, [(a.abs() > 0.97).float().mean().item() for a in acts])
    else:
        assert np.isnan(saturated).all()
    if activation == "relu":
        close(dead, [(a.amax(dim=0) <= 0).float().mean().item() for a in acts])
    else:  # a leaky ReLU passes a gradient everywhere: its units never die
        assert np.isnan(dead).all()
    assert trace.activation_source == {**{f"layer{k}": "named" for k in range(1, 6)}, "head": "output"}


def test_gradient_histogram_counts_powers_of_two():
    x, y = data.spirals(64, seed=0)
    net = models.mlp(3, 8, activation="relu", seed=0)
    twin = copy.deepcopy(net)
    with Probe(net, hist_range=(-6, 1)) as probe:
        nn.functional.cross_entropy(net(x), y).backward()
    trace = probe.trace
    nn.functional.cross_entropy(twin(x), y).backward()
    edges = trace.hist_edges
    assert len(edges) == trace.get("grad_hist").shape[2] + 1
    for i, lin in enumerate(twin.hidden_layers() + [twin.head]):
        g = lin.weight.grad.abs().flatten().numpy()
        exponent = np.floor(np.log2(np.where(g > 0, g, 1e-45)))
        low, high = round(edges[0] / math.log10(2)), round(edges[-1] / math.log10(2))
        bins = np.clip(exponent, low, high - 1) - low
        expected = np.bincount(bins.astype(int), minlength=high - low)
        assert trace.get("grad_hist")[0, i].tolist() == expected.tolist()
        assert trace.get("grad_hist")[0, i].sum() == g.size


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_hidden_grad_norm_matches_autograd(cell):
    ds = data.adding_problem(seq_len=12, n=16, seed=0, n_test=0)
    model = models.sequence_model(cell, hidden=6, seed=2)
    twin = copy.deepcopy(model)
    with Probe(model) as probe:
        nn.functional.mse_loss(model(ds.x), ds.y).backward()
    trace = probe.trace
    assert trace.layers == ["cell", "readout"]

    hs = []
    h = torch.zeros(16, 6)
    c = torch.zeros(16, 6)
    for t in range(12):
        if cell == "lstm":
            h, c = twin.cell(ds.x[:, t], (h, c))
        else:
            h = twin.cell(ds.x[:, t], h)
        h.retain_grad()
        hs.append(h)
    nn.functional.mse_loss(twin.readout(h), ds.y).backward()
    close(trace.get("hidden_grad_norm")[0], [h.grad.norm().item() for h in hs])
    close(trace.get("grad_norm")[0], [twin.cell.weight_hh.grad.norm().item(),
                                      twin.readout.weight.grad.norm().item()])


def test_every_and_bounded_history():
    x, y = data.spirals(32, seed=0)
    net = models.mlp(2, 4, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with Probe(net, every=3, max_records=4) as probe:
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            with torch.no_grad():  # an evaluation pass is not a step
                net(x)
    steps = probe.trace.steps.tolist()
    assert len(steps) <= 4
    assert steps[0] == 0 and all(s % 3 == 0 for s in steps)
    assert probe.every > 3  # the stride doubled as the history filled


def test_reading_the_trace_during_training_changes_nothing():
    """Records become arrays when the trace is read: reading it every few steps (while the
    history is thinned) must give the same trace as reading it once at the end."""
    x, y = data.spirals(32, seed=0)

    def train(read_every: int | None):
        net = models.mlp(3, 6, activation="relu", seed=0)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        with Probe(net, every=2, max_records=4) as probe:
            for step in range(25):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
                if read_every and step % read_every == 0:
                    assert len(probe.trace.steps) <= 5  # the step in flight is not in it yet
        return probe.trace

    once, often = train(None), train(3)
    assert once.steps.tolist() == often.steps.tolist() and len(once.steps) >= 3
    for quantity in LAYER_QUANTITIES:
        np.testing.assert_array_equal(once.get(quantity), often.get(quantity))
    np.testing.assert_array_equal(once.grad_hist, often.grad_hist)
    assert np.isfinite(once.get("update_ratio")).all() and (once.get("dead_frac")[:, :-1] >= 0).all()  # head: none


def hooks_left(model: nn.Module) -> int:
    count = 0
    for module in model.modules():
        count += len(module._forward_hooks) + len(module._forward_pre_hooks)
        count += len(module._backward_hooks)
    for p in model.parameters():
        count += len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
    return count


def test_no_hook_left_even_after_an_exception():
    net = models.mlp(3, 4, seed=0)
    with pytest.raises(RuntimeError, match="boom"):
        with Probe(net):
            net(torch.randn(5, 2)).sum().backward()
            raise RuntimeError("boom")
    assert hooks_left(net) == 0
    probe = Probe(net)
    probe.remove()
    probe.remove()  # idempotent
    assert hooks_left(net) == 0


def test_the_global_hook_is_on_only_while_the_probed_model_runs():
    """A recorded step listens to every module call, but only during its own model's forward
    passes: another model trained alongside is not slowed down or seen."""
    from torch.nn.modules.module import _global_forward_hooks

    net, other = models.mlp(3, 4, seed=0), models.mlp(2, 4, seed=1)
    x = torch.randn(8, 2)
    with Probe(net) as probe:
        out = net(x)
        assert len(_global_forward_hooks) == 0
        other(x).sum().backward()
        out.sum().backward()
        net(x).sum().backward()
    assert len(_global_forward_hooks) == 0 and probe.trace.steps.tolist() == [0, 1]
    assert np.isfinite(probe.trace.get("act_mean")).all()  # yet every layer of net was measured


def test_refuses_bad_arguments():
    with pytest.raises(ValueError, match="optimizer"):
        Probe(models.mlp(2, 3), optimizer="sgd")
    with pytest.raises(ValueError, match="every"):
        Probe(models.mlp(2, 3), every=0)
    with pytest.raises(ValueError, match="model"):
        Probe("not a model")
    with pytest.raises(ValueError, match="layers"):
        Probe(models.mlp(2, 3), layers=["nope"])
    with pytest.raises(ValueError, match="hist_range"):
        Probe(models.mlp(2, 3), hist_range=(2, -2))


def test_locates_the_first_nonfinite_forward_value():
    net = models.mlp(4, 8, activation="linear", seed=0)
    with torch.no_grad():
        net.layer3.weight[0, 0] = float("inf")
    with Probe(net) as probe:
        net(torch.ones(4, 2))
    assert probe.trace.nonfinite == {"step": 0, "layer": "layer3", "where": "forward"}


def test_locates_nonfinite_values_on_a_step_that_was_not_recorded():
    net = models.mlp(4, 8, activation="tanh", batchnorm=True, seed=0)
    x = torch.ones(4, 2)
    with Probe(net, every=5) as probe:
        net(x).sum().backward()               # step 0, recorded
        with torch.no_grad():
            net.layer2.weight[0, 0] = float("nan")
        net(x)                                 # step 1, not recorded: found by a replay
    assert probe.trace.nonfinite == {"step": 1, "layer": "layer2", "where": "forward"}
    assert hooks_left(net) == 0


def test_probe_once_picks_the_loss_from_the_target_like_fit():
    x, y = data.spirals(64, seed=5)
    net = models.mlp(4, 10, activation="tanh", seed=2)
    twin = copy.deepcopy(net)
    net(x).sum().backward()  # stale gradients that probe_once must not add in
    trace = probe_once(net, x, y)
    loss = nn.functional.cross_entropy(twin(x), y)
    loss.backward()
    assert trace.steps.tolist() == [0]
    close(trace.loss, loss.item())
    linears = twin.hidden_layers() + [twin.head]
    close(trace.get("grad_norm")[0], [lin.weight.grad.norm().item() for lin in linears])
    # this batch's gradients are left in .grad
    close(net.head.weight.grad.norm().item(), twin.head.weight.grad.norm().item())

    ds = data.adding_problem(seq_len=6, n=8, seed=1, n_test=0)
    model = models.sequence_model("gru", hidden=5, seed=0)
    twin = copy.deepcopy(model)
    trace = probe_once(model, ds.x, ds.y, layers=["readout"])
    loss = nn.functional.mse_loss(twin(ds.x), ds.y)
    loss.backward()
    assert trace.layers == ["readout"]
    close(trace.loss, loss.item())
    close(trace.get("grad_norm")[0], [twin.readout.weight.grad.norm().item()])


def test_loss_function_follows_the_target():
    assert loss_function(torch.tensor([1, 0])) is nn.functional.cross_entropy
    assert loss_function(torch.tensor([[0.5]])) is nn.functional.mse_loss
    with pytest.raises(ValueError, match="y must"):
        loss_function([1, 0])
    with pytest.raises(ValueError, match="y must"):
        loss_function(torch.tensor([True]))


# -- the measurements alone -------------------------------------------------------------------

def test_measurements_alone_match_float64():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(300, 40, generator=gen) * 0.2 + 1e3  # the mean dwarfs the spread
    sums = measurements.activation_sums(a)
    mean, std, saturated, dead = measurements.activation_statistics([sums])[0][:, 0].tolist()
    close(mean, a.double().mean().item(), rel=1e-12)  # float64 sums: the mean dwarfing the spread costs nothing
    close(std, a.double().std().item(), rel=1e-9)
    assert math.isnan(saturated) and math.isnan(dead)
    # two calls merge as one batch
    b = torch.sigmoid(torch.randn(50, 40, generator=gen) * 4)
    c = torch.sigmoid(torch.randn(70, 40, generator=gen) * 4)
    merged = measurements.merge_activation_sums([measurements.activation_sums(b, nn.Sigmoid()),
                                                 measurements.activation_sums(c, nn.Sigmoid())])
    both = torch.cat([b, c]).double()
    stats = measurements.activation_statistics([merged, None])[0]
    close(stats[:, 0][:3], [both.mean(), both.std(), ((both < 0.03) | (both > 0.97)).double().mean()], rel=1e-7)
    assert np.isnan(stats[:, 1]).all()
    r = torch.relu(torch.randn(8, 3, 5, generator=gen))
    r[:, 1, 2] = 0.0
    dead = measurements.activation_statistics([measurements.activation_sums(r, nn.ReLU())])[0][3, 0]
    close(dead, (r.amax(dim=0) <= 0).double().mean())
    assert measurements.log2_histogram([torch.tensor([0.0, 0.3, 1.0, 5.0, math.nan])], -2, 2).tolist() == [[2, 0, 1, 2]]
    # a leaky ReLU's units never die, however negative; the range of a ReLU's values says "relu"
    leaky = measurements.activation_statistics([measurements.activation_sums(-torch.rand(8, 4) * 0.01, nn.LeakyReLU())])
    assert leaky[1] == ["other"] and np.isnan(leaky[0][2:]).all()
    inferred = measurements.activation_statistics([measurements.activation_sums(r, "infer")])
    assert inferred[1] == ["relu"] and inferred[0][3, 0] == dead
    assert measurements.all_finite([1.0, 2.0])
    assert not measurements.all_finite([1.0, math.inf]) and not measurements.all_finite([math.nan])


# -- ordinary and convolutional models --------------------------------------------------------

ACTIVATION_TYPES = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU)
TRANSPARENT = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Flatten, nn.MaxPool1d, nn.MaxPool2d)


def sequential_reference(model: nn.Sequential, x, y, lr):
    """Every probe quantity of a Sequential model by plain autograd, summed in float64: the
    activation of a layer is the first activation module after it (past BN, pooling, flatten)."""
    model = copy.deepcopy(model)
    tracked = [m for m in model if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    before = [m.weight.detach().clone() for m in tracked]
    zs, acts, kinds, h, current = [], {}, {}, x, None
    for module in model:
        h = module(h)
        if module in tracked:
            h.retain_grad()
            zs.append(h)
            current = len(zs) - 1
        elif isinstance(module, ACTIVATION_TYPES) and current is not None:
            acts[current], kinds[current] = h, type(module)
            current = None
        elif not isinstance(module, TRANSPARENT):
            current = None
    loss_function(y)(h, y).backward()
    expected = {q: [] for q in ("grad_norm", "output_grad_norm", "weight_norm", "update_ratio", "act_mean",
                                "act_std", "saturated_frac", "dead_frac")}
    for i, (m, z, w0) in enumerate(zip(tracked, zs, before)):
        g, a = m.weight.grad.double(), acts.get(i, z).detach().double()
        w1 = w0 - lr * m.weight.grad
        expected["grad_norm"].append(g.norm().item())
        expected["output_grad_norm"].append(z.grad.double().norm().item())
        expected["weight_norm"].append(w0.double().norm().item())
        expected["update_ratio"].append((w1.double() - w0.double()).norm().item() / w0.double().norm().item())
        expected["act_mean"].append(a.mean().item())
        expected["act_std"].append(a.std().item())
        kind = kinds.get(i)
        expected["saturated_frac"].append(((a < 0.03) | (a > 0.97)).double().mean().item() if kind is nn.Sigmoid
                                          else (a.abs() > 0.97).double().mean().item() if kind is nn.Tanh
                                          else math.nan)
        expected["dead_frac"].append((a.reshape(len(a), -1).amax(dim=0) <= 0).double().mean().item()
                                     if kind is nn.ReLU else math.nan)
    return expected


def probed_sgd_step(model, x, y, lr, **options):
    with Probe(model, **options) as probe:
        loss_function(y)(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= lr * p.grad
    return probe.trace


def assert_matches(trace, expected, rel):
    for quantity, values in expected.items():
        measured = trace.get(quantity)[0]
        np.testing.assert_array_equal(np.isnan(measured), np.isnan(values), err_msg=quantity)
        keep = ~np.isnan(np.asarray(values))
        close(measured[keep], np.asarray(values)[keep], rel=rel)


def conv2d_net():
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1),
                         nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5 * 3 * 3, 4))


def conv1d_net():
    return nn.Sequential(nn.Conv1d(2, 7, 5), nn.Sigmoid(), nn.Conv1d(7, 4, 3), nn.LeakyReLU(), nn.Flatten(),
                         nn.Linear(4 * 10, 1))


@pytest.mark.parametrize("make,shape,target", [
    (conv2d_net, (16, 3, 8, 8), "labels"),
    (conv1d_net, (12, 2, 16), "floats"),
    (lambda: nn.Sequential(nn.Linear(2, 9), nn.Sigmoid(), nn.Linear(9, 9), nn.Dropout(0.0), nn.ReLU(),
                           nn.Linear(9, 3)), (32, 2), "labels"),
])
def test_conv_and_sequential_models_match_autograd(make, shape, target):
    torch.manual_seed(4)
    model = make()
    with torch.no_grad():  # large enough weights that something saturates or dies
        for m in model:
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                m.weight.mul_(3.0)
    x = torch.randn(*shape)
    y = torch.randint(0, 3, (shape[0],)) if target == "labels" else torch.randn(shape[0], 1)
    expected = sequential_reference(model, x, y, lr=0.05)
    trace = probed_sgd_step(model, x, y, lr=0.05)
    assert trace.unmeasured == {}
    assert_matches(trace, expected, rel=1e-6)
    assert np.isfinite(trace.get("saturated_frac")[0][0]) or np.isfinite(trace.get("dead_frac")[0][0])


def test_a_shared_activation_module_is_found_after_each_layer():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 2)
            self.act = nn.Tanh()

        def forward(self, x):
            return self.out(self.act(self.b(self.act(self.a(x)))))

    torch.manual_seed(0)
    net = Shared()
    x = torch.randn(20, 2) * 5
    trace = probe_once(net, x, torch.randint(0, 2, (20,)))
    h1 = torch.tanh(net.a(x))
    h2 = torch.tanh(net.b(h1))
    close(trace.get("saturated_frac")[0][:2], [(h.abs() > 0.97).float().mean().item() for h in (h1, h2)])
    close(trace.get("act_std")[0][:2], [h.double().std().item() for h in (h1, h2)])
    assert trace.unmeasured == {}


def test_functional_activations_are_measured_at_the_next_layers_input():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.d(torch.tanh(self.c(nn.functional.relu(self.b(torch.sigmoid(self.a(x) * 3))))))

    torch.manual_seed(0)
    net = Functional()
    x = torch.randn(40, 2) * 3
    trace = probe_once(net, x, torch.randint(0, 2, (40,)))
    h1 = torch.sigmoid(net.a(x) * 3).double()
    h2 = nn.functional.relu(net.b(h1.float())).double()
    h3 = torch.tanh(net.c(h2.float())).double()
    assert trace.unmeasured == {}
    assert trace.activation_source == {"a": "function", "b": "function", "c": "function", "d": "output"}
    assert trace.activation_kinds == {"a": "sigmoid", "b": "relu", "c": "tanh", "d": "other"}
    close(trace.get("act_mean")[0][:3], [h.mean().item() for h in (h1, h2, h3)])
    close(trace.get("saturated_frac")[0][[0, 2]], [((h1 - 0.5).abs() > 0.47).double().mean().item(),
                                                   (h3.abs() > 0.97).double().mean().item()])
    close(trace.get("dead_frac")[0][1], (h2.amax(dim=0) <= 0).double().mean().item())
    assert np.isnan(trace.get("dead_frac")[0][[0, 2, 3]]).all()


def test_a_layer_whose_output_reaches_no_later_layer_is_reported_unmeasured_not_healthy():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 8), nn.Linear(2, 2)

        def forward(self, x):
            side = torch.sigmoid(self.a(x)).sum(dim=1, keepdim=True)
            return self.b(x) + side

    net = TwoHeads()
    x = torch.randn(10, 2)
    trace = probe_once(net, x, torch.randint(0, 2, (10,)))
    assert list(trace.unmeasured) == ["a"]          # b is the output layer: it needs no activation
    assert np.isnan(trace.get("saturated_frac")[0]).all() and np.isnan(trace.get("dead_frac")[0]).all()
    close(trace.get("act_mean")[0][0], net.a(x).double().mean().item())  # measured at the layer's output


# -- frozen layers, non-finite gradients, models called twice ------------------------------

def test_frozen_layers_are_skipped_with_a_note():
    x, y = data.spirals(64, seed=1)
    net = models.mlp(4, 8, activation="relu", batchnorm=True, seed=0)
    net.layer2.weight.requires_grad_(False)
    net.layer3.bias.requires_grad_(False)
    net.bn1.requires_grad_(False)
    twin = copy.deepcopy(net)
    trace = probe_once(net, x, y)
    nn.functional.cross_entropy(twin(x), y).backward()
    grad_norm = trace.get("grad_norm")[0]
    assert np.isnan(grad_norm[1]) and trace.get("grad_hist")[0, 1].sum() == 0
    linears = twin.hidden_layers() + [twin.head]
    keep = [0, 2, 3, 4]
    close(grad_norm[keep], [linears[i].weight.grad.norm().item() for i in keep])
    assert len(trace.notes) == 2 and all("frozen" in note for note in trace.notes)
    assert trace.notes[0].startswith("bn1") and trace.notes[1].startswith("layer2")
    assert trace.layers == ["layer1", "layer2", "layer3", "layer4", "head"]
    assert trace.norms.layers == ["bn1", "bn2", "bn3", "bn4"] and np.isnan(trace.norms.get("grad_norm")[0, 0])
    close(trace.norms.get("grad_norm")[0, 1:], [getattr(twin, f"bn{k}").weight.grad.norm().item() for k in (2, 3, 4)])
    run = fit(_frozen_mlp(), (x, y), steps=3, lr=0.1)
    assert run.diverged_at is None and "layer1" in run.trace.notes[0]
    assert np.isnan(run.trace.get("grad_norm")[:, 0]).all() and (run.trace.get("update_ratio")[:, 0] == 0).all()
    assert (run.trace.get("update_ratio")[:, 1:] > 0).all()


def _frozen_mlp():
    net = models.mlp(3, 8, seed=0)
    net.layer1.requires_grad_(False)
    return net


class NaNGradient(torch.autograd.Function):
    """Identity forward; its backward returns NaN: a gradient that breaks inside one layer."""

    @staticmethod
    def forward(ctx, z):
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, math.nan)


def break_gradient_at(module: nn.Module):
    return module.register_forward_hook(lambda m, args, out: NaNGradient.apply(out))


@pytest.mark.parametrize("every", [1, 3])
def test_a_nan_gradient_is_traced_to_its_layer(every):
    x, y = data.spirals(32, seed=0)
    net = models.mlp(5, 8, activation="tanh", seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with Probe(net, every=every) as probe:
        for step in range(4):
            if step == 3:
                break_gradient_at(net.layer3)
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            if every == 1:
                assert (probe.nonfinite is None) == (step < 3)  # found by the probe itself
            elif step == 3:
                probe.locate_nonfinite_gradient()                 # an unrecorded step: the loop asks
            opt.step()
    # layers 1-3 all have NaN weight gradients: the one nearest the loss is where it began
    assert probe.trace.nonfinite == {"step": 3, "layer": "layer3", "where": "gradient"}


def test_fit_names_the_layer_of_a_nan_gradient():
    x, y = data.spirals(32, seed=0)
    net = models.mlp(5, 8, activation="tanh", seed=0)
    break_gradient_at(net.layer4)
    run = fit(net, (x, y), steps=5, lr=0.1, every=2)
    assert run.diverged_at == 0 and run.diverged_layer == "layer4"
    assert run.trace.nonfinite == {"step": 0, "layer": "layer4", "where": "gradient"}


def test_a_model_called_twice_per_step_makes_one_step():
    x, y = data.spirals(64, seed=2)
    net = models.mlp(3, 8, activation="sigmoid", seed=0)
    twin = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    with Probe(net) as probe:
        for _ in range(4):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[:40]), y[:40]) + nn.functional.cross_entropy(net(x[40:]), y[40:])
            loss.backward()
            opt.step()
            with torch.no_grad():
                net(x)  # evaluation is not a step
    trace = probe.trace
    assert trace.steps.tolist() == [0, 1, 2, 3]
    for q in LAYER_QUANTITIES:
        if q != "dead_frac":  # sigmoid: no dead units; the head: no activation
            values = trace.get(q) if q not in ("saturated_frac",) else trace.get(q)[:, :-1]
            assert np.isfinite(values).all(), q
    assert (trace.get("update_ratio") > 0).all()
    # step 0 measured as one batch of both calls
    out, zs, acts = manual_forward(twin, x)
    halves = [nn.functional.cross_entropy(twin(x[:40]), y[:40]), nn.functional.cross_entropy(twin(x[40:]), y[40:])]
    sum(halves).backward()
    close(trace.get("act_mean")[0][:-1], [a.double().mean().item() for a in acts])
    close(trace.get("act_std")[0][:-1], [a.double().std().item() for a in acts])
    close(trace.get("grad_norm")[0], [lin.weight.grad.norm().item() for lin in twin.hidden_layers() + [twin.head]])


def test_output_grad_norm_of_two_calls_is_the_norm_of_both():
    net = models.mlp(2, 4, seed=0)
    x = torch.randn(6, 2)
    with Probe(net) as probe:
        (net(x[:3]).square().sum() + 2 * net(x[3:]).sum()).backward()
    z1, z2 = net.layer1(x[:3]).detach().requires_grad_(), net.layer1(x[3:]).detach().requires_grad_()

    def rest(z):
        return net.head(net.act2(net.layer2(net.act1(z))))

    (rest(z1).square().sum() + 2 * rest(z2).sum()).backward()
    close(probe.trace.get("output_grad_norm")[0][0], math.hypot(z1.grad.norm().item(), z2.grad.norm().item()))


# -- arguments ----------------------------------------------------------------------------------

@pytest.mark.parametrize("options,words", [
    ({"layers": "layer1"}, "layers must be a list"),
    ({"layers": []}, "layers must name at least one"),
    ({"layers": 3}, "layers must be a list"),
    ({"hist_range": (1,)}, r"hist_range must be a pair"),
    ({"hist_range": (-12,)}, r"hist_range must be a pair"),
    ({"hist_range": "ab"}, r"hist_range must be a pair"),
    ({"hist_range": (-12, "x")}, r"hist_range must be a number"),
    ({"max_records": 1}, "max_records"),
])
def test_bad_arguments_name_themselves(options, words):
    with pytest.raises(ValueError, match=words):
        Probe(models.mlp(2, 3), **options)


def test_no_tracked_layer_is_refused():
    with pytest.raises(ValueError, match="model must contain"):
        Probe(nn.Sequential(nn.ReLU()))


# -- accuracy on large layers -------------------------------------------------------------------

@pytest.mark.parametrize("make,shape", [
    (lambda: nn.Sequential(nn.Linear(256, 1024), nn.Sigmoid(), nn.Linear(1024, 1024), nn.ReLU(),
                           nn.Linear(1024, 10)), (256, 256)),
    (lambda: nn.Sequential(nn.Conv2d(32, 128, 3, padding=1), nn.Tanh(), nn.Conv2d(128, 128, 3, padding=1),
                           nn.ReLU(), nn.Flatten(), nn.Linear(128 * 8 * 8, 10)), (32, 32, 8, 8)),
])
def test_every_quantity_within_1e_6_of_float64_on_large_layers(make, shape):
    torch.manual_seed(0)
    model = make()
    with torch.no_grad():
        model[0].bias.add_(2.0)  # a large mean beside the spread: float32 sums would drift here
    x = torch.randn(*shape)
    y = torch.randint(0, 10, (shape[0],))
    expected = sequential_reference(model, x, y, lr=0.1)
    assert_matches(probed_sgd_step(model, x, y, lr=0.1), expected, rel=1e-6)


@pytest.mark.parametrize("activation", [nn.Sigmoid(), nn.Tanh()])
def test_saturation_is_counted_exactly_at_the_margins(activation):
    gen = torch.Generator().manual_seed(1)
    edges = torch.tensor([0.03, 0.97, -0.97, 0.5, 1.0, 0.0, -1.0])  # float32: each a hair off the margin
    # the float32 values either side of each cut-off (|a - centre| = half range - margin)
    cuts = torch.tensor([0.5 - 0.47, 0.5 + 0.47, -0.97, 0.97], dtype=torch.float64).float()
    neighbours = torch.cat([torch.nextafter(cuts, cuts + step) for step in (1.0, -1.0)])  # one float32 either side
    near = torch.cat([edges + k * torch.finfo(torch.float32).eps for k in (-2, -1, 0, 1, 2)] + [cuts, neighbours])
    a = torch.cat([near, torch.rand(4998, generator=gen) * 2 - 1]).reshape(-1, 5)
    if isinstance(activation, nn.Sigmoid):
        a = a.abs()
    a64 = a.double()
    expected = (((a64 - 0.5).abs() > 0.47) if isinstance(activation, nn.Sigmoid) else (a64.abs() > 0.97)).sum()
    stats = measurements.activation_statistics([measurements.activation_sums(a, activation)])[0]
    assert stats[2, 0].item() * a.numel() == pytest.approx(expected.item(), abs=1e-6)
    close(stats[0, 0], a64.mean().item(), rel=1e-12)
    close(stats[1, 0], a64.std().item(), rel=1e-12)


@pytest.mark.parametrize("make", [
    lambda g: torch.randn(64, 50, generator=g).T,                       # not contiguous
    lambda g: torch.randn(300, generator=g) * 1e-30,                    # squares below float32's range
    lambda g: torch.randn(300, generator=g) * 1e25,                     # squares beyond it
    lambda g: torch.randn(300, generator=g, dtype=torch.float64) * 3,   # not float32: torch, in float64
    lambda g: 7.0 + torch.randn(300, generator=g) * 1e-6,               # nearly constant, far from 0
    lambda g: torch.randn(300_001, generator=g) * 1e-3,                 # more than two chunks (CHUNK = 2**17)
])
def test_measurements_match_float64_on_awkward_tensors(make):
    t = make(torch.Generator().manual_seed(0))
    t64 = t.double()
    close(measurements.sum_of_squares(t), (t64 * t64).sum().item(), rel=1e-12)
    close(measurements.norms([t, 2 * t]), [t64.norm().item(), 2 * t64.norm().item()], rel=1e-12)
    for activation in (None, nn.ReLU(), nn.Tanh()):
        stats = measurements.activation_statistics([measurements.activation_sums(t, activation)])[0][:, 0]
        close(stats[:2], [t64.mean().item(), t64.std().item()], rel=1e-9)
        if isinstance(activation, nn.Tanh):
            assert stats[2] * t.numel() == (t64.abs() > 0.97).sum().item()
        if isinstance(activation, nn.ReLU):
            close(stats[3], (t64.reshape(t.shape[0], -1).amax(dim=0) <= 0).double().mean().item())
    exponents = torch.frexp(t.float())[1].long() - 1  # floor(log2|t|)
    expected = torch.bincount(exponents.clamp(-40, 39).reshape(-1) + 40, minlength=80)
    assert measurements.log2_histogram([t], -40, 40)[0].tolist() == expected.tolist()


def _independent_histogram(t: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Counts per power of two from frexp (floor(log2|x|) = exponent - 1), zeros and subnormals
    first, Inf and NaN last: the definition, not the probe's bit reading."""
    mantissa, exponent = torch.frexp(t.double())
    bins = (exponent.long() - 1 - low).clamp(0, high - low - 1)
    bins[mantissa == 0] = 0
    bins[t.double().abs() < torch.finfo(torch.float32).tiny] = 0  # float32 subnormals: below every bin
    bins[~torch.isfinite(t)] = high - low - 1
    return torch.bincount(bins.reshape(-1), minlength=high - low)


def test_chunked_measurements_match_float64_with_one_scratch_reused():
    """Large tensors are read chunk by chunk through one reused scratch, small ones together: the
    figures must not depend on which path a tensor took, nor on what the scratch held before."""
    g = torch.Generator().manual_seed(3)
    big = torch.randn(300_001, generator=g) * 1e-3
    big[:6] = torch.tensor([0.0, 1e-40, math.inf, -math.inf, math.nan, 3e4])  # zero, subnormal, Inf, NaN, huge
    big[6:12] = torch.tensor([2.0 ** -41 * 1.9, 2.0 ** -40, -(2.0 ** -40) * 1.5, 2.0 ** -39,  # the first bin's edges
                              2.0 ** 5 * 1.99, -(2.0 ** 6)])                                # and the last's
    tensors = [torch.randn(64, 64, generator=g), big, torch.randn(7, generator=g) * 1e-20,
               torch.randn(200_000, generator=g), torch.randn(3, 5, generator=g).T]
    rows = [0, 1, 0, 2, 2]  # two layers own two tensors each
    scratch = measurements.Scratch()
    for _ in range(2):  # the second pass finds the scratch full of the first pass's values
        got = measurements.norms(tensors, scratch)
        for t, value in zip(tensors, got.tolist()):
            expected = t.double().norm().item()
            assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, rel=1e-12)
        histogram = measurements.log2_histogram(tensors, -40, 7, rows=rows, n_rows=3, scratch=scratch)
        expected = torch.zeros(3, 47, dtype=torch.int64)
        for t, row in zip(tensors, rows):
            expected[row] += _independent_histogram(t, -40, 7)
        assert histogram.tolist() == expected.tolist()
    one_bin = measurements.log2_histogram(tensors, -3, -2, rows=rows, n_rows=3, scratch=scratch)
    assert one_bin.tolist() == [[sum(t.numel() for t, r in zip(tensors, rows) if r == row)] for row in range(3)]
    finite = big[torch.isfinite(big)]
    close(measurements.sum_of_squares(finite, scratch), (finite.double() ** 2).sum().item(), rel=1e-12)


def test_scratch_hands_out_one_view_per_size_and_forgets_them_when_it_grows():
    """Scratch keeps the view of each size it handed out (a probe asks for the same sizes at every recorded
    step); when a larger request grows the buffer, the old views go with the old buffer."""
    scratch = measurements.Scratch()
    small = scratch.take(10, torch.float64, torch.device("cpu"))
    assert scratch.take(10, torch.float64, torch.device("cpu")) is small and scratch.nbytes == 80
    other = scratch.take(4, torch.float64, torch.device("cpu"))
    assert other.data_ptr() == small.data_ptr() and other.numel() == 4
    scratch.take(1000, torch.float64, torch.device("cpu"))                  # grows: a new buffer
    again = scratch.take(10, torch.float64, torch.device("cpu"))
    assert again is not small and again.data_ptr() != small.data_ptr() and scratch.nbytes == 8000
    assert scratch.take(10, torch.float32, torch.device("cpu")).dtype == torch.float32   # one buffer per dtype
    # the measurements reuse it: the same sums however often, whatever the buffer held before
    a = torch.sigmoid(torch.randn(8, 5, generator=torch.Generator().manual_seed(0)) * 6)
    first = measurements.activation_sums(a, nn.Sigmoid(), scratch)
    again = measurements.activation_sums(a, nn.Sigmoid(), scratch)
    assert [float(v) for v in first[2:4] + first[6:7]] == [float(v) for v in again[2:4] + again[6:7]]
    assert float(first.sat_sigmoid) == float(((a.double() - 0.5).abs() > 0.5 - measurements.SATURATION_MARGIN).sum())
    assert float(first.sat_sigmoid) > 0


def test_nan_and_inf_stay_visible():
    t = torch.tensor([1.0, math.nan, 2.0])
    assert math.isnan(measurements.norm(t)) and math.isinf(measurements.norm(torch.tensor([1.0, math.inf])))
    stats = measurements.activation_statistics([measurements.activation_sums(t, nn.Sigmoid())])[0][:, 0]
    assert np.isnan(stats[0]) and np.isnan(stats[1])


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_updates_false_keeps_no_copy_of_the_weights_and_records_the_rest(with_optimizer):
    """``updates=False``: the update ratio is NaN and no weight copy is held; every other quantity is
    what the full probe records on the same run."""
    x, y = data.spirals(64, seed=3)
    traces, probes = [], []
    for updates in (True, False):
        net = models.mlp(4, 12, activation="tanh", seed=1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        with Probe(net, optimizer=opt if with_optimizer else None, updates=updates) as probe:
            for _ in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
        traces.append(probe.trace)
        probes.append(probe)
    full, lean = traces
    assert probes[0]._before is not None and probes[1]._before is None
    assert np.isnan(lean.get("update_ratio")).all() and (full.get("update_ratio") > 0).all()
    assert lean.steps.tolist() == full.steps.tolist()
    for q in ("grad_norm", "output_grad_norm", "weight_norm", "act_mean", "act_std", "saturated_frac", "grad_hist"):
        np.testing.assert_array_equal(lean.get(q), full.get(q), err_msg=q)
    assert any("updates=False" in note for note in lean.notes)
    with pytest.raises(ValueError, match="updates"):
        Probe(net, updates="no")


@pytest.mark.parametrize("with_optimizer", [True, False])
def test_a_finished_probe_leaves_no_reference_cycle_that_keeps_the_model_alive(with_optimizer, monkeypatch):
    """Once the loop's own references are gone, the model and its optimizer are freed at once, without
    Python's cyclic garbage collector (which ran too rarely: lesson 08 kept 90 MB per ResNet-18 run); a
    large weight copy (more than KEEP_COPY values) is not kept between optimizer steps."""
    import gc
    import weakref

    from gradcourse import probes

    monkeypatch.setattr(probes, "KEEP_COPY", 100)   # this small MLP's copy counts as large
    x, y = data.spirals(64, seed=3)
    net = models.mlp(4, 12, activation="tanh", seed=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    gc.disable()
    try:
        with Probe(net, optimizer=opt if with_optimizer else None) as probe:
            for _ in range(3):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(net(x), y)
                loss.backward()
                opt.step()
        assert (probe._before is None) == with_optimizer
        assert (probe.trace.get("update_ratio") > 0).all()
        alive = weakref.ref(net), weakref.ref(opt), weakref.ref(net[0].weight if isinstance(net, nn.Sequential)
                                                                else next(net.parameters()))
        del net, opt, loss, probe
        assert [ref() is None for ref in alive] == [True, True, True]
    finally:
        gc.enable()
