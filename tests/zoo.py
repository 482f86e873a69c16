"""A zoo of the architectures practitioners bring, written out as their libraries define them
(torchvision cannot be installed beside the CPU torch used here), kept small so that a training
step takes milliseconds. Each ``make_*`` returns ``(model, batch, loss)``: ``loss(model, batch)``
is one forward pass and the scalar loss a training loop would backpropagate.

- ``resnet18``: torchvision's ``resnet18`` (``BasicBlock``: in-place ReLU shared within a block,
  functional residual add, BatchNorm, 1×1 downsample), at a fraction of its width.
- ``mobilenet_v3_small``: torchvision's MobileNetV3 blocks (``Conv2dNormActivation`` with in-place
  Hardswish/ReLU, ``SqueezeExcitation`` scaling its input, functional residual adds).
- ``nanogpt``: Karpathy's nanoGPT (dataclass ``GPTConfig``, its own ``LayerNorm`` holding bare
  parameters, ``CausalSelfAttention`` with ``c_attn``/``c_proj``, ``nn.GELU``, tied embeddings,
  ``forward`` returning ``(logits, loss)``).
- ``gpt2_conv1d``: a GPT-2 MLP block as Hugging Face writes it: ``Conv1D`` (a bare ``nn.Parameter``
  weight used through ``torch.addmm``) and a functional tanh-GELU.
- ``lstm_lm``: ``nn.Embedding`` + a two-layer ``nn.LSTM`` + linear decoder, a word-level language model.
- ``transformer_encoder``: ``nn.TransformerEncoder(batch_first=True)`` over embedded tokens.
- ``dict_output``: a model that returns a dict (``{"features", "logits"}``), features first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# -- torchvision: ResNet-18 ---------------------------------------------------------------------


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, layers: list[int], num_classes: int = 10, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet18(num_classes: int = 10, width: int = 64) -> ResNet:
    """torchvision's ``resnet18`` (``width=64``); the zoo uses ``width=8``."""
    return ResNet([2, 2, 2, 2], num_classes=num_classes, width=width)


# -- torchvision: MobileNetV3-small blocks -------------------------------------------------------


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, activation_layer: type[nn.Module] | None = nn.ReLU):
        padding = (kernel_size - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                             groups=groups, bias=False),
                                   nn.BatchNorm2d(out_channels, eps=0.001, momentum=0.01)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels: int, squeeze_channels: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._scale(x) * x


@dataclass
class InvertedResidualConfig:
    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int


