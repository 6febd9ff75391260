"""Gradients of Conv, ConvTranspose, MaxPool, AveragePool (any spatial rank, NCHW or NHWC) and PadImage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._conv_util import (
    CONV_ARGS,
    ORDER_ARG,
    PAD_ARGS,
    POOL_ARGS,
    Window,
    WindowArgs,
    col2im,
    im2col,
    lowest,
    padded_for_windows,
    spatial_axes,
    tap_slices,
    taps,
    transpose_scatter_window,
    window_counts,
)
from asyncnet.ops.conv import CONV_TRANSPOSE_ARGS, _TransposeGeometry
from asyncnet.ops.image import _pad_image_pads, _pad_source_index
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

CONV_ALIASES = ("Conv1D", "Conv2D", "Conv3D")


def _to_nchw(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, -1, 1)


def _to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _grad_inputs_nchw(x: Any, w: Any, dy: Any, order: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X, filter and dY of a (transposed) conv gradient as NCHW arrays of one rank >= 3."""
    x, w, dy = np.asarray(x), np.asarray(w), np.asarray(dy)
    if order == "NHWC":
        x, w, dy = _to_nchw(x), _to_nchw(w), _to_nchw(dy)
    if x.ndim < 3 or w.ndim != x.ndim or dy.ndim != x.ndim:
        raise ArgumentError(f"X {x.shape}, filter {w.shape} and dY {dy.shape} must share a rank of at least 3")
    return x, w, dy


def _filter_grad_outputs(
    dw: np.ndarray,
    db: np.ndarray,
    dx: np.ndarray | None,
    order: str,
    w_dtype: np.dtype[Any],
    x_dtype: np.dtype[Any],
    no_bias: bool,
) -> tuple[np.ndarray, ...]:
    """(dW[, db][, dX]) back in the op's storage order and the dtypes of the filter and X."""
    if order == "NHWC":
        dw = _to_nhwc(dw)
        dx = None if dx is None else _to_nhwc(dx)
    outs: list[np.ndarray] = [dw.astype(w_dtype, copy=False)]
    if not no_bias:
        outs.append(db.astype(w_dtype, copy=False))
    if dx is not None:
        outs.append(dx.astype(x_dtype, copy=False))
    return tuple(outs)


def _conv_grad_maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    if len(op.input) not in (2, 3):
        raise ArgumentError(f"Conv takes 2 or 3 inputs, got {len(op.input)}")
    want_dx = not g.arg("no_gradient_to_input", 0)
    ins = [g.I(0), g.I(1), g.GO(0)]
    if len(op.input) == 3:
        outs = [g.GI(1), g.GI(2)] + ([g.GI(0)] if want_dx else [])
        return g.spec([g.op_def(f"{op.type}Gradient", ins, outs)])
    outs = [g.GI(1)] + ([g.GI(0)] if want_dx else [])
    # The forward arguments are copied onto the gradient op: a forward no_bias must not be doubled.
    extra = {} if g.has_arg("no_bias") else {"no_bias": 1}
    return g.spec([g.op_def(f"{op.type}Gradient", ins, outs, extra)])


for _t in ("Conv", *CONV_ALIASES):
    register_gradient(_t)(_conv_grad_maker)


