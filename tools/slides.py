"""Set the slide metadata of the lessons from their structure: ``python tools/slides.py [NOTEBOOK ...]``.

With no argument it updates every ``notebooks/[0-9][0-9]_*.ipynb`` in place. Each cell's
``metadata.slideshow.slide_type`` (what JupyterLab's property inspector calls "Slide Type",
and what jupyterlab-rise's "Render as slides" reads) is derived from the cell, so the talk
follows the lesson:

- a markdown cell that opens with a level-1 or level-2 heading (``#``, ``##``) starts a **slide**;
- one that opens with a level-3 heading or deeper (``###``) starts a **subslide** (reveal.js
  shows it below the slide it belongs to), and so does prose that follows code (the reading of a
  figure gets a subslide of its own instead of running off the bottom of the screen);
- cells tagged ``instructor`` or ``solution``, markdown cells holding a ``<details>`` solution,
  and the setup cell (the first code cell) are **skip**ped: they stay in the notebook, not on screen;
- the output of an exercise check (a code cell calling ``exercises.<check>(...)``) comes in as a
  **fragment**, after the learner has had a moment to think;
- everything else is ``-``: it continues the current slide.

The notebook's ``metadata.rise`` gets ``scroll: true`` so that a tall figure can be scrolled on
its slide. The tool is idempotent (a second run changes nothing) and touches nothing but that
metadata, so it can be re-run after any edit of a lesson: ``make slides``. ``--check`` changes no
file and exits 1 if a notebook's metadata is not what the rules give (tests/test_slides.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSON_GLOB = "[0-9][0-9]_*.ipynb"
SLIDE_TYPES = ("slide", "subslide", "fragment", "skip", "notes", "-")

HEADING = re.compile(r"\A\s*(#{1,6})\s")
DETAILS = re.compile(r"\A\s*<details\b", re.I)
CHECK_CALL = re.compile(r"^exercises\.\w+\(", re.M)
RISE_SETTINGS = {"scroll": True}


def slide_type(cell, *, is_setup: bool = False, after_code: bool = False) -> str:
    """The slide type the rules give ``cell`` (a notebook cell as nbformat reads it);
    ``after_code``: the cell before it on screen is a code cell."""
    tags = set(cell.get("metadata", {}).get("tags", []))
    if tags & {"instructor", "solution"}:
        return "skip"
    source = cell.get("source", "")
    if cell.get("cell_type") == "markdown":
        if DETAILS.match(source):
            return "skip"
        heading = HEADING.match(source)
        if heading:
            return "slide" if len(heading.group(1)) <= 2 else "subslide"
        return "subslide" if after_code else "-"
    if cell.get("cell_type") == "code":
        if is_setup:
            return "skip"
        if CHECK_CALL.search(source):
            return "fragment"
    return "-"


def apply(nb) -> bool:
    """Set the slide metadata of every cell of ``nb`` in place; return whether anything changed."""
    changed = False
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    setup = code_cells[0] if code_cells else None
    after_code = False  # is the last cell on screen a code cell?
    for cell in nb.cells:
        wanted = slide_type(cell, is_setup=cell is setup, after_code=after_code)
        if wanted != "skip":
            after_code = cell.cell_type == "code"
        show = cell.metadata.get("slideshow", {})
        if show.get("slide_type") != wanted:
            cell.metadata["slideshow"] = {**show, "slide_type": wanted}
            changed = True
    rise = nb.metadata.get("rise", {})
    if any(rise.get(k) != v for k, v in RISE_SETTINGS.items()):
        nb.metadata["rise"] = {**rise, **RISE_SETTINGS}
        changed = True
    return changed


def process(path: Path, *, check: bool = False) -> bool:
    """Apply the rules to the notebook at ``path``; write it back unless ``check``. Return whether it changed."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    changed = apply(nb)
    if changed and not check:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is out of date")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob(LESSON_GLOB))
    stale = [p for p in paths if process(p, check=args.check)]
    for p in stale:
        print(f"{'out of date' if args.check else 'updated'}: {p}")
    if not stale:
        print(f"slide metadata current in {len(paths)} notebook(s)")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
