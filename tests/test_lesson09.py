"""Lesson 09 (Transformers): the model against hand-written equations, the reversal task, the
lesson's measurements against independent computations, the explorer and the exercise checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _tools import assert_registered
from matplotlib.figure import Figure
from torch import nn

from gradcourse import data, exercises, models
from gradcourse import transformer_measures as measures
from gradcourse.encoder import Block
from gradcourse.hooks import Hooks
from gradcourse.transformer_measures import Watch, experiment
from gradcourse.widgets.lesson09 import TransformerExplorer

F = nn.functional


def attention_by_hand(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Multi-head attention written head by head, sequence by sequence, with explicit loops."""
    width, heads = block.width, block.heads
    d = width // heads
    wq, wk, wv = block.qkv.weight.split(width)
    bq, bk, bv = block.qkv.bias.split(width)
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        q, k, v = x[n] @ wq.T + bq, x[n] @ wk.T + bk, x[n] @ wv.T + bv
        pieces = []
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            qh, kh = q[:, cols], k[:, cols]
            if isinstance(block.q_norm, nn.LayerNorm):
                qh, kh = block.q_norm(qh), block.k_norm(kh)
            scores = torch.empty(x.shape[1], x.shape[1])
            for i in range(x.shape[1]):
                for j in range(x.shape[1]):
                    scores[i, j] = (qh[i] * kh[j]).sum() / math.sqrt(d)
            pieces.append(torch.softmax(scores, dim=1) @ v[:, cols])
        out[n] = torch.cat(pieces, dim=1) @ block.proj.weight.T + block.proj.bias
    return out


