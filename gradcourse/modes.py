"""One context manager for "measure the model as it is, then give it back as it was".

Evaluation (an accuracy, the loss on the whole training set, a look at the activations) runs in
``eval()`` mode, so that BatchNorm uses its running statistics and dropout is off, and without
gradients, so that autograd keeps nothing for a backward pass. Afterwards the model must be in the
mode it was in, even when the evaluation raised: a model left in eval mode trains on with frozen
BatchNorm statistics and no dropout, silently.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
>>> with evaluating(net):
...     net.training, torch.is_grad_enabled()
(False, False)
>>> net.training, torch.is_grad_enabled()
(True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block: ``model`` in eval mode, gradients off. After it: the model's own mode back."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
