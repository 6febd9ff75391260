"""Gradients of image ops: UpsampleBilinear, ResizeNearest, PRelu."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._conv_util import ORDER_ARG
from asyncnet.ops._util import order_arg
from asyncnet.ops.image import SCALE_ARGS, _bilinear_taps, nearest_source
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def _resample_maker(grad_type: str) -> Callable[[pb.OperatorDef, list[str | None]], GradientSpec]:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        ins = [g.GO(0), g.I(0)] + ([g.I(1)] if len(op.input) > 1 else [])
        return g.spec([g.op_def(grad_type, ins, [g.GI(0)])])

    return maker


register_gradient("UpsampleBilinear")(_resample_maker("UpsampleBilinearGradient"))
register_gradient("ResizeNearest")(_resample_maker("ResizeNearestGradient"))


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The (out x in) interpolation matrix of the forward op along one axis (float32 weights, as Caffe2)."""
    i0, i1, l0, l1 = _bilinear_taps(in_size, out_size)
    m = np.zeros((out_size, in_size), dtype=np.float32)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), l0)
    np.add.at(m, (rows, i1), l1)
    return m


def _nearest_matrix(in_size: int, out_size: int, scale: float) -> np.ndarray:
    src = nearest_source(out_size, in_size, scale)
    m = np.zeros((out_size, in_size), dtype=np.float32)
    m[np.arange(out_size), src] = 1.0
    return m


def _adjoint(dy: np.ndarray, mh: np.ndarray, mw: np.ndarray, h_ax: int, w_ax: int) -> np.ndarray:
    """dX of Y = Mh X Mw^T along (h_ax, w_ax): Mh^T dY Mw."""
    d = np.moveaxis(dy, (h_ax, w_ax), (-2, -1))
    dx = mh.T.astype(d.dtype) @ d @ mw.astype(d.dtype)
    return np.moveaxis(dx, (-2, -1), (h_ax, w_ax))


def _grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo(ins[1].shape, ins[0].dtype)]


@register_op(
    "UpsampleBilinearGradient",
    inputs=(2, 3),
    outputs=1,
    args=SCALE_ARGS,
    infer=_grad_infer,
    doc="Gradient of UpsampleBilinear (NCHW): inputs dY, X, [scales]; every output pixel's dY goes back to "
    "its four source pixels with the forward weights.",
    input_names=("dY", "X", "scales"),
    output_names=("dX",),
)
def upsample_bilinear_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(dy: Any, x: Any, scales: Any = None) -> tuple[np.ndarray]:
        dy, x = np.asarray(dy), np.asarray(x)
        if dy.ndim != 4 or x.ndim != 4 or dy.shape[:2] != x.shape[:2]:
            raise ArgumentError(f"dY {dy.shape} and X {x.shape} must be 4-D NCHW with the same N and C")
        mh = _bilinear_matrix(x.shape[2], dy.shape[2])
        mw = _bilinear_matrix(x.shape[3], dy.shape[3])
        work = dy if np.issubdtype(dy.dtype, np.floating) else dy.astype(np.float32)
        return (_adjoint(work, mh, mw, 2, 3).astype(work.dtype, copy=False),)

    return run


@register_op(
    "ResizeNearestGradient",
    inputs=(2, 3),
    outputs=1,
    args=(*SCALE_ARGS, ORDER_ARG),
    infer=_grad_infer,
    doc="Gradient of ResizeNearest: inputs dY, X, [scales]; every output pixel's dY is added to the pixel it copied.",
    input_names=("dY", "X", "scales"),
    output_names=("dX",),
)
def resize_nearest_gradient(op: OpInfo) -> Callable[..., Any]:
    order = order_arg(op)
    hs0, ws0 = op.float_arg("height_scale"), op.float_arg("width_scale")

    def run(dy: Any, x: Any, scales: Any = None) -> tuple[np.ndarray]:
        dy, x = np.asarray(dy), np.asarray(x)
        hs, ws = hs0, ws0
        if scales is not None:
            hs, ws = (float(v) for v in np.asarray(scales, dtype=np.float32).reshape(2))
        if dy.ndim != 4 or x.ndim != 4:
            raise ArgumentError(f"dY {dy.shape} and X {x.shape} must be 4-D")
        h_ax, w_ax = (2, 3) if order == "NCHW" else (1, 2)
        mh = _nearest_matrix(x.shape[h_ax], dy.shape[h_ax], hs)
        mw = _nearest_matrix(x.shape[w_ax], dy.shape[w_ax], ws)
        return (_adjoint(dy, mh, mw, h_ax, w_ax).astype(dy.dtype, copy=False),)

    return run


@register_gradient("PRelu")
def _prelu_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("PReluGradient", [g.O(0), g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1)])])


@register_op(
    "PReluGradient",
    inputs=4,
    outputs=2,
    args=(ORDER_ARG,),
    infer=lambda op, ins: [ins[2], ins[3]],
    doc="Gradient of PRelu: inputs Y, dY, X, slope; dX = dY where X > 0 else slope * dY; "
    "dslope sums dY * X over the positions where X <= 0 (per channel, or all for a shared slope).",
    input_names=("Y", "dY", "X", "Slope"),
    output_names=("dX", "dSlope"),
)
def prelu_gradient(op: OpInfo) -> Callable[..., Any]:
    order = order_arg(op)

    def run(y: Any, dy: Any, x: Any, slope: Any) -> tuple[np.ndarray, np.ndarray]:
        dy, x, slope = np.asarray(dy), np.asarray(x), np.asarray(slope)
        neg = x <= 0
        if slope.size == 1:
            s: np.ndarray = slope.reshape(())
            dslope = np.asarray(np.sum(np.where(neg, dy * x, 0))).reshape(slope.shape)
        else:
            ax = 1 if order == "NCHW" else x.ndim - 1
            shape = [1] * x.ndim
            shape[ax] = -1
            s = slope.reshape(shape)
            axes = tuple(a for a in range(x.ndim) if a != ax)
            dslope = np.where(neg, dy * x, 0).sum(axis=axes).reshape(slope.shape)
        dx = np.where(neg, dy * s, dy)
        return dx.astype(dy.dtype, copy=False), dslope.astype(slope.dtype, copy=False)

    return run
