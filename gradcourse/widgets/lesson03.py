"""Lesson 03's explorer and toys: gradient clipping rescues a diverging run.

:class:`ClippingExplorer` trains lesson 02's exploding patient (a 10-layer ReLU MLP with weights
1.2× He's scale) with and without clipping and shows the loss, the total gradient norm before
clipping and the fraction of clipped steps. :func:`cliff_loss` and :func:`descend` are the 2-D
loss surface with a cliff (Pascanu, Mikolov & Bengio 2013) the lesson descends.

>>> from gradcourse.widgets.lesson03 import ClippingExplorer
>>> result = ClippingExplorer().run(method="norm", threshold=1.0, lr=0.2)
>>> result.values["reference_diverged_at"] is not None, result.values["diverged_at"] is None
(True, True)
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .. import _checks, data, models, plots, remedies
from ..run import Run
from ..train import fit
from .base import Explorer, Param, Result

STEPS = 150
N_POINTS = 256   # the spirals' training points (full batch; lesson 02 used 512)


# -- the patient ---------------------------------------------------------------------------------
def patient(scale: float = 1.2, *, depth: int = 10, seed: int = 0) -> models.MLP:
    """Lesson 02's exploding patient: a ReLU MLP (64 wide) whose weight std is ``scale`` × He's."""
    seed = _checks.seed(seed)
    return models.mlp(depth, 64, activation="relu", init="normal", weight_std=scale * math.sqrt(2.0),
                      seed=seed)


def patient_data(seed: int = 0) -> data.Dataset:
    """The spirals the patient trains on: ``N_POINTS`` training points drawn with ``seed`` (full batch)."""
    return data.cached_spirals(N_POINTS, _checks.seed(seed))


def train_patient(lr: float, clip=None, *, scale: float = 1.2, steps: int = STEPS,
                  probe: bool = False, progress: bool = False, seed: int = 0) -> Run:
    """Train :func:`patient` on the spirals (full batch, SGD) with optional clipping; ``seed``
    draws the weights and the spirals (the lesson uses 0; the tests measure its claims' spread)."""
    seed = _checks.seed(seed)
    return fit(patient(scale, seed=seed), patient_data(seed), steps=steps, lr=lr, clip=clip, probe=probe,
               progress=progress, seed=seed)


@functools.lru_cache(maxsize=16)
def _reference(lr: float) -> Run:
    return train_patient(lr)


@functools.lru_cache(maxsize=32)
def _clipped(lr: float, clip: remedies.Clipping) -> Run:
    """The explorer's clipped run at these settings, trained the first time they are asked for:
    a learner who moves a slider back to a value seen before waits only for the figure (150 steps
    of training are about 0.4 s of the 0.6 s a new value takes on one core). The last 32 are
    kept (a run with its model is about 0.3 MB); like :func:`_reference`'s, they are read-only."""
    return train_patient(lr, clip)


# -- the cliff -----------------------------------------------------------------------------------
CLIFF_START = (-3.0, 2.0)


def cliff_loss(w: torch.Tensor) -> torch.Tensor:
    """A gentle bowl centred at (3, 0) cut by a wall 5 high at x = 1 (a steep sigmoid step):

    ``L(x, y) = 0.1·((x − 3)² + y²) + 5·σ(20·(x − 1))``.

    The lowest points lie at the foot of the wall (x ≈ 0.5–0.8). On the wall's face the gradient
    reaches 5·20/4 = 25, a hundred times the slope of the bowl: a plain gradient step there
    throws the point far back. ``w`` is a tensor of 2 elements (or of shape (..., 2)).

    >>> round(cliff_loss(torch.tensor([3.0, 0.0])).item(), 3)    # beyond the wall: 5 high
    5.0
    """
    x, y = w[..., 0], w[..., 1]
    return 0.1 * ((x - 3) ** 2 + y ** 2) + 5 * torch.sigmoid(20 * (x - 1))


def descend(lr: float = 1.0, steps: int = 60, clip: float | None = None,
            start: tuple[float, float] = CLIFF_START) -> dict:
    """Gradient descent on :func:`cliff_loss` from ``start``: torch autograd gives the gradient,
    ``torch.nn.utils.clip_grad_norm_`` clips it (when ``clip`` is a threshold) on the
    2-element parameter. Returns the path (steps + 1, 2), the losses and the gradient norms
    before clipping.

    >>> wild, tame = descend(clip=None), descend(clip=0.5)
    >>> bool(wild["path"][:, 0].min() < -10 < tame["path"][:, 0].min())
    True
    """
    lr = _checks.number("lr", lr, low=0.0, low_open=True)
    steps = _checks.integer("steps", steps, low=1)
    if clip is not None:
        clip = _checks.number("clip", clip, low=0.0, low_open=True)
    w = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    path, losses, norms = [w.detach().clone()], [], []
    for _ in range(steps):
        w.grad = None
        loss = cliff_loss(w)
        loss.backward()
        losses.append(loss.item())
        if clip is None:
            norms.append(w.grad.norm().item())
        else:
            norms.append(float(torch.nn.utils.clip_grad_norm_([w], clip)))
        with torch.no_grad():
            w -= lr * w.grad
        path.append(w.detach().clone())
    return {"path": torch.stack(path).numpy(), "losses": np.array(losses), "norms": np.array(norms)}


@plots.styled
def cliff_figure(runs: dict[str, dict], *, title: str = "Descending a loss surface with a cliff"):
    """Contours of :func:`cliff_loss` with each named descent path drawn on top."""
    fig, axes = plots.new_figure(2, width=4.8, height=3.6)
    ax = axes[0, 0]
    xs = np.linspace(-6, 5, 600)
    profile = cliff_loss(torch.tensor(np.stack([xs, np.zeros_like(xs)], axis=-1))).numpy()
    ax.plot(xs, profile, color="black")
    ax.set_xlabel("parameter x (at y = 0)")
    ax.set_ylabel("loss")
    ax.set_title("Cross-section: a gentle slope, then a wall")
    ax = axes[0, 1]
    xs, ys = np.linspace(-25, 5, 301), np.linspace(-3, 3, 121)
    grid = torch.tensor(np.stack(np.meshgrid(xs, ys), axis=-1))
    values = cliff_loss(grid).numpy()
    contour = ax.contourf(xs, ys, np.log10(values), levels=20, cmap="Greys")
    fig.colorbar(contour, ax=ax, label="log10 loss")
    ax.axvline(1.0, color="black", lw=0.8, ls="--")
    ax.text(1.3, 2.6, "wall", fontsize="small")
    for i, (name, run) in enumerate(runs.items()):
        path = run["path"]
        ax.plot(path[:, 0], path[:, 1], "o-", ms=3, lw=1, color=plots.COLORS[i], label=name)
    ax.plot(*CLIFF_START, "*", ms=14, color="black", label="start")
    ax.set_xlabel("parameter x")
    ax.set_ylabel("parameter y")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower left")
    return fig


# -- the explorer --------------------------------------------------------------------------------
class ClippingExplorer(Explorer):
    title = "Lesson 03: clipping rescues a diverging run"
    params = {
        "method": Param("norm", options=("norm", "value"), label="clip by"),
        "threshold": Param(1.0, low=0.001, high=100.0, step=0.1, log=True, label="threshold"),
        "lr": Param(0.2, low=0.01, high=2.0, step=0.1, log=True, label="learning rate"),
    }

    def compute(self, method, threshold, lr) -> Result:
        clip = remedies.Clipping(method, threshold)
        reference = _reference(lr)
        # Slider explorer: never a progress bar (self.progress is on only during a manual Run).
        run = _clipped(lr, clip)
        values = {
            "diverged_at": run.diverged_at,
            "reference_diverged_at": reference.diverged_at,
            "final_loss": float(run.losses[-1]),
            "reference_final_loss": float(reference.losses[-1]),
            "clipped_fraction": float(run.clipped.mean()),
            "median_grad_norm": float(np.nanmedian(run.grad_norm_total)),
            "test_accuracy": run.metrics.get("test_accuracy"),
        }
        figure = _figure(reference, run, clip, lr)
        without = (f"diverges at step {reference.diverged_at}" if reference.diverged_at is not None
                   else f"ends at loss {values['reference_final_loss']:.3g}")
        with_clip = (f"diverges at step {run.diverged_at}" if run.diverged_at is not None
                     else f"ends at loss {values['final_loss']:.3g} "
                          f"(test accuracy {values['test_accuracy']:.0%})")
        summary = (f"Without clipping the run {without}; {clip.describe()} it {with_clip}, "
                   f"with {values['clipped_fraction']:.0%} of the steps clipped.")
        return Result(figure=figure, values=values, runs={"no clipping": reference, "clipped": run},
                      summary=summary)


@plots.styled
def _figure(reference: Run, run: Run, clip: remedies.Clipping, lr: float):
    fig, axes = plots.new_figure(2, width=4.8, height=3.4)
    names = {"no clipping": reference, clip.describe(): run}
    plots.draw_loss(axes[0, 0], names, title=f"Loss (lr {lr:g}; ✕ = NaN/Inf)")
    plots.draw_total_grad_norm(axes[0, 1], names, threshold=clip.threshold if clip.method == "norm" else None,
                               title="Total gradient norm")
    axes[0, 1].set_ylabel("‖∇L‖ before clipping (log scale)")
    return fig
