"""The gradient doctor: read a probed :class:`~gradcourse.train.Run`, name its problem, show why.

``diagnose(run)`` looks at what the probes recorded (the backpropagated signal per layer, the
weight gradients, the update sizes, saturated and dead units, the loss curve, where a NaN
appeared) and returns a :class:`Diagnosis`: one ``problem``, the ``evidence`` (sentences with
the numbers that led there) and ranked ``remedies``, each pointing to the lesson that teaches it.

>>> from gradcourse import data, models
>>> from gradcourse.diagnose import diagnose
>>> from gradcourse.train import fit
>>> run = fit(models.mlp(20, 32, activation="sigmoid", seed=0), data.spirals(256), steps=30, lr=0.5)
>>> verdict = diagnose(run)
>>> verdict.problem
'vanishing'
>>> verdict.remedies[0]
'Swap sigmoid for ReLU and initialise with He (kaiming) init (lesson 01).'

The order of the checks matters, because the problems cause one another: a NaN is the end
point of an explosion, so it is named first; a dead ReLU layer sends back an exactly-zero signal
and a saturated layer an almost-zero one, so both are named before "vanishing", which is what
is left when the units are alive but each layer still shrinks the signal. An explosion is
named before "vanishing" too: a run that explodes first often ends saturated and silent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .train import Run

PROBLEMS = ("healthy", "vanishing", "exploding", "saturation", "dead_relu")

# -- thresholds ---------------------------------------------------------------------------------
#: Vanishing: the signal ‖∂L/∂z‖ reaching the first hidden layer is below this fraction of the one
#: reaching the last hidden layer. 1e-4 means the first layer hears ten thousand times less than
#: the last: with plain SGD it then learns about that much more slowly. Healthy ReLU/He and
#: tanh/Xavier networks of 6 to 20 layers measure 0.3 to 15; a 20-layer sigmoid network with
#: PyTorch's default init about 1e-16.
VANISHING_SIGNAL_RATIO = 1e-4
#: Exploding: the signal grows more than this factor from the last hidden layer back to the first.
#: Healthy networks stay below ~15 (see above); ReLU at twice He's scale reaches ~4e2 over 10
#: layers and ~1e5 over 20.
EXPLODING_SIGNAL_RATIO = 1e2
#: Exploding: the total gradient norm ‖∇L‖ of some step exceeds this. With He or Xavier init on
#: the course's data it starts near 1 and only falls; 100 is two orders of magnitude above that.
EXPLODING_GRAD_NORM = 1e2
#: Exploding: the loss rose to more than this multiple of its first value (training made it worse).
LOSS_BLOWUP = 10.0
#: Exploding: a median update ‖ΔW‖/‖W‖ above this means every step rewrites a tenth of the weight;
#: a well-tuned run moves its weights by about 1e-3 to 1e-2 of their size per step.
LARGE_UPDATE_RATIO = 0.1
#: Saturation: at least this fraction of the hidden sigmoid/tanh units (averaged over the hidden
#: layers, at the start or at the end of training) sit within 0.03 of an asymptote, where the
#: slope is below ~0.06: half of the network passes almost no gradient.
SATURATION_FRACTION = 0.5
#: Dead ReLUs: at least this fraction of the hidden ReLU units (averaged over the hidden layers,
#: at the last recorded step) output 0 for every input of the batch. A He-initialised ReLU
#: network on 2-D data already has 10-40% silent units in its later layers; half is too many.
DEAD_FRACTION = 0.5
#: Dead ReLUs: or a single hidden layer has at least this fraction of dead units: almost no signal
#: passes that layer, in either direction.
DEAD_LAYER_FRACTION = 0.9
#: Plateau: the loss never fell below (1 - this) times its first value: less than a 5% improvement.
PLATEAU_DROP = 0.05
#: Erratic: a step counts as a jump when it raises the loss by more than 10%; the loss is called
#: erratic when at least this fraction of the steps are jumps (a good full-batch run has almost none).
ERRATIC_JUMP = 0.10
ERRATIC_FRACTION = 0.25
#: The loss curve's shape (plateau, erratic) is only judged on runs of at least this many steps.
MIN_STEPS_FOR_SHAPE = 10


@dataclass
class Diagnosis:
    """The doctor's verdict on one run.

    ``problem`` is one of :data:`PROBLEMS`. A run whose loss or gradient became NaN/Inf is
    ``"exploding"`` with ``diverged_at`` set to that step (a NaN is where an explosion ends; the
    evidence says so). ``evidence`` are sentences with the numbers behind the verdict (and the
    other checks), ``remedies`` ranked suggestions, each naming the lesson that teaches it, and
    ``numbers`` the measurements themselves (for asserts and plots).
    """

    problem: str
    evidence: list[str] = field(default_factory=list)
    remedies: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    diverged_at: int | None = None

    @property
    def headline(self) -> str:
        """One line: the verdict in words."""
        words = {
            "healthy": "Healthy: the gradients reach every layer at a sensible size.",
            "vanishing": "Vanishing gradients: the signal dies out on its way back to the first layers.",
            "exploding": "Exploding gradients: the gradient grows out of control.",
            "saturation": "Saturation: many sigmoid/tanh units sit on their flat tails and pass "
                          "almost no gradient.",
            "dead_relu": "Dead ReLUs: many ReLU units output 0 for every input, so they pass no "
                         "gradient and never recover.",
        }[self.problem]
        if self.problem == "exploding" and self.diverged_at is not None:
            words = f"Exploding gradients: training diverged (NaN/Inf) at step {self.diverged_at}."
        return words

    def __repr__(self) -> str:
        lines = [f"Diagnosis: {self.problem}", f"  {self.headline}", "Evidence:"]
        lines += [f"  - {e}" for e in self.evidence]
        lines.append("Remedies (best first):" if self.remedies else "Remedies: none needed.")
        lines += [f"  {i}. {r}" for i, r in enumerate(self.remedies, 1)]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        lines = [f"**Diagnosis: `{self.problem}`**: {self.headline}", "", "*Evidence*", ""]
        lines += [f"- {e}" for e in self.evidence]
        lines += ["", "*Remedies, best first*" if self.remedies else "*No remedy needed.*", ""]
        lines += [f"{i}. {r}" for i, r in enumerate(self.remedies, 1)]
        return "\n".join(lines)


def diagnose(run: Run) -> Diagnosis:
    """Name the gradient problem of ``run`` (made by :func:`gradcourse.train.fit` with probes on).

    Checks, in this order (the first that fires is the verdict; every check adds its numbers
    to the evidence): NaN/Inf → ``"exploding"``; many dead ReLU units → ``"dead_relu"``; many
    saturated sigmoid/tanh units → ``"saturation"``; signal growth, gradient norm, loss blow-up
    or update size beyond their thresholds → ``"exploding"``; the first layer's signal below
    :data:`VANISHING_SIGNAL_RATIO` of the last layer's → ``"vanishing"``; else ``"healthy"``.

    >>> from gradcourse import data, models
    >>> from gradcourse.train import fit
    >>> net = models.mlp(6, 32, activation="relu", init="kaiming", seed=0)
    >>> diagnose(fit(net, data.spirals(256), steps=100, lr=0.1)).problem
    'healthy'
    >>> diagnose("my run")
    Traceback (most recent call last):
    ...
    ValueError: run must be a gradcourse Run (from gradcourse.train.fit); got str
    """
    if not isinstance(run, Run):
        raise ValueError(f"run must be a gradcourse Run (from gradcourse.train.fit); got {type(run).__name__}")
    if run.trace is None:
        raise ValueError("run must carry a probe trace: train it with fit(..., probe=True)")
    if len(run.trace.steps) == 0 or len(run.losses) == 0:
        raise ValueError("run must hold at least one recorded step")
    m = _measure(run)
    config = run.params.get("model", {}) if isinstance(run.params, dict) else {}
    evidence: list[str] = []

    # 1. NaN / Inf: an explosion that went all the way.
    if m["diverged_at"] is not None:
        where = m["nonfinite_layer"]
        place = f", starting in {where}" if where not in (None, "loss", "gradient", "output") else ""
        kind = "loss" if m["nonfinite_where"] != "gradient" else "gradient"
        evidence.append(f"The {kind} became NaN/Inf at step {m['diverged_at']}{place}; training "
                        "stopped there.")
        evidence += _explosion_evidence(m, before_nan=True)
        evidence += _loss_evidence(m)
        return Diagnosis("exploding", evidence, _remedies("exploding", m, config, run), m,
                         m["diverged_at"])

    # 2. Dead ReLUs (their zero signal would otherwise read as vanishing).
    dead = m["dead_mean_end"]
    if not math.isnan(dead) and config.get("activation") == "leaky_relu":
        evidence.append(f"{_pct(dead)} of the leaky ReLU units were negative for every input at the "
                        "last step, but a leaky unit still passes 1% of its gradient, so it cannot die.")
    elif not math.isnan(dead):
        layer, worst = m["dead_worst_layer"], m["dead_worst"]
        if dead >= DEAD_FRACTION or worst >= DEAD_LAYER_FRACTION:
            evidence.append(f"At the last step {_pct(dead)} of the hidden ReLU units were dead "
                            f"(0 for every input), {_pct(worst)} in {layer} (thresholds "
                            f"{_pct(DEAD_FRACTION)} on average, {_pct(DEAD_LAYER_FRACTION)} in one layer).")
            start = m["dead_mean_start"]
            if dead > start + 0.2:
                evidence.append(f"At step 0 only {_pct(start)} were dead: training killed them "
                                "(a step too large pushes a unit's input below 0 for every example).")
            else:
                evidence.append(f"They were already dead at step 0 ({_pct(start)}): the "
                                "initialisation (weights or biases) switched them off.")
            evidence += _signal_evidence(m) + _loss_evidence(m)
            return Diagnosis("dead_relu", evidence, _remedies("dead_relu", m, config, run), m)
        evidence.append(f"Dead ReLU units: {_pct(dead)} on average at the last step, at most "
                        f"{_pct(worst)} in one layer (below the {_pct(DEAD_FRACTION)} threshold).")

    # 3. Saturation (sigmoid/tanh units on their flat tails).
    saturated = max(m["saturated_mean_start"], m["saturated_mean_end"])
    if not math.isnan(saturated):
        if saturated >= SATURATION_FRACTION:
            evidence.append(f"{_pct(m['saturated_mean_start'])} of the hidden units were saturated "
                            f"at step 0 and {_pct(m['saturated_mean_end'])} at the last step, "
                            f"{_pct(m['saturated_worst'])} in {m['saturated_worst_layer']} "
                            f"(threshold {_pct(SATURATION_FRACTION)}): their slope is near 0.")
            evidence += _signal_evidence(m) + _loss_evidence(m)
            return Diagnosis("saturation", evidence, _remedies("saturation", m, config, run), m)
        evidence.append(f"Saturated units: {_pct(m['saturated_mean_start'])} at step 0, "
                        f"{_pct(m['saturated_mean_end'])} at the last step (below the "
                        f"{_pct(SATURATION_FRACTION)} threshold).")

    # 4. Exploding without a NaN (yet). Checked before vanishing: a run that starts by exploding
    #    can end with a vanishing signal once its units saturate, but the explosion came first.
    signs = _explosion_evidence(m, before_nan=False, batchnorm=bool(config.get("batchnorm")))
    if signs:
        evidence = signs + evidence + _loss_evidence(m)
        return Diagnosis("exploding", evidence, _remedies("exploding", m, config, run), m)

    # 5. Vanishing: the signal shrinks on its way back.
    low = _nanmin(m["signal_ratio_start"], m["signal_ratio_end"])
    if not math.isnan(low) and low < VANISHING_SIGNAL_RATIO:
        evidence = _signal_evidence(m, verdict="vanishing") + evidence + _loss_evidence(m)
        return Diagnosis("vanishing", evidence, _remedies("vanishing", m, config, run), m)

    # 6. Nothing wrong with the gradients.
    evidence = _signal_evidence(m) + [
        f"The largest total gradient norm was {_num(m['grad_norm_max'])} (threshold "
        f"{_num(EXPLODING_GRAD_NORM)}), the median update moved the weights by "
        f"{_num(m['update_ratio_median'])} of their size per step (threshold {_num(LARGE_UPDATE_RATIO)})."
    ] + evidence + _loss_evidence(m)
    return Diagnosis("healthy", evidence, _remedies("healthy", m, config, run), m)


# -- measurements ------------------------------------------------------------------------------
def _measure(run: Run) -> dict:
    """Every number the verdict uses, as plain floats (NaN where it does not apply)."""
    trace = run.trace
    layers = list(trace.layers)
    hidden = list(range(max(len(layers) - 1, 1)))  # every layer but the output layer
    sequence = trace.hidden_grad_norm is not None
    m: dict = {"layers": layers, "sequence": sequence}

    signal = (trace.get("hidden_grad_norm") if sequence
              else trace.get("output_grad_norm")[:, hidden]).astype(float)
    rows = [i for i in range(len(signal)) if np.isfinite(signal[i]).all()]
    ratio = lambda row: _ratio(signal[row, 0], signal[row, -1])  # noqa: E731
    m["signal_first"] = "h_1" if sequence else layers[hidden[0]]
    m["signal_last"] = f"h_{signal.shape[1]}" if sequence else layers[hidden[-1]]
    m["signal_ratio_start"] = ratio(0) if 0 in rows and signal.shape[1] > 1 else math.nan
    m["signal_ratio_end"] = ratio(rows[-1]) if rows and signal.shape[1] > 1 else math.nan
    m["step_end"] = int(trace.steps[rows[-1]]) if rows else int(trace.steps[-1])
    m["signal_ratio_max"] = (max(ratio(r) for r in rows) if rows and signal.shape[1] > 1
                             else math.nan)

    totals = np.asarray(run.grad_norm_total, dtype=float)
    finite = totals[np.isfinite(totals)]
    m["grad_norm_start"] = float(totals[0]) if len(totals) else math.nan
    m["grad_norm_max"] = float(finite.max()) if len(finite) else math.nan
    m["grad_norm_max_step"] = int(np.flatnonzero(totals == finite.max())[0]) if len(finite) else None

    clipped = np.asarray(run.clipped, dtype=bool)
    m["clipped_fraction"] = float(clipped.mean()) if len(clipped) else 0.0

    updates = trace.get("update_ratio")[:, hidden].astype(float)
    updates = updates[np.isfinite(updates).all(axis=1)]
    m["update_ratio_median"] = float(np.median(updates)) if updates.size else math.nan
    m["update_ratio_first"] = float(np.median(updates[:, 0])) if updates.size else math.nan
    m["update_ratio_last"] = float(np.median(updates[:, -1])) if updates.size else math.nan

    for name in ("saturated", "dead"):
        values = trace.get(f"{name}_frac")[:, hidden].astype(float)
        end = rows[-1] if rows else len(values) - 1
        m[f"{name}_mean_start"] = m[f"{name}_mean_end"] = m[f"{name}_worst"] = math.nan
        m[f"{name}_worst_layer"] = None
        if not (np.isfinite(values[0]).all() and np.isfinite(values[end]).all()):
            continue  # not a sigmoid/tanh (saturation) or ReLU (dead units) network
        m[f"{name}_mean_start"] = float(values[0].mean())
        m[f"{name}_mean_end"] = float(values[end].mean())
        # Dead units are judged at the end (training kills them); saturation at either end.
        worst_row = values[end] if name == "dead" else np.maximum(values[0], values[end])
        k = int(np.argmax(worst_row))
        m[f"{name}_worst"] = float(worst_row[k])
        m[f"{name}_worst_layer"] = layers[hidden[k]]

    losses = np.asarray(run.losses, dtype=float)
    good = losses[np.isfinite(losses)]
    m["loss_start"] = float(losses[0])
    m["loss_end"] = float(good[-1]) if len(good) else math.nan
    m["loss_min"] = float(good.min()) if len(good) else math.nan
    m["loss_max"] = float(good.max()) if len(good) else math.nan
    m["loss_drop"] = (1 - m["loss_min"] / m["loss_start"]) if len(good) and m["loss_start"] > 0 else math.nan
    jumps = good[1:] > (1 + ERRATIC_JUMP) * good[:-1]
    m["loss_jump_fraction"] = float(jumps.mean()) if len(jumps) else 0.0
    m["steps"] = len(losses)

    nonfinite = trace.nonfinite or {}
    m["diverged_at"] = run.diverged_at
    if m["diverged_at"] is None and not np.isfinite(losses).all():
        m["diverged_at"] = int(np.flatnonzero(~np.isfinite(losses))[0])
    m["nonfinite_layer"] = nonfinite.get("layer", run.diverged_layer)
    m["nonfinite_where"] = nonfinite.get("where")
    return m


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 else math.inf
    return float(a / b)


def _nanmin(*values: float) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return min(finite) if finite else math.nan


# -- evidence sentences ------------------------------------------------------------------------
def _num(x: float) -> str:
    """A number as a learner reads it: 0.5, 11, 4.3e-4, 1.7e5 (two significant digits)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x == 0:
        return "0"
    if math.isinf(x):
        return "infinite"
    if 1e-3 <= abs(x) < 1e4:
        rounded = float(f"{x:.2g}")
        return f"{rounded:.0f}" if abs(rounded) >= 10 else f"{rounded:g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    mantissa = mantissa.removesuffix(".0")
    return f"{mantissa}e{int(exponent)}"


