"""Lesson 09 (Transformers): the lesson's figures and its explorer. What they show is measured in
the core, :mod:`gradcourse.transformer_measures` (the collapse of the positions, the attention
logits and entropy, the training recipe :func:`~gradcourse.transformer_measures.experiment`).
"""

from __future__ import annotations

import numpy as np

from .. import models, plots
from ..transformer_measures import CHANCE, Experiment, experiment, ffn_gradients
from .base import Explorer, Param, Result

#: The explorer's default run: long enough for Post-LN with a 100-step warmup to learn the task (by step 133 on
#: seeds 0-4, native and portable kernels) and for the runs without warmup to show where they go, short enough that
#: Run answers within the 3 s budget on one core (300 steps took 3.6 s).
RUN_STEPS = 150

# --- figures ----------------------------------------------------------------------------------------

@plots.styled
def loss_grid(grid: dict[tuple[str, int], Experiment]) -> plots.Figure:
    """2 × 2 training losses: rows Post-LN / Pre-LN, columns without / with warmup."""
    norms = [norm for norm in ("post", "pre") if any(key[0] == norm for key in grid)]   # Post-LN on top
    warmups = sorted({w for _, w in grid})
    fig, axes = plots.new_figure(len(warmups), len(norms), width=4.2, height=2.9, sharex=True, sharey=True)
    for r, norm in enumerate(norms):
        for c, warmup in enumerate(warmups):
            ax, exp = axes[r, c], grid[norm, warmup]
            losses = exp.run.losses
            ax.plot(np.arange(len(losses)), losses, color=plots.COLORS[0 if exp.solved else 1], lw=1)
            ax.axhline(CHANCE, color="grey", ls=":", label="chance, ln 16")
            if warmup:
                ax.axvspan(0, warmup, color="grey", alpha=0.12, label=f"warmup ({warmup} steps)")
            verdict = "solved" if exp.solved else "stuck at chance"
            ax.set_title(f"{norm.capitalize()}-LN, warmup {warmup}: {verdict}", fontsize="medium")
            ax.set_yscale("log")
            if r == len(norms) - 1:
                ax.set_xlabel("training step")
            if c == 0:
                ax.set_ylabel("loss (log scale)")
            ax.legend(fontsize="x-small", loc="lower left")
    fig.suptitle("Reversal task, 6 layers, Adam lr 1e-2: who needs warmup?")
    return fig


@plots.styled
def collapse_figure(experiments: dict[str, Experiment], *,
                    title: str = "Do the positions become identical?") -> plots.Figure:
    """1 − cos between positions over training, log axis; the values that round to 0 are drawn at 1e-16."""
    fig, axes = plots.new_figure(width=6.0)
    ax = axes[0, 0]
    for i, (name, exp) in enumerate(experiments.items()):
        ax.semilogy(np.maximum(exp.collapse, 1e-16), color=plots.COLORS[i], label=name)
    ax.set(xlabel="training step", ylabel="1 − cos between positions (log scale)", title=title)
    ax.legend(fontsize="small")
    return fig


@plots.styled
def gradient_by_layer(profiles: dict[str, np.ndarray], *, title: str) -> plots.Figure:
    """‖∂L/∂W_ffn2‖ by block at initialisation, one line per named profile (log axis)."""
    fig, axes = plots.new_figure(width=6.0)
    ax = axes[0, 0]
    for i, (name, grads) in enumerate(profiles.items()):
        ax.semilogy(np.arange(1, len(grads) + 1), grads, "o-", color=plots.COLORS[i], label=name)
    ax.set(xlabel="block (1 = nearest the input)", ylabel="‖∂L/∂W‖ of the FFN's 2nd matrix (log scale)",
           title=title)
    ax.legend(fontsize="small")
    return fig


@plots.styled
def logits_figure(experiments: dict[str, Experiment]) -> plots.Figure:
    """Left: the largest attention logit over training (log axis). Right: the loss."""
    fig, axes = plots.new_figure(2, width=4.6)
    for i, (name, exp) in enumerate(experiments.items()):
        axes[0, 0].semilogy(exp.max_logit, color=plots.COLORS[i], label=name)
        axes[0, 1].semilogy(exp.run.losses, color=plots.COLORS[i], lw=1, label=name)
    axes[0, 0].set(xlabel="training step", ylabel="largest |q·k/√d| (log scale)",
                   title="Largest attention logit")
    axes[0, 1].axhline(CHANCE, color="grey", ls=":", label="chance, ln 16")
    axes[0, 1].set(xlabel="training step", ylabel="loss (log scale)", title="Training loss")
    for ax in axes[0]:
        ax.legend(fontsize="small")
    return fig


