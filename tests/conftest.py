"""Run the tests on one torch thread, as the lessons do (gradcourse.start): the numbers are the
ones the notebooks show, and two test processes on two cores do not fight over threads."""

import torch


def pytest_configure(config):
    torch.set_num_threads(1)
