"""The doctor on networks written by others (tests/zoo.py: torchvision's ResNet-18 and MobileNetV3
blocks, nanoGPT, a GPT-2 Conv1D MLP, an nn.LSTM language model, nn.TransformerEncoder, a model
returning a dict): a learning rate ten times too large is diagnosed with the learning rate as its
first remedy, and applying that remedy (the rate divided by ``LR_DIVISOR``) gives a healthy run
whose loss ends below the broken run's.

Each model overfits its one small batch for 30 steps, as a practitioner's first check does. The
settings and the verdicts were measured on seeds 0–4, on this machine's kernels and on the portable
ones (``ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE ONEDNN_MAX_CPU_ISA=SSE41``); the test runs
two seeds.
"""

from __future__ import annotations

import math

import pytest
import torch
from zoo import ZOO

from gradcourse import diagnose
from gradcourse.probes import Probe
from gradcourse.remedies import LR_DIVISOR

STEPS = 30

#: model -> (optimizer, broken learning rate, the verdicts a too-large rate gave it over seeds 0-4 and
#: both kernel sets). In a model with ReLUs, steps that large either blow it up or kill the ReLUs
#: (dead in 7 of 10 runs for ResNet-18, 3 of 10 for the encoder's ReLU FFN, 1 of 10 for MobileNet); both
#: verdicts name the learning rate first.
BROKEN = {
    "resnet18": ("sgd", 5.0, {"exploding", "dead_relu"}),
    "mobilenet_v3_small": ("sgd", 5.0, {"exploding", "dead_relu"}),
    "nanogpt": ("adam", 1.0, {"exploding"}),
    "gpt2_conv1d": ("adam", 1.0, {"exploding"}),
    "lstm_lm": ("sgd", 100.0, {"exploding"}),
    "transformer_encoder": ("adam", 1.0, {"exploding", "dead_relu"}),
    "dict_output": ("sgd", 5.0, {"dead_relu", "exploding"}),
}


def train(name: str, optimizer: str, lr: float, seed: int):
    """Train a zoo model on its batch with the probe attached; the doctor's verdict and the losses."""
    model, batch, loss_fn = ZOO[name](seed)
    model.train()
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(model.parameters(), lr=lr)
    losses = []
    with Probe(model, optimizer=opt) as probe:
        for _ in range(STEPS):
            opt.zero_grad()
            loss = loss_fn(model, batch)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
            loss.backward()
            opt.step()
    return diagnose(probe.trace, losses=losses, model=model), losses


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(BROKEN))
def test_a_learning_rate_too_large_is_diagnosed_and_its_first_remedy_cures_it(name, seed):
    optimizer, lr, verdicts = BROKEN[name]
    broken, broken_losses = train(name, optimizer, lr, seed)
    assert broken.problem in verdicts, (broken.problem, broken.evidence)
    assert broken.remedies and broken.remedies[0].name == "lower_lr", [r.name for r in broken.remedies]

    fixed, fixed_losses = train(name, optimizer, lr / LR_DIVISOR, seed)
    assert fixed.problem == "healthy", (fixed.problem, fixed.evidence)
    assert all(math.isfinite(v) for v in fixed_losses)
    last_broken = broken_losses[-1] if math.isfinite(broken_losses[-1]) else math.inf
    assert fixed_losses[-1] < min(last_broken, fixed_losses[0])
