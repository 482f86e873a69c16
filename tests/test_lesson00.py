"""Lesson 00: the scalar-chain explorer and the lesson's exercise checks."""


import numpy as np
import pytest
from matplotlib.figure import Figure

from gradcourse.widgets import EXPLORERS
from gradcourse.widgets.lesson00 import ScalarChainExplorer, chain_gradients


def test_registered():
    assert EXPLORERS["00_start_here"] is ScalarChainExplorer


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


