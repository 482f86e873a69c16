"""Gradient probes: hooks that record what flows through a model, step by step.

A probe is a context manager. Inside the ``with`` block it counts training steps and, on every
``every``-th one, records per layer the quantities of :data:`~gradcourse.trace.LAYER_QUANTITIES`
and a histogram of the weight gradient. The measurements themselves are the plain torch
functions of :mod:`gradcourse.measurements`, run on the model's own device; this module decides
when to call them. On exit every hook it added is removed, even when the block raised.

**What a step is.** With ``Probe(model, optimizer=opt)`` a step is one ``opt.step()`` (torch's
optimizer step hooks): the weight gradients are read just before it (after any clipping or
GradScaler unscaling: what the optimizer applies), the update ``ΔW`` just after it, and every
forward pass whose output a backward pass reached since the previous ``opt.step()`` belongs to
it, so gradient accumulation over several backward passes is one step. Without an optimizer, a
step ends with each backward pass that reaches the model's outputs (the gradients are read
then, before any clipping), and ``ΔW`` is read when the next step's first forward pass begins
or when the probe exits. Either way, whatever the model returns (a tensor, a tuple whose first
element is an integer, a dict), a forward pass that no backward pass reaches (evaluation, under
``torch.no_grad()``, ``torch.inference_mode()`` or simply never backpropagated) is not a step.

>>> import torch
>>> from gradcourse.models import mlp
>>> from gradcourse.probes import Probe
>>> net = mlp(depth=4, width=8, seed=0)
>>> x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
>>> with Probe(net) as probe:
...     torch.nn.functional.cross_entropy(net(x), y).backward()
>>> probe.trace.get("grad_norm").shape        # (recorded steps, layers)
(1, 5)
>>> probe.trace.layers[0], net._forward_hooks  # named like named_modules(); no hook left
('layer1', OrderedDict())
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.modules import batchnorm, dropout, pooling
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from . import _checks
from .hooks import Hooks
from .losses import loss_function
from .measurements import (
    ACTIVATIONS,
    SATURATION_MARGIN,  # noqa: F401  (re-exported: the probes' saturation margin)
    SUMMARY_FIELDS,
    ActivationSums,
    Scratch,
    accumulation_dtype,
    activation_sums,
    is_finite,
    log2_histogram,
    merge_activation_sums,
    norms,
    stack_figures,
    statistics_from_summaries,
    sum_of_squares,
    summary,
)
from .trace import LAYER_QUANTITIES, Trace

_CELLS = (nn.RNNCellBase,)
_NORMS = tuple(c for c in (batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None),
                           nn.LocalResponseNorm) if c is not None)
#: Layer kinds kept out of ``trace.layers`` (in ``trace.norms``): they rescale features, not mix them.
_SIDE_KINDS = ("norm", "activation")
#: Modules that may sit between a layer and its activation without hiding it (Linear → BN → ReLU).
_TRANSPARENT = (*_NORMS, dropout._DropoutNd, nn.Identity, nn.Flatten, nn.Unflatten, pooling._MaxPoolNd,
                pooling._AvgPoolNd, pooling._AdaptiveAvgPoolNd, pooling._AdaptiveMaxPoolNd)
_LOG10_2 = math.log10(2.0)
#: How many autograd nodes the probe walks back from a layer's input to find which earlier
#: layers' outputs it holds (an activation function, a residual add, a reshape: a few nodes).
_WALK = 48
#: Autograd nodes an activation function leaves (``F.relu``, ``torch.tanh``, in place or not),
#: and what can be said about its output; and the nodes of reshapes and pooling, looked past.
_FUNCTION_KINDS = {"ReluBackward0": "relu", "SigmoidBackward0": "sigmoid", "TanhBackward0": "tanh",
                   **dict.fromkeys(("GeluBackward0", "SiluBackward0", "LeakyReluBackward0", "LeakyReluBackward1",
                                    "EluBackward0", "EluBackward1", "HardswishBackward0", "HardsigmoidBackward0",
                                    "HardtanhBackward0", "SoftplusBackward0", "MishBackward0",
                                    "PreluKernelBackward0"), "other")}
_SHAPE_NODES = {"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "TransposeBackward0",
                "PermuteBackward0", "CloneBackward0", "SqueezeBackward0", "SqueezeBackward1", "UnsqueezeBackward0",
                "ExpandBackward0", "MaxPool2DWithIndicesBackward0", "MaxPool1DWithIndicesBackward0",
                "AvgPool2DBackward0", "AvgPool1DBackward0", "AdaptiveAvgPool2DBackward0", "NativeDropoutBackward0"}
_RECURRENT_NOTE = "recurrent layer: activation statistics are not measured"
#: Said once per probe when a recorded forward pass with gradients enabled met no backward pass.
UNREACHED_WARNING = (
    "Probe: a forward pass ran with gradients enabled but no backward pass reached its output "
    "(an evaluation without torch.no_grad()?). It is not part of any step: its activations are left "
    "out of the record. Wrap evaluation in torch.no_grad() (or model.eval() plus no_grad), which also "
    "saves the memory autograd keeps for a backward pass.")
#: With an optimizer, the copy of the weights for ΔW is needed only from just before ``opt.step()``
#: to just after it. A copy of more values than this is freed after each recorded step instead of
#: being kept through the next forward and backward passes, whose peak it raises: lesson 08's six
#: probed ResNet-18 steps peaked at 586 MB kept, 565 MB freed, in 2.3 s on one core either way. A
#: smaller copy is kept, which spares a small model an allocation per step.
KEEP_COPY = 1 << 22
_NO_ACTIVATION = ("its output reached no later layer that the probe could see: measured at the layer's "
                  "output, saturation/dead not measured")


def layer_kind(module: nn.Module) -> str | None:
    """What a module is to a probe: a kind of ``Trace.kinds``, or ``None`` if it owns no parameter.

    >>> layer_kind(nn.Linear(2, 3)), layer_kind(nn.LSTM(2, 3)), layer_kind(nn.LayerNorm(3)), layer_kind(nn.ReLU())
    ('linear', 'recurrent', 'norm', None)
    """
    if next(module.parameters(recurse=False), None) is None:
        return None
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.RNNBase, *_CELLS)):
        return "recurrent"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, nn.MultiheadAttention):
        return "attention"
    # A library's own norm layer (nanoGPT's LayerNorm, Llama's RMSNorm) is known by its name.
    if isinstance(module, _NORMS) or type(module).__name__.endswith("Norm"):
        return "norm"
    return "activation" if isinstance(module, nn.PReLU) else "parameter"


def layer_weights(module: nn.Module) -> list[nn.Parameter]:
    """The parameters whose gradient, norm and update a probe reports for a layer: its weight
    (``weight_hh`` for RNN cells, every ``weight_hh_l*`` of an ``nn.RNN``/``LSTM``/``GRU``, the
    input projection of ``nn.MultiheadAttention``), or every parameter it owns when it has no
    weight. Biases are covered by the layer but not in its figures (as the lessons define them)."""
    own = dict(module.named_parameters(recurse=False))
    if isinstance(module, _CELLS):
        names = ["weight_hh"]
    elif isinstance(module, nn.RNNBase):
        names = [n for n in own if n.startswith("weight_hh")]
    elif isinstance(module, nn.MultiheadAttention):
        names = [n for n in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight") if n in own]
    else:
        names = ["weight"] if "weight" in own else list(own)
    return [own[n] for n in names if n in own]


def tracked_weight(module: nn.Module) -> torch.Tensor:
    """The (first) weight whose gradient a probe reports for ``module`` (``weight_hh`` for RNN cells)."""
    return layer_weights(module)[0]


@dataclass
class _Layer:
    name: str
    module: nn.Module
    kind: str
    weights: list[nn.Parameter]
    side: bool  # a norm layer or parametric activation: kept in trace.norms


@dataclass
class _Call:
    """One forward pass of the model during a recorded step: what it measured, kept only if a
    backward pass reaches its output."""

    activations: dict[int, ActivationSums] = field(default_factory=dict)
    reached: bool = False


class _Recording:
    """What one recorded step gathers, as tensors on the model's device until the step ends."""

    def __init__(self, step: int, weight_norms: torch.Tensor):
        self.step = step
        self.weight_norms = weight_norms
        self.calls: list[_Call] = []
        self.output_grad_sq: list[tuple[int, torch.Tensor]] = []  # (layer, ‖∂L/∂z‖²) of each call
        self.hidden_taps: list[tuple[int, torch.Tensor]] = []  # (t, ‖∂L/∂h_t‖) from a hidden_tap
        self.hidden_runs: list[torch.Tensor] = []           # ‖∂L/∂h_t‖ per t, from an nn.RNN/LSTM/GRU
        self.grad_norms: torch.Tensor | None = None
        self.scale = 1.0                                     # the GradScaler's scale during backward
        self.present: list[int] = []                         # the layers whose gradients were read
        self.histogram: torch.Tensor | None = None
        self.activations: dict[int, ActivationSums] = {}


