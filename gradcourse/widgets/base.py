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

from matplotlib.figure import Figure

from .. import _checks


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

    def validate(self, name: str, value: Any) -> Any:
        if self.options is not None:
            return _checks.choice(name, value, self.options)
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False; got {value!r}")
            return value
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
                                    max=math.log10(self.high), step=self.step or 0.1, **slider)
        if isinstance(self.default, int):
            return w.IntSlider(value=self.default, min=self.low, max=self.high,
                               step=self.step or 1, **slider)
        return w.FloatSlider(value=self.default, min=self.low, max=self.high,
                             step=self.step or (self.high - self.low) / 100, **slider)


@dataclass
class Result:
    """What ``Explorer.run`` returns: the figure, the numbers behind it, the runs it made, and a
    sentence or two that says what the figure shows."""

    figure: Figure
    values: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    summary: str = ""
    params: dict = field(default_factory=dict)


class Explorer:
    """Base class of the lesson explorers.

    Subclasses set ``title``, ``params`` (name → :class:`Param`), optionally ``manual = True``
    (the work starts on a button, for explorers that train for longer than a slider should wait),
    and implement ``compute(**params) -> Result``.
    """

    title: str = "Explorer"
    params: dict[str, Param] = {}
    manual: bool = False
    #: Pixel density of the figures shown in the widget (small PNGs keep the notebook light).
    dpi: int = 80

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

    def check(self, params: dict) -> None:
        """Refuse combinations of parameters that make no sense (raise ValueError). Optional."""

    # -- the interactive view ------------------------------------------------------------------
    def show(self):
        """Build and return the ipywidgets UI (controls, status line, figure)."""
        import ipywidgets as w

        self.controls = {name: spec.widget(name) for name, spec in self.params.items()}
        self.status = w.HTML(value="")
        self.output = w.Output()
        box_items = [w.HTML(f"<b>{self.title}</b>"),
                     w.HBox(list(self.controls.values()),
                            layout=w.Layout(flex_flow="row wrap"))]
        if self.manual:
            self.button = w.Button(description="Run", button_style="primary", icon="play")
            self.button.on_click(lambda _: self._render_into_output(**self._current()))
            box_items.append(self.button)
            self._render_initial(**self._current())
        else:
            # interactive_output calls _render once now and again whenever a control changes.
            self.output = w.interactive_output(self._render, self.controls)
        box_items += [self.status, self.output]
        self.widget = w.VBox(box_items)
        return self.widget

    def _current(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def _render_initial(self, **params) -> None:
        """A manual explorer's first figure, appended to the Output widget's outputs directly.

        Capturing it with ``with self.output:`` while the notebook displays the explorer made
        nbclient (``nbconvert --execute``) stall now and then for its whole cell timeout (2 runs
        in 15); appending needs no routing of display messages, and a Run click still redraws
        through :meth:`_render_into_output`."""
        for item in self._displays(params):
            self.output.append_display_data(item)

    def _render_into_output(self, **params) -> None:
        with self.output:
            self.output.clear_output(wait=True)
            self._render(**params)

    def _render(self, **params) -> None:
        from IPython.display import display

        self._set_busy(True)
        try:
            items = self._displays(params)
        finally:
            self._set_busy(False)
        display(*items)

    def _displays(self, params: dict) -> list:
        """Run with ``params``; return what to show: the figure and summary, or a readable refusal."""
        from IPython.display import HTML, Image

        try:
            result = self.run(**params)
        except ValueError as error:
            self.last_png = None
            return [HTML(f"<div style='color:#b2182b'><b>Cannot run these settings:</b> {error}</div>")]
        self.last_result = result
        self.last_png = figure_png(result.figure, self.dpi)
        items = [Image(data=self.last_png)]
        if result.summary:
            items.append(HTML(f"<p>{result.summary}</p>"))
        return items

    def _set_busy(self, busy: bool) -> None:
        for control in self.controls.values():
            control.disabled = busy
        if self.manual:
            self.button.disabled = busy
        self.status.value = "<i>computing…</i>" if busy else ""

    def _repr_mimebundle_(self, **kwargs):
        """Display the live UI, with the default figure as a PNG fallback for kernel-less viewers
        (GitHub, nbviewer): they skip the widget and show the image instead."""
        widget = self.show()
        bundle = widget._repr_mimebundle_(**kwargs)
        if getattr(self, "last_png", None):
            bundle["image/png"] = base64.b64encode(self.last_png).decode("ascii")
        bundle["text/plain"] = f"{type(self).__name__}: {self.title}"
        return bundle


def figure_png(figure: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib Figure to PNG bytes (the Figure is not registered with pyplot, so
    nothing needs closing and repeated renders do not accumulate figures)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()
