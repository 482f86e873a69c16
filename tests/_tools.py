"""Helpers shared by the tests: load a script of ``tools/`` as a module (for the tests of the classroom
kit), check an explorer's registration, record the progress bars code makes.

``tools/`` holds command-line scripts, not a package, so they are loaded from their path.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as the module ``gradcourse_tools_<name>``."""
    spec = importlib.util.spec_from_file_location(f"gradcourse_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and doctest look a module up by name
    spec.loader.exec_module(module)
    return module


def assert_registered(lesson: str, explorer: type) -> None:
    """``EXPLORERS[lesson]`` is ``explorer``, and the registry's key means what it says: the lesson's
    notebook ``notebooks/<lesson>.ipynb`` exists and builds this explorer (``Name(`` in a code cell)
    and no other lesson's, and the class lives in that lesson's module (``widgets/lessonNN.py``).
    The bare ``EXPLORERS[...] is X`` check held even when the key named no notebook (a renamed
    lesson) or the notebook showed another explorer."""
    import json

    from gradcourse.widgets import EXPLORERS

    assert EXPLORERS[lesson] is explorer
    path = ROOT / "notebooks" / f"{lesson}.ipynb"
    assert path.exists(), f"the registry names {lesson!r}, but there is no {path.name}"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    assert f"{explorer.__name__}(" in code, f"{path.name} never builds {explorer.__name__}"
    others = [other.__name__ for other in EXPLORERS.values() if other is not explorer and f"{other.__name__}(" in code]
    assert not others, f"{path.name} builds other lessons' explorers: {others}"
    assert explorer.__module__ == f"gradcourse.widgets.lesson{lesson[:2]}"


def record_progress_bars(monkeypatch) -> list:
    """Replace ``tqdm.auto.tqdm`` by a recorder for the rest of the test; return the list that each
    bar made joins. A bar keeps its keyword arguments (``kwargs``), its ``updates`` and whether it
    was ``closed`` (left as a context manager)."""
    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.kwargs, self.updates, self.closed = kwargs, 0, False
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.closed = True

        def update(self, n=1):
            self.updates += n

        def set_postfix(self, **kwargs):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    return bars