def perturb_(model: nn.Module, seed: int = 1) -> None:
    """Random biases and LayerNorm gains so that the equations below test every term."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_matches_a_hand_computation(qk_norm):
    net = models.transformer(1, width=8, heads=2, qk_norm=qk_norm, seed=0)
    perturb_(net)
    block = net.blocks[0]
    x = torch.randn(3, 8, 8)
    assert torch.allclose(block.attention(x), attention_by_hand(block, x), atol=1e-5)
    # the kept logits are those of the last call: q·k/√d for head 0, sequence 0, positions (2, 5)
    wq, wk, _ = block.qkv.weight.split(8)
    bq, bk, _ = block.qkv.bias.split(8)
    q, k = (x[0] @ wq.T + bq)[:, :4], (x[0] @ wk.T + bk)[:, :4]
    if qk_norm:
        q, k = block.q_norm(q), block.k_norm(k)
    assert block.last_logits[0, 0, 2, 5].item() == pytest.approx((q[2] @ k[5]).item() / 2.0, abs=1e-5)


def ffn(block, x):
    """FFN(x) = W₂ relu(W₁ x + b₁) + b₂ on row vectors."""
    return torch.relu(x @ block.ffn1.weight.T + block.ffn1.bias) @ block.ffn2.weight.T + block.ffn2.bias


@pytest.mark.parametrize("norm, deepnorm", [("post", False), ("pre", False), ("post", True)])
def test_forward_follows_the_block_equations(norm, deepnorm):
    net = models.transformer(2, width=8, heads=2, norm=norm, deepnorm=deepnorm, seed=0)
    perturb_(net)
    tokens = torch.randint(0, 16, (4, 8), generator=torch.Generator().manual_seed(0))
    x = net.token.weight[tokens] + net.position.weight
    alpha = (2 * 2) ** 0.25 if deepnorm else 1.0

    def ln(module, v):
        mean, var = v.mean(-1, keepdim=True), v.var(-1, unbiased=False, keepdim=True)
        return (v - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias

    for block in net.blocks:
        if norm == "post":
            x = ln(block.ln1, alpha * x + attention_by_hand(block, x))
            x = ln(block.ln2, alpha * x + ffn(block, x))
        else:
            x = x + attention_by_hand(block, ln(block.ln1, x))
            x = x + ffn(block, ln(block.ln2, x))
    if norm == "pre":
        x = ln(net.final_ln, x)
    expected = (x @ net.head.weight.T + net.head.bias).transpose(1, 2)
    assert torch.allclose(net(tokens), expected, atol=1e-4)


def test_initialisation():
    net = models.transformer(3, width=32, seed=5)
    for block in net.blocks:
        bound = math.sqrt(6 / 64)            # Xavier-uniform of a 32 × 32 matrix: q, k, v each on their own
        for m in block.qkv.weight.split(32):
            assert m.abs().max() <= bound and m.abs().max() > 0.9 * bound
            assert m.var().item() == pytest.approx(bound ** 2 / 3, rel=0.15)
        ffn1_bound = math.sqrt(6 / (32 + 128))
        assert 0.9 * ffn1_bound < block.ffn1.weight.abs().max() <= ffn1_bound
        for layer in (block.qkv, block.proj, block.ffn1, block.ffn2):
            assert torch.count_nonzero(layer.bias) == 0
    assert net.token.weight.std().item() == pytest.approx(1.0, rel=0.15)
    assert net.position.weight.std().item() == pytest.approx(1.0, rel=0.15)


def test_deepnorm_scales():
    net = models.transformer(6, deepnorm=True, seed=0)
    plain = models.transformer(6, seed=0)
    beta = (8 * 6) ** -0.25
    assert net.blocks[0].alpha == pytest.approx(12 ** 0.25)
    query, key, value = net.blocks[0].qkv.weight.split(32)
    assert query.abs().max() > 0.9 * math.sqrt(6 / 64)                      # q, k keep gain 1
    assert value.abs().max() <= beta * math.sqrt(6 / 64) + 1e-7
    assert net.blocks[0].ffn2.weight.abs().max() <= beta * math.sqrt(6 / 160) + 1e-7
    assert plain.blocks[0].alpha == 1.0


def test_seeded_without_touching_global_state():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = models.transformer(2, seed=7)
    after = torch.rand(1)
    b = models.transformer(2, seed=7)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.config == dict(kind="transformer", depth=2, width=32, heads=4, norm="post", qk_norm=False,
                            deepnorm=False, vocab=16, seq_len=8, seed=7)


def test_probe_sees_every_linear_in_order():
    names = [n for n, m in models.transformer(2).named_modules() if isinstance(m, nn.Linear)]
    assert names == ["blocks.0.qkv", "blocks.0.proj", "blocks.0.ffn1", "blocks.0.ffn2",
                     "blocks.1.qkv", "blocks.1.proj", "blocks.1.ffn1", "blocks.1.ffn2", "head"]


@pytest.mark.parametrize("bad", [{"depth": 0}, {"width": 30}, {"heads": 0}, {"norm": "sandwich"},
                                 {"qk_norm": 1}, {"deepnorm": "yes"}, {"vocab": 1}, {"seq_len": 0},
                                 {"seed": -1}])
def test_transformer_rejects_bad_args(bad):
    kwargs = dict(depth=2)
    kwargs.update(bad)
    (name,) = bad
    with pytest.raises(ValueError, match="heads" if name == "width" else name):
        models.transformer(**kwargs)


def test_deepnorm_needs_post_and_tokens_are_checked():
    with pytest.raises(ValueError, match="deepnorm"):
        models.transformer(2, norm="pre", deepnorm=True)
    with pytest.raises(ValueError, match="tokens"):
        models.transformer(2)(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="tokens"):
        models.transformer(2)(torch.zeros(3, 5, dtype=torch.long))


def test_reversal_task():
    ds = data.reversal(n=50, seed=3, n_test=7)
    assert ds.x.shape == (50, 8) and ds.x_test.shape == (7, 8) and ds.x.dtype == torch.int64
    for row, target in zip(ds.x.tolist(), ds.y.tolist()):
        assert target == row[::-1]
    assert ds.y_test.tolist() == [r[::-1] for r in ds.x_test.tolist()]
    assert int(ds.x.min()) >= 0 and int(ds.x.max()) <= 15
    assert torch.equal(data.reversal(n=50, seed=3, n_test=7).x, ds.x)
    assert not torch.equal(data.reversal(n=50, seed=4, n_test=7).x, ds.x)
    big = data.reversal(n=4096, seed=0, n_test=0)
    counts = torch.bincount(big.x.reshape(-1), minlength=16).float()
    assert counts.min() > 0.9 * counts.mean()            # uniform tokens
    assert data.REVERSAL_CHANCE_LOSS == pytest.approx(F.cross_entropy(torch.zeros(1, 16), torch.tensor([3])).item())


@pytest.mark.parametrize("bad", [{"n": 0}, {"seq_len": 0}, {"vocab": 1}, {"seed": -2}, {"n_test": -1}])
def test_reversal_rejects_bad_args(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        data.reversal(**bad)


def test_collapse_and_entropy_against_direct_formulas():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 4, generator=gen)
    cos = [F.cosine_similarity(h[n, i], h[n, j], dim=0).item()
           for n in range(3) for i in range(5) for j in range(5) if i != j]
    assert measures.collapse(h) == pytest.approx(1 - np.mean(cos), rel=1e-5)
    same = torch.ones(2, 8, 4) + 1e-6 * torch.randn(2, 8, 4, generator=gen)
    assert 0 < measures.collapse(same) < 1e-10
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    p = logits.softmax(-1)
    assert measures.attention_entropy(logits) == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="hidden"):
        measures.collapse(torch.ones(1, 1, 4))


def test_entropy_from_the_weights_equals_the_entropy_from_the_logits():
    """The Watch reads the entropy from the softmax the forward pass made (weights_entropy); it is the
    logits' entropy (attention_entropy, float64 here) for ordinary logits and for the runaway ones of
    lesson 09 (|logit| up to 2e4: most weights underflow to exactly 0, where 0 ln 0 counts 0, not NaN)."""
    gen = torch.Generator().manual_seed(1)
    for scale in (1.0, 30.0, 2e4):
        logits = scale * torch.randn(6, 4, 4, 8, 8, generator=gen)
        p = logits.double().softmax(-1)
        by_hand = float(-(torch.where(p > 0, p * p.log(), 0.0)).sum(-1).mean())
        weights = logits.softmax(-1)
        if scale == 2e4:
            assert (weights == 0).float().mean() > 0.5
        assert measures.weights_entropy(weights) == pytest.approx(by_hand, rel=1e-4, abs=1e-6)
        assert measures.attention_entropy(logits) == pytest.approx(by_hand, rel=1e-4, abs=1e-6)
    net = models.transformer(2, seed=0)
    net(torch.randint(0, 16, (4, 8)))
    for logits, weights in zip(net.attention_logits(), net.attention_weights()):
        assert torch.equal(weights, logits.softmax(-1))


def test_watch_records_training_passes_only_and_removes_its_hooks():
    net = models.transformer(2, seed=0)
    tokens = torch.randint(0, 16, (4, 8))
    with Watch(net) as watch:
        net(tokens)
        with torch.no_grad():
            net(tokens)
        net(tokens)
    assert len(watch.collapse) == len(watch.max_logit) == len(watch.entropy) == 2
    expected = max(block.last_logits.abs().max().item() for block in net.blocks)
    assert watch.max_logit[-1] == pytest.approx(expected)
    # the last pass's entropy and collapse, from torch's softmax and cosine on what the last pass computed
    p = torch.stack([block.last_logits for block in net.blocks]).softmax(-1)
    assert watch.entropy[-1] == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-5)
    store = {}
    with Hooks(net.head.register_forward_pre_hook(lambda module, args: store.__setitem__("h", args[0]))):
        net(tokens)
    h = store["h"]
    cos = F.cosine_similarity(h[:, :, None], h[:, None], dim=-1)           # (batch, 8, 8)
    assert watch.collapse[-1] == pytest.approx(1 - ((cos.sum() - cos.diagonal(dim1=1, dim2=2).sum()) / (4 * 56)).item(),
                                               rel=1e-4)
    assert not net._forward_hooks and not net.head._forward_pre_hooks
    with pytest.raises(ValueError, match="model"):
        Watch(nn.Linear(2, 2))


def test_experiment_matches_fit_with_the_same_settings():
    """experiment() is fit() with the lesson's settings written out here (the Watch only looks):
    the same losses to the bit, the warmup's learning rates by hand, and final_loss the mean of
    the last 20 of 25 losses, summed here step by step."""
    from gradcourse import train

    exp = experiment("pre", depth=2, warmup=5, steps=25, seed=1)
    model = models.transformer(2, norm="pre", seed=1)
    run = train.fit(model, data.reversal(1024, seed=0, n_test=256), steps=25, lr=1e-2, optimizer="adam",
                    betas=(0.9, 0.98), warmup=5, batch_size=32, seed=1, probe=False, progress=False,
                    fused=True)
    np.testing.assert_array_equal(exp.run.losses, run.losses)
    np.testing.assert_allclose(exp.run.lrs, [0.002, 0.004, 0.006, 0.008] + [0.01] * 21, rtol=1e-12)
    assert exp.run.params["batch_size"] == 32 and exp.run.params["betas"] == [0.9, 0.98]
    assert len(exp.collapse) == len(exp.max_logit) == 25 and np.all(np.isfinite(exp.max_logit))
    last_20 = 0.0
    for step in range(5, 25):
        last_20 += float(run.losses[step])
    assert exp.final_loss == pytest.approx(last_20 / 20, rel=1e-12)
    assert exp.label == "Pre-LN, 2 layers, adam, lr 0.01, warmup 5"


def test_experiment_skips_the_whole_set_evaluation_unless_asked():
    """The lesson reads only the losses: experiment() leaves out fit's evaluation on the 1,024 + 256 sequences
    (the same losses to the bit), and evaluate=True measures the trained model on both sets as fit does."""
    quick = experiment("pre", depth=2, steps=5, seed=0)
    full = experiment("pre", depth=2, steps=5, seed=0, evaluate=True)
    np.testing.assert_array_equal(quick.run.losses, full.run.losses)
    assert set(quick.run.metrics) == {"final_loss", "collapse", "max_attention_logit"}
    assert {"train_loss", "test_loss", "train_accuracy", "test_accuracy"} <= set(full.run.metrics)
    with torch.no_grad():
        scores = full.run.model.eval()(measures.task().x_test)
    assert full.run.metrics["test_loss"] == pytest.approx(
        F.cross_entropy(scores, measures.task().y_test).item(), rel=1e-6)


def test_experiment_probes_every_nth_step():
    exp = experiment("post", depth=2, steps=7, probe=True, every=5, seed=0)
    assert exp.run.trace.steps.tolist() == [0, 5] and exp.run.params["every"] == 5


def test_ffn_gradients_match_autograd():
    net = models.transformer(3, norm="pre", seed=0)
    grads = measures.ffn_gradients(net, batch=16)
    assert all(p.grad is None for p in net.parameters())          # measured without touching .grad
    ds = measures.task()
    F.cross_entropy(net(ds.x[:16]), ds.y[:16]).backward()
    direct = [block.ffn2.weight.grad.norm().item() for block in net.blocks]
    assert np.allclose(grads, direct, rtol=1e-4)


def test_perturbation_restores_the_model():
    net = models.transformer(2, seed=0)
    before = [p.clone() for p in net.parameters()]
    change = measures.perturbation_change(net, seed=0)
    assert 0 < change < 1
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_post_ln_without_warmup_collapses_and_warmup_rescues():
    """Lesson claim 1 and 2 on seed 1 (the notebook runs seeds 0 and 1): no NaN, collapse, stuck at chance."""
    cold = experiment("post", 6, steps=60, seed=1)
    assert np.isfinite(cold.run.losses).all() and cold.collapse[50] < 1e-10
    assert abs(cold.final_loss - measures.CHANCE) < 0.05
    warm = experiment("post", 6, warmup=100, steps=60, seed=1)
    assert warm.collapse.min() > 1e-5        # seed 1 dips to 8e-5 and recovers; without warmup: 1e-14


def test_the_doctor_calls_a_collapse_collapse_and_its_first_remedy_cures_it():
    """Post-LN, 6 layers, no warmup: every position alike and the FFN's ReLUs read as dead, which the
    doctor once called dead_relu. The first remedy, a warmup over a third of the steps, applied to
    the same recipe: over seeds 0-2, native and portable kernels, the broken runs end at 2.78 (chance)
    with 1 - cos at 4e-14; the treated ones at 0.0004-0.11, 1 - cos 0.95-0.99, healthy."""
    from gradcourse import diagnose

    broken = experiment("post", 6, seed=0, probe=True)
    verdict = diagnose(broken.run)
    assert verdict.problem == "collapse" and [r.name for r in verdict.remedies] == ["warmup", "pre_ln", "lower_lr"]
    assert "Representation collapse" in verdict.evidence[0]
    _, training = verdict.remedies[0].apply(broken.run.params["model"], {"steps": measures.STEPS})
    assert training["warmup"] == 100
    treated = experiment("post", 6, seed=0, probe=True, warmup=training["warmup"])
    cured = diagnose(treated.run)
    assert cured.problem == "healthy" and treated.collapse[-1] > 0.5
    assert abs(broken.final_loss - measures.CHANCE) < 0.05 and treated.final_loss < 0.5


def test_registered_and_explorer_defaults():
    assert_registered("09_transformers", TransformerExplorer)
    assert TransformerExplorer.manual
    result = TransformerExplorer().run(depth=2, norm="pre")
    assert isinstance(result.figure, Figure) and len(result.figure.axes) == 3
    assert result.values["solved"] and result.values["final_loss"] < 0.5
    assert set(result.values) == {"final_loss", "solved", "min_collapse", "max_logit"}


@pytest.mark.parametrize("bad", [{"depth": 13}, {"lr": 1.0}, {"warmup": -1}, {"norm": "mid"},
                                 {"optimizer": "sgd"}, {"qk_norm": "no"}])
def test_explorer_rejects_bad_params(bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        TransformerExplorer().run(**bad)


@pytest.mark.parametrize("check, right, wrong, odd", [
    (exercises.shallow_post_ln, "yes", "no", 3),
    (exercises.adam_first_step, 1e-4, 1e-2, "a lot"),
    (exercises.deepnorm_first_step, 0.28, 0.0894, [1]),
    (exercises.warmup_logits, "yes", "no", object()),
])
def test_exercise_checks(check, right, wrong, odd):
    assert check(right).correct is True
    assert check(wrong).correct is False
    assert check(None).correct is None
    assert check(odd).correct is False and isinstance(check(odd).message, str)


def test_exercise_answers_are_what_the_model_does():
    """Exercise 1: 3-layer Post-LN without warmup solves the task (seed 0). Exercise 4: with a
    100-step warmup, Pre-LN at lr 0.1 learns, and its logits still pass 1000."""
    assert experiment("post", 3, seed=0).solved
    warm = experiment("pre", 6, lr=0.1, warmup=100, seed=0)
    assert warm.max_logit.max() > 1000 and warm.final_loss < measures.CHANCE - 1


@pytest.mark.parametrize("seed", [0, 3])
def test_deepnorm_first_step_is_what_the_probe_measures(seed):
    """Exercise 3: the probe's ‖ΔW‖/‖W‖ of every block's second FFN matrix after Adam's first step
    (12-layer DeepNorm, lr 1e-2) is what the check accepts; measured 0.2775 to 0.2828 on seeds 0-4,
    the same on portable kernels. A plain Xavier model's ratio (no β) is refused."""
    exp = experiment("post", exercises.DEEPNORM_DEPTH, deepnorm=True, lr=exercises.DEEPNORM_LR, steps=1,
                     probe=True, seed=seed)
    trace = exp.run.trace
    ratios = [trace.get("update_ratio")[0][trace.layers.index(f"blocks.{i}.ffn2")] for i in (0, 11)]
    for ratio in ratios:
        assert exercises.deepnorm_first_step(ratio).correct, ratio
    assert abs(ratios[0] / exercises.deepnorm_first_step_ratio() - 1) < 0.02
    plain = experiment("post", exercises.DEEPNORM_DEPTH, lr=exercises.DEEPNORM_LR, steps=1, probe=True, seed=seed)
    plain_ratio = plain.run.trace.get("update_ratio")[0][trace.layers.index("blocks.11.ffn2")]
    assert exercises.deepnorm_first_step(plain_ratio).correct is False



