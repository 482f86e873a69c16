"""The quantities a probe measures, as small functions of tensors (a probe only decides when to call them).

**Accuracy.** Every sum is accumulated in float64: a float32 sum of squares drifts over large
tensors and underflows to 0 for the tiny gradients of a vanishing network, and the course
compares these numbers against theory over many orders of magnitude. Every value is within 1e-6
(relative) of the same quantity computed in float64 by torch (``tests/test_probes.py`` checks it
on layers of up to a million values).

**Speed.** A probe calls these functions on every layer of every recorded step. For float32 CPU
tensors (what the course trains) each quantity is one compiled pass over the tensor
(:mod:`gradcourse._kernels`); anything else goes through torch in float64. Results are plain
Python floats: the arithmetic on a handful of numbers per layer is cheaper in plain Python than
as tensor (or even numpy) operations, and it waits until the trace is read.

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

from . import _kernels

#: An activation within this distance of an asymptote (sigmoid: 0 or 1; tanh: ±1) counts as
#: saturated: its slope is then below about 3 % of its maximum, so it passes almost no gradient back.
SATURATION_MARGIN = 0.03

SATURATING = (nn.Sigmoid, nn.Tanh)
RECTIFIERS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6)
#: Modules recognised as a layer's activation when a model does not name them (``probe_activations``).
ACTIVATIONS = (*SATURATING, *RECTIFIERS, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.PReLU)

#: Sums taken around a centre c lose about 1e-16·(mean − c)²/variance of the variance to
#: cancellation: past this ratio (1e-7 lost) they are taken again around the mean they found.
_FAR_FROM_CENTRE = 1e9


def fits_kernels(tensor: torch.Tensor) -> bool:
    """Whether the compiled kernels can read ``tensor``'s values: float32, on the CPU."""
    return tensor.dtype is torch.float32 and tensor.is_cpu


def _array(tensor: torch.Tensor) -> np.ndarray | None:
    """``tensor``'s values as a float32 numpy array of its shape (a view, unless it is a negated
    view), or ``None`` when it does not :func:`fits_kernels`. The kernels take it flattened
    (``ravel``: no copy when contiguous); numpy's reshapes cost a tenth of torch's."""
    if not fits_kernels(tensor):
        return None
    return tensor.numpy(force=True)  # detaches (and resolves a negative view) in one call


def sum_of_squares(tensor: torch.Tensor) -> float:
    """Σ tensor², accumulated in float64."""
    values = _array(tensor)
    if values is not None:
        return _kernels.sum_of_squares(values.ravel())
    flat = tensor.detach().reshape(-1).to(torch.float64)
    return torch.dot(flat, flat).item()


def norm(tensor: torch.Tensor) -> float:
    """‖tensor‖ (Frobenius), accumulated in float64."""
    return math.sqrt(sum_of_squares(tensor))


