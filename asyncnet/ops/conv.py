"""Convolutions: Conv (1-D/2-D/3-D, groups, dilation, NCHW/NHWC) and ConvTranspose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._buffers import OutputBuffer
from asyncnet.ops._conv_fast import ConvPlan
from asyncnet.ops._conv_util import (
    CONV_ARGS,
    KERNEL_ARGS,
    LEGACY_PAD_ARG,
    NOTSET,
    ORDER_ARG,
    PAD_ARGS,
    SAME,
    STRIDE_ARGS,
    TUNING_ARGS,
    VALID,
    WindowArgs,
    conv_transpose_forward,
)
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

# ---------------------------------------------------------------------------
# Conv


def _out_dtype(x: TensorInfo, w: TensorInfo) -> np.dtype[Any] | None:
    """The kernels compute in numpy's promotion of the input and filter dtypes."""
    if x.dtype is None or w.dtype is None:
        return x.dtype
    return np.result_type(x.dtype, w.dtype)


def _filter_kernel(w_shape: tuple[Any, ...], order: str) -> tuple[Any, ...]:
    return tuple(w_shape[2:]) if order == "NCHW" else tuple(w_shape[1:-1])


def _conv_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, w = ins[0], ins[1]
    dtype = _out_dtype(x, w)
    if x.shape is None or len(x.shape) < 3:
        return [TensorInfo(None, dtype)]
    win = WindowArgs.parse(op)
    m = w.shape[0] if w.shape is not None else None
    fk = _filter_kernel(w.shape, win.order) if w.shape is not None else None
    if w.shape is not None and len(w.shape) != len(x.shape):
        raise ShapeInferenceError(f"{op.label()}: X {x} and filter {w} must have the same rank")
    group = op.int_arg("group")
    c = win.channels(x.shape)
    if w.shape is not None and c is not None:
        cg = w.shape[1] if win.order == "NCHW" else w.shape[-1]
        if cg is not None and cg * group != c:
            raise ShapeInferenceError(
                f"{op.label()}: X has {c} channels but filter {w} with group {group} takes {cg * group}"
            )
    sp = win.infer_spatial(win.spatial_shape(x.shape), fk)
    out = (x.shape[0], m, *sp) if win.order == "NCHW" else (x.shape[0], *sp, m)
    return [TensorInfo(out, dtype)]


@register_op(
    "Conv",
    inputs=(2, 3),
    outputs=1,
    args=CONV_ARGS,
    infer=_conv_infer,
    doc=(
        "N-D convolution (cross-correlation) of X [N, C, *S] (NCHW) or [N, *S, C] (NHWC) with filter "
        "[M, C/group, *k] (NCHW) or [M, *k, C/group] (NHWC), plus optional bias [M]."
    ),
    input_names=("X", "filter", "bias"),
    output_names=("Y",),
    aliases=("Conv1D", "Conv2D", "Conv3D"),
)
def conv(op: OpInfo) -> Callable[..., Any]:
    win_args = WindowArgs.parse(op)
    group = op.int_arg("group")
    if group < 1:
        raise ArgumentError(f"{op.label()}: group must be positive, got {group}")
    order = win_args.order
    plans: dict[tuple[tuple[int, ...], tuple[int, ...], np.dtype[Any]], ConvPlan] = {}
    out = OutputBuffer.for_output(op)

    def run(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray]:
        plan = plans.get((x.shape, w.shape, x.dtype))
        if plan is not None and (b is None or b.size == plan.m):
            return (plan.run(x, w, b, out),)
        if x.ndim < 3 or w.ndim != x.ndim:
            raise ArgumentError(f"X {x.shape} and filter {w.shape} must have the same rank, at least 3")
        c = x.shape[1] if order == "NCHW" else x.shape[-1]
        m = w.shape[0]
        cg = w.shape[1] if order == "NCHW" else w.shape[-1]
        if cg * group != c:
            raise ArgumentError(f"X has {c} channels but filter {w.shape} with group {group} takes {cg * group}")
        if m % group:
            raise ArgumentError(f"filter has {m} output channels, not divisible by group {group}")
        if b is not None and b.size != m:
            raise ArgumentError(f"bias has {b.size} values, the filter gives {m} output channels")
        sp = tuple(x.shape[2:]) if order == "NCHW" else tuple(x.shape[1:-1])
        fk = tuple(w.shape[2:]) if order == "NCHW" else tuple(w.shape[1:-1])
        win = win_args.resolve(sp, fk)
        plan = ConvPlan(x.shape, w.shape, np.result_type(x.dtype, w.dtype), win, order, group)
        if len(plans) > 8:
            plans.clear()  # shapes keep changing: do not grow without bound
        plans[(x.shape, w.shape, x.dtype)] = plan
        return (plan.run(x, w, b, out),)

    return run


# ---------------------------------------------------------------------------
# ConvTranspose

CONV_TRANSPOSE_ARGS: tuple[Arg, ...] = (
    *KERNEL_ARGS,
    *STRIDE_ARGS,
    *PAD_ARGS,
    Arg("adj", None, "extra output size at the tail of every spatial dim (< stride)"),
    Arg("adjs", None, "extra output size per spatial dim"),
    Arg("adj_h", None, "extra output height (2-D; with adj_w)"),
    Arg("adj_w", None, "extra output width (2-D; with adj_h)"),
    LEGACY_PAD_ARG,
    ORDER_ARG,
    Arg("group", 1, "number of channel groups"),
    *TUNING_ARGS,
)


