"""What every hidden layer of a model outputs for a batch, read with forward hooks.

A model names the activation that follows each tracked layer in ``model.probe_activations``
(layer name → module name), as :func:`gradcourse.models.mlp` and ``resnet_mlp`` do; hooking those
modules reads what the real forward pass computes (BatchNorm, skips and all), instead of
re-implementing it.

>>> import torch
>>> from gradcourse import models
>>> net = models.mlp(3, 8, activation="relu", batchnorm=True, seed=0)
>>> outs = hidden_outputs(net, torch.randn(16, 2))
>>> len(outs), tuple(outs[0].shape), bool((outs[-1] >= 0).all())
(3, (16, 8), True)
"""

from __future__ import annotations

import torch
from torch import nn

from .hooks import Hooks


def hidden_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of each hidden layer's activation for input ``x``, front to back (no gradients;
    the hooks are removed whatever happens)."""
    names = getattr(model, "probe_activations", None)
    if not isinstance(names, dict) or not names:
        raise ValueError("model must name its hidden activations in model.probe_activations "
                         "(as gradcourse.models.mlp and resnet_mlp do)")
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    listening = Hooks(*[modules[module].register_forward_hook(
        lambda _m, _args, out, key=layer: outputs.__setitem__(key, out.detach()))
        for layer, module in names.items()])
    with listening, torch.no_grad():
        model(x)
    return [outputs[layer] for layer in names]
