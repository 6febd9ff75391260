"""Top-k selection: TopK and FlexibleTopK (ties go to the lower index, as in Caffe2's heaps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, prod, prod_known
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

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
        n = x.shape[axis]
        kk = min(k, n)
        moved = np.moveaxis(x, axis, -1)
        # A stable sort of the negated values keeps the lower index first among equal values.
        key = moved.astype(INT64) if x.dtype.kind in "biu" else moved
        order = np.argsort(-key, axis=-1, kind="stable")[..., :kk]
        values = np.take_along_axis(moved, order, axis=-1)
        # Flattened index: position of each picked element in X's row-major layout.
        idx_m = np.moveaxis(order, -1, axis).astype(INT64)
        grids = np.indices(idx_m.shape, dtype=INT64)
        grids[axis] = idx_m
        flat: np.ndarray = (
            np.asarray(np.ravel_multi_index(tuple(grids), x.shape), dtype=INT64) if idx_m.size else idx_m.copy()
        )
        flat = np.moveaxis(flat, axis, -1)
        if kk < k:
            # k beyond the axis: Caffe2 pads values with 0 and both index outputs with -1.
            pad = [(0, 0)] * (order.ndim - 1) + [(0, k - kk)]
            values = np.pad(values, pad, constant_values=0)
            order = np.pad(order, pad, constant_values=-1)
            flat = np.pad(flat, pad, constant_values=-1)
        idx = np.moveaxis(order, -1, axis).astype(INT64)
        values = np.moveaxis(values, -1, axis)
        flat = np.moveaxis(flat, -1, axis).reshape(-1)
        return values, idx, flat

    return run


@register_gradient("TopK")
def _topk_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("TopKGradient", [g.GO(0), g.O(1), g.I(0)], [g.GI(0)])])


@register_op(
    "TopKGradient",
    inputs=3,
    args=(Arg("axis", -1, "the forward axis"), Arg("k", -1, "the forward k (unused)")),
    infer=lambda op, ins: [TensorInfo(ins[2].shape, ins[0].dtype)],
    doc="Gradient of TopK: inputs dValues, Indices, X; dX is zero except at the picked positions, "
    "which get their dValues (padding indices -1 are skipped).",
    input_names=("dValues", "Indices", "X"),
    output_names=("dX",),
)
def topk_gradient(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")

    def run(dv: Any, indices: Any, x: Any) -> tuple[np.ndarray]:
        dv, ii, xs = np.asarray(dv), np.asarray(indices).astype(INT64), np.asarray(x)
        axis = canonical_axis(axis_arg, xs.ndim, op)
        if dv.shape != ii.shape:
            raise ArgumentError(f"{op.label()}: dValues {dv.shape} and Indices {ii.shape} differ in shape")
        d = np.moveaxis(dv, axis, -1).reshape(-1, dv.shape[axis])
        i = np.moveaxis(ii, axis, -1).reshape(-1, ii.shape[axis])
        moved_shape: tuple[int, ...] = xs.shape[:axis] + xs.shape[axis + 1 :] + (xs.shape[axis],)
        out = np.zeros((d.shape[0], xs.shape[axis]), dv.dtype)
        rows = np.repeat(np.arange(d.shape[0]), i.shape[1]).reshape(i.shape)
        keep = i >= 0
        np.add.at(out, (rows[keep], i[keep]), d[keep])
        return (np.moveaxis(out.reshape(moved_shape), -1, axis),)

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
