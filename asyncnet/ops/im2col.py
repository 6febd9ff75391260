"""Im2Col and Col2Im (its gradient) and LpPool (+ gradient), with Caffe2's layouts: NCHW columns (N, C*kh*kw, out_h, out_w) in
(channel, kernel row, kernel column) order, NHWC columns (N, out_h, out_w, kh*kw*C) in (kernel row,
kernel column, channel) order."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import order_arg
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

_ARGS = (
    Arg("kernel", 0, "square kernel size"),
    Arg("kernels", [], "kernel (height, width)"),
    Arg("kernel_h", 0, "kernel height"),
    Arg("kernel_w", 0, "kernel width"),
    Arg("dilation", 1, "dilation (both dims)"),
    Arg("dilation_h", 0, "dilation height"),
    Arg("dilation_w", 0, "dilation width"),
    Arg("stride", 1, "stride (both dims)"),
    Arg("stride_h", 0, "stride height"),
    Arg("stride_w", 0, "stride width"),
    Arg("pad", 0, "padding on every side"),
    Arg("pad_t", -1, "top padding"),
    Arg("pad_l", -1, "left padding"),
    Arg("pad_b", -1, "bottom padding"),
    Arg("pad_r", -1, "right padding"),
    Arg("order", "NCHW", "storage order"),
)


class _Geom:
    def __init__(self, op: OpInfo, *, allow_global: bool = False) -> None:
        # global_pooling (LpPool): the kernel is the whole input plane, fixed per input (for_input).
        self.global_pooling = allow_global and op.bool_arg("global_pooling", False)
        if self.global_pooling:
            self.kh = self.kw = self.sh = self.sw = self.dh = self.dw = 1
            self.pt = self.pl = self.pb = self.pr = 0
            self.order = order_arg(op)
            return
        k = op.int_arg("kernel")
        ks = op.ints_arg("kernels") if op.has("kernels") else []
        self.kh, self.kw = op.int_arg("kernel_h") or k, op.int_arg("kernel_w") or k
        if len(ks) == 2:
            self.kh, self.kw = ks
        d = op.int_arg("dilation")
        self.dh, self.dw = op.int_arg("dilation_h") or d, op.int_arg("dilation_w") or d
        s = op.int_arg("stride")
        self.sh, self.sw = op.int_arg("stride_h") or s, op.int_arg("stride_w") or s
        p = op.int_arg("pad")
        pads = [op.int_arg(n) for n in ("pad_t", "pad_l", "pad_b", "pad_r")]
        self.pt, self.pl, self.pb, self.pr = (p if v < 0 else v for v in pads)
        self.order = order_arg(op)
        if self.kh <= 0 or self.kw <= 0 or self.sh <= 0 or self.sw <= 0 or self.dh <= 0 or self.dw <= 0:
            raise ArgumentError(f"{op.label()}: kernel, stride and dilation must be positive")

    def for_input(self, h: int, w: int) -> _Geom:
        """This geometry for an (h, w) input plane (global pooling: one window covering it)."""
        if not self.global_pooling:
            return self
        g = copy.copy(self)
        g.kh, g.kw = h, w
        return g

    def out_hw(self, h: int, w: int) -> tuple[int, int]:
        oh = (h + self.pt + self.pb - (self.dh * (self.kh - 1) + 1)) // self.sh + 1
        ow = (w + self.pl + self.pr - (self.dw * (self.kw - 1) + 1)) // self.sw + 1
        return max(oh, 0), max(ow, 0)

    def nchw(self, x: np.ndarray) -> np.ndarray:
        return x if self.order == "NCHW" else x.transpose(0, 3, 1, 2)


def _cols(g: _Geom, xc: np.ndarray) -> np.ndarray:
    """(N, C, kh, kw, oh, ow) patches of NCHW x (zeros in the padding)."""
    n, c, h, w = xc.shape
    oh, ow = g.out_hw(h, w)
    padded = np.zeros((n, c, h + g.pt + g.pb, w + g.pl + g.pr), xc.dtype)
    padded[:, :, g.pt : g.pt + h, g.pl : g.pl + w] = xc
    out = np.zeros((n, c, g.kh, g.kw, oh, ow), xc.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            r0, c0 = i * g.dh, j * g.dw
            out[:, :, i, j] = padded[:, :, r0 : r0 + g.sh * (oh - 1) + 1 : g.sh, c0 : c0 + g.sw * (ow - 1) + 1 : g.sw]
    return out


def _fold(g: _Geom, c6: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Add (N, C, kh, kw, oh, ow) patches back into an NCHW image (the adjoint of _cols)."""
    n, c, h, w = shape
    oh, ow = c6.shape[4], c6.shape[5]
    padded = np.zeros((n, c, h + g.pt + g.pb, w + g.pl + g.pr), c6.dtype)
    for i in range(g.kh):
        for j in range(g.kw):
            r0, c0 = i * g.dh, j * g.dw
            rows = slice(r0, r0 + g.sh * (oh - 1) + 1, g.sh)
            cols = slice(c0, c0 + g.sw * (ow - 1) + 1, g.sw)
            padded[:, :, rows, cols] += c6[:, :, i, j]
    return padded[:, :, g.pt : g.pt + h, g.pl : g.pl + w]