@pytest.mark.parametrize("qk_norm, name", [(True, "Pre-LN, 2 layers, qk-norm"), (False, "Pre-LN, 2 layers")])
def test_the_preview_names_qk_norm(qk_norm, name):
    """The untrained preview's title and legend left qk-norm out, though it changes the model shown."""
    result = TransformerExplorer().run(norm="pre", depth=2, qk_norm=qk_norm, steps=0)
    ax = result.figure.axes[0]
    assert ax.get_title() == f"{name}: at initialisation"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [name]
    assert result.summary.startswith(f"{name}, untrained:")


def test_the_first_figure_is_the_untrained_model_and_run_trains():
    """Section 2 says the explorer first shows the untrained model; the first display trained the
    default 300 steps instead (6 s of every notebook run). Run (a later call) trains."""
    explorer = TransformerExplorer()
    params = {name: spec.default for name, spec in explorer.params.items()}
    explorer._displays(params)
    assert "ffn_grad" in explorer.last_result.values and "final_loss" not in explorer.last_result.values
    assert "press Run" in explorer.last_result.notice
    explorer._displays({**params, "steps": 20})
    assert "final_loss" in explorer.last_result.values


def test_fused_adam_takes_the_same_steps_up_to_rounding():
    """experiment() trains with fit(fused=True): torch's fused Adam, against the default update on the same
    model and batches (3 steps: the runs agree to rounding; a long run would part in the last digits)."""
    from gradcourse import train

    ds = data.reversal(256, seed=0, n_test=0)
    runs = [train.fit(models.transformer(2, seed=0), ds, steps=3, lr=1e-2, optimizer="adam", betas=(0.9, 0.98),
                      batch_size=32, probe=False, progress=False, fused=fused) for fused in (False, True)]
    np.testing.assert_allclose(runs[0].losses, runs[1].losses, rtol=1e-5)
    for (name, a), b in zip(runs[0].model.named_parameters(), runs[1].model.parameters()):
        if name.endswith("qkv.bias"):   # the keys' bias has no gradient but rounding noise (softmax ignores it),
            a, b = (torch.cat([t[:32], t[64:]]) for t in (a, b))   # Adam divides by its size: skip it
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    with pytest.raises(ValueError, match="fused"):
        train.fit(models.transformer(1, seed=0), ds, steps=1, lr=1e-2, optimizer="sgd", fused=True)


