"""Datasets made on the fly from a seed: nothing is downloaded, the same seed gives the same tensors.

>>> from gradcourse import data
>>> ds = data.spirals(n=256, seed=0)
>>> x, y = ds                      # a Dataset unpacks to its training pair
>>> tuple(x.shape), y.dtype
((256, 2), torch.int64)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from . import _checks


@dataclass(frozen=True)
class Dataset:
    """Training tensors ``x, y`` and held-out tensors ``x_test, y_test``.

    Unpacks like a pair (``x, y = ds``), so it can be passed anywhere an ``(x, y)`` pair is expected.
    """

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    description: str = ""

    def __iter__(self):
        return iter((self.x, self.y))

    def __len__(self) -> int:
        return len(self.x)


#: Upper bounds that keep a generated dataset within a few hundred MB (a typo's 10**12 points
#: should be a clear refusal, not an allocator error).
MAX_POINTS = 1_000_000
MAX_SEQ_LEN = 10_000
MAX_VALUES = 20_000_000


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_checks.seed(seed))


def spirals(n: int = 512, seed: int = 0, noise: float = 0.2, *, n_test: int = 256) -> Dataset:
    """Two interleaved spirals in the plane, labels 0 and 1 (half the points each).

    Each class is a spiral arm: radius ``r`` runs evenly from 0 to 1 and the angle is
    ``4 r + k π`` for class ``k``, plus Gaussian angle noise of standard deviation ``noise``
    (radians). The classes are not linearly separable, so a network needs depth or width to
    fit them, which is what makes it a good patient for the gradient lessons.

    >>> ds = spirals(n=100, seed=1, noise=0.1, n_test=20)
    >>> ds.x.shape, ds.x_test.shape, int(ds.y.sum())
    (torch.Size([100, 2]), torch.Size([20, 2]), 50)
    """
    seed = _checks.seed(seed)
    n = _checks.integer("n", n, low=2, high=MAX_POINTS)
    n_test = _checks.integer("n_test", n_test, low=0, high=MAX_POINTS)
    noise = _checks.number("noise", noise, low=0.0)
    gen = _generator(seed)
    x, y = _spiral_points(n, noise, gen)
    x_test, y_test = _spiral_points(n_test, noise, gen)
    return Dataset(x, y, x_test, y_test, f"spirals(n={n}, seed={seed}, noise={noise})")


def _spiral_points(n: int, noise: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % 2
    radius = torch.rand(n, generator=gen)
    angle = 4.0 * radius + math.pi * labels + noise * torch.randn(n, generator=gen)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return x, labels


def adding_problem(seq_len: int = 50, n: int = 1024, seed: int = 0, *, n_test: int = 256) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber 1997; the variant of Le et al. 2015).

    Each input is a sequence of shape ``(seq_len, 2)``. Channel 0 holds values drawn uniformly
    from [0, 1]; channel 1 is a marker that is 1 at exactly two positions, one in the first half
    of the sequence and one in the second half, and 0 elsewhere. The target (shape ``(n, 1)``,
    float) is the sum of the two marked values.

    The trivial baseline always predicts 1 (the mean of the target). The sum of two independent
    uniform values has variance 2 × 1/12, so that baseline's mean squared error is exactly 1/6.
    A model must carry the first marked value across at least ``seq_len / 2`` steps to beat it,
    which is what makes the task a test of gradients through time.

    >>> ds = adding_problem(seq_len=10, n=4, seed=0, n_test=0)
    >>> tuple(ds.x.shape), tuple(ds.y.shape), ds.x[:, :, 1].sum(dim=1).tolist()
    ((4, 10, 2), (4, 1), [2.0, 2.0, 2.0, 2.0])
    """
    seed = _checks.seed(seed)
    seq_len = _checks.integer("seq_len", seq_len, low=2, high=MAX_SEQ_LEN)
    n = _checks.integer("n", n, low=1, high=MAX_POINTS)
    n_test = _checks.integer("n_test", n_test, low=0, high=MAX_POINTS)
    if (n + n_test) * seq_len > MAX_VALUES:
        raise ValueError(f"n, n_test and seq_len ask for {(n + n_test) * seq_len:,} time steps in all; at most "
                         f"{MAX_VALUES:,} fit in memory comfortably: lower n or seq_len")
    gen = _generator(seed)
    x, y = _adding_sequences(n, seq_len, gen)
    x_test, y_test = _adding_sequences(n_test, seq_len, gen)
    return Dataset(x, y, x_test, y_test, f"adding_problem(seq_len={seq_len}, n={n}, seed={seed})")


