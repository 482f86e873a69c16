"""The file format of a saved run: numpy arrays plus one JSON string in an ``.npz``, read without pickle.

:meth:`gradcourse.run.Run.load` reads through :func:`read`, which checks everything it returns, so
a truncated, foreign or inconsistent file is refused with "not a gradcourse run (…)" before any of
it becomes a Run.

>>> plain({"seed": np.int64(3), "betas": (np.float32(0.5), 0.9), "ok": np.bool_(True)})
{'seed': 3, 'betas': [0.5, 0.9], 'ok': True}

A model's ``config`` is stored whatever it is (a dict, a dataclass such as nanoGPT's ``GPTConfig``,
a Hugging Face config with ``to_dict()``, any object, or none):

>>> from dataclasses import dataclass
>>> import torch
>>> @dataclass
... class GPTConfig:
...     n_layer: int = 6
...     dtype: torch.dtype = torch.float32
>>> model_config(torch.nn.Linear(2, 2))
{'kind': 'Linear'}
>>> net = torch.nn.Linear(2, 2)
>>> net.config = GPTConfig()
>>> model_config(net)
{'n_layer': 6, 'dtype': 'torch.float32'}
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import zipfile
from typing import Any

import numpy as np

FORMAT = "gradcourse-run/1"
#: Arrays every run file holds, one entry per step.
STEP_ARRAYS = ("losses", "grad_norm_total", "clipped")
#: How deep the JSON may nest (a run's metadata is three or four levels deep).
_MAX_DEPTH = 20


def plain(value: Any, _depth: int = 0) -> Any:
    """``value`` in JSON's types: numpy scalars and arrays become Python numbers and lists, tuples and
    sets lists, dataclasses and objects with ``to_dict()`` (a Hugging Face config) dicts, a
    ``torch.dtype``, an enum or anything else JSON cannot hold its ``str``/``repr`` (so any value
    can be saved; what cannot be stored as data is stored as words).

    >>> import torch
    >>> plain({"ids": {3}, "f": len, "dtype": torch.float16})
    {'ids': [3], 'f': '<built-in function len>', 'dtype': 'torch.float16'}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if _depth > _MAX_VALUE_DEPTH:
        return _words(value)
    if isinstance(value, dict):
        return {str(k): plain(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, _depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return [plain(v, _depth + 1) for v in sorted(value, key=repr)]
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), _depth) if value.size <= _MAX_ITEMS else _words(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):
        return plain(value.value, _depth + 1)
    fields = _fields(value)
    if fields is not None:
        return plain(fields, _depth)
    return _words(value)


def model_config(model: Any) -> dict:
    """What a run stores of ``model.config``: always a JSON dict.

    A dict is kept (its values made :func:`plain`); a dataclass gives its fields, an object with
    ``to_dict()`` that dict, any other object its public attributes (``vars``), and what has none of
    these ``{"repr": repr(config)}``. A model without a config gives ``{"kind": <its class name>}``
    (of the module inside, for a ``torch.compile``'d model).
    """
    model = getattr(model, "_orig_mod", model)  # a torch.compile'd model: the module inside
    config = getattr(model, "config", None)
    if config is None:
        return {"kind": type(model).__name__}
    fields = config if isinstance(config, dict) else _fields(config)
    if fields is None:
        return {"repr": _words(config)}
    return plain(fields)


#: Values nest at most this deep; deeper ones (a config that refers to itself) are stored as their
#: repr. A run file's metadata puts a config three levels down, and a file may nest 20 (_MAX_DEPTH).
_MAX_VALUE_DEPTH = 12
#: Arrays and tensors with more elements than this are stored as their repr, not as numbers.
_MAX_ITEMS = 1000