def _shape_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None or len(x.shape) != 4 or any(d is None for d in x.shape):
        return [TensorInfo(None, x.dtype)]
    g = _Geom(op)
    n, c, h, w = x.shape if g.order == "NCHW" else (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    oh, ow = g.out_hw(int(h), int(w))  # type: ignore[arg-type]
    ck = int(c) * g.kh * g.kw  # type: ignore[arg-type]
    return [TensorInfo((n, ck, oh, ow) if g.order == "NCHW" else (n, oh, ow, ck), x.dtype)]


@register_op(
    "Im2Col",
    args=_ARGS,
    infer=_shape_infer,
    doc="Unfold the kernel windows of a 4-D image into columns: NCHW -> (N, C*kh*kw, out_h, out_w), "
    "NHWC -> (N, out_h, out_w, kh*kw*C); padding reads zeros.",
    input_names=("X",),
    output_names=("Y",),
)
def im2col(op: OpInfo) -> Callable[..., Any]:
    g = _Geom(op)

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.ndim != 4:
            raise ArgumentError(f"{op.label()}: X must be 4-D, got {a.shape}")
        cols = _cols(g, g.nchw(a))
        n, c, kh, kw, oh, ow = cols.shape
        if g.order == "NCHW":
            return (cols.reshape(n, c * kh * kw, oh, ow),)
        return (cols.transpose(0, 4, 5, 2, 3, 1).reshape(n, oh, ow, kh * kw * c),)

    return run


@register_gradient("Im2Col")
def _im2col_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("Col2Im", [g.GO(0), g.I(0)], [g.GI(0)])])


@register_op(
    "Col2Im",
    inputs=2,
    args=_ARGS,
    infer=lambda op, ins: [TensorInfo(ins[1].shape, ins[0].dtype)],
    doc="Fold Im2Col columns back into an image shaped like input 1, adding overlapping windows "
    "(the gradient of Im2Col).",
    input_names=("Y", "X_like"),
    output_names=("X",),
)
def col2im(op: OpInfo) -> Callable[..., Any]:
    g = _Geom(op)

    def run(y: Any, like: Any) -> tuple[np.ndarray]:
        cols, shape = np.asarray(y), np.shape(like)
        if len(shape) != 4:
            raise ArgumentError(f"{op.label()}: X_like must be 4-D, got {shape}")
        n, c, h, w = shape if g.order == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
        oh, ow = g.out_hw(h, w)
        if g.order == "NCHW":
            c6 = cols.reshape(n, c, g.kh, g.kw, oh, ow)
        else:
            c6 = cols.reshape(n, oh, ow, g.kh, g.kw, c).transpose(0, 5, 3, 4, 1, 2)
        out = _fold(g, c6, (n, c, h, w))
        return (np.ascontiguousarray(out if g.order == "NCHW" else out.transpose(0, 2, 3, 1)),)

    return run


# -- LpPool ---------------------------------------------------------------------------------------------


def _pool_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None or len(x.shape) != 4 or any(d is None for d in x.shape):
        return [TensorInfo(None, x.dtype)]
    g = _Geom(op, allow_global=True)
    n, c, h, w = (int(d) for d in (x.shape if g.order == "NCHW" else (x.shape[0], x.shape[3], x.shape[1], x.shape[2])))  # type: ignore[arg-type]
    oh, ow = g.for_input(h, w).out_hw(h, w)
    return [TensorInfo((n, c, oh, ow) if g.order == "NCHW" else (n, oh, ow, c), x.dtype)]


@register_op(
    "LpPool",
    args=(*_ARGS, Arg("p", 2.0, "the norm's exponent"), Arg("global_pooling", 0, "one window over the whole plane")),
    infer=_pool_infer,
    doc="Lp pooling over each 2-D window: Y = (sum |X|^p)^(1/p) (padding contributes 0); with "
    "global_pooling one window covers each (H, W) plane.",
    input_names=("X",),
    output_names=("Y",),
)
def lp_pool(op: OpInfo) -> Callable[..., Any]:
    geom = _Geom(op, allow_global=True)
    p = op.float_arg("p")
    if p <= 0:
        raise ArgumentError(f"{op.label()}: p must be positive, got {p}")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.ndim != 4:
            raise ArgumentError(f"{op.label()}: X must be 4-D, got {a.shape}")
        xc = geom.nchw(a)
        g = geom.for_input(xc.shape[2], xc.shape[3])
        cols = _cols(g, xc.astype(np.float64))
        y = np.power(np.power(np.abs(cols), p).sum(axis=(2, 3)), 1.0 / p)
        return (np.ascontiguousarray(y if g.order == "NCHW" else y.transpose(0, 2, 3, 1)).astype(a.dtype),)

    return run


@register_gradient("LpPool")
def _lp_pool_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("LpPoolGradient", [g.I(0), g.O(0), g.GO(0)], [g.GI(0)])])


@register_op(
    "LpPoolGradient",
    inputs=3,
    args=(*_ARGS, Arg("p", 2.0, "the forward p"), Arg("global_pooling", 0, "the forward global_pooling")),
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of LpPool: inputs X, Y, dY; dX = sum over windows of dY * sign(X) |X|^(p-1) / Y^(p-1).",
    input_names=("X", "Y", "dY"),
    output_names=("dX",),
)
def lp_pool_gradient(op: OpInfo) -> Callable[..., Any]:
    geom = _Geom(op, allow_global=True)
    p = op.float_arg("p")

    def run(x: Any, y: Any, dy: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        xc = geom.nchw(a).astype(np.float64)
        g = geom.for_input(xc.shape[2], xc.shape[3])
        yc = g.nchw(np.asarray(y)).astype(np.float64)
        dc = g.nchw(np.asarray(dy)).astype(np.float64)
        cols = _cols(g, xc)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(yc > 0, dc / np.power(yc, p - 1), 0.0)
        dcols = np.sign(cols) * np.power(np.abs(cols), p - 1) * scale[:, :, None, None]
        n, c, h, w = xc.shape
        dx = _fold(g, dcols, (n, c, h, w))
        return (np.ascontiguousarray(dx if g.order == "NCHW" else dx.transpose(0, 2, 3, 1)).astype(a.dtype),)

    return run
