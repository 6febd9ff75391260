"""Sparse and bucketed feature ops: BatchOneHot, BatchBucketOneHot, BatchBucketize, BatchSparseToDense,
BooleanUnmask, GatherRanges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import prod_known
from asyncnet.ops.segments import check_lengths
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

INT32 = np.dtype(np.int32)


def _offsets(lens: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


def _features(op: OpInfo, x: Any, lens: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ArgumentError(f"{op.label()}: X must be 2-D (N, D), got shape {a.shape}")
    lengths = check_lengths(op, lens, what="LENS")
    if lengths.size != a.shape[1]:
        raise ArgumentError(f"{op.label()}: LENS has {lengths.size} values for {a.shape[1]} columns of X")
    return a, lengths


@register_op(
    "BatchOneHot",
    inputs=3,
    infer=lambda op, ins: [TensorInfo(None if ins[0].shape is None else (ins[0].shape[0], None), ins[0].dtype)],
    doc="One-hot encode each column j of X (N, D) against its value list (segment j of VALS, cut by "
    "LENS): Y (N, sum(LENS)) holds 1 where X[i, j] equals the value.",
    input_names=("X", "LENS", "VALS"),
    output_names=("Y",),
)
def batch_one_hot(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, lens: Any, vals: Any) -> tuple[np.ndarray]:
        a, lengths = _features(op, x, lens, "LENS")
        v = np.asarray(vals).reshape(-1)
        if v.size != int(lengths.sum()):
            raise ArgumentError(f"{op.label()}: VALS has {v.size} values, LENS sum to {int(lengths.sum())}")
        col = np.repeat(np.arange(lengths.size), lengths)
        return ((a[:, col] == v[None, :]).astype(a.dtype),)

    return run


def _batch_bucket_one_hot_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    # sum(LENS) must equal BOUNDARIES' size, so the width D + sum(LENS) follows from the shapes alone.
    x, lens, bounds = ins
    n_lens = None if lens.shape is None else prod_known(lens.shape)
    n_bounds = None if bounds.shape is None else prod_known(bounds.shape)
    cols = None if n_lens is None or n_bounds is None else n_lens + n_bounds
    return [TensorInfo(None if x.shape is None else (x.shape[0], cols), np.dtype(np.float32))]


@register_op(
    "BatchBucketOneHot",
    inputs=3,
    infer=_batch_bucket_one_hot_infer,
    doc="Bucketize each column j of X (N, D) by its sorted boundaries (segment j of BOUNDARIES, cut "
    "by LENS) and one-hot encode the bucket: Y (N, sum(LENS + 1)) float32. The bucket is (number of "
    "boundaries < x + number <= x) // 2, so a value on repeated boundaries lands between them.",
    input_names=("X", "LENS", "BOUNDARIES"),
    output_names=("Y",),
)
def batch_bucket_one_hot(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, lens: Any, boundaries: Any) -> tuple[np.ndarray]:
        a, lengths = _features(op, x, lens, "LENS")
        b = np.asarray(boundaries).reshape(-1)
        if b.size != int(lengths.sum()):
            raise ArgumentError(f"{op.label()}: BOUNDARIES has {b.size} values, LENS sum to {int(lengths.sum())}")
        off = _offsets(lengths)
        out = np.zeros((a.shape[0], int(lengths.sum()) + lengths.size), np.float32)
        for j in range(lengths.size):
            seg = b[off[j] : off[j + 1]]
            # A value equal to a run of repeated boundaries goes to the middle of their buckets
            # (Caffe2: the mean of the lower- and upper-bound positions, rounded down).
            lo = np.searchsorted(seg, a[:, j], side="left")
            hi = np.searchsorted(seg, a[:, j], side="right")
            out[np.arange(a.shape[0]), off[j] + j + (lo + hi) // 2] = 1
        return (out,)

    return run


@register_op(
    "BatchBucketize",
    inputs=4,
    infer=lambda op, ins: [
        TensorInfo(
            None if ins[0].shape is None else (ins[0].shape[0], ins[1].shape[0] if ins[1].shape else None), INT32
        )
    ],
    doc="For the columns INDICES of FEATURE (N, F), the bucket (number of boundaries below the value) "
    "within that column's boundaries (segments of BOUNDARIES cut by LENGTHS): O (N, len(INDICES)) int32.",
    input_names=("FEATURE", "INDICES", "BOUNDARIES", "LENGTHS"),
    output_names=("O",),
)
def batch_bucketize(op: OpInfo) -> Callable[..., Any]:
    def run(feature: Any, indices: Any, boundaries: Any, lengths: Any) -> tuple[np.ndarray]:
        f = np.asarray(feature)
        idx = np.asarray(indices).reshape(-1)
        lens = check_lengths(op, lengths)
        b = np.asarray(boundaries).reshape(-1)
        if f.ndim != 2 or idx.size != lens.size or b.size != int(lens.sum()):
            raise ArgumentError(
                f"{op.label()}: FEATURE {f.shape}, INDICES {idx.shape}, BOUNDARIES {b.shape} and "
                f"LENGTHS {lens.shape} do not fit together"
            )
        if np.any(idx < 0) or np.any(idx >= f.shape[1]):
            raise ArgumentError(f"{op.label()}: INDICES must lie in [0, {f.shape[1]})")
        off = _offsets(lens)
        out = np.zeros((f.shape[0], idx.size), np.int32)
        for j, col in enumerate(idx.tolist()):
            out[:, j] = np.searchsorted(b[off[j] : off[j + 1]], f[:, col], side="left")
        return (out,)

    return run


@register_op(
    "BatchSparseToDense",
    inputs=(3, 4),
    args=(
        Arg("dense_last_dim", -1, "width of the dense rows (or give input 3, whose dim 1 is used)"),
        Arg("default_value", 0.0, "value of the positions no index names"),
    ),
    infer=lambda op, ins: [TensorInfo((None, None), ins[2].dtype)],
    doc="Scatter the sparse rows (LENGTHS, INDICES, VALUES) into a dense (N, D) tensor filled with "
    "`default_value`; D is `dense_last_dim` or dim 1 of the optional input 3.",
    input_names=("LENGTHS", "INDICES", "VALUES", "SHAPE"),
    output_names=("DENSE",),
)
def batch_sparse_to_dense(op: OpInfo) -> Callable[..., Any]:
    width_arg = op.int_arg("dense_last_dim")
    default = op.float_arg("default_value")
    if len(op.inputs) == 3 and width_arg <= 0:
        raise ArgumentError(f"{op.label()}: set `dense_last_dim` or give the shape input")

    def run(lengths: Any, indices: Any, values: Any, like: Any = None) -> tuple[np.ndarray]:
        lens = check_lengths(op, lengths)
        idx = np.asarray(indices).reshape(-1).astype(np.int64)
        vals = np.asarray(values).reshape(-1)
        if idx.size != vals.size or idx.size != int(lens.sum()):
            raise ArgumentError(
                f"{op.label()}: INDICES and VALUES must both hold sum(LENGTHS) = {int(lens.sum())} values"
            )
        width = width_arg if like is None else int(np.shape(like)[1])
        if np.any(idx < 0) or np.any(idx >= width):
            raise ArgumentError(f"{op.label()}: INDICES must lie in [0, {width})")
        out = np.full((lens.size, width), default, dtype=vals.dtype)
        rows = np.repeat(np.arange(lens.size), lens)
        out[rows, idx] = vals
        return (out,)

    return run


@register_op(
    "BooleanUnmask",
    inputs=(2, -1),
    arity=lambda i, o: i % 2 == 0,
    arity_doc="inputs come in (mask, values) pairs",
    infer=lambda op, ins: [TensorInfo(ins[0].shape, ins[1].dtype)],
    doc="Merge (mask_k, values_k) pairs: output[i] = values_k[j] where i is the j-th true position "
    "of mask_k; the masks must cover every position exactly once.",
    output_names=("unmasked_data",),
)
def boolean_unmask(op: OpInfo) -> Callable[..., Any]:
    def run(*xs: Any) -> tuple[np.ndarray]:
        masks = [np.asarray(m) for m in xs[0::2]]
        vals = [np.asarray(v) for v in xs[1::2]]
        n = masks[0].size
        out = np.zeros(n, dtype=vals[0].dtype)
        covered = np.zeros(n, dtype=np.int64)
        for k, (m, v) in enumerate(zip(masks, vals)):
            if m.dtype != np.bool_ or m.ndim != 1 or m.size != n:
                raise ArgumentError(f"{op.label()}: mask {k} must be a 1-D bool tensor of size {n}")
            if v.size != int(m.sum()):
                raise ArgumentError(
                    f"{op.label()}: values {k} hold {v.size} items for {int(m.sum())} true mask entries"
                )
            out[m] = v.reshape(-1)
            covered += m
        if np.any(covered != 1):
            raise ArgumentError(f"{op.label()}: the masks must cover each position exactly once")
        return (out,)

    return run


@register_op(
    "GatherRanges",
    inputs=2,
    outputs=2,
    infer=lambda op, ins: [
        TensorInfo((None,), ins[0].dtype),
        TensorInfo((None,) if ins[1].shape is None else ins[1].shape[:1], INT32),
    ],
    doc="For RANGES (N, M, 2) of (start, length) pairs into the 1-D DATA: output 0 concatenates every "
    "range, output 1 gives each example's total length (int32).",
    input_names=("DATA", "RANGES"),
    output_names=("OUTPUT", "LENGTHS"),
)
def gather_ranges(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, ranges: Any) -> tuple[np.ndarray, np.ndarray]:
        d, r = np.asarray(data), np.asarray(ranges)
        if d.ndim != 1 or r.ndim != 3 or r.shape[2] != 2 or r.dtype.kind not in "iu":
            raise ArgumentError(
                f"{op.label()}: DATA must be 1-D and RANGES (N, M, 2) integers; got {d.shape}, {r.shape}"
            )
        starts, lens = r[..., 0].astype(np.int64), r[..., 1].astype(np.int64)
        if np.any(starts < 0) or np.any(lens < 0) or np.any(starts + lens > d.size):
            raise ArgumentError(f"{op.label()}: a range falls outside DATA of size {d.size}")
        pieces = [d[s : s + n] for s, n in zip(starts.reshape(-1).tolist(), lens.reshape(-1).tolist())]
        out = np.concatenate(pieces) if pieces else d[:0]
        return out, lens.sum(axis=1).astype(np.int32)

    return run


def _scatter_rows(op: OpInfo, data: np.ndarray, idx: Any, slices: np.ndarray, what: str) -> np.ndarray:
    """Indices as int64 after checking them and the slice shape against DATA's rows."""
    ii = np.asarray(idx)
    if ii.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: indices must be integers, got {ii.dtype}")
    ii = ii.reshape(-1).astype(np.int64)
    if data.ndim == 0 or np.any(ii < 0) or np.any(ii >= data.shape[0]):
        raise ArgumentError(f"{op.label()}: indices must lie in [0, {data.shape[0] if data.ndim else 0})")
    if slices.shape != (ii.size,) + data.shape[1:]:
        raise ArgumentError(
            f"{op.label()}: {what} {slices.shape} must be (len(indices),) + DATA.shape[1:] = {(ii.size,) + data.shape[1:]}"
        )
    return ii


