"""Every test starts like a lesson (gradcourse.start): one torch thread and seed 0, so the
numbers are the ones the notebooks show, and two test processes on two cores do not fight
over threads."""

import pytest

import gradcourse


@pytest.fixture(autouse=True)
def lesson_start():
    gradcourse.start(0)
