"""Gather, BatchGather, BooleanMask, OneHot and LengthsToRanges against onnxruntime or naive loops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asyncnet.errors import OperatorError
from tests.ops.run_util import floats, ints, ort_run, run1, run_op, shapes

SETTINGS = settings(max_examples=25)


@SETTINGS
@given(data=st.data())
def test_gather_matches_onnxruntime(data: Any) -> None:
    shape = data.draw(shapes(1, 3, 1, 4))
    x = data.draw(floats(shape))
    axis = data.draw(st.integers(0, len(shape) - 1))
    idx_dtype = data.draw(st.sampled_from([np.int32, np.int64]))
    # negative indices wrap on axis 0 only (Caffe2's default)
    lo = -shape[axis] if axis == 0 else 0
    idx = data.draw(ints(shapes(0, 2, 0, 3), lo, shape[axis] - 1, dtype=idx_dtype))
    args = {"axis": axis} if axis else {}
    (want,) = ort_run("Gather", [x, idx], axis=axis)
    np.testing.assert_array_equal(run1("Gather", x, idx, **args), want)


def test_gather_negative_index_off_axis_0_needs_wrap_indices() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    idx = np.array([-1], np.int64)
    with pytest.raises(OperatorError, match="out of range"):
        run1("Gather", x, idx, axis=1)
    np.testing.assert_array_equal(run1("Gather", x, idx, axis=1, wrap_indices=1), x[:, [2]])
    with pytest.raises(OperatorError, match="out of range"):
        run1("Gather", x, np.array([2], np.int32))


def test_gather_empty_axis_keeps_data_shape() -> None:
    # Caffe2: when DATA's indexed dim is 0 the output takes DATA's shape (empty batches flow through).
    x = np.zeros((0, 3), np.float32)
    y = run1("Gather", x, np.zeros((2, 2), np.int64))
    assert y.shape == (0, 3)


@SETTINGS
@given(data=st.data())
def test_gather_match_outer_naive(data: Any) -> None:
    outer = data.draw(st.integers(0, 3))
    d = data.draw(st.integers(1, 4))
    inner = data.draw(st.integers(0, 3))
    x = data.draw(floats((outer, d, 2)))
    idx = data.draw(ints((outer, inner), 0, d - 1, dtype=np.int64))
    y = run1("Gather", x, idx, axis=1, match_outer=1)
    assert y.shape == (outer, inner, 2)
    for b in range(outer):
        for i in range(inner):
            np.testing.assert_array_equal(y[b, i], x[b, idx[b, i]])


@SETTINGS
@given(data=st.data())
def test_batch_gather_naive(data: Any) -> None:
    b, d = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    rest = tuple(data.draw(st.lists(st.integers(1, 2), max_size=2)))
    x = data.draw(floats((b, d) + rest))
    idx = data.draw(ints(shapes(0, 2, 0, 3), 0, d - 1))
    y = run1("BatchGather", x, idx)
    assert y.shape == (b,) + idx.shape + rest
    for i in range(b):
        for pos in np.ndindex(*idx.shape):
            np.testing.assert_array_equal(y[(i,) + pos], x[i, idx[pos]])


@SETTINGS
@given(data=st.data())
def test_boolean_mask_naive(data: Any) -> None:
    shape = data.draw(shapes(1, 3, 0, 4))
    x = data.draw(floats(shape))
    mask = data.draw(hnp.arrays(np.bool_, (shape[0],)))
    masked, indices = run_op("BooleanMask", [x, mask], 2)
    rows = [i for i in range(shape[0]) if mask[i]]
    assert masked.shape == (len(rows),) + shape[1:]
    for j, i in enumerate(rows):
        np.testing.assert_array_equal(masked[j], x[i])
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, rows)


def test_boolean_mask_checks() -> None:
    with pytest.raises(OperatorError, match="bool"):
        run1("BooleanMask", np.ones(2, np.float32), np.ones(2, np.int32))
    with pytest.raises(OperatorError, match="values for data"):
        run1("BooleanMask", np.ones(2, np.float32), np.ones(3, np.bool_))


@SETTINGS
@given(data=st.data())
def test_one_hot_naive(data: Any) -> None:
    size = data.draw(st.integers(1, 5))
    idx = data.draw(ints(shapes(1, 1, 0, 5), 0, size - 1, dtype=np.int64))
    y = run1("OneHot", idx, np.array(size, np.int64))
    assert y.dtype == np.float32 and y.shape == (idx.shape[0], size)
    for i, v in enumerate(idx):
        for j in range(size):
            assert y[i, j] == (1.0 if j == v else 0.0)


def test_one_hot_range_checked() -> None:
    with pytest.raises(OperatorError, match="must lie in"):
        run1("OneHot", np.array([3], np.int64), np.array(3, np.int64))


@SETTINGS
@given(lengths=ints(shapes(1, 1, 0, 6), 0, 4))
def test_lengths_to_ranges_naive(lengths: np.ndarray) -> None:
    y = run1("LengthsToRanges", lengths)
    assert y.dtype == np.int32 and y.shape == (lengths.size, 2)
    offset = 0
    for i, n in enumerate(lengths):
        assert list(y[i]) == [offset, n]
        offset += int(n)


@SETTINGS
@given(x=ints(shapes(1, 1, 0, 8), 0, 3))
def test_find_duplicate_elements_naive(x: np.ndarray) -> None:
    y = run1("FindDuplicateElements", x)
    assert y.dtype == np.int64
    assert y.tolist() == [i for i in range(x.size) if x[i] in x[:i].tolist()]
    words = np.array([b"a", b"b", b"a"], dtype=object)
    assert run1("FindDuplicateElements", words).tolist() == [2]
