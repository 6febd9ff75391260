"""Top-k selection: TopK and FlexibleTopK (ties go to the lower index, as in Caffe2's heaps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, prod, prod_known
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

INT64 = np.dtype(np.int64)


def _topk_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    k = op.int_arg("k")
    if x.shape is None:
        out = [TensorInfo(None, x.dtype), TensorInfo(None, INT64)]
    else:
        axis = canonical_axis(op.int_arg("axis"), len(x.shape), op)
        shape = list(x.shape)
        shape[axis] = k if k >= 0 else None
        out = [TensorInfo(tuple(shape), x.dtype), TensorInfo(tuple(shape), INT64)]
    if len(op.outputs) > 2:
        out.append(TensorInfo((prod_known(out[1].shape) if out[1].shape is not None else None,), INT64))
    return out


@register_op(
    "TopK",
    inputs=1,
    outputs=(2, 3),
    args=(Arg("k", -1, "number of values to keep"), Arg("axis", -1, "axis to search")),
    infer=_topk_infer,
    doc="The k largest values along `axis`, in descending order (ties: lower index first), their "
    "indices (int64) and, as optional output 2, the indices into the flattened X.",
    input_names=("X",),
    output_names=("Values", "Indices", "Flatten_indices"),
)
def topk(op: OpInfo) -> Callable[..., Any]:
    k = op.int_arg("k")
    if k < 1:
        raise ArgumentError(f"{op.label()}: k must be a positive integer, got {k}")
    axis_arg = op.int_arg("axis")

    def run(x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(x)
        axis = canonical_axis(axis_arg, x.ndim, op)
        if k > x.shape[axis]:
            raise ArgumentError(f"{op.label()}: k {k} exceeds dim {axis} of X {x.shape}")
        moved = np.moveaxis(x, axis, -1)
        # A stable sort of the negated values keeps the lower index first among equal values.
        key = moved.astype(INT64) if x.dtype.kind in "biu" else moved
        order = np.argsort(-key, axis=-1, kind="stable")[..., :k]
        values = np.take_along_axis(moved, order, axis=-1)
        idx = np.moveaxis(order, -1, axis).astype(INT64)
        values = np.moveaxis(values, -1, axis)
        # Flattened index: position of each picked element in X's row-major layout.
        grids = np.indices(idx.shape, dtype=INT64)
        grids[axis] = idx
        flat = np.ravel_multi_index(tuple(grids), x.shape).reshape(-1).astype(INT64) if idx.size else np.zeros(0, INT64)
        return values, idx, flat

    return run


@register_op(
    "FlexibleTopK",
    inputs=2,
    outputs=2,
    infer=lambda op, ins: [TensorInfo((None,), ins[0].dtype), TensorInfo((None,), INT64)],
    doc="TopK with its own k per row: X viewed as (rows, D) over its last dim, K (rows,) int64; outputs "
    "the concatenated top values of every row (descending, ties: lower index first) and their "
    "indices within the row (int64).",
    input_names=("X", "K"),
    output_names=("Values", "Indices"),
)
def flexible_top_k(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, k: Any) -> tuple[np.ndarray, np.ndarray]:
        a, kk = np.asarray(x), np.asarray(k).reshape(-1)
        if a.ndim == 0:
            raise ArgumentError(f"{op.label()}: X must have rank >= 1")
        rows = a.reshape(-1, a.shape[-1]) if a.size else np.zeros((prod(a.shape[:-1]), a.shape[-1]), a.dtype)
        if kk.size != rows.shape[0] or kk.dtype.kind not in "iu":
            raise ArgumentError(f"{op.label()}: K must hold one integer per row ({rows.shape[0]}), got {kk.shape}")
        if np.any(kk <= 0) or np.any(kk > rows.shape[1]):
            raise ArgumentError(f"{op.label()}: every k must lie in [1, {rows.shape[1]}], got {kk.tolist()}")
        key = rows.astype(INT64) if a.dtype.kind in "biu" else rows
        vals, idx = [], []
        for r, n in enumerate(kk.tolist()):
            order = np.argsort(-key[r], kind="stable")[:n]
            vals.append(rows[r, order])
            idx.append(order.astype(INT64))
        if not vals:
            return np.zeros(0, a.dtype), np.zeros(0, INT64)
        return np.concatenate(vals), np.concatenate(idx)

    return run
