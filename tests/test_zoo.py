"""The probe on the architectures practitioners bring (tests/zoo.py): every parameter seen, every
figure against an independent computation, steps as a training loop means them, no hook left."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks
from zoo import GPT2MLP, ZOO, DictOutput, make_nanogpt, make_resnet18

from gradcourse import models
from gradcourse.probes import UNREACHED_WARNING, Probe, probe_once

REL = 1e-6


def close(measured, expected, rel=REL):
    np.testing.assert_allclose(np.asarray(measured, dtype=float), np.asarray(expected, dtype=float), rtol=rel, atol=0)


def expected_weights(module: nn.Module) -> list[torch.Tensor]:
    """What the probe's grad_norm of a layer is meant to be the gradient of, written out per type
    (independently of gradcourse.probes): the weight matrix, the recurrent matrices of an RNN,
    the input projection of attention, every parameter of a module without a weight."""
    if isinstance(module, nn.RNNBase):
        return [p for n, p in module.named_parameters(recurse=False) if n.startswith("weight_hh")]
    if isinstance(module, nn.MultiheadAttention):
        return [module.in_proj_weight]
    own = dict(module.named_parameters(recurse=False))
    return [own["weight"]] if "weight" in own else list(own.values())


def reference(model: nn.Module, batch, loss_fn, names: list[str]):
    """Gradient norms and ‖∂L/∂z‖ by plain autograd on a copy: each named module's first output
    is kept (retain_grad) and the rest of the network runs on a clone of it, so that in-place
    operations after the module leave the kept tensor as the module made it."""
    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in names}

    def keep(name):
        def hook(module, args, output):
            first = output[0] if isinstance(output, tuple) else output
            if not isinstance(first, torch.Tensor) or not first.requires_grad:
                return None
            first.retain_grad()
            kept[name].append(first)
            clone = first.clone()
            return (clone, *output[1:]) if isinstance(output, tuple) else clone
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in names]
    loss_fn(twin, batch).backward()
    for handle in handles:
        handle.remove()
    grads = {name: math.sqrt(sum(w.grad.double().square().sum().item() for w in expected_weights(modules[name])))
             for name in names}
    signals = {name: math.sqrt(sum(t.grad.double().square().sum().item() for t in ts)) if ts else math.nan
               for name, ts in kept.items()}
    return grads, signals


def hooks_left(model: nn.Module, optimizer=None) -> int:
    count = len(_global_forward_hooks) + len(_global_forward_pre_hooks)
    for module in model.modules():
        count += len(module._forward_hooks) + len(module._forward_pre_hooks)
        count += len(module._backward_hooks) + len(module._backward_pre_hooks)
    for p in model.parameters():
        count += len(getattr(p, "_post_accumulate_grad_hooks", None) or {})
    if optimizer is not None:
        count += len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks)
    return count


@pytest.mark.parametrize("name", list(ZOO))
def test_every_parameter_is_seen_and_every_figure_matches_autograd(name):
    model, batch, loss_fn = ZOO[name]()
    model.train()
    torch.manual_seed(1)  # the same dropout masks here and in the reference
    with Probe(model) as probe:
        loss_fn(model, batch).backward()
    trace = probe.trace
    torch.manual_seed(1)
    side = trace.norms.layers if trace.norms is not None else []
    owners = {n.rpartition(".")[0] for n, _ in model.named_parameters(remove_duplicate=False)}
    assert owners == set(trace.layers) | set(side), "every parameter belongs to a layer the probe watches"
    assert set(trace.kinds) == owners and not set(trace.layers) & set(side)
    assert all(trace.kinds[n] in ("norm", "activation") for n in side)

    grads, signals = reference(model, batch, loss_fn, trace.layers + side)
    close(trace.get("grad_norm")[0], [grads[n] for n in trace.layers])
    if side:
        close(trace.norms.get("grad_norm")[0], [grads[n] for n in side])
    for n, value in zip(trace.layers, trace.get("output_grad_norm")[0]):
        if math.isnan(signals[n]):  # a weight its parent calls directly (attention's out_proj)
            assert math.isnan(value) and any(note.startswith(n) for note in trace.notes), n
        else:
            close(value, signals[n])
    if side:  # (an in-place activation after a norm layer changes the tensor the reference keeps)
        assert np.isfinite(trace.norms.get("output_grad_norm")[0]).all()
    weights = dict(model.named_modules())
    close(trace.get("weight_norm")[0], [math.sqrt(sum(w.double().square().sum().item()
                                                      for w in expected_weights(weights[n]))) for n in trace.layers])
    assert np.isfinite(trace.get("act_mean")[0][[i for i, n in enumerate(trace.layers)
                                                  if trace.kinds[n] != "recurrent" and "out_proj" not in n]]).all()
    assert trace.grad_hist[0].sum(axis=1).tolist() == [sum(w.numel() for w in expected_weights(weights[n]))
                                                       for n in trace.layers]
    assert hooks_left(model) == 0


def test_kinds_and_where_each_activation_was_read():
    model, batch, loss_fn = ZOO["transformer_encoder"]()
    with Probe(model) as probe:
        loss_fn(model, batch).backward()
    trace = probe.trace
    assert trace.kinds["encoder.layers.0.self_attn"] == "attention"
    assert trace.kinds["encoder.layers.0.self_attn.out_proj"] == "linear"
    assert trace.kinds["embed"] == "embedding" and trace.norms.layers[0] == "encoder.layers.0.norm1"
    # nn.TransformerEncoderLayer applies F.relu between linear1 and linear2
    assert trace.activation_source["encoder.layers.0.linear1"] == "function"
    assert trace.activation_kinds["encoder.layers.0.linear1"] == "relu"
    assert 0 <= trace.get("dead_frac")[0][trace.layers.index("encoder.layers.0.linear1")] <= 1

    model, batch, loss_fn = ZOO["gpt2_conv1d"]()
    with Probe(model) as probe:
        loss_fn(model, batch).backward()
    trace = probe.trace
    assert trace.kinds["c_fc.0"] == "parameter" and trace.kinds["ln_f"] == "norm"
    assert trace.activation_source["c_fc.0"] == "input"  # new_gelu: a composite function, read by its range

    model, batch, loss_fn = make_nanogpt()
    with Probe(model) as probe:
        loss_fn(model, batch).backward()
    trace = probe.trace
    assert trace.kinds["transformer.wte"] == "embedding" and trace.kinds["transformer.h.0.ln_1"] == "norm"
    assert any("tied" in note and note.startswith("lm_head") for note in trace.notes)
    assert trace.activation_kinds["transformer.h.0.mlp.c_fc"] == "other"  # nn.GELU: never dead
    assert trace.activation_source["transformer.h.0.mlp.c_fc"] == "module"


def test_in_place_activations_of_a_resnet_are_measured():
    model, (x, y), _ = make_resnet18()
    twin = copy.deepcopy(model)
    trace = probe_once(model, x, y)
    assert trace.unmeasured == {}
    convs = [n for n in trace.layers if trace.kinds[n] == "conv"]
    assert all(trace.activation_kinds[n] == "relu" for n in convs)
    assert {trace.activation_source[n] for n in convs} == {"module", "function"}
    # the stem: conv1 → bn1 → relu (in place): its activation is relu(bn1(conv1(x)))
    a = torch.relu(twin.bn1(twin.conv1(x))).double()
    close(trace.layer("conv1", "act_mean")[0], a.mean().item())
    close(trace.layer("conv1", "act_std")[0], a.std().item())
    close(trace.layer("conv1", "dead_frac")[0], (a.reshape(len(a), -1).amax(dim=0) <= 0).double().mean().item())
    # a block's second conv: relu(bn2(conv2(.)) + downsample(x)), read at the next block's input
    block = twin.layer2[0]
    inputs = {}
    handle = twin.layer2[1].register_forward_pre_hook(lambda m, args: inputs.setdefault("x", args[0].clone()))
    twin(x)
    handle.remove()
    assert trace.activation_source["layer2.0.conv2"] == "function" and block.downsample is not None
    close(trace.layer("layer2.0.conv2", "act_mean")[0], inputs["x"].double().mean().item())


class Leaky(nn.Module):
    """A leaky ReLU network pushed far below zero: nothing is dead, its gradient is only small."""

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.a, self.b, self.c = nn.Linear(2, 16), nn.Linear(16, 16), nn.Linear(16, 2)
        self.act = nn.LeakyReLU(0.01)
        with torch.no_grad():
            self.a.bias.fill_(-5.0)
            self.b.bias.fill_(-5.0)

    def forward(self, x):
        act = (lambda z: F.leaky_relu(z, 0.01)) if self.functional else self.act
        return self.c(act(self.b(act(self.a(x)))))


@pytest.mark.parametrize("functional", [False, True])
def test_a_leaky_relu_network_is_never_dead(functional):
    torch.manual_seed(0)
    net = Leaky(functional)
    trace = probe_once(net, torch.randn(32, 2), torch.randint(0, 2, (32,)))
    assert np.isnan(trace.get("dead_frac")).all()
    assert trace.activation_kinds["a"] == trace.activation_kinds["b"] == "other"
    assert trace.activation_source["a"] == ("function" if functional else "module")
    assert (trace.get("act_mean")[0][:2] < 0).all()  # all below zero, yet not dead


def grads_at_each_step(model, optimizer):
    """The gradients the optimizer applies, read (independently of any probe) by wrapping step."""
    seen = []
    step = optimizer.step

    def wrapped(*args, **kwargs):
        seen.append([p.grad.double().norm().item() for p in (model.layer1.weight, model.head.weight)])
        return step(*args, **kwargs)

    optimizer.step = wrapped
    return seen


def test_gradient_accumulation_with_an_optimizer_is_one_step():
    torch.manual_seed(0)
    net = models.mlp(3, 8, activation="tanh", seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    seen = grads_at_each_step(net, opt)
    x, y = torch.randn(48, 2), torch.randint(0, 2, (48,))
    before = copy.deepcopy(net)
    with pytest.warns(UserWarning, match="no backward pass reached"), Probe(net, optimizer=opt) as probe:
        for _ in range(4):
            opt.zero_grad()
            for part in range(3):  # three micro-batches, one optimizer step
                sl = slice(16 * part, 16 * part + 16)
                (F.cross_entropy(net(x[sl]), y[sl]) / 3).backward()
            with torch.no_grad():
                net(x)  # an evaluation pass between steps is no step
            opt.step()
            net(x[:5])  # a forward pass with gradients on, never backpropagated: no step either
    trace = probe.trace
    assert trace.steps.tolist() == [0, 1, 2, 3]
    close(trace.layer("layer1", "grad_norm"), [s[0] for s in seen])
    close(trace.layer("head", "grad_norm"), [s[1] for s in seen])
    assert (trace.get("update_ratio") > 0).all()
    # step 0's activations are those of the three micro-batches together, nothing else
    a = torch.tanh(before.layer1(x)).double()
    close(trace.layer("layer1", "act_mean")[0], a.mean().item())
    close(trace.layer("layer1", "act_std")[0], a.std().item())
    assert hooks_left(net, opt) == 0


def test_update_ratio_with_an_optimizer_is_the_real_update():
    torch.manual_seed(0)
    net = models.mlp(2, 6, activation="relu", seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.randn(20, 2), torch.randint(0, 2, (20,))
    weights = []
    with Probe(net, optimizer=opt, every=2) as probe:
        for _ in range(5):
            weights.append(net.head.weight.detach().clone().double())
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
    weights.append(net.head.weight.detach().clone().double())
    trace = probe.trace
    assert trace.steps.tolist() == [0, 2, 4]
    close(trace.layer("head", "update_ratio"),
          [(weights[s + 1] - weights[s]).norm().item() / weights[s].norm().item() for s in (0, 2, 4)])


class ArgmaxFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 4)

    def forward(self, x):
        o = self.b(torch.relu(self.a(x)))
        return o.argmax(-1), o


class UnusedFirst(nn.Module):
    """A tuple whose first tensor the loss does not use (an auxiliary output)."""

    def __init__(self):
        super().__init__()
        self.a, self.aux, self.b = nn.Linear(3, 8), nn.Linear(8, 2), nn.Linear(8, 4)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.aux(h), self.b(h)


@pytest.mark.parametrize("make,pick", [
    (ArgmaxFirst, lambda out: out[1]),
    (UnusedFirst, lambda out: out[1]),
    (DictOutput, lambda out: out["logits"]),
])
@pytest.mark.parametrize("with_optimizer", [False, True])
def test_any_output_structure_makes_one_step_per_backward(make, pick, with_optimizer):
    torch.manual_seed(0)
    net = make()
    in_features = 4 if make is DictOutput else 3
    x, y = torch.randn(10, in_features), torch.randint(0, 2, (10,))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    norms = []
    with Probe(net, optimizer=opt if with_optimizer else None) as probe:
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(pick(net(x)), y).backward()
            norms.append(net.a.weight.grad.double().norm().item() if hasattr(net, "a")
                         else net.body[0].weight.grad.double().norm().item())
            opt.step()
    trace = probe.trace
    assert trace.steps.tolist() == [0, 1, 2]
    first = "a" if hasattr(net, "a") else "body.0"
    close(trace.layer(first, "grad_norm"), norms)
    assert np.isfinite(trace.layer(first, "update_ratio")).all()
    if make is UnusedFirst:  # the auxiliary head had no gradient: NaN, never a made-up number
        assert np.isnan(trace.layer("aux", "grad_norm")).all()
    assert hooks_left(net, opt) == 0


def test_evaluation_passes_are_never_steps():
    torch.manual_seed(0)
    net = models.mlp(2, 6, activation="sigmoid", seed=0)
    twin = copy.deepcopy(net)
    x, y, x_eval = torch.randn(16, 2), torch.randint(0, 2, (16,)), torch.randn(40, 2) * 10
    with warnings.catch_warnings(record=True) as said, Probe(net) as probe:
        warnings.simplefilter("always")
        with torch.no_grad():
            net(x_eval)
        with torch.inference_mode():
            net(x_eval)
        net(x_eval)  # gradients on, but never backpropagated
        F.cross_entropy(net(x), y).backward()
        net(x_eval)
        with torch.no_grad():
            net(x_eval)
    trace = probe.trace
    assert trace.steps.tolist() == [0]
    # said once, though two passes went unreached
    assert [str(w.message) for w in said] == [UNREACHED_WARNING]
    a = torch.sigmoid(twin.layer1(x)).double()  # only the training batch is measured
    close(trace.layer("layer1", "act_mean")[0], a.mean().item())
    close(trace.layer("layer1", "saturated_frac")[0], ((a - 0.5).abs() > 0.47).double().mean().item())


@pytest.mark.parametrize("with_optimizer", [False, True])
def test_a_trailing_evaluation_pass_is_left_out_and_said_once(with_optimizer):
    net = models.mlp(2, 6, activation="sigmoid", seed=0)
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))

    def train(probe_kwargs, evaluate):
        model = copy.deepcopy(net)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with warnings.catch_warnings(record=True) as said, \
                Probe(model, **({"optimizer": optimizer} if probe_kwargs else {})) as probe:
            warnings.simplefilter("always")
            for _ in range(3):
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
                if evaluate:
                    model(x * 3)  # evaluation without no_grad, after every step
        return probe.trace, [str(w.message) for w in said]

    clean, quiet = train(with_optimizer, evaluate=False)
    mixed, said = train(with_optimizer, evaluate=True)
    assert quiet == [] and said == [UNREACHED_WARNING]
    assert mixed.steps.tolist() == clean.steps.tolist() == [0, 1, 2]
    for quantity in ("act_mean", "saturated_frac", "grad_norm", "update_ratio"):
        np.testing.assert_array_equal(mixed.get(quantity), clean.get(quantity))


def test_probe_once_under_inference_mode_says_what_to_do():
    net = models.mlp(2, 4, seed=0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside the `with torch.inference_mode"):
        probe_once(net, torch.randn(4, 2), torch.randint(0, 2, (4,)))
    with torch.no_grad():  # no_grad is fine: probe_once turns gradients back on
        assert probe_once(net, torch.randn(4, 2), torch.randint(0, 2, (4,))).steps.tolist() == [0]
    assert hooks_left(net) == 0


def test_lstm_module_gives_the_gradient_at_every_time_step():
    model, (idx, targets), loss_fn = ZOO["lstm_lm"]()
    twin = copy.deepcopy(model)
    with Probe(model) as probe:
        loss_fn(model, (idx, targets)).backward()
    out, _ = twin.rnn(twin.encoder(idx))
    out.retain_grad()
    logits = twin.decoder(out)
    F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)).backward()
    close(probe.trace.get("hidden_grad_norm")[0], out.grad.double().norm(dim=(0, 2)).tolist())
    assert probe.trace.kinds["rnn"] == "recurrent" and "rnn" in probe.trace.unmeasured
    # the embedding feeds the LSTM directly; the decoder's input is the LSTM's output, not the embedding's
    assert probe.trace.activation_source["encoder"] == "none"


def test_a_gpt2_conv1d_model_trains_with_an_optimizer_and_every_10th_step():
    torch.manual_seed(0)
    model = GPT2MLP()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 32, (4, 12))
    with Probe(model, optimizer=opt, every=10) as probe:
        for _ in range(21):
            opt.zero_grad()
            logits = model(idx)
            F.cross_entropy(logits.reshape(-1, 32), idx.reshape(-1)).backward()
            opt.step()
    trace = probe.trace
    assert trace.steps.tolist() == [0, 10, 20] and np.isfinite(trace.get("grad_norm")).all()
    assert hooks_left(model, opt) == 0


def test_saving_a_trace_keeps_kinds_norms_and_sources():
    from gradcourse.trace import Trace

    model, batch, loss_fn = make_resnet18()
    with Probe(model) as probe:
        loss_fn(model, batch).backward()
    trace = probe.trace
    arrays, meta = trace.to_arrays()
    import json
    again = Trace.from_arrays(arrays, json.loads(json.dumps(meta)))
    assert again.kinds == trace.kinds and again.activation_source == trace.activation_source
    assert again.activation_kinds == trace.activation_kinds and again.norms.layers == trace.norms.layers
    np.testing.assert_array_equal(again.norms.get("grad_norm"), trace.norms.get("grad_norm"))


class ThroughAnotherLayer(nn.Module):
    """``a``'s output enters ``bil`` as its second input: what comes out of ``bil`` is ``bil``'s
    activation to find, never ``a``'s."""

    def __init__(self):
        super().__init__()
        self.a, self.bil, self.c = nn.Linear(3, 4), nn.Bilinear(3, 4, 5), nn.Linear(5, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.c(self.act(self.bil(x, self.a(x))))


def test_the_search_for_an_activation_stops_at_other_layers():
    torch.manual_seed(0)
    net = ThroughAnotherLayer()
    trace = probe_once(net, torch.randn(8, 3), torch.randint(0, 2, (8,)))
    assert trace.kinds["bil"] == "parameter"
    assert trace.activation_source == {"a": "output", "bil": "module", "c": "output"}
    assert list(trace.unmeasured) == ["a"]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_are_measured_in_float64_with_exact_saturation(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2)).to(dtype)
    with torch.no_grad():
        net[0].weight.mul_(8)
    twin = copy.deepcopy(net)
    x, y = torch.randn(64, 3, dtype=dtype), torch.randint(0, 2, (64,))
    trace = probe_once(net, x, y)
    F.cross_entropy(twin(x), y).backward()
    close(trace.get("grad_norm")[0], [twin[i].weight.grad.double().norm().item() for i in (0, 2, 4)])
    s = torch.sigmoid(twin[0](x)).double()
    t = torch.tanh(twin[2](torch.sigmoid(twin[0](x)))).double()
    assert trace.get("saturated_frac")[0][0] * s.numel() == ((s - 0.5).abs() > 0.47).sum().item()
    assert trace.get("saturated_frac")[0][1] * t.numel() == (t.abs() > 0.97).sum().item()
    close(trace.get("act_std")[0][:2], [s.std().item(), t.std().item()])


