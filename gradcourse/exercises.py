"""Every lesson's answer keys, in lesson order: what each exercise expects, and what to say.

The notebooks call ``exercises.<key>(answer)`` and show the :class:`~gradcourse.answers.Feedback`
it returns. A key whose answer is a number or an option is a record (:mod:`gradcourse.answers`:
:class:`~gradcourse.answers.Number`, :class:`~gradcourse.answers.Ratio`,
:class:`~gradcourse.answers.Whole`, :class:`~gradcourse.answers.Band`,
:class:`~gradcourse.answers.Choice`): its expected value is derived (from :mod:`gradcourse.theory`,
a float format's limits) or, where only an experiment gives it, the measured value with the spread
it was measured over. A key that computes is a function: it trains or probes a model, runs the
learner's function against a reference, or reads a Run.

>>> from gradcourse import exercises
>>> exercises.chain_gradient_tanh("0.8**25").message[:44]
'Right: the gradient at the input = 0.003778.'
>>> exercises.tanh_phase("Ordered").correct
False
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _checks, doctor, theory
from .answers import (
    QUANTITY_ALIASES,
    Band,
    Choice,
    Feedback,
    Mistake,
    Number,
    Ratio,
    Whole,
    as_number,
    cannot_check,
    capitalise,
    check_number,
    check_whole_number,
    describe,
    exercise,
    missing,
    normalise,
    not_a_function,
    peek,
    read_answer,
    skeleton,
    two_digits,
)
from .hooks import hooks_left

# --- lesson 00 ---


chain_gradient_tanh = Number(
    expected=lambda: theory.chain_factor(0.8, "tanh") ** 25, name="the gradient at the input", rel=0.02,
    mistakes=(Mistake("Not quite: that uses the sigmoid's slope 1/4. tanh'(0) = 1 − tanh²(0) = 1, "
                      "so each link multiplies the gradient by |w| alone.", near=0.2 ** 25),),
    text="""
    Lesson 00, Ex 1: |∂h_L/∂h_0| for a tanh scalar chain with w = 0.8 and L = 25 links at z = 0
    (autograd gives 0.8²⁵ = 3.778e-3).

    Praise: tanh'(0) = 1, so each link gives |w·tanh'(0)| = 0.8, and 0.8²⁵ ≈ 3.8e-3: a factor that looks harmless
    still loses 99.6 % over 25 links.

    Hint: The factor per link is |w·tanh'(0)|, with tanh'(0) = 1 − tanh²(0); raise it to the power L = 25.
    """)


critical_weight_offset = Number(
    expected=lambda: 1 / theory.activation_slope("sigmoid", 2.0), name="the critical |w| at z = 2", rel=0.02,
    mistakes=(Mistake("Not quite: 4 is the boundary for units at z = 0, where σ' = 1/4. "
                      "Here the units sit at z = 2: compute σ'(2) = σ(2)(1 − σ(2)) first.",
                      near=lambda: theory.critical_weight("sigmoid"), rel=0.02, either_sign=True),),
    text="""
    Lesson 00, Ex 2: the |w| at which a sigmoid chain whose units all sit at z = 2 neither vanishes
    nor explodes: 1/σ'(2) = 9.5244.

    Praise: σ'(2) = σ(2)(1 − σ(2)) ≈ 0.105, so |w| = 1/0.105 ≈ 9.5: saturation moves the boundary up, and the
    weights must be larger to keep the gradient (lesson 01).

    Hint: The boundary is |w·σ'(z)| = 1 at the z where the units sit, here z = 2. Compute σ(2) ≈ 0.881, then σ'(2) =
    σ(2)(1 − σ(2)).
    """)


half_he_curves = Choice(
    expected="output_grad_norm", name="the curve that falls",
    options=("output_grad_norm", "grad_norm", "both", "neither"),
    aliases=QUANTITY_ALIASES,
    text="""
    Lesson 00, Ex 3: a 20-layer ReLU network at HALF He's std. Which per-layer curve falls steeply
    toward layer 1? Measured (seed 0): signal layer 1 / layer 20 = 1.7e-6, weight gradient
    layer 2 / layer 20 = 1.76.

    Praise: The signal halves per layer going back (1.7e-6 over 19 layers), while the forward activations halve per
    layer going forward: in ∂L/∂W_k = δ_k h_{k−1}ᵀ the two cancel and the weight gradients stay level. Look at both
    curves.

    Hint: ∂L/∂W_k pairs the signal δ_k with the layer's input h_{k−1}. With weights at half He's scale, which way
    does each of them shrink, and what does their product do?
    """)


# --- lesson 01 ---


sigmoid_he_factor = Number(
    expected=lambda: theory.small_signal_factor("sigmoid", "kaiming", 64), name="the per-layer factor", rel=0.12,
    mistakes=(Mistake("Not quite: √(n·Var(w)) = √2 is only the weights' part. Multiply by the sigmoid's "
                      "slope σ'(0) = 1/4.", near=math.sqrt(2)),),
    text="""
    Lesson 01, Ex 1: the per-layer factor of a width-64 sigmoid MLP with He's init, Var(w) = 2/n_in.
    Small-z theory √2/4 = 0.354; measured 0.316 (σ' < 1/4 away from 0): both are right.

    Praise: ¼·√(64·2/64) = √2/4 ≈ 0.354 (measured 0.316: σ' < ¼ away from 0). Still far below 1: He's init is built
    for ReLU's ½, not the sigmoid's ¼, and 19 layers lose about 10 orders of magnitude.

    Hint: χ ≈ σ'(0)·√(n·Var(w)) with σ'(0) = 1/4 and n·Var(w) = 64 · 2/64 = 2.
    """)


depth_for_tiny_signal = Whole(
    expected=lambda: theory.depth_for_ratio(1e-8, theory.small_signal_factor("sigmoid", "default", 64)),
    name="the depth", unit=" of layers",
    text="""
    Lesson 01, Ex 2: the smallest depth at which a default-init sigmoid MLP (width 64) delivers less
    than 1e-8 of the last layer's signal to layer 1 (χ = 0.1443: 0.1443¹⁰ < 1e-8 < 0.1443⁹).

    Praise: 0.144^(L−1) < 1e-8 needs L − 1 ≥ 10; the measuring cell agrees.

    Hint: Each layer multiplies the signal by ≈ 0.144; solve 0.144^(L−1) < 1e-8 for the smallest whole L (there are
    L − 1 factors between layer L and layer 1).
    """)


wider_tanh_ratio = Ratio(
    expected=lambda: theory.small_signal_factor("tanh", "default", 256) ** 24, factor=3.0,
    name="the layer 1 / layer 25 ratio", example='"3**-12" or 1e-6',
    mistakes=(Mistake("Not quite: widening does not help. PyTorch's default init draws Var(w) = 1/(3·n), so "
                      "n·Var(w) = 1/3 whatever the width: the factor per layer is still tanh'(0)·√(1/3).", above=1e-3),
              Mistake("Not quite: that is far too small. tanh'(0) = 1 (the sigmoid's 1/4 does not apply), and "
                      "there are 24 factors between layer 25 and layer 1.", above=0.0, below=1e-15)),
    text="""
    Lesson 01, Ex 3: a 25-layer tanh MLP with PyTorch's default init, widened from 64 to 256 units:
    ‖∂L/∂z₁‖ / ‖∂L/∂z₂₅‖ at initialisation. The default Var(w) = 1/(3·n_in) scales with the width,
    so the factor stays 1·√(1/3) and the ratio is (1/√3)²⁴ = 1.88e-6 at any width. Measured at
    width 256: 1.28e-6, 9.5e-7, 1.78e-6, 1.20e-6, 1.51e-6 (seeds 0–4, the same on the portable
    kernels; tanh' < 1 away from 0 puts them below): right within a factor 3.

    Praise: n·Var(w) = n·1/(3n) = 1/3 at any width, so each layer still multiplies the signal by √(1/3) ≈ 0.58 and
    24 of them give (1/√3)²⁴ ≈ 1.9e-6 (measured 1.3e-6 at width 256: tanh' < 1 away from 0). More width does not fix
    a default init; Xavier (n·Var(w) = 1) does.

    Hint: Per layer the signal changes by tanh'(0)·√(n·Var(w)); with the default init, what is n·Var(w) at width
    256? Then count the factors between layer 25 and layer 1.
    """)


@exercise
def signal_probe(answer) -> Feedback:
    """Lesson 01, Ex 4 (code): ``answer(model, x, y)`` returns ‖∂L/∂z_k‖ for every hidden Linear layer,
    front to back, from one cross-entropy forward and backward pass, and leaves no hook behind.
    Checked on the lesson's 20-layer sigmoid network (seed 0) against ``probes.probe_once``'s
    ``output_grad_norm``; layer 1 / layer 20 = 5.66e-17.

    >>> signal_probe(None).correct, signal_probe(3).correct
    (None, False)
    """
    from . import data, models
    from .probes import probe_once

    name = "your signal_per_layer function"
    if answer is None:
        return missing(name)
    if not callable(answer):
        return Feedback(False, f"Pass the function itself (its name, no parentheses); got {describe(answer)}.")
    spirals = data.cached_spirals(512)
    net = models.mlp(20, 64, activation="sigmoid", seed=0)
    try:
        result = answer(net, spirals.x, spirals.y)
    except NotImplementedError:                         # the skeleton, untouched
        return Feedback(None, f"Fill in {name}: write its body, delete the `raise NotImplementedError` line, "
                              "and run the cell again.")
    except Exception as error:  # noqa: BLE001 (a learner's code may raise anything: feedback, not a traceback)
        left = " It also left hooks attached: remove them in a `finally:` block." if hooks_left(net) else ""
        return Feedback(False, f"Your function raised {type(error).__name__}: {describe(str(error), 120)}. "
                               f"Run it on its own to see where.{left}")
    if hooks_left(net):
        return Feedback(False, "Your hooks are still attached to the model: keep the handle that each "
                               "register_…_hook returns and call handle.remove() on it (a try/finally makes "
                               "it safe).")
    if result is None:
        return Feedback(False, "Your function returned None: return the list of norms.")
    try:
        mine = np.asarray([float(v) for v in result], dtype=float)
    except Exception:  # noqa: BLE001 (any object: feedback if it is not a list of numbers)
        return Feedback(False, f"Return a list of 20 numbers, one per hidden layer; got {describe(result)}.")
    if mine.shape != (20,):
        extra = " (the hidden layers only, not the head)" if mine.size == 21 else ""
        return Feedback(False, f"Return 20 numbers, one per hidden layer{extra}; got {mine.size}.")
    reference = models.mlp(20, 64, activation="sigmoid", seed=0)
    expected = probe_once(reference, spirals.x, spirals.y).get("output_grad_norm")[0][:20]
    close = bool(np.all(np.isfinite(mine))) and np.allclose(mine, expected, rtol=1e-3, atol=0)
    if not close and np.allclose(mine[::-1], expected, rtol=1e-3, atol=0):
        return Feedback(False, "Right numbers, wrong order: return layer 1 first. Backward hooks fire from the "
                               "output back, so store each norm at its layer's index, not in firing order.")
    if not close:
        return Feedback(False, "Not quite: your norms differ from the probe's (layer 1: "
                               f"{mine[0]:.3g} against {expected[0]:.3g}). Record ‖∂L/∂z‖, the gradient of each "
                               "Linear layer's OUTPUT (output.register_hook in a forward hook), not the weight's "
                               "gradient, and take .norm() of the whole batch's gradient.")
    return check_number(float(mine[0] / mine[19]), 5.66e-17, name="layer 1 / layer 20", rel=0.02,
                        praise="Your hand-made probe agrees with the course's Probe, layer by layer.")


# --- lesson 02 ---


relu_growth_per_layer = Number(
    expected=lambda: theory.relu_signal_factor(1.5), name="growth per layer", rel=0.03,
    text="""
    Lesson 02 Ex 1: Var(w) = 3/fan_in in a ReLU net; by what factor does ‖∂L/∂z‖ grow per layer,
    going backward? (c = 1.5, so √1.5 = 1.2247.)

    Praise: 3/n = c·2/n gives c = 1.5, and the norm grows by √1.5 ≈ 1.22 per layer.

    Hint: Write Var(w) = c · 2/fan_in; c multiplies the SQUARED norm, so the norm grows by √c.
    """)


relu_first_to_last = Ratio(
    expected=lambda: theory.relu_signal_factor(1.5) ** 29, factor=4.0, name="first/last signal ratio",
    example='"1.5**14.5" or 300',
    mistakes=(Mistake("Not quite: 1.5²⁹ uses c per layer. c = 1.5 multiplies the SQUARED norm, so the norm gains "
                      "√1.5 at each of the 29 steps.", near=1.5 ** 29),),
    text="""
    Lesson 02 Ex 2: 30 ReLU layers of width 64 with Var(w) = 3/fan_in: predict ‖∂L/∂z₁‖ / ‖∂L/∂z₃₀‖
    at initialisation. Mean field: 1.5^14.5 = 357.5. One finite-width draw falls below it (the log
    of a product of random factors averages below the log of their mean): seeds 0–19 measure 102 to
    449, geometric mean 248 (the same on the portable kernels). Right within a factor 4 of 357.5
    (89 to 1430), which holds every seed measured and the mean-field value.

    Praise: 29 layer-to-layer steps at √1.5 each: 1.5^14.5 ≈ 358, the mean-field value. One finite-width network
    lands below it, typically about 250 (the next cell explains why), and seeds scatter from about 100 to 450.

    Hint: The signal crosses 29 layers between layer 30 and layer 1, gaining √c = √1.5 at each (not c: c multiplies
    the squared norm).
    """)


leaky_relu_factor = Number(
    expected=math.sqrt(2 * (1 + 0.5 ** 2) / 2), name="the per-layer factor", rel=0.06,
    mistakes=(Mistake("Not quite. 1 is ReLU's factor at He's init (a = 0). Here the units that are off still pass "
                      "a = 0.5 of the gradient: E[φ'²] = (1 + a²)/2, not 1/2.", near=1.0, rel=0.01),
              Mistake("Not quite. 1.25 is the factor of the SQUARED norm, n·Var(w)·E[φ'²]. The norm grows by its "
                      "square root.", near=1.25, rel=0.01),
              Mistake("Not quite. Square the slope: E[φ'²] = (1² + a²)/2 = (1 + 0.25)/2, not (1 + a)/2.",
                      near=math.sqrt(1.5), rel=0.01),
              Mistake("Not quite. He's Var(w) = 2/n gives n·Var(w) = 2: multiply E[φ'²] = 0.625 by 2 before the "
                      "root.", near=math.sqrt(0.625), rel=0.01)),
    text="""
    Lesson 02 Ex 3: leaky ReLU with negative slope a = 0.5 under He's init, Var(w) = 2/fan_in: the
    per-layer growth of ‖∂L/∂z‖ going back. Half the units pass slope 1, half slope a:
    E[φ'²] = (1 + a²)/2, so the factor is √(n·Var(w)·(1 + a²)/2) = √1.25 = 1.118. Measured over
    20 layers of width 64: 1.071 to 1.130 (seeds 0–9, the same on the portable kernels; finite
    width puts most a little below): right within 6 %.

    Praise: E[φ'²] = (1 + 0.5²)/2 = 0.625 and n·Var(w) = 2, so the squared norm grows by 1.25 and the norm by √1.25
    ≈ 1.118 per layer (measured 1.07 to 1.13): He's scale is critical for ReLU only; a leakier unit needs Var(w) =
    2/((1 + a²)·n).

    Hint: Per layer the squared signal is multiplied by n·Var(w)·E[φ'(z)²]. For leaky ReLU half the units have slope
    1 and half slope a = 0.5.
    """)


largest_learning_rate = Number(
    expected=lambda: theory.largest_stable_lr(12.5), name="largest stable learning rate", rel=0.03,
    text="""
    Lesson 02 Ex 4: gradient descent on L(w) = ½·12.5·w²: the largest learning rate that still
    converges? (2/h = 0.16.)

    Praise: α < 2/h = 2/12.5 = 0.16: lr 0.15 shrinks |w| to about 1e-3 in 50 steps, lr 0.17 grows it to about 360.

    Hint: One step multiplies w by (1 − αh). When is |1 − αh| < 1? (1/h is where one step lands exactly on the
    minimum, not the limit.)
    """)


tanh_phase = Choice(
    expected="chaotic", name="phase", options=("ordered", "chaotic"),
    text="""
    Lesson 02 Ex 5 (deep dive): a deep tanh net without biases at σ_w = 5/3, PyTorch's gain for
    tanh: ``"ordered"`` or ``"chaotic"``? (χ*(5/3) = 1.2098 from the fine-grid integral.)

    Praise: χ* ≈ 1.21 > 1: the gain 5/3 sits on the chaotic side of the edge (σ_w = 1 without biases). Over 20
    layers the signal grows about 33× toward layer 1.

    Hint: Without biases the edge of chaos is σ_w = 1. Is 5/3 above or below it? (theory.tanh_chi_fixed_point(5/3)
    tells you χ*.)
    """)


# --- lesson 03 ---


value_clip_angle = Number(
    expected=lambda: theory.clip_angle(np.array([4.0, 1.0]), "value", 1.0), name="angle (degrees)", rel=0.03,
    text="""
    Lesson 03: g = (4, 1) clipped by value at 1: the angle in degrees between g and the result?

    Praise: (4, 1) becomes (1, 1): from 14° to 45°, a turn of about 31°.

    Hint: Clip each component to [−1, 1], then compare the directions (arctan of y/x) before and after.
    """)


norm_clip_component = Number(
    expected=lambda: theory.clip_by_norm(np.array([6.0, 8.0]), 5.0)[0], name="first component",
    text="""
    Lesson 03: g = (6, 8) clipped by norm at 5: its first component afterwards?

    Praise: ‖g‖ = 10, so g is halved: (3, 4), same direction.

    Hint: Norm clipping multiplies the whole vector by threshold/‖g‖.
    """)


clipped_step_transfer = Number(
    expected=(0.2 * 0.01) / (0.02 * 0.1), name="the ratio of the final losses", rel=0.1,
    text="""
    Lesson 03 Ex 3: the patient at lr 0.02 with a norm threshold of 0.1, against section 2's run at
    lr 0.2 with a threshold of 0.01: the ratio of their losses after 150 steps. Both clip every step,
    so each step is α·t·g/‖g‖ with the same α·t = 0.002: the same run. Measured 1.0000 on seeds 0–4
    (the losses differ by at most 5e-4, float rounding). Right within 10 %.

    Praise: Every step is clipped in both runs, so each update is α·t·g/‖g‖: only the product α·t = 0.002 matters,
    and the two runs take the same steps. Once clipping acts on every step, the threshold is a step length.

    Hint: When every step is clipped, the update is α·min(1, t/‖g‖)·g = α·t·g/‖g‖. Compare α·t in the two runs.
    """)


def _patient_gradients() -> list:
    """Lesson 02's patient (10 ReLU layers of 64, 1.2× He's std, seed 0): its parameters, holding
    the gradient of one cross-entropy pass on the spirals. Total norm 26.18."""
    import torch

    from . import data, models

    spirals = data.cached_spirals(512)
    net = models.mlp(10, 64, activation="relu", init="normal", weight_std=1.2 * math.sqrt(2.0), seed=0)
    torch.nn.functional.cross_entropy(net(spirals.x), spirals.y).backward()
    return [p.grad.detach().clone() for p in net.parameters()]


def _fresh(grads: list) -> list:
    import torch

    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params.append(p)
    return params


def _call_by_hand(function: Callable, parameters: list, max_norm: float) -> tuple[Any, bool]:
    """``function(parameters, max_norm)`` and whether it called torch.nn.utils.clip_grad_norm_
    (watched for the duration of the call only, and always restored)."""
    import torch

    original, calls = torch.nn.utils.clip_grad_norm_, []

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        return function(parameters, max_norm), bool(calls)
    finally:
        torch.nn.utils.clip_grad_norm_ = original


@exercise
def clip_by_norm_function(answer: Any) -> Feedback:
    """Lesson 03 Ex 4 (code): ``answer(parameters, max_norm)`` clips the gradients in place as
    ``torch.nn.utils.clip_grad_norm_`` does and returns the total norm BEFORE clipping. Checked on
    lesson 02's patient at step 0 (total norm 26.18), at a threshold that clips (1) and at one that
    must not (100), against torch's own result.

    >>> import torch
    >>> def mine(parameters, max_norm):
    ...     grads = [p.grad for p in parameters if p.grad is not None]
    ...     total = torch.sqrt(sum((g ** 2).sum() for g in grads)).item()
    ...     for g in grads:
    ...         g.mul_(min(1.0, max_norm / (total + 1e-6)))
    ...     return total
    >>> clip_by_norm_function(mine)
    Right: total norm before clipping = 26.18. Same gradients as torch.nn.utils.clip_grad_norm_, at both thresholds.
    >>> clip_by_norm_function(lambda parameters, max_norm: ...).correct is None     # the skeleton, not written yet
    True
    """
    import torch

    name = "your clip_by_norm function"
    if answer is None:
        return missing(name)
    if not callable(answer):
        return Feedback(False, "Pass the function itself, without brackets: "
                               f"exercises.clip_by_norm_function(clip_by_norm); got {describe(answer)}.")
    grads = _patient_gradients()
    for max_norm in (1.0, 100.0):                       # one threshold that clips, one that must not
        mine, theirs = _fresh(grads), _fresh(grads)
        expected_total = float(torch.nn.utils.clip_grad_norm_(theirs, max_norm))
        try:
            total, called = _call_by_hand(answer, mine, max_norm)
        except Exception as error:  # noqa: BLE001 (a learner's code may raise anything: it becomes a hint)
            return Feedback(False, f"Not quite: your function raised {type(error).__name__}: "
                                   f"{describe(str(error), 120)}. Run it on its own to see where, then try again.")
        if called:
            return Feedback(False, "Not quite: that calls torch.nn.utils.clip_grad_norm_ itself. Write it by hand: "
                                   "the total norm, the factor min(1, max_norm/‖g‖), and g.mul_(factor).")
        try:
            untouched = all(p.grad is not None and torch.equal(p.grad, g) for p, g in zip(mine, grads))
        except Exception:  # noqa: BLE001 (whatever the function left in .grad, the answer is a Feedback)
            untouched = False
        if total is None or total is Ellipsis:
            if untouched and max_norm == 1.0:
                return Feedback(None, f"Fill in {name}: its body still has `...` (or returns None) and "
                                      "leaves the gradients as they were.")
            return Feedback(False, "Not quite: return the total norm before clipping (one number).")
        try:
            value = as_number(total)
        except Exception:  # noqa: BLE001 (Unreadable, or an object whose float() raises)
            return Feedback(False, "Not quite: return the total norm before clipping as one number; "
                                   f"got {describe(total)}.")
        if not math.isclose(value, expected_total, rel_tol=1e-3):
            if math.isclose(value, min(max_norm, expected_total), rel_tol=1e-3):
                return Feedback(False, f"Not quite: you returned the norm after clipping ({value:.4g}); "
                                       "torch returns the norm BEFORE clipping, which tells you how hard it clipped.")
            return Feedback(False, f"Not quite: your total norm {value:.4g} is not torch's {expected_total:.4g}: "
                                   "take the norm of ALL gradients together, √(Σ‖g_p‖²), before clipping.")
        try:
            same = all(p.grad is not None and p.grad.shape == q.grad.shape
                       and torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7) for p, q in zip(mine, theirs))
        except Exception:  # noqa: BLE001
            same = False
        if not same:
            hint = ("you changed gradients whose total norm is already below the threshold: the factor is "
                    "min(1, max_norm/‖g‖)" if max_norm == 100.0 else
                    "multiply EVERY parameter's .grad in place (g.mul_(factor)) by the same factor max_norm/‖g‖")
            return Feedback(False, f"Not quite: your gradients differ from torch's at max_norm = {max_norm:g}: {hint}.")
    return check_number(value, 26.18, name="total norm before clipping", rel=0.01,
                        praise="Same gradients as torch.nn.utils.clip_grad_norm_, at both thresholds.")


# --- lesson 04 ---


bn_tanh_default_ratio = Ratio(
    expected=lambda: theory.small_signal_factor("tanh", "default", 32) ** 9, factor=2.5,
    name="the first/last signal ratio", example='0.007 or "0.5**9"',
    text="""
    Lesson 04 Ex 1: a width-32 tanh MLP with PyTorch's default init and no BN, 10 hidden layers:
    ‖∂L/∂z₁‖/‖∂L/∂z₁₀‖ at initialisation. Theory (1/√3)⁹ = 7.1e-3; measured 5.0e-3 (seed 0;
    3.1e-3 and 4.7e-3 for seeds 1, 2). Right within a factor 2.5.

    Praise: tanh'(0) = 1, so χ = √(n·Var(w)) = √(1/3) ≈ 0.577 per layer and 0.577⁹ ≈ 7e-3 (measured 5e-3): tanh
    vanishes too, only far more slowly than the sigmoid's 0.144 per layer.

    Hint: Use χ = φ'(0)·√(n·Var(w)) with tanh'(0) = 1 (not the sigmoid's 1/4) and n·Var(w) = 1/3, over the 9 steps
    from layer 10 back to layer 1.
    """)


#: Lesson 04 Ex 2's hint, for an answer either side of the band.
_BN_GROWTH_STEPS = ("There are 29 layer-to-layer steps between layer 30 and layer 1, each multiplying by "
                    "√(π/(π−1)) ≈ 1.21.")
bn_relu_growth_ratio = Band(
    name="the first/last ratio at depth 30", low=80, high=300, example='259 or "1.2**29"',
    right=lambda v: (f"Right: {v:.3g}. The formula gives 1.211²⁹ ≈ 259; the measured ratio is 88–101 over three "
                     "seeds, because the first layer (it reads the raw 2-D input) and the last (it feeds the head) "
                     "sit below the line the middle layers follow. Either way the first layer starts with ~100× "
                     "the last one's gradient."),
    above=lambda v: f"Not quite: {v:.3g} is too large. {_BN_GROWTH_STEPS}",
    below=lambda v: f"Not quite: {v:.3g} is too small. {_BN_GROWTH_STEPS}",
    text="""
    Lesson 04 Ex 2: ‖∂L/∂W₁‖/‖∂L/∂W₃₀‖ of a 30-layer ReLU+BN MLP (width 64) at initialisation.
    Yang et al.'s factor gives 1.211²⁹ ≈ 259; measured 88, 99, 101 (seeds 0–2): layer 1 and the last
    layer sit off the line. Right from 80 to 300, so both the formula and the measurement count.
    """)


@exercise
def bn_running_mean(answer: Any, *, batch_mean: float = 2.0, passes: int = 3,
                    momentum: float = 0.1) -> Feedback:
    """Lesson 04: a fresh BatchNorm layer (running mean 0) sees ``passes`` training-mode forward
    passes whose batch mean is ``batch_mean`` each time. What is its running mean then?

    >>> bn_running_mean(0.542).correct, bn_running_mean(2.0).correct
    (True, False)
    """
    passes = _checks.integer("passes", passes, low=1)
    batch_mean = _checks.number("batch_mean", batch_mean)
    expected = 0.0
    for _ in range(passes):
        expected = theory.batchnorm_running_update(expected, batch_mean, momentum)
    return check_number(answer, expected, name="the running mean", rel=0.02,
                        praise="The running statistics move slowly (momentum 0.1), and every "
                               "training-mode forward pass moves them, even under torch.no_grad().",
                        hint="Apply running ← 0.9·running + 0.1·batch_mean once per pass, "
                             f"{passes} times, starting from 0.")


adam_rescues_sigmoid = Choice(
    expected="no", name="whether Adam rescues it", options=("yes", "no"),
    text="""
    Lesson 04 Ex 4: does Adam (lr 1e-2, 100 full-batch steps) rescue the 10-layer sigmoid network
    without BN (width 32, default init)? Measured: no, the loss stays at ln 2 to four digits on seeds
    0–4 at lr 1e-3 and 1e-2 (400 steps).

    Praise: Adam gives each weight a step of about its learning rate only where the gradient is well above ε = 1e-8;
    layer 1's entries are 1e-10 or smaller. And the forward pass has collapsed too: at layer 10 the examples differ
    by about 1e-8, so the last layers cannot tell the inputs apart, whatever step they take. BN fixes both, forward
    and backward.

    Hint: Look at section 1's right panel (how much the examples still differ at layer 10) as well as the left one.
    Can a better step for the last layers separate inputs that reach them as the same vector?
    """)


def _bn_cases():
    """The batches the BatchNorm coding exercise is checked on: (z, γ, β, running mean, running var,
    training). The lesson's worked batch on a fresh layer, then a random batch with random γ, β and
    running statistics, in training mode and in eval mode."""
    import torch

    generator = torch.Generator().manual_seed(0)
    worked = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 0.0]])
    z = 3 * torch.randn(16, 5, generator=generator) + 2
    gamma, beta = torch.rand(5, generator=generator) + 0.5, torch.randn(5, generator=generator)
    mean, var = torch.randn(5, generator=generator), torch.rand(5, generator=generator) + 0.5
    return [(worked, torch.ones(2), torch.zeros(2), torch.zeros(2), torch.ones(2), True),
            (z, gamma, beta, mean, var, True), (z, gamma, beta, mean, var, False)]


def _bn_reference(z, gamma, beta, mean, var, training):
    """What ``nn.BatchNorm1d`` returns for the case, and its running statistics afterwards."""
    import torch

    bn = torch.nn.BatchNorm1d(z.shape[1])
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.train(training)
        out = bn(z)
    return out, bn.running_mean.clone(), bn.running_var.clone()


def _bn_diagnose(out, new_mean, new_var, case) -> str:
    """A hint naming the usual mistake that reproduces the learner's wrong result."""
    import torch

    z, gamma, beta, mean, var, training = case
    close = functools.partial(torch.allclose, atol=1e-4, rtol=1e-4)
    batch_mean, biased, unbiased = z.mean(0), z.var(0, unbiased=False), z.var(0, unbiased=True)
    if not training:
        if close(out, gamma * (z - batch_mean) / torch.sqrt(biased + 1e-5) + beta):
            return ("in eval mode you normalised with the batch's own statistics: eval mode uses the running "
                    "mean and variance, so a prediction does not depend on the rest of the batch.")
        return "in eval mode the output is γ·(z − running mean)/√(running var + eps) + β."
    if close(out, gamma * (z - batch_mean) / torch.sqrt(unbiased + 1e-5) + beta):
        return ("you normalised with the unbiased variance: BatchNorm normalises with the BIASED one (divide by "
                "B, unbiased=False); the unbiased one only goes into the running variance.")
    row_mean, row_var = z.mean(1, keepdim=True), z.var(1, unbiased=False, keepdim=True)
    if close(out, gamma * (z - row_mean) / torch.sqrt(row_var + 1e-5) + beta):
        return ("you normalised each example over its features (that is LayerNorm). BatchNorm takes the mean and "
                "variance of each feature over the batch: dim=0.")
    expected_out, expected_mean, expected_var = _bn_reference(*case)
    if not close(out, expected_out):
        return ("the training-mode output differs: subtract each feature's batch mean, divide by √(batch variance "
                "+ eps), then multiply by γ and add β.")
    if close(new_mean, 0.1 * mean + 0.9 * batch_mean):
        return "the momentum goes the other way: running ← (1 − 0.1)·running + 0.1·batch value."
    if not close(new_mean, expected_mean):
        return "the running mean should move a tenth of the way to the batch mean: 0.9·running + 0.1·batch mean."
    if close(new_var, 0.9 * var + 0.1 * biased):
        return ("the running variance takes the UNBIASED batch variance (divide by B − 1), although the output is "
                "normalised with the biased one.")
    return "the running variance should be 0.9·running var + 0.1·(the unbiased batch variance)."


@exercise
def batchnorm_forward(fn: Any) -> Feedback:
    """Lesson 04 coding exercise: ``fn(z, gamma, beta, running_mean, running_var, training)`` returns
    ``(output, new running_mean, new running_var)`` as ``nn.BatchNorm1d`` (momentum 0.1, eps 1e-5)
    does: in training mode on the lesson's worked batch (feature 0 → −1.069, −0.535, 0.0, 1.604) and
    on a random batch with random γ, β and running statistics, then in eval mode on that batch.

    >>> import torch
    >>> def solution(z, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    ...     if training:
    ...         mean, var = z.mean(dim=0), z.var(dim=0, unbiased=False)
    ...         running_mean = (1 - momentum) * running_mean + momentum * mean
    ...         running_var = (1 - momentum) * running_var + momentum * z.var(dim=0, unbiased=True)
    ...     else:
    ...         mean, var = running_mean, running_var
    ...     return gamma * (z - mean) / torch.sqrt(var + eps) + beta, running_mean, running_var
    >>> batchnorm_forward(solution).correct, batchnorm_forward(lambda *args: args[0]).correct
    (True, False)
    """
    import torch

    unusable = not_a_function(fn, "your batchnorm_forward function")
    if unusable is not None:
        return unusable
    for case in _bn_cases():
        z, gamma, beta, mean, var, training = case
        mode = "training" if training else "eval"
        try:
            returned = fn(z.clone(), gamma.clone(), beta.clone(), mean.clone(), var.clone(), training)
        except Exception as error:  # noqa: BLE001 (a learner's code may raise anything: say so, no traceback)
            unfinished = skeleton("your batchnorm_forward function", error=error)
            if unfinished is not None:
                return unfinished
            return Feedback(False, f"Not quite: your function raised {type(error).__name__}: {describe(error, 120)} "
                                   f"(in {mode} mode). Run it on its own to see where.")
        unfinished = skeleton("your batchnorm_forward function", result=returned)
        if unfinished is not None:
            return unfinished
        parts = returned if isinstance(returned, (tuple, list)) else ()
        if len(parts) != 3 or not all(isinstance(p, torch.Tensor) for p in parts):
            return Feedback(False, "Not quite: return three tensors, (output, new running_mean, new running_var); "
                                   f"got {describe(returned)}.")
        out, new_mean, new_var = parts
        expected_out, expected_mean, expected_var = _bn_reference(*case)
        shapes = (out.shape, new_mean.shape, new_var.shape)
        if shapes != (expected_out.shape, expected_mean.shape, expected_var.shape):
            return Feedback(False, f"Not quite: the output should have z's shape {tuple(z.shape)} and each running "
                                   f"statistic one value per feature ({z.shape[1]},); got "
                                   f"{', '.join(str(tuple(s)) for s in shapes)}.")
        close = functools.partial(torch.allclose, atol=1e-4, rtol=1e-4)
        if not (close(out.detach().float(), expected_out) and close(new_mean.detach().float(), expected_mean)
                and close(new_var.detach().float(), expected_var)):
            hint = _bn_diagnose(out.detach().float(), new_mean.detach().float(), new_var.detach().float(), case)
            return Feedback(False, f"Not quite ({mode} mode): {hint}")
    return Feedback(True, "Right: the same output and running statistics as nn.BatchNorm1d, in training mode "
                          "(the batch's own mean and biased variance; the running ones move 10 % of the way, the "
                          "variance with B − 1) and in eval mode (the running statistics).")


def _bn_backward_cases():
    """(dy, z, γ) for the BatchNorm backward exercise: section 1's batch with a fixed upstream
    gradient, then a random batch of 16 with 5 features and random γ."""
    import torch

    generator = torch.Generator().manual_seed(1)
    worked = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [6.0, 0.0]])
    z = 3 * torch.randn(16, 5, generator=generator) + 2
    return [(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 2.0], [0.5, -1.0]]), worked, torch.ones(2)),
            (torch.randn(16, 5, generator=generator), z, torch.rand(5, generator=generator) + 0.5)]


def _bn_backward_parts(dy, z, gamma, eps=1e-5):
    """The three paths of BatchNorm's backward pass (training mode), per feature: the direct one through
    z_i, the one through the batch mean and the one through the batch std."""
    import torch

    sigma = torch.sqrt(z.var(0, unbiased=False) + eps)
    z_hat = (z - z.mean(0)) / sigma
    g = gamma * dy
    return g / sigma, -g.mean(0) / sigma, -z_hat * (g * z_hat).mean(0) / sigma


@exercise
def batchnorm_backward(fn: Any) -> Feedback:
    """Lesson 04 Ex 6 (optional, code): ``fn(dy, z, gamma)`` returns ∂L/∂z of a training-mode BatchNorm
    layer (eps 1e-5) given the upstream gradient ``dy = ∂L/∂y``, as autograd computes it, on section 1's
    batch and on a random one. The check names a missing path (the batch mean's, the batch std's, γ).

    >>> import torch
    >>> def solution(dy, z, gamma, eps=1e-5):
    ...     sigma = torch.sqrt(z.var(0, unbiased=False) + eps)
    ...     z_hat, g = (z - z.mean(0)) / sigma, gamma * dy
    ...     return (g - g.mean(0) - z_hat * (g * z_hat).mean(0)) / sigma
    >>> batchnorm_backward(solution).correct, batchnorm_backward(lambda dy, z, gamma: dy).correct
    (True, False)
    """
    import torch

    unusable = not_a_function(fn, "your batchnorm_backward function")
    if unusable is not None:
        return unusable
    close = functools.partial(torch.allclose, atol=1e-5, rtol=1e-4)
    for dy, z, gamma in _bn_backward_cases():
        leaf = z.clone().requires_grad_(True)
        torch.nn.functional.batch_norm(leaf, None, None, gamma, torch.zeros_like(gamma), True, 0.1, 1e-5).backward(dy)
        expected = leaf.grad
        try:
            returned = fn(dy.clone(), z.clone(), gamma.clone())
        except Exception as error:  # noqa: BLE001 (a learner's code may raise anything: say so, no traceback)
            return Feedback(False, f"Not quite: your function raised {type(error).__name__}: {describe(error, 120)}. "
                                   "Run it on its own to see where.")
        if returned is None or returned is Ellipsis:
            return Feedback(None, "Fill in your batchnorm_backward function: it returns nothing yet. Return ∂L/∂z, "
                                  "a tensor of z's shape.")
        if not isinstance(returned, torch.Tensor) or returned.shape != z.shape:
            return Feedback(False, f"Not quite: return one tensor of z's shape {tuple(z.shape)}, ∂L/∂z; got "
                                   f"{describe(returned)}.")
        got = returned.detach().float()
        if close(got, expected):
            continue
        direct, through_mean, through_std = _bn_backward_parts(dy, z, gamma)
        if close(got, direct):
            hint = ("you treated the batch mean and std as constants. Both depend on every z_i of the batch: "
                    "add the path through μ (∂μ/∂z_i = 1/B) and the one through σ (∂σ/∂z_i = ẑ_i/B).")
        elif close(got, direct + through_mean):
            hint = ("the path through the batch std is missing: σ depends on z_i too (∂σ/∂z_i = ẑ_i/B), which "
                    "removes from the gradient its component along ẑ.")
        elif close(got, direct + through_std):
            hint = "the path through the batch mean is missing: μ depends on z_i (∂μ/∂z_i = 1/B)."
        elif close(got * gamma, expected):
            hint = "multiply by γ: y = γ·ẑ + β, so ∂L/∂ẑ = γ·∂L/∂y."
        else:
            hint = ("compare your result with autograd's on a small batch (z.requires_grad_(), batch_norm, "
                    "backward(dy)).")
        return Feedback(False, f"Not quite: {hint}")
    return Feedback(True, "Right: the same ∂L/∂z as autograd. Its three paths subtract from γ·dy its batch mean and "
                          "its component along ẑ, then divide by σ: so Σ_i ∂L/∂z_i = 0, Σ_i ẑ_i·∂L/∂z_i = 0, and a "
                          "layer whose weights are doubled (σ doubled) gets half the gradient.")


# --- lesson 05 ---


resnet_plain30_ratio = Ratio(
    expected=lambda: theory.small_signal_factor("relu", "default", 32) ** 29, factor=4.0,
    name="the first/last signal ratio", example='5e-12 or "0.4**29"',
    text="""
    Lesson 05 Ex 1: plain-30 (ReLU, width 32, PyTorch's default init, no BN):
    ‖∂L/∂z₁‖/‖∂L/∂z₃₀‖ at initialisation. Theory √(1/6)²⁹ = 5.2e-12; one draw lies from 11× below to
    3.6× above it (seeds 0–9: 0.09–3.6× the theory, 1.8e-11 on seed 0), their geometric mean 0.6×.
    Right within a factor 4 of the theory.

    Praise: √(1/6)²⁹ ≈ 5e-12: twelve orders of magnitude after 30 layers, where res-50 keeps ×2. One draw at width
    32 lies anywhere from about 11× below to 4× above it (seeds 0–9); the theory is the typical value, not every
    draw's.

    Hint: Each plain ReLU layer multiplies the signal by √(n·Var(w)/2) = √(1/6) ≈ 0.41 with the default init;
    plain-30 has 29 steps between layer 30 and layer 1.
    """)


resnet_he_branch_factor = Number(
    expected=lambda: theory.residual_block_factor(32, "kaiming"), name="the factor per block", rel=0.1,
    text="""
    Lesson 05 Ex 2: residual blocks whose two branch layers use He's init (n·Var(w) = 2) instead
    of the default 1/3: the factor per block. Theory √(1 + ½·2²) = √3 ≈ 1.73; measured 1.84, 1.59,
    1.62 per block over 10 blocks (seeds 0–2). Right within 10 %.

    Praise: √(1 + ½·(n·Var(w))²) = √3: over the 9 steps between 10 blocks about ×140. Skips are not magic: a branch
    as loud as the stream makes the gradient grow block after block. Residual networks keep their branches small
    (default-scale or scaled-down branches, a zero-initialised last BN γ, Fixup).

    Hint: Use the lesson's χ_block = √(1 + ½·(n·Var(w))²), now with n·Var(w) = 2 (He), and take the square root at
    the end.
    """)


resnet_deep_stream_ratio = Ratio(
    expected=lambda: theory.residual_block_factor(32) ** 49, factor=1.8,
    name="the block 1 / block 50 signal ratio", example='3.8 or "1.03**49"',
    text="""
    Lesson 05 Ex 3: a residual network of 50 blocks (width 32, default init, no BN): the signal in
    the stream at block 1 over the signal at block 50, at initialisation. Theory 1.0274⁴⁹ = 3.76;
    measured 3.6, 2.8, 4.2, 4.3, 2.7 (seeds 0–4). Right within a factor 1.8 (25 blocks' 1.97 is not).

    Praise: 49 steps of χ_block = √(1 + 1/18) ≈ 1.027: about ×3.8. The identity path keeps a network of 101 linear
    layers within a factor of a few, where a plain one of that depth would lose forty orders of magnitude.

    Hint: Between block 50 and block 1 there are 49 block-to-block steps, each ×χ_block = √(1 + ½·(n·Var(w))²) with
    n·Var(w) = 1/3.
    """)


resnet_wide_plain_ratio = Ratio(
    expected=lambda: theory.small_signal_factor("relu", "default", 128) ** 39, factor=4.0,
    name="the first/last signal ratio", example='7e-16 or "0.4**39"',
    text="""
    Lesson 05 Ex 4: plain-40 at width 128 (ReLU, default init, no BN): ‖∂L/∂z₁‖/‖∂L/∂z₄₀‖ at
    initialisation. The width cancels in n·Var(w) = 1/3: theory √(1/6)³⁹ = 6.7e-16; measured 0.27–3.3×
    the theory (seeds 0–4; 0.92× on seed 0). Right within a factor 4.

    Praise: The width cancels: PyTorch's default gives Var(w) = 1/(3n), so n·Var(w) = 1/3 and χ = √(1/6) ≈ 0.41 per
    layer at any width; 39 steps give about 7e-16. A wider network does not vanish less; its draws only scatter a
    little less.

    Hint: χ = √(n·Var(w)/2) with the default Var(w) = 1/(3n): what is n·Var(w) at width 128? Then count the steps
    from layer 40 back to layer 1.
    """)


# --- lesson 06 ---


rnn_bound_after_steps = Number(
    expected=lambda: theory.bptt_bound(21, 0.8, "tanh")[0], name="the bound", rel=0.05,
    text="""
    Lesson 06: a tanh RNN whose recurrent matrix has largest singular value 0.8. At most what
    fraction of ‖∂L/∂h_T‖ can reach 20 steps earlier? (The bound over 21 states, λ₁²⁰ = 0.0115.)

    Praise: Each step back multiplies by Wᵀ·diag(tanh'), whose norm is at most λ₁·1, so twenty steps give at most
    λ₁²⁰.

    Hint: One step back is bounded by λ₁·γ with γ = 1 for tanh; multiply 20 such factors.
    """)

#: Lesson 06 Ex 2: seed 0's measured ratio (seeds 0–4: 4.6e-10 to 1.02e-9, the same on portable kernels),
#: and the bound 0.5²⁹ that no tanh RNN with λ₁ = 0.5 exceeds over the 29 steps from h_30 back to h_1.
RNN_T30_MEASURED, RNN_T30_BOUND = 5.55e-10, 0.5 ** 29
rnn_ratio_t30 = Band(
    name="the first/last ratio", example='"0.5**29"',
    low=RNN_T30_MEASURED / 3, high=RNN_T30_BOUND + two_digits(RNN_T30_BOUND) * (1 + 1e-9),
    right=(f"Right: measured {RNN_T30_MEASURED:.2g} (seeds 0–4: 4.6e-10 to 1.0e-9). 29 steps back at the measured "
           "0.48 per step give 0.48²⁹ ≈ 6e-10, a little below the bound 0.5²⁹ ≈ 1.9e-9 because tanh' < 1. The decay "
           "per step does not depend on T; only the number of steps does."),
    above=lambda v: (f"Not quite: {v:.3g} is above the bound 0.5²⁹ ≈ 1.9e-9, which no tanh RNN with λ₁ = 0.5 can "
                     "exceed. Count the steps back from h_30 to h_1: there are 29."),
    below=lambda v: (f"Not quite: {v:.3g} is too small. Count the steps back from h_30 to h_1 (29 of them) and use "
                     "the factor per step that section 1 measured at λ₁ = 0.5, about 0.48."),
    text="""
    Lesson 06, Exercise 2 (predict, then measure): the plain tanh RNN with λ₁ = 0.5 (orthogonal
    × 0.5), on sequences of length 30 instead of 50. What is ‖∂L/∂h_1‖/‖∂L/∂h_30‖ at
    initialisation? Measured 5.55e-10 at seed 0 and 4.6e-10 to 1.02e-9 over seeds 0–4 (the same on
    portable kernels). Right from a third of seed 0's value up to the bound 0.5²⁹ = 1.86e-9 (to two
    digits): the measured factor 0.48²⁹ and the bound both count; a ratio above the bound cannot be.
    """)


forget_bias_memory = Number(
    expected=lambda: theory.steps_to_shrink(theory.forget_gate_factor(3.0), 0.01), name="the number of steps",
    rel=0.1,
    text="""
    Lesson 06: an LSTM's forget gate sits at σ(b_f). With b_f = 3, about how many steps back does
    the cell-state path take to shrink a gradient to 1 % of its value? (σ(3)ⁿ = 0.01: n = 94.8.)

    Praise: A forget gate near 1 is an almost loss-free path back in time: that is the point of the additive cell
    state.

    Hint: The factor per step is σ(b_f) = 1/(1+e^(−b_f)); solve factor**n = ratio for n.
    """)


forget_bias_two_factor = Number(
    expected=0.95, name="the factor per step back", rel=0.08,
    text="""
    Lesson 06 Ex 4: an LSTM (hidden 32) with forget-gate bias b_f = 2 on the adding problem, T = 50:
    the factor per step back of ‖∂L/∂h_t‖ at initialisation. The guide σ(2) = 0.881; measured 0.967,
    0.944, 0.947, 0.980 (seeds 0–3), a little above it as b_f = 1 and 3 are. Right within 8 % of 0.95
    (0.874–1.03): the guide and the measurement both count, b_f = 1's 0.83 does not.

    Praise: σ(2) ≈ 0.88 is the cell path's guide; the measured factor sits a little above it (0.94–0.98 over four
    seeds), as it does for b_f = 1 and 3: the gates add paths of their own. Over 49 steps that is the difference
    between 2e-3 and about 0.1.

    Hint: At initialisation the forget gate sits near σ(b_f). What is σ(2), and where did the measured factors for
    b_f = 1 and b_f = 3 sit relative to σ(1) and σ(3)?
    """)


# --- lesson 07 ---
# The expected answers come from the gradient doctor and from the runs themselves.


#: Other words for the doctor's verdicts (compared after :func:`normalise`).
PROBLEM_ALIASES = {
    "dead relu": "dead_relu", "dead relus": "dead_relu", "dying relu": "dead_relu", "dying relus": "dead_relu",
    "dead units": "dead_relu", "dead neurons": "dead_relu",
    "vanishing gradient": "vanishing", "vanishing gradients": "vanishing", "vanish": "vanishing",
    "exploding gradient": "exploding", "exploding gradients": "exploding", "explosion": "exploding",
    "explode": "exploding", "saturated": "saturation", "saturating": "saturation",
}


def _first_signal(run) -> np.ndarray | None:
    """‖∂L/∂z‖ of every hidden layer at the run's first recorded step, or None if not recorded."""
    trace = getattr(run, "trace", None)
    try:
        signal = np.asarray(trace.get("output_grad_norm"), dtype=float)[0, :-1]
    except Exception:  # noqa: BLE001 (no trace, no such quantity, no recorded step: not measured)
        return None
    if len(signal) < 2 or not np.all(np.isfinite(signal[[0, -1]])) or np.any(signal[[0, -1]] <= 0):
        return None
    return signal


def accepted_diagnoses(run) -> tuple[str, ...]:
    """The verdicts that count as right for ``run``: the doctor's problem and every problem it says
    also holds (a saturated run in the chaotic phase is also exploding, lesson 02)."""
    return doctor.diagnose(run).problems


def _is_run(run) -> bool:
    return hasattr(run, "losses") and hasattr(run, "trace")


@exercise
def mystery_diagnoses(answer: Any, runs: dict) -> Feedback:
    """Lesson 07: your diagnosis of every mystery run, e.g. ``{"A": "vanishing", ...}``.

    Right when every patient's problem matches :func:`gradcourse.diagnose` of its run (patient C,
    saturated in the chaotic phase, may also be called "exploding": it is both). Patient names and
    verdicts are read without case ("a": "Dead ReLUs" is fine).

    >>> mystery_diagnoses({"A": "healthy"}, {}).message  # doctest: +ELLIPSIS
    "This check cannot run: runs should be the dict of mystery runs ({'A': Run, ...}, ...); got {}. ..."
    """
    expected_runs = "the dict of mystery runs ({'A': Run, ...}, from mystery_runs())"
    if not isinstance(runs, dict) or not runs or not all(_is_run(r) for r in runs.values()):
        return cannot_check("runs", expected_runs, runs)
    problems = doctor.PROBLEMS
    name = "the mystery diagnoses"
    example = "{'A': 'vanishing', 'B': ...}"
    if answer is None or (isinstance(answer, dict) and all(v is None for v in answer.values())):
        return missing(name)
    if not isinstance(answer, dict):
        return Feedback(False, capitalise(f"{name} should be a dict like {example}; got {describe(answer)}."))
    patients = {str(p).strip().upper(): p for p in runs}
    given_by_patient = {}
    for key, value in answer.items():
        patient = patients.get(str(key).strip().upper())
        if patient is None:
            return Feedback(False, f"There is no patient {describe(key)}: the patients are "
                                   f"{', '.join(map(str, runs))}.")
        given_by_patient[patient] = value
    missing_names = [str(p) for p in runs if given_by_patient.get(p) is None]
    if missing_names:
        return Feedback(None, f"Fill in a diagnosis for patient(s) {', '.join(missing_names)} too.")
    choices = {normalise(p): p for p in problems}
    choices.update({alias: p for alias, p in PROBLEM_ALIASES.items() if p in problems})
    hints = {
        "vanishing": "its signal per layer falls by many powers of ten toward layer 1, yet no unit "
                     "is saturated or dead",
        "exploding": "look for a NaN (✕ on the loss) or a signal that grows toward layer 1",
        "saturation": "look at the saturated-units bars: are more than half the units flat?",
        "dead_relu": "look at the dead-units bars at the end of training",
        "healthy": "nothing in its plots crosses a threshold",
    }
    wrong, both = [], []
    for patient, run in runs.items():
        given = given_by_patient[patient]
        verdict = choices.get(normalise(given)) if isinstance(given, str) else None
        if verdict is None:
            return Feedback(False, f"Patient {patient}: the answer should be one of "
                                   f"{', '.join(map(repr, problems))}; got {describe(given)}.")
        accepted = accepted_diagnoses(run)
        if verdict not in accepted:
            wrong.append(f"patient {patient} ({hints.get(accepted[0], 'read its evidence')})")
        elif len(accepted) > 1:
            both.append(f"patient {patient} is both saturated and exploding (the chaotic phase of lesson 02)")
    if wrong:
        return Feedback(False, f"Not quite: {len(wrong)} of {len(runs)} wrong. Look again at "
                               + "; ".join(wrong) + ".")
    note = f" Note: {'; '.join(both)}." if both else ""
    return Feedback(True, f"Right: all {len(runs)} patients diagnosed as the doctor does.{note} Now read "
                          "its evidence: do the numbers match what you saw?")


@exercise
def signal_exponent(answer: Any, run) -> Feedback:
    """Lesson 07: k such that, at step 0, the signal at the first hidden layer is 10**k times the
    one at the last hidden layer (read off a log-scale plot: within ±1 counts).

    >>> signal_exponent(-16, None).correct is None       # no run to read the answer from
    True
    """
    signal = _first_signal(run)
    if signal is None:
        return cannot_check("run", "a Run made by fit(..., probe=True) with the signal recorded at its "
                                   "first step, e.g. runs['A']", run)
    expected = float(np.log10(signal[0] / signal[-1]))
    value = peek(answer)
    if value is not None and value > 0 and abs(value - expected) > 1.0 and abs(math.log10(value) - expected) <= 1.0:
        return Feedback(False, f"Not quite: {describe(answer, 20)} is the ratio 10**k itself. Give the exponent k, "
                               f"the power of ten (e.g. {round(expected)} for a ratio of 10**{round(expected)}).")
    return check_number(answer, expected, name="the exponent k", rel=0.0, abs_tol=1.0,
                        praise="Each decade on the log axis is a factor of ten.",
                        hint="Count the decades (powers of ten) between the first and the last "
                             "hidden layer on the signal curve; a falling curve gives a negative k.")


def _remedy(answer: Any):
    """The registry entry ``answer`` names (name or label, any case, spaces optional), or None."""
    from .remedies import REMEDIES

    if not isinstance(answer, str):
        entry = REMEDIES.get(getattr(answer, "name", None)) if isinstance(getattr(answer, "name", None), str) else None
        return entry if entry is answer else None

    def key(text: str) -> str:
        return normalise(text).replace(" ", "")

    wanted = key(answer)
    return next((r for r in REMEDIES.values() if wanted in (key(r.name), key(r.label))), None)


@exercise
def prescription(answer: Any, patient: str = "D", seed: int = 0, besides_first: bool = False) -> Feedback:
    """Lesson 07: a remedy of :data:`gradcourse.remedies.REMEDIES`, by name or label (any case:
    ``"lower_lr"``, ``"Lower learning rate"``, ``"batchnorm"``), that cures ``patient``.

    The check applies it on the same seed (:func:`gradcourse.patients.treat`): right when the
    doctor then finds the run healthy and the training accuracy rose by at least 0.2. With
    ``besides_first`` the doctor's own first remedy for the patient (which its report shows) does
    not count: the learner must find another cure.

    >>> prescription(["lower_lr"]).correct
    False
    """
    seed = _checks.seed(seed)
    from .patients import patient_name, treat
    from .remedies import REMEDIES

    patient = patient_name(patient)
    name = f"the remedy for patient {patient}"
    if answer is None:
        return missing(name)
    remedy = _remedy(answer)
    if remedy is None:
        labels = ", ".join(repr(r.label) for r in REMEDIES.values())
        return Feedback(False, capitalise(f"{name} should be a remedy's name or label: one of {labels}; "
                                        f"got {describe(answer)}."))
    before = treat(patient, seed=seed)
    if besides_first:
        first = (doctor.diagnose(before).remedies or [None])[0]
        if first is not None and remedy.name == first.name:
            return Feedback(False, f"Not quite: '{remedy.label}' is the doctor's first remedy for patient {patient}, "
                                   "which the question sets aside. Which other remedy in its list would also work?")
    try:
        after = treat(patient, remedy.name, seed)
    except ValueError as error:
        return Feedback(False, f"Not quite: '{remedy.label}' does not apply to patient {patient} ({error}).")
    verdict = doctor.diagnose(after)

    def accuracy(run):
        return run.metrics.get("train_accuracy", math.nan)

    gain = accuracy(after) - (0.5 if math.isnan(accuracy(before)) else accuracy(before))
    if verdict.problem == "healthy" and gain >= 0.2:
        return Feedback(True, f"Right: after '{remedy.label}' the doctor finds patient {patient} healthy "
                              f"and the training accuracy is {accuracy(after):.0%}.")
    status = ("diverged" if after.diverged_at is not None
              else f"reached {accuracy(after):.0%} training accuracy")
    return Feedback(False, f"Not quite: after '{remedy.label}' the run {status} and the doctor says "
                           f"'{verdict.problem}'. Read the evidence again: what made the problem, the network "
                           "it started with or the steps it took? Choose a remedy that changes that.")


# --- lesson 08 ---
# The checks train or probe the learner's digits model with the lesson's own loop (gradcourse.train).


#: Exercise 3 trains the learner's fixed model this long (10 epochs of the digits) and asks this
#: test accuracy of it.
FIXED_MODEL_STEPS = 230
FIXED_MODEL_ACCURACY = 0.9


def _vanishing_depth(*, max_depth: int = 20, seed: int = 0) -> int:
    """The smallest depth at which a sigmoid MLP (width 64, PyTorch's default init) on the digits
    sends back to its first layer less than ``VANISHING_SIGNAL_RATIO`` of the signal at its last
    hidden layer, at step 0 (one probed batch of 256 training images)."""
    from .data import digits
    from .models import digits_model
    from .probes import probe_once

    seed = _checks.seed(seed)
    ds = digits(seed)
    x, y = ds.x[:256], ds.y[:256]
    for depth in range(2, max_depth + 1):
        trace = probe_once(digits_model("mlp", depth, activation="sigmoid", seed=seed), x, y)
        signal = trace.get("output_grad_norm")[0, :-1]
        if signal[0] / signal[-1] < doctor.VANISHING_SIGNAL_RATIO:
            return depth
    return max_depth + 1


@exercise
def vanishing_depth(answer: Any) -> Feedback:
    """Lesson 08, exercise 1: the depth at which the doctor starts calling the sigmoid MLP "vanishing" (±1)."""
    name = "the depth"
    if answer is None:
        return missing(name)
    expected = _vanishing_depth()
    return check_whole_number(answer, expected, name=name, within=1, unit=" of hidden layers", low=1,
                              praise=f"Measured: from {expected} layers on, the first layer hears less than "
                                     f"{doctor.VANISHING_SIGNAL_RATIO:g} of the last layer's signal.",
                              hint="Take the per-layer factor χ from the 12-layer network's signal ratio "
                                   "(ratio = χ^11) and solve χ^(L-1) < 1e-4 for L.")


@exercise
def fixed_model(answer: Any, *, seed: int = 0) -> Feedback:
    """Lesson 08, exercise 3: a model that fixes lesson 08's ``broken_model()``. It is trained here
    (``FIXED_MODEL_STEPS`` steps of :func:`gradcourse.train.train_loop` at its learning rate, the
    lesson's loop, same seed) and must be called healthy and reach ``FIXED_MODEL_ACCURACY`` on the
    test images."""
    import torch
    from torch import nn

    from .data import digits
    from .train import train_loop

    seed = _checks.seed(seed)
    name = "your fixed model"
    if answer is None:
        return missing(name)
    if not isinstance(answer, nn.Module):
        return Feedback(False, f"{name} should be a torch.nn.Module (e.g. an nn.Sequential); "
                               f"got {type(answer).__name__}.")
    ds = digits(seed)
    try:
        with torch.no_grad():
            out = answer(ds.x[:2])
    except Exception as error:  # noqa: BLE001 - any failure of the learner's model becomes feedback
        return Feedback(False, f"{name} cannot read a batch of digits of shape (n, 1, 8, 8): "
                               f"{type(error).__name__}: {error}")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return Feedback(False, f"{name} should return 10 logits per image, shape (n, 10); got {shape}.")
    try:
        outcome = train_loop(answer, ds, steps=FIXED_MODEL_STEPS, seed=seed)
    except Exception as error:  # noqa: BLE001 - any failure of the learner's model or loop becomes feedback
        return Feedback(False, f"{name} could not be probed and trained: {type(error).__name__}: {error}")
    d = doctor.diagnose(outcome.trace, losses=outcome.losses, model=outcome.model)
    if outcome.diverged:
        return Feedback(False, f"Training {name} diverged: {d.headline} Look at the init scale.")
    accuracy = outcome.test_accuracy
    layers = [m for m in answer.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if d.problem == "inconclusive" and len(layers) == 1 and accuracy >= FIXED_MODEL_ACCURACY:
        # one layer has no hidden units: the saturation and dead units the doctor could not measure do not exist
        return Feedback(True, f"Fixed: a single layer has no hidden units to saturate or die, and its gradient "
                              f"reaches {accuracy:.1%} on the test images. (The doctor says 'inconclusive' only "
                              "because it could not look at hidden activations; there are none.) Now try to keep "
                              "the broken model's depth.")
    if d.problem != "healthy":
        return Feedback(False, f"The doctor still finds a problem ({d.problem}): {d.evidence[0]} "
                               f"(test accuracy {accuracy:.0%}).")
    if accuracy < FIXED_MODEL_ACCURACY:
        return Feedback(False, f"The gradients look healthy, but the test accuracy after {FIXED_MODEL_STEPS} "
                               f"steps is {accuracy:.0%} (needed: {FIXED_MODEL_ACCURACY:.0%}). Try BatchNorm "
                               "or ReLU with He init.")
    return Feedback(True, f"Fixed: the doctor calls it healthy and it reaches {accuracy:.1%} on the test "
                          "images.")


# --- lesson 09 ---


shallow_post_ln = Choice(
    expected="yes", name="3-layer Post-LN without warmup", options=("yes", "no"),
    text="""
    Lesson 09, exercise 1: does Post-LN with 3 layers, lr 1e-2 and no warmup solve the task in 300 steps?
    ``"yes"`` or ``"no"`` (measured: yes, seeds 0–2).

    Praise: Shallow Post-LN trains without warmup: the trouble grows with depth.

    Hint: Set layers to 3, warmup to 0, Post-LN, and press Run.
    """)


adam_first_step = Number(
    expected=1e-2 / 100, name="size of the first step", rel=0.01,
    text="""
    Lesson 09, exercise 2: with lr 1e-2 and warmup 100, by how much does Adam's first step move each weight
    (ignoring ε)? Adam's first step is lr·sign(g), and step 0 of the warmup uses lr·1/100.

    Praise: m̂/√v̂ = g/|g| at step 1, so every weight moves by the learning rate itself: 1e-2 · 1/100.

    Hint: After one step Adam's m̂ = g and v̂ = g²; what is m̂/√v̂? Then which learning rate does step 0 of a
    100-step linear warmup use?
    """)


#: Lesson 09, exercise 3: the DeepNorm encoder whose first Adam step the learner predicts.
DEEPNORM_DEPTH, DEEPNORM_LR, FFN2_SHAPE = 12, 1e-2, (32, 128)


def deepnorm_first_step_ratio(depth: int = DEEPNORM_DEPTH, lr: float = DEEPNORM_LR) -> float:
    """‖ΔW‖/‖W‖ of a DeepNorm block's second FFN matrix (32 × 128) after Adam's first step at ``lr``:
    every entry moves by ``lr`` (its gradient is far above ε), so ‖ΔW‖ = lr·√(mn), and the
    Xavier-uniform init with gain β = (8N)^-¼ has ‖W‖ ≈ β·√(2/(m + n))·√(mn).

    >>> round(deepnorm_first_step_ratio(), 3)
    0.28
    """
    fan_out, fan_in = FFN2_SHAPE
    beta = (8 * depth) ** -0.25
    return lr / (beta * math.sqrt(2 / (fan_in + fan_out)))


deepnorm_first_step = Number(
    expected=deepnorm_first_step_ratio, name="‖ΔW‖/‖W‖ after the first step", rel=0.03,
    mistakes=(Mistake(lambda v: (f"Not quite: {v:.3g} is the ratio for a plain Xavier matrix. DeepNorm initialises "
                                 "this matrix smaller, with gain β = (8N)^-¼: its ‖W‖ is β times smaller, so the same "
                                 "step is a larger fraction of it."),
                      near=DEEPNORM_LR / math.sqrt(2 / sum(FFN2_SHAPE))),          # Xavier without DeepNorm's β
              Mistake("Not quite: 1e-2 is how far each entry moves. The question asks for the change of the whole "
                      "matrix relative to its size: ‖ΔW‖/‖W‖, both over all 32 × 128 entries.", near=DEEPNORM_LR)),
    text="""
    Lesson 09, exercise 3 (predict, then measure): a 12-layer DeepNorm encoder, Adam at lr 1e-2, no
    warmup. By what fraction of its size, ‖ΔW‖/‖W‖, does the first step change a block's second FFN
    matrix? Theory 0.280; the probe measures 0.2775 to 0.2828 on seeds 0–4, in the first and the last
    block alike (the same on portable kernels): right within 3 %.

    Praise: Every entry moves by η = 1e-2, so ‖ΔW‖ = η·√(mn); Xavier with gain β = 96^-¼ ≈ 0.32 gives entries of std
    β·√(2/160) ≈ 0.036, so ‖W‖ ≈ 0.036·√(mn), and the ratio is η/0.036 ≈ 0.28, whatever the size of the gradient:
    the smaller the init, the larger Adam's first step is against it.

    Hint: Adam's first step moves every entry by η (when |g| ≫ ε): ‖ΔW‖ = η·√(number of entries). ‖W‖ is the
    entries' std times √(number of entries), and Xavier-uniform with gain β has std β·√(2/(fan_in + fan_out)) with β
    = (8N)^-¼.
    """)


warmup_logits = Choice(
    expected="yes", name="logits above 1000 with warmup", options=("yes", "no"),
    text="""
    Lesson 09, exercise 4: Pre-LN at lr 0.1 *with* a 100-step warmup and no qk-norm: does its largest attention
    logit still pass 1000 within 300 steps? ``"yes"`` or ``"no"`` (measured: yes, about 10⁴, on seeds 0
    and 1, although the loss falls to about 0.6 and 0.3).

    Praise: Warmup delays the growth and lets the task be learned first, but nothing bounds |q·k|: the logits still
    reach ~10⁴. qk-LayerNorm bounds them.

    Hint: Set Pre-LN, lr 0.1, warmup 100, qk-LayerNorm off, press Run and read the right-hand panel.
    """)


# --- lesson 10 ---

def _precision():
    """gradcourse.precision, imported when a lesson 10 key first needs it."""
    from . import precision

    return precision



#: Lesson 10, Exercise 1: the depth at which the learner predicts the underflowing layers.
UNDERFLOW_DEPTH = 8


@functools.lru_cache(maxsize=4)
def _fp16_zero_shares(depth: int) -> tuple[float, ...]:
    """Per hidden layer, the share of weight-gradient entries rounded to 0 at step 0 of lesson 10's
    sigmoid MLP (width 64, 512 spiral points, seed 0) under float16 autocast."""
    from . import precision

    run = precision.train("fp16", depth=depth, steps=1)
    return tuple(precision.zero_share(run.trace, 0)[:-1].tolist())


@exercise
def underflowing_layers(answer: Any, *, depth: int = UNDERFLOW_DEPTH) -> Feedback:
    """Lesson 10, Exercise 1 (predict, then measure): at ``depth`` sigmoid layers, how many hidden
    layers have more than half of their weight-gradient entries rounded to 0 under float16 at step 0?
    Measured here (one probed step); one layer either way counts.

    >>> shares = _fp16_zero_shares(UNDERFLOW_DEPTH)
    >>> right = sum(s > 0.5 for s in shares)
    >>> underflowing_layers(right).correct, underflowing_layers(right + 3).correct, underflowing_layers(None).correct
    (True, False, None)
    """
    depth = _checks.integer("depth", depth, low=2, high=20)
    shares = _fp16_zero_shares(depth)
    expected = sum(s > 0.5 for s in shares)
    name = "the number of layers"
    value = read_answer(answer, name, "3")
    if isinstance(value, Feedback):
        return value
    listed = ", ".join(f"layer{k} {100 * s:.0f}%" for k, s in enumerate(shares, 1))
    if abs(value - expected) <= 1:
        return Feedback(True, f"Right: {expected} of the {depth} layers lose more than half their gradient "
                              f"({listed}). Each sigmoid layer passes back about a seventh of the signal, so "
                              "every layer further from the loss sits a few powers of two lower, and the front "
                              "layers cross float16's 2^-24 first.")
    direction = "too many" if value > expected else "too few"
    return Feedback(False, f"Not quite: {value:g} is {direction}. Use the histogram of section 2: each layer "
                           "further from the loss is shifted left by the factor per layer; count the layers "
                           "whose peak would sit left of 2^-24 at this depth, then run the measuring cell.")


#: Lesson 10, Exercise 2: the depth whose smallest sufficient loss scale the learner predicts.
SCALE_DEPTH = 8


@functools.lru_cache(maxsize=4)
def _smallest_scale(depth: int) -> float:
    from .precision import smallest_scale

    return smallest_scale(depth)


@exercise
def smallest_loss_scale(answer: Any, *, depth: int = SCALE_DEPTH) -> Feedback:
    """Lesson 10, Exercise 2 (predict, then measure): the smallest power-of-two loss scale with which
    one float16 step of the ``depth``-layer sigmoid MLP gives every layer's weight gradient within 1 %
    of float32's (:func:`gradcourse.precision.smallest_scale`, measured). One power of two either
    way counts: the prediction comes from the signal per entry, the measurement decides.

    >>> right = _smallest_scale(SCALE_DEPTH)
    >>> smallest_loss_scale(right).correct, smallest_loss_scale(right * 2).correct, smallest_loss_scale(1).correct
    (True, True, False)
    """
    depth = _checks.integer("depth", depth, low=2, high=20)
    expected = _smallest_scale(depth)
    name = "the loss scale"
    value = read_answer(answer, name, "2**12")
    if isinstance(value, Feedback):
        return value
    if not value > 0 or not math.isfinite(value):
        return Feedback(False, f"Not quite: a loss scale is a positive power of two; got {value:g}.")
    if math.log2(value) != round(math.log2(value)):
        return Feedback(False, f"Not quite: {value:g} is no power of two. A loss scale is one (2**k), so that scaling "
                               "and unscaling change only the exponent and lose nothing.")
    off = math.log2(value) - math.log2(expected)
    if abs(off) <= 1:
        return Feedback(True, f"Right: measured 2^{math.log2(expected):.0f}. Scaling the loss multiplies every "
                              "gradient of the backward pass by the scale (backpropagation is linear in ∂L), so the "
                              "first layer's signal moves that many powers of two to the right, past 2^-24, with "
                              "a few powers to spare for the entries below its average.")
    direction = "larger than needed" if off > 0 else "too small"
    return Feedback(False, f"Not quite: 2^{math.log2(value):.1f} is {direction}. Take the smallest signal per entry "
                           "printed above, count the powers of two up to float16's smallest value 2^-24, and add a "
                           "few: the entries spread below their average.")


bf16_kept_ratio = Number(
    expected=lambda: _precision().limits("bf16").eps / 2, name="the smallest kept update ratio", rel=0.15,
    text="""
    Lesson 10, Exercise 3: the smallest update ratio |Δw|/|w| that a bfloat16 weight keeps
    whatever its value: half the spacing at the bottom of a binade, eps/2 = 2^-8 (from
    ``torch.finfo(torch.bfloat16).eps``); within 15 %.

    Praise: bfloat16 has 8 bits of precision: neighbouring values are 2^-7 apart just above a power of two, and a
    sum is rounded to the nearest one, so an update must be more than half that gap, 2^-8 of the weight, to survive
    for every weight. At 2^-9 almost every update is lost.

    Hint: Count the bits: bfloat16 keeps 8 bits of precision (7 stored, 1 implicit). How far apart are neighbouring
    values just above a power of two, relative to it, and how large must a change be for rounding to the nearest
    value to keep it?
    """)


def _scaler_cases():
    """Lesson 10, Exercise 4's run: a 4-layer sigmoid MLP in float16 autocast on 256 spiral points,
    six steps at fixed scales, two of them so large that the scaled gradients overflow."""
    return (2.0 ** 16, 2.0 ** 40, 2.0 ** 12, 2.0 ** 60, 2.0 ** 16, 1.0)


def _scaler_run(step_fn, scales):
    """Apply ``step_fn(loss, optimizer, scale) -> bool`` on the exercise's run; return the decisions and
    the weights after each step."""
    import torch

    from . import data, models

    net = models.mlp(4, 32, activation="sigmoid", seed=0)
    ds = data.cached_spirals(256, 0)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    decisions, weights = [], []
    for scale in scales:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(net(ds.x), ds.y)
        decisions.append(step_fn(loss, opt, scale))
        weights.append([p.detach().clone() for p in net.parameters()])
    return decisions, weights


def _gradscaler_step(loss, optimizer, scale) -> bool:
    """The reference: torch's GradScaler held at ``scale`` (``update(new_scale=...)``)."""
    import torch

    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    scaler.scale(loss).backward()
    before = scaler.get_scale()
    stepped = []
    hook = optimizer.register_step_post_hook(lambda *a: stepped.append(True))
    scaler.step(optimizer)
    hook.remove()
    scaler.update(new_scale=before)
    return bool(stepped)


@exercise
def static_loss_scaler(fn: Any) -> Feedback:
    """Lesson 10 coding exercise: ``fn(loss, optimizer, scale)`` backpropagates ``loss·scale``,
    skips the step when any gradient holds Inf/NaN (returning False), else divides the gradients by
    ``scale``, steps and returns True. Checked against ``torch.amp.GradScaler`` held at the same
    scale on the same run: the same decisions, the same weights (within 1e-6).

    >>> import torch
    >>> def solution(loss, optimizer, scale):
    ...     (loss * scale).backward()
    ...     grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    ...     if not all(torch.isfinite(g).all() for g in grads):
    ...         return False
    ...     for g in grads:
    ...         g.div_(scale)
    ...     optimizer.step()
    ...     return True
    >>> static_loss_scaler(solution).correct, static_loss_scaler(lambda l, o, s: True).correct
    (True, False)
    """
    import torch

    unusable = not_a_function(fn, "your scaled_step function")
    if unusable is not None:
        return unusable
    scales = _scaler_cases()
    expected, reference = _scaler_run(_gradscaler_step, scales)
    try:
        decisions, weights = _scaler_run(fn, scales)
    except Exception as error:  # noqa: BLE001 (a learner's code may raise anything: say so, no traceback)
        return Feedback(False, f"Not quite: your function raised {type(error).__name__}: {describe(error, 120)}. "
                               "Run it on its own to see where.")
    for i, scale in enumerate(scales):
        decision = bool(decisions[i]) if isinstance(decisions[i], (bool, np.bool_)) else decisions[i]
        if decision != expected[i]:
            return Feedback(False, f"Not quite: at step {i} (scale 2^{math.log2(scale):.0f}) GradScaler "
                                   f"{'steps' if expected[i] else 'skips'} (returns {expected[i]}), yours returned "
                                   f"{describe(decisions[i])}. Skip (return False, no step) exactly when a scaled "
                                   "gradient is Inf or NaN.")
        if not all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(weights[i], reference[i])):
            return Feedback(False, f"Not quite: at step {i} (scale 2^{math.log2(scale):.0f}) you "
                                   f"{'stepped' if expected[i] else 'skipped'} as GradScaler does, but the weights "
                                   "differ from its. Divide every gradient by the scale before optimizer.step(), "
                                   "and leave the weights alone on a skipped step.")
    return Feedback(True, "Right: the same decisions and the same weights as torch.amp.GradScaler at those scales. "
                          "GradScaler adds the dynamic part: it halves the scale after a skip and doubles it after "
                          "2000 clean steps.")
