"""The quantities a probe measures, as small functions of tensors (a probe only decides when to call them).

Every sum is accumulated in float64: a float32 sum of squares drifts over large tensors and
underflows to 0 for the tiny gradients of a vanishing network, and the course compares these
numbers against theory over many orders of magnitude.

>>> import torch
>>> a = torch.tensor([[0.01, 0.5], [0.99, 0.5]])
>>> stats = activation_statistics([activation_sums(a, torch.nn.Sigmoid())])
>>> [round(v, 4) for v in stats[:, 0].tolist()]      # mean, std, saturated fraction, dead fraction
[0.5, 0.4001, 0.5, nan]
>>> float(norm(torch.tensor([3.0, 4.0])))
5.0
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
from torch import nn

#: An activation within this distance of an asymptote (sigmoid: 0 or 1; tanh: ±1) counts as
#: saturated: its slope is then below about 3 % of its maximum, so it passes almost no gradient back.
SATURATION_MARGIN = 0.03

SATURATING = (nn.Sigmoid, nn.Tanh)
RECTIFIERS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6)
#: Modules recognised as a layer's activation when a model does not name them (``probe_activations``).
ACTIVATIONS = (*SATURATING, *RECTIFIERS, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.PReLU)
_NAN = math.nan


def norm(tensor: torch.Tensor) -> torch.Tensor:
    """‖tensor‖ (Frobenius) accumulated in float64, as a 0-d float64 tensor."""
    return torch.linalg.vector_norm(tensor, dtype=torch.float64)


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`norm` of each tensor, in one call (0-d float64 tensors)."""
    return list(torch._foreach_norm(tensors, dtype=torch.float64))


def all_finite(values: list[torch.Tensor]) -> bool:
    """Whether every value is finite, from one sum: a NaN or Inf anywhere makes the sum non-finite.

    Meant for norms (non-negative, float64: no overflow from adding finite float32 norms).
    """
    return bool(torch.stack(values).sum().isfinite())


class ActivationSums(NamedTuple):
    """What one forward call of a layer contributes: mergeable over several calls of one step."""

    count: int                      # number of values
    shift: torch.Tensor             # one of the values: sums are taken around it (0-d, float32)
    sum: torch.Tensor               # Σ(a − shift), float64
    sum_sq: torch.Tensor            # Σ(a − shift)², float64
    saturated: torch.Tensor | None  # how many values lie within SATURATION_MARGIN of an asymptote
    unit_max: torch.Tensor | None   # per unit (feature, or channel × position), its largest value over the batch


def activation_sums(a: torch.Tensor, activation: nn.Module | None = None) -> ActivationSums:
    """The sums behind :func:`activation_statistics` for one output ``a`` of a layer's ``activation``.

    Sums are taken around one of the values (a shifted sum): the variance is then exact even when
    the mean dwarfs the spread, in one pass. ``saturated`` is counted for sigmoid and tanh,
    ``unit_max`` kept for ReLU-like activations (a unit is dead when it is ≤ 0 for the whole batch).
    """
    a = a.detach()
    shift = a.reshape(-1)[0]
    centred = a - shift
    saturated = unit_max = None
    if isinstance(activation, nn.Sigmoid):
        # Two comparisons with the asymptotes' margins, not |a − 0.5|: a − 0.5 rounds near 0.03.
        saturated = torch.count_nonzero((a < SATURATION_MARGIN).logical_or_(a > 1 - SATURATION_MARGIN))
    elif isinstance(activation, nn.Tanh):
        saturated = torch.count_nonzero(a.abs() > 1 - SATURATION_MARGIN)
    elif isinstance(activation, RECTIFIERS):
        unit_max = a.reshape(a.shape[0], -1).amax(dim=0)
    return ActivationSums(a.numel(), shift, centred.sum(dtype=torch.float64),
                          norm(centred).square(), saturated, unit_max)


