"""Translators for Caffe's weight-free layers: activations, Softmax, Dropout, Eltwise,
Concat/Slice/Split, Flatten/Reshape, Power/Exp/Log, DummyData and the loss layers."""

from __future__ import annotations

import math

import numpy as np

from asyncnet.caffe.context import Emitted, Filler, LayerCtx, Shape, canonical_axis, translator
from asyncnet.proto import caffe_pb2 as cpb


def _unary(ctx: LayerCtx, op_type: str, **args: object) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    ctx.op(op_type, [ctx.layer.bottom[0]], [ctx.layer.top[0]], **args)
    return ctx.done(ctx.in_shapes[0])


@translator("ReLU")
def relu(ctx: LayerCtx) -> Emitted:
    slope = float(ctx.layer.relu_param.negative_slope)
    if slope != 0.0:
        return _unary(ctx, "LeakyRelu", alpha=slope)
    return _unary(ctx, "Relu")


@translator("Sigmoid")
def sigmoid(ctx: LayerCtx) -> Emitted:
    return _unary(ctx, "Sigmoid")


@translator("TanH")
def tanh(ctx: LayerCtx) -> Emitted:
    return _unary(ctx, "Tanh")


@translator("ELU")
def elu(ctx: LayerCtx) -> Emitted:
    return _unary(ctx, "Elu", alpha=float(ctx.layer.elu_param.alpha))


@translator("AbsVal")
def absval(ctx: LayerCtx) -> Emitted:
    return _unary(ctx, "Abs")


@translator("BNLL")
def bnll(ctx: LayerCtx) -> Emitted:
    return _unary(ctx, "Softplus")


@translator("Clip")
def clip(ctx: LayerCtx) -> Emitted:
    p = ctx.layer.clip_param
    return _unary(ctx, "Clip", min=float(p.min), max=float(p.max))


