"""Wall time and peak memory of every lesson notebook, executed top to bottom in a fresh kernel,
with the time of each cell and of the kernel's start.

Run: ``.venv/bin/python benchmarks/bench_notebooks.py [NOTEBOOK ...]`` (default: every lesson).
Each notebook runs in its own kernel process (nbclient); the kernel's peak RSS is read from the
kernel itself at the end of the run, and each cell's time from the kernel's own busy/idle
messages (``record_timing``), so the time between cells (nbclient's round trips) is not a cell's,
and each cell's CPU time from IPython's pre/post_run_cell events (on a loaded machine the CPU time
of a one-thread kernel stays near the quiet wall time, so it is the figure to compare there).
``--start`` instead times a kernel's start in fresh processes (wall and CPU seconds): ``import torch``,
``import gradcourse``, the first backward pass, the first step of a ``torch.optim`` optimizer, which
imports ``torch._dynamo`` (every optimizer does in torch 2.13: ``add_param_group`` and ``zero_grad`` are
wrapped in ``torch._disable_dynamo``, ``step`` in ``_use_grad_for_differentiable``, and no setting skips
the import), then the first step of ``fit`` with its own optimizer and probe.

The machine's speed is timed beside every lesson: a fixed torch workload (:func:`machine_speed`, a bare
training loop of the kind the lessons run) before and after each notebook. On a virtual machine whose speed
drifts (this one's whole-course time moved 162 -> 180 s within 20 minutes, the same commit), the last column
scales each lesson's time to the quickest speed seen in the run, so that two runs, or old and new code, can be
compared; the raw times stay in the table.

Budgets (CONTRIBUTING.md, issue 24): each lesson ≤ 30 s on one core and ≤ 600 MB; the whole
course ≤ 150 s; no cell over 8 s, and a cell over 3 s shows that it is working (a progress bar or
printed lines); a kernel's start ≤ 2 s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PEAK_RSS = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
# Each cell's CPU time, recorded by IPython's pre/post_run_cell events: on a busy machine a cell's
# wall time grows with the load, its CPU time (one thread) stays close to the quiet machine's wall time.
CPU_CLOCK = """
import time as _bench_time
_bench_cpu = []
def _bench_pre(info):
    _bench_cpu.append(-_bench_time.process_time())
def _bench_post(result):
    if _bench_cpu:  # the first post_run_cell is this cell's own, which had no pre_run_cell
        _bench_cpu[-1] += _bench_time.process_time()
get_ipython().events.register("pre_run_cell", _bench_pre)
get_ipython().events.register("post_run_cell", _bench_post)
"""
# The last entry is the report's own cell, still running.
CPU_REPORT = "import json; print(json.dumps(_bench_cpu[:-1]))"
CELL_BUDGET_S, SHOW_PROGRESS_S = 8.0, 3.0


def cell_seconds(cell) -> float | None:
    """A code cell's run time from the kernel's busy and idle messages (``None`` if not recorded)."""
    timing = cell.get("metadata", {}).get("execution", {})
    if "iopub.status.busy" not in timing or "iopub.status.idle" not in timing:
        return None
    busy, idle = (datetime.datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                  for k in ("iopub.status.busy", "iopub.status.idle"))
    return (idle - busy).total_seconds()


def shows_progress(cell) -> bool:
    """Whether a cell gave a sign of life while it ran: a widget (tqdm.auto's bar, an explorer) or
    more than one stream output."""
    outputs = cell.get("outputs", [])
    widgets = any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    return widgets or sum(o.get("output_type") == "stream" for o in outputs) > 1


def measure(path: Path) -> dict:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(CPU_CLOCK))
    notebook.cells.append(nbformat.v4.new_code_cell(CPU_REPORT))
    notebook.cells.append(nbformat.v4.new_code_cell(PEAK_RSS))
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    peak_mb = int(notebook.cells[-1].outputs[0]["text"].strip())
    cpu = json.loads(notebook.cells[-2].outputs[0]["text"].strip())
    lesson = notebook.cells[1:-2]
    code = [i for i, c in enumerate(lesson) if c.cell_type == "code"]
    cells = [(i, cell_seconds(lesson[i]), shows_progress(lesson[i]), cpu_s) for i, cpu_s in zip(code, cpu)]
    cells = [(i, s, p) for i, s, p, _ in cells if s is not None]
    return {"seconds": seconds, "peak_mb": peak_mb, "cells": cells, "cpu_seconds": sum(cpu),
            "cell_cpu": dict(zip(code, cpu))}


def start_times(repeats: int = 5) -> dict[str, tuple[float, float]]:
    """Medians over fresh processes of each part of a kernel's start: (wall, CPU) seconds."""
    child = """
import json, time
clocks = [(time.perf_counter(), time.process_time())]
def mark():
    clocks.append((time.perf_counter(), time.process_time()))
import torch
mark()
import gradcourse
gradcourse.start()
mark()
net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
torch.nn.functional.cross_entropy(net(torch.randn(8, 2)), torch.randint(0, 2, (8,))).backward()
mark()
opt = torch.optim.SGD(net.parameters(), lr=0.1)
opt.step()
mark()
from gradcourse.train import fit
fit(net, (torch.randn(8, 2), torch.randint(0, 2, (8,))), steps=1, lr=0.1, progress=False)
mark()
names = ["import torch", "import gradcourse, start()", "first backward",
         "first torch.optim step (imports torch._dynamo)", "first fit step (SGD, probed)"]
parts = {n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, clocks, clocks[1:])}
parts["kernel start"] = [clocks[5][0] - clocks[0][0], clocks[5][1] - clocks[0][1]]
print(json.dumps(parts))
"""
    runs = [json.loads(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1]) for _ in range(repeats)]
    return {key: (statistics.median(r[key][0] for r in runs), statistics.median(r[key][1] for r in runs))
            for key in runs[0]}


