"""gradcourse.theory (lessons 00, 01 and 02) against measurements: autograd on real activations and
probes on real MLPs. Tolerances are stated per test; every comparison runs over several seeds."""

import math

import numpy as np
import pytest
import torch

from gradcourse import data, models, theory
from gradcourse.probes import Probe

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def spirals():
    return data.spirals(512, seed=0)


def signal_at_init(net, x, y):
    with Probe(net) as probe:
        torch.nn.functional.cross_entropy(net(x), y).backward()
    return probe.trace.get("output_grad_norm")[0, : net.depth].astype(float)


def geometric_mean_factor(signal):
    return (signal[0] / signal[-1]) ** (1 / (len(signal) - 1))


# -- lesson 00: the scalar chain -----------------------------------------------------------------
# (Lesson 00's autograd chain, widgets.lesson00.chain_gradients, is measured against these
# predictions in tests/test_lesson00.py: a core test imports no lesson module.)
def test_scalar_chain_vanishes_below_and_explodes_above_the_critical_weight():
    for activation in ("sigmoid", "tanh"):
        w_c = theory.critical_weight(activation)
        assert theory.scalar_chain(0.9 * w_c, 50, activation)[0] < 0.01
        assert theory.scalar_chain(1.1 * w_c, 50, activation)[0] > 100
        assert theory.scalar_chain(w_c, 50, activation)[0] == pytest.approx(1.0)


def test_activation_slopes_agree_with_autograd():
    z = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    for name, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("gelu", torch.nn.functional.gelu)):
        slope = torch.autograd.grad(fn(z).sum(), z)[0].numpy()
        np.testing.assert_allclose(theory.activation_slope(name, z.detach().numpy()), slope, atol=1e-12)
    assert theory.activation_slope("relu", -1.0) == 0.0 and theory.activation_slope("relu", 2.0) == 1.0


# -- lesson 01: the per-layer factor of an MLP ---------------------------------------------------
# (activation, init, weight_std, weight scale, tolerance on the geometric-mean factor)
CASES = [
    ("sigmoid", "default", None, 1.0, 0.06),
    ("sigmoid", "xavier", None, 1.0, 0.06),
    ("sigmoid", "default", None, 4.0, 0.06),   # larger weights: pre-activations no longer small
    ("sigmoid", "default", None, 8.0, 0.10),   # partly saturated
    ("tanh", "default", None, 1.0, 0.06),
    ("tanh", "xavier", None, 1.0, 0.06),
    ("relu", "default", None, 1.0, 0.10),
    ("relu", "kaiming", None, 1.0, 0.06),
    ("relu", "normal", 2 * math.sqrt(2), 1.0, 0.06),   # twice He's scale: ×2 per layer
]


@pytest.mark.parametrize("activation,init,weight_std,scale,tol", CASES)
def test_mean_field_factor_matches_probe_over_seeds(spirals, activation, init, weight_std, scale, tol):
    depth, width = 20, 64
    m2 = float((spirals.x**2).sum(dim=1).mean())
    _, factors = theory.signal_factors(depth, width, activation=activation, init=init, weight_std=weight_std,
                                       input_second_moment=m2, weight_scale=scale)
    predicted = float(np.exp(np.mean(np.log(factors))))
    measured = []
    for seed in SEEDS:
        net = models.mlp(depth, width, activation=activation, init=init, weight_std=weight_std, seed=seed)
        with torch.no_grad():
            for layer in net.hidden_layers():
                layer.weight.mul_(scale)
        measured.append(geometric_mean_factor(signal_at_init(net, spirals.x, spirals.y)))
    mean = float(np.exp(np.mean(np.log(measured))))
    assert mean == pytest.approx(predicted, rel=tol), (measured, predicted)


def test_small_signal_factor_values_and_design_physics(spirals):
    # the course's claim (lesson 01): sigmoid-20 with the default init loses ~1e-16 first/last; ReLU + He stays near 1.
    chi = theory.small_signal_factor("sigmoid", "default", 64)
    assert chi == pytest.approx(0.25 / math.sqrt(3))
    assert 1e-17 < chi**19 < 1e-15
    assert theory.small_signal_factor("relu", "kaiming", 64) == pytest.approx(1.0)
    # ReLU with Var(w) = c·2/fan_in: the signal changes by sqrt(c) per layer.
    for c in (0.5, 2.0, 4.0):
        assert theory.small_signal_factor("relu", "normal", 64, weight_std=math.sqrt(2 * c)) == pytest.approx(
            math.sqrt(c))
    ratios = [signal_at_init(models.mlp(20, 64, activation="sigmoid", seed=s), spirals.x, spirals.y)
              for s in SEEDS]
    for signal in ratios:
        assert 1e-18 < signal[0] / signal[-1] < 1e-15