def _relative(ratio: float) -> str:
    """'3e-12 of' or '490 times' (a ratio said the way it reads best)."""
    if math.isnan(ratio):
        return "not measurable against"
    return f"{_num(ratio)} times" if ratio > 1 else f"{_num(ratio)} of"


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.0f}%"


def _signal_evidence(m: dict, verdict: str = "") -> list[str]:
    start, end = m["signal_ratio_start"], m["signal_ratio_end"]
    if math.isnan(start) and math.isnan(end):
        return []
    first, last = m["signal_first"], m["signal_last"]
    what = "the gradient signal ‖∂L/∂h‖ at the first time step" if m["sequence"] else \
        f"the gradient signal ‖∂L/∂z‖ reaching {first}"
    text = (f"At step 0 {what} was {_relative(start)} the one at {last}; at the last step "
            f"(step {m['step_end']}) {_relative(end)} it.")
    if verdict == "vanishing":
        text += f" Threshold for vanishing: {_num(VANISHING_SIGNAL_RATIO)}."
        extra = []
        if not math.isnan(m["update_ratio_first"]) and m["update_ratio_last"] > 0:
            first = m["update_ratio_first"]
            moved = (f"moved by {_num(first)} of their size per step (median)" if first > 0 else
                     "did not move at all (each update was too small to change a float32 weight)")
            extra.append(f"The first layer's weights {moved}; the last hidden layer's moved by "
                         f"{_num(m['update_ratio_last'])}: the first layers barely learn.")
        return [text, *extra]
    return [text]


