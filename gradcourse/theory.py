"""Closed-form predictions that the plots overlay on measurements.

Each function's docstring derives its formula in a few lines; the tests compare each one with
a measurement.
"""

from __future__ import annotations

import math

import numpy as np

from . import _checks

# Sections below, one per lesson, each with its own functions.
