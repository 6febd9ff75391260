"""Fully connected layers: FC, FCTransposed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._buffers import OutputBuffer
from asyncnet.ops._util import canonical_axis, prod, prod_known
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

FC_ARGS = (
    Arg("axis", 1, "X is flattened to 2-D at this axis"),
    Arg("axis_w", 1, "W is flattened to 2-D at this axis"),
    Arg("float16_compute", 0, "ignored (numpy computes in the input precision)"),
)


def _w_split(w_shape: Any, axis_w: int, transposed: bool) -> tuple[Any, Any]:
    """(N dims, K dims) of W flattened at ``axis_w``: [N, K] for FC, [K, N] for FCTransposed."""
    head, tail = w_shape[:axis_w], w_shape[axis_w:]
    return (tail, head) if transposed else (head, tail)


def _fc_infer_for(transposed: bool) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        x, w = ins[0], ins[1]
        if x.shape is None:
            return [TensorInfo(None, x.dtype)]
        axis = canonical_axis(op.int_arg("axis"), len(x.shape), op)
        if w.shape is None:
            # The rank is known from X; N may still come from the bias.
            b = ins[2] if len(ins) > 2 else None
            n = b.shape[0] if b is not None and b.shape is not None and len(b.shape) == 1 else None
            return [TensorInfo(tuple(x.shape[:axis]) + (n,), x.dtype)]
        axis_w = canonical_axis(op.int_arg("axis_w"), len(w.shape), op, "axis_w")
        n_dims, k_dims = _w_split(w.shape, axis_w, transposed)
        k_x, k_w = prod_known(x.shape[axis:]), prod_known(k_dims)
        if k_x is not None and k_w is not None and k_x != k_w:
            raise ShapeInferenceError(
                f"{op.label()}: X {x} flattened at axis {axis} has K={k_x} but W {w} gives K={k_w}"
            )
        return [TensorInfo(tuple(x.shape[:axis]) + (prod_known(n_dims),), x.dtype)]

    return infer


def _fc_dims(
    op: OpInfo, x: np.ndarray, w: np.ndarray, b: np.ndarray, axis_arg: int, axis_w_arg: int, transposed: bool
) -> tuple[int, int, int, int]:
    """(axis, M, K, N) of an FC run, checking that X, W and b agree."""
    axis = canonical_axis(axis_arg, x.ndim, op)
    axis_w = canonical_axis(axis_w_arg, w.ndim, op, "axis_w")
    m, k = prod(x.shape[:axis]), prod(x.shape[axis:])
    n_dims, k_dims = _w_split(w.shape, axis_w, transposed)
    n = prod(n_dims)
    if prod(k_dims) != k:
        raise ArgumentError(f"X {x.shape} flattened at axis {axis} has K={k}, W {w.shape} has K={prod(k_dims)}")
    if b.size != n:
        raise ArgumentError(f"bias has {b.size} values, W gives N={n}")
    return axis, m, k, n


@register_op(
    "FC",
    inputs=3,
    outputs=1,
    args=FC_ARGS,
    infer=_fc_infer_for(transposed=False),
    doc="Y = X W^T + b, with X flattened to [M, K] at `axis` and W to [N, K] at `axis_w`.",
    input_names=("X", "W", "b"),
    output_names=("Y",),
)
def fc(op: OpInfo) -> Callable[..., Any]:
    axis_arg, axis_w_arg = op.int_arg("axis"), op.int_arg("axis_w")
    buffer = OutputBuffer.for_output(op)

    def run(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray]:
        axis, m, k, n = _fc_dims(op, x, w, b, axis_arg, axis_w_arg, transposed=False)
        if x.dtype == w.dtype == b.dtype and x.dtype.kind == "f":
            # The GEMM writes the final array directly: [M, N] is Y's memory in any leading shape.
            y = buffer.take((*x.shape[:axis], n), x.dtype)
            np.matmul(x.reshape(m, k), w.reshape(n, k).T, out=y.reshape(m, n))
            y.reshape(m, n)[...] += b.reshape(1, n)
            return (y,)
        y2 = x.reshape(m, k) @ w.reshape(n, k).T
        y2 += b.reshape(1, n)
        return (y2.reshape(*x.shape[:axis], n).astype(x.dtype, copy=False),)

    return run


@register_op(
    "FCTransposed",
    inputs=3,
    outputs=1,
    args=FC_ARGS,
    infer=_fc_infer_for(transposed=True),
    doc="Y = X W + b: FC with W stored transposed, W flattened to [K, N] at `axis_w`.",
    input_names=("X", "W", "b"),
    output_names=("Y",),
)
def fc_transposed(op: OpInfo) -> Callable[..., Any]:
    axis_arg, axis_w_arg = op.int_arg("axis"), op.int_arg("axis_w")

    def run(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray]:
        axis, m, k, n = _fc_dims(op, x, w, b, axis_arg, axis_w_arg, transposed=True)
        y = x.reshape(m, k) @ w.reshape(k, n)
        y = y + b.reshape(1, n)
        return (y.reshape(*x.shape[:axis], n).astype(x.dtype, copy=False),)

    return run
