"""Latency of every explorer with its default parameters: what a control change costs, and the Run button.

Run: ``.venv/bin/python benchmarks/bench_explorers.py`` (one CPU thread, as on Binder).
Budgets (CONTRIBUTING.md): ≤ 0.5 s for an explorer that only probes, ≤ 3 s for one that trains.
"""

from __future__ import annotations

import time

import torch

from gradcourse.widgets import EXPLORERS

REPEATS = 3


def _best(call) -> float:
    call()  # warm-up: imports, first allocations, caches
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> str:
    torch.set_num_threads(1)
    lines = [f"### Explorer latency (default parameters, best of {REPEATS}, 1 thread)", "",
             "A control change redraws with `run()` (slider explorers) or `run_preview()` (explorers that train "
             "behind a Run button: the network at initialisation); the Run button calls `run()`. Budgets: 0.5 s "
             "for what answers a control, 3 s for training.", "",
             "| lesson | explorer | a control change | Run button |", "|---|---|---|---|"]
    for lesson, explorer_class in EXPLORERS.items():
        explorer = explorer_class()
        if explorer.manual:
            control, button = f"{_best(explorer.run_preview):.2f} s", f"{_best(explorer.run):.2f} s"
        else:
            control, button = f"{_best(explorer.run):.2f} s", "(none)"
        lines.append(f"| {lesson} | {explorer_class.__name__} | {control} | {button} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
