"""The loss a target calls for: integer class labels → cross-entropy, float targets → MSE.

One rule shared by :func:`gradcourse.train.fit` and :func:`gradcourse.probes.probe_once`, kept in
a module of its own below both so that neither has to import the other.

>>> import torch
>>> loss_function(torch.tensor([0, 1])).__name__, loss_function(torch.zeros(2, 1)).__name__
('cross_entropy', 'mse_loss')
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional


def loss_function(y: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``functional.cross_entropy`` for integer class labels, ``functional.mse_loss`` for float targets."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"y must be a torch.Tensor of class labels or float targets; got {type(y).__name__}")
    if torch.is_floating_point(y):
        return functional.mse_loss
    if y.dtype in (torch.bool,) or torch.is_complex(y):
        raise ValueError(f"y must hold integer class labels or float targets; got dtype {y.dtype}")
    return functional.cross_entropy
