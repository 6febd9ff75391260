"""Statistics over every value of several tensors: Quantile (bisection) and SelfBinningHistogram.

Both read all their inputs as one bag of values (shapes do not matter) and compute in the
inputs' own float type, as Caffe2's kernels did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _values(op: OpInfo, xs: tuple[Any, ...], use_abs: bool) -> tuple[np.ndarray, np.dtype[Any]]:
    """All inputs flattened into one array of input 0's float type (|x| with ``use_abs``)."""
    arrs = [np.asarray(x) for x in xs]
    dtype = arrs[0].dtype
    if dtype not in _FLOATS:
        raise TensorError(f"{op.label()}: inputs must be float32 or float64, got {dtype}")
    for i, a in enumerate(arrs[1:], 1):
        if a.dtype != dtype:
            raise TensorError(f"{op.label()}: all inputs must have input 0's type {dtype}, input {i} is {a.dtype}")
    flat = np.concatenate([a.reshape(-1) for a in arrs]) if arrs else np.zeros(0, dtype)
    return (np.abs(flat) if use_abs else flat), dtype


def _first_dtype(ins: list[TensorInfo]) -> Any:
    return ins[0].dtype if ins and ins[0].dtype is not None else np.float32


# -- Quantile ----------------------------------------------------------------------------------------


@register_op(
    "Quantile",
    inputs=(1, -1),
    args=(
        Arg("quantile", -1.0, "the quantile in [0, 1] (required)"),
        Arg("abs", 1, "take |x| of every value first"),
        Arg("tol", 1e-3, "stop bisecting when |hi - lo| <= tol * (|hi| + |lo|)"),
    ),
    infer=lambda op, ins: [info((1,), _first_dtype(ins))],
    doc="A value v such that at least ceil(quantile * n) of the n values of all inputs are <= v, found by "
    "bisection between the smallest and largest value until the bracket is within the relative tolerance "
    "`tol` (the upper end is returned; an exact count hit returns the midpoint). Output shape (1,).",
    input_names=("X",),
    output_names=("quantile_value",),
)
def quantile(op: OpInfo) -> Callable[..., Any]:
    q = op.float_arg("quantile")
    use_abs = op.bool_arg("abs")
    tol = op.float_arg("tol")
    if not 0.0 <= q <= 1.0:
        raise ArgumentError(f"{op.label()}: quantile must be in [0, 1], got {q}")
    if tol <= 0:
        raise ArgumentError(f"{op.label()}: tol must be positive, got {tol}")
    tol32 = np.float32(tol)

    def run(*xs: Any) -> tuple[np.ndarray]:
        vals, dtype = _values(op, xs, use_abs)
        t = dtype.type
        n = vals.size
        if n == 0:
            raise TensorError(f"{op.label()}: the inputs hold no values")
        target = int(np.ceil(n * np.float32(q)))
        lo, hi = t(vals.min()), t(vals.max())

        def answer(v: Any) -> tuple[np.ndarray]:
            return (np.asarray([v], dtype=dtype),)

        if target == 0:
            return answer(lo)
        if target == n:
            return answer(hi)
        if np.count_nonzero(vals <= lo) >= target:
            return answer(lo)
        while abs(hi - lo) > tol32 * (abs(hi) + abs(lo)):
            mid = t(float(lo) + (float(hi) - float(lo)) / 2.0)
            count = np.count_nonzero(vals <= mid)
            if count == target:
                return answer(mid)
            if mid in (lo, hi):
                raise TensorError(
                    f"{op.label()}: bisection reached the float precision limit between {lo} and {hi} "
                    f"before the tolerance {tol}"
                )
            if count > target:
                hi = mid
            else:
                lo = mid
        return answer(hi)

    return run


# -- SelfBinningHistogram ----------------------------------------------------------------------------

# The top edge is stretched by this factor of the range so the largest value falls inside the last bin.
_RANGE_SCALING = 1.0001


def _edges(lo: Any, hi: Any, bins: int, spacing: str, log_start: float, t: Any) -> tuple[np.ndarray, Any, Any]:
    """Bin edges (bins + 1) in type ``t``, the (possibly raised) max and the stretched top edge."""
    steps = np.arange(bins + 1, dtype=t) / t(bins)
    if spacing == "linear":
        top = t(lo + (hi - lo) * t(_RANGE_SCALING))
        edges = lo + steps * (top - lo)
    else:
        start = t(log_start)
        lo, hi = max(lo, start), max(hi, start)
        top = t(lo + (hi - lo) * t(_RANGE_SCALING))
        # Each edge is lo * exp(i/bins * log(top/lo)), computed per edge to avoid underflow.
        edges = lo * np.exp((np.log(top) - np.log(lo)) * steps)
    return edges.astype(t, copy=False), hi, top


@register_op(
    "SelfBinningHistogram",
    inputs=(1, -1),
    outputs=2,
    args=(
        Arg("num_bins", 0, "number of bins (>= 1); the outputs have num_bins + 1 entries"),
        Arg("bin_spacing", "linear", "'linear' or 'logarithmic' edges"),
        Arg("logspace_start", 1e-24, "smallest edge of logarithmic spacing (values below count in bin 0)"),
        Arg("abs", 0, "bin |x| instead of x"),
    ),
    infer=lambda op, ins: [
        info((op.int_arg("num_bins") + 1,), _first_dtype(ins)),
        info((op.int_arg("num_bins") + 1,), np.int64),
    ],
    doc="Histogram of all input values with bins chosen from the data: num_bins + 1 edges from the minimum "
    "to slightly above the maximum (linear, or geometric from max(min, logspace_start)); output 0 holds "
    "the edges, output 1 the count of values in [edge_i, edge_i+1) (the last count is 0; values below the "
    "first logarithmic edge count in bin 0). No values: all zeros. When the edges collapse (min == max) "
    "every value counts in bin 0.",
    input_names=("X",),
    output_names=("histogram_values", "histogram_counts"),
)
def self_binning_histogram(op: OpInfo) -> Callable[..., Any]:
    bins = op.int_arg("num_bins")
    spacing = op.str_arg("bin_spacing")
    log_start = op.float_arg("logspace_start")
    use_abs = op.bool_arg("abs")
    if bins < 1:
        raise ArgumentError(f"{op.label()}: Number of bins must be greater than or equal to 1, got {bins}")
    if spacing not in ("linear", "logarithmic"):
        raise ArgumentError(f"{op.label()}: bin_spacing must be 'linear' or 'logarithmic', got {spacing!r}")
    if log_start <= 0:
        raise ArgumentError(f"{op.label()}: logspace_start must be positive, got {log_start}")

    def run(*xs: Any) -> tuple[np.ndarray, np.ndarray]:
        vals, dtype = _values(op, xs, use_abs)
        t = dtype.type
        counts = np.zeros(bins + 1, dtype=np.int64)
        if vals.size == 0:
            return np.zeros(bins + 1, dtype=dtype), counts
        edges, hi, top = _edges(t(vals.min()), t(vals.max()), bins, spacing, log_start, t)
        if edges[-1] <= hi:
            # Collapsed range (or underflow): no edge lies above the max, so everything is in bin 0.
            edges[-1] = top
            counts[0] = vals.size
            return edges, counts
        pos = np.searchsorted(edges, vals, side="right")
        inside = (pos > 0) & (pos <= bins)
        np.add.at(counts, pos[inside] - 1, 1)
        counts[0] += np.count_nonzero(pos == 0)
        return edges, counts

    return run
