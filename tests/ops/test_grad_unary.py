"""Gradients of Swish, Softplus, Selu, HardSigmoid, ThresholdedRelu, Softsign, Cube, Cbrt, Reciprocal, Rsqrt,
Erf and Log1p against finite differences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import OperatorError
from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op

CASES: list[tuple[str, dict[str, Any], float, float, tuple[float, ...]]] = [
    # (op, args, low, high, kinks to stay away from)
    ("Swish", {}, -3.0, 3.0, ()),
    ("Softplus", {}, -3.0, 3.0, ()),
    ("Selu", {}, -2.0, 2.0, (0.0,)),
    ("Selu", {"alpha": 1.1, "scale": 0.9}, -2.0, 2.0, (0.0,)),
    ("HardSigmoid", {}, -4.0, 4.0, (-2.5, 2.5)),
    ("HardSigmoid", {"alpha": 0.5, "beta": 0.1}, -2.0, 2.0, (-0.2, 1.8)),
    ("ThresholdedRelu", {"alpha": 0.5}, -2.0, 2.0, (0.5,)),
    ("Softsign", {}, -2.0, 2.0, (0.0,)),
    ("Cube", {}, -2.0, 2.0, ()),
    ("Cbrt", {}, 0.5, 2.0, ()),
    ("Reciprocal", {}, 0.5, 2.0, ()),
    ("Rsqrt", {}, 0.5, 2.0, ()),
    ("Erf", {}, -2.0, 2.0, ()),
    ("Log1p", {}, -0.5, 2.0, ()),
]


@pytest.mark.parametrize("op_type,args,low,high,kinks", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@settings(max_examples=5)
@given(seed=st.integers(0, 2**16), shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple))
def test_unary_gradient(
    op_type: str, args: dict[str, Any], low: float, high: float, kinks: tuple[float, ...], seed: int, shape: Any
) -> None:
    x = np.random.default_rng(seed).uniform(low, high, size=shape)
    for k in kinks:
        x[np.abs(x - k) < 0.05] = k + 0.1
    res = check_gradient(make_op(op_type, ["x"], ["y"], **args), {"x": x}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


def test_selu_gradient_defaults_come_from_the_forward_op() -> None:
    # Without arguments SeluGradient must use Selu's alpha and scale, not zeros.
    y, dy = np.float64([-0.5, 2.0]), np.float64([1.0, 1.0])
    (dx,) = run_op("SeluGradient", [y, dy])
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    np.testing.assert_allclose(dx, [-0.5 + alpha * scale, scale])


def test_selu_gradient_takes_matching_element_counts_and_y_shape() -> None:
    # Caffe2's SeluGradient only checks numel(Y) == numel(dY) and gives dX Y's shape (selu_op_test feeds
    # a (1, n) Y with an (n,) dY). Naive loop over the flat values.
    rng = np.random.default_rng(8)
    y = rng.normal(size=(1, 6)).astype(np.float32)
    dy = rng.normal(size=(6,)).astype(np.float32)
    (dx,) = run_op("SeluGradient", [y, dy], alpha=1.3, scale=1.1)
    assert dx.shape == (1, 6)
    for i in range(6):
        yi, gi = float(y[0, i]), float(dy[i])
        want = gi * 1.1 if yi > 0 else gi * (yi + 1.3 * 1.1)
        assert dx[0, i] == pytest.approx(want, rel=1e-6)
    with pytest.raises(OperatorError, match="element count"):
        run_op("SeluGradient", [y, dy[:5]], infer=False)
