"""One explorer per lesson; ``EXPLORERS`` maps each lesson's notebook name to its explorer class.

>>> from gradcourse.widgets import EXPLORERS
>>> "01_sigmoid_saturation" in EXPLORERS
True
"""

from __future__ import annotations

import importlib

from .base import Explorer, Param, Result

_LESSONS = {
    "00_start_here": ("lesson00", "ScalarChainExplorer"),
    "01_sigmoid_saturation": ("lesson01", "SaturationExplorer"),
    "02_weight_explosion": ("lesson02", "ExplosionExplorer"),
    "03_gradient_clipping": ("lesson03", "ClippingExplorer"),
    "04_batchnorm": ("lesson04", "BatchNormExplorer"),
    "05_resnet": ("lesson05", "ResidualExplorer"),
    "06_lstm_gru": ("lesson06", "RecurrentExplorer"),
    "07_gradient_doctor": ("lesson07", "DoctorExplorer"),
    "08_your_own_model": ("lesson08", "DigitsExplorer"),
    "09_transformers": ("lesson09", "TransformerExplorer"),
    "10_mixed_precision": ("lesson10", "PrecisionExplorer"),
}


def _load() -> dict[str, type[Explorer]]:
    explorers = {}
    for lesson, (module_name, class_name) in _LESSONS.items():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"{__name__}.{module_name}":
                continue  # that lesson is not written yet
            raise
        explorers[lesson] = getattr(module, class_name)
    return explorers


EXPLORERS: dict[str, type[Explorer]] = _load()

__all__ = ["EXPLORERS", "Explorer", "Param", "Result"]
