"""Feature-processing ops from recommendation pipelines: GatherRangesToDense, IndexHash, MergeIdLists,
LearningRateAdaption."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


@register_op(
    "GatherRangesToDense",
    inputs=(2, 3),
    outputs=(1, -1),
    args=(
        Arg("lengths", [], "the expected range length of each feature (one output per feature)"),
        Arg("min_observation", 10000, "check max_mismatched_ratio only from this many examples on"),
        Arg("max_mismatched_ratio", 0.01, "the most ranges per feature whose length is neither 0 nor expected"),
        Arg("max_empty_ratio", 1.0, "the most empty ranges per feature"),
    ),
    infer=lambda op, ins: [
        TensorInfo((None if ins[1].shape is None else ins[1].shape[0], n), ins[0].dtype) for n in op.ints_arg("lengths")
    ],
    doc="For RANGES (N, F, 2) of (start, length) into the 1-D DATA: output k is (N, lengths[k]) with each "
    "example's range of feature k; empty or mismatched ranges give zeros. With KEY (as long as DATA), "
    "each range's values are ordered by their keys. Counting all N * F ranges of the call, fails when "
    "more than max_empty_ratio of them are empty, or (once N * F >= min_observation) more than "
    "max_mismatched_ratio have a length that is neither 0 nor their feature's.",
    input_names=("DATA", "RANGES", "KEY"),
)
def gather_ranges_to_dense(op: OpInfo) -> Callable[..., Any]:
    lens = op.ints_arg("lengths")
    if len(lens) != len(op.outputs):
        raise ArgumentError(f"{op.label()}: `lengths` has {len(lens)} values for {len(op.outputs)} outputs")
    min_obs = op.int_arg("min_observation")
    max_mismatched, max_empty = op.float_arg("max_mismatched_ratio"), op.float_arg("max_empty_ratio")

    def run(data: Any, ranges: Any, key: Any = None) -> list[np.ndarray]:
        d, r = np.asarray(data).reshape(-1), np.asarray(ranges)
        keys = None if key is None else np.asarray(key).reshape(-1)
        if r.ndim != 3 or r.shape[1] != len(lens) or r.shape[2] != 2:
            raise ArgumentError(f"{op.label()}: RANGES must be (N, {len(lens)}, 2), got {r.shape}")
        if keys is not None and keys.size != d.size:
            raise ArgumentError(f"{op.label()}: KEY has {keys.size} values for DATA of {d.size}")
        outs = [np.zeros((r.shape[0], n), d.dtype) for n in lens]
        empty, mismatched = [0] * len(lens), [0] * len(lens)
        for i in range(r.shape[0]):
            for k, n in enumerate(lens):
                start, length = int(r[i, k, 0]), int(r[i, k, 1])
                if length == 0:
                    empty[k] += 1
                elif length != n:
                    mismatched[k] += 1
                else:
                    if start < 0 or start + n > d.size:
                        raise ArgumentError(f"{op.label()}: range ({start}, {n}) is outside DATA of size {d.size}")
                    piece = d[start : start + n]
                    if keys is not None:
                        piece = piece[np.argsort(keys[start : start + n], kind="stable")]
                    outs[k][i] = piece
        # The ratios are over every (example, feature) range of the call, as Caffe2 counted them.
        total = r.shape[0] * len(lens)
        n_empty, n_mismatched = sum(empty), sum(mismatched)
        if n_empty > total * max_empty:
            raise ArgumentError(
                f"{op.label()}: {n_empty} of {total} ranges are empty, above max_empty_ratio {max_empty}"
            )
        if total >= min_obs and n_mismatched > total * max_mismatched:
            raise ArgumentError(
                f"{op.label()}: {n_mismatched} of {total} ranges do not have their feature's length {lens}, "
                f"above max_mismatched_ratio {max_mismatched}"
            )
        return outs

    return run


def _wrap(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


@register_op(
    "IndexHash",
    allow_inplace=[(0, 0)],
    args=(Arg("seed", 0, "hash seed"), Arg("modulo", 0, "the hashed values lie in [0, modulo)")),
    infer=lambda op, ins: [ins[0]],
    doc="Hash each int32/int64 index: h = seed * 0xDEADBEEF, then h = h * 65537 + b for each (signed) "
    "byte b of the index, in the index's integer width with wraparound; output h mod modulo (>= 0).",
    input_names=("indices",),
    output_names=("hashed_indices",),
)
def index_hash(op: OpInfo) -> Callable[..., Any]:
    seed, modulo = op.int_arg("seed"), op.int_arg("modulo")
    if modulo <= 0:
        raise ArgumentError(f"{op.label()}: modulo must be positive, got {modulo}")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
            raise ArgumentError(f"{op.label()}: indices must be int32 or int64, got {a.dtype}")
        bits = a.dtype.itemsize * 8
        start = _wrap(_wrap(seed * 0xDEADBEEF, 64), bits)
        raw = a.astype(a.dtype.newbyteorder("<")).view(np.int8).reshape(a.size, a.dtype.itemsize)
        out = np.empty(a.size, a.dtype)
        for i in range(a.size):
            h = start
            for b in raw[i].tolist():
                h = _wrap(h * 65537 + b, bits)
            # Exact integer arithmetic (a float fmod loses the low digits of 64-bit hashes):
            # (modulo + h % modulo) % modulo with C++'s truncating %, i.e. Python's floor %.
            out[i] = h % modulo
        return (out.reshape(a.shape),)

    return run


@register_op(
    "MergeIdLists",
    inputs=(2, -1),
    outputs=2,
    arity=lambda i, o: i % 2 == 0,
    arity_doc="inputs come in (lengths, values) pairs",
    infer=lambda op, ins: [TensorInfo(ins[0].shape, ins[0].dtype), TensorInfo((None,), ins[1].dtype)],
    doc="Per example, the sorted union of its ids over every (lengths, values) id list.",
    output_names=("merged_lengths", "merged_values"),
)
def merge_id_lists(op: OpInfo) -> Callable[..., Any]:
    def run(*ins: Any) -> tuple[np.ndarray, np.ndarray]:
        lens = [np.asarray(x).reshape(-1).astype(np.int64) for x in ins[0::2]]
        vals = [np.asarray(x).reshape(-1) for x in ins[1::2]]
        n = lens[0].size
        for k, (ln, v) in enumerate(zip(lens, vals)):
            if ln.size != n or int(ln.sum()) != v.size:
                raise ArgumentError(f"{op.label()}: id list {k} needs {n} lengths summing to its {v.size} values")
        offsets = [np.concatenate([[0], np.cumsum(ln)]) for ln in lens]
        out_len, out_vals = [], []
        for i in range(n):
            ids: set[Any] = set()
            for v, off in zip(vals, offsets):
                ids.update(v[off[i] : off[i + 1]].tolist())
            out_len.append(len(ids))
            out_vals.extend(sorted(ids))
        return np.array(out_len, np.asarray(ins[0]).dtype), np.array(out_vals, vals[0].dtype)

    return run


@register_op(
    "LearningRateAdaption",
    inputs=3,
    args=(
        Arg("lr_alpha", 0.01, "adaption rate"),
        Arg("normalized_lr_adaption", 1, "use the cosine of grad and effgrad instead of their dot product"),
    ),
    infer=lambda op, ins: [ins[0]],
    doc="Inputs lr, grad, effgrad: x = grad . effgrad; normalized: lr' = lr (1 - lr_alpha x / (max(|grad|, "
    "1e-12) max(|effgrad|, 1e-12))), else lr' = lr - lr_alpha x.",
    input_names=("lr", "grad", "effgrad"),
    output_names=("output_lr",),
)
def learning_rate_adaption(op: OpInfo) -> Callable[..., Any]:
    alpha, normalized = op.float_arg("lr_alpha"), op.bool_arg("normalized_lr_adaption")

    def run(lr: Any, grad: Any, eff: Any) -> tuple[np.ndarray]:
        lra = np.asarray(lr)
        g, e = np.asarray(grad, np.float64).reshape(-1), np.asarray(eff, np.float64).reshape(-1)
        if g.size != e.size:
            raise ArgumentError(f"{op.label()}: grad and effgrad must have one size, got {g.size} and {e.size}")
        x = float(g @ e)
        rate = float(lra.reshape(-1)[0])
        if normalized:
            y, z = max(math.sqrt(float(g @ g)), 1e-12), max(math.sqrt(float(e @ e)), 1e-12)
            new = rate * (1.0 - alpha * x / (y * z))
        else:
            new = rate - alpha * x
        return (np.full(lra.shape, new, lra.dtype),)

    return run
