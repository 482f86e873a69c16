"""Latency of every explorer with its default parameters: what a control change costs, and the Run button.

Run: ``.venv/bin/python benchmarks/bench_explorers.py`` (one CPU thread, as on Binder).
Budgets (CONTRIBUTING.md): ≤ 0.5 s for an explorer that only probes, ≤ 3 s for one that trains.
Each cell gives the first call in a fresh explorer (what a learner waits for at a setting not seen
before: some explorers cache a data set or a run by its settings) and the best of the repeats.
"""

from __future__ import annotations

import time

import torch

from gradcourse.widgets import EXPLORERS

REPEATS = 3


def _first_and_best(call) -> str:
    """The first call's seconds (imports, first allocations and caches included) and the best repeat's."""
    times = []
    for _ in range(1 + REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return f"{times[0]:.2f} s / {min(times[1:]):.2f} s"


def main() -> str:
    torch.set_num_threads(1)
    lines = [f"### Explorer latency (default parameters, first call / best of {REPEATS} more, 1 thread)", "",
             "A control change redraws with `run()` (slider explorers) or `run_preview()` (explorers that train "
             "behind a Run button: the network at initialisation); the Run button calls `run()`. Both are timed "
             "as the widget does them, the figure's PNG included. Budgets: 0.5 s "
             "for what answers a control, 3 s for training. The first call includes imports and an explorer's "
             "caches (a data set, a run kept by its settings), so it bounds what a learner waits for.", "",
             "| lesson | explorer | a control change | Run button |", "|---|---|---|---|"]
    for lesson, explorer_class in EXPLORERS.items():
        explorer = explorer_class()
        if explorer.manual:
            control = _first_and_best(lambda: explorer._displays({}, preview=True))  # noqa: B023 (called at once)
            button = _first_and_best(lambda: explorer._displays({}))  # noqa: B023
        else:
            control, button = _first_and_best(lambda: explorer._displays({})), "(none)"  # noqa: B023
        lines.append(f"| {lesson} | {explorer_class.__name__} | {control} | {button} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
