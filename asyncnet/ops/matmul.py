"""Matrix products: MatMul, BatchMatMul, DotProduct, ElementwiseLinear."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, prod, prod_known
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, broadcast_shapes


def _matmul_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    a, b = ins[0], ins[1]
    if len(ins) > 2:
        return [TensorInfo(ins[2].shape, a.dtype)]
    if a.shape is None or b.shape is None:
        return [TensorInfo((None, None), a.dtype)]
    ax_a = canonical_axis(op.int_arg("axis_a"), len(a.shape), op, "axis_a")
    ax_b = canonical_axis(op.int_arg("axis_b"), len(b.shape), op, "axis_b")
    a2 = (prod_known(a.shape[:ax_a]), prod_known(a.shape[ax_a:]))
    b2 = (prod_known(b.shape[:ax_b]), prod_known(b.shape[ax_b:]))
    if op.bool_arg("trans_a"):
        a2 = (a2[1], a2[0])
    if op.bool_arg("trans_b"):
        b2 = (b2[1], b2[0])
    if a2[1] is not None and b2[0] is not None and a2[1] != b2[0]:
        raise ShapeInferenceError(f"{op.label()}: A {a} and B {b} give K={a2[1]} and K={b2[0]}")
    return [TensorInfo((a2[0], b2[1]), a.dtype)]


@register_op(
    "MatMul",
    inputs=(2, 3),
    args=(
        Arg("axis_a", 1, "A is flattened to 2-D at this axis"),
        Arg("axis_b", 1, "B is flattened to 2-D at this axis"),
        Arg("trans_a", 0, "transpose A (after flattening)"),
        Arg("trans_b", 0, "transpose B (after flattening)"),
    ),
    infer=_matmul_infer,
    doc="Y = A B for 2-D views of A and B (flattened at `axis_a`/`axis_b`, optionally transposed); "
    "with a third input Y takes that input's shape (Caffe2's gradient makers use it).",
    input_names=("A", "B", "shape_like"),
    output_names=("Y",),
)
def matmul(op: OpInfo) -> Callable[..., Any]:
    ax_a_arg, ax_b_arg = op.int_arg("axis_a"), op.int_arg("axis_b")
    ta, tb = op.bool_arg("trans_a"), op.bool_arg("trans_b")

    def run(a: Any, b: Any, like: Any = None) -> tuple[np.ndarray]:
        a, b = np.asarray(a), np.asarray(b)
        ax_a = canonical_axis(ax_a_arg, a.ndim, op, "axis_a")
        ax_b = canonical_axis(ax_b_arg, b.ndim, op, "axis_b")
        a2 = a.reshape(prod(a.shape[:ax_a]), prod(a.shape[ax_a:]))
        b2 = b.reshape(prod(b.shape[:ax_b]), prod(b.shape[ax_b:]))
        if ta:
            a2 = a2.T
        if tb:
            b2 = b2.T
        if a2.shape[1] != b2.shape[0]:
            raise ArgumentError(
                f"{op.label()}: A {a.shape} as {a2.shape} and B {b.shape} as {b2.shape} do not multiply"
            )
        y = np.matmul(a2, b2).astype(a.dtype, copy=False)
        if like is not None:
            if y.size != np.size(like):
                raise ArgumentError(
                    f"{op.label()}: product {y.shape} cannot take the shape {np.shape(like)} of input 2"
                )
            y = y.reshape(np.shape(like))
        return (y,)

    return run


def _bmm_shapes(
    op: OpInfo, a: tuple[Any, ...], b: tuple[Any, ...], ta: bool, tb: bool, broadcast: bool
) -> tuple[Any, ...]:
    """Output shape of BatchMatMul (dims may be None); raises ShapeInferenceError on mismatch."""
    if len(a) == 0 or len(b) == 0:
        raise ShapeInferenceError(f"{op.label()}: inputs must have rank >= 1, got {a} and {b}")
    if len(a) == 1 and len(b) == 1:
        _check_k(op, a[0], b[0], a, b)
        return (1,)
    if len(a) == 1:
        k_b, n = (b[-1], b[-2]) if tb else (b[-2], b[-1])
        _check_k(op, a[0], k_b, a, b)
        return tuple(b[:-2]) + (n,)
    if len(b) == 1:
        m, k_a = (a[-1], a[-2]) if ta else (a[-2], a[-1])
        _check_k(op, k_a, b[0], a, b)
        return tuple(a[:-2]) + (m,)
    m, k_a = (a[-1], a[-2]) if ta else (a[-2], a[-1])
    k_b, n = (b[-1], b[-2]) if tb else (b[-2], b[-1])
    _check_k(op, k_a, k_b, a, b)
    if broadcast:
        try:
            batch = broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
        except Exception as e:
            raise ShapeInferenceError(f"{op.label()}: batch dims of A {a} and B {b} do not broadcast") from e
        assert batch is not None
    else:
        if len(a) != len(b) or any(x is not None and y is not None and x != y for x, y in zip(a[:-2], b[:-2])):
            raise ShapeInferenceError(
                f"{op.label()}: A {a} and B {b} must have equal batch dims (set broadcast=1 for numpy broadcasting)"
            )
        batch = tuple(a[:-2])
    return tuple(batch) + (m, n)


def _check_k(op: OpInfo, k_a: Any, k_b: Any, a: Any, b: Any) -> None:
    if k_a is not None and k_b is not None and k_a != k_b:
        raise ShapeInferenceError(f"{op.label()}: A {tuple(a)} and B {tuple(b)} disagree on K: {k_a} vs {k_b}")


def _bmm_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    a, b = ins
    if a.shape is None or b.shape is None:
        return [TensorInfo(None, a.dtype)]
    shape = _bmm_shapes(op, a.shape, b.shape, op.bool_arg("trans_a"), op.bool_arg("trans_b"), op.bool_arg("broadcast"))
    return [TensorInfo(shape, a.dtype)]


@register_op(
    "BatchMatMul",
    inputs=2,
    args=(
        Arg("trans_a", 0, "transpose the last two dims of A"),
        Arg("trans_b", 0, "transpose the last two dims of B"),
        Arg("broadcast", 0, "numpy broadcasting of the batch dims (else they must be equal)"),
        Arg("use_scratch", 0, "ignored"),
    ),
    infer=_bmm_infer,
    doc="Batched matrix product over the last two dims of A and B (numpy matmul rules for 1-D inputs; "
    "two 1-D inputs give a shape (1,) dot product).",
    input_names=("A", "B"),
    output_names=("Y",),
)
def batch_matmul(op: OpInfo) -> Callable[..., Any]:
    ta, tb, bc = op.bool_arg("trans_a"), op.bool_arg("trans_b"), op.bool_arg("broadcast")

    def run(a: Any, b: Any) -> tuple[np.ndarray]:
        a, b = np.asarray(a), np.asarray(b)
        try:
            shape = _bmm_shapes(op, a.shape, b.shape, ta, tb, bc)
        except ShapeInferenceError as e:
            raise ArgumentError(str(e)) from None
        a2 = np.swapaxes(a, -1, -2) if ta and a.ndim >= 2 else a
        b2 = np.swapaxes(b, -1, -2) if tb and b.ndim >= 2 else b
        y = np.matmul(a2, b2)
        return (np.asarray(y, dtype=a.dtype).reshape(shape),)

    return run


def _dot_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    n = None if x.shape is None or not x.shape else x.shape[0]
    return [TensorInfo((n,), x.dtype)]


@register_op(
    "DotProduct",
    inputs=2,
    infer=_dot_infer,
    doc="Row-wise dot product of X and Y of one shape (N, ...): output (N,). 1-D inputs multiply elementwise.",
    input_names=("X", "Y"),
    output_names=("Z",),
)
def dot_product(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any) -> tuple[np.ndarray]:
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape or x.ndim == 0:
            raise ArgumentError(f"{op.label()}: X {x.shape} and Y {y.shape} must have one shape of rank >= 1")
        n = x.shape[0]
        prod_xy = (x * y).reshape(n, -1) if x.size else np.zeros((n, 0), x.dtype)
        return (prod_xy.sum(axis=1).astype(x.dtype, copy=False),)

    return run


def _ew_linear_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[0]]


@register_op(
    "ElementwiseLinear",
    inputs=3,
    args=(Arg("axis", 1, "X is viewed as (N, D) split at this axis"),),
    infer=_ew_linear_infer,
    doc="Y = X * a + b with X viewed as (N, D) at `axis` and a, b of size D.",
    input_names=("X", "a", "b"),
    output_names=("Y",),
)
def elementwise_linear(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")

    def run(x: Any, a: Any, b: Any) -> tuple[np.ndarray]:
        x, a, b = np.asarray(x), np.asarray(a), np.asarray(b)
        axis = canonical_axis(axis_arg, x.ndim + 1, op)
        n, d = prod(x.shape[:axis]), prod(x.shape[axis:])
        if a.ndim != 1 or b.ndim != 1 or a.size != d or b.size != d:
            raise ArgumentError(f"{op.label()}: a {a.shape} and b {b.shape} must be 1-D of size D={d} for X {x.shape}")
        y = x.reshape(n, d) * a.reshape(1, d) + b.reshape(1, d)
        return (y.reshape(x.shape).astype(x.dtype, copy=False),)

    return run
