"""The explorer pattern every lesson uses: a pure ``run(**params)`` with an ipywidgets UI on top.

A lesson subclasses :class:`Explorer`, declares its controls in ``params`` and implements
``compute(**params) -> Result``. Tests call ``run``; notebooks display the explorer, which builds
sliders and menus whose changes call ``run`` again and replace the figure in place.

>>> from gradcourse.widgets.base import Explorer, Param, Result
>>> from matplotlib.figure import Figure
>>> class Square(Explorer):
...     title = "Squares"
...     params = {"x": Param(3, low=0, high=10)}
...     def compute(self, x):
...         fig = Figure()
...         fig.add_subplot().set_title(f"{x}² = {x * x}")
...         return Result(figure=fig, values={"square": x * x})
>>> Square().run(x=4).values["square"]
16
>>> Square().run(x=11)
Traceback (most recent call last):
...
ValueError: x must be at most 10; got 11
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure

from .. import _checks, plots


@dataclass(frozen=True)
class Param:
    """One control: its default, and either a numeric range or a list of options.

    ``low``/``high``/``step`` make a slider (``log=True`` a log-scale slider, where ``low`` and
    ``high`` are the values at the ends); ``options`` makes a menu; a bool default a checkbox.
    """

    default: Any
    low: float | None = None
    high: float | None = None
    step: float | None = None
    options: tuple | None = None
    log: bool = False
    label: str | None = None

    @property
    def slider_step(self) -> float:
        """The slider's step: ``step``, else 0.1 decade on a log slider, 1 for an integer, a
        hundredth of the range otherwise.

        >>> Param(1.0, low=0.0, high=2.0).slider_step, Param(1.0, low=0.1, high=10.0, log=True).slider_step
        (0.02, 0.1)
        """
        if self.step:
            return self.step
        if self.log:
            return 0.1
        return 1 if isinstance(self.default, int) else (self.high - self.low) / 100

    def validate(self, name: str, value: Any) -> Any:
        if self.options is not None:
            return _checks.choice(name, value, self.options)
        if isinstance(self.default, bool):
            return _checks.flag(name, value)
        if isinstance(self.default, int):
            return _checks.integer(name, value, low=self.low, high=self.high)
        return _checks.number(name, value, low=self.low, high=self.high)

    def widget(self, name: str):
        import ipywidgets as w

        description = self.label or name.replace("_", " ")
        common = dict(description=description, style={"description_width": "initial"})
        if self.options is not None:
            return w.Dropdown(options=list(self.options), value=self.default, **common)
        if isinstance(self.default, bool):
            return w.Checkbox(value=self.default, indent=False, **common)
        slider = dict(continuous_update=False, layout=w.Layout(width="320px"), **common)
        if self.log:
            import math

            return w.FloatLogSlider(value=self.default, min=math.log10(self.low),
                                    max=math.log10(self.high), step=self.slider_step, **slider)
        if isinstance(self.default, int):
            return w.IntSlider(value=self.default, min=self.low, max=self.high, step=self.slider_step, **slider)
        return w.FloatSlider(value=self.default, min=self.low, max=self.high, step=self.slider_step, **slider)


@dataclass
class Result:
    """What ``Explorer.run`` returns: the figure, the numbers behind it, the runs it made, and a
    sentence or two that says what the figure shows."""

    figure: Figure
    values: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    summary: str = ""
    params: dict = field(default_factory=dict)
    #: A line the widget shows above the figure, in the warning colour (e.g. "press Run").
    notice: str = ""


class Explorer:
    """Base class of the lesson explorers.

    Subclasses set ``title``, ``params`` (name → :class:`Param`) and implement
    ``compute(**params) -> Result``. An explorer that trains for longer than a slider should wait
    sets ``manual = True`` and ``preview`` (the parameter values that skip the training, e.g.
    ``{"steps": 0}``): its UI then redraws the fast at-initialisation view on every control
    change, says above the figure that training waits for the Run button, and trains on Run with a
    progress bar. ``compute`` passes ``progress=self.progress`` to ``fit`` (on only during a Run).

    Every display of an explorer (``show()``) builds its own view: its buttons and sliders read
    and redraw only that view, even when the same explorer is displayed twice.
    """

    title: str = "Explorer"
    params: dict[str, Param] = {}
    manual: bool = False
    #: For a manual explorer: the parameter values that leave out the slow part (the training).
    preview: dict[str, Any] = {}
    #: Pixel density of the figures shown in the widget (small PNGs keep the notebook light).
    dpi: int = 80
    #: Whether ``compute`` should show a progress bar while it trains (set by the UI's Run button).
    progress: bool = False

    def compute(self, **params) -> Result:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def run(self, **params) -> Result:
        """Check ``params`` (defaults fill the rest), do the work, return a :class:`Result`."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; allowed: {', '.join(self.params)}")
        values = {name: spec.default for name, spec in self.params.items()}
        for name, value in params.items():
            values[name] = self.params[name].validate(name, value)
        self.check(values)
        result = self.compute(**values)
        result.params = values
        return result

    def run_preview(self, **params) -> Result:
        """``run`` without the slow part (``params`` overridden by :attr:`preview`). When that
        leaves out work the settings ask for, ``notice`` says so (press Run), and the widget shows
        it above the figure."""
        quick = {**params, **self.preview}
        result = self.run(**quick)
        full = {name: spec.default for name, spec in self.params.items()} | params
        skipped = [name for name, value in self.preview.items() if full.get(name) != value]
        if skipped:
            # Said in the widget, above the figure, not on it: a note on the figure was cut at
            # both ends when the figure was narrower than the sentence.
            result.notice = ("Settings changed: the figure shows the network at initialisation. "
                             "Training waits for the Run button: press Run to train with these settings.")
        return result

    def check(self, params: dict) -> None:
        """Refuse combinations of parameters that make no sense (raise ValueError). Optional."""

    # -- the interactive view ------------------------------------------------------------------
    def show(self):
        """Build and return a new ipywidgets UI (controls, status line, figure) for this explorer."""
        view = _View(self)
        # The latest view, for code that inspects it (its callbacks never read these).
        self.widget, self.controls, self.output = view.widget, view.controls, view.output
        return view.widget

    def _displays(self, params: dict, *, preview: bool = False) -> list:
        """Run with ``params``; return what to show: the figure and summary, or a readable refusal."""
        from IPython.display import HTML, Image

        try:
            result = self.run_preview(**params) if preview else self.run(**params)
        except ValueError as error:
            self.last_png = None
            return [HTML(f"<div style='color:{WARNING}'><b>Cannot run these settings:</b> {error}</div>")]
        self.last_result = result
        self.last_png = figure_png(result.figure, self.dpi)
        items = [Image(data=self.last_png)]
        if result.notice:
            items.insert(0, HTML(f"<div style='color:{WARNING}'><b>{result.notice}</b></div>"))
        if result.summary:
            items.append(HTML(f"<p>{result.summary}</p>"))
        return items

    def _repr_mimebundle_(self, **kwargs):
        """Display the live UI, with the default figure as a PNG fallback for kernel-less viewers
        (GitHub, nbviewer): they skip the widget and show the image instead."""
        widget = self.show()
        bundle = widget._repr_mimebundle_(**kwargs)
        if getattr(self, "last_png", None):
            bundle["image/png"] = base64.b64encode(self.last_png).decode("ascii")
        bundle["text/plain"] = f"{type(self).__name__}: {self.title}"
        return bundle


