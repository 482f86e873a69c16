"""Lesson 08's digits models, its plain training loop, the explorer and the exercise checks.

The lesson leaves ``fit`` behind: a learner's own ``nn.Sequential`` on real data (the digits that
scikit-learn ships), trained by an ordinary PyTorch loop, with a :class:`~gradcourse.probes.Probe`
attached in one line and the doctor reading what it recorded. This module holds the same pieces
for the explorer and the checks: :func:`build` (an MLP or a small CNN for 8×8 digits),
:func:`train_loop` (mini-batch SGD with momentum, stopped at the first NaN) and
:class:`DigitsExplorer`; and, for "a model you did not write", :func:`resnet18` (torchvision's
ResNet-18) with :func:`digits_images`, the digits as small RGB images it can read.

>>> from gradcourse.widgets.lesson08 import DigitsExplorer
>>> result = DigitsExplorer().run(activation="relu", init="he", batchnorm=True)
>>> result.values["problem"], result.values["test_accuracy"] > 0.8   # 0.90-0.95 over seeds and CPUs
('healthy', True)
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from .. import _checks, data, plots
from ..doctor import VANISHING_SIGNAL_RATIO, Diagnosis, diagnose
from ..exercises import Feedback, check_whole_number, missing
from ..probes import Probe, probe_once
from ..trace import Trace
from ..train import accuracy  # noqa: F401  (the lesson's name for it: eval mode, then back)
from .base import Explorer, Param, Result

KINDS = ("mlp", "cnn")
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
#: "default" is PyTorch's own init (uniform, std 1/√(3·fan_in)); "he" is He (kaiming) normal,
#: Var(w) = 2/fan_in; "xavier" is Glorot normal, Var(w) = 2/(fan_in + fan_out). Biases start at 0
#: except with "default".
INITS = ("default", "he", "xavier")
#: The lesson's recipe: mini-batches of 64, SGD with momentum 0.9, 10 epochs of the 1,437 training
#: images (230 steps), a probe recording every 5th step.
BATCH = 64
MOMENTUM = 0.9
LR = 0.03
EVERY = 5
#: The explorer's budget: the first 512 training images and 200 steps (about 1–3 s on one core).
EXPLORER_SUBSET = 512
EXPLORER_STEPS = 200
#: The check of the "broken model" exercise trains the learner's model this long at ``LR``.
CHECK_STEPS = 230
CHECK_ACCURACY = 0.9


# -- models ------------------------------------------------------------------------------------
def build(kind: str = "mlp", depth: int = 12, *, activation: str = "sigmoid", init: str = "default",
          batchnorm: bool = False, width: int = 64, seed: int = 0) -> nn.Sequential:
    """An ``nn.Sequential`` for 8×8 digits (input ``(n, 1, 8, 8)``, 10 logits out).

    ``kind="mlp"``: ``Flatten``, then ``depth`` blocks ``Linear(width) → [BatchNorm1d] →
    activation``, then ``Linear(10)``. ``kind="cnn"``: ``depth`` blocks ``Conv2d(3×3, padding 1)
    → [BatchNorm2d] → activation``, the first half with ``width // 4`` channels on the 8×8 grid,
    a 2×2 max-pool, the rest with ``width // 2`` channels on 4×4, a max-pool, then ``Linear(10)``.
    The same ``seed`` builds the same weights without touching torch's global random state.

    >>> net = build("cnn", 4, activation="relu", init="he", batchnorm=True)
    >>> net(torch.zeros(2, 1, 8, 8)).shape, sum(isinstance(m, nn.Conv2d) for m in net)
    (torch.Size([2, 10]), 4)
    """
    seed = _checks.seed(seed)
    _checks.choice("kind", kind, KINDS)
    depth = _checks.integer("depth", depth, low=2 if kind == "cnn" else 1, high=60)
    _checks.choice("activation", activation, ACTIVATIONS)
    _checks.choice("init", init, INITS)
    if not isinstance(batchnorm, bool):
        raise ValueError(f"batchnorm must be True or False; got {batchnorm!r}")
    width = _checks.integer("width", width, low=4, high=512)
    act = ACTIVATIONS[activation]
    layers: dict[str, nn.Module] = {}  # named, so that the probe and the doctor name layers readably
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "mlp":
            layers["flatten"] = nn.Flatten()
            fan_in = 64
            for k in range(1, depth + 1):
                layers[f"fc{k}"] = nn.Linear(fan_in, width)
                if batchnorm:
                    layers[f"bn{k}"] = nn.BatchNorm1d(width)
                layers[f"act{k}"] = act()
                fan_in = width
            layers["head"] = nn.Linear(width, 10)
        else:
            channels, first_stage = 1, (depth + 1) // 2
            for k in range(1, depth + 1):
                out = width // 4 if k <= first_stage else width // 2
                layers[f"conv{k}"] = nn.Conv2d(channels, out, 3, padding=1)
                if batchnorm:
                    layers[f"bn{k}"] = nn.BatchNorm2d(out)
                layers[f"act{k}"] = act()
                channels = out
                if k in (first_stage, depth):
                    layers[f"pool{k}"] = nn.MaxPool2d(2)
            layers["flatten"] = nn.Flatten()
            layers["head"] = nn.Linear(channels * 4, 10)
        model = nn.Sequential(OrderedDict(layers))
        if init != "default":
            for module in model.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    if init == "he":
                        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    else:
                        nn.init.xavier_normal_(module.weight)
                    nn.init.zeros_(module.bias)
    return model


def broken_model(seed: int = 0) -> nn.Sequential:
    """The model of the exercise "find and fix it": a colleague's digits CNN that does not learn.

    (What is wrong with it is for the learner to find with the probe and the doctor.)
    """
    seed = _checks.seed(seed)
    model = build("cnn", 6, activation="tanh", init="default", seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=1.0)
    return model


# -- a model you did not write: torchvision's ResNet-18 ---------------------------------------------
def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: conv3x3 → BN → ReLU (in place) → conv3x3 → BN, plus the
    identity (or a 1×1 conv + BN ``downsample``) added in place, then the same ReLU again."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity  # the functional residual add, in place as torchvision writes it
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` with ``BasicBlock`` (``resnet18``: two blocks per stage)."""

    def __init__(self, layers: tuple[int, int, int, int] = (2, 2, 2, 2), num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)
        for m in self.modules():  # torchvision's init (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _torchvision_resnet18(num_classes: int) -> nn.Module | None:
    """``torchvision.models.resnet18(num_classes=...)`` if torchvision imports and loads, else None."""
    try:
        from torchvision.models import resnet18 as tv_resnet18
    except Exception:  # noqa: BLE001 - not installed, or built for another torch (operator ... does not exist)
        return None
    return tv_resnet18(num_classes=num_classes)