def _fields(value: Any) -> dict | None:
    """A non-JSON object's data as a dict (dataclass fields, ``to_dict()``, public ``vars``), or None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        try:
            fields = to_dict()
        except Exception:  # noqa: BLE001 - a config's own method may fail; its repr is stored then
            fields = None
        if isinstance(fields, dict):
            return fields
    if type(value).__module__.split(".")[0] == "torch" or isinstance(value, type) or callable(value):
        return None  # tensors, dtypes, modules: stored as words (see _words)
    try:
        attributes = vars(value)
    except TypeError:
        return None
    return {k: v for k, v in attributes.items() if not k.startswith("_")}


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "tolist")


def _words(value: Any) -> Any:
    """A value JSON cannot hold, as data where that is small (a tensor's numbers), else as text."""
    if _is_tensor(value) and getattr(value, "numel", lambda: _MAX_ITEMS + 1)() <= _MAX_ITEMS:
        try:
            return plain(value.detach().cpu().tolist())
        except (RuntimeError, AttributeError, TypeError):
            pass
    text = str(value) if type(value).__module__ == "torch" else repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def refuse(reason: str) -> ValueError:
    return ValueError(f"path is not a gradcourse run ({reason})")


def read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the metadata of the run file at ``path``, checked; a ValueError if it is not one."""
    try:
        stored = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise refuse(f"numpy cannot read it: {error}") from None
    if not isinstance(stored, np.lib.npyio.NpzFile):
        raise refuse(f"it holds a single {type(stored).__name__}, not an .npz archive")
    try:
        with stored:
            arrays = {k: stored[k] for k in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise refuse(f"the archive is damaged: {error}") from None
    meta = _meta(arrays.pop("meta", None))
    _check_steps(arrays, meta)
    return arrays, meta


def _meta(stored: np.ndarray | None) -> dict:
    if stored is None:
        raise refuse("no 'meta' entry")
    if stored.shape != () or stored.dtype.kind != "U":
        raise refuse(f"'meta' must be one JSON string; got an array of {stored.dtype} with shape {stored.shape}")
    try:
        meta = json.loads(str(stored))
    except (ValueError, RecursionError) as error:
        raise refuse(f"'meta' is not JSON: {str(error)[:80]}") from None
    if _depth(meta) > _MAX_DEPTH:
        raise refuse(f"'meta' nests deeper than {_MAX_DEPTH} levels")
    if not isinstance(meta, dict):
        raise refuse(f"'meta' must be a JSON object; got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise refuse(f"format must be {FORMAT!r}; got {meta.get('format')!r}")
    for key, kinds in (("metrics", dict), ("params", dict), ("diverged_layer", (str, type(None))),
                       ("trace", (dict, type(None)))):
        if key not in meta:
            raise refuse(f"'meta' has no {key!r}")
        if not isinstance(meta[key], kinds):
            raise refuse(f"{key} has the wrong type {type(meta[key]).__name__}")
    diverged_at = meta.get("diverged_at", "missing")
    if diverged_at is not None and (isinstance(diverged_at, bool) or not isinstance(diverged_at, int)):
        raise refuse(f"diverged_at must be a step number or null; got {diverged_at!r}")
    return meta


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:  # breadth-first, so a deep file cannot exhaust the stack
        depth += 1
        level = [v for item in level if isinstance(item, (dict, list))
                 for v in (item.values() if isinstance(item, dict) else item)]
        if depth > _MAX_DEPTH:
            break
    return depth


def _check_steps(arrays: dict[str, np.ndarray], meta: dict) -> None:
    for key in STEP_ARRAYS:
        if key not in arrays:
            raise refuse(f"no {key!r} array")
    n = len(arrays["losses"]) if arrays["losses"].ndim == 1 else -1
    for key in (*STEP_ARRAYS, *(["lrs"] if "lrs" in arrays else [])):
        a = arrays[key]
        wanted = "b" if key == "clipped" else "f"
        if a.ndim != 1 or len(a) != n or a.dtype.kind != wanted:
            raise refuse(f"{key} must be a 1-D {'bool' if wanted == 'b' else 'float'} array with one entry "
                         f"per step like losses ({n}); got {a.dtype} with shape {a.shape}")
    if n == 0:
        raise refuse("it holds no steps")
    diverged_at = meta["diverged_at"]
    if diverged_at is not None and diverged_at != n - 1:
        raise refuse(f"diverged_at ({diverged_at}) must be the last step ({n - 1})")


def check_trace(trace, n_steps: int) -> None:
    """Refuse a stored trace whose arrays do not agree with its layers and steps."""
    layers, steps = trace.layers, trace.steps
    if not all(isinstance(name, str) for name in layers):
        raise refuse("the trace's layers must be names")
    in_range = not len(steps) or 0 <= steps.min() <= steps.max() < n_steps
    if steps.ndim != 1 or steps.dtype.kind not in "iu" or not in_range:
        raise refuse(f"the trace's steps must be step numbers below {n_steps}")
    rows = (len(steps), len(layers))
    for name, values in trace.scalars.items():
        if values.shape != rows:
            raise refuse(f"the trace's {name} has shape {values.shape}; expected {rows}")
    if trace.grad_hist is not None:
        edges = trace.hist_edges
        if edges is None or edges.ndim != 1 or trace.grad_hist.shape != (*rows, len(edges) - 1):
            raise refuse("the trace's gradient histogram does not match its steps, layers and edges")
    if trace.hidden_grad_norm is not None and (trace.hidden_grad_norm.ndim != 2
                                               or len(trace.hidden_grad_norm) != len(steps)):
        raise refuse("the trace's hidden_grad_norm must have one row per recorded step")
    nonfinite = trace.nonfinite
    if nonfinite is not None and not (isinstance(nonfinite, dict) and isinstance(nonfinite.get("step"), int)
                                      and isinstance(nonfinite.get("layer"), str)):
        raise refuse("the trace's nonfinite record must name a step and a layer")
