"""Bad input to a public function gives a ValueError that names the argument."""

import pytest
import torch

from gradcourse import data, models, plots, remedies, start
from gradcourse.train import Run, accuracy, fit

ds = data.spirals(16, seed=0)


@pytest.mark.parametrize("call,argument", [
    (lambda: data.spirals(n=1), "n"),
    (lambda: data.spirals(n="many"), "n"),
    (lambda: data.spirals(seed=-1), "seed"),
    (lambda: data.spirals(seed=2**70), "seed"),
    (lambda: data.adding_problem(seed=2**64), "seed"),
    (lambda: models.mlp(3, 8, seed=2**64), "seed"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, seed=2**64), "seed"),
    (lambda: data.spirals(noise=float("nan")), "noise"),
    (lambda: data.spirals(n=10**12), "n"),
    (lambda: data.spirals(n_test=10**9), "n_test"),
    (lambda: data.adding_problem(seq_len=10**9), "seq_len"),
    (lambda: data.adding_problem(seq_len=5000, n=10_000), "seq_len"),
    (lambda: data.adding_problem(seq_len=1), "seq_len"),
    (lambda: data.adding_problem(n=0), "n"),
    (lambda: models.mlp(0, 8), "depth"),
    (lambda: models.mlp(3, 2.5), "width"),
    (lambda: models.mlp(3, 8, activation="swish"), "activation"),
    (lambda: models.mlp(3, 8, init="orthogonal"), "init"),
    (lambda: models.mlp(3, 8, init="normal"), "weight_std"),
    (lambda: models.mlp(3, 8, init="normal", weight_std=-1), "weight_std"),
    (lambda: models.mlp(3, 8, weight_std=2.0), "weight_std"),
    (lambda: models.mlp(3, 8, batchnorm="yes"), "batchnorm"),
    (lambda: models.mlp(3, 8, seed=-3), "seed"),
    (lambda: models.sequence_model("transformer"), "cell"),
    (lambda: models.sequence_model("lstm", recurrent_scale=1.0), "recurrent_scale"),
    (lambda: models.sequence_model("rnn", recurrent_scale=0), "recurrent_scale"),
    (lambda: models.sequence_model("gru", forget_bias=1.0), "forget_bias"),
    (lambda: fit("net", ds, steps=1, lr=0.1), "model"),
    (lambda: fit(models.mlp(2, 4), "data", steps=1, lr=0.1), "data"),
    (lambda: fit(models.mlp(2, 4), (torch.zeros(3, 2), torch.zeros(4)), steps=1, lr=0.1), "data"),
    (lambda: fit(models.mlp(2, 4), ds, steps=0, lr=0.1), "steps"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0), "lr"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, optimizer="rmsprop"), "optimizer"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, clip="big"), "clip"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, batch_size=100), "batch_size"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, every=0), "every"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, probe="no"), "probe"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, probe=None), "probe"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, progress="yes"), "progress"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, seed=-1), "seed"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, momentum=1.5), "momentum"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, clip=True), "clip"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, clip=float("nan")), "clip"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, clip=-1), "clip"),
    (lambda: fit(models.mlp(2, 4).requires_grad_(False), ds, steps=1, lr=0.1), "model"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, warmup=-1), "warmup"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, warmup=2.5), "warmup"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, betas=(0.9, 0.99)), "betas"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, optimizer="adam", betas=0.9), "betas"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, optimizer="adam", betas=(0.9, 1.0)), "betas"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, optimizer="radam", betas=(-0.1, 0.9)), "betas"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, optimizer="adam", betas=("a", 0.9)), "betas"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, optimizer="adam", momentum=0.9), "momentum"),
    (lambda: accuracy("net", ds.x, ds.y), "model"),
    (lambda: accuracy(models.mlp(2, 4), ds.x, ds.y.float()), "y"),
    (lambda: accuracy(models.mlp(2, 4), ds.x, ds.y[:3]), "data"),
    (lambda: accuracy(models.mlp(2, 4), ds.x, torch.zeros(16, 3, dtype=torch.long)), "y"),
    (lambda: models.init_linear("layer1", "xavier"), "layer"),
    (lambda: models.init_linear(torch.nn.Linear(2, 2), "normal"), "weight_std"),
    (lambda: Run.load(3), "path"),
    (lambda: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, probe=False).save(None), "path"),
    (lambda: remedies.clip_norm(0), "threshold"),
    (lambda: remedies.Clipping("max", 1.0), "method"),
    (lambda: remedies.reinitialise(models.mlp(2, 4), "zeros"), "scheme"),
    (lambda: remedies.swap_activation(torch.nn.Linear(2, 2), "relu"), "model"),
    (lambda: plots.grad_norms("run"), "source"),
    (lambda: plots.loss_curve({}), "runs"),
    (lambda: start(seed=-1), "seed"),
])
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_plots_refuse_unknown_steps_and_layers():
    run = fit(models.mlp(2, 4, seed=0), ds, steps=3, lr=0.1)
    with pytest.raises(ValueError, match="step"):
        plots.grad_norms(run, step=99)
    with pytest.raises(ValueError, match="layers"):
        plots.grad_histograms(run, layers=["layer9"])
    with pytest.raises(ValueError, match="name"):
        run.trace.get("temperature")


def test_the_largest_seed_torch_takes_is_accepted():
    a, b = data.spirals(8, seed=2**64 - 1), data.spirals(8, seed=2**64 - 1)
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, data.spirals(8, seed=0).x)
    assert models.mlp(2, 4, seed=2**64 - 1).config["seed"] == 2**64 - 1
