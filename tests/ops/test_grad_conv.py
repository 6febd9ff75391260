"""ConvGradient, MaxPool/AveragePool gradients and PadImageGradient against finite differences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op


@st.composite
def conv_case(draw: st.DrawFn) -> dict[str, Any]:
    order = draw(st.sampled_from(["NCHW", "NHWC"]))
    group = draw(st.sampled_from([1, 2]))
    c = group * draw(st.integers(1, 2))
    m = group * draw(st.integers(1, 2))
    k = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, 1))
    dilation = draw(st.integers(1, 2))
    size = draw(st.integers(dilation * (k - 1) + 1, 5))
    bias = draw(st.booleans())
    return dict(
        order=order, group=group, c=c, m=m, k=k, stride=stride, pad=pad, dilation=dilation, size=size, bias=bias
    )


@settings(max_examples=15)
@given(case=conv_case(), seed=st.integers(0, 2**16))
def test_conv_gradient_matches_finite_differences(case: dict[str, Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c, m, k, s = 2, case["c"], case["m"], case["k"], case["size"]
    nchw = case["order"] == "NCHW"
    x = rng.normal(size=(n, c, s, s) if nchw else (n, s, s, c))
    cg = c // case["group"]
    w = rng.normal(size=(m, cg, k, k) if nchw else (m, k, k, cg))
    ins = {"x": x, "w": w}
    names = ["x", "w"]
    if case["bias"]:
        ins["b"] = rng.normal(size=(m,))
        names.append("b")
    op = make_op(
        "Conv",
        names,
        ["y"],
        kernel=k,
        stride=case["stride"],
        pad=case["pad"],
        dilation=case["dilation"],
        group=case["group"],
        order=case["order"],
    )
    res = check_gradient(op, ins, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


def test_conv_1d_and_3d_gradients() -> None:
    rng = np.random.default_rng(2)
    op1 = make_op("Conv", ["x", "w", "b"], ["y"], kernels=[3], pads=[1, 0], strides=[2])
    res = check_gradient(
        op1, {"x": rng.normal(size=(2, 2, 7)), "w": rng.normal(size=(3, 2, 3)), "b": rng.normal(size=3)}
    )
    assert res.ok, res.describe()
    op3 = make_op("Conv", ["x", "w"], ["y"], kernel=2)
    res = check_gradient(op3, {"x": rng.normal(size=(1, 2, 3, 3, 3)), "w": rng.normal(size=(2, 2, 2, 2, 2))})
    assert res.ok, res.describe()


def test_conv_gradient_without_input_gradient() -> None:
    op = make_op("Conv", ["x", "w", "b"], ["y"], kernel=2, no_gradient_to_input=1)
    spec = gradient_for_op(op, ["y_grad"])
    assert list(spec.ops[0].output) == ["w_grad", "b_grad"] and spec.grad_inputs[0] is None
    x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32)
    dw, db = run_op("ConvGradient", [x, w, np.ones((1, 1, 2, 2), np.float32)], 2, infer=False, kernel=2)
    np.testing.assert_allclose(dw, np.full((1, 1, 2, 2), 4.0))
    np.testing.assert_allclose(db, [4.0])


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values with gaps of 0.1 so that a finite-difference step never changes which one is the max."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1


POOL_CASES = [
    ("MaxPool", {"kernel": 2, "stride": 2}),
    ("MaxPool", {"kernel": 3, "stride": 2, "pad": 1}),
    ("MaxPool", {"kernel": 3, "stride": 1, "pad": 1, "order": "NHWC"}),
    ("MaxPool", {"kernel": 3, "stride": 2, "legacy_pad": 3}),
    ("MaxPool", {"global_pooling": 1}),
    ("AveragePool", {"kernel": 2, "stride": 2}),
    ("AveragePool", {"kernel": 3, "stride": 2, "pad": 1}),
    ("AveragePool", {"kernel": 3, "stride": 2, "pad": 1, "count_include_pad": 1}),
    ("AveragePool", {"kernel": 2, "stride": 1, "order": "NHWC"}),
    ("AveragePool", {"global_pooling": 1}),
]


@pytest.mark.parametrize("op_type,args", POOL_CASES, ids=[f"{t}-{sorted(a.items())}" for t, a in POOL_CASES])
def test_pool_gradient_matches_finite_differences(op_type: str, args: dict[str, Any]) -> None:
    rng = np.random.default_rng(len(args))
    shape = (2, 5, 5, 2) if args.get("order") == "NHWC" else (2, 2, 5, 5)
    x = distinct(rng, shape)
    res = check_gradient(make_op(op_type, ["x"], ["y"], **args), {"x": x}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


def test_max_pool_gradient_gives_ties_the_gradient() -> None:
    # Caffe2's CPU kernel adds dY to every window position equal to the max.
    x = np.array([[[[1.0, 1.0], [0.0, 1.0]]]], dtype=np.float32)
    y = np.array([[[[1.0]]]], dtype=np.float32)
    (dx,) = run_op("MaxPoolGradient", [x, y, np.float32([[[[2.0]]]])], kernel=2)
    np.testing.assert_array_equal(dx, [[[[2.0, 2.0], [0.0, 2.0]]]])


@pytest.mark.parametrize(
    "args",
    [
        {"pad": 1},
        {"pad_t": 1, "pad_l": 2, "pad_b": 0, "pad_r": 1, "mode": "reflect"},
        {"pad": 2, "mode": "edge"},
        {"pad": -1},
    ],
    ids=["constant", "reflect", "edge", "crop"],
)
def test_pad_image_gradient(args: dict[str, Any]) -> None:
    x = np.random.default_rng(3).normal(size=(2, 2, 4, 4))
    res = check_gradient(make_op("PadImage", ["x"], ["y"], **args), {"x": x}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


@pytest.mark.parametrize(
    "args,x_shape,w_shape,bias",
    [
        ({"kernel": 3, "stride": 2, "pad": 1}, (2, 2, 3, 3), (2, 3, 3, 3), True),
        ({"kernel": 2, "stride": 2, "adj": 1, "order": "NHWC"}, (2, 3, 3, 2), (2, 2, 2, 3), False),
        ({"kernel": 3, "group": 2}, (1, 4, 3, 3), (4, 1, 3, 3), True),
        ({"kernels": [3], "strides": [2], "pads": [1, 2]}, (2, 2, 4), (2, 3, 3), False),
    ],
    ids=["stride-pad", "nhwc-adj", "group", "1d"],
)
def test_conv_transpose_gradient(
    args: dict[str, Any], x_shape: tuple[int, ...], w_shape: tuple[int, ...], bias: bool
) -> None:
    rng = np.random.default_rng(len(x_shape))
    ins = {"x": rng.normal(size=x_shape), "w": rng.normal(size=w_shape)}
    if bias:
        n_out = w_shape[1] * args.get("group", 1)
        ins["b"] = rng.normal(size=n_out)
    op = make_op("ConvTranspose", list(ins), ["y"], **args)
    res = check_gradient(op, ins, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


def test_conv_transpose_gradient_of_an_empty_batch() -> None:
    # N = 0: the weight and bias gradients are zeros of their shapes, dX is empty.
    op = make_op("ConvTranspose", ["X", "W", "b"], ["Y"], kernel=3, stride=2)
    x, w, b = np.zeros((0, 2, 4, 4)), np.ones((2, 3, 3, 3)), np.zeros(3)
    (y,) = run_op("ConvTranspose", [x, w, b], kernel=3, stride=2)
    (g,) = gradient_for_op(op, ["Y_grad"]).ops
    dw, db, dx = run_op("ConvTransposeGradient", [x, w, y], 3, kernel=3, stride=2)
    assert g.type == "ConvTransposeGradient"
    assert dw.shape == w.shape and not dw.any() and db.shape == (3,) and not db.any() and dx.shape == x.shape