@pytest.mark.parametrize("name", ["resnet18", "nanogpt", "lstm_lm"])
def test_a_device_without_float64_sums_in_float32(name, monkeypatch):
    """Apple's MPS has no float64; there the probe accumulates in float32. Emulated here by making
    the CPU's accumulation dtype float32: the figures still match autograd (to float32's rounding,
    1e-5) and the histogram's counts stay exact (they travel apart from the float32 figures)."""
    from gradcourse import measurements, probes

    float32 = lambda device: torch.float32  # noqa: E731
    monkeypatch.setattr(measurements, "accumulation_dtype", float32)
    monkeypatch.setattr(probes, "accumulation_dtype", float32)
    model, batch, loss_fn = ZOO[name]()
    model.train()
    torch.manual_seed(1)
    with Probe(model) as probe:
        loss_fn(model, batch).backward()
    trace = probe.trace
    torch.manual_seed(1)
    grads, _ = reference(model, batch, loss_fn, trace.layers)
    close(trace.get("grad_norm")[0], [grads[n] for n in trace.layers], rel=1e-5)
    weights = dict(model.named_modules())
    assert trace.grad_hist[0].sum(axis=1).tolist() == [sum(w.numel() for w in expected_weights(weights[n]))
                                                       for n in trace.layers]
    held = {dtype for _, dtype in probe._scratch._buffers}  # the working copies were float32, none float64
    assert torch.float32 in held and torch.float64 not in held
    assert hooks_left(model) == 0
