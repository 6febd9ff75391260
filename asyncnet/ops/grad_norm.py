"""Gradients of SpatialBN (training and test mode) and Dropout (DropoutGrad)."""

from __future__ import annotations

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


@register_gradient("SpatialBN")
def _spatial_bn_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    outs = [g.GI(0), g.GI(1), g.GI(2)]
    if g.arg("is_test", 0):
        ins = [g.I(0), g.I(1), g.GO(0), g.I(3), g.I(4)]
    elif g.arg("num_batches", 1) > 1:
        ins = [g.I(0), g.I(1), g.GO(0), g.O(3), g.O(4), g.GI(1), g.GI(2)]
    else:
        ins = [g.I(0), g.I(1), g.GO(0), g.O(3), g.O(4)]
    return g.spec([g.op_def("SpatialBNGradient", ins, outs)])


def _per_channel(v: np.ndarray, ndim: int, order: str) -> np.ndarray:
    shape = [1] * ndim
    shape[1 if order == "NCHW" else ndim - 1] = -1
    return v.reshape(shape)


@register_op(
    "SpatialBNGradient",
    inputs=(5, 7),
    outputs=3,
    # Multi-batch: the aggregated dscale/dbias (inputs 5, 6) carry the names of outputs 1, 2.
    allow_inplace=[(5, 1), (6, 2)],
    args=(
        Arg("is_test", 0, "test mode: inputs 3, 4 are the running mean and variance"),
        Arg("epsilon", 1e-5, "the forward epsilon"),
        Arg("momentum", 0.9, "the forward momentum (unused)"),
        Arg("order", "NCHW", "storage order"),
        Arg("num_batches", 1, "the forward num_batches: with 7 inputs the statistics span that many batches"),
    ),
    infer=lambda op, ins: [ins[0], ins[1], ins[1]],
    doc="Inputs X, scale, dY, mean, inv_std (training: the forward's saved outputs; test: running mean, var); "
    "outputs dX, dscale, dbias. Multi-batch training (num_batches > 1) adds inputs 5, 6: dscale and dbias "
    "summed over all batches; dX uses them over num_batches * N * HxW elements and dscale, dbias are "
    "their per-batch averages.",
    input_names=("X", "scale", "dY", "mean", "inv_std_or_var", "aggregate_dscale", "aggregate_dbias"),
    output_names=("dX", "dscale", "dbias"),
)
def spatial_bn_gradient(op: OpInfo) -> Callable[..., Any]:
    is_test = op.bool_arg("is_test", 0)
    eps = op.float_arg("epsilon")
    order = order_arg(op)
    num_batches = op.int_arg("num_batches", 1)
    if len(op.inputs) == 7 and (is_test or num_batches < 1):
        raise ArgumentError(
            f"{op.label()}: the aggregated gradients (inputs 5, 6) need training mode and num_batches >= 1"
        )

    def run(x: Any, scale: Any, dy: Any, mean: Any, stat: Any, *agg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, dy = np.asarray(x), np.asarray(dy)
        dt = np.result_type(x.dtype, np.float32)
        xf, dyf = x.astype(dt, copy=False), dy.astype(dt, copy=False)
        c_axis = 1 if order == "NCHW" else x.ndim - 1
        axes = tuple(a for a in range(x.ndim) if a != c_axis)
        m = np.asarray(mean, dtype=dt).reshape(-1)
        inv_std = (
            1.0 / np.sqrt(np.asarray(stat, dtype=dt).reshape(-1) + eps)
            if is_test
            else np.asarray(stat, dtype=dt).reshape(-1)
        )
        s = np.asarray(scale, dtype=dt).reshape(-1)
        sdt = np.asarray(scale).dtype
        if agg and x.size == 0:
            # An empty batch contributes nothing, whatever the other batches' sums (Caffe2: zeros).
            zeros = np.zeros(s.shape, sdt)
            return np.zeros(x.shape, x.dtype), zeros, zeros.copy()
        xhat = (xf - _per_channel(m, x.ndim, order)) * _per_channel(inv_std, x.ndim, order)
        if agg:
            # Sums over every batch: the normalization spanned num_batches * N * HxW elements.
            dbias = np.asarray(agg[1], dtype=dt).reshape(-1)
            dscale = np.asarray(agg[0], dtype=dt).reshape(-1)
        else:
            dbias = dyf.sum(axis=axes)
            dscale = (dyf * xhat).sum(axis=axes)
        if is_test:
            dx = dyf * _per_channel(s * inv_std, x.ndim, order)
        else:
            count = (x.size // max(x.shape[c_axis], 1)) * (num_batches if agg else 1)
            dx = _per_channel(s * inv_std, x.ndim, order) * (
                dyf - _per_channel(dbias / count, x.ndim, order) - xhat * _per_channel(dscale / count, x.ndim, order)
            )
        if agg:
            dscale, dbias = dscale / num_batches, dbias / num_batches
        return dx.astype(x.dtype, copy=False), dscale.astype(sdt), dbias.astype(sdt)

    return run


@register_gradient("Dropout")
def _dropout_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.GO(0)] if g.arg("is_test", 0) else [g.GO(0), g.O(1)]
    return g.spec([g.op_def("DropoutGrad", ins, [g.GI(0)])])


@register_op(
    "DropoutGrad",
    inputs=(1, 2),
    outputs=1,
    allow_inplace=[(0, 0)],
    args=(Arg("ratio", 0.5, "the forward ratio"), Arg("is_test", 0, "test mode: dX = dY")),
    infer=lambda op, ins: [TensorInfo(ins[0].shape, ins[0].dtype)],
    doc="Inputs dY and (training) the forward mask; dX = dY * mask / (1 - ratio), or dY in test mode.",
    input_names=("dY", "mask"),
    output_names=("dX",),
)
def dropout_grad(op: OpInfo) -> Callable[..., Any]:
    ratio = op.float_arg("ratio")
    is_test = op.bool_arg("is_test", 0)

    def run(dy: Any, mask: Any = None) -> tuple[np.ndarray]:
        dy = np.asarray(dy)
        if is_test or mask is None:
            if not is_test:
                raise ArgumentError("training-mode DropoutGrad needs the mask input")
            return (dy.copy(),)
        mask = np.asarray(mask)
        if mask.shape != dy.shape:
            raise ArgumentError(f"mask {mask.shape} and dY {dy.shape} must have one shape")
        if ratio >= 1.0:
            return (np.zeros_like(dy),)
        return (np.where(mask.astype(bool), dy / (1.0 - ratio), 0).astype(dy.dtype, copy=False),)

    return run


@register_gradient("LayerNorm")
def _layer_norm_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    if g.arg("elementwise_affine", 0):
        ins = [g.GO(0), g.O(0), g.O(1), g.O(2), g.I(0), g.I(1)]
        return g.spec([g.op_def("LayerNormGradient", ins, [g.GI(0), g.GI(1), g.GI(2)])])
    return g.spec([g.op_def("LayerNormGradient", [g.GO(0), g.O(0), g.O(1), g.O(2), g.I(0)], [g.GI(0)])])


@register_op(
    "LayerNormGradient",
    inputs=(5, 6),
    outputs=(1, 3),
    args=(
        Arg("axis", 1, "the forward axis"),
        Arg("epsilon", 1e-5, "the forward epsilon (std already includes it)"),
        Arg("elementwise_affine", 0, "the forward op scaled by gamma: input 5 is gamma, outputs dgamma, dbeta"),
    ),
    infer=lambda op, ins: [ins[4], *([ins[5], ins[5]] if len(ins) > 5 else [])][: len(op.outputs)],
    doc="Gradient of LayerNorm: inputs dY, Y, mean, std, X, [gamma]; outputs dX, [dgamma, dbeta].",
    input_names=("dY", "Y", "mean", "std", "X", "gamma"),
    output_names=("dX", "dgamma", "dbeta"),
)
def layer_norm_gradient(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")

    def run(dy: Any, y: Any, mean: Any, std: Any, x: Any, gamma: Any = None) -> tuple[np.ndarray, ...]:
        dy, x = np.asarray(dy), np.asarray(x)
        if x.ndim < 1:
            raise ArgumentError(f"X {x.shape} must have rank 1 or more")
        axis = axis_arg + x.ndim if axis_arg < 0 else axis_arg
        if not 0 <= axis < x.ndim:
            raise ArgumentError(f"axis {axis_arg} is out of range for X of rank {x.ndim}")
        m = int(np.prod(x.shape[:axis], dtype=np.int64))
        k = int(np.prod(x.shape[axis:], dtype=np.int64))
        dt = np.result_type(x.dtype, np.float32)
        mu = np.asarray(mean, dtype=dt).reshape(m, 1)
        sd = np.asarray(std, dtype=dt).reshape(m, 1)
        d2 = dy.astype(dt, copy=False).reshape(m, k)
        xhat = (x.astype(dt, copy=False).reshape(m, k) - mu) / sd
        gd = d2 if gamma is None else d2 * np.asarray(gamma, dtype=dt).reshape(1, k)
        dx = (gd - gd.mean(axis=1, keepdims=True) - xhat * (gd * xhat).mean(axis=1, keepdims=True)) / sd
        out: list[np.ndarray] = [dx.reshape(x.shape).astype(x.dtype, copy=False)]
        if gamma is not None:
            gshape = np.shape(gamma)
            out.append((d2 * xhat).sum(axis=0).reshape(gshape).astype(dt))
            out.append(d2.sum(axis=0).reshape(gshape).astype(dt))
        return tuple(out)

    return run


# ---------------------------------------------------------------------------
# GroupNorm / InstanceNorm / AffineChannel


def group_norm_backward(
    x: np.ndarray, gamma: np.ndarray, dy: np.ndarray, group: int, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dX, dgamma, dbeta) of an NCHW group norm; the statistics are recomputed from X."""
    n, c = x.shape[:2]
    dt = np.result_type(x.dtype, np.float32)
    xg = x.astype(dt, copy=False).reshape(n, group, -1)
    mean = xg.mean(axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(np.square(xg - mean).mean(axis=2, keepdims=True) + eps)
    xhat = ((xg - mean) * rstd).reshape(n, c, -1)
    d3 = dy.astype(dt, copy=False).reshape(n, c, -1)
    dbeta = d3.sum(axis=(0, 2))
    dgamma = (d3 * xhat).sum(axis=(0, 2))
    dxhat = (d3 * gamma.astype(dt).reshape(1, c, 1)).reshape(n, group, -1)
    xh = xhat.reshape(n, group, -1)
    dx = rstd * (dxhat - dxhat.mean(axis=2, keepdims=True) - xh * (dxhat * xh).mean(axis=2, keepdims=True))
    return dx.reshape(x.shape), dgamma, dbeta


@register_gradient("GroupNorm")
def _group_norm_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.GO(0), g.I(0), g.I(1), g.I(2)] + ([g.O(1), g.O(2)] if len(op.output) == 3 else [])
    return g.spec([g.op_def("GroupNormGradient", ins, [g.GI(0), g.GI(1), g.GI(2)])])


@register_gradient("InstanceNorm")
def _instance_norm_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.I(1), g.I(2), g.GO(0)] + [g.O(i) for i in range(1, len(op.output))]
    return g.spec([g.op_def("InstanceNormGradient", ins, [g.GI(0), g.GI(1), g.GI(2)])])


def _norm_grad_factory(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        eps = op.float_arg("epsilon")
        order = order_arg(op)
        group_arg = op.int_arg("group", 32) if kind == "group" else 0

        def run(*ins: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if kind == "group":
                dy, x, gamma = np.asarray(ins[0]), np.asarray(ins[1]), np.asarray(ins[2])
            else:
                x, gamma, dy = np.asarray(ins[0]), np.asarray(ins[1]), np.asarray(ins[3])
            if x.shape != dy.shape or x.ndim < 2:
                raise ArgumentError(f"X {x.shape} and dY {dy.shape} must have one shape of rank 2 or more")
            if order == "NHWC":
                x, dy = np.moveaxis(x, -1, 1), np.moveaxis(dy, -1, 1)
            c = x.shape[1]
            group = group_arg if kind == "group" else c
            if group < 1 or c % group or gamma.size != c:
                raise ArgumentError(f"X has {c} channels; gamma {gamma.shape} and group {group} do not fit")
            dx, dgamma, dbeta = group_norm_backward(x, gamma, dy, group, eps)
            if order == "NHWC":
                dx = np.moveaxis(dx, 1, -1)
            return (
                np.ascontiguousarray(dx).astype(x.dtype, copy=False),
                dgamma.reshape(gamma.shape).astype(gamma.dtype, copy=False),
                dbeta.reshape(gamma.shape).astype(gamma.dtype, copy=False),
            )

        return run

    return factory


register_op(
    "GroupNormGradient",
    inputs=(4, 6),
    outputs=3,
    args=(
        Arg("group", 32, "the forward group"),
        Arg("epsilon", 1e-5, "the forward epsilon"),
        Arg("order", "NCHW", "storage order"),
    ),
    infer=lambda op, ins: [ins[1], ins[2], ins[3]],
    doc="Gradient of GroupNorm: inputs dY, X, gamma, beta, [mean, inv_std]; outputs dX, dgamma, dbeta "
    "(the statistics are recomputed from X).",
    input_names=("dY", "X", "gamma", "beta", "mean", "inv_std"),
    output_names=("dX", "dgamma", "dbeta"),
)(_norm_grad_factory("group"))

register_op(
    "InstanceNormGradient",
    inputs=(4, 6),
    outputs=3,
    args=(Arg("epsilon", 1e-5, "the forward epsilon"), Arg("order", "NCHW", "storage order")),
    infer=lambda op, ins: [ins[0], ins[1], ins[2]],
    doc="Gradient of InstanceNorm: inputs X, scale, bias, dY, [mean, inv_stdev]; outputs dX, dscale, dbias "
    "(the statistics are recomputed from X).",
    input_names=("X", "scale", "bias", "dY", "mean", "inv_stdev"),
    output_names=("dX", "dscale", "dbias"),
)(_norm_grad_factory("instance"))


@register_gradient("AffineChannel")
def _affine_channel_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    if g.arg("is_learnable", 0):
        return g.spec([g.op_def("AffineChannelGradient", [g.GO(0), g.I(1), g.I(0)], [g.GI(0), g.GI(1), g.GI(2)])])
    return g.spec([g.op_def("AffineChannelGradient", [g.GO(0), g.I(1)], [g.GI(0)])])


@register_op(
    "AffineChannelGradient",
    inputs=(2, 3),
    outputs=(1, 3),
    allow_inplace=[(0, 0)],
    args=(Arg("order", "NCHW", "storage order"), Arg("is_learnable", 0, "also output dscale, dbias (needs X)")),
    infer=lambda op, ins: [ins[0], ins[1], ins[1]][: len(op.outputs)],
    doc="Gradient of AffineChannel: inputs dY, scale, [X]; dX = dY * scale per channel; with X also "
    "dscale = sum(dY * X) and dbias = sum(dY) per channel.",
    input_names=("dY", "scale", "X"),
    output_names=("dX", "dscale", "dbias"),
)
def affine_channel_gradient(op: OpInfo) -> Callable[..., Any]:
    order = order_arg(op)

    def run(dy: Any, scale: Any, x: Any = None) -> tuple[np.ndarray, ...]:
        dy, scale = np.asarray(dy), np.asarray(scale)
        dx = dy * _per_channel(scale, dy.ndim, order)
        if x is None:
            return (dx.astype(dy.dtype, copy=False),)
        c_axis = 1 if order == "NCHW" else dy.ndim - 1
        axes = tuple(a for a in range(dy.ndim) if a != c_axis)
        dscale = (dy * np.asarray(x)).sum(axis=axes).reshape(scale.shape)
        dbias = dy.sum(axis=axes).reshape(scale.shape)
        return dx.astype(dy.dtype, copy=False), dscale.astype(scale.dtype), dbias.astype(scale.dtype)

    return run


# ---------------------------------------------------------------------------
# LRN


@register_gradient("LRN")
def _lrn_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("LRNGradient", [g.I(0), g.O(0), g.GO(0)], [g.GI(0)])])


def _channel_window_sum(a: np.ndarray, ax: int, before: int, after: int) -> np.ndarray:
    """out[c] = sum of a[c - before .. c + after] along ``ax`` (zeros outside)."""
    c = a.shape[ax]
    pad = [(0, 0)] * a.ndim
    pad[ax] = (before, after)
    ap = np.pad(a, pad)
    out = np.zeros_like(a)
    index: list[slice] = [slice(None)] * a.ndim
    for t in range(before + after + 1):
        index[ax] = slice(t, t + c)
        out += ap[tuple(index)]
    return out


@register_op(
    "LRNGradient",
    inputs=3,
    outputs=1,
    args=(
        Arg("size", 1, "the forward size"),
        Arg("alpha", 0.0, "the forward alpha"),
        Arg("beta", 0.0, "the forward beta"),
        Arg("bias", 1.0, "the forward bias"),
        Arg("order", "NCHW", "storage order"),
    ),
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of LRN: inputs X, Y, dY; dX = dY * scale^-beta - 2 alpha beta / size * X * "
    "(sum over the windows containing the channel of dY * Y / scale); scale is recomputed from X.",
    input_names=("X", "Y", "dY"),
    output_names=("dX",),
)
def lrn_gradient(op: OpInfo) -> Callable[..., Any]:
    size = op.int_arg("size")
    alpha, beta, bias = op.float_arg("alpha"), op.float_arg("beta"), op.float_arg("bias")
    order = order_arg(op)
    if size < 1:
        raise ArgumentError(f"{op.label()}: size must be positive, got {size}")
    pre = (size - 1) // 2

    def run(x: Any, y: Any, dy: Any) -> tuple[np.ndarray]:
        x, y, dy = np.asarray(x), np.asarray(y), np.asarray(dy)
        dt = np.result_type(x.dtype, np.float32)
        xf, yf, df = x.astype(dt, copy=False), y.astype(dt, copy=False), dy.astype(dt, copy=False)
        ax = 1 if order == "NCHW" else x.ndim - 1
        scale = bias + alpha / size * _channel_window_sum(xf * xf, ax, pre, size - 1 - pre)
        # Channel j is in the windows of channels j - (size - 1 - pre) .. j + pre.
        back = _channel_window_sum(df * yf / scale, ax, size - 1 - pre, pre)
        dx = df * np.power(scale, -beta) - (2.0 * alpha * beta / size) * xf * back
        return (dx.astype(x.dtype, copy=False),)

    return run
