"""Reductions: Reduce{Sum,Mean,Max,Min,L1,L2}, ReduceFront*/ReduceBack*, SumElements, AveragedLoss,
Rowwise/ColwiseMax, ArgMax/ArgMin, Moments, ChannelStats, BatchMoments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, prod
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

INT64 = np.dtype(np.int64)


def _axes(op: OpInfo, ndim: int) -> tuple[int, ...]:
    """The `axes` argument made non-negative and sorted; absent or empty means every axis."""
    raw = op.ints_arg("axes") if op.has("axes") else []
    if not raw:
        return tuple(range(ndim))
    axes = sorted({canonical_axis(a, ndim, op, "axes") for a in raw})
    if len(axes) != len(raw):
        raise ArgumentError(f"{op.label()}: axes {raw} repeat an axis")
    return tuple(axes)


def _reduced_shape(shape: tuple[Any, ...], axes: tuple[int, ...], keepdims: bool) -> tuple[Any, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None:
        return [TensorInfo(None, x.dtype)] * len(op.outputs)
    shape = _reduced_shape(x.shape, _axes(op, len(x.shape)), op.bool_arg("keepdims"))
    return [TensorInfo(shape, x.dtype)] * len(op.outputs)


def _l2(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    out: np.ndarray = np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))
    return out


def _l1(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    out: np.ndarray = np.sum(np.abs(x), axis=axis, keepdims=keepdims)
    return out


def _amax(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    # An empty reduction gives the identity of max (the lowest value), as Caffe2's does.
    if x.size == 0:
        return _empty_reduction(x, axis, keepdims, _lowest(x.dtype))
    out: np.ndarray = np.max(x, axis=axis, keepdims=keepdims)
    return out


def _amin(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    if x.size == 0:
        return _empty_reduction(x, axis, keepdims, _highest(x.dtype))
    out: np.ndarray = np.min(x, axis=axis, keepdims=keepdims)
    return out


def _lowest(dt: np.dtype[Any]) -> Any:
    return np.finfo(dt).min if dt.kind == "f" else np.iinfo(dt).min


def _highest(dt: np.dtype[Any]) -> Any:
    return np.finfo(dt).max if dt.kind == "f" else np.iinfo(dt).max


def _empty_reduction(x: np.ndarray, axis: tuple[int, ...], keepdims: bool, fill: Any) -> np.ndarray:
    return np.full(_reduced_shape(x.shape, axis, keepdims), fill, dtype=x.dtype)


def _mean(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    n = prod(x.shape[a] for a in axis)
    s = np.sum(x, axis=axis, keepdims=keepdims)
    if n == 0:
        return np.zeros_like(s)
    out: np.ndarray = s / n
    return out


def _sum(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    out: np.ndarray = np.sum(x, axis=axis, keepdims=keepdims)
    return out


_REDUCERS: dict[str, tuple[Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray], str]] = {
    "Sum": (_sum, "sum"),
    "Mean": (_mean, "mean"),
    "Max": (_amax, "maximum"),
    "Min": (_amin, "minimum"),
    "L1": (_l1, "sum of absolute values"),
    "L2": (_l2, "square root of the sum of squares"),
}


def _reduce_factory(fn: Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        keepdims = op.bool_arg("keepdims")

        def run(x: Any) -> tuple[np.ndarray]:
            x = np.asarray(x)
            axes = _axes(op, x.ndim)
            return (np.asarray(fn(x, axes, keepdims)).astype(x.dtype, copy=False),)

        return run

    return factory


for _kind, (_fn, _what) in _REDUCERS.items():
    register_op(
        f"Reduce{_kind}",
        args=(
            Arg("axes", [], "axes to reduce (default: all)"),
            Arg("keepdims", 1, "keep reduced axes as dims of size 1"),
        ),
        infer=_reduce_infer,
        doc=f"The {_what} of X over `axes`.",
        input_names=("data",),
        output_names=("reduced",),
    )(_reduce_factory(_fn))


# -- ReduceFront* / ReduceBack* ------------------------------------------------------


def _front_back_infer(front: bool) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        x = ins[0]
        if x.shape is None:
            return [TensorInfo(None, x.dtype)]
        k = op.int_arg("num_reduce_dim")
        if not 0 <= k <= len(x.shape):
            raise ShapeInferenceError(f"{op.label()}: num_reduce_dim {k} is out of range for X {x}")
        return [TensorInfo(x.shape[k:] if front else x.shape[: len(x.shape) - k], x.dtype)]

    return infer


def _segment_reduce(kind: str, block: np.ndarray, axis: int) -> np.ndarray:
    if kind == "Sum":
        total: np.ndarray = np.sum(block, axis=axis)
        return total
    if kind == "Mean":
        n = block.shape[axis]
        with np.errstate(invalid="ignore", divide="ignore"):
            out: np.ndarray = np.sum(block, axis=axis) / n
        return out
    if block.shape[axis] == 0:
        shape = block.shape[:axis] + block.shape[axis + 1 :]
        return np.full(shape, _lowest(block.dtype) if kind == "Max" else _highest(block.dtype), dtype=block.dtype)
    best: np.ndarray = np.max(block, axis=axis) if kind == "Max" else np.min(block, axis=axis)
    return best


def _front_back_factory(kind: str, front: bool) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        k = op.int_arg("num_reduce_dim")

        def run(x: Any, lengths: Any = None) -> tuple[np.ndarray]:
            x = np.asarray(x)
            if not 0 <= k <= x.ndim:
                raise ArgumentError(f"{op.label()}: num_reduce_dim {k} is out of range for X of rank {x.ndim}")
            kept = x.shape[k:] if front else x.shape[: x.ndim - k]
            red = x.shape[:k] if front else x.shape[x.ndim - k :]
            rows, cols = (prod(red), prod(kept)) if front else (prod(kept), prod(red))
            flat = x.reshape(rows, cols)
            axis = 0 if front else 1
            if lengths is None:
                out = _segment_reduce(kind, flat, axis)
            else:
                lens = np.asarray(lengths).reshape(-1)
                n_seg = cols if front else rows
                limit = rows if front else cols
                if lens.size != n_seg:
                    raise ArgumentError(f"{op.label()}: lengths has {lens.size} values, expected {n_seg}")
                if np.any(lens < 0) or np.any(lens > limit):
                    raise ArgumentError(f"{op.label()}: lengths must lie in [0, {limit}], got {lens.tolist()}")
                out = np.empty(n_seg, dtype=x.dtype)
                for j, n in enumerate(lens.tolist()):
                    seg = flat[:n, j] if front else flat[j, :n]
                    out[j] = _segment_reduce(kind, seg, 0)
            return (np.asarray(out).reshape(kept).astype(x.dtype, copy=False),)

        return run

    return factory


for _kind in ("Sum", "Mean", "Max", "Min"):
    for _front in (True, False):
        _where = "Front" if _front else "Back"
        register_op(
            f"Reduce{_where}{_kind}",
            inputs=(1, 2),
            args=(Arg("num_reduce_dim", 1, f"number of {'leading' if _front else 'trailing'} dims to reduce"),),
            infer=_front_back_infer(_front),
            doc=f"The {_REDUCERS[_kind][1]} over the first (Front) or last (Back) `num_reduce_dim` dims. "
            "With the optional lengths input, each kept position only reduces over its first lengths[i] "
            "reduced entries.",
            input_names=("X", "lengths"),
            output_names=("Y",),
        )(_front_back_factory(_kind, _front))


# -- whole-tensor sums -------------------------------------------------------------------


def _scalar_infer(dtype: Any = None) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [TensorInfo((), np.dtype(dtype) if dtype is not None else ins[0].dtype)]

    return infer


def _sum_elements(square: bool) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        average = op.bool_arg("average")

        def run(x: Any) -> tuple[np.ndarray]:
            x = np.asarray(x)
            v = np.square(x) if square else x
            s = np.sum(v, dtype=x.dtype)
            if average:
                s = s / x.size if x.size else np.zeros((), x.dtype)
            return (np.asarray(s, dtype=x.dtype),)

        return run

    return factory


register_op(
    "SumElements",
    args=(Arg("average", 0, "divide by the number of elements"),),
    infer=_scalar_infer(),
    doc="The sum (or with `average` the mean) of every element of X, as a scalar.",
)(_sum_elements(False))
register_op(
    "SumSqrElements",
    args=(Arg("average", 0, "divide by the number of elements"),),
    infer=_scalar_infer(),
    doc="The sum (or with `average` the mean) of the squares of every element of X, as a scalar.",
)(_sum_elements(True))


@register_op(
    "SumElementsInt",
    infer=_scalar_infer(np.int32),
    doc="The sum of every element of an int32 tensor, as an int32 scalar.",
)
def sum_elements_int(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        if x.dtype != np.int32:
            raise ArgumentError(f"{op.label()}: X must be int32, got {x.dtype}")
        return (np.asarray(np.sum(x, dtype=np.int32), dtype=np.int32),)

    return run


@register_op(
    "AveragedLoss",
    infer=_scalar_infer(),
    doc="The mean of every element of X, as a scalar (a loss layer).",
)
def averaged_loss(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        s = np.sum(x, dtype=x.dtype) / x.size if x.size else 0
        return (np.asarray(s, dtype=x.dtype),)

    return run


# -- rowwise / colwise -------------------------------------------------------------------


def _rowcol_infer(row: bool) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        x = ins[0]
        if x.shape is None:
            return [TensorInfo(None, x.dtype)]
        if len(x.shape) != 3:
            raise ShapeInferenceError(f"{op.label()}: X must be 3-D (batch, M, N), got {x}")
        return [TensorInfo((x.shape[0], x.shape[1] if row else x.shape[2]), x.dtype)]

    return infer


def _rowcol_factory(row: bool) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(x: Any) -> tuple[np.ndarray]:
            x = np.asarray(x)
            if x.ndim != 3:
                raise ArgumentError(f"{op.label()}: X must be 3-D (batch, M, N), got shape {x.shape}")
            return (_amax(x, (2,) if row else (1,), False),)

        return run

    return factory


register_op(
    "RowwiseMax",
    infer=_rowcol_infer(True),
    doc="For X of shape (batch, M, N): the maximum of each row, shape (batch, M).",
)(_rowcol_factory(True))
register_op(
    "ColwiseMax",
    infer=_rowcol_infer(False),
    doc="For X of shape (batch, M, N): the maximum of each column, shape (batch, N).",
)(_rowcol_factory(False))


# -- ArgMax / ArgMin -----------------------------------------------------------------------


def _arg_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None:
        return [TensorInfo(None, INT64)]
    axis = canonical_axis(op.int_arg("axis"), len(x.shape), op)
    return [TensorInfo(_reduced_shape(x.shape, (axis,), op.bool_arg("keepdims")), INT64)]


def _arg_factory(fn: Callable[..., Any]) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        axis_arg, keepdims = op.int_arg("axis"), op.bool_arg("keepdims")

        def run(x: Any) -> tuple[np.ndarray]:
            x = np.asarray(x)
            axis = canonical_axis(axis_arg, x.ndim, op)
            if x.shape[axis] == 0:
                raise ArgumentError(f"{op.label()}: cannot take {op.type} over the empty axis {axis} of {x.shape}")
            out = fn(x, axis=axis, keepdims=keepdims) if x.ndim else np.zeros((), INT64)
            return (np.asarray(out, dtype=INT64),)

        return run

    return factory


_ARG_OPS: tuple[tuple[str, Callable[..., Any], str], ...] = (
    ("ArgMax", np.argmax, "largest"),
    ("ArgMin", np.argmin, "smallest"),
)
for _arg_name, _arg_fn, _arg_what in _ARG_OPS:
    register_op(
        _arg_name,
        args=(Arg("axis", -1, "axis to search"), Arg("keepdims", 1, "keep the axis as a dim of size 1")),
        infer=_arg_infer,
        doc=f"Index (int64) of the {_arg_what} value along `axis` (the first one on ties).",
    )(_arg_factory(_arg_fn))


# -- Moments ------------------------------------------------------------------------------


@register_op(
    "Moments",
    outputs=2,
    args=(Arg("axes", [], "axes to reduce (default: all)"), Arg("keepdims", 1, "keep reduced axes as size-1 dims")),
    infer=_reduce_infer,
    doc="Mean and (population) variance of X over `axes`.",
    output_names=("mean", "variance"),
)
def moments(op: OpInfo) -> Callable[..., Any]:
    keepdims = op.bool_arg("keepdims")

    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x)
        axes = _axes(op, x.ndim)
        mean = _mean(x, axes, True)
        var = _mean(np.square(x - mean), axes, keepdims)
        if not keepdims:
            mean = mean.reshape(_reduced_shape(x.shape, axes, False))
        return mean.astype(x.dtype, copy=False), var.astype(x.dtype, copy=False)

    return run


# -- per-channel statistics -----------------------------------------------------------------------


def _channel_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    c = None
    if x.shape is not None and len(x.shape) >= 2:
        c = x.shape[-1] if str(op.arg("order")).upper() == "NHWC" else x.shape[1]
    return [TensorInfo((c,), x.dtype)] * 2


def _channels_last(op: OpInfo, x: np.ndarray) -> np.ndarray:
    """X as (rows, C) with the channel dim of `order` last."""
    order = str(op.arg("order")).upper()
    if order not in ("NCHW", "NHWC"):
        raise ArgumentError(f"{op.label()}: order must be NCHW or NHWC, got '{order}'")
    if x.ndim < 2:
        raise ArgumentError(f"{op.label()}: X must have rank >= 2, got shape {x.shape}")
    moved = x if order == "NHWC" else np.moveaxis(x, 1, -1)
    return moved.reshape(-1, moved.shape[-1])


def _channel_stats_factory(kind: str) -> Callable[[OpInfo], Any]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
            x = np.asarray(x)
            flat = _channels_last(op, x)
            s, sq = flat.sum(axis=0), np.square(flat).sum(axis=0)
            if kind == "sums":
                return s.astype(x.dtype), sq.astype(x.dtype)
            n = flat.shape[0]
            # Caffe2's BatchMoments "var" output is the raw second moment E[X^2], not the variance.
            mean = s / n if n else np.zeros_like(s)
            second = sq / n if n else np.zeros_like(s)
            return mean.astype(x.dtype), second.astype(x.dtype)

        return run

    return factory


register_op(
    "ChannelStats",
    outputs=2,
    args=(Arg("order", "NCHW", "where the channel dim is"),),
    infer=_channel_infer,
    doc="Per channel: the sum and the sum of squares of X over every other dim.",
    input_names=("X",),
    output_names=("sum", "sumsq"),
)(_channel_stats_factory("sums"))
register_op(
    "BatchMoments",
    outputs=2,
    args=(Arg("order", "NCHW", "where the channel dim is"),),
    infer=_channel_infer,
    doc="Per channel: the mean E[X] and the second raw moment E[X^2] (Caffe2 names it var) over every other dim.",
    input_names=("X",),
    output_names=("mu", "var"),
)(_channel_stats_factory("moments"))
