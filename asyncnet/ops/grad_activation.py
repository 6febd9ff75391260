"""Gradients of activations: Relu, ReluN, Sigmoid, Tanh, Softmax, LeakyRelu, Elu, Clip.

Caffe2 computes these from the forward *output* Y (inputs [Y, dY]), which is
why the forward ops may run in place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, prod
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, same_as_input
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

_GRAD_DOC = "Inputs Y (the forward output) and dY; output dX."


def _y_dy_maker(grad_type: str) -> Callable[[pb.OperatorDef, list[str | None]], GradientSpec]:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        return g.spec([g.op_def(grad_type, [g.O(0), g.GO(0)], [g.GI(0)])])

    return maker


def _register_y_grad(
    fwd: str, grad: str, args: tuple[Arg, ...], fn: Callable[[OpInfo], Callable[[Any, Any], np.ndarray]], doc: str
) -> None:
    register_gradient(fwd)(_y_dy_maker(grad))

    def factory(op: OpInfo) -> Callable[..., Any]:
        compute = fn(op)

        def run(y: Any, dy: Any) -> tuple[np.ndarray]:
            y, dy = np.asarray(y), np.asarray(dy)
            if y.shape != dy.shape:
                raise ValueError(f"Y {y.shape} and dY {dy.shape} must have one shape")
            return (np.asarray(compute(y, dy)).astype(dy.dtype, copy=False),)

        return run

    register_op(
        grad,
        inputs=2,
        outputs=1,
        allow_inplace=[(1, 0)],
        args=args,
        infer=same_as_input(1),
        doc=f"{doc} {_GRAD_DOC}",
        input_names=("Y", "dY"),
        output_names=("dX",),
    )(factory)


_register_y_grad("Relu", "ReluGradient", (), lambda op: lambda y, dy: np.where(y > 0, dy, 0), "dX = dY where Y > 0.")
_register_y_grad(
    "ReluN",
    "ReluNGradient",
    (Arg("n", 6.0, "the forward cap"),),
    lambda op: (lambda n: lambda y, dy: np.where((y > 0) & (y < n), dy, 0))(op.float_arg("n")),
    "dX = dY where 0 < Y < n.",
)
_register_y_grad("Sigmoid", "SigmoidGradient", (), lambda op: lambda y, dy: dy * y * (1 - y), "dX = dY * Y * (1 - Y).")
_register_y_grad("Tanh", "TanhGradient", (), lambda op: lambda y, dy: dy * (1 - y * y), "dX = dY * (1 - Y^2).")
_register_y_grad(
    "LeakyRelu",
    "LeakyReluGradient",
    (Arg("alpha", 0.01, "the forward slope for negative inputs"),),
    lambda op: (lambda a: lambda y, dy: np.where(y > 0, dy, dy * a))(op.float_arg("alpha")),
    "dX = dY where Y > 0, else alpha * dY.",
)
_register_y_grad(
    "Elu",
    "EluGradient",
    (Arg("alpha", 1.0, "the forward alpha"),),
    lambda op: (lambda a: lambda y, dy: np.where(y > 0, dy, dy * (y + a)))(op.float_arg("alpha")),
    "dX = dY where Y > 0, else dY * (Y + alpha).",
)


def _clip_grad(op: OpInfo) -> Callable[[Any, Any], np.ndarray]:
    lo = op.float_arg("min") if op.has("min") else -np.inf
    hi = op.float_arg("max") if op.has("max") else np.inf
    return lambda y, dy: np.where((y > lo) & (y < hi), dy, 0)


_register_y_grad(
    "Clip",
    "ClipGradient",
    (Arg("min", None, "forward lower bound"), Arg("max", None, "forward upper bound")),
    _clip_grad,
    "dX = dY where min < Y < max (strictly, as Caffe2).",
)


def softmax_grad(y: np.ndarray, dy: np.ndarray, axis: int) -> np.ndarray:
    """dX = Y * (dY - rowsum(dY * Y)) with rows as in Caffe2's 2-D coercion at ``axis``."""
    n = prod(y.shape[:axis])
    y2 = y.reshape(n, -1) if y.size else y.reshape(n, prod(y.shape[axis:]))
    d2 = dy.reshape(y2.shape)
    dx = y2 * (d2 - (d2 * y2).sum(axis=1, keepdims=True))
    out: np.ndarray = dx.reshape(y.shape)
    return out


register_gradient("Softmax")(_y_dy_maker("SoftmaxGradient"))


@register_op(
    "SoftmaxGradient",
    inputs=2,
    outputs=1,
    allow_inplace=[(1, 0)],
    args=(Arg("axis", 1, "the forward axis"),),
    infer=same_as_input(1),
    doc=f"Softmax gradient: dX = Y * (dY - sum(dY * Y)) per row. {_GRAD_DOC}",
    input_names=("Y", "dY"),
    output_names=("dX",),
)
def softmax_gradient(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")

    def run(y: Any, dy: Any) -> tuple[np.ndarray]:
        y, dy = np.asarray(y), np.asarray(dy)
        axis = canonical_axis(axis_arg, y.ndim, op)
        return (softmax_grad(y, dy, axis).astype(dy.dtype, copy=False),)

    return run
