"""Pooling: MaxPool and AveragePool (1-D/2-D/3-D aliases, global pooling, legacy padding)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._buffers import OutputBuffer
from asyncnet.ops._conv_util import (
    POOL_ARGS,
    Window,
    WindowArgs,
    lowest,
    spatial_axes,
    window_sums_to_means,
)
from asyncnet.ops._flat import FlatPool
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


def _clipped_taps(size: int, k: int, s: int, d: int, head: int, out: int) -> list[tuple[int, int, slice]]:
    """Per kernel tap along one dim: the outputs [lo, hi) whose tap lands inside the input, and the
    input slice feeding them. Padding never enters a max or a sum, so it is never materialized."""
    result = []
    for t in range(k):
        lo = max(-(-(head - t * d) // s), 0)
        hi = min(out, (size - 1 + head - t * d) // s + 1)
        if hi > lo:
            start = lo * s + t * d - head
            result.append((lo, hi, slice(start, start + (hi - lo - 1) * s + 1, s)))
    return result


def pool_reduce(
    x: np.ndarray, win: Window, order: str, combine: Any, fill: Any, out: np.ndarray | None = None
) -> np.ndarray:
    """Max or sum (``combine``) over every window, clipped to the input, one spatial dim at a time.

    Max and sum are separable, so k_h + k_w passes replace k_h * k_w; each pass combines whole
    tap slices (the loop is over taps, never over windows). Outputs that a tap does not reach
    (windows hanging over the border) simply skip it; ``fill`` only seeds outputs that no
    full-range tap covers. ``out`` (the final shape) receives the last pass.
    """
    axes = list(spatial_axes(x.ndim, order))
    y = x
    for i, ax in enumerate(axes):
        shape = list(y.shape)
        shape[ax] = win.out[i]
        last = i == len(axes) - 1
        acc = out if last and out is not None else np.empty(shape, dtype=y.dtype)
        tap_list = _clipped_taps(
            y.shape[ax], win.kernel[i], win.stride[i], win.dilation[i], win.pad_head[i], win.out[i]
        )
        full = [t for t in tap_list if t[0] == 0 and t[1] == win.out[i]]
        part = [t for t in tap_list if not (t[0] == 0 and t[1] == win.out[i])]
        pre: list[slice] = [slice(None)] * y.ndim

        def src(pos: slice, index: list[slice] = pre, axis: int = ax) -> tuple[slice, ...]:
            index[axis] = pos
            return tuple(index)

        if len(full) >= 2:
            combine(y[src(full[0][2])], y[src(full[1][2])], out=acc)
            rest = full[2:]
        elif full:
            np.copyto(acc, y[src(full[0][2])])
            rest = []
        else:
            acc.fill(fill)
            rest = []
        for _, _, sl in rest:
            combine(acc, y[src(sl)], out=acc)
        dst_index: list[slice] = [slice(None)] * y.ndim
        for lo, hi, sl in part:
            dst_index[ax] = slice(lo, hi)
            dst = acc[tuple(dst_index)]
            combine(dst, y[src(sl)], out=dst)
        y = acc
    return y


FlatCache = dict[tuple[tuple[int, ...], np.dtype[Any]], FlatPool]


def windows_reduce(
    x: np.ndarray, win: Window, order: str, combine: Any, fill: Any, out: np.ndarray | None, flats: FlatCache
) -> np.ndarray:
    """``pool_reduce``, or for stride-1 2-D NCHW float input the flat form (long inner loops).

    Measured against onnxruntime's MaxPool: the flat form wins at stride 1 (k_h + k_w passes of
    whole flat slices); at stride 2 its phase-split copies cost more than the strided passes save.
    """
    if order != "NCHW" or x.ndim != 4 or x.dtype.kind != "f" or win.stride != (1, 1):
        return pool_reduce(x, win, order, combine, fill, out)
    key = (x.shape, x.dtype)
    flat = flats.get(key)
    if flat is None:
        if len(flats) > 8:
            flats.clear()
        flat = flats[key] = FlatPool(x.shape, win, x.dtype, fill)
    y = out if out is not None else np.empty(flat.shape, dtype=x.dtype)
    flat.run(x, combine, y)
    return y


def _make_pool(
    op: OpInfo, reduce: Callable[[np.ndarray, Window, str, OutputBuffer], np.ndarray], global_fn: str
) -> Any:
    win_args = _window_args(op)
    order = win_args.order
    cache: dict[tuple[int, ...], Window] = {}
    buffer = OutputBuffer.for_output(op)

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        if x.ndim < 3:
            raise ArgumentError(f"X {x.shape} must have rank 3 or more (batch, channels, spatial dims)")
        axes = tuple(spatial_axes(x.ndim, order))
        if win_args.global_pooling:
            return (_whole_map(x, axes, global_fn),)
        sp = tuple(x.shape[a] for a in axes)
        win = cache.get(sp)
        if win is None:
            win = cache[sp] = win_args.resolve(sp)
        if _covers_whole_input(win, sp):
            # One window over the whole map (ResNet's 7x7 pool5) is global pooling.
            return (_whole_map(x, axes, global_fn),)
        return (reduce(x, win, order, buffer),)

    return run


def _whole_map(x: np.ndarray, axes: tuple[int, ...], fn: str) -> np.ndarray:
    """Max or mean over the spatial ``axes``; NCHW float means as one GEMV (numpy's reduction over
    49-value rows of a 7x7 map took 0.15 ms for ResNet's 2048 channels, the GEMV ~0.01 ms)."""
    if fn == "max":
        return x.max(axis=axes, keepdims=True) if all(x.shape[a] for a in axes) else _empty_global(x, axes)
    shape = tuple(1 if a in axes else d for a, d in enumerate(x.shape))
    k = int(np.prod([x.shape[a] for a in axes]))
    if x.dtype in (np.float32, np.float64) and axes == tuple(range(2, x.ndim)) and x.flags.c_contiguous and k:
        ones = np.full(k, 1.0 / k, dtype=x.dtype)
        sums: np.ndarray = np.matmul(x.reshape(-1, k), ones)
        return sums.reshape(shape)
    mean: np.ndarray = x.mean(
        axis=axes, keepdims=True, dtype=None if np.issubdtype(x.dtype, np.inexact) else np.float64
    )
    return mean.astype(x.dtype, copy=False)


def _covers_whole_input(win: Window, sp: tuple[int, ...]) -> bool:
    """One output per map whose window is exactly the (non-empty) input: no padding, kernel = size."""
    return (
        all(o == 1 for o in win.out)
        and tuple(win.kernel) == sp
        and all(d == 1 for d in win.dilation)
        and not any(win.pad_head)
        and not any(win.pad_tail)
        and all(sp)
    )


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
    flats: FlatCache = {}

    def reduce(x: np.ndarray, win: Window, order: str, buffer: OutputBuffer) -> np.ndarray:
        shape = _out_shape(x, win, order)
        if 0 in x.shape:
            return np.zeros(shape, dtype=x.dtype)
        return windows_reduce(x, win, order, np.maximum, lowest(x.dtype), buffer.take(shape, x.dtype), flats)

    return _make_pool(op, reduce, "max")  # type: ignore[no-any-return]


def _out_shape(x: np.ndarray, win: Window, order: str) -> tuple[int, ...]:
    if order == "NCHW":
        return (*x.shape[:2], *win.out)
    return (x.shape[0], *win.out, x.shape[-1])


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
    flats: FlatCache = {}

    def reduce(x: np.ndarray, win: Window, order: str, buffer: OutputBuffer) -> np.ndarray:
        shape = _out_shape(x, win, order)
        if 0 in x.shape:
            return np.zeros(shape, dtype=x.dtype)
        exact = np.issubdtype(x.dtype, np.inexact)
        work = x if exact else x.astype(np.float64)
        acc = windows_reduce(work, win, order, np.add, 0, buffer.take(shape, x.dtype) if exact else None, flats)
        return window_sums_to_means(acc, x, win, order, include)

    return _make_pool(op, reduce, "mean")  # type: ignore[no-any-return]
