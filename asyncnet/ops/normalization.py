"""Normalization: SpatialBN, InstanceNorm, GroupNorm, LayerNorm, AffineChannel, LRN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._buffers import OutputBuffer
from asyncnet.ops._conv_util import ORDER_ARG
from asyncnet.ops._util import canonical_axis, order_arg, prod
from asyncnet.registry import register_op
from asyncnet.schema import REQUIRED, Arg, TensorInfo, same_as_input


def channel_axis(ndim: int, order: str) -> int:
    """Axis of the channels for a tensor of rank ``ndim``."""
    return 1 if order == "NCHW" else ndim - 1


def per_channel(v: np.ndarray, ndim: int, order: str) -> np.ndarray:
    """A [C] vector shaped to broadcast along the channel axis."""
    shape = [1] * ndim
    shape[channel_axis(ndim, order)] = -1
    return v.reshape(shape)


def _check_vec(name: str, v: np.ndarray, c: int) -> None:
    if v.size != c:
        raise ArgumentError(f"{name} has shape {v.shape} ({v.size} values); expected {c} (one per channel)")


def _float(x: np.ndarray) -> np.ndarray:
    return x if np.issubdtype(x.dtype, np.inexact) else x.astype(np.float32)


def _rank_check(x: np.ndarray, lo: int, what: str) -> None:
    if x.ndim < lo:
        raise ArgumentError(f"{what} input X has shape {x.shape}; it needs rank {lo} or more")


def _channel_info(op: OpInfo, ins: list[TensorInfo]) -> Any:
    x = ins[0]
    if x.shape is None:
        return None
    return x.shape[channel_axis(len(x.shape), order_arg(op))]


# ---------------------------------------------------------------------------
# SpatialBN


def _spatial_bn_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    out = [x]
    if len(op.outputs) > 1:
        c = _channel_info(op, ins)
        vec = TensorInfo((c,), x.dtype)
        out += [ins[3] if ins[3].shape is not None else vec, ins[4] if ins[4].shape is not None else vec, vec, vec]
    return out[: len(op.outputs)]


@register_op(
    "SpatialBN",
    inputs=(5, 7),
    outputs=(1, 5),
    allow_inplace=[(0, 0), (5, 3), (6, 4)],
    enforce_inplace=[(3, 1), (4, 2)],
    args=(
        Arg("is_test", 0, "1: normalize with the given mean/var (one output); 0: training (five outputs)"),
        Arg("epsilon", 1e-5, "added to the variance"),
        Arg("momentum", 0.9, "running stat = momentum * running + (1 - momentum) * batch stat"),
        ORDER_ARG,
        Arg("num_batches", 1, "training with 7 inputs: the sums cover this many batches"),
    ),
    infer=_spatial_bn_infer,
    doc=(
        "Batch normalization over every axis but the channels. Test mode: Y = (X - mean) / sqrt(var + eps) "
        "* scale + bias. Training: also outputs running_mean, running_var (in place), saved_mean, saved_inv_std."
    ),
    input_names=("X", "scale", "bias", "mean", "var", "sums", "sumsq"),
    output_names=("Y", "running_mean", "running_var", "saved_mean", "saved_inv_std"),
)
def spatial_bn(op: OpInfo) -> Callable[..., Any]:
    is_test = op.bool_arg("is_test")
    eps = op.float_arg("epsilon")
    momentum = op.float_arg("momentum")
    num_batches = op.int_arg("num_batches")
    order = order_arg(op)
    n_out = len(op.outputs)
    if is_test and n_out != 1:
        raise ArgumentError(f"{op.label()}: test mode (is_test=1) has 1 output, got {n_out}")
    if not is_test and n_out != 5:
        raise ArgumentError(f"{op.label()}: training mode (is_test=0) needs 5 outputs, got {n_out}")
    if len(op.inputs) == 7 and is_test:
        raise ArgumentError(f"{op.label()}: the batch sums (inputs 5 and 6) are only for training mode")
    buffer = OutputBuffer.for_output(op)

    def run(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, *sums: np.ndarray):  # type: ignore[no-untyped-def]
        _rank_check(x, 2, "SpatialBN")
        ax = channel_axis(x.ndim, order)
        c = x.shape[ax]
        for name, v in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var)):
            _check_vec(name, v, c)
        dt = _float(x).dtype
        if is_test:
            # One scale and one shift per channel, applied in two in-place passes over Y.
            alpha = scale.astype(dt) / np.sqrt(var.astype(dt) + dt.type(eps))
            beta = bias.astype(dt) - alpha * mean.astype(dt)
            y = buffer.take(x.shape, dt)
            np.multiply(x, per_channel(alpha, x.ndim, order), out=y)
            y += per_channel(beta, x.ndim, order)
            return (y,)
        axes = tuple(a for a in range(x.ndim) if a != ax)
        if x.size == 0:
            # Caffe2 leaves the running statistics alone on an empty batch (with or without the
            # multi-batch sums); saved stats are 0.
            zeros = np.zeros(c, dt)
            return (x.astype(dt), mean.copy(), var.copy(), zeros, zeros.copy())
        count = (num_batches if sums else 1) * (x.size // max(c, 1))
        if sums:
            _check_vec("sums", sums[0], c)
            _check_vec("sumsq", sums[1], c)
            bmean = sums[0].astype(dt) / dt.type(count)
            bvar = sums[1].astype(dt) / dt.type(count) - bmean * bmean
        else:
            xf = x.astype(dt, copy=False)
            bmean = xf.mean(axis=axes)
            bvar = np.square(xf - per_channel(bmean, x.ndim, order)).mean(axis=axes)
        rstd = 1.0 / np.sqrt(bvar + dt.type(eps))
        alpha = scale.astype(dt) * rstd
        beta = bias.astype(dt) - alpha * bmean
        y = (x * per_channel(alpha, x.ndim, order)).astype(dt, copy=False)
        y += per_channel(beta, x.ndim, order)
        a, b = dt.type(1.0 - momentum), dt.type(momentum)
        # The running variance takes the unbiased batch variance (count / (count - 1)); Caffe2 used
        # an infinite factor for a single element.
        unbias = dt.type(count / (count - 1)) if count > 1 else dt.type(np.inf)
        run_mean = (a * bmean + b * mean.astype(dt).reshape(bmean.shape)).reshape(mean.shape)
        with np.errstate(invalid="ignore"):
            run_var = (a * unbias * bvar + b * var.astype(dt).reshape(bvar.shape)).reshape(var.shape)
        return (y, run_mean, run_var, bmean, rstd)

    return run


# ---------------------------------------------------------------------------
# InstanceNorm / GroupNorm / LayerNorm


def _moments_infer(shape_fn: Callable[[OpInfo, tuple[Any, ...]], tuple[Any, ...]]) -> Any:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        x = ins[0]
        stat = TensorInfo(None if x.shape is None else shape_fn(op, x.shape), x.dtype)
        return [x, stat, stat][: len(op.outputs)]

    return infer


def _instance_stat_shape(op: OpInfo, shape: tuple[Any, ...]) -> tuple[Any, ...]:
    return (shape[0], shape[channel_axis(len(shape), order_arg(op))])


@register_op(
    "InstanceNorm",
    inputs=3,
    outputs=(1, 3),
    allow_inplace=[(0, 0)],
    args=(Arg("epsilon", 1e-5, "added to the variance"), ORDER_ARG),
    infer=_moments_infer(_instance_stat_shape),
    doc="Normalize each (sample, channel) over its spatial dims, then scale and shift per channel.",
    input_names=("X", "scale", "bias"),
    output_names=("Y", "mean", "inv_stdev"),
)
def instance_norm(op: OpInfo) -> Callable[..., Any]:
    eps = op.float_arg("epsilon")
    order = order_arg(op)

    def run(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, ...]:
        _rank_check(x, 3, "InstanceNorm")
        ax = channel_axis(x.ndim, order)
        c = x.shape[ax]
        _check_vec("scale", scale, c)
        _check_vec("bias", bias, c)
        xf = _float(x)
        axes = tuple(range(2, x.ndim)) if order == "NCHW" else tuple(range(1, x.ndim - 1))
        mean = xf.mean(axis=axes, keepdims=True)
        var = np.square(xf - mean).mean(axis=axes, keepdims=True)
        rstd = 1.0 / np.sqrt(var + xf.dtype.type(eps))
        y = (xf - mean) * rstd * per_channel(scale, x.ndim, order) + per_channel(bias, x.ndim, order)
        n = x.shape[0]
        return (y.astype(xf.dtype, copy=False), mean.reshape(n, c), rstd.reshape(n, c))

    return run


def _group_stat_shape(op: OpInfo, shape: tuple[Any, ...]) -> tuple[Any, ...]:
    return (shape[0], op.int_arg("group"))


@register_op(
    "GroupNorm",
    inputs=3,
    outputs=(1, 3),
    args=(Arg("group", 32, "number of channel groups"), Arg("epsilon", 1e-5, "added to the variance"), ORDER_ARG),
    infer=_moments_infer(_group_stat_shape),
    doc="Normalize each (sample, channel group) over its channels and spatial dims, then gamma/beta per channel.",
    input_names=("X", "gamma", "beta"),
    output_names=("Y", "mean", "inv_std"),
)
def group_norm(op: OpInfo) -> Callable[..., Any]:
    eps = op.float_arg("epsilon")
    group = op.int_arg("group")
    order = order_arg(op)
    if group < 1:
        raise ArgumentError(f"{op.label()}: group must be positive, got {group}")

    def run(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, ...]:
        _rank_check(x, 2, "GroupNorm")
        ax = channel_axis(x.ndim, order)
        c = x.shape[ax]
        if c % group:
            raise ArgumentError(f"X has {c} channels, not divisible by group {group}")
        _check_vec("gamma", gamma, c)
        _check_vec("beta", beta, c)
        xf = _float(x)
        n = x.shape[0]
        g: np.ndarray
        if order == "NCHW":
            g = xf.reshape(n, group, -1) if xf.size else xf.reshape(n, group, c // group * prod(x.shape[2:]))
            red: tuple[int, ...] = (2,)
        else:
            g = (
                xf.reshape(n, -1, group, c // group)
                if xf.size
                else xf.reshape(n, prod(x.shape[1:-1]), group, c // group)
            )
            red = (1, 3)
        mean = g.mean(axis=red, keepdims=True)
        var = np.square(g - mean).mean(axis=red, keepdims=True)
        rstd = 1.0 / np.sqrt(var + xf.dtype.type(eps))
        y = ((g - mean) * rstd).reshape(x.shape)
        y = y * per_channel(gamma, x.ndim, order) + per_channel(beta, x.ndim, order)
        return (y.astype(xf.dtype, copy=False), mean.reshape(n, group), rstd.reshape(n, group))

    return run


def _layer_stat_shape(op: OpInfo, shape: tuple[Any, ...]) -> tuple[Any, ...]:
    axis = canonical_axis(op.int_arg("axis"), len(shape), op)
    return (*shape[:axis], 1)


@register_op(
    "LayerNorm",
    inputs=(1, 3),
    outputs=(1, 3),
    args=(
        Arg("axis", 1, "dims from `axis` on are normalized together"),
        Arg("epsilon", 1e-5, "added to the variance"),
        Arg("elementwise_affine", 0, "1: scale by gamma and add beta (inputs 1 and 2, shaped like X.dims[axis:])"),
    ),
    infer=_moments_infer(_layer_stat_shape),
    doc="Y = (X - mean) / std over the dims from `axis`, std = sqrt(var + epsilon); mean/std keep a trailing 1. "
    "C10LayerNorm_DontUseThisOpYet is Caffe2's c10 spelling of the same op.",
    input_names=("X", "gamma", "beta"),
    output_names=("Y", "mean", "std"),
    aliases=("C10LayerNorm_DontUseThisOpYet",),
)
def layer_norm(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")
    eps = op.float_arg("epsilon")
    affine = op.bool_arg("elementwise_affine")
    if affine and len(op.inputs) != 3:
        raise ArgumentError(f"{op.label()}: elementwise_affine needs inputs X, gamma, beta; got {len(op.inputs)}")
    if not affine and len(op.inputs) != 1:
        raise ArgumentError(f"{op.label()}: gamma/beta inputs need elementwise_affine=1")

    def run(x: np.ndarray, *params: np.ndarray) -> tuple[np.ndarray, ...]:
        _rank_check(x, 2, "LayerNorm")
        axis = canonical_axis(axis_arg, x.ndim, op)
        xf = _float(x)
        m = prod(x.shape[:axis])
        k = prod(x.shape[axis:])
        flat = xf.reshape(m, k)
        mean = flat.mean(axis=1, keepdims=True) if k else np.zeros((m, 1), xf.dtype)
        var = np.square(flat - mean).mean(axis=1, keepdims=True) if k else np.zeros((m, 1), xf.dtype)
        std = np.sqrt(var + xf.dtype.type(eps))
        y = (flat - mean) / std
        if affine:
            gamma, beta = params
            if gamma.size != k or beta.size != k:
                raise ArgumentError(f"gamma {gamma.shape} and beta {beta.shape} must have {k} values (X.dims[{axis}:])")
            y = y * gamma.reshape(1, k) + beta.reshape(1, k)
        stat_shape = (*x.shape[:axis], 1)
        return (y.reshape(x.shape).astype(xf.dtype, copy=False), mean.reshape(stat_shape), std.reshape(stat_shape))

    return run


# ---------------------------------------------------------------------------
# AffineChannel


@register_op(
    "AffineChannel",
    inputs=3,
    outputs=1,
    allow_inplace=[(0, 0)],
    args=(ORDER_ARG, Arg("is_learnable", 0, "scale and bias are trained (only changes gradients)")),
    infer=same_as_input(),
    doc="Y = X * scale + bias with one scale and bias per channel.",
    input_names=("X", "scale", "bias"),
    output_names=("Y",),
)
def affine_channel(op: OpInfo) -> Callable[..., Any]:
    order = order_arg(op)
    if op.bool_arg("is_learnable") and op.inputs and op.outputs and op.inputs[0] == op.outputs[0]:
        raise ArgumentError(f"{op.label()}: a learnable AffineChannel cannot run in place")

    def run(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray]:
        _rank_check(x, 2, "AffineChannel")
        c = x.shape[channel_axis(x.ndim, order)]
        _check_vec("scale", scale, c)
        _check_vec("bias", bias, c)
        y = x * per_channel(scale, x.ndim, order) + per_channel(bias, x.ndim, order)
        return (y.astype(np.result_type(x.dtype, scale.dtype), copy=False),)

    return run


# ---------------------------------------------------------------------------
# LRN


def _lrn_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    if ins[0].shape is not None and len(ins[0].shape) < 2:
        raise ShapeInferenceError(f"{op.label()}: LRN needs rank 2 or more, got {ins[0]}")
    return [ins[0]] * len(op.outputs)


@register_op(
    "LRN",
    inputs=1,
    outputs=(1, 2),
    args=(
        Arg("size", REQUIRED, "number of channels in each normalization window"),
        Arg("alpha", 0.0, "scale of the sum of squares"),
        Arg("beta", 0.0, "exponent"),
        Arg("bias", 1.0, "added to the scaled sum"),
        ORDER_ARG,
    ),
    infer=_lrn_infer,
    doc=(
        "Local response normalization across channels: scale = bias + alpha / size * sum of X^2 over "
        "`size` neighbouring channels (from c - (size-1)/2), Y = X * scale^-beta. Output 1 is scale."
    ),
    input_names=("X",),
    output_names=("Y", "scale"),
)
def lrn(op: OpInfo) -> Callable[..., Any]:
    size = op.int_arg("size")
    if size < 1:
        raise ArgumentError(f"{op.label()}: size must be positive, got {size}")
    alpha = op.float_arg("alpha")
    beta = op.float_arg("beta")
    bias = op.float_arg("bias")
    order = order_arg(op)
    pre = (size - 1) // 2

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _rank_check(x, 2, "LRN")
        xf = _float(x)
        ax = channel_axis(x.ndim, order)
        c = x.shape[ax]
        sq = np.square(xf)
        pad = [(0, 0)] * x.ndim
        pad[ax] = (pre, size - pre - 1)
        sqp = np.pad(sq, pad)
        acc = np.zeros_like(sq)
        index: list[slice] = [slice(None)] * x.ndim
        for t in range(size):  # `size` is a handful of channels; the pixels stay vectorized
            index[ax] = slice(t, t + c)
            acc += sqp[tuple(index)]
        dt = xf.dtype.type
        scale = dt(bias) + dt(alpha / size) * acc
        y = xf * np.power(scale, dt(-beta))
        return (y.astype(xf.dtype, copy=False), scale.astype(xf.dtype, copy=False))

    return run