class InvertedResidual(nn.Module):
    def __init__(self, cnf: InvertedResidualConfig):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, kernel_size=1,
                                               activation_layer=activation_layer))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, kernel_size=cnf.kernel,
                                           stride=cnf.stride, groups=cnf.expanded_channels,
                                           activation_layer=activation_layer))
        if cnf.use_se:
            layers.append(SqueezeExcitation(cnf.expanded_channels, _make_divisible(cnf.expanded_channels // 4)))
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, kernel_size=1,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


class MobileNetV3(nn.Module):
    def __init__(self, settings: list[InvertedResidualConfig], last_channel: int, num_classes: int = 10):
        super().__init__()
        first = settings[0].input_channels
        layers: list[nn.Module] = [Conv2dNormActivation(3, first, kernel_size=3, stride=2,
                                                        activation_layer=nn.Hardswish)]
        layers += [InvertedResidual(cnf) for cnf in settings]
        last_in = settings[-1].out_channels
        layers.append(Conv2dNormActivation(last_in, 6 * last_in, kernel_size=1, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=0.2, inplace=True), nn.Linear(last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v3_small(num_classes: int = 10) -> MobileNetV3:
    """The first blocks of torchvision's ``mobilenet_v3_small`` (its first four inverted residuals)."""
    settings = [InvertedResidualConfig(16, 3, 16, 16, True, False, 2),
                InvertedResidualConfig(16, 3, 72, 24, False, False, 2),
                InvertedResidualConfig(24, 3, 88, 24, False, False, 1),
                InvertedResidualConfig(24, 5, 96, 40, True, True, 2)]
    return MobileNetV3(settings, last_channel=64, num_classes=num_classes)


# -- nanoGPT -------------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm: bare parameters, an optional bias, ``F.layer_norm``."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


@dataclass
class GPTConfig:
    block_size: int = 32
    vocab_size: int = 64
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0
    bias: bool = True


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # noqa: N806  (nanoGPT's names)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                           dropout_p=self.dropout if self.training else 0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        b, t = idx.size()
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        tok_emb = self.transformer.wte(idx)
        pos_emb = self.transformer.wpe(pos)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])
            loss = None
        return logits, loss


# -- Hugging Face GPT-2: Conv1D, a bare-parameter layer -------------------------------------------


class Conv1D(nn.Module):
    """transformers' ``Conv1D``: a linear layer with its weight transposed, as bare parameters."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


def new_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2MLP(nn.Module):
    def __init__(self, vocab: int = 32, n_embd: int = 16, depth: int = 2):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.c_fc = nn.ModuleList([Conv1D(4 * n_embd, n_embd) for _ in range(depth)])
        self.c_proj = nn.ModuleList([Conv1D(n_embd, 4 * n_embd) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for fc, proj in zip(self.c_fc, self.c_proj):
            x = x + proj(new_gelu(fc(x)))
        return self.head(self.ln_f(x))


# -- recurrent and attention models built from torch.nn ------------------------------------------


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab: int = 40, embed: int = 16, hidden: int = 24, layers: int = 2):
        super().__init__()
        self.encoder = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(self.encoder(idx))
        return self.decoder(output)


class EncoderClassifier(nn.Module):
    def __init__(self, vocab: int = 30, d_model: int = 16, classes: int = 3, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(idx)).mean(dim=1))


class DictOutput(nn.Module):
    """Returns a dict whose first entry (features) is not what the loss uses."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16))
        self.classifier = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return {"features": features, "logits": self.classifier(F.relu(features))}


# -- the zoo: (model, batch, loss) ----------------------------------------------------------------


def _images(n: int, size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def _tokens(n: int, t: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, t), generator=g), torch.randint(0, vocab, (n, t), generator=g)


def _classify(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def _gpt_loss(model, batch):
    idx, targets = batch
    _, loss = model(idx, targets)
    return loss


def _sequence_loss(model, batch):
    idx, targets = batch
    logits = model(idx)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def _dict_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x)["logits"], y)


def make_resnet18(seed: int = 0):
    torch.manual_seed(seed)
    return resnet18(width=8), _images(8, 32, seed), _classify


def make_mobilenet_v3_small(seed: int = 0):
    torch.manual_seed(seed)
    return mobilenet_v3_small(), _images(8, 32, seed), _classify


def make_nanogpt(seed: int = 0):
    torch.manual_seed(seed)
    return GPT(GPTConfig()), _tokens(4, 16, 64, seed), _gpt_loss


def make_gpt2_conv1d(seed: int = 0):
    torch.manual_seed(seed)
    return GPT2MLP(), _tokens(4, 12, 32, seed), _sequence_loss


def make_lstm_lm(seed: int = 0):
    torch.manual_seed(seed)
    return LSTMLanguageModel(), _tokens(4, 10, 40, seed), _sequence_loss


def make_transformer_encoder(seed: int = 0):
    torch.manual_seed(seed)
    idx, _ = _tokens(6, 9, 30, seed)
    return EncoderClassifier(), (idx, torch.randint(0, 3, (6,), generator=torch.Generator().manual_seed(seed))), \
        _classify


def make_dict_output(seed: int = 0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    return DictOutput(), (torch.randn(12, 4, generator=g), torch.randint(0, 3, (12,), generator=g)), _dict_loss


ZOO = {
    "resnet18": make_resnet18,
    "mobilenet_v3_small": make_mobilenet_v3_small,
    "nanogpt": make_nanogpt,
    "gpt2_conv1d": make_gpt2_conv1d,
    "lstm_lm": make_lstm_lm,
    "transformer_encoder": make_transformer_encoder,
    "dict_output": make_dict_output,
}
