"""Gradients of data movement: Copy, Reshape, Flatten (via ResizeLike), Concat (Split), Split (Concat), Transpose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops.grad_arithmetic import reduce_to_shape
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import make_argument
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


@register_gradient("Copy")
def _copy_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("Copy", [g.GO(0)], [g.GI(0)])])


@register_gradient("Reshape", copy_arguments=False)
def _reshape_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Reshape's second output is the old shape: reshaping the gradient back to it
    # needs no argument.
    g = GradientContext(op, g_out)
    gi = g.GI(0)
    return g.spec([g.op_def("Reshape", [g.GO(0), g.O(1)], [gi, f"_{gi}_dims"])])


@register_gradient("Flatten", copy_arguments=False)
def _flatten_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("ResizeLike", [g.GO(0), g.I(0)], [g.GI(0)])])


@register_op(
    "ResizeLike",
    inputs=2,
    outputs=1,
    allow_inplace=[(0, 0)],
    infer=lambda op, ins: [TensorInfo(ins[1].shape, ins[0].dtype)],
    doc="Y = X with the shape of input 1 (same number of elements).",
    input_names=("data", "shape_like"),
    output_names=("output",),
)
def resize_like(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, like: Any) -> tuple[np.ndarray]:
        x, shape = np.asarray(x), np.shape(like)
        if x.size != int(np.prod(shape, dtype=np.int64)):
            raise ArgumentError(f"cannot give X {x.shape} ({x.size} elements) the shape {shape}")
        return (x.reshape(shape),)

    return run


@register_gradient("Concat")
def _concat_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    grads = [g.GI(i) for i in range(len(op.input))]
    return g.spec([g.op_def("Split", [g.GO(0), g.O(1)], grads)])


@register_gradient("Split")
def _split_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Outputs without a gradient contribute zeros of their shape.
    g = GradientContext(op, g_out)
    ops: list[pb.OperatorDef] = []
    parts: list[str] = []
    for i in range(len(op.output)):
        if g.has_go(i):
            parts.append(g.GO(i))
        else:
            zero = f"_{g.O(i)}_grad_zeros"
            z = g.op_def("ConstantFill", [g.O(i)], [zero], {"value": 0.0})
            ops.append(z)
            parts.append(zero)
    if not any(g.has_go(i) for i in range(len(op.output))):
        return g.spec([])
    gi = g.GI(0)
    ops.append(g.op_def("Concat", parts, [gi, f"_{gi}_dims"]))
    return g.spec(ops)


@register_gradient("Transpose", copy_arguments=False)
def _transpose_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    grad = g.op_def("Transpose", [g.GO(0)], [g.GI(0)])
    axes = g.arg("axes")
    for a in op.arg:
        if a.name != "axes":
            grad.arg.append(a)
    if axes is not None:
        inverse = [0] * len(axes)
        for i, ax in enumerate(axes):
            inverse[int(ax)] = i
        grad.arg.append(make_argument("axes", inverse))
    return g.spec([grad])


register_gradient("NCHW2NHWC")(
    lambda op, g_out: (lambda g: g.spec([g.op_def("NHWC2NCHW", [g.GO(0)], [g.GI(0)])]))(GradientContext(op, g_out))
)
register_gradient("NHWC2NCHW")(
    lambda op, g_out: (lambda g: g.spec([g.op_def("NCHW2NHWC", [g.GO(0)], [g.GI(0)])]))(GradientContext(op, g_out))
)


@register_gradient("ChannelShuffle")
def _channel_shuffle_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("ChannelShuffleGradient", [g.GO(0)], [g.GI(0)])])


@register_op(
    "ChannelShuffleGradient",
    inputs=1,
    outputs=1,
    args=(Arg("group", 1, "the forward group"), Arg("order", "NCHW", "storage order")),
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of ChannelShuffle: the inverse permutation of the channels (C/group groups of group).",
    input_names=("dY",),
    output_names=("dX",),
)
def channel_shuffle_gradient(op: OpInfo) -> Callable[..., Any]:
    group = op.int_arg("group")
    order = str(op.arg("order", "NCHW")).upper()

    def run(dy: Any) -> tuple[np.ndarray]:
        dy = np.asarray(dy)
        ax = 1 if order == "NCHW" else dy.ndim - 1
        c = dy.shape[ax]
        if group < 1 or c % group:
            raise ArgumentError(f"{c} channels are not divisible by group {group}")
        # Forward: channel g * (C/G) + k moves to k * G + g; undo it.
        d = np.moveaxis(dy, ax, -1)
        d = d.reshape(*d.shape[:-1], c // group, group)
        d = np.swapaxes(d, -1, -2).reshape(*d.shape[:-2], c)
        return (np.ascontiguousarray(np.moveaxis(d, -1, ax)),)

    return run


@register_gradient("Tile")
def _tile_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("TileGradient", [g.GO(0), *(g.I(i) for i in range(1, len(op.input)))], [g.GI(0)])])


@register_op(
    "TileGradient",
    inputs=(1, 3),
    outputs=1,
    args=(Arg("tiles", 1, "the forward tiles"), Arg("axis", 0, "the forward axis")),
    infer=lambda op, ins: [TensorInfo(None if ins[0].shape is None else (None,) * len(ins[0].shape), ins[0].dtype)],
    doc="Gradient of Tile: inputs dY, [tiles, axis]; the `tiles` copies along `axis` are summed.",
    input_names=("dY", "tiles", "axis"),
    output_names=("dX",),
)
def tile_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(dy: Any, tiles: Any = None, axis: Any = None) -> tuple[np.ndarray]:
        dy = np.asarray(dy)
        t = op.int_arg("tiles") if tiles is None else int(np.asarray(tiles).reshape(-1)[0])
        a = op.int_arg("axis") if axis is None else int(np.asarray(axis).reshape(-1)[0])
        a = a + dy.ndim if a < 0 else a
        if t < 1 or not 0 <= a < dy.ndim or dy.shape[a] % t:
            raise ArgumentError(f"dY {dy.shape} cannot be split into {t} tiles along axis {a}")
        shape = (*dy.shape[:a], t, dy.shape[a] // t, *dy.shape[a + 1 :])
        return (dy.reshape(shape).sum(axis=a),)

    return run


@register_gradient("Expand")
def _expand_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("ExpandGradient", [g.GO(0), g.I(0)], [g.GI(0)])])


@register_op(
    "ExpandGradient",
    inputs=2,
    outputs=1,
    infer=lambda op, ins: [TensorInfo(ins[1].shape, ins[0].dtype)],
    doc="Gradient of Expand: inputs dY, X; dY summed over the broadcast dims back to X's shape.",
    input_names=("dY", "X"),
    output_names=("dX",),
)
def expand_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(dy: Any, x: Any) -> tuple[np.ndarray]:
        dy, shape = np.asarray(dy), np.shape(x)
        return (reduce_to_shape(dy, tuple(shape)).astype(dy.dtype, copy=False),)

    return run
