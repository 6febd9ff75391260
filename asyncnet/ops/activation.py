"""Activations: Relu, Sigmoid, Tanh, Softmax."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis
from asyncnet.registry import register_op
from asyncnet.schema import Arg, same_as_input


@register_op("Relu", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = max(X, 0).")
def relu(op: OpInfo) -> Callable[..., Any]:
    def run(x: np.ndarray) -> tuple[np.ndarray]:
        return (np.maximum(x, 0).astype(x.dtype, copy=False),)

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