def conv_backward(
    x: np.ndarray, w: np.ndarray, dy: np.ndarray, win: Window, group: int, want_dx: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dW, db, dX) of an NCHW convolution; dX is None unless ``want_dx``."""
    n, c = x.shape[:2]
    m = w.shape[0]
    p = int(np.prod(win.out, dtype=np.int64))
    cols = im2col(x, win, "NCHW", group)  # (N, G, Cg*K, P)
    dy_g = dy.reshape(n, group, m // group, p)
    dw = np.einsum("ngmp,ngkp->gmk", dy_g, cols, optimize=True).reshape(w.shape)
    db = dy.reshape(n, m, p).sum(axis=(0, 2))
    if not want_dx:
        return dw, db, None
    wmat = w.reshape(group, m // group, -1)
    dcols = np.matmul(wmat.transpose(0, 2, 1), dy_g)  # (N, G, Cg*K, P)
    dcols = dcols.reshape(n, c, *win.kernel, *win.out)
    dx = col2im(dcols, win, "NCHW", x.shape[2:])
    return dw, db, dx


def _conv_grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, w = ins[0], ins[1]
    no_bias = op.bool_arg("no_bias", 0)
    db = TensorInfo(None if w.shape is None else (w.shape[0],), w.dtype)
    out = [w] + ([] if no_bias else [db]) + [x]
    return out[: len(op.outputs)]


def _conv_transpose_grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    # The bias gradient has one value per output channel: dY's channel dim (the filter holds
    # Cout / group in NCHW and sits last in NHWC, so it cannot give it directly).
    x, w, dy = ins[0], ins[1], ins[2]
    no_bias = op.bool_arg("no_bias", 0)
    ch: int | None = None
    if dy.shape:
        ch = dy.shape[-1] if op.str_arg("order", "NCHW") == "NHWC" else dy.shape[1] if len(dy.shape) > 1 else None
    db = TensorInfo((ch,), w.dtype)
    out = [w] + ([] if no_bias else [db]) + [x]
    return out[: len(op.outputs)]


@register_op(
    "ConvGradient",
    inputs=3,
    outputs=(1, 3),
    args=(*CONV_ARGS, Arg("no_bias", 0, "the forward Conv had no bias: outputs are dW, [dX]")),
    infer=_conv_grad_infer,
    doc="Conv gradient: inputs X, filter, dY; outputs dfilter, dbias (unless no_bias), [dX].",
    input_names=("X", "filter", "dY"),
    output_names=("dfilter", "dbias", "dX"),
    aliases=tuple(f"{a}Gradient" for a in CONV_ALIASES),
)
def conv_gradient(op: OpInfo) -> Callable[..., Any]:
    win_args = WindowArgs.parse(op)
    group = op.int_arg("group")
    order = win_args.order
    no_bias = op.bool_arg("no_bias", 0)
    want_dx = len(op.outputs) == (2 if no_bias else 3)

    def run(x: Any, w: Any, dy: Any) -> tuple[np.ndarray, ...]:
        x, w, dy = _grad_inputs_nchw(x, w, dy, order)
        if w.shape[1] * group != x.shape[1]:
            raise ArgumentError(f"X has {x.shape[1]} channels but filter {w.shape} with group {group} takes more")
        win = win_args.resolve(x.shape[2:], w.shape[2:])
        if tuple(dy.shape) != (x.shape[0], w.shape[0], *win.out):
            raise ArgumentError(f"dY {dy.shape} does not match the conv output {(x.shape[0], w.shape[0], *win.out)}")
        dw, db, dx = conv_backward(x, w, dy, win, group, want_dx)
        return _filter_grad_outputs(dw, db, dx, order, w.dtype, x.dtype, no_bias)

    return run


# ---------------------------------------------------------------------------
# Pooling


def _pool_grad_maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def(f"{op.type}Gradient", [g.I(0), g.O(0), g.GO(0)], [g.GI(0)])])


def _scatter(
    shape: tuple[int, ...], win: Window, order: str, pieces: Callable[[tuple[int, ...]], np.ndarray], dtype: Any
) -> np.ndarray:
    """Sum each tap's per-window contribution back into an input of ``shape`` (windows clipped to it)."""
    sp = [shape[a] for a in spatial_axes(len(shape), order)]
    buf_shape = list(shape)
    axes = list(spatial_axes(len(shape), order))
    for i, ax in enumerate(axes):
        tail = max(win.pad_tail[i], (win.out[i] - 1) * win.stride[i] + win.dkernel[i] - sp[i] - win.pad_head[i], 0)
        buf_shape[ax] = win.pad_head[i] + sp[i] + tail
    buf = np.zeros(buf_shape, dtype=dtype)
    for tap in taps(win.kernel):
        buf[tap_slices(win, tap, buf.ndim, order)] += pieces(tap)
    index: list[slice] = [slice(None)] * buf.ndim
    for i, ax in enumerate(axes):
        index[ax] = slice(win.pad_head[i], win.pad_head[i] + sp[i])
    return buf[tuple(index)]


