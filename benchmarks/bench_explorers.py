"""Latency of every explorer's ``run()`` with its default parameters (what a slider move costs).

Run: ``.venv/bin/python benchmarks/bench_explorers.py`` (one CPU thread, as on Binder).
Budgets (DESIGN.md): ≤ 0.5 s for an explorer that only probes, ≤ 3 s for one that trains.
"""

from __future__ import annotations

import time

import torch

from gradcourse.widgets import EXPLORERS

REPEATS = 3


def main() -> str:
    torch.set_num_threads(1)
    lines = [f"### Explorer latency (default parameters, best of {REPEATS}, 1 thread)", "",
             "| lesson | explorer | starts on | run() |", "|---|---|---|---|"]
    for lesson, explorer_class in EXPLORERS.items():
        explorer = explorer_class()
        explorer.run()  # warm-up: imports, first allocations
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            explorer.run()
            best = min(best, time.perf_counter() - start)
        trigger = "Run button" if explorer.manual else "slider change"
        lines.append(f"| {lesson} | {explorer_class.__name__} | {trigger} | {best:.2f} s |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