@dataclass
class _Record:
    """One recorded step read to the host (one transfer): its numbers, as numpy arrays."""

    step: int
    values: np.ndarray            # (len(LAYER_QUANTITIES), all layers), float64
    histogram: np.ndarray         # (all layers, bins) counts
    hidden: np.ndarray | None     # (seq_len,) for sequence models
    kinds: list[str]              # the activation kind each layer was read as
    scale: float = math.nan       # the GradScaler's scale during the step's backward (NaN: none)


class Probe:
    """Record per-layer gradient and activation statistics while a model trains.

    Parameters: ``optimizer`` makes a step one ``optimizer.step()`` (see the module docstring);
    ``every`` records one step in ``every`` (the others cost almost nothing); the gradient
    histogram has one bin per power of two of |g| between ``10**hist_range[0]`` and
    ``10**hist_range[1]`` (smaller values, zeros included, land in the first bin, larger ones and
    NaN/Inf in the last; ``trace.hist_edges`` are the edges in log10 units); ``max_records``
    bounds the history: when it fills, every other record is dropped and ``every`` doubles, so
    memory stays flat however long the run. ``layers`` restricts the probe to a list of module
    names (default: every module that owns parameters; see :class:`~gradcourse.trace.Trace` for
    which are ``trace.layers`` and which ``trace.norms``). ``updates=False`` leaves out the update
    ratio ‖ΔW‖/‖W‖ (NaN in the trace): reading ΔW needs a copy of every weight before each recorded
    step, as much memory again as the model's weights (45 MB for ResNet-18, 28 GB for a 7B-parameter
    model), which a model that barely fits its device cannot spare.

    **Mixed precision.** ``trace.precision`` names the narrowest float format a recorded forward
    pass computed in (``torch.autocast``'s, else the weights'). With a ``torch.amp.GradScaler``,
    pass it as ``scaler`` (with ``optimizer``): the loss, and so every gradient of the backward
    pass, is multiplied by the scale; the weight gradients are read after ``scaler.step`` has
    unscaled them, and the signal ``output_grad_norm`` is divided by the scale in force, so the
    record holds the gradients of the loss itself. A step the scaler skipped (Inf/NaN in the
    scaled gradients: no update, the scale cut) is a step of its own, listed in
    ``trace.skipped_steps``; ``trace.loss_scale`` holds each recorded step's scale.

    Step numbering starts at 0. A layer's activation is the module the model names in
    ``probe_activations``, else the first activation module (ReLU, Sigmoid, …) called after the
    layer, past normalisation, dropout or pooling, else the input of the next layer its output
    reaches (a functional or in-place activation), read as the activation function that made it
    (``F.relu``, ``torch.tanh``, …) or else from its range (``trace.activation_source`` and
    ``trace.activation_kinds`` say which). A layer whose weight is frozen
    (``requires_grad=False``) records NaN gradient quantities and a note in ``trace.notes``.

    >>> import torch
    >>> from gradcourse.models import mlp
    >>> net = mlp(depth=2, width=4, seed=0)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    >>> with Probe(net, optimizer=opt) as probe:
    ...     for xb, yb in ((x[:4], y[:4]), (x[4:], y[4:])):   # two micro-batches, one step
    ...         torch.nn.functional.cross_entropy(net(xb), yb).backward()
    ...     opt.step()
    >>> probe.trace.steps.tolist(), bool((probe.trace.get("update_ratio") > 0).all())
    ([0], True)
    """

    def __init__(self, model: nn.Module, *, optimizer: torch.optim.Optimizer | None = None, every: int = 1,
                 hist_range: tuple[float, float] = (-12.0, 2.0), max_records: int = 1000,
                 layers: Sequence[str] | None = None, scaler: torch.amp.GradScaler | None = None,
                 updates: bool = True):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer or None; got {type(optimizer).__name__}")
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise ValueError(f"scaler must be a torch.amp.GradScaler or None; got {type(scaler).__name__}")
        if scaler is not None and optimizer is None:
            raise ValueError("scaler needs optimizer: Probe(model, optimizer=opt, scaler=scaler), the optimizer "
                             "that scaler.step(opt) steps")
        self.model = model
        self.optimizer = optimizer
        self.updates = _checks.flag("updates", updates)
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.precision: str | None = None   # the narrowest float format a recorded forward pass ran in
        self.skipped_steps: list[int] = []  # steps the scaler skipped (Inf/NaN in the gradients)
        self._stepped = False
        self.every = _checks.integer("every", every, low=1)
        self.max_records = _checks.integer("max_records", max_records, low=2)
        lo, hi = _log10_range(hist_range)
        # One bin per power of two between 10**lo and 10**hi.
        self._exponents = (math.floor(lo / _LOG10_2), math.ceil(hi / _LOG10_2))
        self.bins = self._exponents[1] - self._exponents[0]
        self.hist_edges = np.arange(self._exponents[0], self._exponents[1] + 1) * _LOG10_2
        modules = dict(model.named_modules())
        self._layers = _find_layers(modules, layers)
        self.layers = [la.name for la in self._layers if not la.side]
        self.norm_layers = [la.name for la in self._layers if la.side]
        self._index = {la.module: i for i, la in enumerate(self._layers)}
        # Every layer's weights in one list (a tied weight appears once per layer that uses it),
        # with the layer each belongs to: one fused norm and one histogram for all of them.
        self._weights = [w for la in self._layers for w in la.weights]
        self._rows = [i for i, la in enumerate(self._layers) for _ in la.weights]
        self._roles = self._assign_roles(modules, getattr(model, "probe_activations", None),
                                         getattr(model, "hidden_tap", None))
        self.notes = self._notes()
        self.unmeasured = {la.name: _RECURRENT_NOTE for la in self._layers if la.kind == "recurrent"}
        self._sources: dict[str, str] = {}
        self.step = 0                     # the step that forward passes now belong to
        self._gradient_step = 0           # without an optimizer: the step that the weights' .grad belong to
        self.nonfinite: dict | None = None
        self._records: list[_Record] = []
        self._hooks = Hooks()             # hooks on while the probe is attached
        self._global = Hooks()            # the global module hooks, on only during a recorded forward
        self._recording: _Recording | None = None
        self._awaiting_update: _Recording | None = None  # without an optimizer: ΔW read at the next step
        self._before: list[torch.Tensor] | None = None   # the weights before the recorded update
        self._scratch = Scratch()         # the measurements' working copies, reused step after step
        self._scaler_restore: _Restore | None = None  # puts the GradScaler's own step back on exit
        self._call: _Call | None = None
        self._backward_queued = False
        self._warned_unreached = False
        self._inputs: tuple = ((), {})
        self._reset_forward()

    def _notes(self) -> list[str]:
        notes = [f"{la.name}: weight frozen (requires_grad=False); grad_norm and its histogram not recorded"
                 for la in self._layers if not all(w.requires_grad for w in la.weights)]
        owners: dict[int, str] = {}
        for la in self._layers:
            for w in la.weights:
                if id(w) in owners and owners[id(w)] != la.name:
                    notes.append(f"{la.name}: its weight is {owners[id(w)]}'s (tied): "
                                 "the gradient is the sum of both uses")
                owners.setdefault(id(w), la.name)
        called_by_parent = {m.out_proj for m in self.model.modules() if isinstance(m, nn.MultiheadAttention)}
        for la in self._layers:
            if la.module in called_by_parent:
                notes.append(f"{la.name}: attention calls this weight directly: its output is its parent "
                             "attention layer's (output_grad_norm and activation recorded there)")
        if not self.updates:
            notes.append("update_ratio not recorded (updates=False: no copy of the weights was kept)")
        return notes

    def _assign_roles(self, modules: dict[str, nn.Module], named: dict | None, tap: nn.Module | None) -> dict:
        """Map each module the probe listens to onto (role, layer index or None)."""
        roles: dict = {}
        for i, la in enumerate(self._layers):
            roles[la.module] = ("side" if la.side else "cell" if la.kind == "recurrent" else "layer", i)
        if tap is not None:
            roles[tap] = ("tap", None)
        if isinstance(named, dict):  # the model says which module is each layer's activation
            for i, la in enumerate(self._layers):
                if la.name in named and named[la.name] in modules:
                    roles[modules[named[la.name]]] = ("named", i)
            return roles
        for m in modules.values():  # else: the next activation module called after a layer is its own
            if m not in roles and next(m.children(), None) is None and not isinstance(m, _TRANSPARENT):
                roles[m] = ("module", None) if isinstance(m, ACTIVATIONS) else ("other", None)
        return roles

    # -- attaching and detaching -------------------------------------------------------------
    def __enter__(self) -> Probe:
        if self._hooks:
            raise RuntimeError("this probe is already attached; use a new Probe or exit first")
        self._hooks.extend([self.model.register_forward_pre_hook(self._on_forward_start, with_kwargs=True),
                            self.model.register_forward_hook(self._on_forward_end)])
        if self.optimizer is not None:
            self._hooks.extend([self.optimizer.register_step_pre_hook(self._on_optimizer_step),
                                self.optimizer.register_step_post_hook(self._on_optimizer_stepped)])
        if self.scaler is not None:  # scaler.step(opt) skips opt.step() on Inf/NaN: no hook would say so
            self._scaler_restore = self._hooks.add(_Restore(self.scaler, "step"))
            self.scaler.step = self._scaler_step
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._awaiting_update is not None:
                self._finish_update()
            if self._recording is not None and self._recording.calls and (
                    not self._records or (self.nonfinite or {}).get("step") == self.step):
                self._keep_cut_short()
        finally:
            self.remove()

    def _warn_unreached(self) -> None:
        if not self._warned_unreached:
            self._warned_unreached = True
            warnings.warn(UNREACHED_WARNING, stacklevel=3)

    def _keep_cut_short(self) -> None:
        """A step cut short (the loop stopped between its forward and backward passes, as on a
        NaN loss) is kept when it broke (a non-finite value) or is all there is to see: its
        activations, and NaN gradients where none were computed."""
        recording = self._recording
        for call in recording.calls:
            call.reached = True
        if recording.weight_norms is None:
            recording.weight_norms = self._snapshot()
        self._read_gradients(recording)
        self._recording, self._awaiting_update = None, recording
        self._finish_update()

    def remove(self) -> None:
        """Remove every hook this probe added. Safe to call more than once."""
        self._listen(False)
        self._hooks.remove()

    def _listen(self, on: bool) -> None:
        """The global module hooks: on only while the probed model runs a recorded forward pass
        (other models, and the steps that are not recorded, never go through them)."""
        if on and not self._global:
            self._global.extend([register_module_forward_pre_hook(self._on_module_input),
                                 register_module_forward_hook(self._on_module_output)])
        elif not on:
            self._global.remove()

    # -- the schedule ----------------------------------------------------------------------------
    def _reset_forward(self) -> None:
        self._last_layer = None   # the layer whose activation the next activation module is
        self._final_layer = None  # the last layer called: the output layer, which needs no activation
        self._pending: dict[int, tuple] = {}  # layer outputs still waiting for their activation
        self._boundaries: set = set()  # the autograd nodes of this pass's layer outputs
        self._time = 0            # hidden-state index of a sequence model

    def _on_forward_start(self, module, args, kwargs) -> None:
        if not torch.is_grad_enabled():
            return  # evaluation: never part of a step
        if self._awaiting_update is not None:  # the update of the previous recorded step is done
            self._finish_update()
        if self._recording is None and self.step % self.every == 0:
            self._recording = _Recording(self.step, self._snapshot() if self.optimizer is None else None)
        self._inputs = (args, kwargs)
        self._reset_forward()
        if self._recording is not None:
            self._call = _Call()
            self._recording.calls.append(self._call)
            self._listen(True)
            self.precision = _narrowest(self.precision, _precision(self._weights[0]))

    def _on_forward_end(self, module, args, output) -> None:
        self._listen(False)
        # The layer outputs' autograd nodes and the inputs serve only during the pass. Kept, the nodes
        # would tie this probe (through the backward hook on the output's node), its model and its
        # optimizer into a reference cycle that only Python's cyclic garbage collector frees, and it
        # runs rarely when the memory sits in tensors: each probed ResNet-18 run of lesson 08 left
        # 90 MB (weights and momentum) behind until it did.
        self._boundaries = set()
        inputs, self._inputs = self._inputs, ((), {})
        if not torch.is_grad_enabled():
            return
        tensors = _tensors(output)
        if self.nonfinite is None and any(t.is_floating_point() and not is_finite(t) for t in tensors):
            self._locate_forward(inputs)
        call, self._call = self._call, None
        if call is not None:
            self._measure_pending(call)
        if call is None and self.optimizer is not None:
            return  # an optimizer ends the step: an unrecorded forward needs no backward hook
        for t in tensors:
            if t.requires_grad:
                _on_gradient(t, self._on_backward_start, call)

    def _on_backward_start(self, grad, call: _Call | None) -> None:
        if call is not None:
            call.reached = True
        if not self._backward_queued:
            self._backward_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._on_backward_end)

    def _on_backward_end(self) -> None:
        """After a backward pass that reached the model (without an optimizer: the step ends)."""
        self._backward_queued = False
        if self.optimizer is not None:
            return
        recording, self._recording = self._recording, None
        if recording is not None:
            self._read_gradients(recording)
            self._awaiting_update = recording
        self._gradient_step = self.step
        self.step += 1

    def _on_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Just before ``opt.step()``: the gradients it applies, and the weights it starts from."""
        if self._recording is None and self.step % self.every == 0:
            self._recording = _Recording(self.step, None)  # a step with no forward pass seen
        if self._recording is not None:
            if self.scaler is not None:  # the scale the backward passes ran under (update() comes after)
                self._recording.scale = self.scaler.get_scale()
            self._recording.weight_norms = self._snapshot()
            self._read_gradients(self._recording)

    def _on_optimizer_stepped(self, optimizer, args, kwargs) -> None:
        self._stepped = True
        recording, self._recording = self._recording, None
        if recording is not None:
            self._awaiting_update = recording
            self._finish_update()
        self.step += 1

    def _scaler_step(self, optimizer, *args, **kwargs):
        """``scaler.step(opt)`` while the probe is attached: GradScaler's own step, which unscales
        the gradients and calls ``opt.step()`` unless they hold Inf/NaN. A step it skipped is a
        step of its own in the record (its gradients as unscaled, no update), listed in
        ``trace.skipped_steps``; its Inf/NaN is the scaler's business, not ``trace.nonfinite``."""
        self._stepped = False
        restore = self._scaler_restore
        step = restore.before or functools.partial(type(self.scaler).step, self.scaler)
        result = step(optimizer, *args, **kwargs)
        if optimizer is self.optimizer and not self._stepped:
            nonfinite = self.nonfinite
            self._on_optimizer_step(optimizer, args, kwargs)
            if nonfinite is None and (self.nonfinite or {}).get("where") == "gradient":
                self.nonfinite = None
            self.skipped_steps.append(self.step)
            self._on_optimizer_stepped(optimizer, args, kwargs)
        return result

    # -- reading the weights and their gradients -------------------------------------------------
    def _snapshot(self) -> torch.Tensor:
        """Copy the weights (for ΔW) and return their norms per layer (``updates=False``: the
        norms alone, no copy)."""
        if not self.updates:
            return self._per_layer(norms(self._weights, self._scratch))
        with torch.no_grad():
            if self._before is None:
                self._before = [torch.empty_like(w) for w in self._weights]
            torch._foreach_copy_(self._before, self._weights)
        return self._per_layer(norms(self._before, self._scratch))

    def _per_layer(self, tensor_norms: torch.Tensor) -> torch.Tensor:
        """Norms per layer from the norms of its weights (most layers have one)."""
        if len(self._rows) == len(self._layers):
            return tensor_norms
        squares = tensor_norms.new_zeros(len(self._layers))
        squares.index_add_(0, torch.tensor(self._rows, device=squares.device), tensor_norms.square())
        return squares.sqrt()

    def _read_gradients(self, recording: _Recording) -> None:
        """The step's weight gradients (norms, histogram) and the activations of its forward
        passes that a backward pass reached."""
        calls = [c for c in recording.calls if c.reached]
        if len(calls) < len(recording.calls):
            self._warn_unreached()
        for index in {i for c in calls for i in c.activations}:
            recording.activations[index] = merge_activation_sums(
                [c.activations[index] for c in calls if index in c.activations])
        recording.calls = []
        grads = [w.grad for w in self._weights]
        present = [i for i, g in enumerate(grads) if g is not None]
        if not present:
            return
        kept = [grads[i] for i in present]
        recording.present = sorted({self._rows[i] for i in present})
        if len(present) == len(grads):
            recording.grad_norms = self._per_layer(norms(kept, self._scratch))
        else:  # frozen weights: NaN for their layers
            squares = torch.full((len(self._layers),), math.nan, dtype=accumulation_dtype(kept[0].device),
                                 device=kept[0].device)
            rows = torch.tensor([self._rows[i] for i in present], device=squares.device)
            squares.index_fill_(0, rows, 0.0).index_add_(0, rows, norms(kept, self._scratch).square())
            recording.grad_norms = squares.sqrt()
        recording.histogram = log2_histogram(kept, *self._exponents, rows=[self._rows[i] for i in present],
                                             n_rows=len(self._layers), scratch=self._scratch)
        read = recording.grad_norms[recording.present]
        if self.nonfinite is None and not bool(torch.isfinite(read).all()):  # rare: read them all then
            bad = [i for i, v in zip(recording.present, read.tolist()) if not math.isfinite(v)]
            # the layer nearest the loss: where it began
            self.nonfinite = {"step": recording.step, "layer": self._layers[max(bad)].name, "where": "gradient"}

    def _finish_update(self) -> None:
        """The recorded step's update is done: read ΔW, then the whole record in one transfer."""
        recording, self._awaiting_update = self._awaiting_update, None
        if not self.updates:
            update_norms = torch.full((len(self._layers),), math.nan, dtype=recording.weight_norms.dtype,
                                      device=recording.weight_norms.device)
        else:
            with torch.no_grad():
                torch._foreach_sub_(self._before, self._weights)  # now −ΔW
            update_norms = self._per_layer(norms(self._before, self._scratch))
            if self.optimizer is not None and sum(b.numel() for b in self._before) > KEEP_COPY:
                self._before = None  # taken again just before the next recorded opt.step()
        self._records.append(self._to_host(recording, update_norms))
        if len(self._records) > self.max_records:
            self._records = self._records[::2]
            self.every *= 2

    def _to_host(self, recording: _Recording, update_norms: torch.Tensor) -> _Record:
        """Every figure of the step stacked into one float64 vector and read with one transfer (two
        on a device without float64, where the histogram's counts travel apart, exact)."""
        n, device = len(self._layers), update_norms.device
        acc = accumulation_dtype(device)
        exact = acc == torch.float64  # float32 holds whole numbers exactly only up to 2**24
        nan = torch.full((n,), math.nan, dtype=acc, device=device)
        summaries = [summary(recording.activations.get(i)) for i in range(n)]
        out_squares = recording.output_grad_sq
        figures = stack_figures([f for fs, _, _ in summaries for f in fs] + [v for _, v in out_squares], device)
        histogram = (recording.histogram if recording.histogram is not None
                     else torch.zeros((n, self.bins), dtype=torch.int64, device=device))
        hidden = ([torch.stack([v for _, v in recording.hidden_taps])] if recording.hidden_taps else []) \
            + recording.hidden_runs
        parts = [nan if recording.grad_norms is None else recording.grad_norms, recording.weight_norms,
                 update_norms, figures] + ([histogram.to(acc).reshape(-1)] if exact else [])  # in this order
        flat = torch.cat([p if p.dtype == acc and p.device == device else p.to(device=device, dtype=acc)
                          for p in parts + hidden])
        flat = flat.cpu().numpy().astype(np.float64)  # the one host transfer of the step
        grad_norms, weight_norms, update_norms = flat[:3 * n].reshape(3, n)
        at = (3 + len(SUMMARY_FIELDS)) * n
        rows = flat[3 * n:at].reshape(n, len(SUMMARY_FIELDS))
        # Σ‖∂L/∂z‖² over the calls of each layer (NaN for a layer no gradient reached)
        called = np.array([index for index, _ in out_squares], dtype=np.int64)
        out_sq = np.where(np.bincount(called, minlength=n) > 0,
                          np.bincount(called, weights=flat[at:at + len(out_squares)], minlength=n), np.nan)
        at += len(out_squares)
        if exact:
            counts = flat[at:at + n * self.bins].reshape(n, self.bins).astype(np.int64)
            at += n * self.bins
        else:
            counts = histogram.cpu().numpy().reshape(n, self.bins).astype(np.int64)
        kinds = [recording.activations[i].kind if i in recording.activations else "unmeasured" for i in range(n)]
        stats, kinds = statistics_from_summaries(rows, [c for _, c, _ in summaries], [u for _, _, u in summaries],
                                                 kinds)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = {"grad_norm": grad_norms, "output_grad_norm": np.sqrt(out_sq) / recording.scale,
                    "weight_norm": weight_norms,
                    "update_ratio": update_norms / weight_norms,
                    **dict(zip(("act_mean", "act_std", "saturated_frac", "dead_frac"), stats))}
        hidden_values = _hidden_norms(flat[at:], [t for t, _ in recording.hidden_taps],
                                      [len(v) for v in recording.hidden_runs])
        return _Record(recording.step, np.stack([rows[q] for q in LAYER_QUANTITIES]), counts, hidden_values, kinds,
                       recording.scale if self.scaler is not None else math.nan)

    # -- during a recorded forward pass: global module hooks measure while the tensors are hot ----
    def _on_module_input(self, module, args) -> None:
        """A layer is called: an earlier layer's output that reached its input (through functions,
        in-place operations, a residual add) holds that layer's activation."""
        role = self._roles.get(module)
        if role is None or role[0] not in ("layer", "cell") or not self._pending or not torch.is_grad_enabled():
            return
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if x is None or x.grad_fn is None:
            return
        for index, (node, output_nr, _) in list(self._pending.items()):
            if x.grad_fn is node and x.output_nr == output_nr:  # nothing between the two layers
                self._measure(index, x, "other", "none")
        wanted = {p[0] for p in self._pending.values() if p[0] is not None}
        reached = _ancestors(x.grad_fn, wanted, self._boundaries - wanted)
        function = _function_kind(x.grad_fn)
        for index, (node, _, _) in list(self._pending.items()):
            if node in reached:  # the function that made the input says what it is, else its range
                self._measure(index, x, function or "infer", "function" if function else "input")

    def _on_module_output(self, module, args, output) -> None:
        role = self._roles.get(module)
        if role is None or not torch.is_grad_enabled():
            return
        kind, index = role
        recording = self._recording
        if kind in ("layer", "cell", "side"):
            out = _first_tensor(output)
            if out is None:
                return
            _on_gradient(out, _add_square, recording.output_grad_sq, index, self._scratch)
            if kind == "side":
                return
            self._final_layer = index
            if kind == "cell":
                self._last_layer = None
                if out.grad_fn is not None:
                    self._boundaries.add(out.grad_fn)
                if isinstance(module, nn.RNNBase) and self._hidden_source(module):
                    _on_gradient(out, self._add_hidden, module.batch_first)
                return
            self._last_layer = index
            self._pending[index] = (out.grad_fn, out.output_nr, out)
            if out.grad_fn is not None:
                self._boundaries.add(out.grad_fn)
        elif kind in ("named", "module"):
            layer = self._last_layer if index is None else index
            out = _first_tensor(output)
            if layer is None or out is None or layer not in self._pending:
                return
            self._measure(layer, out, module, kind)
            self._last_layer = None
        elif kind == "tap":
            out = _first_tensor(output)
            if out is not None and out.requires_grad:
                _on_gradient(out, self._add_tap, self._time)
            self._time += 1
        else:  # a module that hides the layer from the activation after it
            self._last_layer = None

    def _measure(self, index: int, a: torch.Tensor, activation, source: str) -> None:
        self._pending.pop(index, None)
        self._call.activations[index] = activation_sums(a, activation, self._scratch)
        self._sources[self._layers[index].name] = source
        self.unmeasured.pop(self._layers[index].name, None)

    def _measure_pending(self, call: _Call) -> None:
        """Layers whose output reached no later layer seen: measure their output instead."""
        self._call = call
        for index, (_, _, out) in list(self._pending.items()):
            self._measure(index, out, "other", "output")
            if index != self._final_layer:
                self.unmeasured[self._layers[index].name] = _NO_ACTIVATION
        self._pending = {}
        self._call = None

    def _hidden_source(self, module: nn.Module) -> bool:
        """Whether this recurrent module gives ``hidden_grad_norm``: the first one, unless the
        model has a ``hidden_tap``."""
        if any(role[0] == "tap" for role in self._roles.values()):
            return False
        first = next(la.module for la in self._layers if isinstance(la.module, nn.RNNBase))
        return module is first

    def _add_hidden(self, grad: torch.Tensor, batch_first: bool) -> None:
        """Σ‖∂L/∂h_t‖² per time step t, from the gradient of an ``nn.RNN``/``LSTM``/``GRU`` output."""
        if grad.dim() != 3:
            return
        g = grad.detach()
        per_t = torch.linalg.vector_norm(g.transpose(0, 1) if batch_first else g, dim=(1, 2),
                                         dtype=accumulation_dtype(g.device))
        if self._recording is not None:
            self._recording.hidden_runs.append(per_t)

    def _add_tap(self, grad: torch.Tensor, t: int) -> None:
        """Keep ‖∂L/∂h_t‖² at time step ``t`` (the model's ``hidden_tap`` sees each h_t pass); the
        squares of several passes add when the step is read."""
        if self._recording is not None:
            self._recording.hidden_taps.append((t, sum_of_squares(grad, self._scratch)))

    # -- non-finite values ---------------------------------------------------------------------
    def _locate_forward(self, inputs: tuple) -> None:
        """Name the first layer whose output (or activation) holds NaN/Inf, from a replay of the
        forward pass on ``inputs`` (its ``(args, kwargs)``)."""
        outputs = _replay_outputs(self.model, inputs, self._roles)
        bad = [i for i, out in outputs if out.is_floating_point() and not is_finite(out)]
        layer = self._layers[min(bad)].name if bad else "output"
        self.nonfinite = {"step": self.step, "layer": layer, "where": "forward"}

    def locate_nonfinite_gradient(self) -> dict | None:
        """Name the layer nearest the loss whose weight gradient holds NaN/Inf (call after backward).

        The probe finds it itself at the end of a recorded step; a loop that finds a non-finite
        gradient on another step calls it (as ``fit`` does). Returns the ``nonfinite`` record
        (also kept on the probe and in its trace), or ``None`` if every weight gradient is
        finite. A non-finite value already seen in the forward pass wins.
        """
        if self.nonfinite is None:
            for la in reversed(self._layers):
                if any(w.grad is not None and not is_finite(w.grad) for w in la.weights):
                    step = self.step if self.optimizer is not None else self._gradient_step
                    self.nonfinite = {"step": step, "layer": la.name, "where": "gradient"}
                    break
        return self.nonfinite

    # -- the record ----------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        """Everything recorded so far (without an optimizer, a recorded step appears once its
        update is read: when the next step begins, or when the probe exits)."""
        side = [i for i, la in enumerate(self._layers) if la.side]
        main = [i for i, la in enumerate(self._layers) if not la.side]
        info = {"nonfinite": self.nonfinite, "notes": list(self.notes), "unmeasured": dict(self.unmeasured)}
        trace = _assemble_trace(self._records, main, self._layers, self.hist_edges, hidden=True, **info)
        trace.kinds = {la.name: la.kind for la in self._layers}
        trace.activation_source = {name: self._sources.get(name, "unmeasured") for name in trace.layers}
        trace.precision, trace.skipped_steps = self.precision, list(self.skipped_steps)
        if self.scaler is not None:
            trace.loss_scale = np.array([r.scale for r in self._records], dtype=np.float64)
        if side:
            trace.norms = _assemble_trace(self._records, side, self._layers, self.hist_edges, hidden=False,
                                          nonfinite=self.nonfinite)
        return trace


class _Restore:
    """A handle whose ``remove()`` takes back an attribute the probe set on an object (the
    GradScaler's ``step``), so that the class's own method is in force again."""

    def __init__(self, owner, name: str):
        self.owner, self.name = owner, name
        self.before = owner.__dict__.get(name)  # what stood there before the probe (usually nothing)

    def remove(self) -> None:
        self.owner.__dict__.pop(self.name, None)
        if self.before is not None:
            self.owner.__dict__[self.name] = self.before


#: Float formats from the narrowest range and precision up, for ``trace.precision``.
_FORMATS = ("float16", "bfloat16", "float32", "float64")


def _precision(weight: torch.Tensor) -> str:
    """The float format a forward pass computes in: autocast's on the weights' device, else theirs."""
    device = weight.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return str(torch.get_autocast_dtype(device)).removeprefix("torch.")
    return str(weight.dtype).removeprefix("torch.")


def _narrowest(a: str | None, b: str) -> str:
    if a is None:
        return b
    rank = {f: i for i, f in enumerate(_FORMATS)}
    return a if rank.get(a, len(_FORMATS)) <= rank.get(b, len(_FORMATS)) else b


def _hidden_norms(values: np.ndarray, taps: list[int], runs: list[int]) -> np.ndarray | None:
    """‖∂L/∂h_t‖ per t from what a step kept: one square per tap pass (``taps`` gives each one's
    t), then one vector of norms per recurrent-module call (``runs`` gives their lengths)."""
    if not taps and not runs:
        return None
    squares = np.zeros(max([t + 1 for t in taps] + runs))
    seen = np.zeros(len(squares), dtype=bool)  # a time step no gradient reached stays NaN
    np.add.at(squares, np.array(taps, dtype=int), values[:len(taps)])  # already squares
    seen[taps] = True
    at = len(taps)
    for length in runs:
        squares[:length] += values[at:at + length] ** 2
        seen[:length] = True
        at += length
    return np.where(seen, np.sqrt(squares), np.nan)


def _assemble_trace(records: list[_Record], columns: list[int], layers: list[_Layer], hist_edges: np.ndarray,
                    hidden: bool, **info) -> Trace:
    n_records, n_layers, bins = len(records), len(columns), len(hist_edges) - 1
    values = np.array([r.values[:, columns] for r in records]).reshape(n_records, len(LAYER_QUANTITIES), n_layers)
    hists = np.array([r.histogram[columns] for r in records]).reshape(n_records, n_layers, bins)
    hidden_norm = None
    if hidden and any(r.hidden is not None for r in records):
        length = max(len(r.hidden) for r in records if r.hidden is not None)
        hidden_norm = np.full((n_records, length), np.nan)
        for i, r in enumerate(records):
            if r.hidden is not None:
                hidden_norm[i, : len(r.hidden)] = r.hidden
    names = [layers[i].name for i in columns]
    kinds = {}
    for i, name in zip(columns, names):  # the latest record's reading of each activation
        kinds[name] = records[-1].kinds[i] if records else "unmeasured"
    return Trace(layers=names, steps=np.array([r.step for r in records], dtype=int),
                 scalars={q: values[:, i, :] for i, q in enumerate(LAYER_QUANTITIES)}, grad_hist=hists,
                 hist_edges=hist_edges, hidden_grad_norm=hidden_norm, activation_kinds=kinds, **info)


def _replay_outputs(model: nn.Module, inputs: tuple, roles: dict) -> list[tuple[int, torch.Tensor]]:
    """Run a forward pass again without gradients and return (layer index, output) for every
    layer's output and activation, in call order. Only needed when a NaN/Inf appeared; the
    buffers (BatchNorm's running statistics) are restored so that the replay leaves no trace."""
    seen: list[tuple[int, torch.Tensor]] = []
    last = [None]

    def keep(module, args, output):
        kind, index = roles.get(module, (None, None))
        out = _first_tensor(output)
        if out is None:
            return
        if kind in ("layer", "cell", "side"):
            last[0] = index
            seen.append((index, out))
        elif kind in ("named", "module") and (index if index is not None else last[0]) is not None:
            seen.append((index if index is not None else last[0], out))

    handle = register_module_forward_hook(keep)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    args, kwargs = inputs
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        handle.remove()
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    return seen


def _function_kind(node) -> str | None:
    """The kind of the activation function whose output ``node`` holds, looking past reshapes and
    pooling (``None`` when the input was not made by a known activation function)."""
    while node is not None and type(node).__name__ in _SHAPE_NODES:
        parents = [p for p, _ in node.next_functions if p is not None]
        node = parents[0] if len(parents) == 1 else None
    return None if node is None else _FUNCTION_KINDS.get(type(node).__name__)


def _ancestors(node, wanted: set, stop: set, limit: int = _WALK) -> set:
    """The nodes of ``wanted`` found walking back from ``node`` through the autograd graph,
    breadth first, over at most ``limit`` nodes, never past a node of ``wanted`` or ``stop``
    (another layer's output: what lies behind it is that layer's business)."""
    found, seen, frontier = set(), {node}, [node]
    while frontier and len(seen) < limit and len(found) < len(wanted):
        following = []
        for current in frontier:
            if current in wanted:
                found.add(current)
                continue
            if current in stop:
                continue
            for parent, _ in current.next_functions:
                if parent is not None and parent not in seen:
                    seen.add(parent)
                    following.append(parent)
        frontier = following
    return found | {n for n in frontier if n in wanted}


def _on_gradient(output: torch.Tensor, fn, *args) -> None:
    """Call ``fn(∂L/∂output, *args)`` during the backward pass.

    A pre-hook on the autograd node that made ``output`` receives the same gradient as a tensor
    hook on ``output`` would, but registers in C++ (no Python handle per tensor). A tensor with
    no node (a leaf that requires grad) gets a tensor hook."""
    node = output.grad_fn
    if node is None:
        if output.requires_grad:
            output.register_hook(lambda grad: fn(grad, *args))
        return
    k = output.output_nr

    def hook(grads):
        if grads[k] is not None:  # a node with several outputs may run without this one's gradient
            fn(grads[k], *args)
    node.register_prehook(hook)


def _add_square(grad: torch.Tensor, squares: list, index: int, scratch: Scratch) -> None:
    """Keep ‖grad‖² (float64) for layer ``index``: a layer called twice in a step receives two
    gradients, whose squares add when the step is read."""
    squares.append((index, sum_of_squares(grad, scratch)))


def _tensors(output) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, or nested tuples, lists and dicts of them)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for o in output for t in _tensors(o)]
    return []


