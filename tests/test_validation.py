"""Bad input to a public function gives a ValueError that names the argument."""

import re

import pytest
import torch

from gradcourse import data, models, plots, remedies, start
from gradcourse.train import Run, accuracy, fit, train_loop

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
    """The message starts with the argument's name ("n must be at least 2"), or with a list of the
    names it concerns ("n, n_test and seq_len ask for..."): matching the bare name anywhere let "n",
    "y" and "data" pass on any sentence that holds those letters."""
    with pytest.raises(ValueError, match=rf"^(?:\w+, )*(?:\w+ and )?{re.escape(argument)}\b"):
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


# -- one seed check: every public function that takes a seed refuses one torch cannot take ------------
def _public_seed_takers() -> set[str]:
    """``module.function`` of every public function (and class) of gradcourse with a ``seed``
    parameter, found by walking the package: a new one must be added to SEED_CALLS below."""
    import importlib
    import inspect
    import pkgutil

    import gradcourse

    found = set()
    for info in [None, *pkgutil.walk_packages(gradcourse.__path__, "gradcourse.")]:
        name = "gradcourse" if info is None else info.name
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name or not callable(obj):
                continue
            try:
                parameters = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                continue
            if "seed" in parameters:
                found.add(f"{name.removeprefix('gradcourse.')}.{attr}")
    return found


def _seed_calls():
    from gradcourse import encoder, exercises, measurements, patients, precision, transformer_measures
    from gradcourse.widgets import lesson01, lesson02, lesson03, lesson05, lesson06, lesson08

    tiny = torch.nn.Linear(2, 2)
    w = torch.ones(2, requires_grad=True)
    return {
        "gradcourse.start": lambda seed: start(seed=seed),
        "data.spirals": lambda seed: data.spirals(seed=seed),
        "data.adding_problem": lambda seed: data.adding_problem(seed=seed),
        "data.cached_spirals": lambda seed: data.cached_spirals(seed=seed),
        "data.reversal": lambda seed: data.reversal(seed=seed),
        "data.digits": lambda seed: data.digits(seed=seed),
        "exercises.prescription": lambda seed: exercises.prescription("lower_lr", seed=seed),
        "exercises.fixed_model": lambda seed: exercises.fixed_model(tiny, seed=seed),
        "models.mlp": lambda seed: models.mlp(2, 4, seed=seed),
        "models.sequence_model": lambda seed: models.sequence_model("rnn", seed=seed),
        "models.resnet_mlp": lambda seed: models.resnet_mlp(2, 4, seed=seed),
        "models.digits_model": lambda seed: models.digits_model(seed=seed),
        "models.resnet18": lambda seed: models.resnet18(seed=seed),
        "measurements.top_hessian_eigenvalue": lambda seed: measurements.top_hessian_eigenvalue(
            lambda: (w ** 2).sum(), [w], seed=seed),
        "precision.build": lambda seed: precision.build(2, seed=seed),
        "precision.lost_fraction": lambda seed: precision.lost_fraction(1e-3, seed=seed),
        "precision.smallest_scale": lambda seed: precision.smallest_scale(2, seed=seed),
        "precision.train": lambda seed: precision.train(seed=seed),
        "patients.recipe": lambda seed: patients.recipe("A", seed=seed),
        "patients.treat": lambda seed: patients.treat("A", seed=seed),
        "patients.mystery_runs": lambda seed: patients.mystery_runs(seed=seed),
        "train.fit": lambda seed: fit(models.mlp(2, 4), ds, steps=1, lr=0.1, seed=seed),
        "train.train_loop": lambda seed: train_loop(tiny, data.digits(), seed=seed),
        "encoder.transformer": lambda seed: encoder.transformer(2, seed=seed),
        "widgets.lesson01.build": lambda seed: lesson01.build(seed=seed),
        "widgets.lesson01.measure": lambda seed: lesson01.measure(seed=seed),
        "widgets.lesson02.probe_network": lambda seed: lesson02.probe_network("relu", 2, 1.0, seed=seed),
        "widgets.lesson03.patient": lambda seed: lesson03.patient(seed=seed),
        "widgets.lesson03.train_patient": lambda seed: lesson03.train_patient(0.1, seed=seed),
        "widgets.lesson03.patient_data": lambda seed: lesson03.patient_data(seed=seed),
        "widgets.lesson05.build": lambda seed: lesson05.build(4, True, False, seed=seed),
        "widgets.lesson06.adding_data": lambda seed: lesson06.adding_data(10, seed=seed),
        "widgets.lesson06.build": lambda seed: lesson06.build("rnn", seed=seed),
        "widgets.lesson08.broken_model": lambda seed: lesson08.broken_model(seed=seed),
        "transformer_measures.experiment": lambda seed: transformer_measures.experiment(seed=seed),
        "transformer_measures.perturbation_change":
            lambda seed: transformer_measures.perturbation_change(tiny, seed=seed),
    }


def test_every_function_taking_a_seed_is_checked_here():
    assert _public_seed_takers() == set(_seed_calls())


@pytest.mark.parametrize("seed", [2**64, -1, 2.5, "0", True])
@pytest.mark.parametrize("name", sorted(_seed_calls()))
def test_every_seed_taker_refuses_a_seed_torch_cannot_take(name, seed):
    """One check (``_checks.seed``) before any work: 2**64 gave "Overflow when unpacking long long".
    An exercise check answers with the same sentence as Feedback (correct None), not a traceback."""
    pattern = r"seed must be (an integer|at most|at least)"
    try:
        outcome = _seed_calls()[name](seed)
    except ValueError as error:
        assert re.match(pattern, str(error)), error
    else:
        assert outcome.correct is None and re.search(f"cannot run: {pattern}", outcome.message), outcome
