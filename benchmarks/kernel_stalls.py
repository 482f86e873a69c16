"""Count notebook cells whose execute_reply a kernel client misses until its timeout.

Displaying an ipywidgets Output capture (``with output:``, as ``interactive_output`` does) while a
cell runs makes a client that executes notebooks (nbclient, ``nbconvert --execute``, Voilà) now and
then miss the cell's ``execute_reply``: the kernel is idle, the reply comes through only when the
client's wait times out. Measured here (2-core AMD EPYC, load 9-12) by displaying lesson 01's
explorer 40 times per run: 9 of 80 cells waited out the whole 8 s timeout with the explorers as
they were; the same with ipykernel 6.31 in place of 7.4 (5 of 200 cells of a bare Output capture,
against 3 of 200 with 7.4) and with pyzmq 26.4 in place of 27.3 (5 of 200); 0 of 200 once the
explorers drew their first figure without a capture (``widgets/base.py``, ``_View._first``).

Run: ``.venv/bin/python benchmarks/kernel_stalls.py --display 01_sigmoid_saturation --cells 40``
(one notebook of 40 cells, each displaying that lesson's explorer), or with notebook paths, or with
none for every lesson. ``--load N`` keeps N busy processes spinning beside the kernels;
``--overlay DIR`` puts DIR first on the kernel's ``PYTHONPATH`` (e.g. another ipykernel installed
with ``pip install --target DIR --no-deps ipykernel==6.31.0 nest_asyncio``). A cell counts as stalled
when it takes at least ``--cell-timeout`` seconds, whether or not the client then raises.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VERSION = "import ipykernel; print(ipykernel.__version__)"


def _spin() -> None:
    while True:
        pass


def display_notebook(lesson: str, cells: int) -> nbformat.NotebookNode:
    """A notebook of ``cells`` cells, each displaying ``lesson``'s explorer."""
    source = f"from gradcourse.widgets import EXPLORERS\nEXPLORERS[{lesson!r}]()"
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for _ in range(cells)])


def execute(notebook: nbformat.NotebookNode, folder: Path, cell_timeout: int) -> tuple[str, float, str]:
    """Run one notebook; return (outcome, seconds, ipykernel version of its kernel). The outcome
    counts the cells that took the whole timeout (a missed reply) even when the client went on."""
    notebook.cells.insert(0, nbformat.v4.new_code_cell(VERSION))
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    waited: list[float] = []
    execute_cell = client.async_execute_cell

    async def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return await execute_cell(*args, **kwargs)
        finally:
            waited.append(time.perf_counter() - begin)

    client.async_execute_cell = timed
    start = time.perf_counter()
    try:
        client.execute()
        late = sum(w >= cell_timeout for w in waited)
        outcome = f"stall ({late} of {len(waited)} cells waited {cell_timeout} s)" if late else "ok"
    except CellTimeoutError:
        outcome = "stall"
    except DeadKernelError:
        outcome = "dead"
    except Exception as error:  # a failing assert is not a stall: report it and go on
        outcome = f"error ({type(error).__name__})"
    version = "".join(o.get("text", "") for o in notebook.cells[0].get("outputs", [])).strip() or "?"
    return outcome, time.perf_counter() - start, version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="times every notebook is executed")
    parser.add_argument("--load", type=int, default=0, help="busy processes spinning beside the kernels")
    parser.add_argument("--overlay", default="", help="directory put first on the kernel's PYTHONPATH")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds before a cell counts as stalled")
    parser.add_argument("--display", default="", help="a lesson (e.g. 01_sigmoid_saturation): execute a notebook "
                        "whose cells each display its explorer, instead of notebook files")
    parser.add_argument("--cells", type=int, default=40, help="cells of the --display notebook")
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to execute (default: every lesson)")
    args = parser.parse_args()
    if args.overlay:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (args.overlay, os.environ.get("PYTHONPATH")) if p)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for s in spinners:
        s.start()
    counts: dict[str, int] = {}
    try:
        for r in range(args.rounds):
            jobs = ([(f"{args.display} x{args.cells}", lambda: display_notebook(args.display, args.cells), ROOT)]
                    if args.display else
                    [(p.name, lambda p=p: nbformat.read(p, as_version=4), p.resolve().parent)
                     for p in args.notebooks or NOTEBOOKS])
            for name, make, folder in jobs:
                outcome, seconds, version = execute(make(), folder, args.cell_timeout)
                counts[outcome] = counts.get(outcome, 0) + 1
                print(f"round {r + 1} {name}: {outcome} in {seconds:.1f} s (ipykernel {version}, "
                      f"load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        for s in spinners:
            s.terminate()
    total = sum(counts.values())
    print(f"{total} executions, {args.load} busy processes beside them: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
