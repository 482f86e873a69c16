"""The gradient doctor: read a probed run, name its problem, show why, and say what to do.

``diagnose(run)`` looks at what the probes recorded (the backpropagated signal per layer, the
weight gradients, the update sizes, saturated and dead units, the loss curve, where a NaN
appeared) and returns a :class:`Diagnosis`: one ``problem``, the ``evidence`` (sentences with
the numbers that led there) and ranked ``remedies``, entries of
:data:`gradcourse.remedies.REMEDIES`, each pointing to the lesson that teaches it.

>>> from gradcourse import data, models
>>> from gradcourse.doctor import diagnose
>>> from gradcourse.train import fit
>>> run = fit(models.mlp(20, 32, activation="sigmoid", seed=0), data.spirals(256), steps=30, lr=0.5)
>>> verdict = diagnose(run)
>>> verdict.problem
'vanishing'
>>> verdict.remedies[0]
Swap the sigmoid/tanh activation for ReLU and initialise with He (kaiming) init (lesson 01).
>>> verdict.remedies[0].name, verdict.remedies[0].lesson
('relu_he', '01_sigmoid_saturation')

It reads your own training loop too: a probe's :class:`~gradcourse.trace.Trace` and the losses
you kept (see :func:`diagnose` and :func:`from_trace`).

The order of the checks matters, because the problems cause one another. Bad data (a NaN in the
inputs or targets) is named first: no gradient remedy can fix it. A NaN that training made is the
end point of an explosion, so it comes next. A dead ReLU layer sends back an exactly-zero signal,
so dead units are named before "vanishing". A saturated unit has a slope near 0, but the signal a
layer sends back is its slope *times its weights*: with ordinary weights saturation starves the
layers below, while with large weights (tanh in the chaotic phase, lesson 02) the units saturate
*and* the signal grows on its way back. Saturation is named before the size of the signal because
it is what the remedy must treat (the initialisation); when the signal explodes as well the
diagnosis says both (``also``). An explosion is named before "vanishing": a run that explodes
first often ends saturated and silent. "Vanishing" is what is left when the units are alive but
each layer still shrinks the signal; "healthy" is said only when the saturated and dead units
were measured (or cannot occur) and the probe saw enough of the model, else the verdict is
"inconclusive", which says what was not seen.

When a problem began decides its first remedy. Units saturated (or dead) from step 0, or a signal
that explodes at step 0, are the initialisation's doing; a problem absent at step 0 that training
brought (0% saturated at the start, 99% at the end) is the step size's, so a smaller learning rate
(with warmup or clipping) ranks first.

It reads any model: ``model.config`` may be a dict, a dataclass, a Hugging Face config or nothing
(the doctor reads ``activation``/``hidden_act`` and the course's recipe keys where they have the
right type), a hand-built model's activation is read from its modules when it uses one kind, and a
network whose activation cannot die (leaky ReLU, ELU, GELU, …) is never ``"dead_relu"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from torch import nn

from . import _runfile, theory
from .remedies import REMEDIES, Remedy
from .run import Run
from .trace import Trace

PROBLEMS = ("healthy", "vanishing", "exploding", "saturation", "dead_relu", "collapse", "bad_data", "underflow",
            "inconclusive")

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
#: Exploding: the total gradient norm ‖∇L‖ of some step exceeds this (and
#: :data:`EXPLODING_GRAD_RMS` per weight). With He or Xavier init on the course's data it starts
#: between about 0.5 (patient B at He's scale) and 2.5 (a 10-layer ReLU network, lesson 02); 100
#: is well over an order of magnitude above that.
EXPLODING_GRAD_NORM = 1e2
#: ... and the root mean square of the weight gradients, ‖∇L‖/√(number of weights), exceeds this.
#: The total norm grows with the size of the model: torchvision's ResNet-18 (11 M weights) starts
#: at 130-140 on batches of 8 digits, healthy, which is 0.04 per weight. Healthy runs of the course
#: measure 0.007-0.06 per weight; the exploding CNN of the tests 9.8 and lesson 08's 30-layer
#: BatchNorm network 1.2. Below 0.3 a weight's gradient is no larger than its typical value.
EXPLODING_GRAD_RMS = 0.3
#: Exploding: the loss rose to more than this multiple of its first value (training made it worse).
LOSS_BLOWUP = 10.0
#: Exploding: or the loss never fell PLATEAU_DROP below its first value and rose above this multiple
#: of it: every step overshot (Adam at a rate far too large keeps the gradient moderate while the
#: loss climbs: a GPT-2 MLP under Adam at lr 1 peaked 7.7-13.7 times above its start, seeds 0-4 on both kernel sets).
LOSS_ROSE = 4.0
#: Exploding: a median update ‖ΔW‖/‖W‖ above this means every step rewrites a tenth of the weight;
#: a well-tuned run moves its weights by about 1e-3 to 1e-2 of their size per step.
LARGE_UPDATE_RATIO = 0.1
#: Saturation: at least this fraction of the hidden sigmoid/tanh units (averaged over the hidden
#: layers, at the start or at the end of training) sit within 0.03 of an asymptote, where the
#: slope is below ~0.06: half of the network passes almost no gradient.
SATURATION_FRACTION = 0.5
#: Dead ReLUs: at least this fraction of the hidden ReLU units (averaged over the hidden layers,
#: at the last recorded step) output 0 for every input of the batch. A He-initialised ReLU
#: network of width 32 on the 2-D spirals already has 14-23% silent units on average at
#: initialisation (up to 50% of one layer; lesson 07 measures it); half on average is too many.
DEAD_FRACTION = 0.5
#: Dead ReLUs: or a single hidden layer has at least this fraction of dead units: almost no signal
#: passes that layer, in either direction.
DEAD_LAYER_FRACTION = 0.9
#: Dead ReLUs: a layer whose activation had a mean below this (at any recorded step) is no ReLU, whose
#: outputs are never negative; its units can not die and are left out of the dead fraction.
NEGATIVE_MEAN = -1e-12
#: Plateau: the loss never fell below (1 - this) times its first value: less than a 5% improvement.
PLATEAU_DROP = 0.05
#: Erratic: a step counts as a jump when it raises the loss by more than 10%; the loss is called
#: erratic when at least this fraction of the steps are jumps (a good full-batch run has almost none).
ERRATIC_JUMP = 0.10
ERRATIC_FRACTION = 0.25
#: The loss curve's shape (plateau, erratic) is only judged on runs of at least this many steps.
MIN_STEPS_FOR_SHAPE = 10

#: Activations whose units cannot saturate or die: for these "not measured" means "does not apply".
_NO_UNHEALTHY_UNITS = ("linear", "gelu", "leaky_relu", "prelu", "rrelu")
#: Activations whose units never die: each passes some gradient for every input (a leaky ReLU 1% of
#: it, an ELU or GELU a slope that only tends to 0), so their networks are never "dead_relu".
_NEVER_DEAD = ("leaky_relu", "prelu", "rrelu", "elu", "selu", "celu", "gelu", "silu", "mish", "softplus")
_NEVER_DEAD_MODULES = (nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                       nn.Softplus)
#: Activations that can die: a unit whose input is below 0 for every example outputs 0 and passes no gradient.
_CAN_DIE_MODULES = (nn.ReLU, nn.ReLU6, nn.Threshold, nn.Hardswish, nn.Hardsigmoid)
#: Modules that are not layers of their own for "the probe saw N of M layers" (they own parameters but
#: carry no signal of their own to measure: normalisation scales and shifts, a PReLU's slope).
_NOT_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, *_NEVER_DEAD_MODULES)
_RELU_FAMILY = ("relu", "leaky_relu", "gelu", "prelu", "rrelu", "elu", "selu", "celu", "silu", "mish", "softplus")

_HEADLINES = {
    "healthy": "Healthy: the gradients reach every layer at a sensible size.",
    "vanishing": "Vanishing gradients: the signal dies out on its way back to the first layers.",
    "exploding": "Exploding gradients: the gradient grows out of control.",
    "saturation": "Saturation: many sigmoid/tanh units sit on their flat tails and pass almost no "
                  "gradient through their own slope.",
    "dead_relu": "Dead ReLUs: many ReLU units output 0 for every input, so they pass no gradient "
                 "and never recover.",
    "collapse": "Representation collapse: every position of the sequence carries the same representation, "
                "so the model cannot tell them apart (lesson 09).",
    "underflow": "Gradient underflow: the gradients are too small for float16 and were rounded to 0, a "
                 "number-format problem, not the network's (lesson 10).",
    "bad_data": "Bad data: the inputs or targets hold NaN/Inf, which no gradient remedy can fix: "
                "check the data.",
    "inconclusive": "Inconclusive: the doctor found no problem in what the probe measured, but the "
                    "saturated and dead units were not measured, so it cannot call this run healthy.",
}


@dataclass
class Diagnosis:
    """The doctor's verdict on one run.

    ``problem`` is one of :data:`PROBLEMS`. A run whose loss or gradient became NaN/Inf during
    training is ``"exploding"`` with ``diverged_at`` set to that step (a NaN is where an explosion
    ends; the evidence says so); one whose data held the NaN is ``"bad_data"``. ``also`` lists
    other problems that hold at the same time (a saturated tanh network whose signal also explodes:
    ``problem="saturation"``, ``also=["exploding"]``). ``evidence`` are sentences with the numbers
    behind the verdict (and the other checks); ``remedies`` the ranked
    :class:`~gradcourse.remedies.Remedy` entries, each naming the lesson that teaches it;
    ``notes`` advice that is not a remedy (what *not* to do, what to check); ``numbers`` the
    measurements themselves (for asserts and plots).
    """

    problem: str
    evidence: list[str] = field(default_factory=list)
    remedies: list[Remedy] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)
    diverged_at: int | None = None
    also: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> tuple[str, ...]:
        """The verdict and every problem that also holds, e.g. ``("saturation", "exploding")``."""
        return (self.problem, *self.also)

    @property
    def headline(self) -> str:
        """One line: the verdict in words."""
        words = _HEADLINES[self.problem]
        if self.problem == "exploding" and self.diverged_at is not None:
            words = f"Exploding gradients: training diverged (NaN/Inf) at step {self.diverged_at}."
        seen, total = self.numbers.get("layers_seen"), self.numbers.get("layers_total")
        if self.problem == "inconclusive" and seen is not None and total and self.numbers.get("coverage_short"):
            words = (f"Inconclusive: the probe saw {seen} of {total} layers, too little of the model to "
                     "call this run healthy or to name its problem (the evidence says what was not seen).")
        if self.problem == "saturation" and "exploding" in self.also:
            words = ("Saturation and exploding gradients (the chaotic phase): most sigmoid/tanh units "
                     "sit on their flat tails, yet the weights are so large that the signal grows on "
                     "its way back.")
        return words

    def __repr__(self) -> str:
        lines = [f"Diagnosis: {self.problem}" + "".join(f" + {p}" for p in self.also),
                 f"  {self.headline}", "Evidence:"]
        lines += [f"  - {e}" for e in self.evidence]
        lines.append("Remedies (best first):" if self.remedies else f"Remedies: {self._no_remedy()}")
        lines += [f"  {i}. {r}" for i, r in enumerate(self.remedies, 1)]
        if self.notes:
            lines.append("Notes:")
            lines += [f"  - {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        also = "".join(f" + `{p}`" for p in self.also)
        lines = [f"**Diagnosis: `{self.problem}`**{also}: {self.headline}", "", "*Evidence*", ""]
        lines += [f"- {e}" for e in self.evidence]
        lines += ["", "*Remedies, best first*" if self.remedies else f"*Remedies: {self._no_remedy()}*", ""]
        lines += [f"{i}. {r}" for i, r in enumerate(self.remedies, 1)]
        if self.notes:
            lines += ["", "*Notes*", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)

    def _no_remedy(self) -> str:
        return "none needed." if self.problem == "healthy" else "none from the course's list (see the notes)."


def diagnose(run: Run | Trace, losses: Sequence[float] | None = None, *, model: nn.Module | None = None
             ) -> Diagnosis:
    """Name the gradient problem of ``run``.

    ``run`` is a :class:`~gradcourse.run.Run` made by :func:`gradcourse.train.fit` with probes
    on, or, for a training loop of your own, the :class:`~gradcourse.trace.Trace` of a
    :class:`~gradcourse.probes.Probe` (``probe.trace``) with ``losses``, the loss of every step
    (floats or 0-d tensors), and optionally the ``model`` (a model built by
    :mod:`gradcourse.models` lets the doctor name its activation and init in the advice).

    Checks, in this order (the first that fires is the verdict; every check adds its numbers
    to the evidence): NaN/Inf in the data → ``"bad_data"``; NaN/Inf made by training →
    ``"exploding"``; representation collapse in a run that carries lesson 09's measure of it (below)
    → ``"collapse"``; many dead ReLU units → ``"dead_relu"``; many saturated sigmoid/tanh units
    → ``"saturation"`` (with ``also=["exploding"]`` if the signal grows too); signal growth,
    gradient norm, loss blow-up or update size beyond their thresholds → ``"exploding"``; the
    first layer's signal below :data:`VANISHING_SIGNAL_RATIO` of the last layer's →
    ``"vanishing"``; else ``"healthy"``, or ``"inconclusive"`` when the saturated and dead units
    were not measured (a model whose activations the probe could not see) or the probe saw less
    than half of the model's layers ("the probe saw 1 of 2 layers. Not seen: rnn: …"). For a
    recurrent model whose trace holds ``hidden_grad_norm`` the signal is the gradient over time
    steps: the first step's below :data:`VANISHING_SIGNAL_RATIO` of the last's is vanishing
    through time.

    A Transformer's run may carry lesson 09's evidence, one value per step as lesson 09's ``Watch``
    records it: ``run.metrics["collapse"]`` (1 − cos between positions) and
    ``run.metrics["max_attention_logit"]``; representation collapse (below :data:`COLLAPSE_BELOW`
    at the end) is then the verdict ``"collapse"``, with warmup first when it came during training
    and Pre-LN first when it was there at step 0; attention-logit growth (above :data:`LOGIT_GROWTH`)
    joins the evidence, with qk-norm in the notes.

    A ``torch.compile``'d model: :func:`~gradcourse.train.fit` probes the module inside it
    (``model._orig_mod``) with a warning, because hooks in a compiled graph cost about 30 times
    the time of the plain model (13.5 s against 0.4 s for three steps); in your own loop, attach
    the probe to ``model._orig_mod`` for the same reason.

    >>> from gradcourse import data, models
    >>> from gradcourse.train import fit
    >>> net = models.mlp(6, 32, activation="relu", init="kaiming", seed=0)
    >>> diagnose(fit(net, data.spirals(256), steps=100, lr=0.1)).problem
    'healthy'

    Your own loop: keep the losses, attach a probe, and hand both to the doctor.

    >>> import torch
    >>> from gradcourse.probes import Probe
    >>> ds = data.spirals(256)
    >>> net = models.mlp(20, 32, activation="sigmoid", seed=0)
    >>> opt, losses = torch.optim.SGD(net.parameters(), lr=0.5), []
    >>> with Probe(net) as probe:
    ...     for step in range(20):
    ...         opt.zero_grad()
    ...         loss = torch.nn.functional.cross_entropy(net(ds.x), ds.y)
    ...         loss.backward()
    ...         opt.step()
    ...         losses.append(loss.item())
    >>> diagnose(probe.trace, losses=losses, model=net).problem
    'vanishing'
    >>> diagnose("my run")
    Traceback (most recent call last):
    ...
    ValueError: run must be a gradcourse Run (from gradcourse.train.fit) or a probe's Trace (probe.trace, \
with losses=[...]); got str
    """
    if isinstance(run, Trace):
        run = from_trace(run, losses, model=model)
    elif not isinstance(run, Run):
        raise ValueError("run must be a gradcourse Run (from gradcourse.train.fit) or a probe's Trace "
                         f"(probe.trace, with losses=[...]); got {type(run).__name__}")
    elif losses is not None or model is not None:
        raise ValueError("losses and model are for a probe's Trace; a Run carries its own (leave them out)")
    if run.trace is None:
        raise ValueError("run must carry a probe trace: train it with fit(..., probe=True)")
    if len(run.trace.steps) == 0:
        raise ValueError("run must hold at least one recorded step")
    params = run.params if isinstance(run.params, dict) else {}
    config = _recipe(params.get("model"))
    if "activation" not in config and _module_activation(run.model):
        config["activation"] = _module_activation(run.model)  # one kind of activation module: that one
    if "cell" not in config and _module_cell(run.model):
        config["cell"] = _module_cell(run.model)  # an nn.LSTM of your own is an "lstm" recipe
    if "batchnorm" not in config and isinstance(run.model, nn.Module) and any(
            isinstance(module, nn.modules.batchnorm._BatchNorm) for module in run.model.modules()):
        config["batchnorm"] = True  # a torchvision ResNet has BatchNorm whatever its config says
    m = _measure(run, config)
    evidence: list[str] = []

    transformer = _transformer_evidence(m)

    def verdict(problem: str, evidence: list[str], also: tuple[str, ...] = ()) -> Diagnosis:
        remedies, notes = _remedies(problem, m, config, params)
        return Diagnosis(problem, evidence + transformer.evidence
                         + _recipe_evidence(problem, remedies, m, config, params),
                         remedies, m.as_dict(), m.diverged_at if problem in ("exploding", "bad_data") else None,
                         list(also), notes + transformer.notes(problem))

    # 1. NaN / Inf: bad data, or an explosion that went all the way.
    if m.diverged_at is not None:
        if m.bad_data:
            return verdict("bad_data", _bad_data_evidence(m) + _loss_evidence(m))
        where = m.nonfinite_layer
        place = f", starting in {where}" if where not in (None, "loss", "gradient", "output", "input") else ""
        kind = "loss" if m.nonfinite_where != "gradient" else "gradient"
        evidence.append(f"The {kind} became NaN/Inf at step {m.diverged_at}{place}; training "
                        "stopped there.")
        evidence += _explosion_evidence(m, before_nan=True)
        return verdict("exploding", evidence + _loss_evidence(m))

    unmeasured = _unmeasured_evidence(m, config)

    # 2. Representation collapse (lesson 09), when the run carries it: checked before the units, since
    #    a collapsed Transformer's FFN units read as dead while the cause is the collapse.
    if m.collapse_end is not None:
        remedies, notes = _remedies("collapse", m, config, params)
        return Diagnosis("collapse", transformer.evidence + _signal_evidence(m) + _loss_evidence(m), remedies,
                         m.as_dict(), None, [], notes + transformer.notes("collapse"))

    # 3. Dead ReLUs (their zero signal would otherwise read as vanishing). Only units measured as 0
    #    for every input, in a network whose activation can die: a leaky, ELU or GELU unit cannot.
    dead = m.dead_mean_end
    never = m.never_dead
    if never is not None:
        negative = m.dead_any_end
        evidence.append(f"The network's activation is {never}, whose units pass some gradient for every "
                        "input, so no unit can die"
                        + (f" ({_pct(negative)} of them were negative for every input at the last step)."
                           if not math.isnan(negative) else "."))
    elif m.dead_signed_layers:
        shown = ", ".join(m.dead_signed_layers[:5]) + (", …" if len(m.dead_signed_layers) > 5 else "")
        evidence.append(f"The units after {shown} output negative values, so they are no ReLUs (leaky ReLU, "
                        "ELU, GELU…) and cannot die: they were left out of the dead-unit count.")
    if never is None and not math.isnan(dead):
        layer, worst = m.dead_worst_layer, m.dead_worst
        if dead >= DEAD_FRACTION or worst >= DEAD_LAYER_FRACTION:
            evidence.append(f"At the last step {_pct(dead)} of the hidden ReLU units were dead "
                            f"(0 for every input), {_pct(worst)} in {layer} (thresholds "
                            f"{_pct(DEAD_FRACTION)} on average, {_pct(DEAD_LAYER_FRACTION)} in one layer).")
            start = m.dead_mean_start
            if dead > start + 0.2:
                evidence.append(f"At step 0 only {_pct(start)} were dead: training killed them "
                                "(a step too large pushes a unit's input below 0 for every example).")
            else:
                evidence.append(f"They were already dead at step 0 ({_pct(start)}): the "
                                "initialisation (weights or biases) switched them off.")
            return verdict("dead_relu", evidence + _signal_evidence(m) + _loss_evidence(m))
        evidence.append(f"Dead ReLU units: {_pct(dead)} on average at the last step, at most "
                        f"{_pct(worst)} in one layer (below the {_pct(DEAD_FRACTION)} threshold).")

    # 3b. Underflow (lesson 10): under float16 the gradients of whole layers were rounded to 0. The
    #     number format's doing, not the network's: named before saturation and vanishing, whose
    #     small gradients it may hide (the zero signal reads as vanishing).
    underflow = _underflow(run.trace, m)
    if underflow and max(m.underflow_fraction.values()) >= UNDERFLOW_FRACTION:
        return verdict("underflow", underflow + evidence + _loss_evidence(m))
    evidence += underflow + _skipped_evidence(run.trace)

    # 4. Saturation (sigmoid/tanh units on their flat tails), and whether the signal grows anyway.
    saturated = max(m.saturated_mean_start, m.saturated_mean_end)
    if not math.isnan(saturated):
        if saturated >= SATURATION_FRACTION:
            evidence.append(f"{_pct(m.saturated_mean_start)} of the hidden units were saturated "
                            f"at step 0 and {_pct(m.saturated_mean_end)} at the last step, "
                            f"{_pct(m.saturated_worst)} in {m.saturated_worst_layer} "
                            f"(threshold {_pct(SATURATION_FRACTION)}): their slope is near 0.")
            trained = _made_by_training(m, "saturated")
            if trained:
                evidence.append(f"At step 0 only {_pct(m.saturated_mean_start)} were saturated: training "
                                "pushed them there (steps too large grow the weights until every unit's "
                                "input sits on a tail), so the learning rate is the cause, not the "
                                "initialisation.")
            signs = _explosion_evidence(m, before_nan=False, batchnorm=bool(config.get("batchnorm")))
            if signs:
                cure = ("The cure is a smaller learning rate, which keeps the weights near the scale they "
                        "started at." if trained else "The cure is the same: a smaller weight scale.")
                evidence += signs + [
                    "Saturated and exploding at once: each unit's slope is small, but the weights are so "
                    "large that slope × weights, the factor each layer applies to the signal, is above 1 "
                    f"(the chaotic phase of lesson 02). {cure}"]
                return verdict("saturation", evidence + _loss_evidence(m), also=("exploding",))
            return verdict("saturation", evidence + _signal_evidence(m) + _loss_evidence(m))
        evidence.append(f"Saturated units: {_pct(m.saturated_mean_start)} at step 0, "
                        f"{_pct(m.saturated_mean_end)} at the last step (below the "
                        f"{_pct(SATURATION_FRACTION)} threshold).")

    # 5. Exploding without a NaN (yet). Checked before vanishing: a run that starts by exploding
    #    can end with a vanishing signal once its units saturate, but the explosion came first.
    signs = _explosion_evidence(m, before_nan=False, batchnorm=bool(config.get("batchnorm")))
    if signs:
        return verdict("exploding", signs + evidence + unmeasured + _loss_evidence(m))

    # 6. Vanishing: the signal shrinks on its way back.
    low = _nanmin(m.signal_ratio_start, m.signal_ratio_end)
    if not math.isnan(low) and low < VANISHING_SIGNAL_RATIO:
        return verdict("vanishing", _signal_evidence(m, verdict="vanishing") + evidence + unmeasured
                       + _loss_evidence(m))

    # 7. Nothing wrong with the gradients: healthy, if the units could be seen.
    evidence = _signal_evidence(m) + [
        f"The largest total gradient norm was {_num(m.grad_norm_max)} (threshold "
        f"{_num(EXPLODING_GRAD_NORM)}), the median update moved the weights by "
        f"{_num(m.update_ratio_median)} of their size per step (threshold {_num(LARGE_UPDATE_RATIO)})."
    ] + evidence + unmeasured + _loss_evidence(m)
    needs_units = not m.sequence and config.get("activation") not in _NO_UNHEALTHY_UNITS
    if m.coverage_short:
        return verdict("inconclusive", _coverage_evidence(m) + evidence)
    if needs_units and m.unit_layers_measured == 0:
        return verdict("inconclusive", evidence + _coverage_evidence(m))
    return verdict("healthy", evidence + _coverage_evidence(m))


def from_trace(trace: Trace, losses: Sequence[float] | None = None, *, model: nn.Module | None = None) -> Run:
    """A :class:`~gradcourse.run.Run` built from a probe's ``trace`` and the ``losses`` of your
    own training loop, for :func:`diagnose`, :mod:`gradcourse.plots` and
    :func:`gradcourse.tensorboard.export`.

    ``losses`` holds one loss per step (floats or 0-d tensors; a NaN marks where the run
    diverged), or ``None`` if you did not keep them (the loss checks are then skipped). The total
    gradient norm of each recorded step is the norm over the tracked layers' weights (the probe
    does not see biases); steps that were not recorded hold NaN. ``model`` (optional) fills
    ``run.params["model"]`` with its ``config`` (models from :mod:`gradcourse.models`) or its
    class name.

    >>> import numpy as np
    >>> t = Trace(layers=["0", "2"], steps=np.array([0, 1]),
    ...           scalars={"grad_norm": np.array([[3.0, 4.0], [0.6, 0.8]])})
    >>> run = from_trace(t, losses=[0.7, 0.6])
    >>> run.grad_norm_total.tolist(), run.diverged_at
    ([5.0, 1.0], None)
    """
    if not isinstance(trace, Trace):
        raise ValueError(f"trace must be a probe's Trace (probe.trace); got {type(trace).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module or None; got {type(model).__name__}")
    if losses is None:
        values = np.array([], dtype=np.float64)
    else:
        if isinstance(losses, (str, bytes)) or not isinstance(losses, (Sequence, np.ndarray)):
            raise ValueError(f"losses must be a list of numbers (one loss per step); got {type(losses).__name__}")
        try:
            values = np.array([float(v) for v in losses], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("losses must be a list of numbers (one loss per step, e.g. loss.item()); "
                             f"got {list(losses)[:3]!r}...") from None
    steps = np.asarray(trace.steps, dtype=int)
    length = max(len(values), int(steps.max()) + 1 if len(steps) else 0)
    totals = np.full(length, np.nan)
    if "grad_norm" in trace.scalars and len(steps):
        with np.errstate(invalid="ignore"):
            totals[steps] = np.sqrt(np.nansum(trace.get("grad_norm").astype(np.float64) ** 2, axis=1))
        totals[[s for s in trace.skipped_steps if s < length]] = np.nan  # a GradScaler's skipped step
    diverged_at = None
    nonfinite = trace.nonfinite or {}
    if nonfinite.get("step") is not None:
        diverged_at = int(nonfinite["step"])
    elif len(values) and not np.isfinite(values).all():
        diverged_at = int(np.flatnonzero(~np.isfinite(values))[0])
    config = None if model is None else _runfile.model_config(model)
    metrics = {"final_loss": float(values[-1])} if len(values) else {}
    return Run(losses=values, grad_norm_total=totals, clipped=np.zeros(length, dtype=bool),
               metrics=metrics, params={"model": config, "source": "trace"}, trace=trace,
               diverged_at=diverged_at, diverged_layer=nonfinite.get("layer"), model=model)


# -- the recipe --------------------------------------------------------------------------------
#: The keys of a model's config that the doctor reads, with the types gradcourse.models gives them.
_RECIPE_TYPES = {"kind": str, "activation": str, "init": str, "weight_std": (int, float), "batchnorm": bool,
                 "residual": bool, "cell": str, "norm": str}
#: Where other libraries name the activation: Hugging Face (``hidden_act``, GPT-2's
#: ``activation_function``), and ``activation`` as most hand-written configs spell it.
_ACTIVATION_KEYS = ("activation", "hidden_act", "activation_function", "act_fn", "nonlinearity")


def _recipe(config) -> dict:
    """What the doctor reads of a run's ``params["model"]``: whatever that is (a gradcourse recipe,
    a nanoGPT dataclass, a Hugging Face config, an object, ``None``), the keys it knows, each only
    when it has the type :mod:`gradcourse.models` gives it, and the activation under the names
    other libraries use, lower-cased (``"gelu_new"`` reads as ``"gelu"``).

    >>> _recipe({"activation": "ReLU", "weight_std": "large", "n_layer": 12})
    {'activation': 'relu'}
    >>> _recipe({"hidden_act": "gelu_new"}), _recipe(None), _recipe("GPT(n_layer=12)")
    ({'activation': 'gelu'}, {}, {})
    """
    fields = _runfile.plain(config) if config is not None else {}
    if not isinstance(fields, dict):
        return {}
    recipe = {k: fields[k] for k, kind in _RECIPE_TYPES.items()
              if isinstance(fields.get(k), kind) and not (kind is not bool and isinstance(fields.get(k), bool))}
    activation = next((fields[k] for k in _ACTIVATION_KEYS if isinstance(fields.get(k), str)), None)
    if activation is not None:
        recipe["activation"] = _activation_name(activation)
    else:
        recipe.pop("activation", None)
    return recipe


def _activation_name(name: str) -> str:
    """A library's activation name in the course's words: "ReLU" → "relu", "LeakyReLU" → "leaky_relu",
    "gelu_new"/"gelu_pytorch_tanh" → "gelu", "swish" → "silu"."""
    key = name.lower().replace("-", "_")
    aliases = {"leakyrelu": "leaky_relu", "swish": "silu", "relu6": "relu"}
    if key in aliases:
        return aliases[key]
    if key.startswith("gelu"):
        return "gelu"
    return key


# -- measurements ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurements:
    """Every number the doctor's checks read, measured once from a run by :func:`_measure`.

    Frozen and typed: a check reads ``m.signal_ratio_start``, and a misspelt or missing name is an
    AttributeError at once, where a dict of string keys handed back ``KeyError`` at best and a
    silently absent value at worst; building it with a key too many or too few raises. A ratio or
    fraction that does not apply to the run is NaN; a layer name or step that does not exist, None.
    :attr:`Diagnosis.numbers` is the same values as a dict (:meth:`as_dict`).
    """

    # the layers and the backpropagated signal ‖∂L/∂z‖ (or ‖∂L/∂h_t‖ through time)
    layers: list[str]
    sequence: bool
    signal_first: str
    signal_last: str
    signal_ratio_start: float
    signal_ratio_end: float
    step_end: int
    signal_ratio_max: float
    # the weight gradients, clipping and the update sizes
    grad_norm_start: float
    grad_norm_max: float
    grad_norm_max_step: int | None
    weights_counted: int
    clipped_fraction: float
    update_ratio_median: float
    update_ratio_first: float
    update_ratio_last: float
    # saturated (sigmoid/tanh) and dead (ReLU) units, over the hidden layers where they were measured
    dead_signed_layers: list[str]
    dead_any_end: float
    saturated_mean_start: float
    saturated_mean_end: float
    saturated_worst: float
    saturated_worst_layer: str | None
    dead_mean_start: float
    dead_mean_end: float
    dead_worst: float
    dead_worst_layer: str | None
    unit_layers_measured: int
    unit_layers_unmeasured: list[str]
    never_dead: str | None  # the activation when no unit of it can die (leaky ReLU, GELU, …)
    # what the probe saw of the model
    layers_seen: int
    layers_total: int
    layers_unseen: dict[str, str]
    signal_places: int
    coverage_short: bool
    # the loss curve
    loss_start: float
    loss_end: float
    loss_min: float
    loss_max: float
    loss_drop: float
    loss_jump_fraction: float
    loss_window: int
    loss_window_start: float
    loss_window_end: float
    batches: str | int | None  # "full", the batch size, or None (a loop of your own)
    steps: int
    # NaN/Inf: where and whether the data brought it
    diverged_at: int | None
    nonfinite_layer: str | None
    nonfinite_where: str | None
    bad_data: str | None
    probe_notes: list[str]
    # lesson 09, when the run carries it: collapse (None unless it collapsed) and attention-logit growth
    collapse_start: float | None
    collapse_end: float | None
    collapse_step: int | None
    attention_logit_start: float | None
    max_attention_logit: float | None  # None unless the logits grew past LOGIT_GROWTH
    # lesson 10: each layer's share of exactly-0 weight-gradient entries under float16
    underflow_fraction: dict[str, float]

    def as_dict(self) -> dict:
        """The measurements as a dict (name → value), what :attr:`Diagnosis.numbers` holds."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _measure(run: Run, config: dict) -> Measurements:
    """Every number the verdict uses, as plain floats (NaN where it does not apply): the keys
    collected here must be exactly :class:`Measurements`' fields, or building it raises."""
    trace = run.trace
    layers = list(trace.layers)
    hidden = list(range(max(len(layers) - 1, 1)))  # every layer but the output layer
    sequence = trace.hidden_grad_norm is not None
    v: dict = {"layers": layers, "sequence": sequence}

    signal = (trace.get("hidden_grad_norm") if sequence
              else _scalar(trace, "output_grad_norm")[:, hidden]).astype(float)
    where = list(hidden)
    if not sequence and signal.size:
        # Layers whose signal was never measured (attention's out_proj, whose weight attention calls
        # directly) are left out: the ratio runs from the first to the last layer that was measured.
        kept = np.flatnonzero(np.isfinite(signal).any(axis=0))
        if len(kept):
            signal, where = signal[:, kept], [hidden[k] for k in kept]
    rows = [i for i in range(len(signal)) if np.isfinite(signal[i]).all()]
    ratio = lambda row: _ratio(signal[row, 0], signal[row, -1])  # noqa: E731
    v["signal_first"] = "h_1" if sequence else _display(layers[where[0]])
    v["signal_last"] = f"h_{signal.shape[1]}" if sequence else _display(layers[where[-1]])
    v["signal_ratio_start"] = ratio(0) if 0 in rows and signal.shape[1] > 1 else math.nan
    v["signal_ratio_end"] = ratio(rows[-1]) if rows and signal.shape[1] > 1 else math.nan
    v["step_end"] = int(trace.steps[rows[-1]]) if rows else int(trace.steps[-1])
    v["signal_ratio_max"] = (max(ratio(r) for r in rows) if rows and signal.shape[1] > 1
                             else math.nan)

    totals = np.asarray(run.grad_norm_total, dtype=float)
    finite = totals[np.isfinite(totals)]
    v["grad_norm_start"] = float(totals[0]) if len(totals) else math.nan
    v["grad_norm_max"] = float(finite.max()) if len(finite) else math.nan
    v["grad_norm_max_step"] = int(np.flatnonzero(totals == finite.max())[0]) if len(finite) else None
    # how many weight values the gradient histogram counted (the weights of trace.layers; not the
    # biases, nor the norm layers', which the trace keeps apart)
    hist = trace.grad_hist
    v["weights_counted"] = int(hist[0].sum()) if hist is not None and len(hist) else 0

    clipped = np.asarray(run.clipped, dtype=bool)
    v["clipped_fraction"] = float(clipped.mean()) if len(clipped) else 0.0

    updates = _scalar(trace, "update_ratio")[:, hidden].astype(float)
    updates = updates[np.isfinite(updates).all(axis=1) & ~np.isin(trace.steps, trace.skipped_steps)]
    v["update_ratio_median"] = float(np.median(updates)) if updates.size else math.nan
    v["update_ratio_first"] = float(np.median(updates[:, 0])) if updates.size else math.nan
    v["update_ratio_last"] = float(np.median(updates[:, -1])) if updates.size else math.nan

    # Saturated/dead fractions are averaged over the hidden layers where the probe measured them
    # (it needs to see the activation after the layer); the evidence says when some were not.
    # A layer whose activation went below 0 is no ReLU (a ReLU's output, and so its mean, is never
    # negative): its "dead" units are leaky, ELU or GELU units that still pass gradient.
    measured = np.zeros(len(hidden), dtype=bool)
    with np.errstate(invalid="ignore"):
        act_mean = _scalar(trace, "act_mean")[:, hidden].astype(float)
        signed = np.array([bool((column[np.isfinite(column)] < NEGATIVE_MEAN).any()) for column in act_mean.T],
                          dtype=bool)
    v["dead_signed_layers"] = []
    v["dead_any_end"] = math.nan
    for name in ("saturated", "dead"):
        values = _scalar(trace, f"{name}_frac")[:, hidden].astype(float)
        end = rows[-1] if rows else len(values) - 1
        v[f"{name}_mean_start"] = v[f"{name}_mean_end"] = v[f"{name}_worst"] = math.nan
        v[f"{name}_worst_layer"] = None
        columns = np.flatnonzero(np.isfinite(values[0]) & np.isfinite(values[end]))
        measured[columns] = True
        if name == "dead" and len(columns):
            v["dead_any_end"] = float(values[end, columns].mean())
            v["dead_signed_layers"] = [_display(layers[hidden[c]]) for c in columns if signed[c]]
            columns = np.array([c for c in columns if not signed[c]], dtype=int)
        if not len(columns):
            continue  # not a sigmoid/tanh (saturation) or ReLU (dead units) network, or not seen
        values = values[:, columns]
        v[f"{name}_mean_start"] = float(values[0].mean())
        v[f"{name}_mean_end"] = float(values[end].mean())
        # Dead units are judged at the end (training kills them); saturation at either end.
        worst_row = values[end] if name == "dead" else np.maximum(values[0], values[end])
        k = int(np.argmax(worst_row))
        v[f"{name}_worst"] = float(worst_row[k])
        v[f"{name}_worst_layer"] = _display(layers[hidden[columns[k]]])
    # A layer whose activation the probe read as neither saturating nor rectifying (a GELU, a leaky
    # ReLU, values beyond ±1 on both sides, or no activation before the next layer) has no unit that
    # could saturate or die: it was seen, with nothing of either kind to count.
    for c, i in enumerate(hidden):
        if (trace.activation_kinds.get(layers[i]) == "other"
                and trace.activation_source.get(layers[i]) in _SEEN_SOURCES):
            measured[c] = True
    v["unit_layers_measured"] = int(measured.sum())
    v["unit_layers_unmeasured"] = [_display(layers[hidden[i]]) for i in np.flatnonzero(~measured)]
    v.update(_coverage(run, signal, sequence))

    losses = np.asarray(run.losses, dtype=float)
    good = losses[np.isfinite(losses)]
    v["loss_start"] = float(losses[0]) if len(losses) else math.nan
    v["loss_end"] = float(good[-1]) if len(good) else math.nan
    v["loss_min"] = float(good.min()) if len(good) else math.nan
    v["loss_max"] = float(good.max()) if len(good) else math.nan
    v["loss_drop"] = (1 - v["loss_min"] / v["loss_start"]) if len(good) and v["loss_start"] > 0 else math.nan
    jumps = good[1:] > (1 + ERRATIC_JUMP) * good[:-1]
    v["loss_jump_fraction"] = float(jumps.mean()) if len(jumps) else 0.0
    v.update(_loss_windows(good, run.params))  # for telling mini-batch noise from a large learning rate
    v["steps"] = len(losses)

    nonfinite = trace.nonfinite or {}
    v["diverged_at"] = run.diverged_at
    if v["diverged_at"] is None and not np.isfinite(losses).all():
        v["diverged_at"] = int(np.flatnonzero(~np.isfinite(losses))[0])
    v["nonfinite_layer"] = nonfinite.get("layer", run.diverged_layer)
    v["nonfinite_where"] = nonfinite.get("where")
    v["bad_data"] = _bad_data(run, v["diverged_at"], v["nonfinite_where"], v["nonfinite_layer"])
    notes = getattr(trace, "notes", None) or []
    v["probe_notes"] = [str(n) for n in (notes.values() if isinstance(notes, dict) else notes)]
    v.update(_transformer_numbers(run))
    v["underflow_fraction"] = _underflow_shares(trace)
    v["never_dead"] = _never_dead(run, config)
    return Measurements(**v)