def _first_tensor(output) -> torch.Tensor | None:
    """A module's main output: the tensor itself, or the first tensor of a tuple (``nn.LSTM``'s
    output sequence, ``nn.MultiheadAttention``'s attended values)."""
    found = _tensors(output)
    return found[0] if found else None


def _log10_range(hist_range) -> tuple[float, float]:
    if isinstance(hist_range, (str, bytes)) or not hasattr(hist_range, "__len__") or len(hist_range) != 2:
        raise ValueError(f"hist_range must be a pair (low, high) of log10 |gradient| values, "
                         f"e.g. (-12, 2); got {hist_range!r}")
    lo, hi = (_checks.number("hist_range", v, low=-37.0, high=38.0) for v in hist_range)
    if lo >= hi:
        raise ValueError(f"hist_range must be (low, high) with low < high; got {hist_range!r}")
    return lo, hi


def _find_layers(modules: dict[str, nn.Module], layers) -> list[_Layer]:
    found = []
    for name, module in modules.items():
        kind = layer_kind(module)
        weights = layer_weights(module) if kind else []
        if weights:
            found.append(_Layer(name, module, kind, weights, kind in _SIDE_KINDS))
    names = [la.name for la in found]
    if not any(not la.side for la in found):
        raise ValueError("model must contain a module with parameters (Linear, Conv, RNN, Embedding, "
                         "attention, ...) for a probe to watch")
    if layers is None:
        return found
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise ValueError(f"layers must be a list of layer names such as [{names[0]!r}]; got {layers!r}")
    layers = list(layers)
    if not layers:
        raise ValueError(f"layers must name at least one of the tracked layers {names}; got []")
    unknown = [n for n in layers if n not in names]
    if unknown:
        raise ValueError(f"layers must name tracked layers ({names}); got unknown {unknown}")
    chosen = [la for la in found if la.name in layers]
    if all(la.side for la in chosen):
        raise ValueError(f"layers must name at least one layer that is not a norm layer; got {layers}")
    return chosen


