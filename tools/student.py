"""Build the student version of the lessons: ``python tools/student.py [SRC_DIR] [OUT_DIR]``.

For every ``SRC_DIR/*.ipynb`` (default ``notebooks/``) it writes ``OUT_DIR/<same name>``
(default ``student/``) with nbconvert's own machinery:

- cells tagged ``instructor`` are removed (nbconvert's ``TagRemovePreprocessor``);
- each run of consecutive cells tagged ``solution`` becomes one empty answer cell of the first
  one's kind, tagged ``answer`` (``SolutionPreprocessor`` below): the learner writes there; a run
  right after a measuring cell (tagged ``exercise``) is removed instead, since the learner has
  already answered above it, and the asserts that give the answer away live in those cells;
- the outputs of exercise cells are cleared (``ClearExerciseOutputPreprocessor``), so a learner
  never sees the feedback of the author's run; an exercise cell is one tagged ``exercise`` or
  ``answer``, or a code cell that sets ``answer = ...`` or calls ``exercises.<check>(...)``;
- everything else (prose, figures, outputs, widget state, slide metadata) is kept.

Running it twice gives the same files. Nothing in ``SRC_DIR`` is modified.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbconvert.exporters import NotebookExporter
from nbconvert.preprocessors import Preprocessor, TagRemovePreprocessor
from traitlets import Set, Unicode
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[1]

# A code cell that a learner answers in or that checks an answer.
EXERCISE_CODE = re.compile(r"^\s*answer\s*=|\bexercises\.\w+\(", re.M)

ANSWER_SOURCE = {
    "code": "# Your answer here.\n",
    "markdown": "*Your answer here.*",
}


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


class SolutionPreprocessor(Preprocessor):
    """Replace every run of consecutive cells tagged ``solution`` with one empty answer cell of the
    first one's kind, or remove the run when it follows a measuring cell (tagged ``exercise``)."""

    solution_tag = Unicode("solution", help="the tag that marks a solution cell").tag(config=True)
    answer_tag = Unicode("answer", help="the tag the empty answer cell gets").tag(config=True)
    measure_tag = Unicode("exercise", help="the tag of a measuring cell: a solution after it "
                                           "is removed, not blanked").tag(config=True)

    def answer_cell(self, cell):
        kind = cell.cell_type if cell.cell_type in ANSWER_SOURCE else "markdown"
        maker = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        answer = maker(ANSWER_SOURCE[kind])
        # Keep the cell's id (so the file diffs cleanly) and its slide role, not its content.
        if "id" in cell:
            answer["id"] = cell["id"]
        answer.metadata["tags"] = [self.answer_tag]
        if "slideshow" in cell.metadata:
            answer.metadata["slideshow"] = dict(cell.metadata["slideshow"])
        return answer

    def preprocess(self, nb, resources):
        cells = []
        in_run = False
        for cell in nb.cells:
            if self.solution_tag not in _tags(cell):
                cells.append(cell)
                in_run = False
                continue
            if in_run:
                continue                                    # the run already has its answer cell (or none)
            in_run = True
            if cells and self.measure_tag in _tags(cells[-1]):
                continue                                    # answered above the measuring cell
            cells.append(self.answer_cell(cell))
        nb.cells = cells
        return nb, resources


class ClearExerciseOutputPreprocessor(Preprocessor):
    """Clear outputs and execution counts of exercise cells; other outputs stay."""

    exercise_tags = Set({"exercise", "answer"}, help="tags that mark an exercise cell").tag(config=True)

    def is_exercise(self, cell) -> bool:
        if cell.cell_type != "code":
            return False
        return bool(_tags(cell) & self.exercise_tags) or bool(EXERCISE_CODE.search(cell.source))

    def preprocess_cell(self, cell, resources, index):
        if self.is_exercise(cell):
            cell.outputs = []
            cell.execution_count = None
        return cell, resources


def student_exporter() -> NotebookExporter:
    """The nbconvert exporter that turns a lesson into its student version."""
    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_cell_tags = {"instructor"}
    exporter = NotebookExporter(config=config)
    # Order matters: remove instructor cells, then blank the solutions, then clear the exercises.
    exporter.register_preprocessor(TagRemovePreprocessor(config=config), enabled=True)
    exporter.register_preprocessor(SolutionPreprocessor(config=config), enabled=True)
    exporter.register_preprocessor(ClearExerciseOutputPreprocessor(config=config), enabled=True)
    return exporter


def build(src: Path, out: Path) -> list[Path]:
    """Write the student version of every notebook in ``src`` to ``out``; return the paths written."""
    notebooks = sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"src: no notebooks in {src}")
    out.mkdir(parents=True, exist_ok=True)
    exporter = student_exporter()
    written = []
    for path in notebooks:
        body, _ = exporter.from_filename(str(path))
        target = out / path.name
        target.write_text(body, encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", type=Path, default=ROOT / "notebooks")
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "student")
    args = parser.parse_args(argv)
    written = build(args.src, args.out)
    for path in written:
        print(f"student version: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
