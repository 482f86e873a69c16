"""Every explorer answers every control at both ends of its range: a figure (each panel titled) or a
refusal that names a control. Never a traceback.

What runs, and why:
- each control at each end (every menu option, both checkbox states), the others at defaults;
- each pair of sliders at their ends together (4 corners per pair), for every combination of the
  menus and checkboxes (they change what the sliders mean: ReLU at ×16 overflows where sigmoid
  does not); where that makes more than 200 settings (lessons 04 and 06), for every combination
  of the menus only, the checkboxes at their defaults;
- for the explorers that train behind a Run button (04, 05, 06) those settings go through
  ``run_preview`` (what the UI draws on every control change); the training itself runs on a
  seeded sample of 2 corners per explorer with the training length at its low end (a full sweep
  of the long end takes minutes: its time is recorded in benchmarks/, not tested here);
- lessons 07-09 train on every setting (the doctor's patients, the digits model, the Transformer's
  Run), so there each control goes to each end alone, without the slider corners.
"""

from __future__ import annotations

import itertools
import random

import pytest
from matplotlib.figure import Figure

from gradcourse.widgets import EXPLORERS

LESSONS = list(EXPLORERS)
#: Explorers whose every setting trains: each control at each end, no slider corners.
ENDS_ONLY = {name for name in EXPLORERS if name[:2] in {"07", "08", "09"}}
LENGTH = {"steps", "train"}          # the controls that set how long a Run trains


def ends(spec) -> tuple:
    if spec.options is not None:
        return tuple(spec.options)
    if isinstance(spec.default, bool):
        return (False, True)
    return (spec.low, spec.high)


def sliders(explorer) -> list[str]:
    return [n for n, s in explorer.params.items() if s.options is None and not isinstance(s.default, bool)]


def switches(explorer) -> list[str]:
    """The menus and checkboxes; only the menus when crossing the checkboxes too makes too many."""
    corners = 4 * len(list(itertools.combinations(sliders(explorer), 2)))
    every = [n for n in explorer.params if n not in sliders(explorer)]
    if corners * _count(explorer, every) <= 200:
        return every
    return [n for n, s in explorer.params.items() if s.options is not None]


def _count(explorer, names) -> int:
    count = 1
    for name in names:
        count *= len(ends(explorer.params[name]))
    return count


def settings(explorer, *, corners: bool = True) -> list[dict]:
    """Each control at each end; each pair of slider ends for every combination of switches."""
    found = [{name: value} for name, spec in explorer.params.items() for value in ends(spec)]
    if not corners:
        return found
    menu_names = switches(explorer)
    for options in itertools.product(*(ends(explorer.params[m]) for m in menu_names)):
        for a, b in itertools.combinations(sliders(explorer), 2):
            for va, vb in itertools.product(ends(explorer.params[a]), ends(explorer.params[b])):
                found.append({**dict(zip(menu_names, options)), a: va, b: vb})
    return found


def answer(explorer, params: dict, *, preview: bool) -> None:
    try:
        result = explorer.run_preview(**params) if preview else explorer.run(**params)
    except ValueError as error:
        labels = [n for n in explorer.params] + [s.label for s in explorer.params.values() if s.label]
        assert any(name.replace("_", " ") in str(error).replace("_", " ") for name in labels), (
            f"{type(explorer).__name__}{params}: the refusal names no control: {error}")
        return
    assert isinstance(result.figure, Figure) and result.figure.axes, params
    for ax in result.figure.axes:
        # a twin (ax.twinx(): a second y-axis drawn over its host) shares the host's title
        twin_of_titled = any(other is not ax and other.get_title() and ax.get_shared_x_axes().joined(ax, other)
                             and ax.get_position().bounds == other.get_position().bounds
                             for other in result.figure.axes)
        if ax.get_label() != "<colorbar>" and not twin_of_titled:
            assert ax.get_title(), f"{type(explorer).__name__}{params}: a panel without a title"
    assert result.summary, params


@pytest.mark.parametrize("lesson", LESSONS)
def test_every_control_end_and_slider_corner_answers(lesson):
    explorer = EXPLORERS[lesson]()
    for params in settings(explorer, corners=lesson not in ENDS_ONLY):
        answer(explorer, params, preview=explorer.manual)


@pytest.mark.parametrize("lesson", [n for n in LESSONS if EXPLORERS[n].manual and n not in ENDS_ONLY])
def test_trained_runs_on_a_seeded_sample_of_corners(lesson):
    explorer = EXPLORERS[lesson]()
    rng = random.Random(0)
    corners = [p for p in settings(explorer) if len(p) >= 2]
    for params in rng.sample(corners, min(2, len(corners))):
        full = dict(params)
        for name in LENGTH & set(explorer.params):
            spec = explorer.params[name]
            full[name] = True if isinstance(spec.default, bool) else spec.low or spec.step
        answer(explorer, full, preview=False)


def test_sweep_covers_every_control_of_every_explorer():
    for lesson in LESSONS:
        explorer = EXPLORERS[lesson]()
        touched = set().union(*settings(explorer, corners=lesson not in ENDS_ONLY))
        assert touched == set(explorer.params), lesson


@pytest.mark.parametrize("lesson", [n for n in LESSONS if EXPLORERS[n].manual])
def test_run_button_explorer_shows_its_first_figure(lesson):
    """A Run-button explorer shows its default figure before any click, both in its Output widget
    and as the PNG fallback of the notebook display (what GitHub and nbviewer show)."""
    pytest.importorskip("ipywidgets")
    explorer = EXPLORERS[lesson]()
    explorer.show()
    assert explorer.last_png.startswith(b"\x89PNG")
    assert any("image/png" in out.get("data", {}) for out in explorer.output.outputs)
    assert "image/png" in explorer._repr_mimebundle_()


@pytest.mark.parametrize("lesson", LESSONS)
def test_explorer_display_captures_no_output(lesson, monkeypatch):
    """Showing an explorer appends its first figure to the Output widget and never enters a
    ``with output:`` capture: a capture while a cell runs made nbclient and Voilà miss the cell's
    reply until their timeout (9 of 80 displays before; benchmarks/kernel_stalls.py). Moving a
    control still redraws (through a capture, from the browser, after the cell)."""
    widgets = pytest.importorskip("ipywidgets")

    def no_capture(self):
        raise AssertionError("an Output widget was entered while the explorer was displayed")

    monkeypatch.setattr(widgets.Output, "__enter__", no_capture)
    explorer = EXPLORERS[lesson]()
    explorer.show()
    assert any("image/png" in out.get("data", {}) for out in explorer.output.outputs), lesson
    redrawn = []
    from gradcourse.widgets import base

    monkeypatch.setattr(base._View, "redraw", lambda self, *, preview: redrawn.append(preview))
    name, control = next(iter(explorer.controls.items()))
    spec = explorer.params[name]
    control.value = spec.options[-1] if spec.options else (not control.value if isinstance(control.value, bool)
                                                           else control.max)
    assert redrawn == [explorer.manual], (lesson, name)