def forward_with_sdpa(net, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The encoder's forward pass as it was written before attention was spelled out with bmm: the heads
    kept as a (batch, heads, length, head_dim) axis, attention by ``F.scaled_dot_product_attention``, the
    logits watched computed again beside it. Returns the logits and each block's q·kᵀ/√d."""
    x, watched = net.token(tokens) + net.position.weight, []
    for block in net.blocks:
        def attention(h, block=block):
            b, t, w = h.shape
            q, k, v = block.qkv(h).view(b, t, 3, block.heads, block.head_dim).permute(2, 0, 3, 1, 4)
            q, k = block.q_norm(q), block.k_norm(k)
            watched.append(q @ k.transpose(-2, -1) / math.sqrt(block.head_dim))
            return block.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, w))
        if block.norm == "post":
            x = block.ln1(block.alpha * x + attention(x))
            x = block.ln2(block.alpha * x + block.ffn(x))
        else:
            x = x + attention(block.ln1(x))
            x = x + block.ffn(block.ln2(x))
    return net.head(net.final_ln(x)).transpose(1, 2), watched


@pytest.mark.parametrize("kwargs", [dict(norm="post"), dict(norm="pre"), dict(norm="pre", qk_norm=True),
                                    dict(norm="post", deepnorm=True)])
def test_forward_and_gradients_equal_the_sdpa_encoder(kwargs):
    """The lesson's 6-block encoder, and its gradients, equal the SDPA formulation within float32 rounding."""
    net = models.transformer(6, seed=3, **kwargs)
    perturb_(net)
    tokens = torch.randint(0, 16, (32, 8), generator=torch.Generator().manual_seed(0))
    targets = tokens.flip(1)
    out = net(tokens)
    F.cross_entropy(out, targets).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    expected, watched = forward_with_sdpa(net, tokens)
    F.cross_entropy(expected, targets).backward()
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5)
    for got, block_logits in zip(net.attention_logits(), watched):
        assert torch.allclose(got, block_logits.detach(), rtol=1e-5, atol=1e-5)
    for (name, p), got in zip(net.named_parameters(), grads):
        # atol: the keys' LayerNorm bias has gradient 0 in exact arithmetic (a shift of every key moves a row
        # of logits by one constant, which softmax ignores); both computations leave rounding of ~1e-9
        assert torch.allclose(got, p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item() + 1e-7), name
