"""Latency of every explorer with its default parameters: what a control change costs, and the Run button.

Run: ``.venv/bin/python benchmarks/bench_explorers.py`` (one CPU thread, as on Binder).
Budgets (CONTRIBUTING.md): ≤ 0.5 s for an explorer that only probes, ≤ 3 s for one that trains.
Each cell gives the first call in a fresh explorer (what a learner waits for at a setting not seen
before: some explorers cache a data set or a run by its settings) and the best of the repeats. The
repeats ask for the same setting again, so where an explorer keeps its runs they time a return to a
setting seen before; the column "a new setting" times what a slider explorer's control change costs
once the process is warm: its first slider moved to the neighbouring positions (the median of three),
each never drawn before.
"""

from __future__ import annotations

import statistics
import time

import torch

from gradcourse.widgets import EXPLORERS, Param

REPEATS = 3


def _first_and_best(call) -> str:
    """The first call's seconds (imports, first allocations and caches included) and the best repeat's."""
    times = []
    for _ in range(1 + REPEATS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return f"{times[0]:.2f} s / {min(times[1:]):.2f} s"


def _neighbours(spec: Param, count: int = REPEATS) -> list:
    """The slider positions next to the default (upwards, or downwards where the range ends)."""
    step = spec.slider_step  # the widget's own step (a log slider's in decades)
    values = []
    for direction in (1, -1):
        for k in range(1, count + 1):
            value = (spec.default * 10 ** (direction * k * step) if spec.log
                     else spec.default + direction * k * step)
            if spec.low <= value <= spec.high:
                values.append(value)
        if len(values) == count:
            return values
        values = []
    return values


def _new_settings(explorer) -> str:
    """Median seconds of a control change to settings not drawn before: the first slider's neighbours."""
    sliders = [(name, spec) for name, spec in explorer.params.items()
               if spec.options is None and not isinstance(spec.default, bool) and spec.low is not None]
    if not sliders:
        return "(no slider)"
    name, spec = sliders[0]
    times = []
    for value in _neighbours(spec):
        start = time.perf_counter()
        explorer._displays({name: value})
        times.append(time.perf_counter() - start)
    return f"{statistics.median(times):.2f} s ({name})" if times else "(no neighbour in range)"


def main() -> str:
    torch.set_num_threads(1)
    lines = [f"### Explorer latency (default parameters, first call / best of {REPEATS} more, 1 thread)", "",
             "A control change redraws with `run()` (slider explorers) or `run_preview()` (explorers that train "
             "behind a Run button: the network at initialisation); the Run button calls `run()`. Both are timed "
             "as the widget does them, the figure's PNG included. Budgets: 0.5 s "
             "for what answers a control, 3 s for training. The first call includes imports and an explorer's "
             "caches (a data set, a run kept by its settings), so it bounds what a learner waits for; the repeats "
             "ask for the same setting (a return to it, where an explorer keeps its runs). A new setting: a slider "
             "explorer's first slider moved to three neighbouring positions not drawn before (median), the "
             "process warm.", "",
             "| lesson | explorer | a control change | a new setting | Run button |", "|---|---|---|---|---|"]
    for lesson, explorer_class in EXPLORERS.items():
        explorer = explorer_class()
        if explorer.manual:
            control = _first_and_best(lambda: explorer._displays({}, preview=True))  # noqa: B023 (called at once)
            button = _first_and_best(lambda: explorer._displays({}))  # noqa: B023
            new = "(a Run explorer)"
        else:
            control, button = _first_and_best(lambda: explorer._displays({})), "(none)"  # noqa: B023
            new = _new_settings(explorer)
        lines.append(f"| {lesson} | {explorer_class.__name__} | {control} | {new} | {button} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