def resnet18(num_classes: int = 10, *, in_channels: int = 3, seed: int = 0) -> nn.Module:
    """ResNet-18 as torchvision defines it, with its own initialisation, built from ``seed``.

    ``torchvision.models.resnet18(num_classes=num_classes)`` when torchvision is importable, else
    the same architecture written out here (:class:`ResNet`, :class:`BasicBlock`), because PyPI's
    torchvision wheel does not load with the CPU build of torch the course installs. Either way the
    module names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
    …, ``fc``), the ReLUs are in place, the residual add is ``out += identity`` in ``forward``, and
    the init is torchvision's: He (kaiming) normal with ``mode="fan_out"`` for every convolution,
    BatchNorm weight 1 and bias 0, PyTorch's default for ``fc``. ``in_channels`` other than 3
    replaces the stem convolution ``conv1`` by one that reads that many channels (same init).
    The same ``seed`` builds the same weights without touching torch's global random state.

    >>> net = resnet18(10, seed=0)
    >>> net(torch.zeros(2, 3, 32, 32)).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([2, 10]), 11181642)
    >>> [name for name, _ in net.named_modules()][1:4], net.layer1[0].relu.inplace
    (['conv1', 'bn1', 'relu'], True)
    >>> resnet18(0)
    Traceback (most recent call last):
    ...
    ValueError: num_classes must be at least 1; got 0
    """
    seed = _checks.seed(seed)
    num_classes = _checks.integer("num_classes", num_classes, low=1)
    in_channels = _checks.integer("in_channels", in_channels, low=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _torchvision_resnet18(num_classes) or ResNet((2, 2, 2, 2), num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def digits_images(dataset: data.Dataset, *, size: int = 32, channels: int = 3, n: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training digits of ``dataset`` as ``(n, channels, size, size)`` images for an ImageNet-
    shaped model: each 8×8 image upsampled (bilinear) and repeated over the channels, standardised
    to mean 0 and std 1 over the training images; ``n`` keeps the first ``n``. Returns ``(x, y)``.

    >>> x, y = digits_images(data.digits(0), n=4)
    >>> tuple(x.shape), tuple(y.shape)
    ((4, 3, 32, 32), (4,))
    """
    if not isinstance(dataset, data.Dataset):
        raise ValueError(f"dataset must be a gradcourse.data.Dataset (e.g. data.digits()); got {dataset!r}")
    size = _checks.integer("size", size, low=8, high=256)
    channels = _checks.integer("channels", channels, low=1, high=16)
    x, y = dataset.x, dataset.y
    if n is not None:
        n = _checks.integer("n", n, low=1, high=len(x))
        x, y = x[:n], y[:n]
    big = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    big = (big - dataset.x.mean()) / dataset.x.std()
    return big.repeat(1, channels, 1, 1).contiguous(), y


# -- the training loop ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """What :func:`train_loop` returns: the loss of every step (the last one NaN/Inf if training
    diverged), the probe's trace, the doctor's verdict and the test accuracy (NaN if diverged)."""

    losses: list[float]
    trace: Trace
    diagnosis: Diagnosis
    test_accuracy: float
    model: nn.Module

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.losses[-1])


def train_loop(model: nn.Module, dataset: data.Dataset, *, lr: float = LR, steps: int = 230,
               batch_size: int = BATCH, seed: int = 0, every: int = EVERY, subset: int | None = None,
               progress: bool = False) -> Outcome:
    """Train ``model`` on ``dataset`` with a plain PyTorch loop under a probe; stop at the first NaN.

    The loop of the lesson's notebook: a ``DataLoader`` shuffling with a generator seeded by
    ``seed``, mini-batches of ``batch_size``, cross-entropy, SGD with momentum 0.9. ``subset``
    trains on the first ``subset`` training images only. ``progress`` shows a ``tqdm.auto`` bar.

    >>> out = train_loop(build("mlp", 3, activation="relu", init="he"), data.digits(0), steps=20)
    >>> len(out.losses), out.trace.steps.tolist()[:3], out.diagnosis.problem
    (20, [0, 5, 10], 'healthy')
    """
    seed = _checks.seed(seed)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(dataset, data.Dataset):
        raise ValueError(f"dataset must be a gradcourse.data.Dataset (e.g. data.digits()); got {dataset!r}")
    lr = _checks.number("lr", lr, low=0.0, low_open=True)
    steps = _checks.integer("steps", steps, low=1)
    batch_size = _checks.integer("batch_size", batch_size, low=1)
    every = _checks.integer("every", every, low=1)
    x, y = dataset.x, dataset.y
    if subset is not None:
        subset = _checks.integer("subset", subset, low=batch_size, high=len(x))
        x, y = x[:subset], y[:subset]
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
    losses: list[float] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="training", leave=False)
    model.train()
    try:
        with Probe(model, every=every) as probe:
            while len(losses) < steps and (not losses or math.isfinite(losses[-1])):
                for xb, yb in loader:  # one epoch
                    loss = nn.functional.cross_entropy(model(xb), yb)
                    losses.append(loss.item())
                    if not math.isfinite(losses[-1]):
                        break  # stop cleanly at the first NaN/Inf
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    if bar is not None:
                        bar.update()
                    if len(losses) == steps:
                        break
    finally:
        if bar is not None:
            bar.close()
    trace = probe.trace
    score = math.nan if not math.isfinite(losses[-1]) else accuracy(model, dataset.x_test, dataset.y_test)
    return Outcome(losses, trace, doctor(trace, losses, model), score, model)


def doctor(trace: Trace, losses: list[float], model: nn.Module | None = None) -> Diagnosis:
    """The doctor on a hand-written loop: ``diagnose(trace, losses=losses, model=model)``."""
    return diagnose(trace, losses=losses, model=model)


# -- figures ---------------------------------------------------------------------------------------
@plots.styled
def loop_figure(outcome: Outcome, *, title: str = ""):
    """Three panels: the gradient per layer at step 0, the loss (✕ where it became NaN), and how
    much each layer's weights moved per step (median ‖ΔW‖/‖W‖ over the run)."""
    trace = outcome.trace
    fig, axes = plots.new_figure(3, width=4.2, height=3.3)
    layers = np.arange(1, len(trace.layers) + 1)
    plots.draw_layer_gradients(axes[0, 0], trace.get("grad_norm")[0], trace.get("output_grad_norm")[0],
                               title="Gradient per layer at step 0",
                               xlabel="layer (1 = nearest the input)", markersize=4)
    ax = axes[0, 1]
    losses = np.asarray(outcome.losses, dtype=float)
    finite = np.isfinite(losses)
    ax.plot(np.arange(len(losses))[finite], losses[finite], color=plots.COLORS[3])
    if not finite.all():
        step = int(np.flatnonzero(~finite)[0])
        last = losses[finite][-1] if finite.any() else 1.0
        ax.plot([step], [last], "x", ms=10, mew=3, color=plots.COLORS[3])
        ax.annotate(f"NaN at step {step}", (step, last), fontsize="small", textcoords="offset points",
                    xytext=(-6, 8), ha="right")
    ax.axhline(math.log(10), color="grey", ls=":", label="ln 10: a guess among 10 digits")
    shown = losses[finite]
    log = len(shown) > 0 and shown.min() > 0 and shown.max() / shown.min() > 10
    if log:  # a log axis only where the loss spans more than a decade (a plateau reads better linear)
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("cross-entropy loss" + (" (log scale)" if log else ""))
    ax.set_title("Training loss")
    ax.legend(fontsize="small")
    ax = axes[0, 2]
    ratios = trace.get("update_ratio").astype(float)
    rows = np.isfinite(ratios).all(axis=1)
    median = np.median(ratios[rows], axis=0) if rows.any() else np.full(len(layers), np.nan)
    ax.bar(layers, np.where(median > 0, median, np.nan), color=plots.COLORS[1])
    ax.set_yscale("log")
    ax.set_xlim(0.4, len(layers) + 0.6)
    for layer in layers[median == 0]:  # no bar on a log axis: say that the weights did not move
        ax.annotate("0", (layer, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize="small")
    ax.set_xlabel("layer (1 = nearest the input)")
    ax.set_ylabel("‖ΔW‖/‖W‖ per step, median (log)")
    ax.set_title("How much each layer learns")
    fig.suptitle(title or f"Doctor: {outcome.diagnosis.problem}")
    return fig


# -- the explorer ------------------------------------------------------------------------------
class DigitsExplorer(Explorer):
    """Build a digits model (depth, activation, init, BatchNorm), train it for a few hundred steps
    on a subset with a plain loop under a probe, and see the doctor's verdict and the probes."""

    title = (f"Lesson 08: your own model on the digits ({EXPLORER_STEPS} steps on "
             f"{EXPLORER_SUBSET} training images; press Run)")
    params = {
        "kind": Param("mlp", options=KINDS, label="model"),
        "depth": Param(12, low=2, high=30, label="depth (hidden layers)"),
        "activation": Param("sigmoid", options=tuple(ACTIVATIONS), label="activation"),
        "init": Param("default", options=INITS, label="init"),
        "batchnorm": Param(False, label="BatchNorm"),
        "lr": Param(LR, low=3e-4, high=3.0, step=0.25, log=True, label="learning rate"),  # 0.03 and 3 on the grid
        "seed": Param(0, low=0, high=4, label="seed"),
        "steps": Param(EXPLORER_STEPS, low=0, high=400, step=50, label="training steps (0 = at initialisation only)"),
    }
    manual = True  # a run trains for 1–5 s: it starts on the Run button, with a progress bar
    #: A control change redraws the untrained model's gradients at once; the Run button trains.
    preview = {"steps": 0}

    def compute(self, kind, depth, activation, init, batchnorm, lr, seed, steps) -> Result:
        model = build(kind, depth, activation=activation, init=init, batchnorm=batchnorm, seed=seed)
        name = (f"{depth}-layer {kind.upper()}, {activation}, {init} init"
                f"{', BatchNorm' if batchnorm else ''}")
        ds = data.digits(seed)
        if steps == 0:
            trace = probe_once(model, ds.x[:EXPLORER_SUBSET], ds.y[:EXPLORER_SUBSET])
            signal = trace.get("output_grad_norm")[0, :-1]
            ratio = float(signal[0] / signal[-1]) if len(signal) > 1 else math.nan
            summary = (f"<b>{name}</b>, untrained: the first hidden layer receives {ratio:.2g} times the "
                       "gradient signal of the last. Set the steps and press Run to train and ask the doctor.")
            return Result(figure=plots.grad_norms(trace, title=f"{name}:\ngradient per layer at initialisation"),
                          values={"signal_ratio": ratio}, summary=summary)
        outcome = train_loop(model, ds, lr=lr, steps=steps, seed=seed, subset=EXPLORER_SUBSET,
                             progress=self.progress)
        d = outcome.diagnosis
        signal = outcome.trace.get("output_grad_norm")[0, :-1]
        values = {
            "problem": d.problem, "test_accuracy": outcome.test_accuracy,
            "diverged_at": d.diverged_at, "final_loss": outcome.losses[-1],
            "signal_ratio": float(signal[0] / signal[-1]) if len(signal) > 1 else math.nan,
        }
        accuracy = ("diverged" if math.isnan(outcome.test_accuracy)
                    else f"{outcome.test_accuracy:.0%}")
        name += f", lr {lr:.3g}"
        summary = (f"<b>{name}</b>: {d.headline} {d.evidence[0] if d.evidence else ''}<br>"
                   f"Test accuracy after {len(outcome.losses)} steps: <b>{accuracy}</b> (chance: 10%).")
        figure = loop_figure(outcome, title=f"{name}: the doctor says {d.problem}")
        return Result(figure=figure, values=values, runs={"outcome": outcome}, summary=summary)


# -- exercise checks ---------------------------------------------------------------------------
def vanishing_depth(*, max_depth: int = 20, seed: int = 0) -> int:
    """The smallest depth at which a sigmoid MLP (width 64, PyTorch's default init) on the digits
    sends back to its first layer less than ``VANISHING_SIGNAL_RATIO`` of the signal at its last
    hidden layer, at step 0 (one probed batch of 256 training images)."""
    seed = _checks.seed(seed)
    ds = data.digits(seed)
    x, y = ds.x[:256], ds.y[:256]
    for depth in range(2, max_depth + 1):
        trace = probe_once(build("mlp", depth, activation="sigmoid", seed=seed), x, y)
        signal = trace.get("output_grad_norm")[0, :-1]
        if signal[0] / signal[-1] < VANISHING_SIGNAL_RATIO:
            return depth
    return max_depth + 1


def check_vanishing_depth(answer) -> Feedback:
    """Exercise 1: the depth at which the doctor starts calling the sigmoid MLP "vanishing" (±1)."""
    name = "the depth"
    if answer is None:
        return missing(name)
    expected = vanishing_depth()
    return check_whole_number(answer, expected, name=name, within=1, unit=" of hidden layers", low=1,
                              praise=f"Measured: from {expected} layers on, the first layer hears less than "
                                     f"{VANISHING_SIGNAL_RATIO:g} of the last layer's signal.",
                              hint="Take the per-layer factor χ from the 12-layer network's signal ratio "
                                   "(ratio = χ^11) and solve χ^(L-1) < 1e-4 for L.")


def check_fixed_model(answer, *, seed: int = 0) -> Feedback:
    """Exercise 3: a model that fixes :func:`broken_model`. It is trained here (``CHECK_STEPS``
    steps at ``LR``, the lesson's loop, same seed) and must be called healthy and reach
    ``CHECK_ACCURACY`` on the test images."""
    seed = _checks.seed(seed)
    name = "your fixed model"
    if answer is None:
        return missing(name)
    if not isinstance(answer, nn.Module):
        return Feedback(False, f"{name} should be a torch.nn.Module (e.g. an nn.Sequential); "
                               f"got {type(answer).__name__}.")
    ds = data.digits(seed)
    try:
        with torch.no_grad():
            out = answer(ds.x[:2])
    except Exception as error:  # noqa: BLE001 - any failure of the learner's model becomes feedback
        return Feedback(False, f"{name} cannot read a batch of digits of shape (n, 1, 8, 8): "
                               f"{type(error).__name__}: {error}")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return Feedback(False, f"{name} should return 10 logits per image, shape (n, 10); got {shape}.")
    try:
        outcome = train_loop(answer, ds, lr=LR, steps=CHECK_STEPS, seed=seed)
    except Exception as error:  # noqa: BLE001 - any failure of the learner's model or loop becomes feedback
        return Feedback(False, f"{name} could not be probed and trained: {type(error).__name__}: {error}")
    d = outcome.diagnosis
    if outcome.diverged:
        return Feedback(False, f"Training {name} diverged: {d.headline} Look at the init scale.")
    accuracy = outcome.test_accuracy
    layers = [m for m in answer.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if d.problem == "inconclusive" and len(layers) == 1 and accuracy >= CHECK_ACCURACY:
        # one layer has no hidden units: the saturation and dead units the doctor could not measure do not exist
        return Feedback(True, f"Fixed: a single layer has no hidden units to saturate or die, and its gradient "
                              f"reaches {accuracy:.1%} on the test images. (The doctor says 'inconclusive' only "
                              "because it could not look at hidden activations; there are none.) Now try to keep "
                              "the broken model's depth.")
    if d.problem != "healthy":
        return Feedback(False, f"The doctor still finds a problem ({d.problem}): {d.evidence[0]} "
                               f"(test accuracy {accuracy:.0%}).")
    if accuracy < CHECK_ACCURACY:
        return Feedback(False, f"The gradients look healthy, but the test accuracy after {CHECK_STEPS} "
                               f"steps is {accuracy:.0%} (needed: {CHECK_ACCURACY:.0%}). Try BatchNorm "
                               "or ReLU with He init.")
    return Feedback(True, f"Fixed: the doctor calls it healthy and it reaches {accuracy:.1%} on the test "
                          "images.")
