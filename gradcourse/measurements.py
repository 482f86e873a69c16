"""The quantities a probe measures, as small functions of tensors (a probe only decides when to call them).

**Plain torch, on the tensor's own device.** Every function here is a handful of torch
operations on the tensor where it lives (CPU, CUDA, MPS): nothing is copied to the host tensor
by tensor. Results stay tensors; a probe stacks every figure of a recorded step into one
float64 vector and reads it with one host transfer (:func:`summary_fields` says what a vector
of activation figures holds).

**Accuracy.** Every sum is accumulated in float64: a float32 sum of squares drifts over large
tensors and underflows to 0 for the tiny gradients of a vanishing network, and the course
compares these numbers against theory over many orders of magnitude. Every value is within 1e-6
(relative) of the same quantity computed in float64 by torch (``tests/test_probes.py`` checks it
on layers of up to a million values); saturation is counted exactly at its margins, and NaN/Inf
stay visible.

>>> import torch
>>> a = torch.tensor([[0.01, 0.5], [0.99, 0.5]])
>>> stats, kinds = activation_statistics([activation_sums(a, torch.nn.Sigmoid())])
>>> [round(v, 4) for v in stats[:, 0].tolist()], kinds   # mean, std, saturated fraction, dead fraction
([0.5, 0.4001, 0.5, nan], ['sigmoid'])
>>> float(norm(torch.tensor([3.0, 4.0])))
5.0
"""

from __future__ import annotations

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
SUMMARY_FIELDS = ("mean", "m2", "low", "high", "sat_sigmoid", "sat_tanh", "dead")


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


# -- norms ------------------------------------------------------------------------------------

def sum_of_squares(tensor: torch.Tensor) -> torch.Tensor:
    """Σ tensor², accumulated in float64 (a 0-d float64 tensor on ``tensor``'s device)."""
    return torch.linalg.vector_norm(tensor.detach(), dtype=torch.float64).square()


def norm(tensor: torch.Tensor) -> torch.Tensor:
    """‖tensor‖ (Frobenius), accumulated in float64 (a 0-d float64 tensor)."""
    return torch.linalg.vector_norm(tensor.detach(), dtype=torch.float64)


def norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`norm` of each tensor, as one float64 vector: one fused ``torch._foreach_norm``.

    The tensors must share a device (a probe groups them by device).
    """
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    # float64 before squaring: squares of float32 values neither underflow nor overflow.
    return torch.stack(torch._foreach_norm([t.detach() for t in tensors], 2, dtype=torch.float64))


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
    mean: torch.Tensor                   # float64
    m2: torch.Tensor                     # Σ(a − mean)², float64
    low: torch.Tensor | None             # smallest value ("infer": the range decides the kind)
    high: torch.Tensor | None            # largest value
    sat_sigmoid: torch.Tensor | None     # values farther than 0.5 − margin from 0.5
    sat_tanh: torch.Tensor | None        # values farther than 1 − margin from 0
    unit_max: torch.Tensor | None        # per unit (feature, or channel × position), its largest value


def activation_sums(a: torch.Tensor, activation: nn.Module | str | None = None) -> ActivationSums:
    """The sums behind :func:`activation_statistics` for one output ``a`` of a layer's activation.

    ``activation`` is the module that made ``a`` (or a kind of :data:`KINDS`; ``None``: "other").
    The mean and the spread come from a float64 copy (``torch.var_mean``: no cancellation
    however far the mean is from 0); saturated values are counted exactly at the margins (a
    float32, float16 or bfloat16 value minus 0.5 is exact in float64); a unit is dead when it is
    ≤ 0 for the whole batch. Nothing leaves the device.
    """
    kind = activation_kind(activation)
    a = a.detach()
    values = a.reshape(-1).to(torch.float64)
    if values.numel():
        variance, mean = torch.var_mean(values, correction=0)
    else:
        variance = mean = values.new_full((), math.nan)
    m2 = variance * values.numel()
    low = high = sat_sigmoid = sat_tanh = unit_max = None
    if kind == "infer" and values.numel():
        low, high = torch.aminmax(values)
    if kind in ("sigmoid", "infer"):
        sat_sigmoid = _saturated(values, "sigmoid")
    if kind in ("tanh", "infer"):
        sat_tanh = _saturated(values, "tanh")
    if kind in ("relu", "infer") and a.numel():
        unit_max = a.reshape(a.shape[0] if a.dim() else 1, -1).amax(dim=0)
    return ActivationSums(kind, values.numel(), mean, m2, low, high, sat_sigmoid, sat_tanh, unit_max)


def _saturated(values: torch.Tensor, kind: str) -> torch.Tensor:
    centre, half_range = _SATURATION[kind]
    return ((values - centre).abs() > half_range - SATURATION_MARGIN).sum(dtype=torch.float64)


def merge_activation_sums(calls: Sequence[ActivationSums]) -> ActivationSums:
    """One :class:`ActivationSums` for several forward calls of a layer in one step, as if their
    values were one batch (Chan's parallel formula for the spread, in float64)."""
    merged = calls[0]
    for c in calls[1:]:
        n = merged.count + c.count
        if not n:
            continue
        delta = c.mean - merged.mean
        mean = merged.mean + delta * (c.count / n)
        m2 = merged.m2 + c.m2 + delta.square() * (merged.count * c.count / n)
        unit_max = merged.unit_max
        if unit_max is not None and c.unit_max is not None and unit_max.shape == c.unit_max.shape:
            unit_max = torch.maximum(unit_max, c.unit_max)
        merged = ActivationSums(merged.kind, n, mean, m2, _combine(torch.minimum, merged.low, c.low),
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
    dead = None if sums.unit_max is None else (sums.unit_max <= 0).sum(dtype=torch.float64)
    figures = [sums.mean, sums.m2, sums.low, sums.high, sums.sat_sigmoid, sums.sat_tanh, dead]
    return figures, sums.count, 0 if sums.unit_max is None else sums.unit_max.numel()


def stack_figures(figures: Sequence[torch.Tensor | None], device: torch.device | str) -> torch.Tensor:
    """One float64 vector of 0-d tensors (NaN for ``None``): one ``torch.stack``."""
    nan = torch.full((), math.nan, dtype=torch.float64, device=device)
    return torch.stack([nan if f is None else f.to(torch.float64) for f in figures])


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


def statistics_from_summary(row: Sequence[float], count: int, units: int,
                            kind: str) -> tuple[tuple[float, float, float, float], str]:
    """(mean, std, saturated fraction, dead fraction) from one :func:`summary` read to the host
    (its figures, number of values and of units), and the kind they were read as ("infer" is
    resolved by :func:`infer_kind`)."""
    mean, m2, low, high, sat_sigmoid, sat_tanh, dead = (float(v) for v in row)
    if not count:
        return (math.nan,) * 4, kind
    if kind == "infer":
        kind = infer_kind(low, high)
    std = math.sqrt(max(m2 / max(count - 1, 1), 0.0)) if not math.isnan(m2) else math.nan
    saturated = {"sigmoid": sat_sigmoid, "tanh": sat_tanh}.get(kind, math.nan) / count
    dead_frac = dead / units if kind == "relu" and units else math.nan
    return (mean, std, saturated, dead_frac), kind


def activation_statistics(sums: Sequence[ActivationSums | None]) -> tuple[np.ndarray, list[str]]:
    """Mean, standard deviation, saturated fraction and dead fraction of each layer's activation.

    ``sums`` has one :func:`activation_sums` (or ``None``: not measured) per layer. Returns a
    float64 array of shape ``(4, len(sums))``, NaN where a layer was not measured or its
    activation has no such notion, and the kind each was read as. One host transfer for all.
    """
    device = next((s.mean.device for s in sums if s is not None), "cpu")
    if not sums:
        return np.zeros((4, 0)), []
    summaries = [summary(s) for s in sums]
    rows = stack_figures([f for figures, _, _ in summaries for f in figures], device).cpu().numpy()
    rows = rows.reshape(len(sums), len(SUMMARY_FIELDS))
    read = [statistics_from_summary(row, count, units, "other" if s is None else s.kind)
            for row, (_, count, units), s in zip(rows, summaries, sums)]
    return np.array([r[0] for r in read], dtype=np.float64).reshape(len(sums), 4).T, [r[1] for r in read]


# -- the weight-gradient histogram ------------------------------------------------------------

#: Tensors are histogrammed in groups of about this many values: one concatenation and one
#: bincount per group, with temporaries that stay small beside a large model.
_CHUNK = 1 << 21


def log2_histogram(tensors: Sequence[torch.Tensor], low: int, high: int,
                   rows: Sequence[int] | None = None, n_rows: int | None = None) -> torch.Tensor:
    """Count |g| per power of two: bin ``k`` holds 2**(low+k) ≤ |g| < 2**(low+k+1).

    Tensor ``i`` is counted into row ``rows[i]`` (default: its own row) of an int64 tensor of
    shape ``(n_rows, high - low)`` on the tensors' device. The exponent is read exactly from the
    float32 bit pattern (no logarithm); smaller values, zeros included, land in the first bin;
    larger ones, Inf and NaN in the last. Each group of tensors is one concatenation and one
    ``bincount``, each tensor's row an offset added to its bins.

    >>> log2_histogram([torch.tensor([0.0, 0.3, 1.0, 5.0, float("nan")])], -2, 2).tolist()
    [[2, 0, 1, 2]]
    """
    bins = high - low
    rows = list(range(len(tensors))) if rows is None else list(rows)
    n_rows = len(tensors) if n_rows is None else n_rows
    device = tensors[0].device if tensors else "cpu"
    counts = torch.zeros(n_rows * bins, dtype=torch.int64, device=device)
    start = 0
    while start < len(tensors):
        end, size = start + 1, tensors[start].numel()
        while end < len(tensors) and size + tensors[end].numel() <= _CHUNK:
            size += tensors[end].numel()
            end += 1
        group = [t.detach().reshape(-1) for t in tensors[start:end]]
        exponents = _bins(torch.cat(group) if len(group) > 1 else group[0], low, bins)
        torch._foreach_add_(list(exponents.split([g.numel() for g in group])),
                            [rows[i] * bins for i in range(start, end)])
        counts += torch.bincount(exponents, minlength=n_rows * bins)
        start = end
    return counts.view(n_rows, bins)


def _bins(values: torch.Tensor, low: int, bins: int) -> torch.Tensor:
    """Each value's bin: its float32 exponent field E = floor(log2|x|) + 127 (0 for zeros and
    subnormals, 255 for Inf and NaN), moved to start at ``low`` and clamped into the bins."""
    if values.dtype == torch.float64:  # its own exponent: float32 would round values near 2^k
        mantissa, exponent = torch.frexp(values)
        exponent = (exponent - 1 - low).clamp_(0, bins - 1)
        exponent.masked_fill_(mantissa == 0, 0)
        return exponent.masked_fill_(~torch.isfinite(values), bins - 1)
    bits = values.to(torch.float32).view(torch.int32)
    return ((bits >> 23) & 0xFF).sub_(127 + low).clamp_(0, bins - 1)
