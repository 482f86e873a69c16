"""The record of a training run, :class:`Run`, and its file format (``Run.save``/``Run.load``).

What :func:`gradcourse.train.fit` returns, and what the doctor, the plots and the TensorBoard
export read: they import this module, not the training loop.

>>> import numpy as np
>>> run = Run(np.array([0.7, 0.5]), np.array([1.0, 0.8]), np.zeros(2, bool), {}, {"lr": 0.1})
>>> run.diverged, run.params["lr"]
(False, 0.1)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from . import _runfile
from .trace import Trace


@dataclass(eq=False)
class Run:
    """The outcome of :func:`fit`.

    ``losses`` (one per completed step: the loss of that step's batch, a mini-batch when
    ``batch_size`` is set, before the step's update; a diverged step's non-finite loss is the last
    entry), ``grad_norm_total`` (total gradient norm before clipping, per step), ``clipped`` (whether
    each step was clipped), ``metrics``, ``trace`` (the probe's
    :class:`~gradcourse.trace.Trace`, or ``None``), ``params`` (what the run was made with;
    ``params["data_finite"]`` is False when the training data held NaN/Inf),
    ``diverged_at`` (the step whose loss or gradient was NaN/Inf, else ``None``) and
    ``diverged_layer`` (where it began, as the probe located it), ``lrs`` (the learning rate each
    step used, which differs from ``params["lr"]`` during a warmup). ``model`` is the trained model
    (not saved).

    ``metrics`` holds ``final_loss`` (``losses[-1]``: the last step's batch, before its update; with
    mini-batches of 2 it can be 0 while the model is far from fitting the data) and, unless the run
    diverged (or ``fit`` was called with ``evaluate=False``), the trained model measured on whole data sets
    after the last update, in eval mode:
    ``train_loss`` and ``test_loss`` (the training set and, for a Dataset, its held-out set) and,
    for class labels, ``train_accuracy`` and ``test_accuracy``. Report ``train_loss`` as "the loss".
    """

    losses: np.ndarray
    grad_norm_total: np.ndarray
    clipped: np.ndarray
    metrics: dict
    params: dict
    trace: Trace | None = None
    diverged_at: int | None = None
    diverged_layer: str | None = None
    lrs: np.ndarray | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the run to ``path`` (a ``.npz`` file: arrays plus one JSON string; no pickle).

        >>> import tempfile, os
        >>> from gradcourse import data, models
        >>> from gradcourse.train import fit
        >>> run = fit(models.mlp(2, 4), data.spirals(32), steps=3, lr=0.1)
        >>> same = Run.load(run.save(os.path.join(tempfile.mkdtemp(), "run.npz")))
        >>> same == run, same.model is None
        (True, True)
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a file name ending in .npz; got {path!r}")
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path must end in .npz; got {str(path)!r}")
        arrays = {"losses": self.losses, "grad_norm_total": self.grad_norm_total,
                  "clipped": self.clipped}
        if self.lrs is not None:
            arrays["lrs"] = self.lrs
        meta = {"format": _runfile.FORMAT, "metrics": self.metrics, "params": self.params,
                "diverged_at": self.diverged_at, "diverged_layer": self.diverged_layer,
                "trace": None}
        if self.trace is not None:
            trace_arrays, meta["trace"] = self.trace.to_arrays()
            arrays.update(trace_arrays)
        np.savez_compressed(path, meta=np.array(json.dumps(_runfile.plain(meta))), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Run:
        """Read a run written by :meth:`save` (``model`` is ``None``).

        Anything else, a damaged file or one whose parts disagree, is refused with a ValueError
        "path is not a gradcourse run (…)"; nothing is unpickled.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path must be a file name; got {path!r}")
        arrays, meta = _runfile.read(path)
        trace = None
        if meta["trace"] is not None:
            try:
                trace = Trace.from_arrays(arrays, meta["trace"])
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise _runfile.refuse(f"its trace is incomplete: {error!r}") from None
            _runfile.check_trace(trace, len(arrays["losses"]))
        return cls(losses=arrays["losses"], grad_norm_total=arrays["grad_norm_total"],
                   clipped=arrays["clipped"], metrics=meta["metrics"], params=meta["params"],
                   trace=trace, diverged_at=meta["diverged_at"],
                   diverged_layer=meta["diverged_layer"], lrs=arrays.get("lrs"))

    def __eq__(self, other: object) -> bool:
        """Same parameters, metrics, per-step arrays and trace (NaN equals NaN); the model is not compared."""
        if not isinstance(other, Run):
            return NotImplemented
        mine, theirs = self._comparable(), other._comparable()
        return (mine[0].keys() == theirs[0].keys()
                and all(_same_array(mine[0][k], theirs[0][k]) for k in mine[0])
                and _same_json(mine[1], theirs[1]))

    __hash__ = None  # mutable, compared by value

    def _comparable(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {"losses": self.losses, "grad_norm_total": self.grad_norm_total, "clipped": self.clipped,
                  "lrs": self.lrs}
        meta = {"metrics": self.metrics, "params": self.params, "diverged_at": self.diverged_at,
                "diverged_layer": self.diverged_layer, "trace": None}
        if self.trace is not None:
            trace_arrays, meta["trace"] = self.trace.to_arrays()
            arrays.update(trace_arrays)
        return arrays, _runfile.plain(meta)


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    nan_aware = a.dtype.kind in "fc" and b.dtype.kind in "fc"
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=nan_aware))


def _same_json(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
