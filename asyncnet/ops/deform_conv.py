"""DeformConv (+ gradient): 2-D convolution whose kernel taps are moved by learned offsets and read with
bilinear interpolation (Dai et al. 2017), as Caffe2's operator (which shipped only a CUDA kernel).

X (N, C, H, W); OFFSET (N, 2 * deformable_group * kh * kw, out_h, out_w) holding, for each deformable
group and tap (i, j), the (dy, dx) shift at channel 2 * (g * kh * kw + i * kw + j) and the next one;
W (M, C / group, kh, kw); optional bias (M). Samples outside the image read 0. NCHW only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.ops._window import CONV_ARGS, Window, WindowArgs
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

_ARGS = (
    *CONV_ARGS,
    Arg("deformable_group", 1, "channel groups sharing one set of offsets"),
    Arg("no_bias", 0, "the gradient op's forward had no bias"),
    Arg("no_gradient_to_input", 0, "skip dX in the gradient"),
)


class _Sampler:
    """Bilinear sample positions of every (n, deformable group, tap, out_h, out_w)."""

    def __init__(self, x_shape: tuple[int, ...], off: np.ndarray, win: Window, dg: int) -> None:
        n, _, h, w = x_shape
        kh, kw = win.kernel
        oh, ow = win.out
        k = kh * kw
        o = off.reshape(n, dg, k, 2, oh, ow).astype(np.float64)
        ti, tj = np.divmod(np.arange(k), kw)
        base_y = (np.arange(oh) * win.stride[0] - win.pad_head[0])[None, :, None] + (ti * win.dilation[0])[
            :, None, None
        ]
        base_x = (np.arange(ow) * win.stride[1] - win.pad_head[1])[None, None, :] + (tj * win.dilation[1])[
            :, None, None
        ]
        self.y = base_y[None, None] + o[:, :, :, 0]
        self.x = base_x[None, None] + o[:, :, :, 1]
        inside = (self.y > -1) & (self.x > -1) & (self.y < h) & (self.x < w)
        y0, x0 = np.floor(self.y), np.floor(self.x)
        self.ly, self.lx = self.y - y0, self.x - x0
        y0i, x0i = y0.astype(np.int64), x0.astype(np.int64)
        self.idx, self.ok = [], []
        for dy in (0, 1):
            for dx in (0, 1):
                yy, xx = y0i + dy, x0i + dx
                valid = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                self.idx.append(np.where(valid, yy * w + xx, 0))
                self.ok.append(valid)
        hy, hx = 1.0 - self.ly, 1.0 - self.lx
        self.wts = [hy * hx, hy * self.lx, self.ly * hx, self.ly * self.lx]
        self.shape = (n, dg, k, oh, ow)

    def corners(self, xg: np.ndarray) -> list[np.ndarray]:
        """The four corner values (n, dg, cg, k, oh, ow) of grouped X (n, dg, cg, H*W), 0 off the image."""
        n, dg, cg, _ = xg.shape
        out = []
        for idx, ok in zip(self.idx, self.ok):
            flat = np.broadcast_to(idx.reshape(n, dg, 1, -1), (n, dg, cg, idx[0, 0].size))
            v = np.take_along_axis(xg, flat, axis=3).reshape(n, dg, cg, *self.shape[2:])
            out.append(v * ok[:, :, None])
        return out


class _Deform:
    def __init__(self, op: OpInfo) -> None:
        self.op = op
        self.args = WindowArgs.parse(op)
        if self.args.order != "NCHW":
            raise ArgumentError(f"{op.label()}: DeformConv supports only NCHW")
        self.group, self.dg = op.int_arg("group"), op.int_arg("deformable_group")
        if self.group < 1 or self.dg < 1:
            raise ArgumentError(f"{op.label()}: group and deformable_group must be positive")

    def setup(self, x: np.ndarray, off: np.ndarray, w: np.ndarray) -> tuple[Window, _Sampler]:
        if x.ndim != 4 or w.ndim != 4 or off.ndim != 4:
            raise TensorError(f"{self.op.label()}: X, OFFSET and W must be 4-D, got {x.shape}, {off.shape}, {w.shape}")
        n, c = x.shape[:2]
        m = w.shape[0]
        if c % self.group or m % self.group or w.shape[1] != c // self.group or c % self.dg:
            raise TensorError(
                f"{self.op.label()}: W {w.shape} does not fit {c} channels in {self.group} group(s) and "
                f"{self.dg} deformable group(s)"
            )
        win = self.args.resolve([x.shape[2], x.shape[3]], [w.shape[2], w.shape[3]])
        want = (n, 2 * self.dg * w.shape[2] * w.shape[3], *win.out)
        if off.shape != want:
            raise TensorError(f"{self.op.label()}: OFFSET must be {want}, got {off.shape}")
        return win, _Sampler(x.shape, off, win, self.dg)

    def columns(self, x: np.ndarray, s: _Sampler) -> np.ndarray:
        """Sampled values (n, C, k, oh, ow)."""
        n, c = x.shape[:2]
        xg = x.astype(np.float64).reshape(n, self.dg, c // self.dg, -1)
        v = s.corners(xg)
        cols = sum(vi * wi[:, :, None] for vi, wi in zip(v, s.wts))
        return np.asarray(cols).reshape(n, c, *s.shape[2:])


def _infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, o, w = ins[0].shape, ins[1].shape, ins[2].shape
    out = (x[0] if x else None, w[0] if w else None, *(o[2:] if o and len(o) == 4 else (None, None)))
    return [info(out, ins[0].dtype)]


@register_op(
    "DeformConv",
    inputs=(3, 4),
    args=_ARGS,
    infer=_infer,
    doc="Deformable 2-D convolution: tap (i, j) of the window at each output position reads X at its "
    "regular place shifted by OFFSET's (dy, dx) for that tap, output position and deformable group, with "
    "bilinear interpolation (0 outside X); then the taps are combined with W (and bias) as in Conv.",
    input_names=("X", "OFFSET", "W", "b"),
    output_names=("Y",),
)
def deform_conv(op: OpInfo) -> Callable[..., Any]:
    d = _Deform(op)

    def run(x: Any, offset: Any, w: Any, b: Any = None) -> tuple[np.ndarray]:
        a, off, f = np.asarray(x), np.asarray(offset), np.asarray(w)
        win, s = d.setup(a, off, f)
        n, c = a.shape[:2]
        m, g = f.shape[0], d.group
        cols = d.columns(a, s).reshape(n, g, (c // g) * s.shape[2], -1)
        y = np.einsum("gmq,ngqp->ngmp", f.reshape(g, m // g, -1).astype(np.float64), cols).reshape(n, m, *win.out)
        if b is not None:
            y = y + np.asarray(b).reshape(1, m, 1, 1)
        return (y.astype(a.dtype),)

    return run


@register_gradient("DeformConv")
def _deform_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.I(1), g.I(2), g.GO(0)]
    dx = [] if g.arg("no_gradient_to_input", 0) else [g.GI(0)]
    if len(op.input) == 4:
        return g.spec([g.op_def("DeformConvGradient", ins, [g.GI(1), g.GI(2), g.GI(3), *dx])])
    extra = {} if g.has_arg("no_bias") else {"no_bias": 1}
    return g.spec([g.op_def("DeformConvGradient", ins, [g.GI(1), g.GI(2), *dx], extra)])


@register_op(
    "DeformConvGradient",
    inputs=4,
    outputs=(2, 4),
    args=_ARGS,
    infer=lambda op, ins: [
        ins[1],
        ins[2],
        *([] if op.bool_arg("no_bias") else [TensorInfo(None, ins[2].dtype)]),
        ins[0],
    ][: len(op.outputs)],
    doc="Gradient of DeformConv: inputs X, OFFSET, W, dY; outputs dOFFSET, dW, db (unless no_bias), dX "
    "(unless no_gradient_to_input).",
    input_names=("X", "OFFSET", "W", "dY"),
    output_names=("dOFFSET", "dW", "db", "dX"),
)
def deform_conv_gradient(op: OpInfo) -> Callable[..., Any]:
    d = _Deform(op)
    no_bias = op.bool_arg("no_bias")

    def run(x: Any, offset: Any, w: Any, dy: Any) -> list[np.ndarray]:
        a, off, f, gy = np.asarray(x), np.asarray(offset), np.asarray(w), np.asarray(dy, np.float64)
        win, s = d.setup(a, off, f)
        n, c, h, wd = a.shape
        m, g, dg = f.shape[0], d.group, d.dg
        k, oh, ow = s.shape[2:]
        cpg, mpg, cg = c // g, m // g, c // dg
        cols = d.columns(a, s).reshape(n, g, cpg * k, oh * ow)
        gyg = gy.reshape(n, g, mpg, oh * ow)
        fg = f.reshape(g, mpg, cpg * k).astype(np.float64)
        dw = np.einsum("ngmp,ngqp->gmq", gyg, cols).reshape(f.shape)
        dcols = np.einsum("gmq,ngmp->ngqp", fg, gyg).reshape(n, dg, cg, k, oh, ow)
        xg = a.astype(np.float64).reshape(n, dg, cg, h * wd)
        v00, v01, v10, v11 = s.corners(xg)
        ly, lx = s.ly[:, :, None], s.lx[:, :, None]
        dvy = (1 - lx) * (v10 - v00) + lx * (v11 - v01)
        dvx = (1 - ly) * (v01 - v00) + ly * (v11 - v10)
        doff = np.stack([(dcols * dvy).sum(axis=2), (dcols * dvx).sum(axis=2)], axis=3).reshape(off.shape)
        out = [doff.astype(off.dtype), dw.astype(f.dtype)]
        if not no_bias:
            out.append(gy.sum(axis=(0, 2, 3)).astype(f.dtype))
        if len(op.outputs) > len(out):
            dx = np.zeros((n, dg, cg, h * wd))
            for idx, ok, wt in zip(s.idx, s.ok, s.wts):
                share = dcols * (wt * ok)[:, :, None]
                flat = np.broadcast_to(idx[:, :, None], share.shape).reshape(n * dg * cg, -1)
                rows = np.repeat(np.arange(n * dg * cg), flat.shape[1])
                np.add.at(dx.reshape(n * dg * cg, -1), (rows, flat.reshape(-1)), share.reshape(-1))
            out.append(dx.reshape(a.shape).astype(a.dtype))
        return out

    return run