@translator("Dropout")
def dropout(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    top = ctx.layer.top[0]
    ctx.op(
        "Dropout",
        [ctx.layer.bottom[0]],
        [top, ctx.names.fresh(f"_{top}_mask")],
        ratio=float(ctx.layer.dropout_param.dropout_ratio),
        is_test=1,
    )
    return ctx.done(ctx.in_shapes[0])


@translator("Softmax")
def softmax(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    shape = ctx.in_shapes[0]
    axis = canonical_axis(ctx, ctx.layer.softmax_param.axis, len(shape))
    x, top = ctx.layer.bottom[0], ctx.layer.top[0]
    if math.prod(shape[axis + 1 :]) == 1:
        ctx.op("Softmax", [x], [top], axis=axis if axis != 1 else None)
        return ctx.done(shape)
    # Caffe normalizes over one axis only; Caffe2's Softmax flattens everything after
    # `axis`, so move the axis last, normalize there, and move it back.
    perm = [i for i in range(len(shape)) if i != axis] + [axis]
    back = [perm.index(i) for i in range(len(shape))]
    moved, normed = ctx.temp("softmax_in"), ctx.temp("softmax_out")
    ctx.op("Transpose", [x], [moved], axes=perm)
    ctx.op("Softmax", [moved], [normed], axis=len(shape) - 1)
    ctx.op("Transpose", [normed], [top], axes=back)
    return ctx.done(shape)


def _concat_axis(ctx: LayerCtx, axis_set: bool, axis: int, legacy_set: bool, legacy: int, ndim: int) -> int:
    if axis_set:
        return canonical_axis(ctx, axis, ndim)
    if legacy_set:
        return canonical_axis(ctx, legacy, ndim)
    return canonical_axis(ctx, 1, ndim)


@translator("Concat")
def concat(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1, -1)
    ctx.need_tops(1)
    p = ctx.layer.concat_param
    shapes = ctx.in_shapes
    axis = _concat_axis(ctx, p.HasField("axis"), p.axis, p.HasField("concat_dim"), p.concat_dim, len(shapes[0]))
    for s in shapes[1:]:
        if len(s) != len(shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis):
            raise ctx.unsupported(f"inputs {[list(t) for t in shapes]} differ outside concat axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    top = ctx.layer.top[0]
    args: dict[str, object] = {"order": "NCHW"} if axis == 1 else {"axis": axis}
    ctx.op("Concat", list(ctx.layer.bottom), [top, ctx.names.fresh(f"_{top}_dims")], **args)
    return ctx.done(tuple(out))


@translator("Slice")
def slice_layer(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    p = ctx.layer.slice_param
    shape = ctx.in_shapes[0]
    axis = _concat_axis(ctx, p.HasField("axis"), p.axis, p.HasField("slice_dim"), p.slice_dim, len(shape))
    n, total = len(ctx.layer.top), shape[axis]
    points = [int(v) for v in p.slice_point]
    if points:
        if len(points) != n - 1 or points != sorted(points) or points[0] <= 0 or points[-1] >= total:
            raise ctx.unsupported(f"slice_point {points} does not cut axis {axis} of size {total} into {n} parts")
        bounds = [0, *points, total]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    else:
        if n == 0 or total % n:
            raise ctx.unsupported(f"axis {axis} of size {total} does not split evenly into {n} tops")
        sizes = [total // n] * n
    ctx.op("Split", [ctx.layer.bottom[0]], list(ctx.layer.top), axis=axis, split=sizes)
    return ctx.done(*[tuple(size if i == axis else d for i, d in enumerate(shape)) for size in sizes])


@translator("Split")
def split(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    for top in ctx.layer.top:
        if top != ctx.layer.bottom[0]:
            ctx.op("Copy", [ctx.layer.bottom[0]], [top])
    return ctx.done(*[ctx.in_shapes[0]] * len(ctx.layer.top))


def _reshape(ctx: LayerCtx, dims: list[int], out: Shape) -> Emitted:
    top = ctx.layer.top[0]
    ctx.op("Reshape", [ctx.layer.bottom[0]], [top, ctx.names.fresh(f"_{top}_dims")], shape=dims)
    return ctx.done(out)


@translator("Flatten")
def flatten(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.flatten_param
    shape = ctx.in_shapes[0]
    start = canonical_axis(ctx, p.axis, len(shape))
    end = canonical_axis(ctx, p.end_axis, len(shape), "end_axis")
    out = (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
    if start == 1 and end == len(shape) - 1:
        ctx.op("Flatten", [ctx.layer.bottom[0]], [ctx.layer.top[0]], axis=1)
        return ctx.done(out)
    return _reshape(ctx, [0] * start + list(out[start:]), out)


def caffe_reshape(ctx: LayerCtx, shape: Shape, p: cpb.ReshapeParameter) -> Shape:
    """Caffe's ReshapeLayer output shape (0 copies, -1 infers, axis/num_axes pick the range)."""
    ndim = len(shape)
    start = p.axis if p.axis >= 0 else ndim + p.axis + 1
    if not 0 <= start <= ndim:
        raise ctx.unsupported(f"reshape axis {p.axis} is out of range for a {ndim}-D input")
    if p.num_axes < -1:
        raise ctx.unsupported(f"reshape num_axes must be >= -1, got {p.num_axes}")
    end = ndim if p.num_axes == -1 else start + p.num_axes
    if end > ndim:
        raise ctx.unsupported(f"reshape axis {p.axis} + num_axes {p.num_axes} exceeds {ndim} input axes")
    spec = [int(d) for d in p.shape.dim]
    mid: list[int] = []
    for i, d in enumerate(spec):
        if d == 0:
            if start + i >= ndim:
                raise ctx.unsupported(f"reshape dim {i} is 0 (copy) but the input has no axis {start + i}")
            mid.append(shape[start + i])
        elif d >= -1:
            mid.append(d)
        else:
            raise ctx.unsupported(f"reshape dim {d} is invalid (use -1 to infer, 0 to copy)")
    out = [*shape[:start], *mid, *shape[end:]]
    if out.count(-1) > 1:
        raise ctx.unsupported(f"reshape shape {spec} infers more than one dimension")
    total = math.prod(shape)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise ctx.unsupported(f"reshape {spec} cannot hold the {total} values of input {list(shape)}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise ctx.unsupported(f"reshape to {out} does not hold the {total} values of input {list(shape)}")
    return tuple(out)


@translator("Reshape")
def reshape(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    p = ctx.layer.reshape_param
    out = caffe_reshape(ctx, ctx.in_shapes[0], p)
    if p.axis == 0 and p.num_axes == -1:
        # Caffe2's Reshape reads 0 and -1 exactly as Caffe does over the whole shape.
        return _reshape(ctx, [int(d) for d in p.shape.dim], out)
    return _reshape(ctx, list(out), out)


@translator("Eltwise")
def eltwise(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(2, -1)
    ctx.need_tops(1)
    p = ctx.layer.eltwise_param
    shapes = ctx.in_shapes
    if any(s != shapes[0] for s in shapes):
        raise ctx.unsupported(f"inputs must have equal shapes, got {[list(s) for s in shapes]}")
    bottoms, top = list(ctx.layer.bottom), ctx.layer.top[0]
    if p.operation == cpb.EltwiseParameter.SUM:
        coeffs = [float(c) for c in p.coeff]
        if coeffs and len(coeffs) != len(bottoms):
            raise ctx.unsupported(f"has {len(coeffs)} coeff values for {len(bottoms)} bottoms")
        inputs = []
        for i, (b, c) in enumerate(zip(bottoms, coeffs or [1.0] * len(bottoms))):
            if c == 1.0:
                inputs.append(b)
            else:
                scaled = ctx.temp(f"coeff{i}")
                ctx.op("Scale", [b], [scaled], scale=c)
                inputs.append(scaled)
        ctx.op("Sum", inputs, [top])
    elif p.operation == cpb.EltwiseParameter.PROD:
        acc = bottoms[0]
        for i, b in enumerate(bottoms[1:], start=1):
            out = top if i == len(bottoms) - 1 else ctx.temp(f"prod{i}")
            ctx.op("Mul", [acc, b], [out])
            acc = out
    else:
        ctx.op("Max", bottoms, [top])
    return ctx.done(shapes[0])


def _affine_then(ctx: LayerCtx, scale: float, shift: float, final: str | None, **final_args: object) -> Emitted:
    """top = final(shift + scale * x); each step is skipped when it is the identity."""
    ctx.need_bottoms(1)
    ctx.need_tops(1)
    x, top = ctx.layer.bottom[0], ctx.layer.top[0]
    steps: list[tuple[str, dict[str, object], str | None]] = []
    if scale != 1.0:
        steps.append(("Scale", {"scale": scale}, None))
    if shift != 0.0:
        steps.append(("Add", {"broadcast": 1}, ctx.param("shift", (1,), np.array([shift], np.float32))))
    if final is not None:
        steps.append((final, dict(final_args), None))
    if not steps:
        steps.append(("Copy", {}, None))
    cur = x
    for i, (op_type, args, extra) in enumerate(steps):
        out = top if i == len(steps) - 1 else ctx.temp(op_type.lower())
        ctx.op(op_type, [cur] + ([extra] if extra else []), [out], **args)
        cur = out
    return ctx.done(ctx.in_shapes[0])


@translator("Power")
def power(ctx: LayerCtx) -> Emitted:
    p = ctx.layer.power_param
    exp = float(p.power)
    return _affine_then(ctx, float(p.scale), float(p.shift), None if exp == 1.0 else "Pow", exponent=exp)


@translator("Exp")
def exp(ctx: LayerCtx) -> Emitted:
    p = ctx.layer.exp_param
    if p.base != -1.0:
        raise ctx.unsupported(f"Exp with base {p.base} (only the natural base, -1, is supported)")
    return _affine_then(ctx, float(p.scale), float(p.shift), "Exp")


@translator("Log")
def log(ctx: LayerCtx) -> Emitted:
    p = ctx.layer.log_param
    if p.base != -1.0:
        raise ctx.unsupported(f"Log with base {p.base} (only the natural base, -1, is supported)")
    return _affine_then(ctx, float(p.scale), float(p.shift), "Log")


@translator("Silence")
def silence(ctx: LayerCtx) -> Emitted:
    return ctx.done()


@translator("DummyData")
def dummy_data(ctx: LayerCtx) -> Emitted:
    p = ctx.layer.dummy_data_param
    tops = list(ctx.layer.top)
    shapes: list[Shape] = [tuple(int(d) for d in s.dim) for s in p.shape]
    if not shapes and p.num:
        shapes = [(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(p.num, p.channels, p.height, p.width)]
    if len(shapes) == 1:
        shapes = shapes * len(tops)
    if len(shapes) != len(tops):
        raise ctx.unsupported(f"gives {len(shapes)} shapes for {len(tops)} tops")
    fillers = list(p.data_filler) or [cpb.FillerParameter()]
    if len(fillers) == 1:
        fillers = fillers * len(tops)
    from asyncnet.caffe.context import filler_of

    for top, shape, fp in zip(tops, shapes, fillers):
        f = filler_of(fp, Filler("ConstantFill", (("value", 0.0),)))
        ctx.op(f.op_type, [], [top], shape=list(shape), **dict(f.args))
    return ctx.done(*shapes)


@translator("SoftmaxWithLoss")
def softmax_with_loss(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(2)
    ctx.need_tops(1)
    if ctx.layer.softmax_param.axis != 1 or ctx.layer.loss_param.HasField("ignore_label"):
        raise ctx.unsupported("SoftmaxWithLoss with axis != 1 or ignore_label has no Caffe2 equivalent")
    top = ctx.layer.top[0]
    ctx.op("SoftmaxWithLoss", list(ctx.layer.bottom), [ctx.names.fresh(f"_{top}_softmax"), top])
    return ctx.done(())


@translator("Accuracy")
def accuracy(ctx: LayerCtx) -> Emitted:
    ctx.need_bottoms(2)
    ctx.need_tops(1)
    p = ctx.layer.accuracy_param
    if p.axis != 1 or p.HasField("ignore_label"):
        raise ctx.unsupported("Accuracy with axis != 1 or ignore_label has no Caffe2 equivalent")
    k = int(p.top_k)
    ctx.op("Accuracy", list(ctx.layer.bottom), [ctx.layer.top[0]], top_k=k if k != 1 else None)
    return ctx.done(())