def test_predict_signal_tracks_every_layer(spirals):
    m2 = float((spirals.x**2).sum(dim=1).mean())
    for seed in SEEDS:
        net = models.mlp(20, 64, activation="sigmoid", seed=seed)
        signal = signal_at_init(net, spirals.x, spirals.y)
        predicted = theory.predict_signal(net.config, last=signal[-1], input_second_moment=m2)
        assert predicted[-1] == pytest.approx(signal[-1])
        # per layer within a factor 3 over 19 layers spanning 16 orders of magnitude
        assert np.all(np.abs(np.log10(signal / predicted)) < math.log10(3))


def test_depth_for_ratio_matches_measurement(spirals):
    chi = theory.small_signal_factor("sigmoid", "default", 64)
    depth = theory.depth_for_ratio(1e-8, chi)
    assert depth == 11
    assert chi ** (depth - 1) < 1e-8 <= chi ** (depth - 2)
    for seed in SEEDS:
        deep = signal_at_init(models.mlp(depth, 64, activation="sigmoid", seed=seed), spirals.x, spirals.y)
        shallow = signal_at_init(models.mlp(depth - 2, 64, activation="sigmoid", seed=seed), spirals.x, spirals.y)
        assert deep[0] / deep[-1] < 1e-8 < shallow[0] / shallow[-1]


# -- one Gaussian expectation, accurate at any q (issues 10 and 13) ------------------------------
def fine_grid_mean(f, q, n=100_001):
    """E[f(h)], h ~ N(0, q), by numpy's trapezoid on 1e5 points over ±12σ (independent of theory)."""
    s = math.sqrt(q)
    h = np.linspace(-12 * s, 12 * s, n)
    return np.trapezoid(f(h) * np.exp(-h * h / (2 * q)) / math.sqrt(2 * math.pi * q), h)


TORCH_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": torch.nn.functional.gelu,
                     "relu": torch.relu, "linear": lambda z: z}


def torch_value_and_slope(name):
    def value(h):
        return TORCH_ACTIVATIONS[name](torch.as_tensor(h, dtype=torch.float64)).numpy()

    def slope(h):
        z = torch.as_tensor(h, dtype=torch.float64).requires_grad_()
        return torch.autograd.grad(TORCH_ACTIVATIONS[name](z).sum(), z)[0].numpy()

    return value, slope


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "linear"])
@pytest.mark.parametrize("q", [1e-4, 0.01, 0.3, 1.0, 4.0, 12.5, 31.0, 100.0, 1e3, 1e4, 1.4e5, 1e6])
def test_gaussian_mean_matches_a_fine_grid(name, q):
    value, slope = torch_value_and_slope(name)
    for f in (lambda h: value(h) ** 2, lambda h: slope(h) ** 2):
        expected = fine_grid_mean(f, q)
        assert theory.gaussian_mean(f, q) == pytest.approx(expected, rel=1e-7)
    # array q gives the same numbers as one q at a time
    both = theory.gaussian_mean(lambda h: value(h) ** 2, np.array([q, 2 * q]))
    assert both[0] == pytest.approx(theory.gaussian_mean(lambda h: value(h) ** 2, q), rel=1e-12)


