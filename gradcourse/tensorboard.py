"""Export a probed run to TensorBoard: the same numbers the course plots, in TensorBoard's UI.

``export(run, logdir)`` writes one event file into ``logdir`` with
``torch.utils.tensorboard.SummaryWriter``:

- scalars ``loss`` and ``grad_norm_total`` for every training step;
- one scalar per layer and probe quantity, tagged ``<quantity>/<layer>`` (for example
  ``grad_norm/layer1``, ``output_grad_norm/layer20``, ``dead_frac/layer3``) at every recorded
  step; quantities that do not apply to the model (``saturated_frac`` of a ReLU network) are
  left out;
- for sequence models, ``hidden_grad_norm/first_step`` and ``hidden_grad_norm/last_step``;
- the weight-gradient histograms, tagged ``grad_hist/<layer>``, as TensorBoard histograms of
  log10|∂L/∂W| with the probe's own bins (one per power of two; the first bin also holds the
  smaller values and exact zeros, the last the larger ones);
- the run's parameters and the gradient doctor's diagnosis as text.

Look at it with ``tensorboard --logdir <logdir>`` in a terminal, or in Jupyter with
``%load_ext tensorboard`` then ``%tensorboard --logdir <logdir>``. Give every run its own
sub-directory of one parent logdir and TensorBoard overlays them. A directory that already holds
events is refused (two runs in one directory would be drawn as one, jumping between them), unless
``overwrite=True`` replaces its old event files.

>>> import tempfile, pathlib
>>> from gradcourse import data, models
>>> from gradcourse.train import fit
>>> run = fit(models.mlp(3, 8, activation="relu", init="kaiming"), data.spirals(64), steps=5, lr=0.1)
>>> path = export(run, pathlib.Path(tempfile.mkdtemp()) / "relu3")
>>> path.name.startswith("events.out.tfevents")
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import _checks
from .run import Run
from .trace import LAYER_QUANTITIES


def export(run: Run, logdir: str | os.PathLike, *, diagnosis: bool = True, overwrite: bool = False) -> Path:
    """Write ``run`` (made with probes on) to a TensorBoard event file in ``logdir``.

    ``logdir`` is created if needed; if it already holds event files, ``export`` refuses
    (a ValueError) unless ``overwrite=True``, which deletes those event files first. With
    ``diagnosis=True`` the verdict of :func:`gradcourse.diagnose` is stored as text too.
    Non-finite values (the NaN that stopped a diverged run) are not written: TensorBoard's charts
    cannot draw them, and the diagnosis text says where the run diverged. Returns the path of the event file.
    """
    if not isinstance(run, Run):
        raise ValueError(f"run must be a gradcourse Run (from gradcourse.train.fit); got {type(run).__name__}")
    if run.trace is None:
        raise ValueError("run must carry a probe trace: train it with fit(..., probe=True)")
    if not isinstance(logdir, (str, os.PathLike)) or not str(logdir):
        raise ValueError(f"logdir must be a directory path (str or pathlib.Path); got {logdir!r}")
    diagnosis, overwrite = _checks.flag("diagnosis", diagnosis), _checks.flag("overwrite", overwrite)
    from torch.utils.tensorboard import SummaryWriter

    logdir = _make_logdir(Path(logdir))
    old = sorted(logdir.glob("events.out.tfevents.*"))
    if old and not overwrite:
        raise ValueError(f"logdir {str(logdir)!r} already holds {len(old)} TensorBoard event file(s) of another "
                         "run, and TensorBoard would mix them with this one: give each run its own "
                         "directory, or pass overwrite=True to replace them")
    for path in old:
        path.unlink()
    trace = run.trace
    from tensorboard.compat.proto.summary_pb2 import Summary

    # One event per step, holding every scalar and histogram of that step (a Summary holds any
    # number of tagged values; TensorBoard reads each tag's series the same way). One add_scalar
    # per value wrote 16,900 events for a 20-layer, 100-step run, each through the writer's queue,
    # CRC and file write: two such exports took 2.9 s of CPU in lesson 07.
    values: dict[int, list] = {}

    def scalar(tag: str, value: float, step: int) -> None:
        if np.isfinite(value):
            values.setdefault(step, []).append(Summary.Value(tag=tag, simple_value=float(value)))

    for tag, series in (("loss", run.losses), ("grad_norm_total", run.grad_norm_total)):
        for step, value in enumerate(series):
            scalar(tag, value, step)
    steps = [int(s) for s in trace.steps]
    for quantity in LAYER_QUANTITIES:
        table = trace.get(quantity)
        for j, layer in enumerate(trace.layers):
            for row, step in enumerate(steps):
                scalar(f"{quantity}/{layer}", table[row, j], step)
    if trace.hidden_grad_norm is not None:
        for row, step in enumerate(steps):
            scalar("hidden_grad_norm/first_step", trace.hidden_grad_norm[row, 0], step)
            scalar("hidden_grad_norm/last_step", trace.hidden_grad_norm[row, -1], step)
    if trace.grad_hist is not None and trace.hist_edges is not None:
        for j, layer in enumerate(trace.layers):
            for row, step in enumerate(steps):
                value = _histogram(f"grad_hist/{layer}", trace.hist_edges, trace.grad_hist[row, j])
                if value is not None:
                    values.setdefault(step, []).append(value)
    writer = SummaryWriter(log_dir=str(logdir), max_queue=1_000_000, flush_secs=3600)
    try:
        file_writer = writer._get_file_writer()
        for step in sorted(values):
            file_writer.add_summary(Summary(value=values[step]), step)
        writer.add_text("params", "```\n" + json.dumps(run.params, indent=2, default=str) + "\n```")
        if diagnosis:
            from .doctor import diagnose

            writer.add_text("diagnosis", diagnose(run)._repr_markdown_())
        writer.flush()
    finally:
        writer.close()
    return max(logdir.glob("events.out.tfevents.*"), key=os.path.getmtime)


def _make_logdir(logdir: Path) -> Path:
    """Create ``logdir`` (and its parents), or raise a ValueError naming the argument: a path under
    a regular file would otherwise surface as a bare NotADirectoryError from ``mkdir``."""
    for path in (logdir, *logdir.parents):  # the nearest part that exists must be a directory
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == logdir else f"lies under {str(path)!r}, which is a file"
                raise ValueError(f"logdir must be a directory path; {str(logdir)!r} {where}")
            break
    try:
        logdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # no permission, a read-only disk: say which argument, not a traceback
        raise ValueError(f"logdir {str(logdir)!r} cannot be created: {error.strerror or error}") from None
    return logdir


def _histogram(tag: str, edges: np.ndarray, counts: np.ndarray):
    """One probe histogram (counts per log10 bin) as a TensorBoard histogram of log10|g|: a
    ``Summary.Value`` (``None`` for an empty one), as ``SummaryWriter.add_histogram_raw`` makes it."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total == 0:
        return None
    centres = (edges[:-1] + edges[1:]) / 2
    filled = np.flatnonzero(counts)
    histogram = HistogramProto(
        min=float(edges[filled[0]]),
        max=float(edges[filled[-1] + 1]),
        num=int(total),
        sum=float((counts * centres).sum()),
        sum_squares=float((counts * centres**2).sum()),
        bucket_limit=[float(e) for e in edges[1:]],  # each bucket's right edge
        bucket=[float(c) for c in counts],
    )
    return Summary.Value(tag=tag, histo=histogram)
