"""Every probe quantity against an independent computation with plain autograd."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from gradcourse import data, models
from gradcourse.losses import loss_function
from gradcourse.probes import Probe, probe_once

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
    if activation in ("relu", "leaky_relu"):
        close(dead, [(a.amax(dim=0) <= 0).float().mean().item() for a in acts])
    else:
        assert np.isnan(dead).all()


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


def test_refuses_inplace_activations_and_bad_arguments():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(inplace=True), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="in-place"):
        Probe(net)
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