#: Colour of refusals and of the "press Run" note (a dark red that reads on white).
WARNING = "#b2182b"


class _View:
    """One display of an explorer: its own controls, status line, progress area and figure.

    A slider-driven explorer redraws the full work on every control change; a manual one redraws
    the fast preview on every control change and the full work on Run. Either draws its first
    figure straight into the Output widget (:meth:`_first`), never through a ``with output:``
    capture while the notebook cell runs: see :meth:`_first` for why.
    """

    def __init__(self, explorer: Explorer):
        import ipywidgets as w

        self.explorer = explorer
        self.controls = {name: spec.widget(name) for name, spec in explorer.params.items()}
        self.status = w.HTML(value="")
        self.progress = w.Output()
        items = [w.HTML(f"<b>{explorer.title}</b>"),
                 w.HBox(list(self.controls.values()), layout=w.Layout(flex_flow="row wrap"))]
        self.output = w.Output()
        if explorer.manual:
            self.button = w.Button(description="Run", button_style="primary", icon="play",
                                   tooltip="train with these settings")
            self.button.on_click(lambda _: self.redraw(preview=False))
            items.append(self.button)
        for control in self.controls.values():
            control.observe(lambda _: self.redraw(preview=explorer.manual), names="value")
        self._first()
        items += [self.status, self.progress, self.output]
        self.widget = w.VBox(items)

    def current(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def _first(self) -> None:
        """The first figure, appended to the Output widget's outputs directly.

        Capturing output with ``with output:`` (as ``interactive_output`` does) while a notebook
        cell runs makes a kernel client (nbclient, ``nbconvert --execute``, Voilà) now and then
        miss the cell's execute_reply until its whole timeout has passed: displaying lesson 01's
        explorer 80 times through nbclient waited out the timeout 9 times, with ipykernel 7.4 and
        6.31 and pyzmq 26 and 27 alike (``benchmarks/kernel_stalls.py``). Appending needs no
        routing of display messages; later redraws, from the browser, go through :meth:`redraw`."""
        self.shown = self.explorer._displays(self.current())
        for item in self.shown:
            self.output.append_display_data(item)

    def redraw(self, *, preview: bool) -> None:
        with self.output:
            self.output.clear_output(wait=True)
            self._render(preview=preview, **self.current())

    def _render(self, preview: bool = False, **params) -> None:
        from IPython.display import display

        self._set_busy(True)
        self.explorer.progress = not preview
        failure: Exception | None = None
        try:
            # ipywidgets' capture swallows whatever is raised inside it (it shows the traceback in
            # the progress area, which is cleared below), so both cases are caught in here.
            with self.progress:
                try:
                    items = self.explorer._displays(params, preview=preview)
                except KeyboardInterrupt:  # the notebook's stop button, during a Run
                    items = self._stopped()
                except Exception as error:  # noqa: BLE001 (re-raised below, where the figure goes)
                    failure = error
        finally:
            self.explorer.progress = False
            self.progress.clear_output()
            self._set_busy(False)
        if failure is not None:
            raise failure
        self.shown = items
        display(*items)

    def _stopped(self) -> list:
        """What an interrupted run leaves: a line saying it stopped, then the last figure shown."""
        from IPython.display import HTML

        again = "Press Run to start again." if self.explorer.manual else "Move a control to redraw."
        note = HTML(f"<div style='color:{WARNING}'><b>Stopped:</b> the run was interrupted before it "
                    f"finished; the figure below is the last one drawn. {again}</div>")
        return [note, *[item for item in getattr(self, "shown", []) if not _is_stop_note(item)]]

    def _set_busy(self, busy: bool) -> None:
        for control in self.controls.values():
            control.disabled = busy
        if self.explorer.manual:
            self.button.disabled = busy
        self.status.value = "<i>computing…</i>" if busy else ""


def _is_stop_note(item) -> bool:
    """Whether ``item`` is the "Stopped" line (a second interrupt must not stack a second one)."""
    return "<b>Stopped:</b>" in str(getattr(item, "data", ""))


def figure_png(figure: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib Figure to PNG bytes (the Figure is not registered with pyplot, so
    nothing needs closing and repeated renders do not accumulate figures). The course's figures
    use constrained layout, so no second "tight" pass is needed: it cost a quarter of the time.
    Log axes lose what they would not show (:func:`gradcourse.plots.lighter_log_ticks`).

    The figure is drawn once (:func:`gradcourse.plots.laid_out`: its layout runs on its own at the
    image's dpi, then ``savefig`` draws without it, instead of drawing twice), about a tenth of an
    explorer's image less. The figure keeps its layout engine and dpi.

    Every figure of one pixel size and density is drawn by the same Agg renderer
    (:class:`_SharedRendererCanvas`): matplotlib keeps its measured text sizes and parsed math text
    (the log axes' ``10^k`` labels) per renderer, so an explorer's next figure, which has the same
    size and mostly the same texts, measures and parses them once instead of again every time.
    Either way the image is the same, byte for byte (``tests/test_widgets_base.py``)."""
    buffer = io.BytesIO()
    _SharedRendererCanvas(figure)  # becomes figure.canvas
    with plots.laid_out(plots.lighter_log_ticks(figure), dpi):
        figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class _SharedRendererCanvas(FigureCanvasAgg):
    """An Agg canvas that takes its renderer from :data:`_RENDERERS` (one per width, height and dpi,
    the last few kept) instead of making a new one for each figure. matplotlib's interactive
    canvases reuse one renderer for every redraw in the same way; ``draw`` clears it first."""

    def get_renderer(self):
        w, h = self.get_width_height(physical=True)
        key = (w, h, self.figure.dpi)
        renderer = _RENDERERS.pop(key, None) or RendererAgg(w, h, self.figure.dpi)
        _RENDERERS[key] = renderer  # the most recently used last
        while len(_RENDERERS) > _KEEP_RENDERERS:
            _RENDERERS.pop(next(iter(_RENDERERS)))
        self.renderer = renderer
        return renderer


#: The renderers :func:`figure_png` draws with, by (width px, height px, dpi); a few explorers' sizes.
_RENDERERS: dict = {}
_KEEP_RENDERERS = 8
