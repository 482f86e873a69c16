"""Cost of the probes: a training step bare vs with every instrument on, and memory over a long run.

Run: ``.venv/bin/python benchmarks/bench_probes.py`` (one CPU thread, as on Binder).
Prints a Markdown table; ``run_all.py`` copies it into RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

from gradcourse import data, models
from gradcourse.train import fit

STEPS = 100
REPEATS = 5


def step_time(make_model, dataset, **fit_kwargs) -> float:
    """Best-of-REPEATS seconds per training step (best-of filters out the other core's noise)."""
    best = float("inf")
    for _ in range(REPEATS):
        model = make_model()
        start = time.perf_counter()
        fit(model, dataset, steps=STEPS, progress=False, **fit_kwargs)
        best = min(best, (time.perf_counter() - start) / STEPS)
    return best


def overhead_rows() -> list[tuple[str, float, float, float]]:
    cases = {
        "MLP 20×64, sigmoid, 512 points": (
            lambda: models.mlp(20, 64, activation="sigmoid", seed=0), data.spirals(512, seed=0),
            dict(lr=0.1)),
        "MLP 20×64, ReLU + He, 512 points": (
            lambda: models.mlp(20, 64, activation="relu", init="kaiming", seed=0), data.spirals(512, seed=0),
            dict(lr=0.01)),
        "LSTM 32, seq_len 50, batch 64": (
            lambda: models.sequence_model("lstm", 32, seed=0), data.adding_problem(50, 64, seed=0),
            dict(lr=1e-2, optimizer="adam")),
    }
    rows = []
    for name, (make, dataset, kwargs) in cases.items():
        step_time(make, dataset, probe=False, **kwargs)  # warm-up
        bare = step_time(make, dataset, probe=False, **kwargs)
        every1 = step_time(make, dataset, probe=True, every=1, **kwargs)
        every10 = step_time(make, dataset, probe=True, every=10, **kwargs)
        rows.append((name, bare, every1, every10))
    return rows


MEMORY_CHILD = """
import json, resource, sys, torch
from gradcourse import data, models
from gradcourse.train import fit
torch.set_num_threads(1)
steps, probe = int(sys.argv[1]), sys.argv[2] == "probe"
run = fit(models.mlp(20, 64, activation="sigmoid", seed=0), data.spirals(512, seed=0), steps=steps,
          lr=0.1, every=1, probe=probe, progress=False)
trace_bytes = sum(a.nbytes for a in run.trace.to_arrays()[0].values()) if probe else 0
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "records": len(run.trace.steps) if probe else 0, "trace_mb": trace_bytes / 2**20}))
"""


def memory_rows() -> list[tuple[int, dict, dict]]:
    """Peak RSS of a fresh process training bare and probed, at two run lengths."""
    rows = []
    for steps in (500, 2000):
        measured = []
        for mode in ("bare", "probe"):
            out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(steps), mode],
                                 capture_output=True, text=True, check=True).stdout
            measured.append(json.loads(out.strip().splitlines()[-1]))
        rows.append((steps, *measured))
    return rows


def main() -> str:
    torch.set_num_threads(1)
    lines = ["### Probe overhead (seconds per training step, best of "
             f"{REPEATS} × {STEPS} steps, 1 thread)", "",
             "| model | bare | every=1 | ratio | every=10 | ratio |", "|---|---|---|---|---|---|"]
    for name, bare, every1, every10 in overhead_rows():
        lines.append(f"| {name} | {bare * 1e3:.2f} ms | {every1 * 1e3:.2f} ms | {every1 / bare:.2f}× "
                     f"| {every10 * 1e3:.2f} ms | {every10 / bare:.2f}× |")
    lines += ["", "### Memory of a probed run (MLP 20×64 sigmoid, every=1, max_records=1000)", "",
              "| steps | peak RSS bare | peak RSS probed | records kept | trace arrays |",
              "|---|---|---|---|---|"]
    for steps, bare, probed in memory_rows():
        lines.append(f"| {steps} | {bare['rss_mb']:.0f} MB | {probed['rss_mb']:.0f} MB | {probed['records']} "
                     f"| {probed['trace_mb']:.2f} MB |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
