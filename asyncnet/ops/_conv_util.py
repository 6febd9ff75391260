"""Numeric window kernels shared by convolution, pooling and padding ops (and their gradients).

The helpers work on any number of spatial dims, in either storage order:
``window_view`` builds a strided (copy-free) view of every kernel window,
``im2col``/``col2im`` convert between images and GEMM columns, ``conv_forward`` and
``conv_transpose_forward`` are the kernels behind Conv and ConvTranspose.

Gradients reuse the same pieces: for Conv, dW = dY x im2col(X)^T and dX = col2im(W^T x dY)
(``col2im`` is the exact adjoint of ``window_view``); AveragePool's dX is ``col2im`` of dY
divided by ``window_counts`` and broadcast over the kernel; MaxPool's dX routes dY through
the tap (``tap_slices``) that held the maximum.

Window geometry and argument parsing (:class:`Window`, :class:`WindowArgs`, the ``*_ARGS``
schema tuples, ``compute_size_and_pad``) live in :mod:`asyncnet.ops._window` and are
re-exported here, because op modules import them from this module.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from asyncnet.ops._window import (
    CAFFE_LEGACY_POOLING,
    CONV_ARGS,
    DILATION_ARGS,
    KERNEL_ARGS,
    LEGACY_PAD_ARG,
    LEGACY_PAD_NAMES,
    NOTSET,
    ORDER_ARG,
    PAD_ARGS,
    POOL_ARGS,
    SAME,
    STRIDE_ARGS,
    TUNING_ARGS,
    VALID,
    Dims,
    Window,
    WindowArgs,
    compute_size_and_pad,
)

__all__ = [
    "CAFFE_LEGACY_POOLING",
    "CONV_ARGS",
    "DILATION_ARGS",
    "KERNEL_ARGS",
    "LEGACY_PAD_ARG",
    "LEGACY_PAD_NAMES",
    "NOTSET",
    "ORDER_ARG",
    "PAD_ARGS",
    "POOL_ARGS",
    "SAME",
    "STRIDE_ARGS",
    "TUNING_ARGS",
    "VALID",
    "Dims",
    "Window",
    "WindowArgs",
    "average_pool",
    "col2im",
    "compute_size_and_pad",
    "conv_forward",
    "conv_transpose_forward",
    "depthwise_conv",
    "im2col",
    "lowest",
    "max_pool",
    "pad_spatial",
    "padded_for_windows",
    "spatial_axes",
    "tap_slices",
    "taps",
    "transpose_scatter_window",
    "window_counts",
    "window_view",
]


# ---------------------------------------------------------------------------
# Array helpers


def spatial_axes(ndim: int, order: str) -> range:
    """Axes holding spatial dims for an array of rank ``ndim``."""
    return range(2, ndim) if order == "NCHW" else range(1, ndim - 1)


def pad_spatial(x: np.ndarray, head: Sequence[int], tail: Sequence[int], order: str, value: Any = 0) -> np.ndarray:
    """Pad the spatial dims (non-negative pads) with a constant; no copy when nothing is padded."""
    if not any(head) and not any(tail):
        return x
    axes = spatial_axes(x.ndim, order)
    shape = list(x.shape)
    index: list[slice] = [slice(None)] * x.ndim
    for i, ax in enumerate(axes):
        shape[ax] += head[i] + tail[i]
        index[ax] = slice(head[i], head[i] + x.shape[ax])
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(index)] = x
    return out


def window_view(xp: np.ndarray, win: Window, order: str, *, kernel_first: bool) -> np.ndarray:
    """A strided view of every (dilated, strided) window of a padded input; no copy.

    NCHW input gives ``(N, C, *kernel, *out)`` when ``kernel_first`` else ``(N, C, *out, *kernel)``;
    NHWC input gives ``(N, *out, *kernel, C)`` (``kernel_first`` is ignored).
    """
    axes = list(spatial_axes(xp.ndim, order))
    st = xp.strides
    k_shape = list(win.kernel)
    k_strides = [st[a] * d for a, d in zip(axes, win.dilation)]
    o_shape = list(win.out)
    o_strides = [st[a] * s for a, s in zip(axes, win.stride)]
    if order == "NCHW":
        lead_shape, lead_strides = list(xp.shape[:2]), list(st[:2])
        if kernel_first:
            shape, strides = lead_shape + k_shape + o_shape, lead_strides + k_strides + o_strides
        else:
            shape, strides = lead_shape + o_shape + k_shape, lead_strides + o_strides + k_strides
    else:
        shape = [xp.shape[0]] + o_shape + k_shape + [xp.shape[-1]]
        strides = [st[0]] + o_strides + k_strides + [st[-1]]
    return as_strided(xp, shape=tuple(shape), strides=tuple(strides), writeable=False)


def tap_slices(win: Window, tap: Sequence[int], ndim: int, order: str) -> tuple[slice, ...]:
    """Index of a padded input selecting, for kernel position ``tap``, the element of every window."""
    index: list[slice] = [slice(None)] * ndim
    for i, ax in enumerate(spatial_axes(ndim, order)):
        start = tap[i] * win.dilation[i]
        index[ax] = slice(start, start + win.stride[i] * (win.out[i] - 1) + 1, win.stride[i])
    return tuple(index)


def taps(kernel: Sequence[int]) -> itertools.product[tuple[int, ...]]:
    """Every kernel position (the loop over taps is short; pixels stay vectorized)."""
    return itertools.product(*(range(k) for k in kernel))


def _full_tail(x_spatial: Sequence[int], win: Window) -> Dims:
    """Tail pads large enough for every window (Caffe2 clips windows that run past the input)."""
    return tuple(
        max(win.pad_tail[i], (win.out[i] - 1) * win.stride[i] + win.dkernel[i] - x_spatial[i] - win.pad_head[i], 0)
        for i in range(len(x_spatial))
    )


def padded_for_windows(x: np.ndarray, win: Window, order: str, value: Any = 0) -> np.ndarray:
    """``x`` padded at the heads and as far at the tails as the windows reach."""
    sp = [x.shape[a] for a in spatial_axes(x.ndim, order)]
    return pad_spatial(x, win.pad_head, _full_tail(sp, win), order, value)


# ---------------------------------------------------------------------------
# Convolution


def im2col(x: np.ndarray, win: Window, order: str, group: int = 1) -> np.ndarray:
    """GEMM columns of ``x`` (a contiguous copy unless the conv is pointwise).

    NCHW: ``(N, G, C/G * prod(kernel), prod(out))`` rows ordered (channel, *kernel).
    NHWC: ``(G, N * prod(out), prod(kernel) * C/G)`` columns ordered (*kernel, channel).
    """
    n = x.shape[0]
    p = int(np.prod(win.out, dtype=np.int64))
    kk = int(np.prod(win.kernel, dtype=np.int64))
    if order == "NCHW":
        c = x.shape[1]
        if win.is_pointwise:
            return x.reshape(n, group, c // group, p)
        view = window_view(padded_for_windows(x, win, order), win, order, kernel_first=True)
        return view.reshape(n, group, (c // group) * kk, p)
    c = x.shape[-1]
    cg = c // group
    if group == 1:
        if win.is_pointwise:
            return x.reshape(1, n * p, c)
        return window_view(padded_for_windows(x, win, order), win, order, kernel_first=False).reshape(1, n * p, kk * c)
    view = window_view(padded_for_windows(x, win, order), win, order, kernel_first=False)
    # (N, *out, *k, C) -> (G, N, *out, *k, C/G): split channels, move the group axis first.
    split = view.reshape(*view.shape[:-1], group, cg)
    return np.moveaxis(split, -2, 0).reshape(group, n * p, kk * cg)


def depthwise_conv(x: np.ndarray, w: np.ndarray, win: Window, order: str) -> np.ndarray:
    """Conv with one filter per input channel (group == C == M): a multiply-add per kernel tap.

    Channels-last grouped GEMMs are tiny and strided; summing over the few taps is faster.
    """
    xp = padded_for_windows(x, win, order)
    c = w.shape[0]
    nd = len(win.kernel)
    wk = w.reshape(c, *win.kernel)
    bshape = (1, c) + (1,) * nd if order == "NCHW" else (1,) * (nd + 1) + (c,)
    dtype = np.result_type(x.dtype, w.dtype)
    acc: np.ndarray | None = None
    for tap in taps(win.kernel):
        term = xp[tap_slices(win, tap, xp.ndim, order)] * wk[(slice(None),) + tuple(tap)].reshape(bshape)
        if acc is None:
            acc = term.astype(dtype, copy=False)
        else:
            acc += term
    assert acc is not None  # kernels have at least one tap
    return acc


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window, order: str, group: int) -> np.ndarray:
    """Caffe2 Conv: ``x`` [N, C, *S] (NCHW) or [N, *S, C] (NHWC), filter [M, C/G, *k] or [M, *k, C/G]."""
    n = x.shape[0]
    m = w.shape[0]
    dtype = np.result_type(x.dtype, w.dtype)
    kk = int(np.prod(win.kernel, dtype=np.int64))
    if order == "NCHW":
        cols = im2col(x, win, order, group)  # (N, G, K, P)
        wmat = w.reshape(group, m // group, -1)
        y = np.matmul(wmat, cols).reshape(n, m, *win.out)
        if b is not None:
            y += b.reshape((1, m) + (1,) * len(win.out)).astype(dtype, copy=False)
        out: np.ndarray = y.astype(dtype, copy=False)
        return out
    cg = x.shape[-1] // group
    if group > 1 and cg == 1 and m == group:
        y = depthwise_conv(x, w, win, order)
        if b is not None:
            y += b.reshape(m).astype(dtype, copy=False)
        return np.ascontiguousarray(y, dtype=dtype)
    cols = im2col(x, win, order, group)  # (G, N*P, K*Cg)
    wmat = w.reshape(group, m // group, kk * cg)
    if group == 1:
        y = cols[0] @ wmat[0].T
    else:
        y = np.matmul(cols, wmat.transpose(0, 2, 1)).transpose(1, 0, 2)
    y = y.reshape(n, *win.out, m)
    if b is not None:
        y += b.reshape(m).astype(dtype, copy=False)
    return np.ascontiguousarray(y, dtype=dtype)


def col2im(cols: np.ndarray, win: Window, order: str, out_spatial: Sequence[int], *, crop: bool = True) -> np.ndarray:
    """Scatter-add window columns back into an image (the adjoint of ``window_view``).

    ``cols`` is ``(N, C, *kernel, *win.out)`` (NCHW) or ``(N, *win.out, *kernel, C)`` (NHWC).
    The result has spatial dims ``out_spatial`` (the unpadded image) when ``crop``,
    else the padded extent.
    """
    nd = len(win.kernel)
    full = [h + s + t for h, s, t in zip(win.pad_head, out_spatial, _full_tail(out_spatial, win))]
    if order == "NCHW":
        n, c = cols.shape[:2]
        buf = np.zeros((n, c, *full), dtype=cols.dtype)
    else:
        n, c = cols.shape[0], cols.shape[-1]
        buf = np.zeros((n, *full, c), dtype=cols.dtype)
    for tap in taps(win.kernel):
        index = tap_slices(win, tap, buf.ndim, order)
        if order == "NCHW":
            src = cols[(slice(None), slice(None)) + tuple(tap)]
        else:
            src = cols[(slice(None),) + (slice(None),) * nd + tuple(tap)]
        buf[index] += src
    if not crop:
        return buf
    index_l: list[slice] = [slice(None)] * buf.ndim
    for i, ax in enumerate(spatial_axes(buf.ndim, order)):
        index_l[ax] = slice(win.pad_head[i], win.pad_head[i] + out_spatial[i])
    return buf[tuple(index_l)]


def transpose_scatter_window(
    kernel: Sequence[int],
    stride: Sequence[int],
    pad_head: Sequence[int],
    in_spatial: Sequence[int],
    out_spatial: Sequence[int],
) -> Window:
    """The window that expresses a ConvTranspose scatter as ``col2im``: its "output" is the input grid.

    The tail pad covers whatever part of ``out_spatial`` (which includes pads and adj) the
    scattered windows do not reach.
    """
    tail = tuple(
        max(o + h - ((i - 1) * s + k), 0) for o, h, i, s, k in zip(out_spatial, pad_head, in_spatial, stride, kernel)
    )
    return Window(tuple(kernel), tuple(stride), (1,) * len(kernel), tuple(pad_head), tail, tuple(in_spatial))


def conv_transpose_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    kernel: Sequence[int],
    stride: Sequence[int],
    pad_head: Sequence[int],
    out_spatial: Sequence[int],
    order: str,
    group: int,
) -> np.ndarray:
    """Caffe2 ConvTranspose: filter [C_in, C_out/G, *k] (NCHW) or [C_in, *k, C_out/G] (NHWC).

    One GEMM per group gives every kernel tap's contribution; ``col2im`` sums them into
    the output, whose spatial size ``out_spatial`` already accounts for pads and adj.
    """
    n = x.shape[0]
    nd = len(kernel)
    dtype = np.result_type(x.dtype, w.dtype)
    kk = int(np.prod(kernel, dtype=np.int64))
    cin = w.shape[0]
    cout_g = w.shape[1] if order == "NCHW" else w.shape[-1]
    cout = cout_g * group
    in_sp = tuple(x.shape[2:]) if order == "NCHW" else tuple(x.shape[1:-1])
    p = int(np.prod(in_sp, dtype=np.int64))
    win = transpose_scatter_window(kernel, stride, pad_head, in_sp, out_spatial)
    if order == "NCHW":
        xg = x.reshape(n, group, cin // group, p)
        wg = w.reshape(group, cin // group, cout_g * kk)
        cols = np.matmul(wg.transpose(0, 2, 1), xg)  # (N, G, Cout/G * K, P)
        cols = cols.reshape(n, cout, *kernel, *in_sp)
    else:
        xg = x.reshape(n * p, group, cin // group).transpose(1, 0, 2)
        wg = w.reshape(group, cin // group, kk * cout_g)
        cols = np.matmul(xg, wg)  # (G, N*P, K*Cout/G)
        cols = cols.reshape(group, n, *in_sp, *kernel, cout_g)
        cols = np.moveaxis(cols, 0, -2).reshape(n, *in_sp, *kernel, cout)
    y = col2im(cols.astype(dtype, copy=False), win, order, out_spatial)
    if b is not None:
        shape = (1, cout) + (1,) * nd if order == "NCHW" else (cout,)
        y = y + b.reshape(shape).astype(dtype, copy=False)
    return np.ascontiguousarray(y, dtype=dtype)


# ---------------------------------------------------------------------------
# Pooling


def window_counts(x_spatial: Sequence[int], win: Window) -> list[np.ndarray]:
    """Per spatial dim: how many input positions each output window covers (Caffe2 clips at the input)."""
    counts = []
    for i, size in enumerate(x_spatial):
        start = np.arange(win.out[i]) * win.stride[i] - win.pad_head[i]
        end = np.minimum(start + win.kernel[i], size)
        counts.append(end - np.maximum(start, 0))
    return counts


def lowest(dtype: np.dtype[Any]) -> Any:
    """The smallest finite value of a dtype (Caffe2 starts max pooling there)."""
    if np.issubdtype(dtype, np.floating):
        return np.finfo(dtype).min
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).min
    return False


def _separable_reduce(xp: np.ndarray, win: Window, order: str, combine: Any) -> np.ndarray:
    """Reduce every window of a padded input one spatial dim at a time (max and sum are separable):
    k_h + k_w passes over shrinking arrays instead of k_h * k_w passes."""
    y = xp
    for i, ax in enumerate(spatial_axes(xp.ndim, order)):
        acc: np.ndarray | None = None
        index: list[slice] = [slice(None)] * xp.ndim
        for t in range(win.kernel[i]):
            start = t * win.dilation[i]
            index[ax] = slice(start, start + win.stride[i] * (win.out[i] - 1) + 1, win.stride[i])
            sl = y[tuple(index)]
            if acc is None:
                acc = sl.copy()
            else:
                combine(acc, sl, out=acc)
        assert acc is not None  # kernels have at least one tap
        y = acc
    return y


def max_pool(x: np.ndarray, win: Window, order: str) -> np.ndarray:
    """Max over each window; padding never wins (windows are clipped to the input)."""
    return _separable_reduce(padded_for_windows(x, win, order, lowest(x.dtype)), win, order, np.maximum)


def average_pool(x: np.ndarray, win: Window, order: str, count_include_pad: bool) -> np.ndarray:
    """Mean over each window: divided by the full kernel size or by the positions inside the input."""
    work = x if np.issubdtype(x.dtype, np.inexact) else x.astype(np.float64)
    acc = _separable_reduce(padded_for_windows(work, win, order, 0), win, order, np.add)
    return window_sums_to_means(acc, x, win, order, count_include_pad)


def window_sums_to_means(
    acc: np.ndarray, x: np.ndarray, win: Window, order: str, count_include_pad: bool
) -> np.ndarray:
    """Window sums ``acc`` of ``x`` divided (in place) into means, returned in ``x``'s dtype.

    Divides by the full kernel size, or by the number of positions of each window
    that lie inside the input.
    """
    if count_include_pad:
        acc *= acc.dtype.type(1.0 / float(np.prod(win.kernel)))
    else:
        sp = [x.shape[a] for a in spatial_axes(x.ndim, order)]
        counts = window_counts(sp, win)
        denom = counts[0].astype(np.float64)
        for c in counts[1:]:
            denom = np.multiply.outer(denom, c)
        shape = (1, 1, *denom.shape) if order == "NCHW" else (1, *denom.shape, 1)
        # Division by zero cannot happen: legal windows always overlap the input.
        acc /= denom.reshape(shape).astype(acc.dtype)
    return acc.astype(x.dtype, copy=False)