def _concatenated(tensors: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """The tensors flattened into one float32 array, and where each one ends (for the kernels)."""
    with torch.no_grad():
        flat = torch.cat([t.reshape(-1) for t in tensors])
    if not fits_kernels(flat):
        flat = flat.float().cpu()
    return flat.numpy(), np.cumsum([t.numel() for t in tensors], dtype=np.int64)


class Flat:
    """One float32 buffer holding copies of several tensors back to back, with a view shaped like
    each: a probe copies the weights (or their gradients) in with one ``torch._foreach_copy_``
    and measures them all with one kernel call each, instead of a concatenation every time."""

    def __init__(self, like: Sequence[torch.Tensor]):
        sizes = [t.numel() for t in like]
        self.buffer = torch.empty(sum(sizes), dtype=torch.float32)
        self.ends = np.cumsum(sizes, dtype=np.int64)
        self.views = [v.view(t.shape) for v, t in zip(self.buffer.split(sizes), like)]
        self.values = self.buffer.numpy()  # the same memory, as the kernels read it


def segment_norms(values: np.ndarray, ends: np.ndarray) -> list[float]:
    """Norm of each segment of a float32 array (segment k ends at ``ends[k]``), in float64."""
    return np.sqrt(_kernels.segment_sums_of_squares(values, ends)).tolist()


def norms(tensors: Sequence[torch.Tensor]) -> list[float]:
    """:func:`norm` of each tensor, in one pass over all of them (float32 tensors; others alone)."""
    if not tensors or any(t.dtype != torch.float32 for t in tensors):
        return [norm(t) for t in tensors]
    return segment_norms(*_concatenated(tensors))


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite, from one float64 sum of squares (a float32
    value squared in float64 cannot overflow: the sum is non-finite only if a value is)."""
    return math.isfinite(sum_of_squares(tensor))


def all_finite(values: Sequence[float]) -> bool:
    """Whether every value is finite (NaN and ±Inf are not)."""
    return all(math.isfinite(v) for v in values)


# -- activations ------------------------------------------------------------------------------

def _float32_cut(limit: float, centre: float, above: bool) -> np.float32:
    """The float32 ``c`` such that, for every float32 ``x``, ``x − centre > limit`` exactly when
    ``x > c`` (``above``), or ``centre − x > limit`` exactly when ``x < c`` (not ``above``).
    ``x − centre`` is exact in float64 for float32 ``x`` and a centre of 0 or 0.5."""
    outward = np.float32(np.inf if above else -np.inf)
    c = np.float32(centre + limit if above else centre - limit)

    def crossed(v: np.float32) -> bool:
        return (float(v) - centre if above else centre - float(v)) > limit

    while crossed(c):  # c itself must not count as saturated ...
        c = np.nextafter(c, -outward)
    while not crossed(np.nextafter(c, outward)):  # ... and the next float32 outwards must
        c = np.nextafter(c, outward)
    return c


#: (centre, lower cut, upper cut): a float32 sigmoid or tanh output x is saturated exactly when
#: x < lower or x > upper, i.e. when |x − centre| > half its range − SATURATION_MARGIN.
_SATURATION = {kind: (centre, _float32_cut(half_range - SATURATION_MARGIN, centre, False),
                       _float32_cut(half_range - SATURATION_MARGIN, centre, True))
               for kind, centre, half_range in ((nn.Sigmoid, 0.5, 0.5), (nn.Tanh, 0.0, 1.0))}


class ActivationSums(NamedTuple):
    """What one forward call of a layer contributes: mergeable over several calls of one step."""

    count: int                      # number of values
    shift: float                    # the sums are taken around this value
    total: float                    # Σ(a − shift)
    squares: float                  # Σ(a − shift)²
    saturated: float | None         # values within SATURATION_MARGIN of an asymptote (sigmoid, tanh)
    unit_max: np.ndarray | None     # per unit (feature, or channel × position), its largest value over the batch

    @property
    def mean(self) -> float:
        """The mean value (NaN if there are none)."""
        return self.shift + self.total / self.count if self.count else math.nan


@functools.lru_cache(maxsize=64)
def _kind(activation_type: type) -> tuple:
    """What is measured for an activation of this type: ("outside", low, high) for sigmoid and
    tanh, ("units",) for ReLU-likes, ("plain",) otherwise (looked up once per type)."""
    for kind, (_, low, high) in _SATURATION.items():
        if issubclass(activation_type, kind):
            return ("outside", low, high)
    return ("units",) if issubclass(activation_type, RECTIFIERS) else ("plain",)


def _kernel_sums(values: np.ndarray, kind: tuple, shift: float) -> ActivationSums:
    """One compiled pass over a float32 array: the moments around ``shift`` and the saturated
    count or the unit maxima."""
    n = values.size
    if kind[0] == "units":
        values = values.reshape(values.shape[0] if values.ndim else 1, -1)
        total, squares, unit_max = _kernels.moments_and_unit_max(values, shift)
        return ActivationSums(n, shift, total, squares, None, unit_max)
    values = values.ravel()
    if kind[0] == "outside":
        total, squares, outside = _kernels.moments_and_outside(values, shift, kind[1], kind[2])
        return ActivationSums(n, shift, total, squares, float(outside), None)
    total, squares = _kernels.moments(values, shift)
    return ActivationSums(n, shift, total, squares, None, None)


def _torch_sums(x: torch.Tensor, activation: nn.Module | None) -> ActivationSums:
    """The same in float64 with torch, around the mean: any dtype or device."""
    values = x.detach().reshape(-1).to(torch.float64)
    mean = values.mean().item() if values.numel() else 0.0
    shift = mean if math.isfinite(mean) else 0.0
    d = values - shift
    saturated = unit_max = None
    if isinstance(activation, SATURATING):
        centre, half_range = (0.5, 0.5) if isinstance(activation, nn.Sigmoid) else (0.0, 1.0)
        saturated = float(((values - centre).abs() > half_range - SATURATION_MARGIN).sum())
    elif isinstance(activation, RECTIFIERS):
        unit_max = x.detach().reshape(x.shape[0] if x.dim() else 1, -1).amax(dim=0).double().cpu().numpy()
    return ActivationSums(values.numel(), shift, d.sum().item(), torch.dot(d, d).item(), saturated, unit_max)


def activation_sums(a: torch.Tensor, activation: nn.Module | None = None, *,
                    shift: float | None = None) -> ActivationSums:
    """The sums behind :func:`activation_statistics` for one output ``a`` of a layer's ``activation``.

    The moments are taken around ``shift`` (a probe passes the layer's mean from its previous
    record; by default the first value of ``a``), and again around the mean they found if that
    shift was far enough off to cost accuracy. ``saturated`` is counted for sigmoid and tanh,
    ``unit_max`` kept for ReLU-like activations (a unit is dead when it is ≤ 0 for the whole
    batch). The arithmetic on the sums waits for :func:`activation_statistics`.
    """
    values = _array(a)
    n = a.numel()
    if values is None or n == 0:
        return _torch_sums(a, activation)
    kind = _kind(type(activation))
    if shift is None or not math.isfinite(shift):
        shift = float(values.flat[0])
    for _ in range(2):
        sums = _kernel_sums(values, kind, shift)
        mean_offset = sums.total / n
        variance = sums.squares / n - mean_offset * mean_offset
        if not math.isfinite(variance):
            break
        if mean_offset * mean_offset <= _FAR_FROM_CENTRE * variance:
            return sums
        shift += mean_offset  # nearly constant values, far from the centre: once more, around their mean
    return _torch_sums(a, activation)


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
        unit_max = np.maximum.reduce([c.unit_max for c in calls])
    return ActivationSums(sum(c.count for c in calls), shift, total, squares, saturated, unit_max)


def activation_statistics(sums: Sequence[ActivationSums | None]) -> np.ndarray:
    """Mean, standard deviation, saturated fraction and dead fraction of each layer's activation.

    ``sums`` has one :func:`activation_sums` (or ``None``: not measured) per layer. Returns a
    float64 array of shape ``(4, len(sums))``, NaN where a layer was not measured or its
    activation has no such notion (a dead unit is one that is ≤ 0 for the whole batch).
    """
    # A handful of numbers per layer: plain float arithmetic beats a dozen numpy operations.
    rows = [_statistics(s) for s in sums]
    return np.array(rows, dtype=np.float64).reshape(len(sums), 4).T


def _statistics(s: ActivationSums | None) -> tuple[float, float, float, float]:
    if s is None or s.count == 0:
        return (math.nan,) * 4
    n = s.count
    mean = s.mean
    variance = max((s.squares - s.total * s.total / n) / max(n - 1, 1), 0.0)  # NaN stays NaN
    saturated = math.nan if s.saturated is None else s.saturated / n
    dead = math.nan if s.unit_max is None or not s.unit_max.size else float((s.unit_max <= 0).mean())
    return mean, math.sqrt(variance), saturated, dead


# -- the weight-gradient histogram ------------------------------------------------------------

def log2_histogram(tensors: Sequence[torch.Tensor], low: int, high: int) -> np.ndarray:
    """Count |g| per power of two, one row per tensor: bin ``k`` holds 2**(low+k) ≤ |g| < 2**(low+k+1).

    The float32 exponent bits are log2|g|, read exactly (no logarithm). Smaller values, zeros
    included, land in the first bin; larger ones, Inf and NaN in the last. Returns int64 counts
    of shape ``(len(tensors), high - low)``.

    >>> log2_histogram([torch.tensor([0.0, 0.3, 1.0, 5.0, float("nan")])], -2, 2).tolist()
    [[2, 0, 1, 2]]
    """
    if not tensors:
        return np.zeros((0, high - low), dtype=np.int64)
    return segment_log2_histogram(*_concatenated(tensors), low, high)


def segment_log2_histogram(values: np.ndarray, ends: np.ndarray, low: int, high: int) -> np.ndarray:
    """:func:`log2_histogram` of each segment of a float32 array (segment k ends at ``ends[k]``)."""
    return _kernels.segment_exponent_counts(values.view(np.int32), ends, low + 127, high + 126)
