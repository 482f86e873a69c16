"""Closed-form predictions that the plots overlay on measurements, in lesson order (00, 01, …).

Each function's docstring derives its formula in a few lines; the tests compare each one with
a measurement. Every Gaussian average E[f(h)], h ~ N(0, q), goes through one routine,
:func:`gaussian_mean`, accurate for any q the course uses (from 0 to the 10⁵ of inputs ×100).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import _checks
from .models import INITS

#: An activation within this distance of an asymptote (sigmoid: 0 or 1; tanh: ±1) counts as
#: saturated: its slope there is at most 6 % of its largest (tanh: 1 − 0.97² = 0.059) or 12 %
#: (the sigmoid: 0.97·0.03 / 0.25 = 0.116), so it passes little gradient back. One source: the
#: definition lives here with the predictions made from it (:func:`tanh_saturated_fraction`), and
#: the probe measures by it (:mod:`gradcourse.measurements` imports it from here).
SATURATION_MARGIN = 0.03

# --- shared: the Gaussian expectation and erf every section uses ---

# E[f(h)] for h = √q·u, u ~ N(0, 1), by 8-node Gauss–Legendre panels over u ∈ [−12, 12] (the
# mass beyond is below 1e-32). A single Gauss–Hermite rule fails once q is large: its nodes in h
# are spaced ~0.3·√q apart and step over the narrow bump of tanh'(h)² or σ'(h)², so it returns
# too much, or 0. Here the panel edges are the union of two grids: one on the Gaussian's scale
# (u = 0, 1, 2, 3, 4, 6, 8, 12) and one on the activations' scale (h = 1, …, 6, then wider up to
# 20, beyond which tanh and the sigmoid are flat to 1e-9), so both the bell and the activation's
# bend are resolved for any q (relative error ~1e-10 for every activation of the course and its
# slope, q from 0 to 1e8, against a 24-node rule on quarter-unit panels). The edge at 0 keeps
# ReLU's kink out of every panel.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_U_EDGES = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
_H_EDGES = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0])
_U_MAX = 12.0


def _gaussian_nodes(q: np.ndarray, *, even: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Nodes h (shape ``q.shape + (n,)``) and weights w with Σ w f(h) ≈ E[f(h)], h ~ N(0, q).
    ``even=True`` returns the half h ≥ 0 only, for an even f (half the work)."""
    s = np.sqrt(q)[..., None]
    h_edges_in_u = np.minimum(_H_EDGES / np.maximum(s, 1e-300), _U_MAX)   # s = 0: all at u = 12
    edges = np.sort(np.concatenate([np.broadcast_to(_U_EDGES, q.shape + _U_EDGES.shape), h_edges_in_u],
                                   axis=-1), axis=-1)
    half = (edges[..., 1:] - edges[..., :-1]) / 2              # zero-width panels add nothing
    mid = (edges[..., 1:] + edges[..., :-1]) / 2
    u = (mid[..., None] + half[..., None] * _GL_NODES).reshape(q.shape + (-1,))
    w = (half[..., None] * _GL_WEIGHTS).reshape(q.shape + (-1,)) * np.exp(-0.5 * u * u)
    if not even:
        u, w = np.concatenate([u, -u], axis=-1), np.concatenate([w, w], axis=-1)
    return s * u, w / w.sum(axis=-1, keepdims=True)


def _nonnegative_q(q) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    if not np.all(np.isfinite(q)) or np.any(q < 0):
        raise ValueError(f"q must be finite and non-negative (a variance); got {q!r}")
    return q


def gaussian_mean(function, q: float | np.ndarray) -> float | np.ndarray:
    """E[f(h)] for h ~ N(0, q), for a number q or an array of them (q = 0 gives f(0)).

    ``function`` takes a numpy array of h values and returns f at each. The quadrature is
    accurate to about 1e-10 for every activation of :func:`gradcourse.models.mlp` and its slope
    squared, at any q: it places nodes both on the Gaussian's scale √q and on the activation's
    own scale (see the comment above), so a narrow bump such as tanh'(h)² at q = 10⁴ is not
    stepped over.

    >>> round(gaussian_mean(lambda h: h**2, 2.0), 12)
    2.0
    >>> f"{gaussian_mean(lambda h: activation_slope('tanh', h) ** 2, 1e4):.4e}"  # ≈ (4/3)/√(2π·10⁴)
    '5.3191e-03'
    """
    q = _nonnegative_q(q)
    h, w = _gaussian_nodes(q)
    out = np.sum(np.asarray(function(h), dtype=float) * w, axis=-1)
    return float(out) if out.ndim == 0 else out


def _erf(x) -> np.ndarray:
    """The error function, elementwise, in float64 (torch's, so that no loop runs in Python)."""
    return torch.special.erf(torch.as_tensor(np.asarray(x, dtype=float))).numpy()


def _erfc(x) -> np.ndarray:
    return torch.special.erfc(torch.as_tensor(np.asarray(x, dtype=float))).numpy()


# --- lessons 00 and 01 ---
# The scalar chain (lesson 00) and the mean-field signal propagation through an MLP (lesson 01).

#: φ'(0), the slope of each activation at the origin (ReLU's is taken as 1, its right derivative;
#: PyTorch uses 0 exactly at 0, which never matters for real-valued pre-activations).
SLOPE_AT_ZERO = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0, "leaky_relu": 1.0, "gelu": 0.5,
                 "linear": 1.0}
_LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default negative slope


