"""Per-step cost of ``fit`` (unprobed and probed) beside a bare torch loop of the same model.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fit_overhead.py [--profile NAME]``.

The lessons 01-04 and 07 train small MLPs full batch, 1-3 ms a step, where what the library adds to
each step in Python (fit's bookkeeping, the probe's hooks) can be a large share. For each recipe of
those lessons this times, in one process and alternating so that a busy machine slows each alike:

* ``bare``: forward, loss, backward, ``opt.step()``, ``opt.zero_grad()`` with the optimizer ``fit``
  builds (foreach SGD/Adam), plus the clipping the recipe asks for;
* ``fit``: ``fit(..., probe=False)``;
* ``probed``: ``fit(..., every=N)`` as the lesson calls it.

Each figure is the CPU time (``time.process_time``, one thread) per step of the best (``--median``: the
median) of ``--repeats`` runs, in µs, the three kinds taking turns to go first; ``fit - bare`` is what
fit adds per step. ``--profile NAME`` prints cProfile's top functions of one recipe's probed run instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch
from torch import nn

from gradcourse import data, models
from gradcourse.remedies import clip_norm
from gradcourse.train import fit

# name: (mlp kwargs, fit kwargs as the lesson calls it)
RECIPES = {
    "01 sigmoid 20x64 (c25/c35)": (dict(depth=20, width=64, activation="sigmoid", seed=0),
                                   dict(steps=150, lr=0.01, momentum=0.9, every=10)),
    "03 relu 10x64 clip (c10)": (dict(depth=10, width=64, activation="relu", init="normal", weight_std=1.2 * 2 ** 0.5,
                                      seed=0),
                                 dict(steps=150, lr=0.2, clip=clip_norm(0.1), every=10)),
    "04 sigmoid 10x32 BN clip (c22)": (dict(depth=10, width=32, activation="sigmoid", batchnorm=True, seed=0),
                                       dict(steps=400, lr=0.1, momentum=0.9, clip=1.0, every=10)),
    "07 patient A 20x32 (c16)": (dict(depth=20, width=32, activation="sigmoid", init="default", seed=0),
                                 dict(steps=100, lr=0.1, every=11)),
    "07 patient D adam 6x32": (dict(depth=6, width=32, activation="relu", init="kaiming", seed=0),
                               dict(steps=100, lr=0.3, optimizer="adam", every=11)),
}


def bare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, momentum: float = 0.0,
         optimizer: str = "sgd", clip=None, **_) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=lr, foreach=True) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True))
    threshold = getattr(clip, "threshold", clip)
    losses = []
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if threshold is not None:
            nn.utils.clip_grad_norm_(params, threshold)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return torch.stack(losses).tolist()


def per_step(kind: str, model_kwargs: dict, fit_kwargs: dict, spirals) -> float:
    model = models.mlp(**model_kwargs)
    start = time.process_time()
    if kind == "bare":
        bare(model, spirals.x, spirals.y, **fit_kwargs)
    else:
        fit(model, spirals, progress=False, **({**fit_kwargs, "probe": False} if kind == "fit" else fit_kwargs))
    return (time.process_time() - start) / fit_kwargs["steps"] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", help="a recipe name's prefix: cProfile its probed fit")
    parser.add_argument("--median", action="store_true", help="the median of the repeats instead of the best")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spirals = data.spirals(256, seed=0)
    fit(models.mlp(2, 4), spirals, steps=2, lr=0.1, progress=False)  # torch._dynamo's import, once
    if args.profile:
        name = next(n for n in RECIPES if n.startswith(args.profile))
        model_kwargs, fit_kwargs = RECIPES[name]
        for kind in ("fit", "probed"):
            profile = cProfile.Profile()
            profile.enable()
            per_step(kind, model_kwargs, fit_kwargs, spirals)
            profile.disable()
            print(f"== {name}: {kind}")
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    header = ["bare", "fit", "probed", "fit-bare", "probed-bare"]
    print(f"{'recipe':32s} " + " ".join(f"{h:>11s}" for h in header) + "  (CPU µs per step)")
    for name, (model_kwargs, fit_kwargs) in RECIPES.items():
        times = {k: [] for k in ("bare", "fit", "probed")}
        for repeat in range(args.repeats):
            kinds = list(times)
            for kind in kinds[repeat % 3:] + kinds[:repeat % 3]:  # each kind goes first in turn
                times[kind].append(per_step(kind, model_kwargs, fit_kwargs, spirals))
        pick = statistics.median if args.median else min
        b, f, p = (pick(times[k]) for k in ("bare", "fit", "probed"))
        print(f"{name:32s} " + " ".join(f"{v:11.0f}" for v in (b, f, p, f - b, p - b)), flush=True)


if __name__ == "__main__":
    main()
