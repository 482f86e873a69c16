"""A small Transformer encoder written out plainly, for lesson 09 (where LayerNorm goes); ``models.transformer``
builds it, and :mod:`gradcourse.transformer_measures` holds what the lesson measures on it.

Every block has one attention sub-layer (``qkv``: one ``Linear(D, 3D)`` for queries, keys and
values; ``proj``: the output projection) and one feed-forward sub-layer (``ffn1``: ``D → 4D``,
ReLU, ``ffn2``: ``4D → D``), each with its LayerNorm (``ln1``, ``ln2``). Where the LayerNorm sits
is the lesson's subject:

- ``norm="post"`` (Vaswani et al. 2017): ``x = LN1(x + attn(x)); x = LN2(x + ffn(x))``;
- ``norm="pre"`` (Xiong et al. 2020): ``x = x + attn(LN1(x)); x = x + ffn(LN2(x))``, and one
  more LayerNorm (``final_ln``) before the ``head``.

``deepnorm=True`` (Post-LN only; Wang et al. 2022) scales the residual, ``x = LN(α·x + f(x))``
with ``α = (2N)^¼`` for ``N`` blocks, and initialises the values, output projection and FFN with
gain ``β = (8N)^-¼``. ``qk_norm=True`` puts a LayerNorm on each head's queries and keys before their
dot product (Dehghani et al. 2023; Wortsman et al. 2023).

Initialisation: Xavier-uniform on every Linear (the query, key and value blocks of ``qkv`` each
on their own, as three ``D × D`` matrices), zero biases, token and position embeddings N(0, 1).

>>> import torch
>>> from gradcourse import models
>>> net = models.transformer(2, norm="pre", seed=0)
>>> tokens = torch.randint(0, 16, (5, 8))
>>> net(tokens).shape                  # (batch, vocab, seq_len): the class dimension second
torch.Size([5, 16, 8])
>>> [name for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)][:4]
['blocks.0.qkv', 'blocks.0.proj', 'blocks.0.ffn1', 'blocks.0.ffn2']
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import _checks

NORMS = ("post", "pre")


class Block(nn.Module):
    """One Transformer block: attention, then feed-forward, each with a residual and a LayerNorm.

    After every forward pass ``last_logits`` holds the attention logits ``q·k/√d`` of shape
    ``(batch, heads, seq_len, seq_len)`` and ``last_weights`` their softmax, the attention weights (both
    detached): lesson 09 watches the largest logit and the weights' entropy.
    """

    def __init__(self, width: int, heads: int, norm: str, qk_norm: bool, alpha: float):
        super().__init__()
        self.width, self.heads, self.head_dim = width, heads, width // heads
        self.norm, self.alpha, self.qk_norm = norm, alpha, qk_norm
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.ffn1 = nn.Linear(width, 4 * width)
        self.relu = nn.ReLU()
        self.ffn2 = nn.Linear(4 * width, width)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.last_logits: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        # (batch, length, 3·width) → queries, keys, values of shape (batch·heads, length, head_dim): the heads
        # folded into the batch, so that each product below is one bmm on contiguous matrices
        q, k, v = (self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
                   .reshape(3, batch * self.heads, length, self.head_dim))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        # softmax(q·kᵀ/√d)·v written out: each position a weighted mean of the values. The logits are the ones
        # lesson 09 watches (kept detached), so they cost nothing more; at the lesson's size (8 positions,
        # 4 heads of 8) this is cheaper on CPU, forward and backward, than scaled_dot_product_attention plus
        # the logits computed again beside it: the 6-block model's forward and backward 10.5 -> 9.3 ms, a lesson
        # 09 training step about 10 % less (one core, measured side by side in one process).
        logits = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(self.head_dim)
        self.last_logits = logits.detach().view(batch, self.heads, length, length)
        weights = torch.softmax(logits, dim=-1)
        self.last_weights = weights.detach().view(batch, self.heads, length, length)
        mixed = torch.bmm(weights, v)
        return self.proj(mixed.view(batch, self.heads, length, self.head_dim).transpose(1, 2)
                         .reshape(batch, length, width))

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn2(self.relu(self.ffn1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "post":
            x = self.ln1(self.alpha * x + self.attention(x))
            x = self.ln2(self.alpha * x + self.ffn(x))
        else:
            x = x + self.attention(self.ln1(x))
            x = x + self.ffn(self.ln2(x))
        return x


class Transformer(nn.Module):
    """Token + position embeddings, ``depth`` :class:`Block` s, (Pre-LN: a final LayerNorm), and a
    linear ``head`` that predicts a token at every position.

    ``forward`` takes integer tokens ``(batch, seq_len)`` and returns logits
    ``(batch, vocab, seq_len)``: class dimension second, as ``F.cross_entropy`` expects with targets
    ``(batch, seq_len)``, so :func:`gradcourse.train.fit` trains it unchanged.
    """

    def __init__(self, depth: int, width: int, heads: int, norm: str, qk_norm: bool, alpha: float,
                 vocab: int, seq_len: int):
        super().__init__()
        self.seq_len = seq_len
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads, norm, qk_norm, alpha) for _ in range(depth))
        self.final_ln = nn.LayerNorm(width) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2 or tokens.shape[1] != self.seq_len or torch.is_floating_point(tokens):
            raise ValueError(f"tokens must be integers of shape (batch, {self.seq_len}); "
                             f"got {tokens.dtype} {tuple(tokens.shape)}")
        x = self.token(tokens) + self.position.weight
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_ln(x)).transpose(1, 2)

    def attention_logits(self) -> list[torch.Tensor]:
        """Each block's attention logits from the last forward pass (``None`` before the first)."""
        return [block.last_logits for block in self.blocks]

    def attention_weights(self) -> list[torch.Tensor]:
        """Each block's attention weights (softmax of its logits) from the last forward pass (``None`` before the
        first)."""
        return [block.last_weights for block in self.blocks]


