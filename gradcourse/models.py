"""Model factories: a deep MLP (plain, BatchNorm, residual), an unrolled recurrent sequence model, and
lesson 08's models of your own (a digits MLP or CNN as an ``nn.Sequential``, torchvision's ResNet-18).

Hidden linear layers are named ``layer1``, ``layer2``, … front to back, so probes and plots can
label them; every model of the course's recipes records the arguments it was built with in
``model.config``. Lesson 08's models carry none, like a model you wrote: the doctor reads them from
their modules.

>>> from gradcourse.models import mlp
>>> net = mlp(depth=3, width=16, activation="tanh", init="xavier", seed=0)
>>> [name for name, _ in net.named_children()][:4]
['layer1', 'act1', 'layer2', 'act2']
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from . import _checks

ACTIVATIONS = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "linear": nn.Identity,
}
INITS = ("default", "xavier", "kaiming", "normal")
CELLS = ("rnn", "lstm", "gru")


class MLP(nn.Module):
    """A stack of ``layerK → [bnK] → actK`` hidden layers and a linear ``head``.

    With ``residual=True`` every hidden layer after the first adds its input back:
    ``h_k = h_{k-1} + act(bn(W_k h_{k-1}))``, so the Jacobian of a block is ``I + ∂f/∂h``.
    """

    def __init__(self, depth: int, width: int, activation: str, batchnorm: bool, residual: bool,
                 in_features: int, out_features: int):
        super().__init__()
        self.depth = depth
        self.residual = residual
        self.activation = activation
        for k in range(1, depth + 1):
            self.add_module(f"layer{k}", nn.Linear(in_features if k == 1 else width, width))
            if batchnorm:
                self.add_module(f"bn{k}", nn.BatchNorm1d(width))
            self.add_module(f"act{k}", ACTIVATIONS[activation]())
        self.head = nn.Linear(width, out_features)
        #: Which module's output is the activation of each hidden layer (read by probes).
        self.probe_activations = {f"layer{k}": f"act{k}" for k in range(1, depth + 1)}
        # Each hidden layer's module names, spelled once: forward looks the modules up by name in
        # ``_modules`` (so a module replaced later, as lesson 02 swaps activations, is the one called)
        # without formatting names or a failing ``hasattr`` per layer, which cost about 1 ms of a
        # 50-layer net's 6 ms forward pass (issue 24).
        self._steps = [(f"layer{k}", f"bn{k}", f"act{k}") for k in range(1, depth + 1)]

    def hidden_layers(self) -> list[nn.Linear]:
        """The hidden linear layers, front to back."""
        return [getattr(self, f"layer{k}") for k in range(1, self.depth + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules
        for k, (linear, bn, act) in enumerate(self._steps):
            z = modules[linear](x)
            if bn in modules:
                z = modules[bn](z)
            a = modules[act](z)
            x = x + a if self.residual and k > 0 else a
        return modules["head"](x)


def mlp(
    depth: int,
    width: int,
    *,
    activation: str = "sigmoid",
    init: str = "default",
    weight_std: float | None = None,
    batchnorm: bool = False,
    residual: bool = False,
    in_features: int = 2,
    out_features: int = 2,
    seed: int = 0,
) -> MLP:
    """A deep multilayer perceptron with ``depth`` hidden layers of ``width`` units.

    ``init`` chooses the weight initialisation of every linear layer (biases start at 0 except
    for ``"default"``): ``"default"`` is PyTorch's (uniform, std = 1/√(3·fan_in));
    ``"xavier"`` is Glorot normal, Var(w) = 2/(fan_in + fan_out); ``"kaiming"`` is He normal,
    Var(w) = 2/fan_in; ``"normal"`` draws w ~ N(0, weight_std²/fan_in), so ``weight_std`` is
    the scale relative to 1/√fan_in (√2 is He's scale). The same ``seed`` builds the same
    weights, without touching the global random state.

    >>> net = mlp(depth=20, width=64, activation="relu", init="kaiming", seed=0)
    >>> len(net.hidden_layers()), net.config["init"]
    (20, 'kaiming')
    >>> mlp(3, 8, activation="swish")
    Traceback (most recent call last):
    ...
    ValueError: activation must be one of 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'gelu', 'linear'; got 'swish'
    """
    seed = _checks.seed(seed)
    depth = _checks.integer("depth", depth, low=1, high=500)
    width = _checks.integer("width", width, low=1, high=4096)
    _checks.choice("activation", activation, ACTIVATIONS)
    _checks.choice("init", init, INITS)
    if init == "normal":
        if weight_std is None:
            raise ValueError("weight_std is required when init='normal' (a positive number)")
        weight_std = _checks.number("weight_std", weight_std, low=0.0, low_open=True)
    elif weight_std is not None:
        raise ValueError(f"weight_std is only used with init='normal'; got init={init!r}")
    batchnorm, residual = _checks.flag("batchnorm", batchnorm), _checks.flag("residual", residual)
    in_features = _checks.integer("in_features", in_features, low=1)
    out_features = _checks.integer("out_features", out_features, low=1)
    config = dict(kind="mlp", depth=depth, width=width, activation=activation, init=init,
                  weight_std=weight_std, batchnorm=batchnorm, residual=residual,
                  in_features=in_features, out_features=out_features, seed=seed)
    with _seeded(seed):
        model = MLP(depth, width, activation, batchnorm, residual, in_features, out_features)
        if init != "default":
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    init_linear(module, init, weight_std)
    model.config = config
    return model


def init_linear(layer: nn.Linear, scheme: str, weight_std: float | None = None) -> None:
    """Re-initialise one linear layer in place with ``scheme`` (see :func:`mlp`); bias set to 0.

    >>> layer = nn.Linear(4, 3, bias=False)
    >>> init_linear(layer, "normal", weight_std=0.0)
    >>> layer.weight.abs().sum().item()
    0.0
    """
    if not isinstance(layer, nn.Linear):
        raise ValueError(f"layer must be a torch.nn.Linear; got {type(layer).__name__}")
    _checks.choice("scheme", scheme, INITS)
    if scheme == "normal":
        weight_std = _checks.number("weight_std", weight_std, low=0.0)
    if scheme == "default":
        layer.reset_parameters()
        return
    with torch.no_grad():
        if scheme == "xavier":
            nn.init.xavier_normal_(layer.weight)
        elif scheme == "kaiming":
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        else:
            layer.weight.normal_(0.0, weight_std / math.sqrt(layer.in_features))
        if layer.bias is not None:
            layer.bias.zero_()


class SequenceModel(nn.Module):
    """A recurrent cell run over time, then a linear ``readout`` of the last hidden state.

    The same recurrence, with the same weights (``cell``'s), runs one of two ways:

    - **unrolled** in Python, one ``cell`` call per time step, every hidden state ``h_t`` passing
      through ``hidden_tap`` (an identity), whenever something listens: a hook on ``hidden_tap`` or
      ``cell``, or a global module hook (a probe adds one for the steps it records, to measure ‖∂L/∂h_t‖);
    - otherwise **fused**: one call of the kernel that ``nn.RNN``/``nn.GRU``/``nn.LSTM`` run (they
      keep their weights in the cell's layout), a few times faster on a CPU for the LSTM.

    Both give the same outputs and gradients (``tests/test_lesson06.py`` compares them).
    """

    def __init__(self, cell: str, hidden: int, input_size: int, output_size: int):
        super().__init__()
        self.cell_type = cell
        self.hidden = hidden
        cell_class = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]
        self.cell = cell_class(input_size, hidden)
        self.hidden_tap = nn.Identity()
        self.readout = nn.Linear(hidden, output_size)
        # The fused module's recipe only: weightless (on the meta device) and not a submodule, so the
        # model's parameters, state dict and probed layers stay the cell's.
        fused_class = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self._fused = (fused_class(input_size, hidden, batch_first=True, device="meta"),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"x must have shape (batch, seq_len, input_size); got {tuple(x.shape)}")
        h = self._unrolled(x) if self._listened() or x.shape[1] == 0 else self._fused_last(x)
        return self.readout(h)

    def _listened(self) -> bool:
        """Whether a hook may want to see each step: one on ``hidden_tap`` or ``cell``, or a global module hook."""
        for module in (self.hidden_tap, self.cell):
            if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks \
                    or module._backward_pre_hooks:
                return True
        names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
        # A torch without these registries (they are private): unroll, which is always right.
        return any(getattr(nn.modules.module, name, True) for name in names)

    def _unrolled(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden) if self.cell_type == "lstm" else None
        for t in range(x.shape[1]):
            if c is None:
                h = self.cell(x[:, t], h)
            else:
                h, c = self.cell(x[:, t], (h, c))
            h = self.hidden_tap(h)
        return h

    def _fused_last(self, x: torch.Tensor) -> torch.Tensor:
        weights = {f"{name}_l0": p for name, p in self.cell.named_parameters()}
        return torch.func.functional_call(self._fused[0], weights, (x,))[0][:, -1]


def sequence_model(
    cell: str = "rnn",
    hidden: int = 32,
    *,
    input_size: int = 2,
    output_size: int = 1,
    recurrent_scale: float | None = None,
    forget_bias: float | None = None,
    seed: int = 0,
) -> SequenceModel:
    """A recurrent model reading ``x`` of shape ``(batch, seq_len, input_size)``.

    ``cell`` is ``"rnn"`` (tanh), ``"lstm"`` or ``"gru"``, built with PyTorch's default
    initialisation. ``recurrent_scale`` (plain RNN only) replaces the recurrent matrix by a
    random orthogonal matrix times that scale, so its spectral radius is exactly the scale.
    ``forget_bias`` (LSTM only) sets the forget gate's total bias (input + hidden bias) to that
    value; a positive bias keeps the cell state, and its gradient path, open at the start.

    >>> model = sequence_model("rnn", hidden=8, recurrent_scale=0.9, seed=0)
    >>> round(torch.linalg.eigvals(model.cell.weight_hh).abs().max().item(), 4)
    0.9
    >>> model(torch.zeros(5, 7, 2)).shape
    torch.Size([5, 1])
    """
    seed = _checks.seed(seed)
    _checks.choice("cell", cell, CELLS)
    hidden = _checks.integer("hidden", hidden, low=1, high=4096)
    input_size = _checks.integer("input_size", input_size, low=1)
    output_size = _checks.integer("output_size", output_size, low=1)
    if recurrent_scale is not None:
        if cell != "rnn":
            raise ValueError(f"recurrent_scale applies to cell='rnn' only; got cell={cell!r}")
        recurrent_scale = _checks.number("recurrent_scale", recurrent_scale, low=0.0, low_open=True)
    if forget_bias is not None:
        if cell != "lstm":
            raise ValueError(f"forget_bias applies to cell='lstm' only; got cell={cell!r}")
        forget_bias = _checks.number("forget_bias", forget_bias)
    config = dict(kind="sequence", cell=cell, hidden=hidden, input_size=input_size,
                  output_size=output_size, recurrent_scale=recurrent_scale,
                  forget_bias=forget_bias, seed=seed)
    with _seeded(seed):
        model = SequenceModel(cell, hidden, input_size, output_size)
        with torch.no_grad():
            if recurrent_scale is not None:
                orthogonal = torch.empty(hidden, hidden)
                nn.init.orthogonal_(orthogonal)
                model.cell.weight_hh.copy_(recurrent_scale * orthogonal)
            if forget_bias is not None:
                # PyTorch orders LSTM gates as input, forget, cell, output.
                forget = slice(hidden, 2 * hidden)
                model.cell.bias_ih[forget] = forget_bias
                model.cell.bias_hh[forget] = 0.0
    model.config = config
    return model


class _seeded:
    """Seed torch's global generator inside the block and restore it afterwards."""

    def __init__(self, seed: int):
        self.seed = _checks.seed(seed)

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


# --- lesson 05 ---

class ResidualMLP(nn.Module):
    """A stem ``layer1 → [bn1] → act1``, then ``blocks`` two-linear blocks, then a linear ``head``.

    Block b uses ``layer{2b}`` and ``layer{2b+1}``:
    ``f(h) = [bn{2b+1}](layer{2b+1}(act{2b}([bn{2b}](layer{2b}(h)))))`` and, with
    ``residual=True``, ``h ← h + f(h)`` (the identity path; the block's Jacobian is ``I + ∂f/∂h``);
    with ``residual=False``, ``h ← act{2b+1}(f(h))``, an ordinary plain stack of the same linear
    layers. The stream after each block passes ``out{b}`` (an identity the probes read).
    """

    def __init__(self, blocks: int, width: int, activation: str, batchnorm: bool, residual: bool,
                 in_features: int, out_features: int):
        super().__init__()
        self.blocks = blocks
        self.residual = residual
        self.depth = 2 * blocks + 1
        self.layer1 = nn.Linear(in_features, width)
        if batchnorm:
            self.bn1 = nn.BatchNorm1d(width)
        self.act1 = ACTIVATIONS[activation]()
        self.probe_activations = {"layer1": "act1"}
        for b in range(1, blocks + 1):
            first, second = 2 * b, 2 * b + 1
            self.add_module(f"layer{first}", nn.Linear(width, width))
            if batchnorm:
                self.add_module(f"bn{first}", nn.BatchNorm1d(width))
            self.add_module(f"act{first}", ACTIVATIONS[activation]())
            self.add_module(f"layer{second}", nn.Linear(width, width))
            if batchnorm:
                self.add_module(f"bn{second}", nn.BatchNorm1d(width))
            if not residual:
                self.add_module(f"act{second}", ACTIVATIONS[activation]())
            self.add_module(f"out{b}", nn.Identity())
            self.probe_activations[f"layer{first}"] = f"act{first}"
            self.probe_activations[f"layer{second}"] = f"out{b}"
        self.head = nn.Linear(width, out_features)
        # Each block's module names, spelled once (see MLP._steps: forward looks them up in ``_modules``).
        self._blocks = [(f"layer{2 * b}", f"bn{2 * b}", f"act{2 * b}", f"layer{2 * b + 1}", f"bn{2 * b + 1}",
                         f"act{2 * b + 1}", f"out{b}") for b in range(1, blocks + 1)]

    def hidden_layers(self) -> list[nn.Linear]:
        """The hidden linear layers (stem, then two per block), front to back."""
        return [getattr(self, f"layer{k}") for k in range(1, self.depth + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules

        def linear(name: str, bn: str, h: torch.Tensor) -> torch.Tensor:
            z = modules[name](h)
            return modules[bn](z) if bn in modules else z

        h = modules["act1"](linear("layer1", "bn1", x))
        for first, bn_first, act_first, second, bn_second, act_second, out in self._blocks:
            f = linear(second, bn_second, modules[act_first](linear(first, bn_first, h)))
            h = h + f if self.residual else modules[act_second](f)
            h = modules[out](h)
        return modules["head"](h)


def resnet_mlp(
    blocks: int,
    width: int,
    *,
    batchnorm: bool = False,
    residual: bool = True,
    activation: str = "relu",
    in_features: int = 2,
    out_features: int = 2,
    seed: int = 0,
) -> ResidualMLP:
    """A residual MLP of ``blocks`` two-linear blocks ``h + Linear→[BN]→act→Linear→[BN]``
    (lesson 05), with PyTorch's default initialisation.

    It has ``2·blocks + 2`` linear layers: the stem ``layer1``, ``layer2``…``layer{2·blocks+1}``
    in the blocks, and ``head``; 25 blocks give 52, like ``mlp(50)`` plus a stem.
    ``residual=False`` drops the skips and puts ``act`` after every linear layer, which makes the
    plain network of the same layers. The same ``seed`` builds the same weights.

    >>> net = resnet_mlp(25, 32, batchnorm=True, seed=0)
    >>> sum(isinstance(m, nn.Linear) for m in net.modules()), net.config["blocks"]
    (52, 25)
    >>> net(torch.randn(8, 2)).shape
    torch.Size([8, 2])
    >>> resnet_mlp(0, 32)
    Traceback (most recent call last):
    ...
    ValueError: blocks must be at least 1; got 0
    """
    seed = _checks.seed(seed)
    blocks = _checks.integer("blocks", blocks, low=1, high=250)
    width = _checks.integer("width", width, low=1, high=4096)
    _checks.choice("activation", activation, ACTIVATIONS)
    batchnorm, residual = _checks.flag("batchnorm", batchnorm), _checks.flag("residual", residual)
    in_features = _checks.integer("in_features", in_features, low=1)
    out_features = _checks.integer("out_features", out_features, low=1)
    config = dict(kind="resnet_mlp", blocks=blocks, width=width, activation=activation,
                  batchnorm=batchnorm, residual=residual, in_features=in_features,
                  out_features=out_features, seed=seed)
    with _seeded(seed):
        model = ResidualMLP(blocks, width, activation, batchnorm, residual, in_features, out_features)
    model.config = config
    return model


# --- lesson 08: models of your own ---
# Plain ``nn.Sequential`` networks and torchvision's ResNet-18, as a learner writes or imports them:
# they carry no ``model.config``, so the doctor reads their activation and BatchNorm from their modules.

DIGITS_KINDS = ("mlp", "cnn")
DIGITS_ACTIVATIONS = ("sigmoid", "tanh", "relu")
#: "default" is PyTorch's own init (uniform, std 1/√(3·fan_in)); "he" is He (kaiming) normal,
#: Var(w) = 2/fan_in; "xavier" is Glorot normal, Var(w) = 2/(fan_in + fan_out). Biases start at 0
#: except with "default".
DIGITS_INITS = ("default", "he", "xavier")


def digits_model(kind: str = "mlp", depth: int = 12, *, activation: str = "sigmoid", init: str = "default",
                 batchnorm: bool = False, width: int = 64, seed: int = 0) -> nn.Sequential:
    """Lesson 08's model of your own: an ``nn.Sequential`` for 8×8 digits (input ``(n, 1, 8, 8)``, 10 logits out).

    ``kind="mlp"``: ``Flatten``, then ``depth`` blocks ``Linear(width) → [BatchNorm1d] →
    activation``, then ``Linear(10)``. ``kind="cnn"``: ``depth`` blocks ``Conv2d(3×3, padding 1)
    → [BatchNorm2d] → activation``, the first half with ``width // 4`` channels on the 8×8 grid,
    a 2×2 max-pool, the rest with ``width // 2`` channels on 4×4, a max-pool, then ``Linear(10)``.
    The same ``seed`` builds the same weights without touching torch's global random state.

    >>> net = digits_model("cnn", 4, activation="relu", init="he", batchnorm=True)
    >>> net(torch.zeros(2, 1, 8, 8)).shape, sum(isinstance(m, nn.Conv2d) for m in net)
    (torch.Size([2, 10]), 4)
    """
    seed = _checks.seed(seed)
    _checks.choice("kind", kind, DIGITS_KINDS)
    depth = _checks.integer("depth", depth, low=2 if kind == "cnn" else 1, high=60)
    _checks.choice("activation", activation, DIGITS_ACTIVATIONS)
    _checks.choice("init", init, DIGITS_INITS)
    batchnorm = _checks.flag("batchnorm", batchnorm)
    width = _checks.integer("width", width, low=4, high=512)
    act = ACTIVATIONS[activation]
    layers: dict[str, nn.Module] = {}  # named, so that the probe and the doctor name layers readably
    with _seeded(seed):
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
    with _seeded(seed):
        model = _torchvision_resnet18(num_classes) or ResNet((2, 2, 2, 2), num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


# --- lesson 09 ---

from .encoder import Transformer, transformer  # noqa: E402,F401  (models.transformer, written in its own module: encoder.py)