def merge_activation_sums(calls: list[ActivationSums]) -> ActivationSums:
    """One :class:`ActivationSums` for several forward calls of a layer in one step, as if their
    values were one batch (the sums are re-centred on the first call's shift)."""
    if len(calls) == 1:
        return calls[0]
    shift = calls[0].shift
    total = sq = 0.0
    for c in calls:
        offset = (c.shift - shift).double()   # Σ(a−s₀) = Σ(a−s) + n(s−s₀), and the same for squares
        total = total + c.sum + c.count * offset
        sq = sq + c.sum_sq + 2 * offset * c.sum + c.count * offset * offset
    saturated = unit_max = None
    if calls[0].saturated is not None:
        saturated = sum(c.saturated for c in calls)
    if calls[0].unit_max is not None and len({c.unit_max.shape for c in calls}) == 1:
        unit_max = functools.reduce(torch.maximum, [c.unit_max for c in calls])
    return ActivationSums(sum(c.count for c in calls), shift, total, sq, saturated, unit_max)


def activation_statistics(sums: list[ActivationSums | None]) -> torch.Tensor:
    """Mean, standard deviation, saturated fraction and dead fraction of each layer's activation.

    ``sums`` has one :func:`activation_sums` (or ``None``: not measured) per layer. Returns a
    float64 tensor of shape ``(4, len(sums))``, NaN where a layer was not measured or its
    activation has no such notion. Computed for all layers at once (a handful of tensor ops).
    """
    nan64 = torch.tensor(_NAN, dtype=torch.float64)
    count = torch.tensor([s.count if s else _NAN for s in sums], dtype=torch.float64)
    shift = torch.stack([s.shift.double() if s else nan64 for s in sums])
    total = torch.stack([s.sum if s else nan64 for s in sums])
    sq = torch.stack([s.sum_sq if s else nan64 for s in sums])
    mean = shift + total / count
    variance = ((sq - total * total / count) / (count - 1).clamp(min=1)).clamp(min=0)
    saturated = torch.stack([s.saturated if s and s.saturated is not None else nan64 for s in sums]) / count
    return torch.stack([mean, variance.sqrt(), saturated, dead_fractions(sums)])


def dead_fractions(sums: list[ActivationSums | None]) -> torch.Tensor:
    """Fraction of units that are ≤ 0 for the whole batch, per layer (NaN where not kept)."""
    dead = torch.full((len(sums),), _NAN, dtype=torch.float64)
    kept = [i for i, s in enumerate(sums) if s and s.unit_max is not None]
    if kept:
        maxima = [sums[i].unit_max for i in kept]
        sizes = tuple(m.numel() for m in maxima)
        silent = torch.cat(maxima).le(0).double()
        counts = torch.bincount(_owners(sizes), weights=silent, minlength=len(kept))
        dead[kept] = counts / torch.tensor(sizes, dtype=torch.float64)
    return dead


def log2_histogram(tensors: list[torch.Tensor], low: int, high: int) -> torch.Tensor:
    """Count |g| per power of two, one row per tensor: bin ``k`` holds 2**(low+k) ≤ |g| < 2**(low+k+1).

    The float32 exponent bits are log2|g|, read exactly (no logarithm). Smaller values, zeros
    included, land in the first bin; larger ones, Inf and NaN in the last. Returns int64 counts
    of shape ``(len(tensors), high - low)``.

    >>> log2_histogram([torch.tensor([0.0, 0.3, 1.0, 5.0, float("nan")])], -2, 2).tolist()
    [[2, 0, 1, 2]]
    """
    bins = high - low
    sizes = tuple(t.numel() for t in tensors)
    bits = torch.cat([t.detach().reshape(-1).float() for t in tensors]).view(torch.int32)
    # biased exponent − 127 = floor(log2|g|); clamp into [low, high) and move each tensor's
    # values to its own row, so that one bincount counts every tensor.
    exponent = bits.bitwise_and_(0x7FFFFFFF).bitwise_right_shift_(23).clamp_(low + 127, high + 126)
    exponent += _row_offsets(sizes, bins, low + 127)
    return torch.bincount(exponent, minlength=len(tensors) * bins).view(len(tensors), bins)


@functools.lru_cache(maxsize=16)
def _owners(sizes: tuple[int, ...]) -> torch.Tensor:
    """Which tensor each entry of the concatenated tensors comes from (cached per shape)."""
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


@functools.lru_cache(maxsize=16)
def _row_offsets(sizes: tuple[int, ...], bins: int, first: int) -> torch.Tensor:
    return (_owners(sizes) * bins - first).int()
