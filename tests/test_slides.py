"""Slides: every lesson carries the slide metadata tools/slides.py derives from its cells.

The rules are tested on small cells; the lessons are tested for being up to date with the rules
(after editing a lesson, run ``make slides`` and commit the notebook).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from _tools import load_tool

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


slides = load_tool("slides")
v4 = nbformat.v4


def _tagged(cell, *tags):
    cell.metadata["tags"] = list(tags)
    return cell


@pytest.mark.parametrize(
    "cell,expected",
    [
        (v4.new_markdown_cell("# Lesson 01 — title\n\ntext"), "slide"),
        (v4.new_markdown_cell("## 2. Experiment"), "slide"),
        (v4.new_markdown_cell("### 1.2 Backpropagation"), "subslide"),
        (v4.new_markdown_cell("#### a detail"), "subslide"),
        (v4.new_markdown_cell("Read the plot from right to left."), "-"),
        (v4.new_markdown_cell("#hashtag is not a heading"), "-"),
        (v4.new_markdown_cell("<details><summary>Solution</summary>\n4\n</details>"), "skip"),
        (_tagged(v4.new_markdown_cell("## Instructor notes"), "instructor"), "skip"),
        (_tagged(v4.new_code_cell("answer = 4"), "solution"), "skip"),
        (v4.new_code_cell("answer = None\nexercises.chain_gradient(answer)"), "fragment"),
        (v4.new_code_cell("assert exercises.chain_gradient(1).correct"), "-"),
        (v4.new_code_cell("plots.grad_norms(trace)"), "-"),
    ],
)
def test_slide_type_rules(cell, expected):
    assert slides.slide_type(cell) == expected


def test_prose_after_code_starts_a_subslide():
    assert slides.slide_type(v4.new_markdown_cell("Read the plot."), after_code=True) == "subslide"
    assert slides.slide_type(v4.new_markdown_cell("## Next"), after_code=True) == "slide"
    assert slides.slide_type(v4.new_code_cell("plot()"), after_code=True) == "-"


def test_apply_skips_the_setup_cell_and_is_idempotent():
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# T"), v4.new_code_cell("import math"),
                                v4.new_markdown_cell("Prose."), v4.new_code_cell("math.pi"),
                                v4.new_markdown_cell("What it shows."),
                                _tagged(v4.new_markdown_cell("<details>4</details>"), "solution"),
                                v4.new_markdown_cell("More.")])
    nb.cells[3].metadata["slideshow"] = {"slide_type": "slide"}  # a stale value is corrected
    assert slides.apply(nb) is True
    # the skipped setup cell does not count as code on screen; the skipped solution does not either
    assert [c.metadata["slideshow"]["slide_type"] for c in nb.cells] == [
        "slide", "skip", "-", "-", "subslide", "skip", "-"]
    assert nb.metadata["rise"]["scroll"] is True
    assert slides.apply(nb) is False


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in LESSONS])
def test_lesson_has_current_slide_metadata(path):
    nb = nbformat.read(path, as_version=4)
    types = [c.metadata.get("slideshow", {}).get("slide_type") for c in nb.cells]
    assert all(t in slides.SLIDE_TYPES for t in types), (
        f"{path.name}: cells without slide metadata: run `make slides` and commit the notebook"
    )
    assert types[0] == "slide", f"{path.name}: the title cell must open the first slide"
    assert types.count("slide") >= 3, f"{path.name}: a talk of fewer than 3 slides"
    assert slides.apply(nb) is False, f"{path.name}: slide metadata out of date: run `make slides`"
