"""Wall time and peak memory of every lesson notebook, executed top to bottom in a fresh kernel.

Run: ``.venv/bin/python benchmarks/bench_notebooks.py``. Each notebook runs in its own kernel
process (nbclient); the kernel's peak RSS is read from the kernel itself at the end of the run.
Budgets (CONTRIBUTING.md): each lesson ≤ 30 s on one core and ≤ 600 MB; the whole course ≤ 150 s.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PEAK_RSS = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"


def measure(path: Path) -> tuple[float, int]:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PEAK_RSS))
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    peak_mb = int(notebook.cells[-1].outputs[0]["text"].strip())
    return seconds, peak_mb


def main() -> str:
    lines = ["### Notebooks (fresh kernel, top to bottom; lessons call gradcourse.start(): 1 thread)", "",
             "| notebook | wall time | kernel peak RSS |", "|---|---|---|"]
    total = 0.0
    for path in NOTEBOOKS:
        seconds, peak_mb = measure(path)
        total += seconds
        lines.append(f"| {path.name} | {seconds:.1f} s | {peak_mb} MB |")
    lines.append(f"| **whole course** | **{total:.1f} s** | |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