def _explosion_evidence(m: dict, *, before_nan: bool, batchnorm: bool = False) -> list[str]:
    """Every explosion sign that fires. In a BatchNorm network the raw signal ratio is not one:
    BN divides each layer's backward signal by the batch std of that layer's input, so the ratio
    reflects the weights' scale, which BN makes irrelevant to the forward pass."""
    signs = []
    if (not batchnorm and not math.isnan(m["signal_ratio_start"])
            and m["signal_ratio_start"] > EXPLODING_SIGNAL_RATIO):
        signs.append(f"At step 0 the gradient signal reaching {m['signal_first']} was "
                     f"{_num(m['signal_ratio_start'])} times the one at {m['signal_last']}: it grows "
                     f"going backward (threshold {_num(EXPLODING_SIGNAL_RATIO)}).")
    if not math.isnan(m["grad_norm_max"]) and m["grad_norm_max"] > EXPLODING_GRAD_NORM:
        signs.append(f"The total gradient norm reached {_num(m['grad_norm_max'])} at step "
                     f"{m['grad_norm_max_step']} (threshold {_num(EXPLODING_GRAD_NORM)}; a healthy "
                     "start is about 1).")
    if not math.isnan(m["loss_max"]) and m["loss_max"] > LOSS_BLOWUP * m["loss_start"] and m["steps"] > 1:
        signs.append(f"The loss rose from {_num(m['loss_start'])} to {_num(m['loss_max'])}, more "
                     f"than {LOSS_BLOWUP:g} times its first value.")
    if not math.isnan(m["update_ratio_median"]) and m["update_ratio_median"] > LARGE_UPDATE_RATIO:
        signs.append(f"A typical step changed the weights by {_num(m['update_ratio_median'])} of "
                     f"their size (threshold {_num(LARGE_UPDATE_RATIO)}): the steps are far too big.")
    if signs and m["clipped_fraction"] > 0:
        signs.append(f"Gradient clipping was on and cut {_pct(m['clipped_fraction'])} of the steps: "
                     "it keeps each step bounded, but the gradients it measures are still this large "
                     "(clipping treats the symptom, lesson 03).")
    if before_nan and not signs and m["steps"] > 1 and not math.isnan(m["grad_norm_max"]):
        signs.append(f"The total gradient norm went from {_num(m['grad_norm_start'])} to "
                     f"{_num(m['grad_norm_max'])} before the NaN.")
    return signs


