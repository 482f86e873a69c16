"""The record a probe leaves behind: per-layer quantities per recorded step, as numpy arrays.

>>> import numpy as np
>>> t = Trace(layers=["layer1", "head"], steps=np.array([0, 10]),
...           scalars={"grad_norm": np.array([[1.0, 2.0], [3.0, 4.0]])})
>>> t.get("grad_norm")[-1]
array([3., 4.])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The per-layer scalars a probe records; ``Trace.get(name)`` returns ``(steps, layers)``.
LAYER_QUANTITIES = (
    "grad_norm",          # ‖∂L/∂W‖ (Frobenius) of the layer's weight, before any clipping
    "output_grad_norm",   # ‖∂L/∂z‖: the signal backpropagation carries into the layer's output
    "weight_norm",        # ‖W‖ at the start of the step
    "update_ratio",       # ‖ΔW‖/‖W‖ of the step's update
    "act_mean",           # mean of the layer's activation (its output when it has none)
    "act_std",            # standard deviation of the same
    "saturated_frac",     # sigmoid/tanh outputs within 0.03 of an asymptote (else NaN)
    "dead_frac",          # ReLU units silent for the whole batch (else NaN)
)


@dataclass
class Trace:
    """What a :class:`~gradcourse.probes.Probe` recorded.

    ``layers`` are module names as ``model.named_modules()`` gives them, front to back;
    ``steps`` the recorded step numbers. ``get(name)`` returns a ``(len(steps), len(layers))``
    array for each of :data:`LAYER_QUANTITIES`, ``(steps, layers, bins)`` counts for
    ``"grad_hist"`` (histogram of log10|∂L/∂W| over ``hist_edges``) and ``(steps, seq_len)`` for
    ``"hidden_grad_norm"`` (‖∂L/∂h_t‖ of a sequence model). ``nonfinite`` says where the first
    NaN/Inf appeared: ``{"step": int, "layer": str, "where": "forward" | "gradient"}`` or ``None``.
    ``loss`` is the loss of the batch when :func:`~gradcourse.probes.probe_once` made the trace.
    ``notes`` says what the probe skipped and why (e.g. a frozen layer's gradient);
    ``unmeasured`` maps a layer to why its ``saturated_frac``/``dead_frac`` are NaN although its
    activation may well saturate or die (no activation could be found after it): read NaN there
    as "not measured", never as "healthy".

    **Which modules are layers.** Every module that owns parameters directly is a layer, and
    ``kinds`` says what each is: ``"linear"``, ``"conv"``, ``"recurrent"`` (RNN cells and
    ``nn.RNN``/``nn.LSTM``/``nn.GRU``), ``"embedding"``, ``"attention"``
    (``nn.MultiheadAttention``'s own input projection; its ``out_proj`` is a linear layer of its
    own), ``"parameter"`` (a module holding a bare ``nn.Parameter``, such as GPT-2's ``Conv1D``),
    ``"norm"`` (BatchNorm, LayerNorm, GroupNorm, …) and ``"activation"`` (PReLU). ``layers`` are
    the layers a signal crosses in depth, the ones that mix features: every kind but ``"norm"``
    and ``"activation"``. Normalisation layers and parametric activations only rescale and shift
    each feature; their figures would interleave with the depth-wise profile of ``layers`` (the
    lessons' per-layer plots, the doctor's first-to-last ratios), so they are kept apart, in
    ``norms``: a :class:`Trace` of the same steps with the same quantities (their activation
    statistics are NaN: an activation belongs to the layer before). Together ``layers`` and
    ``norms.layers`` cover every parameter of the model. For ``gradcourse.models``' models,
    ``layers`` are their linear and convolutional layers exactly as before.

    **Where an activation was read** (``activation_source``, per layer of ``layers``):
    ``"named"`` (the model names the module, ``model.probe_activations``), ``"module"`` (an
    activation module called after the layer), ``"function"`` (the input of a later layer that
    the layer's output reached, made by an activation function such as ``F.relu`` or
    ``torch.tanh``, in place or not: its kind is that function's), ``"input"`` (the same input,
    made otherwise: the kind then comes from the values' range, which small values of any
    function can mimic), ``"none"`` (the output went straight into the next layer: no
    activation), ``"output"`` (the layer's own output: nothing after it was seen) or
    ``"unmeasured"`` (recurrent layers). ``activation_kinds`` says
    how it was read: ``"sigmoid"``/``"tanh"`` (saturation counted), ``"relu"`` (dead units
    counted: ReLU, ReLU6, or non-negative values with exact zeros), ``"other"`` (neither notion:
    leaky ReLU, GELU, SiLU, no activation) or ``"unmeasured"``.
    """

    layers: list[str]
    steps: np.ndarray
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    grad_hist: np.ndarray | None = None
    hist_edges: np.ndarray | None = None
    hidden_grad_norm: np.ndarray | None = None
    nonfinite: dict | None = None
    loss: float | None = None  # the probed batch's loss, set by probes.probe_once
    notes: list[str] = field(default_factory=list)
    unmeasured: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    activation_source: dict[str, str] = field(default_factory=dict)
    activation_kinds: dict[str, str] = field(default_factory=dict)
    norms: Trace | None = None
    #: Mixed precision (lesson 10): the narrowest float format the recorded forward passes computed in
    #: (``"float16"``, ``"bfloat16"``, ``"float32"``, … from ``torch.autocast`` or the weights' dtype);
    #: with a GradScaler (``Probe(..., scaler=)``) the scale each recorded step's backward pass ran
    #: under (aligned with ``steps``) and the steps the scaler skipped (Inf/NaN found, no update).
    precision: str | None = None
    loss_scale: np.ndarray | None = None
    skipped_steps: list[int] = field(default_factory=list)

    def get(self, name: str) -> np.ndarray:
        """The recorded array called ``name`` (see the class docstring for shapes)."""
        if name in self.scalars:
            return self.scalars[name]
        if name == "grad_hist" and self.grad_hist is not None:
            return self.grad_hist
        if name == "hidden_grad_norm" and self.hidden_grad_norm is not None:
            return self.hidden_grad_norm
        available = [*self.scalars, *(["grad_hist"] if self.grad_hist is not None else []),
                     *(["hidden_grad_norm"] if self.hidden_grad_norm is not None else [])]
        raise ValueError(f"name must be one of {', '.join(map(repr, available))}; got {name!r}")

    def layer(self, name: str, quantity: str) -> np.ndarray:
        """One layer's ``quantity`` over the recorded steps (a 1-D array)."""
        if name not in self.layers:
            raise ValueError(f"name must be one of {self.layers}; got {name!r}")
        return self.get(quantity)[:, self.layers.index(name)]

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """Split into numpy arrays and JSON-able metadata (for :meth:`gradcourse.run.Run.save`)."""
        arrays = {f"trace_{k}": v for k, v in self.scalars.items()}
        arrays["trace_steps"] = self.steps
        for key in ("grad_hist", "hist_edges", "hidden_grad_norm", "loss_scale"):
            if getattr(self, key) is not None:
                arrays[f"trace_{key}"] = getattr(self, key)
        meta = {"layers": list(self.layers), "nonfinite": self.nonfinite, "loss": self.loss,
                "notes": list(self.notes), "unmeasured": dict(self.unmeasured), "kinds": dict(self.kinds),
                "activation_source": dict(self.activation_source),
                "activation_kinds": dict(self.activation_kinds), "norms": None,
                "precision": self.precision, "skipped_steps": [int(s) for s in self.skipped_steps]}
        if self.norms is not None:
            norm_arrays, meta["norms"] = self.norms.to_arrays()
            arrays.update({f"trace_norms_{k.removeprefix('trace_')}": v for k, v in norm_arrays.items()})
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> Trace:
        """Inverse of :meth:`to_arrays`."""
        scalars = {q: arrays[f"trace_{q}"] for q in LAYER_QUANTITIES if f"trace_{q}" in arrays}
        norms = None
        if meta.get("norms") is not None:
            norms = cls.from_arrays({f"trace_{k.removeprefix('trace_norms_')}": v for k, v in arrays.items()
                                     if k.startswith("trace_norms_")}, meta["norms"])
        return cls(layers=list(meta["layers"]), steps=arrays["trace_steps"], scalars=scalars,
                   grad_hist=arrays.get("trace_grad_hist"),
                   hist_edges=arrays.get("trace_hist_edges"),
                   hidden_grad_norm=arrays.get("trace_hidden_grad_norm"),
                   nonfinite=meta.get("nonfinite"), loss=meta.get("loss"),
                   notes=list(meta.get("notes", [])), unmeasured=dict(meta.get("unmeasured", {})),
                   kinds=dict(meta.get("kinds", {})), activation_source=dict(meta.get("activation_source", {})),
                   activation_kinds=dict(meta.get("activation_kinds", {})), norms=norms,
                   precision=meta.get("precision"), loss_scale=arrays.get("trace_loss_scale"),
                   skipped_steps=list(meta.get("skipped_steps", [])))
