"""Indexing: Gather, BatchGather, BooleanMask, OneHot, LengthsToRanges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

INT64 = np.dtype(np.int64)


def gather_shape(data: tuple[Any, ...], indices: tuple[Any, ...], axis: int, match_outer: bool) -> tuple[Any, ...]:
    """Caffe2's Gather output shape (a data dim of 0 at `axis` keeps data's shape, as Caffe2 does)."""
    if data[axis] == 0:
        return tuple(data)
    inner = tuple(indices[axis:]) if match_outer else tuple(indices)
    return tuple(data[:axis]) + inner + tuple(data[axis + 1 :])


def _gather_infer(default_axis: int) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        d, i = ins
        if d.shape is None or i.shape is None:
            return [TensorInfo(None, d.dtype)]
        axis = canonical_axis(op.int_arg("axis", default_axis), len(d.shape), op)
        match_outer = op.bool_arg("match_outer")
        if match_outer and len(i.shape) < axis:
            raise ShapeInferenceError(f"{op.label()}: match_outer needs indices {i} of rank >= axis {axis}")
        return [TensorInfo(gather_shape(d.shape, i.shape, axis, match_outer), d.dtype)]

    return infer


def _gather_factory(default_axis: int, wrap_default: bool | None) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        axis_arg = op.int_arg("axis", default_axis)
        match_outer = op.bool_arg("match_outer")
        # Caffe2 wraps negative indices by default only for Gather on axis 0 (its ONNX export relies on it).
        wrap = (
            op.bool_arg("wrap_indices")
            if op.has("wrap_indices")
            else (axis_arg == 0 if wrap_default is None else wrap_default)
        )

        def run(data: Any, indices: Any) -> tuple[np.ndarray]:
            data, idx = np.asarray(data), np.asarray(indices)
            if idx.dtype.kind not in "iu":
                raise ArgumentError(f"{op.label()}: indices must be int32 or int64, got {idx.dtype}")
            if data.ndim == 0:
                raise ArgumentError(f"{op.label()}: DATA must have rank >= 1")
            axis = canonical_axis(axis_arg, data.ndim, op)
            shape = gather_shape(data.shape, idx.shape, axis, match_outer)
            if data.shape[axis] == 0 or 0 in shape:
                return (np.zeros(shape, data.dtype),)
            dim = data.shape[axis]
            ii = idx.astype(np.int64)
            if wrap:
                ii = np.where(ii < 0, ii + dim, ii)
            if np.any(ii < 0) or np.any(ii >= dim):
                raise ArgumentError(
                    f"{op.label()}: an index is out of range [0, {dim}) for axis {axis} of {data.shape}"
                )
            if not match_outer:
                return (np.take(data, ii, axis=axis),)
            if idx.shape[:axis] != data.shape[:axis]:
                raise ArgumentError(
                    f"{op.label()}: match_outer needs indices {idx.shape} to start with data's outer dims {data.shape[:axis]}"
                )
            outer = int(np.prod(data.shape[:axis], dtype=np.int64))
            d2 = data.reshape((outer,) + data.shape[axis:])
            i2 = ii.reshape(outer, -1)
            out = np.stack([np.take(d2[b], i2[b], axis=0) for b in range(outer)]) if outer else d2[:0]
            return (out.reshape(shape),)

        return run

    return factory


register_op(
    "Gather",
    inputs=2,
    args=(
        Arg("axis", 0, "the axis of DATA that INDICES select along"),
        Arg("match_outer", 0, "INDICES share DATA's dims before `axis` (one index set per outer position)"),
        Arg("wrap_indices", 0, "negative indices count from the end (default: on for axis 0 only)"),
    ),
    infer=_gather_infer(0),
    doc="Select slices of DATA along `axis` by INDICES: output shape is "
    "DATA.shape[:axis] + INDICES.shape + DATA.shape[axis+1:].",
    input_names=("DATA", "INDICES"),
    output_names=("OUTPUT",),
)(_gather_factory(0, None))

register_op(
    "BatchGather",
    inputs=2,
    args=(
        Arg("axis", 1, "the axis of DATA that INDICES select along"),
        Arg("match_outer", 0, "INDICES share DATA's dims before `axis`"),
    ),
    infer=_gather_infer(1),
    doc="Gather along axis 1 (the batch dim stays first).",
    input_names=("DATA", "INDICES"),
    output_names=("OUTPUT",),
)(_gather_factory(1, False))


def _mask_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    d = ins[0]
    shape = None if d.shape is None else (None,) + tuple(d.shape[1:])
    return [TensorInfo(shape, d.dtype), TensorInfo((None,), INT64)][: len(op.outputs)]


@register_op(
    "BooleanMask",
    inputs=2,
    outputs=(1, 2),
    infer=_mask_infer,
    doc="The rows of `data` where the 1-D bool `mask` is true; optional output 1 gives their indices (int64).",
    input_names=("data", "mask"),
    output_names=("masked_data", "masked_indices"),
)
def boolean_mask(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
        data, mask = np.asarray(data), np.asarray(mask)
        if mask.ndim != 1 or mask.dtype != np.bool_:
            raise ArgumentError(f"{op.label()}: mask must be a 1-D bool tensor, got {mask.dtype} {mask.shape}")
        if data.ndim == 0 or data.shape[0] != mask.shape[0]:
            raise ArgumentError(f"{op.label()}: mask has {mask.shape[0]} values for data of shape {data.shape}")
        return data[mask], np.flatnonzero(mask).astype(INT64)

    return run


@register_op(
    "OneHot",
    inputs=2,
    infer=lambda op, ins: [
        TensorInfo(
            None if ins[0].shape is None else (ins[0].shape[0] if ins[0].shape else None, None), np.dtype(np.float32)
        )
    ],
    doc="One-hot rows (float32, shape (N, index_size)) for the int64 indices (N,) and the scalar index_size.",
    input_names=("indices", "index_size_tensor"),
    output_names=("one_hots",),
)
def one_hot(op: OpInfo) -> Callable[..., Any]:
    def run(indices: Any, size: Any) -> tuple[np.ndarray]:
        idx, sz = np.asarray(indices), np.asarray(size)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ArgumentError(f"{op.label()}: indices must be a 1-D integer tensor, got {idx.dtype} {idx.shape}")
        if sz.size != 1 or sz.dtype.kind not in "iu":
            raise ArgumentError(f"{op.label()}: index_size must be one integer, got {sz.dtype} {sz.shape}")
        n = int(sz.reshape(-1)[0])
        if n < 0 or np.any(idx < 0) or np.any(idx >= n):
            raise ArgumentError(f"{op.label()}: indices {idx.tolist()} must lie in [0, {n})")
        out = np.zeros((idx.shape[0], n), np.float32)
        out[np.arange(idx.shape[0]), idx] = 1
        return (out,)

    return run


@register_op(
    "LengthsToRanges",
    infer=lambda op, ins: [TensorInfo(None if ins[0].shape is None else (*ins[0].shape, 2), np.dtype(np.int32))],
    doc="For segment lengths (N,) the (offset, length) pair of each segment, shape (N, 2) int32.",
    input_names=("lengths",),
    output_names=("ranges",),
)
def lengths_to_ranges(op: OpInfo) -> Callable[..., Any]:
    def run(lengths: Any) -> tuple[np.ndarray]:
        lens = np.asarray(lengths)
        if lens.ndim != 1 or lens.dtype.kind not in "iu" or np.any(lens < 0):
            raise ArgumentError(f"{op.label()}: lengths must be a 1-D tensor of nonnegative integers")
        lens = lens.astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int32) if lens.size else lens
        return (np.stack([offsets, lens], axis=1) if lens.size else np.zeros((0, 2), np.int32),)

    return run


@register_op(
    "Find",
    inputs=2,
    args=(Arg("missing_value", -1, "index returned for queries not in the index"),),
    infer=lambda op, ins: [ins[1].with_dtype(np.int32)],
    doc="For each query, its position in the 1-D `index` tensor (the last one when repeated), or "
    "`missing_value` (int32).",
    input_names=("index", "query"),
    output_names=("query_indices",),
)
def find(op: OpInfo) -> Callable[..., Any]:
    missing = op.int_arg("missing_value")

    def run(index: Any, query: Any) -> tuple[np.ndarray]:
        idx, q = np.asarray(index), np.asarray(query)
        if idx.ndim != 1 or idx.dtype != q.dtype or idx.dtype.kind not in "iu":
            raise ArgumentError(
                f"{op.label()}: index must be 1-D and of the query's integer dtype, got {idx.dtype} {idx.shape} "
                f"and {q.dtype}"
            )
        where = {int(v): j for j, v in enumerate(idx.tolist())}
        out = [where.get(int(v), missing) for v in q.reshape(-1).tolist()]
        return (np.asarray(out, dtype=np.int32).reshape(q.shape),)

    return run


@register_op(
    "Unique",
    outputs=(1, 2),
    infer=lambda op, ins: [TensorInfo((None,), ins[0].dtype), TensorInfo(ins[0].shape, np.dtype(np.int32))][
        : len(op.outputs)
    ],
    doc="The distinct values of the 1-D input (sorted); optional output 1 maps each input element to "
    "its value's position in output 0 (int32).",
    input_names=("indices",),
    output_names=("unique_indices", "remapping"),
)
def unique(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(x)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ArgumentError(f"{op.label()}: input must be a 1-D integer tensor, got {a.dtype} {a.shape}")
        values, inverse = np.unique(a, return_inverse=True)
        return values.astype(a.dtype), inverse.reshape(a.shape).astype(np.int32)

    return run


@register_op(
    "FindDuplicateElements",
    infer=lambda op, ins: [TensorInfo((None,), INT64)],
    doc="Indices (int64) of the elements of the 1-D input equal to an earlier element.",
    input_names=("data",),
    output_names=("indices",),
)
def find_duplicate_elements(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any) -> tuple[np.ndarray]:
        d = np.asarray(data)
        if d.ndim != 1:
            raise ArgumentError(f"{op.label()}: data must be 1-D, got shape {d.shape}")
        seen: set[Any] = set()
        dup = []
        for i, v in enumerate(d.tolist()):
            if v in seen:
                dup.append(i)
            seen.add(v)
        return (np.asarray(dup, dtype=INT64),)

    return run
