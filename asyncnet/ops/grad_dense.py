"""Gradient of FC: FCGradient (inputs X, W, dY; outputs dW, db, dX as Caffe2 orders them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, GradientError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, info, prod, register_single_gradient_op
from asyncnet.ops.dense import FC_ARGS
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


@register_gradient("FC")
def _fc_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("FCGradient", [g.I(0), g.I(1), g.GO(0)], [g.GI(1), g.GI(2), g.GI(0)])])


def _fc_grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, w = ins[0], ins[1]
    n = None
    if w.shape is not None:
        axis_w = canonical_axis(op.int_arg("axis_w"), len(w.shape), op, "axis_w")
        dims = w.shape[:axis_w]
        n = None if any(d is None for d in dims) else prod(dims)
    return [w, info(None if n is None else (n,), x.dtype), x][: len(op.outputs)]


@register_op(
    "FCGradient",
    inputs=3,
    outputs=(2, 3),
    args=FC_ARGS,
    infer=_fc_grad_infer,
    doc="FC gradient: dW = dY^T X, db = column sums of dY, dX = dY W (X, W flattened as the forward op).",
    input_names=("X", "W", "dY"),
    output_names=("dW", "db", "dX"),
)
def fc_gradient(op: OpInfo) -> Callable[..., Any]:
    axis_arg, axis_w_arg = op.int_arg("axis"), op.int_arg("axis_w")
    want_dx = len(op.outputs) > 2

    def run(x: Any, w: Any, dy: Any) -> tuple[np.ndarray, ...]:
        x, w, dy = np.asarray(x), np.asarray(w), np.asarray(dy)
        axis = canonical_axis(axis_arg, x.ndim, op)
        axis_w = canonical_axis(axis_w_arg, w.ndim, op, "axis_w")
        m, k = prod(x.shape[:axis]), prod(x.shape[axis:])
        n = prod(w.shape[:axis_w])
        if prod(w.shape[axis_w:]) != k or dy.size != m * n:
            raise ArgumentError(f"X {x.shape}, W {w.shape} and dY {dy.shape} do not fit an FC with M={m} K={k} N={n}")
        x2, w2, dy2 = x.reshape(m, k), w.reshape(n, k), dy.reshape(m, n)
        dw = (dy2.T @ x2).reshape(w.shape).astype(w.dtype, copy=False)
        db = dy2.sum(axis=0).astype(w.dtype, copy=False)
        if not want_dx:
            return dw, db
        dx = (dy2 @ w2).reshape(x.shape).astype(x.dtype, copy=False)
        return dw, db, dx

    return run


@register_gradient("BatchMatMul", copy_arguments=False)
def _batch_matmul_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Caffe2's table: for Y = op(A) op(B), each input gradient is one more BatchMatMul.
    g = GradientContext(op, g_out)
    if g.arg("broadcast", 0):
        raise GradientError("BatchMatMul with broadcast=1 has no gradient (as in Caffe2)")
    ta, tb = bool(g.arg("trans_a", 0)), bool(g.arg("trans_b", 0))
    a, b, dy, da, db = g.I(0), g.I(1), g.GO(0), g.GI(0), g.GI(1)
    both = {"trans_a": 1, "trans_b": 1}
    if ta and tb:
        defs = [([b, dy], da, both), ([dy, a], db, both)]
    elif ta:
        defs = [([b, dy], da, {"trans_b": 1}), ([a, dy], db, {})]
    elif tb:
        defs = [([dy, b], da, {}), ([dy, a], db, {"trans_a": 1})]
    else:
        defs = [([dy, b], da, {"trans_b": 1}), ([a, dy], db, {"trans_a": 1})]
    return g.spec([g.op_def("BatchMatMul", ins, [out], args) for ins, out, args in defs])


register_single_gradient_op("DotProduct", "DotProductGradient", n_inputs=2, n_grads=2)


@register_op(
    "DotProductGradient",
    inputs=3,
    outputs=2,
    infer=lambda op, ins: [ins[0], ins[1]],
    doc="Gradient of the row-wise DotProduct: inputs X, Y, dDot (N,); dX = dDot * Y, dY = dDot * X per row.",
    input_names=("X", "Y", "dDot"),
    output_names=("dX", "dY"),
)
def dot_product_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any, dd: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y, dd = np.asarray(x), np.asarray(y), np.asarray(dd)
        if x.shape != y.shape:
            raise ArgumentError(f"X {x.shape} and Y {y.shape} must have one shape")
        d = dd.reshape((-1,) + (1,) * (x.ndim - 1)) if x.ndim > 1 else dd
        return (d * y).astype(x.dtype, copy=False), (d * x).astype(y.dtype, copy=False)

    return run


@register_gradient("ElementwiseLinear")
def _elementwise_linear_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("ElementwiseLinearGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0), g.GI(1), g.GI(2)])])


@register_op(
    "ElementwiseLinearGradient",
    inputs=3,
    outputs=3,
    args=(Arg("axis", 1, "the forward axis"),),
    infer=lambda op, ins: [ins[1], ins[2], ins[2]],
    doc="Gradient of ElementwiseLinear: inputs dY, X, a; outputs dX = dY * a, da = column sums of dY * X, "
    "db = column sums of dY (X viewed as (N, D) at `axis`).",
    input_names=("dY", "X", "a"),
    output_names=("dX", "da", "db"),
)
def elementwise_linear_gradient(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")

    def run(dy: Any, x: Any, a: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dy, x, a = np.asarray(dy), np.asarray(x), np.asarray(a)
        axis = canonical_axis(axis_arg, x.ndim, op)
        n, d = prod(x.shape[:axis]), prod(x.shape[axis:])
        if a.size != d or dy.shape != x.shape:
            raise ArgumentError(f"X {x.shape}, a {a.shape} and dY {dy.shape} do not fit (D={d})")
        d2, x2 = dy.reshape(n, d), x.reshape(n, d)
        dx = (d2 * a.reshape(1, d)).reshape(x.shape)
        return (
            dx.astype(x.dtype, copy=False),
            (d2 * x2).sum(axis=0).reshape(a.shape).astype(a.dtype),
            d2.sum(axis=0).reshape(a.shape).astype(a.dtype),
        )

    return run


@register_gradient("MatMul", copy_arguments=False)
def _matmul_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Caffe2's table. Each gradient MatMul gets the original operand as a third input: the
    # shape its result takes (A and B may be N-D, flattened at axis_a / axis_b).
    g = GradientContext(op, g_out)
    if len(op.input) != 2:
        raise GradientError(f"MatMul takes 2 inputs for its gradient, got {len(op.input)}")
    ta, tb = bool(g.arg("trans_a", 0)), bool(g.arg("trans_b", 0))
    axis_a, axis_b = int(g.arg("axis_a", 1)), int(g.arg("axis_b", 1))
    a, b, dy, da, db = g.I(0), g.I(1), g.GO(0), g.GI(0), g.GI(1)
    defs: list[tuple[list[str], str, dict[str, int]]]
    if ta and tb:
        defs = [
            ([b, dy, a], da, {"trans_a": 1, "trans_b": 1, "axis_a": axis_b}),
            ([dy, a, b], db, {"trans_a": 1, "trans_b": 1, "axis_b": axis_a}),
        ]
    elif ta:
        defs = [([b, dy, a], da, {"trans_b": 1, "axis_a": axis_b}), ([a, dy, b], db, {"axis_a": axis_a})]
    elif tb:
        defs = [([dy, b, a], da, {"axis_b": axis_b}), ([dy, a, b], db, {"trans_a": 1, "axis_b": axis_a})]
    else:
        defs = [([dy, b, a], da, {"trans_b": 1, "axis_b": axis_b}), ([a, dy, b], db, {"trans_a": 1, "axis_a": axis_a})]
    return g.spec([g.op_def("MatMul", ins, [out], args) for ins, out, args in defs])
