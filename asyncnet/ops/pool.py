"""Pooling: MaxPool and AveragePool (1-D/2-D/3-D aliases, global pooling, legacy padding)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._conv_util import POOL_ARGS, Window, WindowArgs, average_pool, max_pool, spatial_axes
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _pool_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None or len(x.shape) < 3:
        return [TensorInfo(None, x.dtype)]
    win = WindowArgs.parse(op, pooling=True)
    sp = win.infer_spatial(win.spatial_shape(x.shape))
    c = win.channels(x.shape)
    out = (x.shape[0], c, *sp) if win.order == "NCHW" else (x.shape[0], *sp, c)
    return [TensorInfo(out, x.dtype)]


def _window_args(op: OpInfo) -> WindowArgs:
    win = WindowArgs.parse(op, pooling=True)
    d = win.dilation
    if d is not None and any(v != 1 for v in (d if isinstance(d, tuple) else (d,))):
        raise ArgumentError(f"{op.label()}: pooling does not support dilation, got {d}")
    return win


def _make_pool(op: OpInfo, reduce: Callable[[np.ndarray, Window, str], np.ndarray], global_fn: str) -> Any:
    win_args = _window_args(op)
    order = win_args.order
    cache: dict[tuple[int, ...], Window] = {}

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        if x.ndim < 3:
            raise ArgumentError(f"X {x.shape} must have rank 3 or more (batch, channels, spatial dims)")
        if win_args.global_pooling:
            axes = tuple(spatial_axes(x.ndim, order))
            if global_fn == "max":
                full = all(x.shape[a] for a in axes)
                return (x.max(axis=axes, keepdims=True) if full else _empty_global(x, axes),)
            y = x.mean(axis=axes, keepdims=True, dtype=None if np.issubdtype(x.dtype, np.inexact) else np.float64)
            return (y.astype(x.dtype, copy=False),)
        sp = tuple(x.shape[a] for a in spatial_axes(x.ndim, order))
        win = cache.get(sp)
        if win is None:
            win = cache[sp] = win_args.resolve(sp)
        return (reduce(x, win, order),)

    return run


def _empty_global(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    shape = [1 if a in axes else d for a, d in enumerate(x.shape)]
    return np.zeros(shape, dtype=x.dtype)


_POOL_DOC = (
    "{what} over windows of the spatial dims of X [N, C, *S] (NCHW) or [N, *S, C] (NHWC). Output size "
    "floor((S + pads - kernel) / stride) + 1, or ceil(...) with legacy_pad 3 (CAFFE_LEGACY_POOLING); "
    "windows are clipped to the input."
)


@register_op(
    "MaxPool",
    inputs=1,
    outputs=1,
    args=POOL_ARGS,
    infer=_pool_infer,
    doc=_POOL_DOC.format(what="Maximum"),
    input_names=("X",),
    output_names=("Y",),
    aliases=("MaxPool1D", "MaxPool2D", "MaxPool3D"),
)
def max_pool_op(op: OpInfo) -> Callable[..., Any]:
    return _make_pool(op, max_pool, "max")  # type: ignore[no-any-return]


@register_op(
    "AveragePool",
    inputs=1,
    outputs=1,
    args=(*POOL_ARGS, Arg("count_include_pad", 0, "divide by the full kernel size instead of the covered positions")),
    infer=_pool_infer,
    doc=_POOL_DOC.format(what="Mean"),
    input_names=("X",),
    output_names=("Y",),
    aliases=("AveragePool1D", "AveragePool2D", "AveragePool3D"),
)
def average_pool_op(op: OpInfo) -> Callable[..., Any]:
    include = op.bool_arg("count_include_pad")

    def reduce(x: np.ndarray, win: Window, order: str) -> np.ndarray:
        return average_pool(x, win, order, include)

    return _make_pool(op, reduce, "mean")  # type: ignore[no-any-return]