def _coverage(run: Run, signal: np.ndarray, sequence: bool) -> dict:
    """What the probe saw of the model: its layers with a measured weight gradient, those it listed but
    never measured (NaN columns, with the probe's reason from ``trace.unmeasured``), and, when the model
    is at hand, the modules owning parameters that it did not track at all (an ``nn.RNN``, attention).
    ``coverage_short`` is True when too little was seen to call the run healthy: fewer than half the
    layers, or the backpropagated signal at fewer than two places in a model that has more layers."""
    trace = run.trace
    grads = _scalar(trace, "grad_norm")
    seen = [name for j, name in enumerate(trace.layers) if np.isfinite(grads[:, j]).any()]
    blind = {name: "no gradient was measured" for j, name in enumerate(trace.layers)
             if not np.isfinite(grads[:, j]).any()}
    if run.model is not None:
        for name, module in run.model.named_modules():
            owns = next(module.parameters(recurse=False), None) is not None
            if owns and name and name not in trace.layers and not isinstance(module, _NOT_LAYERS):
                blind[name] = f"{type(module).__name__} is not tracked by the probe"
    unmeasured = getattr(trace, "unmeasured", None) or {}
    for name in blind:
        if isinstance(unmeasured, dict) and name in unmeasured:
            blind[name] = str(unmeasured[name])
    total = len(seen) + len(blind)
    places = int(np.isfinite(signal).any(axis=0).sum()) if signal.size else 0
    short = bool(total) and (2 * len(seen) < total or (places < 2 and total >= 2 and bool(blind)))
    return {"layers_seen": len(seen), "layers_total": total, "layers_unseen": blind,
            "signal_places": places, "coverage_short": short}


