"""The physics the course teaches (CONTRIBUTING.md, README), measured with the package's own probes (spirals data)."""

import numpy as np
import torch

from gradcourse import data, models
from gradcourse.probes import Probe


def probe_once(net, ds):
    with Probe(net) as probe:
        torch.nn.functional.cross_entropy(net(ds.x), ds.y).backward()
    return probe.trace


def total_grad_norm(net):
    return torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item()


def test_sigmoid_20_signal_vanishes_without_saturation():
    ds = data.spirals(512, seed=0)
    trace = probe_once(models.mlp(20, 64, activation="sigmoid", seed=0), ds)
    signal = trace.get("output_grad_norm")[0]
    assert signal[0] / signal[19] < 1e-12       # DESIGN: ~1e-16 over 20 layers
    assert np.nanmax(trace.get("saturated_frac")[0]) < 0.01  # default init: not saturated


def test_relu_he_init_keeps_the_signal_near_one():
    ds = data.spirals(512, seed=0)
    for seed in range(3):
        net = models.mlp(20, 64, activation="relu", init="kaiming", seed=seed)
        signal = probe_once(net, ds).get("output_grad_norm")[0]
        assert 0.1 < signal[0] / signal[19] < 10
        assert total_grad_norm(net) < 20


def test_relu_at_twice_he_scale_explodes_in_signal_not_in_weight_gradients():
    ds = data.spirals(512, seed=0)
    net = models.mlp(20, 64, activation="relu", init="normal", weight_std=2 * np.sqrt(2), seed=0)
    with Probe(net) as probe:
        loss = torch.nn.functional.cross_entropy(net(ds.x), ds.y)
        loss.backward()
    trace = probe.trace
    signal = trace.get("output_grad_norm")[0]
    weight_grads = trace.get("grad_norm")[0]
    assert signal[0] / signal[19] > 1e4             # DESIGN: ~4e5
    assert 0.05 < weight_grads[1] / weight_grads[19] < 5   # DESIGN: ~0.3, balanced
    assert loss.item() > 1e3                          # DESIGN: ~3e4
    assert total_grad_norm(net) > 1e4                 # DESIGN: ~4e5 (vs ~1 with He init)


def test_tanh_large_weights_saturate_and_explode():
    ds = data.spirals(512, seed=0)
    trace = probe_once(models.mlp(10, 64, activation="tanh", init="normal", weight_std=4.0, seed=0), ds)
    assert trace.get("saturated_frac")[0][9] > 0.4       # DESIGN: 57% with |a| > 0.97
    signal = trace.get("output_grad_norm")[0]
    assert signal[0] / signal[9] > 50                     # DESIGN: ~500x growth backward
