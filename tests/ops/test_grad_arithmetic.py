"""Add/Sub/Mul/Div gradients with numpy and legacy broadcasting; Sum's pass-through gradient."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op


@st.composite
def broadcast_pair(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    a = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    n_b = draw(st.integers(1, len(a)))
    b = tuple(1 if draw(st.booleans()) else d for d in a[len(a) - n_b :])
    return a, b


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
@settings(max_examples=10)
@given(shapes=broadcast_pair(), seed=st.integers(0, 2**16))
def test_binary_gradient_numpy_broadcast(
    op_type: str, shapes: tuple[tuple[int, ...], tuple[int, ...]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shapes[0])
    b = rng.uniform(0.5, 2.0, size=shapes[1]) * rng.choice([-1.0, 1.0], size=shapes[1])
    res = check_gradient(make_op(op_type, ["a", "b"], ["c"]), {"a": a, "b": b}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()
    assert res.analytic["b"].shape == b.shape


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_binary_gradient_legacy_broadcast(op_type: str) -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(2, 3, 4)), rng.uniform(0.5, 2.0, size=(3,))
    op = make_op(op_type, ["a", "b"], ["c"], broadcast=1, axis=1)
    res = check_gradient(op, {"a": a, "b": b}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()
    (g,) = gradient_for_op(op, ["c_grad"]).ops
    assert g.type == f"{op_type}Gradient"
    assert list(g.input)[:3] == ["c_grad", "a", "b"] and list(g.output) == ["a_grad", "b_grad"]


def test_sum_gradient_is_a_pass_through() -> None:
    spec = gradient_for_op(make_op("Sum", ["a", "b", "c"], ["s"]), ["s_grad"])
    assert spec.ops == [] and spec.grad_inputs == ["s_grad"] * 3
    rng = np.random.default_rng(1)
    ins = {k: rng.normal(size=(2, 3)) for k in "ab"}
    # Sum has no gradient ops, so check it through a net that consumes the gradients.
    res = check_gradient(make_op("Sum", ["a", "b"], ["s"]), ins, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()
