"""What lesson 09 measures on the small Transformer encoder of :mod:`gradcourse.encoder`, and the
lesson's training recipe: how alike the positions' representations become (:func:`collapse`), how
sharp the attention is (:func:`attention_entropy` from the logits, :func:`weights_entropy` from the
attention weights), :class:`Watch`, which records both and the largest attention logit at every
training step, and :func:`experiment`, one run of the reversal task under a Watch. Beside them,
the measurements at initialisation: the FFN gradient by block, the representation the head reads,
and how far a small perturbation of the weights moves the output.

>>> exp = experiment("pre", depth=2, steps=20, seed=0)
>>> len(exp.collapse) == len(exp.max_logit) == len(exp.run.losses) == 20
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import _checks, data, models, train
from .hooks import Hooks
from .measurements import norms
from .run import Run

LR = 1e-2
BETAS = (0.9, 0.98)
STEPS = 300
BATCH = 32
#: The cross-entropy of a uniform guess over 16 tokens: a model that ignores its input.
CHANCE = data.REVERSAL_CHANCE_LOSS
#: A run counts as solved when its mean loss over the last 20 steps is below this.
SOLVED_BELOW = 0.5


def task() -> data.Dataset:
    """The lesson's data: 1024 training and 256 held-out sequences of 8 tokens (vocabulary 16) and their
    reversal. (:func:`experiment` reads only the training losses; ``evaluate=True`` has ``fit`` measure the trained
    model on both whole sets too. More sequences would cost time, not insight.)"""
    return data.reversal(1024, seed=0, n_test=256)


def collapse(hidden: torch.Tensor) -> float:
    """How different the positions of a sequence are: 1 − cos between the representations of two
    distinct positions, averaged over pairs and over the batch. ``hidden`` is ``(batch, seq_len, D)``.

    Computed in float64 from the unit vectors' distances to their mean, Σ_{i≠j} ½‖u_i − u_j‖² =
    T·Σ_i ‖u_i − ū‖², which equals the sum of 1 − cos over pairs but does not round to 0 when the
    vectors agree to 7 digits (float32's 1 − cos would).

    >>> round(collapse(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])), 12)     # orthogonal: cos 0
    1.0
    >>> collapse(torch.tensor([[[1.0, 2.0], [2.0, 4.0]]]))                 # parallel: cos 1
    0.0
    """
    if hidden.dim() < 2 or hidden.shape[1] < 2:
        raise ValueError(f"hidden must hold at least 2 positions; got shape {tuple(hidden.shape)}")
    u = nn.functional.normalize(hidden.detach().double(), dim=-1)
    spread = (u - u.mean(dim=1, keepdim=True)).pow(2).sum(dim=(1, 2))    # (batch,): T·Σ_i‖u_i − ū‖² / T
    return float(spread.mean() / (u.shape[1] - 1))


def attention_entropy(logits: torch.Tensor) -> float:
    """Mean entropy (nats) of the attention weights softmax(logits) over the last axis: ln T when
    a position attends evenly to all T, 0 when it looks at a single one.

    >>> round(attention_entropy(torch.zeros(1, 1, 8, 8)), 4) == round(float(np.log(8)), 4)
    True
    """
    # H = −Σ p log p with p = e/s, e = exp(z), z = logits − max: H = log s − Σ e·z / s. Written out because
    # torch's (log_)softmax over a last axis of 8 is several times slower on CPU than these few ops.
    z = logits - logits.amax(-1, keepdim=True)
    e = z.exp()
    total = e.sum(-1)
    return float((total.log() - (e * z).sum(-1) / total).mean())


def weights_entropy(weights: torch.Tensor) -> float:
    """:func:`attention_entropy` from the attention weights themselves (each row sums to 1 over the last
    axis), as the forward pass computed them: the mean over rows of −Σ p ln p, with 0 ln 0 = 0. The
    :class:`Watch` reads it at every training step: three operations on weights it already has instead of
    ten on the logits (lesson 09's 6-block step: 0.27 -> 0.12 ms).

    >>> round(weights_entropy(torch.full((1, 1, 8, 8), 1 / 8)), 4) == round(float(np.log(8)), 4)
    True
    >>> weights_entropy(torch.eye(8)) == 0              # each position looks at a single one: 0 nats
    True
    """
    # clamp_min keeps ln 0 = −inf (a weight that underflowed) from making 0 · ln 0 a NaN: 0 · ln(1e-45) = 0
    return float(-(weights * weights.clamp_min(1e-45).log()).sum() / (weights.numel() // weights.shape[-1]))


class Watch:
    """Hooks on a :class:`~gradcourse.encoder.Transformer` that record, at every training
    forward pass (gradients enabled), the :func:`collapse` of the representation the head reads,
    the largest |attention logit| over all blocks and heads, and the mean attention entropy.
    A context manager, like :class:`~gradcourse.probes.Probe`; it removes its hooks on exit.

    >>> net = models.transformer(2, seed=0)
    >>> with Watch(net) as watch:
    ...     _ = net(torch.randint(0, 16, (4, 8)))
    >>> len(watch.collapse), net.head._forward_pre_hooks
    (1, OrderedDict())
    """

    def __init__(self, model: nn.Module):
        if not hasattr(model, "attention_logits") or not hasattr(model, "head"):
            raise ValueError("model must be a models.transformer(...)")
        self.model = model
        self.collapse: list[float] = []
        self.max_logit: list[float] = []
        self.entropy: list[float] = []
        self._hooks = Hooks()

    def __enter__(self) -> Watch:
        self._hooks.extend([self.model.head.register_forward_pre_hook(self._on_head),
                            self.model.register_forward_hook(self._on_output)])
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.remove()

    def _on_head(self, module, args) -> None:
        if torch.is_grad_enabled():
            self.collapse.append(collapse(args[0]))

    def _on_output(self, module, args, output) -> None:
        if torch.is_grad_enabled():
            logits = torch.stack(self.model.attention_logits())      # (blocks, batch, heads, T, T)
            self.max_logit.append(float(logits.abs().max()))
            self.entropy.append(weights_entropy(torch.stack(self.model.attention_weights())))


@dataclass
class Experiment:
    """One training run of the lesson and what :class:`Watch` saw, one value per step."""

    run: Run
    collapse: np.ndarray
    max_logit: np.ndarray
    entropy: np.ndarray
    label: str = ""

    @property
    def final_loss(self) -> float:
        """Mean loss over the last 20 steps (one batch's loss is noisy)."""
        return float(np.mean(self.run.losses[-20:]))

    @property
    def solved(self) -> bool:
        return self.final_loss < SOLVED_BELOW


def experiment(norm: str = "post", depth: int = 6, *, lr: float = LR, warmup: int = 0, qk_norm: bool = False,
               deepnorm: bool = False, optimizer: str = "adam", steps: int = STEPS, seed: int = 0,
               width: int = 32, batch: int = BATCH, probe: bool = False, every: int = 10,
               progress: bool | None = False, evaluate: bool = False) -> Experiment:
    """Build ``models.transformer(depth, norm=..., seed=seed)`` and train it on :func:`task` with
    ``fit`` (Adam, fused, or RAdam, betas (0.9, 0.98), batches of 32 drawn with ``seed``, linear
    ``warmup``) under a :class:`Watch`; ``probe=True`` adds the course's Probe, which records every
    ``every``-th step (each recorded step costs about a training step more; lesson 09's grid, probed every 50th
    step, records steps 0 and 50 of its 60-step run and 0, 50 and 100 of its 150-step one; section 3 reads steps 0
    and 50).
    ``width`` (the model's D) and ``batch`` make a cheaper run where a claim holds at a smaller size.
    The run's ``metrics`` hold the last batch's ``final_loss`` and the Watch's ``collapse`` and
    ``max_attention_logit`` per step, which :func:`gradcourse.diagnose` reads; ``fit``'s evaluation of the
    trained model on the whole training and held-out sets, which the lesson never reads (about 60 ms a run at
    6 layers), only with ``evaluate=True``."""
    seed = _checks.seed(seed)
    model = models.transformer(depth, width, norm=norm, qk_norm=qk_norm, deepnorm=deepnorm, seed=seed)
    with Watch(model) as watch:
        run = train.fit(model, task(), steps=steps, lr=lr, optimizer=optimizer, betas=BETAS, warmup=warmup,
                        batch_size=batch, seed=seed, probe=probe, every=every, progress=progress,
                        fused=optimizer == "adam", evaluate=evaluate)
    # the run carries what the Watch saw, so the gradient doctor can name collapse and logit growth
    run.metrics.update(collapse=list(watch.collapse), max_attention_logit=list(watch.max_logit))
    label = (f"{'DeepNorm ' if deepnorm else ''}{norm.capitalize()}-LN, {depth} layers"
             f"{f', width {width}' if width != 32 else ''}"
             f"{', qk-norm' if qk_norm else ''}, {optimizer}, lr {lr:g}, warmup {warmup}")
    return Experiment(run, np.array(watch.collapse), np.array(watch.max_logit), np.array(watch.entropy), label)


# --- measurements at initialisation ---------------------------------------------------------------

def ffn_gradients(model: nn.Module, *, batch: int = 64) -> np.ndarray:
    """‖∂L/∂W‖ of every block's second FFN matrix (``ffn2``) at initialisation, front to back:
    one forward/backward pass on the first ``batch`` training sequences, no update, the model's
    ``.grad`` untouched (Xiong et al. 2020, Fig. 3, measure the same weight). The norms are the
    Probe's (:func:`~gradcourse.measurements.norms`, in float64); the backward pass computes the
    gradient of these weights only, not of the others (48 blocks: about a third less time than the
    probed pass it replaces, the same values bitwise)."""
    batch = _checks.integer("batch", batch, low=1, high=4096)
    ds = task()
    weights = [block.ffn2.weight for block in model.blocks]
    loss = nn.functional.cross_entropy(model(ds.x[:batch]), ds.y[:batch])
    return norms(torch.autograd.grad(loss, weights)).numpy()


def representation_at_init(model: nn.Module, *, batch: int = 64) -> torch.Tensor:
    """The representation the head reads, ``(batch, seq_len, D)``, for the first training sequences."""
    store = {}
    with Hooks(model.head.register_forward_pre_hook(lambda module, args: store.__setitem__("h", args[0]))), \
            torch.no_grad():
        model(task().x[:batch])
    return store["h"]


def perturbation_change(model: nn.Module, *, size: float = 1e-3, seed: int = 0, batch: int = 64) -> float:
    """Relative change of the output logits when every Linear weight moves by ±``size`` (random
    signs drawn with ``seed``): ‖f(W + δ) − f(W)‖ / ‖f(W)‖. The model is restored afterwards.
    Liu et al. (2020) trace Post-LN's trouble to this amplification of small updates."""
    seed = _checks.seed(seed)
    x = task().x[:batch]
    generator = torch.Generator().manual_seed(seed)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        before = model(x)
        saved = [w.clone() for w in weights]
        for w in weights:
            w.add_(size * (torch.randint(0, 2, w.shape, generator=generator) * 2 - 1))
        after = model(x)
        for w, original in zip(weights, saved):
            w.copy_(original)                      # exactly as it was ((w + δ) − δ can differ by rounding)
    return float((after - before).norm() / before.norm())