class _TransposeGeometry:
    """ConvTranspose window arguments: output = (in - 1) * stride + kernel + adj - pads."""

    def __init__(self, op: OpInfo) -> None:
        self.win = WindowArgs.parse(op, dilation=False)
        if self.win.legacy_pad not in (NOTSET, VALID, SAME):
            raise ArgumentError(f"{op.label()}: ConvTranspose does not support legacy_pad CAFFE_LEGACY_POOLING")
        adj: Any = None
        if op.has("adjs"):
            adj = tuple(op.ints_arg("adjs"))
        elif op.has("adj"):
            adj = op.int_arg("adj")
        elif op.has("adj_h") or op.has("adj_w"):
            if not (op.has("adj_h") and op.has("adj_w")):
                raise ArgumentError(f"{op.label()}: adj_h and adj_w must be given together")
            adj = (op.int_arg("adj_h"), op.int_arg("adj_w"))
        self.adj = adj
        self.label = op.label()

    def resolve(
        self, in_sp: tuple[int, ...], fk: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(kernel, stride, pad_head, out) for an input's spatial dims and the filter's kernel dims."""
        nd = len(in_sp)
        w = self.win
        kernel = fk if w.kernel is None else w.expand("kernel", w.kernel, nd, 1)
        if tuple(kernel) != tuple(fk):
            raise ArgumentError(f"{self.label}: kernel {list(kernel)} does not match the filter's dims {list(fk)}")
        stride = w.expand("stride", w.stride, nd, 1)
        adj = w.expand("adj", self.adj, nd, 0)
        if w.pads is None or w.legacy_pad in (VALID, SAME):
            pads: tuple[int, ...] = (0,) * (2 * nd)
        elif isinstance(w.pads, int):
            pads = (w.pads,) * (2 * nd)
        else:
            if len(w.pads) != 2 * nd:
                raise ArgumentError(f"{self.label}: pads {list(w.pads)} must have {2 * nd} values")
            pads = w.pads
        for i in range(nd):
            if stride[i] <= 0 or kernel[i] <= 0:
                raise ArgumentError(f"{self.label}: kernel and stride must be positive")
            if not 0 <= adj[i] <= stride[i]:
                raise ArgumentError(f"{self.label}: adj {adj[i]} must be in [0, stride {stride[i]}]")
            if pads[i] < 0 or pads[nd + i] < 0:
                raise ArgumentError(f"{self.label}: pads must be non-negative, got {list(pads)}")
        out = tuple((in_sp[i] - 1) * stride[i] + kernel[i] + adj[i] - pads[i] - pads[nd + i] for i in range(nd))
        if any(o <= 0 for o in out):
            raise ArgumentError(f"{self.label}: input spatial dims {list(in_sp)} give output dims {list(out)}")
        return tuple(kernel), stride, pads[:nd], out


def _conv_transpose_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, w = ins[0], ins[1]
    if x.shape is None or len(x.shape) < 3:
        return [TensorInfo(None, x.dtype)]
    geo = _TransposeGeometry(op)
    order = geo.win.order
    group = op.int_arg("group")
    cout = None
    sp_in = geo.win.spatial_shape(x.shape)
    out_sp: tuple[int | None, ...] = (None,) * len(sp_in)
    if w.shape is not None:
        cg = w.shape[1] if order == "NCHW" else w.shape[-1]
        cout = None if cg is None else cg * group
        fk = _filter_kernel(w.shape, order)
        if all(d is not None for d in fk):
            big = 1 << 20
            try:
                _, _, _, full = geo.resolve(tuple(big if d is None else d for d in sp_in), fk)  # type: ignore[arg-type]
            except ArgumentError as exc:
                raise ShapeInferenceError(str(exc)) from None
            out_sp = tuple(None if d is None else o for d, o in zip(sp_in, full))
    out = (x.shape[0], cout, *out_sp) if order == "NCHW" else (x.shape[0], *out_sp, cout)
    return [TensorInfo(out, _out_dtype(x, w))]


@register_op(
    "ConvTranspose",
    inputs=(2, 3),
    outputs=1,
    args=CONV_TRANSPOSE_ARGS,
    infer=_conv_transpose_infer,
    doc=(
        "Transposed convolution: X [N, C_in, *S] with filter [C_in, C_out/group, *k] (NCHW; NHWC filter "
        "[C_in, *k, C_out/group]); output size (S - 1) * stride + k + adj - pad_head - pad_tail."
    ),
    input_names=("X", "filter", "bias"),
    output_names=("Y",),
)
def conv_transpose(op: OpInfo) -> Callable[..., Any]:
    geo = _TransposeGeometry(op)
    group = op.int_arg("group")
    if group < 1:
        raise ArgumentError(f"{op.label()}: group must be positive, got {group}")
    order = geo.win.order

    def run(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray]:
        if x.ndim < 3 or w.ndim != x.ndim:
            raise ArgumentError(f"X {x.shape} and filter {w.shape} must have the same rank, at least 3")
        c = x.shape[1] if order == "NCHW" else x.shape[-1]
        if w.shape[0] != c:
            raise ArgumentError(f"filter {w.shape} must have dim 0 equal to the input channels {c}")
        if c % group:
            raise ArgumentError(f"input channels {c} are not divisible by group {group}")
        cout = (w.shape[1] if order == "NCHW" else w.shape[-1]) * group
        if b is not None and b.size != cout:
            raise ArgumentError(f"bias has {b.size} values, the filter gives {cout} output channels")
        sp = tuple(x.shape[2:]) if order == "NCHW" else tuple(x.shape[1:-1])
        fk = tuple(w.shape[2:]) if order == "NCHW" else tuple(w.shape[1:-1])
        kernel, stride, head, out = geo.resolve(sp, fk)
        return (conv_transpose_forward(x, w, b, kernel, stride, head, out, order, group),)

    return run