def _pool_grad_factory(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        win_args = WindowArgs.parse(op, pooling=True)
        order = win_args.order
        include = kind == "avg" and op.bool_arg("count_include_pad", 0)

        def run(x: Any, y: Any, dy: Any) -> tuple[np.ndarray]:
            x, y, dy = np.asarray(x), np.asarray(y), np.asarray(dy)
            if x.ndim < 3:
                raise ArgumentError(f"X {x.shape} must have rank 3 or more")
            sp = [x.shape[a] for a in spatial_axes(x.ndim, order)]
            win = win_args.resolve(sp)
            if dy.shape != y.shape:
                raise ArgumentError(f"dY {dy.shape} and Y {y.shape} must have one shape")
            work = np.float64 if not np.issubdtype(x.dtype, np.inexact) else x.dtype
            if kind == "max":
                xp = padded_for_windows(x, win, order, lowest(x.dtype))

                def piece(tap: tuple[int, ...]) -> np.ndarray:
                    return np.where(xp[tap_slices(win, tap, xp.ndim, order)] == y, dy, 0).astype(work, copy=False)

            else:
                if include:
                    scaled = np.asarray(dy.astype(work) / float(np.prod(win.kernel)))
                else:
                    counts = window_counts(sp, win)
                    denom = counts[0].astype(np.float64)
                    for c in counts[1:]:
                        denom = np.multiply.outer(denom, c)
                    shape = (1, 1, *denom.shape) if order == "NCHW" else (1, *denom.shape, 1)
                    scaled = np.asarray(dy.astype(work) / denom.reshape(shape).astype(work))

                def piece(tap: tuple[int, ...]) -> np.ndarray:
                    return scaled

            return (_scatter(x.shape, win, order, piece, work).astype(x.dtype, copy=False),)

        return run

    return factory


for _fwd, _kind, _extra in (
    ("MaxPool", "max", ()),
    ("AveragePool", "avg", (Arg("count_include_pad", 0, "the forward count_include_pad"),)),
):
    for _suffix in ("", "1D", "2D", "3D"):
        register_gradient(f"{_fwd}{_suffix}")(_pool_grad_maker)
    register_op(
        f"{_fwd}Gradient",
        inputs=3,
        outputs=1,
        args=(*POOL_ARGS, *_extra),
        infer=lambda op, ins: [ins[0]],
        doc=f"{_fwd} gradient: inputs X, Y, dY; output dX"
        + (
            " (every window position equal to the max gets dY)." if _kind == "max" else " (dY spread over each window)."
        ),
        input_names=("X", "Y", "dY"),
        output_names=("dX",),
        aliases=tuple(f"{_fwd}{s}Gradient" for s in ("1D", "2D", "3D")),
    )(_pool_grad_factory(_kind))


# ---------------------------------------------------------------------------
# PadImage


@register_gradient("PadImage")
def _pad_image_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("PadImageGradient", [g.GO(0)], [g.GI(0)])])


@register_op(
    "PadImageGradient",
    inputs=1,
    outputs=1,
    args=(
        *PAD_ARGS,
        ORDER_ARG,
        Arg("mode", "constant", "the forward mode: constant, reflect or edge"),
        Arg("value", 0.0, "the forward fill value (unused)"),
    ),
    infer=lambda op, ins: [TensorInfo(None if ins[0].shape is None else (None,) * len(ins[0].shape), ins[0].dtype)],
    doc="Gradient of PadImage: every padded position's dY is added to the input position it copied "
    "(constant padding drops it).",
    input_names=("dY",),
    output_names=("dX",),
)
def pad_image_gradient(op: OpInfo) -> Callable[..., Any]:
    win = WindowArgs.parse(op)
    order = win.order
    mode = op.str_arg("mode").lower()
    if mode not in ("constant", "reflect", "edge"):
        raise ArgumentError(f"{op.label()}: mode must be constant, reflect or edge, got '{mode}'")

    def run(dy: Any) -> tuple[np.ndarray]:
        dy = np.asarray(dy)
        if dy.ndim < 3:
            raise ArgumentError(f"dY {dy.shape} needs rank 3 or more")
        axes = list(spatial_axes(dy.ndim, order))
        head, tail = _pad_image_pads(op, win, len(axes))
        dx = dy
        for i, ax in enumerate(axes):
            size = dy.shape[ax] - head[i] - tail[i]
            if size <= 0:
                raise ArgumentError(f"dY {dy.shape} is smaller than pads {head[i]} + {tail[i]} along spatial dim {i}")
            src, inside = _pad_source_index(size, head[i], tail[i], mode)
            # Adjoint of "take src along ax": a one-hot (out x in) matrix, masked where the fill value was used.
            adj = np.zeros((len(src), size), dtype=dx.dtype)
            adj[np.arange(len(src)), src] = 1 if inside is None else inside
            dx = np.moveaxis(np.tensordot(np.moveaxis(dx, ax, -1), adj, axes=([-1], [0])), -1, ax)
        return (np.ascontiguousarray(dx, dtype=dy.dtype),)

    return run


