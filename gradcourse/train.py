"""The training loop: ``fit(model, data, ...) -> Run``, with probes attached and divergence caught.

>>> from gradcourse import data, models
>>> from gradcourse.train import fit
>>> run = fit(models.mlp(3, 16, activation="tanh", seed=0), data.spirals(256), steps=50, lr=0.5)
>>> len(run.losses), run.diverged_at, run.trace.get("grad_norm").shape
(50, None, (50, 4))
"""

from __future__ import annotations

import contextlib
import math
import numbers
import sys
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import _checks, _runfile
from .data import Dataset
from .hooks import Hooks
from .losses import loss_function
from .modes import evaluating
from .probes import Probe
from .remedies import Clipping, clip_norm
from .run import Run
from .trace import Trace

OPTIMIZERS = ("sgd", "adam", "radam")
#: What fit says when it is asked to probe a ``torch.compile``'d model.
COMPILED_NOTE = (
    "model was compiled with torch.compile: fit trains and probes the module inside it "
    "(model._orig_mod, the same parameters), because a probe's hooks inside a compiled graph make "
    "torch recompile and break the graph at every layer (three probed steps of a small model took "
    "13.5 s compiled against 0.4 s plain). Pass probe=False to train the compiled model itself.")


def fit(
    model: nn.Module,
    data,
    *,
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    warmup: int = 0,
    betas: tuple[float, float] | None = None,
    clip: Clipping | float | None = None,
    probe: bool = True,
    every: int = 1,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool | None = None,
    fused: bool = False,
    evaluate: bool = True,
) -> Run:
    """Train ``model`` on ``data`` for ``steps`` optimizer steps and return a :class:`Run`.

    ``data`` is an ``(x, y)`` pair of tensors or a :class:`~gradcourse.data.Dataset`. The loss
    follows the target: integer class labels → cross-entropy, float targets → mean squared error.
    ``optimizer`` is ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"radam"`` (both with ``betas``,
    PyTorch's (0.9, 0.999) when ``None``). ``warmup`` ramps the learning rate linearly over the first
    ``warmup`` steps: step ``k`` (from 0) uses ``lr·(k+1)/warmup``, then ``lr``. ``clip`` is a
    :class:`~gradcourse.remedies.Clipping` (``remedies.clip_norm(1.0)``), a number (clip the norm
    at it) or ``None``. ``batch_size=None`` trains on the full batch; otherwise mini-batches are
    drawn with ``seed``. With ``probe=True`` a :class:`~gradcourse.probes.Probe` records every
    ``every``-th step. ``progress`` shows a ``tqdm.auto`` bar (default: on in a notebook, off
    elsewhere; ``TQDM_DISABLE=1`` in the environment switches it off everywhere). ``fused=True`` takes
    torch's fused Adam (one kernel for all parameters; Adam only): about 4× cheaper than the default
    update, equal to it up to rounding (so a long run ends elsewhere in the last digits).
    ``evaluate=False`` skips the last evaluation on the whole training (and held-out) set, a forward pass
    over every example: ``run.metrics`` then holds ``final_loss`` only, for a caller that reads nothing but
    the losses (lesson 09's 6-layer Transformer: about 60 ms a run on 1,024 + 256 sequences).

    A NaN or Inf in the loss or in the gradient stops training cleanly: ``run.diverged_at`` is
    that step, ``run.diverged_layer`` where it began, and nothing is raised. A learning rate so
    large that the update itself cannot be computed in the weights' precision (``lr=1e39`` for
    float32) is a ValueError naming ``lr``; calling fit inside ``torch.no_grad()`` or
    ``torch.inference_mode()`` is a RuntimeError saying so.

    A ``torch.compile``'d model is probed through the module inside it (``model._orig_mod``,
    the same parameters) with a warning: hooks inside a compiled graph make torch recompile
    around every layer, which cost 13.5 s against 0.4 s for three probed steps of a small model.
    ``probe=False`` trains the compiled model itself.

    Inputs are converted where the intent is clear (float64 or numpy ``x`` to the model's float
    precision, int32 or ``(n, 1)`` labels to int64 ``(n,)``, float targets of shape ``(n,)`` for a
    one-output model to ``(n, 1)``); anything else that does not fit the model is a ValueError
    naming ``x`` or ``y`` and what the model expects.

    >>> from gradcourse import data, models
    >>> run = fit(models.mlp(2, 4), data.spirals(32), steps=4, lr=0.01, optimizer="adam", warmup=2,
    ...           betas=(0.9, 0.98))
    >>> run.lrs.tolist(), run.params["betas"]
    ([0.005, 0.01, 0.01, 0.01], [0.9, 0.98])
    >>> sorted(run.metrics)
    ['final_loss', 'test_accuracy', 'test_loss', 'train_accuracy', 'train_loss']
    >>> run = fit(models.mlp(2, 4), data.spirals(32), steps=4, lr=0.01, evaluate=False)
    >>> run.metrics == {"final_loss": run.losses[-1]}
    True
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    x, y = _unpack(data)
    x, y = _as_inputs(model, x, "x"), _as_targets(model, y, "y")
    x_test = y_test = None
    if isinstance(data, Dataset) and len(data.x_test):
        x_test, y_test = _as_inputs(model, data.x_test, "x_test"), _as_targets(model, data.y_test, "y_test")
    steps = _checks.integer("steps", steps, low=1)
    lr = _checks.number("lr", lr, low=0.0, low_open=True)
    _checks.choice("optimizer", optimizer, OPTIMIZERS)
    momentum = _checks.number("momentum", momentum, low=0.0, high=1.0)
    if momentum and optimizer != "sgd":
        raise ValueError(f"momentum is an SGD setting; {optimizer} takes betas=(beta1, beta2) instead; "
                         f"got momentum={momentum!r}")
    warmup = _checks.integer("warmup", warmup, low=0)
    betas = _betas(betas, optimizer)
    clip = _clipping(clip)
    probe = _checks.flag("probe", probe)
    every = _checks.integer("every", every, low=1)
    seed = _checks.seed(seed)
    if batch_size is not None:
        batch_size = _checks.integer("batch_size", batch_size, low=1, high=len(x))
    if progress is not None:
        progress = _checks.flag("progress", progress)
    classify = not torch.is_floating_point(y)
    loss_fn = loss_function(y)  # the one rule probe_once uses too
    given = model
    if probe and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        warnings.warn(COMPILED_NOTE, stacklevel=2)
        model = model._orig_mod  # the same parameters, outside the compiled graph

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (every parameter has requires_grad=False)")
    _check_trainable(model, params, lr)
    fused = _checks.flag("fused", fused)
    evaluate = _checks.flag("evaluate", evaluate)
    if fused and optimizer != "adam":
        raise ValueError(f"fused applies to optimizer='adam' only; got optimizer={optimizer!r}")
    opt, schedule = _optimizer(params, optimizer, lr, momentum, betas, warmup, fused)
    sampler = torch.Generator().manual_seed(seed)
    losses, totals, clipped, lrs = [], [], [], []
    diverged_at = diverged_layer = None
    model.train()
    # The probe and the bar are context managers: an exception raised while training reaches the
    # probe's __exit__ as it is (the probe removes its hooks either way) and closes the bar.
    with contextlib.ExitStack() as stack:
        monitor = stack.enter_context(Probe(model, every=every)) if probe else None
        bar = stack.enter_context(progress_bar(steps, progress))
        for step in range(steps):
            xb, yb = x, y
            if batch_size is not None:
                index = torch.randperm(len(x), generator=sampler)[:batch_size]
                xb, yb = x[index], y[index]
            opt.zero_grad(set_to_none=True)
            lrs.append(opt.param_groups[0]["lr"])
            if step == 0:
                out = _first_forward(model, xb, x)
                y, yb = _match_targets(out, y, yb)
                if y_test is not None:
                    y_test = _match_targets(out, y_test, y_test, name="y_test")[0]
            else:
                out = model(xb)
            loss = loss_fn(out, yb)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                diverged_at, diverged_layer = step, _where(monitor, "loss")
                totals.append(float("nan"))
                clipped.append(False)
                break
            loss.backward()
            if clip is None:
                total, was_clipped = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]), False
            else:
                total, was_clipped = clip.apply(params)
            totals.append(float(total))
            clipped.append(was_clipped)
            if not math.isfinite(totals[-1]):
                if monitor is not None:
                    monitor.locate_nonfinite_gradient()
                diverged_at, diverged_layer = step, _where(monitor, "gradient")
                break
            try:
                opt.step()
            except RuntimeError as error:
                if "overflow" not in str(error):
                    raise
                raise ValueError(f"lr={lr:g} is too large: the {optimizer} update of step {step} does not fit "
                                 f"in the model's {_model_dtype(model)} weights (torch: {error}). Lower lr; "
                                 "learning rates that train are about 1e-4 to 1 (lesson 02)") from None
            if schedule is not None:
                schedule.step()
            if bar is not None:
                bar.update()
                if step % 10 == 0:
                    # refresh=False: the bar shows the new loss at its next redraw (tqdm redraws at most
                    # every 0.1 s); redrawing the notebook widget at once cost 0.5 ms each time, about
                    # 50 µs per step (tqdm.auto in a kernel: 52.6 -> 3.6 µs per step).
                    bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)

    metrics = {"final_loss": losses[-1]}
    if diverged_at is None and evaluate:
        metrics.update(_evaluate(model, loss_fn, classify, x, y, "train"))
        if x_test is not None:
            metrics.update(_evaluate(model, loss_fn, classify, x_test, y_test, "test"))
    run_params = _runfile.plain(dict(model=_runfile.model_config(model), steps=steps,
                      lr=lr, optimizer=optimizer, momentum=momentum, warmup=warmup,
                      betas=None if betas is None else list(betas),
                      clip=None if clip is None else {"method": clip.method, "threshold": clip.threshold},
                      every=every, seed=seed, batch_size=batch_size,
                      data=getattr(data, "description", f"tensors x{tuple(x.shape)}"),
                      data_finite=_finite(x) and _finite(y)))
    return Run(losses=np.array(losses, dtype=np.float64), grad_norm_total=np.array(totals),
               clipped=np.array(clipped, dtype=bool), metrics=metrics, params=run_params,
               trace=None if monitor is None else monitor.trace, diverged_at=diverged_at,
               diverged_layer=diverged_layer, lrs=np.array(lrs, dtype=np.float64), model=given)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``, in eval mode (then back to train).

    >>> net = nn.Linear(2, 2)                  # scores = the coordinates: the larger one wins
    >>> with torch.no_grad():
    ...     _ = net.weight.copy_(torch.eye(2)), net.bias.zero_()
    >>> accuracy(net, torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0]]), torch.tensor([0, 1, 0]))
    0.6666666865348816
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    x, y = _unpack((x, y))
    x, y = _as_inputs(model, x, "x"), _as_targets(model, y, "y")
    if y.is_floating_point():
        raise ValueError(f"y must hold integer class labels; got dtype {y.dtype}")
    with evaluating(model):
        scores = model(x)
    if scores.dim() != y.dim() + 1 or scores.shape[0] != len(y):
        raise ValueError(f"y has shape {tuple(y.shape)} but the model's class scores have shape {tuple(scores.shape)}")
    return (scores.argmax(dim=1) == y).float().mean().item()


# -- a plain loop for a model of your own (lesson 08) --------------------------------------------
#: The plain loop's recipe: mini-batches of 64, SGD with momentum 0.9 at lr 0.03, a probe recording
#: every 5th step; 230 steps are 10 epochs of the digits' 1,437 training images.
LOOP_BATCH = 64
LOOP_MOMENTUM = 0.9
LOOP_LR = 0.03
LOOP_EVERY = 5


@dataclass
class Outcome:
    """What :func:`train_loop` returns: the loss of every step (the last one NaN/Inf if training
    diverged), the probe's trace, the test accuracy (NaN if diverged) and the trained model. The
    doctor reads it as it reads any loop of your own:
    ``diagnose(outcome.trace, losses=outcome.losses, model=outcome.model)``."""

    losses: list[float]
    trace: Trace
    test_accuracy: float
    model: nn.Module

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.losses[-1])


def train_loop(model: nn.Module, dataset: Dataset, *, lr: float = LOOP_LR, steps: int = 230,
               batch_size: int = LOOP_BATCH, seed: int = 0, every: int = LOOP_EVERY,
               subset: int | None = None, progress: bool = False) -> Outcome:
    """Train ``model`` on ``dataset`` with a plain PyTorch loop under a probe; stop at the first NaN.

    Beside :func:`fit`, which trains the course's recipes, this is lesson 08's loop for a model of
    your own, written as a learner writes it (a ``DataLoader``, an optimizer, a
    :class:`~gradcourse.probes.Probe` attached in one line): a ``DataLoader`` shuffling with a
    generator seeded by ``seed``, mini-batches of ``batch_size``, cross-entropy, SGD with momentum 0.9. ``subset``
    trains on the first ``subset`` training images only. ``progress`` shows a ``tqdm.auto`` bar.

    >>> from gradcourse import data, models
    >>> net = models.digits_model("mlp", 3, activation="relu", init="he")
    >>> out = train_loop(net, data.digits(0), steps=20)
    >>> len(out.losses), out.trace.steps.tolist()[:3], out.diverged, out.test_accuracy > 0.5
    (20, [0, 5, 10], False, True)
    """
    seed = _checks.seed(seed)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a gradcourse.data.Dataset (e.g. data.digits()); got {dataset!r}")
    lr = _checks.number("lr", lr, low=0.0, low_open=True)
    steps = _checks.integer("steps", steps, low=1)
    batch_size = _checks.integer("batch_size", batch_size, low=1)
    every = _checks.integer("every", every, low=1)
    x, y = dataset.x, dataset.y
    if subset is not None:
        subset = _checks.integer("subset", subset, low=batch_size, high=len(x))
        x, y = x[:subset], y[:subset]
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=LOOP_MOMENTUM)
    losses: list[float] = []
    progress = _checks.flag("progress", progress)
    model.train()
    with progress_bar(steps, progress) as bar, Probe(model, every=every) as probe:
        while len(losses) < steps and (not losses or math.isfinite(losses[-1])):
            for xb, yb in loader:  # one epoch
                loss = nn.functional.cross_entropy(model(xb), yb)
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    break  # stop cleanly at the first NaN/Inf
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if bar is not None:
                    bar.update()
                if len(losses) == steps:
                    break
    score = math.nan if not math.isfinite(losses[-1]) else accuracy(model, dataset.x_test, dataset.y_test)
    return Outcome(losses, probe.trace, score, model)


class Sharpened(NamedTuple):
    """What :func:`sharpness_along` measured: the steps, the sharpness before each of them, and the
    loss of every step trained (the same numbers ``fit`` would give)."""

    steps: np.ndarray
    sharpness: np.ndarray
    losses: np.ndarray


def sharpness_along(model: nn.Module, data, *, steps: int, lr: float, at=None, rtol: float = 1e-3) -> Sharpened:
    """Train ``model`` as ``fit(model, data, steps=steps, lr=lr)`` does (full-batch gradient descent,
    no momentum) and measure the sharpness, the largest Hessian eigenvalue of the training loss
    (:func:`~gradcourse.measurements.top_hessian_eigenvalue`), before each step listed in ``at``
    (default: every step). Gradient descent is stable along the sharpest direction only while the
    sharpness is below ``2/lr``: the *edge of stability* (Cohen et al. 2021).

    Plain gradient descent carries nothing from one step to the next but the weights, so training
    in pieces between the measurements is the same run as one ``fit`` (the lessons assert it on
    their losses). Each measurement starts from the previous eigenvector, so it costs a few
    Hessian-vector products. Training stops at a non-finite loss, as ``fit`` does.

    >>> from gradcourse import data, models
    >>> found = sharpness_along(models.mlp(2, 8, activation="tanh", seed=0), data.spirals(64), steps=3, lr=0.1)
    >>> found.steps.tolist(), len(found.losses), bool(found.sharpness[0] > 0)
    ([0, 1, 2], 3, True)
    """
    from .measurements import top_hessian_eigenvalue

    steps = _checks.integer("steps", steps, low=1)
    at = sorted({int(s) for s in (range(steps) if at is None else at) if 0 <= int(s) < steps})
    x, y = _unpack(data)
    x, y = _as_inputs(model, x, "x"), _as_targets(model, y, "y")
    loss_fn = loss_function(y)
    params = [p for p in model.parameters() if p.requires_grad]
    measured, values, losses, vector, done = [], [], [], None, 0
    for step in [*at, steps]:
        if step > done:
            piece = fit(model, (x, y), steps=step - done, lr=lr, probe=False, progress=False)
            losses.extend(piece.losses.tolist())
            done = step
            if piece.diverged_at is not None:
                break
        if step < steps:
            found = top_hessian_eigenvalue(lambda: loss_fn(model(x), y), params, start=vector, rtol=rtol)
            measured.append(step)
            values.append(found.value)
            vector = found.vector
    model.zero_grad(set_to_none=True)
    return Sharpened(np.array(measured), np.array(values, dtype=np.float64), np.array(losses, dtype=np.float64))


def _evaluate(model: nn.Module, loss_fn, classify: bool, x: torch.Tensor, y: torch.Tensor,
              name: str) -> dict[str, float]:
    """Loss (and accuracy) of the trained model on a whole data set, in eval mode, after the last update."""
    with evaluating(model):
        scores = model(x)
        values = {f"{name}_loss": loss_fn(scores, y).item()}
        if classify:
            values[f"{name}_accuracy"] = (scores.argmax(dim=1) == y).float().mean().item()
    return values


def _unpack(data) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError("data must be an (x, y) pair of tensors or a gradcourse.data.Dataset") from None
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if isinstance(y, np.ndarray):
        y = torch.from_numpy(y)
    # Tensors made under torch.inference_mode() cannot take part in training; a copy made here can.
    x = x.clone() if isinstance(x, torch.Tensor) and x.is_inference() else x
    y = y.clone() if isinstance(y, torch.Tensor) and y.is_inference() else y
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("data must be an (x, y) pair of tensors or a gradcourse.data.Dataset; "
                         f"got x: {type(x).__name__}, y: {type(y).__name__}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"data must have as many targets as inputs (>0); got {len(x)} and {len(y)}")
    return x, y


def _optimizer(params, optimizer: str, lr: float, momentum: float, betas, warmup: int, fused: bool = False):
    # foreach=True: one multi-tensor kernel per update term instead of a Python loop over the parameters
    # (torch picks that loop on CPU). Lesson 05's 50-layer BN net (202 parameter tensors) trains about 15 %
    # faster (500 Adam steps: 10.1 -> 8.7 s CPU, one thread, alternating in one process); the updates are
    # bitwise the same (SGD and Adam; tests/test_train.py). Lesson 09's 76-tensor Transformer saves about 1 ms
    # of ~17 ms per Adam step. RAdam's foreach update differs from torch's loop in the last bits (not bitwise, unlike
    # SGD and Adam); only lesson 09 trains with RAdam, where it takes 1.9 against 4.8 ms per update of the 76-tensor
    # Transformer (about 0.6 s of its 200-step run), and its claims were re-measured with it on seeds 0-4, native
    # and portable kernels (tests/test_train.py checks it against the loop up to rounding).
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True)
    elif optimizer == "adam":
        # fused (lesson 09's Transformer, 76 tensors): 0.56 against 2.2 ms per update, not bitwise the same
        opt = (torch.optim.Adam(params, lr=lr, betas=betas, fused=True) if fused
               else torch.optim.Adam(params, lr=lr, betas=betas, foreach=True))
    else:
        opt = torch.optim.RAdam(params, lr=lr, betas=betas, foreach=True)
    # LambdaLR sets lr·factor(0) at once and lr·factor(k) after the k-th scheduler.step().
    schedule = (torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warmup))
                if warmup else None)
    return opt, schedule


def _check_trainable(model: nn.Module, params: list[torch.Tensor], lr: float) -> None:
    """Refuse, with what to do, what torch would otherwise stop with a bare RuntimeError: training with
    gradients switched off, parameters made in inference mode, a learning rate beyond the weights' range."""
    if torch.is_inference_mode_enabled() or not torch.is_grad_enabled():
        block = "torch.inference_mode()" if torch.is_inference_mode_enabled() else "torch.no_grad()"
        raise RuntimeError(f"fit trains the model, which needs gradients, but it was called inside a "
                           f"`with {block}:` block: call fit outside it")
    if any(p.is_inference() for p in params):
        raise ValueError("model was built under torch.inference_mode(), so its parameters cannot be trained: "
                         "build it outside inference mode")
    for dtype in {p.dtype for p in params if p.is_floating_point()}:
        largest = torch.finfo(dtype).max
        if lr >= largest:
            raise ValueError(f"lr must be below {largest:.3g}, the largest number the model's {dtype} weights "
                             f"can hold (the step lr·gradient could not even be computed); got lr={lr:g}. "
                             "Learning rates that train are about 1e-4 to 1 (lesson 02)")


