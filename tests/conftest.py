"""Every test starts like a lesson (gradcourse.start): one torch thread and seed 0, so the
numbers are the ones the notebooks show, and two test processes on two cores do not fight
over threads. TQDM_DISABLE switches off fit's progress bars; tqdm reads it when it is first imported,
so it is set before anything imports gradcourse."""

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402

import gradcourse  # noqa: E402


@pytest.fixture(autouse=True)
def lesson_start():
    gradcourse.start(0)
