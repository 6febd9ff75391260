"""BatchOneHot, BatchBucketOneHot, BatchBucketize, BatchSparseToDense, BooleanUnmask, GatherRanges and
BernoulliJSD against naive Python loops."""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import OperatorError
from asyncnet.net import op_info
from asyncnet.schema import TensorInfo
from tests.ops.run_util import floats, ints, make_op, run1, run_op

SETTINGS = settings(max_examples=20)


@SETTINGS
@given(data=st.data())
def test_batch_one_hot_naive(data: Any) -> None:
    n, d = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 3))
    x = data.draw(ints((n, d), 0, 3))
    lens = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=d, max_size=d)), np.int32)
    vals = data.draw(ints((int(lens.sum()),), 0, 3))
    y = run1("BatchOneHot", x, lens, vals)
    assert y.shape == (n, int(lens.sum())) and y.dtype == x.dtype
    for i in range(n):
        k = 0
        for j in range(d):
            for _ in range(lens[j]):
                assert y[i, k] == (1 if x[i, j] == vals[k] else 0)
                k += 1


@SETTINGS
@given(data=st.data())
def test_bucketize_and_bucket_one_hot_naive(data: Any) -> None:
    n, d = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = data.draw(ints((n, d), 0, 6).map(lambda a: a.astype(np.float32)))
    lens = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=d, max_size=d)), np.int32)
    bounds = [sorted(data.draw(st.lists(st.integers(0, 6), min_size=int(m), max_size=int(m)))) for m in lens]
    flat = np.asarray([b for bs in bounds for b in bs], np.float32)
    y = run1("BatchBucketOneHot", x, lens, flat)
    assert y.shape == (n, int(lens.sum()) + d)
    buckets = run1("BatchBucketize", x, np.arange(d, dtype=np.int32), flat, lens)
    for i in range(n):
        base = 0
        for j in range(d):
            b = bisect.bisect_left(bounds[j], float(x[i, j]))  # boundaries strictly below the value
            # BatchBucketOneHot puts a value sitting on repeated boundaries between them (Caffe2).
            mid = (b + bisect.bisect_right(bounds[j], float(x[i, j]))) // 2
            row = [0.0] * (len(bounds[j]) + 1)
            row[mid] = 1.0
            assert y[i, base : base + len(row)].tolist() == row
            assert buckets[i, j] == b
            base += len(row)


def test_bucket_one_hot_repeated_boundaries() -> None:
    # Boundaries [-1, 0, 0, 2]: 0 lies on the repeated pair -> bucket (1 + 3) // 2 = 2 of 5.
    y = run1(
        "BatchBucketOneHot",
        np.array([[0.0], [1.0], [-1.0]], np.float32),
        np.array([4], np.int32),
        np.array([-1, 0, 0, 2], np.float32),
    )
    assert y.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0]]


@SETTINGS
@given(data=st.data())
def test_batch_sparse_to_dense_naive(data: Any) -> None:
    n, width = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 4))
    rows = [sorted(data.draw(st.sets(st.integers(0, width - 1), max_size=width))) for _ in range(n)]
    lens = np.asarray([len(r) for r in rows], np.int64)
    idx = np.asarray([c for r in rows for c in r], np.int64)
    vals = data.draw(floats((idx.size,)))
    y = run1("BatchSparseToDense", lens, idx, vals, dense_last_dim=width, default_value=-1.0)
    y2 = run1("BatchSparseToDense", lens, idx, vals, np.zeros((n, width), np.float32), default_value=-1.0)
    k = 0
    for i in range(n):
        want = [-1.0] * width
        for c in rows[i]:
            want[c] = float(vals[k])
            k += 1
        assert y[i].tolist() == want
        assert y2[i].tolist() == want


def test_batch_sparse_to_dense_needs_width() -> None:
    with pytest.raises(Exception, match="dense_last_dim"):
        run1("BatchSparseToDense", np.array([1]), np.array([0]), np.array([1.0], np.float32))


@SETTINGS
@given(data=st.data())
def test_boolean_unmask_naive(data: Any) -> None:
    n = data.draw(st.integers(0, 6))
    owner = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    values = data.draw(floats((n,)))
    ins: list[np.ndarray] = []
    for k in range(3):
        mask = np.asarray([o == k for o in owner], np.bool_)
        ins += [mask, values[mask]]
    y = run1("BooleanUnmask", *ins)
    np.testing.assert_array_equal(y, values)


def test_boolean_unmask_needs_full_cover() -> None:
    mask = np.array([True, False])
    with pytest.raises(OperatorError, match="exactly once"):
        run1("BooleanUnmask", mask, np.array([1.0], np.float32))


@SETTINGS
@given(data=st.data())
def test_gather_ranges_naive(data: Any) -> None:
    size = data.draw(st.integers(0, 6))
    d = data.draw(floats((size,)))
    n, m = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 2))
    ranges = np.zeros((n, m, 2), np.int32)
    for i in range(n):
        for j in range(m):
            s = data.draw(st.integers(0, size))
            ranges[i, j] = (s, data.draw(st.integers(0, size - s)))
    out, lengths = run_op("GatherRanges", [d, ranges], 2)
    want = [float(d[s + k]) for s, ln in ranges.reshape(-1, 2).tolist() for k in range(ln)]
    assert out.tolist() == want
    assert lengths.dtype == np.int32
    assert lengths.tolist() == [int(sum(ranges[i, :, 1])) for i in range(n)]