def _loss_evidence(m: dict) -> list[str]:
    if math.isnan(m["loss_min"]):
        return [f"The loss was never finite (first value {_num(m['loss_start'])})."]
    end = "at its last finite step" if m["diverged_at"] is not None else "at the end"
    text = f"Loss: {_num(m['loss_start'])} at step 0, {_num(m['loss_end'])} {end}"
    if m["steps"] < MIN_STEPS_FOR_SHAPE:
        return [text + f" (too few steps, {m['steps']}, to judge the loss curve's shape)."]
    if m["loss_drop"] < PLATEAU_DROP:
        text += (f"; it never improved by more than {_pct(max(m['loss_drop'], 0.0))} (a plateau: "
                 f"threshold {_pct(PLATEAU_DROP)}).")
    else:
        text += f" (best {_num(m['loss_min'])}, {_pct(m['loss_drop'])} below the start)."
    out = [text]
    if m["loss_jump_fraction"] >= ERRATIC_FRACTION:
        out.append(f"The loss is erratic: {_pct(m['loss_jump_fraction'])} of the steps raised it by "
                   f"more than {_pct(ERRATIC_JUMP)} (threshold {_pct(ERRATIC_FRACTION)} of the steps): "
                   "the learning rate is probably too large.")
    return out


# -- remedies ----------------------------------------------------------------------------------
def _remedies(problem: str, m: dict, config: dict, run: Run) -> list[str]:
    if config.get("kind") == "sequence":
        return _sequence_remedies(problem, config)
    activation = config.get("activation", "")
    init = config.get("init", "")
    std = config.get("weight_std")
    lr = run.params.get("lr") if isinstance(run.params, dict) else None
    batchnorm, residual = config.get("batchnorm", False), config.get("residual", False)
    out: list[str] = []
    if problem == "vanishing":
        if activation in ("sigmoid", "tanh"):
            out.append(f"Swap {activation} for ReLU and initialise with He (kaiming) init (lesson 01).")
            if init not in ("xavier",):
                out.append("Or keep it and initialise with Xavier (Glorot) init, which keeps the "
                           "signal's size from layer to layer (lesson 01).")
        else:
            out.append("Initialise at the critical scale: He (kaiming) for ReLU, Xavier for "
                       "tanh/sigmoid (lessons 01 and 02).")
        if not batchnorm:
            out.append("Add BatchNorm between each linear layer and its activation (lesson 04).")
        if not residual:
            out.append("Add skip connections (a residual network) so the signal has a short way "
                       "back (lesson 05).")
        out.append("Do not reach for gradient clipping: it only makes large gradients smaller, "
                   "never small ones larger (lesson 03).")
    elif problem == "exploding":
        if init == "normal" and std is not None and std > _critical_std(activation) * 1.2:
            out.append(f"Initialise at the critical scale: the weights were drawn with std "
                       f"{std:.3g}/√fan_in, {_critical_name(activation)} (lesson 02).")
        elif m["signal_ratio_start"] > EXPLODING_SIGNAL_RATIO:
            out.append("Initialise at the critical scale: He (kaiming) for ReLU, Xavier for "
                       "tanh/sigmoid (lesson 02).")
        out.append(f"Lower the learning rate{f' (it was {lr:g})' if lr else ''}: the step is "
                   "−lr·∂L/∂W, so a large gradient times a large rate is a huge step (lesson 02).")
        if not (isinstance(run.params, dict) and run.params.get("clip")):
            out.append("Clip the gradient norm, e.g. fit(..., clip=remedies.clip_norm(1.0)), to "
                       "bound every step (lesson 03).")
        if not batchnorm:
            out.append("Add BatchNorm to keep each layer's activations at a fixed scale (lesson 04).")
    elif problem == "saturation":
        if init == "normal" and std is not None and std > _critical_std(activation):
            out.append(f"Initialise with Xavier (Glorot) init: the weights were drawn with std "
                       f"{std:.3g}/√fan_in, which pushes most inputs onto the flat tails (lesson 01).")
        else:
            out.append("Initialise with Xavier (Glorot) init so each unit's input stays in the "
                       "steep middle of the activation (lesson 01).")
        out.append("Use ReLU (with He init), which has no flat tail for positive inputs (lesson 01).")
        if not batchnorm:
            out.append("Add BatchNorm, which re-centres and re-scales every layer's input (lesson 04).")
        out.append("Lower the learning rate: large steps grow the weights into saturation (lesson 02).")
    elif problem == "healthy":
        if m["steps"] >= MIN_STEPS_FOR_SHAPE and m["loss_jump_fraction"] >= ERRATIC_FRACTION:
            out.append("The gradients are fine but the loss jumps around: try a smaller learning "
                       "rate (lesson 02).")
        if m["steps"] >= MIN_STEPS_FOR_SHAPE and m["loss_drop"] < PLATEAU_DROP:
            out.append("The gradients are fine but the loss has not moved yet: train for more "
                       "steps or with a larger learning rate.")
    elif problem == "dead_relu":
        killed = m["dead_mean_end"] > m["dead_mean_start"] + 0.2
        lower = (f"Lower the learning rate{f' (it was {lr:g})' if lr else ''}: one step too large "
                 "pushes a unit's input below 0 for every example (lesson 02).")
        leaky = "Use leaky ReLU, whose small negative slope lets a dead unit recover (lesson 01)."
        init_fix = ("Initialise with He (kaiming) init and zero biases, so about half of each "
                    "layer's inputs start positive (lesson 01).")
        out += [lower, leaky, init_fix] if killed else [init_fix, leaky, lower]
        if not batchnorm:
            out.append("Add BatchNorm, which keeps each unit's input centred around 0 (lesson 04).")
    return out


