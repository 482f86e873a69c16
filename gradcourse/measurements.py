"""The quantities a probe measures, as small functions of tensors (a probe only decides when to call them).

**Plain torch, on the tensor's own device.** Every function here is a handful of torch
operations on the tensor where it lives (CPU, CUDA, MPS): nothing is copied to the host tensor
by tensor. Results stay tensors; a probe stacks every figure of a recorded step into one
float64 vector and reads it with one host transfer (:data:`SUMMARY_FIELDS` says what a vector
of activation figures holds).

**Accuracy.** Every sum is accumulated in float64: a float32 sum of squares drifts over large
tensors and underflows to 0 for the tiny gradients of a vanishing network, and the course
compares these numbers against theory over many orders of magnitude. Every value is within 1e-6
(relative) of the same quantity computed in float64 by torch (``tests/test_probes.py`` checks it
on layers of up to a million values); saturation is counted exactly at its margins, and NaN/Inf
stay visible. Apple's MPS has no float64: there sums accumulate in float32
(:func:`accumulation_dtype`), about 1e-6 relative on a large layer, and the histogram's counts
travel to the host apart, exact.

>>> import torch
>>> a = torch.tensor([[0.01, 0.5], [0.99, 0.5]])
>>> stats, kinds = activation_statistics([activation_sums(a, torch.nn.Sigmoid())])
>>> [round(v, 4) for v in stats[:, 0].tolist()], kinds   # mean, std, saturated fraction, dead fraction
([0.5, 0.4001, 0.5, nan], ['sigmoid'])
>>> float(norm(torch.tensor([3.0, 4.0])))
5.0
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from . import _checks
from .theory import SATURATION_MARGIN  # a saturated unit as theory defines it (one source)

SATURATING = (nn.Sigmoid, nn.Tanh)
#: Activations with a true zero-gradient region, where a unit can die (LeakyReLU, ELU, GELU and
#: SiLU pass a gradient everywhere: their units never die).
RECTIFIERS = (nn.ReLU, nn.ReLU6)
#: Modules recognised as a layer's activation when a model does not name them (``probe_activations``).
ACTIVATIONS = (*SATURATING, *RECTIFIERS, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.PReLU)
#: What a probe can say about an activation: "sigmoid" and "tanh" saturate, "relu" units can
#: die, "other" has neither notion (mean and spread only); "infer" lets the values decide.
KINDS = ("sigmoid", "tanh", "relu", "other", "infer")
#: (centre, half range) of the saturating kinds: saturated when |a − centre| > half range − margin.
_SATURATION = {"sigmoid": (0.5, 0.5), "tanh": (0.0, 1.0)}

#: The float64 figures of one layer's activation, in the order of :func:`summary`.
SUMMARY_FIELDS = ("total", "m2", "low", "high", "sat_sigmoid", "sat_tanh", "dead")


def activation_kind(activation: nn.Module | str | None) -> str:
    """What can be said about an activation module's output: one of :data:`KINDS`.

    >>> activation_kind(nn.ReLU()), activation_kind(nn.LeakyReLU()), activation_kind(None)
    ('relu', 'other', 'other')
    """
    if isinstance(activation, str):
        if activation not in KINDS:
            raise ValueError(f"activation must be a module or one of {KINDS}; got {activation!r}")
        return activation
    if isinstance(activation, nn.Sigmoid):
        return "sigmoid"
    if isinstance(activation, nn.Tanh):
        return "tanh"
    return "relu" if isinstance(activation, RECTIFIERS) else "other"


def accumulation_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype sums are accumulated in on ``device``: float64, except on Apple's MPS, which has
    no float64 (there float32: each figure then carries float32's rounding, about 1e-7 relative per
    value, and sums of squares of values below 1e-19 underflow).

    >>> accumulation_dtype("cpu"), accumulation_dtype("mps")
    (torch.float64, torch.float32)
    """
    # A probe asks a few hundred times per recorded step, nearly always with a torch.device: read its
    # type without building a new device (torch.device(device) costs more than the answer).
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.float32 if kind == "mps" else torch.float64


