"""Hooks registered together are removed together, on error too, and nothing listens afterwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradcourse import models
from gradcourse.activations import hidden_outputs
from gradcourse.hooks import Hooks, hooks_left


def _attached(model: nn.Module) -> int:
    """Module hooks counted from torch's own dictionaries (independent of hooks_left)."""
    return sum(len(d) for m in model.modules()
               for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks))


def test_hooks_are_removed_when_the_block_raises_and_removing_twice_is_safe():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    calls = []
    with pytest.raises(RuntimeError, match="half way"), Hooks(
            *[m.register_forward_hook(lambda m, a, out: calls.append(out.shape)) for m in net]) as hooks:
        assert len(hooks) == 3 and _attached(net) == hooks_left(net) == 3
        net(torch.zeros(4, 2))
        raise RuntimeError("an error half way")
    assert calls == [(4, 3), (4, 3), (4, 1)] and len(hooks) == 0 and _attached(net) == 0
    hooks.remove()  # again: nothing left to remove, no error
    net(torch.zeros(4, 2))
    assert len(calls) == 3  # nothing listens any more


def test_hidden_outputs_leaves_no_hook_even_when_the_forward_pass_fails():
    net = models.mlp(3, 8, activation="relu", seed=0)
    with pytest.raises(RuntimeError):
        hidden_outputs(net, torch.zeros(4, 5))  # wrong input width: the first layer raises
    assert _attached(net) == 0
    assert len(hidden_outputs(net, torch.zeros(4, 2))) == 3 and _attached(net) == 0