def probe_once(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **probe_options) -> Trace:
    """One forward and backward pass of ``model`` on the batch ``(x, y)`` under a :class:`Probe`.

    The loss follows the target exactly as :func:`gradcourse.train.fit` chooses it
    (:func:`gradcourse.losses.loss_function`: integer labels → cross-entropy, float targets →
    MSE). No update is made. The model's gradients are cleared first (so that earlier ones do not
    add in) and this batch's are left in ``.grad`` (``model.zero_grad()`` clears them); the model's
    train/eval mode is left as it is. ``probe_options`` go to :class:`Probe` (``layers=``,
    ``hist_range=``). Returns the trace of the one recorded step; ``trace.loss`` is the loss.

    >>> import torch
    >>> from gradcourse.models import mlp
    >>> net = mlp(depth=3, width=8, seed=0)
    >>> trace = probe_once(net, torch.randn(16, 2), torch.randint(0, 2, (16,)))
    >>> trace.steps.tolist(), trace.get("grad_norm").shape, trace.loss > 0
    ([0], (1, 4), True)
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("probe_once needs gradients, and torch.inference_mode() is on: call probe_once "
                           "outside the `with torch.inference_mode():` block (torch.no_grad() is fine: "
                           "probe_once turns gradients back on)")
    loss_fn = loss_function(y)
    model.zero_grad(set_to_none=True)
    with torch.enable_grad(), Probe(model, **probe_options) as probe:
        loss = loss_fn(model(x), y)
        loss.backward()
    trace = probe.trace
    trace.loss = loss.item()
    return trace