def _sequence_remedies(problem: str, config: dict) -> list[str]:
    cell = config.get("cell", "rnn")
    if problem == "vanishing":
        out = []
        if cell == "rnn":
            out.append("Use an LSTM or GRU: their additive cell-state path carries the gradient "
                       "across many time steps (lesson 06).")
        if cell == "lstm":
            out.append("Give the LSTM a positive forget-gate bias (e.g. forget_bias=1) so the cell "
                       "state starts open (lesson 06).")
        return out + ["Do not reach for gradient clipping: it cannot make small gradients larger "
                      "(lesson 03)."]
    if problem == "exploding":
        out = ["Clip the gradient norm, the standard fix for recurrent networks (lessons 03 and 06)."]
        if cell == "rnn":
            out.append("Keep the recurrent matrix's spectral radius at or below 1 "
                       "(recurrent_scale ≤ 1), or use an LSTM/GRU (lesson 06).")
        return out + ["Lower the learning rate (lesson 02)."]
    return []


def _critical_std(activation: str) -> float:
    """The weight_std (in units of 1/√fan_in) that keeps the signal's size: √2 for ReLU, 1 else."""
    return math.sqrt(2.0) if activation in ("relu", "leaky_relu", "gelu") else 1.0


def _critical_name(activation: str) -> str:
    if activation in ("relu", "leaky_relu", "gelu"):
        return "while He's critical scale for ReLU is √2 ≈ 1.41 (init='kaiming')"
    return "while the critical scale is about 1 (init='xavier')"
