"""Finite-difference checks of activation gradients (ReluGradient, SigmoidGradient, ... SoftmaxGradient)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op


def away_from_kinks(rng: np.random.Generator, shape: tuple[int, ...], kinks: tuple[float, ...] = (0.0,)) -> np.ndarray:
    """float64 values at least 0.05 from every kink (finite differences are wrong across a kink)."""
    x = rng.uniform(-2.0, 2.0, size=shape)
    for k in kinks:
        close = np.abs(x - k) < 0.05
        x[close] = k + 0.1
    return x


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)

CASES = [
    ("Relu", {}, (0.0,)),
    ("Sigmoid", {}, ()),
    ("Tanh", {}, ()),
    ("LeakyRelu", {"alpha": 0.3}, (0.0,)),
    ("Elu", {"alpha": 0.7}, (0.0,)),
    ("Clip", {"min": -0.5, "max": 0.8}, (-0.5, 0.8)),
    ("Softmax", {}, ()),
]


@pytest.mark.parametrize("op_type,args,kinks", CASES, ids=[c[0] for c in CASES])
@settings(max_examples=12)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_activation_gradient_matches_finite_differences(
    op_type: str, args: dict[str, float], kinks: tuple[float, ...], shape: tuple[int, ...], seed: int
) -> None:
    if op_type == "Softmax" and len(shape) < 2:
        shape = (*shape, 3)
    x = away_from_kinks(np.random.default_rng(seed), shape, kinks)
    res = check_gradient(make_op(op_type, ["x"], ["y"], **args), {"x": x}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


@pytest.mark.parametrize("axis", [1, 2, -1])
def test_softmax_gradient_respects_axis(axis: int) -> None:
    x = np.random.default_rng(axis + 5).normal(size=(2, 3, 4))
    res = check_gradient(make_op("Softmax", ["x"], ["y"], axis=axis), {"x": x}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


def test_relu_n_gradient_when_forward_exists() -> None:
    x = away_from_kinks(np.random.default_rng(1), (3, 5), (0.0, 1.5)) * 1.2
    res = check_gradient(make_op("ReluN", ["x"], ["y"], n=1.5), {"x": x}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


def test_gradients_use_the_forward_output_in_place() -> None:
    # Caffe2 computes these from Y, so the forward op may overwrite X: dX = dY * (Y > 0).
    y = np.array([[0.0, 2.0], [3.0, 0.0]], dtype=np.float32)
    dy = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    (dx,) = run_op("ReluGradient", [y, dy])
    np.testing.assert_array_equal(dx, [[0.0, 2.0], [3.0, 0.0]])
    assert dx.dtype == np.float32
    (dx,) = run_op("SigmoidGradient", [np.float32([0.25]), np.float32([2.0])])
    np.testing.assert_allclose(dx, [2.0 * 0.25 * 0.75])
