"""Shape and data-movement ops against onnxruntime or naive loops: Transpose, Squeeze, ExpandDims, Split,
Slice, Tile, NumpyTile, Expand, Cast, Shape, Size, FlattenToVec and the alias ops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import ArgumentError, AsyncNetError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import floats, ints, make_op, ort_run, run1, run_op, shapes

SETTINGS = settings(max_examples=25)


@SETTINGS
@given(data=st.data())
def test_transpose_matches_onnxruntime(data: Any) -> None:
    x = data.draw(floats(shapes(1, 4)))
    perm = list(data.draw(st.permutations(range(x.ndim))))
    (want,) = ort_run("Transpose", [x], perm=perm)
    np.testing.assert_array_equal(run1("Transpose", x, axes=perm), want)
    (rev,) = ort_run("Transpose", [x])
    np.testing.assert_array_equal(run1("Transpose", x), rev)


def test_transpose_rejects_bad_axes() -> None:
    with pytest.raises(OperatorError, match="permutation"):
        run1("Transpose", np.ones((2, 3), np.float32), axes=[0, 0])


@SETTINGS
@given(data=st.data())
def test_squeeze_expand_dims_roundtrip(data: Any) -> None:
    x = data.draw(floats(shapes(0, 3)))
    n_new = data.draw(st.integers(1, 3))
    dims = sorted(data.draw(st.sets(st.integers(0, x.ndim + n_new - 1), min_size=n_new, max_size=n_new)))
    y = run1("ExpandDims", x, dims=dims)
    want_shape = list(x.shape)
    for d in dims:
        want_shape.insert(d, 1)
    assert y.shape == tuple(want_shape)
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))
    back = run1("Squeeze", y, dims=dims)
    assert back.shape == x.shape


def test_squeeze_only_size_one() -> None:
    with pytest.raises(OperatorError, match="cannot squeeze"):
        run1("Squeeze", np.ones((1, 2), np.float32), dims=[1])
    assert run1("Squeeze", np.ones((1, 2, 1), np.float32), dims=[-1, 0]).shape == (2,)


@SETTINGS
@given(data=st.data())
def test_split_matches_onnxruntime(data: Any) -> None:
    shape = data.draw(shapes(1, 3, 1, 5))
    x = data.draw(floats(shape))
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = data.draw(st.integers(1, 3))
    cuts = sorted(data.draw(st.lists(st.integers(0, shape[axis]), min_size=n - 1, max_size=n - 1)))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, shape[axis]])]
    want = ort_run("Split", [x, np.asarray(sizes, np.int64)], n, axis=axis)
    got = run_op("Split", [x], n, axis=axis, split=sizes)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # the sizes as input 1 instead of the argument
    got2 = run_op("Split", [x, np.asarray(sizes, np.int32)], n, axis=axis)
    for g, w in zip(got2, want):
        np.testing.assert_array_equal(g, w)


def test_split_equal_parts_order_and_add_axis() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    a, b = run_op("Split", [x], 2)  # default: axis 1 (NCHW channels)
    np.testing.assert_array_equal(a, x[:, :2])
    np.testing.assert_array_equal(b, x[:, 2:])
    c0, c1, c2 = run_op("Split", [x], 3, order="NHWC")
    np.testing.assert_array_equal(c1, x[:, :, 1:2])
    p0, p1 = run_op("Split", [x], 2, axis=0, add_axis=1)
    np.testing.assert_array_equal(p1, x[1])
    with pytest.raises(OperatorError, match="equal parts"):
        run_op("Split", [x], 3)
    with pytest.raises(OperatorError, match="sum to"):
        run_op("Split", [x], 2, axis=1, split=[1, 2])
    with pytest.raises(ArgumentError, match="not both"):
        run_op("Split", [x], 2, axis=1, order="NCHW")


def _caffe2_slice_naive(x: np.ndarray, starts: list[int], ends: list[int]) -> np.ndarray:
    idx = []
    for i, dim in enumerate(x.shape):
        if i >= len(starts):
            idx.append(list(range(dim)))
            continue
        if dim == 0:
            idx.append([])
            continue
        s = starts[i] if starts[i] >= 0 else dim + 1 + starts[i]
        e = ends[i] if ends[i] >= 0 else dim + 1 + ends[i]
        idx.append(list(range(min(s, dim), min(e, dim))))
    out = np.zeros([len(r) for r in idx], x.dtype)
    for pos in np.ndindex(*out.shape):
        out[pos] = x[tuple(r[p] for r, p in zip(idx, pos))]
    return out


@SETTINGS
@given(data=st.data())
def test_slice_naive_with_negative_rule(data: Any) -> None:
    shape = data.draw(shapes(1, 3, 0, 4))
    x = data.draw(ints(shape, -9, 9))
    n = data.draw(st.integers(1, len(shape)))
    starts, ends = [], []
    for d in shape[:n]:
        s = data.draw(st.integers(0, d))
        e = data.draw(st.integers(s, d))
        # express some bounds in Caffe2's negative form: -1 is the end, -2 one before, ...
        starts.append(s - d - 1 if data.draw(st.booleans()) else s)
        ends.append(e - d - 1 if data.draw(st.booleans()) else e)
    want = _caffe2_slice_naive(x, starts, ends)
    np.testing.assert_array_equal(run1("Slice", x, starts=starts, ends=ends), want)
    got = run1("Slice", x, np.asarray(starts, np.int32), np.asarray(ends, np.int64))
    np.testing.assert_array_equal(got, want)


def test_slice_end_minus_one_means_to_the_end() -> None:
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(run1("Slice", x, starts=[0, 1], ends=[-1, -1]), x[:, 1:])
    np.testing.assert_array_equal(run1("Slice", x, starts=[0, 1], ends=[-1, -2]), x[:, 1:4])
    with pytest.raises(OperatorError, match="invalid range"):
        run1("Slice", x, starts=[0, 3], ends=[2, 1])


@SETTINGS
@given(data=st.data())
def test_tile_naive(data: Any) -> None:
    x = data.draw(floats(shapes(1, 3, 0, 3)))
    axis = data.draw(st.integers(0, x.ndim - 1))
    tiles = data.draw(st.integers(0, 3))
    y = run1("Tile", x, tiles=tiles, axis=axis)
    want = (
        np.concatenate([x] * tiles, axis=axis)
        if tiles
        else np.zeros(x.shape[:axis] + (0,) + x.shape[axis + 1 :], x.dtype)
    )
    np.testing.assert_array_equal(y, want)
    y2 = run1("Tile", x, np.array([tiles], np.int64), np.array(axis, np.int32))
    np.testing.assert_array_equal(y2, want)


@SETTINGS
@given(data=st.data())
def test_numpy_tile_matches_onnxruntime(data: Any) -> None:
    x = data.draw(floats(shapes(1, 3, 0, 3), dtype=np.float64))
    reps = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=x.ndim, max_size=x.ndim)), np.int64)
    (want,) = ort_run("Tile", [x, reps])
    np.testing.assert_array_equal(run1("NumpyTile", x, reps), want)


@SETTINGS
@given(data=st.data())
def test_expand_matches_onnxruntime(data: Any) -> None:
    x = data.draw(floats(shapes(0, 3, 1, 3)))
    target = [data.draw(st.sampled_from([1, d])) if d != 1 else data.draw(st.integers(1, 3)) for d in x.shape]
    target = data.draw(st.lists(st.integers(1, 2), max_size=1)) + target
    shape = np.asarray(target, np.int64)
    (want,) = ort_run("Expand", [x, shape])
    np.testing.assert_array_equal(run1("Expand", x, shape), want)


def test_expand_minus_one_keeps_the_dim() -> None:
    x = np.arange(3, dtype=np.float32).reshape(3, 1)
    y = run1("Expand", x, np.array([2, -1, 4], np.int64))
    assert y.shape == (2, 3, 4)
    np.testing.assert_array_equal(y[1, :, 2], x[:, 0])


CASTS = [
    (pb.TensorProto.FLOAT, np.float32),
    (pb.TensorProto.DOUBLE, np.float64),
    (pb.TensorProto.INT32, np.int32),
    (pb.TensorProto.INT64, np.int64),
    (pb.TensorProto.BOOL, np.bool_),
    (pb.TensorProto.UINT8, np.uint8),
]


@pytest.mark.parametrize(("to", "dtype"), CASTS, ids=[np.dtype(c[1]).name for c in CASTS])
@SETTINGS
@given(x=floats(shapes(0, 3), -100, 100))
def test_cast_matches_onnxruntime(to: int, dtype: Any, x: np.ndarray) -> None:
    if dtype == np.uint8:
        x = np.asarray(np.abs(x))
    from onnx import helper

    # Caffe2's DataType numbers differ from ONNX's: the ONNX reference gets its own code.
    (want,) = ort_run("Cast", [x], to=helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    y = run1("Cast", x, to=int(to))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, want)


def test_cast_accepts_type_names() -> None:
    x = np.array([1.7, -1.7], np.float32)
    np.testing.assert_array_equal(run1("Cast", x, to="int32"), [1, -1])
    assert run1("Cast", x, to="DOUBLE").dtype == np.float64
    with pytest.raises(ArgumentError, match="unknown data type"):
        run1("Cast", x, to="quaternion")


@SETTINGS
@given(x=floats(shapes(0, 4)))
def test_shape_size_flatten(x: np.ndarray) -> None:
    (want,) = ort_run("Shape", [x])
    np.testing.assert_array_equal(run1("Shape", x), want)
    size = run1("Size", x)
    assert size.dtype == np.int64 and size.shape == () and size == x.size
    np.testing.assert_array_equal(run1("FlattenToVec", x), x.reshape(-1))
    if x.ndim:
        np.testing.assert_array_equal(run1("Shape", x, axes=[-1, 0]), [x.shape[-1], x.shape[0]])


@pytest.mark.parametrize("op_type", ["Alias", "AliasWithName", "EnsureDense"])
def test_alias_ops_share_the_value(op_type: str) -> None:
    ws = Workspace()
    x = np.arange(3, dtype=np.float32)
    ws.feed("x", x)
    ws.run_operator_once(make_op(op_type, ["x"], ["y"]))
    assert ws.fetch("y") is x
    (y,) = run_op("EnsureCPUOutput", [x])
    assert y is not x
    np.testing.assert_array_equal(y, x)


def test_squeeze_and_expand_dims_need_dims() -> None:
    x = np.ones((1, 2), np.float32)
    for op in ("Squeeze", "ExpandDims"):
        with pytest.raises(ArgumentError, match="dims"):
            run1(op, x)


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        ((0, 0), [0, 0, 0], (0, 0, 0)),  # empty input: a 0 is a literal 0, even past the input's rank
        ((2, 0), [-1, 0], (0, 0)),  # and a -1 becomes 0
        ((1, 0), [0], (0,)),  # the gradient of (0,) -> [1, -1]: dY (1, 0) back to (0,)
        ((4, 2, 1), [0, 0, 0], (4, 2, 1)),  # non-empty: 0 copies the input dim
    ],
)
def test_reshape_zero_dims_follow_caffe2(old: tuple[int, ...], new: list[int], want: tuple[int, ...]) -> None:
    (y, old_shape) = run_op("Reshape", [np.zeros(old, np.float32)], 2, shape=new)
    assert y.shape == want and old_shape.tolist() == list(old)


def test_reshape_empty_to_non_empty_is_refused() -> None:
    with pytest.raises(AsyncNetError, match="non-empty shape"):
        run_op("Reshape", [np.zeros((0,), np.float32)], 2, shape=[1, 2])
