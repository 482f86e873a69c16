"""Hooks registered together and removed together, whatever happens in between.

Every place that listens to a model (the probe, lesson 09's recorder, the look at hidden
activations, ``fit``'s first forward pass) keeps the handles that torch's ``register_*_hook``
return in one :class:`Hooks` and removes them on the way out, as fastai's ``Hooks`` does. A hook
left behind keeps running on every later forward pass, silently.

>>> import torch
>>> net = torch.nn.Linear(2, 2)
>>> seen = []
>>> with Hooks(net.register_forward_hook(lambda module, args, out: seen.append(out.shape))):
...     _ = net(torch.zeros(3, 2))
>>> seen, hooks_left(net)
([torch.Size([3, 2])], 0)
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.utils.hooks import RemovableHandle


class Hooks:
    """The handles of hooks that belong together: :meth:`remove` (or leaving the ``with`` block)
    removes every one, once; a handle can be added later with :meth:`add`."""

    def __init__(self, *handles: RemovableHandle):
        self._handles: list[RemovableHandle] = list(handles)

    def add(self, handle: RemovableHandle) -> RemovableHandle:
        """Keep ``handle`` with the others; returns it."""
        self._handles.append(handle)
        return handle

    def extend(self, handles: Iterable[RemovableHandle]) -> None:
        """Keep every one of ``handles``."""
        self._handles.extend(handles)

    def remove(self) -> None:
        """Remove every hook (safe to call more than once)."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def hooks_left(model: nn.Module) -> int:
    """How many module hooks (forward, forward pre-, backward, backward pre-) are attached anywhere
    in ``model``: 0 after a well-behaved probe."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
