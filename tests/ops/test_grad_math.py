"""Gradients of math ops: unaries, Scale, Negative, Mean, Max/Min, reductions, SumElements, Slice, Squeeze."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op

OK = {"threshold": 1e-6, "stepsize": 1e-6}


@pytest.mark.parametrize("op_type", ["Sinh", "Cosh", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Abs", "Negative"])
def test_unary_gradient(op_type: str) -> None:
    x = np.random.default_rng(0).uniform(-0.9, 0.9, size=(3, 4))
    x[np.abs(x) < 0.05] = 0.2
    res = check_gradient(make_op(op_type, ["x"], ["y"]), {"x": x}, **OK)
    assert res.ok, res.describe()


@pytest.mark.parametrize("op_type", ["Exp", "Log", "Sqr", "Sqrt"])
def test_composite_gradients(op_type: str) -> None:
    # Caffe2 builds these from Mul/Div/Scale ops.
    x = np.random.default_rng(1).uniform(0.5, 2.0, size=(3, 4))
    res = check_gradient(make_op(op_type, ["x"], ["y"]), {"x": x}, **OK)
    assert res.ok, res.describe()


def distinct(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1


CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("Scale", {"scale": 2.5}, (3, 4)),
    ("Squeeze", {"dims": [1]}, (3, 1, 4)),
    ("ExpandDims", {"dims": [0, 2]}, (3, 4)),
    ("FlattenToVec", {}, (3, 4)),
    ("ReduceSum", {"axes": [1], "keepdims": 0}, (3, 4, 2)),
    ("ReduceMean", {"axes": [0, 2]}, (3, 4, 2)),
    ("ReduceMax", {"axes": [1], "keepdims": 0}, (3, 4, 2)),
    ("ReduceMin", {}, (3, 4, 2)),
    ("ReduceFrontSum", {"num_reduce_dim": 2}, (3, 4, 2)),
    ("ReduceFrontMean", {}, (3, 4, 2)),
    ("ReduceFrontMax", {}, (3, 4, 2)),
    ("ReduceBackSum", {}, (3, 4, 2)),
    ("ReduceBackMean", {"num_reduce_dim": 2}, (3, 4, 2)),
    ("ReduceBackMin", {}, (3, 4, 2)),
    ("SumElements", {}, (3, 4)),
    ("SumElements", {"average": 1}, (3, 4)),
    ("Slice", {"starts": [1, 0], "ends": [-1, 2]}, (3, 4)),
    ("ReduceL1", {"axes": [1]}, (3, 4, 2)),
    ("ReduceL2", {"axes": [0, 2], "keepdims": 0}, (3, 4, 2)),
    ("ColwiseMax", {}, (2, 3, 4)),
    ("RowwiseMax", {}, (2, 3, 4)),
]


@pytest.mark.parametrize("op_type,args,shape", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_single_input_gradient(op_type: str, args: dict[str, Any], shape: tuple[int, ...]) -> None:
    x = distinct(len(args) + len(shape), shape)
    res = check_gradient(make_op(op_type, ["x"], ["y"], **args), {"x": x}, **OK)
    assert res.ok, res.describe()


def test_slice_with_index_inputs() -> None:
    ins = {"x": distinct(1, (3, 4)), "s": np.array([0, 1]), "e": np.array([2, -2])}
    res = check_gradient(make_op("Slice", ["x", "s", "e"], ["y"]), ins, check=[0], **OK)
    assert res.ok, res.describe()


@pytest.mark.parametrize("op_type", ["Mean", "Max", "Min"])
def test_nary_gradient(op_type: str) -> None:
    ins = {"a": distinct(1, (3, 4)), "b": distinct(2, (3, 4)) + 0.05, "c": distinct(3, (3, 4)) + 0.03}
    res = check_gradient(make_op(op_type, ["a", "b", "c"], ["y"]), ins, **OK)
    assert res.ok, res.describe()


def test_max_gradient_gives_every_tie_the_gradient() -> None:
    a, b = np.float32([1.0, 2.0]), np.float32([1.0, 3.0])
    ga, gb = run_op("MaxGradient", [np.float32([1.0, 3.0]), np.float32([5.0, 7.0]), a, b], 2)
    np.testing.assert_array_equal(ga, [5.0, 0.0])
    np.testing.assert_array_equal(gb, [5.0, 7.0])
