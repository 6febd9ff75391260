"""PiecewiseLinearTransform, BatchBoxCox, Percentile and Histogram against naive loops written from
Caffe2's operator docs (the PiecewiseLinearTransform and BatchBoxCox goldens run in test_goldens.py)."""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError
from tests.ops.run_util import run_op

RNG = np.random.default_rng(31)


def naive_piece(x: float, b: list[float], s: list[float], c: list[float]) -> float:
    p = len(s)
    if x <= b[0]:
        return s[0] * b[0] + c[0]
    if x >= b[p]:
        return s[p - 1] * b[p] + c[p - 1]
    k = bisect.bisect_left(b, x) - 1
    return s[k] * x + c[k]


def test_piecewise_linear_transform_groups_and_inputs() -> None:
    x = RNG.uniform(-0.5, 1.5, (6, 2)).astype(np.float32)
    b = [0.0, 0.5, 1.0, 0.2, 0.4, 0.9]
    s = [1.0, -2.0, 0.5, 3.0]
    c = [0.1, 0.2, -0.3, 0.0]
    (y,) = run_op("PiecewiseLinearTransform", [x], bounds=b, slopes=s, intercepts=c)
    # Arguments are float32 in the proto: pass the same float32 values as inputs.
    f32 = [np.array(v, np.float32) for v in (b, s, c)]
    (y2,) = run_op("PiecewiseLinearTransform", [x, *f32])
    for i in range(6):
        for j in range(2):
            want = naive_piece(float(x[i, j]), b[3 * j : 3 * j + 3], s[2 * j : 2 * j + 2], c[2 * j : 2 * j + 2])
            assert y[i, j] == np.float32(want) or abs(y[i, j] - want) < 1e-6
    np.testing.assert_array_equal(y, y2)
    (yb,) = run_op("PiecewiseLinearTransform", [x], bounds=b[:3], slopes=s[:2], intercepts=c[:2], binary=1)
    for i in range(6):
        f = naive_piece(float(x[i, 1]), b[:3], s[:2], c[:2])
        assert abs(yb[i, 1] - f) < 1e-6 and abs(yb[i, 0] - (1 - f)) < 1e-6


def test_batch_box_cox() -> None:
    d = RNG.uniform(0.1, 3, (4, 3)).astype(np.float64)
    l1, l2 = np.array([0.0, 0.5, -1.0]), np.array([0.1, 0.0, -5.0])
    (y,) = run_op("BatchBoxCox", [d, l1, l2])
    for i in range(4):
        for j in range(3):
            x = max(d[i, j] + l2[j], 1e-6)
            want = math.log(x) if l1[j] == 0 else (x ** l1[j] - 1) / l1[j]
            assert y[i, j] == pytest_approx(want)


def pytest_approx(v: float) -> object:
    import pytest

    return pytest.approx(v, rel=1e-9, abs=1e-12)


def test_percentile_doc_example() -> None:
    values = np.array([[3, 5, 3], [5, 1, 6]], np.float32)
    table = np.array([[3, 0.2], [5, 0.5], [1, 0.3], [3, 0.6]], np.float32)
    (p,) = run_op("Percentile", [values, table, np.array([2, 1, 1], np.int32)])
    np.testing.assert_allclose(p, [[0.2, 1.0, 0.6], [0.5, 0.3, 1.0]])
    (p,) = run_op("Percentile", [np.array([[4.0], [0.0]]), np.array([[3, 0.2], [5, 0.6]]), np.array([2])])
    np.testing.assert_allclose(p, [[0.4], [0.0]])


def test_histogram() -> None:
    a, b = RNG.normal(size=50), RNG.normal(size=(4, 5))
    edges = [-1.0, 0.0, 0.5, 2.0]
    (h,) = run_op("Histogram", [a, b], bin_edges=edges)
    want = [0] * 3
    for v in list(a) + list(b.reshape(-1)):
        for k in range(3):
            if edges[k] <= v < edges[k + 1]:
                want[k] += 1
    assert h.tolist() == want and h.dtype == np.int64


def test_bisect_percentile_doc_example() -> None:
    args = dict(
        percentile_raw=[1.0, 2.0, 3.0, 4.0, 0.0, 10.0],
        percentile_mapping=[0.15, 0.55, 0.9, 1.0, 0.25, 0.75],
        percentile_lower=[0.1, 0.3, 0.9, 1.0, 0.0, 0.5],
        percentile_upper=[0.2, 0.8, 0.9, 1.0, 0.5, 1.0],
        lengths=[4, 2],
    )
    x = np.array([[2.0, 5.0], [2.5, -1.0], [0.5, 10.0], [9.0, 0.0]], np.float32)
    (p,) = run_op("BisectPercentile", [x], **args)
    want = [
        [0.55, (1 - 0.5) * 0.5 + 0.5 * 0.5],  # exact raw value; halfway between 0 and 10
        [(1 - 0.5) * 0.8 + 0.5 * 0.9, 0.0],  # interpolated U[1] -> L[2]; below the first raw value
        [0.0, 0.75],
        [1.0, 0.25],
    ]
    np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("edges", "message"),
    [([1.0], "Number of bin edges must be greater than or equal to 2"), ([0.0, 0.2, 0.1], "strictly increasing")],
)
def test_histogram_bad_edges_use_caffe2_messages(edges: list[float], message: str) -> None:
    with pytest.raises(AsyncNetError, match=message):
        run_op("Histogram", [np.zeros(3)], bin_edges=edges)