def _betas(betas, optimizer: str) -> tuple[float, float] | None:
    if optimizer == "sgd":
        if betas is not None:
            raise ValueError(f"betas are for optimizer='adam' or 'radam', not 'sgd'; got betas={betas!r}")
        return None
    if betas is None:
        return (0.9, 0.999)
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1); got {betas!r}") from None
    beta1 = _checks.number("betas[0]", beta1, low=0.0)
    beta2 = _checks.number("betas[1]", beta2, low=0.0)
    if beta1 >= 1.0 or beta2 >= 1.0:
        raise ValueError(f"betas must be a pair (beta1, beta2) of numbers in [0, 1); got {betas!r}")
    return (beta1, beta2)


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def _model_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())


def _as_inputs(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """Float inputs in the model's precision (float64 data meets float32 weights in every notebook)."""
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must hold float features (or integer token ids); got dtype {x.dtype}")
    return x.to(_model_dtype(model)) if x.is_floating_point() else x


def _as_targets(model: nn.Module, y: torch.Tensor, name: str) -> torch.Tensor:
    """Integer labels as int64 of shape (n,) (cross-entropy's format); float targets in the model's precision."""
    if y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{name} must hold integer class labels or float regression targets; got dtype {y.dtype}")
    if y.is_floating_point():
        return y.to(_model_dtype(model))
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{name} holds class labels, which count from 0; got the label {int(y.min())}")
    return y.long()


def _first_forward(model: nn.Module, xb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The first forward pass, with a shape or dtype mistake in ``x`` explained instead of torch's message.

    Pre-hooks note which layer runs first and what it receives (registration order need not be call
    order); they are removed before training goes on.
    """
    kinds = (nn.Linear, nn.modules.conv._ConvNd, nn.RNNBase, nn.RNNCellBase, nn.Embedding)
    called = []
    listening = Hooks(*[module.register_forward_pre_hook(
        lambda module, args, name=name: called.append((name, module, args[0] if args else None)))
        for name, module in model.named_modules() if isinstance(module, kinds)])
    with listening:
        try:
            return model(xb)
        except RuntimeError as error:
            if not called or not isinstance(called[0][2], torch.Tensor):
                raise
            problem = _input_problem(*called[0], x)
            if problem is None:
                raise
            raise ValueError(problem) from error


def _input_problem(name: str, layer: nn.Module, received: torch.Tensor, x: torch.Tensor) -> str | None:
    """What is wrong with the input the first layer received, in the learner's words, or None."""
    kind = type(layer).__name__
    first = f"the model's first layer ({name}, {kind})"
    if isinstance(layer, nn.Embedding):
        return f"x holds floats but {first} expects integer token ids" if received.is_floating_point() else None
    if not received.is_floating_point():
        return f"x holds integers (dtype {x.dtype}) but {first} expects float features: pass x.float()"
    expected = getattr(layer, "in_features", None) or getattr(layer, "input_size", None)
    axis, what = -1, "features"
    if isinstance(layer, nn.modules.conv._ConvNd):
        expected, axis, what = layer.in_channels, 1, "channels"
    if expected is None or received.dim() == 0 or received.shape[axis] == expected:
        return None
    if x.dim() >= 2 and x.shape[axis] == received.shape[axis]:
        count = x.shape[axis]  # x's own feature axis reached the layer (perhaps one time step at a time)
        return (f"x has {count} {what if count != 1 else what[:-1]} (shape {tuple(x.shape)}) but {first} "
                f"expects {expected}")
    if received.shape[1:] != x.shape[1:]:  # the model reshaped x before its first layer
        return f"{first} received input of shape {tuple(received.shape)} but expects {expected} {what}"
    return f"x has shape {tuple(x.shape)} but {first} expects {what} in rows: shape (n, {expected})"


def _match_targets(out: torch.Tensor, y: torch.Tensor, yb: torch.Tensor,
                   name: str = "y") -> tuple[torch.Tensor, torch.Tensor]:
    """Check the targets against the model's first output; reshape float targets when only the shape differs."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model must return one tensor of scores or predictions; it returned a "
                         f"{type(out).__name__}")
    scores = tuple(out.shape[1:])
    if not y.is_floating_point():
        if out.dim() < 2 or out.dim() != y.dim() + 1:
            raise ValueError(f"{name} holds integer class labels of shape {tuple(y.shape)}, which needs class "
                             f"scores of shape (n, classes); the model outputs {tuple(out.shape)}")
        if len(y) and int(y.max()) >= out.shape[1]:
            raise ValueError(f"{name} holds class labels up to {int(y.max())} but the model outputs "
                             f"{out.shape[1]} classes (labels 0 to {out.shape[1] - 1})")
        return y, yb
    if tuple(yb.shape[1:]) == scores:
        return y, yb
    if yb[0].numel() == out[0].numel():
        return y.reshape(len(y), *scores), yb.reshape(len(yb), *scores)
    hint = (" For class labels pass integers (y.long())." if y.dim() == 1 and out.dim() == 2 and out.shape[1] > 1
            else "")
    raise ValueError(f"{name} holds float regression targets of shape {tuple(y.shape)} but the model outputs "
                     f"{tuple(out.shape)}: each example needs a target of shape {scores}.{hint}")


def _clipping(clip) -> Clipping | None:
    if clip is None or isinstance(clip, Clipping):
        return clip
    if isinstance(clip, numbers.Real) and not isinstance(clip, (bool, np.bool_)):
        try:
            return clip_norm(float(clip))
        except ValueError as error:
            raise ValueError(f"clip (the gradient-norm threshold): {error}") from None
    raise ValueError(f"clip must be None, a number (norm threshold) or remedies.clip_norm/clip_value(...); "
                     f"got {clip!r}")


def _where(monitor: Probe | None, fallback: str) -> str:
    if monitor is not None and monitor.nonfinite is not None:
        return monitor.nonfinite["layer"]
    return fallback


def progress_bar(total: int, progress: bool | None, desc: str = "training"):
    """A ``tqdm.auto`` bar of ``total`` updates that disappears when done (``progress=None``: shown
    in a notebook kernel only), or a context that does nothing. Use it as a context manager and
    call ``bar.update(1)`` per item when it is a bar.

    >>> with progress_bar(3, False) as bar:
    ...     bar is None
    True
    """
    if progress is None:
        progress = "ipykernel" in sys.modules
    if not progress:
        return contextlib.nullcontext()
    from tqdm.auto import tqdm

    # No explicit disable=: the environment variable TQDM_DISABLE=1 (set by the tests) switches it off.
    return tqdm(total=total, desc=desc, leave=False)