# ---------------------------------------------------------------------------
# ConvTranspose


def _conv_transpose_grad_maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    if len(op.input) not in (2, 3):
        raise ArgumentError(f"ConvTranspose takes 2 or 3 inputs, got {len(op.input)}")
    want_dx = not g.arg("no_gradient_to_input", 0)
    ins = [g.I(0), g.I(1), g.GO(0)]
    if len(op.input) == 3:
        outs = [g.GI(1), g.GI(2)] + ([g.GI(0)] if want_dx else [])
        return g.spec([g.op_def("ConvTransposeGradient", ins, outs)])
    outs = [g.GI(1)] + ([g.GI(0)] if want_dx else [])
    extra = {} if g.has_arg("no_bias") else {"no_bias": 1}
    return g.spec([g.op_def("ConvTransposeGradient", ins, outs, extra)])


register_gradient("ConvTranspose")(_conv_transpose_grad_maker)


def conv_transpose_backward(
    x: np.ndarray, w: np.ndarray, dy: np.ndarray, win: Window, group: int, want_dx: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dW, db, dX) of an NCHW transposed convolution whose scatter window is ``win`` (out = X's grid)."""
    n, cin = x.shape[:2]
    cout = dy.shape[1]
    p = int(np.prod(win.out, dtype=np.int64))
    # The transposed conv scatters columns into Y; its adjoint gathers them back: im2col of dY.
    dcols = im2col(dy, win, "NCHW", group)  # (N, G, Cout/G * K, P)
    xg = x.reshape(n, group, cin // group, p)
    dw = np.einsum("ngip,ngkp->gik", xg, dcols, optimize=True).reshape(w.shape)
    db = dy.reshape(n, cout, int(np.prod(dy.shape[2:], dtype=np.int64))).sum(axis=(0, 2))  # n may be 0
    if not want_dx:
        return dw, db, None
    wg = w.reshape(group, cin // group, -1)
    dx = np.matmul(wg, dcols).reshape(x.shape)
    return dw, db, dx


@register_op(
    "ConvTransposeGradient",
    inputs=3,
    outputs=(1, 3),
    args=(*CONV_TRANSPOSE_ARGS, Arg("no_bias", 0, "the forward op had no bias: outputs are dW, [dX]")),
    infer=_conv_transpose_grad_infer,
    doc="ConvTranspose gradient: inputs X, filter, dY; outputs dfilter, dbias (unless no_bias), [dX].",
    input_names=("X", "filter", "dY"),
    output_names=("dfilter", "dbias", "dX"),
)
def conv_transpose_gradient(op: OpInfo) -> Callable[..., Any]:
    geo = _TransposeGeometry(op)
    group = op.int_arg("group")
    order = geo.win.order
    no_bias = op.bool_arg("no_bias", 0)
    want_dx = len(op.outputs) == (2 if no_bias else 3)

    def run(x: Any, w: Any, dy: Any) -> tuple[np.ndarray, ...]:
        x, w, dy = _grad_inputs_nchw(x, w, dy, order)
        if w.shape[0] != x.shape[1] or x.shape[1] % group:
            raise ArgumentError(f"filter {w.shape} does not fit X {x.shape} with group {group}")
        in_sp = tuple(x.shape[2:])
        kernel, stride, head, out = geo.resolve(in_sp, tuple(w.shape[2:]))
        if tuple(dy.shape) != (x.shape[0], w.shape[1] * group, *out):
            raise ArgumentError(f"dY {dy.shape} does not match the output {(x.shape[0], w.shape[1] * group, *out)}")
        win = transpose_scatter_window(kernel, stride, head, in_sp, out)
        dw, db, dx = conv_transpose_backward(x, w, dy, win, group, want_dx)
        return _filter_grad_outputs(dw, db, dx, order, w.dtype, x.dtype, no_bias)

    return run
