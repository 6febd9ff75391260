"""Translators for Caffe's layers with weights or spatial windows.

Convolution, Deconvolution, Pooling, InnerProduct, LRN, BatchNorm, Scale, Bias, PReLU.
Op choice and argument names follow Caffe2's own caffe_translator.py; shapes follow
Caffe's layer code (e.g. pooling rounds up, then drops a window that starts in the padding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asyncnet.caffe.context import (
    ONES,
    XAVIER,
    ZEROS,
    Emitted,
    Filler,
    LayerCtx,
    Shape,
    canonical_axis,
    filler_of,
    translator,
)
from asyncnet.proto import caffe_pb2 as cpb

# caffe2_legacy.proto LegacyPadding.CAFFE_LEGACY_POOLING: Caffe's ceil-rounded pooling.
CAFFE_LEGACY_POOLING = 3


def _pair(ctx: LayerCtx, values: Any, h: int | None, w: int | None, default: int, what: str) -> tuple[int, int]:
    """(h, w) of a conv/pool window parameter from its repeated or _h/_w spelling."""
    if h is not None or w is not None:
        return (int(h if h is not None else default), int(w if w is not None else default))
    vals = list(values)
    if not vals:
        return (default, default)
    if len(vals) == 1:
        return (int(vals[0]), int(vals[0]))
    if len(vals) == 2:
        return (int(vals[0]), int(vals[1]))
    raise ctx.unsupported(f"{what} has {len(vals)} values; only 2-D windows are supported")


def _hw_fields(p: cpb.ConvolutionParameter, stem: str) -> tuple[int | None, int | None]:
    """The ``<stem>_h`` and ``<stem>_w`` fields of ``p``, None where unset."""
    h, w = f"{stem}_h", f"{stem}_w"
    return (getattr(p, h) if p.HasField(h) else None, getattr(p, w) if p.HasField(w) else None)


def _window_args(kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]) -> dict[str, Any]:
    """Caffe2 ConvPoolOpBase arguments, in the symmetric form when h == w."""
    args: dict[str, Any] = {}
    if kernel[0] == kernel[1]:
        args["kernel"] = kernel[0]
    else:
        args["kernel_h"], args["kernel_w"] = kernel
    if stride[0] == stride[1]:
        args["stride"] = stride[0]
    else:
        args["stride_h"], args["stride_w"] = stride
    if pad[0] == pad[1]:
        args["pad"] = pad[0]
    else:
        args["pad_t"], args["pad_b"] = pad[0], pad[0]
        args["pad_l"], args["pad_r"] = pad[1], pad[1]
    return args


def _conv_geometry(ctx: LayerCtx, p: cpb.ConvolutionParameter) -> tuple[tuple[int, int], ...]:
    kernel = _pair(ctx, p.kernel_size, *_hw_fields(p, "kernel"), 0, "kernel_size")
    stride = _pair(ctx, p.stride, *_hw_fields(p, "stride"), 1, "stride")
    pad = _pair(ctx, p.pad, *_hw_fields(p, "pad"), 0, "pad")
    dilation = _pair(ctx, p.dilation, None, None, 1, "dilation")
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0:
        raise ctx.unsupported(f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    return kernel, stride, pad, dilation


def bilinear_weights(shape: Shape) -> np.ndarray:
    """Caffe's "bilinear" filler: every kernel is the same bilinear upsampling stencil."""
    kh, kw = shape[-2], shape[-1]
    f = math.ceil(kw / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ys = 1 - np.abs(np.arange(kh) / f - c)
    xs = 1 - np.abs(np.arange(kw) / f - c)
    return np.ascontiguousarray(np.broadcast_to(np.outer(ys, xs), shape), dtype=np.float32)


def _weight(ctx: LayerCtx, shape: Shape, fp: cpb.FillerParameter) -> str:
    value = ctx.pretrained(0, shape)
    if value is None and fp.type == "bilinear":
        value = bilinear_weights(shape)
    return ctx.param("w", shape, value, filler_of(fp, XAVIER))


def _spatial_input(ctx: LayerCtx) -> Shape:
    shape = ctx.in_shapes[0]
    if len(shape) != 4:
        raise ctx.unsupported(f"expects a 4-D NCHW input, got shape {list(shape)}")
    return shape


@translator("Convolution")
def convolution(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.convolution_param
    if p.axis != 1:
        raise ctx.unsupported(f"convolution_param.axis {p.axis} (only 1, NCHW, is supported)")
    n, c, h, w = _spatial_input(ctx)
    kernel, stride, pad, dilation = _conv_geometry(ctx, p)
    group = int(p.group)
    out_c = int(p.num_output)
    if out_c <= 0 or group <= 0 or c % group or out_c % group:
        raise ctx.unsupported(f"num_output {out_c} and {c} input channels must be positive multiples of group {group}")
    oh = (h + 2 * pad[0] - (dilation[0] * (kernel[0] - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dilation[1] * (kernel[1] - 1) + 1)) // stride[1] + 1
    if oh <= 0 or ow <= 0:
        raise ctx.unsupported(f"input {h}x{w} is smaller than its {kernel[0]}x{kernel[1]} window")
    top = ctx.layer.top[0]
    wshape = (out_c, c // group, kernel[0], kernel[1])
    inputs = [
        ctx.layer.bottom[0],
        _weight(ctx, wshape, p.weight_filler),
    ]
    if p.bias_term:
        inputs.append(ctx.param("b", (out_c,), ctx.pretrained(1, (out_c,)), filler_of(p.bias_filler, ZEROS)))
    args = _window_args(kernel, stride, pad)
    if group != 1:
        args["group"] = group
    if dilation[0] == dilation[1]:
        if dilation[0] != 1:
            args["dilation"] = dilation[0]
    else:
        args["dilation_h"], args["dilation_w"] = dilation
    ctx.op("Conv", inputs, [top], **args)
    return ctx.done((n, out_c, oh, ow))


@translator("Deconvolution")
def deconvolution(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.convolution_param
    n, c, h, w = _spatial_input(ctx)
    kernel, stride, pad, dilation = _conv_geometry(ctx, p)
    if dilation != (1, 1):
        raise ctx.unsupported("dilated deconvolution has no Caffe2 ConvTranspose equivalent")
    group = int(p.group)
    out_c = int(p.num_output)
    if out_c <= 0 or group <= 0 or c % group or out_c % group:
        raise ctx.unsupported(f"num_output {out_c} and {c} input channels must be positive multiples of group {group}")
    oh = stride[0] * (h - 1) + kernel[0] - 2 * pad[0]
    ow = stride[1] * (w - 1) + kernel[1] - 2 * pad[1]
    wshape = (c, out_c // group, kernel[0], kernel[1])
    # Caffe2's ConvTranspose always takes a bias; a bias-free layer gets zeros.
    bias = ctx.pretrained(1, (out_c,)) if p.bias_term else np.zeros(out_c, np.float32)
    inputs = [
        ctx.layer.bottom[0],
        _weight(ctx, wshape, p.weight_filler),
        ctx.param("b", (out_c,), bias, filler_of(p.bias_filler, ZEROS)),
    ]
    args = _window_args(kernel, stride, pad)
    if group != 1:
        args["group"] = group
    ctx.op("ConvTranspose", inputs, [ctx.layer.top[0]], order="NCHW", **args)
    return ctx.done((n, out_c, oh, ow))


def pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's PoolingLayer output size for one spatial axis."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        # The last window would start inside the padding: Caffe drops it.
        out -= 1
    return out


@translator("Pooling")
def pooling(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.pooling_param
    kinds = {cpb.PoolingParameter.MAX: "MaxPool", cpb.PoolingParameter.AVE: "AveragePool"}
    if p.pool not in kinds:
        raise ctx.unsupported(f"pooling method {cpb.PoolingParameter.PoolMethod.Name(p.pool)} has no Caffe2 op")
    n, c, h, w = _spatial_input(ctx)
    top = ctx.layer.top[0]
    if p.global_pooling:
        if p.pad or p.pad_h or p.pad_w or p.stride != 1:
            raise ctx.unsupported("global pooling with padding or stride != 1")
        ctx.op(kinds[p.pool], [ctx.layer.bottom[0]], [top], order="NCHW", global_pooling=1)
        return ctx.done((n, c, 1, 1))
    kernel = (
        (int(p.kernel_h), int(p.kernel_w))
        if p.HasField("kernel_h") or p.HasField("kernel_w")
        else (int(p.kernel_size), int(p.kernel_size))
    )
    stride = (
        (int(p.stride_h), int(p.stride_w))
        if p.HasField("stride_h") or p.HasField("stride_w")
        else (int(p.stride), int(p.stride))
    )
    pad = (int(p.pad_h), int(p.pad_w)) if p.HasField("pad_h") or p.HasField("pad_w") else (int(p.pad), int(p.pad))
    if min(kernel) <= 0 or min(stride) <= 0:
        raise ctx.unsupported(f"kernel {kernel} and stride {stride} must be positive")
    ceil = p.round_mode == cpb.PoolingParameter.CEIL
    oh = pooled_size(h, kernel[0], stride[0], pad[0], ceil)
    ow = pooled_size(w, kernel[1], stride[1], pad[1], ceil)
    if oh <= 0 or ow <= 0:
        raise ctx.unsupported(f"input {h}x{w} is smaller than its {kernel[0]}x{kernel[1]} window")
    args = _window_args(kernel, stride, pad)
    if p.pool == cpb.PoolingParameter.AVE and max(pad) > 0:
        # Caffe divides by the window size including padding cells (only a window hanging
        # past the padding, from ceil rounding, counts fewer): Caffe2's count_include_pad.
        args["count_include_pad"] = 1
    if ceil and ctx.remove_legacy_pad:
        # Express Caffe's rounding-up as extra bottom/right padding, which floor-rounding
        # pooling understands (exact for MaxPool; AveragePool counts those cells).
        extra_h = max(0, (oh - 1) * stride[0] + kernel[0] - (h + 2 * pad[0]))
        extra_w = max(0, (ow - 1) * stride[1] + kernel[1] - (w + 2 * pad[1]))
        if extra_h or extra_w:
            for k in ("pad", "pad_t", "pad_b", "pad_l", "pad_r"):
                args.pop(k, None)
            args.update(pad_t=pad[0], pad_l=pad[1], pad_b=pad[0] + extra_h, pad_r=pad[1] + extra_w)
    elif ceil:
        args["legacy_pad"] = CAFFE_LEGACY_POOLING
    ctx.op(kinds[p.pool], [ctx.layer.bottom[0]], [top], order="NCHW", **args)
    return ctx.done((n, c, oh, ow))


@translator("InnerProduct")
def inner_product(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.inner_product_param
    shape = ctx.in_shapes[0]
    axis = canonical_axis(ctx, p.axis, len(shape))
    k = math.prod(shape[axis:])
    out = int(p.num_output)
    if out <= 0:
        raise ctx.unsupported(f"num_output must be positive, got {out}")
    # Caffe stores W as (N, K), or (K, N) with transpose; old caffemodels as (1, 1, N, K).
    wshape = (k, out) if p.transpose else (out, k)
    bias = ctx.pretrained(1, (out,)) if p.bias_term else np.zeros(out, np.float32)
    inputs = [
        ctx.layer.bottom[0],
        ctx.param("w", wshape, ctx.pretrained(0, wshape), filler_of(p.weight_filler, XAVIER)),
        ctx.param("b", (out,), bias, filler_of(p.bias_filler, ZEROS)),
    ]
    ctx.op("FCTransposed" if p.transpose else "FC", inputs, [ctx.layer.top[0]], axis=axis if axis != 1 else None)
    return ctx.done((*shape[:axis], out))


@translator("LRN")
def lrn(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.lrn_param
    top = ctx.layer.top[0]
    if p.norm_region == cpb.LRNParameter.WITHIN_CHANNEL:
        return _lrn_within_channel(ctx, p)
    ctx.op(
        "LRN",
        [ctx.layer.bottom[0]],
        [top, ctx.names.fresh(f"_{top}_scale")],
        size=int(p.local_size),
        alpha=float(p.alpha),
        beta=float(p.beta),
        bias=float(p.k),
        order="NCHW",
    )
    return ctx.done(ctx.in_shapes[0])


def _lrn_within_channel(ctx: LayerCtx, p: cpb.LRNParameter) -> Emitted:
    """Caffe's WITHIN_CHANNEL LRN as Caffe composes it: x * (1 + alpha * avgpool(x^2)) ^ -beta."""
    size = int(p.local_size)
    if size % 2 == 0:
        raise ctx.unsupported(f"LRN local_size must be odd, got {size}")
    _spatial_input(ctx)
    x, top = ctx.layer.bottom[0], ctx.layer.top[0]
    sq, avg, scaled, shifted, denom = (ctx.temp(s) for s in ("sqr", "avg", "scaled", "shifted", "denom"))
    one = ctx.param("one", (1,), np.ones(1, np.float32))
    ctx.op("Sqr", [x], [sq])
    # Stride 1 with (size - 1) / 2 padding: every window counts size * size cells, as in Caffe.
    ctx.op(
        "AveragePool",
        [sq],
        [avg],
        kernel=size,
        stride=1,
        pad=(size - 1) // 2,
        order="NCHW",
        legacy_pad=CAFFE_LEGACY_POOLING,
        count_include_pad=1,
    )
    ctx.op("Scale", [avg], [scaled], scale=float(p.alpha))
    ctx.op("Add", [scaled, one], [shifted], broadcast=1)
    ctx.op("Pow", [shifted], [denom], exponent=-float(p.beta))
    ctx.op("Mul", [x, denom], [top])
    return ctx.done(ctx.in_shapes[0])


def batch_norm_stats(ctx: LayerCtx, channels: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Mean and variance of a BatchNorm layer's caffemodel blobs, un-scaled by its factor blob."""
    mean = ctx.pretrained(0, (channels,))
    var = ctx.pretrained(1, (channels,))
    if mean is None or var is None:
        return None, None
    factor_blob = ctx.pretrained(2, (1,)) if len(ctx.blobs) > 2 else np.ones(1, np.float32)
    factor = float(factor_blob[0]) if factor_blob is not None else 1.0
    # Caffe keeps running sums times a moving-average factor; 0 means "no statistics yet".
    scale = 0.0 if factor == 0 else 1.0 / factor
    return (mean * scale).astype(np.float32), (var * scale).astype(np.float32)


def spatial_bn(
    ctx: LayerCtx,
    bn_layer: cpb.LayerParameter,
    out: str,
    scale_layer: cpb.LayerParameter | None,
    scale_blobs: list[np.ndarray],
) -> Emitted:
    """SpatialBN for a BatchNorm layer, folding the following Scale layer's gamma/beta when given."""
    shape = ctx.in_shapes[0]
    if len(shape) < 2:
        raise ctx.unsupported(f"BatchNorm needs at least 2-D input, got shape {list(shape)}")
    c = shape[1]
    mean, var = batch_norm_stats(ctx, c)
    gamma: np.ndarray | None = np.ones(c, np.float32)
    beta: np.ndarray | None = np.zeros(c, np.float32)
    gamma_fill: Filler = ONES
    beta_fill: Filler = ZEROS
    if scale_layer is not None:
        sp = scale_layer.scale_param
        gamma = _blob(ctx, scale_blobs, 0, c, scale_layer.name)
        beta = _blob(ctx, scale_blobs, 1, c, scale_layer.name) if sp.bias_term else np.zeros(c, np.float32)
        gamma_fill = filler_of(sp.filler, ONES)
        beta_fill = filler_of(sp.bias_filler, ZEROS)
    inputs = [
        bn_layer.bottom[0],
        ctx.param("scale", (c,), gamma, gamma_fill, top=out),
        ctx.param("bias", (c,), beta, beta_fill, top=out),
        ctx.param("mean", (c,), mean, ZEROS, top=out),
        ctx.param("var", (c,), var, ONES, top=out),
    ]
    ctx.op("SpatialBN", inputs, [out], is_test=1, epsilon=float(bn_layer.batch_norm_param.eps), order="NCHW")
    return ctx.done(shape)


def _blob(ctx: LayerCtx, blobs: list[np.ndarray], i: int, n: int, owner: str) -> np.ndarray | None:
    if i >= len(blobs):
        return None
    if blobs[i].size != n:
        raise ctx.unsupported(f"caffemodel blob {i} of layer '{owner}' has {blobs[i].size} values, expected {n}")
    return np.ascontiguousarray(blobs[i].reshape(n), dtype=np.float32)


@translator("BatchNorm")
def batch_norm(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    return spatial_bn(ctx, ctx.layer, ctx.layer.top[0], None, [])


def _scale_extent(ctx: LayerCtx, axis: int, num_axes: int) -> Shape:
    shape = ctx.in_shapes[0]
    axis = canonical_axis(ctx, axis, len(shape)) if shape else 0
    if num_axes < -1:
        raise ctx.unsupported(f"num_axes must be >= -1, got {num_axes}")
    end = len(shape) if num_axes == -1 else axis + num_axes
    if end > len(shape):
        raise ctx.unsupported(f"axis {axis} + num_axes {num_axes} exceeds the input's {len(shape)} axes")
    return tuple(shape[axis:end])


def _mul_add(ctx: LayerCtx, factor: str | None, bias: str | None, axis: int) -> None:
    """Y = X * factor + bias with Caffe2's legacy broadcasting from ``axis``."""
    x = ctx.layer.bottom[0]
    top = ctx.layer.top[0]
    if factor is not None and bias is not None:
        mid = ctx.temp("internal")
        ctx.op("Mul", [x, factor], [mid], axis=axis, broadcast=1)
        ctx.op("Add", [mid, bias], [top], axis=axis, broadcast=1)
    elif factor is not None:
        ctx.op("Mul", [x, factor], [top], axis=axis, broadcast=1)
    elif bias is not None:
        ctx.op("Add", [x, bias], [top], axis=axis, broadcast=1)


@translator("Scale")
def scale(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    p = ctx.layer.scale_param
    shape = ctx.in_shapes[0]
    axis = canonical_axis(ctx, p.axis, len(shape))
    if len(ctx.layer.bottom) == 2:
        extent = tuple(ctx.in_shapes[1])
        factor = ctx.layer.bottom[1]
    else:
        extent = _scale_extent(ctx, p.axis, p.num_axes)
        factor = ctx.param("w", extent, ctx.pretrained(0, extent), filler_of(p.filler, ONES))
    if tuple(shape[axis : axis + len(extent)]) != extent:
        raise ctx.unsupported(f"scale of shape {list(extent)} does not match input {list(shape)} at axis {axis}")
    bias = None
    if p.bias_term:
        i = 0 if len(ctx.layer.bottom) == 2 else 1
        bias = ctx.param("b", extent, ctx.pretrained(i, extent), filler_of(p.bias_filler, ZEROS))
    _mul_add(ctx, factor, bias, axis)
    return ctx.done(shape)


@translator("Bias")
def bias_layer(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1, 2)
    ctx.need_tops(1)
    p = ctx.layer.bias_param
    shape = ctx.in_shapes[0]
    axis = canonical_axis(ctx, p.axis, len(shape))
    if len(ctx.layer.bottom) == 2:
        bias = ctx.layer.bottom[1]
    else:
        extent = _scale_extent(ctx, p.axis, p.num_axes)
        bias = ctx.param("b", extent, ctx.pretrained(0, extent), filler_of(p.filler, ZEROS))
    _mul_add(ctx, None, bias, axis)
    return ctx.done(shape)


@translator("PReLU")
def prelu(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.prelu_param
    shape = ctx.in_shapes[0]
    n = 1 if p.channel_shared else (shape[1] if len(shape) > 1 else 1)
    default = Filler("ConstantFill", (("value", 0.25),))
    slope = ctx.param("Slope", (n,), ctx.pretrained(0, (n,)), filler_of(p.filler, default))
    ctx.op("PRelu", [ctx.layer.bottom[0], slope], [ctx.layer.top[0]], order="NCHW")
    return ctx.done(shape)