def test_gaussian_mean_exact_cases_and_large_q():
    assert theory.gaussian_mean(np.cos, 0.0) == 1.0                        # q = 0: f(0)
    assert theory.gaussian_mean(np.cos, 2.0) == pytest.approx(math.exp(-1.0), rel=1e-12)
    for q in (1e-3, 1.0, 1e8, 1e40):
        assert theory.gaussian_mean(lambda h: np.maximum(h, 0) ** 2, q) == pytest.approx(q / 2, rel=1e-12)
        assert theory.gaussian_mean(lambda h: (h > 0).astype(float), q) == pytest.approx(0.5, rel=1e-12)
    # narrow bump, wide Gaussian: E[sech⁴ h] → (4/3)/√(2πq); the old Gauss–Hermite rule returned 0
    for q in (1e4, 1e6, 1e8):
        bump = theory.gaussian_mean(lambda h: theory.activation_slope("tanh", h) ** 2, q)
        assert bump == pytest.approx(4 / 3 / math.sqrt(2 * math.pi * q), rel=2e-4)
    with pytest.raises(ValueError, match="q"):
        theory.gaussian_mean(np.cos, -1.0)
    with pytest.raises(ValueError, match="q"):
        theory.gaussian_mean(np.cos, [1.0, float("nan")])


def reference_tanh_mean_field(sigma_w, depth, q_input, sigma_b):
    q, qs, chis = sigma_w**2 * q_input + sigma_b**2, [], []
    for _ in range(depth):
        qs.append(q)
        chis.append(sigma_w**2 * fine_grid_mean(lambda h: (1 - np.tanh(h) ** 2) ** 2, q))
        q = sigma_w**2 * fine_grid_mean(lambda h: np.tanh(h) ** 2, q) + sigma_b**2
    return np.array(qs), np.array(chis)


@pytest.mark.parametrize("sigma_b", [0.0, 0.05])
@pytest.mark.parametrize("sigma_w", [0.5, 1.0, 2.0, 4.0, 6.0, 8.0])
@pytest.mark.parametrize("q_input", [0.166, 0.166 * 100**2])   # spirals, and inputs ×100
def test_tanh_mean_field_matches_a_fine_grid(sigma_w, sigma_b, q_input):
    q, chi = theory.tanh_mean_field(sigma_w, 6, q_input, sigma_b=sigma_b)
    q_ref, chi_ref = reference_tanh_mean_field(sigma_w, 6, q_input, sigma_b)
    np.testing.assert_allclose(q, q_ref, rtol=1e-7)
    np.testing.assert_allclose(chi, chi_ref, rtol=1e-6)
    assert np.all(chi > 0)


def test_tanh_chi_fixed_point_values():
    # fixed points of the fine-grid iteration (3000 steps), written out: issue 10 item 1
    for sigma_w, chi in ((2.0, 1.36267), (4.0, 2.37680), (6.0, 3.42708), (8.0, 4.48463)):
        assert theory.tanh_chi_fixed_point(sigma_w) == pytest.approx(chi, abs=2e-5)
    assert theory.tanh_chi_fixed_point(4.0, sigma_b=0.05) == pytest.approx(2.37653, abs=2e-5)
    assert theory.tanh_chi_fixed_point(0.8) == pytest.approx(0.64)            # ordered, q* = 0
    assert theory.tanh_chi_fixed_point(0.8, sigma_b=0.05) < 0.64
    # deep layers of the layer-by-layer map reach the same χ*
    _, chi = theory.tanh_mean_field(4.0, 60, 0.166)
    assert chi[-1] == pytest.approx(theory.tanh_chi_fixed_point(4.0), rel=1e-9)
    assert theory.tanh_critical_sigma_w(0.0) == pytest.approx(1.0, abs=1e-3)
    assert theory.tanh_critical_sigma_w(0.3) == pytest.approx(1.3956, abs=1e-3)


@pytest.mark.parametrize("sigma_b", [0.0, 0.3])
def test_tanh_chi_fixed_point_of_an_array_is_each_numbers_to_the_bit(sigma_b):
    # one bisection for all σ_w at once (lesson 02's phase diagram) gives what one call per σ_w gives,
    # across the edge of chaos (σ_w = 1 with σ_b = 0, where q* jumps from 0) and deep in both phases
    sigma_ws = np.array([0.3, 0.8, 1.0, 1.0 + 1e-9, 1.01, 1.4, 2.0, 4.0, 8.0])
    one_by_one = [theory.tanh_chi_fixed_point(s, sigma_b=sigma_b) for s in sigma_ws]
    np.testing.assert_array_equal(theory.tanh_chi_fixed_point(sigma_ws, sigma_b=sigma_b), one_by_one)
    assert isinstance(one_by_one[0], float)
    for bad in (np.array([1.0, 0.0]), np.array([1.0, np.nan]), np.array([-2.0])):
        with pytest.raises(ValueError, match="sigma_w"):
            theory.tanh_chi_fixed_point(bad)


