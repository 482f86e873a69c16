"""Lesson 00: the scalar-chain explorer, chain_gradients against theory, and the exercise checks."""


import numpy as np
import pytest
from _tools import assert_registered
from matplotlib.figure import Figure

from gradcourse import theory
from gradcourse.widgets.lesson00 import ScalarChainExplorer, chain_gradients


def test_registered():
    assert_registered("00_start_here", ScalarChainExplorer)


def test_default_run_vanishes_as_predicted():
    result = ScalarChainExplorer().run()
    v = result.values
    assert isinstance(result.figure, Figure)
    assert result.params == {"depth": 20, "w": 2.0, "activation": "sigmoid", "offset": 0.0}
    assert v["factor"] == 0.5
    assert v["input_gradient"] == pytest.approx(0.5**20, rel=1e-12)
    np.testing.assert_allclose(v["measured"], v["predicted"], rtol=1e-12)
    assert "0.5" in result.summary


@pytest.mark.parametrize("w, expected", [(4.0, 1.0), (5.0, 1.25**20), (-3.0, 0.75**20)])
def test_weight_decides_vanish_keep_or_explode(w, expected):
    v = ScalarChainExplorer().run(w=w).values
    assert v["input_gradient"] == pytest.approx(expected, rel=1e-9)


def test_tanh_boundary_is_one_and_offset_lowers_the_measured_gradient():
    tanh = ScalarChainExplorer().run(activation="tanh", w=1.0, depth=30).values
    assert tanh["critical_weight"] == 1.0 and tanh["input_gradient"] == pytest.approx(1.0)
    off = ScalarChainExplorer().run(offset=2.0).values
    assert off["input_gradient"] < 1e-6 * off["predicted"][0]   # saturated sigmoid: far below the line
    assert np.all(off["z"] > 1.5)


def test_linear_chain_ignores_the_offset():
    v = ScalarChainExplorer().run(activation="linear", w=0.9, offset=3.0, depth=10).values
    assert v["input_gradient"] == pytest.approx(0.9**10)


def test_chain_gradients_last_entry_is_one():
    grads, z = chain_gradients(3.0, 5, "sigmoid", 1.0)
    assert grads[-1] == 1.0 and len(grads) == 6 and len(z) == 5


@pytest.mark.parametrize("params, name", [
    ({"depth": 0}, "depth"), ({"depth": 61}, "depth"), ({"w": 11.0}, "w"), ({"w": 0.0}, "w"),
    ({"activation": "relu"}, "activation"), ({"offset": 9.0}, "offset"), ({"width": 3}, "width"),
])
def test_bad_params_raise_value_error_naming_them(params, name):
    with pytest.raises(ValueError, match=name):
        ScalarChainExplorer().run(**params)




# -- the lesson's exercise checks (expected values measured in the notebook) ----------------------

def test_tanh_chain_check_and_its_measurement():
    from gradcourse import exercises

    assert chain_gradients(0.8, 25, "tanh")[0][0] == pytest.approx(0.0037778931862957215, rel=1e-9)
    assert exercises.chain_gradient_tanh(0.0037778931862957215).correct is True
    assert exercises.chain_gradient_tanh("0.8**25").correct is True
    wrong = exercises.chain_gradient_tanh(0.2**25)          # σ'(0) = 1/4 used instead of tanh'(0) = 1
    assert wrong.correct is False and "tanh'(0)" in wrong.message
    assert exercises.chain_gradient_tanh(0.8).correct is False
    assert exercises.chain_gradient_tanh(None).correct is None
    assert exercises.chain_gradient_tanh("abc").correct is False


def test_offset_boundary_check():
    from gradcourse import exercises

    assert exercises.critical_weight_offset(9.5244).correct is True
    assert exercises.critical_weight_offset("1/0.105").correct is True
    at_zero = exercises.critical_weight_offset(4)
    assert at_zero.correct is False and "z = 0" in at_zero.message
    assert exercises.critical_weight_offset(0.105).correct is False
    assert exercises.critical_weight_offset([9.5, 1]).correct is False


def test_half_he_curves_check():
    from gradcourse import exercises

    assert exercises.half_he_curves("Output grad norm").correct is True
    assert exercises.half_he_curves("both").correct is False
    assert exercises.half_he_curves("dead_frac").correct is False and "one of" in exercises.half_he_curves(
        "dead_frac").message
    assert exercises.half_he_curves(3).correct is False


def test_sharpness_along_is_the_same_run_and_measures_the_hessian():
    """train.sharpness_along: its losses are fit's, step for step; on a linear model with the mean
    squared error the Hessian is the constant 2·E[x̃x̃ᵀ] (x̃ = (x, 1)), whose top eigenvalue numpy gives."""
    import numpy as np
    import torch

    from gradcourse import data, models
    from gradcourse.train import fit, sharpness_along

    ds = data.spirals(128, seed=0)
    found = sharpness_along(models.mlp(3, 16, activation="tanh", seed=2), ds, steps=12, lr=0.5, at=[0, 5, 11])
    run = fit(models.mlp(3, 16, activation="tanh", seed=2), ds, steps=12, lr=0.5, probe=False, progress=False)
    assert found.steps.tolist() == [0, 5, 11] and np.allclose(found.losses, run.losses)

    torch.manual_seed(0)
    x = torch.randn(64, 3) * torch.tensor([1.0, 3.0, 0.5])
    y = torch.randn(64, 1)
    extended = torch.cat([x, torch.ones(64, 1)], dim=1).double()
    top = np.linalg.eigvalsh((2 * extended.T @ extended / 64).numpy()).max()
    linear = sharpness_along(torch.nn.Linear(3, 1), (x, y), steps=3, lr=0.01)
    assert np.allclose(linear.sharpness, top, rtol=2e-3)   # rtol 1e-3 stops the power iteration


def test_sharpness_figure_is_titled_labelled_and_inside_its_figure():
    import numpy as np
    from test_plots import texts_outside

    from gradcourse.widgets.lesson00 import sharpness_figure

    fig = sharpness_figure(np.linspace(0.7, 0.3, 20), np.linspace(2, 10, 20), 0.5)
    assert all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert any("2/lr = 4" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    assert texts_outside(fig, 100) == []


# -- chain_gradients (autograd on a real scalar chain) against theory.scalar_chain's |w·φ'(0)|^(L−k)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "linear"])
@pytest.mark.parametrize("w", [-3.0, 0.5, 2.0, 4.0, 5.0])
def test_chain_gradients_match_theory_at_z0(activation, w):
    measured, z = chain_gradients(w, 25, activation)
    assert np.all(z == 0)
    np.testing.assert_allclose(measured, theory.scalar_chain(w, 25, activation), rtol=1e-12)


def test_theory_is_an_upper_bound_for_a_sigmoid_chain_off_zero():
    # sigma'(z) <= sigma'(0): a chain pushed off z = 0 passes less gradient than predicted.
    for offset in (-2.0, 0.5, 2.0):
        measured, _ = chain_gradients(2.0, 20, "sigmoid", offset)
        assert measured[0] < theory.scalar_chain(2.0, 20, "sigmoid")[0]
