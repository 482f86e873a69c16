"""gradcourse: the helper package of a course on vanishing and exploding gradients.

>>> import gradcourse
>>> gradcourse.start(seed=0)      # one thread, seeded: the numbers in the lessons are reproducible
0
"""

from __future__ import annotations

import torch

from . import _checks
from .doctor import Diagnosis, diagnose  # noqa: F401  (re-exported: the gradient doctor, lesson 07)

__version__ = "0.1.0"


def start(seed: int = 0, *, threads: int = 1) -> int:
    """Prepare a lesson: seed torch's global generator, use ``threads`` CPU threads, and let the
    notebook show the course's figures (:func:`gradcourse.plots.show_figures_inline`).

    One thread is the default because the course's budgets are set for one core (Binder gives
    one) and because a thread count changes how sums are split, and so their last digits.

    The same seed gives the same numbers on the same machine. Another computer may print other
    last digits: torch picks its CPU kernels by what the processor offers (AVX-512, AVX2, NEON or
    portable code), and rounding that differs at step 1 is another trajectory by step 200. The
    conclusions, and the lessons' asserts, hold on every machine: their margins are measured over
    seeds and over kernels. Returns the seed.
    """
    seed = _checks.seed(seed)
    threads = _checks.integer("threads", threads, low=1)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    from .plots import show_figures_inline  # matplotlib only once a lesson starts

    show_figures_inline()
    return seed