def _adding_sequences(n: int, seq_len: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    values = torch.rand(n, seq_len, generator=gen)
    half = seq_len // 2
    first = torch.randint(0, half, (n,), generator=gen)
    second = torch.randint(half, seq_len, (n,), generator=gen)
    markers = torch.zeros(n, seq_len)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    target = (values * markers).sum(dim=1, keepdim=True)
    return torch.stack([values, markers], dim=2), target


#: Mean squared error of always predicting 1 on the adding problem: Var(U + U') = 2/12.
ADDING_BASELINE_MSE = 1.0 / 6.0


@functools.lru_cache(maxsize=8)
def cached_spirals(n: int = 512, seed: int = 0) -> Dataset:
    """:func:`spirals` with its default noise, remembered: an explorer redraws on every slider move
    with the same points, so it builds them once. Do not modify the tensors in place.

    >>> cached_spirals(256) is cached_spirals(256)
    True
    """
    seed = _checks.seed(seed)
    return spirals(n, seed=seed)


# --- lesson 09 ---

def reversal(n: int = 4096, seed: int = 0, *, seq_len: int = 8, vocab: int = 16, n_test: int = 512) -> Dataset:
    """Reverse a sequence of tokens: the Transformer task of lesson 09.

    ``x`` holds ``n`` sequences of ``seq_len`` tokens drawn uniformly from ``0 … vocab-1``
    (integers, shape ``(n, seq_len)``); the target ``y`` is each sequence reversed, so position
    ``t`` must copy the token at position ``seq_len - 1 - t``. A model that ignores its input
    can do no better than a uniform guess: its cross-entropy is ``ln vocab`` (ln 16 ≈ 2.773),
    :data:`REVERSAL_CHANCE_LOSS`. Solving the task needs attention to the mirrored position.

    >>> ds = reversal(n=3, seed=0, n_test=0)
    >>> tuple(ds.x.shape), ds.x.dtype, bool((ds.y == ds.x.flip(1)).all())
    ((3, 8), torch.int64, True)
    """
    seed = _checks.seed(seed)
    n = _checks.integer("n", n, low=1)
    n_test = _checks.integer("n_test", n_test, low=0)
    seq_len = _checks.integer("seq_len", seq_len, low=1)
    vocab = _checks.integer("vocab", vocab, low=2)
    gen = _generator(seed)
    x = torch.randint(0, vocab, (n, seq_len), generator=gen)
    x_test = torch.randint(0, vocab, (n_test, seq_len), generator=gen)
    return Dataset(x, x.flip(1), x_test, x_test.flip(1),
                   f"reversal(n={n}, seed={seed}, seq_len={seq_len}, vocab={vocab})")


#: Cross-entropy of a uniform guess over the 16 tokens of :func:`reversal`: ln 16.
REVERSAL_CHANCE_LOSS = math.log(16)


# -- real data: the handwritten digits scikit-learn ships ------------------------------------------
#: Pixels of the digits images take the integer values 0 … 16 (4×4 blocks of a 32×32 bitmap counted).
DIGITS_MAX_PIXEL = 16.0


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # The file that sklearn.datasets.load_digits reads, read here without importing scikit-learn:
    # its import (scipy and the rest) cost lesson 08 1.4 s of CPU and 76 MB of a kernel's memory
    # for a 1,797-line CSV. find_spec locates the installed package without running it; nothing is
    # downloaded. Each line is 64 pixels (0 … 16) and the label, the rows in load_digits' order.
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("data.digits reads the digits that scikit-learn ships: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.float32)
    return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(np.int64)


def digits(seed: int = 0, *, n_test: int = 360, flatten: bool = False) -> Dataset:
    """The 1,797 handwritten digits (8×8 images, labels 0–9) that scikit-learn ships, split at random.

    Real data with no download: ``sklearn.datasets.load_digits`` (the UCI "optical recognition of
    handwritten digits" test set) lives inside the scikit-learn package. Pixels are scaled from
    0 … 16 to 0 … 1. ``x`` has shape ``(n, 1, 8, 8)`` (one channel, ready for ``nn.Conv2d``), or
    ``(n, 64)`` with ``flatten=True``; ``y`` holds int64 class labels. ``seed`` draws which
    ``n_test`` images are held out; the same seed gives the same split.

    >>> ds = digits(seed=0)
    >>> tuple(ds.x.shape), tuple(ds.x_test.shape), ds.y.dtype, float(ds.x.max())
    ((1437, 1, 8, 8), (360, 1, 8, 8), torch.int64, 1.0)
    >>> digits(seed=0, flatten=True).x.shape
    torch.Size([1437, 64])
    """
    seed = _checks.seed(seed)
    images, labels = _digits_arrays()
    n_test = _checks.integer("n_test", n_test, low=0, high=len(images) - 1)
    flatten = _checks.flag("flatten", flatten)
    order = torch.randperm(len(images), generator=_generator(seed))
    x = torch.from_numpy(images / DIGITS_MAX_PIXEL)
    x = x if flatten else x.reshape(-1, 1, 8, 8)
    y = torch.from_numpy(labels)
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test],
                   f"digits(seed={seed}, n_test={n_test}{', flatten=True' if flatten else ''})")


def digits_images(dataset: Dataset, *, size: int = 32, channels: int = 3, n: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training digits of ``dataset`` as ``(n, channels, size, size)`` images for an ImageNet-
    shaped model: each 8×8 image upsampled (bilinear) and repeated over the channels, standardised
    to mean 0 and std 1 over the training images; ``n`` keeps the first ``n``. Returns ``(x, y)``.

    >>> x, y = digits_images(digits(0), n=4)
    >>> tuple(x.shape), tuple(y.shape)
    ((4, 3, 32, 32), (4,))
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a gradcourse.data.Dataset (e.g. data.digits()); got {dataset!r}")
    size = _checks.integer("size", size, low=8, high=256)
    channels = _checks.integer("channels", channels, low=1, high=16)
    x, y = dataset.x, dataset.y
    if n is not None:
        n = _checks.integer("n", n, low=1, high=len(x))
        x, y = x[:n], y[:n]
    big = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    big = (big - dataset.x.mean()) / dataset.x.std()
    return big.repeat(1, channels, 1, 1).contiguous(), y