#: Values per chunk of a large tensor's float64 copy (1 MB: it stays in the CPU's cache).
CHUNK = 1 << 17
#: Tensors up to this many values are measured whole, in one fused operation for many of them
#: (their float64 copies, 128 KB at most, come from the heap without being mapped afresh).
SMALL = 1 << 14


class Scratch:
    """Working memory reused from one measurement to the next: one flat buffer per (device,
    dtype), grown to the largest tensor measured so far.

    A probe measures a few dozen tensors per recorded step; a float64 copy of each, freshly
    allocated, cost more than the arithmetic on it (on the CPU, glibc maps and unmaps every block
    above 128 KB, and the kernel zeroes each page again). The buffers are reused in order: each
    measurement is done with its buffer before the next begins (on a GPU, in stream order).

    >>> scratch = Scratch()
    >>> float(sum_of_squares(torch.tensor([3.0, 4.0]), scratch)), scratch.nbytes
    (25.0, 16)
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        # The views handed out, by (device, dtype, n): a probe asks for the same few sizes at every
        # recorded step (one per layer shape), and slicing the buffer afresh is a torch call each time.
        self._views: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}
        self._offsets: tuple | None = None

    def take(self, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A flat tensor of ``n`` values of ``dtype`` on ``device``, its contents undefined."""
        view = self._views.get((device, dtype, n))
        if view is not None:
            return view
        buffer = self._buffers.get((device, dtype))
        if buffer is None or buffer.numel() < n:
            buffer = self._buffers[(device, dtype)] = torch.empty(n, dtype=dtype, device=device)
            # views of the old buffer would keep it alive: forget them
            self._views = {k: v for k, v in self._views.items() if k[:2] != (device, dtype)}
        if len(self._views) >= 64:  # many sizes (varying sequence lengths): keep the dictionary small
            self._views = {}
        view = self._views[(device, dtype, n)] = buffer[:n]
        return view

    def offsets(self, sizes: tuple[int, ...], rows: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """``256 * rows[i]`` repeated ``sizes[i]`` times (int32): the offset that moves each value's
        exponent into its row's part of a histogram table. Kept for the next step, which has the
        same layers (one set at a time)."""
        key = (sizes, rows, device)
        if self._offsets is None or self._offsets[0] != key:
            table = torch.tensor(rows, dtype=torch.int32, device=device) * 256
            self._offsets = (key, table.repeat_interleave(torch.tensor(sizes, device=device)))
        return self._offsets[1]

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        offsets = 0 if self._offsets is None else self._offsets[1].numel() * 4
        return sum(b.numel() * b.element_size() for b in self._buffers.values()) + offsets


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` detached and flattened, without a torch call for what it already is (a gradient
    needs no detach, a flat tensor no reshape: a probe reads dozens of tensors per recorded step)."""
    if tensor.requires_grad:
        tensor = tensor.detach()
    return tensor if tensor.dim() == 1 else tensor.reshape(-1)


def _float64_copy(tensor: torch.Tensor, scratch: Scratch | None) -> torch.Tensor:
    """``tensor`` flattened and converted to the device's :func:`accumulation_dtype` (float64): a
    fresh copy, or one into ``scratch``."""
    flat = _flat(tensor)
    device = flat.device
    dtype = accumulation_dtype(device)
    if scratch is None:
        return flat.to(dtype, copy=True)
    return scratch.take(flat.numel(), dtype, device).copy_(flat)


# -- norms ------------------------------------------------------------------------------------

def sum_of_squares(tensor: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
    """Σ tensor², accumulated in float64 (a 0-d float64 tensor on ``tensor``'s device): a float64
    copy and a ``torch.dot`` per chunk of :data:`CHUNK` values (twice as fast on the CPU as
    ``vector_norm`` in float64, which allocates a float64 copy of the whole tensor).

    >>> float(sum_of_squares(torch.tensor([3.0, 4.0])))
    25.0
    """
    flat = _flat(tensor)
    if flat.numel() <= CHUNK:
        copy = _float64_copy(flat, scratch)
        return torch.dot(copy, copy)
    scratch = scratch or Scratch()
    total = torch.zeros((), dtype=accumulation_dtype(flat.device), device=flat.device)
    for chunk in flat.split(CHUNK):
        copy = _float64_copy(chunk, scratch)
        total += torch.dot(copy, copy)
    return total


def norm(tensor: torch.Tensor) -> torch.Tensor:
    """‖tensor‖ (Frobenius), accumulated in float64 (a 0-d float64 tensor)."""
    return torch.linalg.vector_norm(tensor.detach(), dtype=accumulation_dtype(tensor.device))


def norms(tensors: Sequence[torch.Tensor], scratch: Scratch | None = None) -> torch.Tensor:
    """:func:`norm` of each tensor, as one float64 vector.

    Tensors of up to :data:`SMALL` values go through one fused ``torch._foreach_norm`` (float64
    before squaring: squares of float32 values neither underflow nor overflow); larger ones
    through :func:`sum_of_squares`, chunk by chunk in ``scratch``, so that no float64 copy of a
    large weight is ever allocated (on the CPU, mapping and zeroing a fresh copy of ResNet-18's
    weights cost ten times the arithmetic). The tensors must share a device.

    >>> norms([torch.tensor([3.0, 4.0]), torch.ones(300_000)]).tolist()
    [5.0, 547.7225575051662]
    """
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    dtype = accumulation_dtype(tensors[0].device)
    small = [i for i, t in enumerate(tensors) if t.numel() <= SMALL]
    # One no_grad block rather than a detach per tensor (a torch call each: a probe reads the norms of
    # every weight three times per recorded step).
    with torch.no_grad():
        if len(small) == len(tensors):
            return torch.stack(torch._foreach_norm(list(tensors), 2, dtype=dtype))
        found = dict(zip(small, torch._foreach_norm([tensors[i] for i in small], 2, dtype=dtype) if small else ()))
    for i, t in enumerate(tensors):
        if i not in found:
            found[i] = sum_of_squares(t, scratch).sqrt()
    return torch.stack([found[i] for i in range(len(tensors))])


def is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of ``tensor`` is finite (one reduction and one read)."""
    return bool(torch.isfinite(tensor.detach()).all())


def all_finite(values: Sequence[float]) -> bool:
    """Whether every value is finite (NaN and ±Inf are not)."""
    return all(math.isfinite(v) for v in values)


# -- activations ------------------------------------------------------------------------------

class ActivationSums(NamedTuple):
    """What one forward call of a layer contributes, as 0-d tensors on the activation's device;
    mergeable over several calls of one step (:func:`merge_activation_sums`). The fields a kind
    has no use for are ``None``."""

    kind: str                            # one of KINDS
    count: int                           # number of values
    total: torch.Tensor                  # Σa, float64
    m2: torch.Tensor                     # Σ(a − mean)², float64
    low: torch.Tensor | None             # smallest value ("infer": the range decides the kind)
    high: torch.Tensor | None            # largest value
    sat_sigmoid: torch.Tensor | None     # values farther than 0.5 − margin from 0.5
    sat_tanh: torch.Tensor | None        # values farther than 1 − margin from 0
    unit_max: torch.Tensor | None        # per unit (feature, or channel × position), its largest value


def activation_sums(a: torch.Tensor, activation: nn.Module | str | None = None,
                    scratch: Scratch | None = None) -> ActivationSums:
    """The sums behind :func:`activation_statistics` for one output ``a`` of a layer's activation.

    ``activation`` is the module that made ``a`` (or a kind of :data:`KINDS`; ``None``: "other").
    The mean and the spread are two passes over a float64 copy (the sum, then the squares around
    the mean it found: no cancellation however far the mean is from 0); saturated values are
    counted exactly at the margins; a unit is dead when it is ≤ 0 for the whole batch. Nothing
    leaves the device; ``scratch`` lends the working copies (a probe passes its own).
    """
    kind = activation_kind(activation)
    a = a.detach()
    flat = _flat(a)  # flattened once for every figure below
    n = a.numel()
    if n:
        values = _float64_copy(flat, scratch)
        total = values.sum()
        centred = values.sub_(total, alpha=1 / n)  # a − mean (alpha: the division folded in)
        m2 = torch.dot(centred, centred)  # one vectorised pass (torch.var_mean's Welford loop is slower)
    else:
        total = m2 = torch.full((), math.nan, dtype=accumulation_dtype(a.device), device=a.device)
    low = high = sat_sigmoid = sat_tanh = unit_max = None
    if kind == "infer" and n:
        low, high = torch.aminmax(flat)
    if kind in ("sigmoid", "infer") and n:
        sat_sigmoid = _saturated(flat, "sigmoid", scratch)
    if kind in ("tanh", "infer") and n:
        sat_tanh = _saturated(flat, "tanh", scratch)
    if kind in ("relu", "infer") and n:
        unit_max = a.reshape(a.shape[0] if a.dim() else 1, -1).amax(dim=0)
    return ActivationSums(kind, n, total, m2, low, high, sat_sigmoid, sat_tanh, unit_max)


#: Below this many values a float32 sum of zeros and ones is exact (every partial sum is an
#: integer under 2**24); above it the count is summed in float64.
_EXACT_FLOAT32_COUNT = 1 << 24


def _saturated(a: torch.Tensor, kind: str, scratch: Scratch | None = None) -> torch.Tensor:
    """How many values are farther than half the range − margin from the centre, counted exactly
    and without a float64 copy: a value is saturated exactly when clamping it into the cut-offs
    of :func:`_cuts` (in its own dtype) changes it."""
    low, high = _cuts(kind, a.dtype)
    flat = _flat(a)
    n, device = flat.numel(), flat.device
    work = torch.empty_like(flat) if scratch is None else scratch.take(n, flat.dtype, device)
    # clamp(a) ≠ a exactly where clamping changed the value (NaN stays NaN, and NaN ≠ NaN:
    # counted); ne_ leaves 1.0 or 0.0 in place, whose sum is the count (a count_nonzero or a
    # sum of booleans is twice as slow on the CPU).
    changed = torch.clamp(flat, low, high, out=work).ne_(flat)
    dtype = accumulation_dtype(device)
    if SMALL < n < _EXACT_FLOAT32_COUNT and flat.dtype == torch.float32:
        return changed.sum().to(dtype)  # a large tensor: float32's vectorised sum, exact here, is faster
    return changed.sum(dtype=dtype)  # a whole number either way: the same count


@functools.lru_cache(maxsize=16)
def _cuts(kind: str, dtype: torch.dtype) -> tuple[float, float]:
    """The values ``low`` and ``high`` of ``dtype`` such that, for every ``x`` of that dtype,
    ``|x − centre| > half range − margin`` (in exact arithmetic) exactly when ``x < low`` or
    ``x > high``: the nearest representable cut-offs, checked one step either side."""
    centre, half_range = _SATURATION[kind]
    limit = half_range - SATURATION_MARGIN

    def outside(v: float) -> bool:  # exact: float64 holds every float32/16/bfloat16 value minus 0.5
        return abs(v - centre) > limit

    def cut(start: float, outward: float) -> float:
        c = torch.tensor(start, dtype=dtype)
        towards, away = torch.tensor(-outward, dtype=dtype), torch.tensor(outward, dtype=dtype)
        while outside(float(c)):  # c itself must not count as saturated ...
            c = torch.nextafter(c, towards)
        while not outside(float(torch.nextafter(c, away))):  # ... and the next value outwards must
            c = torch.nextafter(c, away)
        return float(c)

    return cut(centre - limit, -math.inf), cut(centre + limit, math.inf)


def merge_activation_sums(calls: Sequence[ActivationSums]) -> ActivationSums:
    """One :class:`ActivationSums` for several forward calls of a layer in one step, as if their
    values were one batch (Chan's parallel formula for the spread, in float64)."""
    merged = calls[0]
    for c in calls[1:]:
        n = merged.count + c.count
        if not n:
            continue
        delta = c.total / c.count - merged.total / merged.count if merged.count and c.count else 0.0
        total = merged.total + c.total
        m2 = merged.m2 + c.m2 + delta * delta * (merged.count * c.count / n)
        unit_max = merged.unit_max
        if unit_max is not None and c.unit_max is not None and unit_max.shape == c.unit_max.shape:
            unit_max = torch.maximum(unit_max, c.unit_max)
        merged = ActivationSums(merged.kind, n, total, m2, _combine(torch.minimum, merged.low, c.low),
                                _combine(torch.maximum, merged.high, c.high),
                                _combine(torch.add, merged.sat_sigmoid, c.sat_sigmoid),
                                _combine(torch.add, merged.sat_tanh, c.sat_tanh), unit_max)
    return merged


def _combine(fn, a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else fn(a, b)


def summary(sums: ActivationSums | None) -> tuple[list[torch.Tensor | None], int, int]:
    """The figures of :data:`SUMMARY_FIELDS` as 0-d tensors on the activation's device (``None``
    where a figure does not apply), the number of values and the number of units: what a probe
    stacks with the rest of a step's figures and reads with one transfer."""
    if sums is None:
        return [None] * len(SUMMARY_FIELDS), 0, 0
    dead = (None if sums.unit_max is None
            else (sums.unit_max <= 0).sum(dtype=accumulation_dtype(sums.unit_max.device)))
    figures = [sums.total, sums.m2, sums.low, sums.high, sums.sat_sigmoid, sums.sat_tanh, dead]
    return figures, sums.count, 0 if sums.unit_max is None else sums.unit_max.numel()


def stack_figures(figures: Sequence[torch.Tensor | None], device: torch.device | str) -> torch.Tensor:
    """One vector of 0-d tensors in the device's :func:`accumulation_dtype` (NaN for ``None``): one
    ``torch.stack``."""
    dtype = accumulation_dtype(device)
    nan = torch.full((), math.nan, dtype=dtype, device=device)
    return torch.stack([nan if f is None else f if f.dtype == dtype else f.to(dtype) for f in figures])


def infer_kind(low: float, high: float) -> str:
    """What the range of an activation's values says it is, when no module shows it: exact zeros
    and nothing below → "relu" (a rectifier), inside (0, 1] → "sigmoid", inside [−1, 1] →
    "tanh", ≥ 0 → "relu", else "other" (a GELU, a leaky ReLU, no activation at all).

    >>> infer_kind(0.0, 3.2), infer_kind(0.01, 0.9), infer_kind(-0.9, 0.8), infer_kind(-0.2, 4.0)
    ('relu', 'sigmoid', 'tanh', 'other')
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return "other"
    if low == 0.0 or (low > 0.0 and high > 1.0):
        return "relu"
    if low > 0.0:
        return "sigmoid"
    return "tanh" if low >= -1.0 and high <= 1.0 else "other"


def statistics_from_summaries(rows: np.ndarray, counts: Sequence[int], units: Sequence[int],
                              kinds: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(mean, std, saturated fraction, dead fraction) of each layer, as a ``(4, layers)`` float64
    array, from :func:`summary` figures read to the host (``rows``: one row of
    :data:`SUMMARY_FIELDS` per layer), their numbers of values and of units, and the kind each was
    measured as; and the kind each is read as ("infer" resolved by :func:`infer_kind`). NaN where
    a layer had no values or its kind has no such notion.

    >>> stats, kinds = statistics_from_summaries(np.array([[2.0, 0.5, 0, 0, 1, 0, 0]]), [4], [2], ["sigmoid"])
    >>> stats[:, 0].tolist(), kinds
    ([0.5, 0.408248290463863, 0.25, nan], ['sigmoid'])
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(len(kinds), len(SUMMARY_FIELDS))
    total, m2, low, high, sat_sigmoid, sat_tanh, dead = rows.T
    kinds = [infer_kind(lo, hi) if k == "infer" else k for k, lo, hi in zip(kinds, low.tolist(), high.tolist())]
    kind = np.array(kinds, dtype=object)
    count = np.asarray(counts, dtype=np.float64)
    unit = np.asarray(units, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = count > 0
        mean = np.where(present, total / count, np.nan)
        std = np.where(present, np.sqrt(np.maximum(m2 / np.maximum(count - 1, 1), 0.0)), np.nan)
        saturated = np.where(kind == "sigmoid", sat_sigmoid, np.where(kind == "tanh", sat_tanh, np.nan)) / count
        dead_frac = np.where((kind == "relu") & (unit > 0), dead / unit, np.nan)
    stats = np.stack([mean, std, np.where(present, saturated, np.nan), np.where(present, dead_frac, np.nan)])
    return stats, kinds


def activation_statistics(sums: Sequence[ActivationSums | None]) -> tuple[np.ndarray, list[str]]:
    """Mean, standard deviation, saturated fraction and dead fraction of each layer's activation.

    ``sums`` has one :func:`activation_sums` (or ``None``: not measured) per layer. Returns a
    float64 array of shape ``(4, len(sums))``, NaN where a layer was not measured or its
    activation has no such notion, and the kind each was read as. One host transfer for all.
    """
    device = next((s.total.device for s in sums if s is not None), "cpu")
    if not sums:
        return np.zeros((4, 0)), []
    summaries = [summary(s) for s in sums]
    rows = stack_figures([f for figures, _, _ in summaries for f in figures], device).cpu().numpy()
    rows = rows.reshape(len(sums), len(SUMMARY_FIELDS))
    return statistics_from_summaries(rows, [c for _, c, _ in summaries], [u for _, _, u in summaries],
                                     ["other" if s is None else s.kind for s in sums])


# -- the weight-gradient histogram ------------------------------------------------------------

def log2_histogram(tensors: Sequence[torch.Tensor], low: int, high: int,
                   rows: Sequence[int] | None = None, n_rows: int | None = None,
                   scratch: Scratch | None = None) -> torch.Tensor:
    """Count |g| per power of two: bin ``k`` holds 2**(low+k) ≤ |g| < 2**(low+k+1).

    Tensor ``i`` is counted into row ``rows[i]`` (default: its own row) of an int64 tensor of
    shape ``(n_rows, high - low)`` on the tensors' device. The exponent is read exactly from the
    float32 bit pattern (no logarithm); smaller values, zeros included, land in the first bin;
    larger ones, Inf and NaN in the last. Small tensors are copied together into ``scratch``
    (one pass for many layers); a large one is read chunk by chunk. Each pass counts all 256
    float32 exponents of its rows with one ``bincount``; the table is cut to the bins at the end.

    >>> log2_histogram([torch.tensor([0.0, 0.3, 1.0, 5.0, float("nan")])], -2, 2).tolist()
    [[2, 0, 1, 2]]
    """
    bins = high - low
    rows = list(range(len(tensors))) if rows is None else list(rows)
    n_rows = len(tensors) if n_rows is None else n_rows
    device = tensors[0].device if tensors else torch.device("cpu")
    if any(t.dtype == torch.float64 for t in tensors):  # its own exponent: float32 would round values near 2^k
        counts = torch.zeros(n_rows * bins, dtype=torch.int64, device=device)
        for t, row in zip(tensors, rows):
            counts += torch.bincount(_float64_bins(t.detach().reshape(-1), low, bins) + row * bins,
                                     minlength=n_rows * bins)
        return counts.view(n_rows, bins)
    scratch = scratch or Scratch()
    table = torch.zeros(n_rows * 256, dtype=torch.int64, device=device)  # every exponent of every row
    start = 0
    while start < len(tensors):
        end, size = start + 1, tensors[start].numel()
        while end < len(tensors) and size + tensors[end].numel() <= CHUNK:
            size += tensors[end].numel()
            end += 1
        flats = [_flat(t) for t in tensors[start:end]]
        if len(flats) == 1:  # one tensor, read in chunks
            for chunk in flats[0].split(CHUNK):
                table[rows[start] * 256:(rows[start] + 1) * 256] += torch.bincount(
                    _exponents(chunk, scratch), minlength=256)
        else:  # several small tensors: one copy, each one's row an offset added to its exponents
            values = scratch.take(size, torch.float32, device)
            torch.cat([f if f.dtype == torch.float32 else f.to(torch.float32) for f in flats], out=values)
            offsets = scratch.offsets(tuple(f.numel() for f in flats), tuple(rows[start:end]), device)
            table += torch.bincount(_exponents(values, scratch).add_(offsets), minlength=n_rows * 256)
        start = end
    table = table.view(n_rows, 256)
    # exponent field E = floor(log2|x|) + 127: bin k holds E = 127 + low + k; the ends gather the rest
    first, last = min(max(127 + low, 0), 255), min(max(127 + low + bins - 1, 0), 255)
    counts = torch.zeros((n_rows, bins), dtype=torch.int64, device=device)
    if bins == 1:  # one bin holds everything
        return table.sum(1, keepdim=True)
    counts[:, 0] = table[:, :first + 1].sum(1)
    counts[:, bins - 1] += table[:, last:].sum(1)
    middle = table[:, first + 1:last]
    counts[:, 1:1 + middle.shape[1]] += middle
    return counts


def _exponents(values: torch.Tensor, scratch: Scratch) -> torch.Tensor:
    """Each float32 (or float16/bfloat16, read as float32) value's exponent field
    E = floor(log2|x|) + 127 (0 for zeros and subnormals, 255 for Inf and NaN), as int32 in
    ``scratch``."""
    if values.dtype != torch.float32:
        values = values.to(torch.float32)
    out = scratch.take(values.numel(), torch.int32, values.device)
    return torch.bitwise_right_shift(values.view(torch.int32), 23, out=out).bitwise_and_(0xFF)


def _float64_bins(values: torch.Tensor, low: int, bins: int) -> torch.Tensor:
    """Each float64 value's bin from its own exponent (``torch.frexp``), clamped into the bins."""
    mantissa, exponent = torch.frexp(values)
    exponent = (exponent - 1 - low).clamp_(0, bins - 1).long()
    exponent.masked_fill_(mantissa == 0, 0)
    return exponent.masked_fill_(~torch.isfinite(values), bins - 1)


# --- the loss surface's curvature (lessons 00 and 02: the edge of stability) ---

class Sharpness(NamedTuple):
    """What :func:`top_hessian_eigenvalue` found: the eigenvalue, its unit eigenvector (one tensor
    per parameter, to start the next call from) and the Hessian-vector products it took."""

    value: float
    vector: list[torch.Tensor]
    products: int


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b)))


def top_hessian_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *,
                           iters: int = 100, rtol: float = 1e-3, start: Sequence[torch.Tensor] | None = None,
                           seed: int = 0) -> Sharpness:
    """The *sharpness*: the Hessian eigenvalue of largest magnitude of ``loss_fn()`` with respect to
    ``params``, by power iteration on Hessian-vector products (autograd's double backward: the
    Hessian itself is never formed, so this works on any model).

    Gradient descent at learning rate α multiplies the distance to the minimum along that
    eigenvector by ``1 − α·λ`` each step (lesson 02's one-weight quadratic), so it is stable only
    while ``λ < 2/α``. ``loss_fn`` is called once (its graph is kept for all products);
    ``start`` (e.g. the ``vector`` of the previous call, a few steps of training earlier) makes it
    converge in a few products, otherwise a random vector drawn with ``seed`` starts it. It stops
    when the estimate changes by less than ``rtol`` (relative) or after ``iters`` products. The
    sign is kept: a large negative eigenvalue (a saddle) comes back negative.

    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> round(top_hessian_eigenvalue(lambda: 0.5 * (3 * w[0] ** 2 + 10 * w[1] ** 2), [w]).value, 3)
    10.0
    """
    seed = _checks.seed(seed)
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("params must hold at least one tensor that requires a gradient")
    if start is None:
        generator = torch.Generator().manual_seed(seed)
        vector = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    else:
        vector = [v.detach().to(p.dtype).clone() for v, p in zip(start, params)]
    scale = math.sqrt(_dot(vector, vector))
    if not scale > 0:
        raise ValueError("start must be a non-zero vector")
    vector = [v / scale for v in vector]
    gradients = torch.autograd.grad(loss_fn(), params, create_graph=True)
    value, products = math.nan, 0
    for products in range(1, int(iters) + 1):
        # H·v as the gradient of the scalar g·v: the same products, bitwise (what reaches each g is v
        # times 1.0), without grad_outputs, whose shape check imports torch.fx's symbolic shapes and
        # sympy on a kernel's first call (0.6 s of lesson 00's CPU).
        inner = sum((g * v).sum() for g, v in zip(gradients, vector))
        product = torch.autograd.grad(inner, params, retain_graph=True)
        estimate = _dot(product, vector)                     # Rayleigh quotient vᵀHv, ‖v‖ = 1
        size = math.sqrt(_dot(product, product))
        if not size > 0:                                     # v lies in H's null space
            return Sharpness(0.0, vector, products)
        vector = [p.detach() / size for p in product]
        converged = abs(estimate - value) <= rtol * abs(estimate)
        value = estimate
        if converged:
            break
    return Sharpness(value, vector, products)