@SETTINGS
@given(p=floats((6,), 0, 1), q=floats((6,), 0, 1))
def test_bernoulli_jsd_naive(p: np.ndarray, q: np.ndarray) -> None:
    def h(x: float) -> float:
        return 0.0 if x < 1e-20 or 1 - x < 1e-20 else -x * math.log(x) - (1 - x) * math.log(1 - x)

    y = run1("BernoulliJSD", p, q)
    for a, b, got in zip(map(float, p), map(float, q), y):
        np.testing.assert_allclose(got, h((a + b) / 2) - (h(a) + h(b)) / 2, rtol=1e-5, atol=1e-6)


@SETTINGS
@given(data=st.data())
def test_scatter_assign_and_weighted_sum_naive(data: Any) -> None:
    rows = data.draw(st.integers(1, 4))
    x = data.draw(floats((rows, 2)))
    idx = np.asarray(data.draw(st.lists(st.integers(0, rows - 1), max_size=4)), np.int32)
    s1 = data.draw(floats((idx.size, 2)))
    w0, w1 = np.float32(0.5), np.float32(-2.0)
    assigned = run1("ScatterAssign", x, idx, s1)
    want = x.copy()
    for j, r in enumerate(idx.tolist()):
        want[r] = s1[j]
    np.testing.assert_array_equal(assigned, want)
    summed = run1("ScatterWeightedSum", x, np.array(w0), idx, s1, np.array(w1))
    want = x.astype(np.float64)
    # Caffe2: first scale every named row by WEIGHT_0 (once per occurrence), then add the slices.
    for r in idx.tolist():
        want[r] = want[r] * 0.5
    for j, r in enumerate(idx.tolist()):
        want[r] = want[r] + s1[j].astype(np.float64) * -2.0
    np.testing.assert_allclose(summed, want, rtol=1e-5, atol=1e-5)


def test_scatter_ops_run_in_place() -> None:
    from asyncnet.errors import SchemaError
    from asyncnet.workspace import Workspace
    from tests.ops.run_util import make_op

    ws = Workspace()
    ws.feed("d", np.zeros((3, 2), np.float32))
    ws.feed("i", np.array([2], np.int64))
    ws.feed("s", np.ones((1, 2), np.float32))
    ws.run_operator_once(make_op("ScatterAssign", ["d", "i", "s"], ["d"]))
    np.testing.assert_array_equal(ws.fetch("d"), [[0, 0], [0, 0], [1, 1]])
    with pytest.raises(SchemaError, match="in place"):
        ws.run_operator_once(make_op("ScatterAssign", ["d", "i", "s"], ["e"]))


@SETTINGS
@given(data=st.data())
def test_pack_unpack_segments_naive(data: Any) -> None:
    lengths = np.asarray(data.draw(st.lists(st.integers(0, 3), max_size=4)), np.int32)
    x = data.draw(floats((int(lengths.sum()), 2)))
    extra = data.draw(st.integers(0, 2))
    width = (int(lengths.max()) if lengths.size else 0) + extra
    packed, mask = run_op("PackSegments", [lengths, x], 2, max_length=width, return_presence_mask=1)
    assert packed.shape == (lengths.size, width, 2)
    start = 0
    for i, n in enumerate(lengths.tolist()):
        for k in range(width):
            want = x[start + k] if k < n else [0.0, 0.0]
            np.testing.assert_array_equal(packed[i, k], want)
            assert mask[i, k] == (k < n)
        start += n
    np.testing.assert_array_equal(run1("UnpackSegments", lengths, packed), x)
    minf = run1("PackSegments", lengths, x, pad_minf=1)
    assert np.all(np.isneginf(minf[~mask[:, : minf.shape[1]]])) if minf.size else True


def test_unpack_segments_with_max_length_undoes_truncation() -> None:
    lengths = np.array([1, 4, 2], np.int32)
    x = np.arange(7, dtype=np.float32).reshape(7, 1)
    packed = run1("PackSegments", lengths, x, max_length=3)
    assert packed.shape == (3, 3, 1)
    got = run1("UnpackSegments", lengths, packed, max_length=3)
    # Each segment keeps its first min(length, 3) rows.
    want = np.concatenate([x[0:1], x[1:4], x[5:7]])
    np.testing.assert_array_equal(got, want)


def test_negate_gradient_forward_is_identity() -> None:
    x = np.array([1.0, -2.0], np.float32)
    np.testing.assert_array_equal(run1("NegateGradient", x), x)


def test_batch_bucket_one_hot_infers_its_width() -> None:
    # Caffe2 infers (N, D + size(BOUNDARIES)): sum(LENS) must equal BOUNDARIES' size.
    info = op_info(make_op("BatchBucketOneHot", ["x", "l", "b"], ["y"]))
    assert info.schema.infer is not None
    ins = [
        TensorInfo((5, 3), np.dtype(np.float32)),
        TensorInfo((3,), np.dtype(np.int32)),
        TensorInfo((7,), np.dtype(np.float32)),
    ]
    (y,) = info.schema.infer(info, ins)
    assert y.shape == (5, 10) and y.dtype == np.float32
    (y,) = info.schema.infer(info, [ins[0], TensorInfo(None, np.dtype(np.int32)), ins[2]])
    assert y.shape == (5, None)
