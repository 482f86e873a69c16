"""Mixed precision (lesson 10, issue 23): the probe under torch.autocast and a GradScaler, and the
doctor's reading of float16 underflow. Every figure is checked against autograd computed here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcourse import data, models
from gradcourse.probes import Probe

DS = data.spirals(256, seed=0)


def _net(depth=6, seed=0):
    return models.mlp(depth, 32, activation="sigmoid", seed=seed)


def _amp_loop(net, *, steps, dtype=torch.float16, scaler=None, lr=0.1, hooks=False):
    """A plain mixed-precision loop under a probe. Returns the probe and, per step, what autograd
    gave independently: the scale in force, ‖∂L/∂W‖ per layer (scaled .grad / scale, float64), ‖∂L/∂z‖
    per layer (tensor hooks on the layers' outputs, / scale), and whether the weights moved."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    layers = net.hidden_layers() + [net.head]
    seen = {"scale": [], "grad": [], "signal": [], "moved": [], "zeros": [], "loss": []}
    with Probe(net, optimizer=opt, scaler=scaler) as probe:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            outputs = []
            handles = [layer.register_forward_hook(lambda m, a, out, kept=outputs: kept.append(out))
                       for layer in layers]
            with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
                loss = torch.nn.functional.cross_entropy(net(DS.x), DS.y)
            for h in handles:
                h.remove()
            scale = scaler.get_scale() if scaler is not None else 1.0
            signals = [None] * len(outputs)
            for i, out in enumerate(outputs):
                out.register_hook(lambda g, i=i, kept=signals: kept.__setitem__(i, g))
            (scaler.scale(loss) if scaler is not None else loss).backward()
            seen["scale"].append(scale)
            seen["signal"].append([s.double().norm().item() / scale for s in signals])
            seen["grad"].append([la.weight.grad.double().norm().item() / scale for la in layers])
            seen["zeros"].append([(la.weight.grad == 0).double().mean().item() for la in layers])
            seen["loss"].append(loss.item())
            before = [la.weight.detach().clone() for la in layers]
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            seen["moved"].append(any(not torch.equal(b, la.weight) for b, la in zip(before, layers)))
    return probe, {k: np.array(v) for k, v in seen.items()}


def test_probe_reads_a_gradscaler_run_unscaled():
    """float16 autocast with a GradScaler: the probe's weight gradients and signal equal autograd's
    divided by the scale (the gradients of the loss itself), within 1e-6."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    probe, seen = _amp_loop(_net(), steps=3, scaler=scaler)
    trace = probe.trace
    assert trace.precision == "float16" and trace.skipped_steps == []
    assert seen["scale"].tolist() == [2.0 ** 16] * 3 and trace.loss_scale.tolist() == [2.0 ** 16] * 3
    np.testing.assert_allclose(trace.get("grad_norm"), seen["grad"], rtol=1e-6)
    np.testing.assert_allclose(trace.get("output_grad_norm"), seen["signal"], rtol=1e-6)
    # and they are the float32 run's gradients, to float16's rounding: the scale is gone
    ref, ref_seen = _amp_loop(_net(), steps=1, dtype=torch.float32)
    assert ref.trace.precision == "float32" and ref.trace.loss_scale is None
    np.testing.assert_allclose(trace.get("output_grad_norm")[0], ref.trace.get("output_grad_norm")[0], rtol=0.02)
    np.testing.assert_allclose(trace.get("grad_norm")[0], ref_seen["grad"][0], rtol=0.02)


def test_skipped_steps_are_recorded_as_skipped():
    """A scale far too high: the scaled gradients overflow float16, GradScaler skips the step and
    halves the scale until they fit. Each skipped step is a step of the record, with no update, listed
    in trace.skipped_steps, and its Inf is not a divergence (trace.nonfinite stays None)."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
    probe, seen = _amp_loop(_net(4), steps=12, scaler=scaler)
    trace = probe.trace
    skipped = [i for i, moved in enumerate(seen["moved"]) if not moved]
    assert 2 <= len(skipped) < 12 and skipped == list(range(len(skipped)))   # the first steps, until the scale fits
    assert trace.skipped_steps == skipped
    assert trace.steps.tolist() == list(range(12))                          # one record per step, none merged
    halved = [i for i in range(11) if seen["scale"][i + 1] < seen["scale"][i]]
    assert halved == skipped
    assert np.all(trace.get("update_ratio")[skipped] == 0) and np.all(trace.get("update_ratio")[len(skipped):] > 0)
    assert not np.all(np.isfinite(trace.get("grad_norm")[skipped[0]]))   # the overflow, as it was read
    assert trace.nonfinite is None
    np.testing.assert_array_equal(trace.loss_scale, seen["scale"])
    again = type(trace).from_arrays(*trace.to_arrays())                  # saved with a Run and read back
    assert again.skipped_steps == skipped and again.precision == "float16"
    np.testing.assert_array_equal(again.loss_scale, trace.loss_scale)
    kept = len(skipped)
    np.testing.assert_allclose(trace.get("output_grad_norm")[kept:], seen["signal"][kept:], rtol=1e-6)


def test_scaler_argument_is_checked_and_removed_on_exit():
    net = _net(2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(ValueError, match="^scaler"):
        Probe(net, scaler=scaler)
    with pytest.raises(ValueError, match="^scaler"):
        Probe(net, optimizer=opt, scaler="yes")
    with Probe(net, optimizer=opt, scaler=scaler):
        assert "step" in scaler.__dict__
    assert "step" not in scaler.__dict__


@pytest.mark.parametrize("dtype, name", [(torch.float16, "float16"), (torch.bfloat16, "bfloat16")])
def test_precision_names_the_format(dtype, name):
    probe, _ = _amp_loop(_net(2), steps=1, dtype=dtype)
    assert probe.trace.precision == name
    half = _net(2).to(dtype)
    with Probe(half) as p:
        torch.nn.functional.cross_entropy(half(DS.x.to(dtype)).float(), DS.y).backward()
    assert p.trace.precision == name and p.trace.loss_scale is None


# -- the doctor ---------------------------------------------------------------------------------------
def _verdict(probe, seen, net):
    from gradcourse.doctor import diagnose

    return diagnose(probe.trace, losses=list(seen["loss"]), model=net)


def test_doctor_names_float16_underflow_and_the_scaled_run_is_healthy():
    """A 5-layer sigmoid MLP (width 64, 512 points): healthy in float32 (signal ratio 3e-4, above the
    vanishing threshold); under float16 autocast its first layer's weight gradient is almost all 0:
    the doctor names underflow, with loss scaling first. With a GradScaler the same run is healthy."""
    from gradcourse.doctor import UNDERFLOW_FRACTION

    def run(dtype, scaler=None):
        net = models.mlp(5, 64, activation="sigmoid", seed=0)
        global DS
        old, DS = DS, data.spirals(512, seed=0)
        try:
            probe, seen = _amp_loop(net, steps=10, dtype=dtype, scaler=scaler)
        finally:
            DS = old
        return _verdict(probe, seen, net), seen

    fp32, _ = run(torch.float32)
    fp16, seen = run(torch.float16)
    scaled, _ = run(torch.float16, torch.amp.GradScaler("cpu"))
    assert fp32.problem == "healthy" and fp32.numbers["underflow_fraction"] == {}
    assert fp16.problem == "underflow"
    share = max(seen["zeros"][0][0], seen["zeros"][-1][0])          # layer1, counted here
    assert share >= UNDERFLOW_FRACTION
    assert fp16.numbers["underflow_fraction"]["layer1"] == pytest.approx(share, abs=1e-12)
    assert f"layer1 {100 * share:.0f}%" in fp16.evidence[0] and "not the network's" in fp16.evidence[0]
    assert [r.name for r in fp16.remedies] == ["loss_scaling", "bfloat16"]
    assert all(r.lesson == "10_mixed_precision" for r in fp16.remedies)
    assert scaled.problem == "healthy" and max(scaled.numbers["underflow_fraction"].values(), default=0) < 0.01


def test_doctor_reads_a_scaled_vanishing_run_as_vanishing_not_exploding():
    """Issue 23: the 10-layer sigmoid run under a GradScaler read as 'exploding' when the probe
    recorded the scaled signal. Told the scaler, the probe records the loss's own gradients: the run
    vanishes, as in float32; the skipped steps are said, and not read as a divergence."""
    net = models.mlp(10, 64, activation="sigmoid", seed=0)
    probe, seen = _amp_loop(net, steps=8, scaler=torch.amp.GradScaler("cpu", init_scale=2.0 ** 24))
    d = _verdict(probe, seen, net)
    assert probe.trace.skipped_steps and d.problem == "vanishing" and d.diverged_at is None
    assert any("skipped" in e and "not an exploding gradient" in e for e in d.evidence)
    from gradcourse.doctor import from_trace

    totals = from_trace(probe.trace, list(seen["loss"])).grad_norm_total   # an Inf step is no gradient norm
    skipped = probe.trace.skipped_steps
    assert np.isnan(totals[skipped]).all() and np.isfinite(np.delete(totals, skipped)).all()
    ref = models.mlp(10, 64, activation="sigmoid", seed=0)
    probe32, seen32 = _amp_loop(ref, steps=8, dtype=torch.float32)
    assert _verdict(probe32, seen32, ref).problem == "vanishing"
