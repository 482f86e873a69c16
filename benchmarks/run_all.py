"""Run every benchmark and write benchmarks/RESULTS.md (machine, command, figures).

Run: ``make bench`` (or ``.venv/bin/python benchmarks/run_all.py``).
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_explorers  # noqa: E402
import bench_notebooks  # noqa: E402
import bench_probes  # noqa: E402
import torch  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}; "
            f"commit {commit or 'unknown'}; {datetime.date.today().isoformat()}")


def main() -> None:
    sections = [bench_probes.main(), bench_explorers.main(), bench_notebooks.main(), bench_notebooks.start_table()]
    text = "\n\n".join([
        "# Benchmark results",
        f"Machine: {machine()}.",
        "Command: `make bench` (= `.venv/bin/python benchmarks/run_all.py`). Timings are best-of-N on one "
        "thread; other processes on the machine add noise, so compare ratios measured in the same run.",
        *sections,
    ])
    out = Path(__file__).resolve().parent / "RESULTS.md"
    out.write_text(text + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
