"""Quantile and SelfBinningHistogram against naive loops written from Caffe2's documented semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from tests.ops.run_util import run_op


def naive_count_le(values: list[float], v: float) -> int:
    n = 0
    for x in values:
        if x <= v:
            n += 1
    return n


@pytest.mark.parametrize(
    ("q", "use_abs", "tol", "dtype"),
    [(0.2, 1, 1e-4, np.float64), (1e-6, 0, 1e-3, np.float64), (0.168, 1, 1e-4, np.float32), (0.5, 0, 1e-5, np.float32)],
)
def test_quantile_brackets_the_target_count(q: float, use_abs: int, tol: float, dtype: type) -> None:
    rng = np.random.default_rng(3)
    xs = [(rng.random(size) - 0.3).astype(dtype) for size in ((17,), (4, 9), (31,))]
    (out,) = run_op("Quantile", xs, quantile=q, abs=use_abs, tol=tol)
    assert out.shape == (1,) and out.dtype == dtype
    v = float(out[0])
    values = [abs(float(x)) if use_abs else float(x) for a in xs for x in a.reshape(-1)]
    target = math.ceil(len(values) * np.float32(q))
    # At least the target count is <= v, and a value a relative tolerance below v no longer reaches it.
    assert naive_count_le(values, v) >= target
    assert naive_count_le(values, v - 2.5 * tol * abs(v)) <= target


def test_quantile_extremes_and_lowest_value() -> None:
    x = np.array([3.0, -1.0, 2.0, -1.0, 5.0])
    assert run_op("Quantile", [x], quantile=0.0, abs=0)[0][0] == -1.0
    assert run_op("Quantile", [x], quantile=1.0, abs=0)[0][0] == 5.0
    # ceil(5 * 0.4) = 2 values are <= the minimum -1, so the minimum is the answer.
    assert run_op("Quantile", [x], quantile=0.4, abs=0)[0][0] == -1.0
    # With abs the values are 3, 1, 2, 1, 5: the maximum is 5.
    assert run_op("Quantile", [x], quantile=1.0)[0][0] == 5.0


def test_quantile_errors() -> None:
    with pytest.raises(ArgumentError, match="quantile must be in"):
        run_op("Quantile", [np.ones(3)])
    with pytest.raises(OperatorError, match="no values"):
        run_op("Quantile", [np.zeros(0)], quantile=0.5)
    with pytest.raises(OperatorError, match="input 0's type"):
        run_op("Quantile", [np.ones(3), np.ones(3, np.float32)], quantile=0.5)


# -- SelfBinningHistogram --------------------------------------------------------------------------

X = np.array([-2.0, -2.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 9.0])


def naive_counts(values: list[float], edges: list[float]) -> list[int]:
    """Value v counts in bin i when edges[i] <= v < edges[i+1]; below the first edge: bin 0."""
    counts = [0] * len(edges)
    for v in values:
        for i in range(len(edges) - 1, -1, -1):
            if edges[i] <= v:
                if i < len(edges) - 1:
                    counts[i] += 1
                break
        else:
            counts[0] += 1
    return counts


def naive_edges(values: list[float], bins: int, spacing: str, start: float = 1e-24) -> list[float]:
    lo, hi = min(values), max(values)
    if spacing == "logarithmic":
        lo, hi = max(lo, start), max(hi, start)
    top = lo + (hi - lo) * 1.0001
    if spacing == "linear":
        return [lo + i / bins * (top - lo) for i in range(bins + 1)]
    return [lo * math.exp(i / bins * (math.log(top) - math.log(lo))) for i in range(bins + 1)]


@pytest.mark.parametrize("spacing", ["linear", "logarithmic"])
@pytest.mark.parametrize("use_abs", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_matches_naive_binning(spacing: str, use_abs: int, dtype: type) -> None:
    x2 = np.array([-5.0, -3.0, 7, 7, 0.0, 1.0, 2.0, -3.0, 4.0, 6.0, 9.0])
    xs = [X.astype(dtype), x2.astype(dtype)]
    edges, counts = run_op("SelfBinningHistogram", xs, 2, num_bins=5, bin_spacing=spacing, abs=use_abs)
    assert edges.dtype == dtype and counts.dtype == np.int64 and edges.shape == counts.shape == (6,)
    values = [abs(float(v)) if use_abs else float(v) for a in xs for v in a]
    np.testing.assert_allclose(edges, naive_edges(values, 5, spacing), rtol=1e-5)
    assert counts.tolist() == naive_counts(values, [float(e) for e in edges])
    assert counts.sum() == 22 and counts[-1] == 0


def test_histogram_published_example() -> None:
    # Caffe2's documented example: 5 linear bins over X.
    edges, counts = run_op("SelfBinningHistogram", [X], 2, num_bins=5)
    np.testing.assert_allclose(edges, [-2.0, 0.2, 2.4, 4.6, 6.8, 9.0], rtol=1e-2, atol=1e-5)
    assert counts.tolist() == [5, 2, 2, 1, 1, 0]
    edges, counts = run_op("SelfBinningHistogram", [X], 2, num_bins=5, bin_spacing="logarithmic", abs=1)
    np.testing.assert_allclose(edges, [1e-24, 9.8e-20, 9.6e-15, 9.4e-10, 9.2e-05, 9.0], rtol=1e-2)
    assert counts.tolist() == [3, 0, 0, 0, 8, 0]


def test_histogram_degenerate_inputs() -> None:
    edges, counts = run_op("SelfBinningHistogram", [np.zeros(0)], 2, num_bins=3)
    assert edges.tolist() == [0.0] * 4 and counts.tolist() == [0] * 4
    # min == max: the edges collapse, the top edge is the stretched max and everything is in bin 0.
    edges, counts = run_op("SelfBinningHistogram", [np.ones(5, np.float32)], 2, num_bins=3)
    assert edges.tolist() == [1.0] * 4 and counts.tolist() == [5, 0, 0, 0]
    # Many bins over a tiny range: every value still lands in a bin below the top edge.
    edges, counts = run_op("SelfBinningHistogram", [np.array([0, 1e-30], np.float32)], 2, num_bins=100000)
    assert counts.sum() == 2 and counts[-1] == 0 and edges[-1] > 1e-30


def test_histogram_needs_a_bin() -> None:
    with pytest.raises(ArgumentError, match="Number of bins must be greater than or equal to 1"):
        run_op("SelfBinningHistogram", [np.ones(3)], 2, num_bins=0)
