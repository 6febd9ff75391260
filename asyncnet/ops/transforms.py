"""Feature transforms: PiecewiseLinearTransform, BatchBoxCox, Percentile, Histogram."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def piecewise(x: np.ndarray, bounds: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    """Caffe2's rule: clamp to the end pieces outside [b0, bP]; inside, piece k with b_k < x <= b_{k+1}."""
    p = slopes.size
    k = np.searchsorted(bounds, x, side="left") - 1
    k = np.clip(k, 0, p - 1)
    y = slopes[k] * x + intercepts[k]
    y = np.where(x <= bounds[0], slopes[0] * bounds[0] + intercepts[0], y)
    y = np.where(x >= bounds[p], slopes[p - 1] * bounds[p] + intercepts[p - 1], y)
    return np.asarray(y)


@register_op(
    "PiecewiseLinearTransform",
    inputs=(1, 4),
    args=(
        Arg("bounds", [], "per group P + 1 sorted bounds, groups concatenated"),
        Arg("slopes", [], "per group P slopes"),
        Arg("intercepts", [], "per group P intercepts"),
        Arg(
            "binary", 0, "binary predictions: Y[:, 1] = f(X[:, 1]), Y[:, 0] = 1 - Y[:, 1] (or Y = f(X) for one column)"
        ),
    ),
    infer=lambda op, ins: [ins[0]],
    doc="Column j of X (N, M) goes through group j's piecewise linear function (parameters from the "
    "arguments or inputs 1-3); below the first bound the first piece's value at that bound, above the "
    "last bound the last piece's value at that bound.",
    input_names=("predictions", "bounds", "slopes", "intercepts"),
    output_names=("transforms",),
)
def piecewise_linear_transform(op: OpInfo) -> Callable[..., Any]:
    binary = op.bool_arg("binary")
    if len(op.inputs) not in (1, 4):
        raise ArgumentError(f"{op.label()}: give the parameters as arguments or as inputs 1-3")

    def run(x: Any, *params: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if params:
            b, s, c = (np.asarray(v, np.float64).reshape(-1) for v in params)
        else:
            b, s, c = (np.asarray(op.floats_arg(n), np.float64) for n in ("bounds", "slopes", "intercepts"))
        cols = 1 if a.ndim == 1 else a.shape[1]
        groups = 1 if binary else cols
        if s.size == 0 or s.size % groups or c.size != s.size or b.size != s.size + groups:
            raise ArgumentError(
                f"{op.label()}: for {groups} group(s) expected P + 1 bounds and P slopes and intercepts each, "
                f"got {b.size}, {s.size}, {c.size}"
            )
        p = s.size // groups
        a2 = (a if a.ndim == 2 else a.reshape(-1, 1)).astype(np.float64)
        out = np.empty_like(a2)
        if binary:
            col = a2.shape[1] - 1
            out[:, col] = piecewise(a2[:, col], b, s, c)
            if a2.shape[1] == 2:
                out[:, 0] = 1.0 - out[:, 1]
        else:
            for j in range(cols):
                bj, sj, cj = b[j * (p + 1) : (j + 1) * (p + 1)], s[j * p : (j + 1) * p], c[j * p : (j + 1) * p]
                out[:, j] = piecewise(a2[:, j], bj, sj, cj)
        return (out.reshape(a.shape).astype(a.dtype),)

    return run


@register_op(
    "BatchBoxCox",
    inputs=3,
    args=(Arg("min_block_size", 256, "unused (Caffe2 tuning)"), Arg("naive", 0, "unused (Caffe2 tuning)")),
    infer=lambda op, ins: [ins[0]],
    doc="Box-Cox per column j of data (N, D): x' = max(x + lambda2[j], 1e-6); y = ln(x') when lambda1[j] "
    "is 0, else (x'^lambda1[j] - 1) / lambda1[j].",
    input_names=("data", "lambda1", "lambda2"),
    output_names=("output",),
)
def batch_box_cox(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, l1: Any, l2: Any) -> tuple[np.ndarray]:
        d = np.asarray(data)
        if d.ndim not in (1, 2):
            raise ArgumentError(f"{op.label()}: data must be 1-D or 2-D, got {d.shape}")
        x = d if d.ndim == 2 else d.reshape(1, -1)
        a, b = np.asarray(l1, d.dtype).reshape(-1), np.asarray(l2, d.dtype).reshape(-1)
        if a.size != x.shape[1] or b.size != x.shape[1]:
            raise ArgumentError(f"{op.label()}: lambda1 and lambda2 must hold one value per column ({x.shape[1]})")
        xs = np.maximum(x + b, d.dtype.type(1e-6))
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(a == 0, np.log(xs), (np.power(xs, a) - 1) / np.where(a == 0, 1, a))
        return (y.reshape(d.shape).astype(d.dtype, copy=False),)

    return run


@register_op(
    "Percentile",
    inputs=3,
    infer=lambda op, ins: [TensorInfo(ins[0].shape, np.dtype(np.float32))],
    doc="Percentile of each value of original_values (N, M): column j uses the j-th group of "
    "(value, percentile) rows of value_to_pct (groups cut by lengths, values sorted); a sampled value "
    "maps to its percentile, others interpolate linearly between the neighbours, below all gives 0 "
    "and above all gives 1.",
    input_names=("original_values", "value_to_pct", "lengths"),
    output_names=("percentile_values",),
)
def percentile(op: OpInfo) -> Callable[..., Any]:
    def run(values: Any, table: Any, lengths: Any) -> tuple[np.ndarray]:
        v = np.asarray(values, np.float64)
        t = np.asarray(table, np.float64)
        ln = np.asarray(lengths).reshape(-1).astype(np.int64)
        v2 = v.reshape(v.shape[0], -1) if v.ndim else v.reshape(1, 1)
        if t.ndim != 2 or t.shape[1] != 2 or int(ln.sum()) != t.shape[0] or ln.size != v2.shape[1]:
            raise ArgumentError(
                f"{op.label()}: value_to_pct must be (K, 2) with K = sum(lengths) and one length per column "
                f"of original_values; got {t.shape}, {ln.tolist()}, {v.shape}"
            )
        out = np.empty_like(v2)
        pos = 0
        for j, n in enumerate(ln.tolist()):
            xs, ps = t[pos : pos + n, 0], t[pos : pos + n, 1]
            pos += n
            col = v2[:, j]
            if n == 0:
                out[:, j] = 0.0
                continue
            res = np.interp(col, xs, ps)
            res = np.where(col < xs[0], 0.0, np.where(col > xs[-1], 1.0, res))
            out[:, j] = res
        return (out.reshape(v.shape).astype(np.float32),)

    return run


@register_op(
    "Histogram",
    inputs=(1, -1),
    args=(Arg("bin_edges", [], "sorted bin edges (at least 2)"),),
    infer=lambda op, ins: [TensorInfo((max(len(op.floats_arg("bin_edges")) - 1, 0),), np.dtype(np.int64))],
    doc="Counts (int64) of the values of all inputs in bins [edge_i, edge_{i+1}); values outside "
    "[first edge, last edge) are not counted.",
    output_names=("histogram",),
)
def histogram(op: OpInfo) -> Callable[..., Any]:
    edges = np.asarray(op.floats_arg("bin_edges"), np.float64)
    # Caffe2's two messages, which scripts match on.
    if edges.size < 2:
        raise ArgumentError(
            f"{op.label()}: Number of bin edges must be greater than or equal to 2, got {edges.tolist()}"
        )
    if np.any(np.diff(edges) <= 0):
        raise ArgumentError(
            f"{op.label()}: bin_edges must be a strictly increasing sequence of values, got {edges.tolist()}"
        )

    def run(*xs: Any) -> tuple[np.ndarray]:
        counts = np.zeros(edges.size - 1, np.int64)
        for x in xs:
            k = np.searchsorted(edges, np.asarray(x, np.float64).reshape(-1), side="right")
            ok = (k > 0) & (k < edges.size)
            counts += np.bincount(k[ok] - 1, minlength=edges.size - 1)
        return (counts,)

    return run


@register_op(
    "BisectPercentile",
    args=(
        Arg("percentile_raw", [], "sorted sample values of every feature, concatenated"),
        Arg("percentile_mapping", [], "their percentiles"),
        Arg("percentile_lower", [], "their lower percentile bounds"),
        Arg("percentile_upper", [], "their upper percentile bounds"),
        Arg("lengths", [], "sample points per feature"),
    ),
    infer=lambda op, ins: [TensorInfo(ins[0].shape, np.dtype(np.float32))],
    doc="Percentile of each value of X (N, F) from feature j's mapping: below the first raw value 0, "
    "above the last 1, an exact raw value R[k] gives P[k], otherwise with R[k] < x < R[k+1] and "
    "w = (x - R[k]) / (R[k+1] - R[k] + 1e-10): (1 - w) U[k] + w L[k+1].",
    input_names=("raw_values",),
    output_names=("percentile",),
)
def bisect_percentile(op: OpInfo) -> Callable[..., Any]:
    raw, mp = (np.asarray(op.floats_arg(n), np.float64) for n in ("percentile_raw", "percentile_mapping"))
    lo, up = (np.asarray(op.floats_arg(n), np.float64) for n in ("percentile_lower", "percentile_upper"))
    lens = [int(v) for v in op.ints_arg("lengths")]
    if not (raw.size == mp.size == lo.size == up.size == sum(lens)) or any(n <= 0 for n in lens):
        raise ArgumentError(f"{op.label()}: the four percentile lists must each hold sum(lengths) = {sum(lens)} values")
    starts = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)

    def one(j: int, v: float) -> float:
        a, b = int(starts[j]), int(starts[j + 1])
        r = raw[a:b]
        if v < r[0]:
            return 0.0
        if v > r[-1]:
            return 1.0
        k = int(np.searchsorted(r, v, side="right")) - 1
        if r[k] == v:
            return float(mp[a + k])
        w = (v - r[k]) / (r[k + 1] - r[k] + 1e-10)
        return float((1 - w) * up[a + k] + w * lo[a + k + 1])

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x, np.float64)
        a2 = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
        if a2.shape[1] != len(lens):
            raise ArgumentError(f"{op.label()}: X has {a2.shape[1]} features, lengths describes {len(lens)}")
        out = np.array([[one(j, float(a2[i, j])) for j in range(a2.shape[1])] for i in range(a2.shape[0])])
        return (out.reshape(a.shape).astype(np.float32),)

    return run
