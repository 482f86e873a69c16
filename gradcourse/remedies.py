"""The fixes the course teaches: one registry, :data:`REMEDIES`, and the functions behind it.

Every fix the course names (the gradient doctor's advice, the lesson 07 explorer's menu, the
exercise checks) is one :class:`Remedy` in :data:`REMEDIES`: its ``name`` (the key), a short
``label`` for a menu, the ``lesson`` (notebook) that teaches it, the advice as a ``sentence``, and
``apply``, which turns a run's recipe (the keyword arguments of the model factory and of ``fit``)
into the treated recipe.

>>> from gradcourse import models, remedies
>>> cure = remedies.REMEDIES["relu_he"]
>>> cure
Swap the sigmoid/tanh activation for ReLU and initialise with He (kaiming) init (lesson 01).
>>> cure.label, cure.lesson
('ReLU + He init', '01_sigmoid_saturation')
>>> model, training = cure.apply({"depth": 20, "width": 32, "activation": "sigmoid"}, {"lr": 0.1})
>>> model["activation"], model["init"], training
('relu', 'kaiming', {'lr': 0.1})
>>> remedies.lookup("Lower learning rate").name    # a name or a label, in any case
'lower_lr'

The functions below apply the same fixes to a built MLP:

>>> net = models.mlp(depth=10, width=32, activation="sigmoid", seed=0)
>>> better = remedies.swap_activation(net, "relu")          # lesson 01
>>> better = remedies.reinitialise(better, "kaiming")        # lessons 01 and 02
>>> better.config["activation"], better.config["init"]
('relu', 'kaiming')
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from . import _checks, models


@dataclass(frozen=True)
class Clipping:
    """Gradient clipping applied between backward and the optimizer step (lessons 03 and 06).

    ``method="norm"`` rescales the whole gradient when its total norm exceeds ``threshold``
    (direction kept: ``torch.nn.utils.clip_grad_norm_``); ``method="value"`` clamps every
    component to ``[-threshold, threshold]`` (direction changed: ``clip_grad_value_``).
    """

    method: str
    threshold: float

    def __post_init__(self):
        _checks.choice("method", self.method, ("norm", "value"))
        _checks.number("threshold", self.threshold, low=0.0, low_open=True)

    def apply(self, parameters: list[torch.Tensor]) -> tuple[torch.Tensor, bool]:
        """Clip the gradients of ``parameters`` in place; return (total norm before, clipped?)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if self.method == "norm":
            total = nn.utils.clip_grad_norm_(parameters, self.threshold)
            return total, bool(total > self.threshold)
        total = nn.utils.get_total_norm(grads)
        clipped = any(bool(g.abs().max() > self.threshold) for g in grads)
        nn.utils.clip_grad_value_(parameters, self.threshold)
        return total, clipped

    def describe(self) -> str:
        return f"clip by {self.method} at {self.threshold:g}"


def clip_norm(threshold: float) -> Clipping:
    """Clip the total gradient norm to ``threshold``, keeping its direction (lesson 03).

    The setting ``fit(..., clip=clip_norm(1.0))`` takes. The same rule on one numpy vector is
    :func:`gradcourse.theory.clip_by_norm`; ``exercises.clip_by_norm_function`` is lesson 03's check of a
    learner's own function.

    >>> clip_norm(1.0).describe()
    'clip by norm at 1'
    """
    return Clipping("norm", threshold)


def clip_value(threshold: float) -> Clipping:
    """Clamp every gradient component to ``[-threshold, threshold]`` (lesson 03).

    >>> clip_value(0.01).method
    'value'
    """
    return Clipping("value", threshold)


def _rebuilt(model: nn.Module, **changes) -> models.MLP:
    config = getattr(model, "config", None)
    if not config or config.get("kind") != "mlp":
        raise ValueError("model must be built by gradcourse.models.mlp (it rebuilds from model.config)")
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    kwargs.update(changes)
    return models.mlp(**kwargs)


def reinitialise(model: nn.Module, scheme: str, *, weight_std: float | None = None) -> models.MLP:
    """The same MLP with its weights drawn by ``scheme``: ``"xavier"`` for tanh/sigmoid,
    ``"kaiming"`` (He) for ReLU, ``"normal"`` with ``weight_std`` (lessons 01 and 02).

    >>> reinitialise(models.mlp(4, 8), "xavier").config["init"]
    'xavier'
    """
    _checks.choice("scheme", scheme, models.INITS)
    return _rebuilt(model, init=scheme, weight_std=weight_std if scheme == "normal" else None)


def swap_activation(model: nn.Module, activation: str) -> models.MLP:
    """The same MLP with another activation, e.g. ReLU instead of sigmoid (lesson 01).

    >>> swap_activation(models.mlp(4, 8), "tanh").config["activation"]
    'tanh'
    """
    _checks.choice("activation", activation, models.ACTIVATIONS)
    return _rebuilt(model, activation=activation)


