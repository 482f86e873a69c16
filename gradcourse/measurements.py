"""The quantities a probe measures, as small functions of tensors (a probe only decides when to call them).

**Accuracy.** Every value is within 1e-6 (relative) of the same quantity computed in float64
from the same numbers (``tests/test_probes.py`` checks it on layers of up to a million values).
**Speed.** A probe calls these functions on every layer of every recorded step, so each one makes
as few passes over a tensor as that accuracy allows: float32 sums where their error is provably
small (torch's cascade summation, or a BLAS dot product over at most 2**15 values: within 1.3e-7
and 3.2e-7 in the worst cases measured), float64 where it is not (values tiny or huge enough to under- or overflow when
squared, a mean that dwarfs the spread, tensors that are not float32), and for sigmoid and tanh
outputs, whose saturated values are counted exactly in float64. Results are plain Python floats:
the arithmetic on a handful of numbers per layer is cheaper in numpy than as tensor operations.

>>> import torch
>>> a = torch.tensor([[0.01, 0.5], [0.99, 0.5]])
>>> stats = activation_statistics([activation_sums(a, torch.nn.Sigmoid())])
>>> [round(v, 4) for v in stats[:, 0].tolist()]      # mean, std, saturated fraction, dead fraction
[0.5, 0.4001, 0.5, nan]
>>> norm(torch.tensor([3.0, 4.0]))
5.0
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
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
_ZERO_SHIFT = (nn.ReLU, nn.ReLU6)  # outputs ≥ 0 whose mean is usually within a standard deviation of 0

#: Longest vector whose Σx² a float32 BLAS dot product may take: its error grows with the length
#: (worst measured over centred, offset and uniform data: 1.8e-7 at 2**14, 3.2e-7 at 2**15, 1.9e-6 at
#: 2**18); longer vectors are squared and summed by torch's cascade summation (within 1.3e-7 at 2**20).
_DOT_MAX = 2 ** 15
#: Largest tensor whose norm ``torch._foreach_norm`` may take in float32 (worst measured: 2.1e-7 at
#: 2**14, 6.6e-7 at 2**16).
_NORM_MAX = 2 ** 14
#: A float32 sum of n squares is trusted down to n·2**-100: each square that underflowed lost less
#: than 2**-126, all n of them less than 2**-26 of the sum.
_TINY = 2.0 ** -100


class Scratch(dict):
    """Reusable work buffers, one per shape and dtype, owned by a caller that measures repeatedly.

    Temporary tensors of a few hundred kB are exactly the size glibc serves with ``mmap`` and
    gives back on free: every step would page-fault them in again. A probe keeps one ``Scratch``
    and the measurements write their temporaries into it.
    """

    def buffer(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A buffer of this shape and dtype, contents undefined."""
        key = (tuple(shape), dtype)
        buffer = self.get(key)
        if buffer is None:
            buffer = self[key] = torch.empty(key[0], dtype=dtype)
        return buffer

    def float64_rows(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``(2, n)`` float64 buffer whose first row is all ones, for a tensor of n values:
        ``torch.mv`` of it with a vector d gives Σd and Σd² in one call. Returns the buffer and
        its second row shaped like ``like`` (to copy ``like`` into)."""
        key = ("float64_rows", tuple(like.shape))
        rows = self.get(key)
        if rows is None:
            pair = torch.ones(2, like.numel(), dtype=torch.float64)
            rows = self[key] = (pair, pair[1].view(like.shape))
        return rows


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().reshape(-1)


def _float64_sum_of_squares(flat: torch.Tensor) -> float:
    flat = flat.double()
    return torch.dot(flat, flat).item()


def _float32_sum_of_squares(flat: torch.Tensor, scratch: Scratch | None) -> float | None:
    """Σx² of a float32 vector in float32, or ``None`` where that could be off by more than 1e-7
    (an overflow, or squares small enough to underflow)."""
    n = flat.numel()
    if n <= _DOT_MAX:
        squares = torch.dot(flat, flat).item()
    else:
        out = None if scratch is None else scratch.buffer(flat.shape)
        squares = torch.square(flat, out=out).sum().item()
    return squares if n * _TINY <= squares < math.inf else None


def sum_of_squares(tensor: torch.Tensor, scratch: Scratch | None = None) -> float:
    """Σ tensor², within 1e-6 of float64 (float32 where that is safe, see the module docstring)."""
    flat = _flat(tensor)
    if flat.dtype == torch.float32 and flat.numel():
        squares = _float32_sum_of_squares(flat, scratch)
        if squares is not None:
            return squares
    return _float64_sum_of_squares(flat)


def norm(tensor: torch.Tensor) -> float:
    """‖tensor‖ (Frobenius), within 1e-6 of float64."""
    return math.sqrt(sum_of_squares(tensor))


def norms(tensors: Sequence[torch.Tensor]) -> list[float]:
    """:func:`norm` of each tensor: float32 tensors of at most 2**14 values in one float32 call,
    the others (and any whose float32 norm may have under- or overflowed) in one float64 call."""
    values: list[float | None] = [None] * len(tensors)
    small = [i for i, t in enumerate(tensors) if t.dtype == torch.float32 and 0 < t.numel() <= _NORM_MAX]
    if small:
        found = torch.stack(torch._foreach_norm([tensors[i].detach() for i in small])).tolist()
        for i, value in zip(small, found):
            if tensors[i].numel() * _TINY <= value * value < math.inf:
                values[i] = value
    rest = [i for i, v in enumerate(values) if v is None]
    if rest:
        found = torch.stack(torch._foreach_norm([tensors[i].detach() for i in rest], dtype=torch.float64)).tolist()
        for i, value in zip(rest, found):
            values[i] = value
    return values


def all_finite(values: Sequence[float]) -> bool:
    """Whether every value is finite (NaN and ±Inf are not)."""
    return all(math.isfinite(v) for v in values)


# -- activations ------------------------------------------------------------------------------

#: Every float32 at or above 2**-7 is a multiple of this: so are |a − 0.5| and |a| for the float32
#: activations near a saturation threshold, which lets :func:`_saturating_sums` count them exactly.
_GRID = 2.0 ** -30


class ActivationSums(NamedTuple):
    """What one forward call of a layer contributes: mergeable over several calls of one step."""

    count: int                      # number of values
    shift: float                    # the sums are taken around this value
    total: float                    # Σ(a − shift)
    squares: float                  # Σ(a − shift)²
    saturated: float | None         # values within SATURATION_MARGIN of an asymptote (sigmoid, tanh)
    unit_max: torch.Tensor | None   # per unit (feature, or channel × position), its largest value over the batch


def _saturating_sums(x: torch.Tensor, sigmoid: bool, scratch: Scratch | None) -> tuple[float, float, float, float]:
    """(shift, Σd, Σd², saturated count) of a sigmoid or tanh output, in float64, d = a − centre.

    Four passes over a float64 copy: the copy, the shift, one ``mv`` for Σd and Σd², and the
    count. A float32 ``a`` shifted by the centre of the range (0.5 or 0) is exact in float64, and
    |d| > half the range − margin is counted with two vectorised operations instead of a
    comparison into a bool tensor (several times slower on CPU): with t = the multiple of 2**-30
    at or below the threshold, clamping |d| to [t, t + 2**-30] leaves t for every value at or
    below the threshold and t + 2**-30 for every value above (no value lies strictly between: see
    ``_GRID``). The float64 sum of those is exact up to 2**23 values (within 1e-7 beyond).
    """
    pair, d = (Scratch() if scratch is None else scratch).float64_rows(x)
    d.copy_(x)
    centre, half_range = (0.5, 0.5) if sigmoid else (0.0, 1.0)
    if centre:
        d -= centre
    total, squares = torch.mv(pair, pair[1]).tolist()
    low = math.floor((half_range - SATURATION_MARGIN) / _GRID) * _GRID
    clamped = d.abs_().clamp_(low, low + _GRID).sum().item()
    count = (clamped - x.numel() * low) / _GRID
    return centre, total, squares, float(round(count)) if math.isfinite(count) else math.nan  # NaN stays NaN


def _shifted_sums(flat: torch.Tensor, shift: float, scratch: Scratch | None) -> tuple[float, float | None]:
    """Σd and Σd² for d = x − shift in float32; Σd² is ``None`` if the variance would lose accuracy.

    Each d is rounded once (relative error 2**-24). The variance is (Σd² − (Σd)²/n)/(n − 1); as
    long as (Σd)²/n is at most half of Σd² (the shift within about one standard deviation of the
    mean), that subtraction at most doubles the sums' errors: within 1e-6."""
    n = flat.numel()
    d = flat if shift == 0.0 else torch.sub(flat, shift, out=None if scratch is None else scratch.buffer(flat.shape))
    total = d.sum().item()
    squares = _float32_sum_of_squares(d, scratch)
    if squares is not None and not total * total / n <= squares / 2:
        squares = None
    return total, squares


def _float64_sums(flat: torch.Tensor) -> tuple[float, float, float]:
    """(shift, Σd, Σd²) in float64 around the mean: for nearly constant, tiny, huge or non-float32 values."""
    values = flat.double()
    mean = values.mean().item()
    d = values - mean if math.isfinite(mean) else values
    return (mean if math.isfinite(mean) else 0.0), d.sum().item(), torch.dot(d, d).item()


def activation_sums(a: torch.Tensor, activation: nn.Module | None = None, *, shift: float | None = None,
                    scratch: Scratch | None = None) -> ActivationSums:
    """The sums behind :func:`activation_statistics` for one output ``a`` of a layer's ``activation``.

    The moments are taken around ``shift`` (a probe passes the shift that served the layer in its
    previous record; by default 0 for ReLU outputs, else the float32 mean of ``a``), and again
    around the mean they find if that shift was too far off; float64 is the last resort. Sigmoid
    and tanh outputs are summed in float64 around the centre of their range (see
    :func:`_saturating_sums`).
    ``saturated`` is counted for sigmoid and tanh, ``unit_max`` kept for ReLU-like activations (a
    unit is dead when it is ≤ 0 for the whole batch). ``scratch`` lends the temporaries (see
    :class:`Scratch`). The arithmetic on the sums waits for :func:`activation_statistics`.
    """
    x = a.detach()
    flat = x.reshape(-1)
    n = flat.numel()
    if isinstance(activation, SATURATING):
        *sums, saturated = _saturating_sums(x, isinstance(activation, nn.Sigmoid), scratch)
        return ActivationSums(n, *sums, saturated, None)
    sums = None
    if flat.dtype == torch.float32 and n:
        if shift is None:
            shift = 0.0 if isinstance(activation, _ZERO_SHIFT) else flat.sum().item() / n
        for _ in range(2):  # a shift far from the mean is replaced, once, by the mean it measured
            if not math.isfinite(shift):
                break
            shift = float(np.float32(shift))
            total, squares = _shifted_sums(flat, shift, scratch)
            if squares is not None:
                # The mean's error is about 1e-7 of the spread, unless the values are ≥ 0 and
                # unshifted; a mean well inside the spread needs an exact sum to be within 1e-6.
                mean = shift + total / n
                if not (shift == 0.0 and isinstance(activation, _ZERO_SHIFT)) and mean * mean * n < squares:
                    total = flat.sum(dtype=torch.float64).item() - shift * n
                sums = (shift, total, squares)
                break
            shift += total / n
    if sums is None:
        sums = _float64_sums(flat)
    saturated = unit_max = None
    if isinstance(activation, RECTIFIERS):
        unit_max = x.reshape(x.shape[0], -1).amax(dim=0) if x.dim() else x.reshape(1)
    return ActivationSums(n, *sums, saturated, unit_max)


def merge_activation_sums(calls: Sequence[ActivationSums]) -> ActivationSums:
    """One :class:`ActivationSums` for several forward calls of a layer in one step, as if their
    values were one batch (the sums are re-centred on the first call's shift)."""
    if len(calls) == 1:
        return calls[0]
    shift = calls[0].shift
    total = squares = 0.0
    for c in calls:
        offset = c.shift - shift  # Σ(a−s₀) = Σ(a−s) + n(s−s₀), and so for the squares
        total += c.total + c.count * offset
        squares += c.squares + 2 * offset * c.total + c.count * offset * offset
    saturated = unit_max = None
    if calls[0].saturated is not None:
        saturated = sum(c.saturated for c in calls)
    if calls[0].unit_max is not None and len({c.unit_max.shape for c in calls}) == 1:
        unit_max = functools.reduce(torch.maximum, [c.unit_max for c in calls])
    return ActivationSums(sum(c.count for c in calls), shift, total, squares, saturated, unit_max)


def activation_statistics(sums: Sequence[ActivationSums | None]) -> np.ndarray:
    """Mean, standard deviation, saturated fraction and dead fraction of each layer's activation.

    ``sums`` has one :func:`activation_sums` (or ``None``: not measured) per layer. Returns a
    float64 array of shape ``(4, len(sums))``, NaN where a layer was not measured or its
    activation has no such notion.
    """
    nan = math.nan
    count = np.array([s.count if s else nan for s in sums], dtype=float)
    shift, total, squares = (np.array([getattr(s, k) if s else nan for s in sums], dtype=float)
                             for k in ("shift", "total", "squares"))
    saturated = np.array([s.saturated if s and s.saturated is not None else nan for s in sums], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = shift + total / count
        variance = np.clip((squares - total * total / count) / np.maximum(count - 1, 1), 0, None)
        return np.stack([mean, np.sqrt(variance), saturated / count, dead_fractions(sums)])


def dead_fractions(sums: Sequence[ActivationSums | None]) -> np.ndarray:
    """Fraction of units that are ≤ 0 for the whole batch, per layer (NaN where not kept)."""
    dead = np.full(len(sums), math.nan)
    for i, s in enumerate(sums):
        if s and s.unit_max is not None and s.unit_max.numel():
            maxima = s.unit_max.float().numpy()  # one value per unit: a few thousand at most, cheaper in numpy
            dead[i] = np.count_nonzero(maxima <= 0) / maxima.size
    return dead


# -- the weight-gradient histogram ------------------------------------------------------------

def log2_histogram(tensors: Sequence[torch.Tensor], low: int, high: int, scratch: Scratch | None = None) -> np.ndarray:
    """Count |g| per power of two, one row per tensor: bin ``k`` holds 2**(low+k) ≤ |g| < 2**(low+k+1).

    The float32 exponent bits are log2|g|, read exactly (no logarithm). Smaller values, zeros
    included, land in the first bin; larger ones, Inf and NaN in the last. Returns int64 counts
    of shape ``(len(tensors), high - low)``.

    >>> log2_histogram([torch.tensor([0.0, 0.3, 1.0, 5.0, float("nan")])], -2, 2).tolist()
    [[2, 0, 1, 2]]
    """
    sizes = tuple(t.numel() for t in tensors)
    flat = [t.detach().reshape(-1).float() for t in tensors]
    out = None if scratch is None else scratch.buffer((sum(sizes),), torch.float32)
    bits = torch.cat(flat, out=out).view(torch.int32)
    # An arithmetic shift by 23 leaves the biased exponent E (0…255), minus 256 when the sign bit
    # is set; adding 256 + 512·row gives every (tensor, sign, E) its own bin, so that one bincount
    # counts them all. The rest is arithmetic on a (tensors, 512) array.
    index = torch.bitwise_right_shift(bits, 23)
    index += _row_offsets(sizes)
    counts = torch.bincount(index, minlength=512 * len(sizes)).numpy().reshape(len(sizes), 2, 256).sum(axis=1)
    first, last = low + 127, high + 126  # E of the first and the last bin
    rows = counts[:, first:last + 1].copy()
    rows[:, 0] += counts[:, :first].sum(axis=1)
    rows[:, -1] += counts[:, last + 1:].sum(axis=1)
    return rows


@functools.lru_cache(maxsize=16)
def _owners(sizes: tuple[int, ...]) -> torch.Tensor:
    """Which tensor each entry of the concatenated tensors comes from (cached per shape)."""
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


@functools.lru_cache(maxsize=16)
def _row_offsets(sizes: tuple[int, ...]) -> torch.Tensor:
    return (_owners(sizes) * 512 + 256).int()