#: Activation modules by the name the course gives them (most specific first).
_ACTIVATION_MODULES = ((nn.LeakyReLU, "leaky_relu"), (nn.PReLU, "prelu"), (nn.RReLU, "rrelu"), (nn.ReLU6, "relu"),
                       (nn.ReLU, "relu"), (nn.SELU, "selu"), (nn.CELU, "celu"), (nn.ELU, "elu"),
                       (nn.GELU, "gelu"), (nn.SiLU, "silu"), (nn.Mish, "mish"), (nn.Softplus, "softplus"),
                       (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"))


def _module_activation(model: nn.Module | None) -> str | None:
    """The activation of a model of your own, read from its modules when it uses one kind only
    (an ``nn.Sequential`` of ``Linear`` and ``LeakyReLU``: ``"leaky_relu"``), else None."""
    if model is None:
        return None
    found = set()
    for module in model.modules():
        name = next((n for kind, n in _ACTIVATION_MODULES if isinstance(module, kind)), None)
        if name is None and isinstance(module, _CAN_DIE_MODULES):
            name = type(module).__name__.lower()
        if name is not None:
            found.add(name)
    return found.pop() if len(found) == 1 else None


def _module_cell(model: nn.Module | None) -> str | None:
    """"rnn", "lstm" or "gru" when the model's recurrent modules (``nn.LSTM``, ``nn.GRUCell``, …) are of
    one kind, else None."""
    if model is None:
        return None
    kinds = ((nn.LSTM, nn.LSTMCell), "lstm"), ((nn.GRU, nn.GRUCell), "gru"), ((nn.RNN, nn.RNNCell), "rnn")
    found = {name for module in model.modules() for types, name in kinds if isinstance(module, types)}
    return found.pop() if len(found) == 1 else None


def _never_dead(run: Run, config: dict) -> str | None:
    """The name of the model's activation when no unit of it can die (leaky ReLU, ELU, GELU, …): from
    its recipe (``activation``, ``hidden_act``), else from its modules when none of them can die."""
    if config.get("activation") in _NEVER_DEAD:
        return config["activation"]
    if config.get("activation") or run.model is None:
        return None
    kinds = {type(module) for module in run.model.modules()}
    if any(issubclass(k, _CAN_DIE_MODULES) for k in kinds):
        return None
    found = sorted({n for k in kinds for kind, n in _ACTIVATION_MODULES
                    if issubclass(k, kind) and issubclass(k, _NEVER_DEAD_MODULES)})
    return " and ".join(found) if found else None


#: Collapse (lesson 09): 1 − cos between the representations of two positions, averaged, below this at
#: the last step means every position says the same. Post-LN without warmup (lesson 09, seed 1) ends
#: at 4e-15; with warmup its lowest was 2e-5 and Pre-LN's 0.01.
COLLAPSE_BELOW = 1e-6
#: Attention-logit growth (lesson 09): the largest |q·k/√d| above this, and at least 10 times its
#: step-0 size, puts nearly all of a softmax's weight on one key (e^100 against e^0), whose
#: gradient then vanishes. The lesson's healthy runs stay below about 60.
LOGIT_GROWTH = 100.0


def _transformer_numbers(run: Run) -> dict:
    """Lesson 09's numbers, when the run carries them: ``run.metrics["collapse"]`` (1 − cos between
    positions, one value per step, as lesson 09 measures it) and ``run.metrics["max_attention_logit"]``
    (the largest attention logit per step). The collapse values are None unless the last one is below
    :data:`COLLAPSE_BELOW`; the logits' unless they grew past :data:`LOGIT_GROWTH` (and ten times
    their step-0 size)."""
    metrics = run.metrics if isinstance(run.metrics, dict) else {}
    out = dict.fromkeys(("collapse_start", "collapse_end", "collapse_step", "attention_logit_start",
                         "max_attention_logit"))
    collapse = _series(metrics.get("collapse"))
    if collapse is not None and collapse[-1] < COLLAPSE_BELOW:
        out.update(collapse_start=float(collapse[0]), collapse_end=float(collapse[-1]),
                   collapse_step=int(np.flatnonzero(collapse < COLLAPSE_BELOW)[0]))
    logits = _series(metrics.get("max_attention_logit"))
    if logits is not None and logits.max() > max(LOGIT_GROWTH, 10 * abs(logits[0])):
        out.update(attention_logit_start=float(logits[0]), max_attention_logit=float(logits.max()))
    return out


@dataclass(frozen=True)
class _TransformerFindings:
    """Lesson 09's evidence and its two notes, by name. The collapse note gives the advice that the
    verdict "collapse" gives as its remedies (warmup, Pre-LN), so that verdict leaves it out
    (:meth:`notes`); any other verdict keeps both."""

    evidence: list[str]
    collapse_note: str | None = None
    logit_note: str | None = None

    def notes(self, problem: str) -> list[str]:
        kept = (None if problem == "collapse" else self.collapse_note, self.logit_note)
        return [note for note in kept if note is not None]


def _transformer_evidence(m: Measurements) -> _TransformerFindings:
    """Lesson 09's sentences from the measurements: the evidence, and the collapse and logit notes;
    nothing when the run carries neither.

    >>> import numpy as np
    >>> run = Run(np.ones(3), np.ones(3), np.zeros(3, bool), {"collapse": [0.9, 1e-3, 1e-12]}, {})
    >>> values = dict.fromkeys(f.name for f in fields(Measurements))   # a run that measured nothing else
    >>> found = _transformer_evidence(Measurements(**{**values, **_transformer_numbers(run)}))
    >>> found.evidence[0].startswith("Representation collapse"), "Pre-LN" in found.notes("healthy")[0]
    (True, True)
    >>> found.notes("collapse")
    []
    """
    evidence = []
    collapse_note = logit_note = None
    if m.collapse_end is not None:
        evidence.append(f"Representation collapse: 1 − cos between positions fell from {_num(m.collapse_start)} at "
                        f"step 0 to {_num(m.collapse_end)} at the end, below {_num(COLLAPSE_BELOW)} from step "
                        f"{m.collapse_step} on: every position's representation is the same, so the model cannot "
                        "tell them apart. No gradient blew up; this is lesson 09's collapse.")
        collapse_note = ("Collapse (lesson 09): warm the learning rate up (fit(..., warmup=...)) or move each "
                         "LayerNorm inside its branch (Pre-LN); both keep the first large steps from making every "
                         "position alike.")
    if m.max_attention_logit is not None:
        evidence.append(f"The largest attention logit grew from {_num(m.attention_logit_start)} at step 0 to "
                        f"{_num(m.max_attention_logit)} (threshold {_num(LOGIT_GROWTH)}): the softmax puts "
                        "nearly all its weight on one key, and its gradient vanishes.")
        logit_note = ("Attention-logit growth (lesson 09): a LayerNorm on the queries and keys (qk-norm) "
                      "keeps the logits bounded; a smaller learning rate slows the growth.")
    return _TransformerFindings(evidence, collapse_note, logit_note)


def _series(values) -> np.ndarray | None:
    """A per-step list of numbers as a float array of its finite values, or None if it is not one."""
    if isinstance(values, (str, bytes, dict)) or values is None:
        return None
    try:
        array = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    array = array[np.isfinite(array)]
    return array if array.size else None


def _bad_data(run: Run, step: int | None, where: str | None, layer: str | None) -> str | None:
    """``"inputs"`` or ``"targets"`` when the NaN/Inf came with the data rather than from training.

    The probe checks every forward pass: a non-finite output of the *first* layer on a step whose
    weights were all finite can only come from the inputs (overflowing ``W·x`` would take weights
    near 1e38). A NaN loss from a finite model output can only come from the targets (cross-entropy
    of finite logits is finite; a squared error of finite numbers overflows to Inf, not NaN).
    """
    trace = run.trace
    if step is None:
        return None
    if layer in ("input", "data") or where in ("input", "data"):
        return "inputs"
    rows = np.flatnonzero(np.asarray(trace.steps) == step)
    weights = trace.scalars.get("weight_norm")
    finite_weights = bool(len(rows)) and weights is not None and bool(np.isfinite(weights[rows[0]]).all())
    if where == "forward" and layer == trace.layers[0] and finite_weights:
        return "inputs"
    losses = np.asarray(run.losses, dtype=float)
    nan_loss = step < len(losses) and np.isnan(losses[step])
    if trace.nonfinite is None and run.diverged_layer in (None, "loss") and nan_loss and finite_weights:
        return "targets"
    return None


def _display(layer: str) -> str:
    """A layer's name as a sentence can say it: ``layer3``, or ``model[2]`` for a Sequential's ``"2"``."""
    return f"model[{layer}]" if layer.isdigit() else layer


def _scalar(trace: Trace, name: str) -> np.ndarray:
    """A per-layer quantity of ``trace``, all NaN if it was not recorded."""
    if name in trace.scalars:
        return np.asarray(trace.scalars[name], dtype=float)
    return np.full((len(trace.steps), len(trace.layers)), np.nan)


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


def _signal_evidence(m: Measurements, verdict: str = "") -> list[str]:
    start, end = m.signal_ratio_start, m.signal_ratio_end
    if math.isnan(start) and math.isnan(end):
        return []
    first, last = m.signal_first, m.signal_last
    what = "the gradient signal ‖∂L/∂h‖ at the first time step" if m.sequence else \
        f"the gradient signal ‖∂L/∂z‖ reaching {first}"
    text = (f"At step 0 {what} was {_relative(start)} the one at {last}; at the last step "
            f"(step {m.step_end}) {_relative(end)} it.")
    if verdict == "vanishing":
        text += f" Threshold for vanishing: {_num(VANISHING_SIGNAL_RATIO)}."
        extra = []
        if not math.isnan(m.update_ratio_first) and m.update_ratio_last > 0:
            first = m.update_ratio_first
            moved = (f"moved by {_num(first)} of their size per step (median)" if first > 0 else
                     "did not move at all (each update was too small to change a float32 weight)")
            extra.append(f"The first layer's weights {moved}; the last hidden layer's moved by "
                         f"{_num(m.update_ratio_last)}: the first layers barely learn.")
        return [text, *extra]
    return [text]


def _explosion_evidence(m: Measurements, *, before_nan: bool, batchnorm: bool = False) -> list[str]:
    """Every explosion sign that fires. In a BatchNorm network the raw signal ratio is not one:
    BN divides each layer's backward signal by the batch std of that layer's input, so the ratio
    reflects the weights' scale, which BN makes irrelevant to the forward pass."""
    signs = []
    if (not batchnorm and not math.isnan(m.signal_ratio_start)
            and m.signal_ratio_start > EXPLODING_SIGNAL_RATIO):
        signs.append(f"At step 0 the gradient signal reaching {m.signal_first} was "
                     f"{_num(m.signal_ratio_start)} times the one at {m.signal_last}: it grows "
                     f"going backward (threshold {_num(EXPLODING_SIGNAL_RATIO)}).")
    if _large_gradient(m):
        rms = m.grad_norm_max / math.sqrt(m.weights_counted) if m.weights_counted else math.nan
        per_weight = "" if math.isnan(rms) else f", {_num(rms)} per weight"
        signs.append(f"The total gradient norm reached {_num(m.grad_norm_max)} at step "
                     f"{m.grad_norm_max_step}{per_weight} (thresholds {_num(EXPLODING_GRAD_NORM)} and "
                     f"{EXPLODING_GRAD_RMS:g} per weight; with He or Xavier init the course's networks start "
                     "between about 0.5 and 3, 0.007 to 0.06 per weight).")
    if not math.isnan(m.loss_max) and m.loss_max > LOSS_BLOWUP * m.loss_start and m.steps > 1:
        signs.append(f"The loss rose from {_num(m.loss_start)} to {_num(m.loss_max)}, more "
                     f"than {LOSS_BLOWUP:g} times its first value.")
    elif (m.steps >= MIN_STEPS_FOR_SHAPE and m.loss_drop < PLATEAU_DROP
          and m.loss_max > LOSS_ROSE * m.loss_start):
        signs.append(f"The loss never fell {_pct(PLATEAU_DROP)} below its first value, {_num(m.loss_start)}, "
                     f"and rose to {_num(m.loss_max)}, more than {LOSS_ROSE:g} times it: the steps overshoot.")
    if not math.isnan(m.update_ratio_median) and m.update_ratio_median > LARGE_UPDATE_RATIO:
        signs.append(f"A typical step changed the weights by {_num(m.update_ratio_median)} of "
                     f"their size (threshold {_num(LARGE_UPDATE_RATIO)}): the steps are far too big.")
    if signs and m.clipped_fraction > 0:
        signs.append(f"Gradient clipping was on and cut {_pct(m.clipped_fraction)} of the steps: "
                     "it keeps each step bounded, but the gradients it measures are still this large "
                     "(clipping treats the symptom, lesson 03).")
    if before_nan and not signs and m.steps > 1 and not math.isnan(m.grad_norm_max):
        signs.append(f"The total gradient norm went from {_num(m.grad_norm_start)} to "
                     f"{_num(m.grad_norm_max)} before the NaN.")
    return signs


def _large_gradient(m: Measurements) -> bool:
    """Whether the largest total gradient norm is an explosion's: above the threshold in total and
    per weight (a large model's healthy norm is large in total only)."""
    largest = m.grad_norm_max
    if math.isnan(largest) or largest <= EXPLODING_GRAD_NORM:
        return False
    return not m.weights_counted or largest > EXPLODING_GRAD_RMS * math.sqrt(m.weights_counted)


def _bad_data_evidence(m: Measurements) -> list[str]:
    step = m.diverged_at
    if m.bad_data == "targets":
        return [f"The loss was NaN at step {step} although the model's output was finite and its weights "
                "were finite: the NaN came from the targets."]
    return [f"The first layer, {_display(m.layers[0])}, produced NaN/Inf at step {step} although every weight was "
            "finite: the NaN came in with the inputs, not from the gradients."]


def _unmeasured_evidence(m: Measurements, config: dict) -> list[str]:
    out = [f"The probe noted: {note}" for note in m.probe_notes]
    if m.sequence or config.get("activation") in _NO_UNHEALTHY_UNITS:
        return out
    missing = m.unit_layers_unmeasured
    if m.unit_layers_measured == 0:
        out.append("Saturated (sigmoid/tanh) and dead (ReLU) units were not measured: the probe did not "
                   "see the activation after each layer. The doctor cannot rule out saturation or dead "
                   "ReLUs.")
    elif missing:
        shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
        out.append(f"Saturated or dead units were measured in {m.unit_layers_measured} of "
                   f"{m.unit_layers_measured + len(missing)} hidden layers; not in {shown} (the probe "
                   "saw no sigmoid, tanh or ReLU after them).")
    return out


def _coverage_evidence(m: Measurements) -> list[str]:
    """What the probe did not see, layer by layer (nothing when it saw every layer)."""
    blind = m.layers_unseen
    if not blind:
        return []
    shown = "; ".join(f"{_display(name)}: {why}" for name, why in list(blind.items())[:6])
    more = f"; and {len(blind) - 6} more" if len(blind) > 6 else ""
    text = f"The probe saw {m.layers_seen} of {m.layers_total} layers. Not seen: {shown}{more}."
    if m.coverage_short and m.signal_places < 2:
        text += (" The backpropagated signal was measured at fewer than two places, so whether it "
                 "vanishes or explodes on its way back could not be judged.")
    return [text]


def _loss_evidence(m: Measurements) -> list[str]:
    if m.steps == 0:
        return ["No losses were given, so the loss curve was not judged."]
    if math.isnan(m.loss_min):
        return [f"The loss was never finite (its first value was {m.loss_start})."]
    end = "at its last finite step" if m.diverged_at is not None else "at the end"
    text = f"Loss: {_num(m.loss_start)} at step 0, {_num(m.loss_end)} {end}"
    if m.steps < MIN_STEPS_FOR_SHAPE:
        return [text + f" (too few steps, {m.steps}, to judge the loss curve's shape)."]
    if m.loss_drop < PLATEAU_DROP:
        text += (f"; it never improved by more than {_pct(max(m.loss_drop, 0.0))} (a plateau: "
                 f"threshold {_pct(PLATEAU_DROP)}).")
    else:
        text += f" (best {_num(m.loss_min)}, {_pct(m.loss_drop)} below the start)."
    out = [text]
    if m.loss_jump_fraction >= ERRATIC_FRACTION:
        out.append(f"The loss is erratic: {_pct(m.loss_jump_fraction)} of the steps raised it by "
                   f"more than {_pct(ERRATIC_JUMP)} (threshold {_pct(ERRATIC_FRACTION)} of the steps)"
                   + _erratic_cause(m)[1])
    return out


#: Mini-batch noise or a learning rate too large? The loss averaged over LOSS_WINDOW steps (the first
#: window against the last) must fall by at least NOISE_TREND_DROP for an erratic mini-batch loss to
#: read as the spread between batches: healthy runs on the spirals with batches of 4-16 fell by
#: 32-52% over 200 steps, learning rates too large (their loss ending near or above chance) by 14%
#: or less, or rose.
LOSS_WINDOW = 10
NOISE_TREND_DROP = 0.25


def _loss_windows(good: np.ndarray, params) -> dict:
    """The mean finite loss over the first and over the last window of steps, and how the run drew
    its batches: ``"full"`` (``fit`` without ``batch_size``), the batch size, or ``None`` (unknown:
    a loop of your own)."""
    k = min(LOSS_WINDOW, len(good) // 4)
    params = params if isinstance(params, dict) else {}
    batches = (params.get("batch_size") or "full") if "batch_size" in params else None
    return {"loss_window": k, "loss_window_start": float(good[:k].mean()) if k else math.nan,
            "loss_window_end": float(good[-k:].mean()) if k else math.nan, "batches": batches}


def _erratic_cause(m: Measurements) -> tuple[str, str]:
    """Why an erratic loss jumps, and the end of the sentence that says so: ``"lr"`` (every step
    saw the whole data set, so the jumps are the steps; or the loss's average rose, which the spread
    between batches cannot do), ``"batches"`` (mini-batches, and the average fell by at least
    :data:`NOISE_TREND_DROP`: the jumps are the spread between batches) or ``"either"`` (the
    batches are unknown, or the average barely fell: both are possible)."""
    if m.batches == "full":
        return "lr", ": the learning rate is probably too large."
    start, end, k = m.loss_window_start, m.loss_window_end, m.loss_window
    falls = start > 0 and end <= (1 - NOISE_TREND_DROP) * start
    how = "fell" if falls else "rose" if end > start else f"fell by less than {_pct(NOISE_TREND_DROP)}"
    average = f"; averaged over {k} steps it {how} from {_num(start)} to {_num(end)}"
    spread = "(each step's loss is measured on a different batch)"
    if end > start:
        return "lr", (average + ": the learning rate is probably too large (the spread between "
                      "mini-batches makes the loss jump, it does not raise its average).")
    if m.batches is None:
        if falls:
            return "either", (average + f". If your loop draws mini-batches, these jumps are the spread "
                              f"between batches {spread}, not a learning rate too large; if every step "
                              "sees the whole data set, the learning rate is probably too large.")
        return "either", (average + ": the learning rate may be too large, or, if your loop draws "
                          f"mini-batches, the jumps may be the spread between batches {spread}.")
    size = f"mini-batches of {m.batches}"
    if falls:
        return "batches", (average + f", so these jumps are the spread between {size} {spread}, not a "
                           "learning rate too large.")
    return "either", (average + f": the jumps may be the spread between {size} {spread}, or the "
                      "learning rate may be too large.")


# -- remedies ----------------------------------------------------------------------------------
def _remedies(problem: str, m: Measurements, config: dict, params: dict) -> tuple[list[Remedy], list[str]]:
    """The ranked registry entries for ``problem``, and the notes (advice that is no remedy)."""
    if config.get("kind") == "sequence" or m.sequence:
        return _sequence_remedies(problem, m, config)
    activation = config.get("activation", "")
    init = config.get("init", "")
    std = config.get("weight_std")
    batchnorm, residual = config.get("batchnorm", False), config.get("residual", False)
    names: list[str] = []
    notes: list[str] = []
    no_clipping = ("Do not reach for gradient clipping: it only makes large gradients smaller, never "
                   "small ones larger (lesson 03).")
    if problem == "vanishing":
        if activation in _RELU_FAMILY:
            names.append("he_init")
        elif activation == "linear":
            names.append("xavier_init")
        else:  # sigmoid, tanh, or a model of your own whose activation the doctor does not know
            names.append("relu_he")
            if init != "xavier":
                names.append("xavier_init")
        names += [] if batchnorm else ["batchnorm"]
        names += [] if residual else ["skip_connections"]
        notes.append(no_clipping)
    elif problem == "exploding":
        critical = "he_init" if activation in _RELU_FAMILY or not activation else "xavier_init"
        too_wide = init == "normal" and std is not None and std > _critical_std(activation) * 1.2
        born = too_wide or m.signal_ratio_start > EXPLODING_SIGNAL_RATIO
        if born:
            names.append(critical)
        names.append("lower_lr")
        names += [] if params.get("clip") else ["clip_norm"]
        names += [] if batchnorm else ["batchnorm"]
        if not born and m.grad_norm_start <= EXPLODING_GRAD_NORM:
            notes.append(_WARMUP_NOTE)  # it was fine at step 0: training made it explode
    elif problem == "saturation":
        if _made_by_training(m, "saturated"):  # absent at step 0: the steps did it
            names += ["lower_lr"] + ([] if params.get("clip") else ["clip_norm"])
            names += [] if init == "xavier" else ["xavier_init"]
            names += ["relu_he"] + ([] if batchnorm else ["batchnorm"])
            notes.append(_WARMUP_NOTE)
        else:
            names += ["xavier_init", "relu_he"] + ([] if batchnorm else ["batchnorm"]) + ["lower_lr"]
            notes.append("Large steps also grow the weights into saturation during training: a smaller "
                         "learning rate keeps them in range (lesson 02).")
    elif problem == "dead_relu":
        killed = m.dead_mean_end > m.dead_mean_start + 0.2
        names += ["lower_lr", "leaky_relu", "he_init"] if killed else ["he_init", "leaky_relu", "lower_lr"]
        names += [] if batchnorm else ["batchnorm"]
    elif problem == "healthy":
        if m.steps >= MIN_STEPS_FOR_SHAPE and m.loss_jump_fraction >= ERRATIC_FRACTION:
            cause = _erratic_cause(m)[0]
            if cause == "lr":
                names.append("lower_lr")
                notes.append("The gradients are fine but the loss jumps around: the learning rate is "
                             "probably too large.")
            elif cause == "batches":
                notes.append(f"The gradients are fine and the loss falls on average: its jumps are the "
                             f"spread between mini-batches of {m.batches}, nothing to treat. A larger "
                             "batch smooths the curve; judge the fit by the loss on the whole training set "
                             "(run.metrics['train_loss']).")
            else:
                names.append("lower_lr")
                notes.append("The gradients are fine but the loss jumps around: either the learning rate "
                             "is too large or the jumps are the spread between mini-batches. A smaller "
                             "learning rate tells them apart: a learning rate's jumps shrink with it, the "
                             "batches' spread stays.")
        if m.steps >= MIN_STEPS_FOR_SHAPE and m.loss_drop < PLATEAU_DROP and m.loss_end > m.loss_start:
            if "lower_lr" not in names:
                names.append("lower_lr")
            notes.append("The gradients are fine but the loss ended above where it started: the steps "
                         "overshoot, so try a smaller learning rate before training longer.")
        elif m.steps >= MIN_STEPS_FOR_SHAPE and m.loss_drop < PLATEAU_DROP:
            notes.append("The gradients are fine but the loss has not moved yet: train for more "
                         "steps or with a larger learning rate.")
    elif problem == "collapse":
        born = m.collapse_start < COLLAPSE_BELOW  # already collapsed at step 0: the architecture
        pre = config.get("norm") == "pre"
        names += ([] if pre else ["pre_ln"]) + ["warmup"] if born else ["warmup"] + ([] if pre else ["pre_ln"])
        names.append("lower_lr")
        if not born:
            notes.append("The positions were told apart at step 0 and became alike during training: the first "
                         "large steps did it, so a warmup comes first.")
    elif problem == "underflow":
        names += ["loss_scaling", "bfloat16"]
        notes.append("Ask the doctor again on the run with loss scaling: with the format's problem gone, it "
                     "reads what the network itself does (the same network may still vanish in float32).")
    elif problem == "bad_data":
        what = "targets y" if m.bad_data == "targets" else "inputs x"
        notes.append(f"Check the {what}: torch.isfinite(x).all() and torch.isfinite(y).all() must both "
                     "be True. Remove or fill the missing values, then train again.")
    elif problem == "inconclusive" and m.coverage_short:
        notes.append("The doctor judges only what the probe measured: the layers listed as not seen may "
                     "hold the problem. For a recurrent model, plot the gradient over time steps "
                     "‖∂L/∂h_t‖ (lesson 06) or build it with gradcourse.models.sequence_model, which the "
                     "probe measures step by step.")
    elif problem == "inconclusive":
        notes.append("Let the probe see the activations: build the model with gradcourse.models, or "
                     "give it a probe_activations dict mapping each layer's name to the name of the "
                     "activation module that follows it. Then ask the doctor again.")
    return [REMEDIES[n] for n in names], notes


#: Underflow: under float16, this fraction of one layer's weight-gradient entries exactly 0 is the verdict
#: (the 5-layer sigmoid MLP of lesson 10 measures 98% in its first layer; its float32 run has none).
UNDERFLOW_FRACTION = 0.5
#: ... and from this fraction on the zeros are said in the evidence of another verdict.
UNDERFLOW_NOTED = 0.01
#: float16's smallest positive value (a subnormal): nothing between 0 and it survives.
FLOAT16_TINY = 2.0 ** -24


def _underflow_rows(trace: Trace) -> list[int]:
    """The rows of ``trace`` that :func:`_underflow_shares` reads: the first and the last recorded step
    that the scaler did not skip, when the probe saw the forward passes run in float16
    (``trace.precision``) and the loss scale leaves the format to blame for a zero; else none."""
    if trace.precision != "float16" or trace.grad_hist is None or not len(trace.steps):
        return []
    skipped = set(trace.skipped_steps)
    rows = [i for i, step in enumerate(trace.steps) if int(step) not in skipped]
    if not rows:
        return []
    # With a loss scale S, float16 loses what lies below 2^-24/S; from S = 2^16 on that is below the
    # histogram's first edge (2^-40), where a float32 run's gradients land in the first bin as well:
    # the format is then not to blame for the zeros, and the steps are not read.
    scales = _loss_scales(trace)
    floor = 2.0 ** round(float(trace.hist_edges[0]) / math.log10(2.0)) if trace.hist_edges is not None else 0.0
    rows = [rows[0], rows[-1]]
    return [r for r in rows if not FLOAT16_TINY / float(scales[r]) <= floor]


def _loss_scales(trace: Trace) -> np.ndarray:
    return trace.loss_scale if trace.loss_scale is not None else np.ones(len(trace.steps))


def _underflow_shares(trace: Trace) -> dict[str, float]:
    """Layer → the share of its weight-gradient entries in the histogram's first bin (zero, or below
    2^-40 after a GradScaler unscaled them), the larger of the two steps :func:`_underflow_rows`
    reads; empty when it reads none. Embeddings are left out (the rows of unused tokens are exactly
    0 in any format)."""
    rows = _underflow_rows(trace)
    if not rows:
        return {}
    hist = np.asarray(trace.grad_hist, dtype=float)[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        zero = np.nanmax(hist[:, :, 0] / hist.sum(axis=2), axis=0)
    return {name: float(z) for name, z in zip(trace.layers, zero)
            if trace.kinds.get(name) != "embedding" and np.isfinite(z)}


def _underflow(trace: Trace, m: Measurements) -> list[str]:
    """Evidence of float16 underflow, from ``m.underflow_fraction`` (:func:`_underflow_shares`)."""
    shares = m.underflow_fraction
    worst = sorted((n for n in shares if shares[n] >= UNDERFLOW_NOTED), key=trace.layers.index)
    if not worst:
        return []
    scales = _loss_scales(trace)
    listed = ", ".join(f"{_display(n)} {_pct(shares[n])}" for n in worst[:6]) + (", …" if len(worst) > 6 else "")
    scaled = (f" even at a loss scale of {_num(float(min(scales[r] for r in _underflow_rows(trace))))}"
              if trace.loss_scale is not None else " (no loss scaling)")
    return [f"The forward passes ran in float16{scaled}, and the share of each layer's weight-gradient entries "
            f"that were exactly 0 was: {listed}. float16 keeps nothing below 2^-24 ≈ {_num(FLOAT16_TINY)}: "
            "smaller gradients were rounded to 0, and the weights they belong to learn nothing. That is the number "
            "format's doing, not the network's: scale the loss (torch.amp.GradScaler) so the gradients "
            "fit float16's range, or train in bfloat16, whose range is float32's."]


def _skipped_evidence(trace: Trace) -> list[str]:
    """What a GradScaler's skipped steps mean: an overflow of the scaled gradients, not a divergence."""
    skipped = list(trace.skipped_steps)
    if not skipped:
        return []
    shown = ", ".join(map(str, skipped[:5])) + (", …" if len(skipped) > 5 else "")
    return [f"The GradScaler skipped {len(skipped)} step{'s' if len(skipped) > 1 else ''} (step {shown}): "
            "the scaled gradients overflowed float16 (Inf), so it left the weights alone and halved its "
            "scale. Such an Inf is the loss scale's, not an exploding gradient; the doctor read the other steps."]


#: Where the probe read an activation's values (``trace.activation_source``): not "output" (nothing
#: after the layer was seen) nor "unmeasured" (recurrent layers).
_SEEN_SOURCES = ("named", "module", "function", "input", "none")

_WARMUP_NOTE = ("The problem was absent at step 0 and grew during training, so the steps caused it: "
                "besides a smaller learning rate, a warmup (fit(..., warmup=100) ramps it up over the "
                "first 100 steps, lesson 09) or clipping (lesson 03) keeps the early steps small.")


def _made_by_training(m: Measurements, name: str) -> bool:
    """Whether the saturated (or dead) units were rare at step 0 (under half the doctor's threshold) and
    above the threshold at the end: training made the problem, so its step size (learning rate) is the
    cause. A network born nearly at the threshold (a tanh net at 4/√fan_in starts about 48% saturated)
    is the initialisation's doing."""
    threshold = SATURATION_FRACTION if name == "saturated" else DEAD_FRACTION
    start, end = getattr(m, f"{name}_mean_start"), getattr(m, f"{name}_mean_end")
    return start < threshold / 2 and end >= threshold


def _sequence_remedies(problem: str, m: Measurements, config: dict) -> tuple[list[Remedy], list[str]]:
    cell = config.get("cell", "rnn")
    if problem == "vanishing":
        names = {"rnn": ["gated_cell"], "lstm": ["forget_bias"]}.get(cell, [])
        return [REMEDIES[n] for n in names], ["Do not reach for gradient clipping: it cannot make small "
                                               "gradients larger (lesson 03)."]
    if problem == "exploding":
        # (a NaN at step 0 counts as born: the very first step blew up)
        born = not m.grad_norm_start <= EXPLODING_GRAD_NORM or m.signal_ratio_start > EXPLODING_SIGNAL_RATIO
        if not born:  # sound at step 0: the steps made it explode, and clipping alone leaves them too large
            names = ["lower_lr", "clip_norm", *(["recurrent_scale"] if cell == "rnn" else [])]
            return [REMEDIES[n] for n in names], [_WARMUP_NOTE]
        names = ["clip_norm", *(["recurrent_scale"] if cell == "rnn" else []), "lower_lr"]
        return [REMEDIES[n] for n in names], []
    return [], []


def _recipe_evidence(problem: str, remedies: list[Remedy], m: Measurements, config: dict, params: dict) -> list[str]:
    """What in the run's recipe the first remedies answer (its weight scale, its learning rate)."""
    out = []
    activation, std = config.get("activation", ""), config.get("weight_std")
    names = [r.name for r in remedies[:2]]
    if (config.get("init") == "normal" and std is not None and std > _critical_std(activation)
            and {"he_init", "xavier_init"} & set(names)):
        out.append(f"The weights were drawn with std {std:.3g}/√fan_in, {_critical_name(activation)}.")
    lr = params.get("lr")
    if "lower_lr" in names and lr:
        out.append(f"The learning rate was {lr:g}" + (f" ({params['optimizer']})." if params.get("optimizer")
                                                      else "."))
    return out


def _critical_std(activation: str) -> float:
    """The weight_std (in units of 1/√fan_in) that keeps the signal's size: theory's
    :func:`~gradcourse.theory.critical_sigma_w` for the activations it knows (4 for the sigmoid,
    2 for GELU, √2 for ReLU, 1 for tanh); for others, √2 for the ReLU family and 1 else."""
    if activation in theory.CRITICAL_SIGMA_W:
        return theory.CRITICAL_SIGMA_W[activation]
    return math.sqrt(2.0) if activation in _RELU_FAMILY else 1.0


#: How the sentence names each activation and why its critical scale is what it is.
_CRITICAL_WHY = {
    "relu": "He's critical scale for ReLU is √2 ≈ 1.41 (init='kaiming')",
    "leaky_relu": "the critical scale for leaky ReLU is √(2/(1 + 0.01²)) ≈ 1.41 (init='kaiming')",
    "gelu": "the critical scale for GELU is 2 (1/GELU'(0) = 1/0.5)",
    "sigmoid": "the critical scale for the sigmoid is 4 (1/σ'(0) = 1/0.25)",
    "tanh": "the critical scale for tanh is 1 (init='xavier')",
    "linear": "the critical scale for a linear network is 1 (init='xavier')",
}


def _critical_name(activation: str) -> str:
    if activation in _CRITICAL_WHY:
        return "while " + _CRITICAL_WHY[activation]
    if activation in _RELU_FAMILY:
        return "while the critical scale for ReLU-like units is about √2 ≈ 1.41 (init='kaiming')"
    return "while the critical scale is about 1 for tanh-like units (init='xavier')"
