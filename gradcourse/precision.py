"""Mixed precision (lesson 10): what float16 and bfloat16 keep, and a probed mixed-precision loop.

The number formats' limits come from ``torch.finfo`` (nothing here is typed in by hand);
:func:`roundtrip` stores a tensor in a format and reads it back, which is exactly what keeping a
value in that format does (a faithful emulation of storage, not of a format's arithmetic);
:func:`train` runs the lesson's plain PyTorch loop in one of the :data:`FORMATS` under a
:class:`~gradcourse.probes.Probe` that knows the GradScaler.

>>> fp16 = limits("fp16")
>>> fp16.tiny == 2.0 ** -24, fp16.largest
(True, 65504.0)
>>> roundtrip(torch.tensor([3e-8, 1e-8, 7e4]), "fp16").tolist()
[5.960464477539063e-08, 0.0, inf]
>>> lost_fraction(1e-3, "bf16") > 0.9 and lost_fraction(4e-3, "bf16") == 0.0   # updates vanish in bf16 weights
True
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _checks, data, models
from .probes import Probe
from .trace import Trace

#: The formats a run can train in: float32; float16 autocast without and with a GradScaler;
#: bfloat16 autocast (float32 master weights); and the whole model in bfloat16 (weights and updates).
FORMATS = ("fp32", "fp16", "fp16+scaler", "bf16", "bf16 weights")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Limits:
    """A float format's range and precision: ``tiny`` the smallest positive value (a subnormal),
    ``smallest_normal``, ``largest``, ``eps`` the spacing of values just above 1 (2^-mantissa bits)."""

    name: str
    tiny: float
    smallest_normal: float
    largest: float
    eps: float

    @property
    def mantissa_bits(self) -> int:
        """Bits of precision, the implicit leading 1 included (float16 11, bfloat16 8, float32 24)."""
        return 1 - round(math.log2(self.eps))


def _dtype(fmt) -> torch.dtype:
    if isinstance(fmt, torch.dtype):
        if fmt not in DTYPES.values():
            raise ValueError(f"fmt must be one of {', '.join(DTYPES)} (or their torch dtypes); got {fmt}")
        return fmt
    return DTYPES[_checks.choice("fmt", fmt, tuple(DTYPES))]


def limits(fmt) -> Limits:
    """The limits of ``"fp32"``, ``"fp16"`` or ``"bf16"`` (or a torch dtype), from ``torch.finfo``.

    >>> limits("bf16").mantissa_bits, limits("fp16").mantissa_bits
    (8, 11)
    """
    dtype = _dtype(fmt)
    info = torch.finfo(dtype)
    name = next(k for k, v in DTYPES.items() if v == dtype)
    return Limits(name, float(info.smallest_normal * info.eps), float(info.smallest_normal), float(info.max),
                  float(info.eps))


def roundtrip(x: torch.Tensor, fmt) -> torch.Tensor:
    """``x`` stored in ``fmt`` and read back in ``x``'s own dtype: what the format keeps of it."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor; got {type(x).__name__}")
    return x.to(_dtype(fmt)).to(x.dtype)


def lost_fraction(ratio: float, fmt="bf16", *, n: int = 100_000, seed: int = 0) -> float:
    """The share of updates ``w ← w + ratio·|w|`` that leave a weight stored in ``fmt`` unchanged
    (``w + Δw == w`` after rounding), over ``n`` weights drawn from N(0, 1) and stored in ``fmt``.
    The sum is rounded to ``fmt`` as an optimizer step on weights of that format does."""
    ratio = _checks.number("ratio", ratio, low=0.0, low_open=True)
    n = _checks.integer("n", n, low=1)
    dtype = _dtype(fmt)
    gen = torch.Generator().manual_seed(_checks.seed(seed))
    w = torch.randn(n, generator=gen).to(dtype)
    w = w[w != 0]
    step = (ratio * w.double().abs()).to(dtype)
    return float(((w + step) == w).double().mean())


def signal_per_entry(run: MixedRun) -> np.ndarray:
    """Per layer of ``run.trace``, the root mean square of one entry of the signal ∂L/∂z arriving at
    the layer's output at the first recorded step: ``output_grad_norm / √(batch × out_features)``.
    These per-example, per-unit values are what float16 must hold during the backward pass; the
    weight gradient sums ``batch`` of them, so it is larger than they are."""
    norms = run.trace.get("output_grad_norm")[0]
    layers = dict(run.model.named_modules())
    widths = np.array([layers[name].out_features for name in run.trace.layers], dtype=float)
    return norms / np.sqrt(run.batch * widths)


def smallest_scale(depth: int, *, tol: float = 0.01, seed: int = 0, width: int = 64) -> float:
    """The smallest power-of-two loss scale with which one float16 step (autocast, a GradScaler
    held at that scale) gives every layer's weight-gradient norm within ``tol`` of float32's, on the
    lesson's sigmoid MLP of ``depth`` layers, measured (powers 2^0 … 2^30 tried in turn)."""
    seed = _checks.seed(seed)
    tol = _checks.number("tol", tol, low=0.0, low_open=True)
    # Whole numbers before the cache (hashable, one key for 8 and 8.0); models.mlp checks their upper bounds.
    depth, width = _checks.integer("depth", depth, low=1), _checks.integer("width", width, low=1)
    return _smallest_scale(depth, tol, seed, width)


