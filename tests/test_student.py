"""The student version of the course (``make student``, tools/student.py).

- The preprocessors, on a small notebook with every kind of cell: instructor cells go, solution
  cells become empty answer cells, exercise cells lose their outputs, everything else stays, and
  a second build gives the same bytes.
- Every lesson's student version runs top to bottom in a fresh kernel with no answer filled in:
  no error, and every exercise check answers "not answered yet" (a ``Feedback`` whose
  ``correct`` is None, shown with the ✏️ mark), never a verdict and never a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from _tools import load_tool

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
LESSONS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))

# Feedback._repr_markdown_ starts with one mark per verdict: ✏️ means "no answer yet".
NOT_ANSWERED, RIGHT, WRONG = "✏️", "✅", "❌"
# A check whose feedback the cell shows: a call to exercises.<check>(...) at the start of a line.
#: An exercise check: one of exercises.py, or a lesson module's own check (lesson 08 trains the
#: learner's model with that lesson's loop, so its checks live beside it).
CHECK_CALL = re.compile(r"^(?:exercises\.\w+|(?:lesson\d\d\.)?check_\w+)\(", re.M)


student = load_tool("student")


def _output(text: str) -> dict:
    return nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=1)


def _tagged(cell, *tags):
    cell.metadata["tags"] = list(tags)
    return cell


def _sample_notebook() -> nbformat.NotebookNode:
    v4 = nbformat.v4
    figure = v4.new_code_cell("plot()", execution_count=1)
    figure.outputs = [_output("<Figure>")]
    answer = v4.new_code_cell("answer = None   # a number", execution_count=2)
    answer.outputs = [_output("leftover")]
    check = v4.new_code_cell("exercises.chain_gradient(answer)", execution_count=3)
    check.outputs = [_output("Fill in your answer")]
    tagged_exercise = _tagged(v4.new_code_cell("x = 1", execution_count=4), "exercise")
    tagged_exercise.outputs = [_output("1")]
    code_solution = _tagged(v4.new_code_cell("answer = 1 / 1024\nexercises.chain_gradient(answer)"), "solution")
    code_solution.outputs = [_output("Right")]
    code_solution.metadata["slideshow"] = {"slide_type": "fragment"}
    md_solution = _tagged(v4.new_markdown_cell("<details>The answer is 4.</details>"), "solution")
    notes = _tagged(v4.new_markdown_cell("## Instructor notes\nDemo depth 40."), "instructor")
    cells = [v4.new_markdown_cell("# Lesson"), figure, answer, check, tagged_exercise, code_solution,
             md_solution, notes]
    return v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})


def test_student_version_of_a_sample_notebook(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    original = _sample_notebook()
    path = src / "00_sample.ipynb"
    nbformat.write(original, path)
    before = path.read_bytes()

    written = student.build(src, out)

    assert written == [out / "00_sample.ipynb"]
    assert path.read_bytes() == before, "the lesson itself must not change"
    nb = nbformat.read(written[0], as_version=4)
    sources = [c.source for c in nb.cells]
    kinds = [c.cell_type for c in nb.cells]
    # instructor notes gone; both solutions replaced in place by empty answers of their kind
    assert sources == ["# Lesson", "plot()", "answer = None   # a number", "exercises.chain_gradient(answer)",
                       "x = 1", "# Your answer here.\n", "*Your answer here.*"]
    assert kinds == ["markdown", "code", "code", "code", "code", "code", "markdown"]
    assert [c.metadata.get("tags") for c in nb.cells[5:]] == [["answer"], ["answer"]]
    assert nb.cells[5].metadata["slideshow"] == {"slide_type": "fragment"}
    assert nb.cells[5].outputs == [] and nb.cells[5].execution_count is None
    # a figure keeps its output; exercise cells (by code or by tag) lose theirs
    assert [o["data"]["text/plain"] for o in nb.cells[1].outputs] == ["<Figure>"]
    assert nb.cells[1].execution_count == 1
    for cell in nb.cells[2:5]:
        assert cell.outputs == [] and cell.execution_count is None, cell.source
    assert "The answer is 4" not in written[0].read_text(encoding="utf-8")
    assert "Demo depth 40" not in written[0].read_text(encoding="utf-8")

    first = written[0].read_bytes()
    student.build(src, out)
    assert written[0].read_bytes() == first, "building twice must give the same file"


def test_build_refuses_an_empty_source(tmp_path):
    with pytest.raises(ValueError, match="src"):
        student.build(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------------------------------
# Every lesson's student version, executed with no answer filled in.


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student")
    student.build(NOTEBOOK_DIR, out)
    return out


def _feedback_marks(cell) -> list[str]:
    marks = []
    for out in cell.get("outputs", []):
        md = out.get("data", {}).get("text/markdown", "")
        md = "".join(md) if isinstance(md, list) else md
        for mark in (NOT_ANSWERED, RIGHT, WRONG):
            if md.startswith(mark):
                marks.append(mark)
    return marks


@pytest.mark.slow
@pytest.mark.parametrize("lesson", [pytest.param(p.name, id=p.stem) for p in LESSONS])
def test_student_lesson_runs_with_no_answer(student_dir, lesson):
    from nbclient import NotebookClient

    path = student_dir / lesson
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        assert not tags & {"solution", "instructor"}, f"{lesson}: a {tags} cell survived"

    # Raises CellExecutionError (with the traceback) at the first failing cell.
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(student_dir)}}).execute()

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    checks = [c for c in nb.cells if c.cell_type == "code" and CHECK_CALL.search(c.source)]
    marks = [m for c in checks for m in _feedback_marks(c)]
    assert len(marks) == len(checks), (
        f"{lesson}: {len(checks)} exercise checks but {len(marks)} feedback outputs: every check "
        "must answer an empty answer with feedback"
    )
    verdicts = [m for c in nb.cells for m in _feedback_marks(c) if m != NOT_ANSWERED]
    assert not verdicts, f"{lesson}: with no answer filled in, a check gave a verdict {verdicts}"
    print(f"{lesson}: {len(nb.cells)} cells ran, {len(checks)} checks said 'not answered yet'")


def test_every_lesson_has_checked_exercises():
    for path in LESSONS:
        nb = json.loads(path.read_text(encoding="utf-8"))
        sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        assert any(CHECK_CALL.search(s) for s in sources), f"{path.name} has no exercise check"
