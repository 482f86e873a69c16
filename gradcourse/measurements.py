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


class Scratch(dict):
    """Reusable work buffers, one per shape and dtype, owned by a caller that measures repeatedly.

    Temporary tensors of a few hundred kB are exactly the size glibc serves with ``mmap`` and
    gives back on free: every step would page-fault them in again. A probe keeps one ``Scratch``
    and the measurements write their temporaries into it (each result is a new, small tensor).
    """

    def buffer(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """A buffer of this shape and dtype, contents undefined."""
        key = (tuple(shape), dtype)
        buffer = self.get(key)
        if buffer is None:
            buffer = self[key] = torch.empty(key[0], dtype=dtype)
        return buffer

    def float64_rows(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A ``(2, n)`` float64 buffer whose first row is all ones, for a tensor of n values:
        ``torch.mv`` of it with a vector d gives Σd and Σd² in one call. Returns the buffer, its
        second row flat, and that row shaped like ``like`` (to copy ``like`` into)."""
        key = ("float64_rows", tuple(like.shape))
        rows = self.get(key)
        if rows is None:
            pair = torch.ones(2, like.numel(), dtype=torch.float64)
            rows = self[key] = (pair, pair[1], pair[1].view(like.shape))
        return rows


def _float64(tensor: torch.Tensor, scratch: Scratch | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``(2, n)`` float64 pair (ones, a copy of ``tensor`` flattened) and its second row."""
    pair, flat, shaped = (Scratch() if scratch is None else scratch).float64_rows(tensor)
    shaped.copy_(tensor.detach())
    return pair, flat


def sum_of_squares(tensor: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
    """Σ tensor² accumulated in float64 (0-d float64): a float64 copy and one dot product."""
    _, values = _float64(tensor, scratch)
    return torch.dot(values, values)


def norm(tensor: torch.Tensor) -> torch.Tensor:
    """‖tensor‖ (Frobenius) accumulated in float64, as a 0-d float64 tensor."""
    return sum_of_squares(tensor).sqrt()


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`norm` of each tensor, in one call (0-d float64 tensors)."""
    return list(torch._foreach_norm(tensors, dtype=torch.float64))


def all_finite(values: list[torch.Tensor]) -> bool:
    """Whether every value is finite, from one sum: a NaN or Inf anywhere makes the sum non-finite.

    Meant for norms (non-negative, float64: no overflow from adding finite float32 norms).
    """
    return math.isfinite(torch.stack(values).sum().item())


#: Every float32 at or above 2**-7 is a multiple of this: so are |a − 0.5| and |a| for the float32
#: activations near a saturation threshold, which lets :func:`_count_above` count them exactly.
_GRID = 2.0 ** -30


def _count_above(values: torch.Tensor, threshold: float) -> tuple[torch.Tensor, float]:
    """How many of the float64 ``values`` (a float32 activation, or its distance to the centre)
    exceed ``threshold``, exactly, as (Σ, n·t) with count = (Σ − n·t)/2**-30 (taken later, for
    all layers at once); ``values`` is overwritten.

    Two vectorised operations instead of a comparison into a bool tensor (several times slower on
    CPU): with t = the multiple of 2**-30 at or below ``threshold`` and t⁺ = t + 2**-30, clamping
    to [t, t⁺] leaves t for every value ≤ ``threshold`` and t⁺ for every value above (no value
    lies strictly between: see ``_GRID``). The float64 sum of those is exact up to 2**23 values
    (and within 1e-7 beyond), and (Σ − n·t)/2**-30 is the count.
    """
    low = math.floor(threshold / _GRID) * _GRID
    return values.clamp_(low, low + _GRID).sum(), values.numel() * low


class ActivationSums(NamedTuple):
    """What one forward call of a layer contributes: mergeable over several calls of one step."""

    count: int                      # number of values
    shift: torch.Tensor             # the sums are taken around this value (0-d)
    moments: torch.Tensor           # [Σ(a − shift), Σ(a − shift)²], float64
    saturated: tuple[torch.Tensor, float] | None  # values within SATURATION_MARGIN of an asymptote (_count_above)
    unit_max: torch.Tensor | None   # per unit (feature, or channel × position), its largest value over the batch


_HALF, _ZERO = torch.tensor(0.5), torch.tensor(0.0)


def activation_sums(a: torch.Tensor, activation: nn.Module | None = None,
                    scratch: Scratch | None = None) -> ActivationSums:
    """The sums behind :func:`activation_statistics` for one output ``a`` of a layer's ``activation``.

    The values are copied to float64 and shifted (exactly, in float64) before Σd and Σd² are
    taken, so that the variance does not cancel away when the mean dwarfs the spread (the
    relative error of the variance is about 1e-16·(mean − shift)²/variance). Sigmoid and tanh
    outputs are shifted by the centre of their range (0.5, 0), which also gives the distance
    |a − centre| that decides saturation; ReLU-like outputs by 0; other outputs by one of their
    values. ``saturated`` is
    counted for sigmoid and tanh, ``unit_max`` kept for ReLU-like activations (a unit is dead
    when it is ≤ 0 for the whole batch). ``scratch`` lends the temporaries (see :class:`Scratch`).
    The arithmetic on the sums waits for :func:`activation_statistics`.
    """
    a = a.detach()
    pair, d = _float64(a, scratch)
    saturating = isinstance(activation, SATURATING)
    if isinstance(activation, nn.Sigmoid):
        shift = _HALF
    elif saturating or isinstance(activation, RECTIFIERS):
        shift = _ZERO  # ReLU outputs start at 0: their mean is of the order of their spread
    else:
        shift = a.reshape(-1)[0]
    if shift is not _ZERO:
        d -= shift
    moments = torch.mv(pair, d)
    saturated = unit_max = None
    if saturating:  # |a − centre| > half the range − margin
        half_range = 0.5 if isinstance(activation, nn.Sigmoid) else 1.0
        saturated = _count_above(d.abs_(), half_range - SATURATION_MARGIN)
    elif isinstance(activation, RECTIFIERS):
        unit_max = a.reshape(a.shape[0], -1).amax(dim=0)
    return ActivationSums(a.numel(), shift, moments, saturated, unit_max)


def merge_activation_sums(calls: list[ActivationSums]) -> ActivationSums:
    """One :class:`ActivationSums` for several forward calls of a layer in one step, as if their
    values were one batch (the sums are re-centred on the first call's shift)."""
    if len(calls) == 1:
        return calls[0]
    shift = calls[0].shift
    total = sq = 0.0
    for c in calls:
        offset = c.shift.double() - shift.double()  # Σ(a−s₀) = Σ(a−s) + n(s−s₀), and so for the squares
        total = total + c.moments[0] + c.count * offset
        sq = sq + c.moments[1] + 2 * offset * c.moments[0] + c.count * offset * offset
    saturated = unit_max = None
    if calls[0].saturated is not None:
        saturated = (sum(c.saturated[0] for c in calls), sum(c.saturated[1] for c in calls))
    if calls[0].unit_max is not None and len({c.unit_max.shape for c in calls}) == 1:
        unit_max = functools.reduce(torch.maximum, [c.unit_max for c in calls])
    return ActivationSums(sum(c.count for c in calls), shift, torch.stack([total, sq]), saturated, unit_max)


def activation_statistics(sums: list[ActivationSums | None]) -> torch.Tensor:
    """Mean, standard deviation, saturated fraction and dead fraction of each layer's activation.

    ``sums`` has one :func:`activation_sums` (or ``None``: not measured) per layer. Returns a
    float64 tensor of shape ``(4, len(sums))``, NaN where a layer was not measured or its
    activation has no such notion. Computed for all layers at once (a handful of tensor ops).
    """
    nan = torch.tensor(_NAN, dtype=torch.float64)
    nan2 = torch.full((2,), _NAN, dtype=torch.float64)
    count = torch.tensor([s.count if s else _NAN for s in sums], dtype=torch.float64)
    shift = torch.stack([s.shift.double() if s else nan for s in sums])
    total, sq = torch.stack([s.moments if s else nan2 for s in sums]).T
    mean = shift + total / count
    variance = ((sq - total * total / count) / (count - 1).clamp(min=1)).clamp(min=0)
    counted = [s.saturated if s and s.saturated is not None else (nan, _NAN) for s in sums]
    saturated = (torch.stack([c[0] for c in counted]) - torch.tensor([c[1] for c in counted], dtype=torch.float64))
    saturated = saturated / _GRID / count
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


def log2_histogram(tensors: list[torch.Tensor], low: int, high: int, scratch: Scratch | None = None) -> torch.Tensor:
    """Count |g| per power of two, one row per tensor: bin ``k`` holds 2**(low+k) ≤ |g| < 2**(low+k+1).

    The float32 exponent bits are log2|g|, read exactly (no logarithm). Smaller values, zeros
    included, land in the first bin; larger ones, Inf and NaN in the last. Returns int64 counts
    of shape ``(len(tensors), high - low)``.

    >>> log2_histogram([torch.tensor([0.0, 0.3, 1.0, 5.0, float("nan")])], -2, 2).tolist()
    [[2, 0, 1, 2]]
    """
    bins = high - low
    sizes = tuple(t.numel() for t in tensors)
    flat = [t.detach().reshape(-1).float() for t in tensors]
    out = None if scratch is None else scratch.buffer((sum(sizes),), torch.float32)
    bits = torch.cat(flat, out=out).view(torch.int32)
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
