"""Gradient probes: module and tensor hooks that record what flows through a model.

A probe is a context manager. Inside the ``with`` block every forward pass made with gradients
enabled counts as one step; on every ``every``-th step it records, per layer, the quantities of
:data:`~gradcourse.trace.LAYER_QUANTITIES` and a histogram of the weight gradient. On exit every
hook it added is removed, even when the block raised.

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

import math

import numpy as np
import torch
from torch import nn

from . import _checks
from .losses import loss_function
from .trace import LAYER_QUANTITIES, Trace

_RECURRENT = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
_TRACKED = (nn.Linear, nn.Conv1d, nn.Conv2d, *_RECURRENT)
_SATURATION_MARGIN = 0.03  # an output within 0.03 of an asymptote (0, 1 or ±1) counts as saturated
_LOG10_2 = math.log10(2.0)


def _norm(tensor: torch.Tensor) -> torch.Tensor:
    """‖tensor‖ accumulated in float64, returned as float32: a float32 sum of squares underflows to
    0 (or loses precision) once the entries fall below ~1e-19, which deep vanishing gradients reach."""
    return torch.linalg.vector_norm(tensor, dtype=torch.float64).float()


def tracked_weight(module: nn.Module) -> torch.Tensor:
    """The weight whose gradient a probe reports for ``module`` (``weight_hh`` for RNN cells)."""
    return module.weight_hh if isinstance(module, _RECURRENT) else module.weight


class Probe:
    """Record per-layer gradient and activation statistics while a model trains.

    Parameters: ``every`` records one step in ``every`` (the others cost one finiteness check);
    the gradient histogram has one bin per power of two of |g| between ``10**hist_range[0]``
    and ``10**hist_range[1]`` (smaller values, zeros included, land in the first bin, larger ones
    and NaN/Inf in the last; ``trace.hist_edges`` are the edges in log10 units);
    ``max_records`` bounds the history: when it fills, every other record is dropped and
    ``every`` doubles, so memory stays flat however long the run. ``layers`` restricts the
    probe to some module names (default: every linear, convolutional and recurrent layer).

    Step numbering starts at 0 with the first forward pass made with gradients enabled inside
    the ``with`` block; forward passes under ``torch.no_grad()`` (evaluation) are not steps.
    """

    def __init__(self, model: nn.Module, *, every: int = 1,
                 hist_range: tuple[float, float] = (-12.0, 2.0), max_records: int = 1000,
                 layers: list[str] | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.every = _checks.integer("every", every, low=1)
        lo, hi = (_checks.number("hist_range", v, low=-37.0, high=38.0) for v in hist_range)
        if lo >= hi:
            raise ValueError(f"hist_range must be (low, high) with low < high; got {hist_range!r}")
        # One bin per power of two between 10**lo and 10**hi (float32 exponents are biased by 127).
        self._exponent_range = (math.floor(lo / _LOG10_2) + 127, math.ceil(hi / _LOG10_2) + 127)
        self.bins = self._exponent_range[1] - self._exponent_range[0]
        self.hist_edges = (np.arange(self._exponent_range[0], self._exponent_range[1] + 1) - 127) * _LOG10_2
        self._hist_offsets_key = None
        self.max_records = _checks.integer("max_records", max_records, low=2)
        modules = dict(model.named_modules())
        names = [n for n, m in modules.items() if isinstance(m, _TRACKED)]
        if layers is not None:
            unknown = [n for n in layers if n not in names]
            if unknown:
                raise ValueError(f"layers must name tracked layers ({names}); got unknown {unknown}")
            names = [n for n in names if n in layers]
        if not names:
            raise ValueError("model must contain a Linear, Conv or RNN-cell layer for a probe to watch")
        inplace = [n for n, m in modules.items() if getattr(m, "inplace", False)]
        if inplace:
            raise ValueError(f"model has in-place activations {inplace}: a probe needs their inputs "
                             "intact; build them with inplace=False")
        self.layers = names
        self._modules = [modules[n] for n in names]
        activation_names = getattr(model, "probe_activations", {})
        self._activations = {n: modules[activation_names[n]] for n in names if n in activation_names}
        self._tap = getattr(model, "hidden_tap", None)
        self._handles: list = []       # the model's own hooks, on while the probe is attached
        self._step_handles: list = []  # per-layer hooks, on only during a recorded step
        self._inputs: tuple = ()
        self._records: list[dict[str, np.ndarray]] = []
        self.step = -1
        self.nonfinite: dict | None = None
        self._pending: dict | None = None
        self._outputs: dict[str, torch.Tensor] = {}

    # -- attaching and detaching -------------------------------------------------------------
    def __enter__(self) -> Probe:
        if self._handles:
            raise RuntimeError("this probe is already attached; use a new Probe or exit first")
        try:
            self._attach()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._pending is not None:
                self._commit()
        finally:
            self.remove()

    def remove(self) -> None:
        """Remove every hook this probe added. Safe to call more than once."""
        self._detach_step_hooks()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _attach(self) -> None:
        # Only the model's own two hooks stay on between recorded steps: a step that is not
        # recorded then costs one counter increment and one finiteness check.
        self._handles.append(self.model.register_forward_pre_hook(self._on_step_start))
        self._handles.append(self.model.register_forward_hook(self._on_model_output))

    def _attach_step_hooks(self) -> None:
        add = self._step_handles.append
        for index, (name, module) in enumerate(zip(self.layers, self._modules)):
            if not isinstance(module, _RECURRENT):
                add(module.register_forward_hook(self._layer_output_hook(index, name)))
            add(tracked_weight(module).register_post_accumulate_grad_hook(self._weight_grad_hook(index)))
            if name in self._activations:
                add(self._activations[name].register_forward_hook(self._activation_hook(name)))
        if self._tap is not None:
            add(self._tap.register_forward_hook(self._on_hidden_state))

    def _detach_step_hooks(self) -> None:
        for handle in self._step_handles:
            handle.remove()
        self._step_handles.clear()
        self._outputs.clear()

    # -- per step: hooks only keep references; the numbers are computed in batches -------------
    def _on_step_start(self, module, args) -> None:
        if not torch.is_grad_enabled():
            return
        if self._pending is not None:
            self._commit()
        self.step += 1
        self._inputs = args
        if self.step % self.every:
            return
        weights = [tracked_weight(m).detach() for m in self._modules]
        n = len(self.layers)
        self._pending = {
            "step": self.step,
            "scalars": {q: [None] * n for q in LAYER_QUANTITIES},
            "grads": [None] * n,
            "grads_done": False,
            "hidden": [],
            "before": [w.clone() for w in weights],
        }
        self._pending["scalars"]["weight_norm"] = list(torch._foreach_norm(weights))
        self._attach_step_hooks()

    def _recording(self) -> dict | None:
        pending = self._pending
        if pending is None or pending["step"] != self.step or not torch.is_grad_enabled():
            return None
        return pending

    def _on_model_output(self, module, args, output) -> None:
        if not torch.is_grad_enabled():
            return
        if self.nonfinite is None and isinstance(output, torch.Tensor):
            if not bool(torch.isfinite(output).all()):
                self._locate_forward()
        pending = self._recording()
        if pending is not None:
            self._activation_statistics(pending)

    def _layer_output_hook(self, index: int, name: str):
        def hook(module, args, output):
            if not torch.is_grad_enabled():
                return
            self._outputs[name] = output
            pending = self._recording()
            if pending is not None and output.requires_grad:
                def grad_hook(grad):
                    # float64 accumulation: squares of tiny float32 entries (< 1e-19) would underflow.
                    pending["scalars"]["output_grad_norm"][index] = _norm(grad)
                output.register_hook(grad_hook)

        return hook

    def _activation_hook(self, name: str):
        def hook(module, args, output):
            if torch.is_grad_enabled():
                self._outputs[name + ":activation"] = output

        return hook

    def _activation_statistics(self, pending: dict) -> None:
        """Mean, std and saturated/dead fractions of every layer's activation (its output if none)."""
        scalars = pending["scalars"]
        for index, name in enumerate(self.layers):
            out = self._outputs.get(name + ":activation", self._outputs.get(name))
            if out is None:
                continue
            a = out.detach()
            mean = a.mean()
            scalars["act_mean"][index] = mean
            # Centring first keeps the float32 std exact when the mean dwarfs the spread.
            scalars["act_std"][index] = torch.linalg.vector_norm(a - mean) / math.sqrt(max(a.numel() - 1, 1))
            kind = type(self._activations.get(name))
            if kind is nn.Sigmoid:
                scalars["saturated_frac"][index] = (
                    torch.count_nonzero((a - 0.5).abs_() > 0.5 - _SATURATION_MARGIN) / a.numel())
            elif kind is nn.Tanh:
                scalars["saturated_frac"][index] = (
                    torch.count_nonzero(a.abs() > 1 - _SATURATION_MARGIN) / a.numel())
            elif kind in (nn.ReLU, nn.LeakyReLU):
                units = a.reshape(a.shape[0], -1).amax(dim=0)
                scalars["dead_frac"][index] = torch.count_nonzero(units <= 0) / units.numel()

    def _weight_grad_hook(self, index: int):
        def hook(param):
            # Backward runs with grad mode off, so check the step alone here.
            pending = self._pending
            if pending is None or pending["step"] != self.step or param.grad is None:
                return
            pending["grads"][index] = param.grad.detach()
            if all(g is not None for g in pending["grads"]):
                # Every layer's gradient is in: measure now, before any clipping rescales them.
                self._gradient_statistics(pending)

        return hook

    def _gradient_statistics(self, pending: dict) -> None:
        present = [i for i, g in enumerate(pending["grads"]) if g is not None]
        if pending["grads_done"] or not present:
            return
        pending["grads_done"] = True
        grads = [pending["grads"][i] for i in present]
        # float64 accumulation, as in _norm: tiny (vanishing) gradients must not underflow to 0.
        for i, norm in zip(present, torch._foreach_norm(grads, dtype=torch.float64)):
            pending["scalars"]["grad_norm"][i] = norm.float()
        pending["hist"] = self._histograms(present, grads)
        pending["grads"] = [None] * len(self.layers)

    def _histograms(self, present: list[int], grads: list[torch.Tensor]) -> torch.Tensor:
        """Count |g| per power of two: the float32 exponent bits are log2|g|, read exactly."""
        sizes = [g.numel() for g in grads]
        key = (tuple(present), tuple(sizes))
        if self._hist_offsets_key != key:
            owner = torch.repeat_interleave(torch.tensor(present), torch.tensor(sizes))
            self._hist_offsets = owner * 256
            self._hist_ones = torch.ones(len(owner), dtype=torch.int64)
            self._hist_offsets_key = key
        bits = torch.cat([g.reshape(-1).float() for g in grads]).view(torch.int32)
        exponent = bits.bitwise_and(0x7FFFFFFF).bitwise_right_shift_(23).add_(self._hist_offsets)
        # index_add_ into a fixed-size buffer: memory stays 256 counts per layer whatever the values.
        counts = torch.zeros(256 * len(self.layers), dtype=torch.int64)
        counts.index_add_(0, exponent.long(), self._hist_ones)
        counts = counts.view(len(self.layers), 256)
        lo, hi = self._exponent_range
        folded = counts[:, lo:hi].clone()
        folded[:, 0] += counts[:, :lo].sum(dim=1)
        folded[:, -1] += counts[:, hi:].sum(dim=1)
        return folded

    def _on_hidden_state(self, module, args, output):
        pending = self._recording()
        if pending is None or not output.requires_grad:
            return
        slot = len(pending["hidden"])
        pending["hidden"].append(None)

        def grad_hook(grad):
            pending["hidden"][slot] = _norm(grad)

        output.register_hook(grad_hook)

    # -- turning a step's tensors into numpy, once ---------------------------------------------
    def _commit(self) -> None:
        pending, self._pending = self._pending, None
        self._detach_step_hooks()
        self._gradient_statistics(pending)
        after = [tracked_weight(m).detach() for m in self._modules]
        deltas = torch._foreach_sub(after, pending["before"])
        ratios = torch._foreach_div(torch._foreach_norm(deltas), pending["scalars"]["weight_norm"])
        pending["scalars"]["update_ratio"] = list(ratios)
        nan = torch.tensor(math.nan)
        flat = [v if v is not None else nan for q in LAYER_QUANTITIES for v in pending["scalars"][q]]
        values = torch.stack(flat).reshape(len(LAYER_QUANTITIES), len(self.layers)).numpy()
        record = {q: values[i] for i, q in enumerate(LAYER_QUANTITIES)}
        record["step"] = pending["step"]
        hist = pending.get("hist")
        record["grad_hist"] = (hist.numpy() if hist is not None
                               else np.zeros((len(self.layers), self.bins), dtype=np.int64))
        hidden = [h if h is not None else nan for h in pending["hidden"]]
        record["hidden"] = torch.stack(hidden).numpy() if hidden else None
        self._records.append(record)
        if len(self._records) > self.max_records:
            self._records = self._records[::2]
            self.every *= 2

    # -- non-finite values ---------------------------------------------------------------------
    def _locate_forward(self) -> None:
        outputs = self._outputs
        if not outputs:
            outputs = self._replay_forward()
        for name in self.layers:
            for key in (name, name + ":activation"):
                out = outputs.get(key)
                if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
                    self.nonfinite = {"step": self.step, "layer": name, "where": "forward"}
                    return
        self.nonfinite = {"step": self.step, "layer": "output", "where": "forward"}

    def _replay_forward(self) -> dict[str, torch.Tensor]:
        """Run this step's forward pass again, without gradients, keeping every layer's output.

        Only needed when a NaN/Inf appears on a step that was not recorded; the buffers
        (BatchNorm's running statistics) are restored so that the replay leaves no trace.
        """
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name, module in zip(self.layers, self._modules):
            handles.append(module.register_forward_hook(
                lambda m, a, out, name=name: captured.__setitem__(name, out)))
            if name in self._activations:
                handles.append(self._activations[name].register_forward_hook(
                    lambda m, a, out, name=name: captured.__setitem__(name + ":activation", out)))
        buffers = {k: v.clone() for k, v in self.model.named_buffers()}
        try:
            with torch.no_grad():
                self.model(*self._inputs)
        finally:
            for handle in handles:
                handle.remove()
            with torch.no_grad():
                for k, v in self.model.named_buffers():
                    v.copy_(buffers[k])
        return captured

    def locate_nonfinite_gradient(self) -> dict | None:
        """Name the layer nearest the loss whose weight gradient holds NaN/Inf (call after backward).

        Returns the ``nonfinite`` record (also kept on the probe and in its trace), or ``None`` if
        every weight gradient is finite. A non-finite value already seen in the forward pass wins.
        """
        if self.nonfinite is None:
            for name, module in reversed(list(zip(self.layers, self._modules))):
                grad = tracked_weight(module).grad
                if grad is not None and not bool(torch.isfinite(grad).all()):
                    self.nonfinite = {"step": self.step, "layer": name, "where": "gradient"}
                    break
        return self.nonfinite

    # -- the record ----------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        """Everything recorded so far (a step still in flight appears once the next one starts)."""
        records = self._records
        n_layers = len(self.layers)
        scalars = {q: np.array([r[q] for r in records]).reshape(len(records), n_layers)
                   for q in LAYER_QUANTITIES}
        hists = np.array([r["grad_hist"] for r in records]).reshape(len(records), n_layers, self.bins)
        hidden = None
        if any(r["hidden"] is not None for r in records):
            length = max(len(r["hidden"]) for r in records if r["hidden"] is not None)
            hidden = np.full((len(records), length), np.nan, dtype=np.float32)
            for i, r in enumerate(records):
                if r["hidden"] is not None:
                    hidden[i, : len(r["hidden"])] = r["hidden"]
        return Trace(layers=list(self.layers), steps=np.array([r["step"] for r in records], dtype=int),
                     scalars=scalars, grad_hist=hists,
                     hist_edges=self.hist_edges,
                     hidden_grad_norm=hidden, nonfinite=self.nonfinite)


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
    loss_fn = loss_function(y)
    model.zero_grad(set_to_none=True)
    with torch.enable_grad(), Probe(model, **probe_options) as probe:
        loss = loss_fn(model(x), y)
        loss.backward()
    trace = probe.trace
    trace.loss = loss.item()
    return trace