def add_batchnorm(model: nn.Module) -> models.MLP:
    """The same MLP with BatchNorm between every hidden linear layer and its activation (lesson 04).

    >>> hasattr(add_batchnorm(models.mlp(4, 8)), "bn1")
    True
    """
    return _rebuilt(model, batchnorm=True)


def make_residual(model: nn.Module) -> models.MLP:
    """The same MLP with skip connections, h ← h + f(h) for every hidden layer after the first
    (lesson 05).

    >>> make_residual(models.mlp(4, 8)).residual
    True
    """
    return _rebuilt(model, residual=True)


# -- the registry ------------------------------------------------------------------------------
#: "lower learning rate" divides the recipe's learning rate by this.
LR_DIVISOR = 10.0
#: "clip gradient norm" clips the total gradient norm at this value.
CLIP_THRESHOLD = 1.0


@dataclass(frozen=True)
class Remedy:
    """One fix: ``name`` (its key in :data:`REMEDIES`), ``label`` (a few words for a menu),
    ``lesson`` (the notebook that teaches it, e.g. ``"01_sigmoid_saturation"``), ``sentence``
    (the advice) and ``kinds``, the model kinds (``"mlp"``, ``"sequence"``, ``"transformer"``) whose recipe
    :meth:`apply` can change. It displays as its sentence and lesson, so a list of remedies
    reads as advice in a notebook.
    """

    name: str
    label: str
    lesson: str
    sentence: str
    kinds: tuple[str, ...]
    change: Callable[[dict, dict], None] = field(repr=False, compare=False)

    @property
    def lesson_number(self) -> str:
        """The lesson's two-digit number, e.g. ``"01"``."""
        return self.lesson[:2]

    def apply(self, model: dict, training: dict) -> tuple[dict, dict]:
        """The recipe after this remedy: new copies of ``model`` (the keyword arguments of
        :func:`gradcourse.models.mlp` or :func:`~gradcourse.models.sequence_model`) and
        ``training`` (those of :func:`gradcourse.train.fit`); the inputs are not changed.

        >>> REMEDIES["lower_lr"].apply({"depth": 6}, {"lr": 0.3})
        ({'depth': 6}, {'lr': 0.03})
        """
        if not isinstance(model, dict) or not isinstance(training, dict):
            raise ValueError("model and training must be dicts of keyword arguments (the model factory's "
                             f"and fit's); got {type(model).__name__} and {type(training).__name__}")
        kind = model.get("kind") or ("sequence" if "cell" in model else "mlp")
        if not self.kinds:
            raise ValueError(f"model: remedy {self.name!r} is a change to your training loop (lesson "
                             f"{self.lesson_number}), not to a recipe of fit's")
        if kind not in self.kinds:
            raise ValueError(f"model must be a {' or '.join(self.kinds)} recipe for remedy {self.name!r}; "
                             f"got a {kind} recipe")
        model, training = dict(model), dict(training)
        self.change(model, training)
        return model, training

    def __str__(self) -> str:
        return f"{self.sentence} (lesson {self.lesson_number})."

    __repr__ = __str__


def _set(**values) -> Callable[[dict, dict], None]:
    return lambda model, training: model.update(values)


def _leaky(model: dict, training: dict) -> None:
    model["activation"] = "leaky_relu"
    if model.get("init", "default") == "default":
        model["init"] = "kaiming"  # leaky ReLU is a ReLU: He's scale keeps its signal's size


def _lower_lr(model: dict, training: dict) -> None:
    if "lr" not in training:
        raise ValueError("training must hold the learning rate 'lr' for remedy 'lower_lr'")
    training["lr"] = training["lr"] / LR_DIVISOR


def _clip(model: dict, training: dict) -> None:
    training["clip"] = clip_norm(CLIP_THRESHOLD)


def _gated(model: dict, training: dict) -> None:
    model.update(cell="lstm", recurrent_scale=None, forget_bias=1.0)


#: "learning-rate warmup" ramps the learning rate up over this fraction of the recipe's steps
#: (lesson 09's runs of 300 steps: 100 steps of warmup).
WARMUP_FRACTION = 1 / 3


def _warmup(model: dict, training: dict) -> None:
    training["warmup"] = max(1, round(training.get("steps", 300) * WARMUP_FRACTION))


def _in_the_loop(model: dict, training: dict) -> None:  # pragma: no cover - apply() refuses first
    raise AssertionError("unreachable")


