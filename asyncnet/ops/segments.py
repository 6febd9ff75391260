"""Ops on segments described by a lengths vector: LengthsTile, LengthsGather, LengthsRangeFill, LengthsPad,
SplitByLengths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

INT32 = np.dtype(np.int32)


def check_lengths(op: OpInfo, lengths: Any, total: int | None = None, what: str = "lengths") -> np.ndarray:
    """``lengths`` as a 1-D int64 array of nonnegative values (summing to ``total`` when given)."""
    lens = np.asarray(lengths)
    if lens.ndim != 1 or lens.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: {what} must be a 1-D integer tensor, got {lens.dtype} {lens.shape}")
    out = lens.astype(np.int64)
    if np.any(out < 0):
        raise ArgumentError(f"{op.label()}: {what} must be nonnegative, got {out.tolist()}")
    if total is not None and int(out.sum()) != total:
        raise ArgumentError(f"{op.label()}: {what} sum to {int(out.sum())}, expected {total}")
    return out


def _rows_unknown(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    d = ins[0]
    return [TensorInfo(None if d.shape is None or not d.shape else (None,) + tuple(d.shape[1:]), d.dtype)]


@register_op(
    "LengthsTile",
    inputs=2,
    infer=_rows_unknown,
    doc="Repeat row i of DATA lengths[i] times (rows in order).",
    input_names=("DATA", "LENGTHS"),
    output_names=("OUTPUT",),
)
def lengths_tile(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, lengths: Any) -> tuple[np.ndarray]:
        data = np.asarray(data)
        lens = check_lengths(op, lengths)
        if data.ndim == 0 or data.shape[0] != lens.size:
            raise ArgumentError(f"{op.label()}: DATA {data.shape} must have one row per length ({lens.size})")
        return (np.repeat(data, lens, axis=0),)

    return run


@register_op(
    "LengthsGather",
    inputs=3,
    infer=_rows_unknown,
    doc="Concatenate the segments of ITEMS (cut by LENGTHS) picked by INDICES, in INDICES order.",
    input_names=("ITEMS", "LENGTHS", "INDICES"),
    output_names=("OUTPUT",),
)
def lengths_gather(op: OpInfo) -> Callable[..., Any]:
    def run(items: Any, lengths: Any, indices: Any) -> tuple[np.ndarray]:
        items = np.asarray(items)
        if items.ndim == 0:
            raise ArgumentError(f"{op.label()}: ITEMS must have rank >= 1")
        lens = check_lengths(op, lengths, items.shape[0])
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or np.any(idx < 0) or np.any(idx >= lens.size):
            raise ArgumentError(f"{op.label()}: INDICES must be 1-D integers in [0, {lens.size})")
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if lens.size else lens
        rows = [np.arange(starts[i], starts[i] + lens[i]) for i in idx.tolist()]
        pick = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        return (items[pick],)

    return run


@register_op(
    "LengthsRangeFill",
    infer=lambda op, ins: [TensorInfo((None,), INT32)],
    doc="Concatenate range(lengths[i]) for every i (int32).",
    input_names=("lengths",),
    output_names=("range_sequence",),
)
def lengths_range_fill(op: OpInfo) -> Callable[..., Any]:
    def run(lengths: Any) -> tuple[np.ndarray]:
        lens = check_lengths(op, lengths)
        parts = [np.arange(n, dtype=np.int32) for n in lens.tolist()]
        return (np.concatenate(parts) if parts else np.zeros(0, np.int32),)

    return run


@register_op(
    "LengthsPad",
    inputs=2,
    args=(
        Arg("padding_value", -1.0, "value of the padding rows"),
        Arg("target_length", -1, "every segment is padded to this many rows (required, >= each length)"),
    ),
    infer=_rows_unknown,
    doc="Pad every segment of DATA (cut by LENGTHS) with rows of `padding_value` up to `target_length` rows.",
    input_names=("DATA", "LENGTHS"),
    output_names=("OUTPUT",),
)
def lengths_pad(op: OpInfo) -> Callable[..., Any]:
    target = op.int_arg("target_length")
    if target < 0:
        raise ArgumentError(f"{op.label()}: target_length must be set to a nonnegative value, got {target}")
    pad = op.float_arg("padding_value")

    def run(data: Any, lengths: Any) -> tuple[np.ndarray]:
        data = np.asarray(data)
        if data.ndim == 0:
            raise ArgumentError(f"{op.label()}: DATA must have rank >= 1")
        lens = check_lengths(op, lengths, data.shape[0])
        if np.any(lens > target):
            raise ArgumentError(f"{op.label()}: a length exceeds target_length {target}: {lens.tolist()}")
        out = np.full((lens.size * target,) + data.shape[1:], pad, dtype=data.dtype)
        start = 0
        for i, n in enumerate(lens.tolist()):
            out[i * target : i * target + n] = data[start : start + n]
            start += n
        return (out,)

    return run


@register_op(
    "SplitByLengths",
    inputs=2,
    outputs=(1, -1),
    args=(
        Arg("axis", 0, "the axis to split"),
        Arg("use_scaling_lengths", 0, "scale LENGTHS by K = dim / sum(LENGTHS), which must be a whole number"),
    ),
    infer=lambda op, ins: [TensorInfo(None, ins[0].dtype)] * len(op.outputs),
    doc="Split DATA along `axis` into the outputs: LENGTHS is cut into as many equal groups of "
    "consecutive segments as there are outputs, and output k holds the rows of group k. With "
    "use_scaling_lengths every length is multiplied by K, where sum(LENGTHS) * K is the axis' size "
    "(K may be 0 for an empty axis).",
    input_names=("input", "lengths"),
)
def split_by_lengths(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")
    scaling = op.bool_arg("use_scaling_lengths")
    n_out = len(op.outputs)

    def run(data: Any, lengths: Any) -> tuple[np.ndarray, ...]:
        data = np.asarray(data)
        axis = canonical_axis(axis_arg, data.ndim, op)
        dim = data.shape[axis]
        if scaling:
            lens = check_lengths(op, lengths)
            total = int(lens.sum())
            if (total == 0 and dim != 0) or (total and dim % total):
                raise ArgumentError(
                    f"{op.label()}: lengths sum to {total}; with use_scaling_lengths the axis size {dim} must be a "
                    "whole multiple of it"
                )
            lens = lens * (dim // total if total else 1)
        else:
            lens = check_lengths(op, lengths, dim)
        if lens.size % n_out:
            raise ArgumentError(f"{op.label()}: {lens.size} lengths do not divide into {n_out} outputs")
        per = lens.size // n_out
        bounds = np.concatenate([[0], np.cumsum(lens.reshape(n_out, per).sum(axis=1))]).astype(np.int64)
        return tuple(np.take(data, np.arange(bounds[k], bounds[k + 1]), axis=axis) for k in range(n_out))

    return run


@register_op(
    "LengthsSplit",
    inputs=(1, 2),
    args=(Arg("n_split", 0, "number of pieces per length (or give input 1)"),),
    infer=lambda op, ins: [TensorInfo((None,), INT32)],
    doc="Split every length into n_split near-equal parts, the first ones one larger when it does "
    "not divide (int32, n_split values per length).",
    input_names=("LENGTHS", "n_split"),
    output_names=("Y",),
)
def lengths_split(op: OpInfo) -> Callable[..., Any]:
    static = op.int_arg("n_split")
    # With both the argument and input 1, the input wins (as in Caffe2).

    def run(lengths: Any, n_split: Any = None) -> tuple[np.ndarray]:
        lens = check_lengths(op, lengths)
        n = static if n_split is None else int(np.asarray(n_split).reshape(-1)[0])
        if n < 1:
            raise ArgumentError(f"{op.label()}: n_split must be positive, got {n}")
        base = (lens // n)[:, None]
        extra = (np.arange(n)[None, :] < (lens % n)[:, None]).astype(np.int64)
        return ((base + extra).reshape(-1).astype(np.int32),)

    return run


@register_op(
    "ReversePackedSegs",
    inputs=2,
    infer=lambda op, ins: [ins[0]],
    doc="For DATA (T, N, ...) and LENGTHS (N,): reverse the first lengths[n] steps of every sequence n.",
    input_names=("data", "lengths"),
    output_names=("reversed data",),
)
def reverse_packed_segs(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, lengths: Any) -> tuple[np.ndarray]:
        d = np.asarray(data)
        lens = check_lengths(op, lengths)
        if d.ndim < 2 or d.shape[1] != lens.size or np.any(lens > d.shape[0]):
            raise ArgumentError(f"{op.label()}: data {d.shape} must be (T, N, ...) with N={lens.size} and lengths <= T")
        out = d.copy()
        for n, length in enumerate(lens.tolist()):
            out[:length, n] = d[:length, n][::-1]
        return (out,)

    return run


@register_op(
    "RemoveDataBlocks",
    inputs=2,
    infer=_rows_unknown,
    doc="Drop the rows (outer blocks) of DATA listed in INDICES (repeats count once).",
    input_names=("data", "indices"),
    output_names=("shrunk data",),
)
def remove_data_blocks(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, indices: Any) -> tuple[np.ndarray]:
        d = np.asarray(data)
        idx = np.asarray(indices).reshape(-1)
        if d.ndim == 0:
            raise ArgumentError(f"{op.label()}: data must have rank >= 1")
        if idx.size and (idx.dtype.kind not in "iu" or np.any(idx < 0) or np.any(idx >= d.shape[0])):
            raise ArgumentError(f"{op.label()}: indices must be integers in [0, {d.shape[0]})")
        keep = np.ones(d.shape[0], np.bool_)
        keep[idx.astype(np.int64)] = False
        return (d[keep],)

    return run


@register_op(
    "SegmentOneHot",
    inputs=3,
    infer=lambda op, ins: [TensorInfo((None if ins[0].shape is None else ins[0].shape[0], None), np.dtype(np.float32))],
    doc="Row i (float32, width index_size) has a 1 at every index of segment i of INDICES (cut by LENGTHS).",
    input_names=("lengths", "indices", "index_size_tensor"),
    output_names=("one_hots",),
)
def segment_one_hot(op: OpInfo) -> Callable[..., Any]:
    def run(lengths: Any, indices: Any, size: Any) -> tuple[np.ndarray]:
        idx = np.asarray(indices).reshape(-1)
        lens = check_lengths(op, lengths, idx.size)
        n = int(np.asarray(size).reshape(-1)[0])
        if np.any(idx < 0) or np.any(idx >= n):
            raise ArgumentError(f"{op.label()}: indices must lie in [0, {n})")
        out = np.zeros((lens.size, n), np.float32)
        out[np.repeat(np.arange(lens.size), lens), idx.astype(np.int64)] = 1
        return (out,)

    return run


def _pack_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    lens, d = ins[0], ins[1]
    n = None if lens.shape is None or not lens.shape else lens.shape[0]
    m = op.int_arg("max_length")
    shape = None if d.shape is None else (n, m if m >= 0 else None, *d.shape[1:])
    out = [TensorInfo(shape, d.dtype), TensorInfo((n, m if m >= 0 else None), np.dtype(np.bool_))]
    return out[: len(op.outputs)]


def _kept_rows(lens: np.ndarray, width: int) -> np.ndarray:
    """Indices of the DATA rows that fit in the first ``width`` rows of their segment."""
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if lens.size else lens
    parts = [np.arange(s, s + min(int(n), width)) for s, n in zip(starts.tolist(), lens.tolist())]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


@register_op(
    "PackSegments",
    inputs=2,
    outputs=(1, 2),
    args=(
        Arg("max_length", -1, "pad (or truncate) every segment to this many rows (default: the longest)"),
        Arg("pad_minf", 0, "pad with -inf instead of 0"),
        Arg("return_presence_mask", 0, "also output a bool mask of the real rows"),
    ),
    infer=_pack_infer,
    doc="Pack the segments of DATA (cut by LENGTHS) into (N, max_length, ...), padding with 0 (or -inf); "
    "optional output 1 marks the real rows.",
    input_names=("lengths", "tensor"),
    output_names=("packed_tensor", "presence_mask"),
)
def pack_segments(op: OpInfo) -> Callable[..., Any]:
    max_arg = op.int_arg("max_length")
    pad_minf = op.bool_arg("pad_minf")
    if len(op.outputs) == 2 and not op.bool_arg("return_presence_mask"):
        raise ArgumentError(f"{op.label()}: a second output needs return_presence_mask=1")

    def run(lengths: Any, data: Any) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(data)
        if d.ndim == 0:
            raise ArgumentError(f"{op.label()}: tensor must have rank >= 1")
        lens = check_lengths(op, lengths, d.shape[0])
        longest = int(lens.max()) if lens.size else 0
        width = max_arg if max_arg >= 0 else longest
        if pad_minf and d.dtype.kind != "f":
            raise ArgumentError(f"{op.label()}: pad_minf needs a floating tensor, got {d.dtype}")
        out = np.full((lens.size, width) + d.shape[1:], -np.inf if pad_minf else 0, dtype=d.dtype)
        mask = np.arange(width)[None, :] < lens[:, None]
        # A max_length below a segment's length truncates it: its first max_length rows are kept.
        out[mask] = d if width >= longest else d[_kept_rows(lens, width)]
        return out, mask

    return run


@register_op(
    "UnpackSegments",
    inputs=2,
    args=(Arg("max_length", -1, "the max_length given to PackSegments: longer segments were truncated to it"),),
    infer=lambda op, ins: [TensorInfo(None if ins[1].shape is None else (None, *ins[1].shape[2:]), ins[1].dtype)],
    doc="Inverse of PackSegments: concatenate the first lengths[i] rows of every packed segment (at "
    "most max_length rows when it is given, as PackSegments truncated them).",
    input_names=("lengths", "tensor"),
    output_names=("packed_tensor",),
)
def unpack_segments(op: OpInfo) -> Callable[..., Any]:
    max_length = op.int_arg("max_length")

    def run(lengths: Any, packed: Any) -> tuple[np.ndarray]:
        p = np.asarray(packed)
        lens = check_lengths(op, lengths)
        if max_length >= 0:
            lens = np.minimum(lens, max_length)
        if p.ndim < 2 or p.shape[0] != lens.size or np.any(lens > p.shape[1]):
            raise ArgumentError(f"{op.label()}: packed {p.shape} must be (N={lens.size}, >= max length, ...)")
        mask = np.arange(p.shape[1])[None, :] < lens[:, None]
        return (p[mask],)

    return run


@register_op(
    "LengthsTopK",
    inputs=2,
    outputs=2,
    args=(Arg("k", 0, "number of values kept per segment"),),
    infer=lambda op, ins: [
        TensorInfo((None if ins[1].shape is None else ins[1].shape[0], op.int_arg("k")), ins[0].dtype),
        TensorInfo((None if ins[1].shape is None else ins[1].shape[0], op.int_arg("k")), INT32),
    ],
    doc="The k largest values of every segment of the 1-D DATA (cut by LENGTHS), in descending order "
    "(ties: lower index first), and their positions within the segment (int32); short segments are "
    "padded with value 0 and index -1.",
    input_names=("DATA", "LENGTHS"),
    output_names=("TopKValue", "TopKIndices"),
)
def lengths_top_k(op: OpInfo) -> Callable[..., Any]:
    k = op.int_arg("k")
    if k < 1:
        raise ArgumentError(f"{op.label()}: k must be a positive integer, got {k}")

    def run(data: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(data).reshape(-1)
        lens = check_lengths(op, lengths, d.size)
        values = np.zeros((lens.size, k), d.dtype)
        indices = np.full((lens.size, k), -1, np.int32)
        start = 0
        for i, n in enumerate(lens.tolist()):
            seg = d[start : start + n]
            # A stable sort of the negated values keeps the lower index first among equal values.
            order = np.argsort(-seg, kind="stable")[:k]
            values[i, : order.size] = seg[order]
            indices[i, : order.size] = order
            start += n
        return values, indices

    return run
