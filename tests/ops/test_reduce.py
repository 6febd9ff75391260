"""Reductions against onnxruntime (Reduce*, ArgMax/ArgMin) or deliberately naive loops."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import OperatorError
from tests.ops.run_util import floats, ints, ort_run, run1, run_op, shapes

SETTINGS = settings(max_examples=20)


def _axes(data: Any, ndim: int) -> list[int]:
    return sorted(data.draw(st.sets(st.integers(0, ndim - 1), min_size=1, max_size=ndim))) if ndim else []


@pytest.mark.parametrize("kind", ["Sum", "Mean", "Max", "Min", "L1", "L2"])
@SETTINGS
@given(data=st.data())
def test_reduce_matches_onnxruntime(kind: str, data: Any) -> None:
    shape = data.draw(shapes(1, 4, 1, 4))
    x = data.draw(floats(shape))
    axes = _axes(data, len(shape))
    keepdims = data.draw(st.integers(0, 1))
    y = run1(f"Reduce{kind}", x, axes=axes, keepdims=keepdims)
    if kind == "Sum":
        (want,) = ort_run("ReduceSum", [x, np.asarray(axes, np.int64)], keepdims=keepdims)
    else:
        (want,) = ort_run(f"Reduce{kind}", [x], opset=17, axes=axes, keepdims=keepdims)
    assert y.dtype == np.float32
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_reduce_defaults_all_axes_keepdims() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = run1("ReduceSum", x)
    assert y.shape == (1, 1, 1) and y.item() == x.sum()
    np.testing.assert_array_equal(run1("ReduceMax", x, axes=[-1], keepdims=0), x.max(axis=2))
    with pytest.raises(OperatorError, match="out of range"):
        run1("ReduceMin", x, axes=[3])


def test_reduce_int_and_empty() -> None:
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    y = run1("ReduceSum", x, axes=[1], keepdims=0)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, [3, 12])
    e = np.zeros((0, 3), np.float32)
    np.testing.assert_array_equal(run1("ReduceSum", e, axes=[0], keepdims=0), np.zeros(3))
    np.testing.assert_array_equal(run1("ReduceMean", e, axes=[0], keepdims=0), np.zeros(3))
    assert run1("ReduceMax", e, axes=[1], keepdims=0).shape == (0,)


def _naive_front_back(kind: str, x: np.ndarray, k: int, front: bool, lengths: np.ndarray | None) -> np.ndarray:
    red = x.shape[:k] if front else x.shape[x.ndim - k :]
    kept = x.shape[k:] if front else x.shape[: x.ndim - k]
    n_red = int(np.prod(red, dtype=np.int64))
    n_kept = int(np.prod(kept, dtype=np.int64))
    flat = x.reshape(-1)
    out = np.zeros(n_kept, np.float64)
    for j in range(n_kept):
        limit = n_red if lengths is None else int(lengths[j])
        vals = [flat[r * n_kept + j] if front else flat[j * n_red + r] for r in range(limit)]
        if kind == "Sum":
            out[j] = sum(float(v) for v in vals)
        elif kind == "Mean":
            out[j] = sum(float(v) for v in vals) / limit if limit else np.nan
        elif kind == "Max":
            out[j] = max(vals) if vals else np.finfo(np.float32).min
        else:
            out[j] = min(vals) if vals else np.finfo(np.float32).max
    return out.reshape(kept)


@pytest.mark.parametrize("kind", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("front", [True, False], ids=["Front", "Back"])
@SETTINGS
@given(data=st.data())
def test_reduce_front_back_naive(kind: str, front: bool, data: Any) -> None:
    shape = data.draw(shapes(1, 4, 0, 3))
    x = data.draw(floats(shape))
    k = data.draw(st.integers(0, len(shape)))
    args = {} if k == 1 and data.draw(st.booleans()) else {"num_reduce_dim": k}
    y = run1(f"Reduce{'Front' if front else 'Back'}{kind}", x, **args)
    want = _naive_front_back(kind, x, k, front, None)
    assert y.shape == want.shape
    if kind != "Mean" or want.size == 0 or np.prod(shape[:k] if front else shape[len(shape) - k :]) > 0:
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("front", [True, False], ids=["Front", "Back"])
@SETTINGS
@given(data=st.data())
def test_reduce_front_back_with_lengths(kind: str, front: bool, data: Any) -> None:
    shape = data.draw(shapes(2, 3, 1, 3))
    x = data.draw(floats(shape))
    k = 1
    n_red = shape[0] if front else shape[-1]
    n_kept = int(np.prod(shape[1:] if front else shape[:-1]))
    lengths = np.asarray(data.draw(st.lists(st.integers(1, n_red), min_size=n_kept, max_size=n_kept)), np.int32)
    y = run1(f"Reduce{'Front' if front else 'Back'}{kind}", x, lengths, num_reduce_dim=k)
    np.testing.assert_allclose(y, _naive_front_back(kind, x, k, front, lengths), rtol=1e-5, atol=1e-5)


def test_reduce_front_lengths_checked() -> None:
    x = np.ones((2, 3), np.float32)
    with pytest.raises(OperatorError, match="lengths"):
        run1("ReduceFrontSum", x, np.array([1, 2], np.int32))
    with pytest.raises(OperatorError, match="lengths"):
        run1("ReduceBackSum", x, np.array([4, 1], np.int32))


@SETTINGS
@given(x=floats(shapes(0, 3)), average=st.integers(0, 1))
def test_sum_elements_naive(x: np.ndarray, average: int) -> None:
    total = sum(float(v) for v in x.reshape(-1))
    sq = sum(float(v) ** 2 for v in x.reshape(-1))
    n = x.size
    y = run1("SumElements", x, average=average)
    assert y.shape == () and y.dtype == np.float32
    np.testing.assert_allclose(y, total / n if average and n else (0 if average else total), rtol=1e-5, atol=1e-5)
    y2 = run1("SumSqrElements", x, average=average)
    np.testing.assert_allclose(y2, sq / n if average and n else (0 if average else sq), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run1("AveragedLoss", x), total / n if n else 0, rtol=1e-5, atol=1e-5)


def test_sum_elements_int() -> None:
    x = np.array([[1, 2], [3, -10]], np.int32)
    y = run1("SumElementsInt", x)
    assert y.dtype == np.int32 and y.shape == () and y == -4
    with pytest.raises(OperatorError, match="int32"):
        run1("SumElementsInt", x.astype(np.int64))


@SETTINGS
@given(x=floats(shapes(3, 3, 1, 4)))
def test_rowwise_colwise_max_naive(x: np.ndarray) -> None:
    b, m, n = x.shape
    rows = run1("RowwiseMax", x)
    cols = run1("ColwiseMax", x)
    for i, j in itertools.product(range(b), range(m)):
        assert rows[i, j] == max(x[i, j, k] for k in range(n))
    for i, k in itertools.product(range(b), range(n)):
        assert cols[i, k] == max(x[i, j, k] for j in range(m))


def test_rowwise_max_needs_3d() -> None:
    with pytest.raises(OperatorError, match="3-D"):
        run1("RowwiseMax", np.ones((2, 2), np.float32))


@pytest.mark.parametrize("c2", ["ArgMax", "ArgMin"])
@SETTINGS
@given(data=st.data())
def test_argmax_argmin_match_onnxruntime(c2: str, data: Any) -> None:
    shape = data.draw(shapes(1, 4, 1, 4))
    dtype = data.draw(st.sampled_from([np.float32, np.int32]))
    x = data.draw(floats(shape, -2, 2) if dtype == np.float32 else ints(shape, -2, 2))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    keepdims = data.draw(st.integers(0, 1))
    y = run1(c2, x, axis=axis, keepdims=keepdims)
    (want,) = ort_run(c2, [x], axis=axis, keepdims=keepdims)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, want)


def test_argmax_default_axis_is_last() -> None:
    x = np.array([[1, 5, 5], [7, 0, 7]], np.float32)
    np.testing.assert_array_equal(run1("ArgMax", x), [[1], [0]])


@SETTINGS
@given(data=st.data())
def test_moments_naive(data: Any) -> None:
    shape = data.draw(shapes(1, 3, 1, 4))
    x = data.draw(floats(shape))
    axes = _axes(data, len(shape))
    keepdims = data.draw(st.integers(0, 1))
    mean, var = run_op("Moments", [x], 2, axes=axes, keepdims=keepdims)
    x64 = x.astype(np.float64)
    m = x64.mean(axis=tuple(axes), keepdims=bool(keepdims))
    v = ((x64 - x64.mean(axis=tuple(axes), keepdims=True)) ** 2).mean(axis=tuple(axes), keepdims=bool(keepdims))
    np.testing.assert_allclose(mean, m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, v, rtol=1e-4, atol=1e-5)


def _naive_topk(x: np.ndarray, k: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    moved = np.moveaxis(x, axis, -1)
    vals = np.empty(moved.shape[:-1] + (k,), x.dtype)
    idx = np.empty(moved.shape[:-1] + (k,), np.int64)
    for pos in np.ndindex(*moved.shape[:-1]):
        row = list(moved[pos])
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        vals[pos] = [row[j] for j in order]
        idx[pos] = order
    return np.moveaxis(vals, -1, axis), np.moveaxis(idx, -1, axis)


@SETTINGS
@given(data=st.data())
def test_topk_naive(data: Any) -> None:
    shape = data.draw(shapes(1, 3, 1, 4))
    x = data.draw(ints(shape, -2, 2).map(lambda a: a.astype(np.float32)))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    k = data.draw(st.integers(1, shape[axis]))
    args = {"k": k} if axis == -1 else {"k": k, "axis": axis}
    vals, idx, flat = run_op("TopK", [x], 3, **args)
    want_v, want_i = _naive_topk(x, k, axis % len(shape))
    np.testing.assert_array_equal(vals, want_v)
    np.testing.assert_array_equal(idx, want_i)
    assert idx.dtype == np.int64 and flat.dtype == np.int64
    np.testing.assert_array_equal(x.reshape(-1)[flat], vals.reshape(-1))


def test_topk_two_outputs_and_errors() -> None:
    x = np.array([[3, 1, 2]], np.int32)
    vals, idx = run_op("TopK", [x], 2, k=2)
    np.testing.assert_array_equal(vals, [[3, 2]])
    np.testing.assert_array_equal(idx, [[0, 2]])
    # k beyond the axis pads (Caffe2): values 0, indices -1.
    vals, idx = run_op("TopK", [x], 2, k=4)
    np.testing.assert_array_equal(vals, [[3, 2, 1, 0]])
    np.testing.assert_array_equal(idx, [[0, 2, 1, -1]])
    with pytest.raises(Exception, match="positive"):
        run_op("TopK", [x], 2)


def test_named_variants() -> None:
    x = np.array([[1.0, -4.0], [-2.0, 3.0]], np.float32)
    np.testing.assert_allclose(run1("ReduceL1", x, axes=[0], keepdims=0), [3.0, 7.0])
    np.testing.assert_allclose(run1("ReduceL2", x, axes=[1], keepdims=0), [np.sqrt(17.0), np.sqrt(13.0)])
    np.testing.assert_allclose(run1("ReduceFrontMin", x), [-2.0, -4.0])
    np.testing.assert_allclose(run1("ReduceBackSum", x), [-3.0, 1.0])
    np.testing.assert_allclose(run1("ReduceFrontMean", x), [-0.5, -0.5])
    np.testing.assert_allclose(run1("ReduceBackMin", x), [-4.0, -2.0])


@SETTINGS
@given(data=st.data())
def test_flexible_top_k_naive(data: Any) -> None:
    rows, d = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    x = data.draw(ints((rows, d), 0, 2).map(lambda a: a.astype(np.float32)))
    k = np.asarray(data.draw(st.lists(st.integers(1, d), min_size=rows, max_size=rows)), np.int64)
    vals, idx = run_op("FlexibleTopK", [x, k], 2)
    want_v: list[float] = []
    want_i: list[int] = []
    for r in range(rows):
        ranked = sorted(range(d), key=lambda j: (-x[r, j], j))[: k[r]]
        want_i += ranked
        want_v += [float(x[r, j]) for j in ranked]
    assert idx.tolist() == want_i and vals.tolist() == want_v