_ENTRIES = [
    Remedy("relu_he", "ReLU + He init", "01_sigmoid_saturation",
           "Swap the sigmoid/tanh activation for ReLU and initialise with He (kaiming) init",
           ("mlp",), _set(activation="relu", init="kaiming", weight_std=None)),
    Remedy("xavier_init", "Xavier init", "01_sigmoid_saturation",
           "Initialise with Xavier (Glorot) init: it keeps each unit's input in the steep middle of "
           "the sigmoid/tanh and the signal's size from layer to layer",
           ("mlp",), _set(init="xavier", weight_std=None)),
    Remedy("he_init", "He init", "02_weight_explosion",
           "Initialise at the critical scale with He (kaiming) init, std √2/√fan_in for ReLU, and zero "
           "biases: the signal then keeps its size from layer to layer",
           ("mlp",), _set(init="kaiming", weight_std=None)),
    Remedy("leaky_relu", "leaky ReLU", "01_sigmoid_saturation",
           "Use leaky ReLU, whose small negative slope keeps every unit passing some gradient, so no "
           "unit can die", ("mlp",), _leaky),
    Remedy("lower_lr", "lower learning rate", "02_weight_explosion",
           f"Lower the learning rate (e.g. by {LR_DIVISOR:g}×): the step is −lr·∂L/∂W, so a large "
           "gradient times a large rate is a huge step", ("mlp", "sequence"), _lower_lr),
    Remedy("clip_norm", "clip gradient norm", "03_gradient_clipping",
           f"Clip the total gradient norm (fit(..., clip=remedies.clip_norm({CLIP_THRESHOLD:g}))) to bound "
           "every step; it treats the symptom and leaves the network as it is",
           ("mlp", "sequence"), _clip),
    Remedy("batchnorm", "BatchNorm", "04_batchnorm",
           "Add BatchNorm between each linear layer and its activation: it re-centres and re-scales "
           "every layer's input", ("mlp",), _set(batchnorm=True)),
    Remedy("skip_connections", "skip connections", "05_resnet",
           "Add skip connections (a residual network), h ← h + f(h), so the signal has a short way back",
           ("mlp",), _set(residual=True)),
    Remedy("gated_cell", "LSTM or GRU", "06_lstm_gru",
           "Use an LSTM (or a GRU): the additive cell-state path carries the gradient across many "
           "time steps", ("sequence",), _gated),
    Remedy("forget_bias", "forget-gate bias 1", "06_lstm_gru",
           "Give the LSTM a positive forget-gate bias (forget_bias=1) so the cell state, and its "
           "gradient path, start open", ("sequence",), _set(forget_bias=1.0)),
    Remedy("recurrent_scale", "recurrent scale 1", "06_lstm_gru",
           "Keep the recurrent matrix's spectral radius at or below 1 (recurrent_scale=1): above 1 the "
           "gradient grows by that factor per time step", ("sequence",), _set(recurrent_scale=1.0)),
    Remedy("warmup", "learning-rate warmup", "09_transformers",
           "Warm the learning rate up over the first third of the steps (fit(..., warmup=...)): the first "
           "updates, taken before Adam's estimates of the gradient's size settle, stay small",
           ("transformer",), _warmup),
    Remedy("pre_ln", "Pre-LN", "09_transformers",
           "Move each LayerNorm inside its residual branch (Pre-LN, norm='pre'): the residual stream then "
           "carries the signal and its gradient straight through every block", ("transformer",), _set(norm="pre")),
    Remedy("qk_norm", "qk-norm", "09_transformers",
           "Normalise the queries and keys (qk_norm=True): it bounds the attention logits, so the softmax "
           "cannot put all its weight on one key", ("transformer",), _set(qk_norm=True)),
    Remedy("loss_scaling", "loss scaling", "10_mixed_precision",
           "Scale the loss before backward (torch.amp.GradScaler, Probe(..., scaler=scaler)): float16 then "
           "holds gradients 2^16 times smaller, and the scaler unscales them before the step", (), _in_the_loop),
    Remedy("bfloat16", "bfloat16", "10_mixed_precision",
           "Autocast to bfloat16 instead of float16 (torch.autocast(device, dtype=torch.bfloat16)): it keeps "
           "float32's range, so no gradient underflows, with float32 master weights for the updates", (),
           _in_the_loop),
]
#: Every remedy the course teaches, by name.
REMEDIES: dict[str, Remedy] = {r.name: r for r in _ENTRIES}


def _key(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text).strip().lower()


def lookup(remedy: Remedy | str) -> Remedy:
    """The registry entry for ``remedy``: a :class:`Remedy`, its name or its label, in any case and
    with spaces, underscores or hyphens alike (``"Lower learning rate"``, ``"lower_lr"``).

    >>> lookup("BatchNorm") is lookup("batchnorm") is REMEDIES["batchnorm"]
    True
    >>> lookup("aspirin")
    Traceback (most recent call last):
    ...
    ValueError: remedy must be one of 'relu_he', 'xavier_init', 'he_init', 'leaky_relu', 'lower_lr', \
'clip_norm', 'batchnorm', 'skip_connections', 'gated_cell', 'forget_bias', 'recurrent_scale', 'warmup', 'pre_ln', \
'qk_norm', 'loss_scaling', 'bfloat16' (or its label); got 'aspirin'
    """
    if isinstance(remedy, Remedy) and REMEDIES.get(remedy.name) is remedy:
        return remedy
    if isinstance(remedy, str):
        wanted = _key(remedy)
        for entry in REMEDIES.values():
            if wanted in (_key(entry.name), _key(entry.label)):
                return entry
    raise ValueError(f"remedy must be one of {', '.join(map(repr, REMEDIES))} (or its label); got {remedy!r}")