def activation_value(activation: str, z) -> np.ndarray:
    """φ(z) for the activations of :func:`gradcourse.models.mlp`, in numpy.

    >>> activation_value("sigmoid", 0.0), activation_value("relu", [-1.0, 2.0]).tolist()
    (0.5, [0.0, 2.0])
    """
    _checks.choice("activation", activation, SLOPE_AT_ZERO)
    z = np.asarray(z, dtype=float)
    if activation == "sigmoid":
        out = 0.5 * (1.0 + np.tanh(z / 2.0))  # = 1/(1+e^{-z}), without overflow
    elif activation == "tanh":
        out = np.tanh(z)
    elif activation == "relu":
        out = np.maximum(z, 0.0)
    elif activation == "leaky_relu":
        out = np.where(z > 0, z, _LEAKY_SLOPE * z)
    elif activation == "gelu":
        out = z * 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
    else:
        out = z
    out = np.asarray(out, dtype=float)
    return float(out) if out.ndim == 0 else out


def activation_slope(activation: str, z) -> np.ndarray:
    """φ'(z): σ'(z) = σ(z)(1 − σ(z)) ≤ 1/4 for the sigmoid, tanh'(z) = 1 − tanh²(z) ≤ 1, and
    ReLU'(z) = 1 for z > 0 and 0 for z < 0 (it either passes the gradient on unchanged or blocks it).

    >>> activation_slope("sigmoid", 0.0), activation_slope("tanh", 0.0)
    (0.25, 1.0)
    >>> activation_slope("relu", [-2.0, 3.0]).tolist()
    [0.0, 1.0]
    """
    _checks.choice("activation", activation, SLOPE_AT_ZERO)
    z = np.asarray(z, dtype=float)
    if activation == "sigmoid":
        s = activation_value("sigmoid", z)
        out = s * (1.0 - s)
    elif activation == "tanh":
        out = 1.0 - np.tanh(z) ** 2
    elif activation == "relu":
        out = np.where(z > 0, 1.0, np.where(z < 0, 0.0, 1.0))
    elif activation == "leaky_relu":
        out = np.where(z >= 0, 1.0, _LEAKY_SLOPE)
    elif activation == "gelu":
        out = 0.5 * (1.0 + _erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    else:
        out = np.ones_like(z)
    out = np.asarray(out, dtype=float)
    return float(out) if out.ndim == 0 else out


def chain_factor(w: float, activation: str = "sigmoid", z: float = 0.0) -> float:
    """|w·φ'(z)|: how much one link of a scalar chain multiplies the gradient passing back through it.

    A scalar chain computes z_k = w·h_{k-1} + b, h_k = φ(z_k). By the chain rule
    ∂h_k/∂h_{k-1} = φ'(z_k)·w, so every link multiplies the backward gradient by w·φ'(z_k).
    The gradient is kept (neither vanishes nor explodes) exactly when this factor is 1.

    >>> chain_factor(2.0), chain_factor(4.0), chain_factor(0.5, "tanh")
    (0.5, 1.0, 0.5)
    """
    w = _checks.number("w", w)
    z = _checks.number("z", z)
    return abs(w * float(activation_slope(activation, z)))


def scalar_chain(w: float, depth: int, activation: str = "sigmoid", z: float = 0.0) -> np.ndarray:
    """|∂h_L/∂h_k| for k = 0, 1, …, L in a scalar chain of ``depth`` = L links that all sit at
    pre-activation ``z``: the product of the L − k factors between h_k and the output,

        |∂h_L/∂h_k| = ∏_{j=k+1}^{L} |w·φ'(z_j)| = |w·φ'(z)|^(L−k).

    Element 0 is the gradient reaching the input, the last element is 1 (the output itself).
    With the sigmoid at z = 0 the factor is |w|/4: the chain vanishes for |w| < 4 and explodes
    for |w| > 4. Since σ'(z) ≤ σ'(0), z = 0 is the sigmoid chain's best case.

    >>> scalar_chain(2.0, 3).tolist()     # (2/4)^3, (2/4)^2, 2/4, 1
    [0.125, 0.25, 0.5, 1.0]
    >>> float(scalar_chain(8.0, 10)[0])   # (8/4)^10
    1024.0
    """
    depth = _checks.integer("depth", depth, low=1, high=10_000)
    factor = chain_factor(w, activation, z)
    return factor ** np.arange(depth, -1, -1, dtype=float)


def critical_weight(activation: str = "sigmoid") -> float:
    """The |w| at which a scalar chain sitting at z = 0 neither vanishes nor explodes: 1/φ'(0).

    |w·φ'(0)| = 1 gives |w| = 4 for the sigmoid (σ'(0) = 1/4) and |w| = 1 for tanh and linear.

    >>> critical_weight("sigmoid"), critical_weight("tanh")
    (4.0, 1.0)
    """
    _checks.choice("activation", activation, SLOPE_AT_ZERO)
    return 1.0 / SLOPE_AT_ZERO[activation]


def weight_variance(init: str, fan_in: int, fan_out: int, weight_std: float | None = None) -> float:
    """Var(w) of one weight under each initialisation of :func:`gradcourse.models.mlp`.

    PyTorch's default draws w ~ U(−1/√fan_in, 1/√fan_in), whose variance is (2a)²/12 = 1/(3·fan_in);
    Xavier (Glorot) normal: 2/(fan_in + fan_out); Kaiming (He) normal: 2/fan_in;
    ``"normal"``: weight_std²/fan_in.

    >>> weight_variance("default", 64, 64) * 3 * 64, weight_variance("kaiming", 64, 64) * 64
    (1.0, 2.0)
    """
    _checks.choice("init", init, INITS)
    fan_in = _checks.integer("fan_in", fan_in, low=1)
    fan_out = _checks.integer("fan_out", fan_out, low=1)
    if init == "default":
        return 1.0 / (3.0 * fan_in)
    if init == "xavier":
        return 2.0 / (fan_in + fan_out)
    if init == "kaiming":
        return 2.0 / fan_in
    if weight_std is None:
        raise ValueError("weight_std is required when init='normal' (a positive number)")
    weight_std = _checks.number("weight_std", weight_std, low=0.0, low_open=True)
    return weight_std**2 / fan_in


def bias_variance(init: str, fan_in: int) -> float:
    """Var(b): PyTorch's default bias is U(−1/√fan_in, 1/√fan_in), variance 1/(3·fan_in); the
    other schemes of :func:`gradcourse.models.mlp` start every bias at 0.

    >>> bias_variance("default", 3), bias_variance("kaiming", 3)
    (0.1111111111111111, 0.0)
    """
    _checks.choice("init", init, INITS)
    fan_in = _checks.integer("fan_in", fan_in, low=1)
    return 1.0 / (3.0 * fan_in) if init == "default" else 0.0


def small_signal_factor(activation: str, init: str, width: int, weight_std: float | None = None) -> float:
    """The quick estimate of how much each hidden layer of a wide MLP multiplies the
    backpropagated signal ‖∂L/∂z‖, when the pre-activations are small (z ≈ 0):

        factor ≈ φ'(0)·√(width·Var(w)).

    Derivation: backpropagation through layer k+1 gives δ_k = φ'(z_k) ⊙ (W_{k+1}ᵀ δ_{k+1}).
    Each of the ``width`` entries of W_{k+1}ᵀδ_{k+1} is a sum Σ_i w_ij δ_i of independent
    zero-mean weights, with variance Var(w)·‖δ_{k+1}‖²; so E‖W_{k+1}ᵀδ_{k+1}‖² = width·Var(w)·‖δ_{k+1}‖²,
    and multiplying by φ'(z) ≈ φ'(0) scales the norm by φ'(0). Sigmoid with PyTorch's default
    init: (1/4)·√(1/3) ≈ 0.144 per layer, so 19 layers shrink the signal ≈ 0.144^19 ≈ 1e-16.
    ReLU passes half the units (slope 1 or 0), so its factor is √(width·Var(w)/2): 1 for He's
    Var(w) = 2/width, and √c if Var(w) = c·2/width.

    >>> round(small_signal_factor("sigmoid", "default", 64), 4)
    0.1443
    >>> small_signal_factor("relu", "kaiming", 64), round(small_signal_factor("relu", "default", 64), 3)
    (1.0, 0.408)
    """
    _checks.choice("activation", activation, SLOPE_AT_ZERO)
    width = _checks.integer("width", width, low=1)
    gain = width * weight_variance(init, width, width, weight_std)
    if activation == "relu":
        return math.sqrt(gain / 2.0)
    if activation == "leaky_relu":
        return math.sqrt(gain * (1.0 + _LEAKY_SLOPE**2) / 2.0)
    return SLOPE_AT_ZERO[activation] * math.sqrt(gain)


def critical_sigma_w(activation: str) -> float:
    """The weight scale σ_w (std × √fan_in, ``init="normal"``'s ``weight_std``) at which a wide
    layer keeps the size of small signals: :func:`small_signal_factor` = 1.

    √2 for ReLU (He's initialisation), √(2/(1 + a²)) for leaky ReLU of slope a, and 1/φ'(0)
    for the smooth activations: 1 for tanh and linear (for tanh without bias this is also the
    edge of chaos, :func:`tanh_critical_sigma_w`), 4 for the sigmoid and 2 for GELU, whose
    mean-field factor once q grows is smaller (:func:`signal_factors`). The one source of the
    critical scales (:data:`CRITICAL_SIGMA_W`).

    >>> critical_sigma_w("relu") == math.sqrt(2), critical_sigma_w("tanh"), critical_sigma_w("sigmoid")
    (True, 1.0, 4.0)
    """
    _checks.choice("activation", activation, SLOPE_AT_ZERO)
    if activation == "relu":
        return math.sqrt(2.0)
    if activation == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + _LEAKY_SLOPE**2))
    return 1.0 / SLOPE_AT_ZERO[activation]