# --- the explorer -----------------------------------------------------------------------------------

class TransformerExplorer(Explorer):
    """Norm placement, depth, learning rate, warmup, qk-norm and optimizer of the reversal
    Transformer; **Run** trains it for :data:`RUN_STEPS` steps (seed 0) and shows the loss, the collapse of the
    positions and the largest attention logit."""

    title = "Transformer on the reversal task: where LayerNorm goes, warmup, qk-norm"
    manual = True
    params = {
        "norm": Param("post", options=("post", "pre"), label="LayerNorm placement"),
        "depth": Param(6, low=1, high=12, label="layers"),
        "lr": Param(1e-2, low=1e-3, high=1e-1, log=True, step=0.25, label="learning rate"),
        "warmup": Param(0, low=0, high=200, step=10, label="warmup steps"),
        "qk_norm": Param(False, label="qk-LayerNorm"),
        "optimizer": Param("adam", options=("adam", "radam"), label="optimizer"),
        "steps": Param(RUN_STEPS, low=0, high=600, step=50, label="training steps (0 = at initialisation only)"),
    }
    #: Moving a control redraws the untrained model at once; the Run button trains.
    preview = {"steps": 0}

    def _displays(self, params: dict, *, preview: bool = False) -> list:
        """The first figure is the untrained model too, as the lesson says ("the explorer first shows
        the untrained model"); only the Run button trains. (Training the default 300 steps on
        display cost every run of the notebook 6 s.)"""
        first, self._drawn = not getattr(self, "_drawn", False), True
        return super()._displays(params, preview=preview or first)

    def compute(self, norm, depth, lr, warmup, qk_norm, optimizer, steps) -> Result:
        if steps == 0:
            grads = ffn_gradients(models.transformer(depth, norm=norm, qk_norm=qk_norm, seed=0))
            name = f"{norm.capitalize()}-LN, {depth} layers{', qk-norm' if qk_norm else ''}"
            return Result(figure=self.at_initialisation(norm, depth, grads, qk_norm=qk_norm),
                          values={"ffn_grad": grads},
                          summary=f"{name}, untrained: the gradient of each "
                                  "block's FFN weight at initialisation. Set the steps and press Run to train.")
        exp = experiment(norm, depth, lr=lr, warmup=warmup, qk_norm=qk_norm, optimizer=optimizer,
                         steps=steps, progress=self.progress)
        values = {"final_loss": exp.final_loss, "solved": exp.solved,
                  "min_collapse": float(exp.collapse.min()), "max_logit": float(exp.max_logit.max())}
        fig = self._figure(exp)
        verdict = "solved the task" if exp.solved else "did not solve the task"
        summary = (f"{exp.label}: {verdict} (mean loss over the last 20 steps {exp.final_loss:.3g}; "
                   f"chance is ln 16 ≈ 2.77). Smallest 1 − cos between positions {values['min_collapse']:.1e}; "
                   f"largest attention logit {values['max_logit']:.3g}.")
        return Result(figure=fig, values=values, runs={"run": exp.run}, summary=summary)

    @staticmethod
    def at_initialisation(norm: str, depth: int, grads: np.ndarray, *, qk_norm: bool = False) -> plots.Figure:
        """The model before any training: its FFN gradient by block, named as :func:`experiment`
        names a run (qk-norm included: it is part of the model the figure shows)."""
        name = f"{norm.capitalize()}-LN, {depth} layers{', qk-norm' if qk_norm else ''}"
        return gradient_by_layer({name: grads}, title=f"{name}: at initialisation")

    @staticmethod
    @plots.styled
    def _figure(exp: Experiment):
        fig, axes = plots.new_figure(3, width=3.6, height=3.0)
        steps = np.arange(len(exp.run.losses))
        axes[0, 0].semilogy(steps, exp.run.losses, lw=1)
        axes[0, 0].axhline(CHANCE, color="grey", ls=":", label="chance, ln 16")
        axes[0, 0].set(xlabel="training step", ylabel="loss (log scale)", title="Training loss")
        axes[0, 0].legend(fontsize="small")
        axes[0, 1].semilogy(np.maximum(exp.collapse, 1e-16), color=plots.COLORS[1])
        axes[0, 1].set(xlabel="training step", ylabel="1 − cos (log scale)", title="Positions alike? (collapse)")
        axes[0, 2].semilogy(exp.max_logit, color=plots.COLORS[2])
        axes[0, 2].set(xlabel="training step", ylabel="largest |logit| (log scale)", title="Attention logits")
        fig.suptitle(exp.label)
        return fig