@functools.lru_cache(maxsize=16, typed=True)  # lesson 10's exercise check and its solution measure the same
def _smallest_scale(depth: int, tol: float, seed: int, width: int) -> float:
    reference = train("fp32", depth=depth, width=width, steps=1, seed=seed).trace.get("grad_norm")[0]
    for k in range(31):
        run = train("fp16+scaler", depth=depth, width=width, steps=1, init_scale=2.0 ** k, seed=seed)
        if run.skipped:
            break
        if np.all(np.abs(run.trace.get("grad_norm")[0] / reference - 1) <= tol):
            return float(2 ** k)
    raise ValueError(f"depth: no loss scale up to the first overflow keeps every layer within {tol:g} of float32")


@dataclass
class MixedRun:
    """What :func:`train` leaves: the losses, the GradScaler's scale at each step (NaN without
    one) and the steps it skipped, the probe's trace, and the trained model."""

    fmt: str
    losses: np.ndarray
    scales: np.ndarray
    skipped: list[int]
    trace: Trace
    model: torch.nn.Module
    diverged_at: int | None = None
    batch: int = 512
    #: per step, the share of weight entries with a nonzero gradient that the update left unchanged
    lost: np.ndarray = field(default_factory=lambda: np.zeros(0))


def build(depth: int = 5, *, width: int = 64, activation: str = "sigmoid", init: str = "default",
          weight_std: float | None = None, seed: int = 0) -> torch.nn.Module:
    """The lesson's network: an MLP on the spirals (sigmoid, PyTorch's default init)."""
    seed = _checks.seed(seed)
    return models.mlp(depth, width, activation=activation, init=init, weight_std=weight_std, seed=seed)


def train(fmt: str = "fp16", *, depth: int = 5, width: int = 64, steps: int = 10, lr: float = 0.1,
          init_scale: float = 2.0 ** 16, growth_interval: int = 2000, activation: str = "sigmoid",
          init: str = "default", weight_std: float | None = None, n: int = 512, seed: int = 0,
          model: torch.nn.Module | None = None) -> MixedRun:
    """Train the lesson's network with plain SGD in ``fmt`` (one of :data:`FORMATS`) on ``n``
    spiral points (the whole set each step), probed every step; stop at a non-finite loss.

    ``init_scale`` and ``growth_interval`` are the GradScaler's (``"fp16+scaler"`` only). In
    ``"bf16 weights"`` the model and its inputs are bfloat16 and SGD updates the bfloat16 weights.
    ``model`` trains a model of your own instead of building one (it is changed in place).

    >>> run = train("fp16+scaler", depth=3, steps=2)
    >>> run.scales.tolist(), run.skipped, run.trace.precision
    ([65536.0, 65536.0], [], 'float16')
    """
    seed = _checks.seed(seed)
    fmt = _checks.choice("fmt", fmt, FORMATS)
    steps = _checks.integer("steps", steps, low=1)
    lr = _checks.number("lr", lr, low=0.0, low_open=True)
    init_scale = _checks.number("init_scale", init_scale, low=1.0, high=2.0 ** 64)
    growth_interval = _checks.integer("growth_interval", growth_interval, low=1)
    ds = data.cached_spirals(_checks.integer("n", n, low=2), seed)
    net = model if model is not None else build(depth, width=width, activation=activation, init=init,
                                                weight_std=weight_std, seed=seed)
    x = ds.x
    if fmt == "bf16 weights":
        net = net.to(torch.bfloat16)
        x = x.to(torch.bfloat16)
    autocast = {"fp16": torch.float16, "fp16+scaler": torch.float16, "bf16": torch.bfloat16}.get(fmt)
    scaler = (torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
              if fmt == "fp16+scaler" else None)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    losses, scales, lost, diverged = [], [], [], None
    with Probe(net, optimizer=opt, scaler=scaler) as probe:
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
                loss = torch.nn.functional.cross_entropy(net(x).float(), ds.y)
            losses.append(loss.item())
            scales.append(scaler.get_scale() if scaler is not None else math.nan)
            if not math.isfinite(losses[-1]) and scaler is None:
                diverged = step
                break
            (scaler.scale(loss) if scaler is not None else loss).backward()
            before = [w.detach().clone() for w in weights]
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            lost.append(_unchanged(weights, before))
    return MixedRun(fmt, np.array(losses), np.array(scales), list(probe.trace.skipped_steps), probe.trace, net,
                    diverged, len(x), np.array(lost))


def _unchanged(weights: list[torch.Tensor], before: list[torch.Tensor]) -> float:
    """The share of entries whose gradient was nonzero and finite but whose value did not change."""
    moved = total = 0
    for w, b in zip(weights, before):
        if w.grad is None:
            continue
        pushed = (w.grad != 0) & torch.isfinite(w.grad)
        total += int(pushed.sum())
        moved += int((pushed & (w.detach() != b)).sum())
    return 1.0 - moved / total if total else math.nan


def zero_share(trace: Trace, step: int = 0) -> np.ndarray:
    """Per layer, the share of weight-gradient entries in the histogram's first bin (exactly 0 under
    float16: nothing smaller survives) at recorded row ``step``."""
    hist = np.asarray(trace.get("grad_hist")[step], dtype=float)
    return hist[:, 0] / hist.sum(axis=1)


def first_overflow(model: torch.nn.Module, x: torch.Tensor, fmt="fp16") -> tuple[str | None, float]:
    """The first hidden layer whose output, computed in float32, exceeds ``fmt``'s largest value
    (the layer where a forward pass in that format first holds Inf), and the largest |output| seen.
    An independent reading of what the probe reports as ``trace.nonfinite``."""
    largest = limits(fmt).largest
    seen, first = 0.0, None
    h = x.float()
    with torch.no_grad():
        for k, layer in enumerate(model.hidden_layers(), 1):
            z = layer(h)
            top = float(z.abs().max())
            seen = max(seen, top)
            if first is None and top > largest:
                first = f"layer{k}"
            h = getattr(model, f"act{k}")(z)
    return first, seen