@register_op(
    "ScatterAssign",
    inputs=3,
    enforce_inplace=[(0, 0)],
    infer=lambda op, ins: [ins[0]],
    doc="DATA[INDICES[i]] = SLICES[i] for every i (rows of DATA, updated in place).",
    input_names=("DATA", "INDICES", "SLICES"),
    output_names=("DATA",),
)
def scatter_assign(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, indices: Any, slices: Any) -> tuple[np.ndarray]:
        d = np.asarray(data)
        s = np.asarray(slices)
        if s.dtype != d.dtype:
            raise ArgumentError(f"{op.label()}: SLICES dtype {s.dtype} differs from DATA's {d.dtype}")
        ii = _scatter_rows(op, d, indices, s, "SLICES")
        out = d.copy()
        # Assignment in order: with repeated indices the last slice wins, as in a C loop.
        out[ii] = s
        return (out,)

    return run


@register_op(
    "ScatterWeightedSum",
    inputs=(3, -1),
    arity=lambda i, o: i % 2 == 1,
    arity_doc="inputs are DATA, WEIGHT_0, INDICES, then (SLICES_k, WEIGHT_k) pairs",
    enforce_inplace=[(0, 0)],
    infer=lambda op, ins: [ins[0]],
    doc="For every i: DATA[INDICES[i]] *= WEIGHT_0, then for every i: DATA[INDICES[i]] += sum_k "
    "SLICES_k[i] * WEIGHT_k (weights are scalars; DATA is updated in place; a repeated index is "
    "scaled once per occurrence and receives every slice).",
    input_names=("DATA", "WEIGHT_0", "INDICES"),
    output_names=("DATA",),
)
def scatter_weighted_sum(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, w0: Any, indices: Any, *rest: Any) -> tuple[np.ndarray]:
        d = np.asarray(data)
        weights = [np.asarray(w0)] + [np.asarray(w) for w in rest[1::2]]
        if any(w.size != 1 for w in weights):
            raise ArgumentError(f"{op.label()}: every weight must be a single value")
        slices = [np.asarray(x) for x in rest[0::2]]
        ii = np.asarray(indices).reshape(-1)
        for k, s in enumerate(slices):
            ii = _scatter_rows(op, d, indices, s, f"SLICES_{k + 1}")
        if not slices:
            ii = _scatter_rows(op, d, indices, np.zeros((np.asarray(indices).size,) + d.shape[1:], d.dtype), "rows")
        ws = [w.reshape(()).astype(d.dtype) for w in weights]
        out = d.copy()
        # Caffe2 first scales DATA[idx] by WEIGHT_0 once per occurrence of idx, then adds every
        # weighted slice: a row named twice is scaled by WEIGHT_0**2 and gets both slices.
        counts = np.bincount(ii, minlength=d.shape[0])
        hit = counts > 0
        scale = np.power(ws[0], counts[hit].astype(d.dtype)).astype(d.dtype)
        out[hit] = out[hit] * scale.reshape((-1,) + (1,) * (d.ndim - 1))
        for s, w in zip(slices, ws[1:]):
            np.add.at(out, ii, (s * w).astype(d.dtype, copy=False))
        return (out,)

    return run