def transformer(
    depth: int,
    width: int = 32,
    heads: int = 4,
    *,
    norm: str = "post",
    qk_norm: bool = False,
    deepnorm: bool = False,
    vocab: int = 16,
    seq_len: int = 8,
    seed: int = 0,
) -> Transformer:
    """A Transformer encoder of ``depth`` blocks that maps ``seq_len`` tokens to ``seq_len`` tokens.

    ``norm`` places the LayerNorm: ``"post"`` (after each residual sum) or ``"pre"`` (inside each
    branch, plus a final one). ``qk_norm`` adds a LayerNorm on each head's queries and keys.
    ``deepnorm`` (only with ``norm="post"``) scales the residual by ``α = (2·depth)^¼`` and the
    value/projection/FFN initialisation by ``β = (8·depth)^-¼``. The same ``seed`` builds the same
    weights without touching the global random state. See the module docstring for the equations.

    >>> net = transformer(6, norm="post", deepnorm=True, seed=0)
    >>> round(net.blocks[0].alpha, 3), net.config["deepnorm"]
    (1.861, True)
    >>> transformer(6, norm="pre", deepnorm=True)
    Traceback (most recent call last):
    ...
    ValueError: deepnorm applies to norm='post' only; got norm='pre'
    """
    seed = _checks.seed(seed)
    depth = _checks.integer("depth", depth, low=1, high=200)
    width = _checks.integer("width", width, low=1, high=4096)
    heads = _checks.integer("heads", heads, low=1, high=width)
    if width % heads:
        raise ValueError(f"heads must divide width ({width}); got {heads}")
    _checks.choice("norm", norm, NORMS)
    qk_norm, deepnorm = _checks.flag("qk_norm", qk_norm), _checks.flag("deepnorm", deepnorm)
    if deepnorm and norm != "post":
        raise ValueError(f"deepnorm applies to norm='post' only; got norm={norm!r}")
    vocab = _checks.integer("vocab", vocab, low=2, high=100_000)
    seq_len = _checks.integer("seq_len", seq_len, low=1, high=4096)
    alpha, beta = ((2 * depth) ** 0.25, (8 * depth) ** -0.25) if deepnorm else (1.0, 1.0)
    config = dict(kind="transformer", depth=depth, width=width, heads=heads, norm=norm, qk_norm=qk_norm,
                  deepnorm=deepnorm, vocab=vocab, seq_len=seq_len, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):   # PyTorch's own init draws globally; keep that state
        model = Transformer(depth, width, heads, norm, qk_norm, alpha, vocab, seq_len)
    _initialise(model, beta, generator)
    model.config = config
    return model


def _initialise(model: Transformer, beta: float, generator: torch.Generator) -> None:
    """Xavier-uniform weights (q, k, v as separate D × D matrices), zero biases, N(0, 1) embeddings.

    DeepNorm's ``beta`` is the Xavier gain of the values, the output projection and the FFN;
    queries and keys keep gain 1 (Wang et al. 2022, Fig. 2).
    """
    width = model.token.embedding_dim
    with torch.no_grad():
        model.token.weight.normal_(0.0, 1.0, generator=generator)
        model.position.weight.normal_(0.0, 1.0, generator=generator)
        for block in model.blocks:
            query, key, value = block.qkv.weight.view(3, width, width)
            for matrix, gain in ((query, 1.0), (key, 1.0), (value, beta)):
                nn.init.xavier_uniform_(matrix, gain=gain, generator=generator)
            for layer in (block.proj, block.ffn1, block.ffn2):
                nn.init.xavier_uniform_(layer.weight, gain=beta, generator=generator)
        nn.init.xavier_uniform_(model.head.weight, generator=generator)
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.bias.zero_()
