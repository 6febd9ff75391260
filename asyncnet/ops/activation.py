"""Activations: Relu, ReluN, LeakyRelu, Elu, Selu, Sigmoid, Tanh, Softmax, Glu and friends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._buffers import OutputBuffer
from asyncnet.ops._util import canonical_axis
from asyncnet.ops._zeros import relu_into
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, same_as_input


@register_op("Relu", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = max(X, 0).")
def relu(op: OpInfo) -> Callable[..., Any]:
    buffer = OutputBuffer.for_output(op)

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        if type(x) is not np.ndarray:
            return (np.maximum(x, 0).astype(np.asarray(x).dtype, copy=False),)
        # An in-place Relu (X and Y one blob) writes a buffer of its own, not X: X may be an
        # array the user fed or still holds. The producer's buffer and this one are then both
        # reused on the next run (see asyncnet.ops._buffers).
        return (relu_into(x, buffer.take(x.shape, x.dtype)),)

    return run


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so that exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


@register_op("Sigmoid", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = 1 / (1 + exp(-X)).")
def sigmoid(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (_sigmoid(np.asarray(x)),)


@register_op("Tanh", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = tanh(X).")
def tanh(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.tanh(x),)


def softmax_2d(x: np.ndarray, axis: int) -> np.ndarray:
    """Caffe2's Softmax: X viewed as [prod(dims[:axis]), prod(dims[axis:])], normalized per row."""
    n = int(np.prod(x.shape[:axis], dtype=np.int64))
    flat = x.reshape(n, -1) if x.size else x.reshape(n, int(np.prod(x.shape[axis:], dtype=np.int64)))
    m = flat.max(axis=1, keepdims=True) if flat.size else flat
    e = np.exp(flat - m)
    out = e / e.sum(axis=1, keepdims=True) if flat.size else e
    result: np.ndarray = out.reshape(x.shape).astype(x.dtype, copy=False)
    return result


@register_op(
    "Softmax",
    allow_inplace=[(0, 0)],
    args=(Arg("axis", 1, "dims from `axis` on are normalized together (the input is coerced to 2-D)"),),
    infer=same_as_input(),
    doc="Softmax over the trailing dims from `axis` (Caffe2 coerces X to 2-D at `axis`).",
)
def softmax(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        return (softmax_2d(x, canonical_axis(axis_arg, x.ndim, op)),)

    return run


def _elementwise(fn: Any) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        with np.errstate(over="ignore"):
            return (np.asarray(fn(x)).astype(x.dtype, copy=False),)

    return run


@register_op(
    "ReluN",
    allow_inplace=[(0, 0)],
    args=(Arg("n", 6.0, "the upper bound"),),
    infer=same_as_input(),
    doc="Y = min(max(X, 0), n).",
)
def relu_n(op: OpInfo) -> Callable[..., Any]:
    n = op.float_arg("n")
    if n <= 0:
        raise ArgumentError(f"{op.label()}: n must be positive, got {n}")
    return _elementwise(lambda x: np.minimum(np.maximum(x, 0), n))


@register_op(
    "LeakyRelu",
    allow_inplace=[(0, 0)],
    args=(Arg("alpha", 0.01, "slope for negative inputs"),),
    infer=same_as_input(),
    doc="Y = X for X >= 0, alpha * X otherwise.",
)
def leaky_relu(op: OpInfo) -> Callable[..., Any]:
    alpha = op.float_arg("alpha")
    return _elementwise(lambda x: np.where(x >= 0, x, x * np.asarray(alpha, x.dtype)))


@register_op(
    "Elu",
    allow_inplace=[(0, 0)],
    args=(Arg("alpha", 1.0, "scale of the negative part"),),
    infer=same_as_input(),
    doc="Y = X for X > 0, alpha * (exp(X) - 1) otherwise.",
)
def elu(op: OpInfo) -> Callable[..., Any]:
    alpha = op.float_arg("alpha")
    return _elementwise(lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))))


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


@register_op(
    "Selu",
    allow_inplace=[(0, 0)],
    args=(Arg("alpha", SELU_ALPHA, "scale of the negative part"), Arg("scale", SELU_SCALE, "overall scale")),
    infer=same_as_input(),
    doc="Y = scale * X for X > 0, scale * alpha * (exp(X) - 1) otherwise.",
)
def selu(op: OpInfo) -> Callable[..., Any]:
    alpha, sc = op.float_arg("alpha"), op.float_arg("scale")
    return _elementwise(lambda x: sc * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))))


@register_op(
    "ThresholdedRelu",
    allow_inplace=[(0, 0)],
    args=(Arg("alpha", 1.0, "threshold"),),
    infer=same_as_input(),
    doc="Y = X for X > alpha, 0 otherwise.",
)
def thresholded_relu(op: OpInfo) -> Callable[..., Any]:
    alpha = op.float_arg("alpha")
    return _elementwise(lambda x: np.where(x > alpha, x, 0))


@register_op(
    "HardSigmoid",
    allow_inplace=[(0, 0)],
    args=(Arg("alpha", 0.2, "slope"), Arg("beta", 0.5, "offset")),
    infer=same_as_input(),
    doc="Y = clip(alpha * X + beta, 0, 1).",
)
def hard_sigmoid(op: OpInfo) -> Callable[..., Any]:
    alpha, beta = op.float_arg("alpha"), op.float_arg("beta")
    return _elementwise(lambda x: np.clip(alpha * x + beta, 0, 1))


@register_op("Swish", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = X * sigmoid(X).")
def swish(op: OpInfo) -> Callable[..., Any]:
    return _elementwise(lambda x: x * _sigmoid(x))


@register_op("Softsign", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = X / (1 + |X|).")
def softsign(op: OpInfo) -> Callable[..., Any]:
    return _elementwise(lambda x: x / (1 + np.abs(x)))


@register_op("Softplus", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = log(1 + exp(X)).")
def softplus(op: OpInfo) -> Callable[..., Any]:
    # max(x, 0) + log1p(exp(-|x|)) never overflows.
    return _elementwise(lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))))


def _glu_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None:
        return [x]
    axis = canonical_axis(op.int_arg("dim"), len(x.shape), op, "dim")
    d = x.shape[axis]
    if d is not None and d % 2:
        raise ShapeInferenceError(f"{op.label()}: dim {axis} of X {x} must be even")
    shape = list(x.shape)
    shape[axis] = None if d is None else d // 2
    return [x.with_shape(shape)]


@register_op(
    "Glu",
    args=(Arg("dim", -1, "the axis split in halves"),),
    infer=_glu_infer,
    doc="Gated linear unit: X split in halves A, B along `dim`; Y = A * sigmoid(B).",
)
def glu(op: OpInfo) -> Callable[..., Any]:
    dim = op.int_arg("dim")

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        axis = canonical_axis(dim, x.ndim, op, "dim")
        if x.shape[axis] % 2:
            raise ArgumentError(f"{op.label()}: dim {axis} of X {x.shape} must be even")
        a, b = np.split(x, 2, axis=axis)
        return ((a * _sigmoid(b)).astype(x.dtype, copy=False),)

    return run