def machine_speed(blocks: int = 5, steps: int = 20) -> float:
    """Milliseconds of this thread's CPU time per step of a fixed workload (the quickest of ``blocks``): a bare
    torch loop training a 10-layer tanh MLP of width 64 on 512 points with SGD, one thread, as the
    lessons' runs do. It takes about 0.5 s; a larger figure means a slower machine at that moment."""
    import torch  # here, not at the top: --start times torch's import in fresh processes

    # plain torch, not gradcourse.models: the yardstick must not move when the package changes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator = torch.Generator().manual_seed(0)
        x, y = torch.randn(512, 2, generator=generator), torch.randint(0, 2, (512,), generator=generator)
        layers = [torch.nn.Linear(2, 64), torch.nn.Tanh()]
        for _ in range(9):
            layers += [torch.nn.Linear(64, 64), torch.nn.Tanh()]
        net = torch.nn.Sequential(*layers, torch.nn.Linear(64, 2))
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        times = []
        for _ in range(blocks + 1):  # the first block warms up (allocations, the optimizer's first step)
            start = time.thread_time()
            for _ in range(steps):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
            times.append((time.thread_time() - start) / steps * 1e3)
        return min(times[1:])
    finally:
        torch.set_num_threads(threads)


def main(paths: list[Path] | None = None) -> str:
    lines = ["### Notebooks (fresh kernel, top to bottom; lessons call gradcourse.start(): 1 thread)", "",
             "| notebook | wall time | cells' CPU time | kernel peak RSS | slowest cells (cell index: seconds) | "
             f"cells over {SHOW_PROGRESS_S:.0f} s with no sign of life | reference step (ms: the machine's speed) |",
             "|---|---|---|---|---|---|---|"]
    speeds, walls = [], []
    before = machine_speed()
    for path in paths or NOTEBOOKS:
        m = measure(path)
        after = machine_speed()
        speeds.append((before + after) / 2)
        walls.append(m["seconds"])
        before = after
        slowest = sorted(m["cells"], key=lambda c: -c[1])[:3]
        silent = [f"c{i}" for i, s, shown in m["cells"] if s > SHOW_PROGRESS_S and not shown]
        lines.append(f"| {path.name} | {m['seconds']:.1f} s | {m['cpu_seconds']:.1f} s | {m['peak_mb']} MB | "
                     + ", ".join(f"c{i}: {s:.1f} (CPU {m['cell_cpu'][i]:.1f})"
                                 + (" **over 8 s**" if s > CELL_BUDGET_S else "") for i, s, _ in slowest)
                     + f" | {', '.join(silent) or 'none'} | {speeds[-1]:.2f} |")
    quickest = min(speeds)
    scaled = sum(w * quickest / s for w, s in zip(walls, speeds))
    lines.append(f"| **whole course** | **{sum(walls):.1f} s** | | | | | {min(speeds):.2f}–{max(speeds):.2f} |")
    lines += ["", f"Scaled to the run's quickest machine speed ({quickest:.2f} ms per reference step): "
              f"the course {scaled:.1f} s (each lesson's wall time × {quickest:.2f} / its speed)."]
    text = "\n".join(lines)
    print(text)
    return text


def start_table() -> str:
    lines = ["| part of a kernel's start (fresh process, median of 5) | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {key} | {wall:.2f} | {cpu:.2f} |" for key, (wall, cpu) in start_times().items()]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="lesson notebooks (default: every lesson)")
    parser.add_argument("--start", action="store_true", help="time a kernel's start instead, part by part")
    args = parser.parse_args()
    if args.start:
        start_table()
    else:
        main([p.resolve() for p in args.notebooks] or None)