#: :func:`critical_sigma_w` of every activation of :func:`gradcourse.models.mlp`.
CRITICAL_SIGMA_W = {activation: critical_sigma_w(activation) for activation in SLOPE_AT_ZERO}


def signal_factors(depth: int, width: int, *, activation: str = "sigmoid", init: str = "default",
                   weight_std: float | None = None, in_features: int = 2, input_second_moment: float = 1.0,
                   weight_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean-field prediction for an :func:`~gradcourse.models.mlp`: the variance q_k of each
    hidden layer's pre-activations and the factor by which backpropagation through each layer
    multiplies the signal ‖∂L/∂z‖ (Poole et al. 2016; Schoenholz et al. 2017).

    Forward: z_k = W_k h_{k-1} + b_k with independent zero-mean weights, so over the units
    q_1 = Var(w_1)·E‖x‖² + Var(b_1) and q_k = width·Var(w_k)·E[φ(z)²] + Var(b_k), z ~ N(0, q_{k-1}).
    Backward: δ_k = φ'(z_k) ⊙ W_{k+1}ᵀδ_{k+1}, so E‖δ_k‖² = width·Var(w_{k+1})·E[φ'(z_k)²]·‖δ_{k+1}‖²:
    the factor between layer k+1 and layer k is χ_k = √(width·Var(w)·E[φ'(z)²]), z ~ N(0, q_k).
    When q is small this is :func:`small_signal_factor`; large weights or inputs make q large and,
    for sigmoid and tanh, E[φ'(z)²] small: that is saturation.

    ``input_second_moment`` is E‖x‖² per sample; ``weight_scale`` multiplies every hidden
    weight after the initialisation (std × scale). Returns ``(q, factors)``: q has ``depth``
    entries (layers 1..L); factors has depth − 1, factors[k−1] = ‖δ_k‖/‖δ_{k+1}‖ for k = 1..L−1.

    >>> q, f = signal_factors(20, 64, activation="sigmoid", init="default", input_second_moment=0.33)
    >>> round(float(q[-1]), 3), round(float(f.mean()), 3)   # small pre-activations; ≈ 0.141 per layer
    (0.09, 0.141)
    >>> _, f = signal_factors(20, 64, activation="relu", init="kaiming")
    >>> bool(np.allclose(f, 1.0))
    True
    """
    depth = _checks.integer("depth", depth, low=1, high=10_000)
    width = _checks.integer("width", width, low=1)
    _checks.choice("activation", activation, SLOPE_AT_ZERO)
    in_features = _checks.integer("in_features", in_features, low=1)
    m2 = _checks.number("input_second_moment", input_second_moment, low=0.0)
    scale2 = _checks.number("weight_scale", weight_scale, low=0.0, low_open=True) ** 2
    hidden_var = weight_variance(init, width, width, weight_std) * scale2
    q = np.empty(depth)
    q[0] = weight_variance(init, in_features, width, weight_std) * scale2 * m2 + bias_variance(init, in_features)
    for k in range(1, depth):
        q[k] = width * hidden_var * gaussian_mean(lambda z: activation_value(activation, z) ** 2, q[k - 1]) \
            + bias_variance(init, width)
    factors = np.sqrt(width * hidden_var * gaussian_mean(lambda z: activation_slope(activation, z) ** 2, q[:-1]))
    return q, np.atleast_1d(factors)


def predict_signal(config: dict, *, last: float = 1.0, input_second_moment: float = 1.0,
                   weight_scale: float = 1.0) -> np.ndarray:
    """The signal ‖∂L/∂z_k‖ predicted at every hidden layer k = 1..L of the MLP that ``config``
    describes (``model.config`` of :func:`~gradcourse.models.mlp`), anchored at ``last`` (the
    measured signal at the last hidden layer): signal_k = last·∏_{j=k}^{L−1} χ_j with the
    mean-field factors χ of :func:`signal_factors`.

    >>> from gradcourse.models import mlp
    >>> s = predict_signal(mlp(20, 64, activation="sigmoid").config, input_second_moment=0.33)
    >>> f"{s[0]:.0e}", float(s[-1])
    ('7e-17', 1.0)
    """
    if not isinstance(config, dict) or config.get("kind") != "mlp":
        raise ValueError("config must be the model.config of a gradcourse.models.mlp")
    if config.get("batchnorm") or config.get("residual"):
        raise ValueError("config must describe a plain MLP (no batchnorm, no residual): the "
                         "mean-field factors here assume W → φ layers only")
    last = _checks.number("last", last, low=0.0)
    _, factors = signal_factors(config["depth"], config["width"], activation=config["activation"],
                                init=config["init"], weight_std=config["weight_std"],
                                in_features=config["in_features"], input_second_moment=input_second_moment,
                                weight_scale=weight_scale)
    return last * np.append(np.cumprod(factors[::-1])[::-1], 1.0)


def depth_for_ratio(threshold: float, factor: float) -> int:
    """The smallest depth L at which the first hidden layer's signal is below ``threshold`` times
    the last one's, when each layer multiplies it by ``factor`` < 1: the L − 1 layers between them
    give factor^(L−1) < threshold, i.e. L − 1 > ln(threshold)/ln(factor).

    >>> depth_for_ratio(1e-8, small_signal_factor("sigmoid", "default", 64))
    11
    """
    threshold = _checks.number("threshold", threshold, low=0.0, low_open=True)
    factor = _checks.number("factor", factor, low=0.0, low_open=True)
    if threshold >= 1 or factor >= 1:
        raise ValueError(f"threshold and factor must be below 1 (a shrinking signal); got {threshold}, {factor}")
    return int(math.floor(math.log(threshold) / math.log(factor))) + 2


# --- lesson 02 ---

def relu_signal_factor(c: float) -> float:
    """How much the backpropagated signal grows per ReLU layer when Var(w) = c · 2/fan_in.

    Going backward, ``δ_{k-1} = W_kᵀ (φ'(z_{k-1}) ⊙ δ_k)``. With independent weights of variance
    ``c·2/n`` and a ReLU slope that is 1 on about half the units and 0 on the rest,
    ``E‖δ_{k-1}‖² = n · (c·2/n) · ½ · ‖δ_k‖² = c ‖δ_k‖²``, so the norm grows by ``√c`` per layer.
    ``c = 1`` is He's initialisation, the critical scale where the signal neither grows nor shrinks.

    >>> relu_signal_factor(1.0), relu_signal_factor(4.0)
    (1.0, 2.0)
    """
    c = _checks.number("c", c, low=0.0, low_open=True)
    return math.sqrt(c)


def relu_signal_profile(c: float, depth: int) -> np.ndarray:
    """Predicted ‖∂L/∂z_k‖ / ‖∂L/∂z_depth‖ for the hidden layers k = 1..depth of a ReLU MLP.

    Each of the ``depth - k`` layers between layer k and the last multiplies the signal by
    :func:`relu_signal_factor`, so the ratio is ``c ** ((depth - k) / 2)``: at 20 layers and
    c = 4 (twice He's standard deviation) the first layer receives ``2**19 ≈ 5e5`` times the
    last layer's signal.

    >>> float(relu_signal_profile(4.0, 20)[0])
    524288.0
    >>> relu_signal_profile(1.0, 5).tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    depth = _checks.integer("depth", depth, low=1)
    factor = relu_signal_factor(c)
    return factor ** np.arange(depth - 1, -1, -1, dtype=float)


def _tanh_averages(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[tanh(h)²] and E[tanh'(h)²] for h ~ N(0, q), on one set of quadrature nodes."""
    h, w = _gaussian_nodes(q, even=True)
    tanh2 = np.tanh(h) ** 2
    return np.sum(tanh2 * w, axis=-1), np.sum((1.0 - tanh2) ** 2 * w, axis=-1)


def tanh_mean_field(sigma_w: float, depth: int, q_input: float | np.ndarray, *,
                    sigma_b: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean-field variance ``q_k`` of the pre-activations and the slope factor ``χ_k`` per layer
    of a wide tanh MLP with w ~ N(0, σ_w²/fan_in), b ~ N(0, σ_b²) (Poole et al. 2016).

    Forward, a wide layer's pre-activations are Gaussian with variance
    ``q_1 = σ_w² q_input + σ_b²`` (``q_input`` = mean squared input component) and
    ``q_{k+1} = σ_w² E[tanh(h)²] + σ_b²`` with h ~ N(0, q_k). Backward, crossing layer k
    multiplies ‖∂L/∂z‖² by ``χ_k = σ_w² E[tanh'(h)²]``. Large weights make q large, so most units
    saturate (tanh' ≈ 0), yet σ_w² can outweigh the small slopes: χ > 1 and the signal grows.
    Returns ``(q, chi)``, each of shape ``(depth,)`` (or ``(n, depth)`` for an array of
    ``q_input``, one per example).

    >>> q, chi = tanh_mean_field(4.0, 10, 0.166)
    >>> round(float(q[-1]), 1), round(float(chi[-1]), 2)       # deep layers: a fixed point
    (12.5, 2.38)
    """
    sigma_w = _checks.number("sigma_w", sigma_w, low=0.0, low_open=True)
    sigma_b = _checks.number("sigma_b", sigma_b, low=0.0)
    depth = _checks.integer("depth", depth, low=1)
    q = sigma_w ** 2 * np.asarray(q_input, dtype=float) + sigma_b ** 2
    if np.any(q < 0) or not np.all(np.isfinite(q)):
        raise ValueError(f"q_input must be finite and non-negative; got {q_input!r}")
    qs, chis = [], []
    for _ in range(depth):
        tanh2, slope2 = _tanh_averages(q)
        qs.append(q)
        chis.append(sigma_w ** 2 * slope2)
        q = sigma_w ** 2 * tanh2 + sigma_b ** 2
    return np.stack(qs, axis=-1), np.stack(chis, axis=-1)


def tanh_signal_ratio(sigma_w: float, depth: int, x: np.ndarray, *, sigma_b: float = 0.0) -> float:
    """Predicted ‖∂L/∂z_1‖ / ‖∂L/∂z_depth‖ of a tanh MLP on the inputs ``x`` (shape (n, d)).

    Each example has its own input variance ``q_input = ‖x‖²/d``, hence its own ``χ_k``
    (:func:`tanh_mean_field`); its signal grows by ``√(χ_1 ⋯ χ_{depth-1})`` from the last layer
    to the first. The batch norm adds squares, so the ratio is the root-mean-square over the
    examples (examples near the origin start unsaturated, where χ ≈ σ_w², and grow most).

    >>> from gradcourse import data
    >>> 150 < tanh_signal_ratio(4.0, 10, data.spirals(512, seed=0).x.numpy()) < 600
    True
    """
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"x must be a non-empty 2-D array (examples, features); got shape {x.shape}")
    _, chi = tanh_mean_field(sigma_w, depth, (x ** 2).mean(axis=1), sigma_b=sigma_b)
    return float(np.sqrt(np.mean(np.prod(chi[:, :-1], axis=1))))


def tanh_saturated_fraction(q: float | np.ndarray, margin: float = SATURATION_MARGIN) -> np.ndarray:
    """Fraction of tanh units with |tanh(h)| > 1 − margin when h ~ N(0, q) (the probe's
    definition, :data:`SATURATION_MARGIN`):
    P(|h| > atanh(1 − margin)) = erfc(atanh(1 − margin) / √(2q)).

    >>> round(float(tanh_saturated_fraction(12.48)), 3)
    0.554
    """
    margin = _checks.number("margin", margin, low=0.0, high=1.0, low_open=True)
    q = _nonnegative_q(q)
    with np.errstate(divide="ignore"):
        return _erfc(math.atanh(1 - margin) / np.sqrt(2 * q))   # q = 0: erfc(∞) = 0


def _tanh_fixed_point(sigma_w: float | np.ndarray, sigma_b: float) -> np.ndarray:
    """q* with q* = σ_w² E[tanh(h)²] + σ_b², h ~ N(0, q*): the stable fixed point, by bisection,
    for one σ_w or an array of them at once (one bisection step bisects every bracket).

    F(q) = σ_w² E[tanh²] + σ_b² − q is concave with F(q) < 0 for q ≥ σ_w² + σ_b². With σ_b > 0,
    F(0) > 0 and the root is unique. With σ_b = 0, q = 0 is always a root; it is the stable one
    for σ_w ≤ 1 (E[tanh²] < q), while for σ_w > 1 F > 0 just above 0 and the stable root is the
    other one, which bisection from (0, σ_w²] finds (it never evaluates F at 0).
    """
    sigma_w = np.asarray(sigma_w, dtype=float)
    low, high = np.zeros_like(sigma_w), sigma_w ** 2 + sigma_b ** 2
    for _ in range(64):                       # 2⁻⁶⁴ of the bracket: below float64's resolution
        mid = (low + high) / 2
        above = sigma_w ** 2 * _tanh_averages(mid)[0] + sigma_b ** 2 > mid
        low, high = np.where(above, mid, low), np.where(above, high, mid)
    q_star = (low + high) / 2
    return np.where(sigma_w <= 1.0, 0.0, q_star) if sigma_b == 0.0 else q_star


def tanh_chi_fixed_point(sigma_w: float | np.ndarray, *, sigma_b: float = 0.0) -> float | np.ndarray:
    """χ* = σ_w² E[tanh'(h)²] at the fixed point q* of the forward variance map.

    Deep in a network every layer sits at q*, so χ* decides the phase: χ* < 1 ordered (the
    signal vanishes), χ* > 1 chaotic (it explodes, even while units saturate). With σ_b = 0,
    q* = 0 for σ_w ≤ 1 (then χ* = σ_w²) and q* > 0 beyond, so the boundary is σ_w = 1.
    q* is solved for directly (:func:`tanh_mean_field` reaches it layer by layer). A number
    gives a number; an array of σ_w gives an array (solved together, as fast as a few numbers).

    >>> round(tanh_chi_fixed_point(0.8), 3), round(tanh_chi_fixed_point(4.0), 3)
    (0.64, 2.377)
    >>> tanh_chi_fixed_point(np.array([0.8, 4.0])).round(3).tolist()
    [0.64, 2.377]
    """
    sigma_b = _checks.number("sigma_b", sigma_b, low=0.0)
    one = not np.ndim(sigma_w)
    if one:
        sigma_w = _checks.number("sigma_w", sigma_w, low=0.0, low_open=True)
    else:
        sigma_w = np.asarray(sigma_w, dtype=float)
        if not np.all(np.isfinite(sigma_w) & (sigma_w > 0)):
            raise ValueError(f"sigma_w must be finite and > 0; got {sigma_w!r}")
    chi = sigma_w ** 2 * _tanh_averages(_tanh_fixed_point(sigma_w, sigma_b))[1]
    return float(chi) if one else chi


def tanh_critical_sigma_w(sigma_b: float = 0.0) -> float:
    """The σ_w where χ* = 1: the edge of chaos between the ordered and the chaotic phase,
    found by bisection on :func:`tanh_chi_fixed_point` (which increases with σ_w).

    >>> round(tanh_critical_sigma_w(0.0), 2)
    1.0
    >>> round(tanh_critical_sigma_w(0.3), 2)   # a bias pushes the edge to larger weights
    1.4
    """
    sigma_b = _checks.number("sigma_b", sigma_b, low=0.0, high=2.0)
    low, high = 0.5, 5.0
    for _ in range(40):
        mid = (low + high) / 2
        if tanh_chi_fixed_point(mid, sigma_b=sigma_b) > 1:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def largest_stable_lr(curvature: float) -> float:
    """Gradient descent on L(w) = ½·h·w² multiplies w by (1 − α h) each step, so it converges
    only when |1 − α h| < 1, i.e. α < 2/h: beyond, each step overshoots further and w explodes.

    >>> largest_stable_lr(4.0)
    0.5
    """
    curvature = _checks.number("curvature", curvature, low=0.0, low_open=True)
    return 2.0 / curvature


# --- lesson 03 ---

def clip_by_norm(g: np.ndarray, threshold: float) -> np.ndarray:
    """``g · min(1, threshold/‖g‖)``: the whole vector is rescaled, its direction kept.

    The operation on one vector, for figures and predictions. Not to be confused with
    :func:`gradcourse.remedies.clip_norm` (the setting ``fit(..., clip=...)`` takes, which clips a
    model's gradients in training) nor with ``exercises.clip_by_norm_function`` (lesson 03's check of the
    learner's own clipping function).

    >>> clip_by_norm(np.array([3.0, 4.0]), 1.0).tolist()
    [0.6000000000000001, 0.8]
    """
    threshold = _checks.number("threshold", threshold, low=0.0, low_open=True)
    g = np.asarray(g, dtype=float)
    norm = np.linalg.norm(g)
    return g * min(1.0, threshold / norm) if norm > 0 else g.copy()


def clip_by_value(g: np.ndarray, threshold: float) -> np.ndarray:
    """Every component clamped to [−threshold, threshold]: large components shrink, small ones
    stay, so the direction turns toward the diagonal.

    >>> clip_by_value(np.array([3.0, 0.5]), 1.0).tolist()
    [1.0, 0.5]
    """
    threshold = _checks.number("threshold", threshold, low=0.0, low_open=True)
    return np.clip(np.asarray(g, dtype=float), -threshold, threshold)


def clip_angle(g: np.ndarray, method: str, threshold: float) -> float:
    """Angle in degrees between ``g`` and its clipped version: 0 for ``"norm"`` (always),
    ``arccos(g·c / (‖g‖‖c‖))`` for ``"value"``, largest when one component dominates.

    >>> clip_angle(np.array([3.0, 0.5]), "norm", 1.0)
    0.0
    >>> round(clip_angle(np.array([3.0, 0.5]), "value", 1.0), 1)     # 26.6° − 9.5°
    17.1
    """
    _checks.choice("method", method, ("norm", "value"))
    g = np.asarray(g, dtype=float)
    clipped = clip_by_norm(g, threshold) if method == "norm" else clip_by_value(g, threshold)
    denominator = np.linalg.norm(g) * np.linalg.norm(clipped)
    if denominator == 0:
        return 0.0
    cosine = float(np.clip(g @ clipped / denominator, -1.0, 1.0))
    return 0.0 if cosine >= 1.0 - 1e-12 else math.degrees(math.acos(cosine))


# --- lesson 04 ---

def batchnorm_relu_growth() -> float:
    """Per-layer growth factor √(π/(π−1)) ≈ 1.21 of the gradient toward the input in a deep ReLU
    network with BatchNorm after every linear layer and no skip connections, at initialisation
    (Yang et al. 2019, for wide layers and large batches).

    BN makes each pre-activation x̂ ~ N(0, 1) over the batch, so a = relu(x̂) has batch variance
    Var(a) = E[a²] − E[a]² = ½ − 1/(2π) = (π−1)/(2π). The next linear layer's output z = W a has
    batch variance n·Var(w)·Var(a), and BN divides z by its square root. Backward, ‖δ‖² is
    multiplied by n·Var(w) (the weights) times E[relu'(x̂)²] = ½ (the ReLU), then by
    1/(n·Var(w)·Var(a)) (BN's division). The weight scale cancels: each layer multiplies ‖δ‖² by
    ½ / ((π−1)/(2π)) = π/(π−1). BN divides by the *centred* spread of the activation while the
    gradient passes through its uncentred slope, and the mismatch compounds with depth.

    >>> round(batchnorm_relu_growth(), 3)
    1.211
    >>> round(batchnorm_relu_growth() ** 39)             # first vs last layer of a 40-layer net
    1758
    """
    return math.sqrt(math.pi / (math.pi - 1.0))


def batchnorm_growth(activation: str) -> float:
    """:func:`batchnorm_relu_growth` for any activation: the per-layer growth √(E[φ'(x̂)²]/Var φ(x̂)),
    x̂ ~ N(0, 1), of the backpropagated signal toward the input in a deep MLP with BatchNorm before
    every activation and no skips, at initialisation (Yang et al. 2019, wide layers, large batches).

    The derivation is the ReLU one with φ in place of relu: BN divides by the spread of the next
    layer's input, √(n·Var(w)·Var φ(x̂)), while backward the weights multiply ‖δ‖² by n·Var(w)
    and the activation by E[φ'(x̂)²]. ReLU: √(π/(π−1)) ≈ 1.211; tanh ≈ 1.085; sigmoid ≈ 1.017.

    It is the rate at the fixed point where the batch's examples are spread in every direction
    (Yang et al.'s BSB1 fixed point). Measured at depth 40 with 64-dimensional Gaussian inputs and
    width 256 (tests/test_theory.py): ReLU 1.21, tanh 1.09, sigmoid 1.03. On the 2-D spirals the
    first layers see a batch confined to a 2-D subspace, and sigmoid and tanh nets measure about
    1.15 per layer up to depth 40: the approach to the fixed point, not the fixed point.

    >>> round(batchnorm_growth("relu"), 3), round(batchnorm_growth("tanh"), 3), round(batchnorm_growth("sigmoid"), 3)
    (1.211, 1.085, 1.017)
    """
    _checks.choice("activation", activation, SLOPE_AT_ZERO)
    slope2 = gaussian_mean(lambda h: activation_slope(activation, h) ** 2, 1.0)
    mean = gaussian_mean(lambda h: activation_value(activation, h), 1.0)
    variance = gaussian_mean(lambda h: activation_value(activation, h) ** 2, 1.0) - mean**2
    return math.sqrt(slope2 / variance)


def batchnorm_running_update(running: float, batch_value: float, momentum: float = 0.1) -> float:
    """One update of a BatchNorm running statistic in training mode (PyTorch's convention):
    ``running ← (1 − momentum)·running + momentum·batch_value``. Eval mode then normalises with
    the running values instead of the batch's own.

    >>> round(batchnorm_running_update(0.0, 2.0), 6)
    0.2
    """
    momentum = _checks.number("momentum", momentum, low=0.0, high=1.0)
    return (1.0 - momentum) * float(running) + momentum * float(batch_value)


# --- lesson 05 ---

def residual_block_factor(width: int, init: str = "default") -> float:
    """Per-block growth of the backpropagated signal toward the input in a residual MLP without
    BatchNorm whose blocks are ``h ← h + W₂ relu(W₁ h)`` (:func:`gradcourse.models.resnet_mlp`).

    The block's Jacobian is ``I + J`` with ``J = W₂ D W₁`` (D: the ReLU's 0/1 slopes), so backward
    ``δ_in = δ_out + Jᵀ δ_out``. The cross term averages to zero over the weights, and
    ``E‖Jᵀδ‖² = (n·Var(w))² · ½ · ‖δ‖²`` (each matrix multiplies by n·Var(w), the ReLU keeps half),
    hence ``E‖δ_in‖² = (1 + (n·Var(w))²/2) ‖δ_out‖²``. With PyTorch's default init,
    n·Var(w) = 1/3 and the factor is √(1 + 1/18) ≈ 1.027: the identity path keeps the signal at
    the same size, where a plain ReLU layer multiplies it by √(1/6) ≈ 0.41
    (:func:`small_signal_factor`).

    >>> round(residual_block_factor(32), 4)
    1.0274
    >>> round(residual_block_factor(32) ** 25, 1)         # over 25 blocks: about ×2
    2.0
    """
    width = _checks.integer("width", width, low=1)
    gain = width * weight_variance(init, width, width)
    return math.sqrt(1.0 + gain**2 / 2.0)

# --- lesson 06 ---
#: γ = max |φ'(a)| of the recurrent nonlinearity: tanh'(0) = 1, σ'(0) = 1/4.
SLOPE_BOUND = {"tanh": 1.0, "sigmoid": 0.25}


def rnn_step_bound(spectral_norm: float, activation: str = "tanh") -> float:
    """Upper bound η = λ₁·γ on the norm of one step's Jacobian in a plain RNN.

    With ``h_k = φ(a_k)``, ``a_k = W h_{k-1} + U x_k + b``, one step back multiplies the
    gradient by ``(∂h_k/∂h_{k-1})ᵀ = Wᵀ diag(φ'(a_k))``. The norm of a product is at most the
    product of the norms: ``‖Wᵀ‖ = λ₁`` (the largest singular value of ``W``) and
    ``‖diag(φ')‖ = max|φ'| ≤ γ``, so ``‖Wᵀ diag(φ')‖ ≤ λ₁ γ`` (Pascanu, Mikolov & Bengio 2013).

    >>> rnn_step_bound(0.5)
    0.5
    >>> rnn_step_bound(2.0, "sigmoid")
    0.5
    """
    spectral_norm = _checks.number("spectral_norm", spectral_norm, low=0.0)
    _checks.choice("activation", activation, SLOPE_BOUND)
    return spectral_norm * SLOPE_BOUND[activation]


def bptt_bound(seq_len: int, spectral_norm: float, activation: str = "tanh", *,
               final: float = 1.0) -> np.ndarray:
    """The bound on ‖∂L/∂h_t‖ for t = 1 … T when the loss reads only h_T.

    Backpropagation through time multiplies ``T − t`` one-step Jacobians, each bounded by
    η = λ₁γ (:func:`rnn_step_bound`), so ``‖∂L/∂h_t‖ ≤ η^(T−t) ‖∂L/∂h_T‖``; ``final`` is
    ‖∂L/∂h_T‖. If η < 1 the gradient must vanish geometrically; if η > 1 it may grow.

    >>> bptt_bound(4, 0.5).tolist()
    [0.125, 0.25, 0.5, 1.0]
    >>> float(bptt_bound(21, 0.8)[0])   # 20 steps back through a matrix with λ₁ = 0.8
    0.011529215046068483
    """
    seq_len = _checks.integer("seq_len", seq_len, low=1)
    final = _checks.number("final", final, low=0.0)
    eta = rnn_step_bound(spectral_norm, activation)
    return final * eta ** np.arange(seq_len - 1, -1, -1, dtype=float)


def pascanu_threshold(activation: str = "tanh") -> float:
    """The critical largest singular value 1/γ of Pascanu et al. (2013).

    λ₁ < 1/γ is *sufficient* for vanishing gradients (every step shrinks them: η < 1);
    λ₁ > 1/γ is *necessary* for exploding ones (but not sufficient: saturated units have
    φ' ≈ 0). γ = 1 for tanh, 1/4 for the sigmoid, so the thresholds are 1 and 4.

    >>> pascanu_threshold("tanh"), pascanu_threshold("sigmoid")
    (1.0, 4.0)
    """
    _checks.choice("activation", activation, SLOPE_BOUND)
    return 1.0 / SLOPE_BOUND[activation]


def forget_gate_factor(forget_bias: float) -> float:
    """σ(b_f): what the LSTM's forget gate multiplies the cell state by when its input is small.

    The cell state updates additively, ``c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t``, so along that path
    ``∂c_t/∂c_{t-1} = diag(f_t)``: no weight matrix and no tanh slope, only the gate. At
    initialisation the gate's pre-activation is about its bias, so ``f_t ≈ σ(b_f)``: 0.5 for
    PyTorch's default (b_f ≈ 0), 0.73 for b_f = 1, 0.95 for b_f = 3. This is the cell path only;
    the gates' own paths add to the measured decay, so it is a guide, not a bound.

    >>> round(forget_gate_factor(0.0), 3), round(forget_gate_factor(3.0), 3)
    (0.5, 0.953)
    """
    forget_bias = _checks.number("forget_bias", forget_bias)
    return 1.0 / (1.0 + math.exp(-forget_bias))


def steps_to_shrink(factor: float, ratio: float) -> float:
    """How many steps back a gradient that shrinks by ``factor`` per step takes to fall to
    ``ratio`` of its value: ``factor**n = ratio``, so ``n = ln(ratio) / ln(factor)``.

    >>> round(steps_to_shrink(0.5, 1e-3), 2)
    9.97
    """
    factor = _checks.number("factor", factor, low=0.0, low_open=True)
    ratio = _checks.number("ratio", ratio, low=0.0, low_open=True)
    if factor >= 1 or ratio >= 1:
        raise ValueError(f"factor and ratio must be below 1 (a shrinking gradient); got {factor}, {ratio}")
    return math.log(ratio) / math.log(factor)


def decay_per_step(norms, *, skip_last: int = 1) -> float:
    """The measured counterpart of η: the geometric factor by which ‖∂L/∂h_t‖ changes per step
    back, from a least-squares line through log‖∂L/∂h_t‖ against t.

    ``norms`` holds ‖∂L/∂h_t‖ for t = 1 … T; the last ``skip_last`` steps (where the readout
    enters) are left out. Below 1 the gradient vanishes going back, above 1 it grows.

    >>> round(decay_per_step(bptt_bound(30, 0.6)), 6)
    0.6
    """
    values = np.asarray(norms, dtype=float).ravel()
    skip_last = _checks.integer("skip_last", skip_last, low=0)
    values = values[: len(values) - skip_last] if skip_last else values
    if len(values) < 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("norms must hold at least two positive finite values (after skip_last)")
    slope = np.polyfit(np.arange(len(values)), np.log(values), 1)[0]
    return float(np.exp(-slope))