def test_lesson02_tanh_prediction(spirals):
    """Lesson 02 c14's mean-field numbers: growth ≈ 329 (was 357 with the coarse rule), 55 % saturated."""
    x = spirals.x.numpy()
    assert theory.tanh_signal_ratio(4.0, 10, x) == pytest.approx(328.8, rel=1e-3)
    q, _ = theory.tanh_mean_field(4.0, 10, (x**2).mean(axis=1))
    assert theory.tanh_saturated_fraction(q[:, 9]).mean() == pytest.approx(0.554, abs=1e-3)


def test_tanh_saturated_fraction_matches_math_erfc():
    margin = 0.03
    for q in (0.0, 1e-3, 1.0, 12.48, 1e6):
        expected = math.erfc(math.atanh(1 - margin) / math.sqrt(2 * q)) if q > 0 else 0.0
        assert float(theory.tanh_saturated_fraction(q, margin)) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert theory.tanh_saturated_fraction(np.array([1.0, 4.0])).shape == (2,)


@pytest.mark.parametrize("activation, init", [("sigmoid", "default"), ("sigmoid", "kaiming"),
                                              ("tanh", "default"), ("tanh", "kaiming"), ("relu", "kaiming")])
def test_signal_factors_at_the_lesson01_explorer_extremes(activation, init):
    """Inputs ×100 and weights ×16 (the explorer's ends): never 0, and equal to a fine grid."""
    m2, scale, width, depth = 0.33 * 100**2, 16.0, 64, 6
    q, factors = theory.signal_factors(depth, width, activation=activation, init=init, input_second_moment=m2,
                                       weight_scale=scale)
    value, slope = torch_value_and_slope(activation)
    # Var(w) and Var(b) by hand, not from theory: PyTorch's default is U(±1/√fan_in) for both,
    # variance 1/(3·fan_in); Kaiming normal is 2/fan_in with zero biases. The explorer scales the
    # weights by ``scale``, not the biases.
    weight_var = {"default": lambda fan_in: 1 / (3 * fan_in), "kaiming": lambda fan_in: 2 / fan_in}[init]
    bias_var = {"default": lambda fan_in: 1 / (3 * fan_in), "kaiming": lambda fan_in: 0.0}[init]
    var = weight_var(width) * scale**2
    q_ref = [weight_var(2) * scale**2 * m2 + bias_var(2)]
    for _ in range(depth - 1):
        q_ref.append(width * var * fine_grid_mean(lambda h: value(h) ** 2, q_ref[-1]) + bias_var(width))
    f_ref = [math.sqrt(width * var * fine_grid_mean(lambda h: slope(h) ** 2, qk)) for qk in q_ref[:-1]]
    np.testing.assert_allclose(q, q_ref, rtol=1e-6)
    np.testing.assert_allclose(factors, f_ref, rtol=1e-4)   # relu: the grid's node at the kink
    assert np.all(factors > 0.01)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_batchnorm_growth_matches_a_wide_bn_network(activation):
    """Issue 10 item 5: √(E[φ'²]/Var φ) against the fitted per-layer factor of the signal in a BN MLP
    (depth 40, width 256) fed 64-D Gaussian inputs, whose batch is spread in every direction."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 64, generator=gen), torch.randint(0, 2, (256,), generator=gen)
    factors = []
    for seed in (0, 1):
        net = models.mlp(40, 256, activation=activation, batchnorm=True, in_features=64, seed=seed)
        signal = signal_at_init(net, x, y)
        middle = np.arange(2, 40)
        factors.append(math.exp(-np.polyfit(middle, np.log(signal[1:39]), 1)[0]))
    assert np.mean(factors) == pytest.approx(theory.batchnorm_growth(activation), rel=0.02), factors
    assert theory.batchnorm_growth("relu") == pytest.approx(theory.batchnorm_relu_growth(), rel=1e-10)
    assert theory.batchnorm_growth("linear") == pytest.approx(1.0)


#: σ_w at which a wide layer keeps small signals, by hand: 1/φ'(0) for the smooth activations
#: (σ'(0) = 1/4, tanh'(0) = 1, GELU'(0) = Φ(0) = 1/2), √(2/(1 + a²)) for ReLU (a = 0) and leaky ReLU
#: (a = 0.01): half the units pass the signal, the other half a times it.
CRITICAL_BY_HAND = {"sigmoid": 4.0, "tanh": 1.0, "relu": math.sqrt(2.0), "leaky_relu": math.sqrt(2 / (1 + 0.01**2)),
                    "gelu": 2.0, "linear": 1.0}


def test_one_source_for_each_constant():
    """The probe's saturation margin, the init's bias variance and the critical weight scale each
    have one source, and every module that uses one agrees with an independent reference."""
    from gradcourse import doctor, models, probes

    assert theory.SATURATION_MARGIN is getattr(probes, "SATURATION_MARGIN", getattr(probes, "_SATURATION_MARGIN", None))
    # Var(b): PyTorch's default bias is U(−1/√fan_in, 1/√fan_in), (2/√4)²/12 = 1/12 at fan_in 4; the
    # other schemes start at 0. Checked against the biases gradcourse.models draws (4096 of them).
    for init in models.INITS:
        expected = 1 / 12 if init == "default" else 0.0
        assert theory.bias_variance(init, 4) == pytest.approx(expected, abs=1e-15)
        net = models.mlp(1, 4096, in_features=4, init=init, weight_std=1.0 if init == "normal" else None, seed=0)
        bias = net.hidden_layers()[0].bias.detach().double()
        if init == "default":
            assert float(bias.var()) == pytest.approx(1 / 12, rel=0.06) and float(bias.abs().max()) <= 0.5
        else:
            assert torch.count_nonzero(bias) == 0
    with pytest.raises(ValueError, match="init"):
        theory.bias_variance("he", 4)
    # The critical scale: by hand, and 1/φ'(0) with φ'(0) from autograd for the smooth activations.
    assert theory.CRITICAL_SIGMA_W == pytest.approx(CRITICAL_BY_HAND)
    for name in ("sigmoid", "tanh", "gelu", "linear"):
        slope = float(torch_value_and_slope(name)[1](0.0))
        assert 1 / slope == pytest.approx(theory.critical_sigma_w(name), rel=1e-12)
    assert theory.CRITICAL_SIGMA_W["tanh"] == pytest.approx(theory.tanh_critical_sigma_w(0.0), abs=1e-3)
    # The doctor judges "drawn wider than critical" with the same scale, and names it per activation.
    for activation, sigma_w in CRITICAL_BY_HAND.items():
        assert doctor._critical_std(activation) == pytest.approx(sigma_w), activation
    assert "sigmoid is 4 " in doctor._critical_name("sigmoid") and "GELU is 2 " in doctor._critical_name("gelu")
    assert "√2" in doctor._critical_name("relu") and "tanh is 1 " in doctor._critical_name("tanh")


#: Constants with one source (name → the module that defines it). Any other module reads them from
#: there; a module that assigns one of these names a value of its own, or a literal equal to the
#: constant under a name that shares a word with it (``MARGIN = 0.03``), holds a copy.
ONE_SOURCE = {
    "SATURATION_MARGIN": "gradcourse.theory",
    "SLOPE_AT_ZERO": "gradcourse.theory",
    "CRITICAL_SIGMA_W": "gradcourse.theory",
    "VANISHING_SIGNAL_RATIO": "gradcourse.doctor",
    "EXPLODING_SIGNAL_RATIO": "gradcourse.doctor",
    "SATURATION_FRACTION": "gradcourse.doctor",
    "DEAD_FRACTION": "gradcourse.doctor",
    "_RELU_FAMILY": "gradcourse.doctor",
    "_NEVER_DEAD": "gradcourse.doctor",
    "LR_DIVISOR": "gradcourse.remedies",
}


def _constant_copies(sources: dict[str, str]) -> list[str]:
    """Every copy of a :data:`ONE_SOURCE` constant in ``sources`` (module name → its code), as
    "module: NAME = ...", read with ``ast`` from module and class bodies."""
    import ast
    import importlib

    values = {name: getattr(importlib.import_module(module), name) for name, module in ONE_SOURCE.items()}
    words = {name: {w for w in name.strip("_").split("_") if len(w) >= 4} for name in ONE_SOURCE}
    found = []
    for module, code in sources.items():
        bodies = [ast.parse(code).body]
        bodies += [node.body for node in bodies[0] if isinstance(node, ast.ClassDef)]
        for node in (n for body in bodies for n in body if isinstance(n, (ast.Assign, ast.AnnAssign))):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is None or isinstance(node.value, (ast.Name, ast.Attribute)):
                continue  # a reference to the source (MARGIN = SATURATION_MARGIN) is no copy
            try:
                literal = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                literal = None
            for target in (t.id for t in targets if isinstance(t, ast.Name)):
                for name, source in ONE_SOURCE.items():
                    if module == source:
                        continue
                    same_name = target == name
                    alike = bool(words[name] & set(target.strip("_").split("_")))
                    same_value = literal is not None and type(literal) is type(values[name]) and literal == values[name]
                    if same_name or (alike and same_value):
                        found.append(f"{module}: {target} = {ast.unparse(node.value)} (a copy of {source}.{name})")
    return found


def test_no_constant_has_a_copy():
    """One source for each constant: no module of the package assigns a value of its own to a constant
    that another module defines (the saturation margin lived in the probe's measurements and theory
    imported it; a second _RELU_FAMILY sat unused in remedies)."""
    from pathlib import Path

    root = Path(theory.__file__).resolve().parents[1]
    sources = {".".join(p.relative_to(root).with_suffix("").parts): p.read_text(encoding="utf-8")
               for p in sorted((root / "gradcourse").rglob("*.py"))}
    assert set(ONE_SOURCE.values()) <= set(sources)
    assert _constant_copies(sources) == []


def test_the_copy_finder_finds_copies_under_either_name():
    copies = _constant_copies({
        "gradcourse.measurements": "SATURATION_MARGIN = 0.03\n",              # the old second home
        "gradcourse.widgets.lesson01": "MARGIN = 0.03\nclass X:\n    VANISHING_RATIO = 1e-4\n",
        "gradcourse.remedies": '_RELU_FAMILY = ("relu",)\nLR = 0.03\n',
        "gradcourse.widgets.lesson02": "from ..theory import SATURATION_MARGIN\nMARGIN = SATURATION_MARGIN\n",
        "gradcourse.theory": "SATURATION_MARGIN = 0.03\n",                     # the source itself
    })
    assert [c.split(" (a copy")[0] for c in copies] == [
        "gradcourse.measurements: SATURATION_MARGIN = 0.03", "gradcourse.widgets.lesson01: MARGIN = 0.03",
        "gradcourse.widgets.lesson01: VANISHING_RATIO = 0.0001", "gradcourse.remedies: _RELU_FAMILY = ('relu',)"]


def test_theory_imports_neither_the_probe_nor_its_measurements():
    """The definitions flow from theory to what measures by them, never back."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(theory.__file__).read_text(encoding="utf-8"))
    imported = {(node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m.split(".")[-1] in ("measurements", "probes", "trace")}, imported


def test_the_doctor_states_gelus_critical_scale():
    """A GELU network drawn at twice its critical scale: the evidence says 2, not ReLU's √2."""
    from gradcourse import diagnose
    from gradcourse.train import fit

    net = models.mlp(10, 64, activation="gelu", init="normal", weight_std=4.0, seed=0)
    d = diagnose(fit(net, data.spirals(256, seed=0), steps=5, lr=0.01))
    assert d.problem == "exploding"
    assert ("The weights were drawn with std 4/√fan_in, while the critical scale for GELU is 2 "
            "(1/GELU'(0) = 1/0.5).") in d.evidence


@pytest.mark.parametrize("call, name", [
    (lambda: theory.scalar_chain(2.0, 0), "depth"),
    (lambda: theory.chain_factor("big"), "w"),
    (lambda: theory.activation_slope("swish", 0.0), "activation"),
    (lambda: theory.weight_variance("he", 4, 4), "init"),
    (lambda: theory.weight_variance("normal", 4, 4), "weight_std"),
    (lambda: theory.signal_factors(5, 8, weight_scale=0.0), "weight_scale"),
    (lambda: theory.depth_for_ratio(2.0, 0.5), "threshold"),
    (lambda: theory.predict_signal({"kind": "sequence"}), "config"),
])
def test_bad_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
