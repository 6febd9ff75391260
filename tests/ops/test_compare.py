"""Comparisons, logical ops, Where and the n-ary Mean/Max/Min, SquareRootDivide against onnxruntime or naive loops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asyncnet.errors import OperatorError
from tests.ops.run_util import floats, ints, ort_run, run1, run_op, shapes

SETTINGS = settings(max_examples=20)

COMPARE = [("EQ", "Equal"), ("LT", "Less"), ("LE", "LessOrEqual"), ("GT", "Greater"), ("GE", "GreaterOrEqual")]


def _pair(data: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    a_shape, b_shape = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    make = ints if np.dtype(dtype).kind in "iu" else floats
    # Few distinct values so that equality actually happens.
    a = data.draw(make(a_shape, -2, 2, dtype=dtype))
    b = data.draw(make(b_shape, -2, 2, dtype=dtype))
    return a, b


@pytest.mark.parametrize(("c2", "onnx_type"), COMPARE)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
@SETTINGS
@given(data=st.data())
def test_comparison_matches_onnxruntime(c2: str, onnx_type: str, dtype: Any, data: Any) -> None:
    a, b = _pair(data, dtype)
    y = run1(c2, a, b)
    (want,) = ort_run(onnx_type, [a, b])
    assert y.dtype == np.bool_
    np.testing.assert_array_equal(y, want)


@SETTINGS
@given(data=st.data())
def test_ne_is_not_equal(data: Any) -> None:
    a, b = _pair(data, np.int64)
    (eq,) = ort_run("Equal", [a, b])
    np.testing.assert_array_equal(run1("NE", a, b), ~eq)


@pytest.mark.parametrize("c2", ["EQ", "GT", "And"])
def test_legacy_broadcast(c2: str) -> None:
    rng = np.random.default_rng(0)
    if c2 == "And":
        a = rng.random((2, 3, 4)) > 0.5
        b = rng.random(3) > 0.5
    else:
        a = rng.integers(0, 2, (2, 3, 4)).astype(np.int32)
        b = rng.integers(0, 2, 3).astype(np.int32)
    y = run1(c2, a, b, broadcast=1, axis=1)
    bb = b.reshape(1, 3, 1)
    want = {"EQ": a == bb, "GT": a > bb, "And": a & bb}[c2]
    np.testing.assert_array_equal(y, want)
    # axis defaulting to the trailing alignment
    b2 = rng.integers(0, 2, 4).astype(a.dtype) if c2 != "And" else rng.random(4) > 0.5
    y2 = run1(c2, a, b2, broadcast=1)
    want2 = {"EQ": a == b2, "GT": a > b2, "And": a & b2}[c2]
    np.testing.assert_array_equal(y2, want2)


@pytest.mark.parametrize(("c2", "onnx_type"), [("And", "And"), ("Or", "Or"), ("Xor", "Xor")])
@SETTINGS
@given(data=st.data())
def test_logical_matches_onnxruntime(c2: str, onnx_type: str, data: Any) -> None:
    shapes2 = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    a = data.draw(hnp.arrays(np.bool_, shapes2[0]))
    b = data.draw(hnp.arrays(np.bool_, shapes2[1]))
    (want,) = ort_run(onnx_type, [a, b])
    np.testing.assert_array_equal(run1(c2, a, b), want)


@SETTINGS
@given(x=hnp.arrays(np.bool_, shapes(0, 3)))
def test_not_matches_onnxruntime(x: np.ndarray) -> None:
    (want,) = ort_run("Not", [x])
    np.testing.assert_array_equal(run1("Not", x), want)


def test_logical_ops_need_bool() -> None:
    x = np.ones(3, np.int32)
    for op, ins in (("And", (x, x)), ("Not", (x,))):
        with pytest.raises(OperatorError, match="bool"):
            run1(op, *ins)


@pytest.mark.parametrize(
    ("c2", "onnx_type"), [("BitwiseAnd", "BitwiseAnd"), ("BitwiseOr", "BitwiseOr"), ("BitwiseXor", "BitwiseXor")]
)
@SETTINGS
@given(data=st.data())
def test_bitwise_matches_onnxruntime(c2: str, onnx_type: str, data: Any) -> None:
    shapes2 = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)).input_shapes
    a = data.draw(ints(shapes2[0], -100, 100))
    b = data.draw(ints(shapes2[1], -100, 100))
    (want,) = ort_run(onnx_type, [a, b])
    y = run1(c2, a, b)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, want)


@SETTINGS
@given(data=st.data())
def test_where_naive(data: Any) -> None:
    shape = data.draw(shapes(0, 3))
    c = data.draw(hnp.arrays(np.bool_, shape))
    x = data.draw(floats(shape))
    y = data.draw(floats(shape))
    got = run1("Where", c, x, y)
    want = np.array([xv if cv else yv for cv, xv, yv in zip(c.reshape(-1), x.reshape(-1), y.reshape(-1))], np.float32)
    np.testing.assert_array_equal(got.reshape(-1), want)


def test_where_broadcast_on_rows() -> None:
    c = np.array([True, False, True])
    x = np.arange(6, dtype=np.int64).reshape(3, 2)
    y = -x
    got = run1("Where", c, x, y, broadcast_on_rows=1)
    np.testing.assert_array_equal(got, [[0, 1], [-2, -3], [4, 5]])
    with pytest.raises(OperatorError, match="shape of X"):
        run1("Where", c, x, y)


@pytest.mark.parametrize(("c2", "onnx_type"), [("Max", "Max"), ("Min", "Min"), ("Mean", "Mean"), ("Sum", "Sum")])
@SETTINGS
@given(data=st.data())
def test_nary_matches_onnxruntime(c2: str, onnx_type: str, data: Any) -> None:
    shape = data.draw(shapes(0, 3))
    n = data.draw(st.integers(1, 4))
    xs = [data.draw(floats(shape)) for _ in range(n)]
    (want,) = ort_run(onnx_type, xs)
    y = run1(c2, *xs)
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(data=st.data())
def test_max_min_broadcast_and_ints(data: Any) -> None:
    s = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3)).input_shapes
    xs = [data.draw(ints(sh, dtype=np.int64)) for sh in s]
    for c2, fn in (("Max", np.maximum), ("Min", np.minimum)):
        want = fn(fn(xs[0], xs[1]), xs[2])
        y = run1(c2, *xs)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, want)


def test_mean_rejects_different_shapes() -> None:
    with pytest.raises(OperatorError, match="one shape"):
        run1("Mean", np.ones(2, np.float32), np.ones(3, np.float32))


def test_max_single_input_is_a_copy() -> None:
    x = np.arange(3, dtype=np.float32)
    (y,) = run_op("Max", [x])
    y[0] = 7
    assert x[0] == 0


@SETTINGS
@given(data=st.data())
def test_square_root_divide_naive(data: Any) -> None:
    shape = data.draw(shapes(1, 3))
    x = data.draw(floats(shape))
    scale = data.draw(floats((shape[0],), 0, 4))
    scale[::2] = 0  # rows with scale 0 stay unchanged
    got = run1("SquareRootDivide", x, scale)
    want = np.empty_like(x)
    for i in range(shape[0]):
        want[i] = x[i] if scale[i] == 0 else x[i] / np.sqrt(scale[i])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # integer scale
    si = scale.astype(np.int32)
    want_i = np.empty_like(x)
    for i in range(shape[0]):
        want_i[i] = x[i] if si[i] == 0 else x[i] / np.sqrt(np.float32(si[i]))
    np.testing.assert_allclose(run1("SquareRootDivide", x, si), want_i, rtol=1e-6)
