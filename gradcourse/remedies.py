"""The fixes the course teaches, as small named functions. Each docstring names its lesson.

>>> from gradcourse import models, remedies
>>> net = models.mlp(depth=10, width=32, activation="sigmoid", seed=0)
>>> better = remedies.swap_activation(net, "relu")          # lesson 01
>>> better = remedies.reinitialise(better, "kaiming")        # lessons 01 and 02
>>> better.config["activation"], better.config["init"]
('relu', 'kaiming')
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import _checks, models


@dataclass(frozen=True)
class Clipping:
    """Gradient clipping applied between backward and the optimizer step (lessons 03 and 06).

    ``method="norm"`` rescales the whole gradient when its total norm exceeds ``threshold``
    (direction kept: ``torch.nn.utils.clip_grad_norm_``); ``method="value"`` clamps every
    component to ``[-threshold, threshold]`` (direction changed: ``clip_grad_value_``).
    """

    method: str
    threshold: float

    def __post_init__(self):
        _checks.choice("method", self.method, ("norm", "value"))
        _checks.number("threshold", self.threshold, low=0.0, low_open=True)

    def apply(self, parameters: list[torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """Clip the gradients of ``parameters`` in place; return (total norm before, clipped?)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if self.method == "norm":
            total = nn.utils.clip_grad_norm_(parameters, self.threshold)
            return total, bool(total > self.threshold)
        total = nn.utils.get_total_norm(grads)
        clipped = any(bool(g.abs().max() > self.threshold) for g in grads)
        nn.utils.clip_grad_value_(parameters, self.threshold)
        return total, clipped

    def describe(self) -> str:
        return f"clip by {self.method} at {self.threshold:g}"


def clip_norm(threshold: float) -> Clipping:
    """Clip the total gradient norm to ``threshold``, keeping its direction (lesson 03).

    >>> clip_norm(1.0).describe()
    'clip by norm at 1'
    """
    return Clipping("norm", threshold)


def clip_value(threshold: float) -> Clipping:
    """Clamp every gradient component to ``[-threshold, threshold]`` (lesson 03).

    >>> clip_value(0.01).method
    'value'
    """
    return Clipping("value", threshold)


def _rebuilt(model: nn.Module, **changes) -> models.MLP:
    config = getattr(model, "config", None)
    if not config or config.get("kind") != "mlp":
        raise ValueError("model must be built by gradcourse.models.mlp (it rebuilds from model.config)")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    kwargs.update(changes)
    return models.mlp(**kwargs)


def reinitialise(model: nn.Module, scheme: str, *, weight_std: float | None = None) -> models.MLP:
    """The same MLP with its weights drawn by ``scheme``: ``"xavier"`` for tanh/sigmoid,
    ``"kaiming"`` (He) for ReLU, ``"normal"`` with ``weight_std`` (lessons 01 and 02).

    >>> reinitialise(models.mlp(4, 8), "xavier").config["init"]
    'xavier'
    """
    _checks.choice("scheme", scheme, models.INITS)
    return _rebuilt(model, init=scheme, weight_std=weight_std if scheme == "normal" else None)


def swap_activation(model: nn.Module, activation: str) -> models.MLP:
    """The same MLP with another activation, e.g. ReLU instead of sigmoid (lesson 01).

    >>> swap_activation(models.mlp(4, 8), "tanh").config["activation"]
    'tanh'
    """
    _checks.choice("activation", activation, models.ACTIVATIONS)
    return _rebuilt(model, activation=activation)


def add_batchnorm(model: nn.Module) -> models.MLP:
    """The same MLP with BatchNorm between every hidden linear layer and its activation (lesson 04).

    >>> hasattr(add_batchnorm(models.mlp(4, 8)), "bn1")
    True
    """
    return _rebuilt(model, batchnorm=True)


def make_residual(model: nn.Module) -> models.MLP:
    """The same MLP with skip connections, h ← h + f(h) for every hidden layer after the first
    (lesson 05).

    >>> make_residual(models.mlp(4, 8)).residual
    True
    """
    return _rebuilt(model, residual=True)
